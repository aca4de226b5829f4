"""Photo textures: scikit-image's bundled sample photographs cut into tiles and marked up.

The photographs ship inside the scikit-image wheel (no download). Every tile is a random crop of
one of them, recoloured and overdrawn with a few random strokes and letters, so that tiles
cut from the same photograph still look different to a feature matcher (unless a scene wants
identical copies on purpose, see ``scene.py``'s repeated variant).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

TILE_PIXELS = 320  # photo crops (300-640 px) shrink a little: dense, sharp detail

# Bundled with scikit-image (skimage/data/*), chosen for texture: no large flat or black areas.
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
    "cell",
    "page",
    "text",
)
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789#&@%"


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A bundled sample photograph as ``HxWx3`` uint8 RGB (gray ones are replicated)."""
    import skimage.data

    photo = np.asarray(getattr(skimage.data, name)())
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)
    return np.ascontiguousarray(photo[:, :, :3].astype(np.uint8))


def random_tile(rng: np.random.Generator, size: int = TILE_PIXELS) -> np.ndarray:
    """One ``size x size`` RGB tile: a recoloured photo crop plus random strokes and letters."""
    photo = load_photo(PHOTO_NAMES[rng.integers(len(PHOTO_NAMES))])
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = photo[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    tile = cv2.resize(crop, (size, size), interpolation=interpolation)
    if rng.random() < 0.5:
        tile = cv2.flip(tile, 1)
    # Per-channel gain (as a lookup table: fast) so gray photos become coloured and repeats of one
    # photo differ in colour.
    gains = rng.uniform(0.6, 1.2, size=3)
    table = np.clip(np.arange(256)[:, None] * gains, 0, 255).astype(np.uint8).reshape(1, 256, 3)
    tile = cv2.LUT(tile, table)
    _draw_marks(tile, rng)
    # Dark grout line on the tile border: strong edges and corners where tiles meet.
    cv2.rectangle(tile, (0, 0), (size - 1, size - 1), (25, 25, 25), thickness=max(2, size // 128))
    return tile


def _draw_marks(tile: np.ndarray, rng: np.random.Generator) -> None:
    size = tile.shape[0]
    scale = size / 512  # strokes and letters keep their size relative to the tile

    def colour():
        return tuple(int(c) for c in rng.integers(0, 256, size=3))

    def point():
        return tuple(int(c) for c in rng.integers(0, size, size=2))

    for _ in range(rng.integers(3, 7)):
        shape, thickness = rng.integers(4), max(1, int(rng.integers(2, 6) * scale))
        if shape == 0:
            cv2.line(tile, point(), point(), colour(), thickness, cv2.LINE_AA)
        elif shape == 1:
            cv2.circle(tile, point(), int(rng.integers(size // 50, size // 5)), colour(), thickness, cv2.LINE_AA)
        elif shape == 2:
            cv2.rectangle(tile, point(), point(), colour(), thickness, cv2.LINE_AA)
        else:
            corners = rng.integers(0, size, size=(int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.polylines(tile, [corners], True, colour(), thickness, cv2.LINE_AA)
    text = "".join(_LETTERS[i] for i in rng.integers(len(_LETTERS), size=int(rng.integers(2, 5))))
    font_scale = float(rng.uniform(1.5, 3.0)) * scale
    origin = (int(rng.integers(0, size // 2)), int(rng.integers(size // 4, size)))
    cv2.putText(
        tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour(), max(1, int(font_scale * 2.5)), cv2.LINE_AA
    )


def mosaic(width_px: int, height_px: int, rng: np.random.Generator, tile_px: int = TILE_PIXELS) -> np.ndarray:
    """A ``height_px x width_px`` RGB texture made of random tiles (smaller ones for small textures)."""
    tile_px = min(tile_px, max(width_px, height_px))
    columns, rows = -(-width_px // tile_px), -(-height_px // tile_px)
    canvas = np.empty((rows * tile_px, columns * tile_px, 3), dtype=np.uint8)
    for top in range(0, rows * tile_px, tile_px):
        for left in range(0, columns * tile_px, tile_px):
            canvas[top : top + tile_px, left : left + tile_px] = random_tile(rng, tile_px)
    return np.ascontiguousarray(canvas[:height_px, :width_px])


def four_fold_symmetric(quadrant: np.ndarray) -> np.ndarray:
    """A square texture that is unchanged by a 90 degree rotation (four rotated copies of ``quadrant``)."""
    if quadrant.shape[0] != quadrant.shape[1]:
        raise ValueError(f"quadrant must be square, got {quadrant.shape[:2]}")
    half = quadrant.shape[0]
    full = np.empty((2 * half, 2 * half) + quadrant.shape[2:], dtype=quadrant.dtype)
    full[:half, :half] = quadrant
    full[:half, half:] = np.rot90(quadrant, -1)
    full[half:, half:] = np.rot90(quadrant, 2)
    full[half:, :half] = np.rot90(quadrant, 1)
    return full
