#!/usr/bin/env python3
"""The GPU results of docs/results.md, unattended on one GPU: synthetic data, the trivial baselines,
trainings (several at once on the one GPU), held-out scores, tune-world density sweeps, and the
tables (results.md snippet + results.json rows).

    python scripts/results_gpu.py --out gpu_out --runs featup_both featup_depth_only --minutes 6
    python scripts/results_gpu.py --list                       # the runs it knows

A training longer than one machine call: give every call the same ``--minutes`` and, from the
second on, ``--resume --skip-data``; a training cut by ``--deadline-minutes`` is stopped with SIGINT,
saves its state, and the next call continues it (the budget schedule and the clock carry over).
A training meant to finish in one call takes ``--fit-deadline``: if data and the gsplat build took
longer than planned, it is shortened to end on its own schedule (with its decay) early enough to be
evaluated, instead of being stopped without a model.
The state and the data live in ``--work`` on the machine: on a lent machine that forgets everything
when it goes back, the next call must come while it is still held (docs/results.md, "Reproduce").

Run it through scripts/run_results_gpu.sh on the lent GPU machine (installs the carried wheels).

Data (``--work``): ``featup`` = 80 scenes (64 train / 16 held-out val) of the 216 x 384 synthetic
world with 512-d feature targets from the featup preset's random-init CLIP text tower (seed 0);
``featup_tune`` = 16 other worlds (seed 1) for choosing settings; ``tiny`` = 100 scenes
(80 / 20) at 112 x 200 with the tiny text tower; ``tiny_tune`` likewise (seed 1). Held-out scores
(``eval_<run>``) use the val split, never seen in training or tuning; the density sweeps
(``tune_<run>/sweep.json``) use the tune worlds only.

Every training uses the preset's recipe with the "budget" schedule on ``--minutes`` (or the run's
own minutes): warm-up, full rate, and the x0.1 decay at 2/3 of the time, whatever the step count.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import datetime
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# featup at paper size on the synthetic world, text tower random-init seed 0 (the feature targets
# were made with it). The recorded rows train without the official segmentation heads (they had no 2D
# labels before the thirteenth sitting); featup_both_segmentation trains them on the generator's
# Grounded-SAM-style labels (gausstr-synth --segmentation-labels).
FEATUP_TEXT = ["--set", "text.random_init_seed=0"]
FEATUP = [*FEATUP_TEXT, "--set", "model.head.segment_classes=0"]
# The synthetic cameras are 216 x 384, the input 432 x 768 (upsampled): render the loss at the
# targets' native resolution instead of 4x as many interpolated pixels. (The featup preset does so
# itself since 2026-12-07; kept explicit so that every recorded command trains what it trained.)
HALF_RENDER = ["--set", "loss.render_scale=0.5"]
NO_FEATURES = ["--set", "loss.feature_weight=0", "--set", "loss.centered_feature_weight=0"]
NO_DEPTH = ["--set", "loss.depth_weight=0", "--set", "loss.depth_head_weight=0"]
# Inference settings tried on the tune worlds (each with the density sweep): featup's official raw
# logits (feature . unit prototype), cosine logits, and cosine logits of centred prototypes and
# features. The synthetic featup
# targets are unit text embeddings whose classes have cosine ~0.94 to each other, and a model trained
# with the (scale-free) cosine loss has arbitrary feature norms, so raw logits may be nearly flat.
LOGIT_VARIANTS = {
    "raw": [],
    "cos50": ["--set", "inference.logit_scale=50"],
    # the prototypes' common direction removed (inference.center_prototypes): a featup model after
    # 1,250 steps called 16-30 % of the flat classes and 29-44 % of barriers and cones "car"
    "cos50_centred": ["--set", "inference.logit_scale=50", "--set", "inference.center_prototypes=true"],
    # the same hub met per scene instead (inference.balance_prompts: each prompt against its own mean
    # share of the occupied voxels); on the hub-free built-in tiny model it lowered mIoU (0.25: -0.2)
    "cos50_balanced": ["--set", "inference.logit_scale=50", "--set", "inference.balance_prompts=0.5"],
}
SWEEP = ["0.02", "0.04", "0.08", "0.12", "0.16", "0.2", "0.25", "0.3", "0.4", "0.5", "0.6", "0.8"]


@dataclass
class Run:
    """One row of the results table.

    Attributes:
        label: the row name in the tables.
        preset: model preset.
        data: "featup" or "tiny" (the dataset; its tune worlds are "<data>_tune").
        baseline: a gausstr-eval baseline instead of a training ("all-free", "init", ...).
        train: extra gausstr-train arguments.
        evaluate: extra gausstr-eval arguments (both held-out and tune evaluations).
        minutes: training minutes (None = --minutes / --tiny-minutes).
        keep: bring the deployment checkpoint back (small models only).
    """

    label: str
    preset: str
    data: str
    baseline: str | None = None
    train: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)
    minutes: float | None = None
    keep: bool = False


def tiny_run(label: str, queries: int, extra: list[str] | None = None, keep: bool = True) -> Run:
    return Run(
        label,
        "tiny",
        "tiny",
        train=["--batch-size", "2", "--set", f"model.decoder.queries_per_view={queries}", *(extra or [])],
        keep=keep,
    )


def featup_option(label: str, *settings: str) -> Run:
    """The full featup model (both losses, loss rendered at half size) with ``--set`` overrides."""
    return Run(
        label, "featup", "featup", train=[*FEATUP, *HALF_RENDER, *(a for s in settings for a in ("--set", s))]
    )


RUNS: dict[str, Run] = {
    "featup_all_free": Run("all free", "featup", "featup", baseline="all-free", evaluate=FEATUP_TEXT),
    "featup_init": Run(
        "init (untrained Gaussians)", "featup", "featup", baseline="init", evaluate=FEATUP_TEXT
    ),
    "featup_unprojection": Run(
        "depth unprojection + nearest prototype",
        "featup",
        "featup",
        baseline="depth-unprojection",
        evaluate=FEATUP_TEXT,
    ),
    "featup_depth_only": Run(
        "featup, depth only", "featup", "featup", train=[*FEATUP, *HALF_RENDER, *NO_FEATURES]
    ),
    "featup_features_only": Run(
        "featup, features only", "featup", "featup", train=[*FEATUP, *HALF_RENDER, *NO_DEPTH]
    ),
    "featup_both": Run("featup, both", "featup", "featup", train=[*FEATUP, *HALF_RENDER]),
    "featup_both_seed1": Run(
        "featup, both (seed 1)", "featup", "featup", train=[*FEATUP, *HALF_RENDER, "--seed", "1"]
    ),
    # Half the official rate: the official 2e-4 is for 2 scenes on each of several GPUs; at 2 scenes
    # per step in all, some runs at 2e-4 collapse (docs/results.md). Does the lower rate cost quality?
    "featup_both_lr1e4": Run(
        "featup, both (learning rate 1e-4)", "featup", "featup", train=[*FEATUP, *HALF_RENDER, "--lr", "1e-4"]
    ),
    "featup_both_full_render": Run(
        "featup, both (loss rendered at 432 x 768)",
        "featup",
        "featup",
        train=[*FEATUP, "--set", "loss.render_scale=1.0"],
    ),
    "featup_both_centred": featup_option(
        "featup, both + centred feature term 5", "loss.centered_feature_weight=5"
    ),
    # the tiny preset's weight: the featup targets' classes are far more alike (cosine 0.89-0.98)
    # than the tiny tower's (0.58), where the term was worth +2.3 IoU / +2.9 mIoU
    "featup_both_centred10": featup_option(
        "featup, both + centred feature term 10", "loss.centered_feature_weight=10"
    ),
    # weights 5 and 10 found barrier and pedestrian (0 -> 13-14 / 1) but cost 7 IoU for +0.3 mIoU
    # (docs/results.md, seventh sitting); does a weaker term keep the classes without the geometry cost?
    "featup_both_centred2": featup_option(
        "featup, both + centred feature term 2", "loss.centered_feature_weight=2"
    ),
    # weights 2, 5 and 10 from the first step cost 6-8 IoU (docs/results.md): the same term at 5,
    # switched on after a third of the run, once the geometry has formed
    "featup_both_centred_late": featup_option(
        "featup, both + centred feature term 5 from a third of the run",
        "loss.centered_feature_weight=5",
        "loss.centered_feature_start=0.34",
    ),
    # the term reshapes the geometry (the densities fall, each pixel won by one Gaussian): the same
    # term at 5 with its gradient kept to the Gaussians' features (a second, geometry-detached render)
    "featup_both_centred_detached": featup_option(
        "featup, both + centred feature term 5, geometry detached",
        "loss.centered_feature_weight=5",
        "loss.centered_feature_geometry_detached=true",
    ),
    # The centred terms found barrier and pedestrian but cost geometry; the class decision itself
    # (nearest text prototype) never gets a gradient of its own. The zero-shot label term trains it in
    # 2D against each target patch's nearest-prompt class (label-free; gausstr_core.losses.zero_shot).
    "featup_both_zero_shot": featup_option(
        "featup, both + zero-shot label term 1", "loss.zero_shot_label_weight=1"
    ),
    # the same pair again with another training seed, for how much a seed moves the gain
    "featup_both_zero_shot_seed1": Run(
        "featup, both + zero-shot label term 1 (seed 1)",
        "featup",
        "featup",
        train=[*FEATUP, *HALF_RENDER, "--set", "loss.zero_shot_label_weight=1", "--seed", "1"],
    ),
    # the official featup configuration: its 26-way auxiliary segmentation heads on rendered
    # features, trained on 2D labels (Grounded SAM 2 in the official pipeline; here the generator's
    # exact per-pixel classes, an upper bound of what Grounded SAM 2 gives)
    "featup_both_segmentation": Run(
        "featup, both + segmentation heads on 2D labels (the official configuration)",
        "featup",
        "featup",
        train=[*FEATUP_TEXT, *HALF_RENDER],
    ),
    "featup_both_zero_shot03": featup_option(
        "featup, both + zero-shot label term 0.3", "loss.zero_shot_label_weight=0.3"
    ),
    # at tiny scale on the featup tower's targets the gain grew with the weight (0.3, 1, 3, 10;
    # docs/results.md): the next weight up at paper scale
    "featup_both_zero_shot3": featup_option(
        "featup, both + zero-shot label term 3", "loss.zero_shot_label_weight=3"
    ),
    # between the two: weight 3 for 20 minutes met the mIoU goal with IoU 1.9 short, weight 1 for
    # 13 minutes missed the IoU goal by 0.01 with mIoU 0.2 over it
    "featup_both_zero_shot2": featup_option(
        "featup, both + zero-shot label term 2", "loss.zero_shot_label_weight=2"
    ),
    # the term's runs land 1.5-3.4 IoU below the baseline's: the same term at weight 3 with its class
    # render's geometry detached, so that it trains what decides the class and not who wins a pixel
    "featup_both_zero_shot3_detached": featup_option(
        "featup, both + zero-shot label term 3, geometry detached",
        "loss.zero_shot_label_weight=3",
        "loss.zero_shot_geometry_detached=true",
    ),
    # A diagnostic, not the paper's configuration: docs/results.md reads the missing mIoU as
    # resolution (300 Gaussians of several metres per camera never win a barrier or a pedestrian,
    # car and vegetation sit at half the unprojection baseline). Twice the Gaussians tests that reading.
    "featup_both_q600": featup_option(
        "featup, both, 600 queries per view (3,600 Gaussians)", "model.decoder.queries_per_view=600"
    ),
    "featup_gaussrender": featup_option("featup, both + GaussRender loss", "loss.gaussrender.weight=1"),
    # GaussRender at weight 1 collapsed the semantics with featup's raw logits (docs/results.md): its
    # class probabilities are a softmax over nearly parallel prototypes. The same with cosine logits.
    "featup_gaussrender_cos50": featup_option(
        "featup, both + GaussRender loss, cosine logits x 50",
        "loss.gaussrender.weight=1",
        "inference.logit_scale=50",
    ),
    # GaussRender's own weight (lambda 10 in its paper); weight 1 already cost 7 mIoU with these logits
    "featup_gaussrender10_cos50": featup_option(
        "featup, both + GaussRender loss weight 10, cosine logits x 50",
        "loss.gaussrender.weight=10",
        "inference.logit_scale=50",
    ),
    "featup_photometric": featup_option(
        "featup, both + photometric RGB", "model.head.rgb_head=true", "loss.photometric.weight=1"
    ),
    "featup_point_cloud_init": featup_option(
        "featup, both + point-cloud query init", "model.decoder.reference_init=point_cloud"
    ),
    "featup_pruning": featup_option("featup, both + opacity pruning 0.3", "loss.prune_opacity=0.3"),
    "tiny_all_free": Run("all free", "tiny", "tiny", baseline="all-free"),
    "tiny_init": Run("init (untrained Gaussians)", "tiny", "tiny", baseline="init"),
    "tiny_unprojection": Run(
        "depth unprojection + nearest prototype", "tiny", "tiny", baseline="depth-unprojection"
    ),
    "tiny_q150": tiny_run("tiny, 150 queries per view", 150),
    "tiny_q100": tiny_run("tiny, 100 queries per view", 100),
    "tiny_q40": tiny_run("tiny (40 queries per view)", 40),
}

DATASETS = {
    # name: (gausstr-synth arguments, workers share)
    "featup": [
        "--scenes",
        "80",
        "--seed",
        "0",
        "--resolution",
        "216",
        "384",
        "--patch-size",
        "8",
        "--text-preset",
        "featup",
        "--text-seed",
        "0",
        "--feature-dtype",
        "float16",
        "--segmentation-labels",
    ],
    "featup_tune": [
        "--scenes",
        "16",
        "--seed",
        "1",
        "--resolution",
        "216",
        "384",
        "--patch-size",
        "8",
        "--text-preset",
        "featup",
        "--text-seed",
        "0",
        "--feature-dtype",
        "float16",
    ],
    "tiny": ["--scenes", "100", "--seed", "0", "--resolution", "112", "200", "--patch-size", "8"],
    "tiny_tune": ["--scenes", "16", "--seed", "1", "--resolution", "112", "200", "--patch-size", "8"],
}

_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# Seconds kept free before the deadline for the evaluations after a training (held-out scores, tune
# sweeps, then the tuned held-out scores): two featup models evaluated at once took about 95 s on an
# H100 (2026-12-06). And the seconds a training spends outside its own clock (model and data-loader
# start, the final save): about 30 s there.
EVAL_RESERVE_S = 150.0
TRAIN_STARTUP_S = 45.0

THREADS = "2"  # torch/OpenMP threads per child: many run at once, torch's default is every core each


def run_logged(name: str, cmd: list[str], log_dir: Path, timeout_s: float, env: dict | None = None) -> int:
    """Run a command with its output in ``<log_dir>/<name>.log``; kill it after ``timeout_s``."""
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS, **(env or {})}
    log = log_dir / f"{name}.log"
    start = time.time()
    with log.open("w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            proc.send_signal(2)  # SIGINT: the trainer saves what it has
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            rc = rc if rc else 124
    tail = [
        line
        for line in log.read_text(errors="replace").replace("\r", "\n").splitlines()
        if line.strip() and not line.startswith(("train:", "evaluate:", "make-bag", "gausstr-synth:"))
    ][-3:]
    say(f"{name}: rc={rc} in {time.time() - start:.0f} s" + "".join(f"\n    {t}" for t in tail))
    return rc


class Results:
    """Runs the stages and keeps what each run produced."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.work = Path(args.work)
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.time() + 60 * args.deadline_minutes
        self.device = gpu_name()
        self.date = datetime.date.today().isoformat()
        self.commands: dict[str, list[list[str]]] = {}
        # the minutes a training was planned for, where --fit-deadline shortened it (the tables say so:
        # such a row is not at the steps of its planned comparison)
        self.planned_minutes: dict[str, float] = {}

    def left(self) -> float:
        return self.deadline - time.time()

    def data_dir(self, name: str) -> Path:
        return self.work / name

    # -- stages ---------------------------------------------------------------------------------

    def make_data(self, names: list[str]) -> None:
        todo = [n for n in names if not (self.data_dir(n) / "nuscenes" / "synthetic.json").is_file()]
        if not todo:
            return
        cores = os.cpu_count() or 4
        weights = {"featup": 5, "featup_tune": 1, "tiny": 3, "tiny_tune": 1}
        total = sum(weights.get(n, 1) for n in todo)
        with futures.ThreadPoolExecutor(len(todo)) as pool:
            jobs = []
            for n in todo:
                workers = max(1, round(cores * weights.get(n, 1) / total))
                cmd = [
                    PY,
                    "-m",
                    "gausstr_core.data.synthetic.cli",
                    "--out",
                    str(self.data_dir(n)),
                    *DATASETS[n],
                    "--workers",
                    str(workers),
                    "--quiet",
                    "--no-preview",
                ]
                if n.endswith("_tune"):
                    cmd += ["--val-fraction", "0.5"]
                jobs.append(pool.submit(run_logged, f"data_{n}", cmd, self.logs, self.left()))
            for j in jobs:
                j.result()

    def warm_up(self) -> None:
        """Compile gsplat and the CUDA voxelizer once, before the runs: processes compiling at once on
        a fresh host wait for (or break) each other's builds."""
        code = (
            "import torch; from gausstr_core.gaussians import Gaussians; "
            "from gausstr_core.render import render_gaussians; d = 'cuda'; n = 64; "
            "g = Gaussians(torch.randn(1, n, 3, device=d) + torch.tensor([0, 0, 8.0], device=d), "
            "torch.full((1, n, 3), 0.3, device=d), "
            "torch.tensor([[[1.0, 0, 0, 0]]], device=d).expand(1, n, 4), "
            "torch.full((1, n), 0.5, device=d), torch.randn(1, n, 8, device=d)); "
            "k = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]], device=d)[None, None]; "
            "r = render_gaussians(g, k, torch.eye(4, device=d)[None, None], (48, 64), backend='gsplat'); "
            "from gausstr_core.voxelize import voxelize_gaussians; from gausstr_core.grid import VoxelGrid; "
            "dens, _ = voxelize_gaussians(g.means, g.covariances(), g.opacities, g.features, VoxelGrid(), "
            "backend='cuda'); "
            "torch.cuda.synchronize(); print('gsplat and voxelizer compiled', tuple(r.features.shape))"
        )
        run_logged("warmup_gsplat", [PY, "-c", code], self.logs, min(300, self.left()))

    def train(self, key: str) -> None:
        run, a = RUNS[key], self.args
        minutes = run.minutes or (a.tiny_minutes if run.preset == "tiny" else a.minutes)
        out = self.work / key
        resume = a.resume and (out / "checkpoints" / "last.pt").is_file()
        if out.exists() and not resume:
            subprocess.run(["rm", "-rf", str(out)], check=False)
        if resume:
            step, done, transparent_since = state_progress(out / "checkpoints" / "last.pt")
            to_go = 60 * minutes - done + TRAIN_STARTUP_S
            if transparent_since is not None:
                say(
                    f"{key}: warning: partial collapse since step {transparent_since} (most Gaussians "
                    "transparent; docs/training.md): continuing it may spend the call on an empty map"
                )
            # the stop below comes 60 s before the deadline: say whether this call can finish it
            say(
                f"{key}: resuming at step {step}, {done / 60:.2f} of {minutes:g} training "
                f"minutes; about {to_go:.0f} s to go, {self.left() - 60:.0f} s before this call stops it"
            )
        fit = fitted_minutes(minutes, self.left(), resume)
        if a.fit_deadline and fit < minutes:
            say(
                f"{key}: {minutes:g} training minutes do not fit before the deadline with "
                f"{EVAL_RESERVE_S:.0f} s for evaluation; training {fit:g} minutes instead"
            )
            self.planned_minutes[key] = minutes
            minutes = fit
        workers = max(1, (os.cpu_count() or 4) // max(1, a.parallel) - 1)
        cmd = [
            PY,
            "-m",
            "gausstr_core.train.cli",
            "--preset",
            run.preset,
            "--data",
            str(self.data_dir(run.data)),
            "--out",
            str(out),
            "--max-minutes",
            f"{minutes:g}",
            "--epochs",
            "10000",
            "--max-steps",
            str(a.max_steps or 1000000),
            "--schedule",
            "budget",
            "--num-workers",
            str(workers),
            "--no-eval",
            "--image-every",
            "250",
            "--checkpoint-every",
            "500",
            *run.train,
            *(["--resume"] if resume else []),
        ]
        self.commands[key] = [cmd]
        run_logged(f"train_{key}", cmd, self.logs, min(60 * minutes + 240, self.left() - 60))

    def evaluate(self, key: str) -> None:
        """Held-out scores with the preset's inference settings; for models (and the init baseline)
        also the tune-world sweeps, and held-out scores again with the settings the tune worlds chose."""
        run = RUNS[key]
        if run.baseline:
            target = ["--baseline", run.baseline, "--preset", run.preset]
        else:
            target = ["--checkpoint", str(self.work / key / "model.safetensors")]
            if not (self.work / key / "model.safetensors").is_file():
                say(f"{key}: no model to evaluate")
                return
        cli = [PY, "-m", "gausstr_core.evaluation.cli", *target]
        held_out = [
            *cli,
            "--data",
            str(self.data_dir(run.data)),
            "--out",
            str(self.out / f"eval_{key}"),
            *run.evaluate,
        ]
        train = self.commands.get(key, [])
        self.commands[key] = [*train, held_out]
        if run.baseline in ("all-free", "depth-unprojection"):
            run_logged(f"eval_{key}", held_out, self.logs, min(600, self.left() - 20))
            return  # no Gaussians, no density to sweep
        variants = {"default": []}
        if run.preset == "featup" and self.args.logit_variants:
            variants = {name: LOGIT_VARIANTS[name] for name in self.args.logit_variants}
        jobs = {f"eval_{key}": held_out}
        for variant, extra in variants.items():
            out = self.out / f"tune_{key}_{variant}"
            jobs[out.name] = [
                *cli,
                "--data",
                str(self.data_dir(run.data + "_tune")),
                "--split",
                "all",
                "--no-rayiou",
                "--bev",
                "1",
                "--out",
                str(out),
                "--density-sweep",
                *SWEEP,
                *run.evaluate,
                *extra,
            ]
        # the held-out default and the tune sweeps at once: they are partly CPU-bound (metrics)
        with futures.ThreadPoolExecutor(len(jobs)) as pool:
            for name, cmd in jobs.items():
                pool.submit(run_logged, name, cmd, self.logs, min(420, self.left() - 10))
        best = None  # (IoU + mIoU, variant, threshold)
        for variant in variants:
            out = self.out / f"tune_{key}_{variant}"
            if (out / "sweep.json").is_file():
                for t, m in json.loads((out / "sweep.json").read_text()).items():
                    score = (m["iou"] or 0.0) + (m["miou"] or 0.0)
                    if best is None or score > best[0]:
                        best = (score, variant, t)
        if best is None:
            return
        _, variant, threshold = best
        chosen = [*variants[variant], "--set", f"inference.density_threshold={threshold}"]
        (self.out / f"tune_{key}_choice.json").write_text(
            json.dumps({"variant": variant, "density_threshold": float(threshold), "overrides": chosen})
        )
        tuned = [
            *cli,
            "--data",
            str(self.data_dir(run.data)),
            "--out",
            str(self.out / f"eval_{key}_tuned"),
            *run.evaluate,
            *chosen,
        ]
        self.commands[key + "_tuned"] = [*train, tuned]
        run_logged(f"eval_{key}_tuned", tuned, self.logs, min(600, self.left() - 5))

    def train_and_evaluate(self, key: str) -> None:
        if RUNS[key].baseline is None:
            self.train(key)
            model = self.work / key / "model.safetensors"
            if RUNS[key].keep and model.is_file():
                subprocess.run(["cp", str(model), str(self.out / f"{key}.safetensors")], check=False)
        self.evaluate(key)

    # -- tables ---------------------------------------------------------------------------------

    def rows(self, keys: list[str]) -> list[dict]:
        """results.json rows: every run with the preset's inference settings, and each tuned model
        again with the settings its tune-world sweep chose (held-out scenes both times)."""
        rows = []
        for key in keys:
            for suffix in ("", "_tuned"):
                row = self.row(key, suffix)
                if row is not None:
                    rows.append(row)
        return rows

    def row(self, key: str, suffix: str) -> dict | None:
        run = RUNS[key]
        metrics = self.out / f"eval_{key}{suffix}" / "metrics.json"
        if not metrics.is_file():
            return None
        m = json.loads(metrics.read_text())
        occ = m["occupancy"]
        steps = minutes = transparent_since = None
        state = self.work / key / "checkpoints" / "last.pt"
        if run.baseline is None and state.is_file():
            steps, seconds, transparent_since = state_progress(state)
            minutes = round(seconds / 60, 2)
        choice_file = self.out / f"tune_{key}_choice.json"
        choice = json.loads(choice_file.read_text()) if suffix and choice_file.is_file() else None
        label = run.label
        if choice is not None:
            label += f" [tuned: {choice['variant']} logits, density {choice['density_threshold']:g}]"
        sweeps = {}
        # by the variant names: a glob "tune_<key>_*" also caught the runs whose key extends this
        # one (tune_featup_both_lr1e4_default under featup_both)
        for variant in (*LOGIT_VARIANTS, "default"):
            path = self.out / f"tune_{key}_{variant}" / "sweep.json"
            if path.is_file():
                sweeps[variant] = json.loads(path.read_text())
        return {
            "name": label,
            "key": key + suffix,
            "preset": run.preset,
            "iou": m["summary"]["iou"],
            "miou": m["summary"]["miou"],
            "rayiou": m["summary"]["rayiou"],
            "precision": occ["precision"],
            "recall": occ["recall"],
            "per_class_iou": occ["per_class_iou"],
            "scenes": m["summary"]["scenes"],
            "steps": steps,
            "train_minutes": minutes,
            "planned_minutes": self.planned_minutes.get(key),
            # the trainer's partial-collapse watch (most Gaussians transparent since this step)
            "mostly_transparent_since_step": transparent_since,
            "device": self.device,
            "date": self.date,
            "command": " && ".join(
                shlex.join(["python", *c[1:]]) for c in self.commands.get(key + suffix, [])
            ),
            "inference_overrides": choice["overrides"] if choice else [],
            "tune_sweeps": sweeps if not suffix else None,
        }

    def write_tables(self, rows: list[dict]) -> None:
        (self.out / "results.json").write_text(json.dumps(rows, indent=1))
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        lines = [
            "| model | IoU | mIoU | RayIoU | precision | recall | steps | training |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in rows:
            train = f"{r['train_minutes']:.1f} min" if r["train_minutes"] is not None else "-"
            if r.get("planned_minutes"):
                train += f" (shortened from {r['planned_minutes']:g} min by --fit-deadline)"
            since = r.get("mostly_transparent_since_step")
            if since is not None:
                train += f" (partial collapse: most Gaussians transparent since step {since})"
            lines.append(
                f"| {r['name']} ({r['preset']}) | {fmt(r['iou'])} | {fmt(r['miou'])} | "
                f"{fmt(r['rayiou'])} | {fmt(r['precision'])} | {fmt(r['recall'])} | "
                f"{r['steps'] or '-'} | {train} |"
            )
        for r in rows:
            for variant, sweep in (r["tune_sweeps"] or {}).items():
                lines.append(
                    f"\n{r['key']} tune worlds, {variant}: "
                    + ", ".join(f"{t}: {fmt(v['iou'])}/{fmt(v['miou'])}" for t, v in sweep.items())
                )
        header = f"device: {self.device}, {self.date}\n\n"
        (self.out / "results.md").write_text(header + "\n".join(lines) + "\n")
        print("\n".join(lines))


def state_progress(path: Path) -> tuple[int, float, int | None]:
    """(step, training seconds, the first step of a partial collapse still going on at the end or
    None) of a gausstr-train state file (``checkpoints/last.pt``)."""
    import torch

    from gausstr_core.train.trainer import state_step

    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["step"]), float(state.get("train_seconds", 0.0)), state_step(state, "transparent_since")


def fitted_minutes(minutes: float, seconds_left: float, resume: bool) -> float:
    """The training minutes that end (startup and final save included) ``EVAL_RESERVE_S`` before a
    deadline ``seconds_left`` away: ``minutes`` if they fit, else fewer (at least 0.5, to 0.01).
    A resumed training keeps its ``minutes``: its budget schedule was set when it started."""
    if resume:
        return minutes
    fit = (seconds_left - EVAL_RESERVE_S - TRAIN_STARTUP_S) / 60
    if fit >= minutes:
        return minutes
    return max(0.5, int(fit * 100) / 100)


def gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "gpu_out"), help="results, logs, pictures")
    p.add_argument("--work", default="/tmp/gausstr_results", help="data and run directories")
    p.add_argument(
        "--runs",
        nargs="+",
        default=[
            "featup_all_free",
            "featup_init",
            "featup_unprojection",
            "featup_depth_only",
            "featup_features_only",
            "featup_both",
        ],
    )
    p.add_argument("--minutes", type=float, default=6.0, help="training minutes of featup/talk2dino runs")
    p.add_argument("--tiny-minutes", type=float, default=5.0, help="training minutes of tiny runs")
    p.add_argument("--parallel", type=int, default=3, help="trainings at once on the GPU")
    p.add_argument(
        "--run-minutes",
        nargs="+",
        default=[],
        metavar="RUN=MINUTES",
        help="training minutes of single runs (e.g. featup_depth_only=2.5)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        help="cap every training at this many steps (the budget schedule then ends on whichever of "
        "steps and minutes comes first): options compared at the steps of an earlier baseline run",
    )
    p.add_argument("--deadline-minutes", type=float, default=60.0, help="stop everything after this")
    p.add_argument("--skip-data", action="store_true", help="the data directories exist already")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue trainings whose run directory holds a saved state (a run stopped at the "
        "deadline saves one) instead of starting them again: one training over several calls",
    )
    p.add_argument(
        "--fit-deadline",
        action="store_true",
        help="shorten a fresh training that would not end before the deadline with time left to "
        "evaluate it, so that it finishes its schedule and is evaluated (without: the deadline stops "
        "it with SIGINT and a later call continues it with --resume)",
    )
    p.add_argument("--scenes", type=int, help="override every dataset's scene count (smoke tests)")
    p.add_argument(
        "--logit-variants",
        nargs="+",
        choices=list(LOGIT_VARIANTS),
        default=list(LOGIT_VARIANTS),
        help="inference variants each featup model is tuned with on the tune worlds (LOGIT_VARIANTS)",
    )
    p.add_argument(
        "--no-logit-variants",
        dest="logit_variants",
        action="store_const",
        const=[],
        help="tune featup models with their preset's logits only",
    )
    p.add_argument("--list", action="store_true", help="print the known runs and exit")
    args = p.parse_args(argv)
    if args.list:
        for key, run in RUNS.items():
            print(f"{key:28s} {run.label}")
        return 0
    unknown = [k for k in args.runs if k not in RUNS]
    if unknown:
        p.error(f"unknown runs {unknown}; --list shows the known ones")
    for item in args.run_minutes:
        key, _, minutes = item.partition("=")
        if key not in RUNS:
            p.error(f"--run-minutes: unknown run {key!r}")
        RUNS[key].minutes = float(minutes)
    if args.scenes:
        for spec in DATASETS.values():
            spec[spec.index("--scenes") + 1] = str(args.scenes)
    results = Results(args)
    say(f"device {results.device}; runs {args.runs}")
    datasets = sorted({RUNS[k].data for k in args.runs} | {RUNS[k].data + "_tune" for k in args.runs})
    gpu = results.device != "cpu"
    with futures.ThreadPoolExecutor(2) as pool:
        data = pool.submit(results.make_data, [] if args.skip_data else datasets)
        if gpu:
            pool.submit(results.warm_up).result()
        data.result()
    trainings = [k for k in args.runs if RUNS[k].baseline is None]
    baselines = [k for k in args.runs if RUNS[k].baseline is not None]
    with futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
        jobs = [pool.submit(results.train_and_evaluate, k) for k in trainings]
        with futures.ThreadPoolExecutor(1) as side:  # baselines alongside, one at a time
            for k in baselines:
                side.submit(results.evaluate, k)
        for j in jobs:
            j.result()
    results.write_tables(results.rows(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
