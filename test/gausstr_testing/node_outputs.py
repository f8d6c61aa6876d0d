"""Checks of the occupancy node's outputs shared by the node tests (in-process, input and output
processes)."""

from __future__ import annotations

import numpy as np
import pytest

from gausstr_core.grid import VoxelGrid
from gausstr_testing.ros_frames import TARGET_FRAME, optical_frame

S = 1_000_000_000
T0 = 1_700_000_000 * S


def check_frame_outputs(harness, stamp: int, class_names: list[str], predictor) -> None:
    """Every output of one frame set: frame, stamp, shapes, class names."""
    grid: VoxelGrid = predictor.grid
    occ = harness.wait_for_stamp("occupancy", stamp)
    assert occ.header.frame_id == TARGET_FRAME
    assert (occ.size_x, occ.size_y, occ.size_z) == grid.shape
    assert len(occ.labels) == grid.num_voxels and len(occ.confidence) == grid.num_voxels
    assert np.isclose(occ.resolution, grid.voxel_size)
    assert (occ.origin.position.x, occ.origin.position.y, occ.origin.position.z) == pytest.approx(grid.lower)
    assert list(occ.class_names) == class_names and occ.free_label == len(class_names)
    labels = np.asarray(occ.labels)
    assert labels.max() <= len(class_names)
    confidence = np.asarray(occ.confidence)
    assert np.all((confidence >= 0) & (confidence <= 1))

    from gausstr_ros.conversions.occupancy import pointcloud_to_points

    cloud = harness.wait_for_stamp("occupancy_cloud", stamp)
    assert cloud.header.frame_id == TARGET_FRAME
    points = pointcloud_to_points(cloud)
    assert len(points) == int((labels != occ.free_label).sum())
    np.testing.assert_array_equal(points["label"], labels[labels != occ.free_label])

    gauss = harness.wait_for_stamp("gaussians", stamp)
    n = len(gauss.opacities)  # the Gaussians that make the occupancy (may be few with random weights)
    assert n <= len(harness.cams.names) * predictor.model.config.decoder.queries_per_view
    assert gauss.header.frame_id == TARGET_FRAME
    assert (len(gauss.means), len(gauss.scales), len(gauss.rotations)) == (3 * n, 3 * n, 4 * n)
    assert len(gauss.labels) == n and len(gauss.confidence) == n
    assert list(gauss.class_names) == class_names and all(k < len(class_names) for k in gauss.labels)
    q = np.asarray(gauss.rotations).reshape(-1, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)

    markers = harness.wait_for_stamp("gaussian_markers", stamp)
    assert markers.markers[0].action == 3  # DELETEALL
    assert all(m.header.frame_id == TARGET_FRAME for m in markers.markers)
    assert len(markers.markers) == 1 + min(n, 2000)

    h, w = predictor.input_size
    for name in harness.cams.names:
        depth = harness.wait_for_stamp(f"rendered_depth/{name}", stamp)
        assert depth.header.frame_id == optical_frame(name)
        assert (depth.height, depth.width, depth.encoding) == (h, w, "32FC1")
