"""Localization over time: the prior between frames, the odometry gate and the tracking state.

``Tracker.process`` takes one camera's frames in order. It predicts each frame's camera pose from
the last published fix, carried by odometry where there is some (the last fix's map -> odom times
the new odom -> camera), else moved on at the velocity of the last two fixes (else the last pose
itself), and hands it to ``Localizer.localize`` as the
prior for guided matching; it holds back a pose that jumps against odometry (``MotionGate``); and it
keeps the state a robot's stack asks for:

- ``INITIALIZING``: no pose yet since start or since a map was loaded; global search.
- ``RELOCALIZED``: the first pose published after ``INITIALIZING`` or ``LOST``.
- ``TRACKING``: poses keep coming; up to ``lost_after_failures`` frames in a row may go without one.
- ``LOST``: that many frames in a row without a pose, or a request (``lose``, the node's
  ``~/relocalize``): the prior and the odometry gate are dropped and every frame searches the whole map.

``seed`` (the node's ``/initialpose``) gives a prior before the first fix. With odometry, each
published fix is fused into one smooth ``map -> odom`` (``vloc_ros.fusion.MapOdomFilter``), which
``LOST``, ``seed`` and ``reset`` start over. ROS-free: the localizer node and ``vloc eval`` run this
same code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .config import from_dict
from .geometry import Camera, Rigid3, interpolate_pose
from .fusion import FusionConfig, FusionUpdate, MapOdomFilter
from .localizer import LocalizationResult, Localizer
from .verification import MotionGate, MotionGateConfig


class TrackingState(str, Enum):
    INITIALIZING = "initializing"
    RELOCALIZED = "relocalized"
    TRACKING = "tracking"
    LOST = "lost"


@dataclass(frozen=True)
class TrackingConfig:
    use_prior: bool = True  # False: every frame searches the whole map (the odometry gate still runs)
    # How long a fix predicts the next frames: without odometry the camera is assumed to keep its
    # velocity, which holds for a fraction of a second; odometry carries the prediction much longer.
    max_prior_age_s: float = 0.5
    max_prior_age_with_odometry_s: float = 5.0
    lost_after_failures: int = 10  # frames in a row without a published pose
    motion_gate: MotionGateConfig = field(default_factory=MotionGateConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


@dataclass
class TrackingStep:
    result: LocalizationResult
    state: TrackingState
    reason: str  # why the state is what it is
    published: bool  # a pose to publish: localized and not held back by the odometry gate
    held_back: str = ""  # the odometry gate's reason, when it held the pose back
    fusion: FusionUpdate | None = None  # the fused map -> odom after a published fix with odometry

    @property
    def map_from_odom(self) -> Rigid3 | None:
        return None if self.fusion is None else self.fusion.map_from_odom


@dataclass(frozen=True)
class _Fix:
    stamp: float
    world_from_camera: Rigid3
    odom_from_camera: Rigid3 | None


class Tracker:
    """Thread-safe: a node's worker calls ``process`` while ``lose``, ``seed`` and ``reset`` come from
    its executor."""

    def __init__(self, localizer: Localizer, config: TrackingConfig | dict | None = None):
        self.localizer = localizer
        self.config = from_dict(TrackingConfig, config)
        self.motion_gate = MotionGate(self.config.motion_gate)
        self.map_odom = MapOdomFilter(self.config.fusion)
        self._lock = threading.Lock()
        self._generation = 0  # bumped by lose / seed / reset: a frame localized meanwhile is stale
        self.reset(localizer)

    @property
    def state(self) -> TrackingState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    def reset(self, localizer: Localizer | None = None, reason: str = "waiting for the first pose") -> None:
        """Start over (a new map): ``INITIALIZING``, no prior."""
        with self._lock:
            if localizer is not None:
                self.localizer = localizer
            self._forget(TrackingState.INITIALIZING, reason)

    def lose(self, reason: str) -> None:
        """Go ``LOST`` now: drop the prior and the odometry gate's memory; the next frames search globally."""
        with self._lock:
            self._forget(TrackingState.LOST, reason)

    def seed(self, world_from_camera: Rigid3, stamp: float, odom_from_camera: Rigid3 | None = None) -> None:
        """A prior from outside (``/initialpose``): guided matching tries it first. The state is kept
        until a pose is published; the odometry gate forgets its memory, as the seed says the old
        map -> odom no longer holds."""
        with self._lock:
            self._generation += 1
            self._fix, self._previous_fix = _Fix(stamp, world_from_camera, odom_from_camera), None
            self.motion_gate.reset()
            self.map_odom.reset()

    def _forget(self, state: TrackingState, reason: str) -> None:
        self._generation += 1
        self._state, self._reason = state, reason
        self._fix: _Fix | None = None
        self._previous_fix: _Fix | None = None  # the fix before, for the camera's velocity
        self._failures = 0
        self.motion_gate.reset()
        self.map_odom.reset()

    def prior(self, stamp: float, odom_from_camera: Rigid3 | None) -> Rigid3 | None:
        """The camera pose predicted at ``stamp`` from the last fix, or None when there is none to trust."""
        return self._predict(stamp, odom_from_camera)[0]

    def _predict(self, stamp: float, odom_from_camera: Rigid3 | None) -> tuple[Rigid3 | None, bool]:
        """(``prior``, whether odometry carried it): odometry carries the last fix;
        without odometry the camera keeps the velocity of the last two fixes (ORB-SLAM's motion model)
        when they are recent, else it is assumed where it was."""
        fix, previous = self._fix, self._previous_fix
        if not self.config.use_prior or fix is None:
            return None, False
        with_odometry = odom_from_camera is not None and fix.odom_from_camera is not None
        age = stamp - fix.stamp
        max_age = self.config.max_prior_age_with_odometry_s if with_odometry else self.config.max_prior_age_s
        if not 0.0 <= age <= max_age:
            return None, False
        if with_odometry:
            return fix.world_from_camera @ fix.odom_from_camera.inverse() @ odom_from_camera, True
        if previous is not None and 0.0 < fix.stamp - previous.stamp <= self.config.max_prior_age_s:
            motion = previous.world_from_camera.inverse() @ fix.world_from_camera
            steps = age / (fix.stamp - previous.stamp)
            return fix.world_from_camera @ interpolate_pose(Rigid3(), motion, steps), False
        return fix.world_from_camera, False

    def process(
        self, stamp: float, image: np.ndarray, camera: Camera, odom_from_camera: Rigid3 | None = None
    ) -> TrackingStep:
        """Localize the frame taken at ``stamp`` (seconds) and update the state."""
        with self._lock:
            generation, localizer = self._generation, self.localizer
            prior, by_odometry = self._predict(stamp, odom_from_camera)
        result = localizer.localize(image, camera, prior, by_odometry)
        with self._lock:
            if generation != self._generation and result.guided:
                # Guided by a prior that lose / seed / reset has since withdrawn.
                return TrackingStep(result, self._state, self._reason, False)
            held_back = ""
            if result.ok and odom_from_camera is not None:
                held_back = self.motion_gate.check(result.world_from_camera, odom_from_camera)
            if result.ok and not held_back:
                self._published(stamp, result, odom_from_camera)
                fusion = None
                if odom_from_camera is not None:
                    fusion = self.map_odom.update(stamp, result.world_from_camera, result.covariance, odom_from_camera)
                return TrackingStep(result, self._state, self._reason, True, fusion=fusion)
            self._failed(held_back or result.reason)
            return TrackingStep(result, self._state, self._reason, False, held_back)

    def _published(self, stamp: float, result: LocalizationResult, odom_from_camera: Rigid3 | None) -> None:
        self._previous_fix, self._fix = self._fix, _Fix(stamp, result.world_from_camera, odom_from_camera)
        self._failures = 0
        how = "guided by the prior" if result.guided else "found by the global search"
        if self._state in (TrackingState.INITIALIZING, TrackingState.LOST):
            self._state, self._reason = TrackingState.RELOCALIZED, f"first pose since {self._state.value}, {how}"
        else:
            self._state, self._reason = TrackingState.TRACKING, f"pose {how}"

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._state in (TrackingState.TRACKING, TrackingState.RELOCALIZED):
            if self._failures >= self.config.lost_after_failures:
                self._forget(TrackingState.LOST, f"no pose for {self._failures} frames: {reason}")
            else:
                self._reason = f"no pose for {self._failures} frame(s): {reason}"
        else:
            self._reason = f"{self._failures} frame(s) without a pose: {reason}"
