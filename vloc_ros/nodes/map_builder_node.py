"""``vloc_map_builder``: records keyframes from a camera stream and builds a map on request.

Subscribes ``image_topic`` (or <image_topic>/compressed), ``camera_info_topic`` and, optionally,
``pose_topic`` (PoseStamped or Odometry) with known poses of ``pose_frame``; the camera pose is
that pose composed with TF ``pose_frame`` -> camera frame (set ``pose_frame`` to the camera
frame when the poses are of the camera itself). With poses the map is metric (triangulated from
them); without, pycolmap reconstructs the poses and the map has an arbitrary scale.

A frame becomes a keyframe when ``min_interval_s`` has passed since the last one and, with poses,
the camera moved ``min_translation_m`` or turned ``min_rotation_deg``. Keyframes go to disk as they
arrive (``KeyframeBuffer`` in ``buffer_dir``): a crash loses none, and a restarted node continues
the same buffer. A frame whose pose has not arrived yet waits for the next pose message (one frame
at most). What cannot be used is counted on /diagnostics as ``rejected_<reason>`` (the camera
input's reasons, and invalid_pose, invalid_tf, no_pose, no_camera_extrinsic, pose_frame_mismatch,
buffer_write_failed).

Services (std_srvs/Trigger)
  ``~/build``: answers at once ("build started") and runs ``vloc_ros.mapping.builder.build_map`` on
      the buffered keyframes as a ``LongJob`` (``long_job.py``: the nodes' one pattern for long work);
      the map goes to ``output_map_path``. Stage and progress are on /diagnostics; the outcome is
      logged and kept there. With ``update`` true and a map already at ``output_map_path``, it runs
      ``vloc_ros.mapping.update.update_map`` instead: the buffered keyframes that map lacks (by stamp)
      are registered into it (its keyframes keep their poses, its build config applies) and it is
      replaced atomically; a failed update leaves it as it was. So a map grows by recording on and
      calling ``~/build`` again, with or without ``~/reset`` in between.
  ``~/reset``: empties the buffer (refused while a build runs).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from vloc_ros.config import nested_dict
from vloc_ros.geometry import Camera, Rigid3, interpolate_poses
from vloc_ros.mapping.builder import BuildConfig, build_map
from vloc_ros.mapping.map_format import BINARIZER_STATES, GLOBAL_DESCRIPTOR_STATES
from vloc_ros.mapping.keyframes import (
    DEFAULT_MIN_INTERVAL_S,
    DEFAULT_MIN_ROTATION_DEG,
    DEFAULT_MIN_TRANSLATION_M,
    KeyframeSelector,
)
from vloc_ros.mapping.update import update_map
from vloc_ros.msgs import InvalidMessage, pose_to_rigid, stamp_to_ns, stamp_to_seconds

from .camera_input import CAMERA_PARAMETERS, CameraInput
from .diagnostics import ERROR, OK, WARN, Counters, DiagnosticsPublisher, diagnostic_status
from .entry import run_node
from .input_guard import InputGuard
from .keyframe_buffer import KeyframeBuffer
from .long_job import LongJob
from .parameters import ParameterSpec, declare_parameters
from .ros_compat import TfLookupError, make_tf_buffer

NODE_NAME = "vloc_map_builder"
POSE_TYPES = {"pose_stamped": PoseStamped, "odometry": Odometry}

PARAMETERS = CAMERA_PARAMETERS + (
    ParameterSpec(
        "pose_topic",
        "",
        "Known poses (PoseStamped or Odometry) for a metric map; empty: none, the "
        "map is reconstructed from the images alone (arbitrary scale).",
        read_only=True,
    ),
    ParameterSpec(
        "pose_type", "pose_stamped", "Message type on pose_topic.", choices=tuple(POSE_TYPES), read_only=True
    ),
    ParameterSpec(
        "pose_frame",
        "base_link",
        "The frame whose pose pose_topic gives (an Odometry child_frame_id "
        "must match). TF pose_frame -> camera gives the camera pose; set it to the camera frame when the "
        "poses are of the camera.",
        read_only=True,
    ),
    ParameterSpec(
        "pose_max_gap_s",
        0.25,
        "A frame whose bracketing poses are further apart (seconds) has no pose and is skipped.",
        value_range=(0.0, 10.0),
        read_only=True,
    ),
    ParameterSpec(
        "min_interval_s", DEFAULT_MIN_INTERVAL_S, "Least time between keyframes (seconds).", value_range=(0.0, 3600.0)
    ),
    ParameterSpec(
        "min_translation_m",
        DEFAULT_MIN_TRANSLATION_M,
        "With poses: least camera motion since the last keyframe (metres).",
        value_range=(0.0, 100.0),
    ),
    ParameterSpec(
        "min_rotation_deg",
        DEFAULT_MIN_ROTATION_DEG,
        "With poses: or least camera rotation since the last keyframe (degrees).",
        value_range=(0.0, 180.0),
    ),
    ParameterSpec(
        "buffer_dir",
        "~/.ros/vloc_map_builder/keyframes",
        "Where keyframes are kept as they arrive; a restarted node continues the buffer it finds there.",
        read_only=True,
    ),
    ParameterSpec("output_map_path", "", "Directory ~/build writes the map to."),
    ParameterSpec("overwrite", False, "Let ~/build replace an existing map at output_map_path."),
    ParameterSpec(
        "update",
        False,
        "With a map at output_map_path: ~/build adds the buffered keyframes it lacks to it (new keyframes "
        "and points; its keyframes keep their poses; its build config applies) instead of replacing it.",
    ),
    ParameterSpec("map_frame", "map", "Frame name stored in the map (the localizer's default map_frame)."),
    ParameterSpec(
        "extractor", "xfeat", "Local features of the map (the localizer uses the map's).", choices=("xfeat", "aliked")
    ),
    ParameterSpec("max_keypoints", 2048, "Keypoints per keyframe.", value_range=(64, 16384)),
    ParameterSpec(
        "binarizer",
        BuildConfig().binarizer.method,
        "Binary codes of the localizer's local branch: pca, or learned (trained on the map's tracks).",
        choices=tuple(BINARIZER_STATES),
    ),
    ParameterSpec(
        "global_descriptor",
        BuildConfig().global_descriptor.name,
        "Keyframe retrieval: vlad, or netvlad (trained with SARE on the map's co-visibility).",
        choices=tuple(GLOBAL_DESCRIPTOR_STATES),
    ),
)

# Parameters that set BuildConfig fields (dotted paths), read when ~/build starts.
BUILD_CONFIG_PARAMETERS = {
    "extractor": "extractor.name",
    "max_keypoints": "extractor.max_keypoints",
    "binarizer": "binarizer.method",
    "global_descriptor": "global_descriptor.name",
    "map_frame": "map_frame",
}


@dataclass
class Candidate:
    """A frame due for a keyframe, possibly waiting for the pose at its stamp to arrive."""

    stamp_ns: int
    image: np.ndarray
    camera: Camera
    camera_frame: str


class MapBuilderNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self, PARAMETERS)
        param = self._param
        self._pose_frame, self._pose_max_gap = param("pose_frame"), param("pose_max_gap_s")
        self._uses_poses = bool(param("pose_topic"))

        self._counters = Counters()
        self._buffer = KeyframeBuffer(param("buffer_dir"))
        last = self._buffer.keyframes[-1] if len(self._buffer) else None
        self._selector = KeyframeSelector(last=(last.stamp_ns, last.world_from_camera) if last else None)
        self._poses: deque[tuple[float, Rigid3]] = deque(maxlen=2000)  # (stamp s, world_from_pose_frame)
        self._waiting: Candidate | None = None
        # Stages: idle, extracting features, matching, reconstruction, indexes, then done or failed.
        self._build = LongJob(self, "build_map")
        self._guard = InputGuard(self, self._counters)
        self._tf_buffer = make_tf_buffer(self, subscribe=self._guard.subscribe)

        self._input = CameraInput(self, self._guard, self._on_frame, admit=self._keyframe_due)
        if self._uses_poses:
            self._guard.subscribe(POSE_TYPES[param("pose_type")], param("pose_topic"), self._on_pose, 100)
        self.create_service(Trigger, "~/build", self._on_build)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._diagnostics = DiagnosticsPublisher(self, self._diagnostic_statuses)
        if len(self._buffer):
            self.get_logger().info(f"continuing the {len(self._buffer)} keyframes buffered in {self._buffer.directory}")

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _keyframe_selector(self) -> KeyframeSelector:
        """The selector, with the thresholds the parameters have now (they may change at run time)."""
        selector = self._selector
        selector.min_interval_s = self._param("min_interval_s")
        selector.min_translation_m = self._param("min_translation_m")
        selector.min_rotation_deg = self._param("min_rotation_deg")
        return selector

    # ------------------------------------------------------------------ recording

    def _on_pose(self, msg) -> None:
        if isinstance(msg, Odometry):
            if msg.child_frame_id and msg.child_frame_id != self._pose_frame:
                raise InvalidMessage(
                    f"Odometry of '{msg.child_frame_id}': pose_frame is '{self._pose_frame}'", "pose_frame_mismatch"
                )
            pose = msg.pose.pose
        else:
            pose = msg.pose
        self._poses.append((stamp_to_seconds(msg.header.stamp), pose_to_rigid(pose)))
        if self._waiting is not None and self._poses[-1][0] >= self._waiting.stamp_ns * 1e-9:
            candidate, self._waiting = self._waiting, None
            self._record_with_pose(candidate)

    def _keyframe_due(self, header: Header) -> bool:
        return self._keyframe_selector().due(stamp_to_ns(header.stamp))

    def _on_frame(self, header: Header, image: np.ndarray, camera: Camera, camera_frame: str) -> None:
        stamp_ns = stamp_to_ns(header.stamp)
        candidate = Candidate(stamp_ns, image, camera, camera_frame)
        if not self._uses_poses:
            return self._record(candidate, None)
        if not self._poses or self._poses[-1][0] < stamp_ns * 1e-9:
            if self._waiting is not None:  # its pose never came while the camera moved on
                self._guard.reject(
                    "no_pose", f"frame at {self._waiting.stamp_ns * 1e-9:.3f} s skipped: no pose arrived for its stamp"
                )
            self._waiting = candidate
            return
        self._record_with_pose(candidate)

    def _record_with_pose(self, candidate: Candidate) -> None:
        stamp = candidate.stamp_ns * 1e-9
        stamps, poses = zip(*self._poses)
        world_from_pose_frame = interpolate_poses(stamps, list(poses), [stamp], self._pose_max_gap)[0]
        if world_from_pose_frame is None:
            return self._guard.reject(
                "no_pose", f"frame at {stamp:.3f} s skipped: no poses within {self._pose_max_gap} s around it"
            )
        try:
            pose_frame_from_camera = self._tf_buffer.lookup(self._pose_frame, candidate.camera_frame, stamp)
        except TfLookupError as error:
            return self._guard.reject(
                "no_camera_extrinsic", f"frame skipped: no TF {self._pose_frame} -> {candidate.camera_frame}: {error}"
            )
        world_from_camera = world_from_pose_frame @ pose_frame_from_camera
        if not self._keyframe_selector().moved(world_from_camera):
            return
        self._record(candidate, world_from_camera)

    def _record(self, candidate: Candidate, world_from_camera: Rigid3 | None) -> None:
        try:
            self._buffer.add(candidate.stamp_ns, candidate.image, candidate.camera, world_from_camera)
        except OSError as error:
            return self._guard.reject("buffer_write_failed", f"keyframe not recorded: {error}")
        self._selector.record(candidate.stamp_ns, world_from_camera)
        self._counters.add("keyframes_recorded")

    # ------------------------------------------------------------------ building

    def _on_build(self, request, response):
        output = self._param("output_map_path")
        update = bool(output) and self._param("update") and Path(output).exists()
        # An update adds to a map that already has enough keyframes.
        needed = 1 if update else BuildConfig().min_registered_images
        if self._build.running:
            response.success, response.message = False, f"a build is already running ({self._build.progress.stage})"
        elif not output:
            response.success, response.message = False, "output_map_path is empty; set it first"
        elif len(self._buffer) < needed:
            response.success = False
            response.message = f"{len(self._buffer)} keyframes buffered; a map needs at least {needed}"
        else:
            keyframes = list(self._buffer.keyframes)
            built = self._build.start(
                self._build_map, keyframes, output, update, stage="extracting features", total=len(keyframes)
            )
            built.add_done_callback(self._log_build_failure)
            response.success = True
            response.message = f"{'update' if update else 'build'} started: {len(keyframes)} keyframes -> {output}"
        self.get_logger().info(response.message)
        return response

    def _build_map(self, keyframes, output: str, update: bool) -> str:
        """The build (or update) job: the map at ``output``, and its one-line outcome for /diagnostics."""
        frames = [keyframe.to_map_frame() for keyframe in keyframes]
        source = f"{NODE_NAME} keyframes in {self._buffer.directory}"
        started = time.monotonic()
        if update:
            summary = update_map(
                frames,
                output,
                cache_dir=self._buffer.build_cache,
                progress=self._on_build_progress,
                source_description=source,
            )
            outcome = (
                f"map updated at {summary.output} in {time.monotonic() - started:.0f} s: "
                f"{summary.images_registered} new keyframes registered ({summary.already_in_map} already in it), "
                f"{summary.previous.keyframes + summary.images_registered} keyframes, {summary.num_points} points"
            )
        else:
            config = nested_dict({path: self._param(name) for name, path in BUILD_CONFIG_PARAMETERS.items()})
            summary = build_map(
                frames,
                output,
                config,
                cache_dir=self._buffer.build_cache,
                progress=self._on_build_progress,
                overwrite=self._param("overwrite"),
                source_description=source,
            )
            outcome = (
                f"map written to {summary.output} in {time.monotonic() - started:.0f} s: "
                f"{summary.images_registered}/{summary.images_given} keyframes registered, "
                f"{summary.num_points} points"
            )
        self.get_logger().info(f"{outcome}\n{summary.format()}")
        return outcome

    def _log_build_failure(self, built) -> None:
        # BuildError, MapError, pycolmap's: all end this build, not the node.
        error = built.exception()
        if error is not None:
            self.get_logger().error(f"build failed: {error}")

    def _on_build_progress(self, stage: str, done: int, total: int | None) -> None:
        """build_map's progress: feature extraction is counted per keyframe, the rest is one stage."""
        if stage == "extract features" and not (total and done >= total):
            self._build.report("extracting features", done, total or 0)
        else:
            self._build.report("matching, reconstruction, indexes")

    def _on_reset(self, request, response):
        if self._build.running:
            response.success, response.message = False, "a build is running; reset after it ends"
            return response
        removed = len(self._buffer)
        self._buffer.clear()
        self._selector.reset()
        self._waiting = None
        response.success, response.message = True, f"removed {removed} keyframes from {self._buffer.directory}"
        self.get_logger().info(response.message)
        return response

    def _diagnostic_statuses(self):
        build = self._build.progress
        if build.stage == "failed":
            level, message = ERROR, f"build {build.outcome}"
        elif build.stage == "done":
            level, message = OK, build.outcome
        elif build.stage != "idle":
            level, message = OK, f"building: {build.stage}"
        elif self._input.camera is None:
            level, message = WARN, "waiting for CameraInfo"
        else:
            level, message = OK, f"recording: {len(self._buffer)} keyframes"
        percent = 100.0 * build.done / build.total if build.total else None
        values = {
            "keyframes": len(self._buffer),
            "buffer_dir": str(self._buffer.directory),
            "output_map_path": self._param("output_map_path"),
            "build_stage": build.stage,
            "build_features_percent": percent if build.stage == "extracting features" else None,
            "frames_received": 0,
            "keyframes_recorded": 0,
            **self._counters.snapshot(),
        }
        return [
            diagnostic_status(
                f"{self.get_name()}: map builder", self.get_fully_qualified_name(), level, message, values
            )
        ]

    def destroy_node(self):
        if self._build.running:
            self.get_logger().warning(
                "shutting down during a build: it stops unfinished; its features are cached "
                f"in {self._buffer.build_cache} for the next ~/build"
            )
        super().destroy_node()


def main(args=None) -> int:
    return run_node(MapBuilderNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
