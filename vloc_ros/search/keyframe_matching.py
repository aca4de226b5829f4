"""Re-matching a query against its covisible keyframes with a learned matcher, lifted to map points.

The localizer's second source of correspondences (hloc's way, on a handful of keyframes; when it is
used: ``Localizer._keyframes_to_rematch``): the candidate search's matches vote for the keyframes that
see their points; the query's features are matched with LightGlue (LighterGlue for XFeat) against
each of the few keyframes with the most votes, and every match to an observation of a map point
becomes a 2D-3D correspondence.
Voting rather than global retrieval: the search's matches already point at the right part of the
map when a global descriptor retrieves a look-alike place.
"""

from __future__ import annotations

import numpy as np

from ..features import Features
from .csr import gather_ranges


class KeyframeMatcher:
    def __init__(self, arrays: dict[str, np.ndarray], keyframe_sizes: list[tuple[int, int]], matcher):
        """``arrays``: the map's arrays (point_keyframes and keyframe_observations CSRs);
        ``keyframe_sizes``: (width, height) per keyframe; ``matcher``: a ``features.create_matcher``."""
        self.point_keyframes = (arrays["point_keyframes_offsets"], arrays["point_keyframes"])
        self.observation_offsets = arrays["keyframe_observations_offsets"]
        self.observation_keypoints = arrays["observation_keypoints"]
        self.observation_descriptors = arrays["observation_descriptors"]
        self.observation_points = arrays["observation_points"]
        self.keyframe_sizes = keyframe_sizes
        self.matcher = matcher

    def covisible_keyframes(self, point_ids: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` keyframes that see the most of ``point_ids``, most first."""
        offsets, keyframes = self.point_keyframes
        seen, _ = gather_ranges(offsets, keyframes, np.asarray(point_ids, np.int64))
        votes = np.bincount(seen, minlength=len(self.keyframe_sizes))
        best = np.argsort(-votes, kind="stable")[:count]
        return best[votes[best] > 0]

    def keyframe_features(self, keyframe: int) -> Features:
        start, end = self.observation_offsets[keyframe], self.observation_offsets[keyframe + 1]
        descriptors = self.observation_descriptors[start:end].astype(np.float32)
        keypoints = self.observation_keypoints[start:end]
        return Features(keypoints, np.ones(len(keypoints), np.float32), descriptors, self.keyframe_sizes[keyframe])

    def match(self, query: Features, keyframes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query keypoint rows, map point ids) of the unique matches against ``keyframes``."""
        pairs = []
        for keyframe in keyframes:
            matches = self.matcher.match(query, self.keyframe_features(int(keyframe)))
            start = self.observation_offsets[keyframe]
            pairs.append(np.stack([matches[:, 0], self.observation_points[start + matches[:, 1]]], axis=1))
        if not pairs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        unique = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)
        return unique[:, 0], unique[:, 1]
