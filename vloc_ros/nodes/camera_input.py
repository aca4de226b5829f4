"""The checks every camera frame passes before a node uses it, shared by the nodes.

``CameraInput`` subscribes the image (raw or compressed) and CameraInfo topics with sensor-data
QoS and hands on only a frame that decodes, comes after a valid CameraInfo, has that CameraInfo's
size and names its camera frame. Everything else is rejected: counted on the node's
``Counters`` as ``rejected_<reason>`` and logged (each reason at most every few seconds), never raised.
"""

from __future__ import annotations

from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vloc_ros.geometry import Camera

from .diagnostics import Counters, ThrottledLogger
from .parameters import ParameterSpec
from .ros_compat import UnsupportedImage, camera_info_to_camera, compressed_to_numpy, image_to_numpy

# The parameters of a node's camera input (read once, at start-up).
CAMERA_PARAMETERS = (
    ParameterSpec("image_topic", "/camera/image_raw", "Image topic; with transport 'compressed' the node "
                  "subscribes <image_topic>/compressed.", read_only=True),
    ParameterSpec("camera_info_topic", "/camera/camera_info", "CameraInfo of the (unrectified) images: K and "
                  "plumb_bob distortion.", read_only=True),
    ParameterSpec("transport", "raw", "Image transport.", choices=("raw", "compressed"), read_only=True),
    ParameterSpec("camera_frame", "", "Camera optical frame; empty: the image header's frame_id.", read_only=True),
    ParameterSpec("image_qos", "sensor_data", "QoS of the camera subscriptions. sensor_data (best effort) matches "
                  "every publisher, but large raw images from another process may be lost on the way (Fast DDS "
                  "over UDP); reliable delivers them, and matches reliable publishers only.",
                  choices=("sensor_data", "reliable"), read_only=True),
)
# Reliable, yet only the newest few frames wait: a late frame is not worth a queue.
RELIABLE_CAMERA_QOS = QoSProfile(depth=qos_profile_sensor_data.depth, reliability=ReliabilityPolicy.RELIABLE)


class CameraInput:
    def __init__(self, node, counters: Counters, on_frame):
        """Subscribes as ``node``'s CAMERA_PARAMETERS say; ``on_frame(header, image, camera, camera_frame)``
        gets each accepted frame (``camera_frame``: the parameter, else the header's frame_id)."""
        self.camera: Camera | None = None  # from the latest valid CameraInfo
        self._counters = counters
        self._on_frame = on_frame
        self._log = ThrottledLogger(node.get_logger())
        image_topic, camera_info_topic, transport, self._camera_frame, image_qos = (
            node.get_parameter(spec.name).value for spec in CAMERA_PARAMETERS)
        self._decode = compressed_to_numpy if transport == "compressed" else image_to_numpy
        qos = qos_profile_sensor_data if image_qos == "sensor_data" else RELIABLE_CAMERA_QOS
        # CameraInfo first: executors serve ready subscriptions in creation order, so a CameraInfo
        # and its image arriving together are taken in that order.
        node.create_subscription(CameraInfo, camera_info_topic, self._on_camera_info, qos)
        if transport == "compressed":
            node.create_subscription(CompressedImage, f"{image_topic}/compressed", self._on_image, qos)
        else:
            node.create_subscription(Image, image_topic, self._on_image, qos)

    def reject(self, reason: str, detail: str) -> None:
        self._counters.add(f"rejected_{reason}")
        self._log.warning(reason, f"{detail} (counted on /diagnostics as rejected_{reason})")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = camera_info_to_camera(msg)
        except ValueError as error:
            self.reject("invalid_camera_info", f"CameraInfo rejected: {error}")

    def _on_image(self, msg) -> None:
        self._counters.add("frames_received")
        try:
            image = self._decode(msg)
        except UnsupportedImage as error:
            return self.reject(error.reason, f"image rejected: {error}")
        camera = self.camera
        if camera is None:
            return self.reject("no_camera_info", "image rejected: no valid CameraInfo received yet")
        if (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            return self.reject("camera_info_size_mismatch", f"image rejected: it is {image.shape[1]}x{image.shape[0]} "
                                                            f"but its CameraInfo says {camera.width}x{camera.height}")
        camera_frame = self._camera_frame or msg.header.frame_id
        if not camera_frame:
            return self.reject("missing_frame_id", "image rejected: empty header.frame_id; set the camera_frame "
                                                   "parameter")
        self._on_frame(msg.header, image, camera, camera_frame)
