"""Compiled (numba) per-keypoint loops of the candidate search, for the CPU.

They release the GIL, so that the search threads, which share the keypoints, run side by side.
A numpy (or ``torch.topk``) formulation has to materialise, sort or select over whole (Q, C)
arrays; a loop per keypoint does not, and takes less than half the time (docs/decisions.md).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

# Reordered float sums (vectorised loops), but infinities kept: both kernels start from +-inf.
_FAST_MATH = {"reassoc", "contract", "nsz"}


@intrinsic
def prefetch(typingctx, array, index):
    """``prefetch(array, i)``: ask the CPU to start loading the cache line of ``array[i]`` (1-D)
    without waiting for it (LLVM's prefetch: a read, kept in all cache levels), so that loads whose
    addresses are known early overlap with the work before them."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        values = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, values, [args[1]], wraparound=False)
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0")
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(nogil=True, cache=True, fastmath=_FAST_MATH)
def top_k_scores(scores, offsets, k):
    """(B, S) float32 scores, (S,) offsets -> (B, k) int64 columns of the k largest
    ``scores[b, s] - offsets[s]`` per row, largest first (k <= S)."""
    rows, columns = scores.shape
    best = np.empty((rows, k), np.int64)
    best_scores = np.empty(k, np.float32)
    for row in range(rows):
        row_scores = scores[row]
        for j in range(k):
            best_scores[j] = -np.inf
            best[row, j] = 0
        worst = best_scores[k - 1]
        for column in range(columns):
            score = row_scores[column] - offsets[column]
            if score <= worst:  # most columns, once the top list has filled: about 1 ns each
                continue
            j = k - 1  # insertion into the sorted top list
            while j > 0 and best_scores[j - 1] < score:
                best_scores[j], best[row, j] = best_scores[j - 1], best[row, j - 1]
                j -= 1
            best_scores[j], best[row, j] = score, column
            worst = best_scores[k - 1]
    return best


@numba.njit(nogil=True, cache=True, fastmath=_FAST_MATH)
def ratio_test_matches(queries, candidates, point_descriptors, ratio, max_matches):
    """Per keypoint: its distinct candidate points (``candidates`` (Q, C), -1 = none) rescored by L2
    distance between real descriptors, then the generalised ratio test of ``CandidateSearch``.

    Returns (query indices, point ids, distances) of the kept matches, grouped by keypoint.
    """
    num_queries, dim = queries.shape
    out_queries = np.empty(num_queries * max_matches, np.int64)
    out_points = np.empty(num_queries * max_matches, np.int64)
    out_distances = np.empty(num_queries * max_matches, np.float32)
    nearest_ids = np.empty(max_matches + 1, np.int64)
    nearest = np.empty(max_matches + 1, np.float32)  # squared distances, ascending
    count = 0
    lines = max(1, dim * point_descriptors.itemsize // 64)  # cache lines per descriptor row
    for query in range(num_queries):
        # Prefetch the next keypoint's candidate rows, scattered over the map's descriptors: on a
        # large map they are random reads that miss the cache, and this overlaps them with the work.
        if query + 1 < num_queries:
            for point in candidates[query + 1]:
                if point >= 0:
                    for line in range(lines):
                        prefetch(point_descriptors[point], line * 64 // point_descriptors.itemsize)
        descriptor = queries[query]
        nearest[:] = np.inf
        nearest_ids[:] = -1
        for point in candidates[query]:
            if point < 0:
                continue
            candidate = point_descriptors[point]
            squared = np.float32(0)
            for d in range(dim):
                difference = candidate[d] - descriptor[d]
                squared += difference * difference
            if squared >= nearest[max_matches]:
                continue
            duplicate = False  # a point both branches found: the same distance, keep it once
            for j in range(max_matches + 1):
                duplicate |= nearest_ids[j] == point
            if duplicate:
                continue
            j = max_matches
            while j > 0 and nearest[j - 1] > squared:
                nearest[j], nearest_ids[j] = nearest[j - 1], nearest_ids[j - 1]
                j -= 1
            nearest[j], nearest_ids[j] = squared, point
        # Keep the k best for the smallest k <= m whose k-th is clearly closer than the (k+1)-th.
        for keep in range(1, max_matches + 1):
            if not np.isfinite(nearest[keep - 1]):
                break
            if np.sqrt(nearest[keep - 1]) < ratio * np.sqrt(nearest[keep]):
                for j in range(keep):
                    out_queries[count], out_points[count] = query, nearest_ids[j]
                    out_distances[count] = np.sqrt(nearest[j])
                    count += 1
                break
    return out_queries[:count], out_points[:count], out_distances[:count]
