"""KeyframeSelector: the keyframe rule of the map-builder node and `vloc build-map --bag`, without ROS."""

import numpy as np
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Rigid3
from vloc_ros.mapping.keyframes import KeyframeSelector

S = 1_000_000_000  # ns per second


def pose(x: float = 0.0, yaw_deg: float = 0.0) -> Rigid3:
    return Rigid3(Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix(), np.array([x, 0.0, 0.0]))


def test_without_poses_only_the_interval_counts():
    selector = KeyframeSelector(min_interval_s=0.5)
    kept = [t for t in range(0, 2 * S, S // 10) if selector.select(t)]
    assert kept == [0, 5 * S // 10, 10 * S // 10, 15 * S // 10]


def test_with_poses_a_keyframe_needs_the_interval_and_motion_or_rotation():
    selector = KeyframeSelector(min_interval_s=0.5, min_translation_m=0.25, min_rotation_deg=10.0)
    assert selector.select(0, pose())
    assert not selector.accept(S // 4, pose(x=1.0))  # moved, but too soon
    assert not selector.accept(S, pose(x=0.2, yaw_deg=9.0))  # late enough, but hardly moved or turned
    assert selector.accept(S, pose(x=0.25))  # moved enough (the thresholds are inclusive)
    assert selector.accept(S, pose(yaw_deg=10.5))  # turned enough
    assert selector.last == (0, selector.last[1])  # accept only decides


def test_record_sets_the_reference_and_reset_forgets_it():
    selector = KeyframeSelector(min_interval_s=0.5, min_translation_m=0.25, min_rotation_deg=10.0)
    selector.record(0, pose())
    assert not selector.due(S // 10)
    assert selector.due(S // 2)
    selector.record(S, pose(x=1.0))
    assert not selector.moved(pose(x=1.1))
    assert selector.moved(pose(x=1.3))
    selector.reset()
    assert selector.accept(S + 1, pose(x=1.0))


def test_an_unknown_pose_on_either_side_skips_the_motion_check():
    selector = KeyframeSelector(
        min_interval_s=0.0, min_translation_m=10.0, min_rotation_deg=90.0, last=(0, None)
    )  # e.g. a buffer recorded without poses
    assert selector.accept(1, pose())
    selector.record(1, pose())
    assert selector.accept(2, None)
    assert not selector.accept(2, pose(x=1.0))


def test_zero_thresholds_keep_every_frame():
    selector = KeyframeSelector(0.0, 0.0, 0.0)
    assert all(selector.select(t, pose()) for t in range(10))
