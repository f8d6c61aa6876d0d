"""Datasets: the synthetic multi-camera world, nuScenes + Occ3D, and the batch they produce."""
