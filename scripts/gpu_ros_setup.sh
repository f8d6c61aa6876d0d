#!/usr/bin/env bash
# Sets up real ROS 2 (Jazzy rclpy + Fast DDS + this package's messages) for Python 3.12 on a machine
# without network, such as the lent GPU machine: unpacks .whl_ros/ros_jazzy_py312.tar.xz (made by
# scripts/build_ros_py312.sh) into a virtual environment that also sees the system's packages
# (torch, numpy), then runs scripts/ros_smoke.py (messages across real DDS). Prints the Python to use.
#   scripts/gpu_ros_setup.sh [VENV]        (default /tmp/gausstr_ros312)
# Afterwards: PYTHONPATH=<repo>:<carried wheels> $VENV/bin/python benchmarks/node_latency.py --mode ros ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-/tmp/gausstr_ros312}
PACK=${ROS_PACK:-$ROOT/.whl_ros/ros_jazzy_py312.tar.xz}
PY=${PY:-python3}
[ -f "$PACK" ] || { echo "gpu_ros_setup.sh: $PACK is missing (scripts/build_ros_py312.sh makes it)" >&2; exit 2; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12), f"the pack is for Python 3.12, not {sys.version}"'
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv --without-pip --system-site-packages "$VENV" 2>/dev/null; then
    # no venv module: what it would write
    mkdir -p "$VENV/bin" "$VENV/lib/python3.12/site-packages"
    ln -sf "$(readlink -f "$(command -v "$PY")")" "$VENV/bin/python"
    printf 'home = %s\ninclude-system-site-packages = true\nversion = 3.12\n' \
      "$(dirname "$(readlink -f "$(command -v "$PY")")")" > "$VENV/pyvenv.cfg"
  fi
  tar -xJf "$PACK" -C "$VENV" 2>/dev/null \
    || "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$PACK" "$VENV"
fi
# torch and numpy may live outside the base interpreter's site-packages (e.g. in another venv)
EXTRA=$("$PY" -c 'import os, numpy, torch; print(os.pathsep.join(sorted({os.path.dirname(os.path.dirname(m.__file__)) for m in (torch, numpy)})))' 2>/dev/null || true)
export PYTHONPATH="$ROOT${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" "$ROOT/scripts/ros_smoke.py"
echo "ROS_PYTHON=$VENV/bin/python"
echo "ROS_PYTHONPATH_EXTRA=$EXTRA"
