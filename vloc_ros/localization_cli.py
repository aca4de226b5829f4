"""``vloc localize``: images -> a TUM file of camera poses + one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import UsageError
from .mapping.map_format import MapError, load_map
from .mapping.sources import IMAGE_SUFFIXES, SourceError, load_intrinsics, read_image_rgb
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
    parser.add_argument(
        "--intrinsics", type=Path, required=True, help="camera YAML (vloc keys or ROS calibration file)"
    )
    parser.add_argument("--output", "-o", type=Path, default=Path("poses.tum"), help="TUM file to write")
    parser.add_argument("--mode", choices=[mode.value for mode in SearchMode], help="candidate search mode")
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from .localizer import Localizer

    try:
        camera = load_intrinsics(args.intrinsics)
        localization_map = load_map(args.map)
    except (SourceError, MapError) as error:
        raise UsageError(str(error)) from None
    config = {"search": {"mode": args.mode}} if args.mode else None
    localizer = Localizer(localization_map, config)
    stamps, poses = [], []
    for index, path in enumerate(_image_paths(args.images)):
        record = {"image": str(path)}
        try:
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
