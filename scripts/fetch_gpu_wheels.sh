#!/usr/bin/env bash
# Downloads, into .whl/, the pure-Python wheels a bare GPU machine (Python 3.12 with torch, timm,
# numpy, tqdm, safetensors, tensorboard preinstalled, no network) needs to run this project's GPU
# tests, benchmarks and GPU results (nuscenes-devkit, which reads the synthetic data's tables, with
# the two of its dependencies such a machine lacks). scripts/gpu_tests.sh installs them there.
# Run on a machine with PyPI access.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYVER=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$ROOT/.whl"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d "$ROOT/.whl" gsplat==1.5.3 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 rosbags==0.11.9 \
  ruamel.yaml==0.19.1 lz4==4.4.5 apsw==3.54.1.0 backports.zstd==1.8.0 transforms3d==0.4.2 \
  nuscenes-devkit==1.2.0 pyquaternion==0.9.9 cachetools==8.0.1 py-spy==0.4.1 \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
ls -1 "$ROOT/.whl"
