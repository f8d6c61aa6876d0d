"""gausstr_core never imports ROS: it must work on a training cluster with no ROS at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = {
    "rclpy",
    "rosidl_runtime_py",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "visualization_msgs",
    "tf2_ros",
    "message_filters",
    "cv_bridge",
    "gausstr_ros",
    "builtin_interfaces",
    "launch",
    "launch_ros",
    "rosbags",
}


def test_no_module_of_gausstr_core_imports_ros():
    offenders = []
    for path in sorted((ROOT / "gausstr_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ROS_MODULES]
    assert not offenders, offenders


def test_every_gausstr_core_module_imports_with_ros_blocked():
    # A None entry in sys.modules makes `import rclpy` raise ImportError, as on a machine without ROS.
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "gausstr_core").rglob("*.py")
    )
    code = (
        "import sys, importlib\n"
        f"for name in {sorted(ROS_MODULES)!r}: sys.modules[name] = None\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
