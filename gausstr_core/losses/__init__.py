"""The training losses: every decoder layer's Gaussians are rendered into the cameras and compared
with 2D targets (no 3D labels), plus the optional GaussianCross and GaussRender terms.

Modules: ``config`` (``LossConfig`` and its sections), ``gausstr`` (``GaussTRLoss``: PCA-cosine
feature alignment, SILog + L1 depth, segmentation), ``photometric`` (SSIM and the photometric loss on
the RGB head), ``gaussrender`` (voxelized prediction vs ground truth rendered from virtual cameras),
``pruning`` (opacity pruning before rendering), ``zero_shot`` (the label-free zero-shot label term:
the splatted class distribution against each target patch's nearest-prompt class) and
``target_geometry`` (how much of the feature term's range separates a dataset's classes).
"""
