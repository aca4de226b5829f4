"""Image pairs to match: sequential neighbours (capture order) plus top-k global retrieval.

At most ``sequential_window + retrieval_top_k`` pairs per image, so the pairs grow linearly with the
images; retrieval compares blocks of images with all others, so its memory does too.
"""

from __future__ import annotations

import numpy as np

# Rows of the similarity matrix held at once: 2048 x 10^5 images is 0.8 GB of float32.
RETRIEVAL_BLOCK = 2048


def select_pairs(
    global_descriptors: np.ndarray, sequential_window: int = 4, retrieval_top_k: int = 5, matched: int = 0
) -> list[tuple[int, int]]:
    """Sorted unique pairs (i, j), i < j, of the union of both rules.

    The first ``matched`` images are a map's, matched among themselves when it was built: an update
    pairs only the images after them, with each other and with the map's, and their capture order
    says nothing about the map's, so sequential neighbours are only among them.
    """
    count = len(global_descriptors)
    first = np.arange(matched, count)
    pairs = [
        np.stack([first, first + offset], axis=1)[first + offset < count] for offset in range(1, sequential_window + 1)
    ]
    if retrieval_top_k > 0 and count > 1:
        nearest = retrieval_neighbours(global_descriptors, min(retrieval_top_k, count - 1))
        pairs.append(np.stack([np.repeat(np.arange(count), nearest.shape[1]), nearest.ravel()], axis=1))
    pairs = np.concatenate([np.zeros((0, 2), np.int64), *pairs]).astype(np.int64)
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    return [(int(i), int(j)) for i, j in pairs if j >= matched]


def retrieval_neighbours(global_descriptors: np.ndarray, top_k: int) -> np.ndarray:
    """(N, top_k): for each image the indices of the ``top_k`` others of highest descriptor similarity,
    in no particular order."""
    count = len(global_descriptors)
    nearest = np.empty((count, top_k), np.int64)
    for start in range(0, count, RETRIEVAL_BLOCK):
        stop = min(start + RETRIEVAL_BLOCK, count)
        similarity = global_descriptors[start:stop] @ global_descriptors.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        nearest[start:stop] = np.argpartition(-similarity, top_k - 1, axis=1)[:, :top_k]
    return nearest
