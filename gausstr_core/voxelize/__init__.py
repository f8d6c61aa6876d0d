"""Gaussian-to-voxel splatting: density and density-weighted features on an occupancy grid.

`voxelize_gaussians` picks the CUDA kernel for CUDA tensors and the vectorised PyTorch
reference otherwise; `filter_gaussians` is the official pre-splatting filter.
"""

from gausstr_core.voxelize.api import voxelize_gaussians
from gausstr_core.voxelize.filter import filter_gaussians

__all__ = ["filter_gaussians", "voxelize_gaussians"]
