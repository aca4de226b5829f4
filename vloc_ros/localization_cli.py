"""``vloc localize``: images -> a TUM file of camera poses + one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Callable

from .cli import UsageError
from .config import to_dict
from .covariance import read_calibration
from .geometry import Camera
from .mapping.map_format import MapError, load_map
from .mapping.sources import (
    IMAGE_SUFFIXES,
    ColmapModel,
    SourceError,
    intrinsics_from_exif,
    load_intrinsics,
    read_image_rgb,
)
from .localizer import Localizer, Profile
from .search import SearchMode
from .tum import write_tum


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "localize",
        help="localize images against a map",
        description="Localize images against a map. Writes world_from_camera (camera optical frame in the map "
        "frame) of every localized image to a TUM file and one JSON line per image to stdout.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("--map", type=Path, required=True, help="map directory from `vloc build-map`")
    cameras = parser.add_mutually_exclusive_group()
    cameras.add_argument(
        "--intrinsics",
        type=Path,
        help="camera YAML (vloc keys or ROS calibration file) for every image, or a directory with one such "
        "YAML per image named <image stem>.yaml; default: each image's EXIF",
    )
    cameras.add_argument(
        "--cameras-colmap",
        type=Path,
        help="COLMAP model directory: each image's camera is that of the model image with its file name "
        "(the model's image name ending the image path, or its basename)",
    )
    parser.add_argument("--output", "-o", type=Path, default=Path("poses.tum"), help="TUM file to write")
    add_localizer_arguments(parser)
    parser.set_defaults(func=run)


def add_localizer_arguments(parser) -> None:
    """The localizer options ``vloc localize`` and ``vloc eval`` share (``localizer_config`` reads them)."""
    parser.add_argument("--mode", choices=[mode.value for mode in SearchMode], help="candidate search mode")
    parser.add_argument(
        "--profile",
        choices=[profile.value for profile in Profile],
        help="fast: the search alone, re-matching only weak poses (CPU); accurate: LightGlue re-matching on "
        "every frame; default auto: accurate where the feature network runs on a GPU",
    )
    parser.add_argument(
        "--covariance",
        type=Path,
        help="covariance calibration (a parameters file from `vloc eval --calibrate-covariance`); default: "
        "the localizer's defaults",
    )


def localizer_config(args: argparse.Namespace) -> dict:
    config = {"profile": args.profile} if args.profile else {}
    if args.mode:
        config["search"] = {"mode": args.mode}
    if args.covariance:
        try:
            config["covariance"] = to_dict(read_calibration(args.covariance))
        except ValueError as error:
            raise UsageError(str(error)) from None
    return config


def _image_paths(inputs: list[Path]) -> list[Path]:
    paths = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise UsageError(f"{item} does not exist")
    return paths


def _stamp(path: Path, index: int) -> float:
    """Numeric file stems (e.g. 1700000000.100000000.png) are stamps; otherwise the image index."""
    try:
        return float(path.stem)
    except ValueError:
        return float(index)


def _camera_from_directory(directory: Path, image_path: Path) -> Camera | None:
    yaml_path = directory / f"{image_path.stem}.yaml"
    return load_intrinsics(yaml_path) if yaml_path.is_file() else None


def _camera_source(args: argparse.Namespace) -> tuple[Callable[[Path], Camera | None], str]:
    """Each image's camera lookup (None: no camera), and what to do about an image without one."""
    if args.cameras_colmap:
        model = ColmapModel(args.cameras_colmap)
        return model.camera_for_file, f"it is not in COLMAP model {args.cameras_colmap}"
    if args.intrinsics is None:
        return intrinsics_from_exif, "it has no EXIF focal length; pass --intrinsics or --cameras-colmap"
    if args.intrinsics.is_dir():
        directory = args.intrinsics
        return partial(_camera_from_directory, directory), f"{directory} has no <image stem>.yaml for it"
    camera = load_intrinsics(args.intrinsics)  # read once, and a bad file stops the run before any image
    return lambda _: camera, ""


def run(args: argparse.Namespace) -> int:
    try:
        camera_for, missing_camera_hint = _camera_source(args)
        localization_map = load_map(args.map)
    except (SourceError, MapError) as error:
        raise UsageError(str(error)) from None
    localizer = Localizer(localization_map, localizer_config(args))
    stamps, poses = [], []
    for index, path in enumerate(_image_paths(args.images)):
        record = {"image": str(path)}
        try:
            camera = camera_for(path)
            if camera is None:
                raise SourceError(f"no intrinsics for {path}: {missing_camera_hint}")
            result = localizer.localize(read_image_rgb(path), camera)
        except ValueError as error:
            record.update(status="ERROR", reason=str(error))
        else:
            record.update(result.summary())
            if result.ok:
                stamps.append(_stamp(path, index))
                poses.append(result.world_from_camera)
        print(json.dumps(record), flush=True)
    write_tum(args.output, stamps, poses)
    print(f"{len(poses)} poses written to {args.output}", file=sys.stderr)
    return 0
