"""Inference settings (``InferenceConfig``): how the last layer's Gaussians become labelled voxels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gausstr_core.render import BACKENDS as RENDER_BACKENDS
from gausstr_core.voxelize.api import BACKENDS as VOXELIZER_BACKENDS

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class InferenceConfig:
    """How Gaussians become labelled voxels.

    Attributes:
        density_threshold: voxels with density <= this are free (official 4e-2).
        logit_scale: None = official logits (raw features . unit prototypes); a number = cosine
            similarity x this number.
        center_prototypes: subtract the mean of the prompt prototypes from the prototypes and the
            Gaussians' features before the logits (then both are compared by what tells the classes
            apart). Why: text embeddings of class names share a large common direction (the featup
            targets' classes have cosine 0.89-0.98), so a feature that is a blend of classes, or
            weak, lands nearest to whichever prototype lies closest to that common direction: a featup
            model after 1,250 steps called 16-30 % of the flat classes' voxels and 29-44 % of the
            barriers' and cones' "car" (docs/results.md). Off by default (the official logits); use it
            with ``logit_scale`` (cosine), since the centred raw features are short.
        balance_prompts: exponent t of a per-scene hub correction (0 = off, the official decision): a
            voxel's (and a Gaussian's) label is the class prompt with the largest p / m^t, where m is
            that prompt's mean probability over the scene's occupied voxels; free prompts and the
            reported confidence keep the plain probabilities. Why: a prompt that takes a share of
            every voxel (the "car" hub above) wins the voxels that are blends, and small classes
            lose them; dividing by the scene's mean share compares each prompt against its own
            level. Name-agnostic, so it follows a vocabulary changed at run time.
        prompt_denoising: drop prompts that never win a voxel clearly (official on).
        denoise_logit_scale, denoise_threshold: the sharpening scale and the confidence a prompt must
            reach somewhere in the scene (official 100 and 0.1).
        free_prompts: prompts whose win makes a voxel free (official "sky"); ignored when the
            vocabulary itself contains the prompt.
        unpredicted_classes: category names that keep their label but are never predicted
            (``gausstr_core.text.vocabulary.OCC3D_UNPREDICTED`` reproduces the official Occ3D
            evaluation, whose prompt list has no "others" and "other flat"); names not in the
            vocabulary are ignored.
        opacity_threshold: Gaussians with opacity <= this are not voxelized (official talk2dino 0.6).
        min_extent: Gaussians with 6 x their smallest variance <= this are not voxelized (official
            talk2dino ``covariance_thresh`` 1.5e-2; 0 = off).
        render_depth: render the expected depth of the Gaussians into every camera.
        depth_min_alpha: rendered pixels with less accumulated opacity get depth 0 (invalid).
        autocast_dtype: "bfloat16", "float16" or None (float32) for the model forward on CUDA.
        voxelizer_backend: "auto", "cuda" or "torch" (``voxelize_gaussians``).
        render_backend: "auto", "gsplat" or "torch" (``render_gaussians``).
        render_tile_size: the PyTorch renderer (CPU) composites k x k pixel tiles against the Gaussians
            touching them: the same image, several times faster (``render_gaussians(tile_size=k)``);
            None = every pixel against every Gaussian. gsplat ignores it.
        cuda_graphs: on CUDA, capture the prediction (model forward, voxelization, decisions) in a
            CUDA graph per input shape once a shape has been seen twice, and replay it (no launch
            overhead, no host synchronisation); eager whenever capture fails (the reason is logged
            and in ``OccupancyPredictor.graph_status``). Same labels as the eager path (GPU test).
        compile_backbone: on CUDA, compile the model's image backbone with ``torch.compile`` (Inductor,
            default mode; ``gausstr_core.inference.compile``). Why: the frozen ViT is bound by arithmetic
            and memory traffic, not by launches, so the CUDA graph does not speed it up, while Inductor
            fuses its LayerNorms, LayerScales, GELUs and residual adds with their neighbours. The first
            prediction of each input shape compiles (eagerly, before any graph capture); whenever
            compilation fails the backbone runs eagerly. Both the compile time and a failure's reason
            are in ``OccupancyPredictor.compile_status`` (and logged). Off by default: the first frame
            waits for the compilation (17.8 s on an H100), and fused bf16 arithmetic rounds differently
            from the eager reference: 99.52 % equal labels measured (H100, random weights), short of
            the 99.9 % the CUDA graphs meet; predict 22.6 vs 25.8 ms (docs/benchmarks.md). That
            shortfall is bf16's own size on random weights: eager bf16 agrees with float32 on only
            97.6-99.5 % of the labels there, the compiled path slightly more often (H100,
            2026-12-07). Ignored on the CPU.
        compile_emulate_precision_casts: Inductor's ``emulate_precision_casts`` for the compiled
            backbone: where eager bf16 arithmetic rounds an intermediate result to bf16 between two
            operations, the fused kernel rounds it too, instead of carrying it in float32 (Inductor's
            default, a small precision gain that is also a difference from the eager reference). On by
            default: the compiled path is judged against the eager one (``compile_backbone``'s parity);
            switched off, the fused kernels skip those roundings. Neither reaches the 99.9 % parity
            bar (H100: 99.53-99.88 % on, 99.46-99.79 % off; 22.3 vs 22.2 ms, docs/benchmarks.md).
            Ignored unless ``compile_backbone``.
        cast_weights_once: on CUDA with an autocast dtype, hold the weights of the model's Linear and
            convolution layers in that dtype (cast once, when the predictor is configured) instead
            of letting autocast cast them again at every frame (``gausstr_core.inference.weights``).
            Bit-identical results: autocast rounds the same float32 values the same way. The float32
            values wait on the host and come back when it is switched off. The trainer's evaluation
            switches it off (its model's parameters belong to the optimizer). Ignored on the CPU and
            without autocast.
    """

    density_threshold: float = 4e-2
    logit_scale: float | None = None
    center_prototypes: bool = False
    balance_prompts: float = 0.0
    prompt_denoising: bool = True
    denoise_logit_scale: float = 100.0
    denoise_threshold: float = 0.1
    free_prompts: tuple[str, ...] = ("sky",)
    unpredicted_classes: tuple[str, ...] = ()
    opacity_threshold: float = 0.6
    min_extent: float = 1.5e-2
    render_depth: bool = True
    depth_min_alpha: float = 0.05
    autocast_dtype: str | None = "bfloat16"
    voxelizer_backend: str = "auto"
    render_backend: str = "auto"
    render_tile_size: int | None = 8
    cuda_graphs: bool = True
    compile_backbone: bool = False
    compile_emulate_precision_casts: bool = True
    cast_weights_once: bool = True

    def __post_init__(self) -> None:
        self.free_prompts = tuple(" ".join(str(p).split()) for p in self.free_prompts)
        if self.render_tile_size is not None and self.render_tile_size < 1:
            raise ValueError(f"inference.render_tile_size must be >= 1 or None, got {self.render_tile_size}")
        self.unpredicted_classes = tuple(self.unpredicted_classes)
        if any(not p for p in self.free_prompts):
            raise ValueError(f"inference.free_prompts must be non-empty strings, got {self.free_prompts}")
        if not 0 <= self.balance_prompts <= 4:
            raise ValueError(f"inference.balance_prompts must be in [0, 4], got {self.balance_prompts}")
        if self.density_threshold < 0:
            raise ValueError(f"inference.density_threshold must be >= 0, got {self.density_threshold}")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ValueError(f"inference.logit_scale must be positive or None, got {self.logit_scale}")
        if not 0 <= self.depth_min_alpha < 1:
            raise ValueError(f"inference.depth_min_alpha must be in [0, 1), got {self.depth_min_alpha}")
        if self.autocast_dtype is not None and self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(
                f"inference.autocast_dtype must be one of {tuple(AUTOCAST_DTYPES)} or None, "
                f"got {self.autocast_dtype!r}"
            )
        if self.voxelizer_backend not in VOXELIZER_BACKENDS:
            raise ValueError(
                f"inference.voxelizer_backend must be one of {VOXELIZER_BACKENDS}, "
                f"got {self.voxelizer_backend!r}"
            )
        if self.render_backend not in RENDER_BACKENDS:
            raise ValueError(
                f"inference.render_backend must be one of {RENDER_BACKENDS}, got {self.render_backend!r}"
            )
