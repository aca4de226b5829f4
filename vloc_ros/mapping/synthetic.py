"""Synthetic localization maps of any size, written with ``save_map``: for tests and the map-scale bench.

The descriptors follow ``search.synthetic`` (its ``DescriptorModel``: anisotropic unit descriptors,
noisy observations), the rest is what a map of that many points holds: a keyframe every
``points_per_keyframe_step`` new points, each point's track of ``min_observations`` to
``max_observations`` consecutive keyframes, float16 point descriptors (the normalised mean of the
track), PCA codes, random trees over the observations' codes, and random points and keypoints
(nothing here is geometry). A map of millions of points does not fit in memory as float32, so the
observations are generated a chunk of points at a time and their descriptors are written to a
memory-mapped scratch file that ``save_map`` copies into the map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import Camera, Rigid3
from ..search import synthetic
from ..search.binary import Binarizer
from ..search.random_trees import DEFAULT_BUILD, RandomTreesIndex
from .map_format import (
    BinarizerEntry,
    BuildInfo,
    ExtractorEntry,
    GlobalDescriptorEntry,
    Keyframe,
    LocalizationMap,
    MapCounts,
    MapManifest,
    save_map,
)

CODE_BITS = 64
# VLAD centroids: global descriptor dim = clusters x descriptor dim.
VLAD_CLUSTERS = synthetic.DEFAULT_CONFIG["global_dim"] // synthetic.DEFAULT_CONFIG["descriptor_dim"]


@dataclass
class SyntheticMapInfo:
    path: Path
    num_points: int
    num_observations: int
    num_keyframes: int
    generate_seconds: float  # descriptors, codes and tables, without the trees and the writing
    trees_seconds: float  # RandomTreesIndex.build over the observations' codes
    save_seconds: float  # save_map: validation, writing, checksums
    config: dict  # the search.synthetic config of the descriptors
    seed: int


def _chunks(total: int, size: int):
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def write_synthetic_map(
    out_dir,
    num_points: int,
    seed: int = 0,
    *,
    min_observations: int = 3,
    max_observations: int = 4,
    centres_path=None,
    scratch_dir=None,
    chunk_points: int = 250_000,
    overwrite: bool = False,
) -> SyntheticMapInfo:
    """Write a synthetic map of ``num_points`` points to ``out_dir`` with ``save_map``.

    ``centres_path``: where to keep the noise-free track centres, (P, D) float32 .npy, that
    ``query_source`` needs to make queries (None: not kept). ``scratch_dir``: where the observation
    descriptors wait for ``save_map`` (default: beside ``out_dir``; removed afterwards).
    """
    out_dir = Path(out_dir)
    config = {**synthetic.DEFAULT_CONFIG, "min_observations": min_observations, "max_observations": max_observations}
    started = time.perf_counter()
    model = synthetic.DescriptorModel(config, np.random.default_rng(seed))
    step = config["points_per_keyframe_step"]
    # Enough keyframes that every track fits: each observation of a point is in another keyframe, so
    # a keyframe's observations are its points.
    num_keyframes = -(-num_points // step) + max_observations - 1
    structure = np.random.default_rng([seed, 0])
    num_obs = structure.integers(min_observations, max_observations + 1, num_points).astype(np.int64)
    track_offsets = np.zeros(num_points + 1, np.int64)
    np.cumsum(num_obs, out=track_offsets[1:])
    num_observations = int(track_offsets[-1])
    # Observations in track order (point-major), then their rows in the map (keyframe-major).
    obs_point = np.repeat(np.arange(num_points, dtype=np.int32), num_obs)
    obs_keyframe = (np.arange(num_observations) - np.repeat(track_offsets[:-1], num_obs)).astype(np.int32)
    obs_keyframe += np.repeat((np.arange(num_points, dtype=np.int64) // step).astype(np.int32), num_obs)
    order = np.argsort(obs_keyframe, kind="stable")  # within a keyframe by point id
    row_of_obs = np.empty(num_observations, np.int64)
    row_of_obs[order] = np.arange(num_observations)
    keyframe_offsets = np.zeros(num_keyframes + 1, np.int64)
    np.cumsum(np.bincount(obs_keyframe, minlength=num_keyframes), out=keyframe_offsets[1:])
    observation_points = obs_point[order]
    del order

    scratch = Path(scratch_dir) if scratch_dir else out_dir.parent
    scratch.mkdir(parents=True, exist_ok=True)
    descriptors_path = scratch / f".{out_dir.name}.observation_descriptors.npy"
    dim = config["descriptor_dim"]
    observation_descriptors = np.lib.format.open_memmap(descriptors_path, "w+", np.float16, (num_observations, dim))
    centres_out = None
    if centres_path:
        centres_out = np.lib.format.open_memmap(centres_path, "w+", np.float32, (num_points, dim))
    point_descriptors = np.empty((num_points, dim), np.float16)
    point_codes = np.empty((num_points, CODE_BITS // 8), np.uint8)
    obs_codes = np.empty((num_observations, CODE_BITS // 8), np.uint8)
    binarizer = None
    for chunk, (start, stop) in enumerate(_chunks(num_points, chunk_points)):
        rng = np.random.default_rng([seed, 1, chunk])
        centres = model.sample(stop - start, rng)
        if centres_out is not None:
            centres_out[start:stop] = centres
        first, last = track_offsets[start], track_offsets[stop]
        observations = model.observe(centres[obs_point[first:last] - start], rng)
        if binarizer is None:  # fitted on the first chunk's observations (a sample is all a fit uses)
            binarizer = Binarizer.fit(observations, CODE_BITS, "pca", seed)
        observation_descriptors[row_of_obs[first:last]] = observations
        obs_codes[first:last] = binarizer.encode(observations)
        # A track is stored as the normalised mean of its observations (what a map builder would keep).
        sums = np.add.reduceat(observations, track_offsets[start:stop] - first, axis=0)
        sums /= np.linalg.norm(sums, axis=1, keepdims=True)
        point_descriptors[start:stop] = sums
        point_codes[start:stop] = binarizer.encode(sums)
    observation_descriptors.flush()
    generate_seconds = time.perf_counter() - started

    started = time.perf_counter()
    trees = RandomTreesIndex.build(obs_codes, obs_point, seed=seed)
    trees_seconds = time.perf_counter() - started
    del obs_codes, row_of_obs

    rng = np.random.default_rng([seed, 2])
    steps = rng.standard_normal((num_keyframes, config["global_dim"])) * config["global_drift"]
    steps[0] = rng.standard_normal(config["global_dim"])
    global_descriptors = np.cumsum(steps / np.sqrt(config["global_dim"]), axis=0).astype(np.float32)
    global_descriptors /= np.linalg.norm(global_descriptors, axis=1, keepdims=True)
    arrays = {
        "points_xyz": rng.standard_normal((num_points, 3)),
        "point_descriptors": point_descriptors,
        "point_codes": point_codes,
        "point_keyframes_offsets": track_offsets,
        "point_keyframes": obs_keyframe,
        "keyframe_points_offsets": keyframe_offsets,
        "keyframe_points": observation_points,
        "keyframe_global_descriptors": global_descriptors,
        "keyframe_observations_offsets": keyframe_offsets,
        "observation_keypoints": (rng.random((num_observations, 2), np.float32) * [640, 480]).astype(np.float32),
        "observation_descriptors": observation_descriptors,
        "observation_points": observation_points,
    }
    states = {
        "binarizer": binarizer.state(),
        "global_descriptor": {"centroids": rng.standard_normal((VLAD_CLUSTERS, dim)).astype(np.float32)},
        "local_index": trees.state(),
    }
    camera = Camera(640, 480, 500.0, 500.0, 320.0, 240.0)
    keyframes = [
        Keyframe(f"synthetic_{index:07d}", camera, Rigid3(translation=[0.1 * index, 0.0, 0.0]))
        for index in range(num_keyframes)
    ]
    manifest = MapManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        vloc_ros_version="synthetic",
        map_frame="map",
        units="arbitrary",
        extractor=ExtractorEntry("synthetic", "", dim, {}),
        global_descriptor=GlobalDescriptorEntry("vlad", config["global_dim"], VLAD_CLUSTERS, seed),
        binarizer=BinarizerEntry("pca", CODE_BITS, seed, CODE_BITS // 8),
        local_index={"type": "random_trees", **DEFAULT_BUILD},
        counts=MapCounts(
            num_keyframes, num_points, num_observations, num_observations / num_points, 0.0, num_keyframes
        ),
        build=BuildInfo(config={"synthetic": config}, source="synthetic", mode="synthetic"),
    )
    started = time.perf_counter()
    try:
        save_map(LocalizationMap(manifest, keyframes, arrays, states), out_dir, overwrite=overwrite)
    finally:
        del arrays, observation_descriptors
        descriptors_path.unlink(missing_ok=True)
    save_seconds = time.perf_counter() - started
    return SyntheticMapInfo(
        out_dir, num_points, num_observations, num_keyframes, generate_seconds, trees_seconds, save_seconds,
        config, seed,
    )  # fmt: skip


def query_source(localization_map: LocalizationMap, info_config: dict, seed: int, centres) -> synthetic.SyntheticMap:
    """What ``search.synthetic.make_query`` needs to make queries of a map that ``write_synthetic_map``
    wrote with ``info_config`` and ``seed``: its keyframes' points and global descriptors, the
    descriptor model and the track centres (``centres``: the array, or the .npy kept at
    ``centres_path``, memory-mapped)."""
    if not isinstance(centres, np.ndarray):
        centres = np.load(centres, mmap_mode="r")
    arrays = localization_map.arrays
    return synthetic.SyntheticMap(
        point_descriptors=arrays["point_descriptors"],
        observation_descriptors=None,
        observation_point_ids=None,
        keyframe_point_offsets=arrays["keyframe_points_offsets"],
        keyframe_point_ids=arrays["keyframe_points"],
        keyframe_global_descriptors=arrays["keyframe_global_descriptors"],
        config=info_config,
        point_centres=centres,
        descriptor_model=synthetic.DescriptorModel(info_config, np.random.default_rng(seed)),
    )
