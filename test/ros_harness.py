"""Running nodes under test on a real rclpy graph: a context whose executor spins on a thread, a
driver node that publishes and listens, and the sim bags as rclpy messages (no mocks).

Each node under test gets its own namespace inside this run's (``NAMESPACE``) and subscribes its
camera topics relative to it, so nodes of one test module never see each other's images.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections import defaultdict

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vloc_ros.nodes.live_evaluation import read_bag_messages

NAMESPACE = f"/vloc_test_{os.getpid()}"
# Node parameters for camera topics relative to the node's namespace.
RELATIVE_CAMERA_TOPICS = {"image_topic": "camera/image_raw", "camera_info_topic": "camera/camera_info"}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
GLOBAL_TOPICS = ("/tf", "/tf_static")


def wait_until(predicate, timeout: float = 20.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def read_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


class Collector:
    """Messages received on one topic, with their receipt times (time.monotonic())."""

    def __init__(self, node, msg_type, topic: str, qos=10):
        self.messages: list = []
        self.times: list[float] = []
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos)

    def _on_message(self, msg) -> None:
        self.times.append(time.monotonic())
        self.messages.append(msg)

    def by_stamp(self) -> dict[int, object]:
        return {stamp_ns(m.header): m for m in self.messages}


class RosGraph:
    """One rclpy context; its SingleThreadedExecutor spins on a background thread, as the nodes' ``main``
    functions spin theirs."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.node = self.add(rclpy.create_node("vloc_test_driver", namespace=NAMESPACE, context=self.context))
        self.diagnostics: dict[str, dict[str, str]] = {}  # hardware_id -> latest values (+ "_level", "_message")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._publishers: dict[str, object] = {}
        self._collectors: list[Collector] = []
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node):
        self.executor.add_node(node)
        return node

    def start(self, node_class, label: str, **parameters):
        """A node under test in namespace NAMESPACE/label, camera topics relative to it, ``parameters``
        overriding its defaults."""
        parameters = {**RELATIVE_CAMERA_TOPICS, **parameters}
        return self.add(
            node_class(
                context=self.context,
                namespace=f"{NAMESPACE}/{label}",
                parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()],
            )
        )

    def stop(self, node) -> None:
        name = node.get_fully_qualified_name()
        self.executor.remove_node(node)
        node.destroy_node()
        self.diagnostics.pop(name, None)  # a node restarted under this name must not read as up before it is

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ listening

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            values = {value.key: value.value for value in status.values}
            self.diagnostics[status.hardware_id] = {**values, "_level": status.level, "_message": status.message}

    def diagnostic(self, node) -> dict[str, str]:
        return self.diagnostics.get(node.get_fully_qualified_name(), {})

    def wait_for_diagnostic(self, node, predicate, timeout: float = 10.0) -> dict[str, str]:
        assert wait_until(lambda: predicate(self.diagnostic(node)), timeout), (
            f"diagnostics of {node.get_fully_qualified_name()} never satisfied the test: {self.diagnostic(node)}"
        )
        return self.diagnostic(node)

    def collect(self, msg_type, topic: str, qos=10) -> Collector:
        collector = Collector(self.node, msg_type, topic, qos)
        self._collectors.append(collector)
        return collector

    def close_collectors(self) -> None:
        """Stops every collector so far (what they received stays readable)."""
        for collector in self._collectors:
            self.node.destroy_subscription(collector.subscription)
        self._collectors.clear()

    def call(self, srv_type, name: str, request=None, timeout: float = 120.0):
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=20.0), f"service {name} not available"
            future = client.call_async(request or srv_type.Request())
            assert wait_until(future.done, timeout), f"service {name} did not answer within {timeout} s"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, node_name: str, name: str, value) -> None:
        """Sets a parameter of the node ``node_name`` (in any process) through its service, as
        `ros2 param set` does."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        result = self.call(SetParameters, f"{node_name}/set_parameters", request, timeout=20.0).results[0]
        assert result.successful, f"{node_name}: {name} := {value!r} refused: {result.reason}"

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, msg) -> None:
        self._publisher(topic, type(msg)).publish(msg)

    def _publisher(self, topic: str, msg_type):
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(
                msg_type, topic, LATCHED if topic == "/tf_static" else 10
            )
        return self._publishers[topic]

    def wait_for_camera_input(self, namespace: str, transport: str = "raw", timeout: float = 20.0) -> None:
        """Until a node's image and CameraInfo subscriptions under ``namespace`` match this driver's publishers."""
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        image = (
            (f"{namespace}/camera/image_raw/compressed", CompressedImage)
            if transport == "compressed"
            else (f"{namespace}/camera/image_raw", Image)
        )
        publishers = [self._publisher(*image), self._publisher(f"{namespace}/camera/camera_info", CameraInfo)]
        assert wait_until(lambda: all(p.get_subscription_count() for p in publishers), timeout), (
            f"no camera input subscribed under {namespace}"
        )
        time.sleep(0.2)  # its /tf subscriptions match about now too


class BagFrames:
    """A sim bag as rclpy messages grouped per frame: ``frames[i][bag topic]``.

    Every message of a frame carries that frame's stamp; /tf_static comes once, with the first.
    """

    def __init__(self, bag):
        by_stamp: dict[int, dict[str, object]] = defaultdict(dict)
        for topic, _, msg in read_bag_messages(
            bag,
            [
                "/camera/image_raw",
                "/camera/image_raw/compressed",
                "/camera/camera_info",
                "/ground_truth/pose",
                *GLOBAL_TOPICS,
            ],
        ):
            header = msg.transforms[0].header if topic in GLOBAL_TOPICS else msg.header
            by_stamp[stamp_ns(header)][topic] = msg
        self.stamps = sorted(by_stamp)
        self.frames = [by_stamp[stamp] for stamp in self.stamps]
        self.tf_static = self.frames[0]["/tf_static"]

    def publish(self, graph: RosGraph, index: int, topics, namespace: str) -> None:
        """Publish frame ``index``'s messages of ``topics`` (bag names) in that order; camera and
        ground-truth topics under ``namespace``, TF as is."""
        for topic in topics:
            graph.publish(topic if topic in GLOBAL_TOPICS else f"{namespace}{topic}", self.frames[index][topic])


# ----------------------------------------------------------------------------- messages the tests make and read


def numpy_to_compressed(array, format: str = "jpeg", stamp=None, frame_id: str = "", quality: int = 90):
    """A core image (RGB or gray ``uint8``) -> ``sensor_msgs/CompressedImage`` (``format`` jpeg or png)."""
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from vloc_ros.msgs import compressed_image_fields
    from vloc_ros.nodes.ros_compat import to_time_msg

    fields = compressed_image_fields(array, format, quality)
    return CompressedImage(
        header=Header(stamp=to_time_msg(stamp), frame_id=frame_id),
        format=fields["format"],
        data=fields["data"].tobytes(),
    )


def cloud_to_points(cloud) -> np.ndarray:
    """The (N, 3) float32 points of a cloud made by ``vloc_ros.nodes.visualization.points_to_cloud``."""
    return np.frombuffer(bytes(cloud.data), dtype=np.float32).reshape(-1, 3)


def png_claiming(width: int, height: int, image_data: bytes = b"") -> bytes:
    """A PNG (8-bit gray) of ``width x height`` with ``image_data`` as its compressed pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", image_data) + chunk(b"IEND", b"")


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF0 marker edited to claim ``width x height``."""
    data = bytearray(jpeg)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bit_flipped(data: bytes, flips: int, rng) -> bytes:
    """``data`` with ``flips`` random bits (numpy Generator ``rng``) flipped past its first 700 bytes, so
    that the headers stay readable."""
    damaged = bytearray(data)
    for position in rng.integers(700, len(data) - 2, flips):
        damaged[position] ^= 1 << int(rng.integers(8))
    return bytes(damaged)
