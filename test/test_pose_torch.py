"""Batched torch RANSAC PnP (``vloc_ros.pose_torch``) against the truth and against poselib."""

import numpy as np
import poselib
import pytest
import torch
from scipy.spatial.transform import Rotation

from vloc_ros.pose_torch import p3p, ransac_pnp_torch, solve_quartic

WIDTH, HEIGHT = 640, 480
CAMERA_PARAMS = (525.0, 525.0, 319.5, 239.5)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _scene(seed: int, num_points: int, outlier_fraction: float):
    """A camera looking at points 2-8 m ahead; pixels with 0.5 px noise, a random subset replaced by
    outliers. Returns camera_from_world (R, t), pixels, world points and the true outlier mask."""
    rng = np.random.default_rng(seed)
    fx, fy, cx, cy = CAMERA_PARAMS
    rotation = Rotation.random(random_state=seed).as_matrix()
    translation = rng.uniform(-5, 5, 3)
    pixels = rng.uniform([0, 0], [WIDTH, HEIGHT], (num_points, 2))
    depths = rng.uniform(2.0, 8.0, num_points)
    camera_points = np.column_stack([(pixels - [cx, cy]) / [fx, fy], np.ones(num_points)]) * depths[:, None]
    points3d = (camera_points - translation) @ rotation
    observed = pixels + rng.normal(0.0, 0.5, pixels.shape)
    outliers = np.zeros(num_points, dtype=bool)
    outliers[rng.permutation(num_points)[: round(outlier_fraction * num_points)]] = True
    observed[outliers] = rng.uniform([0, 0], [WIDTH, HEIGHT], (outliers.sum(), 2))
    return rotation, translation, observed, points3d, outliers


def _rotation_error_deg(rotation, expected) -> float:
    return float(np.degrees(Rotation.from_matrix(rotation @ expected.T).magnitude()))


def _poselib(observed, points3d):
    fx, fy, cx, cy = CAMERA_PARAMS
    camera = {"model": "PINHOLE", "width": WIDTH, "height": HEIGHT, "params": [fx, fy, cx, cy]}
    ransac = {"max_reproj_error": 4.0, "dyn_num_trials_mult": 1.0, "progressive_sampling": True}
    pose, info = poselib.estimate_absolute_pose(observed, points3d, camera, ransac, {"max_iterations": 10})
    return pose.R, pose.t, np.asarray(info["inliers"], dtype=bool)


def test_quartic_roots_are_roots():
    generator = torch.Generator().manual_seed(0)
    roots = torch.randn(500, 4, generator=generator, dtype=torch.float64)
    # Coefficients of (x - r1)(x - r2)(x - r3)(x - r4), ordered from x^4 down.
    coefficients = torch.ones(500, 1, dtype=torch.float64)
    for i in range(4):
        shifted = torch.cat([coefficients, torch.zeros(500, 1, dtype=torch.float64)], 1)
        shifted[:, 1:] -= roots[:, i : i + 1] * coefficients
        coefficients = shifted
    found = solve_quartic(coefficients)
    distances = (found[:, :, None] - roots[:, None, :].to(found.dtype)).abs()
    assert distances.min(1).values.max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_p3p_solutions_include_the_truth_on_exact_data(dtype):
    rng = np.random.default_rng(1)
    batch = 1000
    rotations = Rotation.random(batch, random_state=1).as_matrix()
    translations = rng.uniform(-1, 1, (batch, 3))
    camera_points = rng.uniform([-2, -2, 2], [2, 2, 8], (batch, 3, 3))
    world_points = np.einsum("bji,bnj->bni", rotations, camera_points - translations[:, None])
    bearings = camera_points / np.linalg.norm(camera_points, axis=-1, keepdims=True)
    solved_rotations, solved_translations, valid = p3p(
        torch.tensor(bearings, dtype=dtype), torch.tensor(world_points, dtype=dtype)
    )
    assert valid.sum(1).max() <= 4
    rotation_errors = (torch.tensor(rotations)[:, None] - solved_rotations.double()).abs().amax((-1, -2)).numpy()
    translation_errors = (torch.tensor(translations)[:, None] - solved_translations.double()).norm(dim=-1).numpy()
    errors = np.where(valid.numpy(), np.maximum(rotation_errors, translation_errors), np.inf).min(1)
    if dtype == torch.float64:
        # A few samples sit on a double root where the truth blurs; the rest are exact.
        assert np.mean(errors < 1e-6) > 0.995
    else:
        # float32 loses the truth in a large share of samples: why ransac_pnp_torch solves P3P in float64.
        assert np.mean(errors < 1e-3) < 0.9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outlier_fraction", [0.0, 0.5, 0.8])
@pytest.mark.parametrize("num_points", [100, 1000, 3000])
def test_pose_and_inliers_match_truth_and_poselib(device, num_points, outlier_fraction):
    seed = num_points + int(100 * outlier_fraction)
    rotation, translation, observed, points3d, outliers = _scene(seed, num_points, outlier_fraction)
    result = ransac_pnp_torch(observed, points3d, CAMERA_PARAMS, seed=seed, device=device)
    assert result is not None
    estimated_rotation, estimated_translation, inliers = result
    camera_center = -rotation.T @ translation
    estimated_center = -estimated_rotation.T @ estimated_translation
    depth = np.median((points3d @ rotation.T + translation)[:, 2])
    assert _rotation_error_deg(estimated_rotation, rotation) < 0.5
    assert np.linalg.norm(estimated_center - camera_center) < 0.01 * depth
    assert np.mean(inliers == ~outliers) >= 0.95

    poselib_rotation, _, poselib_inliers = _poselib(observed, points3d)
    assert _rotation_error_deg(estimated_rotation, poselib_rotation) < 0.1
    assert abs(int(inliers.sum()) - int(poselib_inliers.sum())) <= 0.02 * poselib_inliers.sum()


def test_same_seed_gives_the_same_pose():
    _, _, observed, points3d, _ = _scene(3, 500, 0.5)
    first = ransac_pnp_torch(observed, points3d, CAMERA_PARAMS, seed=7)
    second = ransac_pnp_torch(observed, points3d, CAMERA_PARAMS, seed=7)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[2], second[2])


def test_second_hypothesis_finds_the_other_pose_among_the_leftovers():
    """Verification's second RANSAC runs on the correspondences the first pose leaves."""
    first_rotation, first_translation, observed_a, points_a, _ = _scene(11, 400, 0.0)
    second_rotation, second_translation, observed_b, points_b, _ = _scene(12, 200, 0.0)
    observed, points3d = np.concatenate([observed_a, observed_b]), np.concatenate([points_a, points_b])
    rotation, _, inliers = ransac_pnp_torch(observed, points3d, CAMERA_PARAMS)
    assert _rotation_error_deg(rotation, first_rotation) < 0.5
    leftover = ~inliers
    rotation, _, second_inliers = ransac_pnp_torch(observed[leftover], points3d[leftover], CAMERA_PARAMS)
    assert _rotation_error_deg(rotation, second_rotation) < 0.5
    assert leftover[400:].all() and second_inliers[-200:].mean() > 0.95


@pytest.mark.parametrize("device", DEVICES)
def test_degenerate_input_gives_none(device):
    _, _, observed, points3d, _ = _scene(5, 50, 0.0)
    assert ransac_pnp_torch(observed[:3], points3d[:3], CAMERA_PARAMS, device=device, min_inliers=3) is None
    line = np.linspace([0.0, 0.0, 4.0], [1.0, 0.5, 6.0], 50)
    pixels = line[:, :2] / line[:, 2:] * 525.0 + [319.5, 239.5]
    assert ransac_pnp_torch(pixels, line, CAMERA_PARAMS, device=device) is None
    rng = np.random.default_rng(0)
    noise_pixels = rng.uniform([0, 0], [WIDTH, HEIGHT], (50, 2))
    assert ransac_pnp_torch(noise_pixels, rng.uniform(-5, 5, (50, 3)), CAMERA_PARAMS, device=device) is None
