"""Live evaluation (``vloc eval --live``): replay a bag to a localizer node over ROS 2, score its poses.

The bag's image and CameraInfo topics (and /tf, /tf_static) are published with rclpy at the
bag's pace (or ``rate`` times faster), header stamps as recorded, to a running vloc_localizer
(or one this process starts with a map). Its ``~/pose`` messages are matched to the images by
header stamp and scored like the offline evaluation, plus:

- dropped frames: images published that got no pose back (dropped by the node's latest-frame-wins
  queue, rejected, or not localized; the node's own counters from /diagnostics tell which);
- end-to-end latency: pose received - image published (both on this machine's monotonic clock),
  and pose received - image stamp when the bag's stamps are on this machine's clock.

What is compared: with /tf_static replayed the node knows the camera extrinsic and publishes its
base_frame's pose, compared with the ground truth's own frame (base_link); without it the node
publishes the camera's pose, compared with the ground truth composed with the extrinsic (as offline).
"""

from __future__ import annotations

# rclpy and the message packages are imported where used: importing this module needs no ROS.

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..bag_source import BagSource
from ..evaluation.alignment import align_records
from ..evaluation.metrics import LATENCY_PERCENTILES, compute_metrics
from ..evaluation.offline import DEFAULT_LIVE_CONFIG, ground_truth_at
from ..evaluation.records import FrameRecord
from ..evaluation.report import write_report
from ..geometry import Rigid3
from ..msgs import InvalidMessage, pose_to_rigid, stamp_to_ns
from .ros_compat import message_class

TF_TOPICS = ("/tf", "/tf_static")
# Stamps within this of the wall clock count as this machine's clock (a live camera, not a recording).
SAME_CLOCK_S = 60.0


class LiveEvalError(RuntimeError):
    """The live evaluation cannot run (no node to evaluate, topics missing from the bag)."""


def bag_topic_types(bag) -> dict[str, str]:
    with BagSource(bag) as source:
        return dict(source.topics)


def read_bag_messages(bag, topics) -> Iterator[tuple[str, int, object]]:
    """(topic, bag receive time in ns, rclpy message) for ``topics`` in bag order.

    The recorded CDR bytes are deserialized by rclpy itself, so headers keep the recorded stamps.
    """
    from rclpy.serialization import deserialize_message

    with BagSource(bag) as source:
        for topic, receive_time, msgtype, raw in source.raw_messages(topics):
            yield topic, receive_time, deserialize_message(bytes(raw), message_class(msgtype))


class BagPublishers:
    """One publisher per replayed topic, with the QoS a recorder offers (/tf_static latched)."""

    def __init__(self, node, topic_types: dict[str, str]):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._publishers = {
            topic: node.create_publisher(message_class(msgtype), topic, latched if topic == "/tf_static" else 10)
            for topic, msgtype in topic_types.items()
        }

    def publish(self, topic: str, msg) -> None:
        self._publishers[topic].publish(msg)


def _percentiles_ms(seconds: list[float]) -> dict | None:
    if not seconds:
        return None
    values = np.asarray(seconds) * 1e3
    return {**{f"p{q}": float(np.percentile(values, q)) for q in LATENCY_PERCENTILES}, "mean": float(values.mean())}


class _Recorder:
    """Poses from ``<node>/pose`` (stamp ns -> (receipt monotonic, receipt wall time, pose)) and the
    node's latest /diagnostics values."""

    def __init__(self, node, localizer_node: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped

        self.pose_topic = f"{localizer_node.rstrip('/')}/pose"
        self.poses: dict[int, tuple[float, float, Rigid3]] = {}
        self.node_counters: dict[str, str] = {}
        self.invalid_poses = 0  # published but not a pose (non-finite, bad quaternion): counted, not scored
        self._hardware_id = localizer_node
        node.create_subscription(PoseStamped, self.pose_topic, self._on_pose, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_pose(self, msg) -> None:
        try:
            pose = pose_to_rigid(msg.pose)
        except InvalidMessage:
            self.invalid_poses += 1
            return
        self.poses[stamp_to_ns(msg.header.stamp)] = (time.monotonic(), time.time(), pose)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self._hardware_id:
                self.node_counters = {value.key: value.value for value in status.values}


def evaluate_live(
    bag,
    output_dir,
    config: dict | None = None,
    map_path=None,
    node_parameters: dict | None = None,
    description: dict | None = None,
):
    """Replay ``bag`` to a localizer node, score its poses and write the report.

    With ``map_path`` a vloc_localizer is started in this process (``node_parameters`` override its
    parameters); otherwise ``config["node"]`` must be running. Returns (records, metrics, report dir).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    config = {**DEFAULT_LIVE_CONFIG, **(config or {})}
    topic_types = bag_topic_types(bag)
    topics = [config["image_topic"], config["camera_info_topic"]]
    missing = [topic for topic in topics if topic not in topic_types]
    if missing:
        raise LiveEvalError(f"bag {bag} lacks {', '.join(missing)}; its topics: {', '.join(sorted(topic_types))}")
    if config["replay_tf"]:
        topics += [topic for topic in TF_TOPICS if topic in topic_types]
    if "/tf_static" in topics:  # the node gets the camera extrinsic and publishes its base frame's pose
        if config["ground_truth_tum"]:
            raise LiveEvalError(
                "a TUM ground truth holds camera poses, but with /tf_static replayed the node "
                "publishes base-frame poses: replay without TF (--no-tf)"
            )
        config["ground_truth"] = {**config["ground_truth"], "camera_frame": None}

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)  # as the node's own main (see localizer_node)
    nodes = []
    try:
        node_name = config["node"]
        if map_path is not None:
            localizer = _start_localizer(context, map_path, config, node_parameters or {})
            nodes.append(localizer)
            node_name = localizer.get_fully_qualified_name()
        player = rclpy.create_node("vloc_live_eval", context=context)
        nodes.append(player)
        recorder = _Recorder(player, node_name)
        publishers = BagPublishers(player, {topic: topic_types[topic] for topic in topics})
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        _wait_for_node(player, recorder.pose_topic, config)
        published = _play(bag, topics, publishers, config)
        deadline = time.monotonic() + config["drain_s"]
        while time.monotonic() < deadline and not set(published) <= set(recorder.poses):
            time.sleep(0.05)
        time.sleep(1.5)  # one more /diagnostics period, so the node's counters include the last frames
        poses, node_counters = dict(recorder.poses), dict(recorder.node_counters)
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    live = {
        "node": node_name,
        "rate": config["rate"],
        "replayed_topics": topics,
        "pose_of": "camera" if config["ground_truth"]["camera_frame"] else "base frame (ground-truth child frame)",
        "node_counters": node_counters,
        "invalid_poses_received": recorder.invalid_poses,
    }
    return _score(bag, output_dir, config, published, poses, live, description)


def _start_localizer(context, map_path, config: dict, node_parameters: dict):
    from rclpy.parameter import Parameter

    from .localizer_node import LocalizerNode

    image_topic, transport = config["image_topic"], "raw"
    if image_topic.endswith("/compressed"):
        image_topic, transport = image_topic[: -len("/compressed")], "compressed"
    parameters = {
        "map_path": str(map_path),
        "image_topic": image_topic,
        "transport": transport,
        "camera_info_topic": config["camera_info_topic"],
        **node_parameters,
    }
    return LocalizerNode(
        context=context, parameter_overrides=[Parameter(name, value=value) for name, value in parameters.items()]
    )


def _wait_for_node(player, pose_topic: str, config: dict) -> None:
    """Until the node publishes its poses and subscribes the images (else the first frames are lost)."""
    image_topic = config["image_topic"]
    deadline = time.monotonic() + config["wait_s"]
    while not (player.count_publishers(pose_topic) and player.count_subscribers(image_topic)):
        if time.monotonic() > deadline:
            raise LiveEvalError(
                f"no localizer found within {config['wait_s']:.0f} s: nothing publishes {pose_topic} "
                f"and subscribes {image_topic}; start vloc_localizer (or give a map to start one here)"
            )
        time.sleep(0.1)
    time.sleep(0.5)  # discovery is per pair of endpoints: let the remaining ones (CameraInfo, TF) match too


def _play(bag, topics, publishers: BagPublishers, config: dict) -> dict[int, tuple[float, float]]:
    """Publish at the bag's pace / rate; returns image stamp ns -> (monotonic, wall time) at publishing."""
    published = {}
    start = first = None
    for topic, receive_time, msg in read_bag_messages(bag, topics):
        if first is None:
            start, first = time.monotonic(), receive_time
        delay = start + (receive_time - first) * 1e-9 / config["rate"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publishers.publish(topic, msg)
        if topic == config["image_topic"]:
            published[stamp_to_ns(msg.header.stamp)] = (time.monotonic(), time.time())
    return published


def _score(bag, output_dir, config, published, poses, live: dict, description):
    stamps_ns = sorted(published)
    stamps = [stamp * 1e-9 for stamp in stamps_ns]
    with BagSource(bag) as source:
        truths = ground_truth_at(stamps, config, source)
    records, end_to_end, from_stamp = [], [], []
    same_clock = bool(stamps) and abs(published[stamps_ns[0]][1] - stamps[0]) < SAME_CLOCK_S
    for stamp_ns, stamp, truth in zip(stamps_ns, stamps, truths):
        if stamp_ns not in poses:
            records.append(FrameRecord(stamp, None, "no pose received", ground_truth=truth))
            continue
        received, received_wall, pose = poses[stamp_ns]
        end_to_end.append(received - published[stamp_ns][0])
        if same_clock:
            from_stamp.append(received_wall - stamp)
        records.append(FrameRecord(stamp, pose, timings={"total": end_to_end[-1]}, ground_truth=truth))
    if config["alignment"] != "none":
        records, _, _ = align_records(records, with_scale=config["alignment"] == "sim3")
    metrics = compute_metrics(records)
    live.update(
        {
            "frames_published": len(stamps_ns),
            "poses_received": len(end_to_end),
            "dropped_frame_rate": 1.0 - len(end_to_end) / len(stamps_ns) if stamps_ns else None,
            "latency_end_to_end_ms": _percentiles_ms(end_to_end),
            "latency_from_image_stamp_ms": _percentiles_ms(from_stamp)
            if same_clock
            else "n/a: bag stamps are not on this machine's clock",
        }
    )
    metrics["live"] = live
    info = {"bag": str(bag), "mode": "live", "frames": len(records), "live": live, **(description or {})}
    return records, metrics, write_report(Path(output_dir), records, metrics, info)
