"""The local branch and the merge of the candidate search as batched torch code, for the GPU.

``TorchLocalSearch`` holds a ``RandomTreesIndex`` on a torch device and searches it like
``RandomTreesIndex.search``; ``torch_ratio_test_matches`` is ``kernels.ratio_test_matches``. Both give
the same answers as the compiled CPU code on the same inputs, tie order included (the merge's
distances differ only by float rounding, since the CPU sums in another order). The same code runs
on a CPU, where the tests compare it with the compiled path; it is slower there than numba.

Instead of a loop per keypoint, every step works on all keypoints x trees at once:

- Descent: one gather per level for all (keypoint, tree) pairs. A leaf points to itself and tests
  a zero bit (column 64 of the query's bit table), so a finished descent stays put without a branch.
- Multi-probe: the CPU loop takes, round by round, each tree's cheapest unused flip. Flip keys are
  distinct within a path (the level sits in their low bits), so the rounds take the path's smallest
  keys: one ``topk`` over the path. The flips descend greedily all together; their order does not
  matter, since the ranking sorts the probed points.
- Ranking: the probed points as sortable keys Hamming distance << 32 | id, sorted per keypoint;
  a point probed twice has equal keys side by side, so keeping the first of each run and the first
  ``max_candidates`` of those is a comparison, a cumulative sum and a scatter.
- Merge: L2 distances of all (keypoint, candidate) pairs, duplicates set to inf, a stable sort and
  the ratio test on the first m + 1 columns.

Popcount is SWAR over the two 32-bit halves of an int64: torch has no unsigned 64-bit arithmetic,
and on 32-bit halves no step overflows a signed int64 (``>>`` is arithmetic, so shifted values are
masked).

Tensor in, tensor out (``search_tensors``, ``torch_ratio_test_matches``): the search queues its work
without waiting for the device, and the merge waits once, to size its output (``nonzero``), so a
caller can chain the branches and the merge on the GPU and copy only the matches back.
``search`` is the numpy boundary with ``RandomTreesIndex.search``'s signature.
"""

from __future__ import annotations

import numpy as np
import torch

from .random_trees import (
    _LEAF_BIT, _LEVEL_MASK, _USED_KEY, MAX_BITS, RandomTreesIndex, checked_query_codes, codes_to_words,
)  # fmt: skip

_ID_MASK = 0xFFFFFFFF  # the point id in a ranking key; the Hamming distance sits above it
_NO_KEY = torch.iinfo(torch.int64).max  # a missing or repeated point in a ranking: sorts last
_HALF_MASKS = (0x55555555, 0x33333333, 0x0F0F0F0F)


def popcount(words: torch.Tensor) -> torch.Tensor:
    """Set bits of every int64 in ``words``, as int64."""
    halves = torch.stack([(words >> 32) & _ID_MASK, words & _ID_MASK])
    halves = halves - ((halves >> 1) & _HALF_MASKS[0])
    halves = (halves & _HALF_MASKS[1]) + ((halves >> 2) & _HALF_MASKS[1])
    halves = (halves + (halves >> 4)) & _HALF_MASKS[2]
    halves = halves + (halves >> 8)
    halves = (halves + (halves >> 16)) & 63
    return halves[0] + halves[1]


def projections_to_words(projections: torch.Tensor) -> torch.Tensor:
    """(Q, B) projections, B <= 64 -> (Q,) int64 query words: the code ``pack_bits(projections > 0)``
    as ``codes_to_words`` packs it (bit j at bit 63 - j), reinterpreted as int64."""
    shifts = MAX_BITS - 1 - torch.arange(projections.shape[1], device=projections.device)
    # Distinct powers of two: the sum is their OR and never overflows (bit 63 alone is negative).
    return ((projections > 0).long() << shifts).sum(1)


class TorchLocalSearch:
    """``TorchLocalSearch(index, device).search(codes, projections, max_candidates, max_leaves_per_tree)``:
    the same (Q, max_candidates) ids as ``index.search`` with the same arguments."""

    def __init__(self, index: RandomTreesIndex, device: str | torch.device = "cuda"):
        self.device = torch.device(device)
        self.num_bits = index.num_bits
        self.depth = index.depth
        inner = index.node_bit >= 0
        node_ids = np.arange(len(index.node_bit), dtype=np.int64)

        def upload(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, np.int64)).to(self.device)

        self.tree_roots = upload(index.tree_roots)
        # Per node: the bit it tests (_LEAF_BIT for a leaf), its left child (itself for a leaf, so
        # that a descent that reached it stays) and its leaf index (for leaves).
        self.node_bit = upload(np.where(inner, index.node_bit, _LEAF_BIT))
        self.node_left = upload(np.where(inner, index.node_child, node_ids))
        self.node_leaf = upload(index.node_child)
        # A last row of no points stands for the probes that found no leaf (-1).
        self.leaf_points = upload(np.vstack([index.leaf_points, np.full(index.leaf_points.shape[1], -1)]))
        self.point_words = upload(index.point_words.view(np.int64))
        # Flip keys of the levels, for queries without projections (the deepest level is cheapest).
        level_keys = np.arange(self.depth, 0, -1, dtype=np.float32).view(np.int32) & ~np.int32(_LEVEL_MASK)
        self.level_keys = upload(level_keys | np.arange(self.depth, dtype=np.int32))

    def search(
        self,
        query_codes: np.ndarray,
        query_projections: np.ndarray | None = None,
        max_candidates: int = 64,
        max_leaves_per_tree: int = 4,
    ) -> np.ndarray:
        """``RandomTreesIndex.search`` on the device: numpy in, (Q, max_candidates) int64 numpy out."""
        words = codes_to_words(checked_query_codes(query_codes, self.num_bits))
        words = torch.from_numpy(words.view(np.int64)).to(self.device)
        projections = None
        if query_projections is not None:
            projections = torch.from_numpy(np.ascontiguousarray(query_projections, np.float32)).to(self.device)
        return self.search_tensors(words, projections, max_candidates, max_leaves_per_tree).cpu().numpy()

    @torch.inference_mode()
    def search_tensors(
        self,
        query_words: torch.Tensor,
        query_projections: torch.Tensor | None = None,
        max_candidates: int = 64,
        max_leaves_per_tree: int = 4,
    ) -> torch.Tensor:
        """(Q,) int64 query words on the device (``projections_to_words``, or ``codes_to_words`` viewed
        as int64), (Q, B) float32 projections or None -> (Q, max_candidates) int64 point ids on the
        device, nearest in Hamming distance first (ties: smaller id), -1 padded. No host sync."""
        if max_leaves_per_tree < 1 or max_candidates < 0:
            raise ValueError(f"need max_leaves_per_tree >= 1 and max_candidates >= 0, got {max_leaves_per_tree}, "
                             f"{max_candidates}")  # fmt: skip
        num_queries = len(query_words)
        if query_projections is not None and tuple(query_projections.shape) != (num_queries, self.num_bits):
            expected = (num_queries, self.num_bits)
            raise ValueError(f"query_projections must have shape {expected}, got {tuple(query_projections.shape)}")
        leaves = self._probe_leaves(query_words, query_projections, max_leaves_per_tree)
        return self._rank_points(query_words, leaves, max_candidates)

    def _probe_leaves(self, words, projections, max_leaves_per_tree) -> torch.Tensor:
        """(Q, probes) leaf indices of the multi-probe descent, -1 where a tree has fewer flips."""
        num_queries, num_trees = len(words), len(self.tree_roots)
        # Bit j of each query word, plus a zero column for the _LEAF_BIT that leaves test.
        shifts = MAX_BITS - 1 - torch.arange(MAX_BITS + 1, device=self.device)
        query_bits = (words[:, None] >> shifts.clamp(min=0)) & 1
        query_bits[:, _LEAF_BIT] = 0
        if projections is not None:  # flip costs: |projection| as sortable int32 (non-negative float bits)
            bit_keys = projections.float().abs().view(torch.int32) & ~_LEVEL_MASK
            bit_keys = torch.cat([bit_keys, bit_keys.new_full((num_queries, MAX_BITS + 1 - self.num_bits), 0)], 1)

        current = self.tree_roots.expand(num_queries, num_trees)
        path_nodes, path_keys = [], []
        for level in range(self.depth + 1):
            path_nodes.append(current)
            bits = self.node_bit.take(current)
            if level < self.depth:
                if projections is None:
                    key = self.level_keys[level].expand(num_queries, num_trees)
                else:
                    key = bit_keys.gather(1, bits) | level
                path_keys.append(torch.where(bits == _LEAF_BIT, int(_USED_KEY), key))
            current = self.node_left.take(current) + query_bits.gather(1, bits)
        leaves = [self.node_leaf.take(current)]

        num_flips = min(max_leaves_per_tree - 1, self.depth)
        if num_flips > 0:
            # The cheapest flips of each path (a leaf's level holds the used key).
            keys, flip_levels = torch.stack(path_keys, 2).topk(num_flips, dim=2, largest=False, sorted=False)
            path = torch.stack(path_nodes, 2)
            parent, child = path.gather(2, flip_levels), path.gather(2, flip_levels + 1)
            left = self.node_left.take(parent)
            sibling = torch.where(child == left, left + 1, left)
            unused = keys != int(_USED_KEY)  # else a leaf's level: nothing to flip, the parent stands in
            current = torch.where(unused, sibling, parent).flatten(1)  # (Q, T * flips)
            for _ in range(self.depth):
                current = self.node_left.take(current) + query_bits.gather(1, self.node_bit.take(current))
            flipped = torch.where(unused.flatten(1), self.node_leaf.take(current), -1)
            leaves.append(flipped)
        return torch.cat(leaves, 1)

    def _rank_points(self, words, leaves, max_candidates) -> torch.Tensor:
        num_queries = len(words)
        rows = torch.where(leaves >= 0, leaves, len(self.leaf_points) - 1).flatten()
        points = self.leaf_points.index_select(0, rows).view(num_queries, leaves.shape[1] * self.leaf_points.shape[1])
        distances = popcount(self.point_words.take(points.clamp(min=0)) ^ words[:, None])
        keys = torch.where(points >= 0, (distances << 32) | points, _NO_KEY).sort(dim=1).values
        first = torch.ones_like(keys, dtype=torch.bool)
        first[:, 1:] = keys[:, 1:] != keys[:, :-1]
        first &= keys != _NO_KEY
        # Rank among distinct points; the rest go to a spare last column that is dropped.
        rank = (first.cumsum(1) - 1).masked_fill(~first, max_candidates).clamp(max=max_candidates)
        result = torch.full((num_queries, max_candidates + 1), -1, dtype=torch.int64, device=keys.device)
        result.scatter_(1, rank, torch.where(first, keys & _ID_MASK, -1))
        return result[:, :max_candidates]


@torch.inference_mode()
def torch_ratio_test_matches(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    point_descriptors: torch.Tensor,
    ratio: float,
    max_matches: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``kernels.ratio_test_matches`` on tensors of one device: (Q, D) float32 queries, (Q, C) int64
    candidate ids (-1 = none), (P, D) float32 descriptors -> (query indices, point ids, distances) of
    the kept matches, grouped by keypoint, on that device. Waits for the device once: the number of
    matches sizes the output."""
    if max_matches < 1:
        raise ValueError(f"max_matches must be at least 1, got {max_matches}")
    num_queries, num_candidates = candidates.shape
    valid = candidates >= 0
    descriptors = point_descriptors[candidates.clamp(min=0)]
    squared = (descriptors - queries[:, None, :]).square().sum(2)
    # A point listed twice (both branches found it) counts once, at its first column.
    by_id, order = candidates.sort(dim=1, stable=True)
    repeated_sorted = torch.zeros_like(valid)
    repeated_sorted[:, 1:] = by_id[:, 1:] == by_id[:, :-1]
    repeated = torch.zeros_like(valid).scatter_(1, order, repeated_sorted)
    squared = squared.masked_fill(~valid | repeated, float("inf"))
    # The m + 1 nearest distinct candidates, equal distances in column order (as the CPU inserts them).
    width = max_matches + 1
    nearest, columns = squared.sort(dim=1, stable=True)
    if num_candidates < width:
        padding = width - num_candidates
        nearest = torch.nn.functional.pad(nearest, (0, padding), value=float("inf"))
        columns = torch.nn.functional.pad(columns, (0, padding))
    nearest, columns = nearest[:, :width], columns[:, :width]
    distances = nearest.sqrt()
    # Keep the first k for the smallest k <= m whose k-th is clearly closer than the (k+1)-th
    # (a float32 ratio, as the CPU's).
    ratio = torch.tensor(ratio, dtype=torch.float32)
    clear = distances[:, :-1].isfinite() & (distances[:, :-1] < distances[:, 1:] * ratio)
    has_gap = clear.any(1)
    keep = torch.where(has_gap, clear.int().argmax(1) + 1, 0)
    kept = torch.arange(max_matches, device=candidates.device) < keep[:, None]
    query_indices, slots = kept.nonzero(as_tuple=True)
    point_ids = candidates[query_indices, columns[query_indices, slots]]
    return query_indices, point_ids, distances[query_indices, slots]
