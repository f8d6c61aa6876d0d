"""The compact result table of ``benchmarks/realtime_suite.sh`` (issue 12): reads the stages' JSON and
logs from the suite's work directory, prints the goals with what was measured (card, ratio to the
eager baseline of the same run), writes a markdown summary and the JSON of everything, and updates
the ``realtime`` section of docs/benchmarks.md. Stages that did not run are reported as such.

    python benchmarks/realtime_summary.py --work /tmp/gausstr_realtime --output docs/benchmarks.md \\
        --summary $OUT/summary.md --json $OUT/results.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.set_timeline import timeline_parts

GOALS = {"predict_ms": 20.0, "rate_hz": 30.0, "p99_ms": 40.0, "memory_gb": 4.0, "train_scenes_s": 10.0}


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def _lock_text(ros: dict) -> str:
    """ "; interpreter lock held N %" (py-spy) and the helper processes' CPU, where measured."""
    text = ""
    lock = ros.get("lock_profile") or {}
    if isinstance(lock.get("held"), (int, float)):
        text += f"; interpreter lock held {100 * lock['held']:.0f} % of the open loop"
    helpers = ros.get("helper_cpu") or []
    if helpers:
        text += "; helper processes " + ", ".join(
            f"{h['name']} {100 * h['share']:.0f} % of a core" for h in helpers
        )
    return text


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def _stages(work: Path) -> dict[str, tuple[str, int]]:
    out = {}
    text = (work / "stages.txt").read_text() if (work / "stages.txt").exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = (parts[1], int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0)
    return out


def _compiled_ok(variant: dict | None) -> bool:
    """Whether a compiled-backbone variant really ran compiled (else eager was timed: not judged)."""
    status = (variant or {}).get("compile_status") or {}
    return bool(status.get("compiled")) and not status.get("failures")


def _compiled_row(compiled: dict, eager_p50: float, graphs_p50: float, data: dict) -> tuple[str, str, str]:
    """Goal 1 with the image backbone compiled (``node_latency.py --compile-backbone``), against the
    eager baseline and the CUDA graphs of the same run; adds its numbers to ``data``."""
    from benchmarks.node_latency import compile_text

    c = _pct(compiled["predict_only"], 50)
    status = compiled.get("compile_status") or {}
    ok = _compiled_ok(compiled)
    data["predict_ms"].update(compiled_p50=c, compiled_p99=_pct(compiled["predict_only"], 99))
    data["compile"] = {"compile_s": compiled.get("compile_s"), "status": status}
    return (
        "   the same with the image backbone compiled (`compile_backbone`, inside the CUDA graph)",
        f"compiled backbone + CUDA graphs p50 {c:.1f} ms vs CUDA graphs {graphs_p50:.1f} ms vs eager "
        f"{eager_p50:.1f} ms in the same run ({eager_p50 / c:.2f}x eager, {graphs_p50 / c:.2f}x graphs); "
        f"{compile_text(status)}",
        _met(c <= GOALS["predict_ms"]) if ok else "-",
    )


def summarize(work: Path) -> tuple[list[str], dict]:
    from benchmarks.node_latency import (
        COMPILED,
        COMPILED_FUSED_CASTS,
        COMPILED_NO_DEPTH,
        GRAPHS_PER_FRAME_CASTS,
    )

    stages = _stages(work)
    gpu = (work / "gpu.txt").read_text().strip().splitlines()[0] if (work / "gpu.txt").exists() else "?"
    node = _load(work / "node_pipeline.json")
    train = _load(work / "train.json")
    tests_log = (work / "tests.log").read_text(errors="replace") if (work / "tests.log").exists() else ""
    rows: list[tuple[str, str, str]] = []
    data: dict = {"gpu": gpu, "date": time.strftime("%Y-%m-%d"), "stages": stages}

    # 1. predict with CUDA graphs vs eager (same run, same card)
    if node and "variants" in node:
        v = node["variants"]
        eager, graphs = v.get("eager"), v.get("graphs")
        if eager and graphs:
            e, g = _pct(eager["predict_only"], 50), _pct(graphs["predict_only"], 50)
            data["predict_ms"] = {
                "eager_p50": e,
                "graphs_p50": g,
                "graphs_p99": _pct(graphs["predict_only"], 99),
            }
            per_frame = v.get(GRAPHS_PER_FRAME_CASTS)
            casts = ""
            if per_frame:
                c = _pct(per_frame["predict_only"], 50)
                data["predict_ms"]["graphs_per_frame_casts_p50"] = c
                casts = (
                    f"; with the weights cast by autocast at every frame (as before `cast_weights_once`) "
                    f"{c:.1f} ms ({c / g:.2f}x the weights cast once)"
                )
            rows.append(
                (
                    "1. predict <= 20 ms (talk2dino, 6 x 504 x 896, 1,800 Gaussians, with rendered depth)",
                    f"CUDA graphs p50 {g:.1f} ms vs eager {e:.1f} ms in the same run ({e / g:.2f}x){casts}",
                    _met(g <= GOALS["predict_ms"]),
                )
            )
            compiled = v.get(COMPILED)
            if compiled:
                rows.append(_compiled_row(compiled, e, g, data))
            fused = v.get(COMPILED_FUSED_CASTS)
            if fused:
                f = _pct(fused["predict_only"], 50)
                data["predict_ms"]["compiled_fused_casts_p50"] = f
                against = (
                    f" ({_pct(compiled['predict_only'], 50) / f:.2f}x rounding as eager)" if compiled else ""
                )
                rows.append(
                    (
                        "   the same with Inductor's fused casts (`compile_emulate_precision_casts` off)",
                        f"p50 {f:.1f} ms{against}",
                        _met(f <= GOALS["predict_ms"]) if _compiled_ok(fused) else "-",
                    )
                )
            nodepth = v.get("graphs, no depth subscriber")
            if nodepth:
                n = _pct(nodepth["predict_only"], 50)
                rows.append(
                    (
                        "   the same without a depth subscriber (no render)",
                        f"p50 {n:.1f} ms",
                        _met(n <= GOALS["predict_ms"]),
                    )
                )
            compiled_nodepth = v.get(COMPILED_NO_DEPTH)
            if compiled_nodepth:
                n = _pct(compiled_nodepth["predict_only"], 50)
                data["predict_ms"]["compiled_no_depth_p50"] = n
                # the variant keeps the compiled variant's backbone: judged only if that compiled
                rows.append(
                    (
                        "   compiled backbone + CUDA graphs without a depth subscriber (no render)",
                        f"p50 {n:.1f} ms ({e / n:.2f}x eager with depth)",
                        _met(n <= GOALS["predict_ms"]) if _compiled_ok(compiled) else "-",
                    )
                )
            prof = node.get("eager_profile")
            if prof:
                data["eager_profile"] = prof
                rows.append(
                    (
                        "   where the time goes (eager predict under torch.profiler, 5 frames)",
                        f"device time {prof['kernel_ms_per_frame']:.1f} ms per frame (the floor of a "
                        f"graph of the same kernels), wall {prof['wall_ms_per_frame']:.1f} ms; operator "
                        "table in logs.tgz (predict_profile.txt)",
                        "-",
                    )
                )

            # 2. sustained rate / p99, pipelined (the node's two threads) at a camera's rate
            def sustained(v: dict) -> tuple[str, bool]:
                p99 = _pct(v["pipelined"], 99)
                ok = v["pipelined_dropped"] == 0 and v["pipelined_out_hz"] >= 0.95 * GOALS["rate_hz"]
                text = (
                    f"at {v['pipelined_rate']:g} Hz input: {v['pipelined_out_hz']:.1f} Hz out, "
                    f"{v['pipelined_dropped']} dropped, p50 {_pct(v['pipelined'], 50):.1f} / "
                    f"p99 {p99:.1f} ms; "
                    f"highest rate {v['pipelined_hz']:.1f} Hz"
                )
                return text, ok and p99 <= GOALS["p99_ms"]

            g_text, g_ok = sustained(graphs)
            e_text, _ = sustained(eager)
            data["pipeline"] = {"graphs": g_text, "eager": e_text}
            rows.append(
                (
                    "2. >= 30 Hz sustained, p99 <= 40 ms (pipeline mode: the node path over its 2 threads)",
                    f"CUDA graphs {g_text}. Eager: {e_text}",
                    _met(g_ok),
                )
            )
            if nodepth:
                n_text, n_ok = sustained(nodepth)
                rows.append(("   the same without a depth subscriber", n_text, _met(n_ok)))
            # 4. memory
            mem = graphs.get("peak_gib")
            if mem is not None:
                gb = mem * 2**30 / 1e9
                data["memory_gb"] = {"graphs": gb, "eager": eager.get("peak_gib", float("nan")) * 2**30 / 1e9}
                rows.append(
                    (
                        "4. inference GPU memory < 4 GB (peak allocated, weights included)",
                        f"{gb:.2f} GB with graphs, {data['memory_gb']['eager']:.2f} GB eager",
                        _met(gb < GOALS["memory_gb"]),
                    )
                )
        runtime = node.get("categories_at_run_time")
        if runtime:
            data["categories_at_run_time"] = runtime
            new = runtime["new_layout"]
            rows.append(
                (
                    "   categories changed at run time (no restart)",
                    f"same layout: next predict {runtime['same_layout']['first_predict_ms']:.1f} ms; "
                    f"new layout: {new['first_predict_ms']:.0f} ms eager, {new['second_predict_ms']:.0f} ms "
                    f"capture, then {new['third_predict_ms']:.1f} ms",
                    "-",
                )
            )
    else:
        rows.append(
            (
                "1./2./4. node pipeline mode",
                f"not measured (stage node: {stages.get('node', ('not run',))[0]})",
                "-",
            )
        )

    # parity (tests)
    parity = re.findall(r"(talk2dino graph vs eager: .*|\d+ categories: .*equal labels.*)", tests_log)
    passed = re.search(r"(\d+) passed", tests_log)
    failed = re.search(r"(\d+) failed", tests_log)
    data["tests"] = {
        "passed": int(passed.group(1)) if passed else 0,
        "failed": int(failed.group(1)) if failed else 0,
    }
    data["parity"] = parity
    rows.append(
        (
            "   parity: graphs vs eager (>= 99.9 % labels, confidence within 2e-3)",
            ("; ".join(parity) or "no parity line in tests.log")
            + f" ({data['tests']['passed']} gpu tests passed, {data['tests']['failed']} failed)",
            _met(data["tests"]["failed"] == 0 and bool(parity)) if tests_log else "-",
        )
    )

    compiled_parity = re.findall(r"talk2dino compiled backbone \+ graphs vs eager.*", tests_log)
    if compiled_parity:  # only run with COMPILE=1
        data["compiled_parity"] = compiled_parity
        # the same bar as the graph path's parity; the GPU test itself only guards against a broken
        # compilation (test_inference_graphs.COMPILED_LABEL_AGREEMENT). The default rounds as eager
        # does (compile_emulate_precision_casts) and is judged; Inductor's fused casts are listed.
        fused = [line for line in compiled_parity if ", casts fused" in line]
        for lines, label, judged in (
            ([line for line in compiled_parity if line not in fused], "", True),
            (fused, ", Inductor's fused casts (`compile_emulate_precision_casts` off)", False),
        ):
            if not lines:
                continue
            measured = [
                (float(m.group(1)), float(m.group(2)))
                for m in (
                    re.search(r"([\d.]+) % labels equal, max confidence difference ([\d.e+-]+)", line)
                    for line in lines
                )
                if m
            ]
            met = bool(measured) and all(a >= 99.9 and c <= 2e-3 for a, c in measured)
            rows.append(
                (
                    f"   parity: compiled backbone + graphs vs eager{label} (>= 99.9 % labels, confidence "
                    "within 2e-3)",
                    "; ".join(lines),
                    _met(met) if judged else "-",
                )
            )

    # 3. ROS mode: the feeder (cameras, output subscribers) in its own process, and in the node's
    rows_before = len(rows)
    wheres = {
        "process": "cameras in their own process, as on a robot",
        "thread": "cameras in the node's process",
        None: "first design: cameras and subscribers in the node's process, outputs deserialized",
    }
    for key, name in (
        ("ros", "node_ros.json"),
        ("ros_thread", "node_ros_thread.json"),
        ("ros_compiled", "node_ros_compiled.json"),
        ("ros_switch5", "node_ros_switch5.json"),
        ("ros_info", "node_ros_info.json"),
        ("ros_coalesce", "node_ros_coalesce.json"),
        ("ros_innode", "node_ros_innode.json"),
        ("ros_inproc", "node_ros_inproc.json"),
        ("ros_helpers", "node_ros_helpers.json"),
        ("ros_receiver", "node_ros_receiver.json"),
        ("ros_shared", "node_ros_shared.json"),
        ("ros_noconf", "node_ros_noconf.json"),
    ):
        ros = _load(work / name)
        if not (ros and ros.get("latencies")):
            continue
        where = wheres[ros.get("feeder")]
        if (ros.get("compile_status") or {}).get("enabled"):
            where += "; image backbone compiled"
        if ros.get("switch_interval_ms") is not None:
            where += f"; Python thread switch interval {ros['switch_interval_ms']:g} ms"
        if ros.get("camera_info_every_set"):
            where += "; CameraInfo with every set"
        if ros.get("executor_coalesce_ms"):
            where += f"; executor coalescing {ros['executor_coalesce_ms']:g} ms"
        if ros.get("occupancy_confidence") is False:
            where += "; occupancy without its per-voxel confidence (occupancy_confidence off)"
        # The first design had no feeder (its subscribers were in the node); runs before the
        # "subscribers" key existed kept the subscribers with the cameras.
        if ros.get("feeder") is not None:
            where += (
                "; output subscribers in a process of their own"
                if ros.get("subscribers") == "process"
                else "; output subscribers with the cameras"
            )
        if ros.get("input_process"):
            where += "; cameras taken in the input process"
        if ros.get("output_process"):
            where += "; outputs published from the output process"
        elif "output_process_setting" in ros:
            where += "; outputs published by the node itself"
        lat, dds = ros["latencies"], ros.get("dds_in", [])
        loaded = ros.get("open_latencies") or []
        data[key] = {
            "p50_ms": _pct(lat, 50),
            "p99_ms": _pct(lat, 99),
            "dds_in_p50_ms": _pct(dds, 50),
            "node_p50_ms": ros["node_p50"],
            "sustained_hz": ros["sustained_hz"],
            "input_hz": ros["input_rate"],
            "dropped": ros["dropped"],
            "open_loop": ros.get("open_loop"),
            "open_loop_p50_ms": _pct(loaded, 50) if loaded else None,
            "open_loop_p99_ms": _pct(loaded, 99) if loaded else None,
            "timeline_open_ms": (ros.get("timeline_ms") or {}).get("open"),
        }
        timeline = (ros.get("timeline_ms") or {}).get("open") or {}
        loop = ros.get("open_loop") or {}
        sets = (
            f" ({loop['sets_complete']} of {ros['sent']} sets completed by the synchronizer)"
            if "sets_complete" in loop and "sent" in ros
            else ""
        )
        rows.append(
            (
                f"3. ROS mode (real rclpy + Fast DDS, every output subscribed; {where})",
                f"p50 {_pct(lat, 50):.1f} / p99 {_pct(lat, 99):.1f} ms one set at a time; DDS in + "
                f"conversion + sync p50 {_pct(dds, 50):.1f} ms; at {ros['input_rate']:g} Hz input "
                f"{ros['sustained_hz']:.1f} Hz out, {ros['dropped']} dropped{sets}"
                + (
                    f", latency under that load p50 {_pct(loaded, 50):.1f} / p99 {_pct(loaded, 99):.1f} ms"
                    if loaded
                    else ""
                )
                + (
                    f" (a set's mean time there, ms: {timeline_parts(timeline)})"
                    if timeline.get("sets")
                    else ""
                )
                + _lock_text(ros),
                # the p99 of the goal is the one under load where measured (before: one set at a time)
                _met(
                    ros["sustained_hz"] >= 0.95 * GOALS["rate_hz"]
                    and _pct(loaded if loaded else lat, 99) <= GOALS["p99_ms"]
                ),
            )
        )
    for key in (
        "ros_innode",
        "ros_inproc",
        "ros_helpers",
        "ros_receiver",
        "ros_shared",
        "ros_noconf",
        "ros_coalesce",
        "ros_info",
    ):
        if "ros" in data and key in data and data["ros"]["sustained_hz"] > 0:
            ratio = data[key]["sustained_hz"] / data["ros"]["sustained_hz"]
            rows.append(
                (
                    f"   {key} against the ros stage (same run, open loop)",
                    f"{ratio:.2f}x the rate ({data[key]['sustained_hz']:.1f} vs "
                    f"{data['ros']['sustained_hz']:.1f} Hz)",
                    "-",
                )
            )
    if "ros" in data and "ros_switch5" in data and data["ros_switch5"]["sustained_hz"] > 0:
        ratio = data["ros"]["sustained_hz"] / data["ros_switch5"]["sustained_hz"]
        rows.append(
            (
                "   the node's switch interval against Python's 5 ms (same run, open loop)",
                f"{ratio:.2f}x the rate ({data['ros']['sustained_hz']:.1f} vs "
                f"{data['ros_switch5']['sustained_hz']:.1f} Hz)",
                "-",
            )
        )
    if len(rows) == rows_before:
        rows.append(("3. ROS mode", f"not measured (stage ros: {stages.get('ros', ('not run',))[0]})", "-"))

    # 5. training
    if train and train.get("single"):
        runs = train["single"] + (train.get("chunked") or []) + (train.get("scaled") or [])
        preset_scale = train["single"][0].get("render_scale", 1.0)  # the preset's own recipe
        data["train"] = runs
        rows.append(
            (
                "5. training >= 10 scenes/s per GPU (talk2dino, paper size, 1 GPU)",
                ", ".join(
                    f"batch {r['batch_size']}, channel_chunk {r.get('channel_chunk', '?')}"
                    + (
                        f", render_scale {r['render_scale']:g}"
                        if r.get("render_scale", 1.0) != preset_scale
                        else ""
                    )
                    + ": "
                    f"{r['scenes_per_s_per_gpu']:.2f} scenes/s ({1e3 * r['median_step_s']:.0f} ms/step, "
                    f"{r['peak_memory_gib']:.1f} GiB)"
                    for r in runs
                ),
                # judged on the preset's own recipe: a smaller render is a different training
                _met(
                    max(r["scenes_per_s_per_gpu"] for r in runs if r.get("render_scale", 1.0) == preset_scale)
                    >= GOALS["train_scenes_s"]
                ),
            )
        )
    else:
        rows.append(
            ("5. training", f"not measured (stage train: {stages.get('train', ('not run',))[0]})", "-")
        )

    stage_text = ", ".join(f"{k} {rc} ({s} s)" for k, (rc, s) in sorted(stages.items()))
    lines = [
        f"Issue 12 on {gpu}, {data['date']} (`benchmarks/realtime_suite.sh`; stages: "
        f"{stage_text or 'none'}).",
        "",
        "| goal | measured | met? |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    return lines, data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--output", type=Path, help="markdown file whose realtime section is updated")
    p.add_argument("--summary", type=Path, help="write the summary markdown here")
    p.add_argument("--json", type=Path, help="write the collected numbers here")
    args = p.parse_args(argv)
    lines, data = summarize(args.work)
    text = "\n".join(lines)
    print(text)
    if args.summary:
        args.summary.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1, default=str))
    if args.output and data.get("predict_ms"):  # only a run that measured something replaces the doc
        from benchmarks.common import update_markdown_section

        update_markdown_section(
            args.output,
            "realtime",
            "## Real time on one GPU (issue 12, `benchmarks/realtime_suite.sh`)\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
