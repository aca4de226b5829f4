#!/usr/bin/env bash
# `make demo` (after `make setup`): the whole pipeline on a bundled synthetic world, no data needed.
#   1. render a courtyard world with exact ground truth: a mapping run and a query run (with
#      illumination, exposure, noise, blur and occlusion changes), each as a ROS 2 bag;
#   2. build a metric map from the mapping bag (images + CameraInfo + ground-truth poses);
#   3. replay the query bag through the localizer and write the evaluation report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. ./env.sh
OUT="$ROOT/demo_out"
rm -rf "$OUT"
mkdir -p "$OUT"
start=$SECONDS

echo "== 1/3 vloc sim: synthetic world -> $OUT/world"
vloc sim --out "$OUT/world" --map-frames 48 --query-frames 30 --storages mcap
echo "== 2/3 vloc build-map: mapping bag -> $OUT/map"
vloc build-map --bag "$OUT/world/bags/map_mcap" --pose-topic /ground_truth/pose \
    --camera-frame camera_optical_frame --min-interval-s 0 --min-translation-m 0 --min-rotation-deg 0 \
    --output "$OUT/map"
echo "== 3/3 vloc eval: query bag -> $OUT/report"
vloc eval "$OUT/world/bags/query_mcap" --map "$OUT/map" --output "$OUT/report"
echo "demo: done in $((SECONDS - start)) s; open $OUT/report/report.md"
