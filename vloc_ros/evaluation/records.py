"""One evaluated frame: what the localizer said about an image, next to the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..covariance import nees
from ..geometry import Rigid3, pose_difference, pose_error


@dataclass(frozen=True)
class FrameRecord:
    stamp: float  # image header stamp, seconds
    estimate: Rigid3 | None  # world_from_camera; None = not localized
    reason: str = ""  # the localizer's reason when not localized
    num_inliers: int = 0
    timings: dict = field(default_factory=dict)  # stage -> seconds
    ground_truth: Rigid3 | None = None  # world_from_camera at stamp; None = unevaluated
    state: str = ""  # the tracking state after the frame (vloc_ros.tracking); "" where unknown (live)
    guided: bool = False  # the pose came from guided matching around the prior
    # (6, 6) covariance published with the estimate: ROS order (x y z rx ry rz), the camera position,
    # then small rotations about the world axes applied on the left; None where unknown (live).
    covariance: np.ndarray | None = None
    # With odometry: odom_from_camera at the stamp, and the fused map -> odom after the frame (None
    # before the first fix); the truth's map -> odom is ground_truth @ inverse(odom_from_camera).
    odom_from_camera: Rigid3 | None = None
    map_from_odom: Rigid3 | None = None
    forced_loss: bool = False  # the evaluation made the tracker LOST just before this frame

    @property
    def localized(self) -> bool:
        return self.estimate is not None

    @property
    def evaluated(self) -> bool:
        return self.ground_truth is not None

    def errors(self) -> tuple[float, float] | None:
        """(translation error, rotation error in degrees), or None without estimate or ground truth."""
        if self.estimate is None or self.ground_truth is None:
            return None
        return pose_error(self.estimate, self.ground_truth)

    def nees(self) -> float | None:
        """Normalised estimation error squared of the estimate under its covariance: the error
        (position difference, rotation vector of estimate x truth^-1) weighted by the inverse
        covariance; chi-square with 6 degrees of freedom when the covariance is consistent."""
        if self.estimate is None or self.ground_truth is None or self.covariance is None:
            return None
        value = nees(pose_difference(self.estimate, self.ground_truth), self.covariance)
        return value if np.isfinite(value) else None

    def to_dict(self) -> dict:
        errors = self.errors()
        return {
            "stamp": self.stamp,
            "localized": self.localized,
            "evaluated": self.evaluated,
            "reason": self.reason,
            "num_inliers": int(self.num_inliers),
            "timings": {stage: float(seconds) for stage, seconds in self.timings.items()},
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "ground_truth": None if self.ground_truth is None else self.ground_truth.to_dict(),
            "translation_error": None if errors is None else errors[0],
            "rotation_error_deg": None if errors is None else errors[1],
            "state": self.state,
            "guided": self.guided,
            "nees": self.nees(),
            "map_from_odom": None if self.map_from_odom is None else self.map_from_odom.to_dict(),
            "forced_loss": self.forced_loss,
        }
