"""Robot and camera trajectories through the scene, and drifting wheel odometry.

Poses are made for ``base_link`` (REP-103 body: x forward, y left, z up) and turned into camera
(optical frame) poses through a fixed mount, ``world_from_camera = world_from_base @ base_from_camera``.
The robot circles the scene centre at ``RING_RADIUS * size`` with its camera looking outward at
the walls, crates and pillars.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import BODY_FROM_OPTICAL_ROTATION, Rigid3
from .scene import yaw_rotation

RING_RADIUS = 0.2  # fraction of the scene size
BASE_HEIGHT = 0.1  # base_link above the floor, metres
# Walls whose copy a mapping run of the "repeated" scene sees: the map arc is centred on them.
REPEATED_MAPPED_WALLS = (0, 1)  # east (+x), north (+y)
# camera_from_rolled_camera: 180 deg about the optical (z) axis, an upside-down view.
UPSIDE_DOWN = Rigid3(np.diag([-1.0, -1.0, 1.0]), np.zeros(3))


def camera_mount(translation=(0.10, 0.0, 1.20), tilt_down_deg: float = 12.0) -> Rigid3:
    """``base_from_camera``: the optical frame turned into the body frame, tilted down, and offset."""
    tilt = Rotation.from_euler("y", tilt_down_deg, degrees=True).as_matrix()
    return Rigid3(tilt @ BODY_FROM_OPTICAL_ROTATION, translation)


def base_pose(x: float, y: float, z: float, yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> Rigid3:
    """``world_from_base`` from a position and yaw/pitch/roll (pitch > 0 tips the nose down)."""
    rotation = Rotation.from_euler("ZYX", [yaw_deg, pitch_deg, roll_deg], degrees=True).as_matrix()
    return Rigid3(rotation, [x, y, z])


def ring_pose(
    size: float,
    angle_deg: float,
    radial_offset: float = 0.0,
    height_offset: float = 0.0,
    heading_offset_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
) -> Rigid3:
    """``world_from_base`` on the ring at ``angle_deg``, facing outward (plus the given offsets)."""
    radius = RING_RADIUS * size + radial_offset
    angle = np.radians(angle_deg)
    return base_pose(
        radius * np.cos(angle),
        radius * np.sin(angle),
        BASE_HEIGHT + height_offset,
        angle_deg + heading_offset_deg,
        pitch_deg,
        roll_deg,
    )


def mapping_angles(scene_name: str, num_frames: int) -> np.ndarray:
    """Ring angles (degrees) of the mapping run: a closed loop, or for "repeated" an arc over
    the walls in REPEATED_MAPPED_WALLS only."""
    if scene_name == "repeated":
        first, last = 90.0 * min(REPEATED_MAPPED_WALLS) - 45.0, 90.0 * max(REPEATED_MAPPED_WALLS) + 45.0
        return np.linspace(first, last, num_frames)
    return np.arange(num_frames) * 360.0 / num_frames


def mapping_trajectory(scene_name: str, size: float, num_frames: int) -> list[Rigid3]:
    """``world_from_base`` of the mapping run: outward-facing, a gentle heading sway for varied views."""
    angles = mapping_angles(scene_name, num_frames)
    return [ring_pose(size, angle, heading_offset_deg=5.0 * np.sin(np.radians(3.0 * angle))) for angle in angles]


def query_trajectory(
    scene_name: str, size: float, num_frames: int, rng: np.random.Generator, offsets: dict, base_from_camera: Rigid3
) -> tuple[list[Rigid3], list[dict]]:
    """``world_from_base`` of a query run that leaves the mapping ring by up to the amplitudes in
    ``offsets`` (lateral_m, height_m, heading_deg, pitch_deg, roll_deg), as smooth sinusoids with
    random phases, plus per-frame facts: whether the view is upside down and whether the mapping
    run covered what it sees.

    courtyard: one loop starting at a random angle. repeated: the first half looks at the wall
    copies the map never saw, the second half looks at mapped copies with the camera upside down.
    """
    phases = rng.uniform(0.0, 2.0 * np.pi, size=5)
    start = rng.uniform(0.0, 360.0)
    poses, facts = [], []
    for index in range(num_frames):
        progress = index / num_frames
        if scene_name == "repeated":
            first_half = num_frames // 2
            upside_down = index >= first_half
            if upside_down:
                fraction = (index - first_half) / max(num_frames - first_half - 1, 1)
            else:
                fraction = index / max(first_half - 1, 1)
            # Unmapped copies (west and south walls), then mapped ones upside down, 20 deg inside the map arc.
            angle = -25.0 + 140.0 * fraction if upside_down else 165.0 + 120.0 * fraction
        else:
            upside_down, angle = False, start + 360.0 * progress
        wave = np.sin(2.0 * np.pi * np.array([2, 3, 1, 4, 5]) * progress + phases)
        pose = ring_pose(
            size,
            angle,
            radial_offset=offsets["lateral_m"] * wave[0],
            height_offset=offsets["height_m"] * wave[2],
            heading_offset_deg=offsets["heading_deg"] * wave[1],
            pitch_deg=offsets["pitch_deg"] * wave[3],
            roll_deg=offsets["roll_deg"] * wave[4],
        )
        if upside_down:  # the whole rig turned 180 deg about the camera's optical axis
            pose = pose @ base_from_camera @ UPSIDE_DOWN @ base_from_camera.inverse()
        poses.append(pose)
        wall = int(np.round((angle % 360.0) / 90.0)) % 4
        facts.append(
            {
                "ring_angle_deg": round(float(angle % 360.0), 6),
                "upside_down": upside_down,
                "wall": wall,
                "covered": scene_name != "repeated" or wall in REPEATED_MAPPED_WALLS,
            }
        )
    return poses, facts


def cameras_from_bases(world_from_base: list[Rigid3], base_from_camera: Rigid3) -> list[Rigid3]:
    return [base @ base_from_camera for base in world_from_base]


def drifting_odometry(world_from_base: list[Rigid3], scale_error: float, yaw_drift_deg_per_m: float) -> list[Rigid3]:
    """``odom_from_base``: starts at identity and integrates each true relative motion with its
    length scaled by ``1 + scale_error`` and a yaw error of ``yaw_drift_deg_per_m`` per metre."""
    odom_from_base = [Rigid3()]
    for previous, current in zip(world_from_base[:-1], world_from_base[1:]):
        step = previous.inverse() @ current
        distance = float(np.linalg.norm(step.translation))
        drifted = Rigid3(
            yaw_rotation(yaw_drift_deg_per_m * distance) @ step.rotation, step.translation * (1.0 + scale_error)
        )
        odom_from_base.append(odom_from_base[-1] @ drifted)
    return odom_from_base
