#!/usr/bin/env bash
# One-command set-up on a fresh machine: creates .venv with every dependency pinned (PyTorch,
# open_clip, timm, gsplat, the ROS 2 Jazzy rclpy and message wheels, rosbags, test tools),
# installs gausstr_core and gausstr_ros from this tree (editable), and generates the package's
# ROS 2 messages into the venv. Idempotent: a second run only checks and exits quickly.
#
# Environment: PYTHON (default python3.11: the ROS 2 Jazzy wheels are built for CPython 3.11),
#              GAUSSTR_VENV (default .venv).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GAUSSTR_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
START=$(date +%s)

step() { echo "==> $*"; }
# This machine's pip configuration names extra local indexes that lack most projects; pip warns
# once per project. Keep the output readable: drop only those warnings.
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
fail() { echo "setup.sh: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found; the ROS 2 Jazzy wheels need CPython 3.11 (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || fail "$PYTHON is $("$PYTHON" --version 2>&1), the ROS 2 Jazzy wheels need CPython 3.11"
command -v cmake >/dev/null || fail "cmake not found (needed to build msg/; Debian: apt-get install cmake)"
command -v g++ >/dev/null || fail "g++ not found (needed to build msg/; Debian: apt-get install g++)"

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV" || fail "could not create the virtual environment at $VENV"
fi
PY="$VENV/bin/python"

# Skip the resolver when nothing changed since the last successful install.
STAMP="$VENV/.gausstr_deps.stamp"
HASH=$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  step "dependencies are up to date"
else
  step "installing pinned dependencies (PyTorch, open_clip, timm, gsplat, ROS 2 Jazzy wheels, ...)"
  quiet_pip install --quiet --disable-pip-version-check \
    -c "$ROOT/requirements/constraints.txt" \
    -r "$ROOT/requirements/base.txt" -r "$ROOT/requirements/ros.txt" -r "$ROOT/requirements/dev.txt" \
    || fail "pip could not install the pinned dependencies (see the messages above)"
  quiet_pip install --quiet --disable-pip-version-check --no-deps -r "$ROOT/requirements/no-deps.txt" \
    || fail "pip could not install requirements/no-deps.txt"
  step "installing gausstr_core and gausstr_ros from $ROOT (editable)"
  # compat mode puts the source tree itself on sys.path (a .pth entry), which the generated
  # messages' directory needs to join the gausstr_ros package (see gausstr_ros/__init__.py).
  quiet_pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$ROOT" \
    || fail "pip could not install this project"
  echo "$HASH" > "$STAMP"
fi

step "generating ROS 2 messages (msg/) with rosidl"
"$ROOT/scripts/build_msgs.sh" "$VENV"

# colcon, for the colcon build test and for building the package like a robot does, in its own small
# venv: colcon-common-extensions brings pytest plugins that would otherwise load in `make test`.
COLCON_VENV="$VENV/colcon"
COLCON_STAMP="$COLCON_VENV/.gausstr_colcon.stamp"
COLCON_HASH=$(sha256sum "$ROOT/requirements/colcon.txt" | cut -d' ' -f1)
if [ -f "$COLCON_STAMP" ] && [ "$(cat "$COLCON_STAMP")" = "$COLCON_HASH" ]; then
  step "colcon is up to date ($COLCON_VENV)"
else
  step "installing colcon into $COLCON_VENV (requirements/colcon.txt)"
  [ -x "$COLCON_VENV/bin/python" ] || "$PYTHON" -m venv "$COLCON_VENV" \
    || fail "could not create the colcon virtual environment at $COLCON_VENV"
  PY="$COLCON_VENV/bin/python" quiet_pip install --quiet --disable-pip-version-check \
    -r "$ROOT/requirements/colcon.txt" \
    || fail "pip could not install colcon (requirements/colcon.txt)"
  echo "$COLCON_HASH" > "$COLCON_STAMP"
fi

step "checking the installation"
(cd /tmp && "$PY" - <<'PYCHECK'
import importlib
for name in ("torch", "torchvision", "open_clip", "timm", "gsplat", "safetensors", "rosbags",
             "rclpy", "sensor_msgs.msg", "visualization_msgs.msg", "gausstr_core", "gausstr_ros.msg"):
    importlib.import_module(name)
from gausstr_ros.msg import GaussianArray, SemanticOccupancy  # noqa: F401
print("    all imports work")
PYCHECK
) || fail "the installation does not import (see the traceback above)"
step "done in $(( $(date +%s) - START )) s: activate with 'source $VENV/bin/activate', test with 'make test'"
