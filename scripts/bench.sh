#!/usr/bin/env bash
# `make bench` (after `make setup`): run every bench/bench_*.py in the venv, in name order, stop on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. ./env.sh
shopt -s nullglob
benches=(bench/bench_*.py)
if ((${#benches[@]} == 0)); then
    echo "bench: no bench/bench_*.py yet"
    exit 0
fi
for bench in "${benches[@]}"; do
    echo "bench: python $bench"
    python "$bench"
done
