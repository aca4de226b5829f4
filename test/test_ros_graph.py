"""A real rclpy graph (no mocks): messages in one process and across two, /tf, and vloc_ros.nodes.ros_compat.

Each run uses its own ROS_DOMAIN_ID (from the pid) and topic names with the pid in them, so
test runs by several people on one machine do not see each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

DOMAIN_ID = str(1 + os.getpid() % 100)
os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID

import rclpy  # noqa: E402
from geometry_msgs.msg import Pose  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from vloc_ros.geometry import Camera, Rigid3  # noqa: E402
from ros_harness import bit_flipped, jpeg_claiming, numpy_to_compressed, png_claiming  # noqa: E402
from vloc_ros import msgs  # noqa: E402
from vloc_ros.nodes import ros_compat as rc  # noqa: E402

TIMEOUT = 20.0
SUFFIX = f"{os.getpid()}"


@pytest.fixture(scope="module")
def ros():
    """An rclpy context, one node and an executor; torn down after the module."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"vloc_test_{SUFFIX}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield context, node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(executor, done, timeout=TIMEOUT, every=None):
    """Spin until ``done()``; calls ``every()`` (e.g. publish) before each spin; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        executor.spin_once(timeout_sec=0.05)
        if done():
            return True
    return False


def random_image(seed=0, height=48, width=64, channels=3):
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_image(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=2).astype(np.uint8)


def assert_images_equal(received: Image, sent: Image):
    assert (received.height, received.width, received.encoding, received.step, received.is_bigendian) == (
        sent.height,
        sent.width,
        sent.encoding,
        sent.step,
        sent.is_bigendian,
    )
    assert (received.header.frame_id, received.header.stamp.sec, received.header.stamp.nanosec) == (
        sent.header.frame_id,
        sent.header.stamp.sec,
        sent.header.stamp.nanosec,
    )
    assert bytes(received.data) == bytes(sent.data)


# ----------------------------------------------------------------------------- graph


def test_image_pub_sub_in_process(ros):
    _, node, executor = ros
    topic = f"vloc_test_image_{SUFFIX}"
    sent = rc.numpy_to_image(random_image(1), "rgb8", stamp=12.5, frame_id="camera_optical")
    received = []
    sub = node.create_subscription(Image, topic, received.append, 10)
    pub = node.create_publisher(Image, topic, 10)
    try:
        assert spin_until(executor, lambda: received, every=lambda: pub.publish(sent)), "no Image received"
        assert_images_equal(received[0], sent)
        np.testing.assert_array_equal(msgs.image_to_numpy(received[0]), random_image(1))
    finally:
        node.destroy_publisher(pub)
        node.destroy_subscription(sub)


PUBLISHER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image
    from vloc_ros.nodes.ros_compat import numpy_to_image
    topic, seed = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("vloc_test_publisher")
    pub = node.create_publisher(Image, topic, 10)
    image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    msg = numpy_to_image(image, "bgr8", stamp=7.25, frame_id="remote_camera")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the test kills us; bounded in any case
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.1)
""")


def test_image_across_processes(ros):
    _, node, executor = ros
    topic = f"vloc_test_remote_image_{SUFFIX}"
    received = []
    sub = node.create_subscription(Image, topic, received.append, 10)
    env = dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID)
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_SCRIPT, topic, "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ok = spin_until(executor, lambda: received or publisher.poll() is not None, timeout=2 * TIMEOUT)
        if not received:
            publisher.kill()
            output = publisher.communicate(timeout=10)[0]
            pytest.fail(f"no Image from the publisher process (ok={ok}, exit={publisher.returncode}):\n{output}")
        msg = received[0]
        assert (msg.encoding, msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
            "bgr8",
            "remote_camera",
            7,
            250_000_000,
        )
        expected = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        np.testing.assert_array_equal(msgs.image_to_numpy(msg), expected)
        assert bytes(msg.data) == expected[..., ::-1].tobytes()
    finally:
        if publisher.poll() is None:
            publisher.terminate()
            try:
                publisher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                publisher.kill()
                publisher.wait()
        node.destroy_subscription(sub)


def test_tf_message_round_trip(ros):
    _, node, executor = ros
    child = f"base_link_{SUFFIX}"
    sent = [
        rc.rigid_to_transform_stamped(
            Rigid3.from_quaternion((0.1, -0.2, 0.3, 0.9), (1.0, -2.5, 0.125)), "map", child, stamp=3.5
        ),
        rc.rigid_to_transform_stamped(Rigid3(translation=(0.0, 0.0, 0.3)), child, f"camera_{SUFFIX}", stamp=3.5),
    ]
    received = []
    sub = node.create_subscription(
        TFMessage, "/tf", lambda m: received.extend(t for t in m.transforms if SUFFIX in t.child_frame_id), 100
    )
    broadcaster = rc.FallbackTransformBroadcaster(node)
    try:
        assert spin_until(executor, lambda: len(received) >= 2, every=lambda: broadcaster.sendTransform(sent))
        for got, want in zip(received[:2], sent):
            assert got.header.frame_id == want.header.frame_id and got.child_frame_id == want.child_frame_id
            assert (got.header.stamp.sec, got.header.stamp.nanosec) == (3, 500_000_000)
            g, w = got.transform, want.transform
            assert (g.translation.x, g.translation.y, g.translation.z) == (
                w.translation.x,
                w.translation.y,
                w.translation.z,
            )
            assert (g.rotation.x, g.rotation.y, g.rotation.z, g.rotation.w) == (
                w.rotation.x,
                w.rotation.y,
                w.rotation.z,
                w.rotation.w,
            )
        np.testing.assert_allclose(msgs.transform_to_rigid(received[0]).matrix, msgs.transform_to_rigid(sent[0]).matrix)
    finally:
        node.destroy_subscription(sub)


def yaw(degrees):
    return Rigid3.from_quaternion(
        (0.0, 0.0, np.sin(np.radians(degrees) / 2), np.cos(np.radians(degrees) / 2)), (0, 0, 0)
    )


def test_fallback_tf_buffer_two_link_chain(ros):
    """map -> odom (static, /tf_static) -> base_link (dynamic, /tf), looked up through the graph."""
    _, node, executor = ros
    odom, base = f"odom_{SUFFIX}", f"base_{SUFFIX}"
    buffer = rc.FallbackTfBuffer(node, cache_time=10.0, max_age=0.2)
    static = rc.FallbackTransformBroadcaster(node, static=True)
    dynamic = rc.FallbackTransformBroadcaster(node)
    map_from_odom = Rigid3(yaw(90).rotation, (10.0, 0.0, 0.0))
    odom_from_base_1 = Rigid3(yaw(0).rotation, (1.0, 0.0, 0.0))
    odom_from_base_2 = Rigid3(yaw(60).rotation, (3.0, 2.0, 0.0))
    static.sendTransform(rc.rigid_to_transform_stamped(map_from_odom, "map", odom, stamp=0.5))

    def publish():
        dynamic.sendTransform(
            [
                rc.rigid_to_transform_stamped(odom_from_base_1, odom, base, stamp=1.0),
                rc.rigid_to_transform_stamped(odom_from_base_2, odom, base, stamp=2.0),
            ]
        )

    assert spin_until(executor, lambda: buffer.can_transform("map", base, 2.0), every=publish), "TF never arrived"

    # Halfway: translation midpoint, yaw 30 degrees; then composed with the static link.
    odom_from_base_mid = Rigid3(yaw(30).rotation, (2.0, 1.0, 0.0))
    expected = map_from_odom @ odom_from_base_mid
    got = buffer.lookup("map", base, 1.5)
    np.testing.assert_allclose(got.matrix, expected.matrix, atol=1e-9)
    # Hand-computed: map_from_odom rotates (2, 1) by 90 deg -> (-1, 2), plus (10, 0).
    np.testing.assert_allclose(got.translation, (9.0, 2.0, 0.0), atol=1e-9)
    np.testing.assert_allclose(buffer.lookup(base, "map", 1.5).matrix, expected.inverse().matrix, atol=1e-9)
    np.testing.assert_allclose(
        buffer.lookup("map", base, 1.0).matrix, (map_from_odom @ odom_from_base_1).matrix, atol=1e-9
    )
    np.testing.assert_allclose(buffer.lookup("map", base).matrix, (map_from_odom @ odom_from_base_2).matrix, atol=1e-9)
    # Within max_age past the last sample: the last sample; beyond it: an error, not a guess.
    np.testing.assert_allclose(
        buffer.lookup("map", base, 2.1).matrix, (map_from_odom @ odom_from_base_2).matrix, atol=1e-9
    )
    with pytest.raises(rc.TfLookupError):
        buffer.lookup("map", base, 2.5)
    with pytest.raises(rc.TfLookupError):
        buffer.lookup("map", f"nowhere_{SUFFIX}", 1.5)


@pytest.mark.parametrize(
    "poison",
    [
        {"rotation": (0.0, 0.0, 0.0, 0.0)},
        {"rotation": (float("nan"), 0.0, 0.0, 1.0)},
        {"rotation": (0.0, 0.0, 0.5, 0.5)},
        {"translation": (float("nan"), 0.0, 0.0)},
        {"translation": (0.0, float("inf"), 0.0)},
        {"child": "odom"},
        {"child": ""},
    ],
)
@pytest.mark.parametrize("static", [False, True])
def test_fallback_tf_buffer_refuses_poison(poison, static):
    """A poisoned transform is refused with a reason; the good ones of the same message are kept."""
    from geometry_msgs.msg import TransformStamped

    buffer = rc.FallbackTfBuffer()
    good = rc.rigid_to_transform_stamped(Rigid3(translation=(1.0, 2.0, 3.0)), "odom", "base", stamp=1.0)
    bad = TransformStamped(header=good.header, child_frame_id=poison.get("child", "camera"))
    bad.transform.translation.x, bad.transform.translation.y, bad.transform.translation.z = poison.get(
        "translation", (0.0, 0.0, 0.0)
    )
    q = bad.transform.rotation
    q.x, q.y, q.z, q.w = poison.get("rotation", (0.0, 0.0, 0.0, 1.0))
    with pytest.raises(msgs.InvalidMessage, match="1 of 2 transforms refused") as raised:
        buffer._on_message(TFMessage(transforms=[bad, good]), static)
    assert raised.value.reason == "invalid_tf"
    np.testing.assert_allclose(buffer.lookup("odom", "base", 1.0).translation, (1.0, 2.0, 3.0))
    assert not buffer.can_transform("odom", "camera")


def test_fallback_tf_buffer_refuses_a_stamp_far_ahead_of_the_clock():
    """One transform stamped years ahead would push every current sample out of the cache; a skew
    within the cache is a clock difference between machines and is kept."""
    now_s = 1000.0
    buffer = rc.FallbackTfBuffer(cache_time=10.0, now_ns=lambda: int(now_s * 1e9))

    def link(stamp: float, x: float):
        return rc.rigid_to_transform_stamped(Rigid3(translation=(x, 0.0, 0.0)), "odom", "base", stamp=stamp)

    buffer.set_transform(link(999.0, 1.0))
    buffer.set_transform(link(1000.0, 2.0))
    with pytest.raises(msgs.InvalidMessage, match="ahead of this node's clock") as raised:
        buffer.set_transform(link(now_s + 365 * 86400, 9.0))
    assert raised.value.reason == "invalid_tf"
    buffer.set_transform(link(1005.0, 3.0))
    np.testing.assert_allclose(buffer.lookup("odom", "base", 999.5).translation, (1.5, 0.0, 0.0))
    now_s = 0.0  # sim time before the first /clock: nothing to check against
    buffer.set_transform(link(5000.0, 4.0))
    np.testing.assert_allclose(buffer.lookup("odom", "base").translation, (4.0, 0.0, 0.0))


def test_input_guard_counts_instead_of_raising(ros):
    """A rejection is counted by its reason, a bug as callback_errors; neither leaves the callback."""
    from vloc_ros.nodes.diagnostics import Counters
    from vloc_ros.nodes.input_guard import InputGuard

    _, node, _ = ros
    counters = Counters()
    guard = InputGuard(node, counters)

    def reject(msg):
        raise msgs.InvalidMessage("refused", "invalid_tf")

    guard.guarded(reject, "/tf")(None)
    guard.guarded(lambda msg: 1 / 0, "/tf")(None)
    guard.guarded(lambda msg: None, "/tf")(None)
    assert counters.snapshot() == {"rejected_invalid_tf": 1, "callback_errors": 1}


def test_pose_to_rigid_refuses_what_is_not_a_pose():
    pose = Pose()
    pose.orientation.w = 1.0
    np.testing.assert_allclose(msgs.pose_to_rigid(pose).matrix, np.eye(4))
    pose.position.z = float("inf")
    with pytest.raises(msgs.InvalidMessage) as raised:
        msgs.pose_to_rigid(pose)
    assert raised.value.reason == "invalid_pose"


# ----------------------------------------------------------------------------- conversions


def through_wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_image_round_trip(encoding):
    rgb = random_image(2)
    msg = through_wire(rc.numpy_to_image(rgb, encoding, stamp=1.0, frame_id="cam"))
    assert msg.encoding == encoding and msg.step == 64 * len(encoding.rstrip("8"))
    out = msgs.image_to_numpy(msg)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, rgb)


def test_channel_order_on_the_wire():
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    assert bytes(rc.numpy_to_image(rgb, "bgr8").data) == bytes([30, 20, 10])
    assert bytes(rc.numpy_to_image(rgb, "rgba8").data) == bytes([10, 20, 30, 255])
    assert bytes(rc.numpy_to_image(rgb, "bgra8").data) == bytes([30, 20, 10, 255])
    # A hand-made bgra8 message (alpha is dropped, channels reordered).
    msg = Image(height=1, width=2, encoding="bgra8", step=8)
    msg.data = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(msgs.image_to_numpy(msg), [[[3, 2, 1], [7, 6, 5]]])


def test_gray_image_round_trip():
    gray = random_image(3, channels=1)
    np.testing.assert_array_equal(msgs.image_to_numpy(through_wire(rc.numpy_to_image(gray))), gray)
    np.testing.assert_array_equal(msgs.image_to_numpy(through_wire(rc.numpy_to_image(gray, "mono16"))), gray)


def test_mono16_scaling_endianness_and_padding():
    values = np.array([[0, 257, 65535], [128, 32768, 1000]], np.uint16)
    expected = np.array([[0, 1, 255], [0, 128, 4]], np.uint8)  # round(v / 257)
    for bigendian in (0, 1):
        row = values.astype(">u2" if bigendian else "<u2").tobytes()
        padded = b"".join(row[i * 6 : (i + 1) * 6] + b"\xee\xee" for i in range(2))  # step 8 > 6
        msg = Image(height=2, width=3, encoding="mono16", is_bigendian=bigendian, step=8)
        msg.data = padded
        np.testing.assert_array_equal(msgs.image_to_numpy(msg), expected)


@pytest.mark.parametrize(
    "make_bad, reason, message",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported_encoding", "unsupported image encoding 'yuv422'"),
        (lambda m: setattr(m, "encoding", "32FC1"), "unsupported_encoding", "unsupported image encoding"),
        (
            lambda m: (setattr(m, "width", 0), setattr(m, "step", 0), setattr(m, "data", b"")),
            "empty_image",
            "empty image",
        ),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "malformed_image", "data has"),
        (lambda m: setattr(m, "step", 10), "malformed_image", "step 10 is smaller"),
        (lambda m: setattr(m, "height", 5), "camera_info_size_mismatch", "image is 5x5 but its CameraInfo says 5x4"),
    ],
)
def test_bad_images_raise(make_bad, reason, message):
    msg = rc.numpy_to_image(random_image(4, height=4, width=5))
    make_bad(msg)
    with pytest.raises(msgs.InvalidMessage, match=message) as raised:
        msgs.image_to_numpy(msg, expected_size=(5, 4))
    assert raised.value.reason == reason


def test_image_size_is_checked_before_the_data():
    """A header claiming a huge image is refused on its numbers, whatever data it carries."""
    msg = Image(height=65535, width=65535, encoding="rgb8", step=3 * 65535)
    msg.data = bytes(16)
    with pytest.raises(msgs.InvalidMessage, match="exceeds the limit") as raised:
        msgs.image_to_numpy(msg)
    assert raised.value.reason == "image_too_large"


def test_compressed_round_trip():
    rgb, gray = smooth_image(), smooth_image()[..., 0].copy()
    png = through_wire(numpy_to_compressed(rgb, "png", stamp=2.0, frame_id="cam"))
    assert "png" in png.format and png.header.frame_id == "cam"
    np.testing.assert_array_equal(msgs.compressed_to_numpy(png), rgb)
    np.testing.assert_array_equal(msgs.compressed_to_numpy(numpy_to_compressed(gray, "png")), gray)
    jpeg = through_wire(numpy_to_compressed(rgb, "jpeg", quality=95))
    out = msgs.compressed_to_numpy(jpeg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3.0  # lossy, but channels must not be swapped
    assert np.abs(out.astype(int) - rgb[..., ::-1]).mean() > 20.0


SMOOTH_JPEG = bytes(numpy_to_compressed(smooth_image(), "jpeg").data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty_image"),
        (b"definitely not an image" * 10, "unsupported_encoding"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "undecodable_image"),
        (png_claiming(65535, 65535), "image_too_large"),
        (png_claiming(640, 480), "undecodable_image"),
        (jpeg_claiming(SMOOTH_JPEG, 65000, 65000), "image_too_large"),
        (jpeg_claiming(SMOOTH_JPEG, 30000, 30000), "image_too_large"),
    ],
)
def test_bad_compressed_raises(data, reason):
    msg = CompressedImage(format="jpeg")
    msg.data = data
    with pytest.raises(msgs.InvalidMessage) as raised:
        msgs.compressed_to_numpy(msg)
    assert raised.value.reason == reason


def test_compressed_size_mismatch_and_compressed_depth():
    msg = numpy_to_compressed(smooth_image(), "png")
    height, width = smooth_image().shape[:2]
    with pytest.raises(msgs.InvalidMessage) as raised:
        msgs.compressed_to_numpy(msg, expected_size=(width + 1, height))
    assert raised.value.reason == "camera_info_size_mismatch"
    msg.format = "16UC1; compressedDepth png"
    with pytest.raises(msgs.InvalidMessage, match="compressedDepth"):
        msgs.compressed_to_numpy(msg)


@pytest.mark.parametrize("format", ["jpeg", "png"])
def test_corrupt_compressed_images_are_refused(format):
    """Strict decoding: bit flips in the compressed data are an error, not a damaged picture."""
    data = numpy_to_compressed(smooth_image(480, 640), format).data
    msg = CompressedImage(format=format)
    refused = 0
    for seed in range(20):
        msg.data = bit_flipped(data, 30, np.random.default_rng(seed))
        try:
            msgs.compressed_to_numpy(msg)
        except msgs.InvalidMessage as error:
            assert error.reason == "undecodable_image"
            refused += 1
    assert refused >= 19


def test_camera_info_round_trip():
    camera = Camera(640, 480, 525.5, 520.25, 319.75, 241.5, (-0.28, 0.07, 1e-4, -2e-4, 0.01))
    info = through_wire(rc.camera_to_camera_info(camera, stamp=4.0, frame_id="cam"))
    assert isinstance(info, CameraInfo)
    assert info.distortion_model == "plumb_bob" and info.header.frame_id == "cam"
    assert list(info.k) == [525.5, 0.0, 319.75, 0.0, 520.25, 241.5, 0.0, 0.0, 1.0]
    assert msgs.camera_info_to_camera(info) == camera
    rectified = msgs.camera_info_to_camera(info, rectified=True)
    assert rectified == camera.pinhole()


def test_camera_info_errors():
    good = rc.camera_to_camera_info(Camera(64, 48, 50.0, 50.0, 31.5, 23.5))
    cases = {
        "all-zero K": lambda m: setattr(m, "k", [0.0] * 9),
        "unsupported distortion model 'equidistant'": lambda m: (
            setattr(m, "distortion_model", "equidistant"),
            setattr(m, "d", [0.1, 0.0, 0.0, 0.0]),
        ),
        "no image size": lambda m: setattr(m, "width", 0),
        "binning": lambda m: setattr(m, "binning_x", 2),
        "not finite": lambda m: setattr(m, "k", [float("nan")] + list(m.k)[1:]),
        "positive focal": lambda m: setattr(m, "k", [-50.0] + list(m.k)[1:]),
        "exceeds the limit": lambda m: (setattr(m, "width", 65535), setattr(m, "height", 65535)),
    }
    for reason, mutate in cases.items():
        msg = through_wire(good)
        mutate(msg)
        with pytest.raises(msgs.InvalidMessage, match=reason) as raised:
            msgs.camera_info_to_camera(msg)
        assert raised.value.reason == "invalid_camera_info"
    # Rational polynomial with k4..k6 = 0 is plumb_bob; with k4 != 0 it is refused.
    msg = through_wire(good)
    msg.distortion_model, msg.d = "rational_polynomial", [0.1, 0.01, 0.0, 0.0, 0.001, 0.0, 0.0, 0.0]
    assert msgs.camera_info_to_camera(msg).distortion == (0.1, 0.01, 0.0, 0.0, 0.001)
    msg.d = [0.1, 0.01, 0.0, 0.0, 0.001, 0.2, 0.0, 0.0]
    with pytest.raises(ValueError, match="rational_polynomial"):
        msgs.camera_info_to_camera(msg)


def test_pose_and_transform_round_trip():
    rigid = Rigid3.from_quaternion((0.3, -0.1, 0.7, 0.2), (1.5, -3.25, 0.5))
    pose = through_wire(rc.rigid_to_pose(rigid))
    assert isinstance(pose, Pose)
    q = rigid.quaternion_xyzw
    assert (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w) == tuple(q)
    assert (pose.position.x, pose.position.y, pose.position.z) == (1.5, -3.25, 0.5)
    np.testing.assert_allclose(msgs.pose_to_rigid(pose).matrix, rigid.matrix, atol=1e-12)
    stamped = through_wire(rc.rigid_to_transform_stamped(rigid, "map", "camera", stamp=1.25))
    assert (stamped.header.frame_id, stamped.child_frame_id) == ("map", "camera")
    assert (stamped.header.stamp.sec, stamped.header.stamp.nanosec) == (1, 250_000_000)
    np.testing.assert_allclose(msgs.transform_to_rigid(stamped).matrix, rigid.matrix, atol=1e-12)
    np.testing.assert_allclose(msgs.transform_to_rigid(stamped.transform).matrix, rigid.matrix, atol=1e-12)
    # The pose maps body points into the world: the body origin lands on the translation.
    np.testing.assert_allclose(msgs.pose_to_rigid(pose).transform([[0.0, 0.0, 0.0]])[0], (1.5, -3.25, 0.5))
