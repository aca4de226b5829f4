"""vloc_ros.msgs: the same conversions and checks for rclpy messages (nodes) and rosbags messages (bags)."""

import os

os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from vloc_ros import msgs  # noqa: E402
from vloc_ros.bag_source import BagSource  # noqa: E402
from vloc_ros.geometry import Camera, Rigid3  # noqa: E402
from vloc_ros.nodes import ros_compat as rc  # noqa: E402

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
TYPES = TYPESTORE.types
CAMERA = Camera(64, 48, 50.0, 51.0, 31.5, 23.5, (-0.1, 0.01, 1e-4, -2e-4, 0.001))
ROTATED = Rigid3.from_quaternion([0.1, -0.2, 0.3, 0.9], [1.5, -3.25, 0.5])


def bag_header(stamp_ns: int = 1_500_000_000, frame: str = "camera"):
    return TYPES["std_msgs/msg/Header"](
        stamp=TYPES["builtin_interfaces/msg/Time"](**msgs.time_fields(stamp_ns)), frame_id=frame
    )


def bag_image(array, encoding=None):
    return TYPES["sensor_msgs/msg/Image"](header=bag_header(), **msgs.image_fields(array, encoding))


def bag_camera_info(camera: Camera):
    roi = TYPES["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return TYPES["sensor_msgs/msg/CameraInfo"](header=bag_header(), roi=roi, **msgs.camera_info_fields(camera))


def bag_transform_stamped(parent: str, child: str, rigid: Rigid3):
    transform = TYPES["geometry_msgs/msg/Transform"](
        translation=TYPES["geometry_msgs/msg/Vector3"](**msgs.vector_fields(rigid.translation)),
        rotation=TYPES["geometry_msgs/msg/Quaternion"](**msgs.quaternion_fields(rigid)),
    )
    return TYPES["geometry_msgs/msg/TransformStamped"](
        header=bag_header(frame=parent), child_frame_id=child, transform=transform
    )


def rgb_image(height=6, width=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_image_from_rclpy_and_rosbags_messages_is_the_same(encoding):
    image = rgb_image()[..., 0] if encoding.startswith("mono") else rgb_image()
    from_node = msgs.image_to_numpy(rc.numpy_to_image(image, encoding))
    from_bag = msgs.image_to_numpy(bag_image(image, encoding))
    np.testing.assert_array_equal(from_node, image)
    np.testing.assert_array_equal(from_bag, image)


def test_bag_reads_mono16_as_the_node_does(tmp_path):
    gray16 = np.random.default_rng(2).integers(0, 65536, size=(4, 5), dtype=np.uint16)
    bag = tmp_path / "mono16"
    write_bag(bag, [("/camera/image_raw", bag_image(gray16, "mono16"))])
    with BagSource(bag) as source:
        ((stamp, image),) = list(source.images("/camera/image_raw"))
    assert stamp == pytest.approx(1.5)
    np.testing.assert_array_equal(image, msgs.image_to_numpy(rc.numpy_to_image(gray16, "mono16")))
    np.testing.assert_array_equal(image, np.round(gray16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize("format", ["jpeg", "png"])
def test_compressed_image_from_rclpy_and_rosbags_messages_is_the_same(format):
    from sensor_msgs.msg import CompressedImage

    image = rgb_image(16, 24)
    fields = msgs.compressed_image_fields(image, format)
    from_node = msgs.compressed_to_numpy(CompressedImage(format=fields["format"], data=fields["data"].tobytes()))
    from_bag = msgs.compressed_to_numpy(TYPES["sensor_msgs/msg/CompressedImage"](header=bag_header(), **fields))
    np.testing.assert_array_equal(from_node, from_bag)
    assert from_bag.shape == image.shape
    if format == "png":  # lossless
        np.testing.assert_array_equal(from_bag, image)


def test_camera_info_from_rclpy_and_rosbags_messages_is_the_same():
    assert msgs.camera_info_to_camera(rc.camera_to_camera_info(CAMERA)) == CAMERA
    assert msgs.camera_info_to_camera(bag_camera_info(CAMERA)) == CAMERA


BAD_CAMERA_INFOS = {
    "skew": lambda m: m.k.__setitem__(1, 0.5),
    "binning": lambda m: setattr(m, "binning_x", 2),
    "roi": lambda m: setattr(m.roi, "x_offset", 4),
}


@pytest.mark.parametrize("defect", sorted(BAD_CAMERA_INFOS))
def test_camera_info_defects_are_rejected_from_a_bag_as_from_the_node(defect, tmp_path):
    node_message, bag_message = rc.camera_to_camera_info(CAMERA), bag_camera_info(CAMERA)
    for message in (node_message, bag_message):
        BAD_CAMERA_INFOS[defect](message)
    with pytest.raises(msgs.InvalidMessage) as from_node:
        msgs.camera_info_to_camera(node_message)
    bag = tmp_path / defect
    write_bag(bag, [("/camera/camera_info", bag_message)])
    with BagSource(bag) as source, pytest.raises(msgs.InvalidMessage) as from_bag:
        source.camera("/camera/camera_info")
    assert from_node.value.reason == from_bag.value.reason == "invalid_camera_info"
    assert str(from_node.value) == str(from_bag.value)


def test_pose_and_transform_from_rclpy_and_rosbags_messages_are_the_same():
    node_pose = msgs.pose_to_rigid(rc.rigid_to_pose(ROTATED))
    bag_pose = msgs.pose_to_rigid(
        TYPES["geometry_msgs/msg/Pose"](
            position=TYPES["geometry_msgs/msg/Point"](**msgs.vector_fields(ROTATED.translation)),
            orientation=TYPES["geometry_msgs/msg/Quaternion"](**msgs.quaternion_fields(ROTATED)),
        )
    )
    np.testing.assert_allclose(node_pose.matrix, ROTATED.matrix, atol=1e-12)
    np.testing.assert_allclose(bag_pose.matrix, ROTATED.matrix, atol=1e-12)
    node_link = msgs.transform_link(rc.rigid_to_transform_stamped(ROTATED, "/map", "odom"))
    bag_link = msgs.transform_link(bag_transform_stamped("/map", "odom", ROTATED))
    assert node_link[:2] == bag_link[:2] == ("map", "odom")
    np.testing.assert_allclose(node_link[2].matrix, bag_link[2].matrix, atol=1e-12)


def test_invalid_transforms_are_rejected_from_both():
    scaled = bag_transform_stamped("map", "odom", ROTATED)
    scaled.transform.rotation.w *= 2.0
    self_parent = rc.rigid_to_transform_stamped(ROTATED, "odom", "/odom")
    for transform in (scaled, self_parent):
        with pytest.raises(msgs.InvalidMessage) as raised:
            msgs.transform_link(transform)
        assert raised.value.reason == "invalid_tf"


def test_bag_skips_invalid_transforms_and_keeps_the_valid_ones(tmp_path):
    bag = tmp_path / "tf"
    messages = []
    for i in range(3):
        valid = bag_transform_stamped("map", "base_link", Rigid3(translation=(float(i), 0.0, 0.0)))
        valid.header.stamp = TYPES["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=0)
        broken = bag_transform_stamped("map", "base_link", ROTATED)
        broken.header.stamp = TYPES["builtin_interfaces/msg/Time"](sec=20 + i, nanosec=0)
        broken.transform.translation.x = float("nan")
        messages.append(("/tf", TYPES["tf2_msgs/msg/TFMessage"](transforms=[valid, broken])))
    write_bag(bag, messages)
    with BagSource(bag) as source:
        stamps, poses = source.tf_poses("map", "base_link")
    np.testing.assert_array_equal(stamps, [10.0, 11.0, 12.0])
    assert [pose.translation[0] for pose in poses] == [0.0, 1.0, 2.0]


def test_stamps_of_every_kind():
    from rclpy.time import Time as RclpyTime

    ns = 1_700_000_000_123_456_789
    assert msgs.stamp_to_ns(Time(**msgs.time_fields(ns))) == ns
    assert msgs.stamp_to_ns(TYPES["builtin_interfaces/msg/Time"](**msgs.time_fields(ns))) == ns
    assert msgs.stamp_to_ns(RclpyTime(nanoseconds=ns)) == ns
    assert msgs.stamp_to_ns(rc.to_time_msg(12.5)) == 12_500_000_000
    assert msgs.stamp_to_seconds(Time(sec=3, nanosec=250_000_000)) == 3.25


def write_bag(path, topic_messages) -> None:
    """One message per (topic, rosbags message), 0.1 s apart, into a new mcap bag."""
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for index, (topic, message) in enumerate(topic_messages):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, message.__msgtype__, typestore=TYPESTORE)
            data = TYPESTORE.serialize_cdr(message, message.__msgtype__)
            writer.write(connections[topic], 1_000_000_000 + index * 100_000_000, data)
