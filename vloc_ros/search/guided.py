"""Guided matching: correspondences among the map points a predicted pose sees, near where it projects them.

Tracking's first try (``Localizer.localize(..., prior=...)``): with the camera pose predicted from
the last fix (and odometry where there is some), the points of the keyframes nearest that pose are
projected into the image, and each query keypoint is matched only to the points that land within
``radius_px`` of it, by the descriptor the nearest of those keyframes observed it with. The
candidates per keypoint are a handful instead of the whole map, so no global retrieval or tree
search runs, and a look-alike place elsewhere in the map cannot compete: ORB-SLAM's "track with
motion model" and "track local map" in one step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import Camera, Rigid3
from .candidates import Correspondences
from .csr import range_positions


@dataclass(frozen=True)
class GuidedConfig:
    keyframes: int = 10  # the keyframes nearest the predicted pose whose points are projected
    max_view_angle_deg: float = 60.0  # a keyframe looking further away sees other points
    # How far a point may land from its keypoint: the prediction's error in pixels (1 degree is ~9 px
    # at 525 px focal length). No ratio test within it: neighbouring points of one texture would fail
    # it, and the radius already rules out the look-alikes elsewhere that a ratio test is for. Without
    # odometry the prior is off by how much the camera's motion differs from the last fixes' velocity
    # (a hand-held camera turns degrees in a tenth of a second); odometry measures that motion, so its
    # prior is about as good as the last fix, and the tighter gate keeps fewer wrong candidates, for a
    # faster PnP and verification (docs/decisions.md).
    radius_px: float = 40.0
    radius_with_odometry_px: float = 16.0
    margin_px: float = 20.0  # points projected this far outside the image may still match keypoints at its edge


class GuidedMatcher:
    def __init__(self, arrays: dict[str, np.ndarray], keyframe_poses: list[Rigid3], config: GuidedConfig):
        """``arrays``: the map's arrays (points and the keyframe observations: their CSR offsets,
        points and descriptors); ``keyframe_poses``: world_from_camera of each keyframe."""
        self.config = config
        self.points_xyz = arrays["points_xyz"]
        self.observation_offsets = arrays["keyframe_observations_offsets"]
        self.observation_points = arrays["observation_points"]
        self.observation_descriptors = arrays["observation_descriptors"]
        self.centres = np.array([pose.translation for pose in keyframe_poses]).reshape(-1, 3)
        self.axes = np.array([pose.rotation[:, 2] for pose in keyframe_poses]).reshape(-1, 3)

    def nearest_keyframes(self, world_from_camera: Rigid3) -> np.ndarray:
        """The ``config.keyframes`` keyframes nearest ``world_from_camera`` that look its way."""
        cos_angle = self.axes @ world_from_camera.rotation[:, 2]
        facing = np.flatnonzero(cos_angle >= np.cos(np.radians(self.config.max_view_angle_deg)))
        distances = np.linalg.norm(self.centres[facing] - world_from_camera.translation, axis=1)
        return facing[np.argsort(distances, kind="stable")[: self.config.keyframes]]

    def match(
        self,
        keypoints: np.ndarray,
        descriptors: np.ndarray,
        camera: Camera,
        world_from_camera: Rigid3,
        by_odometry: bool = False,
    ) -> Correspondences:
        """Correspondences of undistorted ``keypoints`` (pinhole ``camera``) with the points the pose
        would see, sorted best first; ``retrieved_keyframes`` are the keyframes whose points were used.
        ``by_odometry``: odometry carried the pose from the last fix (``radius_with_odometry_px``)."""
        started = time.perf_counter()
        config = self.config
        keyframes = self.nearest_keyframes(world_from_camera)
        observations, _ = range_positions(self.observation_offsets, keyframes.astype(np.int64))
        # Keyframes come nearest first, so a point's first observation is the one from the nearest view.
        point_ids, first = np.unique(self.observation_points[observations], return_index=True)
        observations, point_ids = observations[first], point_ids.astype(np.int64)
        pixels, in_front = camera.project(world_from_camera.inverse().transform(self.points_xyz[point_ids]))
        margin = config.margin_px
        visible = (
            in_front
            & (pixels[:, 0] >= -margin)
            & (pixels[:, 0] < camera.width + margin)
            & (pixels[:, 1] >= -margin)
            & (pixels[:, 1] < camera.height + margin)
        )
        observations, point_ids, pixels = observations[visible], point_ids[visible], pixels[visible]
        radius = config.radius_with_odometry_px if by_odometry else config.radius_px
        query_indices, matched, distances = self._nearest_in_radius(
            keypoints, descriptors, observations, point_ids, pixels, radius
        )
        order = np.argsort(distances, kind="stable")
        return Correspondences(
            query_indices[order],
            matched[order],
            distances[order],
            keyframes.astype(np.int64),
            {"guided": time.perf_counter() - started},
        )

    def _nearest_in_radius(self, keypoints, descriptors, observations, point_ids, pixels, radius: float):
        """Per keypoint, the point with the nearest descriptor among the points projected within the radius."""
        empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(point_ids) == 0 or len(keypoints) == 0:
            return empty
        pairs = cKDTree(keypoints).sparse_distance_matrix(cKDTree(pixels), radius, output_type="ndarray")
        if len(pairs) == 0:
            return empty
        query, candidate = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
        # One matrix product over the few visible points beats gathering a descriptor per pair.
        similarity = (descriptors @ self.observation_descriptors[observations].astype(np.float32).T)[query, candidate]
        distance = np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0)).astype(np.float32)
        order = np.lexsort((distance, query))  # by keypoint, nearest first
        best = order[np.r_[True, query[order][1:] != query[order][:-1]]]
        return query[best].astype(np.int64), point_ids[candidate[best]], distance[best]
