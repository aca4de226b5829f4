"""Re-ranking the global descriptor's shortlist by discriminative local matches (after Focus on Local).

A global descriptor summarises the whole image, so a keyframe that shares the query's common textures
(floor, walls, repeated furniture) can outrank the keyframe that sees the query's distinctive details.
``KeyframeReranker`` looks at the details: the query's strongest keypoints are matched to the points
the shortlisted keyframes see, keeping mutual nearest neighbours that pass the ratio test, and each
keyframe scores the share of its points the query matched, every point weighted by how rare it is in
the map (idf, as in bag-of-words retrieval: a point seen by few keyframes tells places apart, one seen
by most of them does not). A share rather than a count, so that a keyframe seeing a wide view does
not win over one whose whole view the query sees.

Local matches of a few hundred keypoints are noisy on their own, so the new order fuses both
rankings by reciprocal rank (Cormack et al. 2009): a keyframe scores 1 / (offset + its global rank)
+ 1 / (offset + its local rank), and equal scores keep the global order.

The cost stays a few milliseconds: only the strongest query keypoints and each keyframe's rarest
points take part (its discriminative regions, as Focus on Local attends to), and the shortlist's
points are matched once for all its keyframes (neighbouring keyframes share many of them).
"""

from __future__ import annotations

import numba
import numpy as np

from .csr import gather_ranges


class KeyframeReranker:
    def __init__(
        self,
        point_descriptors: np.ndarray,
        keyframe_points: tuple[np.ndarray, np.ndarray],
        max_query_keypoints: int = 256,
        max_keyframe_points: int = 256,
        ratio: float = 0.9,
        rank_offset: float = 2.0,
    ):
        """point_descriptors: (P, D) (row = point id); keyframe_points: CSR (offsets (K + 1,), point ids)
        of the points each keyframe sees, as the map stores them. Each keyframe takes part with its
        ``max_keyframe_points`` rarest points only: its discriminative regions."""
        offsets = np.asarray(keyframe_points[0], np.int64)
        point_ids = np.asarray(keyframe_points[1], np.int64)
        num_keyframes = len(offsets) - 1
        if num_keyframes < 1 or offsets[-1] != len(point_ids):
            raise ValueError("keyframe_points must be a CSR (offsets (K + 1,), point ids) with K > 0")
        if min(max_query_keypoints, max_keyframe_points) < 1 or not 0.0 < ratio <= 1.0 or rank_offset <= 0.0:
            raise ValueError(
                "need max_query_keypoints >= 1, max_keyframe_points >= 1, 0 < ratio <= 1 and rank_offset > 0, "
                f"got {max_query_keypoints}, {max_keyframe_points}, {ratio}, {rank_offset}"
            )
        self.point_descriptors = np.ascontiguousarray(point_descriptors, np.float32)
        self._half_sq_norms = 0.5 * np.einsum("pd,pd->p", self.point_descriptors, self.point_descriptors)
        keyframes_seeing = np.bincount(point_ids, minlength=len(point_descriptors))
        self.point_weights = np.log(num_keyframes / np.maximum(keyframes_seeing, 1))
        # Per keyframe its points by decreasing weight (lexsort is stable: ties keep the map's order).
        keyframe_of_entry = np.repeat(np.arange(num_keyframes), np.diff(offsets))
        by_weight = np.lexsort((-self.point_weights[point_ids], keyframe_of_entry))
        kept = by_weight[np.arange(len(by_weight)) - offsets[keyframe_of_entry] < max_keyframe_points]
        self.keyframe_point_ids = point_ids[kept]
        self.keyframe_point_offsets = np.zeros_like(offsets)
        np.cumsum(np.minimum(np.diff(offsets), max_keyframe_points), out=self.keyframe_point_offsets[1:])
        self.keyframe_weights = np.bincount(
            keyframe_of_entry[kept], self.point_weights[self.keyframe_point_ids], minlength=num_keyframes
        )
        self.max_query_keypoints, self.ratio, self.rank_offset = max_query_keypoints, ratio, rank_offset

    @property
    def descriptor_dim(self) -> int:
        return self.point_descriptors.shape[1]

    def rerank(self, query_descriptors: np.ndarray, keyframes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """query_descriptors: (Q, D), strongest keypoints first (as the extractors give them);
        keyframes: (k,) ids, best first. Returns the keyframes in the fused order and their fused
        scores, best first."""
        keyframes = np.asarray(keyframes, np.int64)
        queries = np.asarray(query_descriptors, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.descriptor_dim:
            raise ValueError(f"expected query descriptors of shape (Q, {self.descriptor_dim}), got {queries.shape}")
        global_rank = np.arange(len(keyframes))
        local_rank = np.argsort(np.argsort(-self.match_shares(queries, keyframes), kind="stable"), kind="stable")
        scores = 1.0 / (self.rank_offset + global_rank) + 1.0 / (self.rank_offset + local_rank)
        order = np.argsort(-scores, kind="stable")
        return keyframes[order], scores[order].astype(np.float32)

    def match_shares(self, query_descriptors: np.ndarray, keyframes: np.ndarray) -> np.ndarray:
        """(k,) per keyframe the idf-weighted share of its (rarest) points that the query's strongest
        keypoints match (mutual nearest neighbours among the keyframes' points, passing the ratio test)."""
        point_ids, source = gather_ranges(self.keyframe_point_offsets, self.keyframe_point_ids, keyframes)
        # A table marks the shortlist's points: sorted and unique faster than np.unique.
        seen = np.zeros(len(self.point_descriptors), bool)
        seen[point_ids] = True
        points = np.flatnonzero(seen)
        query = np.ascontiguousarray(query_descriptors[: self.max_query_keypoints], np.float32)
        if len(points) < 2 or len(query) == 0:
            return np.zeros(len(keyframes))
        matched_columns = mutual_ratio_matches(
            query @ self.point_descriptors[points].T,
            self._half_sq_norms[points],
            np.einsum("qd,qd->q", query, query),
            np.float32(self.ratio**2),
        )
        matched = np.zeros(len(self.point_descriptors))
        matched[points[matched_columns]] = 1.0
        matched_weights = np.bincount(source, (matched * self.point_weights)[point_ids], minlength=len(keyframes))
        totals = self.keyframe_weights[keyframes]
        return np.divide(matched_weights, totals, out=np.zeros(len(keyframes)), where=totals > 0)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz"})
def mutual_ratio_matches(products, half_sq_norms, query_sq_norms, squared_ratio):
    """products (Q, U) float32 = query . point, half_sq_norms (U,) = |point|^2 / 2, query_sq_norms (Q,)
    -> the columns (points) that are some query row's nearest neighbour by L2, mutually (the row is
    the point's nearest query too), with the row's squared distances d1 <= squared_ratio * d2.

    One pass keeps each row's best two and each column's best row: the arrays are too small for a
    matrix library's reductions to pay off, and a reduction along columns would stride through memory."""
    rows, columns = products.shape
    column_best = np.full(columns, np.inf, np.float32)
    column_best_row = np.zeros(columns, np.int64)
    row_best = np.zeros(rows, np.int64)
    row_distances = np.empty((rows, 2), np.float32)
    for row in range(rows):
        first, second, first_column = np.inf, np.inf, 0
        for column in range(columns):
            # |q - p|^2 = |q|^2 - 2 (q.p - |p|^2 / 2)
            distance = query_sq_norms[row] - 2.0 * (products[row, column] - half_sq_norms[column])
            if distance < first:
                first, second, first_column = distance, first, column
            elif distance < second:
                second = distance
            if distance < column_best[column]:
                column_best[column], column_best_row[column] = distance, row
        row_best[row] = first_column
        row_distances[row, 0], row_distances[row, 1] = first, second
    matched = np.zeros(rows, np.int64)
    count = 0
    for row in range(rows):
        column = row_best[row]
        if column_best_row[column] == row and row_distances[row, 0] <= squared_ratio * row_distances[row, 1]:
            matched[count] = column
            count += 1
    return matched[:count]
