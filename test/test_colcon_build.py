"""The package builds with colcon the way a robot builds it, and the install tree holds what the docs
promise: messages that import from install/, launch/config/msg in share/, every executable the docs
tell users to `ros2 run` in lib/gausstr_ros.

colcon comes from requirements/colcon.txt in its own venv (.venv/colcon, made by scripts/setup.sh);
the ROS 2 environment is the project venv with the Jazzy wheels: AMENT_PREFIX_PATH and
CMAKE_PREFIX_PATH point at it (what sourcing /opt/ros/jazzy/setup.bash does on a robot), and
-DGAUSSTR_ROS_WHEELS=ON adapts the wheels' exported CMake targets (cmake/ros_wheels_fixups.cmake).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
COLCON = Path(os.environ.get("GAUSSTR_COLCON", VENV / "colcon" / "bin" / "colcon"))
# Not copied into the test workspace: environments, build outputs, caches, recordings.
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "install", "log", "runs", "outputs", "__pycache__", "*.pyc", "*.egg-info",
    ".pytest_cache", ".ruff_cache", ".whl", ".gpu", "gpu_out",
)  # fmt: skip


def console_scripts() -> dict[str, str]:
    """{name: "module:function"} of setup.py's console_scripts."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = [ast.literal_eval(e) for e in value.elts]
                    return dict(e.replace(" ", "").split("=", 1) for e in entries)
    raise AssertionError("setup.py has no console_scripts")


def documented_ros2_run() -> dict[str, list[str]]:
    """{executable: [files]} of every `ros2 run gausstr_ros <executable>` in the README and docs/."""
    out: dict[str, list[str]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in re.findall(r"ros2 run gausstr_ros ([\w.-]+)", path.read_text()):
            out.setdefault(name, []).append(path.name)
    return out


def colcon_env() -> dict[str, str]:
    """A clean environment with the ROS 2 Jazzy wheels in the role of /opt/ros/jazzy."""
    if not COLCON.is_file():
        pytest.skip(f"colcon is not installed at {COLCON} (run `make setup`)")
    if not (VENV / "share" / "ament_index").is_dir():
        pytest.skip(f"{VENV} has no ament index (the ROS 2 wheels and rosidl tool chain of scripts/setup.sh)")
    return {
        "HOME": os.environ.get("HOME", "/tmp"),
        "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "AMENT_PREFIX_PATH": str(VENV),
        "CMAKE_PREFIX_PATH": str(VENV),
        "LANG": "C.UTF-8",
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "0"),
    }


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(ROOT, ws / "src" / "gausstr_ros", ignore=IGNORE)
    return ws


def colcon_build(ws: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(COLCON),
            "build",
            "--packages-select",
            "gausstr_ros",
            "--event-handlers",
            "console_cohesion+",
            "--cmake-args",
            "-DGAUSSTR_ROS_WHEELS=ON",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bin_wrappers_match_the_console_scripts():
    """Each console script has a bin/ wrapper calling the same function, and CMakeLists.txt installs it."""
    scripts = console_scripts()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert sorted(p.name for p in (ROOT / "bin").iterdir()) == sorted(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        text = (ROOT / "bin" / name).read_text()
        assert text.startswith("#!/usr/bin/env python3\n") and os.access(ROOT / "bin" / name, os.X_OK)
        assert f"from {module} import {function}" in text, f"bin/{name} does not call {target}"
        assert f"bin/{name}\n" in cmake, f"CMakeLists.txt does not install bin/{name}"
    for name in documented_ros2_run():
        assert name in scripts, f"the docs say `ros2 run gausstr_ros {name}`, but there is no such script"


def test_colcon_build_installs_messages_share_files_and_every_executable(tmp_path):
    env = colcon_env()
    ws = workspace(tmp_path)
    result = colcon_build(ws, env)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    prefix = ws / "install" / "gausstr_ros"

    share = prefix / "share" / "gausstr_ros"
    for rel in (
        "package.xml",
        "launch/occupancy.launch.py",
        "config/occupancy.yaml",
        "config/occupancy.rviz",
        "config/fastdds_large_images.xml",
        "msg/SemanticOccupancy.msg",
        "msg/GaussianArray.msg",
        "msg/InferenceStatus.msg",
    ):
        assert (share / rel).is_file(), f"share/gausstr_ros/{rel} is not installed"

    lib = prefix / "lib" / "gausstr_ros"
    installed = sorted(p.name for p in lib.iterdir() if p.is_file() and os.access(p, os.X_OK))
    assert installed == sorted(console_scripts()), f"lib/gausstr_ros holds {installed}"
    for name in documented_ros2_run():
        assert (lib / name).is_file(), f"`ros2 run gausstr_ros {name}` (documented) is not installed"

    # Like a user after `source install/setup.bash`: the package and its messages come from install/.
    probe = """
import sys
import gausstr_core, gausstr_ros, gausstr_ros.msg
from rclpy.serialization import deserialize_message, serialize_message
from gausstr_ros.msg import InferenceStatus, SemanticOccupancy
msg = SemanticOccupancy(class_names=["car"], free_label=1)
assert deserialize_message(serialize_message(msg), SemanticOccupancy).class_names == ["car"]
print(gausstr_ros.__file__, gausstr_ros.msg.__file__, gausstr_core.__file__, sep="\\n")
"""
    shell = f"source install/setup.bash && {sys.executable} -c '{probe}'"
    run = subprocess.run(["bash", "-c", shell], cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for line in run.stdout.split():
        assert line.startswith(str(ws / "install")), f"imported from outside install/: {line}"

    # An installed tool runs through `ros2 run`'s path (lib/gausstr_ros/<name>).
    shell = f"source install/setup.bash && {lib / 'gausstr-make-bag'} --help"
    run = subprocess.run(["bash", "-c", shell], cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "gausstr-make-bag" in run.stdout, run.stdout + run.stderr


def test_colcon_build_fails_on_a_broken_package_xml(tmp_path):
    """The build test is a real check: a manifest colcon cannot parse fails the build."""
    env = colcon_env()
    ws = workspace(tmp_path)
    manifest = ws / "src" / "gausstr_ros" / "package.xml"
    manifest.write_text(manifest.read_text().replace("<license>", "<no_such_tag/><license>"))
    result = colcon_build(ws, env, timeout=120)
    assert result.returncode != 0, result.stdout
