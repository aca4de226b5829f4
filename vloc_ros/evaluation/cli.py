"""``vloc eval``: localize a bag's images against a map and write a report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bag_source import BagContentError, BagReadError
from ..cli import UsageError
from ..mapping.map_format import MapError, load_map
from ..localization_cli import add_localizer_arguments, localizer_config
from ..covariance import CovarianceConfig, write_calibration
from .calibration import calibrate_covariance
from .offline import DEFAULT_EVAL_CONFIG, DEFAULT_LIVE_CONFIG, evaluate_bag
from .report import format_table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate localization on a rosbag, write a report",
        description="Replay a ROS 2 bag through the localizer and score it against ground truth: recall at "
        "(5 cm, 1 deg) ... (5 m, 10 deg), wrong-pose rate, errors, NEES, latency; writes report.md, "
        "report.json, plots and TUM files. With --live the bag is played over ROS 2 to a "
        "vloc_localizer node (a running one, or one started here with --map) and its published "
        "poses are scored, with dropped frames and end-to-end latency.",
    )
    parser.add_argument("bag", type=Path, help="ROS 2 bag (mcap or sqlite3)")
    parser.add_argument(
        "--map",
        type=Path,
        help="map directory (required offline; with --live: start a localizer node with it in this process)",
    )
    parser.add_argument("--output", "-o", type=Path, default=Path("eval_report"), help="report directory")
    parser.add_argument(
        "--image-topic", default=DEFAULT_EVAL_CONFIG["image_topic"], help="sensor_msgs/Image or CompressedImage topic"
    )
    parser.add_argument("--camera-info-topic", default=DEFAULT_EVAL_CONFIG["camera_info_topic"])
    gt = DEFAULT_EVAL_CONFIG["ground_truth"]
    parser.add_argument("--gt-topic", default=gt["topic"], help="PoseStamped, Odometry or /tf ground truth")
    parser.add_argument("--gt-parent-frame", default="map", help="with --gt-topic /tf: the world frame")
    parser.add_argument("--gt-child-frame", default=gt["child_frame"], help="the frame the ground truth tracks")
    parser.add_argument(
        "--gt-camera-frame",
        default=gt["camera_frame"],
        help="camera optical frame, composed from /tf_static; '' when ground truth is the camera",
    )
    parser.add_argument("--gt-tum", type=Path, help="ground-truth camera poses as a TUM file instead of a topic")
    parser.add_argument(
        "--max-gap",
        type=float,
        default=DEFAULT_EVAL_CONFIG["max_gap"],
        help="frames whose ground-truth samples are further apart (s) are left unevaluated",
    )
    parser.add_argument(
        "--align",
        choices=["none", "se3", "sim3"],
        default="none",
        help="align the estimate to ground truth first (map frame != ground-truth frame)",
    )
    add_localizer_arguments(parser)
    parser.add_argument(
        "--odom-frame",
        default=DEFAULT_EVAL_CONFIG["odometry"]["odom_frame"],
        help="odometry frame of the bag's /tf (to --gt-child-frame), replayed as the node reads it; '' ignores it",
    )
    parser.add_argument(
        "--no-prior",
        dest="use_prior",
        action="store_false",
        help="localize each frame on its own, without the last pose guiding the next (the node's use_prior)",
    )
    parser.add_argument(
        "--force-loss-every",
        type=float,
        metavar="SECONDS",
        help="make the tracker LOST that often (as ~/relocalize does) and report the time to relocalize",
    )
    parser.add_argument(
        "--calibrate-covariance",
        type=Path,
        metavar="FILE",
        help="fit the published covariance to this bag's ground truth (NEES 6) and write the localizer "
        "node's covariance_* parameters to FILE (use it with --covariance, or as a second params file)",
    )
    live = parser.add_argument_group("live evaluation over ROS 2")
    live.add_argument("--live", action="store_true", help="replay the bag with rclpy to a localizer node")
    live.add_argument(
        "--node",
        default=DEFAULT_LIVE_CONFIG["node"],
        help="fully qualified name of the running localizer node (without --map)",
    )
    live.add_argument("--rate", type=float, default=DEFAULT_LIVE_CONFIG["rate"], help="replay speed factor")
    live.add_argument(
        "--no-tf",
        dest="replay_tf",
        action="store_false",
        help="do not replay /tf and /tf_static (the node then publishes camera poses)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise UsageError("--rate must be positive")
    if args.force_loss_every is not None and args.force_loss_every <= 0:
        raise UsageError("--force-loss-every must be positive")
    if args.live and (args.calibrate_covariance or args.force_loss_every):
        raise UsageError("--calibrate-covariance and --force-loss-every work offline only (without --live)")
    if args.live:
        return run_live(args)
    if args.map is None:
        raise UsageError("--map is required (or use --live against a running localizer node)")
    from ..localizer import Localizer

    try:
        localization_map = load_map(args.map)
    except MapError as error:
        raise UsageError(str(error)) from None
    localizer = Localizer(localization_map, localizer_config(args))
    try:
        records, metrics, report_dir = evaluate_bag(
            localizer,
            args.bag,
            args.output,
            _config(args),
            progress=True,
            description={
                "map": str(args.map),
                "search_mode": localizer.config.search.mode.value,
                "profile": localizer.profile.value,
            },
        )
    except (BagContentError, BagReadError) as error:
        raise UsageError(str(error)) from None
    print(format_table(metrics))
    print(f"report: {report_dir / 'report.md'}")
    if args.calibrate_covariance:
        _calibrate(records, localizer.config.covariance, args)
    return 0


def _calibrate(records, current: CovarianceConfig, args: argparse.Namespace) -> None:
    try:
        calibrated, before, after = calibrate_covariance(records, current)
    except ValueError as error:
        raise UsageError(f"cannot calibrate the covariance: {error}") from None
    comment = (
        f"Covariance calibration by `vloc eval --calibrate-covariance` on {args.bag} with map {args.map}:\n"
        f"NEES mean {before['mean']:.1f} -> {after['mean']:.1f}, inside the 95 % band "
        f"{before['inside_band']:.0%} -> {after['inside_band']:.0%} ({after['frames']} frames)."
    )
    write_calibration(args.calibrate_covariance, calibrated, comment)
    print(comment.replace("\n", " "))
    print(f"calibration: {args.calibrate_covariance}")


def _config(args: argparse.Namespace) -> dict:
    return {
        "image_topic": args.image_topic,
        "camera_info_topic": args.camera_info_topic,
        "ground_truth": {
            "topic": args.gt_topic,
            "parent_frame": args.gt_parent_frame,
            "child_frame": args.gt_child_frame,
            "camera_frame": args.gt_camera_frame or None,
        },
        "ground_truth_tum": args.gt_tum,
        "max_gap": args.max_gap,
        "alignment": args.align,
        "tracking": {"use_prior": args.use_prior},
        "odometry": {"odom_frame": args.odom_frame, "base_frame": args.gt_child_frame},
        "force_loss_every_s": args.force_loss_every,
    }


def run_live(args: argparse.Namespace) -> int:
    # The live evaluation talks ROS 2, so it lives with the nodes (setup.cfg [importlinter]: this is the one
    # import from evaluation into nodes).
    from ..nodes.live_evaluation import LiveEvalError, evaluate_live

    config = {**_config(args), "node": args.node, "rate": args.rate, "replay_tf": args.replay_tf}
    node_parameters = {"search_mode": args.mode, "profile": args.profile}
    node_parameters = {name: value for name, value in node_parameters.items() if value}
    if not args.use_prior:
        node_parameters["use_prior"] = False
    try:
        _, metrics, report_dir = evaluate_live(
            args.bag, args.output, config, map_path=args.map, node_parameters=node_parameters
        )
    except (BagContentError, BagReadError, LiveEvalError) as error:
        raise UsageError(str(error)) from None
    live = metrics["live"]
    print(format_table(metrics))
    print(f"poses received for {live['poses_received']} of {live['frames_published']} frames published")
    print(f"report: {report_dir / 'report.md'}")
    return 0
