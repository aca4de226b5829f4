"""Keyframe selection shared by the map-builder node and ``vloc build-map --bag``.

A frame becomes a keyframe when ``min_interval_s`` has passed since the last keyframe and, when
both it and the last keyframe have a pose, the camera moved ``min_translation_m`` or turned
``min_rotation_deg`` since then. The same thresholds give the same keyframes from the same stream,
whether it is recorded live by the node or read from a bag.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Rigid3, rotation_error_deg

# The defaults of the node's parameters (config/map_builder.yaml) and of ``vloc build-map``'s flags.
DEFAULT_MIN_INTERVAL_S = 0.5
DEFAULT_MIN_TRANSLATION_M = 0.25
DEFAULT_MIN_ROTATION_DEG = 10.0


class KeyframeSelector:
    """Decides which frames of a stream in stamp order become keyframes.

    ``accept`` only decides; ``record`` makes a frame the last keyframe (a caller that fails to
    store an accepted frame does not record it). ``select`` is both. The thresholds are plain
    attributes: the node updates them from its (dynamic) parameters.
    """

    def __init__(
        self,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        min_translation_m: float = DEFAULT_MIN_TRANSLATION_M,
        min_rotation_deg: float = DEFAULT_MIN_ROTATION_DEG,
        last: tuple[int, Rigid3 | None] | None = None,
    ):
        self.min_interval_s = min_interval_s
        self.min_translation_m = min_translation_m
        self.min_rotation_deg = min_rotation_deg
        self.last = last  # (stamp ns, world_from_camera or None) of the last keyframe; None: none yet

    def due(self, stamp_ns: int) -> bool:
        """Whether ``min_interval_s`` has passed since the last keyframe (the check that needs no pose)."""
        return self.last is None or stamp_ns - self.last[0] >= self.min_interval_s * 1e9

    def moved(self, world_from_camera: Rigid3 | None) -> bool:
        """Whether the camera moved or turned enough since the last keyframe (True when either pose is unknown)."""
        last = self.last[1] if self.last is not None else None
        if last is None or world_from_camera is None:
            return True
        moved = np.linalg.norm(world_from_camera.translation - last.translation)
        turned = rotation_error_deg(last.rotation, world_from_camera.rotation)
        return moved >= self.min_translation_m or turned >= self.min_rotation_deg

    def accept(self, stamp_ns: int, world_from_camera: Rigid3 | None = None) -> bool:
        """Whether the frame should become a keyframe (it is not recorded: see ``record``)."""
        return self.due(stamp_ns) and self.moved(world_from_camera)

    def record(self, stamp_ns: int, world_from_camera: Rigid3 | None = None) -> None:
        """Make this frame the last keyframe."""
        self.last = (stamp_ns, world_from_camera)

    def select(self, stamp_ns: int, world_from_camera: Rigid3 | None = None) -> bool:
        """``accept`` and, when accepted, ``record``."""
        if not self.accept(stamp_ns, world_from_camera):
            return False
        self.record(stamp_ns, world_from_camera)
        return True

    def reset(self) -> None:
        """Forget the last keyframe: the next frame is accepted."""
        self.last = None
