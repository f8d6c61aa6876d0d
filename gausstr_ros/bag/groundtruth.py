"""Ground truth for bag frames: a SemanticOccupancy topic in the bag, or an Occ3D dataset directory.

Both give, for a frame stamp, the nearest ground-truth frame within a tolerance:

* ``BagGroundTruth``: the bag's SemanticOccupancy messages (``gausstr-make-bag`` writes them on
  ``/ground_truth/occupancy``). Their ``confidence`` field, when present, is the Occ3D camera mask
  (``> 0.5`` = observed by a camera); without it every voxel counts.
* ``Occ3DGroundTruth``: a dataset in the nuScenes / Occ3D layout (``gts/<scene>/<token>/labels.npz`` and
  the ``sample`` and ``scene`` tables of ``v1.0-*``), matched by the samples' timestamps; a bag
  converted from nuScenes carries the sample timestamps as its camera stamps.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gausstr_core.grid import VoxelGrid
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.typestore import SEMANTIC_OCCUPANCY
from gausstr_ros.node.sync import stamp_to_ns


@dataclass
class GroundTruthFrame:
    """One frame's ground truth.

    Attributes:
        stamp_ns: its stamp [ns].
        semantics: (X, Y, Z) uint8 labels, ``len(class_names)`` = free.
        mask_camera: (X, Y, Z) bool voxels observed by a camera, or None (every voxel counts).
        class_names: the K class names of the labels.
        grid: the voxel grid.
        source: where it came from (topic or file), for the report.
    """

    stamp_ns: int
    semantics: np.ndarray
    mask_camera: np.ndarray | None
    class_names: list[str]
    grid: VoxelGrid
    source: str


def occupancy_from_message(msg, source: str) -> GroundTruthFrame:
    """A GroundTruthFrame of a SemanticOccupancy message (rosbags or rclpy), validated.

    Raises:
        BagError: sizes that do not match, a rotated grid, or labels out of range.
    """
    size = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    labels = np.array(msg.labels, dtype=np.uint8).reshape(-1)  # a writable copy
    n = size[0] * size[1] * size[2]
    if labels.size != n or n == 0:
        raise BagError(f"{source}: SemanticOccupancy has {labels.size} labels for a {size} grid")
    q = msg.origin.orientation
    if not np.allclose([q.x, q.y, q.z, abs(q.w)], [0, 0, 0, 1], atol=1e-6):
        raise BagError(
            f"{source}: rotated occupancy grids are not supported (origin orientation {[q.x, q.y, q.z, q.w]})"
        )
    free = int(msg.free_label)
    names = list(msg.class_names)
    if free != len(names):
        raise BagError(f"{source}: free_label {free} must equal the number of class names {len(names)}")
    if int(labels.max()) > free:
        raise BagError(f"{source}: labels go up to {int(labels.max())}, above free_label {free}")
    confidence = np.asarray(msg.confidence, dtype=np.float32).reshape(-1)
    if confidence.size not in (0, n):
        raise BagError(f"{source}: SemanticOccupancy has {confidence.size} confidence values for {n} voxels")
    mask = (confidence > 0.5).reshape(size) if confidence.size else None
    p = msg.origin.position
    res = float(msg.resolution)
    lower = (float(p.x), float(p.y), float(p.z))
    upper = tuple(lo + s * res for lo, s in zip(lower, size))
    try:
        grid = VoxelGrid((*lower, *upper), res)
    except ValueError as exc:
        raise BagError(f"{source}: invalid occupancy grid: {exc}") from exc
    return GroundTruthFrame(stamp_to_ns(msg.header.stamp), labels.reshape(size), mask, names, grid, source)


class _StampIndex:
    """Ground-truth frames sorted by stamp, matched to a frame set within a tolerance."""

    def __init__(self, stamps: list[int], tolerance_ns: int):
        self._stamps = stamps
        self.tolerance_ns = int(tolerance_ns)

    def __len__(self) -> int:
        return len(self._stamps)

    def _match(self, stamp_ns: int) -> int | None:
        """The index of the stamp nearest to ``stamp_ns`` within the tolerance, or None."""
        return _nearest(self._stamps, stamp_ns, self.tolerance_ns)


class BagGroundTruth(_StampIndex):
    """The SemanticOccupancy ground truth of a bag, looked up by stamp.

    Args:
        bag: the bag path (opened with a reader of its own, for random access by log time).
        topic: the ground-truth topic.
        tolerance_ns: largest |stamp difference| of a match.
    Raises:
        BagError: the topic is missing or of another type.
    """

    def __init__(self, bag: str | Path, topic: str, tolerance_ns: int):
        self.topic = topic
        self._source = BagSource(bag)
        self._source.require([topic], SEMANTIC_OCCUPANCY, "ground truth")
        stamps = []
        for _, log_time, msg in self._source.messages([topic]):
            stamps.append((stamp_to_ns(msg.header.stamp), log_time))
        stamps.sort()
        super().__init__([s for s, _ in stamps], tolerance_ns)
        self._log_times = [t for _, t in stamps]
        self.description = f"topic {topic} ({len(stamps)} messages)"

    def lookup(self, stamp_ns: int) -> GroundTruthFrame | None:
        """The ground truth nearest to ``stamp_ns`` within the tolerance, or None."""
        i = self._match(stamp_ns)
        if i is None:
            return None
        log_time = self._log_times[i]
        for _, _, msg in self._source.messages([self.topic], start_ns=log_time, stop_ns=log_time + 1):
            if stamp_to_ns(msg.header.stamp) == self._stamps[i]:
                return occupancy_from_message(msg, f"{self.topic} at {self._stamps[i] / 1e9:.3f} s")
        raise BagError(
            f"{self.topic}: the message stamped {self._stamps[i] / 1e9:.3f} s could not be read again"
        )

    def close(self) -> None:
        self._source.close()


class Occ3DGroundTruth(_StampIndex):
    """Occ3D labels of a dataset in the nuScenes layout, matched to frames by sample timestamp.

    Args:
        root: the nuScenes dataroot (or the ``data/`` directory holding ``nuscenes/``), with
            ``gts/<scene name>/<sample token>/labels.npz`` and ``<version>/sample.json``, ``scene.json``.
        tolerance_ns: largest |stamp - sample timestamp| of a match.
    Raises:
        BagError: not such a directory, or tables that do not parse.
    """

    def __init__(self, root: str | Path, tolerance_ns: int):
        from gausstr_core.data.nuscenes import detect_version

        path = Path(root).expanduser()
        if (path / "nuscenes").is_dir() and not any(path.glob("v1.0-*")):
            path = path / "nuscenes"
        if not (path / "gts").is_dir():
            raise BagError(
                f"--occ3d {root}: expected a nuScenes dataroot with Occ3D labels in gts/ "
                f"(gts/<scene>/<sample token>/labels.npz); {path / 'gts'} does not exist"
            )
        try:
            version = detect_version(path)
            samples = json.loads((path / version / "sample.json").read_text())
            scenes = {s["token"]: s["name"] for s in json.loads((path / version / "scene.json").read_text())}
            records = sorted(
                (int(s["timestamp"]) * 1000, scenes[s["scene_token"]], s["token"]) for s in samples
            )
        except (OSError, ValueError, KeyError) as exc:
            raise BagError(f"--occ3d {root}: cannot read the sample and scene tables: {exc}") from exc
        super().__init__([r[0] for r in records], tolerance_ns)
        self.root = path
        self._records = records
        self.description = f"Occ3D labels in {path / 'gts'} ({len(records)} samples)"

    def lookup(self, stamp_ns: int) -> GroundTruthFrame | None:
        """The labels of the sample nearest to ``stamp_ns`` within the tolerance, or None."""
        from gausstr_core.data.occ3d import OCC3D_CLASS_NAMES, load_labels

        i = self._match(stamp_ns)
        if i is None:
            return None
        stamp, scene, token = self._records[i]
        path = self.root / "gts" / scene / token / "labels.npz"
        if not path.is_file():
            return None
        try:
            labels = load_labels(path)
        except (OSError, ValueError) as exc:
            raise BagError(f"--occ3d: {path}: {exc}") from exc
        return GroundTruthFrame(
            stamp,
            labels.semantics.numpy(),
            labels.mask_camera.numpy(),
            list(OCC3D_CLASS_NAMES[:-1]),
            VoxelGrid(),
            str(path),
        )

    def close(self) -> None:
        pass


def _nearest(stamps: list[int], stamp_ns: int, tolerance_ns: int) -> int | None:
    i = bisect.bisect_left(stamps, stamp_ns)
    best = None
    for j in (i - 1, i):
        if (
            0 <= j < len(stamps)
            and abs(stamps[j] - stamp_ns) <= tolerance_ns
            and (best is None or abs(stamps[j] - stamp_ns) < abs(stamps[best] - stamp_ns))
        ):
            best = j
    return best
