"""``vloc eval``: localize a bag's images against a map and write a report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UsageError
from ..mapping.map_format import MapError, load_map
from .bag_source import BagContentError, BagReadError
from .offline import DEFAULT_EVAL_CONFIG, evaluate_bag
from .report import format_table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate localization on a rosbag, write a report",
        description="Replay a ROS 2 bag through the localizer and score it against ground truth: recall at "
                    "(5 cm, 1 deg) ... (5 m, 10 deg), wrong-pose rate, errors, latency; writes report.md, "
                    "report.json, plots and TUM files.")
    parser.add_argument("bag", type=Path, help="ROS 2 bag (mcap or sqlite3)")
    parser.add_argument("--map", type=Path, required=True, help="map directory")
    parser.add_argument("--output", "-o", type=Path, default=Path("eval_report"), help="report directory")
    parser.add_argument("--image-topic", default=DEFAULT_EVAL_CONFIG["image_topic"],
                        help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--camera-info-topic", default=DEFAULT_EVAL_CONFIG["camera_info_topic"])
    gt = DEFAULT_EVAL_CONFIG["ground_truth"]
    parser.add_argument("--gt-topic", default=gt["topic"], help="PoseStamped, Odometry or /tf ground truth")
    parser.add_argument("--gt-parent-frame", default="map", help="with --gt-topic /tf: the world frame")
    parser.add_argument("--gt-child-frame", default=gt["child_frame"], help="the frame the ground truth tracks")
    parser.add_argument("--gt-camera-frame", default=gt["camera_frame"],
                        help="camera optical frame, composed from /tf_static; '' when ground truth is the camera")
    parser.add_argument("--gt-tum", type=Path, help="ground-truth camera poses as a TUM file instead of a topic")
    parser.add_argument("--max-gap", type=float, default=DEFAULT_EVAL_CONFIG["max_gap"],
                        help="frames whose ground-truth samples are further apart (s) are left unevaluated")
    parser.add_argument("--align", choices=["none", "se3", "sim3"], default="none",
                        help="align the estimate to ground truth first (map frame != ground-truth frame)")
    parser.add_argument("--mode", choices=["parallel", "global_only", "local_only"], help="candidate search mode")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..localizer import Localizer

    try:
        localization_map = load_map(args.map)
    except MapError as error:
        raise UsageError(str(error)) from None
    localizer = Localizer(localization_map, {"search": {"mode": args.mode}} if args.mode else None)
    config = {"image_topic": args.image_topic, "camera_info_topic": args.camera_info_topic,
              "ground_truth": {"topic": args.gt_topic, "parent_frame": args.gt_parent_frame,
                               "child_frame": args.gt_child_frame, "camera_frame": args.gt_camera_frame or None},
              "ground_truth_tum": args.gt_tum, "max_gap": args.max_gap, "alignment": args.align}
    try:
        _, metrics, report_dir = evaluate_bag(localizer, args.bag, args.output, config, progress=True,
                                              description={"map": str(args.map),
                                                           "search_mode": localizer.config["search"]["mode"]})
    except (BagContentError, BagReadError) as error:
        raise UsageError(str(error)) from None
    print(format_table(metrics))
    print(f"report: {report_dir / 'report.md'}")
    return 0
