"""The localizer: one image + its camera -> a pose in the map frame, or a reason why not.

Pipeline per frame: extract local features -> global descriptor -> parallel global/local
candidate search (``vloc_ros.search``) -> LO-RANSAC PnP on the undistorted keypoints with
refinement and covariance (``vloc_ros.pose``) -> verification. Given a prior (the pose predicted
from the last fix: ``vloc_ros.tracking``), guided matching near the predicted projections of the map
points comes first, and the candidate search runs only when its pose is weak or rejected.
ROS-free; the node wraps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .components import BINARIZER_TYPES, GLOBAL_DESCRIPTOR_TYPES
from .config import from_dict
from .covariance import CovarianceConfig, published_covariance
from .features import create_extractor, create_matcher
from .geometry import Camera, Rigid3, rotation_error_deg
from .mapping.map_format import REBUILD, LocalizationMap, MapError, MapManifest
from .pose import PoseConfig, estimate_pose
from .search import LOCAL_INDEX_TYPES, CandidateSearch, Correspondences, GlobalIndex, SearchConfig
from .search.guided import GuidedConfig, GuidedMatcher
from .search.keyframe_matching import KeyframeMatcher
from .search.rerank import KeyframeReranker
from .verification import (
    Evidence,
    VerificationConfig,
    decide,
    gather_evidence,
    inlier_spread,
    lacks_support_only,
)


class Profile(str, Enum):
    FAST = "fast"  # the candidate search alone: camera rate on a CPU
    ACCURATE = "accurate"  # + re-matching against covisible keyframes with LightGlue: GPU rate
    AUTO = "auto"  # accurate where the feature network runs on a GPU, else fast


@dataclass(frozen=True)
class RematchConfig:
    """Re-matching the query against the keyframes that see the search's matches (``KeyframeMatcher``):
    hloc's query side on a handful of keyframes. The accurate profile re-matches every published
    search pose, the fast profile only a weakly supported one; both re-match a pose verification
    rejected for too little support (``Localizer._keyframes_to_rematch``)."""

    keyframes: int = 3  # 0: no re-matching in either profile
    # ``features.create_matcher`` options; LightGlue takes the weights of the map's extractor.
    matcher: dict = field(default_factory=lambda: {"name": "lightglue"})
    # PnP threshold after re-matching, by the map's extractor. XFeat's keypoints are whole pixels of its
    # 8x8-cell heatmap: seen from far off the mapping views by an uncalibrated hand-held camera, its
    # matches carry pixels of systematic error, and a tight threshold keeps a locally consistent patch
    # that tilts the pose; 20 px spreads the inliers over the image. ALIKED's are sub-pixel: 4 px
    # keeps their precision (docs/decisions.md).
    ransac_max_error_px: dict = field(default_factory=lambda: {"xfeat": 20.0, "aliked": 4.0})
    # Weak (fast profile): fewer inliers than this, or inliers in at most half of the 4x4 image cells.
    # The search's wrong poses rest on a patch of the image, right ones mostly cover more than half of
    # it, so most frames skip the re-matching and its ~0.4 s on a CPU (docs/decisions.md).
    weak_below_inliers: int = 40
    weak_below_spread: float = 0.55
    # How far re-matching may move a published search pose (x the median inlier depth; degrees): a
    # correction of a tilted pose is a few degrees, a move onto mirrored keyframes ~180 (docs/decisions.md).
    max_correction: float = 0.25
    max_correction_deg: float = 15.0


@dataclass(frozen=True)
class LocalizerConfig:
    profile: Profile = Profile.AUTO
    # Query extractor options that leave its descriptors as the map's: the inference backend
    # (vloc_ros.backends; "auto" = TensorRT / CUDA on a GPU, ONNX Runtime on a CPU) and the number of
    # keypoints (1024: half the search and PnP work of the map's 2048, the same recall on our data).
    # A dict: the extractor checks its own options (``create_extractor``).
    inference: dict = field(default_factory=lambda: {"backend": "auto", "max_keypoints": 1024})
    search: SearchConfig = field(default_factory=SearchConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    rematch: RematchConfig = field(default_factory=RematchConfig)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    # Query keypoints of the accurate profile (the fast profile's are ``inference.max_keypoints``).
    accurate_max_keypoints: int = 2048
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    # Threads of numpy's BLAS (None: leave them). The localizer's BLAS calls are small, and OpenBLAS's
    # idle threads spin after each call, taking the cores the search branches need
    # (docs/decisions.md). A process-wide setting (threadpoolctl).
    blas_threads: int | None = 1
    min_keypoints: int = 20
    min_matches: int = 12
    # Among ~100 mostly wrong matches a consensus of a dozen arises by chance and can pass every
    # verification test, while right poses have several times 20 (docs/decisions.md; RTAB-Map's
    # Vis/MinInliers default is 20 too).
    min_inliers: int = 20


def chosen_profile(config: LocalizerConfig) -> Profile:
    """``config.profile``, with auto decided by where the feature network runs."""
    if config.profile is not Profile.AUTO:
        return config.profile
    backend = config.inference.get("backend", "auto")
    on_gpu = backend in ("tensorrt", "cuda") or (backend == "auto" and torch.cuda.is_available())
    return Profile.ACCURATE if on_gpu else Profile.FAST


class LocalizationStatus(str, Enum):
    OK = "OK"
    NOT_LOCALIZED = "NOT_LOCALIZED"


@dataclass
class LocalizationResult:
    status: LocalizationStatus
    reason: str = ""
    world_from_camera: Rigid3 | None = None  # pose of the camera optical frame in the map frame
    # (6, 6) to publish (``vloc_ros.covariance``): position (m), then rotation about map axes (rad)
    covariance: np.ndarray | None = None
    confidence: float = 0.0
    inlier_keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # image pixels
    inlier_points3d: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # map frame
    inlier_point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their map point ids
    num_keypoints: int = 0
    num_matches: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    evidence: dict = field(default_factory=dict)  # verification evidence (see vloc_ros.verification)
    guided: bool = False  # the pose rests on guided matching from the prior, not on the candidate search

    @property
    def ok(self) -> bool:
        return self.status is LocalizationStatus.OK

    @property
    def num_inliers(self) -> int:
        return len(self.inlier_points3d)

    @property
    def camera_from_world(self) -> Rigid3 | None:
        return None if self.world_from_camera is None else self.world_from_camera.inverse()

    def summary(self) -> dict:
        """A JSON-friendly one-line record."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "inliers": self.num_inliers,
            "matches": self.num_matches,
            "keypoints": self.num_keypoints,
            "confidence": round(self.confidence, 4),
            "guided": self.guided,
            "evidence": self.evidence,
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }


class MapMismatchError(MapError):
    """The query extractor does not produce the descriptors the map was built with."""


def check_extractor_matches_map(extractor, manifest: MapManifest) -> None:
    built_with = manifest.extractor
    for key, found, expected in (
        ("name", extractor.name, built_with.name),
        ("weights_sha256", extractor.weights_sha256, built_with.weights_sha256),
        ("descriptor_dim", extractor.descriptor_dim, built_with.descriptor_dim),
    ):
        if found != expected:
            raise MapMismatchError(
                f"query extractor {key} is {found!r} but the map was built with "
                f"{expected!r}; localize with the map's extractor or rebuild the map"
            )


def _restore(states: dict, component: str, from_state):
    """``from_state(states[component])``. A state that passed load_map's checks can still be unusable
    (e.g. node links out of range): that is the map's fault, a MapError naming the component."""
    try:
        return from_state(states[component])
    except (ValueError, KeyError, IndexError) as error:
        raise MapError(f"map state/{component} is unusable ({type(error).__name__}: {error}); {REBUILD}") from error


def map_search(localization_map: LocalizationMap, config: SearchConfig | dict) -> CandidateSearch:
    """The candidate search over a loaded map: its local index and binarizer restored from their
    states (MapError if a state is unusable), as the localizer searches it."""
    config = from_dict(SearchConfig, config)
    manifest, states, arrays = localization_map.manifest, localization_map.states, localization_map.arrays
    point_index = _restore(states, "local_index", LOCAL_INDEX_TYPES[manifest.local_index["type"]].from_state)
    binarizer = _restore(states, "binarizer", BINARIZER_TYPES[manifest.binarizer.method].from_state)
    if point_index.num_bits != binarizer.num_bits:
        raise MapError(
            f"map state/local_index indexes {point_index.num_bits}-bit codes but state/binarizer "
            f"makes {binarizer.num_bits}-bit codes; {REBUILD}"
        )
    keyframe_points = (arrays["keyframe_points_offsets"], arrays["keyframe_points"])
    # One float32 copy of the (float16) point descriptors, shared by the search and the reranker: a
    # copy is 4 D bytes per point, 2.6 GB for 10 million 64-dimensional descriptors.
    point_descriptors = np.ascontiguousarray(arrays["point_descriptors"], np.float32)
    return CandidateSearch(
        config,
        point_descriptors=point_descriptors,
        point_index=point_index,
        binarizer=binarizer,
        global_index=GlobalIndex(arrays["keyframe_global_descriptors"]),
        keyframe_points=keyframe_points,
        reranker=(
            KeyframeReranker(point_descriptors, keyframe_points)
            if config.rerank_shortlist > config.global_top_k
            else None
        ),
    )


class Localizer:
    def __init__(self, localization_map: LocalizationMap, config: LocalizerConfig | dict | None = None, extractor=None):
        self.map = localization_map
        self.config = from_dict(LocalizerConfig, config)
        self.profile = chosen_profile(self.config)
        rematch = self.config.rematch
        if self.config.blas_threads is not None:
            threadpool_limits(self.config.blas_threads, user_api="blas")  # process-wide: see "blas_threads"
        # load_map checked the manifest's fields and types (map_format.MapManifest).
        manifest = localization_map.manifest
        if extractor is None:
            inference = self.config.inference
            if self.profile is Profile.ACCURATE:
                inference = {**inference, "max_keypoints": self.config.accurate_max_keypoints}
            try:
                extractor = create_extractor({**manifest.extractor.config, **inference})
            except ValueError as error:
                raise MapError(
                    f"cannot make the query extractor from the map's extractor.config with the inference "
                    f"options {inference}: {error}; fix those options, or rebuild the map if its "
                    f"extractor.config is damaged"
                ) from error
        self.extractor = extractor
        check_extractor_matches_map(self.extractor, manifest)
        self.rematch_pose_config = replace(
            self.config.pose, ransac_max_error_px=rematch.ransac_max_error_px[self.extractor.name]
        )
        states = localization_map.states
        self.global_descriptor = _restore(
            states, "global_descriptor", GLOBAL_DESCRIPTOR_TYPES[manifest.global_descriptor.name].from_state
        )
        self.search = map_search(localization_map, self.config.search)
        arrays = localization_map.arrays
        self.guided_matcher = GuidedMatcher(
            arrays, [keyframe.world_from_camera for keyframe in localization_map.keyframes], self.config.guided
        )
        self.keyframe_matcher = None
        if rematch.keyframes > 0:
            options = dict(rematch.matcher)
            if options.get("name") == "lightglue":
                options["features"] = self.extractor.name
            matcher = create_matcher(options, str(self.extractor.device))
            sizes = [(k.camera.width, k.camera.height) for k in localization_map.keyframes]
            self.keyframe_matcher = KeyframeMatcher(arrays, sizes, matcher)

    def close(self) -> None:
        """Stop the search's threads. Call it once no ``localize`` runs or will run on this localizer."""
        self.search.close()

    def localize(
        self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None, prior_by_odometry: bool = False
    ) -> LocalizationResult:
        """Localize one image (RGB uint8 HxWx3 or gray HxW) taken by ``camera``; ``prior``: where the
        camera (world_from_camera) is expected to be, to try guided matching first;
        ``prior_by_odometry``: odometry carried it from the last fix, so guided matching takes the
        tighter radius.

        Raises ValueError when the image does not fit the camera (a caller bug); anything about
        the image content gives NOT_LOCALIZED with a reason. ``timings["total"]`` is the whole call.
        """
        started = time.perf_counter()
        result = self._localize(image, camera, prior, prior_by_odometry)
        result.timings["total"] = time.perf_counter() - started
        return result

    def _localize(
        self, image: np.ndarray, camera: Camera, prior: Rigid3 | None, prior_by_odometry: bool
    ) -> LocalizationResult:
        image = np.asarray(image)
        if image.ndim < 2 or (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            raise ValueError(f"image shape {image.shape} does not match camera {camera.width}x{camera.height}")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        features = self.extractor.extract(image)
        timings["extract"] = time.perf_counter() - started
        if len(features) < self.config.min_keypoints:
            return self._reject(
                f"too few keypoints ({len(features)} < {self.config.min_keypoints})", timings, len(features)
            )

        # Every keypoint undistorted once per frame: guided matching, PnP and verification all use them.
        undistorted = camera.undistort_points(features.keypoints)
        guided = None
        if prior is not None:
            guided = self._track(features, undistorted, camera, prior, prior_by_odometry, timings)
        if guided is not None and not self._weak(guided[0], camera):
            result, correspondences = guided
        else:
            result, correspondences = self._search(features, undistorted, camera, timings)
            if guided is not None and not result.ok:
                # The whole map gave no pose: the verified guided one goes on, weak as it is, to what
                # a weak pose of the search gets (re-matching in the fast profile).
                result, correspondences = guided
            elif correspondences is None:
                return result
        keyframes = self._keyframes_to_rematch(result, correspondences, camera)
        if keyframes is None:
            return result
        rematched = self._rematched(features, undistorted, correspondences, camera, timings, keyframes)
        if rematched.ok and result.ok and not self._agree(rematched, result):
            return self._reject(
                "re-matching moved the search's pose beyond the correction bound (the image fits two places)",
                timings,
                rematched.num_keypoints,
                rematched.num_matches,
            )
        rematched.guided = result.guided
        return rematched

    def _search(self, features, undistorted: np.ndarray, camera: Camera, timings: dict):
        """(result, correspondences) of the candidate search over the whole map; correspondences None
        when there were too few to solve."""
        started = time.perf_counter()
        query_global = self.global_descriptor.describe(features.descriptors)
        timings["global_descriptor"] = time.perf_counter() - started
        correspondences = self.search.search(features.descriptors, query_global)
        timings.update(correspondences.timings)
        num_matches = len(correspondences.query_indices)
        if num_matches < self.config.min_matches:
            reason = f"too few matches ({num_matches} < {self.config.min_matches})"
            return self._reject(reason, timings, len(features), num_matches), None
        return self._solve(features, undistorted, correspondences, camera, timings), correspondences

    def _track(
        self, features, undistorted: np.ndarray, camera: Camera, prior: Rigid3, by_odometry: bool, timings: dict
    ):
        """(result, correspondences) of guided matching around ``prior`` when verification accepts its
        pose, else None. A weak one (as the fast profile's re-matching judges it) gives way to the search
        where that finds a pose (``_localize``). A wrong prior finds few consistent matches, so it falls
        back rather than misleads."""
        correspondences = self.guided_matcher.match(
            undistorted, features.descriptors, camera.pinhole(), prior, by_odometry
        )
        timings.update(correspondences.timings)
        if len(correspondences) < self.config.min_matches:
            return None
        result = self._solve(features, undistorted, correspondences, camera, timings)
        if not result.ok:
            return None
        result.guided = True
        return result, correspondences

    def _keyframes_to_rematch(self, result: LocalizationResult, correspondences, camera: Camera):
        """The keyframes that see the most of the search's matched points (``covisible_keyframes``), to
        re-match the query against, or None to keep the search's result.

        A published pose is re-matched always in the accurate profile, in the fast one when it rests on
        few inliers or a small part of the image; a rejection only when verification found too little
        support. Other rejections stand, in both profiles: under repeated structure re-matching a
        rival's keyframes only confirms the rival, and where PnP found fewer than ``min_inliers`` the
        search's matches are mostly wrong, and so are the keyframes they vote for (templeRing views
        beyond the mapped arc: poses 90-110 deg off), or the global descriptor retrieves (look-alike
        parts of 7-Scenes' kitchen; docs/decisions.md)."""
        if self.keyframe_matcher is None:
            return None
        if result.ok:
            if self.profile is not Profile.ACCURATE and not self._weak(result, camera):
                return None
        elif not self._unsupported(result):
            return None
        return self.keyframe_matcher.covisible_keyframes(correspondences.point_ids, self.config.rematch.keyframes)

    def _weak(self, result: LocalizationResult, camera: Camera) -> bool:
        """A published pose on few inliers or a small part of the image (``RematchConfig``)."""
        rematch = self.config.rematch
        spread = inlier_spread(result.inlier_keypoints, camera)
        return result.num_inliers < rematch.weak_below_inliers or spread < rematch.weak_below_spread

    def _unsupported(self, result: LocalizationResult) -> bool:
        """Rejected by verification only for weak support (inlier ratio, spread, position sigma)."""
        return bool(result.evidence) and lacks_support_only(Evidence(**result.evidence), self.config.verification)

    def _agree(self, rematched: LocalizationResult, searched: LocalizationResult) -> bool:
        """Whether re-matching corrected the search's published pose (a few degrees: 7-Scenes) rather
        than moved it to another place (a mirrored keyframe: llff_beer's SfM map); both profiles ask."""
        rematch = self.config.rematch
        depth = float(np.median(searched.camera_from_world.transform(searched.inlier_points3d)[:, 2]))
        moved = np.linalg.norm(rematched.world_from_camera.translation - searched.world_from_camera.translation)
        turned = rotation_error_deg(rematched.world_from_camera.rotation, searched.world_from_camera.rotation)
        return moved <= rematch.max_correction * depth and turned <= rematch.max_correction_deg

    def _rematched(
        self,
        features,
        undistorted: np.ndarray,
        correspondences: Correspondences,
        camera: Camera,
        timings: dict,
        keyframes,
    ):
        started = time.perf_counter()
        correspondences = self._add_keyframe_matches(features, correspondences, keyframes)
        timings["rematch"] = time.perf_counter() - started
        # The re-matched pose rests on the keyframes it was matched against as much as on the retrieved ones.
        sources = np.concatenate([correspondences.retrieved_keyframes, keyframes])
        return self._solve(features, undistorted, correspondences, camera, timings, self.rematch_pose_config, sources)

    def _solve(
        self,
        features,
        undistorted_keypoints: np.ndarray,
        correspondences,
        camera: Camera,
        timings: dict,
        pose_config: PoseConfig | None = None,
        source_keyframes: np.ndarray | None = None,
    ):
        """PnP on ``correspondences`` and verification: the result, OK or rejected with the reason.
        ``undistorted_keypoints``: every keypoint of ``features``, undistorted. ``pose_config``: the
        main PnP's unless given. ``source_keyframes`` (the correspondences' retrieved keyframes unless
        given) are those the correspondences came from: a right pose views the scene from near one
        of them (verification's ``retrieval_agreement``)."""
        pose_config = pose_config or self.config.pose
        if source_keyframes is None:
            source_keyframes = correspondences.retrieved_keyframes
        num_matches = len(correspondences.query_indices)
        started = time.perf_counter()
        keypoints = features.keypoints[correspondences.query_indices]
        points3d = self.map.arrays["points_xyz"][correspondences.point_ids]
        undistorted = undistorted_keypoints[correspondences.query_indices]
        pinhole = camera.pinhole()  # the keypoints are undistorted from here on
        estimate = estimate_pose(undistorted, points3d, pinhole, pose_config)
        timings["pose"] = timings.get("pose", 0.0) + time.perf_counter() - started
        if estimate is None:
            return self._reject("PnP found no pose", timings, len(features), num_matches)
        if estimate.num_inliers < self.config.min_inliers:
            return self._reject(
                f"too few inliers ({estimate.num_inliers} < {self.config.min_inliers})",
                timings,
                len(features),
                num_matches,
            )
        confidence, evidence = float(estimate.num_inliers / num_matches), {}
        verification = self.config.verification
        if verification.enabled:
            started = time.perf_counter()
            sources = [self.map.keyframes[k].world_from_camera for k in source_keyframes]
            facts = gather_evidence(
                estimate,
                correspondences.query_indices,
                undistorted,
                points3d,
                pinhole,
                sources,
                pose_config,
                verification,
            )
            reason, confidence = decide(facts, verification)
            evidence = facts.to_dict()
            timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - started
            if reason:
                result = self._reject(f"verification: {reason}", timings, len(features), num_matches)
                result.evidence = evidence
                return result
        inliers = estimate.inlier_mask
        return LocalizationResult(
            LocalizationStatus.OK,
            "",
            estimate.world_from_camera,
            published_covariance(estimate.covariance, confidence, self.config.covariance),
            confidence,
            inlier_keypoints=keypoints[inliers],
            inlier_points3d=points3d[inliers],
            inlier_point_ids=correspondences.point_ids[inliers],
            num_keypoints=len(features),
            num_matches=num_matches,
            timings=timings,
            evidence=evidence,
        )

    def _add_keyframe_matches(self, features, correspondences: Correspondences, keyframes) -> Correspondences:
        """The search's correspondences after the LightGlue matches against ``keyframes``: learned
        matches first (progressive sampling draws them first), each (keypoint, point) pair once."""
        query_indices, point_ids = self.keyframe_matcher.match(features, keyframes)
        num_points = len(self.map.arrays["points_xyz"])  # a (keypoint, point) pair as one integer
        found = query_indices * num_points + point_ids
        searched = ~np.isin(correspondences.query_indices * num_points + correspondences.point_ids, found)
        return Correspondences(
            np.concatenate([query_indices, correspondences.query_indices[searched]]),
            np.concatenate([point_ids, correspondences.point_ids[searched]]),
            np.concatenate([np.zeros(len(query_indices), np.float32), correspondences.distances[searched]]),
            correspondences.retrieved_keyframes,
            correspondences.timings,
        )

    @staticmethod
    def _reject(reason: str, timings, num_keypoints=0, num_matches=0) -> LocalizationResult:
        return LocalizationResult(
            LocalizationStatus.NOT_LOCALIZED,
            reason,
            num_keypoints=num_keypoints,
            num_matches=num_matches,
            timings=timings,
        )
