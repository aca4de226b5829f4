"""Benchmark of the local branch + merge in torch (``search.torch_search``) against the compiled CPU path.

    python bench/bench_torch_search.py [--sizes 10000 100000 1000000] [--runs 30] [--device cuda cpu]

Per synthetic map size and device, for one frame of ``--queries`` keypoints: p50/p95 ms of the local
branch (projection, random-trees search) and of the merge (dedupe, L2 rescoring, ratio test), and
the fraction of keypoints whose candidate row and whose matches are identical to the compiled path's.
numba runs in one thread (the search's 2 threads share keypoints, halving its wall time).

Both paths get the same inputs: the projections are computed once with numpy, because a GPU matrix
product rounds differently and a projection near zero would flip a bit. The torch timings include
the uploads of the frame's inputs and the download of the matches; a GPU is synchronised before
the clock stops. The merge's other columns stand in for the global branch: the keypoint's true
point where it has one (so that duplicates with the local branch occur, as in the real search)
and random points. The build is timed too; its trees are built in parallel processes, else at 1M
points it would take most of the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vloc_ros.search import synthetic  # noqa: E402
from vloc_ros.search.binary import Binarizer, pack_bits  # noqa: E402
from vloc_ros.search.kernels import ratio_test_matches  # noqa: E402
from vloc_ros.search.random_trees import DEFAULT_BUILD, RandomTreesIndex  # noqa: E402
from vloc_ros.search.torch_search import TorchLocalSearch, projections_to_words, torch_ratio_test_matches  # noqa: E402
from bench_search import print_table  # noqa: E402  (bench/ is the script's folder, first on sys.path)

# CandidateSearch's defaults.
MAX_CANDIDATES, MAX_LEAVES_PER_TREE, GLOBAL_COLUMNS, RATIO, MAX_MATCHES = 32, 4, 8, 0.9, 3
NUM_FRAMES = 4  # query frames, cycled over the runs


def build_index(codes: np.ndarray, labels: np.ndarray, num_trees: int = DEFAULT_BUILD["num_trees"]) -> RandomTreesIndex:
    """A random-trees index with one tree per process (the build is single-threaded numpy, and at 1M
    points it would take most of the run): trees seeded one by one, then stacked as ``build`` stacks them."""
    with ProcessPoolExecutor(min(num_trees, os.cpu_count()), mp_context=get_context("fork")) as pool:
        trees = list(pool.map(_build_one_tree, [(codes, labels, seed) for seed in range(num_trees)]))
    node_child, num_nodes, num_leaves = [], 0, 0
    for tree in trees:
        inner = tree.node_bit >= 0
        node_child.append(tree.node_child + np.where(inner, num_nodes, num_leaves))
        num_nodes += len(tree.node_bit)
        num_leaves += len(tree.leaf_points)
    return RandomTreesIndex(
        np.concatenate([tree.node_bit for tree in trees]),
        np.concatenate(node_child),
        np.cumsum([0] + [len(tree.node_bit) for tree in trees[:-1]]),
        np.concatenate([tree.leaf_points for tree in trees]),
        trees[0].point_codes,
        max(tree.depth for tree in trees),
    )


def _build_one_tree(arguments) -> RandomTreesIndex:
    codes, labels, seed = arguments
    return RandomTreesIndex.build(codes, labels, num_trees=1, seed=seed)


def make_frames(synthetic_map, binarizer, num_queries: int) -> list[dict]:
    frames = []
    for seed in range(NUM_FRAMES):
        query = synthetic.make_query(synthetic_map, num_queries, seed=100 + seed)
        rng = np.random.default_rng(seed)
        global_columns = rng.integers(0, len(synthetic_map.point_descriptors), (num_queries, GLOBAL_COLUMNS))
        global_columns[:, 0] = query.true_point_ids
        frames.append({
            "descriptors": query.descriptors,
            "projections": binarizer.project(query.descriptors),
            "global": global_columns,
        })  # fmt: skip
    return frames


def run_numba(index, point_descriptors, frame):
    start = time.perf_counter()
    projections = frame["projections"]
    local = index.search(pack_bits(projections > 0), projections, MAX_CANDIDATES, MAX_LEAVES_PER_TREE)
    middle = time.perf_counter()
    candidates = np.hstack([frame["global"], local])
    matches = ratio_test_matches(frame["descriptors"], candidates, point_descriptors, np.float32(RATIO), MAX_MATCHES)
    return local, matches, (middle - start, time.perf_counter() - middle)


def run_torch(search: TorchLocalSearch, point_descriptors: torch.Tensor, frame):
    device = search.device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    synchronize()
    start = time.perf_counter()
    projections = torch.from_numpy(frame["projections"]).to(device)
    local = search.search_tensors(projections_to_words(projections), projections, MAX_CANDIDATES, MAX_LEAVES_PER_TREE)
    synchronize()
    middle = time.perf_counter()
    candidates = torch.cat([torch.from_numpy(frame["global"]).to(device), local], 1)
    queries = torch.from_numpy(frame["descriptors"]).to(device)
    matches = [x.cpu().numpy() for x in torch_ratio_test_matches(queries, candidates, point_descriptors, RATIO,
                                                                 MAX_MATCHES)]  # fmt: skip
    end = time.perf_counter()
    return local.cpu().numpy(), matches, (middle - start, end - middle)


def same_matches(found, expected) -> bool:
    return (
        np.array_equal(found[0], expected[0])
        and np.array_equal(found[1], expected[1])
        and np.allclose(found[2], expected[2], rtol=1e-5)
    )


def bench_size(num_points: int, devices: list[str], runs: int, num_queries: int) -> tuple[list, list]:
    start = time.perf_counter()
    synthetic_map = synthetic.make_map(num_points, 0)
    generated = time.perf_counter()
    descriptors, labels = synthetic_map.observation_descriptors, synthetic_map.observation_point_ids
    binarizer = Binarizer.fit(descriptors, 64)
    index = build_index(binarizer.encode(descriptors), labels)
    built = time.perf_counter()
    synthetic_map.observation_descriptors = None  # indexed now; 1.3 GB at 1M points
    frames = make_frames(synthetic_map, binarizer, num_queries)
    point_descriptors = synthetic_map.point_descriptors.astype(np.float32)
    searches = {"numba": None}
    for device in devices:
        uploaded = time.perf_counter()
        searches[f"torch {device}"] = (TorchLocalSearch(index, device), torch.from_numpy(point_descriptors).to(device))
        upload_seconds = time.perf_counter() - uploaded
    build_row = [num_points, len(labels), index.depth, generated - start, built - generated, upload_seconds]

    reference = [run_numba(index, point_descriptors, frame)[:2] for frame in frames]
    rows = []
    for name, search in searches.items():
        seconds, same_rows, same_frames = [], [], []
        for run in range(runs + 2):  # two warm-up runs
            frame = run % NUM_FRAMES
            if search is None:
                local, matches, timing = run_numba(index, point_descriptors, frames[frame])
            else:
                local, matches, timing = run_torch(*search, frames[frame])
            if run >= 2:
                seconds.append(timing)
                same_rows.append((local == reference[frame][0]).all(axis=1).mean())
                same_frames.append(same_matches(matches, reference[frame][1]))
        local_ms, merge_ms = 1e3 * np.array(seconds).T
        percentiles = [
            float(np.percentile(ms, p)) for ms in (local_ms, merge_ms, local_ms + merge_ms) for p in (50, 95)
        ]
        rows.append([num_points, name, *percentiles, float(np.mean(same_rows)), float(np.mean(same_frames))])
    return build_row, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=30, help="timed frames per size and path (after 2 warm-ups)")
    parser.add_argument("--queries", type=int, default=1024, help="query keypoints (the localizer default)")
    parser.add_argument(
        "--device", nargs="+", default=None, help="torch devices (default: cuda if there is one, and cpu)"
    )
    args = parser.parse_args()
    devices = args.device or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    torch.set_num_threads(1)  # as numba: one core
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, GPU: {name}, cpus: {os.cpu_count()}, load average: {os.getloadavg()}")
    build_rows, rows = [], []
    for num_points in args.sizes:
        build_row, size_rows = bench_size(num_points, devices, args.runs, args.queries)
        build_rows.append(build_row)
        rows += size_rows
        print_table("build, s", ["points", "observations", "depth", "map", "fit + trees", "upload"], [build_row])
        print_table(f"{num_points} points", HEADER, size_rows)
    print_table(
        f"local branch + merge for {args.queries} keypoints, ms; identical rows / frames vs numba", HEADER, rows
    )


HEADER = ["points", "path", "local p50", "p95", "merge p50", "p95", "total p50", "p95", "same rows", "same matches"]

if __name__ == "__main__":
    main()
