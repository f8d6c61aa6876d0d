"""The compiled-backbone option of OccupancyPredictor (``InferenceConfig.compile_backbone``,
gausstr_core.inference.compile), on the CPU: the option only applies on CUDA, so these tests make the
predictor believe it does (``_compiles_on``) and replace ``torch.compile``: the wiring, the fallback
when compilation fails (at wrap time or at the first call), that an input's own error is not taken
for a compilation failure, and real TorchDynamo tracing with its eager backend (no Inductor: one
compilation for both autocast weight-cache settings, the graph path's and the eager path's). Parity
of the real compiled backbone with the eager path is a GPU test in test_inference_graphs.py.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from gausstr_core.inference import predictor as predictor_module
from gausstr_core.inference.compile import CompiledBackbone
from gausstr_core.inference.predictor import OccupancyPredictor
from gausstr_testing.cameras import rig


def _predictor(monkeypatch, compile_backbone: bool) -> OccupancyPredictor:
    """The tiny preset (random weights, seed 0) as if on CUDA, with the option as asked."""
    monkeypatch.setattr(predictor_module, "_compiles_on", lambda device: True)
    base = OccupancyPredictor.with_random_weights("tiny", "cpu")
    config = dataclasses.replace(base.config, compile_backbone=compile_backbone)
    return OccupancyPredictor(base.model, base.text_encoder, base.grid, config)


def _batch():
    return dataclasses.replace(rig(1, 2, 112, 200), features=None)


@pytest.fixture(scope="module")
def reference_labels():
    """The eager prediction of the same weights (the uncompiled predictor)."""
    return OccupancyPredictor.with_random_weights("tiny", "cpu").predict(_batch(), render_depth=False).labels


def _refuse(*args, **kwargs):
    raise AssertionError("torch.compile must not be called")


def test_off_by_default_and_nothing_is_compiled(monkeypatch, reference_labels):
    monkeypatch.setattr(torch, "compile", _refuse)
    predictor = _predictor(monkeypatch, compile_backbone=False)
    assert predictor.config.compile_backbone is False  # the default
    assert predictor.compile_status == {"enabled": False}
    assert "forward" not in vars(predictor.model.backbone)
    assert torch.equal(predictor.predict(_batch(), render_depth=False).labels, reference_labels)


def test_ignored_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch, "compile", _refuse)
    base = OccupancyPredictor.with_random_weights("tiny", "cpu")
    config = dataclasses.replace(base.config, compile_backbone=True)
    predictor = OccupancyPredictor(base.model, base.text_encoder, base.grid, config)
    assert predictor.compile_status == {"enabled": False}


def test_compile_that_raises_falls_back_to_eager(monkeypatch, caplog, reference_labels):
    def broken(*args, **kwargs):
        raise RuntimeError("no working triton installation")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING):
        predictor = _predictor(monkeypatch, compile_backbone=True)
        for _ in range(2):
            prediction = predictor.predict(_batch(), render_depth=False)
    status = predictor.compile_status
    assert status["enabled"] and not status["compiled"], status
    assert len(status["failures"]) == 1 and "no working triton" in status["failures"][0], status
    assert caplog.text.count("no working triton") == 1  # logged once
    assert torch.equal(prediction.labels, reference_labels)


def test_compiled_call_that_fails_falls_back_for_good(monkeypatch, caplog, reference_labels):
    """torch.compile is lazy: backend failures come with the first call."""
    calls = []

    def lazy_failure(fn, **kwargs):
        assert kwargs.get("dynamic") is False and kwargs.get("mode") in (None, "default"), kwargs

        def compiled(*a, **k):
            calls.append(1)
            raise RuntimeError("BackendCompilerFailed: inductor raised")

        return compiled

    monkeypatch.setattr(torch, "compile", lazy_failure)
    predictor = _predictor(monkeypatch, compile_backbone=True)
    assert predictor.compile_status["compiled"]  # nothing has failed yet
    with caplog.at_level(logging.WARNING):
        first = predictor.predict(_batch(), render_depth=False)
        second = predictor.predict(_batch(), render_depth=False)
    assert len(calls) == 1  # not tried again
    status = predictor.compile_status
    assert not status["compiled"] and "BackendCompilerFailed" in status["failures"][0], status
    assert caplog.text.count("BackendCompilerFailed") == 1
    assert torch.equal(first.labels, reference_labels) and torch.equal(second.labels, reference_labels)


def test_an_input_error_is_raised_and_compilation_stays_on(monkeypatch):
    def failing(fn, **kwargs):
        def compiled(images):
            raise RuntimeError("the compiled graph saw a bad shape")

        return compiled

    monkeypatch.setattr(torch, "compile", failing)
    backbone = OccupancyPredictor.with_random_weights("tiny", "cpu").model.backbone
    wrapped = CompiledBackbone(backbone)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        backbone(torch.rand(1, 3, 113, 200))  # the eager forward's own check
    assert wrapped.status()["compiled"] and wrapped.status()["failures"] == []


def test_switching_off_restores_the_eager_forward(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    predictor = _predictor(monkeypatch, compile_backbone=True)
    backbone = predictor.model.backbone
    assert "forward" in vars(backbone)
    keys = set(predictor.model.state_dict())
    predictor.configure(compile_backbone=False)
    assert "forward" not in vars(backbone) and predictor.compile_status == {"enabled": False}
    assert set(predictor.model.state_dict()) == keys  # checkpoints never see the wrapper


def test_real_dynamo_traces_the_backbone_once_for_both_autocast_cache_settings(monkeypatch, reference_labels):
    """TorchDynamo with a counting eager backend: the compiled backbone gives the eager values, and
    the graph path's autocast setting (weight cache off) reuses the eager path's compilation."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    real_compile = torch.compile

    def compile_counting(fn, dynamic, options):  # Inductor's options mean nothing to this backend
        assert options == {"emulate_precision_casts": True}
        return real_compile(fn, dynamic=dynamic, backend=counting_backend)

    monkeypatch.setattr(torch, "compile", compile_counting)
    predictor = _predictor(monkeypatch, compile_backbone=True)
    prediction = predictor.predict(_batch(), render_depth=False)
    status = predictor.compile_status
    assert status["compiled"] and status["failures"] == [], status
    assert status["compiled_calls"] == 1 and status["compile_s"] > 0, status
    assert len(graphs) >= 1
    compiled = len(graphs)
    images = torch.rand(2, 3, 112, 200)
    with torch.inference_mode():
        for cache in (True, False):
            with torch.autocast("cpu", enabled=False, cache_enabled=cache):
                predictor.model.backbone(images)
    assert len(graphs) == compiled, "the autocast cache setting made TorchDynamo compile again"
    assert torch.equal(prediction.labels, reference_labels)
    torch._dynamo.reset()


def _variant(predict_ms: float, **extra) -> dict:
    stages = {k: [1.0] for k in ("prepare", "predict", "to_host", "device", "outputs", "end_to_end")}
    return {
        "render_depth": True,
        "stages": stages,
        "predict_only": [predict_ms] * 5,
        "pipelined": [predict_ms + 5] * 5,
        "pipelined_rate": 30.0,
        "pipelined_dropped": 0,
        "pipelined_out_hz": 30.0,
        "pipelined_hz": 40.0,
        "saturated_latencies": [],
        "serial_hz": 35.0,
        **extra,
    }


def _compiled_variant(predict_ms: float, compile_s: float) -> dict:
    """A compiled-backbone variant as node_latency.py records it: its time and a successful compile."""
    status = {"enabled": True, "compiled": True, "compile_s": compile_s, "compiled_calls": 2, "failures": []}
    return _variant(predict_ms, compile_status=status, compile_s=compile_s)


def test_the_benchmark_reports_the_compiled_variant_against_eager(tmp_path):
    """benchmarks/node_latency.py's table and realtime_summary.py's goal-1 row (made-up inputs)."""
    import json

    from benchmarks.node_latency import COMPILED, pipeline_table
    from benchmarks.realtime_summary import summarize

    result = {
        "variants": {
            "eager": _variant(40.0),
            "graphs": _variant(25.0),
            COMPILED: _compiled_variant(20.0, compile_s=42.0),
        }
    }
    table = "\n".join(pipeline_table(result))
    assert f"eager / graphs (p50) | eager / {COMPILED} (p50) |" in table
    assert "| 1.60x | 2.00x |" in table  # predict alone: 40 / 25 and 40 / 20
    assert "in 42.0 s" in table
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    lines, data = summarize(tmp_path)
    row = next(line for line in lines if "image backbone compiled" in line)
    assert "p50 20.0 ms vs CUDA graphs 25.0 ms vs eager 40.0 ms" in row
    assert "(2.00x eager, 1.25x graphs)" in row
    assert row.endswith("| yes |") and data["compile"]["compile_s"] == 42.0
    compiled = result["variants"][COMPILED]
    compiled["compile_status"] = {
        **compiled["compile_status"],
        "compiled": False,
        "failures": ["compiled backbone failed: no triton"],
    }
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    row = next(line for line in summarize(tmp_path)[0] if "image backbone compiled" in line)
    assert "FAILED" in row and "no triton" in row and row.endswith("| - |")


def test_the_benchmark_reports_the_weights_cast_once_against_per_frame_casts(tmp_path):
    """The graph path with autocast's per-frame casts is a variant of its own: its ratio column in
    node_latency's table and its time beside the default's in the goal-1 row (made-up inputs)."""
    import json

    from benchmarks.node_latency import GRAPHS_PER_FRAME_CASTS, pipeline_table
    from benchmarks.realtime_summary import summarize

    result = {
        "variants": {
            "eager": _variant(40.0),
            GRAPHS_PER_FRAME_CASTS: _variant(25.0),
            "graphs": _variant(20.0),
        }
    }
    table = "\n".join(pipeline_table(result))
    assert f"eager / {GRAPHS_PER_FRAME_CASTS} (p50) | eager / graphs (p50) |" in table
    assert "| 1.60x | 2.00x |" in table
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    lines, data = summarize(tmp_path)
    row = next(line for line in lines if line.startswith("| 1. predict"))
    assert "CUDA graphs p50 20.0 ms vs eager 40.0 ms in the same run (2.00x)" in row
    assert "at every frame (as before `cast_weights_once`) 25.0 ms (1.25x the weights cast once)" in row
    assert row.endswith("| yes |") and data["predict_ms"]["graphs_per_frame_casts_p50"] == 25.0


def test_the_summary_reports_the_compiled_path_without_depth_and_the_profile(tmp_path):
    """The compiled no-render variant is judged by the 20 ms goal; the profile row carries the device
    time per frame (made-up inputs)."""
    import json

    from benchmarks.node_latency import COMPILED, COMPILED_NO_DEPTH
    from benchmarks.realtime_summary import summarize

    result = {
        "variants": {
            "eager": _variant(40.0),
            "graphs": _variant(25.0),
            COMPILED: _compiled_variant(22.0, compile_s=3.0),
            COMPILED_NO_DEPTH: _variant(19.5),
        },
        "eager_profile": {"kernel_ms_per_frame": 17.25, "wall_ms_per_frame": 41.0, "table": "x"},
    }
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    lines, data = summarize(tmp_path)
    row = next(line for line in lines if "compiled backbone + CUDA graphs without a depth" in line)
    assert "p50 19.5 ms (2.05x eager with depth)" in row and row.endswith("| yes |"), row
    result["variants"][COMPILED_NO_DEPTH] = _variant(21.0)
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    lines, data = summarize(tmp_path)
    row = next(line for line in lines if "compiled backbone + CUDA graphs without a depth" in line)
    assert row.endswith("| **no** |"), row
    # a failed compilation leaves the eager backbone in both variants: nothing to judge
    compiled = result["variants"][COMPILED]
    compiled["compile_status"] = {**compiled["compile_status"], "compiled": False, "failures": ["x"]}
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    row = next(line for line in summarize(tmp_path)[0] if "CUDA graphs without a depth" in line)
    assert row.endswith("| - |"), row
    row = next(line for line in lines if "where the time goes" in line)
    assert "device time 17.2 ms per frame" in row and "wall 41.0 ms" in row
    assert data["predict_ms"]["compiled_no_depth_p50"] == 21.0


def _ros_run(**fields) -> dict:
    """A made-up node_ros.json (what node_latency.py --mode ros writes), with ``fields`` replaced."""
    return {
        "feeder": "process",
        "latencies": [30.0, 35.0, 39.0],
        "dds_in": [5.0, 6.0],
        "node_p50": 25.0,
        "sustained_hz": 29.8,
        "input_rate": 30.0,
        "dropped": 0,
        **fields,
    }


def test_the_summary_counts_the_open_loop_sets_of_the_ros_modes(tmp_path):
    """ROS rows say how many of the sent sets the node's synchronizer completed, and the compiled
    node's run is labelled as such (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize

    ros = _ros_run(
        sent=180, open_loop={"sets_complete": 179, "published": 179, "dropped_busy": 0, "rejected": {}}
    )
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    compiled = {**ros, "compile_status": {"enabled": True, "compiled": True}}
    (tmp_path / "node_ros_compiled.json").write_text(json.dumps(compiled))
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2, rows
    assert all("(179 of 180 sets completed by the synchronizer)" in r for r in rows)
    assert "image backbone compiled" in rows[1] and "image backbone compiled" not in rows[0]
    assert rows[0].endswith("| yes |") and data["ros_compiled"]["open_loop"]["sets_complete"] == 179


def test_the_summary_compares_the_switch_interval_with_the_5_ms_baseline_of_the_same_run(tmp_path):
    """The ros stage again with Python's 5 ms switch interval: its own row, labelled, and the ratio
    of the open-loop rates (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize

    ros = _ros_run(sustained_hz=24.0, dropped=36, switch_interval_ms=0.5)
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    (tmp_path / "node_ros_switch5.json").write_text(
        json.dumps({**ros, "sustained_hz": 16.0, "switch_interval_ms": 5.0})
    )
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2 and "switch interval 0.5 ms" in rows[0] and "switch interval 5 ms" in rows[1]
    ratio = next(line for line in lines if "against Python's 5 ms" in line)
    assert "1.50x the rate (24.0 vs 16.0 Hz)" in ratio, ratio
    assert data["ros_switch5"]["sustained_hz"] == 16.0


def test_the_ros_goal_is_judged_by_the_latency_under_load_where_measured(tmp_path):
    """Goal 3's p99 is the one of the sets answered at 30 Hz when the run measured it (one set at a
    time said 39 ms where the sets under load waited 180 ms on a slow host); the CameraInfo variant is
    labelled (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize

    ros = _ros_run(open_latencies=[30.0, 150.0, 182.0])
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    (tmp_path / "node_ros_info.json").write_text(
        json.dumps({**ros, "open_latencies": [30.0, 33.0, 38.0], "camera_info_every_set": True})
    )
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2, rows
    assert "latency under that load p50 150.0 / p99 181.4 ms" in rows[0] and rows[0].endswith("| **no** |")
    assert "CameraInfo with every set" in rows[1] and rows[1].endswith("| yes |"), rows[1]
    assert data["ros"]["open_loop_p99_ms"] == pytest.approx(181.36)


def test_the_summary_compares_the_helper_processes_with_the_ros_stage_of_the_same_run(tmp_path):
    """ros_helpers (input and output processes on): its own labelled row with the lock held and the
    helpers' CPU, and the ratio of the open-loop rates against the ros stage (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize

    ros = _ros_run(sustained_hz=20.0, lock_profile={"held": 0.78})
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    helpers = {
        **ros,
        "sustained_hz": 30.0,
        "input_process": True,
        "output_process": True,
        "lock_profile": {"held": 0.12},
        "helper_cpu": [{"name": "input process", "share": 0.4}, {"name": "output process", "share": 0.3}],
    }
    (tmp_path / "node_ros_helpers.json").write_text(json.dumps(helpers))
    lines, _ = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2 and "interpreter lock held 78 %" in rows[0], rows
    assert "cameras taken in the input process; outputs published from the output process" in rows[1]
    assert "interpreter lock held 12 %" in rows[1] and "input process 40 % of a core" in rows[1], rows[1]
    ratio = next(line for line in lines if "ros_helpers against the ros stage" in line)
    assert "1.50x the rate (30.0 vs 20.0 Hz)" in ratio, ratio


@pytest.mark.parametrize(
    ("agreement", "difference", "met"), [("99.5153", "3.92e-02", "**no**"), ("100.0000", "0.00e+00", "yes")]
)
def test_the_summary_judges_compiled_parity_by_the_measured_agreement(tmp_path, agreement, difference, met):
    """The compiled-parity row is met only at the graph path's bar (>= 99.9 % labels, 2e-3), whatever
    the GPU test's looser not-broken bounds let pass (the first case: measured on an H100)."""
    from benchmarks.realtime_summary import summarize

    (tmp_path / "tests.log").write_text(
        f"talk2dino compiled backbone + graphs vs eager (test seed 1, frame seed 0): {agreement} % labels "
        f"equal, max confidence difference {difference}\n1 passed in 9.0s\n"
    )
    row = next(line for line in summarize(tmp_path)[0] if "parity: compiled backbone" in line)
    assert f"{agreement} % labels equal" in row and row.endswith(f"| {met} |"), row


def test_the_training_row_is_judged_on_the_presets_render_scale(tmp_path):
    """A faster smaller render is listed but does not meet the training goal: it is another recipe."""
    import json

    from benchmarks.realtime_summary import summarize

    def run(scale, per_s):
        return {
            "batch_size": 2,
            "channel_chunk": 32,
            "render_scale": scale,
            "scenes_per_s_per_gpu": per_s,
            "median_step_s": 2 / per_s,
            "peak_memory_gib": 20.0,
        }

    (tmp_path / "train.json").write_text(
        json.dumps({"single": [run(1.0, 5.5)], "chunked": [], "scaled": [run(0.5, 11.0)]})
    )
    row = next(line for line in summarize(tmp_path)[0] if "5. training" in line)
    assert "render_scale 0.5: 11.00 scenes/s" in row and row.endswith("| **no** |"), row
    (tmp_path / "train.json").write_text(json.dumps({"single": [run(1.0, 10.5)], "scaled": [run(0.5, 20.0)]}))
    row = next(line for line in summarize(tmp_path)[0] if "5. training" in line)
    assert row.endswith("| yes |"), row


def test_the_ros_row_says_where_a_set_spent_its_time_under_load(tmp_path):
    """The open loop's per-set timeline (node_latency.py's ``timeline_ms``): its segment means in the
    ros row, none without sets (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize
    from benchmarks.set_timeline import TIMELINE

    segment = {"mean": 1.0, "p50": 1.0, "p99": 2.0}
    timeline = {"sets": 170, **{name: segment for name, _ in TIMELINE}, "total": {"mean": 6.0, "p99": 9.0}}
    timeline["queue"] = {"mean": 41.5, "p50": 40.0, "p99": 70.0}
    ros = _ros_run(open_latencies=[90.0, 100.0], timeline_ms={"closed": {"sets": 0}, "open": timeline})
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    (tmp_path / "node_ros_innode.json").write_text(json.dumps({**ros, "timeline_ms": {"open": {"sets": 0}}}))
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2, rows
    assert "(a set's mean time there, ms: DDS in, conversion, sync 1.0, waiting for stage 1 41.5," in rows[0]
    assert "mean time there" not in rows[1]
    assert data["ros"]["timeline_open_ms"]["queue"]["mean"] == 41.5


def test_inductor_rounds_as_eager_by_default_and_switching_it_compiles_again(monkeypatch):
    """``compile_emulate_precision_casts`` reaches Inductor's options; changing it at run time
    replaces the compiled backbone (a compilation holds its rounding)."""
    calls = []

    def recording(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", recording)
    predictor = _predictor(monkeypatch, compile_backbone=True)
    assert calls == [{"dynamic": False, "options": {"emulate_precision_casts": True}}]
    assert predictor.compile_status["emulate_precision_casts"] is True
    predictor.configure(compile_emulate_precision_casts=False)
    assert calls[-1]["options"] == {"emulate_precision_casts": False} and len(calls) == 2
    assert predictor.compile_status["emulate_precision_casts"] is False
    assert "forward" in vars(predictor.model.backbone)  # still compiled, with the other rounding
    predictor.configure(density_threshold=0.1)  # another setting: no new compilation
    assert len(calls) == 2
    labels = predictor.predict(_batch(), render_depth=False).labels
    predictor.configure(compile_backbone=False)
    assert "forward" not in vars(predictor.model.backbone)
    assert torch.equal(predictor.predict(_batch(), render_depth=False).labels, labels)


def test_the_summary_judges_the_default_rounding_and_lists_the_fused_casts(tmp_path):
    """Two parity lines (the test's two parameters) give two rows: the default's is judged, the
    fused casts' is listed; the fused-cast variant's time is a goal-1 row of its own."""
    import json

    from benchmarks.node_latency import COMPILED, COMPILED_FUSED_CASTS
    from benchmarks.realtime_summary import summarize

    (tmp_path / "tests.log").write_text(
        "talk2dino compiled backbone + graphs vs eager, casts as eager (test seed 1, frame seed 0): "
        "99.9500 % labels equal, max confidence difference 1.00e-03\n"
        "talk2dino compiled backbone + graphs vs eager, casts fused (test seed 1, frame seed 0): "
        "99.5153 % labels equal, max confidence difference 3.92e-02\n2 passed in 9.0s\n"
    )
    result = {
        "variants": {
            "eager": _variant(40.0),
            "graphs": _variant(25.0),
            COMPILED: _compiled_variant(22.0, compile_s=20.0),
            COMPILED_FUSED_CASTS: _compiled_variant(20.0, compile_s=20.0),
        }
    }
    (tmp_path / "node_pipeline.json").write_text(json.dumps(result))
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "parity: compiled backbone" in line]
    assert len(rows) == 2, rows
    assert "99.9500 %" in rows[0] and "casts fused" not in rows[0] and rows[0].endswith("| yes |"), rows[0]
    assert "Inductor's fused casts" in rows[1] and "99.5153 %" in rows[1] and rows[1].endswith("| - |")
    fused = next(line for line in lines if "the same with Inductor's fused casts" in line)
    assert "p50 20.0 ms (1.10x rounding as eager)" in fused and fused.endswith("| yes |"), fused
    assert data["predict_ms"]["compiled_fused_casts_p50"] == 20.0


def test_the_summary_labels_the_occupancy_without_its_confidence(tmp_path):
    """ros_noconf (occupancy_confidence off): its own labelled row, judged like the ros stage, and the
    rate against the ros stage of the same run (made-up inputs)."""
    import json

    from benchmarks.realtime_summary import summarize

    ros = _ros_run(open_latencies=[40.0, 50.0, 55.0], occupancy_confidence=True)
    (tmp_path / "node_ros.json").write_text(json.dumps(ros))
    noconf = {**ros, "open_latencies": [33.0, 36.0, 39.0], "occupancy_confidence": False}
    (tmp_path / "node_ros_noconf.json").write_text(json.dumps(noconf))
    lines, data = summarize(tmp_path)
    rows = [line for line in lines if "3. ROS mode" in line]
    assert len(rows) == 2 and "without its per-voxel confidence" not in rows[0], rows
    assert "occupancy without its per-voxel confidence (occupancy_confidence off)" in rows[1]
    assert rows[0].endswith("| **no** |") and rows[1].endswith("| yes |"), rows
    assert any(line.startswith("|    ros_noconf against the ros stage") for line in lines)
    assert data["ros_noconf"]["open_loop_p99_ms"] < data["ros"]["open_loop_p99_ms"]
