"""Grow a map: register new images into an existing map without rebuilding it.

The new images go through the build's stages (``builder``): features, pairs, matches, pycolmap,
``assemble``. They are paired with each other (sequential and retrieval) and with the map's keyframes
(retrieval with the map's global descriptors, described by the map's own VLAD vocabulary). A keyframe
takes part with the keypoints the map keeps observations of (those in a track, with their descriptors),
at their indices in the map's COLMAP model (``sparse/``, which keeps every keypoint's position).
pycolmap then continues that model with the keyframes' poses held fixed, so the map frame does not
move: incremental mapping registers new images without poses; new images with known poses join a
metric map by triangulation. The grown model is assembled into arrays and indexes as a build's and
replaces the old map atomically: a failed update leaves it as it was.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from scipy.spatial import cKDTree

from ..config import from_dict, to_dict
from ..features import Features, create_extractor
from ..features.matching import create_matcher
from ..components import GLOBAL_DESCRIPTOR_TYPES
from . import pairs as pair_selection
from .builder import (
    BuildConfig,
    BuildError,
    BuildSummary,
    FeatureCache,
    MapImage,
    ProgressCallback,
    assemble,
    extract_all,
    match_pairs,
    register_images,
    skipped_note,
    write_map,
)
from .map_format import BuildInfo, LocalizationMap, MapError, load_map
from .reconstruction import ColmapImage, assign_camera_ids
from .sources import MapFrame

if TYPE_CHECKING:
    from .distributed import RayCluster

# Observations are the model's keypoints less COLMAP's 0.5 px, stored as float32: they agree to ~1e-5 px.
_SAME_KEYPOINT_PX = 1e-3


@dataclass
class _Keyframe:
    """A keyframe of the map as its COLMAP image: all it keeps for assembly and the part it matches with."""

    colmap: ColmapImage
    kept: MapImage  # features: every keypoint of the model, the descriptors of those it observes points with
    matchable: Features  # the keypoints it observes points with, and their descriptors
    matchable_indices: np.ndarray  # (M,) their indices among the image's keypoints (points2D)


def update_map(
    frames: Iterable[MapFrame],
    map_dir,
    output=None,
    cache_dir=None,
    progress: bool | ProgressCallback = True,
    overwrite: bool = False,
    source_description: str = "",
    cluster: RayCluster | None = None,
) -> BuildSummary:
    """Register ``frames`` into the map at ``map_dir`` and write the grown map to ``output`` (default:
    ``map_dir`` itself, replaced atomically); raises BuildError, with nothing written, when it cannot.

    Frames named as a keyframe of the map are skipped and counted. The map's build config is used
    throughout (its extractor must be the one this vloc_ros loads). ``progress`` and ``cluster`` as
    ``build_map``'s.
    """
    map_dir = Path(map_dir)
    output = Path(output) if output else map_dir
    in_place = output.resolve() == map_dir.resolve()
    if not in_place and output.exists() and not overwrite:
        raise BuildError(f"{output} exists; use --overwrite to replace it")
    try:
        old = load_map(map_dir)
    except MapError as error:
        raise BuildError(str(error)) from None
    config = from_dict(BuildConfig, old.manifest.build.config)
    extractor = create_extractor(config.extractor)
    if (extractor.weights_sha256, extractor.config) != (
        old.manifest.extractor.weights_sha256,
        old.manifest.extractor.config,
    ):
        raise BuildError(
            f"{map_dir} was built with other {old.manifest.extractor.name} weights or settings than this "
            "vloc_ros extracts with; rebuild the map with `vloc build-map`"
        )
    cache_dir = Path(cache_dir) if cache_dir else output.with_name(output.name + ".cache")
    timings: dict[str, float] = {}

    started = time.perf_counter()
    extraction = extract_all(
        frames,
        extractor,
        FeatureCache(cache_dir / "features", extractor),
        progress,
        known_names=frozenset(keyframe.name for keyframe in old.keyframes),
        cluster=cluster,
    )
    frames, features, skipped = extraction.frames, extraction.features, extraction.skipped
    if not frames:
        raise BuildError(
            f"no new images to add: of {extraction.images_given} given, {extraction.known} are already in "
            f"{map_dir}" + skipped_note(skipped)
        )
    posed = all(frame.world_from_camera is not None for frame in frames)
    if posed and old.manifest.units != "m":
        raise BuildError(
            f"{map_dir} has an arbitrary scale (built without known poses), so known poses of new images are "
            "in another frame than its own; update it with images alone"
        )
    timings["features"] = time.perf_counter() - started

    started = time.perf_counter()
    keyframes = _map_keyframes(old)
    # The global descriptor stays the map's (a learned one is not retrained: the map keeps only its
    # keyframes' observed keypoints, not all the keypoints it was trained on).
    global_descriptor = GLOBAL_DESCRIPTOR_TYPES[old.manifest.global_descriptor.name].from_state(
        old.states["global_descriptor"]
    )
    new_descriptors = np.stack([global_descriptor.describe(f.descriptors) for f in features]).astype(np.float32)
    cameras, camera_ids = assign_camera_ids(
        [frame.camera for frame in frames], {k.colmap.camera_id: k.kept.camera for k in keyframes}
    )
    first_id = max(k.colmap.image_id for k in keyframes) + 1
    new_images = [
        ColmapImage(
            image_id, frame.name, camera_id, frame_features.keypoints, frame.world_from_camera if posed else None
        )
        for image_id, frame, camera_id, frame_features in zip(
            range(first_id, first_id + len(frames)), frames, camera_ids, features
        )
    ]
    # Keyframes first, then the new images: retrieval and pairs index both with one list.
    image_ids = [k.colmap.image_id for k in keyframes] + [image.image_id for image in new_images]
    image_pairs = pair_selection.select_pairs(
        np.concatenate([old.arrays["keyframe_global_descriptors"], new_descriptors]),
        **to_dict(config.pairs),
        matched=len(keyframes),
    )
    timings["retrieval"] = time.perf_counter() - started

    started = time.perf_counter()
    matchable = {k.colmap.image_id: k.matchable for k in keyframes}
    matchable.update((image.image_id, f) for image, f in zip(new_images, features))
    matches = match_pairs(
        create_matcher(config.matcher),
        [(image_ids[i], image_ids[j]) for i, j in image_pairs],
        matchable,
        progress,
        cluster,
    )
    # A keyframe's matches index its matchable keypoints; the database indexes all of them.
    to_keypoint = {k.colmap.image_id: k.matchable_indices for k in keyframes}
    for (i, j), pair_matches in matches.items():
        for side, image_id in enumerate((i, j)):
            if image_id in to_keypoint:
                pair_matches[:, side] = to_keypoint[image_id][pair_matches[:, side]]
    timings["matching"] = time.perf_counter() - started

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vloc_update_") as work:
        work = Path(work)
        reconstruction = register_images(
            work,
            cameras,
            [k.colmap for k in keyframes] + new_images,
            new_images,
            matches,
            config,
            progress,
            existing=_keyframes_model(map_dir / "sparse", work / "map_model"),
        )
        registered = set(reconstruction.reg_image_ids()) if reconstruction is not None else set()
        added = registered & {image.image_id for image in new_images}
        if not added:
            raise BuildError(
                f"none of the {len(new_images)} new images registered in {map_dir} (too little overlap with "
                "the map or texture?)" + skipped_note(skipped)
            )
        lost = [k.colmap.name for k in keyframes if k.colmap.image_id not in registered]
        if lost:  # the map's keyframes and their indices must stay
            raise BuildError(f"pycolmap dropped keyframes {', '.join(lost)} of {map_dir}; the map is left as it was")
        timings["reconstruction"] = time.perf_counter() - started

        started = time.perf_counter()
        images = {k.colmap.image_id: k.kept for k in keyframes}
        images.update(
            (image.image_id, MapImage(frame.name, frame.camera, frame_features, descriptor))
            for image, frame, frame_features, descriptor in zip(new_images, frames, features, new_descriptors)
        )
        mode = "triangulation from known poses" if posed else "incremental mapping"
        localization_map = assemble(
            reconstruction,
            images,
            global_descriptor,
            extractor,
            config,
            units=old.manifest.units,
            images_given=old.manifest.counts.images_given + len(frames) + len(skipped),
            build=BuildInfo(
                config=old.manifest.build.config,
                source=f"{old.manifest.build.source}; updated with {source_description}",
                mode=f"{old.manifest.build.mode}; updated by {mode}",
            ),
            timings=timings,
            progress=progress,
        )
        # Stages are disjoint: retraining learned codes (within assemble) counts as learning.
        timings["indexes"] = time.perf_counter() - started - timings.get("learning", 0.0)
        write_map(localization_map, reconstruction, work, output, in_place or overwrite, timings, cache_dir)
    return BuildSummary.of(localization_map, extraction, len(added), previous=old.manifest.counts)


def _map_keyframes(old: LocalizationMap) -> list[_Keyframe]:
    """The map's keyframes, in keyframe order, as the images of its COLMAP model."""
    import pycolmap

    images_by_name = {image.name: image for image in pycolmap.Reconstruction(str(old.path / "sparse")).images.values()}
    offsets = old.arrays["keyframe_observations_offsets"]
    keyframes = []
    for index, keyframe in enumerate(old.keyframes):
        image = images_by_name.get(keyframe.name)
        if image is None or not image.has_pose:
            raise BuildError(f"{old.path}/sparse lacks keyframe {keyframe.name}; rebuild the map with `vloc build-map`")
        keypoints = np.array([point.xy for point in image.points2D], dtype=np.float64).reshape(-1, 2) - 0.5
        observed = slice(offsets[index], offsets[index + 1])
        observed_keypoints = old.arrays["observation_keypoints"][observed]
        distance, indices = cKDTree(keypoints).query(observed_keypoints)
        if len(indices) and distance.max() > _SAME_KEYPOINT_PX:
            raise BuildError(
                f"the observations of keyframe {keyframe.name} are not keypoints of {old.path}/sparse; "
                "rebuild the map with `vloc build-map`"
            )
        descriptors = old.arrays["observation_descriptors"][observed].astype(np.float32)
        image_size = (keyframe.camera.width, keyframe.camera.height)
        # Only keypoints in a track have a descriptor in the map, and only they are ever matched (below),
        # so the zeros of the others never reach a track.
        all_descriptors = np.zeros((len(keypoints), descriptors.shape[1]), np.float32)
        all_descriptors[indices] = descriptors
        keypoints = keypoints.astype(np.float32)
        keyframes.append(
            _Keyframe(
                colmap=ColmapImage(image.image_id, keyframe.name, image.camera_id, keypoints),
                kept=MapImage(
                    keyframe.name,
                    keyframe.camera,
                    Features(keypoints, np.ones(len(keypoints), np.float32), all_descriptors, image_size),
                    old.arrays["keyframe_global_descriptors"][index],
                ),
                matchable=Features(observed_keypoints, np.ones(len(indices), np.float32), descriptors, image_size),
                matchable_indices=indices,
            )
        )
    return keyframes


def _keyframes_model(sparse: Path, out: Path) -> Path:
    """The map's model as pycolmap continues it: its registered images only, the keyframes (an image
    that the build did not register has no keyframe, so it is not in the database)."""
    import pycolmap

    model = pycolmap.Reconstruction(str(sparse))
    model.tear_down()
    out.mkdir()
    model.write(str(out))
    return out
