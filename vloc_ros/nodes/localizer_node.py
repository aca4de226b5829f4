"""``vloc_localizer``: camera images in, the pose of the robot (or camera) in the map out.

A thin wrapper: it converts messages, calls ``vloc_ros.localizer.Localizer`` and publishes.

Subscribes (sensor-data QoS, or reliable with ``image_qos``)
  ``image_topic`` (sensor_msgs/Image), or ``image_topic``/compressed with ``transport: compressed``
  ``camera_info_topic`` (sensor_msgs/CameraInfo: K and plumb_bob distortion; the localizer
  undistorts the keypoints itself, so give it the raw image and its calibration)
  /tf, /tf_static (camera extrinsic and odometry)
  /initialpose (geometry_msgs/PoseWithCovarianceStamped in the map frame, as rviz's "2D Pose
      Estimate" sends it): where the pose ``~/pose`` reports is (``base_frame``, or the camera when
      TF does not link them); the next frame is matched near it first. Another frame is refused
      (``rejected_initial_pose_wrong_frame``).
  Every message passes ``InputGuard``: what cannot be used is counted on /diagnostics as
  ``rejected_<reason>`` and logged, never raised: unsupported_encoding, empty_image,
  malformed_image, image_too_large, undecodable_image (corrupt JPEG/PNG), no_camera_info,
  invalid_camera_info, camera_info_size_mismatch (checked before decoding), missing_frame_id,
  invalid_tf (non-finite transforms, quaternions that are not unit), invalid_pose,
  initial_pose_wrong_frame, no_map.
Publishes
  ``~/pose`` (PoseStamped, map frame, stamped with the image stamp): the pose of ``base_frame``
      when TF knows ``base_frame`` -> camera frame, else the pose of the camera optical frame
      (/diagnostics key ``pose_frame`` says which)
  ``~/pose_with_covariance`` (PoseWithCovarianceStamped): the same pose, covariance in ROS order
      (x y z rx ry rz, world axes) as robot_localization reads it: calibrated (``covariance_*``,
      ``vloc_ros.covariance``), inflated by 1 / the verification confidence, carried over to
      ``base_frame`` through the lever arm
  /tf per ``publish_tf`` (see ``vloc_ros.publishing``): map -> odom is the fixes fused by a Kalman filter
      (``vloc_ros.fusion``, ``fuse_map_to_odom``), broadcast at ``map_to_odom_rate_hz`` stamped now +
      ``transform_tolerance_s``; map -> base or map -> camera at each image stamp
  ``~/inliers`` (PointCloud2 of the matched map points),
  ``~/map_cloud`` (PointCloud2 of the map, transient local, once per map load),
  ``~/debug_image`` (with ``publish_debug_image``), /diagnostics (~1 Hz)
  ``~/state`` (diagnostic_msgs/DiagnosticStatus, transient local, on every change): the tracking
      state as ``message`` (initializing, relocalized, tracking, lost), the reason under key ``reason``
Services (std_srvs/Trigger)
  ``~/relocalize``: go LOST: forget the prior and the odometry gate's memory (the next pose comes from
      the whole map and is accepted as is) and drop a waiting frame
  ``~/reload_map``: loads ``map_path`` (and the localizer settings) while the old map keeps serving

Tracking (``vloc_ros.tracking.Tracker``): the last published pose, carried by TF ``odom_frame`` ->
camera where there is odometry, is the prior for guided matching of the next frame (``use_prior``);
the whole map is searched when it is weak, after ``lost_after_failures`` frames in a row without a
pose (LOST), and on ``~/relocalize``. With odometry, a pose whose implied map -> odom jumps against
the previous ones is held back (counted ``held_back``) until the next frames confirm it
(``vloc_ros.verification.MotionGate``).

Calibration: a pose whose matches call for another focal length than the CameraInfo's is not
published (``vloc_ros.verification``, counted ``calibration_mismatch``); when that is the verdict
for half of the last 10 frames, /diagnostics reports ERROR "suspected calibration mismatch".

Latest frame wins: the image callback only checks and stores the newest frame; one worker thread
localizes whatever is newest when it is free, so a slow frame never queues stale ones behind it.
/diagnostics counts frames_received = frames_processed + frames_dropped + rejected (+ one waiting),
and reports latency (image received -> pose published) and processing percentiles over 100 frames.

A map that does not load (at start-up or on ``~/reload_map``) never stops the node: at start-up
it runs without a map, rejects frames as ``no_map`` and reports ERROR until ``map_path`` is fixed
(``ros2 param set``) and ``~/reload_map`` is called; a failed reload keeps serving the old map.

``LocalizerNode`` is configured and activated as it starts; ``vloc_localizer_lifecycle``
(``localizer_lifecycle_node.py``) is the same node managed through lifecycle transitions (Nav2). Both
are ``LocalizerNodeMixin``; /diagnostics reports the lifecycle state as ``node_state``.

Spin it with a SingleThreadedExecutor (``main`` does). rclpy's MultiThreadedExecutor busy-waits
whenever a message is ready for a callback group that is busy, and that loop holds the GIL the
localizer needs: images are lost before the node sees them and the rest are localized late
(docs/decisions.md). The callbacks are short anyway; the one slow job, loading a map for
``~/reload_map``, is a ``LongJob`` (``long_job.py``: the nodes' one pattern for long work) that the
async service callback awaits, so images, TF and diagnostics keep flowing meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovariance, PoseWithCovarianceStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from vloc_ros.backends import BACKENDS, BackendUnavailableError
from vloc_ros.config import nested_dict
from vloc_ros.covariance import COVARIANCE_PARAMETERS, CovarianceConfig
from vloc_ros.geometry import Camera, Rigid3
from vloc_ros.localizer import Localizer, Profile
from vloc_ros.mapping.map_format import MapError, load_map
from vloc_ros import msgs
from vloc_ros.msgs import InvalidMessage
from vloc_ros.publishing import PUBLISH_TF_MODES, TF_UNLINKED, Publication, Transform, publication
from vloc_ros.search import SearchConfig, SearchMode
from vloc_ros.tracking import Tracker, TrackingState
from vloc_ros.verification import CALIBRATION_MISMATCH

from .camera_input import CAMERA_PARAMETERS, CameraInput
from .diagnostics import (
    ERROR,
    OK,
    WARN,
    Counters,
    DiagnosticsPublisher,
    LatencyWindow,
    ThrottledLogger,
    diagnostic_status,
)
from .entry import run_node
from .frame_gate import LatestFrameGate
from .input_guard import InputGuard
from .long_job import JobRunning, LongJob
from .parameters import ParameterSpec, declare_parameters
from .ros_compat import (
    TfLookupError,
    make_tf_broadcaster,
    make_tf_buffer,
    numpy_to_image,
    rigid_to_pose,
    rigid_to_transform_stamped,
)
from .visualization import draw_keypoints, points_to_cloud

NODE_NAME = "vloc_localizer"
SEARCH_MODES = tuple(mode.value for mode in SearchMode)
# Parameters that set LocalizerConfig fields (dotted paths), applied at every map load.
LOCALIZER_CONFIG_PARAMETERS = {
    "profile": "profile",
    "backend": "inference.backend",
    "max_keypoints": "inference.max_keypoints",
    "search_mode": "search.mode",
    "rerank_shortlist": "search.rerank_shortlist",
    "min_inliers": "min_inliers",
    "ransac_max_error_px": "pose.ransac_max_error_px",
    **{name: f"covariance.{field}" for field, name in COVARIANCE_PARAMETERS.items()},
}
# Parameters that set TrackingConfig fields, applied at every map load.
TRACKING_CONFIG_PARAMETERS = {
    "use_prior": "use_prior",
    "lost_after_failures": "lost_after_failures",
    "fuse_map_to_odom": "fusion.enabled",
}
DEFAULT_COVARIANCE = CovarianceConfig()
# The level of ~/state and of /diagnostics per tracking state.
STATE_LEVELS = {
    TrackingState.INITIALIZING: WARN,
    TrackingState.RELOCALIZED: OK,
    TrackingState.TRACKING: OK,
    TrackingState.LOST: WARN,
}
CALIBRATION_WINDOW = 10  # frames over which calibration mismatches are judged
# Why a map cannot be served: the map itself, or the inference backend asked for cannot run here.
LOAD_ERRORS = (MapError, BackendUnavailableError)

PARAMETERS = CAMERA_PARAMETERS + (
    ParameterSpec(
        "map_path",
        "",
        "Map directory (from `vloc build-map` or vloc_map_builder). Read at start-up (by configure in "
        "vloc_localizer_lifecycle) and by ~/reload_map, so it can be changed with `ros2 param set` and then reloaded.",
    ),
    ParameterSpec(
        "profile",
        "auto",
        "fast: the candidate search alone (camera rate on a CPU); accurate: also re-match against "
        "covisible keyframes with LightGlue (GPU rate); auto: accurate where the feature network runs "
        "on a GPU. Applied at the next map load.",
        choices=tuple(profile.value for profile in Profile),
    ),
    ParameterSpec(
        "backend",
        "auto",
        "Inference backend of the feature network (vloc_ros.backends); 'auto' takes "
        "the fastest that runs here. Applied at the next map load.",
        choices=("auto", *BACKENDS),
    ),
    ParameterSpec(
        "max_keypoints",
        1024,
        "Keypoints extracted per camera image in the fast profile: fewer is faster, more helps in "
        "low texture. Applied at the next map load.",
        value_range=(50, 16384),
    ),
    ParameterSpec(
        "search_mode",
        "parallel",
        "Correspondence search: local and global descriptors in parallel, "
        "or one of them alone. Applied at the next map load.",
        choices=SEARCH_MODES,
    ),
    ParameterSpec(
        "rerank_shortlist",
        SearchConfig().rerank_shortlist,
        "Keyframes the global descriptor shortlists for re-ranking by rare local matches, of which the search "
        "keeps its 5 (0: no re-ranking). Applied at the next map load.",
        value_range=(0, 100),
    ),
    ParameterSpec(
        "min_inliers",
        20,
        "PnP inliers a pose needs to be published. Applied at the next map load.",
        value_range=(4, 100000),
    ),
    ParameterSpec(
        "ransac_max_error_px",
        4.0,
        "RANSAC inlier threshold (pixels) of the fast profile. Applied at the next map load.",
        value_range=(0.1, 100.0),
    ),
    ParameterSpec(
        "use_prior",
        True,
        "Match the next frame near where the last pose (carried by odometry, where TF has it) projects "
        "the map points, before searching the whole map. Applied at the next map load.",
    ),
    ParameterSpec(
        "lost_after_failures",
        10,
        "Frames in a row without a pose after which the node is LOST and searches the whole map. "
        "Applied at the next map load.",
        value_range=(1, 100000),
    ),
    ParameterSpec(
        "covariance_scale",
        DEFAULT_COVARIANCE.scale,
        "The published covariance is this x the pose's reprojection covariance / its verification confidence, "
        "plus the floors; calibrate all three for a rig and map with `vloc eval --calibrate-covariance`. "
        "Applied at the next map load.",
        value_range=(1e-6, 1e9),
    ),
    ParameterSpec(
        "covariance_floor_position",
        DEFAULT_COVARIANCE.floor_position,
        "Least standard deviation of the published position per axis (map units): what the map, the "
        "calibration and the ground truth leave that no frame sees. Applied at the next map load.",
        value_range=(0.0, 1000.0),
    ),
    ParameterSpec(
        "covariance_floor_rotation_deg",
        DEFAULT_COVARIANCE.floor_rotation_deg,
        "Least standard deviation of the published rotation per axis (degrees). Applied at the next map load.",
        value_range=(0.0, 180.0),
    ),
    ParameterSpec(
        "fuse_map_to_odom",
        True,
        "Fuse the fixes into a smooth map -> odom (vloc_ros.fusion: Kalman filter with Mahalanobis gating); "
        "false: each fix's own map -> odom. Applied at the next map load.",
    ),
    ParameterSpec(
        "map_to_odom_rate_hz",
        20.0,
        "With publish_tf map_to_odom: how often the latest fused map -> odom is broadcast, stamped now + "
        "transform_tolerance_s (as AMCL and slam_toolbox do), so TF lookups at the current time succeed "
        "between fixes.",
        value_range=(1.0, 1000.0),
        read_only=True,
    ),
    ParameterSpec(
        "transform_tolerance_s",
        0.1,
        "How far ahead of now the map -> odom broadcast is stamped (seconds).",
        value_range=(0.0, 10.0),
        read_only=True,
    ),
    ParameterSpec(
        "map_frame",
        "",
        "Frame of the published poses; empty: the map's own (manifest map_frame, usually 'map').",
        read_only=True,
    ),
    ParameterSpec(
        "odom_frame",
        "odom",
        "Odometry frame (REP-105), child of map_frame with publish_tf map_to_odom.",
        read_only=True,
    ),
    ParameterSpec(
        "base_frame",
        "base_link",
        "Robot body frame: ~/pose is its pose when TF links it to the camera.",
        read_only=True,
    ),
    ParameterSpec(
        "publish_tf",
        "map_to_odom",
        "Transform to broadcast: map->odom (the fixes fused with TF odom->camera, at map_to_odom_rate_hz), "
        "or per localized frame at its stamp map->base or map->camera, or none.",
        choices=PUBLISH_TF_MODES,
        read_only=True,
    ),
    ParameterSpec(
        "tf_timeout_s",
        0.1,
        "How long to wait for a transform at the image stamp that has not arrived yet (seconds).",
        value_range=(0.0, 5.0),
        read_only=True,
    ),
    ParameterSpec(
        "max_rate_hz",
        10.0,
        "Most frames localized per second; 0: as many as the CPU allows. Frames "
        "in between are dropped (latest frame wins) and counted.",
        value_range=(0.0, 1000.0),
    ),
    ParameterSpec(
        "publish_debug_image", False, "Publish ~/debug_image: the image with the inlier keypoints.", read_only=True
    ),
)


@dataclass
class Frame:
    image: np.ndarray
    camera: Camera
    header: Header
    camera_frame: str
    received: float  # time.monotonic() at the callback


@dataclass
class LoadedMap:
    localizer: Localizer
    tracker: Tracker
    path: str
    frame_id: str
    num_points: int


class LocalizerNodeMixin:
    """Everything of vloc_localizer but when it starts and stops: ``LocalizerNode`` (configured and
    activated at start-up) and ``LifecycleLocalizerNode`` (``localizer_lifecycle_node.py``, by its
    lifecycle transitions) run these methods on themselves.

    Subscriptions, services, TF and /diagnostics live as long as the node (``_setup``); the map is
    loaded by ``_configure`` and released by ``_cleanup``; the worker localizes and the outputs are
    published between ``_activate`` and ``_deactivate``. Images that arrive while inactive are counted
    ``rejected_inactive`` before they are decoded.
    """

    def _setup(self, create_publisher) -> None:
        """Declares the parameters and makes the node's entities; ``create_publisher`` makes those of
        the outputs (a lifecycle node's publish only while it is active)."""
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._active = False
        declare_parameters(self, PARAMETERS)
        param = self._param
        self._odom_frame, self._base_frame = param("odom_frame"), param("base_frame")
        self._publish_tf, self._tf_timeout = param("publish_tf"), param("tf_timeout_s")
        self._transform_tolerance = param("transform_tolerance_s")
        # The latest map -> odom (publishing.Transform), broadcast at map_to_odom_rate_hz while active.
        self._map_to_odom: Transform | None = None
        self._map_to_odom_stamp_ns = 0
        # The worker (a new fix) and the timer both broadcast: one at a time, so that stamps only grow.
        self._map_to_odom_lock = threading.Lock()

        self._counters = Counters()
        self._latency = LatencyWindow()  # image received -> pose published
        self._processing = LatencyWindow()  # Localizer.localize alone
        self._gate: LatestFrameGate[Frame] = LatestFrameGate()
        # Whether each of the last frames processed was rejected for a calibration mismatch: one frame
        # can be a fluke (a right pose's second optimum), most of them is the CameraInfo.
        self._calibration_mismatches: deque[bool] = deque(maxlen=CALIBRATION_WINDOW)
        self._map: LoadedMap | None = None
        # Localizers of maps replaced by ~/reload_map or released by cleanup, for the worker to close: it
        # may still be localizing with one when the new map comes in.
        self._retired: list[Localizer] = []
        self._retired_lock = threading.Lock()
        self._status = (WARN, "waiting for images")
        self._last_inliers = 0
        self._pose_frame = ""
        self._log = ThrottledLogger(self.get_logger())

        self._guard = InputGuard(self, self._counters)
        self._tf_buffer = make_tf_buffer(self, subscribe=self._guard.subscribe)
        self._tf_broadcaster = make_tf_broadcaster(self)
        self._pose_publisher = create_publisher(PoseStamped, "~/pose", 10)
        self._pose_covariance_publisher = create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", 10)
        self._inliers_publisher = create_publisher(PointCloud2, "~/inliers", 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._map_cloud_publisher = create_publisher(PointCloud2, "~/map_cloud", latched)
        self._state_publisher = create_publisher(DiagnosticStatus, "~/state", latched)
        self._state: TrackingState | None = None
        self._state_reason = "no map"
        self._debug_image_publisher = (
            create_publisher(Image, "~/debug_image", qos_profile_sensor_data) if param("publish_debug_image") else None
        )

        self._input = CameraInput(self, self._guard, self._on_frame, admit=self._admit)
        self._initial_pose: Rigid3 | None = None  # map_from_pose from /initialpose, for the next frame
        self._guard.subscribe(PoseWithCovarianceStamped, "/initialpose", self._on_initial_pose, 10)
        self._map_loader = LongJob(self, "load_map")
        self.create_service(Trigger, "~/relocalize", self._on_relocalize)
        # Reentrant: the callback holds its group until the map has loaded; in the default group it
        # would hold up the images, TF and diagnostics that share that group. A second call meanwhile
        # is answered that a map is already loading.
        self.create_service(Trigger, "~/reload_map", self._on_reload_map, callback_group=ReentrantCallbackGroup())
        self._diagnostics = DiagnosticsPublisher(self, self._diagnostic_statuses)
        self.create_timer(1.0 / param("map_to_odom_rate_hz"), self._broadcast_map_to_odom)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ life cycle

    def _node_state(self) -> str:
        """The node's lifecycle state as /diagnostics reports it."""
        return "active" if self._active else "inactive"

    def _configured(self) -> bool:
        """Whether the node serves a map at all, so that ~/reload_map may load one."""
        return True

    def _configure(self) -> str | None:
        """Loads ``map_path``; returns why it did not load, or None. The node stays up either way."""
        try:
            self._use_map(self._load_map(self._param("map_path")))
        except Exception as error:  # noqa: BLE001 - whatever fails, the node stays up and says why
            self._log_load_failure(error)
            self._status = (ERROR, f"no map: {error}")
            return str(error)
        return None

    def _activate(self) -> None:
        """Starts the worker (with a fresh gate: a closed one stays closed) and announces the map and state."""
        self._gate = LatestFrameGate()
        self._stopping.clear()
        self._worker = threading.Thread(target=self._process_frames, name="vloc_localize", daemon=True)
        self._worker.start()
        self._active = True
        if self._map is not None:
            self._publish_map_cloud(self._map)
        if self._state is not None:
            self._publish_state()

    def _deactivate(self) -> None:
        """Stops the worker: nothing is published once this returns (unless a frame outlives the wait)."""
        self._active = False
        if self._worker is None:
            return
        self._stopping.set()
        if self._gate.clear():
            self._counters.add("frames_dropped")
        self._gate.close()
        self._worker.join(timeout=10.0)
        if self._worker.is_alive():
            self.get_logger().error("the worker is still localizing a frame after 10 s; it stops after that frame")
            return
        self._worker = None

    def _worker_running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _cleanup(self) -> None:
        """Releases the map and those ~/reload_map replaced: their search threads, their memory."""
        loaded, self._map = self._map, None
        self._initial_pose = None
        self._map_to_odom = None
        self._state, self._state_reason = None, "no map"
        self._status = (WARN, "no map")
        if loaded is not None:
            self._retire(loaded.localizer)

    def _shut_down(self) -> None:
        """Whatever the state: stop localizing, release the map."""
        self._deactivate()
        self._cleanup()

    def destroy_node(self):
        self._shut_down()
        super().destroy_node()

    # ------------------------------------------------------------------ input

    def _admit(self, header: Header) -> bool:
        """Whether the worker wants an image: not while inactive (counted, not logged: the node is
        inactive on purpose), nor without a map."""
        if not self._active:
            self._counters.add("rejected_inactive")
            return False
        return self._has_map(header)

    def _has_map(self, header: Header) -> bool:
        if self._map is None:
            raise InvalidMessage("no map loaded (set map_path, call ~/reload_map)", "no_map")
        return True

    def _on_initial_pose(self, msg: PoseWithCovarianceStamped) -> None:
        self._has_map(msg.header)
        map_frame = self._map.frame_id
        frame = msgs.frame_id(msg.header.frame_id)
        if frame != map_frame:
            raise InvalidMessage(
                f"/initialpose in frame '{frame}', not the map frame '{map_frame}'", "initial_pose_wrong_frame"
            )
        self._initial_pose = msgs.pose_to_rigid(msg.pose.pose)
        self.get_logger().info("initial pose received: the next frame is matched near it first")

    def _on_frame(self, header: Header, image: np.ndarray, camera: Camera, camera_frame: str) -> None:
        if self._gate.put(Frame(image, camera, header, camera_frame, time.monotonic())):
            self._counters.add("frames_dropped")

    # ------------------------------------------------------------------ localization

    def _process_frames(self) -> None:
        while not self._stopping.is_set():
            self._close_retired()  # between frames: the next one takes the new map
            frame = self._gate.take(timeout=0.5)
            if frame is None:
                continue
            started = time.monotonic()
            try:
                self._localize(frame)
            except Exception as error:  # noqa: BLE001 - one bad frame must not end the worker (and the node's output)
                self._counters.add("localizer_errors")
                self.get_logger().error(f"localizing a frame failed: {error!r}")
            max_rate = self._param("max_rate_hz")
            if max_rate > 0:  # newer frames replace each other in the gate meanwhile
                self._stopping.wait(started + 1.0 / max_rate - time.monotonic())
        self._close_retired()  # what was retired while it localized its last frame

    def _localize(self, frame: Frame) -> None:
        loaded = self._map
        stamp = frame.header.stamp
        seconds = stamp.sec + stamp.nanosec * 1e-9
        odom_from_camera = self._lookup(self._odom_frame, frame.camera_frame, stamp)
        initial_pose, self._initial_pose = self._initial_pose, None
        if initial_pose is not None:
            base_from_camera = self._lookup(self._base_frame, frame.camera_frame, stamp)
            seed = initial_pose if base_from_camera is None else initial_pose @ base_from_camera
            loaded.tracker.seed(seed, seconds, odom_from_camera)
        step = loaded.tracker.process(seconds, frame.image, frame.camera, odom_from_camera)
        self._report_state(step.state, step.reason)
        result = step.result
        self._processing.add(result.timings["total"])
        self._counters.add("frames_processed")
        self._last_inliers = result.num_inliers
        mismatch = CALIBRATION_MISMATCH in result.reason
        self._calibration_mismatches.append(mismatch)
        if not result.ok:
            self._counters.add("not_localized")
            if mismatch:
                self._counters.add("calibration_mismatch")
            mismatches = sum(self._calibration_mismatches)
            if mismatches >= CALIBRATION_WINDOW // 2:
                self._status = (
                    ERROR,
                    f"suspected calibration mismatch in {mismatches} of "
                    f"the last {len(self._calibration_mismatches)} frames: {result.reason}",
                )
            else:
                self._status = (WARN, f"not localized: {result.reason}")
            return
        if step.held_back:
            self._counters.add("held_back")
            self._status = (WARN, f"not published: {step.held_back}")
            return
        if not step.published or self._stopping.is_set():
            return
        self._publish(frame, loaded, result, odom_from_camera, step.map_from_odom)
        self._latency.add(time.monotonic() - frame.received)
        self._counters.add("localized")
        if result.guided:
            self._counters.add("guided")
        self._status = (OK, f"localized with {result.num_inliers} inliers")

    def _report_state(self, state: TrackingState, reason: str) -> None:
        """Keep the state for /diagnostics; publish it on ~/state when it changes while active."""
        changed = state is not self._state
        self._state, self._state_reason = state, reason
        if changed and self._active:  # else _activate publishes it
            self._publish_state()

    def _publish_state(self) -> None:
        self._state_publisher.publish(
            diagnostic_status(
                f"{self.get_name()}: tracking",
                self.get_fully_qualified_name(),
                STATE_LEVELS[self._state],
                self._state.value,
                {"reason": self._state_reason},
            )
        )

    # ------------------------------------------------------------------ output

    def _publish(
        self,
        frame: Frame,
        loaded: LoadedMap,
        result,
        odom_from_camera: Rigid3 | None,
        map_from_odom: Rigid3 | None,
    ) -> None:
        stamp = frame.header.stamp
        out = publication(
            result.world_from_camera,
            result.covariance,
            map_frame=loaded.frame_id,
            camera_frame=frame.camera_frame,
            base_frame=self._base_frame,
            odom_frame=self._odom_frame,
            publish_tf=self._publish_tf,
            base_from_camera=self._lookup(self._base_frame, frame.camera_frame, stamp),
            odom_from_camera=odom_from_camera,
            map_from_odom=map_from_odom,
            camera_parent=lambda: self._tf_buffer.parent_of(frame.camera_frame),
        )
        self._pose_frame = out.pose_frame
        header = Header(stamp=stamp, frame_id=loaded.frame_id)
        pose = rigid_to_pose(out.map_from_pose)
        self._pose_publisher.publish(PoseStamped(header=header, pose=pose))
        self._pose_covariance_publisher.publish(
            PoseWithCovarianceStamped(
                header=header, pose=PoseWithCovariance(pose=pose, covariance=out.covariance.reshape(-1).tolist())
            )
        )
        self._broadcast(out, stamp)
        self._inliers_publisher.publish(points_to_cloud(result.inlier_points3d, loaded.frame_id, stamp))
        if self._debug_image_publisher is not None:
            self._debug_image_publisher.publish(
                numpy_to_image(draw_keypoints(frame.image, result.inlier_keypoints), "rgb8", stamp, frame.camera_frame)
            )

    def _broadcast(self, out: Publication, stamp) -> None:
        """``out``'s transform (map -> ``publish_tf``'s child, see ``vloc_ros.publishing``): map -> odom
        from now on at the steady rate (``_broadcast_map_to_odom``), any other at the image stamp."""
        if out.tf_issue == TF_UNLINKED:
            self._counters.add("tf_not_published")
        if out.tf_issue:
            self._log.warning(out.tf_issue, out.tf_message)
        if out.transform is None:
            return
        if out.transform.child == self._odom_frame:
            self._map_to_odom = out.transform
            self._broadcast_map_to_odom()
        else:
            self._tf_broadcaster.sendTransform(
                rigid_to_transform_stamped(
                    out.transform.parent_from_child, out.transform.parent, out.transform.child, stamp
                )
            )

    def _broadcast_map_to_odom(self) -> None:
        """The latest map -> odom, stamped ``transform_tolerance_s`` ahead of now: map -> odom holds until
        the next fix, and odometry moves the robot meanwhile, so a lookup at any time up to the next
        broadcast finds it. Stamps only grow: tf2 drops a transform whose stamp it already has."""
        transform = self._map_to_odom
        if transform is None or not self._active:
            return
        with self._map_to_odom_lock:
            now = self.get_clock().now().nanoseconds + int(self._transform_tolerance * 1e9)
            stamp_ns = max(now, self._map_to_odom_stamp_ns + 1)
            self._map_to_odom_stamp_ns = stamp_ns
            stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
            self._tf_broadcaster.sendTransform(
                rigid_to_transform_stamped(transform.parent_from_child, transform.parent, transform.child, stamp)
            )

    def _lookup(self, parent: str, child: str, stamp) -> Rigid3 | None:
        """``parent_from_child`` at ``stamp``; waits up to tf_timeout_s when TF links the frames but not
        yet at that stamp; None when it cannot."""
        deadline = time.monotonic() + self._tf_timeout
        while True:
            try:
                return self._tf_buffer.lookup(parent, child, stamp)
            except TfLookupError:
                if time.monotonic() >= deadline or not self._tf_buffer.can_transform(parent, child):
                    return None
            time.sleep(0.005)

    def _diagnostic_statuses(self):
        level, message = self._status
        node_state = self._node_state()
        if not self._active:
            level, message = max(level, WARN), f"{node_state}: images are not localized; {message}"
        loaded = self._map
        latency = self._latency.percentiles_ms(50, 95)
        processing = self._processing.percentiles_ms(50, 95)
        values = {
            "node_state": node_state,
            "map": loaded.path if loaded else "none",
            "map_points": loaded.num_points if loaded else 0,
            "pose_frame": self._pose_frame or "n/a",
            "tracking_state": self._state.value if self._state else "n/a",
            "tracking_reason": self._state_reason,
            "inliers": self._last_inliers,
            "latency_p50_ms": latency["p50"],
            "latency_p95_ms": latency["p95"],
            "processing_p50_ms": processing["p50"],
            "processing_p95_ms": processing["p95"],
            **{name: 0 for name in ("frames_received", "frames_processed", "frames_dropped", "localized")},
            **self._counters.snapshot(),
        }
        return [
            diagnostic_status(
                f"{self.get_name()}: localization", self.get_fully_qualified_name(), level, message, values
            )
        ]

    # ------------------------------------------------------------------ map

    def _load_map(self, path: str) -> LoadedMap:
        if not path:
            raise MapError("map_path is empty")
        localization_map = load_map(path)
        config = nested_dict({path: self._param(name) for name, path in LOCALIZER_CONFIG_PARAMETERS.items()})
        localizer = Localizer(localization_map, config)
        tracker = Tracker(
            localizer, nested_dict({path: self._param(name) for name, path in TRACKING_CONFIG_PARAMETERS.items()})
        )
        frame_id = self._param("map_frame") or localization_map.manifest.map_frame
        return LoadedMap(localizer, tracker, str(path), frame_id, localization_map.num_points)

    def _use_map(self, loaded: LoadedMap) -> None:
        old, self._map = self._map, loaded  # the worker takes it with its next frame
        self._map_to_odom = None  # a transform into the old map's frame
        if old is not None:
            self._retire(old.localizer)
        # Poses in a new map owe nothing to the old one's: its tracker starts INITIALIZING.
        self._report_state(loaded.tracker.state, f"map loaded: {loaded.tracker.reason}")
        if self._active:  # else _activate publishes it
            self._publish_map_cloud(loaded)
        self._status = (OK, f"map loaded: {loaded.path}")
        self.get_logger().info(f"serving map {loaded.path} ({loaded.num_points} points) in frame '{loaded.frame_id}'")

    def _publish_map_cloud(self, loaded: LoadedMap) -> None:
        self._map_cloud_publisher.publish(
            points_to_cloud(loaded.localizer.map.arrays["points_xyz"], loaded.frame_id, self.get_clock().now())
        )

    async def _on_reload_map(self, request, response):
        path = self._param("map_path")
        if not self._configured():
            response.success, response.message = False, "not configured: the configure transition loads map_path"
            return response
        try:
            loading = self._map_loader.start(self._load_map, path)
        except JobRunning:
            response.success, response.message = False, "a map is already loading; call again when it answers"
            return response
        try:
            loaded = await loading
        except Exception as error:  # noqa: BLE001 - whatever fails, the old map keeps serving
            self._log_load_failure(error)
            serving = self._map.path if self._map else "no map"
            response.success, response.message = False, f"map {path!r} not loaded ({error}); still serving {serving}"
            self.get_logger().error(response.message)
            return response
        if not self._configured():  # cleaned up or shut down while it loaded
            loaded.localizer.close()
            response.success, response.message = False, f"map {path!r} loaded after the map was released; not used"
            return response
        self._use_map(loaded)
        response.success, response.message = True, f"serving map {path} ({loaded.num_points} points)"
        return response

    def _retire(self, localizer: Localizer) -> None:
        """Closes ``localizer`` now, or, while a worker runs (it may be localizing with it), through the
        worker between frames or as it ends."""
        with self._retired_lock:
            self._retired.append(localizer)
        if not self._worker_running():
            self._close_retired()

    def _close_retired(self) -> None:
        with self._retired_lock:
            retired, self._retired = self._retired, []
        for localizer in retired:
            localizer.close()

    def _log_load_failure(self, error: Exception) -> None:
        """A map or backend that cannot serve is the user's to fix (the message says how); anything
        else is a bug in loading, logged with its traceback."""
        self._counters.add("map_load_failures")
        if not isinstance(error, LOAD_ERRORS):
            self.get_logger().error(
                "loading the map failed unexpectedly:\n" + "".join(traceback.format_exception(error))
            )

    def _on_relocalize(self, request, response):
        dropped = self._gate.clear()
        if dropped:
            self._counters.add("frames_dropped")
        loaded = self._map
        if loaded is None:
            response.success, response.message = False, "no map loaded: nothing to relocalize in"
            return response
        loaded.tracker.lose("relocalization requested (~/relocalize)")
        self._report_state(loaded.tracker.state, loaded.tracker.reason)
        response.success = True
        response.message = (
            "lost on request: prior and odometry gate cleared, the next frame searches the whole map and its "
            "pose is accepted as is; "
            + ("dropped the frame waiting to be processed" if dropped else "no frame was waiting")
        )
        return response


class LocalizerNode(LocalizerNodeMixin, Node):
    """The plain node: configured and activated as it starts. A map that does not load leaves it up
    and active, rejecting frames as ``no_map``, until ``map_path`` is fixed and ~/reload_map called."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._setup(self.create_publisher)
        error = self._configure()
        if error:
            self.get_logger().error(
                f"running without a map ({error}); fix map_path or backend with `ros2 param "
                f"set`, then call {self.get_fully_qualified_name()}/reload_map"
            )
        self._activate()


def main(args=None) -> int:
    return run_node(LocalizerNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
