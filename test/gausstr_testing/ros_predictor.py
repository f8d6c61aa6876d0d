"""The predictor the node tests run: the real OccupancyPredictor of the ``tiny`` preset with random
weights, on a small grid so that CPU inference takes well under a second per frame set."""

from __future__ import annotations

# A 40 m x 40 m x 4 m grid of 0.8 m voxels (50 x 50 x 5): the tests check shapes and plumbing, not
# accuracy, and the full Occ3D grid costs seconds per frame on the CPU reference voxelizer.
TEST_GRID_RANGE = [-20.0, -20.0, -1.0, 20.0, 20.0, 3.0]
TEST_VOXEL_SIZE = 0.8


def node_predictor():
    from gausstr_core.inference.predictor import OccupancyPredictor

    predictor = OccupancyPredictor.from_preset("tiny", device="cpu")
    predictor.configure(grid_range=TEST_GRID_RANGE, voxel_size=TEST_VOXEL_SIZE)
    return predictor
