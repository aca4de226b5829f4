"""Deciding whether a PnP pose may be published: evidence that does not depend on one scene's scale.

A robot that receives a confidently wrong pose is worse off than one that receives none. Under
repeated structure (identical facades, a colonnade seen from an unmapped side) RANSAC returns
wrong poses with hundreds of inliers, so the inlier count alone cannot decide. The rule here:

1. ``inlier_ratio`` = inliers / correspondences >= ``min_inlier_ratio``: a right pose explains a
   good share of the matches; a pose fitted to a fragment of them does not.
2. ``spread`` = share of the cells of a 4x4 image grid that hold inliers >= ``min_spread``: a
   pose resting on one small patch is poorly constrained and easily wrong.
3. ``second_hypothesis_ratio``: RANSAC again on the correspondences the first pose did not
   explain. When that finds a *different* pose (beyond ``distinct_translation`` x the median inlier
   depth, or ``distinct_rotation_deg``, and reprojecting fewer than ``same_pose_shared_inliers`` of
   the first pose's inliers within twice the RANSAC threshold) supported by >=
   ``max_second_hypothesis_ratio`` of the first one's inliers (and at least
   ``min_second_hypothesis_inliers``), the image fits two places of the map: ambiguous, reject.
   The shared-inlier test tells a rival (another place: it explains none of the first pose's
   inliers) from the same pose fitted less well to a few leftover matches (it explains most).
4. ``retrieval_agreement``: at least one of the keyframes the global descriptor retrieved looks
   the same way as the estimate (within ``max_view_angle_deg``) from nearby (within
   ``max_view_distance`` x the median inlier depth).
5. ``relative_position_sigma`` = largest position standard deviation / median inlier depth
   <= ``max_relative_position_sigma``: the covariance itself says the pose is well constrained.
6. ``focal_scale``: a valid but wrong CameraInfo (focal length off) still gives a PnP pose, one
   moved along the optical axis until the matches fit nearly as well: confidently wrong.
   ``focal_scale_fit`` refits the pose together with a focal length scale to the matches. When
   they call for a focal length more than ``max_focal_scale_error`` off the camera's, the log
   scale is at least ``min_focal_scale_z`` standard deviations of its estimate from 0, and the
   refit explains all matches better than the camera does (``focal_scale_cost_drop`` >=
   ``min_focal_scale_cost_drop``), the pose is rejected with a reason that starts "calibration
   mismatch", before the other tests: a wrong calibration fails them too, but it is the cause.
   A shifted principal point is not tested: one view hardly tells it from a small rotation.

All thresholds are ratios, so one configuration serves a 10 cm object and a 100 m street.
``confidence`` in [0, 1] is the product of how far each ratio clears its bound (1 = comfortably);
the node scales the published covariance by 1 / confidence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from .config import from_dict
from .geometry import Camera, Rigid3, rotation_error_deg
from .pose import PoseConfig, estimate_pose, reprojection_residuals


@dataclass(frozen=True)
class VerificationConfig:
    enabled: bool = True
    # Correspondences are up to 3 per keypoint, so on repetitive texture most are wrong even when the
    # pose is right: right llff_beer poses (floor tiles) explain 0.04-0.10 of them, the wrong one 0.06
    # (it fails the spread and second-hypothesis tests).
    min_inlier_ratio: float = 0.05
    # At least 5 of the 16 cells: 4 (0.25) lets through a wrong llff_beer pose; right poses there
    # cover 0.56-0.94, on templeRing 0.38-0.81.
    min_spread: float = 0.3
    # On the repeated-structure sim right poses have a ratio of 0.0, wrong ones 0.24-0.56.
    max_second_hypothesis_ratio: float = 0.15
    # As many as a published pose needs (LocalizerConfig.min_inliers): fewer arise by chance.
    min_second_hypothesis_inliers: int = 20
    # With PROSAC (correspondences best first) 1000 find every second pose that 10000 do on
    # templeRing and the repeated-structure sim; 300 reject right poses as ambiguous.
    second_hypothesis_max_iterations: int = 1000
    distinct_translation: float = 0.1
    distinct_rotation_deg: float = 5.0
    # Rivals (repeated-structure sim) explain 0 % of the first pose's inliers; the same pose refitted
    # to leftovers 58-92 % (sim queries far off the mapping path, templeRing).
    same_pose_shared_inliers: float = 0.4
    max_view_angle_deg: float = 60.0
    max_view_distance: float = 2.0
    max_relative_position_sigma: float = 0.02
    # The focal fit's rounds re-select the matches within these multiples of the RANSAC threshold:
    # wide at first, because the matches a wrong focal length pushed out are the evidence against it.
    focal_fit_thresholds: tuple[float, ...] = (4.0, 2.0, 1.0)
    focal_fit_iterations: int = 3  # Gauss-Newton steps per round (the dolly parameterization needs 2-3)
    # Matches per round at most (an even spread): the cost stays flat in the number of matches.
    focal_fit_max_points: int = 256
    # Right calibration: published poses refit to 0.89-1.08 (sim, 7-Scenes), on templeRing up to 1.45 (a
    # 10 cm object barely pins the focal length); a focal length off x1.2 refits to 0.83-0.87 (sim).
    max_focal_scale_error: float = 0.15
    # How firmly the matches hold the refit scale. Right calibration, beyond the scale bound: |z| <= 4.8 on
    # published poses, 5-10 on 7-Scenes views of 28-56 inliers; focal length x2 or x0.5: median 66-70.
    min_focal_scale_z: float = 4.0
    # ...and whether the refit explains all matches better (its MSAC-style cost drop, in residual
    # variances): a right pose's second optimum does not (-22 to +3); x2 or x0.5: median 300-440.
    min_focal_scale_cost_drop: float = 4.0


GRID_CELLS = 4
# The start of the rejection reason of rule 6, for callers that count or report it.
CALIBRATION_MISMATCH = "calibration mismatch"


@dataclass
class Evidence:
    num_inliers: int
    inlier_ratio: float
    spread: float
    second_hypothesis_ratio: float  # 0 when the remaining matches give no distinct pose
    retrieval_agreement: bool
    relative_position_sigma: float
    median_depth: float
    focal_scale: float = 1.0  # the focal length the matches call for / the camera's
    focal_scale_z: float = 0.0  # log(focal_scale) / its standard deviation
    focal_scale_cost_drop: float = 0.0  # the focal fit's truncated cost below the camera's, in variances

    def to_dict(self) -> dict:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in self.__dict__.items()}


def inlier_spread(keypoints: np.ndarray, camera: Camera) -> float:
    cells_x = np.clip((keypoints[:, 0] / camera.width * GRID_CELLS).astype(int), 0, GRID_CELLS - 1)
    cells_y = np.clip((keypoints[:, 1] / camera.height * GRID_CELLS).astype(int), 0, GRID_CELLS - 1)
    return len(np.unique(cells_y * GRID_CELLS + cells_x)) / GRID_CELLS**2


def second_hypothesis_ratio(
    first: Rigid3,
    first_inliers: np.ndarray,
    points2d,
    points3d,
    explained: np.ndarray,
    camera: Camera,
    pose_config: PoseConfig,
    median_depth: float,
    config: VerificationConfig,
) -> float:
    """Support of the best pose among the unexplained correspondences that differs from ``first``
    (fitted to the correspondences ``first_inliers``), relative to the first pose's support."""
    remaining = ~explained
    # The second pose's share of the *leftover* matches can be small (templeRing: ~7 %), so
    # RANSAC runs to its iteration budget here: that budget is most of the verification's cost.
    pose_config = replace(pose_config, ransac_max_iterations=config.second_hypothesis_max_iterations)
    second = estimate_pose(points2d[remaining], points3d[remaining], camera, pose_config)
    if second is None or second.num_inliers < config.min_second_hypothesis_inliers:
        return 0.0
    moved = np.linalg.norm(second.world_from_camera.translation - first.translation)
    turned = rotation_error_deg(second.world_from_camera.rotation, first.rotation)
    if moved <= config.distinct_translation * median_depth and turned <= config.distinct_rotation_deg:
        return 0.0  # the same pose again, from other points: support, not ambiguity
    residuals = reprojection_residuals(
        second.world_from_camera, points2d[first_inliers], points3d[first_inliers], camera
    )
    shared = np.mean(np.linalg.norm(residuals, axis=1) < 2 * pose_config.ransac_max_error_px)
    if shared >= config.same_pose_shared_inliers:
        return 0.0  # the same pose, fitted less well to a few leftovers
    return second.num_inliers / max(int(first_inliers.sum()), 1)


def retrieval_agrees(
    estimate: Rigid3, retrieved: list[Rigid3], median_depth: float, config: VerificationConfig
) -> bool:
    axis = estimate.rotation[:, 2]  # optical axis in the world
    for keyframe in retrieved:
        angle = np.degrees(np.arccos(np.clip(axis @ keyframe.rotation[:, 2], -1.0, 1.0)))
        distance = np.linalg.norm(keyframe.translation - estimate.translation)
        if angle <= config.max_view_angle_deg and distance <= config.max_view_distance * median_depth:
            return True
    return False


def _focal_fit_system(state, focal: np.ndarray, world: np.ndarray, observed: np.ndarray, dolly: float):
    """(squared residual sum, residuals, Jacobian) of ``state`` = (camera_from_world rotation,
    translation, focal scale) on ``observed`` pixels relative to the principal point; an infinite
    sum when a point falls behind the camera."""
    rotation, translation, scale = state
    local = world @ rotation.T + translation
    if local[:, 2].min() <= 0:
        return np.inf, None, None
    inverse_depth = 1.0 / local[:, 2]
    u, v = local[:, 0] * inverse_depth, local[:, 1] * inverse_depth
    fx, fy = scale * focal
    count = len(u)
    residuals = np.empty(2 * count)
    residuals[:count] = fx * u - observed[:, 0]
    residuals[count:] = fy * v - observed[:, 1]
    # Columns: rotation and translation increments in the camera frame, then the log focal scale
    # with its dolly: the camera moves (e^s - 1) x ``dolly`` (the median depth) along its axis.
    jacobian = np.zeros((2 * count, 7))
    x_rows, y_rows = jacobian[:count], jacobian[count:]
    uv = u * v
    x_rows[:, 0] = -fx * uv
    x_rows[:, 1] = fx * (1 + u * u)
    x_rows[:, 2] = -fx * v
    x_rows[:, 3] = fx * inverse_depth
    x_rows[:, 5] = -fx * u * inverse_depth
    y_rows[:, 0] = -fy * (1 + v * v)
    y_rows[:, 1] = fy * uv
    y_rows[:, 2] = fy * u
    y_rows[:, 4] = fy * inverse_depth
    y_rows[:, 5] = -fy * v * inverse_depth
    shrink = 1 - dolly * inverse_depth
    x_rows[:, 6] = fx * u * shrink
    y_rows[:, 6] = fy * v * shrink
    return float(residuals @ residuals), residuals, jacobian


def _squared_errors(state, focal: np.ndarray, points3d: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(N,) squared reprojection errors of ``state`` (inf behind the camera)."""
    rotation, translation, scale = state
    local = points3d @ rotation.T + translation
    in_front = local[:, 2] > 0
    pixels = scale * focal * local[:, :2] / np.where(in_front, local[:, 2], 1.0)[:, None]
    return np.where(in_front, np.sum((pixels - observed) ** 2, axis=1), np.inf)


@dataclass
class FocalFit:
    scale: float  # the focal length the correspondences call for / the camera's (1: no evidence)
    z: float  # log(scale) / its standard deviation
    cost_drop: float  # how much lower the refit's truncated reprojection cost is, in residual variances


def focal_scale_fit(
    world_from_camera: Rigid3,
    inliers: np.ndarray,
    points2d,
    points3d,
    camera: Camera,
    threshold_px: float,
    config: VerificationConfig | dict,
) -> FocalFit:
    """The scale of the focal length (fx and fy alike, principal point fixed) that with a refitted
    pose best explains the correspondences ``points2d`` (undistorted pixels) <-> ``points3d``.

    Least squares from the PnP pose on its ``inliers``, then in rounds on the correspondences
    within ``config.focal_fit_thresholds`` x ``threshold_px`` of the last fit. A focal length
    error is nearly undone by moving the camera along its optical axis (exactly so for a scene at
    one depth): a long, narrow valley where damped steps crawl. So the focal scale moves the
    camera with it ("dolly"), keeping the image scale at the median depth, and Gauss-Newton
    converges in 2-3 steps. ``z`` is local to the fit's optimum; ``cost_drop`` compares it with
    the PnP pose on every correspondence (squared errors capped at ``threshold_px``, as MSAC
    scores), so an optimum that explains the matches no better than the camera's focal length
    does is no evidence against it.
    """
    config = from_dict(VerificationConfig, config)
    no_evidence = FocalFit(1.0, 0.0, 0.0)
    focal = np.array([camera.fx, camera.fy])
    observed = np.asarray(points2d, dtype=np.float64) - [camera.cx, camera.cy]
    points3d = np.asarray(points3d, dtype=np.float64)
    rotation = world_from_camera.rotation.T
    state = (rotation, -rotation @ world_from_camera.translation, 1.0)
    given_cost = np.minimum(_squared_errors(state, focal, points3d, observed), threshold_px**2).sum()
    selected = inliers
    for limit in [*config.focal_fit_thresholds, None]:
        indices = np.flatnonzero(selected)
        if len(indices) < 8:
            return no_evidence
        indices = indices[np.linspace(0, len(indices) - 1, min(len(indices), config.focal_fit_max_points)).astype(int)]
        world, targets = points3d[indices], observed[indices]
        dolly = float(np.median(world @ state[0][2] + state[1][2]))
        cost, residuals, jacobian = _focal_fit_system(state, focal, world, targets, dolly)
        if jacobian is None:
            return no_evidence
        for _ in range(config.focal_fit_iterations):
            try:
                step = np.linalg.solve(jacobian.T @ jacobian, -jacobian.T @ residuals)
            except np.linalg.LinAlgError:
                return no_evidence
            step[6] = np.clip(step[6], -1.0, 1.0)
            previous_cost = cost
            for _ in range(4):  # halve a step that does not lower the cost
                increment = Rotation.from_rotvec(step[:3]).as_matrix()
                candidate = (
                    increment @ state[0],
                    increment @ state[1] + step[3:6] + [0.0, 0.0, (np.exp(step[6]) - 1.0) * dolly],
                    state[2] * float(np.exp(step[6])),
                )
                system = _focal_fit_system(candidate, focal, world, targets, dolly)
                if system[0] < cost:
                    state, (cost, residuals, jacobian) = candidate, system
                    break
                step *= 0.5
            if cost > (1 - 1e-4) * previous_cost:  # converged
                break
        errors = _squared_errors(state, focal, points3d, observed)
        if limit is not None:
            selected = errors < (limit * threshold_px) ** 2
    variance = cost / max(len(residuals) - 7, 1)
    try:
        sigma = float(np.sqrt(variance * np.linalg.inv(jacobian.T @ jacobian)[6, 6]))
    except np.linalg.LinAlgError:
        return no_evidence
    refit_cost = np.minimum(errors, threshold_px**2).sum()
    return FocalFit(
        state[2], float(np.log(state[2]) / max(sigma, 1e-12)), float((given_cost - refit_cost) / max(variance, 1e-12))
    )


def gather_evidence(
    estimate,
    query_indices,
    points2d,
    points3d,
    camera: Camera,
    retrieved: list[Rigid3],
    pose_config: PoseConfig | dict,
    config: VerificationConfig | dict,
) -> Evidence:
    """Evidence about ``estimate`` (a PoseEstimate) fitted to the correspondences ``points2d`` (undistorted
    pixels of query keypoints ``query_indices``) <-> ``points3d``."""
    pose_config, config = from_dict(PoseConfig, pose_config), from_dict(VerificationConfig, config)
    inliers = estimate.inlier_mask
    pose = estimate.world_from_camera
    depths = pose.inverse().transform(points3d[inliers])[:, 2]
    median_depth = float(np.median(depths))
    sigma = float(np.sqrt(np.max(np.diag(estimate.covariance)[:3])))
    # Correspondences the first pose explains: its inliers and every other candidate of the same
    # keypoints (those keypoints are spoken for).
    explained = np.isin(query_indices, query_indices[inliers])
    focal_fit = focal_scale_fit(pose, inliers, points2d, points3d, camera, pose_config.ransac_max_error_px, config)
    return Evidence(
        num_inliers=int(inliers.sum()),
        inlier_ratio=float(inliers.sum() / len(inliers)),
        spread=inlier_spread(points2d[inliers], camera),
        second_hypothesis_ratio=second_hypothesis_ratio(
            pose, inliers, points2d, points3d, explained, camera, pose_config, median_depth, config
        ),
        retrieval_agreement=retrieval_agrees(pose, retrieved, median_depth, config),
        relative_position_sigma=sigma / max(median_depth, 1e-9),
        median_depth=median_depth,
        focal_scale=focal_fit.scale,
        focal_scale_z=focal_fit.z,
        focal_scale_cost_drop=focal_fit.cost_drop,
    )


# The tests whose failure means too little support for a pose rather than evidence against it
# (another place, a wrong focal length, no keyframe near it): more matches may still vouch for it.
SUPPORT_TESTS = frozenset({"inlier ratio", "inlier spread", "position sigma"})
RETRIEVAL = "retrieval agreement"


def _margins(evidence: Evidence, config: VerificationConfig) -> dict[str, float]:
    """How far each ratio clears its bound (>= 1: passes)."""
    return {
        "inlier ratio": evidence.inlier_ratio / config.min_inlier_ratio,
        "inlier spread": evidence.spread / config.min_spread,
        "second hypothesis": (
            config.max_second_hypothesis_ratio / evidence.second_hypothesis_ratio
            if evidence.second_hypothesis_ratio > 0
            else np.inf
        ),
        "position sigma": config.max_relative_position_sigma / max(evidence.relative_position_sigma, 1e-12),
    }


def _failed_tests(evidence: Evidence, config: VerificationConfig, margins: dict[str, float]) -> list[str]:
    """The tests ``evidence`` fails, in the order ``decide`` reports them. A wrong calibration fails
    the others too (the pose is far from every retrieved keyframe, a second pose turns up), but it is
    the cause to report: alone."""
    if (
        abs(np.log(evidence.focal_scale)) > np.log1p(config.max_focal_scale_error)
        and abs(evidence.focal_scale_z) >= config.min_focal_scale_z
        and evidence.focal_scale_cost_drop >= config.min_focal_scale_cost_drop
    ):
        return [CALIBRATION_MISMATCH]
    failed = [] if evidence.retrieval_agreement else [RETRIEVAL]
    return failed + [name for name, margin in margins.items() if margin < 1.0]


def lacks_support_only(evidence: Evidence, config: VerificationConfig | dict) -> bool:
    """Whether ``evidence`` fails tests, and only those of ``SUPPORT_TESTS``."""
    config = from_dict(VerificationConfig, config)
    failed = _failed_tests(evidence, config, _margins(evidence, config))
    return bool(failed) and SUPPORT_TESTS.issuperset(failed)


def decide(evidence: Evidence, config: VerificationConfig | dict) -> tuple[str, float]:
    """(rejection reason or "" to accept, confidence in [0, 1])."""
    config = from_dict(VerificationConfig, config)
    margins = _margins(evidence, config)
    confidence = float(np.prod([min(1.0, margin / 2.0) for margin in margins.values()]))
    failed = _failed_tests(evidence, config, margins)
    if not failed:
        return "", confidence
    if failed[0] == CALIBRATION_MISMATCH:
        return (
            f"{CALIBRATION_MISMATCH}: the matches call for a focal length {evidence.focal_scale:.2f} x the "
            f"camera's ({abs(evidence.focal_scale_z):.0f} sigma); check the CameraInfo"
        ), 0.0
    if failed[0] == RETRIEVAL:
        return "no retrieved keyframe views the scene from near the estimated pose", 0.0
    details = {
        "inlier ratio": f"inlier ratio {evidence.inlier_ratio:.2f} < {config.min_inlier_ratio}",
        "inlier spread": f"inliers cover {evidence.spread:.2f} of the image < {config.min_spread}",
        "second hypothesis": (
            f"ambiguous: a second, different pose has {evidence.second_hypothesis_ratio:.2f} "
            f"of the inliers (repeated structure?)"
        ),
        "position sigma": (
            f"position sigma {evidence.relative_position_sigma:.3f} x depth > {config.max_relative_position_sigma}"
        ),
    }
    return "; ".join(details[name] for name in failed), 0.0


@dataclass(frozen=True)
class MotionGateConfig:
    # Odometry drifts with distance travelled since the last accepted pose: the allowed change of
    # map -> odom is a floor plus a share of that distance, for position and heading alike.
    max_jump_translation: float = 0.25  # map units
    max_jump_per_distance: float = 0.05
    max_jump_rotation_deg: float = 5.0
    max_jump_rotation_deg_per_distance: float = 3.0
    confirm_frames: int = 3  # consecutive poses that agree with each other to accept a jump


class MotionGate:
    """Temporal consistency with odometry: hold back a pose that jumps against it until confirmed.

    Each localized pose implies ``map_from_odom = map_from_camera @ inverse(odom_from_camera)``.
    Odometry drifts slowly, so consecutive right poses imply nearly the same ``map_from_odom``; a
    wrong pose implies a jump. A jump is accepted only after ``confirm_frames`` consecutive poses
    imply the same new ``map_from_odom`` (the robot was kidnapped, or the old estimate was wrong).

    Thread-safe: the node's worker calls ``check`` while ``reset`` comes from its executor.
    """

    def __init__(self, config: MotionGateConfig | dict | None = None):
        self.config = from_dict(MotionGateConfig, config)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the prior (``~/relocalize``): the next pose is accepted as is."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._accepted: Rigid3 | None = None  # map_from_odom of the last accepted pose
        self._last_odom_position: np.ndarray | None = None
        self._travelled = 0.0  # odometry path length since the last accepted pose
        self._candidates: list[Rigid3] = []

    def _agrees(self, a: Rigid3, b: Rigid3, travelled: float) -> bool:
        config = self.config
        return (
            np.linalg.norm(a.translation - b.translation)
            <= config.max_jump_translation + config.max_jump_per_distance * travelled
            and rotation_error_deg(a.rotation, b.rotation)
            <= config.max_jump_rotation_deg + config.max_jump_rotation_deg_per_distance * travelled
        )

    def check(self, map_from_camera: Rigid3, odom_from_camera: Rigid3) -> str:
        """ "" to publish, else the reason the pose is held back."""
        with self._lock:
            return self._check(map_from_camera, odom_from_camera)

    def _check(self, map_from_camera: Rigid3, odom_from_camera: Rigid3) -> str:
        map_from_odom = map_from_camera @ odom_from_camera.inverse()
        position = odom_from_camera.translation
        if self._last_odom_position is not None:
            self._travelled += float(np.linalg.norm(position - self._last_odom_position))
        self._last_odom_position = position
        if self._accepted is None or self._agrees(map_from_odom, self._accepted, self._travelled):
            self._accept(map_from_odom)
            return ""
        if self._candidates and not self._agrees(map_from_odom, self._candidates[-1], 0.0):
            self._candidates = []
        self._candidates.append(map_from_odom)
        if len(self._candidates) >= self.config.confirm_frames:
            self._accept(map_from_odom)
            return ""
        return f"jump against odometry held back ({len(self._candidates)}/{self.config.confirm_frames} confirmations)"

    def _accept(self, map_from_odom: Rigid3) -> None:
        self._accepted, self._travelled, self._candidates = map_from_odom, 0.0, []
