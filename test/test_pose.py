"""PnP pose and its covariance (``vloc_ros.pose``) on exactly known correspondences."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Camera, Rigid3, pose_error
from vloc_ros.pose import estimate_pose, pose_covariance, reprojection_residuals

CAMERA = Camera(640, 480, 500.0, 510.0, 320.0, 240.0)


def _scene(seed: int, num_points: int = 300, outlier_fraction: float = 0.0):
    """A camera looking at points 2-8 m ahead; pixels with 0.5 px noise, some replaced by outliers."""
    rng = np.random.default_rng(seed)
    world_from_camera = Rigid3(Rotation.random(random_state=seed).as_matrix(), rng.uniform(-5, 5, 3))
    pixels = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (num_points, 2))
    depths = rng.uniform(2.0, 8.0, num_points)
    rays = np.column_stack([(pixels - [CAMERA.cx, CAMERA.cy]) / [CAMERA.fx, CAMERA.fy], np.ones(num_points)])
    points3d = world_from_camera.transform(rays * depths[:, None])
    observed = pixels + rng.normal(0.0, 0.5, pixels.shape)
    outliers = rng.random(num_points) < outlier_fraction
    observed[outliers] = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (outliers.sum(), 2))
    return world_from_camera, observed, points3d, outliers


def _perturbed(pose: Rigid3, parameters: np.ndarray) -> Rigid3:
    """The pose moved by the covariance's parameters: world-frame position, then world-axis rotation."""
    rotation = Rotation.from_rotvec(parameters[3:]).as_matrix() @ pose.rotation
    return Rigid3(rotation, pose.translation + parameters[:3])


def test_covariance_matches_finite_difference_jacobian():
    world_from_camera, observed, points3d, _ = _scene(seed=3)
    residuals = reprojection_residuals(world_from_camera, observed, points3d, CAMERA)
    step = 1e-6
    jacobian = np.column_stack(
        [
            (
                reprojection_residuals(_perturbed(world_from_camera, step * unit), observed, points3d, CAMERA)
                - reprojection_residuals(_perturbed(world_from_camera, -step * unit), observed, points3d, CAMERA)
            ).ravel()
            / (2 * step)
            for unit in np.eye(6)
        ]
    )
    variance = residuals.ravel() @ residuals.ravel() / (residuals.size - 6)
    expected = variance * np.linalg.inv(jacobian.T @ jacobian)
    covariance = pose_covariance(world_from_camera, points3d, CAMERA, residuals)
    np.testing.assert_allclose(covariance, expected, rtol=1e-4, atol=1e-12 * np.abs(expected).max())


def test_pose_and_inliers_under_outliers():
    world_from_camera, observed, points3d, outliers = _scene(seed=5, num_points=600, outlier_fraction=0.6)
    estimate = estimate_pose(observed, points3d, CAMERA)
    translation_error, rotation_error = pose_error(estimate.world_from_camera, world_from_camera)
    assert translation_error < 0.02 and rotation_error < 0.2
    # Nearly all true matches kept; a random outlier lands within 4 px now and then.
    assert estimate.inlier_mask[~outliers].mean() > 0.98
    assert estimate.inlier_mask[outliers].mean() < 0.02
    assert 0.3 < estimate.residual_rms_px < 1.0  # the 0.5 px noise, per axis -> ~0.7 px
    # The covariance says the truth is within a few sigma.
    sigma = np.sqrt(np.diag(estimate.covariance))
    assert np.all(np.abs(estimate.world_from_camera.translation - world_from_camera.translation) < 5 * sigma[:3])


def test_too_few_correspondences_give_no_pose():
    _, observed, points3d, _ = _scene(seed=7, num_points=5)
    assert estimate_pose(observed, points3d, CAMERA) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the pose's GPU RANSAC)")
def test_gpu_ransac_agrees_with_poselib():
    world_from_camera, observed, points3d, outliers = _scene(seed=5, num_points=600, outlier_fraction=0.6)
    on_cpu = estimate_pose(observed, points3d, CAMERA)
    on_gpu = estimate_pose(observed, points3d, CAMERA, {"device": "cuda"})
    translation_error, rotation_error = pose_error(on_gpu.world_from_camera, world_from_camera)
    assert translation_error < 0.02 and rotation_error < 0.2
    assert np.mean(on_gpu.inlier_mask == on_cpu.inlier_mask) > 0.99
    assert on_gpu.inlier_mask[outliers].mean() < 0.02


def test_rigid_dict_round_trip():
    pose = Rigid3.from_quaternion([0.1, -0.2, 0.3, 0.9], [1.5, -3.25, 0.5])
    data = pose.to_dict()
    assert set(data) == {"translation", "quaternion_xyzw"} and data["translation"] == [1.5, -3.25, 0.5]
    assert Rigid3.from_dict(data).matrix == pytest.approx(pose.matrix, abs=1e-12)
