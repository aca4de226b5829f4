# vloc_ros developer entry points. Everything runs in the venv that `make setup` makes
# (scripts/setup.sh: idempotent, seconds when nothing changed). VENV=/path overrides the venv.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= $(CURDIR)/.venv
export VENV
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint demo bench lock clean

setup:
	@bash scripts/setup.sh

test: setup
	@. ./env.sh && python -m pytest -q -ra --durations=5 --timeout=900 test $(PYTEST_ARGS)

# Under a minute: no rendered world, real data or ROS graph (see test/conftest.py).
test-fast: setup
	@. ./env.sh && python -m pytest -q -ra --fast test $(PYTEST_ARGS)

lint: setup
	@. ./env.sh && ruff check . && ruff format --check .

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

# Regenerate requirements/lock.txt from the venv (after changing requirements/*.in).
lock:
	@bash scripts/lock.sh "$(VENV)"

# Build and test outputs only; the venv stays (remove it by hand to start from nothing).
clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log demo_out bench_out test_out .pytest_cache build *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
