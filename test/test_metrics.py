"""Occ3D metrics (against independent references and hand-computed cases) and the pictures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gausstr_core.colors import class_colors
from gausstr_core.evaluation.metrics import (
    OCC3D_CLASS_NAMES,
    OccupancyMetric,
    confusion_matrix,
    geometry_iou,
    per_class_iou,
)
from gausstr_core.evaluation.visualize import (
    bev_labels,
    bev_rgb,
    depth_to_rgb,
    hstack_images,
    pca_rgb,
    save_bev_comparison,
    save_confusion_matrix,
)


def _reference_hist(pred: np.ndarray, gt: np.ndarray, n: int, mask: np.ndarray | None) -> np.ndarray:
    """Loop-free numpy reference, independent of torch.bincount: np.add.at over (gt, pred) pairs."""
    if mask is not None:
        pred, gt = pred[mask], gt[mask]
    hist = np.zeros((n, n), dtype=np.int64)
    np.add.at(hist, (gt.ravel(), pred.ravel()), 1)
    return hist


def _official_occ_iou(hist: np.ndarray, free: int) -> float:
    """hustvl/GaussTR's geometry IoU formula, re-derived: TP counts occupied-occupied pairs."""
    tp = hist[:free, :free].sum() + hist[free + 1 :, free + 1 :].sum()
    return tp / (hist.sum() - hist[free, free])


def test_confusion_matrix_matches_numpy_reference():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        shape = (2, 20, 20, 4)
        pred = torch.randint(0, 18, shape, generator=g)
        gt = torch.randint(0, 18, shape, generator=g)
        mask = torch.rand(shape, generator=g) > 0.3
        ours = confusion_matrix(pred, gt, 18, mask).numpy()
        ref = _reference_hist(pred.numpy(), gt.numpy(), 18, mask.numpy())
        np.testing.assert_array_equal(ours, ref)
        assert ours.sum() == mask.sum()
    # numpy inputs work the same
    np.testing.assert_array_equal(
        confusion_matrix(pred.numpy().astype(np.uint8), gt.numpy(), 18).numpy(),
        _reference_hist(pred.numpy(), gt.numpy(), 18, None),
    )


def test_hand_computed_ious():
    # 1D "volume" of 3 classes (0, 1) + free (2). gt: 0 0 1 1 2 2 ; pred: 0 1 1 1 2 0
    gt = torch.tensor([0, 0, 1, 1, 2, 2]).reshape(1, 1, 6)
    pred = torch.tensor([0, 1, 1, 1, 2, 0]).reshape(1, 1, 6)
    hist = confusion_matrix(pred, gt, 3)
    iou = per_class_iou(hist)
    # class 0: TP 1, union = gt 2 + pred 2 - 1 = 3 ; class 1: TP 2, union = 2 + 3 - 2 = 3
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(2 / 3)
    # geometry: occupied both = 4 (pos 0..3) ... pos 5 predicted occupied, gt free -> union 5
    assert geometry_iou(hist, 2) == pytest.approx(4 / 5)
    assert geometry_iou(hist, 2) == pytest.approx(_official_occ_iou(hist.numpy(), 2))
    metric = OccupancyMetric(["a", "b"])
    metric.update(pred, gt)
    s = metric.compute()
    assert s.miou == pytest.approx(0.5) and s.iou == pytest.approx(0.8)
    assert s.precision == pytest.approx(4 / 5) and s.recall == pytest.approx(1.0)


def test_geometry_iou_matches_official_formula_random():
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 18, (3, 10, 10, 5), generator=g)
    gt = torch.randint(0, 18, (3, 10, 10, 5), generator=g)
    hist = confusion_matrix(pred, gt, 18)
    assert geometry_iou(hist, 17) == pytest.approx(_official_occ_iou(hist.numpy(), 17), rel=1e-12)


def test_dataset_level_sums_not_mean_of_frames():
    names = ["a"]
    # frame 1: 1 voxel of class a, predicted right -> IoU 1; frame 2: 9 gt voxels, 1 predicted.
    gt1, pr1 = torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]])
    gt2 = torch.zeros(1, 1, 9, dtype=torch.long)
    pr2 = torch.ones(1, 1, 9, dtype=torch.long)
    pr2[0, 0, 0] = 0
    m = OccupancyMetric(names)
    m.update(pr1, gt1)
    m.update(pr2, gt2)
    s = m.compute()
    assert s.per_class_iou[0] == pytest.approx(2 / 10)  # not (1 + 1/9) / 2
    assert s.num_frames == 2


def test_camera_mask_excludes_voxels():
    gt = torch.tensor([0, 0, 1, 2]).reshape(1, 1, 4)
    pred = torch.tensor([1, 0, 1, 2]).reshape(1, 1, 4)
    mask = torch.tensor([False, True, True, True]).reshape(1, 1, 4)
    m = OccupancyMetric(["a", "b"])
    m.update(pred, gt, mask)
    s = m.compute()
    assert s.per_class_iou == [1.0, 1.0] and s.miou == 1.0 and s.confusion.sum() == 3


def test_miou_nan_classes_and_zero_shot_exclusion():
    names = list(OCC3D_CLASS_NAMES)
    free = len(names)
    gt = torch.full((4, 4, 2), free)
    pred = gt.clone()
    gt[0, :, 0] = 4  # car
    pred[0, :, 0] = 4
    gt[1, :, 0] = 0  # others: never predicted (zero-shot cannot)
    gt[2, :, 0] = 12  # other_flat: never predicted
    m = OccupancyMetric(names)
    m.update(pred, gt)
    s = m.compute()
    assert s.per_class_iou[4] == 1.0 and s.per_class_iou[0] == 0.0 and s.per_class_iou[12] == 0.0
    assert math.isnan(s.per_class_iou[1])  # barrier: in neither -> NaN, skipped by the mean
    assert s.miou == pytest.approx(1 / 3)
    assert s.excluded == ["others", "other_flat"] and s.miou_zero_shot == pytest.approx(1.0)
    d = s.to_dict()
    json.dumps(d)  # JSON-safe (NaN became None)
    assert d["per_class_iou"]["barrier"] is None and d["miou"] == pytest.approx(100 / 3, abs=1e-3)
    table = s.markdown_table()
    assert "| car | 100.00 | 4 |" in table and "excluded from zero-shot" in table


def test_zero_shot_exclusion_matches_spaced_names():
    m = OccupancyMetric(["others", "car", "other flat", "Other_Flat2"])
    assert m.excluded == ["others", "other flat"]


def test_merge_equals_single_accumulator():
    g = torch.Generator().manual_seed(2)
    frames = [
        (torch.randint(0, 4, (5, 5, 3), generator=g), torch.randint(0, 4, (5, 5, 3), generator=g))
        for _ in range(4)
    ]
    a, b, whole = OccupancyMetric("xyz"), OccupancyMetric("xyz"), OccupancyMetric("xyz")
    for i, (p, t) in enumerate(frames):
        (a if i % 2 else b).update(p, t)
        whole.update(p, t)
    a.merge(b)
    assert torch.equal(a.hist, whole.hist) and a.num_frames == 4


@pytest.mark.parametrize(
    "pred, gt, mask, match",
    [
        (torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(2, 2, 3, dtype=torch.long), None, "same shape"),
        (torch.full((2, 2, 2), 18), torch.zeros(2, 2, 2, dtype=torch.long), None, r"\[0, 17\]"),
        (torch.zeros(2, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long), None, "integer labels"),
        (
            torch.zeros(2, 2, 2, dtype=torch.long),
            torch.zeros(2, 2, 2, dtype=torch.long),
            torch.ones(2, 2, dtype=torch.bool),
            "mask must have",
        ),
    ],
)
def test_bad_input_is_rejected(pred, gt, mask, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, gt, 18, mask)


# ---------------------------------------------------------------- pictures


def test_bev_labels_take_the_highest_voxel_and_orientation():
    free = 3
    lab = torch.full((4, 5, 3), free)
    lab[0, 0, 0] = 0
    lab[0, 0, 2] = 1  # higher voxel of the same column wins
    lab[3, 4, 1] = 2
    top, vis = bev_labels(lab, free)
    assert top[0, 0] == 1 and top[3, 4] == 2 and top[1, 1] == free and vis.all()
    img = bev_rgb(top, class_colors(["a", "b", "c"]), free)
    assert img.shape == (4, 5, 3)
    # x forward is up: the largest x is row 0; y left is left: the largest y is column 0.
    assert tuple(img[0, 0]) == tuple(class_colors(["a", "b", "c"])[2])
    assert tuple(img[3, 4]) == tuple(class_colors(["a", "b", "c"])[1])
    mask = torch.zeros(4, 5, 3, dtype=torch.bool)
    mask[0, 0, 0] = True
    top, vis = bev_labels(lab, free, mask)
    assert top[0, 0] == 0 and vis.sum() == 1  # the hidden higher voxel is ignored


def test_png_outputs(tmp_path):
    names = ["car", "driveable_surface", "my_new_class"]
    colors = class_colors(names)
    assert tuple(colors[0]) == (0, 150, 245) and colors.shape == (3, 3)
    g = torch.Generator().manual_seed(3)
    gt = torch.randint(0, 4, (30, 30, 4), generator=g)
    pred = torch.randint(0, 4, (30, 30, 4), generator=g)
    path = save_bev_comparison(tmp_path / "bev.png", pred, gt, names, mask=torch.rand(30, 30, 4) > 0.2)
    with Image.open(path) as im:
        assert im.size == (1500, 580)
    conf = confusion_matrix(pred, gt, 4)
    path = save_confusion_matrix(tmp_path / "cm.png", conf, names)
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="confusion must be"):
        save_confusion_matrix(tmp_path / "bad.png", conf[:3, :3], names)


def test_depth_and_feature_images():
    depth = torch.linspace(0, 50, 24).reshape(4, 6)
    rgb = depth_to_rgb(depth, max_depth=50.0)
    assert rgb.shape == (3, 4, 6) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[:, 0, 0].abs().sum() == 0  # depth 0 = invalid = black
    feats = torch.randn(16, 5, 7)
    a, b = pca_rgb([feats, feats.clone()])
    assert torch.allclose(a, b) and a.shape == (3, 5, 7)
    a, b = pca_rgb([feats, -feats])
    assert not torch.allclose(a, b)  # the basis is the reference's, so a mismatch shows
    both = hstack_images([a, depth_to_rgb(torch.rand(10, 14) * 9 + 1)])
    assert both.shape == (3, 5, 7 + 4 + 7)
