"""The GaussTR network: images (+ depth) -> per-decoder-layer sets of 3D Gaussians.

Modules: ``config`` (``ModelConfig`` and its sections), ``backbones`` (frozen or trainable image
feature extractors), ``neck`` (ViTDet simple feature pyramid), ``deformable_attention``, ``decoder``
(the Gaussian query decoder), ``heads`` (Gaussian parameter heads, the depth head), ``gausstr``
(``GaussTR``, ``GaussTROutput``) and ``point_cloud_init`` (reference points from a point cloud).
"""
