"""The real image sets of ../shared/data as map frames + queries with ground truth, and how a localizer
scores on them. Shared by the real-data regression tests (test_real_imagery.py) and bench/bench_real.py.

Each set's protocol (``../shared/baselines.md`` where hloc was run on it): which frames make the map
(triangulated from the ground-truth poses), which are queries, and what counts as right and as wrong.
Where the scale is arbitrary (SfM or NeRF poses), distances are in units of the median distance
between neighbouring map cameras, so one set of bounds reads the same on every set.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vloc_ros.geometry import Camera, Rigid3, pose_error
from vloc_ros.mapping.sources import MapFrame, read_image_rgb

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Query:
    name: str
    camera: Camera
    truth: Rigid3  # world_from_camera
    load_image: Callable[[], np.ndarray]


@dataclass(frozen=True)
class RealSet:
    name: str
    map_frames: list[MapFrame]
    queries: list[Query]
    unit: float  # metres (metric sets) or the median neighbouring map-camera distance
    unit_name: str  # "m" or "rel"
    # (distance in units, rotation in degrees) bounds: recall within each; beyond ``wrong`` a published
    # pose is wrong (either bound exceeded).
    recall_bounds: tuple[tuple[float, float], ...]
    wrong: tuple[float, float]
    hloc: dict = field(default_factory=dict)  # baselines.md's row, where hloc was run on this protocol


def orthonormal(rotation: np.ndarray) -> np.ndarray:
    """The nearest rotation: 7-Scenes stores rotations orthonormal to ~1e-4 only."""
    u, _, vt = np.linalg.svd(rotation)
    return u @ vt


def neighbour_spacing(poses: list[Rigid3]) -> float:
    centres = np.array([pose.translation for pose in poses])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1)))


def alternate_split(
    name: str, views: dict[str, tuple[Camera, Rigid3]], image_path: Callable[[str], Path], **protocol
) -> RealSet:
    """Every other view (in name order) maps, the views between them are queries; distances in units
    of the median neighbouring map-camera distance (the sets' scale is arbitrary or tiny)."""
    names = sorted(views)
    load = {n: (lambda p=image_path(n): read_image_rgb(p)) for n in names}
    frames = [MapFrame(n, views[n][0], load[n], views[n][1]) for n in names[::2]]
    queries = [Query(n, *views[n], load[n]) for n in names[1::2]]
    spacing = neighbour_spacing([frame.world_from_camera for frame in frames])
    bounds = {"recall_bounds": ((0.05, 2.0), (0.10, 5.0), (0.25, 5.0)), "wrong": (0.25, 5.0), **protocol}
    return RealSet(name, frames, queries, spacing, "rel", **bounds)


def seven_scenes(root: Path = SHARED_DATA / "7scenes_redkitchen_excerpt", query_step: int = 5) -> RealSet:
    """Map: frames 0-599, every 3rd; queries: 600-999, every 5th; 525/525/320/240 (baselines.md).
    ``query_step`` 1 queries every frame, as a robot's camera would (hloc was not run on that)."""
    camera = Camera(640, 480, 525.0, 525.0, 320.0, 240.0)

    def pose(index: int) -> Rigid3:
        matrix = np.loadtxt(root / "poses" / f"frame-{index:06d}.pose.txt")
        return Rigid3(orthonormal(matrix[:3, :3]), matrix[:3, 3])

    def image(index: int) -> Path:
        return root / "images" / f"frame-{index:06d}.jpg"

    frames = [MapFrame(image(i).name, camera, lambda p=image(i): read_image_rgb(p), pose(i)) for i in range(0, 600, 3)]
    queries = [
        Query(image(i).name, camera, pose(i), lambda p=image(i): read_image_rgb(p))
        for i in range(600, 1000, query_step)
    ]
    return RealSet(
        "7scenes_redkitchen",
        frames,
        queries,
        1.0,
        "m",
        recall_bounds=((0.05, 5.0), (0.10, 5.0), (0.25, 2.0)),
        wrong=(0.25, 10.0),
        hloc={"localized": 80 / 80, "median": (0.042, 2.31), "recall": (0.59, 0.89, None), "wrong": 0, "s": 2.33}
        if query_step == 5
        else {},
    )


def seven_scenes_every_frame(root: Path = SHARED_DATA / "7scenes_redkitchen_excerpt") -> RealSet:
    """7-Scenes with every frame of 600-999 a query: what the every-5th protocol skips."""
    return seven_scenes(root, query_step=1)


def llff_beer(root: Path = SHARED_DATA / "llff_beer") -> RealSet:
    """Map: even frames; queries: odd frames; cameras and poses per image from ``sparse/0``."""
    import pycolmap

    from vloc_ros.mapping.reconstruction import world_from_camera

    model = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    views = {
        image.name: (Camera.from_pycolmap(model.cameras[image.camera_id]), world_from_camera(image))
        for image in model.images.values()
    }
    return alternate_split(
        "llff_beer",
        views,
        lambda name: root / "images" / name,
        hloc={"localized": 35 / 35, "median": (0.0052, 0.052), "recall": (1.0, None, None), "wrong": 0, "s": 2.65},
    )


def ngp_fox(root: Path = SHARED_DATA / "ngp_fox") -> RealSet:
    """Map: every other photo (in name order); queries: the rest. One distorted camera; poses are
    camera-to-world in OpenGL axes (y up, z backwards), turned to OpenCV's (y down, z forwards)."""
    meta = json.loads((root / "transforms.json").read_text())
    camera = Camera(
        int(meta["w"]), int(meta["h"]), meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"],
        (meta["k1"], meta["k2"], meta["p1"], meta["p2"]),
    )  # fmt: skip
    opengl_to_opencv = np.diag([1.0, -1.0, -1.0])
    poses = {}
    for frame in meta["frames"]:
        path = root / frame["file_path"]
        if path.exists():
            matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
            poses[path.name] = Rigid3(orthonormal(matrix[:3, :3]) @ opengl_to_opencv, matrix[:3, 3])
    views = {name: (camera, pose) for name, pose in poses.items()}
    return alternate_split("ngp_fox", views, lambda name: root / "images" / name)


def temple_ring_views(root: Path = SHARED_DATA / "middlebury_templeRing_partial") -> dict[str, tuple[Camera, Rigid3]]:
    """The templeRing views present on disk, in name order: name -> (Camera, world_from_camera).
    ``templeR_par.txt`` holds P = K [R | t] per view (world->camera, metric, a calibrated gantry)."""
    views = {}
    for line in (root / "templeR_par.txt").read_text().splitlines()[1:]:
        name, *numbers = line.split()
        values = np.asarray(numbers, dtype=np.float64)
        if (root / name).exists():
            camera = Camera.from_K(640, 480, values[:9].reshape(3, 3))
            views[name] = (camera, Rigid3(orthonormal(values[9:18].reshape(3, 3)), values[18:21]).inverse())
    return dict(sorted(views.items()))


def temple_ring(root: Path = SHARED_DATA / "middlebury_templeRing_partial") -> RealSet:
    """Map: every other present ring view; queries: the views between them (``temple_ring_views``)."""
    return alternate_split("templeRing", temple_ring_views(root), lambda name: root / name)


REAL_SETS = {
    "7scenes": seven_scenes,
    "7scenes_every_frame": seven_scenes_every_frame,
    "llff_beer": llff_beer,
    "ngp_fox": ngp_fox,
    "templeRing": temple_ring,
}
# Each set's folder under SHARED_DATA: a set whose folder is absent is skipped, not failed.
REAL_SET_FOLDERS = {
    "7scenes": "7scenes_redkitchen_excerpt",
    "7scenes_every_frame": "7scenes_redkitchen_excerpt",
    "llff_beer": "llff_beer",
    "ngp_fox": "ngp_fox",
    "templeRing": "middlebury_templeRing_partial",
}


@dataclass
class QueryOutcome:
    name: str
    published: bool
    reason: str
    error: tuple[float, float] | None  # (distance in the set's unit, degrees) of a published pose
    inliers: int
    seconds: float


@dataclass
class SetScore:
    outcomes: list[QueryOutcome]
    real_set: RealSet

    @property
    def published(self) -> list[QueryOutcome]:
        return [o for o in self.outcomes if o.published]

    def recall(self, distance: float, degrees: float) -> float:
        within = [o for o in self.published if o.error[0] <= distance and o.error[1] <= degrees]
        return len(within) / len(self.outcomes)

    @property
    def wrong(self) -> list[QueryOutcome]:
        distance, degrees = self.real_set.wrong
        return [o for o in self.published if o.error[0] > distance or o.error[1] > degrees]

    def median_error(self) -> tuple[float, float]:
        errors = np.array([o.error for o in self.published]) if self.published else np.full((1, 2), np.nan)
        return float(np.median(errors[:, 0])), float(np.median(errors[:, 1]))

    def seconds(self, percentile: float) -> float:
        return float(np.percentile([o.seconds for o in self.outcomes], percentile))


def score(localizer, real_set: RealSet, progress: bool = False) -> SetScore:
    """Localize every query of ``real_set`` (each on its own: no tracking) and measure the errors."""
    from tqdm import tqdm

    outcomes = []
    for query in tqdm(real_set.queries, desc=real_set.name, unit="img", disable=not progress):
        image = query.load_image()
        started = time.perf_counter()
        result = localizer.localize(image, query.camera)
        seconds = time.perf_counter() - started
        error = None
        if result.ok:
            distance, degrees = pose_error(result.world_from_camera, query.truth)
            error = (distance / real_set.unit, degrees)
        outcomes.append(QueryOutcome(query.name, result.ok, result.reason, error, result.num_inliers, seconds))
    return SetScore(outcomes, real_set)
