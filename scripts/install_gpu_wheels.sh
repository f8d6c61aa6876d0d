#!/usr/bin/env bash
# Installs the carried pure-Python wheels (.whl/, scripts/fetch_gpu_wheels.sh) into a private
# directory on the lent GPU machine (no network), once per wheel set:
#   bash scripts/install_gpu_wheels.sh SITE [PYTHON]     # then PYTHONPATH=SITE:...
# Why once: a reinstall gives gsplat's CUDA sources new file times, and its JIT build decides by file
# times, so every reinstall rebuilt it (the likely cause of the 67-69 s warm-up of every resumed
# training call on the lent H100, 2026-12-07). The stamp is of the wheels' content, since the carried
# copies get new times on every call. Nothing to do without wheels. Exit status: pip's.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SITE=${1:?usage: install_gpu_wheels.sh SITE [PYTHON]}
PY=${2:-python3}
compgen -G "$ROOT/.whl/*.whl" >/dev/null || exit 0
stamp=$(sha256sum "$ROOT"/.whl/*.whl | cut -d' ' -f1 | sha256sum | cut -c1-16)
if [ "$(cat "$SITE/.installed" 2>/dev/null)" = "$stamp" ]; then
  echo "wheels already installed in $SITE ($stamp)"
  exit 0
fi
mkdir -p "$SITE"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$ROOT"/.whl/*.whl ||
  exit $?
echo "$stamp" >"$SITE/.installed"
echo "wheels installed in $SITE ($stamp)"
