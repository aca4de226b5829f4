"""One evaluated frame: what the localizer said about an image, next to the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..geometry import Rigid3, pose_error


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
        }
