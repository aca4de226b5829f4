"""What the evaluation and the map builder read from a ROS 2 bag (mcap or sqlite3, directory or
single file) with ``rosbags``, without a ROS install: images, the camera model and ground-truth poses.

Image stamps are header stamps (when the camera saw the scene), never bag receive times. Messages
are converted and validated by ``vloc_ros.msgs``, as the nodes convert them: a bag cannot build a map
from images or a CameraInfo that the localizer node would reject. Invalid transforms and poses are
skipped with a warning, as tf2 drops them.

A damaged bag (a recording cut short, a corrupt chunk) is read up to the damage: each pass stops
there, logs a warning and appends a ``ReadStop`` to ``BagSource.read_stops`` saying how far it got.
An mcap file whose end is missing cannot be opened through its index, so it is read sequentially.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from .geometry import Camera, Rigid3, interpolate_poses
from .msgs import (
    InvalidMessage,
    camera_info_to_camera,
    compressed_to_numpy,
    image_to_numpy,
    pose_to_rigid,
    stamp_to_seconds,
    transform_link,
)

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
# Pose-carrying message type -> the geometry_msgs/Pose inside it.
POSE_FIELDS = {
    "geometry_msgs/msg/PoseStamped": lambda message: message.pose,
    "geometry_msgs/msg/PoseWithCovarianceStamped": lambda message: message.pose.pose,
    "nav_msgs/msg/Odometry": lambda message: message.pose.pose,
}

GROUND_TRUTH_DEFAULTS = {
    "topic": "/tf",  # TFMessage, PoseStamped, PoseWithCovarianceStamped or Odometry
    "parent_frame": "map",  # TF only: the world frame of the ground truth
    "child_frame": "base_link",  # the frame the poses describe
    "camera_frame": None,  # when set: compose child_frame -> camera_frame from static TF
    "static_topic": "/tf_static",
}


class BagReadError(Exception):
    """The bag cannot be opened at all."""


class BagContentError(Exception):
    """The bag lacks what was asked for (a topic, a message, a transform chain)."""


class MissingTopicError(BagContentError):
    """No topic of that name and a usable type; the message lists the bag's topics with types."""

    def __init__(self, bag: Path, topic: str, expected_types: Iterable[str], topics: dict[str, str]):
        self.topic = topic
        self.topics = dict(topics)
        expected = " or ".join(expected_types)
        found = f" (it is {topics[topic]})" if topic in topics else ""
        listing = "\n".join(f"  {name}  [{msgtype}]" for name, msgtype in sorted(topics.items())) or "  (none)"
        super().__init__(f"bag {bag} has no {expected} topic {topic!r}{found}; its topics are:\n{listing}")


@dataclass(frozen=True)
class ReadStop:
    """Where a pass over a damaged bag stopped."""

    topics: tuple[str, ...]  # what the pass was reading ("*" = every topic)
    messages_read: int  # messages of those topics read before the damage
    last_stamp: float | None  # bag receive time (s) of the last of them
    error: str


class BagSource:
    """An open bag. Use as a context manager; every reading method is a fresh pass over the bag."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        self.read_stops: list[ReadStop] = []
        self._backend = _open_backend(self.path)
        if isinstance(self._backend, _McapStreamBackend):
            # Channels can sit anywhere in the stream: find them (and the damage) by reading it all.
            for _ in self._until_damage(self._backend.raw_messages(None), ("*",)):
                pass
            if not self._backend.topics:
                raise BagReadError(
                    f"cannot read {self.path}: no topic before the damage "
                    f"({self.read_stops[-1].error if self.read_stops else 'empty'})"
                )
        self.topics: dict[str, str] = dict(self._backend.topics)

    def __enter__(self) -> "BagSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    def images(self, topic: str) -> Iterator[tuple[float, np.ndarray]]:
        """(header stamp in seconds, HxWx3 RGB uint8 image, HxW for mono) for each message; an image
        the node would reject raises :class:`vloc_ros.msgs.InvalidMessage`."""
        decode = (
            compressed_to_numpy
            if self._require(topic, (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)) == COMPRESSED_IMAGE_TYPE
            else image_to_numpy
        )
        for _, _, message in self._messages({topic}):
            yield stamp_to_seconds(message.header.stamp), decode(message)

    def camera(self, topic: str) -> Camera:
        """The camera of the first CameraInfo message (K and plumb_bob distortion); one the node would
        reject raises :class:`vloc_ros.msgs.InvalidMessage`."""
        self._require(topic, (CAMERA_INFO_TYPE,))
        for _, _, message in self._messages({topic}):
            return camera_info_to_camera(message)
        raise BagContentError(f"bag {self.path}: topic {topic!r} has no readable message")

    def poses(self, topic: str) -> tuple[np.ndarray, list[Rigid3]]:
        """(header stamps, poses) of a PoseStamped / PoseWithCovarianceStamped / Odometry topic."""
        pose_of = POSE_FIELDS[self._require(topic, tuple(POSE_FIELDS))]
        stamps, poses = [], []
        for _, _, message in self._messages({topic}):
            try:
                pose = pose_to_rigid(pose_of(message))
            except InvalidMessage as error:
                logger.warning("bag %s: %s pose skipped: %s", self.path, topic, error)
                continue
            stamps.append(stamp_to_seconds(message.header.stamp))
            poses.append(pose)
        return np.asarray(stamps, dtype=np.float64), poses

    def tf_poses(
        self, parent: str, child: str, topic: str = "/tf", static_topic: str = "/tf_static"
    ) -> tuple[np.ndarray, list[Rigid3]]:
        """``parent_from_child`` over time through a chain of TF frames (e.g. map -> odom -> base_link).

        The stamps are those of the busiest dynamic link; slower links are interpolated at them and
        static links (from ``static_topic`` when the bag has it) are constant. Stamps outside any
        dynamic link's span are dropped.
        """
        self._require(topic, (TF_TYPE,))
        dynamic = self._tf_links(topic)
        static = {}
        if static_topic in self.topics:
            static = {link: poses[-1] for link, (_, poses) in self._tf_links(static_topic).items()}
        path = _frame_path(parent, child, {**static, **dynamic}, self.path)
        moving = [link for link, _ in path if link in dynamic]
        if not moving:
            raise BagContentError(f"bag {self.path}: the chain {parent} -> {child} on {topic} has no moving link")
        stamps = np.unique(max((dynamic[link][0] for link in moving), key=len))
        samples = {link: interpolate_poses(*dynamic[link], stamps, max_gap=np.inf) for link in moving}
        keep = [i for i in range(len(stamps)) if all(samples[link][i] is not None for link in moving)]
        poses = []
        for i in keep:
            links = {link: samples[link][i] for link in moving}
            poses.append(_compose(path, {**static, **links}))
        return stamps[keep], poses

    def static_transform(self, parent: str, child: str, topic: str = "/tf_static") -> Rigid3:
        """``parent_from_child`` through a chain of static TF frames (e.g. base_link -> camera_optical)."""
        self._require(topic, (TF_TYPE,))
        static = {link: poses[-1] for link, (_, poses) in self._tf_links(topic).items()}
        return _compose(_frame_path(parent, child, static, self.path), static)

    def ground_truth(self, config: dict) -> tuple[np.ndarray, list[Rigid3]]:
        """Ground-truth (stamps, world_from_frame) as ``GROUND_TRUTH_DEFAULTS`` describes; with a
        ``camera_frame`` that is ``world_from_camera = world_from_child @ child_from_camera``."""
        config = {**GROUND_TRUTH_DEFAULTS, **config}
        topic = config["topic"]
        if self._require(topic, (TF_TYPE, *POSE_FIELDS)) == TF_TYPE:
            stamps, poses = self.tf_poses(config["parent_frame"], config["child_frame"], topic, config["static_topic"])
        else:
            stamps, poses = self.poses(topic)
        if config["camera_frame"]:
            child_from_camera = self.static_transform(
                config["child_frame"], config["camera_frame"], config["static_topic"]
            )
            poses = [pose @ child_from_camera for pose in poses]
        return stamps, poses

    def _require(self, topic: str, types: tuple[str, ...]) -> str:
        """The topic's type, or MissingTopicError when it is absent or of none of ``types``."""
        if self.topics.get(topic) not in types:
            raise MissingTopicError(self.path, topic, types, self.topics)
        return self.topics[topic]

    def _tf_links(self, topic: str) -> dict[tuple[str, str], tuple[list[float], list[Rigid3]]]:
        """(parent, child) -> (header stamps, parent_from_child) of every transform on a TF topic."""
        links: dict[tuple[str, str], tuple[list[float], list[Rigid3]]] = defaultdict(lambda: ([], []))
        for _, _, message in self._messages({topic}):
            for transform in message.transforms:
                try:
                    parent, child, parent_from_child = transform_link(transform)
                except InvalidMessage as error:
                    logger.warning("bag %s: %s transform skipped: %s", self.path, topic, error)
                    continue
                stamps, poses = links[(parent, child)]
                stamps.append(stamp_to_seconds(transform.header.stamp))
                poses.append(parent_from_child)
        return dict(links)

    def raw_messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, str, bytes]]:
        """(topic, receive time in ns, message type, CDR bytes) of ``topics`` in bag order, until the
        end or the damage (for a reader with its own deserializer, such as rclpy's)."""
        topics = set(topics)
        return self._until_damage(self._backend.raw_messages(topics), tuple(sorted(topics)))

    def _messages(self, topics: set[str]) -> Iterator[tuple[str, int, object]]:
        """(topic, receive time in ns, deserialized message) until the end or the damage."""
        decoded = (
            (topic, stamp, self._backend.deserialize(raw, msgtype))
            for topic, stamp, msgtype, raw in self._backend.raw_messages(topics)
        )
        return self._until_damage(decoded, tuple(sorted(topics)))

    def _until_damage(self, items: Iterator[tuple], topics: tuple[str, ...]) -> Iterator[tuple]:
        count, last_stamp = 0, None
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as error:  # damage surfaces as whatever the decoder trips over
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                stop = ReadStop(topics, count, last_stamp, reason)
                self.read_stops.append(stop)
                logger.warning(
                    "bag %s is damaged: reading %s stopped after %d messages (last at %s s): %s",
                    self.path,
                    ", ".join(topics),
                    count,
                    last_stamp,
                    stop.error,
                )
                return
            count += 1
            last_stamp = item[1] * 1e-9
            yield item


@functools.cache
def _standard_typestore():
    # For bags that embed no message definitions, and for the sequential mcap reader: the types
    # read here have had the same definitions in every ROS 2 distribution.
    return get_typestore(Stores.LATEST)


def _open_backend(path: Path):
    storage = path
    if path.is_dir() and not (path / "metadata.yaml").exists():
        # A recorder killed before it wrote metadata.yaml leaves only its storage file.
        files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        if len(files) != 1:
            raise BagReadError(f"{path} has no metadata.yaml and {len(files)} storage files (.mcap/.db3)")
        storage = files[0]
    try:
        reader = AnyReader([storage], default_typestore=_standard_typestore())
        reader.open()
        return _RosbagsBackend(reader)
    except AnyReaderError as error:
        mcap_files = [storage] if storage.suffix == ".mcap" else sorted(storage.glob("*.mcap"))
        if not mcap_files:
            raise BagReadError(f"cannot open bag {path}: {error}") from error
        logger.warning("bag %s cannot be opened through its index (%s); reading it sequentially", path, error)
        return _McapStreamBackend(mcap_files)


class _RosbagsBackend:
    def __init__(self, reader: AnyReader):
        self.reader = reader
        self.topics = {name: info.msgtype for name, info in reader.topics.items()}

    def raw_messages(self, topics: set[str]) -> Iterator[tuple[str, int, str, bytes]]:
        connections = [c for c in self.reader.connections if c.topic in topics]
        if connections:  # an empty list would mean every connection to rosbags
            for connection, stamp, raw in self.reader.messages(connections):
                yield connection.topic, stamp, connection.msgtype, raw

    def deserialize(self, raw: bytes, msgtype: str):
        return self.reader.deserialize(raw, msgtype)

    def close(self) -> None:
        self.reader.close()


class _McapStreamBackend:
    """Reads mcap files record by record, in file order, without the index at their end."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.topics: dict[str, str] = {}

    def raw_messages(self, topics: set[str] | None) -> Iterator[tuple[str, int, str, bytes]]:
        """Messages of ``topics`` (None: all); learns ``self.topics`` on the way."""
        for file in self.files:
            schemas: dict[int, str] = {}
            channels: dict[int, tuple[str, str]] = {}
            with open(file, "rb") as stream:
                for record in StreamReader(stream).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
                        self.topics[record.topic] = channels[record.id][1]
                    elif isinstance(record, Message):
                        topic, msgtype = channels[record.channel_id]
                        if topics is None or topic in topics:
                            yield topic, record.log_time, msgtype, record.data

    def deserialize(self, raw: bytes, msgtype: str):
        return _standard_typestore().deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        pass


def _frame_path(
    parent: str, child: str, links: dict[tuple[str, str], object], bag: Path
) -> list[tuple[tuple[str, str], bool]]:
    """The TF links from ``parent`` to ``child`` as (link, traversed child-to-parent) steps."""
    neighbours = defaultdict(list)
    for link in links:
        neighbours[link[0]].append((link[1], link, False))
        neighbours[link[1]].append((link[0], link, True))
    previous: dict[str, tuple | None] = {parent: None}
    queue = deque([parent])
    while queue and child not in previous:
        frame = queue.popleft()
        for neighbour, link, inverted in neighbours[frame]:
            if neighbour not in previous:
                previous[neighbour] = (frame, link, inverted)
                queue.append(neighbour)
    if child not in previous:
        known = ", ".join(f"{p}->{c}" for p, c in sorted(links)) or "none"
        raise BagContentError(f"bag {bag}: no TF chain from {parent!r} to {child!r}; links: {known}")
    path, frame = [], child
    while previous[frame] is not None:
        frame, link, inverted = previous[frame]
        path.append((link, inverted))
    return path[::-1]


def _compose(path: list[tuple[tuple[str, str], bool]], transforms: dict[tuple[str, str], Rigid3]) -> Rigid3:
    result = Rigid3()
    for link, inverted in path:
        result = result @ (transforms[link].inverse() if inverted else transforms[link])
    return result
