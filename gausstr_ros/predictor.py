"""The predictor a node configuration asks for: which model (a checkpoint, the built-in model, or a
preset with random weights), loaded, checked against the inputs and configured. Shared by the node
(``gausstr_ros.node``) and the bag tools (``gausstr_ros.bag``), so both start from the same model with
the same settings; no rclpy here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gausstr_core.inference.predictor import OccupancyPredictor
from gausstr_ros.assets import DEFAULT_CHECKPOINT, checkpoint_vocabulary, default_checkpoint
from gausstr_ros.node.params import DEFAULT_CATEGORIES, NodeConfig


class StartupError(RuntimeError):
    """The node (or a bag evaluation) cannot start: bad parameters, a missing or corrupt checkpoint, or
    a model that does not fit the inputs; the text says why."""


def uses_builtin_model(checkpoint: str, model_preset: str) -> bool:
    """Whether the node parameters select the built-in model: no checkpoint and no random preset."""
    return not checkpoint and not model_preset


def effective_categories(categories: list[str], checkpoint: str, model_preset: str) -> list[str]:
    """The vocabulary to run with: ``categories``, except that with the built-in model and ``categories``
    left at the node's default (Occ3D's prompt groups), the built-in model's own vocabulary (Occ3D's
    classes as groups of the synthetic world's names, which its text prototypes were trained on)."""
    if (
        (
            uses_builtin_model(checkpoint, model_preset)
            or Path(checkpoint or "").resolve() == DEFAULT_CHECKPOINT
        )
        and list(categories) == list(DEFAULT_CATEGORIES)
        and DEFAULT_CHECKPOINT.is_file()
    ):
        return checkpoint_vocabulary(DEFAULT_CHECKPOINT) or list(categories)
    return list(categories)


def load_predictor(config: NodeConfig, log: Any = None) -> OccupancyPredictor:
    """The OccupancyPredictor the parameters ask for: ``checkpoint``, else the built-in model when
    ``model_preset`` is empty too, else that preset with RANDOM weights.

    Args:
        config: the node parameters (checkpoint, model_preset, device).
        log: optional logger (``info``, ``warning``) told which model is used.
    Raises:
        StartupError: missing/corrupt checkpoint, unknown preset or device.
    """
    try:
        if config.checkpoint or uses_builtin_model(config.checkpoint, config.model_preset):
            if config.checkpoint:
                path = Path(config.checkpoint).expanduser()
            else:  # neither a checkpoint nor a preset: the built-in model (gausstr_ros/assets)
                try:
                    path = default_checkpoint()
                except FileNotFoundError as exc:
                    raise StartupError(str(exc)) from exc
                if log is not None:
                    log.info(f"no checkpoint given: using the built-in model {path}")
            if not path.is_file():
                raise StartupError(f"checkpoint {str(path)!r} does not exist (parameter 'checkpoint')")
            return OccupancyPredictor.from_checkpoint(path, device=config.device)
        if log is not None:
            log.warning(
                f"no checkpoint: building the {config.model_preset!r} preset with RANDOM weights "
                f"(tests and benchmarks only; its predictions mean nothing)"
            )
        return OccupancyPredictor.with_random_weights(config.model_preset, config.device)
    except StartupError:
        raise
    except Exception as exc:  # any loading failure stops start-up with its reason
        what = f"checkpoint {config.checkpoint!r}" if config.checkpoint else f"preset {config.model_preset!r}"
        raise StartupError(f"cannot load the model from {what}: {type(exc).__name__}: {exc}") from exc


def check_depth_source(predictor: Any, config: NodeConfig) -> None:
    """A model without a depth head needs metric depth for every camera (``use_depth``).

    Raises:
        StartupError: the model has no depth head and ``use_depth`` is off.
    """
    model = getattr(predictor, "model", None)
    if not config.use_depth and model is not None and getattr(model, "depth_head", True) is None:
        raise StartupError(
            "this model has no depth head, so it needs metric depth for every camera: set "
            "use_depth: true and depth_topics (e.g. a monocular metric depth node)"
        )


def configure_predictor(predictor: Any, config: NodeConfig) -> None:
    """Apply a ``NodeConfig``'s grid, density threshold, prompt templates and categories to a predictor
    (what the node does at start; the grid and templates only where the predictor supports them).

    Raises:
        StartupError: invalid grid, threshold, templates or categories (the reason names the parameter).
    """
    configure = getattr(predictor, "configure", None)
    if configure is not None:
        try:
            configure(
                grid_range=tuple(config.grid_range),
                voxel_size=config.voxel_size,
                density_threshold=None if config.density_threshold < 0 else config.density_threshold,
                prompt_templates=config.prompt_template_list,
            )
        except ValueError as exc:
            raise StartupError(f"invalid grid or text parameters: {exc}") from exc
    try:
        predictor.set_categories(list(config.categories))
    except ValueError as exc:
        raise StartupError(f"invalid parameter 'categories': {exc}") from exc


def ready_predictor(config: NodeConfig, predictor: Any = None, log: Any = None) -> Any:
    """The predictor to run with: ``predictor`` (tests, embedding) or the one ``load_predictor`` builds,
    checked against the depth input (``check_depth_source``) and configured (``configure_predictor``).

    Raises:
        StartupError: why it cannot run with these parameters.
    """
    if predictor is None:
        predictor = load_predictor(config, log)
    check_depth_source(predictor, config)
    configure_predictor(predictor, config)
    return predictor
