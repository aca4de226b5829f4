"""Absolute pose from 2D-3D correspondences: LO-RANSAC PnP + refinement, and covariance.

poselib does the LO-RANSAC and the nonlinear refinement: at 70 % outliers it measured ~3x faster
than pycolmap's estimator on the same correspondences (16 vs 50 ms for 1,500), and this runs on
every frame.

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

from .geometry import Camera, Rigid3

DEFAULT_POSE_CONFIG = {
    "ransac_max_error_px": 4.0,
    "ransac_confidence": 0.9999,
    "ransac_max_iterations": 10000,
    # PROSAC: draw samples from the best-ranked correspondences first (callers pass them sorted,
    # best first); a good pose turns up in far fewer iterations than with uniform sampling.
    "progressive_sampling": True,
    "min_correspondences": 6,
}


@dataclass
class PoseEstimate:
    world_from_camera: Rigid3
    inlier_mask: np.ndarray  # (N,) bool over the given correspondences
    covariance: np.ndarray  # (6, 6), see module docstring
    residual_rms_px: float

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())


def _skew(vectors: np.ndarray) -> np.ndarray:
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    zero = np.zeros_like(x)
    return np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                     np.stack([-y, x, zero], -1)], axis=1)


def reprojection_residuals(world_from_camera: Rigid3, points2d, points3d, camera: Camera) -> np.ndarray:
    """(N, 2) projected minus observed pixels (pinhole; points behind the camera give inf)."""
    pixels, in_front = camera.pinhole().project(world_from_camera.inverse().transform(points3d))
    residuals = pixels - np.asarray(points2d, dtype=np.float64)
    residuals[~in_front] = np.inf
    return residuals


def pose_covariance(world_from_camera: Rigid3, points2d, points3d, camera: Camera) -> np.ndarray:
    """6x6 covariance of (position, world-axis rotation) from the inlier reprojection Jacobian."""
    points3d = np.asarray(points3d, dtype=np.float64)
    rotation_cw = world_from_camera.rotation.T
    offsets = points3d - world_from_camera.translation  # X - C, world frame
    points_camera = offsets @ rotation_cw.T
    x, y, z = points_camera.T
    # d(pixel)/d(point in camera frame), (N, 2, 3)
    d_pixel = np.zeros((len(z), 2, 3))
    d_pixel[:, 0, 0] = camera.fx / z
    d_pixel[:, 0, 2] = -camera.fx * x / z**2
    d_pixel[:, 1, 1] = camera.fy / z
    d_pixel[:, 1, 2] = -camera.fy * y / z**2
    # d(point in camera)/d(position) = -R_cw ; d/d(rotation) = R_cw [X - C]x
    d_position = -np.broadcast_to(rotation_cw, (len(z), 3, 3))
    d_rotation = rotation_cw @ _skew(offsets)
    jacobian = np.concatenate([d_pixel @ d_position, d_pixel @ d_rotation], axis=2).reshape(-1, 6)
    residuals = reprojection_residuals(world_from_camera, points2d, points3d, camera).reshape(-1)
    dof = max(len(residuals) - 6, 1)
    variance = float(residuals @ residuals) / dof
    information = jacobian.T @ jacobian
    try:
        covariance = variance * np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return np.full((6, 6), np.inf)
    return 0.5 * (covariance + covariance.T)


def estimate_pose(points2d, points3d, camera: Camera, config: dict | None = None) -> PoseEstimate | None:
    """LO-RANSAC + refinement; None when no pose could be estimated. Correspondences sorted best first
    make progressive sampling effective (the search returns them so)."""
    import poselib

    config = {**DEFAULT_POSE_CONFIG, **(config or {})}
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    if len(points2d) != len(points3d):
        raise ValueError(f"{len(points2d)} 2D points but {len(points3d)} 3D points")
    if len(points2d) < config["min_correspondences"]:
        return None
    ransac = {"max_reproj_error": config["ransac_max_error_px"],
              "min_iterations": 100,
              "max_iterations": config["ransac_max_iterations"],
              "success_prob": config["ransac_confidence"],
              "progressive_sampling": config["progressive_sampling"]}
    pinhole = {"model": "PINHOLE", "width": camera.width, "height": camera.height,
               "params": [camera.fx, camera.fy, camera.cx, camera.cy]}
    camera_from_world, info = poselib.estimate_absolute_pose(points2d, points3d, pinhole, ransac, {})
    if not np.all(np.isfinite(camera_from_world.t)):
        return None
    world_from_camera = Rigid3(camera_from_world.R, camera_from_world.t).inverse()
    inliers = np.asarray(info["inliers"], dtype=bool)
    if inliers.sum() < config["min_correspondences"]:
        return None
    residuals = reprojection_residuals(world_from_camera, points2d[inliers], points3d[inliers], camera)
    covariance = pose_covariance(world_from_camera, points2d[inliers], points3d[inliers], camera)
    return PoseEstimate(world_from_camera, inliers, covariance,
                        float(np.sqrt(np.mean(np.sum(residuals**2, axis=1)))))
