"""ROS 2 bags of a camera run, written with the pure-Python ``rosbags`` library (no ROS install).

``CameraBagWriter`` (streaming) and ``write_camera_bag`` (all frames at once) record, at every
image stamp:

- ``/camera/image_raw`` (sensor_msgs/Image, rgb8 or mono8) and ``/camera/image_raw/compressed``
  (sensor_msgs/CompressedImage, JPEG), frame ``camera_optical_frame``;
- ``/camera/camera_info`` (plumb_bob; ``P`` = ``K`` because the images are not rectified);
- ``/ground_truth/pose`` (geometry_msgs/PoseStamped): ``map_from_base`` in frame ``map``;
- ``/odom`` (nav_msgs/Odometry, ``odom`` -> ``base_link``) and the same transform on ``/tf``,
  unless the writer is told there is no odometry (a recorded image sequence has none);
- once, at the first stamp, ``/tf_static`` (transient local): ``base_link`` -> ``camera_optical_frame``.

So ``map_from_base (ground truth) @ base_from_camera (tf_static) == world_from_camera``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from ..geometry import Camera, Rigid3
from ..msgs import (
    camera_info_fields,
    compressed_image_fields,
    image_fields,
    quaternion_fields,
    time_fields,
    vector_fields,
)
from .trajectories import camera_mount

TOPICS = {
    "image": "/camera/image_raw",
    "compressed": "/camera/image_raw/compressed",
    "camera_info": "/camera/camera_info",
    "ground_truth": "/ground_truth/pose",
    "odom": "/odom",
    "tf": "/tf",
    "tf_static": "/tf_static",
}
MAP_FRAME, ODOM_FRAME, BASE_FRAME, CAMERA_FRAME = "map", "odom", "base_link", "camera_optical_frame"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
# What a latched /tf_static publisher offers, so that players re-deliver it to late subscribers.
TF_STATIC_QOS = Qos(
    QosHistory.KEEP_LAST,
    1,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    QosTime(0, 0),
    QosTime(0, 0),
    QosLiveliness.AUTOMATIC,
    QosTime(0, 0),
    False,
)
# Nominal odometry uncertainty (diagonal: x y z roll pitch yaw), only for consumers that read it.
ODOM_COVARIANCE = np.diag([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4]).ravel()


class CameraBagWriter:
    """Streams camera frames into a new bag at ``path`` (see module doc); use as a context manager.

    Odometry defaults to drift-free: ``odom_from_base`` = the first frame's ``map_from_base``
    inverse times the current one. The /odom twist is the backward difference (zero at the first frame).
    ``odometry=False`` writes neither /odom nor /tf: odometry made from the ground truth would be a
    perfect one that no real sequence has.
    """

    def __init__(
        self,
        path,
        camera: Camera,
        base_from_camera: Rigid3 | None = None,
        *,
        storage: str = "mcap",
        distro: str = "jazzy",
        jpeg_quality: int = 90,
        odometry: bool = True,
    ):
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage {storage!r}; choose one of {', '.join(STORAGES)}")
        if distro not in DISTROS:
            raise ValueError(f"unknown ROS distro {distro!r}; choose one of {', '.join(DISTROS)}")
        self.path, self.camera = Path(path), camera
        self.base_from_camera = camera_mount() if base_from_camera is None else base_from_camera
        self.jpeg_quality = int(jpeg_quality)
        self.odometry = odometry
        self._typestore = get_typestore(DISTROS[distro])
        self._messages = _Messages(self._typestore)
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections = {}
        for key, msgtype in (
            ("tf_static", "tf2_msgs/msg/TFMessage"),
            ("tf", "tf2_msgs/msg/TFMessage"),
            ("odom", "nav_msgs/msg/Odometry"),
            ("ground_truth", "geometry_msgs/msg/PoseStamped"),
            ("camera_info", "sensor_msgs/msg/CameraInfo"),
            ("image", "sensor_msgs/msg/Image"),
            ("compressed", "sensor_msgs/msg/CompressedImage"),
        ):
            if key in ("tf", "odom") and not odometry:
                continue
            qos = [TF_STATIC_QOS] if key == "tf_static" else []
            self._connections[key] = self._writer.add_connection(
                TOPICS[key], msgtype, typestore=self._typestore, offered_qos_profiles=qos
            )
        self._previous = None  # (stamp_ns, odom_from_base) of the last frame
        self._first_map_from_base = None

    def write_frame(
        self, stamp_ns: int, image: np.ndarray, world_from_camera: Rigid3, odom_from_base: Rigid3 | None = None
    ) -> None:
        stamp_ns = int(stamp_ns)
        if self._previous is not None and stamp_ns <= self._previous[0]:
            raise ValueError(f"stamps must increase strictly: {stamp_ns} after {self._previous[0]}")
        messages = self._messages
        map_from_base = world_from_camera @ self.base_from_camera.inverse()
        if self._previous is None:
            self._first_map_from_base = map_from_base
            self._write("tf_static", stamp_ns, messages.tf(stamp_ns, BASE_FRAME, CAMERA_FRAME, self.base_from_camera))
        if odom_from_base is None:
            odom_from_base = self._first_map_from_base.inverse() @ map_from_base
        if self._previous is None:
            step, dt = Rigid3(), 1.0
        else:
            step, dt = self._previous[1].inverse() @ odom_from_base, (stamp_ns - self._previous[0]) * 1e-9
        if self.odometry:
            self._write("tf", stamp_ns, messages.tf(stamp_ns, ODOM_FRAME, BASE_FRAME, odom_from_base))
            self._write("odom", stamp_ns, messages.odometry(stamp_ns, odom_from_base, step, dt))
        self._write("ground_truth", stamp_ns, messages.pose_stamped(stamp_ns, MAP_FRAME, map_from_base))
        self._write("camera_info", stamp_ns, messages.camera_info(stamp_ns, self.camera))
        image = np.ascontiguousarray(image, dtype=np.uint8)
        self._write("image", stamp_ns, messages.image(stamp_ns, image))
        self._write("compressed", stamp_ns, messages.compressed(stamp_ns, image, self.jpeg_quality))
        self._previous = (stamp_ns, odom_from_base)

    def _write(self, key: str, stamp_ns: int, message) -> None:
        data = self._typestore.serialize_cdr(message, message.__msgtype__)
        self._writer.write(self._connections[key], stamp_ns, data)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "CameraBagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_camera_bag(
    path,
    stamps_ns: Sequence[int],
    images: Iterable[np.ndarray],
    world_from_camera: Sequence[Rigid3],
    camera: Camera,
    base_from_camera: Rigid3 | None = None,
    *,
    odom_from_base: Sequence[Rigid3] | None = None,
    storage: str = "mcap",
    distro: str = "jazzy",
    jpeg_quality: int = 90,
) -> Path:
    """Write a bag at ``path`` (must not exist) with one camera frame per stamp (see module doc).

    ``images``: HxWx3 RGB or HxW gray uint8, one per stamp. ``world_from_camera``: optical-frame
    poses in the map frame. ``base_from_camera`` (the /tf_static extrinsic) defaults to the sim's
    mount; ``odom_from_base`` to drift-free odometry starting at identity.
    """
    odometry = odom_from_base if odom_from_base is not None else [None] * len(stamps_ns)
    if not len(world_from_camera) == len(odometry) == len(stamps_ns):
        raise ValueError("stamps, poses and odometry must have one entry per frame")
    with CameraBagWriter(
        path, camera, base_from_camera, storage=storage, distro=distro, jpeg_quality=jpeg_quality
    ) as writer:
        for stamp, image, pose, odom in zip(stamps_ns, images, world_from_camera, odometry, strict=True):
            writer.write_frame(stamp, image, pose, odom)
    return Path(path)


class _Messages:
    """Builds the message objects of one typestore from ``vloc_ros.msgs``' field values, the ones the
    nodes publish."""

    def __init__(self, typestore):
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        time = self.types["builtin_interfaces/msg/Time"](**time_fields(stamp_ns))
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def _vector(self, values):
        return self.types["geometry_msgs/msg/Vector3"](**vector_fields(values))

    def _quaternion(self, pose: Rigid3):
        return self.types["geometry_msgs/msg/Quaternion"](**quaternion_fields(pose))

    def _pose(self, pose: Rigid3):
        point = self.types["geometry_msgs/msg/Point"](**vector_fields(pose.translation))
        return self.types["geometry_msgs/msg/Pose"](position=point, orientation=self._quaternion(pose))

    def tf(self, stamp: int, parent: str, child: str, parent_from_child: Rigid3):
        transform = self.types["geometry_msgs/msg/Transform"](
            translation=self._vector(parent_from_child.translation), rotation=self._quaternion(parent_from_child)
        )
        stamped = self.types["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp, parent), child_frame_id=child, transform=transform
        )
        return self.types["tf2_msgs/msg/TFMessage"](transforms=[stamped])

    def pose_stamped(self, stamp: int, frame: str, pose: Rigid3):
        return self.types["geometry_msgs/msg/PoseStamped"](header=self.header(stamp, frame), pose=self._pose(pose))

    def odometry(self, stamp: int, odom_from_base: Rigid3, step: Rigid3, dt: float):
        """Twist in the child frame: ``step`` (odometry motion over ``dt`` seconds) as velocities."""
        twist = self.types["geometry_msgs/msg/Twist"](
            linear=self._vector(step.translation / dt),
            angular=self._vector(Rotation.from_matrix(step.rotation).as_rotvec() / dt),
        )
        return self.types["nav_msgs/msg/Odometry"](
            header=self.header(stamp, ODOM_FRAME),
            child_frame_id=BASE_FRAME,
            pose=self.types["geometry_msgs/msg/PoseWithCovariance"](
                pose=self._pose(odom_from_base), covariance=ODOM_COVARIANCE.copy()
            ),
            twist=self.types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=ODOM_COVARIANCE.copy()),
        )

    def camera_info(self, stamp: int, camera: Camera):
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp, CAMERA_FRAME), roi=roi, **camera_info_fields(camera)
        )

    def image(self, stamp: int, image: np.ndarray):
        return self.types["sensor_msgs/msg/Image"](header=self.header(stamp, CAMERA_FRAME), **image_fields(image))

    def compressed(self, stamp: int, image: np.ndarray, quality: int):
        return self.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp, CAMERA_FRAME), **compressed_image_fields(image, "jpeg", quality)
        )
