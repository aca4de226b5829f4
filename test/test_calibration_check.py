"""A valid but wrong CameraInfo: the focal fit recovers a known focal length error, the localizer refuses
to publish with a "calibration mismatch" reason, and the right calibration still localizes."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Camera, Rigid3, pose_error
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.map_format import load_map
from vloc_ros.pose import estimate_pose
from test_verification import evidence
from vloc_ros.verification import VerificationConfig, decide, focal_scale_fit

MISMATCH = "verification: calibration mismatch"
CAMERA = Camera(640, 480, 500.0, 500.0, 319.5, 239.5)


def synthetic_correspondences(seed=0, count=600, outlier_share=0.3, noise_px=0.7):
    """(pixels, points3d) seen by CAMERA from a known pose: a scene 3-9 m deep, a share of wrong matches."""
    rng = np.random.default_rng(seed)
    world_from_camera = Rigid3(Rotation.from_euler("xyz", [5, -20, 3], degrees=True).as_matrix(), [0.4, -0.2, 1.0])
    depth = rng.uniform(3.0, 9.0, count)
    pixels = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (count, 2))
    local = np.column_stack([(pixels - [CAMERA.cx, CAMERA.cy]) / CAMERA.fx * depth[:, None], depth])
    points3d = world_from_camera.transform(local)
    observed = pixels + rng.normal(0.0, noise_px, pixels.shape)
    wrong = rng.random(count) < outlier_share
    observed[wrong] = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (wrong.sum(), 2))
    return observed, points3d


@pytest.mark.parametrize("focal_factor", [2.0, 0.5, 1.25])
def test_focal_fit_recovers_a_known_focal_scale(focal_factor):
    observed, points3d = synthetic_correspondences()
    wrong = replace(CAMERA, fx=CAMERA.fx * focal_factor, fy=CAMERA.fy * focal_factor)
    estimate = estimate_pose(observed, points3d, wrong)  # the pose PnP makes of the wrong focal length
    fit = focal_scale_fit(
        estimate.world_from_camera, estimate.inlier_mask, observed, points3d, wrong, 4.0, VerificationConfig()
    )
    print(
        f"focal x{focal_factor}: scale {fit.scale:.4f} (expected {1 / focal_factor:.4f}), z {fit.z:.0f}, "
        f"cost drop {fit.cost_drop:.0f}"
    )
    assert fit.scale == pytest.approx(1 / focal_factor, rel=0.02)
    assert abs(fit.z) > 2 * VerificationConfig().min_focal_scale_z
    assert fit.cost_drop > 2 * VerificationConfig().min_focal_scale_cost_drop


def test_focal_fit_leaves_the_right_focal_length_alone():
    observed, points3d = synthetic_correspondences(seed=1)
    estimate = estimate_pose(observed, points3d, CAMERA)
    fit = focal_scale_fit(
        estimate.world_from_camera, estimate.inlier_mask, observed, points3d, CAMERA, 4.0, VerificationConfig()
    )
    assert fit.scale == pytest.approx(1.0, abs=0.02)
    assert abs(fit.z) < VerificationConfig().min_focal_scale_z
    assert fit.cost_drop < VerificationConfig().min_focal_scale_cost_drop


def test_calibration_mismatch_needs_scale_significance_and_a_better_fit():
    config = VerificationConfig()
    wrong = dict(focal_scale=0.5, focal_scale_z=-40.0, focal_scale_cost_drop=500.0)
    reason, confidence = decide(evidence(**wrong), config)
    assert reason.startswith("calibration mismatch") and "0.50" in reason and confidence == 0.0
    # It is the cause to report when the wrong calibration also fails other tests.
    assert decide(evidence(**wrong, retrieval_agreement=False, spread=0.1), config)[0].startswith("calibration")
    # Each of the three conditions alone is no evidence: a scale within the bound, a scale the matches
    # hardly pin down, a second optimum that explains the matches no better than the camera does.
    for weak in (dict(focal_scale=1.1), dict(focal_scale_z=-3.0), dict(focal_scale_cost_drop=-20.0)):
        assert decide(evidence(**{**wrong, **weak}), config)[0] == ""


@pytest.mark.parametrize("focal_factor", [2.0, 0.5])
def test_wrong_focal_length_publishes_no_pose_and_says_calibration_mismatch(sim_map, sim_queries, focal_factor):
    camera, queries = sim_queries
    localizer = Localizer(load_map(sim_map))
    wrong = replace(camera, fx=camera.fx * focal_factor, fy=camera.fy * focal_factor)
    results = [localizer.localize(image, wrong) for image, _ in queries]
    reasons = [r.reason for r in results]
    mismatches = sum(reason.startswith(MISMATCH) for reason in reasons)
    print(f"focal x{focal_factor}: {mismatches}/{len(results)} calibration mismatch; e.g. {reasons[0]!r}")
    assert not any(r.ok for r in results), "a pose from a wrong calibration was published"
    assert mismatches >= 0.8 * len(results)
    # The right calibration still localizes, and no frame blames it.
    right = [localizer.localize(image, camera) for image, _ in queries]
    recall = np.mean(
        [r.ok and pose_error(r.world_from_camera, truth)[0] <= 0.05 for r, (_, truth) in zip(right, queries)]
    )
    assert recall >= 0.95
    assert not any(r.reason.startswith(MISMATCH) for r in right)
