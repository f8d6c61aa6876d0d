"""Datasets: the synthetic multi-camera world and nuScenes + Occ3D, read into
``gausstr_core.batch.CameraBatch`` (+ targets and ground truth)."""
