"""gausstr_core never imports ROS (nor gausstr_ros): it must work on a training cluster with no ROS at
all. Checked statically (every import statement, inside functions too) and by importing every module
with ROS blocked."""

from __future__ import annotations

import subprocess
import sys

from gausstr_testing.imports import ROOT, ROS_MODULES, imported_names, package_modules


def test_no_module_of_gausstr_core_imports_ros():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for module, path in package_modules(("gausstr_core",)).items()
        for line, name in imported_names(path, module)
        if name.split(".")[0] in ROS_MODULES
    ]
    assert not offenders, offenders


def test_every_gausstr_core_module_imports_with_ros_blocked():
    # A None entry in sys.modules makes `import rclpy` raise ImportError, as on a machine without ROS.
    modules = sorted(package_modules(("gausstr_core",)))
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
