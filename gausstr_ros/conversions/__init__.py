"""ROS message <-> numpy conversions used by the occupancy node and the rosbag tools (no node logic),
one module per message family: ``images`` (Image decoding and encoding by encoding), ``camera``
(CameraInfo -> pinhole camera model, distortion warning), ``transforms`` (quaternions, TF messages),
``occupancy`` (SemanticOccupancy, PointCloud2 of occupied voxels) and ``gaussians`` (GaussianArray,
MarkerArray with its hand-written CDR serializer). ``buffers`` holds the byte-buffer helpers they
share; class colours come from ``gausstr_core.colors``.

Readers (``image_to_array``, ``image_to_rgb``, ``depth_image_to_metres``, ``camera_info_to_camera``,
``transform_to_matrix``) accept any object with the fields of the ROS message (rclpy messages,
rosbags-deserialised messages, ``types.SimpleNamespace``), so they work without rclpy. Builders
(``*_message``) import the ROS message classes lazily.

Conventions: quaternions inside gausstr_core are (w, x, y, z); ROS messages carry (x, y, z, w) and are
converted here. Images follow sensor_msgs/Image: ``data`` holds ``height`` rows of ``step`` bytes.
"""

from __future__ import annotations


class ConversionError(ValueError):
    """A message that cannot be converted: the text says what was expected and what came."""
