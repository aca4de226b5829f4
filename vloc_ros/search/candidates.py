"""Correspondence search: a global and a local branch side by side, merged and rescored.

- Global branch: the keyframes nearest to the query's global descriptor give a candidate set of
  3D points (those the keyframes see); every query keypoint gets its
  ``global_candidates_per_keypoint`` nearest points in that set by real descriptor distance
  (a BLAS matrix product + a compiled top-k on the CPU).
- Local branch: the keypoint's binary code searches an index over all map points
  (``RandomTreesIndex`` or the ``FaissBinaryIndex`` baseline) for ``local_max_candidates`` points.
- Merge: per keypoint the union of both candidate lists, rescored by real descriptor L2 distance,
  then the ratio test and at most ``max_matches_per_keypoint`` matches kept for RANSAC.

The ratio test is Lowe's, generalised to keeping up to m matches: with distinct candidates sorted
by distance d1 <= d2 <= ..., keep the first k for the smallest k <= m with d_k < ratio * d_(k+1);
if there is none, the keypoint is ambiguous and dropped. With m = 1 this is the classic test.

Both branches and the merge are per keypoint, so ``threads`` threads share the keypoints: each runs
the branches and the merge on its contiguous share (BLAS, torch and the compiled kernels release the
GIL). Sharing keypoints rather than giving each branch a thread keeps both cores busy until the
end: the branches cost different amounts, which one more depends on the map's size, and the merge
runs on both cores too. The caller owns the
process-wide thread settings (OpenBLAS / OpenMP thread counts).

On a GPU (``device``) one pass does it all for all keypoints: the global branch (``TorchNearestNeighbours``),
the random trees' local branch and the merge (``torch_search``), with the map's tables uploaded once
and only the matches copied back. A ``FaissBinaryIndex`` local branch stays on the CPU, beside the
global branch on the GPU.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from ..backends.nearest_neighbours import TorchNearestNeighbours
from ..config import from_dict
from .binary import Binarizer, pack_bits
from .csr import gather_ranges
from .faiss_binary import FaissBinaryIndex
from .global_index import GlobalIndex
from .kernels import ratio_test_matches, top_k_scores
from .random_trees import RandomTreesIndex
from .rerank import KeyframeReranker
from .torch_search import TorchLocalSearch, projections_to_words, torch_ratio_test_matches


class SearchMode(str, Enum):
    PARALLEL = "parallel"
    GLOBAL_ONLY = "global_only"
    LOCAL_ONLY = "local_only"

    @property
    def branches(self) -> tuple[str, ...]:
        """The branches this mode runs, in the merge's column order."""
        return {"parallel": ("global", "local"), "global_only": ("global",), "local_only": ("local",)}[self.value]


@dataclass(frozen=True)
class SearchConfig:
    mode: SearchMode = SearchMode.PARALLEL
    threads: int = 2  # threads sharing the keypoints (each runs both branches and the merge on its share)
    device: str = "auto"  # where the search runs: "cpu", "cuda", or "auto" (cuda if there is a GPU)
    global_top_k: int = 5  # keyframes retrieved by the global descriptor
    # Keyframes the global descriptor shortlists for the reranker to keep ``global_top_k`` of (0: no
    # re-ranking; more than ``global_top_k`` needs a ``reranker``).
    rerank_shortlist: int = 0
    global_candidates_per_keypoint: int = 8
    local_max_candidates: int = 32
    # Index-specific, e.g. {"max_leaves_per_tree": 4} or {"nprobe": 16}.
    local_search: dict = field(default_factory=dict)
    ratio_test: float = 0.9
    max_matches_per_keypoint: int = 3


@dataclass
class Correspondences:
    """Sorted by descriptor distance, best first."""

    query_indices: np.ndarray  # (N,) int64, keypoint rows of the query
    point_ids: np.ndarray  # (N,) int64, map point ids
    distances: np.ndarray  # (N,) float32, L2 distance between the descriptors
    # Keyframes the query's global descriptor retrieved, best first (verification uses them too).
    retrieved_keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Seconds: "search" (wall time of the whole search) and the CPU time of each stage summed over
    # the search threads, "global", "local" and "merge" (their work: with 2 threads the wall time is
    # about half the sum; unlike wall times they hardly grow when other processes share the cores).
    # The GPU pass has "search" only: its stages are queued without waiting for them.
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.query_indices)

    @classmethod
    def empty(cls) -> Correspondences:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


class CandidateSearch:
    def __init__(
        self,
        config: SearchConfig | dict,
        *,
        point_descriptors: np.ndarray,
        point_index: RandomTreesIndex | FaissBinaryIndex,
        binarizer: Binarizer,
        global_index: GlobalIndex,
        keyframe_points: tuple[np.ndarray, np.ndarray],
        reranker: KeyframeReranker | None = None,
    ):
        """point_descriptors: (P, D) float16/32 (row = point id); binarizer: a ``Binarizer`` or any
        binarizer with its interface (``learning.local_head.LearnedBinarizer``); keyframe_points: CSR
        (offsets (K + 1,), point ids) of the points each keyframe sees; reranker: re-orders the
        global descriptor's shortlist by local matches (``rerank_shortlist``)."""
        self.config = from_dict(SearchConfig, config)
        if self.config.rerank_shortlist > self.config.global_top_k and reranker is None:
            raise ValueError(f"rerank_shortlist {self.config.rerank_shortlist} needs a reranker")
        self.reranker = reranker
        # float32 in memory even if the map stores float16: numpy's float16 casts cost more than the
        # whole rescoring.
        self.point_descriptors = np.ascontiguousarray(point_descriptors, np.float32)
        # Half squared norms once: the global branch ranks by q.p - |p|^2 / 2.
        self._half_sq_norms = 0.5 * np.einsum("pd,pd->p", self.point_descriptors, self.point_descriptors)
        device = self.config.device
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
        self.gpu_local_search = None
        if device == "cuda" and isinstance(point_index, RandomTreesIndex):
            self.gpu_local_search = TorchLocalSearch(point_index, device)
        self.global_index = global_index
        self.keyframe_point_offsets = np.asarray(keyframe_points[0], np.int64)
        # The ids as given (the map's int32, possibly memory-mapped): they are only gathered from, and
        # an int64 copy would cost 8 bytes per (keyframe, point) pair of a map of millions of points.
        self.keyframe_point_ids = np.asarray(keyframe_points[1])
        if self.keyframe_point_ids.dtype.kind not in "iu":
            raise ValueError(f"keyframe point ids must be integers, got {self.keyframe_point_ids.dtype}")
        if len(self.keyframe_point_offsets) != global_index.index.ntotal + 1:
            raise ValueError("keyframe_points must have one CSR row per keyframe of the global index")
        threads = self.config.threads
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="search") if threads > 1 else None
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
        mode = self.config.mode
        if query_global_descriptor is None and "global" in mode.branches:
            raise ValueError(f"mode {mode.value!r} needs the query's global descriptor")
        keyframes = (np.zeros(0, np.int64) if query_global_descriptor is None
                     else self.retrieve_keyframes(query_global_descriptor, queries))  # fmt: skip
        subset = self._retrieved_points(keyframes) if "global" in mode.branches else None
        if self.gpu_local_search is not None:
            query_indices, point_ids, distances = self._search_on_gpu(queries, subset)
            return Correspondences(
                query_indices, point_ids, distances, keyframes, {"search": time.perf_counter() - start}
            )
        bounds = np.linspace(0, len(queries), self.config.threads + 1).astype(int)
        shares = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        futures = [self._pool.submit(self._search_share, queries[a:b], subset, i % 2 == 1)
                   for i, (a, b) in enumerate(shares) if i > 0]  # fmt: skip
        (a, b), *_ = shares  # the calling thread takes the first share
        parts = [self._search_share(queries[a:b], subset)] + [future.result() for future in futures]
        timings = {stage: sum(part[3][stage] for part in parts) for stage in parts[0][3]}
        query_indices = np.concatenate([part[0] + a for part, (a, _) in zip(parts, shares)])
        point_ids, distances = (np.concatenate([part[i] for part in parts]) for i in (1, 2))
        best_first = np.argsort(distances, kind="stable")  # for PROSAC
        timings["search"] = time.perf_counter() - start
        return Correspondences(
            query_indices[best_first], point_ids[best_first], distances[best_first], keyframes, timings
        )

    def global_candidates(self, queries: np.ndarray, global_descriptor: np.ndarray) -> np.ndarray:
        """Global branch: (Q, global_candidates_per_keypoint) point ids, -1 where there are fewer points."""
        keyframes = self.retrieve_keyframes(global_descriptor, queries)
        return self._global_rows(queries, self._retrieved_points(keyframes))

    def retrieve_keyframes(
        self, global_descriptor: np.ndarray, query_descriptors: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``global_top_k`` keyframes nearest to the query's global descriptor, best first; with
        re-ranking (``rerank_shortlist``, and the query's local descriptors given), the ``global_top_k``
        best of the ``rerank_shortlist`` nearest in the reranker's order."""
        shortlist = self.config.rerank_shortlist if query_descriptors is not None else 0
        keyframes, _ = self.global_index.top_k(global_descriptor, max(self.config.global_top_k, shortlist))
        keyframes = keyframes[keyframes >= 0]
        if shortlist > self.config.global_top_k:
            keyframes, _ = self.reranker.rerank(query_descriptors, keyframes)
        return keyframes[: self.config.global_top_k]

    def _retrieved_points(self, keyframes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The global branch's candidate set, shared by the search threads: the points the retrieved
        keyframes see, with (for the CPU search; the GPU holds its own table) their descriptors and
        half squared norms."""
        # Marking the seen points in a table gives them sorted and unique 10x faster than np.unique.
        seen = np.zeros(len(self.point_descriptors), bool)
        seen[gather_ranges(self.keyframe_point_offsets, self.keyframe_point_ids, keyframes)[0]] = True
        points = np.flatnonzero(seen)
        if self.gpu_nearest_neighbours is not None:
            return points, None, None
        return points, self.point_descriptors[points], self._half_sq_norms[points]

    def _global_rows(self, queries: np.ndarray, subset: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        points, descriptors, half_sq_norms = subset
        width = self.config.global_candidates_per_keypoint
        if points.size == 0 or width == 0:
            return np.full((len(queries), width), -1, np.int64)
        if self.gpu_nearest_neighbours is not None:
            return self.gpu_nearest_neighbours.knn_subset(queries, points, width)[1]
        # Nearest by L2 = largest q.p - |p|^2 / 2. Tiles of 256 keypoints keep the scores in cache.
        found = min(width, points.size)
        columns = np.concatenate(
            [
                top_k_scores(block @ descriptors.T, half_sq_norms, found)
                for block in np.split(queries, range(256, len(queries), 256))
            ]
        )
        return np.pad(points[columns], ((0, 0), (0, width - found)), constant_values=-1)

    def local_candidates(self, queries: np.ndarray) -> np.ndarray:
        """Local branch: (Q, local_max_candidates) point ids, -1 padded."""
        projections = self.binarizer.project(queries)
        return self.point_index.search(
            pack_bits(projections > 0), projections, self.config.local_max_candidates, **self.config.local_search
        )

    def _search_share(self, queries: np.ndarray, subset, local_first: bool = False):
        """Both branches and the merge for a share of the keypoints (rows of ``queries``): the matches
        (query rows within the share, point ids, distances) and each stage's CPU seconds.

        Threads alternate which branch they run first, so that one thread's matrix product mostly
        overlaps the other's tree probes: two OpenBLAS products at once run only 1.3x faster than
        one after the other (docs/decisions.md).
        """
        branches = self.config.mode.branches
        candidates, cpu_seconds = {}, {}
        for branch in reversed(branches) if local_first else branches:
            clock = time.thread_time()
            candidates[branch] = (self._global_rows(queries, subset) if branch == "global"
                                  else self.local_candidates(queries))  # fmt: skip
            cpu_seconds[branch] = time.thread_time() - clock
        clock = time.thread_time()
        # Columns in the same order whichever branch ran first: equal distances then tie the same way.
        matches = self._merge(queries, np.concatenate([candidates[b] for b in branches], axis=1))
        cpu_seconds["merge"] = time.thread_time() - clock
        return *matches, cpu_seconds

    @torch.inference_mode()
    def _search_on_gpu(self, queries: np.ndarray, subset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both branches and the merge for all keypoints on the GPU: the matches, best first. The work
        is queued without waiting; the merge's one wait sizes the matches, which then come back."""
        nearest = self.gpu_nearest_neighbours
        query_tensor = torch.from_numpy(queries).pin_memory().to(nearest.device, non_blocking=True)
        columns = []
        for branch in self.config.mode.branches:
            if branch == "global":
                columns.append(self._global_rows_on_gpu(query_tensor, subset[0]))
            else:
                projections = self.binarizer.project_torch(query_tensor)
                columns.append(
                    self.gpu_local_search.search_tensors(
                        projections_to_words(projections), projections, self.config.local_max_candidates,
                        **self.config.local_search,
                    )
                )  # fmt: skip
        query_indices, point_ids, distances = torch_ratio_test_matches(
            query_tensor, torch.cat(columns, 1), nearest.database, self.config.ratio_test,
            self.config.max_matches_per_keypoint,
        )  # fmt: skip
        best_first = distances.argsort(stable=True)  # for PROSAC
        return tuple(values[best_first].cpu().numpy() for values in (query_indices, point_ids, distances))

    def _global_rows_on_gpu(self, query_tensor: torch.Tensor, points: np.ndarray) -> torch.Tensor:
        width = self.config.global_candidates_per_keypoint
        found = min(width, points.size)
        if found == 0:
            return torch.full((len(query_tensor), width), -1, dtype=torch.int64, device=query_tensor.device)
        subset = torch.from_numpy(points).to(query_tensor.device)
        rows = self.gpu_nearest_neighbours.rank_rows(query_tensor, found, subset)
        return torch.nn.functional.pad(rows, (0, width - found), value=-1)

    def _merge(self, queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Union per keypoint, real-descriptor rescoring, ratio test, up to m matches (grouped by keypoint)."""
        return ratio_test_matches(
            queries, candidates, self.point_descriptors, np.float32(self.config.ratio_test),
            self.config.max_matches_per_keypoint,
        )  # fmt: skip
