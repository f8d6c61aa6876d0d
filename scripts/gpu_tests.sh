#!/usr/bin/env bash
# Runs the gpu-marked tests on a machine with a CUDA GPU whose python3 already has torch (e.g. the
# project's lent H100/H200). Extra arguments go to pytest. Wheels in .whl/ (scripts/fetch_gpu_wheels.sh)
# are installed into a private directory first, for machines without network access.
#   scripts/gpu_tests.sh                 # all gpu tests
#   scripts/gpu_tests.sh -k voxelize     # a subset
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SITE=${GAUSSTR_GPU_SITE:-/tmp/gausstr_site}
bash scripts/install_gpu_wheels.sh "$SITE"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# gsplat and the voxelizer compile their CUDA code on first use; target the GPU present (Hopper here).
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; c = torch.cuda.get_device_capability(); print(f"{c[0]}.{c[1]}")')}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)'
exec python3 -m pytest -m gpu -v -p no:cacheprovider -o addopts="" "$@"
