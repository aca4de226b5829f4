"""``vloc images-to-bag``: an image sequence with known poses as a ROS 2 bag to replay and evaluate.

A recorded sequence (a folder of images in capture order, poses as a TUM file or a COLMAP model, one
camera) becomes the bag ``vloc eval`` and ``ros2 bag play`` take: Image, CompressedImage, CameraInfo
and the ground truth as PoseStamped, laid out as ``vloc_ros.sim.bag`` writes it. The ground truth is
the camera's own pose, so ``base_link`` is the camera optical frame (an identity /tf_static); no
odometry is written unless asked for, since odometry made from the ground truth is perfect.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import UsageError
from .geometry import Rigid3


def parse_frames(text: str) -> slice:
    """``START:STOP[:STEP]`` (Python slice syntax over the images in name order) -> slice."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START:STOP or START:STOP:STEP")
    try:
        values = [int(part) if part.strip() else None for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: START, STOP and STEP must be integers") from None
    if len(values) == 3 and values[2] is not None and values[2] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: STEP must be positive")
    return slice(*values)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "images-to-bag",
        help="write an image sequence with known poses as a ROS 2 bag",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("images", type=Path, help="folder of images; their name order is the capture order")
    parser.add_argument("--out", type=Path, required=True, help="the bag to write (must not exist)")
    parser.add_argument("--intrinsics", type=Path, help="camera YAML (ours or a ROS calibration file)")
    poses = parser.add_mutually_exclusive_group(required=True)
    poses.add_argument("--poses-tum", type=Path, help="TUM file, camera-to-world, one line per image in name order")
    poses.add_argument("--poses-colmap", type=Path, help="COLMAP model: poses (and cameras) by image name")
    parser.add_argument(
        "--rate",
        type=float,
        help="stamp the images at this many Hz (image i at i / RATE s); default: the TUM file's stamps",
    )
    parser.add_argument("--frames", type=parse_frames, help="START:STOP[:STEP] of the images, e.g. 600:1000")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="of the CompressedImage copy (1-100)")
    parser.add_argument(
        "--odometry-from-ground-truth",
        action="store_true",
        help="also write /odom and /tf odom -> base_link, drift-free from the ground truth (a perfect odometry)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .atomic import atomic_new_path
    from .mapping.sources import SourceError, image_folder_frames
    from .sim.bag import CameraBagWriter

    if args.out.exists():
        raise UsageError(f"{args.out} exists; choose a new path for the bag")
    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if not 1 <= args.jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be 1-100, got {args.jpeg_quality}")
    try:
        frames = image_folder_frames(args.images, args.intrinsics, args.poses_tum, args.poses_colmap)
    except SourceError as error:
        raise UsageError(str(error)) from None
    indices = list(range(len(frames)))[args.frames or slice(None)]
    if not indices:
        raise UsageError(f"--frames selects none of the {len(frames)} images")
    unposed = [frames[i].name for i in indices if frames[i].world_from_camera is None]
    if unposed:
        raise UsageError(f"{len(unposed)} images have no pose, e.g. {unposed[0]}")
    cameras = {frames[i].camera for i in indices}
    if len(cameras) > 1:
        raise UsageError("the images have several cameras; a bag's CameraInfo topic carries one")
    if args.rate is None and any(frames[i].stamp is None for i in indices):
        raise UsageError("the poses carry no stamps (a COLMAP model): pass --rate")
    stamps = [i / args.rate if args.rate else frames[i].stamp for i in indices]
    try:
        with (
            atomic_new_path(args.out) as staged,
            CameraBagWriter(
                staged,
                cameras.pop(),
                Rigid3(),
                storage=args.storage,
                jpeg_quality=args.jpeg_quality,
                odometry=args.odometry_from_ground_truth,
            ) as writer,
        ):
            for index, stamp in zip(tqdm(indices, desc="images-to-bag", unit="img"), stamps):
                frame = frames[index]
                image = frame.load_image()
                if (image.shape[1], image.shape[0]) != (frame.camera.width, frame.camera.height):
                    raise ValueError(
                        f"{frame.name} is {image.shape[1]}x{image.shape[0]}, "
                        f"the camera {frame.camera.width}x{frame.camera.height}"
                    )
                writer.write_frame(round(stamp * 1e9), image, frame.world_from_camera)
    except ValueError as error:  # stamps not increasing, an unreadable image, an image the camera does not fit
        raise UsageError(f"{error}; no bag written") from None
    print(f"wrote {len(indices)} frames to {args.out} ({stamps[0]:.3f}-{stamps[-1]:.3f} s)")
    return 0
