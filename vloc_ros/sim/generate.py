"""``generate(config, out_dir)``: render a mapping run and a query run and write every output.

Layout of ``out_dir``::

    images/map/000000.png ...     mapping images (neutral lighting, no camera effects)
    images/query/000000.png ...   query images (other poses, sun, exposure, blur, noise, occluder)
    camera.yaml                   Camera.to_dict()
    map_poses.tum, query_poses.tum  world_from_camera (optical frame), one line per image in name
                                  order, timestamps = image stamps (seconds; exact ns in summary.json)
    colmap_gt/                    COLMAP text model of the mapping cameras (names relative to images/map)
    scene.json                    the static geometry in world (= map) coordinates, z up, metres
    summary.json                  resolved config, stamps, mount, per-query facts, bag paths
    bags/{map,query}_{mcap,sqlite3}/  ROS 2 bags, see bag.py

The same config (seed included) gives byte-identical images on the same machine and renderer.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from ..geometry import Camera
from ..tum import write_tum
from . import appearance, trajectories
from .bag import DISTROS, STORAGES, CameraBagWriter
from .ground_truth import write_camera_yaml, write_colmap_text_model
from .render import Renderer, check_distortion
from .scene import SCENES, build_scene

DEFAULT_FOCAL_PER_WIDTH = 500.0 / 640.0  # fx = fy = 500 px at 640 px wide: a 65 deg horizontal field of view
DEFAULT_CONFIG = {
    "seed": 0,
    "scene": "courtyard",  # "courtyard" | "repeated" (see scene.py)
    "scene_size": 6.0,  # metres across
    "width": 640,
    "height": 480,
    "focal_length": None,  # pixels (fx = fy); None: DEFAULT_FOCAL_PER_WIDTH * width
    "distortion": [0.0, 0.0, 0.0, 0.0, 0.0],  # plumb_bob k1 k2 p1 p2 k3
    "map_frames": 60,
    "query_frames": 30,
    "frame_rate": 10.0,  # Hz, camera and odometry
    "map_start_ns": 1_700_000_000 * 10**9,
    "query_start_ns": 1_700_000_600 * 10**9,
    "mount": {"translation": [0.10, 0.0, 1.20], "tilt_down_deg": 12.0},  # base_link -> camera
    "query": {
        # Pose offsets from the mapping ring (amplitudes of smooth sinusoids).
        "lateral_m": 0.3,
        "height_m": 0.1,
        "heading_deg": 15.0,
        "pitch_deg": 4.0,
        "roll_deg": 3.0,
        # Illumination (sun: ambient + Lambert gain per surface) and camera effects.
        "sun_ambient": 0.6,
        "sun_strength": 0.5,
        "exposure_range": [0.75, 1.3],
        "gamma_range": [0.8, 1.25],
        "noise_sigma": 2.5,  # read noise, 8-bit levels (shot noise comes on top)
        "motion_blur_px": 5.0,
        "motion_blur_fraction": 0.3,
        "occluder_fraction": 0.3,  # share of frames with the moving occluder in view
    },
    "odom_drift": {"scale_error": 0.02, "yaw_deg_per_m": 1.0},
    "bags": {"storages": ["mcap", "sqlite3"], "distro": "jazzy", "jpeg_quality": 90},  # storages []: no bags
}

# Query options for a harder run: as far from the mapping ring as the scene allows, with harsher
# light and camera effects (``{"query": HARD_QUERY}``). Where the default queries localize whatever
# the search mode, these separate the modes.
HARD_QUERY = {
    "lateral_m": 0.6,
    "height_m": 0.3,
    "heading_deg": 45.0,
    "pitch_deg": 10.0,
    "roll_deg": 8.0,
    "exposure_range": [0.5, 1.8],
    "noise_sigma": 6.0,
    "motion_blur_fraction": 0.6,
    "occluder_fraction": 0.6,
}


def resolve_config(config: dict | None) -> dict:
    """DEFAULT_CONFIG updated with ``config`` (nested dicts merged), validated; ValueError says what is wrong."""
    resolved = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key not in resolved:
            raise ValueError(f"unknown sim option {key!r}; known: {', '.join(resolved)}")
        if isinstance(resolved[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"sim option {key!r} must be a mapping")
            unknown = set(value) - set(resolved[key])
            if unknown:
                raise ValueError(f"unknown sim option {key}.{sorted(unknown)[0]}; known: {', '.join(resolved[key])}")
            resolved[key].update(copy.deepcopy(value))
        else:
            resolved[key] = copy.deepcopy(value)
    _validate(resolved)
    return resolved


def _validate(config: dict) -> None:
    def number(name, value, low, high, integer=False):
        kind = int if integer else (int, float)
        valid = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
        if not (valid and low <= value <= high):
            what = "an integer" if integer else "a number"
            raise ValueError(f"{name} must be {what} in [{low}, {high}], got {value!r}")

    def value_range(name, value, low, high):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{name} must be [min, max], got {value!r}")
        for bound in value:
            number(name, bound, low, high)
        if value[0] > value[1]:
            raise ValueError(f"{name} must be [min, max] with min <= max, got {value!r}")

    number("seed", config["seed"], 0, 2**63 - 1, integer=True)
    if config["scene"] not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {config['scene']!r}")
    number("scene_size", config["scene_size"], 4.0, 50.0)
    number("width", config["width"], 32, 4096, integer=True)
    number("height", config["height"], 32, 4096, integer=True)
    if config["focal_length"] is not None:
        number("focal_length", config["focal_length"], 1.0, 100_000.0)
    distortion = config["distortion"]
    if not isinstance(distortion, (list, tuple)) or not 1 <= len(distortion) <= 5:
        raise ValueError(f"distortion must be 1 to 5 plumb_bob coefficients (k1 k2 p1 p2 k3), got {distortion!r}")
    for coefficient in distortion:
        number("distortion coefficients", coefficient, -10.0, 10.0)
    number("map_frames", config["map_frames"], 3, 100_000, integer=True)
    number("query_frames", config["query_frames"], 2 if config["scene"] == "repeated" else 1, 100_000, integer=True)
    number("frame_rate", config["frame_rate"], 0.01, 1000.0)
    number("map_start_ns", config["map_start_ns"], 0, 2**62, integer=True)
    number("query_start_ns", config["query_start_ns"], 0, 2**62, integer=True)
    translation = config["mount"]["translation"]
    if not isinstance(translation, (list, tuple)) or len(translation) != 3:
        raise ValueError(f"mount.translation must be [x, y, z] metres, got {translation!r}")
    for value in translation:
        number("mount.translation", value, -10.0, 10.0)
    number("mount.tilt_down_deg", config["mount"]["tilt_down_deg"], -60.0, 60.0)
    query = config["query"]
    # Keep the camera well clear of the crates: they stand 0.15 * size beyond the ring.
    number("query.lateral_m", query["lateral_m"], 0.0, 0.1 * config["scene_size"])
    number("query.height_m", query["height_m"], 0.0, 1.0)
    for key in ("heading_deg", "pitch_deg", "roll_deg"):
        number(f"query.{key}", query[key], 0.0, 45.0)
    number("query.sun_ambient", query["sun_ambient"], 0.0, 2.0)
    number("query.sun_strength", query["sun_strength"], 0.0, 2.0)
    value_range("query.exposure_range", query["exposure_range"], 0.05, 10.0)
    value_range("query.gamma_range", query["gamma_range"], 0.1, 10.0)
    number("query.noise_sigma", query["noise_sigma"], 0.0, 100.0)
    number("query.motion_blur_px", query["motion_blur_px"], 0.0, 100.0)
    number("query.motion_blur_fraction", query["motion_blur_fraction"], 0.0, 1.0)
    number("query.occluder_fraction", query["occluder_fraction"], 0.0, 1.0)
    number("odom_drift.scale_error", config["odom_drift"]["scale_error"], -0.5, 0.5)
    number("odom_drift.yaw_deg_per_m", config["odom_drift"]["yaw_deg_per_m"], -90.0, 90.0)
    bags = config["bags"]
    if not isinstance(bags["storages"], (list, tuple)) or not set(bags["storages"]) <= set(STORAGES):
        raise ValueError(f"bags.storages must be a list drawn from {', '.join(STORAGES)}, got {bags['storages']!r}")
    if bags["distro"] not in DISTROS:
        raise ValueError(f"bags.distro must be one of {', '.join(DISTROS)}, got {bags['distro']!r}")
    number("bags.jpeg_quality", bags["jpeg_quality"], 1, 100, integer=True)


def make_camera(config: dict) -> Camera:
    """The simulated camera of a resolved config: principal point at the image centre."""
    width, height = config["width"], config["height"]
    focal = config["focal_length"] or DEFAULT_FOCAL_PER_WIDTH * width
    return Camera(width, height, focal, focal, (width - 1) / 2, (height - 1) / 2, tuple(config["distortion"]))


def frame_stamps_ns(start_ns: int, num_frames: int, frame_rate: float) -> list[int]:
    return [start_ns + round(index * 1e9 / frame_rate) for index in range(num_frames)]


def generate(config: dict | None, out_dir) -> dict:
    """Render the synthetic world described by ``config`` (over DEFAULT_CONFIG) into ``out_dir``
    (new or empty). Returns the summary written to summary.json plus ``out_dir`` and ``seconds``."""
    started = time.perf_counter()
    config = resolve_config(config)
    camera = make_camera(config)
    check_distortion(camera)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output directory {out} exists and is not empty; choose a new one")

    seed = config["seed"]
    scene = build_scene(config["scene"], config["scene_size"], seed, camera.fx)
    mount = trajectories.camera_mount(**config["mount"])
    query_rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])
    bases = {"map": trajectories.mapping_trajectory(config["scene"], scene.size, config["map_frames"])}
    bases["query"], query_facts = trajectories.query_trajectory(
        config["scene"], scene.size, config["query_frames"], query_rng, config["query"], mount
    )
    runs = {split: trajectories.cameras_from_bases(world_from_base, mount) for split, world_from_base in bases.items()}
    sun = appearance.sample_sun(query_rng)
    query_gains = appearance.sun_gains(
        scene, sun["direction"], config["query"]["sun_ambient"], config["query"]["sun_strength"], sun["tint"]
    )

    names = {split: [f"{index:06d}.png" for index in range(len(poses))] for split, poses in runs.items()}
    stamps = {
        split: frame_stamps_ns(config[f"{split}_start_ns"], len(poses), config["frame_rate"])
        for split, poses in runs.items()
    }
    drift = config["odom_drift"]
    bags = {f"{split}_{storage}": f"bags/{split}_{storage}" for split in runs for storage in config["bags"]["storages"]}
    with Renderer(scene, camera) as renderer:
        for split, poses in runs.items():
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            odometry = trajectories.drifting_odometry(bases[split], drift["scale_error"], drift["yaw_deg_per_m"])
            with contextlib.ExitStack() as stack:
                # Bags are written while rendering: every image is made once and never held for long.
                writers = [
                    stack.enter_context(
                        CameraBagWriter(
                            out / bags[f"{split}_{storage}"],
                            camera,
                            mount,
                            storage=storage,
                            distro=config["bags"]["distro"],
                            jpeg_quality=config["bags"]["jpeg_quality"],
                        )
                    )
                    for storage in config["bags"]["storages"]
                ]
                for index, pose in enumerate(poses):
                    if split == "map":
                        image = renderer.render(pose)
                    else:
                        image = _render_query(
                            renderer,
                            pose,
                            query_gains,
                            config["query"],
                            index,
                            query_rng,
                            noise_rng,
                            query_facts[index],
                        )
                    _write_png(out / "images" / split / names[split][index], image)
                    for writer in writers:
                        writer.write_frame(stamps[split][index], image, pose, odometry[index])

    write_camera_yaml(out / "camera.yaml", camera)
    for split, poses in runs.items():
        write_tum(out / f"{split}_poses.tum", [stamp * 1e-9 for stamp in stamps[split]], poses)
    write_colmap_text_model(out / "colmap_gt", camera, names["map"], runs["map"])
    (out / "scene.json").write_text(json.dumps(scene.to_dict(), indent=1))

    summary = {
        "config": config,
        "camera": camera.to_dict(),
        "base_from_camera": mount.to_dict(),
        "map": {
            "images": [f"images/map/{name}" for name in names["map"]],
            "stamps_ns": stamps["map"],
            "map_from_odom": bases["map"][0].to_dict(),
        },
        "query": {
            "images": [f"images/query/{name}" for name in names["query"]],
            "stamps_ns": stamps["query"],
            "map_from_odom": bases["query"][0].to_dict(),
            "sun": sun,
            "frames": query_facts,
        },
        "bags": bags,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "out_dir": str(out), "seconds": time.perf_counter() - started}


def _render_query(
    renderer: Renderer,
    world_from_camera,
    gains: np.ndarray,
    query_config: dict,
    index: int,
    query_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    facts: dict,
) -> np.ndarray:
    """One query image: sun-lit surfaces, maybe the occluder, then camera effects (recorded in ``facts``)."""
    effects = appearance.sample_frame_effects(query_rng, query_config, index)
    movers = None
    if effects["occluder_x"] is not None:
        movers = {"occluder": appearance.occluder_pose(world_from_camera, effects["occluder_x"])}
    image = renderer.render(world_from_camera, gains, movers)
    facts.update(effects)
    return appearance.apply_camera_effects(image, effects, noise_rng)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
