"""Small ROS 2 helpers for the nodes: message <-> numpy / geometry conversions and TF.

- Incoming messages are validated where they are converted: anything that cannot be used raises
  :class:`InvalidMessage` (a ``ValueError``) with a short ``reason`` key that the nodes count.
- Images: ``image_to_numpy`` / ``numpy_to_image`` and ``compressed_to_numpy``
  give and take the core's images (``uint8`` ``HxWx3`` RGB or ``HxW`` gray) without cv_bridge.
  Sizes are checked against the expected ones before any pixel is decoded, and compressed images
  are decoded strictly: a corrupt JPEG or PNG is rejected, not turned into a plausible picture.
- Cameras: ``camera_info_to_camera`` (K + plumb_bob D).
- Poses: ``rigid_to_pose`` / ``pose_to_rigid``, ``rigid_to_transform_stamped`` / ``transform_to_rigid``.
  A TF transform with parent ``a`` and child ``b`` is ``a_from_b`` (see ``vloc_ros.geometry``).
- TF: ``make_tf_broadcaster`` and ``make_tf_buffer`` use tf2_ros when it imports and otherwise a
  minimal fallback on tf2_msgs/TFMessage (/tf, /tf_static), so the nodes run on the ROS 2 PyPI
  wheels, which ship no tf2_ros.
"""

from __future__ import annotations

import bisect
import struct
import threading

import numpy as np

from vloc_ros.geometry import Camera, Rigid3

# ----------------------------------------------------------------------------- time


def to_time_msg(stamp=None):
    """``builtin_interfaces/Time`` from None (zero), a Time message, an ``rclpy.time.Time`` or seconds."""
    from builtin_interfaces.msg import Time

    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    if hasattr(stamp, "to_msg"):
        return stamp.to_msg()
    nanoseconds = int(round(float(stamp) * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a Time message, an ``rclpy.time.Time`` or seconds (float)."""
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(round(float(stamp) * 1e9))


def _header(stamp, frame_id):
    from std_msgs.msg import Header

    return Header(stamp=to_time_msg(stamp), frame_id=str(frame_id))


# ----------------------------------------------------------------------------- images


class InvalidMessage(ValueError):
    """An incoming message that cannot be used; the message says why.

    ``reason`` is a short key for counting rejections. Images: ``unsupported_encoding``,
    ``empty_image``, ``malformed_image`` (sizes and data disagree), ``image_too_large``,
    ``image_size_mismatch`` (not the size its CameraInfo says), ``undecodable_image`` (corrupt or
    truncated compressed bytes); ``invalid_camera_info``; ``invalid_tf``; ``invalid_pose``.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# encoding -> (channels, bytes per channel)
IMAGE_ENCODINGS = {"rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1), "mono16": (1, 2)}


def _buffer(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "typecode"):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _mono16_to_8(values: np.ndarray) -> np.ndarray:
    """Full 16-bit range onto 8 bits (65535 -> 255), the scaling cv_bridge uses; x * 257 round-trips."""
    return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)


# Larger than any camera a robot localizes with (4096 x 4096): images and CameraInfos claiming more
# are refused before anything is allocated for them.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 24


def check_image_size(
    width: int, height: int, expected_size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> None:
    """Raise :class:`InvalidMessage` unless ``width x height`` is non-empty, ``expected_size``
    (``(width, height)``, when given) and at most ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise InvalidMessage(f"empty image ({width}x{height})", "empty_image")
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise InvalidMessage(
            f"image is {width}x{height} but its CameraInfo says {expected_size[0]}x{expected_size[1]}",
            "camera_info_size_mismatch",
        )
    if width * height > max_pixels:
        raise InvalidMessage(f"image of {width}x{height} exceeds the limit of {max_pixels} pixels", "image_too_large")


def image_to_numpy(
    msg, expected_size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8`` ``HxWx3`` RGB (colour encodings) or ``HxW`` gray (mono8/mono16).

    mono16 is scaled to 8 bits over its full range (``value / 257``). Alpha channels are dropped.
    The size is checked (``check_image_size``) before the data is touched.
    """
    encoding = str(msg.encoding).strip().lower()
    if encoding not in IMAGE_ENCODINGS:
        raise InvalidMessage(
            f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(IMAGE_ENCODINGS)}",
            "unsupported_encoding",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(width, height, expected_size, max_pixels)
    channels, depth = IMAGE_ENCODINGS[encoding]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise InvalidMessage(
            f"step {step} is smaller than width*bytes per pixel = {row_bytes} ({encoding}, width {width})",
            "malformed_image",
        )
    data = _buffer(msg.data)
    if data.size != step * height:
        raise InvalidMessage(
            f"data has {data.size} bytes but step*height = {step}*{height} = {step * height}", "malformed_image"
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        gray16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        return _mono16_to_8(gray16)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if encoding in ("rgb8", "rgba8"):
        pixels = pixels[..., :3]
    elif encoding in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels)


def numpy_to_image(array, encoding: str | None = None, stamp=None, frame_id: str = ""):
    """A core image -> ``sensor_msgs/Image`` in ``encoding`` (default rgb8 for colour, mono8 for gray).

    Colour encodings take ``HxWx3`` RGB (or ``HxWx4`` RGBA) ``uint8``; rgba8/bgra8 add an opaque
    alpha when there is none. mono8 takes ``HxW`` ``uint8``; mono16 takes ``HxW`` ``uint16`` as is,
    or ``uint8`` scaled by 257 (so ``image_to_numpy`` gives the same ``uint8`` back).
    """
    from sensor_msgs.msg import Image

    array = np.asarray(array)
    if encoding is None:
        encoding = "mono8" if array.ndim == 2 else "rgb8"
    encoding = encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        raise InvalidMessage(
            f"unsupported image encoding '{encoding}'; supported: {', '.join(IMAGE_ENCODINGS)}", "unsupported_encoding"
        )
    channels, depth = IMAGE_ENCODINGS[encoding]
    if array.size == 0:
        raise InvalidMessage(f"empty image (shape {array.shape})", "empty_image")
    if channels == 1:
        if array.ndim != 2:
            raise ValueError(f"{encoding} needs an HxW gray image, got shape {array.shape}")
        if depth == 2:
            if array.dtype == np.uint8:
                pixels = array.astype("<u2") * 257
            elif array.dtype == np.uint16:
                pixels = array.astype("<u2")
            else:
                raise ValueError(f"mono16 needs uint8 or uint16, got {array.dtype}")
        else:
            if array.dtype != np.uint8:
                raise ValueError(f"mono8 needs uint8, got {array.dtype}")
            pixels = array
    else:
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
            raise ValueError(
                f"{encoding} needs an HxWx3 (RGB) or HxWx4 (RGBA) uint8 image, got {array.shape} {array.dtype}"
            )
        rgb, alpha = array[..., :3], array[..., 3:]
        if encoding.startswith("bgr"):
            rgb = rgb[..., ::-1]
        if channels == 4:
            if alpha.shape[2] == 0:
                alpha = np.full(array.shape[:2] + (1,), 255, np.uint8)
            pixels = np.concatenate([rgb, alpha], axis=2)
        else:
            pixels = rgb
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    msg = Image(
        header=_header(stamp, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * depth,
    )
    msg.data = pixels.tobytes()
    return msg


JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def compressed_to_numpy(
    msg, expected_size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG, told apart by their bytes) -> ``uint8`` RGB or gray.

    The size in the header is checked (``check_image_size``) before decoding, so a few hundred
    bytes claiming 65535 x 65535 cost nothing. JPEG is decoded by libjpeg-turbo (simplejpeg) in strict
    mode, which turns libjpeg's corrupt-data warnings into errors: OpenCV and Pillow decode a
    bit-flipped JPEG silently into a damaged image that can still give a confident pose. PNG is
    decoded by Pillow, which checks every chunk's CRC.
    """
    if "compresseddepth" in str(msg.format).replace(" ", "").lower():
        raise InvalidMessage(
            f"compressedDepth images are not supported (format '{msg.format}')", "unsupported_encoding"
        )
    data = _buffer(msg.data)
    if data.size == 0:
        raise InvalidMessage("compressed image has no data", "empty_image")
    head = data[:8].tobytes()
    if head.startswith(JPEG_MAGIC):
        return _decode_jpeg(data, expected_size, max_pixels)
    if head.startswith(PNG_MAGIC):
        return _decode_png(data, expected_size, max_pixels)
    raise InvalidMessage(
        f"compressed image is neither JPEG nor PNG (format '{msg.format}', first bytes {head!r})",
        "unsupported_encoding",
    )


def _decode_jpeg(data: np.ndarray, expected_size, max_pixels: int) -> np.ndarray:
    import simplejpeg

    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise InvalidMessage(f"unreadable JPEG header: {error}", "undecodable_image") from None
    check_image_size(width, height, expected_size, max_pixels)
    gray = colorspace == "Gray"
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", strict=True)
    except ValueError as error:
        raise InvalidMessage(f"corrupt JPEG ({data.size} bytes): {error}", "undecodable_image") from None
    return np.ascontiguousarray(pixels[..., 0]) if gray else pixels


def _decode_png(data: np.ndarray, expected_size, max_pixels: int) -> np.ndarray:
    import io

    from PIL import Image

    # The size is read from IHDR by hand: Pillow's own decompression-bomb check would refuse a
    # huge image with an unhelpful "cannot identify image file" before ours could name the size.
    header = data[:24].tobytes()
    if len(header) < 24 or header[12:16] != b"IHDR":
        raise InvalidMessage(f"PNG without an IHDR chunk ({data.size} bytes)", "undecodable_image")
    width, height = struct.unpack(">II", header[16:24])
    check_image_size(width, height, expected_size, max_pixels)
    encoded = data.tobytes()
    try:
        with Image.open(io.BytesIO(encoded), formats=["PNG"]) as png:
            png.verify()  # every chunk's CRC: decoding alone does not check the image data's
        with Image.open(io.BytesIO(encoded), formats=["PNG"]) as png:
            if png.mode.startswith("I;16"):
                return _mono16_to_8(np.asarray(png, dtype=np.uint16))
            return np.asarray(png if png.mode == "L" else png.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidMessage(f"corrupt PNG ({data.size} bytes): {error}", "undecodable_image") from None


# ----------------------------------------------------------------------------- cameras


def camera_info_to_camera(msg, rectified: bool = False, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Camera:
    """``sensor_msgs/CameraInfo`` -> :class:`Camera` from K and plumb_bob D.

    ``rectified=True`` takes the intrinsics of P and no distortion (for ``image_rect`` topics).
    Raises :class:`InvalidMessage` (``invalid_camera_info``) for what a Camera cannot represent: no
    calibration (zero K), non-finite values, skew, a distortion model other than plumb_bob (or
    rational_polynomial with k4..k6 = 0), binning, ROI, or more than ``max_pixels`` pixels.
    """
    try:
        return _camera_info_to_camera(msg, rectified, max_pixels)
    except ValueError as error:
        raise InvalidMessage(f"CameraInfo rejected: {error}", "invalid_camera_info") from None


def _camera_info_to_camera(msg, rectified: bool, max_pixels: int) -> Camera:
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"CameraInfo has no image size ({width}x{height})")
    if width * height > max_pixels:
        raise ValueError(f"CameraInfo size {width}x{height} exceeds the limit of {max_pixels} pixels")
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise ValueError(f"CameraInfo binning {msg.binning_x}x{msg.binning_y} is not supported")
    roi = msg.roi
    if (roi.x_offset or roi.y_offset) or (roi.width and (roi.width, roi.height) != (width, height)):
        raise ValueError("CameraInfo with a region of interest is not supported")
    if rectified:
        P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
        K, distortion = P[:, :3], ()
        if not np.any(K):
            raise ValueError("CameraInfo has an all-zero P (camera not calibrated)")
    else:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not np.any(K):
            raise ValueError("CameraInfo has an all-zero K (camera not calibrated)")
        model = str(msg.distortion_model).strip().lower()
        d = [float(x) for x in msg.d]
        if model in ("", "none") and not any(d):
            distortion = ()
        elif model == "plumb_bob" and len(d) <= 5:
            distortion = tuple(d)
        elif model == "rational_polynomial" and len(d) <= 8 and not any(d[5:]):
            distortion = tuple(d[:5])
        else:
            raise ValueError(
                f"unsupported distortion model '{msg.distortion_model}' with {len(d)} coefficients; "
                "vloc_ros handles plumb_bob (k1 k2 p1 p2 k3), or rational_polynomial with k4=k5=k6=0"
            )
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(distortion))) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(
            f"CameraInfo intrinsics are not finite with positive focal lengths: K {K.tolist()}, D {list(distortion)}"
        )
    if abs(K[0, 1]) > 1e-9 * max(abs(K[0, 0]), 1.0) or np.any(K[2] != (0.0, 0.0, 1.0)) or K[1, 0] != 0.0:
        raise ValueError(f"CameraInfo intrinsics are not a zero-skew pinhole matrix: {K.tolist()}")
    return Camera.from_K(width, height, K, distortion)


# ----------------------------------------------------------------------------- poses


def rigid_to_pose(rigid: Rigid3):
    """``Rigid3`` (``world_from_body``) -> ``geometry_msgs/Pose`` of the body in the world."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    t, q = rigid.translation, rigid.quaternion_xyzw
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def _rigid_from_message(rotation, translation, reason: str) -> Rigid3:
    """A quaternion and a point/vector message -> Rigid3, refused as tf2 refuses a transform: any
    non-finite value, or a quaternion whose squared norm is off 1 by more than 0.01."""
    q = np.array([rotation.x, rotation.y, rotation.z, rotation.w], dtype=np.float64)
    t = np.array([translation.x, translation.y, translation.z], dtype=np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or abs(q @ q - 1.0) > 0.01:
        raise InvalidMessage(
            f"not a rigid transform (finite translation, unit quaternion): translation "
            f"{t.tolist()}, quaternion xyzw {q.tolist()}",
            reason,
        )
    return Rigid3.from_quaternion(q, t)


def pose_to_rigid(pose) -> Rigid3:
    """``geometry_msgs/Pose`` -> ``Rigid3``; :class:`InvalidMessage` (``invalid_pose``) for a non-finite
    pose or a quaternion that is not unit."""
    return _rigid_from_message(pose.orientation, pose.position, "invalid_pose")


def rigid_to_transform(rigid: Rigid3):
    from geometry_msgs.msg import Quaternion, Transform, Vector3

    t, q = rigid.translation, rigid.quaternion_xyzw
    return Transform(
        translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def rigid_to_transform_stamped(parent_from_child: Rigid3, parent_frame: str, child_frame: str, stamp=None):
    """``parent_from_child`` -> ``geometry_msgs/TransformStamped`` (header.frame_id = parent)."""
    from geometry_msgs.msg import TransformStamped

    return TransformStamped(
        header=_header(stamp, parent_frame),
        child_frame_id=str(child_frame),
        transform=rigid_to_transform(parent_from_child),
    )


def transform_to_rigid(transform) -> Rigid3:
    """``geometry_msgs/Transform`` or ``TransformStamped`` -> ``Rigid3`` (``parent_from_child``);
    :class:`InvalidMessage` (``invalid_tf``) for a non-finite transform or a quaternion that is not unit."""
    transform = getattr(transform, "transform", transform)
    return _rigid_from_message(transform.rotation, transform.translation, "invalid_tf")


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


class FallbackTfBuffer(TfBufferBase):
    """A minimal TF buffer: subscribes /tf and /tf_static and looks up ``parent_from_child``.

    Per child frame it keeps its parent and, for dynamic transforms, the samples of the last
    ``cache_time`` seconds. A lookup at a stamp interpolates each link between the two samples
    around it (linear translation, slerp rotation); a stamp outside a link's samples takes the
    nearest sample if it is at most ``max_age`` seconds away, else raises :class:`TfLookupError`.
    ``stamp=None`` takes each link's latest sample. The node's executor must spin for it to fill.
    """

    def __init__(
        self,
        node=None,
        cache_time: float = 10.0,
        max_age: float = 0.5,
        tf_topic: str = "/tf",
        tf_static_topic: str = "/tf_static",
        subscribe=None,
    ):
        """``subscribe(msg_type, topic, callback, qos)`` makes the subscriptions (default: the node's
        ``create_subscription``); a node passes its ``InputGuard.subscribe`` so that a message with
        invalid transforms is a counted rejection."""
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
        frame as its own parent, a non-finite transform or a quaternion that is not unit."""
        parent = transform.header.frame_id.lstrip("/")
        child = transform.child_frame_id.lstrip("/")
        if not parent or not child or parent == child:
            raise InvalidMessage(
                f"transform '{parent}' -> '{child}' needs two distinct, non-empty frame ids", "invalid_tf"
            )
        value = transform_to_rigid(transform)
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
        return _interpolate(values[i - 1], values[i], (t - times[i - 1]) / (times[i] - times[i - 1]))

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise TfLookupError(f"TF tree has a loop at {frame}")
        return chain

    def lookup(self, parent: str, child: str, stamp=None) -> Rigid3:
        """``parent_from_child`` at ``stamp`` (Time message, rclpy Time, seconds, or None = latest)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
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
            return self._parent.get(frame.lstrip("/"))


def _interpolate(a: Rigid3, b: Rigid3, fraction: float) -> Rigid3:
    from scipy.spatial.transform import Rotation, Slerp

    rotations = Rotation.from_matrix(np.stack([a.rotation, b.rotation]))
    rotation = Slerp([0.0, 1.0], rotations)([fraction]).as_matrix()[0]
    return Rigid3(rotation, (1.0 - fraction) * a.translation + fraction * b.translation)


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
        return frames.get(frame.lstrip("/"), {}).get("parent")


def make_tf_buffer(node, cache_time: float = 10.0, max_age: float = 0.5, subscribe=None):
    """A buffer with ``lookup(parent, child, stamp) -> Rigid3``, ``can_transform`` and ``parent_of(frame)``:
    tf2_ros where it imports (it validates transforms itself), else the fallback, subscribing through
    ``subscribe`` (see :class:`FallbackTfBuffer`)."""
    if _have_tf2_ros():
        return Tf2RosBuffer(node, cache_time)
    return FallbackTfBuffer(node, cache_time, max_age, subscribe=subscribe)
