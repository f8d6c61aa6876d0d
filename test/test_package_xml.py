"""package.xml is a valid format-3 manifest whose keys all exist in the ROS 2 Jazzy rosdistro, and it declares
every third-party import the code makes (or requirements/robot.txt pins it, where no rosdep key exists)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

# catkin_pkg comes with the ROS tool chain (scripts/setup.sh installs it); GPU boxes may lack it.
parse_package = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg is not installed").parse_package

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["gausstr_core", "gausstr_ros", "launch", "bin"]

# Top-level Python module -> the package.xml key that provides it on a ROS 2 machine; PIP = no rosdep key
# exists (checked against rosdistro, test/rosdep_keys_jazzy.txt): requirements/robot.txt installs it.
PIP = "pip"
MODULE_TO_KEY = {
    "torch": "python3-torch",
    "torchvision": "python3-torchvision",
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "scipy": "python3-scipy",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "PIL": "python3-pil",
    "cv2": "python3-opencv",
    "transforms3d": "python3-transforms3d",
    "timm": "python3-timm-pip",
    "rosbags": "python3-rosbags-pip",
    "tensorboard": "python3-tensorboard-pip",
    "nuscenes": "python3-nuscenes-devkit-pip",
    "pyquaternion": "python3-nuscenes-devkit-pip",
    "safetensors": PIP,
    "open_clip": PIP,
    "gsplat": PIP,
    "pytest": "python3-pytest",
    "catkin_pkg": "python3-catkin-pkg",
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "geometry_msgs": "geometry_msgs",
    "sensor_msgs": "sensor_msgs",
    "sensor_msgs_py": "sensor_msgs_py",
    "visualization_msgs": "visualization_msgs",
    "tf2_ros": "tf2_ros_py",
    "tf2_msgs": "tf2_msgs",
    "message_filters": "message_filters",
    "cv_bridge": "cv_bridge",
    "launch": "launch",
    "launch_ros": "launch_ros",
}
# pip distribution names of the PIP modules (requirements/robot.txt).
PIP_DISTRIBUTIONS = {"safetensors": "safetensors", "open_clip": "open_clip_torch", "gsplat": "gsplat"}
# Declared keys no module of the package imports, and why they are declared anyway.
DECLARED_WITHOUT_IMPORT = {
    "python3-torchvision": "open_clip imports it",
    "rviz2": "launch/occupancy.launch.py starts it (use_rviz:=true)",
    "rosidl_default_runtime": "the generated messages need it",
    "ament_cmake_pytest": "CMakeLists.txt registers the tests with it",
    "python3-pytest-timeout": "pyproject.toml sets a per-test timeout",
}
FIRST_PARTY = {"gausstr_core", "gausstr_ros", "gausstr_testing", "test", "benchmarks", "common"}
KEYS_FILE = ROOT / "test" / "rosdep_keys_jazzy.txt"


def _python_files(dirs=SHIPPED):
    for name in dirs:
        path = ROOT / name
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.suffix == ".py" or (name == "bin" and file.is_file()):
                    yield file


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
            if node.module.startswith("torch.utils.tensorboard"):  # a torch module that needs tensorboard
                names.add("tensorboard")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):  # pytest.importorskip("cv_bridge"): an import of the tests
            names.add(str(node.args[0].value).split(".")[0])
    return names


def _package():
    return parse_package(str(ROOT / "package.xml"))


def test_package_xml_parses_as_format_3_with_real_metadata():
    pkg = _package()
    pkg.validate()
    assert pkg.package_format == 3
    assert pkg.name == "gausstr_ros"
    assert pkg.licenses == ["Apache-2.0"]
    assert pkg.maintainers and "@" in pkg.maintainers[0].email
    assert pkg.get_build_type() == "ament_cmake"
    build_tools = {d.name for d in pkg.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= build_tools
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}


def _keys(deps) -> set[str]:
    return {d.name for d in deps}


def _imports(dirs) -> dict[str, list[str]]:
    """{third-party top-level module: files importing it} of the Python files under ``dirs``."""
    stdlib = set(sys.stdlib_module_names)
    out: dict[str, list[str]] = {}
    for path in _python_files(dirs):
        for module in _top_level_imports(path) - stdlib - FIRST_PARTY:
            out.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return out


def _robot_requirements() -> set[str]:
    names = set()
    for line in (ROOT / "requirements" / "robot.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split("==")[0].split(">=")[0].strip().lower().replace("-", "_"))
    return names


def test_package_xml_declares_every_import():
    pkg = _package()
    runtime = _keys(pkg.exec_depends + pkg.build_depends + pkg.buildtool_depends + pkg.build_export_depends)
    missing, unknown, not_pinned = {}, {}, {}
    robot = _robot_requirements()
    for module, files in _imports(SHIPPED).items():
        key = MODULE_TO_KEY.get(module)
        if key is None:
            unknown[module] = files
        elif key == PIP:
            if PIP_DISTRIBUTIONS[module].lower() not in robot:
                not_pinned[module] = files
        elif key not in runtime:
            missing[key] = files
    assert not unknown, f"imports with no package.xml mapping in this test (add one): {unknown}"
    assert not missing, f"package.xml lacks these dependencies: {missing}"
    assert not not_pinned, f"requirements/robot.txt lacks these pip-only packages: {not_pinned}"


def test_test_only_imports_are_test_depends():
    pkg = _package()
    declared = _keys(pkg.exec_depends + pkg.build_depends + pkg.buildtool_depends + pkg.test_depends)
    problems = {}
    for module, files in _imports(["test", "benchmarks"]).items():
        key = MODULE_TO_KEY.get(module)
        if key is None:
            problems[module] = f"no mapping in this test ({files})"
        elif key != PIP and key not in declared:
            problems[module] = f"{key} is not declared ({files})"
    assert not problems, problems
    runtime = _keys(pkg.exec_depends)
    shipped = {MODULE_TO_KEY.get(m) for m in _imports(SHIPPED)}
    tests_only = {MODULE_TO_KEY.get(m) for m in _imports(["test"])} - shipped
    wrong = tests_only & runtime
    assert not wrong, f"test-only dependencies declared as exec_depend: {wrong}"


def test_every_declared_key_is_used():
    pkg = _package()
    used = {MODULE_TO_KEY.get(m) for m in _imports([*SHIPPED, "test", "benchmarks"])}
    used |= {"ament_cmake", "ament_cmake_python", "rosidl_default_generators", "std_msgs", "geometry_msgs"}
    unused = {
        d.name
        for d in pkg.exec_depends + pkg.build_depends + pkg.test_depends
        if d.name not in used and d.name not in DECLARED_WITHOUT_IMPORT
    }
    assert not unused, f"package.xml declares keys nothing uses: {sorted(unused)}"


def test_every_key_exists_in_the_jazzy_rosdistro():
    """The keys are the ones verified against rosdistro (test/rosdep_keys_jazzy.txt, with its commit):
    `rosdep install` fails on the first unknown key, and colcon does not check them."""
    verified = set()
    for line in KEYS_FILE.read_text().splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            verified.add(key)
    assert "commit" in KEYS_FILE.read_text().splitlines()[1], "the keys file must name the rosdistro commit"
    pkg = _package()
    all_deps = [
        *pkg.buildtool_depends,
        *pkg.build_depends,
        *pkg.build_export_depends,
        *pkg.exec_depends,
        *pkg.test_depends,
    ]
    unverified = sorted({d.name for d in all_deps} - verified)
    assert not unverified, (
        f"package.xml declares keys not verified against the Jazzy rosdistro: {unverified}; check them "
        f"with scripts/check_rosdep_keys.py and add them to {KEYS_FILE.name}"
    )
    # The Python tf2_ros module comes from tf2_ros_py in Jazzy; tf2_ros is the C++ package.
    names = {d.name for d in all_deps}
    assert "tf2_ros_py" in names and "tf2_ros" not in names


def test_package_xml_and_setup_py_agree_on_the_version():
    import re

    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert _package().version == version
