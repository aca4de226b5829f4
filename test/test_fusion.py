"""The map -> odom filter (vloc_ros.fusion) and the covariance model and calibration (vloc_ros.covariance)."""

from __future__ import annotations

import numpy as np
import pytest

from vloc_ros.covariance import (
    NEES_BAND,
    CovarianceConfig,
    fit_covariance,
    nees,
    nees_summary,
    published_covariance,
    read_calibration,
    write_calibration,
)
from vloc_ros.fusion import FusionOutcome, MapOdomFilter
from vloc_ros.geometry import Rigid3, apply_difference, pose_difference, pose_error
from vloc_ros.sim.scene import yaw_rotation

FIX_SIGMA = np.array([0.03, 0.03, 0.03, np.radians(0.5), np.radians(0.5), np.radians(0.5)])
FIX_COVARIANCE = np.diag(FIX_SIGMA**2)


def noisy_fixes(rng, map_from_odom: Rigid3, odom_poses: list[Rigid3]) -> list[Rigid3]:
    """map_from_camera of each odometry pose, with the fix noise FIX_COVARIANCE says."""
    return [apply_difference(rng.normal(0.0, FIX_SIGMA), map_from_odom @ pose) for pose in odom_poses]


def test_a_still_robot_gets_a_steady_map_to_odom_closer_to_the_truth_than_any_fix():
    rng = np.random.default_rng(0)
    truth = Rigid3(yaw_rotation(30.0), np.array([1.0, 2.0, 0.0]))
    still = [Rigid3(np.eye(3), np.array([0.5, 0.0, 1.2]))] * 60
    fusion = MapOdomFilter()
    fused, per_fix = [], []
    for index, (fix, odom) in enumerate(zip(noisy_fixes(rng, truth, still), still)):
        update = fusion.update(index / 10.0, fix, FIX_COVARIANCE, odom)
        assert update.outcome in (FusionOutcome.STARTED, FusionOutcome.FUSED)
        fused.append(update.map_from_odom)
        per_fix.append(fix @ odom.inverse())
    jitter = np.median([pose_error(a, b)[0] for a, b in zip(fused[31:], fused[30:-1])])
    jitter_per_fix = np.median([pose_error(a, b)[0] for a, b in zip(per_fix[31:], per_fix[30:-1])])
    assert jitter < jitter_per_fix / 5
    assert pose_error(fused[-1], truth)[0] < np.median([pose_error(p, truth)[0] for p in per_fix]) / 2
    # The filter's covariance says how far it may be from the truth.
    assert nees(pose_difference(fused[-1], truth), fusion.covariance) < 22.5


def test_an_outlier_is_gated_and_a_confirmed_jump_restarts_the_filter():
    odom = Rigid3()
    fusion = MapOdomFilter({"reset_after_rejections": 3})
    for index in range(5):
        fusion.update(index * 0.1, Rigid3(), FIX_COVARIANCE, odom)
    jumped = Rigid3(np.eye(3), np.array([1.0, 0.0, 0.0]))  # 33 sigma away
    first = fusion.update(0.5, jumped, FIX_COVARIANCE, odom)
    assert first.outcome is FusionOutcome.REJECTED and first.nees > 100
    assert pose_error(first.map_from_odom, Rigid3())[0] < 1e-9
    assert fusion.update(0.6, jumped, FIX_COVARIANCE, odom).outcome is FusionOutcome.REJECTED
    third = fusion.update(0.7, jumped, FIX_COVARIANCE, odom)
    assert third.outcome is FusionOutcome.STARTED
    assert pose_error(third.map_from_odom, jumped)[0] < 1e-9


def test_odometry_motion_lets_a_fix_move_the_estimate_further():
    """Drift accrues with distance travelled: after 10 m of odometry a fix counts for more than after none."""
    offset = Rigid3(np.eye(3), np.array([0.05, 0.0, 0.0]))
    moved = {}
    for travelled in (0.0, 10.0):
        fusion = MapOdomFilter()
        fusion.update(0.0, Rigid3(), FIX_COVARIANCE, Rigid3())
        odom = Rigid3(np.eye(3), np.array([travelled, 0.0, 0.0]))
        update = fusion.update(1.0, offset @ odom, FIX_COVARIANCE, odom)
        moved[travelled] = update.map_from_odom.translation[0]
    assert 0.0 < moved[0.0] < moved[10.0] < 0.05


def test_fixes_more_precise_than_their_covariance_says_are_weighed_by_their_scatter():
    """A covariance 10x too large in sigma (the shared error an EKF is told about) would make the filter
    trail odometry drift; it scales the fixes' covariance down to their scatter and follows the truth."""
    rng = np.random.default_rng(2)
    truths, fused = [], []
    fusion = MapOdomFilter()
    for index in range(80):
        # map -> odom drifts 0.5 deg and 5 mm per step, as drifting odometry makes it
        truth = Rigid3(yaw_rotation(0.5 * index), np.array([0.005 * index, 0.0, 0.0]))
        odom = Rigid3(np.eye(3), np.array([0.3 * index, 0.0, 1.0]))
        fix = apply_difference(rng.normal(0.0, FIX_SIGMA / 10), truth @ odom)
        fused.append(fusion.update(index * 0.1, fix, FIX_COVARIANCE, odom).map_from_odom)
        truths.append(truth)
    assert fusion.noise_scale < 0.1
    errors = [pose_error(f, t)[1] for f, t in zip(fused[40:], truths[40:])]
    assert np.median(errors) < 0.1, "degrees behind the drifting truth (0.24 without the scaling)"


def test_a_disabled_filter_passes_each_fix_through():
    fusion = MapOdomFilter({"enabled": False})
    fixes = [Rigid3(np.eye(3), np.array([x, 0.0, 0.0])) for x in (0.0, 0.1, -0.2)]
    for index, fix in enumerate(fixes):
        assert pose_error(fusion.update(index, fix, FIX_COVARIANCE, Rigid3()).map_from_odom, fix)[0] < 1e-12


def test_published_covariance_scales_by_confidence_and_adds_the_floors():
    covariance = np.diag([1e-4] * 3 + [1e-6] * 3)
    config = CovarianceConfig(scale=4.0, floor_position=0.01, floor_rotation_deg=0.5)
    floors = np.diag([1e-4] * 3 + [np.radians(0.5) ** 2] * 3)
    assert np.allclose(published_covariance(covariance, 0.5, config), 4.0 * covariance / 0.5 + floors)
    # A pose that barely passed verification is trusted 1 / min_confidence less, not infinitely less.
    assert np.allclose(published_covariance(covariance, 0.0, config), 4.0 * covariance / 0.05 + floors)


def test_fit_recovers_a_consistent_covariance_and_holds_on_new_frames():
    """Frames whose true error is scale x their pose covariance + a floor: the fit makes the NEES
    chi-square(6) on frames it has not seen, where the pose covariance alone is far too small."""
    rng = np.random.default_rng(1)
    truth = CovarianceConfig(scale=50.0, floor_position=0.02, floor_rotation_deg=0.8)

    def frames(count):
        covariances, errors = [], []
        for _ in range(count):
            jacobian = rng.normal(size=(40, 6)) * np.array([300.0] * 3 + [600.0] * 3)
            covariance = np.linalg.inv(jacobian.T @ jacobian)
            covariances.append(covariance)
            errors.append(rng.multivariate_normal(np.zeros(6), published_covariance(covariance, 1.0, truth)))
        return np.array(errors), covariances

    errors, covariances = frames(300)
    fitted = fit_covariance(errors, covariances, [1.0] * len(errors))
    new_errors, new_covariances = frames(300)
    before = nees_summary([nees(e, c) for e, c in zip(new_errors, new_covariances)])
    after = nees_summary([nees(e, published_covariance(c, 1.0, fitted)) for e, c in zip(new_errors, new_covariances)])
    assert before["mean"] > 100
    assert 5.0 < after["mean"] < 7.0 and after["inside_band"] > 0.9
    assert NEES_BAND[0] < after["median"] < NEES_BAND[1]
    with pytest.raises(ValueError, match="too few"):
        fit_covariance(errors[:3], covariances[:3], [1.0] * 3)


def test_calibration_file_round_trips_and_bad_files_say_why(tmp_path):
    config = CovarianceConfig(scale=12.5, floor_position=0.03, floor_rotation_deg=0.7)
    path = tmp_path / "covariance.yaml"
    write_calibration(path, config, "calibrated on a test\nsecond line")
    assert path.read_text().startswith("# calibrated on a test\n# second line\n")
    assert read_calibration(path) == config
    (tmp_path / "other.yaml").write_text("vloc_localizer:\n  ros__parameters:\n    max_rate_hz: 5.0\n")
    with pytest.raises(ValueError, match="not a covariance calibration"):
        read_calibration(tmp_path / "other.yaml")
    (tmp_path / "negative.yaml").write_text(path.read_text().replace("12.5", "-1.0"))
    with pytest.raises(ValueError, match="scale must be positive"):
        read_calibration(tmp_path / "negative.yaml")
