# The two set-up commands of the README, and a few helpers.
.PHONY: setup test test-fast lint format demo gpu-test lock clean

setup:
	./scripts/setup.sh

test:
	./scripts/test.sh

# Everything but the tests marked slow (for a quick local loop).
test-fast:
	./scripts/test.sh -m "not slow"

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Apply the formatter (what `make lint` checks).
format:
	.venv/bin/ruff format .

demo:
	.venv/bin/gausstr-demo

# Runs the gpu-marked tests; on the project's lent GPU machine use scripts/gpu_tests.sh.
gpu-test:
	.venv/bin/python -m pytest -m gpu -v

# Re-pin the full transitive dependency set from the current .venv.
lock:
	.venv/bin/python -m pip freeze --exclude-editable | sed 's/^torch==/torch===/' > requirements/constraints.txt

clean:
	rm -rf build .pytest_cache
