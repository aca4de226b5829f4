"""Benchmark of the correspondence search (``vloc_ros.search``) on synthetic maps.

    python bench/bench_search.py [--sizes 10000 100000 1000000] [--queries 1024] [--repeats 20]

Prints, as tables:
1. binarization: how well 64/32-bit codes (raw sign, PCA, ITQ) keep the real-valued nearest
   neighbour within the Hamming top-k, and the random-trees recall with each;
2. per map size: build times and index memory;
3. per map size: per-stage cost p50/p95 (global branch, local trees, local faiss baseline, merge),
   the whole search's wall time with 2 threads and with 1, and recall.

BLAS and OpenMP are pinned to 1 thread; "total" is the search with its default 2 threads, which
share the keypoints (each runs both branches and the merge on its half), so it uses 2 cores, like
the robot's budget; "total 1 thread" runs everything in the calling thread. Stages are CPU time,
summed over the threads: on a machine shared with other work they grow much less than wall times.
All sizes are built first and then take turns query by query, so that a machine whose speed drifts
over minutes slows every size alike and the scaling ratios stay fair.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Before numpy and faiss load their thread pools.
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tables import print_table  # noqa: E402
from vloc_ros.search import synthetic  # noqa: E402
from vloc_ros.search.binary import Binarizer  # noqa: E402
from vloc_ros.search.candidates import CandidateSearch  # noqa: E402
from vloc_ros.search.faiss_binary import FaissBinaryIndex  # noqa: E402
from vloc_ros.search.global_index import GlobalIndex  # noqa: E402
from vloc_ros.search.random_trees import RandomTreesIndex  # noqa: E402

SEARCH_CONFIG = {"local_search": {"max_leaves_per_tree": 4}}
FAISS_SEARCH_CONFIG = {"local_search": {"nprobe": 16}}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def found_fraction(candidates: np.ndarray, true_point_ids: np.ndarray) -> float:
    """(Q, C) candidate ids -> fraction of true keypoints whose point is among them."""
    true = true_point_ids >= 0
    return float((candidates[true] == true_point_ids[true, None]).any(axis=1).mean())


def binarization_rows(synthetic_map, queries, tree_recall: bool) -> list[list]:
    _, real_nn = faiss.knn(queries.descriptors, synthetic_map.point_descriptors, 1)
    true = queries.true_point_ids >= 0
    rows = []
    for method, bits in (("sign", 64), ("pca", 64), ("itq", 64), ("pca", 32), ("itq", 32)):
        binarizer, fit_seconds = timed(Binarizer.fit, synthetic_map.observation_descriptors, bits, method)
        index = faiss.IndexBinaryFlat(bits)
        index.add(binarizer.encode(synthetic_map.point_descriptors))
        _, hamming_nn = index.search(binarizer.encode(queries.descriptors), 100)
        row = [f"{method}-{bits}", fit_seconds]
        row += [float((hamming_nn[:, :k] == real_nn).any(axis=1).mean()) for k in (1, 10, 100)]
        true_ids = queries.true_point_ids[true, None]
        row += [float((hamming_nn[true, :k] == true_ids).any(axis=1).mean()) for k in (10, 100)]
        if tree_recall and bits == 64:
            codes = binarizer.encode(synthetic_map.observation_descriptors)
            trees = RandomTreesIndex.build(codes, synthetic_map.observation_point_ids)
            projections = binarizer.project(queries.descriptors)
            candidates = trees.search(binarizer.encode(queries.descriptors), projections, 32, 4)
            row.append(found_fraction(candidates, queries.true_point_ids))
        else:
            row.append("-")
        rows.append(row)
    return rows


@dataclass
class SizeBench:
    """One map size: its synthetic map, the searches under test and what they measured."""

    synthetic_map: synthetic.SyntheticMap
    global_index: GlobalIndex
    searches: dict[str, CandidateSearch]
    build: dict
    stage_times: dict[str, list[float]] = field(default_factory=lambda: {
        name: [] for name in ("global cpu", "local trees cpu", "local faiss cpu", "merge cpu", "total",
                              "total 1 thread", "total faiss")})  # fmt: skip
    recall: dict[str, list[float]] = field(default_factory=lambda: {
        name: [] for name in ("real NN", "global", "trees", "faiss", "union", "final precision", "final recall",
                              "retrieval failed: final recall")})  # fmt: skip


def prepare_size(num_points: int, faiss_kind: str) -> SizeBench:
    synthetic_map, generate_seconds = timed(synthetic.make_map, num_points, 0)
    print(
        f"\n=== {num_points} points, {len(synthetic_map.observation_point_ids)} observations, "
        f"{len(synthetic_map.keyframe_global_descriptors)} keyframes (generated in {generate_seconds:.0f} s)",
        flush=True,
    )
    # Each local index with the codes that suit it best (see the binarization table): PCA for the
    # trees (the default), ITQ for exhaustive Hamming search in faiss.
    descriptors, labels = synthetic_map.observation_descriptors, synthetic_map.observation_point_ids
    binarizer, fit_seconds = timed(Binarizer.fit, descriptors, 64)
    itq = Binarizer.fit(descriptors, 64, "itq")
    trees, trees_seconds = timed(RandomTreesIndex.build, binarizer.encode(descriptors), labels)
    print(f"trees built in {trees_seconds:.1f} s (depth {trees.depth})", flush=True)
    faiss_index, faiss_seconds = timed(FaissBinaryIndex.build, itq.encode(descriptors), labels, kind=faiss_kind)
    global_index = GlobalIndex(synthetic_map.keyframe_global_descriptors)
    common = {
        "point_descriptors": synthetic_map.point_descriptors.astype(np.float16),  # as stored in the map
        "global_index": global_index,
        "keyframe_points": (synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids),
    }
    searches = {
        "trees": CandidateSearch(SEARCH_CONFIG, point_index=trees, binarizer=binarizer, **common),
        "trees_1_thread": CandidateSearch(
            {**SEARCH_CONFIG, "threads": 1}, point_index=trees, binarizer=binarizer, **common
        ),
        "faiss": CandidateSearch(FAISS_SEARCH_CONFIG, point_index=faiss_index, binarizer=itq, **common),
    }
    build = {
        "points": num_points,
        "pca fit s": fit_seconds,
        "trees build s": trees_seconds,
        f"faiss {faiss_kind} build s": faiss_seconds,
        "trees MB": trees.nbytes / 1e6,
        "faiss MB": faiss_index.nbytes / 1e6,
        "global MB": global_index.nbytes / 1e6,
        "descriptors f16/f32 MB": "{:.0f}/{:.0f}".format(
            common["point_descriptors"].nbytes / 1e6, searches["trees"].point_descriptors.nbytes / 1e6
        ),
    }
    synthetic_map.observation_descriptors = None  # indexed now; 1.3 GB at 1M points
    return SizeBench(synthetic_map, global_index, searches, build)


def measure(bench: SizeBench, repeat: int, num_queries: int) -> None:
    """One query frame (``repeat`` 0 is the warm-up) through every search of ``bench``."""
    queries = synthetic.make_query(bench.synthetic_map, num_queries, seed=100 + repeat)
    results = {name: search.search(queries.descriptors, queries.global_descriptor)
               for name, search in bench.searches.items()}  # fmt: skip
    if repeat == 0:
        return
    stage_times, recall = bench.stage_times, bench.recall
    timings = results["trees"].timings
    for stage, key in (("global cpu", "global"), ("local trees cpu", "local"), ("merge cpu", "merge")):
        stage_times[stage].append(timings[key])
    stage_times["local faiss cpu"].append(results["faiss"].timings["local"])
    stage_times["total"].append(timings["search"])
    stage_times["total 1 thread"].append(results["trees_1_thread"].timings["search"])
    stage_times["total faiss"].append(results["faiss"].timings["search"])
    if repeat > 5:  # recall does not need many frames
        return
    search, synthetic_map = bench.searches["trees"], bench.synthetic_map
    global_candidates = search.global_candidates(queries.descriptors, queries.global_descriptor)
    tree_candidates = search.local_candidates(queries.descriptors)
    _, real_nn = faiss.knn(queries.descriptors, synthetic_map.point_descriptors, 1)
    recall["real NN"].append(found_fraction(real_nn, queries.true_point_ids))
    recall["global"].append(found_fraction(global_candidates, queries.true_point_ids))
    recall["trees"].append(found_fraction(tree_candidates, queries.true_point_ids))
    faiss_candidates = bench.searches["faiss"].local_candidates(queries.descriptors)
    recall["faiss"].append(found_fraction(faiss_candidates, queries.true_point_ids))
    union = np.hstack([global_candidates, tree_candidates])
    recall["union"].append(found_fraction(union, queries.true_point_ids))
    result = results["trees"]
    correct = result.point_ids == queries.true_point_ids[result.query_indices]
    recall["final precision"].append(float(correct.mean()))
    recall["final recall"].append(_keypoint_recall(result, queries.true_point_ids))
    # The global descriptor of the farthest keyframe: retrieval fails, the local branch remains.
    num_keyframes = len(bench.global_index.keyframe_descriptors)
    far = (queries.keyframe + num_keyframes // 2) % num_keyframes
    failed = search.search(queries.descriptors, bench.global_index.keyframe_descriptors[far])
    recall["retrieval failed: final recall"].append(_keypoint_recall(failed, queries.true_point_ids))


def _keypoint_recall(result, true_point_ids) -> float:
    correct = result.point_ids == true_point_ids[result.query_indices]
    found = np.zeros(len(true_point_ids), bool)
    found[result.query_indices[correct]] = True
    return float(found[true_point_ids >= 0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1024, help="query keypoints (the localizer default)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--binarization-points", type=int, default=100_000)
    parser.add_argument("--faiss-kind", choices=("ivf", "hnsw"), default="ivf")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}")

    if args.binarization_points:
        synthetic_map = synthetic.make_map(args.binarization_points, 0)
        queries = synthetic.make_query(synthetic_map, args.queries, seed=7)
        print_table(
            f"binarization on {args.binarization_points} points: real NN within Hamming top-k, true point within "
            "Hamming top-k, random-trees recall (32 candidates)",
            ["codes", "fit s", "NN@1", "NN@10", "NN@100", "true@10", "true@100", "trees@32"],
            binarization_rows(synthetic_map, queries, tree_recall=True),
        )
        del synthetic_map

    benches = [prepare_size(num_points, args.faiss_kind) for num_points in args.sizes]
    print_table("build and memory", list(benches[0].build), [list(bench.build.values()) for bench in benches])
    # Sizes take turns frame by frame: this machine's speed drifts over minutes, which would
    # otherwise land on one size and skew the scaling ratio.
    for repeat in range(args.repeats + 1):
        for bench in benches:
            measure(bench, repeat, args.queries)
    latencies = []
    for bench in benches:
        for search in bench.searches.values():
            search.close()
        for stage, values in bench.stage_times.items():
            p50, p95 = 1e3 * np.percentile(values, [50, 95])
            latencies.append([bench.build["points"], stage, float(p50), float(p95)])
    print_table(f"latency for {args.queries} query keypoints, ms", ["points", "stage", "p50", "p95"], latencies)
    print_table(
        "recall of the true point (true keypoints): exact real NN, among candidates, final correspondences",
        ["points"] + list(benches[0].recall),
        [[bench.build["points"]] + [float(np.mean(values)) for values in bench.recall.values()] for bench in benches],
    )
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
