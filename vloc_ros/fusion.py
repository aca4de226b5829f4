"""A smooth, consistent ``map -> odom``: successive fixes fused by a small Kalman filter on SE(3).

Every published fix implies ``map_from_odom = map_from_camera @ inverse(odom_from_camera)``. Odometry
is smooth but drifts; fixes do not drift but are noisy. Publishing each fix's ``map_from_odom`` as
is makes TF (and with it the robot's pose in ``map``) jump by the fix's noise every frame; the filter
keeps one estimate of ``map_from_odom`` with a 6x6 covariance and lets each fix move it by as much
as the two covariances say:

- **Predict**: ``map_from_odom`` stays where it is, its uncertainty grows with the odometry's motion
  since the last fix (drift per metre travelled and per radian turned) and a little with time.
- **Gate**: a fix whose innovation has a Mahalanobis distance beyond ``gate_nees`` (chi-square, 6
  degrees of freedom) is not fused. After ``reset_after_rejections`` of them in a row the filter
  starts over from the newest: the robot was moved, or the estimate was wrong.
- **Update**: the Kalman gain blends the fix in; the covariance shrinks (Joseph form).

State and covariances use the localizer's convention (ROS order x y z rx ry rz): position, and
small rotations about the map axes applied on the left. A fix's covariance is carried to the odom
origin through the lever arm (``publishing.covariance_of_attached_frame``). ROS-free: the tracker
(node and ``vloc eval``) runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.spatial.transform import Rotation

from .config import from_dict
from .covariance import NEES_EXPECTED, nees
from .geometry import Rigid3, apply_difference, pose_difference
from .publishing import covariance_of_attached_frame


@dataclass(frozen=True)
class FusionConfig:
    enabled: bool = True  # False: map -> odom is each fix's own (the filter passes fixes through)
    # Odometry drift that map -> odom has to absorb between fixes (standard deviations).
    position_drift_per_metre: float = 0.02  # map units per unit travelled
    rotation_drift_per_metre_deg: float = 1.0  # degrees per unit travelled
    rotation_drift_per_radian: float = 0.02  # radians per radian turned
    position_drift_per_second: float = 0.002  # map units per second, even when still
    rotation_drift_per_second_deg: float = 0.05
    gate_nees: float = 22.46  # chi-square(6) at 0.999: what a consistent covariance almost never exceeds
    reset_after_rejections: int = 3
    # The fixes' covariance is made for an EKF that takes one fix at a time, so it carries their
    # shared error (map, calibration) as well; from one fix to the next only their scatter changes.
    # The filter scales it down to that scatter: towards a normalised innovation of 6 (covariance
    # matching), by (innovation / 6) ** noise_adaptation per fix, never below min_noise_scale nor above 1.
    noise_adaptation: float = 0.25
    min_noise_scale: float = 1e-3


class FusionOutcome(str, Enum):
    STARTED = "started"  # first fix, or restarted after a rejection streak
    FUSED = "fused"
    REJECTED = "rejected"  # outside the gate: map -> odom unchanged


@dataclass(frozen=True)
class FusionUpdate:
    outcome: FusionOutcome
    map_from_odom: Rigid3  # the estimate after this fix
    covariance: np.ndarray  # (6, 6) of map_from_odom
    nees: float  # the fix's squared Mahalanobis distance from the prediction (0 when started)


class MapOdomFilter:
    """Not thread-safe: the tracker calls it under its lock."""

    def __init__(self, config: FusionConfig | dict | None = None):
        self.config = from_dict(FusionConfig, config)
        self.reset()

    def reset(self) -> None:
        """Forget the estimate: the next fix starts it over (a new map, LOST, /initialpose)."""
        self.map_from_odom: Rigid3 | None = None
        self.covariance: np.ndarray | None = None
        self._odom_from_camera: Rigid3 | None = None  # odometry at the last fix
        self._stamp = 0.0
        self._rejections = 0
        self.noise_scale = 1.0  # of the fixes' covariance (``noise_adaptation``)

    def update(
        self, stamp: float, map_from_camera: Rigid3, camera_covariance: np.ndarray, odom_from_camera: Rigid3
    ) -> FusionUpdate:
        """Fuse the fix ``map_from_camera`` (covariance in the module's convention) taken at ``stamp``
        when odometry put the camera at ``odom_from_camera``."""
        measured = map_from_camera @ odom_from_camera.inverse()
        lever_arm = measured.translation - map_from_camera.translation
        noise = self.noise_scale * covariance_of_attached_frame(camera_covariance, lever_arm)
        if self.map_from_odom is None or not self.config.enabled:
            return self._start(stamp, measured, noise, odom_from_camera)
        predicted = self.covariance + self._drift(stamp, odom_from_camera)
        innovation = pose_difference(measured, self.map_from_odom)
        innovation_covariance = predicted + noise
        distance = nees(innovation, innovation_covariance)
        if not distance <= self.config.gate_nees:
            self._rejections += 1
            if self._rejections >= self.config.reset_after_rejections:
                return self._start(stamp, measured, noise, odom_from_camera)
            return FusionUpdate(FusionOutcome.REJECTED, self.map_from_odom, self.covariance, distance)
        config = self.config
        ratio = max(distance, 1e-6) / NEES_EXPECTED
        self.noise_scale = float(
            np.clip(self.noise_scale * ratio**config.noise_adaptation, config.min_noise_scale, 1.0)
        )
        gain = predicted @ np.linalg.inv(innovation_covariance)
        keep = np.eye(6) - gain
        self.map_from_odom = apply_difference(gain @ innovation, self.map_from_odom)
        self.covariance = keep @ predicted @ keep.T + gain @ noise @ gain.T
        self._odom_from_camera, self._stamp, self._rejections = odom_from_camera, stamp, 0
        return FusionUpdate(FusionOutcome.FUSED, self.map_from_odom, self.covariance, distance)

    def _start(self, stamp: float, measured: Rigid3, noise: np.ndarray, odom_from_camera: Rigid3) -> FusionUpdate:
        self.map_from_odom, self.covariance = measured, noise
        self._odom_from_camera, self._stamp, self._rejections = odom_from_camera, stamp, 0
        return FusionUpdate(FusionOutcome.STARTED, measured, noise, 0.0)

    def _drift(self, stamp: float, odom_from_camera: Rigid3) -> np.ndarray:
        """Process noise since the last fused fix: odometry's drift over the motion in between."""
        config = self.config
        motion = self._odom_from_camera.inverse() @ odom_from_camera
        travelled = float(np.linalg.norm(motion.translation))
        turned = float(np.linalg.norm(Rotation.from_matrix(motion.rotation).as_rotvec()))
        elapsed = max(stamp - self._stamp, 0.0)
        position_sigma = config.position_drift_per_metre * travelled + config.position_drift_per_second * elapsed
        rotation_sigma = (
            np.radians(config.rotation_drift_per_metre_deg * travelled + config.rotation_drift_per_second_deg * elapsed)
            + config.rotation_drift_per_radian * turned
        )
        return np.diag([position_sigma**2] * 3 + [rotation_sigma**2] * 3)
