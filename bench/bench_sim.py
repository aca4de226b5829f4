"""Benchmark the synthetic world on CPU (pyrender, Mesa EGL/OSMesa); prints a markdown table.

    python bench/bench_sim.py [--width 640] [--height 480] [--frames 60] [--out DIR]

Rows: scene build (textures), renderer start (GL context, atlas upload), colour frames along the
mapping ring, lit query frames with the occluder, exact-depth frames, and a whole ``generate``
run (images, ground truth, both bag storages) per frame. The target is >= 20 colour frames/s at
640x480.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vloc_ros.sim import appearance, generate, trajectories
from vloc_ros.sim.generate import make_camera, resolve_config
from vloc_ros.sim.render import Renderer
from vloc_ros.sim.scene import build_scene


def per_frame(function, items) -> np.ndarray:
    function(items[0])  # warm-up: shader compilation, first upload
    times = []
    for item in items:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return np.array(times)


def row(name: str, times_s: np.ndarray, note: str = "") -> str:
    p50, p95 = np.percentile(times_s * 1e3, [50, 95])
    return f"| {name} | {p50:.1f} | {p95:.1f} | {1.0 / np.median(times_s):.1f} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--out", type=Path, help="keep the generated world here (default: a temporary directory)")
    args = parser.parse_args()

    config = resolve_config(
        {
            "width": args.width,
            "height": args.height,
            "map_frames": args.frames,
            "query_frames": max(args.frames // 2, 1),
        }
    )
    camera = make_camera(config)
    start = time.perf_counter()
    scene = build_scene(config["scene"], config["scene_size"], config["seed"], camera.fx)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    renderer = Renderer(scene, camera)
    start_s = time.perf_counter() - start
    mount = trajectories.camera_mount()
    poses = trajectories.cameras_from_bases(
        trajectories.mapping_trajectory(config["scene"], scene.size, args.frames), mount
    )
    sun = appearance.sample_sun(np.random.default_rng(0))
    gains = appearance.sun_gains(scene, sun["direction"], 0.6, 0.5, sun["tint"])

    colour = per_frame(renderer.render, poses)
    lit = per_frame(lambda pose: renderer.render(pose, gains, {"occluder": appearance.occluder_pose(pose, 0.1)}), poses)
    depth = per_frame(renderer.render_depth, poses)
    renderer.close()

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "world"
        summary = generate(config, out)
    frames = args.frames + config["query_frames"]

    print(f"\nSynthetic world, {args.width}x{args.height}, {args.frames} map frames (CPU rendering)\n")
    print("| stage | p50 ms | p95 ms | per s | note |")
    print("|---|---|---|---|---|")
    print(f"| scene build | {build_s * 1e3:.0f} | | | textures from the bundled photos |")
    print(f"| renderer start | {start_s * 1e3:.0f} | | | GL context, atlas upload with mipmaps |")
    print(row("colour frame", colour, "mapping ring, 4x multisampled"))
    print(row("query frame", lit, "sun gains + occluder"))
    print(row("depth frame", depth, "exact depth pass"))
    print(
        f"| generate, per frame | {summary['seconds'] / frames * 1e3:.1f} | | {frames / summary['seconds']:.1f} "
        f"| {frames} frames: PNGs, TUM, COLMAP, 4 bags, scene build and start included |"
    )


if __name__ == "__main__":
    main()
