"""``vloc build-map``: images or a rosbag -> a localization map directory, or more of an existing one (--update)."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import yaml

from ..bag_source import BagContentError, BagReadError
from ..cli import UsageError
from ..config import from_dict
from .builder import BuildConfig, BuildError, build_map
from .distributed import RayCluster
from .map_format import BINARIZER_STATES, GLOBAL_DESCRIPTOR_STATES
from .keyframes import DEFAULT_MIN_INTERVAL_S, DEFAULT_MIN_ROTATION_DEG, DEFAULT_MIN_TRANSLATION_M, KeyframeSelector
from .sources import SourceError, bag_frames, image_folder_frames
from .update import update_map


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-map",
        help="build a localization map from images or a rosbag",
        description="Build a localization map. Known poses (TUM, COLMAP model or a bag pose topic) give a "
        "metric map by triangulation; without them pycolmap runs incremental SfM (arbitrary scale). With "
        "--update MAP the images are registered into MAP instead: new keyframes and points, its keyframes "
        "keep their poses, no rebuild.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of images (searched recursively, sorted by path)")
    source.add_argument("--bag", type=Path, help="ROS 2 bag directory or file (mcap or sqlite3)")
    parser.add_argument("--output", "-o", type=Path, help="map directory to write (e.g. maps/office)")
    parser.add_argument(
        "--update",
        type=Path,
        metavar="MAP",
        help="register the images into the existing map MAP (images already in it, by name, are skipped) "
        "and write it back in place, atomically, or to --output; MAP's build config applies",
    )
    parser.add_argument(
        "--intrinsics",
        type=Path,
        help="camera YAML (vloc keys or a ROS calibration file) for all images, overriding the cameras of "
        "--poses-colmap; default: each image's camera in the COLMAP model, else its EXIF",
    )
    parser.add_argument(
        "--poses-tum", type=Path, help="known world_from_camera poses, one TUM line per image in name order"
    )
    parser.add_argument(
        "--poses-colmap",
        type=Path,
        help="known poses and per-image cameras from a COLMAP model directory (matched by image name)",
    )
    parser.add_argument("--image-topic", default="/camera/image_raw", help="bag image topic (Image or CompressedImage)")
    parser.add_argument("--camera-info-topic", default="/camera/camera_info")
    parser.add_argument("--pose-topic", help="bag topic with known poses: PoseStamped, Odometry, or /tf")
    parser.add_argument("--pose-parent-frame", default="map", help="with --pose-topic /tf: the world frame")
    parser.add_argument("--pose-child-frame", default="base_link", help="the frame the known poses describe")
    parser.add_argument(
        "--camera-frame",
        help="camera optical frame: composes the /tf_static extrinsic "
        "from the pose child frame (omit when poses are camera poses)",
    )
    parser.add_argument("--every-nth", type=int, default=1, help="use every n-th bag image (before keyframe selection)")
    keyframes = parser.add_argument_group(
        "bag keyframe selection",
        "as the vloc_map_builder node: a bag image becomes a keyframe when --min-interval-s "
        "passed since the last one and, with poses, the camera moved --min-translation-m or turned "
        "--min-rotation-deg (0 0 0: every image)",
    )
    keyframes.add_argument(
        "--min-interval-s",
        type=float,
        default=DEFAULT_MIN_INTERVAL_S,
        help="least time between keyframes, seconds (default: %(default)s)",
    )
    keyframes.add_argument(
        "--min-translation-m",
        type=float,
        default=DEFAULT_MIN_TRANSLATION_M,
        help="with poses: least camera motion since the last keyframe, m (default: %(default)s)",
    )
    keyframes.add_argument(
        "--min-rotation-deg",
        type=float,
        default=DEFAULT_MIN_ROTATION_DEG,
        help="with poses: or least rotation since the last keyframe, degrees (default: %(default)s)",
    )
    parser.add_argument("--config", type=Path, help="YAML overriding the build config (extractor, matcher, pairs, ...)")
    learned = parser.add_argument_group(
        "learned descriptors", "trained on the map's own structure from motion during the build (docs/decisions.md)"
    )
    learned.add_argument(
        "--binarizer",
        choices=tuple(BINARIZER_STATES),
        help="binary codes of the local branch: learned = co-trained real + binary head (default: the build config's)",
    )
    learned.add_argument(
        "--global-descriptor",
        choices=tuple(GLOBAL_DESCRIPTOR_STATES),
        help="keyframe retrieval: netvlad = VLAD's vocabulary trained with SARE on the map's co-visibility "
        "(default: the build config's)",
    )
    parser.add_argument(
        "--cache", type=Path, help="feature cache directory (default: OUTPUT.cache; lets a killed build resume)"
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="extract features and match pairs on a Ray cluster (pip install 'vloc_ros[ray]'): 'auto' joins "
        "the cluster this machine belongs to (ray start), 'local' starts one on this machine, HOST:PORT or "
        "ray://HOST:PORT joins that one; reconstruction stays here (docs/scaling.md)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing map")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.output is None and args.update is None:
        raise UsageError("give --output for a new map, or --update MAP to add the images to MAP")
    if args.update and (args.config or args.binarizer or args.global_descriptor):
        raise UsageError(
            "--update builds with the map's own build config; --config, --binarizer and --global-descriptor "
            "are for new maps"
        )
    config = None
    if args.config:
        config = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(config, dict):
            raise UsageError(f"{args.config} must hold a YAML mapping")
        try:
            config = from_dict(BuildConfig, config)  # a misspelt key is the user's to fix, before any work
        except ValueError as error:
            raise UsageError(f"{args.config}: {error}") from None
    if args.binarizer or args.global_descriptor:
        config = from_dict(BuildConfig, config)
        if args.binarizer:
            config = replace(config, binarizer=replace(config.binarizer, method=args.binarizer))
        if args.global_descriptor:
            config = replace(config, global_descriptor=replace(config.global_descriptor, name=args.global_descriptor))
    if args.every_nth < 1:
        raise UsageError("--every-nth must be at least 1")
    for flag in ("min_interval_s", "min_translation_m", "min_rotation_deg"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must not be negative")
    try:
        if args.images:
            frames = image_folder_frames(args.images, args.intrinsics, args.poses_tum, args.poses_colmap)
            description = f"images {args.images}"
        else:
            ground_truth = (
                {
                    "topic": args.pose_topic,
                    "parent_frame": args.pose_parent_frame,
                    "child_frame": args.pose_child_frame,
                    "camera_frame": args.camera_frame,
                }
                if args.pose_topic
                else None
            )
            selector = KeyframeSelector(args.min_interval_s, args.min_translation_m, args.min_rotation_deg)
            frames = bag_frames(
                args.bag, args.image_topic, args.camera_info_topic, ground_truth, args.every_nth, keyframes=selector
            )
            description = f"bag {args.bag} ({args.image_topic})"
        with RayCluster(args.ray) if args.ray else nullcontext() as cluster:
            if args.update:
                summary = update_map(
                    frames,
                    args.update,
                    args.output,
                    cache_dir=args.cache,
                    progress=not args.quiet,
                    overwrite=args.overwrite,
                    source_description=description,
                    cluster=cluster,
                )
            else:
                summary = build_map(
                    frames,
                    args.output,
                    config,
                    cache_dir=args.cache,
                    progress=not args.quiet,
                    overwrite=args.overwrite,
                    source_description=description,
                    cluster=cluster,
                )
    except (SourceError, BuildError, BagContentError, BagReadError) as error:
        raise UsageError(str(error)) from None
    print(summary.format())
    return 0
