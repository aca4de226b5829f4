"""Plain-text tables the benches print."""

from __future__ import annotations

import sys


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Right-aligned columns under ``title``; floats with 3 significant digits."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))
    sys.stdout.flush()
