"""What the localizer node publishes for a camera pose (vloc_ros.publishing), without rclpy: the pose
frame, the lever-arm covariance, the covariance inflation and the TF child per ``publish_tf``."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Rigid3
from vloc_ros.publishing import PUBLISH_TF_MODES, TF_FALLBACK, TF_UNLINKED, covariance_of_attached_frame, publication

MAP_FROM_CAMERA = Rigid3.from_quaternion((0.2, -0.1, 0.4, 0.9), (1.0, 2.0, 0.5))
BASE_FROM_CAMERA = Rigid3.from_quaternion((-0.5, 0.5, -0.5, 0.5), (0.1, 0.0, 1.2))
ODOM_FROM_CAMERA = Rigid3.from_quaternion((0.0, 0.0, 0.3, 0.95), (3.0, -1.0, 1.2))
COVARIANCE = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
COVARIANCE[0, 4] = COVARIANCE[4, 0] = 5e-6
FRAMES = {"map_frame": "map", "camera_frame": "camera_optical", "base_frame": "base_link", "odom_frame": "odom"}


def publish(publish_tf="map_to_odom", **kwargs):
    return publication(MAP_FROM_CAMERA, COVARIANCE, publish_tf=publish_tf, **FRAMES, **kwargs)


def assert_same(a: Rigid3, b: Rigid3):
    np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-12)


def base_jacobian(world_from_camera: Rigid3, base_from_camera: Rigid3) -> np.ndarray:
    """d(base pose parameters) / d(camera pose parameters) (position, small world-axis rotation on the
    left), by central finite differences."""
    camera_from_base = base_from_camera.inverse()

    def base_parameters(delta):
        perturbed = Rigid3(
            Rotation.from_rotvec(delta[3:]).as_matrix() @ world_from_camera.rotation,
            world_from_camera.translation + delta[:3],
        )
        world_from_base = perturbed @ camera_from_base
        rotation = Rotation.from_matrix(world_from_base.rotation @ (world_from_camera @ camera_from_base).rotation.T)
        return np.concatenate([world_from_base.translation, rotation.as_rotvec()])

    step = 1e-6
    return np.stack([(base_parameters(step * e) - base_parameters(-step * e)) / (2 * step) for e in np.eye(6)], axis=1)


def test_covariance_of_attached_frame_matches_finite_differences():
    """The base pose's covariance: the camera's, through the Jacobian of world_from_base w.r.t. the
    camera pose parameters (position, small world-axis rotation on the left), here by finite differences."""
    jacobian = base_jacobian(MAP_FROM_CAMERA, BASE_FROM_CAMERA)
    lever_arm = (MAP_FROM_CAMERA @ BASE_FROM_CAMERA.inverse()).translation - MAP_FROM_CAMERA.translation
    np.testing.assert_allclose(
        covariance_of_attached_frame(COVARIANCE, lever_arm), jacobian @ COVARIANCE @ jacobian.T, atol=1e-10
    )


def test_without_base_tf_the_camera_pose_is_published():
    out = publish()
    assert out.pose_frame == "camera_optical"
    assert_same(out.map_from_pose, MAP_FROM_CAMERA)
    np.testing.assert_allclose(out.covariance, COVARIANCE)  # no lever arm


def test_with_base_tf_the_base_pose_and_its_lever_arm_covariance_are_published():
    out = publish(base_from_camera=BASE_FROM_CAMERA)
    assert out.pose_frame == "base_link"
    assert_same(out.map_from_pose, MAP_FROM_CAMERA @ BASE_FROM_CAMERA.inverse())
    jacobian = base_jacobian(MAP_FROM_CAMERA, BASE_FROM_CAMERA)
    np.testing.assert_allclose(out.covariance, jacobian @ COVARIANCE @ jacobian.T, atol=1e-9)


@pytest.mark.parametrize(
    "mode, child, child_from_camera",
    [
        ("map_to_odom", "odom", ODOM_FROM_CAMERA),
        ("map_to_base", "base_link", BASE_FROM_CAMERA),
        ("map_to_camera", "camera_optical", Rigid3()),
    ],
)
def test_each_publish_tf_mode_with_tf_known(mode, child, child_from_camera):
    out = publish(
        mode,
        base_from_camera=BASE_FROM_CAMERA,
        odom_from_camera=ODOM_FROM_CAMERA,
        camera_parent=lambda: pytest.fail("the camera's parent is asked only when the child is unknown"),
    )
    assert (out.transform.parent, out.transform.child) == ("map", child) and out.tf_issue == ""
    # The transform and the camera's TF to the child give back the camera pose.
    assert_same(out.transform.parent_from_child @ child_from_camera, MAP_FROM_CAMERA)


def test_a_fused_map_to_odom_replaces_the_fix_own_and_only_for_odom():
    fused = Rigid3.from_quaternion((0.0, 0.0, 0.1, 0.99), (0.5, 0.2, 0.0))
    out = publish(odom_from_camera=ODOM_FROM_CAMERA, map_from_odom=fused)
    assert (out.transform.parent, out.transform.child) == ("map", "odom")
    assert_same(out.transform.parent_from_child, fused)
    assert_same(out.map_from_pose, MAP_FROM_CAMERA)  # the pose stays the fix's
    base = publish("map_to_base", base_from_camera=BASE_FROM_CAMERA, map_from_odom=fused)
    assert_same(base.transform.parent_from_child, MAP_FROM_CAMERA @ BASE_FROM_CAMERA.inverse())


def test_publish_tf_none_publishes_no_transform():
    out = publish("none", base_from_camera=BASE_FROM_CAMERA, odom_from_camera=ODOM_FROM_CAMERA)
    assert out.transform is None and out.tf_issue == "" and out.pose_frame == "base_link"


@pytest.mark.parametrize("mode, wanted", [("map_to_odom", "odom"), ("map_to_base", "base_link")])
@pytest.mark.parametrize("camera_parent", [None, "map"])
def test_unknown_child_falls_back_to_map_to_camera(mode, wanted, camera_parent):
    """No TF child -> camera: map -> camera instead, while the camera has no parent but the map."""
    out = publish(mode, camera_parent=camera_parent)
    assert (out.transform.parent, out.transform.child) == ("map", "camera_optical")
    assert_same(out.transform.parent_from_child, MAP_FROM_CAMERA)
    assert out.tf_issue == TF_FALLBACK
    assert out.tf_message == f"no TF {wanted} -> camera_optical; publishing map -> camera_optical instead"


@pytest.mark.parametrize("mode, wanted", [("map_to_odom", "odom"), ("map_to_base", "base_link")])
def test_camera_with_another_parent_gets_no_transform(mode, wanted):
    """A second parent of the camera would break the TF tree: nothing is published, and the node is told why."""
    out = publish(mode, camera_parent=lambda: "camera_mount")
    assert out.transform is None and out.tf_issue == TF_UNLINKED
    assert out.tf_message == (
        f"no TF {wanted} -> camera_optical at the image stamp and the camera has another parent: nothing published"
    )
    assert out.pose_frame == "camera_optical"  # the pose itself is still published
    # map -> camera is asked for explicitly: published whatever the camera's parent.
    assert publish("map_to_camera", camera_parent="camera_mount").transform.child == "camera_optical"


def test_unknown_publish_tf_mode_is_refused():
    assert "none" in PUBLISH_TF_MODES
    with pytest.raises(ValueError, match="publish_tf"):
        publish("map_to_world")
