#!/usr/bin/env bash
# `make demo` (after `make setup`): render a small synthetic world into demo_out/ and check it.
# Placeholder until the end-to-end demo (map build + localization + report) replaces this file;
# the Makefile only calls it. VLOC_DEMO_SIM_ARGS overrides the `vloc sim` arguments.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. ./env.sh
OUT="$ROOT/demo_out"
rm -rf "$OUT"
mkdir -p "$OUT"
start=$SECONDS
read -r -a sim_args <<<"${VLOC_DEMO_SIM_ARGS:---out $OUT/sim --map-frames 24 --query-frames 8}"
echo "demo: vloc sim ${sim_args[*]}"
vloc sim "${sim_args[@]}"
# Smoke check: the world rendered to at least one non-empty image.
images=$(find "$OUT" -type f \( -name '*.png' -o -name '*.jpg' \) -size +0 | wc -l)
if ((images == 0)); then
    echo "demo: FAILED: vloc sim wrote no images under $OUT" >&2
    exit 1
fi
echo "demo: OK in $((SECONDS - start))s: $images images under $OUT"
