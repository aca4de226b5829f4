"""Candidate lists as CSR arrays, and the vectorised helpers that build and read them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateLists:
    """Per-query candidate point ids: query ``i`` has ``point_ids[offsets[i]:offsets[i + 1]]`` (no duplicates)."""

    offsets: np.ndarray  # (Q + 1,) int64
    point_ids: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def for_query(self, index: int) -> np.ndarray:
        return self.point_ids[self.offsets[index] : self.offsets[index + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def query_indices(self) -> np.ndarray:
        """(len(point_ids),) the query each entry belongs to."""
        return np.repeat(np.arange(len(self)), self.counts())

    @classmethod
    def empty(cls, num_queries: int) -> CandidateLists:
        return cls(np.zeros(num_queries + 1, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_padded(cls, ids: np.ndarray) -> CandidateLists:
        """(Q, C) ids with -1 for "none" (rows already free of duplicates) -> CSR."""
        valid = ids >= 0
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(valid.sum(axis=1), out=offsets[1:])
        return cls(offsets, ids[valid].astype(np.int64))


def gather_ranges(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[offsets[r]:offsets[r + 1]]`` for every r in ``rows`` (flat, any shape).

    Returns (gathered values, index into ``rows.ravel()`` each value came from); no Python loop.
    """
    rows = rows.ravel()
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    source = np.repeat(np.arange(rows.size), lengths)
    # Position inside each range = global position - where that range begins in the output.
    ends = np.cumsum(lengths)
    total = ends[-1] if ends.size else 0
    positions = np.arange(total) - np.repeat(ends - lengths, lengths) + np.repeat(starts, lengths)
    return values[positions], source


def to_padded(query_of_entry: np.ndarray, values: np.ndarray, num_queries: int, fill) -> np.ndarray:
    """Scatter flat entries grouped by query (query_of_entry sorted) into a (Q, max_count) array."""
    counts = np.bincount(query_of_entry, minlength=num_queries)
    width = int(counts.max()) if counts.size else 0
    padded = np.full((num_queries, width), fill, dtype=values.dtype)
    starts = np.cumsum(counts) - counts
    padded[query_of_entry, np.arange(query_of_entry.size) - starts[query_of_entry]] = values
    return padded
