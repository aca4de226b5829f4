"""From a localized camera pose to what the localizer node publishes: pose, covariance and TF.

ROS-free (the node converts the result to messages), so the rules are testable without rclpy:

- The published pose is that of ``base_frame`` when its transform to the camera is known
  (``map_from_base = map_from_camera @ inverse(base_from_camera)``), else the camera's own.
- The covariance is the localizer's (``vloc_ros.covariance``: calibrated, inflated by 1 / the
  verification confidence), carried over to the base frame through the lever arm
  (``covariance_of_attached_frame``).
- TF per ``publish_tf``: map -> odom (or base) when the child's transform to the camera is known;
  without it map -> camera instead, but only while the camera has no other parent in TF (a second
  parent would break the TF tree for every node); ``none``: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .geometry import Rigid3

PUBLISH_TF_MODES = ("map_to_odom", "map_to_base", "map_to_camera", "none")
# Why the transform is not the one ``publish_tf`` asks for (``Publication.tf_issue``).
TF_FALLBACK = "tf_fallback"  # map -> camera published instead
TF_UNLINKED = "tf_unlinked"  # nothing published: the camera has another parent


@dataclass(frozen=True)
class Transform:
    """A TF transform: ``parent_from_child``."""

    parent: str
    child: str
    parent_from_child: Rigid3


@dataclass(frozen=True)
class Publication:
    pose_frame: str  # the frame whose pose is published (base_frame or the camera's)
    map_from_pose: Rigid3
    covariance: np.ndarray  # (6, 6), ROS order (x y z rx ry rz, map axes)
    transform: Transform | None  # to broadcast; None: nothing
    tf_issue: str = ""  # "", TF_FALLBACK or TF_UNLINKED
    tf_message: str = ""  # what to log about tf_issue


def covariance_of_attached_frame(covariance, lever_arm) -> np.ndarray:
    """The ``PoseWithCovariance`` covariance of a frame rigidly attached to a posed one.

    ``covariance`` is over (x, y, z, rx, ry, rz): position and small rotations about the world's
    fixed axes (ROS order). ``lever_arm`` is the attached frame's origin minus the posed frame's, in
    the world. A rotation error ``dtheta`` moves the attached origin by ``dtheta x lever_arm``, so
    ``J = [[I, -[lever_arm]x], [0, I]]`` and the result is ``J C J^T``.
    """
    x, y, z = np.asarray(lever_arm, dtype=np.float64).reshape(3)
    jacobian = np.eye(6)
    jacobian[:3, 3:] = -np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return jacobian @ np.asarray(covariance, dtype=np.float64).reshape(6, 6) @ jacobian.T


def publication(
    map_from_camera: Rigid3,
    covariance: np.ndarray,
    *,
    map_frame: str,
    camera_frame: str,
    base_frame: str,
    odom_frame: str,
    publish_tf: str,
    base_from_camera: Rigid3 | None = None,
    odom_from_camera: Rigid3 | None = None,
    map_from_odom: Rigid3 | None = None,
    camera_parent: str | None | Callable[[], str | None] = None,
) -> Publication:
    """What to publish for a camera localized at ``map_from_camera`` with ``covariance`` (camera
    frame's, ROS order, as ``LocalizationResult.covariance`` publishes it).

    ``base_from_camera`` / ``odom_from_camera``: TF at the image stamp, None where unknown.
    ``map_from_odom``: the fused map -> odom (``vloc_ros.fusion``) to broadcast instead of this fix's own.
    ``camera_parent``: the camera frame's parent in TF (None: a root or unknown), or a callable
    giving it, called only when the rule needs it.
    """
    if publish_tf not in PUBLISH_TF_MODES:
        raise ValueError(f"unknown publish_tf {publish_tf!r}; expected one of {PUBLISH_TF_MODES}")
    camera_covariance = np.asarray(covariance, dtype=np.float64).reshape(6, 6)
    if base_from_camera is None:
        pose_frame, map_from_pose, pose_covariance = camera_frame, map_from_camera, camera_covariance
    else:
        map_from_pose = map_from_camera @ base_from_camera.inverse()
        lever_arm = map_from_pose.translation - map_from_camera.translation
        pose_frame, pose_covariance = base_frame, covariance_of_attached_frame(camera_covariance, lever_arm)

    if publish_tf == "none":
        return Publication(pose_frame, map_from_pose, pose_covariance, None)
    child, child_from_camera, issue, message = camera_frame, Rigid3(), "", ""
    if publish_tf != "map_to_camera":
        wanted, found = (
            (odom_frame, odom_from_camera) if publish_tf == "map_to_odom" else (base_frame, base_from_camera)
        )
        if found is not None:
            child, child_from_camera = wanted, found
        else:
            parent = camera_parent() if callable(camera_parent) else camera_parent
            if parent not in (None, map_frame):
                return Publication(
                    pose_frame,
                    map_from_pose,
                    pose_covariance,
                    None,
                    TF_UNLINKED,
                    f"no TF {wanted} -> {camera_frame} at the image stamp and the camera has "
                    f"another parent: nothing published",
                )
            issue = TF_FALLBACK
            message = f"no TF {wanted} -> {camera_frame}; publishing {map_frame} -> {camera_frame} instead"
    parent_from_child = map_from_camera @ child_from_camera.inverse()
    if child == odom_frame and map_from_odom is not None:
        parent_from_child = map_from_odom
    transform = Transform(map_frame, child, parent_from_child)
    return Publication(pose_frame, map_from_pose, pose_covariance, transform, issue, message)
