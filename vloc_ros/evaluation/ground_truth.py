"""Ground truth at query stamps: interpolation between the two bracketing ground-truth samples."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import Rigid3


class PoseInterpolator:
    """Ground truth prepared once (sorted, repeated stamps dropped) for many lookups.

    Linear in translation, slerp in rotation. A query outside the ground-truth span, or whose
    bracketing samples are more than ``max_gap`` seconds apart, gets None: the ground truth does not
    say where the camera was (unevaluated, which is not a localization failure). A query exactly on
    a sample gets that sample.
    """

    def __init__(self, stamps, poses: list[Rigid3], max_gap: float):
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if len(stamps) != len(poses):
            raise ValueError(f"{len(stamps)} stamps but {len(poses)} poses")
        # Sort, and keep the first of repeated stamps: a zero-length interval has no interpolation.
        self.stamps, first = np.unique(stamps, return_index=True)
        self.poses = [poses[i] for i in first]
        self.max_gap = max_gap

    def at(self, query: float) -> Rigid3 | None:
        stamps, poses = self.stamps, self.poses
        after = int(np.searchsorted(stamps, query, side="right"))
        before = after - 1
        if before >= 0 and stamps[before] == query:
            return poses[before]
        if before < 0 or after >= len(stamps) or stamps[after] - stamps[before] > self.max_gap:
            return None
        fraction = (query - stamps[before]) / (stamps[after] - stamps[before])
        return _interpolate(poses[before], poses[after], fraction)


def interpolate_poses(stamps, poses: list[Rigid3], query_stamps, max_gap: float) -> list[Rigid3 | None]:
    """Pose at each query stamp (see ``PoseInterpolator``)."""
    interpolator = PoseInterpolator(stamps, poses, max_gap)
    return [interpolator.at(query) for query in np.asarray(query_stamps, dtype=np.float64).reshape(-1)]


def _interpolate(start: Rigid3, end: Rigid3, fraction: float) -> Rigid3:
    relative = Rotation.from_matrix(start.rotation.T @ end.rotation).as_rotvec()
    rotation = start.rotation @ Rotation.from_rotvec(fraction * relative).as_matrix()
    return Rigid3(rotation, (1.0 - fraction) * start.translation + fraction * end.translation)
