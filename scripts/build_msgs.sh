#!/usr/bin/env bash
# Generates the package's ROS 2 messages (msg/) with rosidl into a virtual environment that has
# the ROS 2 Jazzy wheels from PyPI, so `from gausstr_ros.msg import SemanticOccupancy` works
# without a ROS installation. On a ROS 2 machine use colcon instead (README).
# Usage: scripts/build_msgs.sh [VENV]   (default: .venv)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "${1:-$ROOT/.venv}" && pwd)
PY="$VENV/bin/python"
BUILD="$ROOT/build/msgs"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

fail() { echo "build_msgs.sh: error: $*" >&2; exit 1; }
command -v cmake >/dev/null || fail "cmake not found (Debian: apt-get install cmake)"
command -v g++ >/dev/null || fail "a C++ compiler is needed (Debian: apt-get install g++)"
[ -f "$VENV/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ] \
  || fail "rosidl generators are not in $VENV: run scripts/setup.sh first"

# Rebuild only when an input changed: the stamp holds a hash of every input file.
STAMP="$VENV/.gausstr_msgs.stamp"
HASH=$(cat "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml" \
  "$ROOT/cmake/ros_wheels_fixups.cmake" "$ROOT"/cmake/tf2_msgs_fallback/*.* \
  "$ROOT"/cmake/tf2_msgs_fallback/msg/*.msg "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
  && "$PY" -c 'from gausstr_ros.msg import SemanticOccupancy, GaussianArray, InferenceStatus' 2>/dev/null \
  && "$PY" -c 'from tf2_msgs.msg import TFMessage' 2>/dev/null; then
  echo "messages are up to date"
  exit 0
fi

export AMENT_PREFIX_PATH="$VENV"
rm -rf "$BUILD"; mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPYTHON_INSTALL_DIR="${SITE#"$VENV"/}" \
  -DGAUSSTR_ROS_WHEELS=ON \
  -DGAUSSTR_INSTALL_PYTHON=OFF \
  -DBUILD_TESTING=OFF > "$BUILD.configure.log" 2>&1 \
  || { tail -40 "$BUILD.configure.log" >&2; fail "cmake configure failed (log: $BUILD.configure.log)"; }
cmake --build "$BUILD" -j "$(nproc)" > "$BUILD.build.log" 2>&1 \
  || { tail -40 "$BUILD.build.log" >&2; fail "message build failed (log: $BUILD.build.log)"; }
cmake --install "$BUILD" > "$BUILD.install.log" 2>&1 \
  || { tail -40 "$BUILD.install.log" >&2; fail "message install failed (log: $BUILD.install.log)"; }

# The generated site-packages/gausstr_ros/ holds only msg/ and the typesupport modules. Its empty
# __init__.py would hide the real package (the source tree, on sys.path through the editable
# install); without it the directory is a plain portion that gausstr_ros/__init__.py adds to its
# __path__ (pkgutil.extend_path).
rm -f "$SITE/gausstr_ros/__init__.py"
"$PY" -c 'from gausstr_ros.msg import SemanticOccupancy, GaussianArray, InferenceStatus' \
  || fail "the generated messages do not import"

# The node's TF fallback listener (no tf2_ros here) subscribes to /tf with tf2_msgs/TFMessage, which
# the wheels lack: build a minimal tf2_msgs (TFMessage only, same wire type) unless one imports.
if ! "$PY" -c 'import tf2_msgs.msg' 2>/dev/null \
  || [ -f "$VENV/share/tf2_msgs/gausstr_fallback" ]; then
  TF2="$ROOT/build/tf2_msgs"
  rm -rf "$TF2"; mkdir -p "$TF2"
  { cmake -S "$ROOT/cmake/tf2_msgs_fallback" -B "$TF2" -Wno-dev -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DPYTHON_INSTALL_DIR="${SITE#"$VENV"/}" -DBUILD_TESTING=OFF \
    && cmake --build "$TF2" -j "$(nproc)" && cmake --install "$TF2"; } > "$TF2.log" 2>&1 \
    || { tail -40 "$TF2.log" >&2; fail "tf2_msgs fallback build failed (log: $TF2.log)"; }
  touch "$VENV/share/tf2_msgs/gausstr_fallback"
  "$PY" -c 'from tf2_msgs.msg import TFMessage' || fail "the tf2_msgs fallback does not import"
fi
echo "$HASH" > "$STAMP"
echo "messages built into $VENV"
