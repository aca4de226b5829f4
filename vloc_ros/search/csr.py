"""CSR helpers (offsets + values, as the map stores keyframe -> points), vectorised."""

from __future__ import annotations

import numpy as np


def gather_ranges(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[offsets[r]:offsets[r + 1]]`` for every r in ``rows`` (flat, any shape).

    Returns (gathered values, index into ``rows.ravel()`` each value came from); no Python loop.
    """
    positions, source = range_positions(offsets, rows)
    return values[positions], source


def range_positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``arange(offsets[r], offsets[r + 1])`` for every r in ``rows`` (flat, any shape):
    ``gather_ranges`` of the positions themselves, without an arange over all values.

    Returns (positions, index into ``rows.ravel()`` each position came from).
    """
    rows = rows.ravel()
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    source = np.repeat(np.arange(rows.size), lengths)
    # Position inside each range = global position - where that range begins in the output.
    ends = np.cumsum(lengths)
    total = ends[-1] if ends.size else 0
    positions = np.arange(total) - np.repeat(ends - lengths, lengths) + np.repeat(starts, lengths)
    return positions, source
