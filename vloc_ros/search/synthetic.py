"""Synthetic maps and queries for testing and benchmarking the correspondence search.

The generator mimics what the search sees from a real map:
- point descriptors are L2-normalised but anisotropic (a decaying PCA spectrum and a non-zero
  mean, like CNN descriptors), so binarization choices matter;
- every point has 2-8 noisy observations (its SfM track), seen by consecutive keyframes along a
  trajectory, so keyframes share points with their neighbours;
- keyframe global descriptors drift smoothly along the trajectory, so retrieving the keyframes
  near the query's position retrieves the points the query sees;
- a query frame sees fresh noisy observations of the points of one keyframe plus distractor
  keypoints that belong to no map point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

DEFAULT_CONFIG = {
    "descriptor_dim": 64,
    "global_dim": 128,
    "min_observations": 2,
    "max_observations": 8,
    "points_per_keyframe_step": 400,  # new points per keyframe; each keyframe sees ~5x that
    "spectrum_decay": 0.6,  # per-component std ~ (i + 1) ** -decay
    "mean_norm": 0.3,  # offset of the descriptor distribution from the origin
    "observation_noise": 0.55,  # two observations of a point: cosine ~0.77, below XFeat's 0.82 match threshold
    "global_drift": 0.35,  # random-walk step of keyframe global descriptors
    "global_query_noise": 0.1,
}


@dataclass
class SyntheticMap:
    point_descriptors: np.ndarray  # (P, D) float32, normalised mean of each track
    observation_descriptors: np.ndarray  # (M, D) float32
    observation_point_ids: np.ndarray  # (M,) int64
    keyframe_point_offsets: np.ndarray  # (K + 1,) int64, CSR over keyframe_point_ids
    keyframe_point_ids: np.ndarray  # int64
    keyframe_global_descriptors: np.ndarray  # (K, G) float32
    config: dict
    # Ground truth only (a real map has neither): noise-free track centres and their distribution.
    point_centres: np.ndarray
    descriptor_model: "DescriptorModel"


@dataclass
class SyntheticQuery:
    descriptors: np.ndarray  # (Q, D) float32
    true_point_ids: np.ndarray  # (Q,) int64, -1 for distractors
    global_descriptor: np.ndarray  # (G,) float32
    keyframe: int  # the keyframe whose points the query sees


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]


class DescriptorModel:
    """An anisotropic distribution of unit descriptors plus isotropic observation noise."""

    def __init__(self, config: dict, rng: np.random.Generator):
        dim = config["descriptor_dim"]
        self.basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        spectrum = (np.arange(dim) + 1.0) ** -config["spectrum_decay"]
        self.spectrum = spectrum / np.linalg.norm(spectrum)
        self.mean = config["mean_norm"] * _normalise(rng.standard_normal(dim))
        self.noise = config["observation_noise"]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        latent = rng.standard_normal((n, self.spectrum.size), dtype=np.float32) * self.spectrum
        return _normalise(self.mean + latent @ self.basis.T)

    def observe(self, descriptors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(descriptors.shape, dtype=np.float32) * (self.noise / np.sqrt(descriptors.shape[1]))
        return _normalise(descriptors + noise)


def make_map(num_points: int, seed: int = 0, config: dict | None = None) -> SyntheticMap:
    config = {**DEFAULT_CONFIG, **(config or {})}
    rng = np.random.default_rng(seed)
    model = DescriptorModel(config, rng)
    centres = model.sample(num_points, rng)

    num_keyframes = max(2, num_points // config["points_per_keyframe_step"])
    num_obs = rng.integers(config["min_observations"], config["max_observations"] + 1, num_points)
    # Point i is first seen by the keyframe at its position along the trajectory, then by the next ones.
    first_keyframe = (np.arange(num_points) * num_keyframes) // num_points
    observation_point_ids = np.repeat(np.arange(num_points), num_obs)
    track_start = np.cumsum(num_obs) - num_obs
    step_in_track = np.arange(observation_point_ids.size) - np.repeat(track_start, num_obs)
    observation_keyframes = np.minimum(first_keyframe[observation_point_ids] + step_in_track, num_keyframes - 1)
    observations = model.observe(centres[observation_point_ids], rng)

    # A track is stored as the normalised mean of its observations (what a map builder would keep).
    num_observations = observation_point_ids.size
    track_sum = scipy.sparse.csr_matrix(
        (np.ones(num_observations, np.float32), np.arange(num_observations), np.append(track_start, num_observations)),
        shape=(num_points, num_observations),
    )
    point_descriptors = _normalise(track_sum @ observations)

    # Keyframe -> points CSR (a point clipped at the last keyframe is listed once).
    keys = np.unique(observation_keyframes * num_points + observation_point_ids)
    offsets = np.zeros(num_keyframes + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // num_points, minlength=num_keyframes), out=offsets[1:])

    steps = rng.standard_normal((num_keyframes, config["global_dim"])) * config["global_drift"]
    steps[0] = rng.standard_normal(config["global_dim"])
    global_descriptors = _normalise(np.cumsum(steps / np.sqrt(config["global_dim"]), axis=0))

    return SyntheticMap(
        point_descriptors=point_descriptors,
        observation_descriptors=observations,
        observation_point_ids=observation_point_ids.astype(np.int64),
        keyframe_point_offsets=offsets,
        keyframe_point_ids=keys % num_points,
        keyframe_global_descriptors=global_descriptors,
        config=config,
        point_centres=centres,
        descriptor_model=model,
    )


def make_query(
    synthetic_map: SyntheticMap,
    num_keypoints: int,
    distractor_fraction: float = 0.25,
    seed: int = 1,
) -> SyntheticQuery:
    rng = np.random.default_rng(seed)
    model = synthetic_map.descriptor_model
    offsets, point_ids = synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids
    keyframe = int(rng.integers(len(offsets) - 1))
    visible = point_ids[offsets[keyframe] : offsets[keyframe + 1]]
    num_true = min(int(round(num_keypoints * (1.0 - distractor_fraction))), visible.size)
    true_ids = rng.choice(visible, num_true, replace=False)
    descriptors = np.concatenate(
        [model.observe(synthetic_map.point_centres[true_ids], rng), model.sample(num_keypoints - num_true, rng)]
    )
    true_point_ids = np.concatenate([true_ids, np.full(num_keypoints - num_true, -1)]).astype(np.int64)
    order = rng.permutation(num_keypoints)
    global_noise = rng.standard_normal(synthetic_map.config["global_dim"]) * synthetic_map.config["global_query_noise"]
    global_descriptor = _normalise(
        synthetic_map.keyframe_global_descriptors[keyframe] + global_noise / np.sqrt(global_noise.size)
    )
    return SyntheticQuery(descriptors[order], true_point_ids[order], global_descriptor, keyframe)
