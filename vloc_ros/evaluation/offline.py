"""Offline evaluation: run the node's Localizer and Tracker frame by frame over a bag and score it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..bag_source import BagContentError, BagSource
from ..geometry import Rigid3, interpolate_poses
from ..tracking import Tracker, TrackingStep
from ..tum import read_tum
from .alignment import align_records
from .metrics import compute_metrics
from .records import FrameRecord
from .report import write_report

logger = logging.getLogger(__name__)

DEFAULT_EVAL_CONFIG = {
    "image_topic": "/camera/image_raw",
    "camera_info_topic": "/camera/camera_info",
    # Ground truth: a bag topic (BagSource.ground_truth keys) or a TUM file of camera poses.
    "ground_truth": {"topic": "/ground_truth/pose", "child_frame": "base_link", "camera_frame": "camera_optical_frame"},
    "ground_truth_tum": None,
    "max_gap": 0.25,  # seconds between ground-truth samples bracketing an image
    "alignment": "none",  # none | se3 | sim3: when the map frame is not the ground-truth frame
    # The node's tracking (vloc_ros.tracking.TrackingConfig): the last pose guides the next frame;
    # {"use_prior": False} localizes each frame on its own.
    "tracking": {},
    # Odometry as the node reads it: TF odom_frame -> base_frame from the bag's /tf, composed with the
    # ground truth's camera_frame from /tf_static. A bag without that chain is replayed without
    # odometry; odom_frame "" ignores it.
    "odometry": {"odom_frame": "odom", "base_frame": "base_link"},
    "force_loss_every_s": None,  # seconds: make the tracker LOST that often to time relocalization
}
# The live evaluation's (vloc_ros.nodes.live_evaluation, `vloc eval --live`) defaults: here, without ROS,
# so that the `vloc eval` command line shows them.
DEFAULT_LIVE_CONFIG = {
    **DEFAULT_EVAL_CONFIG,
    "node": "/vloc_localizer",  # the localizer node to evaluate (when not started here)
    "rate": 1.0,  # replay speed: 2.0 = twice the bag's pace
    "replay_tf": True,  # also replay /tf and /tf_static
    "wait_s": 30.0,  # for the node's topics to appear
    "drain_s": 3.0,  # after the last image, for the poses still to come
}


@dataclass(frozen=True)
class ReplayedFrame:
    stamp: float
    step: TrackingStep
    odom_from_camera: Rigid3 | None
    map_from_odom: Rigid3 | None  # the fused map -> odom after the frame
    forced_loss: bool


def localize_bag(
    localizer,
    source: BagSource,
    image_topic: str,
    camera,
    tracking: dict | None = None,
    odometry: tuple | None = None,
    max_gap: float = 0.25,
    progress: bool = False,
    force_loss_every_s: float | None = None,
) -> list[ReplayedFrame]:
    """Every image on ``image_topic``, in order, through the node's ``Tracker`` with ``tracking``
    (``TrackingConfig``) settings; ``odometry``: (stamps, odom_from_camera) to interpolate at each image
    (``odometry_track``), or None. ``force_loss_every_s``: make the tracker LOST that often (as
    ``~/relocalize`` does), to measure how long relocalizing takes."""
    from tqdm import tqdm

    tracker = Tracker(localizer, tracking)
    frames, last_loss = [], None
    for stamp, image in tqdm(source.images(image_topic), desc="localize", unit="img", disable=not progress):
        odom_from_camera = None if odometry is None else interpolate_poses(*odometry, [stamp], max_gap)[0]
        forced_loss = force_loss_every_s is not None and (last_loss is None or stamp - last_loss >= force_loss_every_s)
        if forced_loss:
            if last_loss is not None:  # the first frame has nothing to lose yet
                tracker.lose("forced by the evaluation")
            else:
                forced_loss = False
            last_loss = stamp
        step = tracker.process(stamp, image, camera, odom_from_camera)
        frames.append(ReplayedFrame(stamp, step, odom_from_camera, tracker.map_odom.map_from_odom, forced_loss))
    return frames


def odometry_track(config: dict, source: BagSource) -> tuple | None:
    """(stamps, odom_from_camera) from the bag's TF as ``config["odometry"]`` names it, or None when the
    bag has no such chain (or ``odom_frame`` is "")."""
    odometry, camera_frame = config["odometry"], config["ground_truth"].get("camera_frame")
    if not odometry["odom_frame"]:
        return None
    try:
        stamps, poses = source.tf_poses(odometry["odom_frame"], odometry["base_frame"])
        if camera_frame:
            base_from_camera = source.static_transform(odometry["base_frame"], camera_frame)
            poses = [pose @ base_from_camera for pose in poses]
    except BagContentError as error:
        logger.info("replaying without odometry: %s", error)
        return None
    return stamps, poses


def ground_truth_at(stamps, config: dict, source: BagSource) -> list[Rigid3 | None]:
    if config["ground_truth_tum"]:
        gt_stamps, gt_poses = read_tum(config["ground_truth_tum"])
    else:
        gt_stamps, gt_poses = source.ground_truth(config["ground_truth"])
    return interpolate_poses(gt_stamps, gt_poses, stamps, config["max_gap"])


def evaluate_bag(
    localizer, bag, output_dir, config: dict | None = None, progress: bool = False, description: dict | None = None
):
    """Localize every image of ``bag``, compare with ground truth, write the report.

    Returns (records, metrics, report directory).
    """
    config = {**DEFAULT_EVAL_CONFIG, **(config or {})}
    with BagSource(bag) as source:
        camera = source.camera(config["camera_info_topic"])
        odometry = odometry_track(config, source)
        frames = localize_bag(
            localizer,
            source,
            config["image_topic"],
            camera,
            config["tracking"],
            odometry,
            config["max_gap"],
            progress,
            config["force_loss_every_s"],
        )
        truths = ground_truth_at([frame.stamp for frame in frames], config, source)
        read_stops = [
            f"after {stop.messages_read} messages of {', '.join(stop.topics)} (last receive stamp "
            f"{stop.last_stamp}): {stop.error}"
            for stop in source.read_stops
        ]
    records = [
        FrameRecord(
            frame.stamp,
            frame.step.result.world_from_camera if frame.step.published else None,
            frame.step.held_back or frame.step.result.reason,
            frame.step.result.num_inliers,
            dict(frame.step.result.timings),
            truth,
            frame.step.state.value,
            frame.step.published and frame.step.result.guided,
            frame.step.result.covariance if frame.step.published else None,
            frame.odom_from_camera,
            frame.map_from_odom,
            frame.forced_loss,
        )
        for frame, truth in zip(frames, truths)
    ]
    if config["alignment"] != "none":
        records, _, _ = align_records(records, with_scale=config["alignment"] == "sim3")
    metrics = compute_metrics(records)
    for stop in read_stops:
        logger.warning("bag read stopped early: %s", stop)
    info = {
        "bag": str(bag),
        "frames": len(records),
        "alignment": config["alignment"],
        "odometry": "from TF" if odometry is not None else "none",
        "read_stops": read_stops,
        **(description or {}),
    }
    report_dir = write_report(Path(output_dir), records, metrics, info)
    return records, metrics, report_dir
