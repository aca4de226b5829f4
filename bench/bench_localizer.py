"""End-to-end localizer latency per stage on rendered 640x480 queries, for each search mode.

    python bench/bench_localizer.py [--threads 2] [--frames 30] [--map-frames 60] [--places 1] [--hard] [--work DIR]

Renders the synthetic world (once; reused from --work), builds its metric map, then localizes the
query run (appearance changes on) and prints p50/p95 per stage, recall and peak memory.
``--map-frames 60`` gives a map of about 22k points, 300 about 39k (the same place, densely mapped).
``--places 5`` maps four more courtyards beside the query's (same layout, other textures: sim seeds
1-4, 100 m apart) into the same map, about 108k points: a large map the queries see only a fifth of.
``--hard`` renders queries farther from the mapping path and under harsher changes
(``vloc_ros.sim.HARD_QUERY``), where the search modes differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np

from vloc_ros.config import merge_config
from vloc_ros.geometry import Rigid3, pose_error
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.builder import build_map
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.sources import image_folder_frames, load_intrinsics, read_image_rgb
from vloc_ros.search import SearchMode
from vloc_ros.tum import read_tum

import torch  # after vloc_ros, which sets OMP_WAIT_POLICY before torch loads OpenMP  # isort: skip


PLACE_SPACING_M = 100.0


def render(world: Path, config: dict) -> None:
    if not world.exists():
        from vloc_ros.sim import generate  # only to render: needs rosbags and pyrender

        generate({"bags": {"storages": []}, **config}, world)


def map_frames_of(world: Path, place: int) -> list:
    """The mapping frames of ``world``, moved ``place`` x 100 m along x and named after the place."""
    frames = image_folder_frames(world / "images" / "map", world / "camera.yaml", poses_tum=world / "map_poses.tum")
    if place == 0:
        return frames
    shift = Rigid3(np.eye(3), np.array([PLACE_SPACING_M * place, 0.0, 0.0]))
    return [
        dataclasses.replace(frame, name=f"place{place}/{frame.name}", world_from_camera=shift @ frame.world_from_camera)
        for frame in frames
    ]


def prepare(work: Path, frames: int, map_frames: int, places: int, hard: bool) -> tuple[Path, Path]:
    world, map_dir = work / "world", work / ("map" if places == 1 else f"map-{places}-places")
    if not world.exists():
        from vloc_ros.sim import HARD_QUERY

        render(world, {"map_frames": map_frames, "query_frames": frames, "query": HARD_QUERY if hard else {}})
    if not map_dir.exists():
        map_frames_all = map_frames_of(world, 0)
        for place in range(1, places):
            render(work / "places" / str(place), {"seed": place, "map_frames": map_frames, "query_frames": 1})
            map_frames_all += map_frames_of(work / "places" / str(place), place)
        started = time.perf_counter()
        summary = build_map(map_frames_all, map_dir, progress=False)
        print(
            f"map: {summary.num_points} points from {summary.images_registered} images "
            f"in {time.perf_counter() - started:.0f} s"
        )
    return world, map_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--map-frames", type=int, default=60)
    parser.add_argument("--config", type=json.loads, default={}, help="localizer config overrides, as JSON")
    parser.add_argument("--modes", nargs="+", default=[mode.value for mode in SearchMode])
    parser.add_argument("--places", type=int, default=1, help="courtyards in the map (queries see the first)")
    parser.add_argument("--hard", action="store_true", help="harder queries (vloc_ros.sim.HARD_QUERY)")
    parser.add_argument("--work", type=Path, default=None, help="default bench_out/localizer[-<map frames>][-hard]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suffix = ("" if args.map_frames == 60 else f"-{args.map_frames}") + ("-hard" if args.hard else "")
    world, map_dir = prepare(
        args.work or Path(f"bench_out/localizer{suffix}"), args.frames, args.map_frames, args.places, args.hard
    )
    localization_map = load_map(map_dir)
    camera = load_intrinsics(world / "camera.yaml")
    _, truth = read_tum(world / "query_poses.tum")
    images = [read_image_rgb(p) for p in sorted((world / "images" / "query").glob("*.png"))]
    print(f"\n{len(images)} queries 640x480, map of {localization_map.num_points} points, torch threads {args.threads}")
    print(f"{'mode':<12} {'stage':<18} {'p50 ms':>8} {'p95 ms':>8}")
    for mode in args.modes:
        localizer = Localizer(localization_map, merge_config(args.config, {"search": {"mode": mode}}))
        localizer.localize(images[0], camera)  # warm-up: first-call allocations
        timings, hits, published, wrong = [], 0, 0, 0
        for image, expected in zip(images, truth):
            result = localizer.localize(image, camera)
            if "pose" in result.timings:  # the budget: search + PnP, per frame
                result.timings["search + pose"] = result.timings["search"] + result.timings["pose"]
            timings.append(result.timings)
            if result.ok:
                error = pose_error(result.world_from_camera, expected)
                hits += error[0] <= 0.05 and error[1] <= 1.0
                published += 1
                wrong += error[0] > 0.5 or error[1] > 5.0
        for stage in sorted(set().union(*timings), key=lambda s: (s == "total", s)):
            values = np.array([t[stage] for t in timings if stage in t]) * 1000
            print(f"{mode:<12} {stage:<18} {np.percentile(values, 50):8.1f} {np.percentile(values, 95):8.1f}")
        print(f"{mode:<12} {'recall@5cm,1deg':<18} {hits / len(images):8.2f}")
        print(f"{mode:<12} {'wrong-pose rate':<18} {wrong / max(published, 1):8.2f}  (> 0.5 m or 5 deg, of published)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
