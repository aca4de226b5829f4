"""Per-3D-point data for the localizer, from a reconstruction and the features it was built from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..features import Features


@dataclass
class PointTracks:
    """Every observation of every kept 3D point, in flat arrays of length M (observations)."""

    points_xyz: np.ndarray  # (P, 3)
    observation_point: np.ndarray  # (M,) point index in [0, P)
    observation_keyframe: np.ndarray  # (M,) keyframe index
    observation_descriptors: np.ndarray  # (M, D) float32
    observation_keypoints: np.ndarray  # (M, 2) float32, pixels of the keyframe image

    @property
    def num_points(self) -> int:
        return len(self.points_xyz)


def collect_tracks(
    reconstruction, features_by_image_id: dict[int, Features], keyframe_of_image_id: dict[int, int]
) -> PointTracks:
    points_xyz, observation_point, observation_keyframe, descriptors, keypoints = [], [], [], [], []
    for point_index, point in enumerate(reconstruction.points3D.values()):
        points_xyz.append(point.xyz)
        for element in point.track.elements:
            observation_point.append(point_index)
            observation_keyframe.append(keyframe_of_image_id[element.image_id])
            features = features_by_image_id[element.image_id]
            descriptors.append(features.descriptors[element.point2D_idx])
            keypoints.append(features.keypoints[element.point2D_idx])
    dim = next(iter(features_by_image_id.values())).descriptors.shape[1]
    return PointTracks(
        np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3),
        np.asarray(observation_point, dtype=np.int64),
        np.asarray(observation_keyframe, dtype=np.int64),
        np.asarray(descriptors, dtype=np.float32).reshape(-1, dim),
        np.asarray(keypoints, dtype=np.float32).reshape(-1, 2),
    )


def medoid_descriptors(tracks: PointTracks) -> np.ndarray:
    """Per point, the observed descriptor closest to all others of its track.

    For unit vectors, argmin_i sum_j |d_i - d_j|^2 = argmax_i d_i . (sum_j d_j), so one
    scatter-add and one dot product per observation find every medoid at once.
    """
    sums = np.zeros((tracks.num_points, tracks.observation_descriptors.shape[1]), dtype=np.float64)
    np.add.at(sums, tracks.observation_point, tracks.observation_descriptors)
    scores = np.einsum("md,md->m", tracks.observation_descriptors, sums[tracks.observation_point])
    # Best observation per point: sort by (point, -score) and take each point's first row.
    order = np.lexsort((-scores, tracks.observation_point))
    first = np.ones(len(order), dtype=bool)
    first[1:] = tracks.observation_point[order[1:]] != tracks.observation_point[order[:-1]]
    return tracks.observation_descriptors[order[first]]


def csr(groups: np.ndarray, values: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and values of the unique (group, value) pairs, grouped and sorted."""
    pairs = np.unique(np.stack([groups, values], axis=1), axis=0) if len(groups) else np.zeros((0, 2), np.int64)
    offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.add.at(offsets, pairs[:, 0] + 1, 1)
    return np.cumsum(offsets), pairs[:, 1].astype(np.int32)


def keyframe_observation_arrays(tracks: PointTracks, num_keyframes: int) -> dict[str, np.ndarray]:
    """Every keyframe's observations (keypoint, descriptor, point id), grouped by keyframe: what
    re-matching a query against a keyframe (``vloc_ros.search.keyframe_matching``) needs."""
    order = np.argsort(tracks.observation_keyframe, kind="stable")
    offsets = np.zeros(num_keyframes + 1, dtype=np.int64)
    np.add.at(offsets, tracks.observation_keyframe + 1, 1)
    return {
        "keyframe_observations_offsets": np.cumsum(offsets),
        "observation_keypoints": tracks.observation_keypoints[order].astype(np.float32),
        "observation_descriptors": tracks.observation_descriptors[order].astype(np.float16),
        "observation_points": tracks.observation_point[order].astype(np.int32),
    }


def visibility_arrays(tracks: PointTracks, num_keyframes: int) -> dict[str, np.ndarray]:
    point_keyframes_offsets, point_keyframes = csr(
        tracks.observation_point, tracks.observation_keyframe, tracks.num_points
    )
    keyframe_points_offsets, keyframe_points = csr(tracks.observation_keyframe, tracks.observation_point, num_keyframes)
    return {
        "point_keyframes_offsets": point_keyframes_offsets,
        "point_keyframes": point_keyframes,
        "keyframe_points_offsets": keyframe_points_offsets,
        "keyframe_points": keyframe_points,
    }
