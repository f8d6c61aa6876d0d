"""The built-in default model and bag shipped with the package (the files next to this module, see
docs/bags.md).

* ``tiny_synthetic.safetensors``: the ``tiny`` preset trained on the synthetic world by
  ``gausstr-train`` (the exact command and its metrics are in docs/bags.md); its metadata holds the
  vocabulary it was evaluated with (Occ3D's classes as groups of the synthetic world's names).
* ``synthetic_demo.mcap``: a short drive through a held-out synthetic world written by
  ``gausstr-make-bag`` (cameras, depth, TF, Occ3D ground truth); its recorded scores with the
  default model are in ``synthetic_demo.metrics.json``.

The node and the bag tools use them when no checkpoint or bag is given (``gausstr_ros.predictor``).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = DATA_DIR / "tiny_synthetic.safetensors"
DEFAULT_BAG = DATA_DIR / "synthetic_demo.mcap"
DEFAULT_BAG_METRICS = DATA_DIR / "synthetic_demo.metrics.json"
# The demo (``make demo``) runs the node on the built-in bag's depth topics, like a robot with a depth
# camera or a metric-depth node; the recorded ``scores`` are measured that way, ``scores_depth_head``
# with the node's default ``use_depth: false`` (the model's depth head: cameras only).
DEMO_USE_DEPTH = True


def default_checkpoint() -> Path:
    """The built-in checkpoint.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    if not DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(
            f"the built-in checkpoint {DEFAULT_CHECKPOINT} is missing (the package data of "
            f"gausstr_ros was not installed); give a checkpoint explicitly"
        )
    return DEFAULT_CHECKPOINT


def default_bag() -> Path:
    """The built-in bag (FileNotFoundError when the package data is missing)."""
    if not DEFAULT_BAG.is_file():
        raise FileNotFoundError(
            f"the built-in bag {DEFAULT_BAG} is missing (the package data of gausstr_ros "
            f"was not installed); give a bag explicitly"
        )
    return DEFAULT_BAG


def checkpoint_vocabulary(path: str | Path) -> list[str] | None:
    """The vocabulary stored in a checkpoint's metadata (what it was evaluated with), or None."""
    from gausstr_core.io.checkpoint import read_checkpoint_header

    header = read_checkpoint_header(path)
    metadata = json.loads(header.get("metadata", "{}") or "{}")
    vocabulary = metadata.get("vocabulary")
    return list(vocabulary) if vocabulary else None


def recorded_metrics() -> dict:
    """The scores recorded for the built-in bag with the built-in checkpoint (offline evaluation)."""
    return json.loads(DEFAULT_BAG_METRICS.read_text())
