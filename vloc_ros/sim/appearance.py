"""Appearance changes between the mapping run and the query runs.

- illumination: a sun from another direction, as a per-surface gain (ambient + Lambert term) and
  a colour tint, applied by the renderer to each surface's texture;
- camera: exposure and gamma, motion blur along a direction, read and shot noise;
- a moving occluder: a textured box walking across in front of the camera (``scene.movers``).

Mapping images are rendered neutrally (gain 1, no camera effects) and queries get all of the
above, drawn per frame from a seeded generator.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..geometry import Rigid3
from .scene import Scene, yaw_rotation

OCCLUDER_RUN = 4  # frames
OCCLUDER_DISTANCE = 0.9  # metres in front of the camera


def sun_gains(scene: Scene, sun_direction, ambient: float, sun_strength: float, tint) -> np.ndarray:
    """(num_surfaces, 3) RGB gains ``tint * (ambient + sun_strength * max(0, normal . sun))``."""
    sun = np.asarray(sun_direction, dtype=np.float64)
    sun = sun / np.linalg.norm(sun)
    normals = np.array([surface.normal for surface in scene.surfaces])
    lambert = np.clip(normals @ sun, 0.0, None)
    return (ambient + sun_strength * lambert)[:, None] * np.asarray(tint, dtype=np.float64)[None, :]


def sample_sun(rng: np.random.Generator) -> dict:
    """A sun for one query run: random azimuth, 25-50 deg elevation, a slightly warm or cool tint."""
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(25, 50))
    direction = [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    warmth = rng.uniform(-0.08, 0.08)
    return {"direction": np.round(direction, 9).tolist(), "tint": [1.0 + warmth, 1.0, 1.0 - warmth]}


def sample_frame_effects(rng: np.random.Generator, config: dict, index: int) -> dict:
    """Camera effects and occluder placement for query frame ``index`` (see DEFAULT_CONFIG["query"])."""
    blurred = rng.random() < config["motion_blur_fraction"]
    # The occluder walks through the view, left to right, in runs of OCCLUDER_RUN frames.
    occluder_x = None
    if config["occluder_fraction"] > 0:
        step = index % max(OCCLUDER_RUN, int(round(OCCLUDER_RUN / config["occluder_fraction"])))
        if step < OCCLUDER_RUN:
            occluder_x = -0.45 + 0.9 * (step + 0.5) / OCCLUDER_RUN
    return {
        "exposure": float(rng.uniform(*config["exposure_range"])),
        "gamma": float(rng.uniform(*config["gamma_range"])),
        "blur_px": float(rng.uniform(0.4, 1.0) * config["motion_blur_px"]) if blurred else 0.0,
        "blur_angle_deg": float(rng.uniform(-20, 20)),
        "noise_sigma": float(config["noise_sigma"]),
        "occluder_x": occluder_x,
    }


def occluder_pose(world_from_camera: Rigid3, lateral: float) -> Rigid3:
    """``world_from_occluder``: upright, ``lateral`` metres right of the optical axis, OCCLUDER_DISTANCE ahead."""
    position = world_from_camera.transform([[lateral, 0.1, OCCLUDER_DISTANCE]])[0]
    forward = world_from_camera.rotation[:, 2]
    return Rigid3(yaw_rotation(np.degrees(np.arctan2(forward[1], forward[0]))), position)


def apply_camera_effects(image: np.ndarray, effects: dict, rng: np.random.Generator) -> np.ndarray:
    """Exposure and gamma, motion blur, then sensor noise (Gaussian read noise plus shot noise)."""
    values = np.clip(image.astype(np.float32) / 255.0 * effects["exposure"], 0.0, 1.0) ** effects["gamma"]
    if effects["blur_px"] >= 1.0:
        values = cv2.filter2D(
            values, -1, _line_kernel(effects["blur_px"], effects["blur_angle_deg"]), borderType=cv2.BORDER_REFLECT
        )
    values = values * 255.0
    sigma = np.sqrt(effects["noise_sigma"] ** 2 + 0.05 * values)  # shot noise grows with the signal
    values = values + rng.standard_normal(values.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _line_kernel(length_px: float, angle_deg: float) -> np.ndarray:
    size = int(np.ceil(length_px)) | 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2
    direction = np.array([np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))]) * (length_px - 1) / 2
    start = tuple(int(round(v)) for v in (centre - direction[0], centre - direction[1]))
    end = tuple(int(round(v)) for v in (centre + direction[0], centre + direction[1]))
    cv2.line(kernel, start, end, 1.0, 1)
    return kernel / kernel.sum()
