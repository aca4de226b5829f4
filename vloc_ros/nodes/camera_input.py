"""The checks every camera frame passes before a node uses it, shared by the nodes.

``CameraInput`` subscribes the image (raw or compressed) and CameraInfo topics through the node's
``InputGuard`` and hands on only a frame that comes after a valid CameraInfo, has that CameraInfo's
size (read from the header, before any pixel is decoded), decodes without error and names its
camera frame. Everything else is a rejection the guard counts as ``rejected_<reason>``. The node's
``admit(header)`` decides from the header alone whether it wants the frame at all, so a frame it
would drop is never decoded.
"""

from __future__ import annotations

from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vloc_ros.geometry import Camera
from vloc_ros.msgs import (
    DEFAULT_MAX_IMAGE_PIXELS,
    InvalidMessage,
    camera_info_to_camera,
    compressed_to_numpy,
    image_to_numpy,
)

from .input_guard import InputGuard
from .parameters import ParameterSpec

# The parameters of a node's camera input (read once, at start-up).
CAMERA_PARAMETERS = (
    ParameterSpec(
        "image_topic",
        "/camera/image_raw",
        "Image topic; with transport 'compressed' the node subscribes <image_topic>/compressed.",
        read_only=True,
    ),
    ParameterSpec(
        "camera_info_topic",
        "/camera/camera_info",
        "CameraInfo of the (unrectified) images: K and plumb_bob distortion.",
        read_only=True,
    ),
    ParameterSpec("transport", "raw", "Image transport.", choices=("raw", "compressed"), read_only=True),
    ParameterSpec("camera_frame", "", "Camera optical frame; empty: the image header's frame_id.", read_only=True),
    ParameterSpec(
        "max_image_pixels",
        DEFAULT_MAX_IMAGE_PIXELS,
        "Largest image (width x height) accepted; "
        "a CameraInfo or image header claiming more is rejected before anything is decoded.",
        value_range=(1, 1 << 30),
        read_only=True,
    ),
    ParameterSpec(
        "image_qos",
        "sensor_data",
        "QoS of the camera subscriptions. sensor_data (best effort) matches "
        "every publisher; raw images from another process arrive whole with the Fast DDS profile the "
        "node applies (config/fastdds.xml), most are lost without it. reliable matches reliable "
        "publishers only.",
        choices=("sensor_data", "reliable"),
        read_only=True,
    ),
)
# Reliable, yet only the newest few frames wait: a late frame is not worth a queue.
RELIABLE_CAMERA_QOS = QoSProfile(depth=qos_profile_sensor_data.depth, reliability=ReliabilityPolicy.RELIABLE)


class CameraInput:
    def __init__(self, node, guard: InputGuard, on_frame, admit=lambda header: True):
        """Subscribes as ``node``'s CAMERA_PARAMETERS say; ``on_frame(header, image, camera, camera_frame)``
        gets each accepted frame (``camera_frame``: the parameter, else the header's frame_id).
        ``admit(header)``: False skips the frame before decoding; it may raise ``InvalidMessage``."""
        self.camera: Camera | None = None  # from the latest valid CameraInfo
        self._on_frame = on_frame
        self._admit = admit
        self._counters = guard.counters
        image_topic, camera_info_topic, transport, self._camera_frame, self._max_pixels, image_qos = (
            node.get_parameter(spec.name).value for spec in CAMERA_PARAMETERS
        )
        self._decode = compressed_to_numpy if transport == "compressed" else image_to_numpy
        qos = qos_profile_sensor_data if image_qos == "sensor_data" else RELIABLE_CAMERA_QOS
        # CameraInfo first: executors serve ready subscriptions in creation order, so a CameraInfo
        # and its image arriving together are taken in that order.
        guard.subscribe(CameraInfo, camera_info_topic, self._on_camera_info, qos)
        if transport == "compressed":
            guard.subscribe(CompressedImage, f"{image_topic}/compressed", self._on_image, qos)
        else:
            guard.subscribe(Image, image_topic, self._on_image, qos)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera = camera_info_to_camera(msg, max_pixels=self._max_pixels)

    def _on_image(self, msg) -> None:
        self._counters.add("frames_received")
        camera = self.camera
        if camera is None:
            raise InvalidMessage("no valid CameraInfo received yet", "no_camera_info")
        camera_frame = self._camera_frame or msg.header.frame_id
        if not camera_frame:
            raise InvalidMessage("empty header.frame_id; set the camera_frame parameter", "missing_frame_id")
        if not self._admit(msg.header):
            return
        image = self._decode(msg, (camera.width, camera.height), self._max_pixels)
        self._on_frame(msg.header, image, camera, camera_frame)
