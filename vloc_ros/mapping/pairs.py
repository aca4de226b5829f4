"""Image pairs to match: sequential neighbours (capture order) plus top-k global retrieval."""

from __future__ import annotations

import numpy as np


def select_pairs(
    global_descriptors: np.ndarray, sequential_window: int = 4, retrieval_top_k: int = 5, matched: int = 0
) -> list[tuple[int, int]]:
    """Sorted unique pairs (i, j), i < j, of the union of both rules.

    The first ``matched`` images are a map's, matched among themselves when it was built: an update
    pairs only the images after them, with each other and with the map's, and their capture order
    says nothing about the map's, so sequential neighbours are only among them.
    """
    count = len(global_descriptors)
    pairs = {(i, j) for i in range(matched, count) for j in range(i + 1, min(i + 1 + sequential_window, count))}
    if retrieval_top_k > 0 and count > 1:
        similarity = global_descriptors @ global_descriptors.T
        np.fill_diagonal(similarity, -np.inf)
        top_k = min(retrieval_top_k, count - 1)
        nearest = np.argpartition(-similarity, top_k - 1, axis=1)[:, :top_k]
        pairs |= {(min(i, int(j)), max(i, int(j))) for i in range(count) for j in nearest[i]}
    return sorted((i, j) for i, j in pairs if j >= matched)
