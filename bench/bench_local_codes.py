"""Benchmark of the local branch's binary codes on real XFeat descriptors: PCA signs against the
learned local head (``vloc_ros.learning.local_head``), with and without the bit-flip model.

    python bench/bench_local_codes.py [--sizes 100000 1000000] [--queries 8192]

Data: the 7-Scenes map that bench/bench_real.py builds (bench_out/real/7scenes_redkitchen/map). One
chunk of five consecutive keyframes in every five chunks is held out, so most queries are a few
keyframes from the nearest map keyframe: the codes are trained, and the trees built, on the tracks
of the other keyframes; the held-out keyframes' observations of points that the remaining keyframes
see are the queries, each with its true point. The smallest map is these tracks alone; larger maps
add distractor points with one observation each, whose descriptors are real XFeat descriptors from
images of unrelated scenes (../shared/data llff_beer, ngp_fox, middlebury_templeRing_partial,
rtabmap_samples_loopclosure and demo_out/world/images when present), each image extracted at two
sizes and mirrored, cached under bench_out/learning/local/ (delete the cache to extract again). The
pool covers 1M points; a map larger than the pool reuses it with small Gaussian noise added (then
re-normalised).

Columns: "trees" is the recall of the true point among the random trees' ``max_candidates`` candidates
(the local branch as the localizer runs it); "exhaustive" is the recall within the Hamming top
``max_candidates`` over the points' codes (the majority of their observations; the trees index every
observation's code, so they can beat it), and the only number for 128-bit codes (the trees take at
most 64 bits); "local ms/frame" is the local branch's CPU time
(projection + tree search, one thread, the fastest of a few passes) per frame of 2048 keypoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

# Before numpy and torch load their thread pools.
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_real import cached_map  # noqa: E402
from bench_search import timed  # noqa: E402
from real_sets import REAL_SETS  # noqa: E402  (bench_real puts test/ on the path)

from vloc_ros.features import create_extractor  # noqa: E402
from vloc_ros.learning.local_head import BitFlipModel, LocalHeadConfig, train_local_head  # noqa: E402
from vloc_ros.mapping.map_format import load_map  # noqa: E402
from vloc_ros.search.binary import Binarizer, majority_codes, pack_bits  # noqa: E402
from vloc_ros.search.random_trees import RandomTreesIndex  # noqa: E402

MAP = ROOT / "bench_out/real/7scenes_redkitchen/map"
CACHE = ROOT / "bench_out/learning/local"
SHARED_DATA = ROOT.parent / "shared/data"
DISTRACTOR_IMAGE_DIRS = [
    SHARED_DATA / "llff_beer/images",
    SHARED_DATA / "ngp_fox/images",
    SHARED_DATA / "middlebury_templeRing_partial",
    SHARED_DATA / "rtabmap_samples_loopclosure/images",
    ROOT / "demo_out/world/images/map",
    ROOT / "demo_out/world/images/query",
]
DISTRACTOR_RESIZES = (640, 1024)
HOLDOUT_EVERY = 5  # one keyframe chunk in five is held out as queries
HOLDOUT_CHUNK = 5  # consecutive keyframes per chunk
FRAME_KEYPOINTS = 2048  # the local branch is timed per frame of this many keypoints
TIMING_PASSES = 3  # the local branch's time is the fastest pass over each frame
MAX_CANDIDATES = 32  # the local branch's default (SearchConfig.local_max_candidates)
MAX_LEAVES_PER_TREE = 4  # the trees' default probes
DISTRACTOR_NOISE = 0.05  # norm of the noise that makes a reused distractor new (descriptors have norm 1)


def distractor_pool() -> np.ndarray:
    """(N, 64) float16 XFeat descriptors of unrelated images, extracted once and cached."""
    cache = CACHE / "distractor_descriptors.npy"
    if cache.exists():
        return np.load(cache)
    paths = [path for folder in DISTRACTOR_IMAGE_DIRS if folder.is_dir() for path in sorted(folder.iterdir())
             if path.suffix.lower() in (".jpg", ".png")]  # fmt: skip
    descriptors = []
    for resize_max in DISTRACTOR_RESIZES:
        extractor = create_extractor({"name": "xfeat", "max_keypoints": 2048, "resize_max": resize_max})
        for path in paths:
            image = np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
            for variant in (image, np.ascontiguousarray(image[:, ::-1])):  # mirrored: new descriptors
                descriptors.append(extractor.extract(variant).descriptors.astype(np.float16))
    pool = np.concatenate(descriptors)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, pool)
    return pool


@dataclass
class Split:
    """The map's tracks minus the held-out keyframes, and the held-out observations as queries."""

    descriptors: np.ndarray  # (M, D) float32 training observations
    points: np.ndarray  # (M,) their point ids
    keyframes: np.ndarray  # (M,) their keyframes
    query_descriptors: np.ndarray  # (Q, D) float32
    query_points: np.ndarray  # (Q,) true point ids


def holdout_split(map_path: Path, num_queries: int, seed: int = 0) -> Split:
    arrays = load_map(map_path).arrays
    offsets = arrays["keyframe_observations_offsets"]
    keyframes = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    points = arrays["observation_points"].astype(np.int64)
    descriptors = arrays["observation_descriptors"].astype(np.float32)
    held_out = keyframes // HOLDOUT_CHUNK % HOLDOUT_EVERY == HOLDOUT_EVERY // 2
    queries = np.flatnonzero(held_out & np.isin(points, points[~held_out]))
    queries = np.sort(np.random.default_rng(seed).choice(queries, min(num_queries, len(queries)), replace=False))
    return Split(descriptors[~held_out], points[~held_out], keyframes[~held_out], descriptors[queries], points[queries])


def distractors(count: int, seed: int = 0) -> np.ndarray:
    """(count, D) float32 unit descriptors of unrelated images: the pool in random order, then noisy reuses."""
    rng = np.random.default_rng(seed)
    pool = distractor_pool()
    rows = rng.permutation(len(pool))[: min(count, len(pool))]
    chosen = [pool[rows].astype(np.float32)]
    while sum(map(len, chosen)) < count:
        reused = pool[rng.choice(len(pool), min(count - sum(map(len, chosen)), len(pool)), replace=False)]
        noise = rng.standard_normal(reused.shape, dtype=np.float32) * (DISTRACTOR_NOISE / np.sqrt(reused.shape[1]))
        chosen.append(reused.astype(np.float32) + noise)
    descriptors = np.concatenate(chosen)
    return descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)


class CertaintyBinarizer:
    """A binarizer's signs with another certainty: the flip model's (``flip_model``) or, for the
    learned head without it, the raw |logit| (``flip_model`` None)."""

    def __init__(self, binarizer, flip_model: BitFlipModel | None):
        self.binarizer, self.flip_model = binarizer, flip_model
        self.num_bits = binarizer.num_bits

    def project(self, descriptors: np.ndarray) -> np.ndarray:
        if self.flip_model is None:
            return self.binarizer.logits(descriptors)
        projections = self.binarizer.project(descriptors)
        certainty = self.flip_model.certainty(projections)
        return np.where(projections > 0, certainty, -certainty)

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        return self.binarizer.encode(descriptors)


def code_variants(split: Split, config: LocalHeadConfig) -> list[tuple[str, object, float]]:
    """The codes under test: (name, binarizer, seconds to fit or train it)."""
    pca, pca_seconds = timed(Binarizer.fit, split.descriptors, 64, "pca")
    flip_model, flip_seconds = timed(BitFlipModel.fit, pca.project(split.descriptors), split.points)
    learned = {
        num_bits: timed(train_local_head, split.descriptors, split.points, split.keyframes,
                        replace(config, num_bits=num_bits))
        for num_bits in (64, 128)
    }  # fmt: skip
    return [
        ("PCA signs (today)", pca, pca_seconds),
        ("PCA + flip model", CertaintyBinarizer(pca, flip_model), pca_seconds + flip_seconds),
        ("learned 64, raw logit certainty", CertaintyBinarizer(learned[64][0], None), learned[64][1]),
        ("learned 64 + flip model", *learned[64]),
        ("learned 128 + flip model (exhaustive only)", *learned[128]),
    ]


def measure(binarizer, split: Split, distractor_descriptors: np.ndarray) -> dict:
    """Tree recall, exhaustive Hamming recall and local-branch time of one code on one map size."""
    num_map_points = int(split.points.max()) + 1
    codes = np.concatenate([binarizer.encode(split.descriptors), binarizer.encode(distractor_descriptors)])
    labels = np.concatenate([split.points, num_map_points + np.arange(len(distractor_descriptors))])
    truth = split.query_points[:, None]
    exhaustive = faiss.IndexBinaryFlat(binarizer.num_bits)
    exhaustive.add(majority_codes(codes, labels))
    _, nearest = exhaustive.search(binarizer.encode(split.query_descriptors), MAX_CANDIDATES)
    row = {"exhaustive": float((nearest == truth).any(axis=1).mean()), "trees": None, "local ms/frame": None}
    if binarizer.num_bits <= 64:
        trees = RandomTreesIndex.build(codes, labels)
        queries = split.query_descriptors
        candidates = local_branch(trees, binarizer, queries)
        row["trees"] = float((candidates == truth).any(axis=1).mean())
        size = min(FRAME_KEYPOINTS, len(queries))
        frames = queries[: len(queries) // size * size].reshape(-1, size, queries.shape[1])
        passes = [frame for _ in range(TIMING_PASSES) for frame in frames]
        seconds = min(cpu_seconds(local_branch, trees, binarizer, frame) for frame in passes)
        row["local ms/frame"] = 1e3 * seconds * FRAME_KEYPOINTS / size
    return row


def cpu_seconds(function, *args) -> float:
    """CPU time of the calling thread for ``function(*args)``: unlike wall time it hardly grows when
    other processes share the cores (as ``CandidateSearch`` times its stages)."""
    start = time.thread_time()
    function(*args)
    return time.thread_time() - start


def local_branch(trees: RandomTreesIndex, binarizer, queries: np.ndarray) -> np.ndarray:
    """What ``CandidateSearch.local_candidates`` does: project, pack the signs, search the trees."""
    projections = binarizer.project(queries)
    return trees.search(pack_bits(projections > 0), projections, MAX_CANDIDATES, MAX_LEAVES_PER_TREE)


def local_code_rows(
    sizes=(100_000, 1_000_000), num_queries: int = 8192, config: LocalHeadConfig | None = None
) -> list[dict]:
    """One row per code: its name, "train s" and, per map size (points, the map's own first),
    {"trees", "exhaustive", "local ms/frame"} under the key ``points``; None where not measured."""
    split = holdout_split(MAP, num_queries)
    num_map_points = len(np.unique(split.points))
    variants = code_variants(split, config or LocalHeadConfig())
    rows = [{"code": name, "train s": seconds} for name, _, seconds in variants]
    for total in [num_map_points] + [size for size in sizes if size > num_map_points]:
        extra = distractors(total - num_map_points)
        for row, (_, binarizer, _) in zip(rows, variants):
            row[total] = measure(binarizer, split, extra)
    return rows


def markdown_table(rows: list[dict]) -> str:
    sizes = [key for key in rows[0] if isinstance(key, int)]
    columns = [(size, key) for size in sizes for key in ("trees", "exhaustive", "local ms/frame")]
    header = ["code", "train s"] + [f"{key} @{size / 1000:.0f}k" for size, key in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["code"], f"{row['train s']:.1f}"]
        cells += ["-" if row[size][key] is None else f"{row[size][key]:.3f}" if key != "local ms/frame"
                  else f"{row[size][key]:.1f}" for size, key in columns]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=8192)
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "7scenes_redkitchen_excerpt").is_dir():
        print("local codes: skipped (../shared/data/7scenes_redkitchen_excerpt is absent)")
        return
    cached_map(REAL_SETS["7scenes"](), MAP.parents[1])  # bench_real's map, built if absent
    rows = local_code_rows(args.sizes, args.queries)
    print(
        f"\nLocal codes on the 7-Scenes map, 1 keyframe chunk in {HOLDOUT_EVERY} held out ({args.queries} query "
        f"observations); recall of the true point among {MAX_CANDIDATES} candidates; trees take at most 64 bits, "
        "so 128-bit codes have the exhaustive Hamming recall only.\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
