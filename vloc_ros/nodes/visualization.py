"""Messages for looking at the localizer in rviz: point clouds and an image with keypoints drawn."""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from .ros_compat import to_time_msg

_XYZ_FIELDS = [
    PointField(name=axis, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, axis in enumerate("xyz")
]


def points_to_cloud(points, frame_id: str, stamp=None) -> PointCloud2:
    """(N, 3) points -> an unorganised ``sensor_msgs/PointCloud2`` of float32 x, y, z.

    Packed here because sensor_msgs_py (``create_cloud_xyz32``) has no wheel for the ROS 2 PyPI install."""
    xyz = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 3))
    return PointCloud2(
        header=Header(stamp=to_time_msg(stamp), frame_id=frame_id),
        height=1,
        width=len(xyz),
        fields=_XYZ_FIELDS,
        is_bigendian=False,
        point_step=12,
        row_step=12 * len(xyz),
        data=xyz.tobytes(),
        is_dense=True,
    )


def draw_keypoints(image: np.ndarray, keypoints, colour=(0, 255, 0)) -> np.ndarray:
    """An RGB copy of ``image`` (RGB or gray) with a circle at each (x, y) keypoint."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    radius = max(2, round(max(canvas.shape[:2]) / 200))
    for x, y in np.round(np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)).astype(int):
        cv2.circle(canvas, (int(x), int(y)), radius, colour, 1, cv2.LINE_AA)
    return canvas
