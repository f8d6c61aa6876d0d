"""Open-vocabulary occupancy: camera batch -> voxel labels, confidence, Gaussians and rendered depth.

The one inference path the ROS node, the bag evaluator and ``gausstr-eval`` share. Steps (the
official ``GaussTRHead.predict``, with the choices below documented):

1. The last decoder layer's Gaussians (model forward in bf16 autocast on CUDA, the rest in float32).
2. Per-Gaussian prompt logits = features @ prototypes^T, where the prototypes are unit-norm text
   embeddings of every prompt of every category (plus the free-space prompts, official "sky").
   Official: raw (unnormalised) Gaussian features, no temperature, so the feature norm acts as the
   inverse temperature (``logit_scale=None``); ``logit_scale=s`` uses cosine similarity x s instead,
   for models whose feature norms carry no such meaning (e.g. a cosine-trained model from scratch).
3. Softmax over prompts, then voxelization of these per-prompt probabilities with the Gaussians'
   densities (``voxelize_gaussians``) after the official filter (opacity > 0.6, thinnest variance x 6
   > 1.5e-2, mean inside the grid): density (X, Y, Z) and density-weighted mean probabilities.
4. Prompt denoising (official): a prompt is dropped from a scene when its probability, sharpened by
   softmax(100 x p) over prompts, never reaches 0.1 in any voxel. The maximum is taken over voxels
   with non-zero density (the official takes all voxels; empty ones hold an all-zero vector whose
   sharpened value is 1/P, which only matters for vocabularies of fewer than 10 prompts, where it
   would keep every prompt).
5. Max over the prompts of each category, argmax over categories and free-space prompts; a voxel is
   free when a free-space prompt wins or its density <= the threshold (official 4e-2).

Confidence: of an occupied voxel, the (merged, denoised) probability of its class; of a voxel that
a free-space prompt won, that prompt's probability; of a low-density voxel, exp(-density), i.e. 1
minus the occupancy probability 1 - exp(-density) of a Poisson/Beer-Lambert reading of the density
(>= 0.96 below the default threshold).

Per Gaussian: the same probabilities (softmax, the scene's dropped prompts zeroed, merged by max).
Gaussians the filter removed, and those a free-space prompt wins, get the free label; the filtered
ones have confidence 0.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.batch import CameraBatch
from gausstr_core.device import resolve_device
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.inference.compile import CompiledBackbone
from gausstr_core.inference.config import AUTOCAST_DTYPES, InferenceConfig
from gausstr_core.inference.graphs import CudaGraphPredict
from gausstr_core.inference.weights import LowPrecisionWeights
from gausstr_core.render import render_gaussians
from gausstr_core.text.encoder import PrototypeTable, TextEncoder
from gausstr_core.text.vocabulary import OCC3D_CATEGORIES, Vocabulary
from gausstr_core.voxelize import filter_gaussians, voxelize_gaussians

PROTOTYPE_SUFFIX = ".text_prototypes.safetensors"


@dataclass
class OccupancyPrediction:
    """One batch's open-vocabulary occupancy.

    Attributes:
        labels: (B, X, Y, Z) uint8, 0..K-1 the category, ``free_label`` = K free.
        confidence: (B, X, Y, Z) float32 in [0, 1] (see the module docstring).
        density: (B, X, Y, Z) float32 Gaussian density.
        gaussians: the last layer's Gaussians (float32) with features = class probabilities (B, N, K).
        gaussian_labels: (B, N) uint8 per-Gaussian labels (free = filtered out or free prompt).
        gaussian_confidence: (B, N) float32.
        rendered_depth: (B, V, H, W) float32 expected depth [m] at the input resolution, 0 where the
            Gaussians leave a pixel (nearly) empty; None when not requested.
        class_names: the K category names.
        free_label: K.
        grid: the voxel grid.
        deferred_check: set by ``predict(..., defer_checks=True)`` on the CUDA-graph path: raises the
            ValueError for invalid Gaussians that the eager path raises at once (see ``check``).
    """

    labels: Tensor
    confidence: Tensor
    density: Tensor
    gaussians: Gaussians
    gaussian_labels: Tensor
    gaussian_confidence: Tensor
    rendered_depth: Tensor | None
    class_names: list[str]
    free_label: int
    grid: VoxelGrid
    deferred_check: Callable[[], None] | None = None

    def check(self) -> None:
        """Raise the ValueError of an invalid Gaussian that ``predict(..., defer_checks=True)`` left
        for later (a no-op otherwise). It reads a device value: call it once the outputs have been
        copied to the host (or synchronised) anyway."""
        if self.deferred_check is not None:
            check, self.deferred_check = self.deferred_check, None
            check()


@dataclass(frozen=True)
class _Prompts:
    """A vocabulary with everything predict() needs, swapped in as one object (thread safety)."""

    vocabulary: Vocabulary
    prototypes: Tensor  # (P + F, D): the used prompts of the vocabulary, then the free prompts
    groups: Tensor  # (P,) category of each used vocabulary prompt
    num_free: int  # F
    predictable: Tensor  # (K,) bool: has a used prompt and is not in unpredicted_classes

    def merge(self, probs: Tensor) -> Tensor:
        """(..., P + F) prompt probabilities -> (..., K) max over each category's prompts (0 if none)."""
        p = self.groups.shape[0]
        k = self.vocabulary.num_classes
        out = probs.new_zeros((*probs.shape[:-1], k))
        return out.scatter_reduce(
            -1, self.groups.expand(*probs.shape[:-1], p), probs[..., :p], reduce="amax", include_self=True
        )


class OccupancyPredictor:
    """The GaussTR model, a text encoder and a grid: ``predict(batch)`` -> ``OccupancyPrediction``.

    Args:
        model: a ``GaussTR`` (or any module mapping a CameraBatch to an output with ``.gaussians``,
            a list of per-layer ``Gaussians``).
        text_encoder: anything with ``encode(prompts) -> (P, D)`` prototypes and ``embed_dim``
            (``TextEncoder``, or a ``PrototypeTable``, which also has ``knows(prompt)``).
        grid: the voxel grid.
        config: inference settings.
        categories: the vocabulary (see ``Vocabulary.parse``); None = the 17 Occ3D classes.
        device: where to run; None = the model's device.
    """

    def __init__(
        self,
        model: nn.Module,
        text_encoder: Any,
        grid: VoxelGrid | None = None,
        config: InferenceConfig | None = None,
        categories: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ):
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.text_encoder = text_encoder
        self.grid = grid or VoxelGrid()
        self.config = config or InferenceConfig()
        feature_dim = _model_feature_dim(model)
        if feature_dim is not None and feature_dim != text_encoder.embed_dim:
            raise ValueError(
                f"the model's Gaussian features have {feature_dim} channels but the text "
                f"encoder embeds into {text_encoder.embed_dim}: they must live in one space"
            )
        self._lock = threading.Lock()
        self._prompts: _Prompts | None = None
        self._graphs: CudaGraphPredict | None = None
        self._compiled: CompiledBackbone | None = None
        self._cast: LowPrecisionWeights | None = None
        self._update_cast()
        self._update_compile()
        self._update_graphs()
        self.set_categories(OCC3D_CATEGORIES if categories is None else categories)

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config, device: str | torch.device = "auto", categories: Sequence[str] | None = None
    ) -> OccupancyPredictor:
        """Build the model (its weights as the config says: files or random init), the text encoder,
        the grid and the inference settings of a ``GaussTRConfig``."""
        from gausstr_core.model.gausstr import GaussTR

        device = resolve_device(device)
        model = GaussTR(config.model)
        text = TextEncoder(dataclasses.replace(config.text, device=str(device)))
        return cls(model, text, config.grid, config.inference, categories, device)

    @classmethod
    def from_preset(
        cls, name: str, device: str | torch.device = "auto", categories: Sequence[str] | None = None
    ) -> OccupancyPredictor:
        """A predictor of a preset ("tiny", "talk2dino", "featup") with the weights its config names."""
        from gausstr_core.presets import preset

        return cls.from_config(preset(name), device, categories)

    @classmethod
    def with_random_weights(
        cls,
        name: str,
        device: str | torch.device = "auto",
        grid: VoxelGrid | None = None,
        seed: int = 0,
    ) -> OccupancyPredictor:
        """A preset's predictor with RANDOM weights (backbone, text tower, projection): for tests and
        benchmarks only, where latency and plumbing matter and predictions do not.

        The weights come from ``seed`` (the global RNG is left as it was), so that runs are comparable:
        with random weights the Gaussians' sizes, hence the voxelization cost, depend on the draw."""
        from gausstr_core.presets import preset

        config = preset(name)
        config.model.backbone.random_init = True
        config.model.backbone.weights = None
        config.text = dataclasses.replace(
            config.text, checkpoint=None, projection_checkpoint=None, random_init_seed=0
        )
        if grid is not None:
            config.grid = grid
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.from_config(config, device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "auto", categories: Sequence[str] | None = None
    ) -> OccupancyPredictor:
        """Load a GaussTR checkpoint (``gausstr_core.io.checkpoint``) with its configuration.

        The vocabulary is ``categories``, else the one stored in the checkpoint, else Occ3D's. A
        checkpoint that carries only a model config (e.g. a converted official one) takes the text,
        grid and inference sections of the preset named in its metadata. When the text config names
        no weights and ``<name>.text_prototypes.safetensors`` lies next to the checkpoint (written by
        ``gausstr-convert-official``), its fixed official prototypes are used instead of a text encoder:
        only their prompts are available then (the Occ3D vocabulary reproduces the official head).
        """
        from gausstr_core.io.checkpoint import build_model_from_checkpoint, full_config

        device = resolve_device(device)
        model, config, metadata = build_model_from_checkpoint(path, device)
        config = full_config(config, metadata, path)
        if categories is None:
            categories = metadata.get("vocabulary") or None
        text_config = dataclasses.replace(config.text, device=str(device))
        table = Path(path).with_name(Path(path).name.removesuffix(".safetensors") + PROTOTYPE_SUFFIX)
        if text_config.checkpoint is None and text_config.random_init_seed is None and table.is_file():
            text = PrototypeTable.from_file(table, device)
        else:
            text = TextEncoder(text_config)
        return cls(model, text, config.grid, config.inference, categories, device)

    # --- settings ------------------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        return self._prompts.vocabulary

    @property
    def class_names(self) -> list[str]:
        return list(self._prompts.vocabulary.names)

    @property
    def free_label(self) -> int:
        return self._prompts.vocabulary.free_label

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) network input size of the model."""
        size = getattr(getattr(self.model, "config", None), "image_size", None)
        if size is None:
            raise ValueError("the model has no config.image_size")
        return tuple(size)  # type: ignore[return-value]

    def set_categories(self, categories: Sequence[str]) -> None:
        """Validate a vocabulary and encode its prompts (cached per prompt); the next predict uses it.

        Raises:
            ValueError: the reason the categories are refused (``Vocabulary.parse``).
        """
        vocabulary = Vocabulary.parse(categories)
        self._prompts = self._prepare(vocabulary)

    def configure(
        self,
        grid_range: Sequence[float] | None = None,
        voxel_size: float | None = None,
        density_threshold: float | None = None,
        prompt_templates: Sequence[str] | None = None,
        cuda_graphs: bool | None = None,
        compile_backbone: bool | None = None,
        cast_weights_once: bool | None = None,
        compile_emulate_precision_casts: bool | None = None,
    ) -> None:
        """Change the grid, the density threshold, the prompt templates or the fast paths
        (``InferenceConfig.cuda_graphs``, ``compile_backbone``, ``cast_weights_once``,
        ``compile_emulate_precision_casts``); None = keep.

        Raises:
            ValueError: an invalid grid, threshold or template (nothing is changed then).
        """
        grid = self.grid
        if grid_range is not None or voxel_size is not None:
            grid = VoxelGrid(
                tuple(grid_range) if grid_range is not None else self.grid.range,
                voxel_size if voxel_size is not None else self.grid.voxel_size,
            )
        config = self.config
        if density_threshold is not None:
            config = dataclasses.replace(config, density_threshold=float(density_threshold))
        if cuda_graphs is not None:
            config = dataclasses.replace(config, cuda_graphs=bool(cuda_graphs))
        if compile_backbone is not None:
            config = dataclasses.replace(config, compile_backbone=bool(compile_backbone))
        if cast_weights_once is not None:
            config = dataclasses.replace(config, cast_weights_once=bool(cast_weights_once))
        if compile_emulate_precision_casts is not None:
            config = dataclasses.replace(
                config, compile_emulate_precision_casts=bool(compile_emulate_precision_casts)
            )
        if prompt_templates:
            set_templates = getattr(self.text_encoder, "set_templates", None)
            if set_templates is None:
                raise ValueError("this text encoder has fixed prototypes: prompt templates cannot change")
            set_templates(list(prompt_templates))
        self.grid, self.config = grid, config
        if self._update_cast() and self._compiled is not None:
            # the compiled backbone was traced with the other weights' dtype: compile it again
            self._compiled.remove()
            self._compiled = None
        self._update_compile()
        self._update_graphs()  # the grid, thresholds and backbone are baked into captured graphs
        if prompt_templates:
            self._prompts = self._prepare(self._prompts.vocabulary)

    def _update_graphs(self) -> None:
        """(Re)create the CUDA-graph path for the current settings (none on the CPU, when
        ``config.cuda_graphs`` is off, or with the PyTorch voxelizer it cannot capture)."""
        if self._graphs is not None:
            self._graphs.clear()
        use = (
            self.device.type == "cuda"
            and self.config.cuda_graphs
            and self.config.voxelizer_backend != "torch"
        )
        self._graphs = CudaGraphPredict(self) if use else None

    def _autocast_dtype(self) -> torch.dtype | None:
        """The model forward's autocast dtype: ``config.autocast_dtype`` on CUDA, None (float32)
        elsewhere. The weights cast once must have exactly this dtype to match autocast's casts."""
        return AUTOCAST_DTYPES.get(self.config.autocast_dtype) if self.device.type == "cuda" else None

    def _update_cast(self) -> bool:
        """Cast the matrix-product weights to the autocast dtype or put the float32 ones back, as
        ``config.cast_weights_once`` says (CUDA with autocast only). Returns whether it changed."""
        dtype = self._autocast_dtype()
        use = self.config.cast_weights_once and dtype is not None
        if self._cast is not None and (not use or self._cast.dtype != dtype):
            self._cast.restore()
            self._cast = None
        elif self._cast is not None or not use:
            return False
        if use:
            self._cast = LowPrecisionWeights(self.model, dtype)
            self._cast.apply()
        return True

    @property
    def cast_status(self) -> dict[str, Any]:
        """What ``config.cast_weights_once`` did: whether it is in use, the dtype, how many tensors."""
        if self._cast is None:
            return {"enabled": False}
        return {"enabled": True, "dtype": str(self._cast.dtype), "tensors": self._cast.cast_parameters}

    def _update_compile(self) -> None:
        """Compile the model's image backbone or put its eager forward back, as
        ``config.compile_backbone`` says (CUDA only; nothing to compile without a backbone, e.g.
        precomputed features). Captured graphs hold the old backbone's kernels: every caller
        rebuilds the graph path right after (``_update_graphs``)."""
        backbone = getattr(self.model, "backbone", None)
        use = self.config.compile_backbone and _compiles_on(self.device) and backbone is not None
        emulate = self.config.compile_emulate_precision_casts
        if self._compiled is not None and (not use or self._compiled.emulate_precision_casts != emulate):
            self._compiled.remove()
            self._compiled = None
        if use and self._compiled is None:
            self._compiled = CompiledBackbone(backbone, emulate_precision_casts=emulate)

    @property
    def compile_status(self) -> dict[str, Any]:
        """What ``config.compile_backbone`` did: whether the compiled backbone is in use, the wall time
        of its first call (compilation included) [s], and why it fell back to eager."""
        if self._compiled is None:
            return {"enabled": False}
        return self._compiled.status()

    @property
    def graph_status(self) -> dict[str, Any]:
        """What the CUDA-graph path did so far (captures, replays, eager fallbacks and why)."""
        if self._graphs is None:
            return {"enabled": False}
        return self._graphs.status()

    def _prepare(self, vocabulary: Vocabulary) -> _Prompts:
        # A fixed prototype table (official prototypes) only knows some prompts: the others are left
        # out, and a category without any known prompt is never predicted (as in the official head).
        knows = getattr(self.text_encoder, "knows", lambda prompt: True)
        used = [(prompt, k) for prompt, k in zip(vocabulary.prompts, vocabulary.groups) if knows(prompt)]
        if not used:
            raise ValueError(f"none of the prompts of {list(vocabulary.names)} has a text prototype")
        vocab_prompts = {q.casefold() for q in vocabulary.prompts}
        free = [p for p in self.config.free_prompts if p.casefold() not in vocab_prompts and knows(p)]
        with self._lock:  # the text encoder's cache is not thread safe
            prototypes = self.text_encoder.encode([prompt for prompt, _ in used] + free)
        prototypes = prototypes.to(self.device, torch.float32)
        groups = torch.tensor([k for _, k in used], dtype=torch.long, device=self.device)
        unpredicted = {n.casefold() for n in self.config.unpredicted_classes}
        has_prompt = torch.zeros(vocabulary.num_classes, dtype=torch.bool, device=self.device)
        has_prompt[groups] = True
        predictable = has_prompt & torch.tensor(
            [n.casefold() not in unpredicted for n in vocabulary.names], device=self.device
        )
        if not bool(predictable.any()):
            raise ValueError(
                f"no category can be predicted: each is listed in inference.unpredicted_classes "
                f"({self.config.unpredicted_classes}) or has no text prototype"
            )
        return _Prompts(vocabulary, prototypes, groups, len(free), predictable)

    # --- prediction -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(
        self, batch: CameraBatch, render_depth: bool | None = None, defer_checks: bool = False
    ) -> OccupancyPrediction:
        """Labels, confidence and density per voxel, per-Gaussian labels, and rendered depth.

        On CUDA with ``config.cuda_graphs`` the model forward and the voxel decisions replay a CUDA
        graph captured for the batch's shapes (``gausstr_core.inference.graphs``; eager when capture
        is impossible); rendering always runs eagerly, and only when asked for. With
        ``config.compile_backbone`` the image backbone runs compiled, inside or outside the graph
        (``gausstr_core.inference.compile``).

        Args:
            render_depth: render depth into the cameras (None = ``config.render_depth``).
            defer_checks: on the graph path, leave the invalid-Gaussian check (a device read, i.e. a
                host synchronisation) to ``prediction.check()``, so that this call returns while the
                GPU is still working; the eager path checks at once whatever this says.
        Raises:
            ValueError: an included Gaussian with a non-finite or not positive-definite covariance.
        """
        prompts = self._prompts  # one consistent vocabulary for this call
        cfg, grid = self.config, self.grid
        render_depth = cfg.render_depth if render_depth is None else render_depth
        batch = batch.to(self.device)
        core = None
        if self._graphs is not None:
            core = self._graphs.run(batch, prompts)
        if core is None:
            core = self._core(batch, prompts)
        bad = core.pop("bad", None)
        g = Gaussians(
            core["means"], core["scales"], core["rotations"], core["opacities"], core["class_probs"]
        )
        deferred = None
        if bad is not None:  # the graph path: its input check is a device value

            def deferred() -> None:
                from gausstr_core.voxelize.cuda import raise_if_bad

                raise_if_bad(bad, g.means, g.covariances(), g.opacities)

            if not defer_checks:
                deferred()
                deferred = None

        depth = None
        if render_depth:
            depth = self.render_depth(
                g, batch.input_intrinsics().float(), batch.cam_to_ego.float(), batch.image_size
            )
        return OccupancyPrediction(
            labels=core["labels"],
            confidence=core["confidence"],
            density=core["density"],
            gaussians=g,
            gaussian_labels=core["gaussian_labels"],
            gaussian_confidence=core["gaussian_confidence"],
            rendered_depth=depth,
            class_names=list(prompts.vocabulary.names),
            free_label=prompts.vocabulary.free_label,
            grid=grid,
            deferred_check=deferred,
        )

    def render_depth(
        self, gaussians: Gaussians, intrinsics: Tensor, cam_to_ego: Tensor, image_size: tuple[int, int]
    ) -> Tensor:
        """Expected depth of ``gaussians`` in the cameras (what ``predict(render_depth=True)`` returns
        as ``rendered_depth``; eager, and on gsplat it reads a device value, i.e. waits for the GPU).

        Args:
            gaussians: (B, N) Gaussians (their features are not used).
            intrinsics: (B, V, 3, 3) of the H x W network input.
            cam_to_ego: (B, V, 4, 4).
            image_size: (H, W).
        Returns:
            (B, V, H, W) depth [m], 0 where less than ``config.depth_min_alpha`` is rendered.
        """
        cfg = self.config
        rendered = render_gaussians(
            gaussians.with_features(gaussians.means.new_zeros(*gaussians.means.shape[:2], 0)),
            intrinsics,
            cam_to_ego,
            image_size,
            backend=cfg.render_backend,
            tile_size=cfg.render_tile_size,
        )
        return rendered.expected_depth(max(cfg.depth_min_alpha, 1e-6))

    def _core(self, batch: CameraBatch, prompts: _Prompts, capturable: bool = False) -> dict[str, Tensor]:
        """Everything of ``predict`` but rendering, as a dict of tensors (static shapes, one graph).

        ``capturable``: no host synchronisation (CUDA graph capture): the CUDA voxelizer's
        capturable forward, whose input check comes back as the extra output "bad" instead of a
        ValueError, and no autocast weight cache. Same values either way.
        """
        cfg, grid = self.config, self.grid
        dtype = self._autocast_dtype()
        with torch.autocast(
            self.device.type,
            dtype=dtype or torch.float32,
            enabled=dtype is not None,
            cache_enabled=not capturable,
        ):
            output = self.model(batch)
        g = output.gaussians[-1]
        g = Gaussians(
            g.means.float(), g.scales.float(), g.rotations.float(), g.opacities.float(), g.features.float()
        )

        probs = self.prompt_probabilities(g.features, prompts.prototypes)  # (B, N, P + F)
        covariances = g.covariances()
        valid = filter_gaussians(
            g.means, covariances, g.opacities, grid, cfg.opacity_threshold, cfg.min_extent
        )
        bad = None
        if capturable:
            from gausstr_core.voxelize.cuda import voxelize_cuda_capturable

            density, voxel_probs, bad = voxelize_cuda_capturable(
                g.means, covariances, g.opacities, probs, grid, valid
            )
        else:
            density, voxel_probs = voxelize_gaussians(
                g.means, covariances, g.opacities, probs, grid, valid, backend=cfg.voxelizer_backend
            )
        density, voxel_probs = density.float(), voxel_probs.float()
        keep = None
        if cfg.prompt_denoising:
            keep = denoise_prompts(voxel_probs, density > 0, cfg.denoise_logit_scale, cfg.denoise_threshold)
            voxel_probs = voxel_probs * keep[:, None, None, None, :]
            probs = probs * keep[:, None, :]

        occupied = density > cfg.density_threshold
        weights = None
        if cfg.balance_prompts > 0:
            weights = hub_weights(voxel_probs, occupied, prompts.groups.shape[0], cfg.balance_prompts)
        labels, confidence = self._decide(voxel_probs, prompts, weights)
        labels = torch.where(occupied, labels, torch.full_like(labels, prompts.vocabulary.free_label))
        confidence = torch.where(occupied, confidence, torch.exp(-density))

        gaussian_labels, gaussian_confidence = self._decide(probs, prompts, weights)
        gaussian_labels = torch.where(
            valid, gaussian_labels, torch.full_like(gaussian_labels, prompts.vocabulary.free_label)
        )
        gaussian_confidence = torch.where(valid, gaussian_confidence, torch.zeros_like(gaussian_confidence))
        out = {
            "labels": labels.to(torch.uint8),
            "confidence": confidence.clamp(0, 1),
            "density": density,
            "means": g.means,
            "scales": g.scales,
            "rotations": g.rotations,
            "opacities": g.opacities,
            "class_probs": prompts.merge(probs),
            "gaussian_labels": gaussian_labels.to(torch.uint8),
            "gaussian_confidence": gaussian_confidence.clamp(0, 1),
        }
        if bad is not None:
            out["bad"] = bad
        return out

    def prompt_probabilities(self, features: Tensor, prototypes: Tensor) -> Tensor:
        """Softmax over prompts of the Gaussians' logits: (B, N, D), (P, D) -> (B, N, P).

        With ``center_prototypes`` both sides lose the prompts' mean prototype first (the prototypes
        are unit again afterwards); computed from ``prototypes`` on every call, so a vocabulary
        changed at run time (also a CUDA graph's prototype buffer) is centred on its own mean."""
        if self.config.center_prototypes:
            mean = prototypes.mean(0, keepdim=True)
            prototypes = F.normalize(prototypes - mean, dim=-1)
            features = features - mean
        if self.config.logit_scale is None:
            logits = features @ prototypes.T
        else:
            logits = self.config.logit_scale * (F.normalize(features, dim=-1) @ prototypes.T)
        return logits.softmax(-1)

    def _decide(
        self, probs: Tensor, prompts: _Prompts, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Label and confidence from per-prompt probabilities (B, ..., P + F): max over each
        category's prompts, unpredicted categories excluded, free prompts winning -> free label.
        ``weights`` (B, P + F) (``hub_weights``): the label is chosen on probs x weights, the
        confidence is the chosen label's plain probability."""

        def scores_of(p_: Tensor) -> Tensor:
            p = prompts.groups.shape[0]
            class_probs = prompts.merge(p_)
            class_probs = torch.where(prompts.predictable, class_probs, torch.full_like(class_probs, -1.0))
            if prompts.num_free:
                free = p_[..., p:].amax(-1, keepdim=True)
                return torch.cat([class_probs, free], dim=-1)  # index K = free
            return class_probs

        scores = scores_of(probs)
        if weights is None:
            confidence, labels = scores.max(-1)
            return labels, confidence
        shape = (weights.shape[0],) + (1,) * (probs.dim() - 2) + (weights.shape[1],)
        labels = scores_of(probs * weights.reshape(shape)).argmax(-1)
        return labels, scores.gather(-1, labels[..., None])[..., 0]


def hub_weights(voxel_probs: Tensor, occupied: Tensor, num_class_prompts: int, power: float) -> Tensor:
    """Per-scene prompt weights of ``InferenceConfig.balance_prompts``: 1 / m^t for class prompts,
    m = the prompt's mean probability over the scene's occupied voxels; 1 for free prompts.

    Args:
        voxel_probs: (B, X, Y, Z, P + F) density-weighted prompt probabilities.
        occupied: (B, X, Y, Z) bool.
        num_class_prompts: P (the first P prompts are the classes').
        power: t > 0.
    Returns:
        (B, P + F) weights; a scene without occupied voxels gets 1 everywhere.
    """
    mask = occupied[..., None].to(voxel_probs.dtype)
    count = mask.sum((1, 2, 3))  # (B, 1)
    mean = (voxel_probs * mask).sum((1, 2, 3)) / count.clamp_min(1.0)  # (B, P + F)
    weights = mean.clamp_min(1e-6).pow(-power)
    weights = torch.where(count > 0, weights, torch.ones_like(weights))
    free = torch.arange(weights.shape[1], device=weights.device) >= num_class_prompts
    return torch.where(free, torch.ones_like(weights), weights)


def denoise_prompts(
    voxel_probs: Tensor, defined: Tensor, scale: float = 100.0, threshold: float = 0.1
) -> Tensor:
    """The official prompt denoising: which prompts some voxel of each scene clearly prefers.

    Args:
        voxel_probs: (B, X, Y, Z, P) density-weighted prompt probabilities.
        defined: (B, X, Y, Z) bool, voxels whose probabilities are defined (density > 0).
        scale, threshold: softmax(scale x p) must reach ``threshold`` for a prompt somewhere.
    Returns:
        (B, P) float mask, 1 = keep. A scene without defined voxels keeps every prompt.
    """
    b, p = voxel_probs.shape[0], voxel_probs.shape[-1]
    sharp = (voxel_probs * scale).softmax(-1).reshape(b, -1, p)
    sharp = torch.where(defined.reshape(b, -1, 1), sharp, torch.zeros_like(sharp))
    best = sharp.amax(1)  # (B, P)
    keep = best >= threshold
    empty = ~defined.reshape(b, -1).any(1)
    keep = keep | empty[:, None]
    return keep.to(voxel_probs.dtype)


def _compiles_on(device: torch.device) -> bool:
    """Whether ``compile_backbone`` applies on this device: CUDA only (a function, so that the CPU tests
    can exercise the wiring)."""
    return device.type == "cuda"


def _model_feature_dim(model: nn.Module) -> int | None:
    head = getattr(getattr(model, "config", None), "head", None)
    return getattr(head, "feature_dim", None)
