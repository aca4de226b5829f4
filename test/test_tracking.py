"""Localization over time on the synthetic world: guided matching from a prior, the tracking states,
the prior carried by odometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Rigid3, pose_error
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.map_format import load_map
from vloc_ros.tracking import Tracker, TrackingState


@pytest.fixture(scope="module")
def sim_localizer(sim_map):
    localizer = Localizer(load_map(sim_map), {"profile": "fast"})
    yield localizer
    localizer.close()


def moved(pose: Rigid3, metres: float, degrees: float) -> Rigid3:
    """``pose`` moved sideways by ``metres`` and turned by ``degrees`` about its own y axis (a pan)."""
    turn = Rotation.from_euler("y", degrees, degrees=True).as_matrix()
    return pose @ Rigid3(turn, np.array([metres, 0.0, 0.0]))


def test_guided_matching_from_a_near_prior_gives_the_pose(sim_localizer, sim_queries):
    """A prior a few centimetres and a degree off (a frame's motion) lets guided matching find the pose
    without the candidate search, as accurate as the search's."""
    camera, queries = sim_queries
    for image, truth in queries[:5]:
        searched = sim_localizer.localize(image, camera)
        tracked = sim_localizer.localize(image, camera, prior=moved(truth, 0.05, 1.0))
        assert tracked.ok and tracked.guided and "guided" in tracked.timings and "search" not in tracked.timings
        assert not searched.guided
        distance, degrees = pose_error(tracked.world_from_camera, truth)
        assert distance < 0.05 and degrees < 1.0


def test_a_wrong_prior_falls_back_to_the_search(sim_localizer, sim_queries):
    """A prior metres and tens of degrees off finds no consistent matches near its projections: the
    candidate search runs and gives the right pose; the prior never drags the pose to itself."""
    camera, queries = sim_queries
    for image, truth in queries[:5]:
        result = sim_localizer.localize(image, camera, prior=moved(truth, 3.0, 40.0))
        assert result.ok and not result.guided and "search" in result.timings
        distance, degrees = pose_error(result.world_from_camera, truth)
        assert distance < 0.05 and degrees < 1.0


def test_tracker_states_from_initializing_to_lost_and_back(sim_localizer, sim_queries):
    camera, queries = sim_queries
    tracker = Tracker(sim_localizer, {"lost_after_failures": 3})
    assert tracker.state is TrackingState.INITIALIZING
    blank = np.full_like(queries[0][0], 127)  # no keypoints: never a pose

    first = tracker.process(0.0, queries[0][0], camera)
    assert first.published and first.state is TrackingState.RELOCALIZED and not first.result.guided
    assert "global search" in first.reason
    second = tracker.process(0.1, queries[0][0], camera)  # the camera stands still
    assert second.published and second.state is TrackingState.TRACKING
    assert second.result.guided, "the previous pose guides the next frame"
    assert pose_error(second.result.world_from_camera, queries[0][1])[0] < 0.05

    failures = [tracker.process(0.2 + 0.1 * i, blank, camera) for i in range(3)]
    assert [step.state for step in failures] == [TrackingState.TRACKING] * 2 + [TrackingState.LOST]
    assert not any(step.published for step in failures)
    assert failures[0].reason.startswith("no pose for 1 frame") and "too few keypoints" in failures[-1].reason

    again = tracker.process(0.6, queries[2][0], camera)
    assert again.state is TrackingState.RELOCALIZED and not again.result.guided  # lost: the whole map

    tracker.lose("relocalization requested")
    assert (tracker.state, tracker.reason) == (TrackingState.LOST, "relocalization requested")
    tracker.reset()
    assert tracker.state is TrackingState.INITIALIZING


def test_a_seeded_prior_guides_the_first_frame(sim_localizer, sim_queries):
    """``/initialpose``: a seed near the camera makes the first fix a guided one."""
    camera, queries = sim_queries
    image, truth = queries[3]
    tracker = Tracker(sim_localizer)
    tracker.seed(moved(truth, 0.05, 1.0), stamp=10.0)
    step = tracker.process(10.1, image, camera)
    assert step.published and step.result.guided and step.state is TrackingState.RELOCALIZED
    stale = Tracker(sim_localizer)
    stale.seed(moved(truth, 0.05, 1.0), stamp=10.0)
    assert stale.prior(20.0, None) is None, "a seed without odometry predicts only for max_prior_age_s"


def test_odometry_carries_the_prior():
    """The prior is the last fix's map -> odom applied to the new odom -> camera."""
    tracker = Tracker(localizer=None)  # prior() needs none
    map_from_odom = Rigid3(Rotation.from_euler("z", 30, degrees=True).as_matrix(), np.array([1.0, 2.0, 0.0]))
    odom_then = Rigid3(np.eye(3), np.array([0.5, 0.0, 0.0]))
    odom_now = moved(odom_then, 0.8, 10.0)
    tracker.seed(map_from_odom @ odom_then, stamp=1.0, odom_from_camera=odom_then)
    predicted = tracker.prior(3.0, odom_now)
    assert pose_error(predicted, map_from_odom @ odom_now)[0] < 1e-9
    assert tracker.prior(3.0, None) is None, "without odometry now, a 2 s old fix is too old"
    assert tracker.prior(0.5, odom_now) is None, "a fix newer than the frame predicts nothing"


def test_fixes_with_odometry_are_fused_into_map_to_odom_and_lost_starts_it_over(sim_localizer, sim_queries):
    """Odometry puts the camera in an ``odom`` frame 1 m and 20 deg off the map: the fused map -> odom
    is that offset; going LOST forgets it, and the next fix starts it again."""
    from vloc_ros.fusion import FusionOutcome

    camera, queries = sim_queries
    map_from_odom = Rigid3(Rotation.from_euler("z", 20, degrees=True).as_matrix(), np.array([1.0, 0.0, 0.0]))
    tracker = Tracker(sim_localizer)
    steps = []
    for index in range(3):
        image, truth = queries[index]
        steps.append(tracker.process(0.1 * index, image, camera, map_from_odom.inverse() @ truth))
    assert [step.fusion.outcome for step in steps] == [FusionOutcome.STARTED] + [FusionOutcome.FUSED] * 2
    assert pose_error(steps[-1].map_from_odom, map_from_odom)[0] < 0.02
    without_odometry = tracker.process(0.3, queries[3][0], camera)
    assert without_odometry.published and without_odometry.fusion is None
    tracker.lose("relocalization requested")
    assert tracker.map_odom.map_from_odom is None
    image, truth = queries[4]
    again = tracker.process(0.4, image, camera, map_from_odom.inverse() @ truth)
    assert again.fusion.outcome is FusionOutcome.STARTED


class PosesInOrder:
    """Stands in for the Localizer where only the tracker's arithmetic is under test: each call
    returns the next of the given poses as a verified fix."""

    def __init__(self, poses: list[Rigid3]):
        self.poses = iter(poses)

    def localize(self, image, camera, prior=None, prior_by_odometry=False):
        from vloc_ros.localizer import LocalizationResult, LocalizationStatus

        return LocalizationResult(LocalizationStatus.OK, world_from_camera=next(self.poses), covariance=np.eye(6))


def test_without_odometry_the_prior_keeps_the_velocity_of_the_last_two_fixes():
    """A camera on a constant screw motion (0.1 m and 2 deg per 0.1 s): the prior extrapolates the last
    two fixes onto the next pose exactly, where the last fix alone is a step behind."""
    step = moved(Rigid3(), 0.1, 2.0)
    poses = [Rigid3()]
    for _ in range(3):
        poses.append(poses[-1] @ step)
    tracker = Tracker(PosesInOrder(poses))
    tracker.process(0.0, None, None)
    assert pose_error(tracker.prior(0.1, None), poses[0])[0] < 1e-12, "one fix: no velocity yet"
    tracker.process(0.1, None, None)
    assert pose_error(tracker.prior(0.2, None), poses[2])[0] < 1e-9
    # Frames may be dropped: half a step later is half a step on.
    assert pose_error(tracker.prior(0.15, None), poses[1] @ moved(Rigid3(), 0.05, 1.0))[0] < 1e-9
    assert tracker.prior(0.1 + 0.6, None) is None, "older than max_prior_age_s predicts nothing"
