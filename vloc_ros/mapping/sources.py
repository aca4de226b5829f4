"""Where map images come from: an image folder (+ intrinsics, optional poses) or a ROS 2 bag.

A source yields ``MapFrame``s in capture order. Images load lazily so a resumed build whose
features are cached never decodes them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import cv2
import numpy as np
import yaml

from ..geometry import Camera, Rigid3
from ..tum import read_tum
from .keyframes import KeyframeSelector
from .reconstruction import world_from_camera

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}


class SourceError(ValueError):
    """The input cannot be turned into map frames (missing intrinsics, poses that do not fit, ...)."""


@dataclass
class MapFrame:
    name: str
    camera: Camera
    load_image: Callable[[], np.ndarray]  # RGB uint8; raises ValueError when unreadable
    world_from_camera: Rigid3 | None = None
    stamp: float | None = None
    # The image file's bytes, which ``decode_image_rgb`` turns into ``load_image()``'s image: a build on
    # a Ray cluster ships them to a worker undecoded. None: the image exists only decoded (a bag's).
    read_file: Callable[[], bytes] | None = None


def read_image_rgb(path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error.strerror or error}") from None
    return decode_image_rgb(data, path)


def decode_image_rgb(data: bytes, name) -> np.ndarray:
    """The RGB image an image file's bytes hold (EXIF orientation applied); ValueError when they hold none."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None or image.size == 0:
        raise ValueError(f"cannot decode image {name}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_intrinsics(path) -> Camera:
    """Camera from YAML: our own keys (width, height, fx, fy, cx, cy, distortion) or a ROS
    camera_calibration file (image_width, image_height, camera_matrix, distortion_coefficients)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SourceError(f"cannot read intrinsics {path}: {error}") from None
    if not isinstance(data, dict):
        raise SourceError(f"intrinsics file {path} is not a YAML mapping")
    if "camera_matrix" in data:
        try:
            K = np.asarray(data["camera_matrix"]["data"], dtype=np.float64).reshape(3, 3)
            distortion = data.get("distortion_coefficients", {}).get("data", [])
            return Camera.from_K(data["image_width"], data["image_height"], K, tuple(distortion)[:5])
        except (KeyError, TypeError, ValueError) as error:
            raise SourceError(f"bad ROS calibration file {path}: {error}") from None
    try:
        return Camera.from_dict(data)
    except ValueError as error:
        raise SourceError(f"bad intrinsics {path}: {error}") from None


def intrinsics_from_exif(path) -> Camera | None:
    """Pinhole guess from the EXIF 35 mm-equivalent focal length, principal point at the centre."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            focal_35mm = image.getexif().get_ifd(0x8769).get(0xA405)
    except OSError:
        return None
    if not focal_35mm:
        return None
    focal = float(focal_35mm) / 36.0 * max(width, height)
    return Camera(width, height, focal, focal, (width - 1) / 2, (height - 1) / 2)


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"image folder {folder} does not exist")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return images


class ColmapModel:
    """Poses and cameras of a COLMAP model's images by image name, read from disk once."""

    def __init__(self, model_dir):
        import pycolmap

        try:
            self._reconstruction = pycolmap.Reconstruction(str(model_dir))
        except Exception as error:  # pycolmap raises plain RuntimeError/ValueError variants
            raise SourceError(f"cannot read COLMAP model {model_dir}: {error}") from None
        self.model_dir = Path(model_dir)
        self._images = {image.name: image for image in self._reconstruction.images.values()}
        self._names_by_basename: dict[str, list[str]] = {}
        for name in self._images:
            self._names_by_basename.setdefault(PurePosixPath(name).name, []).append(name)

    def pose(self, name: str) -> Rigid3 | None:
        """``world_from_camera`` of image ``name``; None when the model lacks it or has not posed it."""
        image = self._images.get(name)
        return world_from_camera(image) if image is not None and image.has_pose else None

    def camera(self, name: str) -> Camera | None:
        """The camera of image ``name``; None when the model lacks the image.

        SourceError when the model's camera has no plumb_bob equivalent (e.g. a fisheye model).
        """
        image = self._images.get(name)
        if image is None:
            return None
        try:
            return Camera.from_pycolmap(self._reconstruction.cameras[image.camera_id])
        except ValueError as error:
            raise SourceError(f"camera of {name} in COLMAP model {self.model_dir}: {error}") from None

    def camera_for_file(self, path) -> Camera | None:
        """The camera of image file ``path``: the model image whose name ends the path (the longest
        such, so ``a/0.png`` and ``b/0.png`` stay apart), else the one model image of the same
        basename. SourceError when several model images share that basename."""
        parts = Path(path).parts
        for start in range(len(parts)):
            name = "/".join(parts[start:])
            if name in self._images:
                return self.camera(name)
        names = self._names_by_basename.get(Path(path).name, [])
        if len(names) > 1:
            raise SourceError(f"{path} matches several images of COLMAP model {self.model_dir}: {', '.join(names)}")
        return self.camera(names[0]) if names else None


def _frame_camera(path: Path, name: str, intrinsics: Camera | None, model: ColmapModel | None) -> Camera:
    """``--intrinsics`` for all images, else the image's camera in the COLMAP model, else EXIF."""
    camera = intrinsics or (model.camera(name) if model else None) or intrinsics_from_exif(path)
    if camera is None:
        not_in_model = f"it is not in COLMAP model {model.model_dir}; " if model else ""
        raise SourceError(
            f"no intrinsics for {path}: {not_in_model}pass --intrinsics (YAML) or use images with an EXIF focal length"
        )
    return camera


def image_folder_frames(folder, intrinsics=None, poses_tum=None, poses_colmap=None) -> list[MapFrame]:
    """Frames for every image in ``folder`` (sorted by relative path).

    Intrinsics come from a YAML file for all images or, failing that, each image's camera in the
    COLMAP model (``poses_colmap``), else its EXIF. TUM poses associate with images by order (one
    line per image); COLMAP poses and cameras by image name.
    """
    folder = Path(folder)
    paths = list_images(folder)
    names = [p.relative_to(folder).as_posix() for p in paths]
    camera = load_intrinsics(intrinsics) if intrinsics else None
    model = ColmapModel(poses_colmap) if poses_colmap else None
    poses: list[Rigid3 | None] = [None] * len(paths)
    stamps: list[float | None] = [None] * len(paths)
    if poses_tum:
        tum_stamps, tum_poses = read_tum(poses_tum)
        if len(tum_poses) != len(paths):
            raise SourceError(
                f"{poses_tum} has {len(tum_poses)} poses for {len(paths)} images in {folder}; "
                "TUM poses associate with the images in name order, one line each"
            )
        poses, stamps = list(tum_poses), [float(s) for s in tum_stamps]
    elif model:
        poses = [model.pose(name) for name in names]
    return [
        MapFrame(
            name,
            _frame_camera(path, name, camera, model),
            lambda path=path: read_image_rgb(path),
            pose,
            stamp,
            read_file=path.read_bytes,
        )
        for path, name, pose, stamp in zip(paths, names, poses, stamps)
    ]


def bag_frames(
    bag_path,
    image_topic: str,
    camera_info_topic: str,
    ground_truth: dict | None = None,
    every_nth: int = 1,
    max_gap: float = 0.2,
    keyframes: KeyframeSelector | None = None,
) -> Iterator[MapFrame]:
    """Frames from a ROS 2 bag: images (raw or compressed) + CameraInfo (+ known poses).

    ``ground_truth`` is a ``BagSource.ground_truth`` config (a PoseStamped/Odometry/TF topic, and
    a ``camera_frame`` to compose the static extrinsic when the topic tracks the body); its poses
    are interpolated to the image stamps. A frame without a pose within ``max_gap`` seconds has
    none (the builder then runs SfM). A generator: each image is decoded once and dropped after
    the builder extracted it.

    ``every_nth`` keeps every n-th image; of those, ``keyframes`` (when given) keeps the ones it
    selects, by stamp and pose, as the map-builder node would.
    """
    from ..bag_source import BagSource
    from ..geometry import PoseInterpolator

    with BagSource(bag_path) as source:
        camera = source.camera(camera_info_topic)
        known = PoseInterpolator(*source.ground_truth(ground_truth), max_gap) if ground_truth else None
        for index, (stamp, image) in enumerate(source.images(image_topic)):
            if index % every_nth:
                continue
            pose = known.at(stamp) if known else None
            if keyframes is not None and not keyframes.select(round(stamp * 1e9), pose):
                continue
            yield MapFrame(f"{stamp:.9f}", camera, lambda image=image: image, pose, stamp)
