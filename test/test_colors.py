"""One class colour map: RViz (point cloud, markers) and the evaluation pictures colour a class alike."""

from __future__ import annotations

import colorsys
import zlib

import numpy as np
import torch

from gausstr_core import colors
from gausstr_core.colors import class_colors
from gausstr_core.data.occ3d import OCC3D_CLASS_NAMES, OCC3D_COLORS
from gausstr_core.evaluation import visualize
from gausstr_core.grid import VoxelGrid
from gausstr_ros.conversions.gaussians import gaussian_marker_data
from gausstr_ros.conversions.occupancy import occupancy_points

NAMES = ["car", "driveable surface", "road", "pedestrian|person", "others", "my new thing", "Traffic Cone"]


def test_occ3d_names_and_aliases_take_the_occ3d_palette():
    c = class_colors(NAMES)
    palette = dict(zip(OCC3D_CLASS_NAMES, OCC3D_COLORS))
    assert tuple(c[0]) == palette["car"]
    assert tuple(c[1]) == tuple(c[2]) == palette["driveable_surface"]  # "road" is an alias
    assert tuple(c[3]) == palette["pedestrian"]  # the category's name, not its prompts
    assert tuple(c[4]) == (128, 128, 128)  # "others" is grey: black vanishes in RViz
    assert tuple(c[6]) == palette["traffic_cone"]  # case and spaces do not matter
    assert c.dtype == np.uint8 and c.shape == (len(NAMES), 3)


def test_other_names_get_a_stable_hashed_hue():
    # CRC-32 (not Python's salted hash): the same colour in every process and on every machine.
    hue = zlib.crc32(b"my_new_thing") % 360
    rgb = tuple(round(255 * v) for v in colorsys.hsv_to_rgb(hue / 360, 0.75, 0.95))
    assert tuple(class_colors(["my new thing"])[0]) == colors.hashed_color("my_new_thing") == rgb
    again = class_colors(["car", "my new thing"])
    np.testing.assert_array_equal(again[1], class_colors(NAMES)[5])  # follows the name, not the position


def test_rviz_and_the_pictures_colour_every_class_identically():
    expected = class_colors(NAMES)
    k = len(NAMES)
    # RViz: the occupied-voxel cloud's packed rgb and the Gaussian markers' colours.
    grid = VoxelGrid((0.0, 0.0, 0.0, 0.4 * k, 0.4, 0.4), 0.4)
    labels = np.arange(k, dtype=np.uint8).reshape(k, 1, 1)
    points = occupancy_points(labels, grid, NAMES, k)
    packed = points["rgb"].view(np.uint32)
    cloud = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1).astype(np.uint8)
    np.testing.assert_array_equal(cloud, expected[points["label"]])
    n = k
    markers = gaussian_marker_data(
        np.zeros((n, 3)),
        np.ones((n, 3)),
        np.tile([1.0, 0, 0, 0], (n, 1)),
        np.linspace(1.0, 0.5, n),
        np.arange(n),
        NAMES,
        max_markers=n,
    )
    order = np.argsort(-np.linspace(1.0, 0.5, n), kind="stable")
    np.testing.assert_allclose(markers.colors[:, :3], expected[order] / 255.0, atol=1e-6)
    # The pictures (gausstr-eval, bag reports): the same map, and a column of class k is drawn in it.
    assert visualize.class_colors is class_colors
    top = torch.arange(k).reshape(k, 1)
    picture = visualize.bev_rgb(top, class_colors(NAMES), k)
    np.testing.assert_array_equal(picture[::-1, 0], expected)
