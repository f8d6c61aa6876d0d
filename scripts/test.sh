#!/usr/bin/env bash
# The test command: lint and format check (ruff) then the whole test suite against the .venv made by
# setup.sh.
# Extra arguments go to pytest (e.g. -m "not slow", -k synchronizer).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GAUSSTR_VENV:-$ROOT/.venv}
[ -x "$VENV/bin/python" ] || { echo "test.sh: error: $VENV does not exist: run 'make setup' first" >&2; exit 1; }
cd "$ROOT"
echo "==> ruff check"
"$VENV/bin/ruff" check .
echo "==> ruff format --check"
"$VENV/bin/ruff" format --check .
echo "==> pytest"
exec "$VENV/bin/python" -m pytest "$@"
