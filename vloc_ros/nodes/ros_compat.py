"""What the nodes need rclpy for: building messages, and TF.

Reading messages (validation included) is ROS-free and lives in ``vloc_ros.msgs``; the builders
here fill rclpy messages from its field functions, so nodes, bags and the sim share one mapping.

- ``message_class`` imports the rclpy class of a type name such as ``sensor_msgs/msg/Image``.
- Builders: ``to_time_msg``, ``numpy_to_image``, ``camera_to_camera_info``, ``rigid_to_pose``,
  ``rigid_to_transform``, ``rigid_to_transform_stamped``.
- TF: ``make_tf_broadcaster`` and ``make_tf_buffer`` use tf2_ros when it imports and otherwise a
  minimal fallback on tf2_msgs/TFMessage (/tf, /tf_static), so the nodes run on the ROS 2 PyPI
  wheels, which ship no tf2_ros.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import threading
from typing import Callable

from vloc_ros.geometry import Camera, Rigid3, interpolate_pose
from vloc_ros.msgs import (
    InvalidMessage,
    camera_info_fields,
    frame_id,
    image_fields,
    quaternion_fields,
    stamp_to_ns,
    time_fields,
    transform_link,
    transform_to_rigid,
    vector_fields,
)


@functools.cache
def message_class(msgtype: str):
    """The rclpy message class of a ROS 2 type name such as ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


# ----------------------------------------------------------------------------- builders


def to_time_msg(stamp=None):
    """``builtin_interfaces/Time`` from None (zero), a Time message, an ``rclpy.time.Time`` or seconds."""
    from builtin_interfaces.msg import Time

    return Time(**time_fields(0 if stamp is None else stamp_to_ns(stamp)))


def _header(stamp, frame_id):
    from std_msgs.msg import Header

    return Header(stamp=to_time_msg(stamp), frame_id=str(frame_id))


def numpy_to_image(array, encoding: str | None = None, stamp=None, frame_id: str = ""):
    """A core image -> ``sensor_msgs/Image`` in ``encoding`` (see ``vloc_ros.msgs.image_fields``)."""
    from sensor_msgs.msg import Image

    fields = image_fields(array, encoding)
    # bytes: rclpy copies them at once, a numpy array element by element
    return Image(header=_header(stamp, frame_id), **{**fields, "data": fields["data"].tobytes()})


def camera_to_camera_info(camera: Camera, stamp=None, frame_id: str = ""):
    """A :class:`Camera` -> ``sensor_msgs/CameraInfo`` (see ``vloc_ros.msgs.camera_info_fields``)."""
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(header=_header(stamp, frame_id), **camera_info_fields(camera))


def rigid_to_pose(rigid: Rigid3):
    """``Rigid3`` (``world_from_body``) -> ``geometry_msgs/Pose`` of the body in the world."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    return Pose(position=Point(**vector_fields(rigid.translation)), orientation=Quaternion(**quaternion_fields(rigid)))


def rigid_to_transform(rigid: Rigid3):
    from geometry_msgs.msg import Quaternion, Transform, Vector3

    return Transform(
        translation=Vector3(**vector_fields(rigid.translation)), rotation=Quaternion(**quaternion_fields(rigid))
    )


def rigid_to_transform_stamped(parent_from_child: Rigid3, parent_frame: str, child_frame: str, stamp=None):
    """``parent_from_child`` -> ``geometry_msgs/TransformStamped`` (header.frame_id = parent)."""
    from geometry_msgs.msg import TransformStamped

    return TransformStamped(
        header=_header(stamp, parent_frame),
        child_frame_id=str(child_frame),
        transform=rigid_to_transform(parent_from_child),
    )


# ----------------------------------------------------------------------------- TF


class TfLookupError(LookupError):
    """A transform that the buffer cannot give (unknown frame, no common tree, time out of range)."""


def _have_tf2_ros() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def _tf_qos(static: bool, depth: int):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    durability = DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=durability)


def _as_list(transforms):
    return list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]


class FallbackTransformBroadcaster:
    """Publishes ``tf2_msgs/TFMessage`` on /tf (or, ``static=True``, latched on /tf_static)."""

    def __init__(self, node, static: bool = False, topic: str | None = None):
        from tf2_msgs.msg import TFMessage

        self._msg_type = TFMessage
        self._static = static
        self._latched: dict[str, object] = {}
        topic = topic or ("/tf_static" if static else "/tf")
        self._publisher = node.create_publisher(TFMessage, topic, _tf_qos(static, 1 if static else 100))

    def sendTransform(self, transforms) -> None:  # noqa: N802 (tf2_ros name)
        transforms = _as_list(transforms)
        if self._static:  # like tf2_ros: the latched message carries every static transform sent so far
            self._latched.update({t.child_frame_id: t for t in transforms})
            transforms = list(self._latched.values())
        self._publisher.publish(self._msg_type(transforms=transforms))


def make_tf_broadcaster(node):
    """tf2_ros.TransformBroadcaster where available, else :class:`FallbackTransformBroadcaster`."""
    if _have_tf2_ros():
        import tf2_ros

        return tf2_ros.TransformBroadcaster(node)
    return FallbackTransformBroadcaster(node)


class TfBufferBase:
    """What both TF buffers share; subclasses provide ``lookup(parent, child, stamp)``."""

    def can_transform(self, parent: str, child: str, stamp=None) -> bool:
        try:
            self.lookup(parent, child, stamp)
        except TfLookupError:
            return False
        return True


def _nanoseconds(clock) -> Callable[[], int]:
    """A function giving an rclpy clock's now in nanoseconds."""
    return lambda: clock.now().nanoseconds


class FallbackTfBuffer(TfBufferBase):
    """A minimal TF buffer: subscribes /tf and /tf_static and looks up ``parent_from_child``.

    Per child frame it keeps its parent and, for dynamic transforms, the samples of the last
    ``cache_time`` seconds. A lookup at a stamp interpolates each link between the two samples
    around it (linear translation, slerp rotation); a stamp outside a link's samples takes the
    nearest sample if it is at most ``max_age`` seconds away, else raises :class:`TfLookupError`.
    ``stamp=None`` takes each link's latest sample. The node's executor must spin for it to fill.

    A dynamic transform stamped more than ``cache_time`` ahead of the clock is refused: the cache
    keeps ``cache_time`` before a link's newest sample, so one such stamp would push every current
    sample of the link out, and keep pushing each new one out, until the clock caught up with it.
    """

    def __init__(
        self,
        node=None,
        cache_time: float = 10.0,
        max_age: float = 0.5,
        tf_topic: str = "/tf",
        tf_static_topic: str = "/tf_static",
        subscribe=None,
        now_ns: Callable[[], int] | None = None,
    ):
        """``subscribe(msg_type, topic, callback, qos)`` makes the subscriptions (default: the node's
        ``create_subscription``); a node passes its ``InputGuard.subscribe`` so that a message with
        invalid transforms is a counted rejection. ``now_ns``: the clock stamps are checked against
        (default: the node's; none without a node); 0 (sim time before the first /clock) checks nothing."""
        self._now_ns = now_ns if now_ns is not None or node is None else _nanoseconds(node.get_clock())
        self.cache_ns = int(cache_time * 1e9)
        self.max_age_ns = int(max_age * 1e9)
        self._lock = threading.Lock()
        self._parent: dict[str, str] = {}
        self._static: dict[str, Rigid3] = {}
        self._times: dict[str, list[int]] = {}
        self._values: dict[str, list[Rigid3]] = {}
        if node is not None:
            from tf2_msgs.msg import TFMessage

            subscribe = subscribe or node.create_subscription
            self._subscriptions = [
                subscribe(TFMessage, tf_topic, lambda m: self._on_message(m, False), _tf_qos(False, 100)),
                subscribe(TFMessage, tf_static_topic, lambda m: self._on_message(m, True), _tf_qos(True, 100)),
            ]

    def _on_message(self, msg, static: bool) -> None:
        """Keeps the message's valid transforms, as tf2 does, and then refuses the invalid ones."""
        invalid = []
        for transform in msg.transforms:
            try:
                self.set_transform(transform, static)
            except InvalidMessage as error:
                invalid.append(error)
        if invalid:
            raise InvalidMessage(
                f"{len(invalid)} of {len(msg.transforms)} transforms refused, e.g. {invalid[0]}", "invalid_tf"
            )

    def set_transform(self, transform, static: bool = False) -> None:
        """Add one ``TransformStamped`` (what the subscriptions do for each received transform).

        Refuses (:class:`InvalidMessage`, ``invalid_tf``) what tf2 refuses: an empty frame id, a
        frame as its own parent, a non-finite transform or a quaternion that is not unit; and a
        dynamic transform stamped more than the cache ahead of the clock."""
        parent, child, value = transform_link(transform)
        now = self._now_ns() if self._now_ns is not None and not static else 0
        if now > 0 and stamp_to_ns(transform.header.stamp) - now > self.cache_ns:
            raise InvalidMessage(
                f"transform {parent} -> {child} is stamped "
                f"{(stamp_to_ns(transform.header.stamp) - now) * 1e-9:.0f} s ahead of this node's clock, more "
                f"than the {self.cache_ns * 1e-9:g} s TF cache: it would push every current sample out",
                "invalid_tf",
            )
        with self._lock:
            if self._parent.get(child) != parent:  # new frame or re-parented: forget its history
                self._static.pop(child, None)
                self._times.pop(child, None)
                self._values.pop(child, None)
                self._parent[child] = parent
            if static:
                self._static[child] = value
                return
            self._static.pop(child, None)
            times = self._times.setdefault(child, [])
            values = self._values.setdefault(child, [])
            t = stamp_to_ns(transform.header.stamp)
            i = bisect.bisect_left(times, t)
            if i < len(times) and times[i] == t:
                values[i] = value
            else:
                times.insert(i, t)
                values.insert(i, value)
            drop = bisect.bisect_left(times, times[-1] - self.cache_ns)
            del times[:drop], values[:drop]

    def _link(self, child: str, t: int | None) -> Rigid3:
        """``parent_from_child`` for one link at time ``t`` (ns, or None for the latest)."""
        if child in self._static:
            return self._static[child]
        times, values = self._times[child], self._values[child]
        if t is None:
            return values[-1]
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return values[i]
        if i == 0 or i == len(times):
            nearest = 0 if i == 0 else len(times) - 1
            if abs(times[nearest] - t) > self.max_age_ns:
                raise TfLookupError(
                    f"no transform {self._parent[child]} -> {child} at {t * 1e-9:.3f} s: samples span "
                    f"[{times[0] * 1e-9:.3f}, {times[-1] * 1e-9:.3f}] s (max age {self.max_age_ns * 1e-9} s)"
                )
            return values[nearest]
        return interpolate_pose(values[i - 1], values[i], (t - times[i - 1]) / (times[i] - times[i - 1]))

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise TfLookupError(f"TF tree has a loop at {frame}")
        return chain

    def lookup(self, parent: str, child: str, stamp=None) -> Rigid3:
        """``parent_from_child`` at ``stamp`` (Time message, rclpy Time, seconds, or None = latest)."""
        parent, child = frame_id(parent), frame_id(child)
        t = None if stamp is None else stamp_to_ns(stamp)
        if t == 0:
            t = None  # Time() means "latest", as in tf2
        with self._lock:
            up_child, up_parent = self._chain(child), self._chain(parent)
            common = next((f for f in up_child if f in set(up_parent)), None)
            if common is None:
                known = "known" if child in self._parent or parent in self._parent else "unknown"
                raise TfLookupError(
                    f"frames '{parent}' and '{child}' are not connected ({known} frames: "
                    f"{sorted(set(self._parent) | set(self._parent.values()))})"
                )
            common_from_child = Rigid3()
            for frame in up_child[: up_child.index(common)]:
                common_from_child = self._link(frame, t) @ common_from_child
            common_from_parent = Rigid3()
            for frame in up_parent[: up_parent.index(common)]:
                common_from_parent = self._link(frame, t) @ common_from_parent
        return common_from_parent.inverse() @ common_from_child

    def parent_of(self, frame: str) -> str | None:
        """The frame's parent in the TF tree (latest), None for a root or an unknown frame."""
        with self._lock:
            return self._parent.get(frame_id(frame))


class Tf2RosBuffer(TfBufferBase):
    """The same ``lookup`` interface on top of ``tf2_ros.Buffer`` + ``TransformListener``."""

    def __init__(self, node, cache_time: float = 10.0):
        import tf2_ros
        from rclpy.duration import Duration

        self._tf2_ros = tf2_ros
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time))
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def lookup(self, parent: str, child: str, stamp=None) -> Rigid3:
        from rclpy.time import Time

        when = Time() if stamp is None else Time(nanoseconds=stamp_to_ns(stamp))
        try:
            return transform_to_rigid(self.buffer.lookup_transform(parent, child, when))
        except self._tf2_ros.TransformException as error:
            raise TfLookupError(str(error)) from error

    def parent_of(self, frame: str) -> str | None:
        import yaml

        frames = yaml.safe_load(self.buffer.all_frames_as_yaml()) or {}
        return frames.get(frame_id(frame), {}).get("parent")


def make_tf_buffer(node, cache_time: float = 10.0, max_age: float = 0.5, subscribe=None):
    """A buffer with ``lookup(parent, child, stamp) -> Rigid3``, ``can_transform`` and ``parent_of(frame)``:
    tf2_ros where it imports (it validates transforms itself), else the fallback, subscribing through
    ``subscribe`` (see :class:`FallbackTfBuffer`)."""
    if _have_tf2_ros():
        return Tf2RosBuffer(node, cache_time)
    return FallbackTfBuffer(node, cache_time, max_age, subscribe=subscribe)
