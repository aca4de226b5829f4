"""Absolute pose from 2D-3D correspondences: LO-RANSAC PnP + refinement, and covariance.

poselib does the LO-RANSAC and the nonlinear refinement: at 70 % outliers it is ~3x faster than
pycolmap's estimator on the same correspondences (docs/decisions.md), and this runs on every frame.
On a GPU (``PoseConfig.device``) ``pose_torch`` solves a batch of P3P samples at once and scores them
all against all correspondences in one pass; the covariance is the same CPU code for both.

Keypoints arrive undistorted (``Camera.undistort_points``), so the solver sees a pinhole camera.

Covariance follows ROS ``PoseWithCovariance``: parameters (x, y, z, rx, ry, rz) where x, y, z
perturb the camera position in the world frame and rx, ry, rz are small rotations about the
world's fixed axes applied on the left of ``world_from_camera.rotation``. It is
``sigma^2 (J^T J)^-1`` with J the Jacobian of the inlier reprojection residuals with respect to
those parameters and sigma^2 the residual variance of the refined pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import from_dict
from .geometry import Camera, Rigid3
from .pose_torch import ransac_pnp_torch


@dataclass(frozen=True)
class PoseConfig:
    ransac_max_error_px: float = 4.0
    ransac_confidence: float = 0.9999
    ransac_max_iterations: int = 10000
    ransac_min_iterations: int = 20
    # poselib runs 3x the iterations the confidence bound asks for, a margin plain RANSAC needs
    # because an all-inlier sample can still give a poor pose. Local optimisation (poselib's LO)
    # mends such poses, so 1x gives the same poses in about a third of the iterations
    # (docs/decisions.md).
    ransac_trials_multiplier: float = 1.0
    # PROSAC: draw samples from the best-ranked correspondences first (callers pass them sorted,
    # best first); a good pose turns up in far fewer iterations than with uniform sampling.
    progressive_sampling: bool = True
    # Levenberg-Marquardt iterations of the final refinement, which starts from LO's pose: 5 give the
    # same poses as poselib's 100 on the sim queries; 10 keeps a margin.
    refinement_max_iterations: int = 10
    min_correspondences: int = 6
    # "cpu": poselib's LO-RANSAC; "cuda": batched P3P RANSAC scored on the GPU (``pose_torch``) with
    # ``gpu_hypotheses`` samples drawn at once; "auto": cuda where there is a GPU.
    device: str = "cpu"
    gpu_hypotheses: int = 2048


@dataclass
class PoseEstimate:
    world_from_camera: Rigid3
    inlier_mask: np.ndarray  # (N,) bool over the given correspondences
    covariance: np.ndarray  # (6, 6), see module docstring
    residual_rms_px: float

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())


def reprojection_residuals(world_from_camera: Rigid3, points2d, points3d, camera: Camera) -> np.ndarray:
    """(N, 2) projected minus observed pixels (pinhole; points behind the camera give inf)."""
    pixels, in_front = camera.pinhole().project(world_from_camera.inverse().transform(points3d))
    residuals = pixels - np.asarray(points2d, dtype=np.float64)
    residuals[~in_front] = np.inf
    return residuals


def pose_covariance(world_from_camera: Rigid3, points3d, camera: Camera, residuals: np.ndarray) -> np.ndarray:
    """6x6 covariance of (position, world-axis rotation) from the reprojection Jacobian at the
    inliers ``points3d`` whose (N, 2) pixel ``residuals`` the pose leaves."""
    rotation_cw = world_from_camera.rotation.T
    x, y, z = ((np.asarray(points3d, dtype=np.float64) - world_from_camera.translation) @ rotation_cw.T).T
    # d(pixel)/d(camera-frame point) P is the textbook pinhole row; with d(point)/d(position) = -R_cw
    # and d(point)/d(rotation) = [point]x R_cw the Jacobian is [P, P [point]x] diag(-R_cw, R_cw),
    # so the 6x6 information needs one (N, 6) product instead of N small matrix products.
    inverse_z = 1.0 / z
    u, v = x * inverse_z, y * inverse_z
    zero = np.zeros_like(z)
    rows_x = camera.fx * np.stack([inverse_z, zero, -u * inverse_z, u * v, -1.0 - u * u, v], axis=1)
    rows_y = camera.fy * np.stack([zero, inverse_z, -v * inverse_z, 1.0 + v * v, -u * v, -u], axis=1)
    to_world = np.zeros((6, 6))
    to_world[:3, :3] = -rotation_cw
    to_world[3:, 3:] = rotation_cw
    information = to_world.T @ (rows_x.T @ rows_x + rows_y.T @ rows_y) @ to_world
    residuals = residuals.reshape(-1)
    variance = float(residuals @ residuals) / max(len(residuals) - 6, 1)
    try:
        covariance = variance * np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return np.full((6, 6), np.inf)
    return 0.5 * (covariance + covariance.T)


def estimate_pose(points2d, points3d, camera: Camera, config: PoseConfig | dict | None = None) -> PoseEstimate | None:
    """LO-RANSAC + refinement; None when no pose could be estimated. Correspondences sorted best first
    make progressive sampling effective (the search returns them so)."""
    import poselib

    config = from_dict(PoseConfig, config)
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    if len(points2d) != len(points3d):
        raise ValueError(f"{len(points2d)} 2D points but {len(points3d)} 3D points")
    if len(points2d) < config.min_correspondences:
        return None
    device = config.device
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown pose device {device!r}; expected 'auto', 'cpu' or 'cuda'")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        found = ransac_pnp_torch(
            points2d, points3d, (camera.fx, camera.fy, camera.cx, camera.cy),
            max_error_px=config.ransac_max_error_px, num_hypotheses=config.gpu_hypotheses, device="cuda",
            min_inliers=config.min_correspondences, progressive=config.progressive_sampling,
            refinement_iterations=config.refinement_max_iterations,
        )  # fmt: skip
        if found is None:
            return None
        rotation, translation, inliers = found
        return _estimate(Rigid3(rotation, translation).inverse(), inliers, points2d, points3d, camera, config)
    ransac = {
        "max_reproj_error": config.ransac_max_error_px,
        "min_iterations": config.ransac_min_iterations,
        "max_iterations": config.ransac_max_iterations,
        "dyn_num_trials_mult": config.ransac_trials_multiplier,
        "success_prob": config.ransac_confidence,
        "progressive_sampling": config.progressive_sampling,
    }
    refinement = {"max_iterations": config.refinement_max_iterations}
    pinhole = {
        "model": "PINHOLE",
        "width": camera.width,
        "height": camera.height,
        "params": [camera.fx, camera.fy, camera.cx, camera.cy],
    }
    camera_from_world, info = poselib.estimate_absolute_pose(points2d, points3d, pinhole, ransac, refinement)
    if not np.all(np.isfinite(camera_from_world.t)):
        return None
    world_from_camera = Rigid3(camera_from_world.R, camera_from_world.t).inverse()
    return _estimate(world_from_camera, np.asarray(info["inliers"], dtype=bool), points2d, points3d, camera, config)


def _estimate(world_from_camera: Rigid3, inliers, points2d, points3d, camera: Camera, config: PoseConfig):
    """The PoseEstimate of a solver's pose and inliers, None when too few inliers support it."""
    if inliers.sum() < config.min_correspondences:
        return None
    residuals = reprojection_residuals(world_from_camera, points2d[inliers], points3d[inliers], camera)
    covariance = pose_covariance(world_from_camera, points3d[inliers], camera, residuals)
    return PoseEstimate(world_from_camera, inliers, covariance, float(np.sqrt(np.mean(np.sum(residuals**2, axis=1)))))
