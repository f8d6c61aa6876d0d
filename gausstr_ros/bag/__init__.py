"""rosbag2 tools without ROS: ``gausstr-make-bag`` writes synthetic-world drives as bags, and
``gausstr-bag-eval`` replays a bag through the node's inference path (offline, or live into the real
node through rclpy) and writes a report (scores, latency, pictures). See docs/bags.md.

Modules: ``typestore`` (rosbags types incl. this package's messages), ``writer`` (atomic bag writing),
``make_bag`` (the synthetic bag), ``reader`` (validated reading, clear errors), ``frames`` (the node's
stamp checks and synchronization without rclpy), ``groundtruth`` (SemanticOccupancy topic or an Occ3D
directory), ``options`` (options, params files, the resolved NodeConfig), ``evaluate`` (offline
evaluation and the CLI), ``live`` (replay into the running node), ``results`` (scores, rows, pictures
per frame), ``report`` (the report folder and its pictures), ``defaults`` (the built-in checkpoint and
bag), ``build_defaults`` (rebuilds them from a trained checkpoint).
"""
