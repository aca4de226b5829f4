"""Build a localization map: features -> pairs -> matches -> pycolmap -> per-point data -> indexes.

A library first (the map-builder node calls ``build_map`` too); ``vloc build-map`` wraps it.
Features are cached per image on disk, so a build that was killed resumes where it stopped.
``update.update_map`` grows a map through the same stages (``extract_all``, ``match_pairs``,
``register_images``, ``assemble``, ``write_map``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Union

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_path
from ..config import from_dict, to_dict
from ..features import Features, create_extractor
from ..features.matching import create_matcher
from ..geometry import Camera
from ..learning import TrainingProgress
from ..learning.global_head import GlobalHeadConfig, covisibility, train_global_descriptor
from ..learning.local_head import LearnedBinarizer, LocalHeadConfig, train_local_head
from ..retrieval import GlobalDescriptor, VladDescriptor
from ..search import LOCAL_INDEX_TYPES, Binarizer
from . import pairs as pair_selection
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
from .points import collect_tracks, keyframe_observation_arrays, medoid_descriptors, visibility_arrays
from .reconstruction import (
    ColmapImage,
    assign_camera_ids,
    reconstruct,
    track_correspondences,
    world_from_camera,
    write_database,
)
from .sources import MapFrame

if TYPE_CHECKING:
    from .distributed import RayCluster


@dataclass(frozen=True)
class PairsConfig:
    sequential_window: int = 4
    retrieval_top_k: int = 5


@dataclass(frozen=True)
class GlobalDescriptorConfig:
    # "vlad": VLAD over a k-means vocabulary of the map's descriptors, training-free; "netvlad": that
    # vocabulary as the start of a NetVLAD layer trained with SARE on the map's co-visibility
    # (``learning.global_head``).
    name: str = "vlad"
    num_clusters: int = 32
    seed: int = 0


@dataclass(frozen=True)
class BinarizerConfig:
    # "pca", "itq", "sign" (``search.binary``) or "learned": codes trained on the map's tracks
    # (``learning.local_head``).
    method: str = "pca"
    num_bits: int = 64
    seed: int = 0


@dataclass(frozen=True)
class ReconstructionConfig:
    seed: int = 0
    min_num_matches: int = 15
    min_triangulation_angle_deg: float = 3.0
    num_threads: int | None = None  # None: all cores, except one for structure from motion (reproducible maps)


@dataclass(frozen=True)
class BuildConfig:
    # Extractor, matcher and local index options are dicts: each component checks its own, and
    # naming another component (``name``) replaces the default's options whole (config.merge_config).
    # Up to 1024 px: photos larger than a robot camera's 640x480 keep their detail (queries are
    # extracted with the map's settings, so they do too; docs/decisions.md).
    extractor: dict = field(default_factory=lambda: {"name": "xfeat", "max_keypoints": 2048, "resize_max": 1024})
    # A loose ratio keeps low-texture sequences registering (llff_beer).
    matcher: dict = field(default_factory=lambda: {"name": "mutual_nn", "ratio": 0.95})
    pairs: PairsConfig = field(default_factory=PairsConfig)
    global_descriptor: GlobalDescriptorConfig = field(default_factory=GlobalDescriptorConfig)
    binarizer: BinarizerConfig = field(default_factory=BinarizerConfig)
    local_index: dict = field(default_factory=lambda: {"type": "random_trees", "seed": 0})
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    min_registered_images: int = 3
    map_frame: str = "map"


# ``build_map``'s progress callback: (stage, done, total) with stage one of PROGRESS_STAGES; total is
# None while unknown (frames from a generator, e.g. a bag, during feature extraction).
ProgressCallback = Callable[[str, int, Union[int, None]], None]
PROGRESS_STAGES = ("extract features", "match pairs", "register images", "learn descriptors")
LEARNING_STAGE = PROGRESS_STAGES[3]


class Progress:
    """tqdm bars (``progress=True``), nothing (False), or calls to a ``ProgressCallback``."""

    def __init__(self, progress: bool | ProgressCallback, stage: str, total: int | None, unit: str):
        self._callback = progress if callable(progress) else None
        self._stage, self.total, self.done = stage, total, 0
        self._bar = tqdm(total=total, desc=stage, unit=unit, disable=progress is not True)
        if self._callback is not None:
            self._callback(stage, 0, total)

    def update(self, count: int = 1) -> None:
        self._bar.update(count)
        self.done += count
        if self._callback is not None:
            self._callback(self._stage, self.done, self.total)

    def set(self, done: int) -> None:
        self._bar.n = done
        self._bar.refresh()
        self.done = done
        if self._callback is not None:
            self._callback(self._stage, done, self.total)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BuildError(RuntimeError):
    """The build cannot produce a usable map; nothing was written."""


@dataclass
class BuildSummary:
    output: Path
    images_given: int
    images_registered: int  # in an update: of the new images
    skipped_images: dict[str, str]  # name -> reason
    features_from_cache: int  # images whose features a killed earlier build had already extracted
    num_points: int
    mean_track_length: float
    mean_reprojection_error_px: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    previous: MapCounts | None = None  # an update: the counts of the map it grew
    already_in_map: int = 0  # an update: images given that the map has (same name), skipped

    @classmethod
    def of(
        cls, written: LocalizationMap, extraction: Extraction, images_registered: int, previous: MapCounts | None = None
    ) -> BuildSummary:
        """The summary of the map ``write_map`` wrote, built from ``extraction``'s images."""
        counts = written.manifest.counts
        return cls(
            output=written.path,
            images_given=extraction.images_given,
            images_registered=images_registered,
            skipped_images=extraction.skipped,
            features_from_cache=extraction.reused,
            num_points=counts.points,
            mean_track_length=counts.mean_track_length,
            mean_reprojection_error_px=counts.mean_reprojection_error_px,
            stage_seconds=written.manifest.build.stage_seconds,
            previous=previous,
            already_in_map=extraction.known,
        )

    def format(self) -> str:
        lines = [f"map {'updated' if self.previous else 'written'}: {self.output}"]
        if self.previous is None:
            lines.append(f"  images registered / given : {self.images_registered} / {self.images_given}")
        else:
            lines += [
                f"  new images registered     : {self.images_registered} / "
                f"{self.images_given - self.already_in_map - len(self.skipped_images)}",
                f"  already in the map        : {self.already_in_map} (skipped)",
                f"  keyframes                 : {self.previous.keyframes} -> "
                f"{self.previous.keyframes + self.images_registered}",
                f"  3D points before          : {self.previous.points}",
            ]
        lines += [
            f"  features reused from cache: {self.features_from_cache}",
            f"  3D points                 : {self.num_points}",
            f"  mean track length         : {self.mean_track_length:.2f}",
            f"  mean reprojection error   : {self.mean_reprojection_error_px:.3f} px",
        ]
        if self.skipped_images:
            lines.append(f"  skipped images ({len(self.skipped_images)}):")
            lines += [f"    {name}: {reason}" for name, reason in self.skipped_images.items()]
        lines.append("  time per stage:")
        lines += [f"    {stage:<14} {seconds:8.2f} s" for stage, seconds in self.stage_seconds.items()]
        return "\n".join(lines)


class FeatureCache:
    """One ``.npz`` per image under a directory keyed by everything that changes the features."""

    def __init__(self, root: Path, extractor):
        key = json.dumps(
            {"name": extractor.name, "weights": extractor.weights_sha256, "config": extractor.config},
            sort_keys=True,
            default=str,
        )
        self.directory = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".npz")

    def get(self, name: str) -> Features | None:
        path = self._path(name)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return Features(data["keypoints"], data["scores"], data["descriptors"], tuple(data["image_size"]))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a file cut short by a kill: extract again
            return None

    def put(self, name: str, features: Features) -> None:
        with atomic_path(self._path(name)) as tmp:
            np.savez(
                tmp,
                keypoints=features.keypoints,
                scores=features.scores,
                descriptors=features.descriptors,
                image_size=np.asarray(features.image_size),
            )


@dataclass
class Extraction:
    frames: list[MapFrame]  # the usable frames, in input order
    features: list[Features]  # per usable frame
    skipped: dict[str, str]  # name -> reason
    reused: int  # images whose features came from the cache
    known: int = 0  # frames named as an image of the map being updated: not extracted

    @property
    def images_given(self) -> int:
        return len(self.frames) + len(self.skipped) + self.known


def extract_all(
    frames: Iterable[MapFrame],
    extractor,
    cache: FeatureCache,
    progress: bool | ProgressCallback,
    known_names: frozenset[str] = frozenset(),
    cluster: RayCluster | None = None,
) -> Extraction:
    """Features for every readable frame; unreadable or featureless images are skipped and named,
    frames named in ``known_names`` (already in the map) counted and passed over. ``cluster``: the
    images the cache lacks are extracted by its workers; each result enters the cache as it arrives."""
    extraction = Extraction([], [], {}, 0)
    # Per frame in input order: the frame without its image, and its features or why it has none.
    results: list[tuple[MapFrame, Features | str | None]] = []
    total = len(frames) if hasattr(frames, "__len__") else None
    with Progress(progress, "extract features", total, "img") as bar:

        def uncached() -> Iterator[tuple[int, MapFrame]]:
            for frame in frames:
                if frame.name in known_names:
                    extraction.known += 1
                    bar.update()
                    continue
                cached = cache.get(frame.name)
                # Keep no decoded image: a bag's frames hold theirs.
                results.append((replace(frame, load_image=None, read_file=None), cached))
                if cached is None:
                    yield len(results) - 1, frame
                else:
                    extraction.reused += 1
                    bar.update()

        extracted = (
            cluster.extract(uncached(), extractor)
            if cluster is not None
            else ((slot, extract_frame(frame, extractor)) for slot, frame in uncached())
        )
        for slot, features in extracted:
            if isinstance(features, Features):
                cache.put(results[slot][0].name, features)
            results[slot] = (results[slot][0], features)
            bar.update()
    for frame, features in results:
        if isinstance(features, str):
            extraction.skipped[frame.name] = features
        elif len(features) < 8:
            extraction.skipped[frame.name] = f"only {len(features)} keypoints"
        else:
            extraction.frames.append(frame)
            extraction.features.append(features)
    return extraction


def extract_frame(frame: MapFrame, extractor) -> Features | str:
    """The features of ``frame``'s image, or why it has none."""
    try:
        return extract_image(frame.load_image(), frame.camera, extractor)
    except ValueError as error:
        return str(error)


def extract_image(image: np.ndarray, camera: Camera, extractor) -> Features:
    if (image.shape[1], image.shape[0]) != (camera.width, camera.height):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the camera is {camera.width}x{camera.height}")
    return extractor.extract(image)


def build_map(
    frames: Iterable[MapFrame],
    output,
    config: BuildConfig | dict | None = None,
    cache_dir=None,
    progress: bool | ProgressCallback = True,
    overwrite: bool = False,
    source_description: str = "",
    cluster: RayCluster | None = None,
) -> BuildSummary:
    """Build and atomically write a map; raises BuildError (nothing written) when it cannot.

    ``progress``: True shows tqdm bars, False nothing; a ``ProgressCallback`` is called with
    (stage, done, total) as each stage of ``PROGRESS_STAGES`` starts and advances. ``cluster``: a
    connected ``distributed.RayCluster`` extracts features and matches pairs; the rest runs here.
    """
    config = from_dict(BuildConfig, config)
    output = Path(output)
    if output.exists() and not overwrite:
        raise BuildError(f"{output} exists; use --overwrite to replace it")
    cache_dir = Path(cache_dir) if cache_dir else output.with_name(output.name + ".cache")
    timings: dict[str, float] = {}

    started = time.perf_counter()
    extractor = create_extractor(config.extractor)
    extraction = extract_all(
        frames, extractor, FeatureCache(cache_dir / "features", extractor), progress, cluster=cluster
    )
    frames, features, skipped = extraction.frames, extraction.features, extraction.skipped
    images_given = extraction.images_given
    if len(frames) < config.min_registered_images:
        raise BuildError(
            f"only {len(frames)} usable images of {images_given}; a map needs at least "
            f"{config.min_registered_images}" + skipped_note(skipped)
        )
    timings["features"] = time.perf_counter() - started

    started = time.perf_counter()
    global_descriptor = VladDescriptor.fit(
        np.concatenate([f.descriptors for f in features]),
        num_clusters=config.global_descriptor.num_clusters,
        seed=config.global_descriptor.seed,
    )
    global_descriptors = np.stack([global_descriptor.describe(f.descriptors) for f in features]).astype(np.float32)
    image_pairs = pair_selection.select_pairs(global_descriptors, **to_dict(config.pairs))
    timings["retrieval"] = time.perf_counter() - started

    started = time.perf_counter()
    # COLMAP image ids start at 1: frame index + 1.
    matches = match_pairs(
        create_matcher(config.matcher),
        [(i + 1, j + 1) for i, j in image_pairs],
        dict(enumerate(features, 1)),
        progress,
        cluster,
    )
    timings["matching"] = time.perf_counter() - started

    started = time.perf_counter()
    cameras, camera_ids = assign_camera_ids([f.camera for f in frames], {})
    images = [
        ColmapImage(index, frame.name, camera_id, frame_features.keypoints, frame.world_from_camera)
        for index, (frame, camera_id, frame_features) in enumerate(zip(frames, camera_ids, features), 1)
    ]
    with tempfile.TemporaryDirectory(prefix="vloc_build_") as work:
        work = Path(work)
        reconstruction = register_images(work, cameras, images, images, matches, config, progress)
        registered = reconstruction.num_reg_images() if reconstruction is not None else 0
        if registered < config.min_registered_images:
            raise BuildError(
                f"only {registered} of {images_given} images registered; a map needs at least "
                f"{config.min_registered_images} (too little overlap or texture?)" + skipped_note(skipped)
            )
        timings["reconstruction"] = time.perf_counter() - started

        if config.global_descriptor.name == "netvlad":
            started = time.perf_counter()
            global_descriptor = learn_global_descriptor(reconstruction, features, global_descriptor, config, progress)
            global_descriptors = np.stack([global_descriptor.describe(f.descriptors) for f in features])
            timings["learning"] = time.perf_counter() - started

        started, learned_before = time.perf_counter(), timings.get("learning", 0.0)
        metric = all(f.world_from_camera is not None for f in frames)
        localization_map = assemble(
            reconstruction,
            {
                image.image_id: MapImage(frame.name, frame.camera, frame_features, frame_descriptor)
                for image, frame, frame_features, frame_descriptor in zip(images, frames, features, global_descriptors)
            },
            global_descriptor,
            extractor,
            config,
            units="m" if metric else "arbitrary",
            images_given=images_given,
            timings=timings,
            progress=progress,
            build=BuildInfo(
                config=to_dict(config),
                source=source_description,
                mode="triangulation from known poses" if metric else "incremental mapping",
            ),
        )
        # Stages are disjoint: the learned codes' training (within assemble) counts as learning.
        timings["indexes"] = time.perf_counter() - started - (timings.get("learning", 0.0) - learned_before)
        write_map(localization_map, reconstruction, work, output, overwrite, timings, cache_dir)
    return BuildSummary.of(localization_map, extraction, registered)


def match_pairs(
    matcher,
    pairs: list[tuple[int, int]],
    features: dict[int, Features],
    progress: bool | ProgressCallback,
    cluster: RayCluster | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """The matches of each pair of image ids that has any, by pair in the order of ``pairs``: rows of
    keypoint indices into ``features`` of the pair's two images. ``cluster``: its workers match."""
    matched = (
        cluster.match(matcher, pairs, features)
        if cluster is not None
        else ((pair, matcher.match(features[pair[0]], features[pair[1]])) for pair in pairs)
    )
    matches = {}
    with Progress(progress, "match pairs", len(pairs), "pair") as bar:
        for pair, pair_matches in matched:
            if len(pair_matches):
                matches[pair] = pair_matches
            bar.update()
    return {pair: matches[pair] for pair in pairs if pair in matches}


def learn_global_descriptor(
    reconstruction, features: list[Features], vlad: VladDescriptor, config: BuildConfig, progress
) -> GlobalDescriptor:
    """A NetVLAD layer started from ``vlad``'s vocabulary and trained on the co-visibility of the images
    ``reconstruction`` registered (image id = index in ``features`` + 1), on all their keypoints."""
    registered = sorted(reconstruction.reg_image_ids())
    points_seen = [
        sorted({p.point3D_id for p in reconstruction.images[i].points2D if p.has_point3D()}) for i in registered
    ]
    offsets = np.cumsum([0] + [len(seen) for seen in points_seen])
    seen = np.concatenate([np.asarray(s, np.int64) for s in points_seen])
    with learning_errors():
        return train_global_descriptor(
            [features[i - 1].descriptors for i in registered],
            covisibility(offsets, seen, len(registered)),
            vlad,
            GlobalHeadConfig(seed=config.global_descriptor.seed),
            progress=training_progress(progress),
        )


def training_progress(progress: bool | ProgressCallback) -> TrainingProgress:
    """A trainer's progress reporting to ``build_map``'s: a bar, nothing, or the callback's learning stage."""
    if callable(progress):
        return lambda done, total: progress(LEARNING_STAGE, done, total)
    return progress


@contextmanager
def learning_errors():
    """A map whose tracks cannot train a learned component (too few points seen twice, say) is the
    build's error, not a crash."""
    try:
        yield
    except ValueError as error:
        raise BuildError(f"cannot train the learned descriptors on this map: {error}") from None


def register_images(
    work: Path,
    cameras: dict[int, Camera],
    images: list[ColmapImage],
    new_images: list[ColmapImage],
    matches: dict[tuple[int, int], np.ndarray],
    config: BuildConfig,
    progress: bool | ProgressCallback,
    existing: Path | None = None,
):
    """The reconstruction of ``images`` (all that ``matches`` name) in which ``new_images`` are
    registered: all of them in a build; in an update, those the map's model ``existing`` lacks.
    None when pycolmap makes no model."""
    # The map's tracks join an update's matches: pycolmap's correspondence graph must hold every image
    # of the model it continues, and new points may extend them as a build's would.
    verified = track_correspondences(existing) if existing else None
    write_database(work / "database.db", cameras, images, matches, verified)
    with Progress(progress, "register images", len(new_images), "img") as bar:
        reconstruction = reconstruct(
            work / "database.db",
            work,
            cameras,
            new_images,
            to_dict(config.reconstruction),
            on_image_registered=bar.update,
            existing=existing,
        )
        if reconstruction is not None:
            bar.set(reconstruction.num_reg_images() - (len(images) - len(new_images)))
    return reconstruction


def write_map(
    localization_map: LocalizationMap,
    reconstruction,
    work: Path,
    output: Path,
    overwrite: bool,
    timings: dict[str, float],
    cache_dir: Path,
) -> None:
    """Save the map with its reconstruction as ``sparse/`` and the stage times, atomically; then remove
    the feature cache ``cache_dir``."""
    manifest = localization_map.manifest
    localization_map.manifest = replace(manifest, build=replace(manifest.build, stage_seconds=timings))
    sparse_dir = work / "sparse_export"
    sparse_dir.mkdir()
    reconstruction.write(str(sparse_dir))
    save_map(localization_map, output, overwrite=overwrite, sparse_dir=sparse_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)  # the map is complete: the resume cache is spent


def skipped_note(skipped: dict) -> str:
    return f"; skipped: {', '.join(f'{n} ({r})' for n, r in skipped.items())}" if skipped else ""


def fit_binarizer(tracks, config: BinarizerConfig, timings: dict[str, float], progress) -> Binarizer | LearnedBinarizer:
    """The binarizer ``config`` names, fitted (or trained) on every observation of the map's points."""
    if config.method != "learned":
        return Binarizer.fit(tracks.observation_descriptors, config.num_bits, config.method, config.seed)
    started = time.perf_counter()
    with learning_errors():
        binarizer = train_local_head(
            tracks.observation_descriptors,
            tracks.observation_point,
            tracks.observation_keyframe,
            LocalHeadConfig(num_bits=config.num_bits, seed=config.seed),
            progress=training_progress(progress),
        )
    timings["learning"] = timings.get("learning", 0.0) + time.perf_counter() - started
    return binarizer


@dataclass
class MapImage:
    """What the map keeps of one image of a reconstruction."""

    name: str
    camera: Camera
    features: Features  # indexed as the image's points2D; the descriptors of every keypoint in a track
    global_descriptor: np.ndarray  # (G,) float32


def assemble(
    reconstruction,
    images: dict[int, MapImage],
    global_descriptor: GlobalDescriptor,
    extractor,
    config: BuildConfig,
    *,
    units: str,
    images_given: int,
    build: BuildInfo,
    timings: dict[str, float],
    progress: bool | ProgressCallback = False,
) -> LocalizationMap:
    """The map of the images ``reconstruction`` registered (``images`` by COLMAP image id): keyframes in
    image id order, points, observations, and the binarizer and local index learned on them. Training
    learned codes adds its seconds to ``timings["learning"]``."""
    registered = sorted(reconstruction.reg_image_ids())
    keyframe_of_image_id = {image_id: k for k, image_id in enumerate(registered)}
    tracks = collect_tracks(reconstruction, {i: images[i].features for i in registered}, keyframe_of_image_id)
    if tracks.num_points == 0:
        raise BuildError("the reconstruction has no 3D points")

    binarizer = fit_binarizer(tracks, config.binarizer, timings, progress)
    representative = medoid_descriptors(tracks)
    index_options = dict(config.local_index)
    index_type = LOCAL_INDEX_TYPES[index_options.pop("type")]
    local_index = index_type.build(
        binarizer.encode(tracks.observation_descriptors), tracks.observation_point, **index_options
    )

    keyframes = [
        Keyframe(images[i].name, images[i].camera, world_from_camera(reconstruction.images[i])) for i in registered
    ]
    arrays = {
        "points_xyz": tracks.points_xyz,
        "point_descriptors": representative.astype(np.float16),
        "point_codes": binarizer.encode(representative),
        "keyframe_global_descriptors": np.stack([images[i].global_descriptor for i in registered]).astype(np.float32),
        **visibility_arrays(tracks, len(registered)),
        **keyframe_observation_arrays(tracks, len(registered)),
    }
    manifest = MapManifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        vloc_ros_version=__version__,
        map_frame=config.map_frame,
        units=units,
        extractor=ExtractorEntry(
            name=extractor.name,
            weights_sha256=extractor.weights_sha256,
            descriptor_dim=extractor.descriptor_dim,
            config=extractor.config,
        ),
        global_descriptor=GlobalDescriptorEntry(
            name=global_descriptor.name,
            dim=int(arrays["keyframe_global_descriptors"].shape[1]),
            num_clusters=config.global_descriptor.num_clusters,
            seed=config.global_descriptor.seed,
        ),
        binarizer=BinarizerEntry(
            method=binarizer.method,
            num_bits=binarizer.num_bits,
            seed=config.binarizer.seed,
            code_bytes=int(arrays["point_codes"].shape[1]),
        ),
        local_index=config.local_index,
        counts=MapCounts(
            keyframes=len(keyframes),
            points=tracks.num_points,
            observations=int(len(tracks.observation_point)),
            mean_track_length=float(len(tracks.observation_point) / tracks.num_points),
            mean_reprojection_error_px=float(reconstruction.compute_mean_reprojection_error()),
            images_given=images_given,
        ),
        build=build,
    )
    states = {
        "binarizer": binarizer.state(),
        "local_index": local_index.state(),
        "global_descriptor": global_descriptor.state(),
    }
    return LocalizationMap(manifest, keyframes, arrays, states)
