"""``vloc sim``: render the synthetic world into a directory (images, ground truth, ROS 2 bags)."""

from __future__ import annotations

import argparse

from ..cli import UsageError

# command-line flag -> config key (flags left out keep DEFAULT_CONFIG's value)
FLAGS = {
    "seed": "seed",
    "scene": "scene",
    "scene_size": "scene_size",
    "width": "width",
    "height": "height",
    "focal_length": "focal_length",
    "map_frames": "map_frames",
    "query_frames": "query_frames",
    "distortion": "distortion",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="render the synthetic world: images, ground truth and ROS 2 bags",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--out", required=True, help="output directory (new or empty)")
    parser.add_argument("--seed", type=int, help="random seed (default 0); same seed, same images")
    parser.add_argument("--scene", help="courtyard (default) or repeated")
    parser.add_argument("--scene-size", type=float, help="metres across (default 6)")
    parser.add_argument("--width", type=int, help="image width in pixels (default 640)")
    parser.add_argument("--height", type=int, help="image height in pixels (default 480)")
    parser.add_argument("--focal-length", type=float, help="fx = fy in pixels (default 500 at 640 wide)")
    parser.add_argument("--map-frames", type=int, help="mapping images (default 60)")
    parser.add_argument("--query-frames", type=int, help="query images (default 30)")
    parser.add_argument(
        "--distortion",
        type=float,
        nargs="+",
        metavar="K",
        help="plumb_bob coefficients k1 [k2 p1 p2 k3] (default none)",
    )
    parser.add_argument("--storages", help="bag storages, comma separated (default 'mcap,sqlite3'; 'none': no bags)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .generate import generate

    config = {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None}
    if args.storages is not None:
        storages = [] if args.storages.strip() == "none" else [s.strip() for s in args.storages.split(",")]
        config["bags"] = {"storages": storages}
    try:
        summary = generate(config, args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(
        f"vloc sim: {len(summary['map']['images'])} map and {len(summary['query']['images'])} query images, "
        f"{len(summary['bags'])} bags in {summary['out_dir']} ({summary['seconds']:.1f} s)"
    )
    return 0
