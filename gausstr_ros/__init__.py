"""ROS 2 side of gausstr_ros: the occupancy node, message conversions and rosbag tools.

This is the only package that imports rclpy (and only in the modules that need it); the model,
renderer, voxelizer, training and metrics live in :mod:`gausstr_core`.
"""

# The generated messages (gausstr_ros.msg) are installed next to this package by colcon, but into
# the virtual environment's site-packages by scripts/build_msgs.sh when this package is used from
# the source tree; extend_path lets `gausstr_ros.msg` resolve in both cases.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
