"""ROS messages <-> the core's types, without ROS: one layer for the nodes, bag reading and the sim.

Reading is duck-typed: rclpy messages and ``rosbags`` messages have the same field names, so every
function here takes either, and a bag gets exactly the validation the nodes apply.

- Anything that cannot be used raises :class:`InvalidMessage` (a ``ValueError``) with a short
  ``reason`` key that the nodes count.
- Images: ``image_to_numpy`` and ``compressed_to_numpy`` give the core's images (``uint8``
  ``HxWx3`` RGB or ``HxW`` gray). Sizes are checked against the expected ones before any pixel is
  decoded, and compressed images are decoded strictly: a corrupt JPEG or PNG is rejected, not turned
  into a plausible picture. cv_bridge is not used: it has no wheel, and it decodes corrupt JPEGs silently.
- Cameras: ``camera_info_to_camera`` (K + plumb_bob D, with the checks of what a Camera cannot hold).
- Poses: ``pose_to_rigid``, ``transform_to_rigid``, ``transform_link`` (one TF transform, validated
  as tf2 validates it). A TF transform with parent ``a`` and child ``b`` is ``a_from_b``.
- Time: ``stamp_to_ns`` / ``stamp_to_seconds`` and ``time_fields``.

Writing needs a message class, which differs between rclpy and ``rosbags``: the ``*_fields``
functions give the field values (numpy arrays for array fields) that both construct messages from.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from .geometry import Camera, Rigid3

# ----------------------------------------------------------------------------- time


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a Time message (rclpy or rosbags), an ``rclpy.time.Time`` or seconds (float)."""
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(round(float(stamp) * 1e9))


def stamp_to_seconds(stamp) -> float:
    """Seconds of anything ``stamp_to_ns`` takes (the core's image and ground-truth stamps)."""
    return stamp_to_ns(stamp) * 1e-9


def time_fields(stamp_ns: int) -> dict:
    """``builtin_interfaces/Time`` fields of a stamp in nanoseconds."""
    stamp_ns = int(stamp_ns)
    return {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000}


def frame_id(name: str) -> str:
    """A TF frame id as tf2 compares it: ROS 1 style "/map" and "map" name the same frame."""
    return str(name).lstrip("/")


# ----------------------------------------------------------------------------- images


class InvalidMessage(ValueError):
    """An incoming message that cannot be used; the message says why.

    ``reason`` is a short key for counting rejections. Images: ``unsupported_encoding``,
    ``empty_image``, ``malformed_image`` (sizes and data disagree), ``image_too_large``,
    ``camera_info_size_mismatch`` (not the size its CameraInfo says), ``undecodable_image`` (corrupt
    or truncated compressed bytes); ``invalid_camera_info``; ``invalid_tf``; ``invalid_pose``.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# encoding -> (channels, bytes per channel)
IMAGE_ENCODINGS = {"rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1), "mono16": (1, 2)}

# Larger than any camera a robot localizes with (4096 x 4096): images and CameraInfos claiming more
# are refused before anything is allocated for them.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 24

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _buffer(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "typecode"):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _mono16_to_8(values: np.ndarray) -> np.ndarray:
    """Full 16-bit range onto 8 bits (65535 -> 255), the scaling cv_bridge uses; x * 257 round-trips."""
    return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)


def _check_encoding(encoding: str) -> str:
    normalised = str(encoding).strip().lower()
    if normalised not in IMAGE_ENCODINGS:
        raise InvalidMessage(
            f"unsupported image encoding '{encoding}'; supported: {', '.join(IMAGE_ENCODINGS)}", "unsupported_encoding"
        )
    return normalised


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
    Rows may be padded (``step``). The size is checked (``check_image_size``) before the data is touched.
    """
    encoding = _check_encoding(msg.encoding)
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


def image_fields(array, encoding: str | None = None) -> dict:
    """A core image -> ``sensor_msgs/Image`` fields (``data`` a flat ``uint8`` array), no header.

    ``encoding`` defaults to rgb8 for colour, mono8 for gray. Colour encodings take ``HxWx3`` RGB
    (or ``HxWx4`` RGBA) ``uint8``; rgba8/bgra8 add an opaque alpha when there is none. mono8 takes
    ``HxW`` ``uint8``; mono16 takes ``HxW`` ``uint16`` as is, or ``uint8`` scaled by 257 (so
    ``image_to_numpy`` gives the same ``uint8`` back).
    """
    array = np.asarray(array)
    encoding = _check_encoding("mono8" if encoding is None and array.ndim == 2 else encoding or "rgb8")
    channels, depth = IMAGE_ENCODINGS[encoding]
    if array.size == 0:
        raise InvalidMessage(f"empty image (shape {array.shape})", "empty_image")
    if channels == 1:
        pixels = _gray_pixels(array, encoding, depth)
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
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels * depth,
        "data": pixels.reshape(-1).view(np.uint8),
    }


def _gray_pixels(array: np.ndarray, encoding: str, depth: int) -> np.ndarray:
    if array.ndim != 2:
        raise ValueError(f"{encoding} needs an HxW gray image, got shape {array.shape}")
    if depth == 1:
        if array.dtype != np.uint8:
            raise ValueError(f"mono8 needs uint8, got {array.dtype}")
        return array
    if array.dtype == np.uint8:
        return array.astype("<u2") * 257
    if array.dtype == np.uint16:
        return array.astype("<u2")
    raise ValueError(f"mono16 needs uint8 or uint16, got {array.dtype}")


def compressed_image_fields(array, format: str = "jpeg", quality: int = 90) -> dict:
    """A core image (RGB or gray ``uint8``) -> ``sensor_msgs/CompressedImage`` fields (``data`` a flat
    ``uint8`` array), no header, encoded by OpenCV as ``format`` jpeg or png."""
    import cv2

    format = format.lower()
    if format not in ("jpeg", "jpg", "png"):
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got '{format}'")
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or array.size == 0:
        raise ValueError(f"need a non-empty HxWx3 RGB or HxW gray uint8 image, got {array.shape} {array.dtype}")
    gray = array.ndim == 2
    pixels = array if gray else np.ascontiguousarray(array[..., ::-1])
    if format == "png":
        ok, encoded = cv2.imencode(".png", pixels)
    else:
        format = "jpeg"
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {format}")
    encoding = "mono8" if gray else "rgb8"
    # image_transport's convention: "<original encoding>; <format> compressed <stored encoding>".
    return {"format": f"{encoding}; {format} compressed {'mono8' if gray else 'bgr8'}", "data": encoded.reshape(-1)}


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
        distortion = _plumb_bob(str(msg.distortion_model), [float(x) for x in msg.d])
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(distortion))) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(
            f"CameraInfo intrinsics are not finite with positive focal lengths: K {K.tolist()}, D {list(distortion)}"
        )
    if abs(K[0, 1]) > 1e-9 * max(abs(K[0, 0]), 1.0) or np.any(K[2] != (0.0, 0.0, 1.0)) or K[1, 0] != 0.0:
        raise ValueError(f"CameraInfo intrinsics are not a zero-skew pinhole matrix: {K.tolist()}")
    return Camera.from_K(width, height, K, distortion)


def _plumb_bob(model: str, d: list[float]) -> tuple:
    normalised = model.strip().lower()
    if normalised in ("", "none") and not any(d):
        return ()
    if normalised == "plumb_bob" and len(d) <= 5:
        return tuple(d)
    if normalised == "rational_polynomial" and len(d) <= 8 and not any(d[5:]):
        return tuple(d[:5])
    raise ValueError(
        f"unsupported distortion model '{model}' with {len(d)} coefficients; "
        "vloc_ros handles plumb_bob (k1 k2 p1 p2 k3), or rational_polynomial with k4=k5=k6=0"
    )


def camera_info_fields(camera: Camera) -> dict:
    """A :class:`Camera` of unrectified images -> ``sensor_msgs/CameraInfo`` fields, no header or roi
    (the default all-zero roi is "the full image"): plumb_bob D, R = identity, P = [K | 0]."""
    K = camera.K
    return {
        "height": camera.height,
        "width": camera.width,
        "distortion_model": "plumb_bob",
        "d": np.asarray(camera.distortion, dtype=np.float64),
        "k": K.ravel(),
        "r": np.eye(3).ravel(),
        "p": np.hstack([K, np.zeros((3, 1))]).ravel(),
        "binning_x": 0,
        "binning_y": 0,
    }


# ----------------------------------------------------------------------------- poses


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


def transform_to_rigid(transform) -> Rigid3:
    """``geometry_msgs/Transform`` or ``TransformStamped`` -> ``Rigid3`` (``parent_from_child``);
    :class:`InvalidMessage` (``invalid_tf``) for a non-finite transform or a quaternion that is not unit."""
    transform = getattr(transform, "transform", transform)
    return _rigid_from_message(transform.rotation, transform.translation, "invalid_tf")


def transform_link(transform) -> tuple[str, str, Rigid3]:
    """``geometry_msgs/TransformStamped`` -> (parent frame, child frame, ``parent_from_child``).

    Refuses (:class:`InvalidMessage`, ``invalid_tf``) what tf2 refuses: an empty frame id, a frame
    as its own parent, a non-finite transform or a quaternion that is not unit."""
    parent, child = frame_id(transform.header.frame_id), frame_id(transform.child_frame_id)
    if not parent or not child or parent == child:
        raise InvalidMessage(f"transform '{parent}' -> '{child}' needs two distinct, non-empty frame ids", "invalid_tf")
    return parent, child, transform_to_rigid(transform)


def vector_fields(values) -> dict:
    """``geometry_msgs/Point`` or ``Vector3`` fields of three numbers."""
    x, y, z = (float(v) for v in values)
    return {"x": x, "y": y, "z": z}


def quaternion_fields(rigid: Rigid3) -> dict:
    """``geometry_msgs/Quaternion`` fields of a transform's rotation."""
    x, y, z, w = (float(v) for v in rigid.quaternion_xyzw)
    return {"x": x, "y": y, "z": z, "w": w}
