"""Correspondence search: a global and a local branch side by side, merged and rescored.

- Global branch: the keyframes nearest to the query's global descriptor give a candidate set of
  3D points (those the keyframes see); every query keypoint gets its
  ``global_candidates_per_keypoint`` nearest points in that set by real descriptor distance
  (a BLAS matrix product + a compiled top-k on the CPU; torch on the GPU where there is one: ``device``).
- Local branch: the keypoint's binary code searches an index over all map points
  (``RandomTreesIndex`` or the ``FaissBinaryIndex`` baseline) for ``local_max_candidates`` points.
- Merge: per keypoint the union of both candidate lists, rescored by real descriptor L2 distance,
  then the ratio test and at most ``max_matches_per_keypoint`` matches kept for RANSAC.

The ratio test is Lowe's, generalised to keeping up to m matches: with distinct candidates sorted
by distance d1 <= d2 <= ..., keep the first k for the smallest k <= m with d_k < ratio * d_(k+1);
if there is none, the keypoint is ambiguous and dropped. With m = 1 this is the classic test.

In ``parallel`` mode the global branch runs in a worker thread while the calling thread runs the
local branch: BLAS, torch and the compiled kernels release the GIL, so the branches overlap on two cores. The caller
owns the process-wide thread settings (OpenBLAS / OpenMP thread counts).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.nearest_neighbours import TorchNearestNeighbours
from .binary import Binarizer, pack_bits
from .csr import gather_ranges
from .faiss_binary import FaissBinaryIndex
from .global_index import GlobalIndex
from .kernels import ratio_test_matches, top_k_scores
from .random_trees import RandomTreesIndex

MODES = ("parallel", "global_only", "local_only")
DEFAULT_CONFIG = {
    "mode": "parallel",
    "concurrent_branches": True,  # parallel mode: run the branches in two threads
    "device": "auto",  # global branch's descriptor search: "cpu", "cuda", or "auto" (cuda if there is a GPU)
    "global_top_k": 5,  # keyframes retrieved by the global descriptor
    "global_candidates_per_keypoint": 8,
    "local_max_candidates": 32,
    "local_search": {},  # index-specific, e.g. {"max_leaves_per_tree": 4} or {"nprobe": 16}
    "ratio_test": 0.9,
    "max_matches_per_keypoint": 3,
}


@dataclass
class Correspondences:
    """Sorted by descriptor distance, best first."""

    query_indices: np.ndarray  # (N,) int64, keypoint rows of the query
    point_ids: np.ndarray  # (N,) int64, map point ids
    distances: np.ndarray  # (N,) float32, L2 distance between the descriptors
    # Seconds: "global", "local", "merge" (wall) and their "_cpu" thread CPU times, "branches"
    # (wall time of both branches), "search" (the whole search).
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.query_indices)

    @classmethod
    def empty(cls, timings: dict[str, float] | None = None) -> Correspondences:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), timings or {})


class CandidateSearch:
    def __init__(
        self,
        config: dict,
        *,
        point_descriptors: np.ndarray,
        point_index: RandomTreesIndex | FaissBinaryIndex,
        binarizer: Binarizer,
        global_index: GlobalIndex,
        keyframe_points: tuple[np.ndarray, np.ndarray],
    ):
        """point_descriptors: (P, D) float16/32 (row = point id); keyframe_points: CSR
        (offsets (K + 1,), point ids) of the points each keyframe sees."""
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown candidate search config keys: {sorted(unknown)}")
        self.config = {**DEFAULT_CONFIG, **config}
        if self.config["mode"] not in MODES:
            raise ValueError(f"unknown mode {self.config['mode']!r}; expected one of {MODES}")
        # float32 in memory even if the map stores float16: numpy's float16 casts cost more than the
        # whole rescoring.
        self.point_descriptors = np.ascontiguousarray(point_descriptors, np.float32)
        # Half squared norms once: the global branch ranks by q.p - |p|^2 / 2.
        self._half_sq_norms = 0.5 * np.einsum("pd,pd->p", self.point_descriptors, self.point_descriptors)
        device = self.config["device"]
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # On a GPU the table stays there and torch ranks; fp32: the exact answer, and on an H100 no
        # slower than fp16 for these sizes. On a CPU: BLAS + a compiled top-k (``kernels``).
        self.gpu_nearest_neighbours = (
            TorchNearestNeighbours(self.point_descriptors, "fp32", device) if device == "cuda" else None
        )
        self.point_index = point_index
        self.binarizer = binarizer
        self.global_index = global_index
        self.keyframe_point_offsets = np.asarray(keyframe_points[0], np.int64)
        self.keyframe_point_ids = np.asarray(keyframe_points[1], np.int64)
        if len(self.keyframe_point_offsets) != global_index.index.ntotal + 1:
            raise ValueError("keyframe_points must have one CSR row per keyframe of the global index")
        concurrent = self.config["mode"] == "parallel" and self.config["concurrent_branches"]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="global-branch") if concurrent else None
        # Compile the kernels (or load them from numba's cache) now rather than on the first frame.
        no_query = np.zeros((1, self.descriptor_dim), np.float32)
        self._merge(no_query, self.local_candidates(no_query))
        top_k_scores(np.zeros((1, 1), np.float32), np.zeros(1, np.float32), 1)

    @property
    def descriptor_dim(self) -> int:
        return self.point_descriptors.shape[1]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def search(self, query_descriptors: np.ndarray, query_global_descriptor: np.ndarray | None) -> Correspondences:
        """query_descriptors: (Q, D) float32; query_global_descriptor: (G,) (may be None in local_only mode)."""
        start = time.perf_counter()
        queries = np.ascontiguousarray(query_descriptors, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.descriptor_dim:
            raise ValueError(f"expected query descriptors of shape (Q, {self.descriptor_dim}), got {queries.shape}")
        if len(queries) == 0:
            return Correspondences.empty()
        mode = self.config["mode"]
        timings: dict[str, float] = {}
        candidates = []
        if mode in ("parallel", "global_only"):
            if query_global_descriptor is None:
                raise ValueError(f"mode {mode!r} needs the query's global descriptor")
            if self._pool is not None:
                global_future = self._pool.submit(
                    _timed, "global", self.global_candidates, queries, query_global_descriptor
                )
            else:
                candidates.append(
                    _timed("global", self.global_candidates, queries, query_global_descriptor, timings=timings)
                )
        if mode in ("parallel", "local_only"):
            candidates.append(_timed("local", self.local_candidates, queries, timings=timings))
        if self._pool is not None:
            global_candidates, global_timings = global_future.result()
            timings.update(global_timings)
            candidates.append(global_candidates)
        timings["branches"] = time.perf_counter() - start

        result = _timed("merge", self._merge, queries, np.concatenate(candidates, axis=1), timings=timings)
        timings["search"] = time.perf_counter() - start
        result.timings = timings
        return result

    def global_candidates(self, queries: np.ndarray, global_descriptor: np.ndarray) -> np.ndarray:
        """Global branch: (Q, global_candidates_per_keypoint) point ids, -1 where there are fewer points."""
        keyframes, _ = self.global_index.top_k(global_descriptor, self.config["global_top_k"])
        keyframes = keyframes[keyframes >= 0]
        points = np.unique(gather_ranges(self.keyframe_point_offsets, self.keyframe_point_ids, keyframes)[0])
        width = self.config["global_candidates_per_keypoint"]
        if points.size == 0 or width == 0:
            return np.full((len(queries), width), -1, np.int64)
        if self.gpu_nearest_neighbours is not None:
            return self.gpu_nearest_neighbours.knn_subset(queries, points, width)[1]
        # Nearest by L2 = largest q.p - |p|^2 / 2. Tiles of 256 keypoints keep the scores in cache.
        found = min(width, points.size)
        descriptors, half_sq_norms = self.point_descriptors[points], self._half_sq_norms[points]
        columns = np.concatenate([top_k_scores(block @ descriptors.T, half_sq_norms, found)
                                  for block in np.split(queries, range(256, len(queries), 256))])
        return np.pad(points[columns], ((0, 0), (0, width - found)), constant_values=-1)

    def local_candidates(self, queries: np.ndarray) -> np.ndarray:
        """Local branch: (Q, local_max_candidates) point ids, -1 padded."""
        projections = self.binarizer.project(queries)
        return self.point_index.search(
            pack_bits(projections > 0), projections, self.config["local_max_candidates"], **self.config["local_search"]
        )

    def _merge(self, queries: np.ndarray, candidates: np.ndarray) -> Correspondences:
        """Union per keypoint, real-descriptor rescoring, ratio test, up to m matches; best first."""
        query_indices, point_ids, distances = ratio_test_matches(
            queries, candidates, self.point_descriptors, np.float32(self.config["ratio_test"]),
            self.config["max_matches_per_keypoint"],
        )  # fmt: skip
        best_first = np.argsort(distances, kind="stable")  # for PROSAC
        return Correspondences(query_indices[best_first], point_ids[best_first], distances[best_first])


def _timed(name: str, function, *args, timings: dict | None = None):
    """Run ``function(*args)``, recording wall seconds as ``name`` and the thread's CPU seconds as
    ``name + "_cpu"`` (what the stage costs even when other processes share the cores).

    Without ``timings`` (in a worker thread) returns (result, those two timings).
    """
    wall, cpu = time.perf_counter(), time.thread_time()
    result = function(*args)
    stage = {name: time.perf_counter() - wall, f"{name}_cpu": time.thread_time() - cpu}
    if timings is None:
        return result, stage
    timings.update(stage)
    return result
