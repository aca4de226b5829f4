"""Map-build time per image and peak memory for a synthetic sequence at 640x480.

    python bench/bench_map_builder.py [--frames 200] [--work bench_out/map_builder] [--sfm]

Known poses (triangulation) by default; --sfm runs incremental mapping instead.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

from vloc_ros.mapping.builder import build_map
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.sim import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("bench_out/map_builder"))
    parser.add_argument("--sfm", action="store_true", help="unknown poses: incremental mapping")
    args = parser.parse_args()
    world = args.work / f"world_{args.frames}"
    if not world.exists():
        generate({"map_frames": args.frames, "query_frames": 2, "bags": {"storages": []}}, world)
    out = args.work / "map"
    shutil.rmtree(out, ignore_errors=True)
    frames = image_folder_frames(
        world / "images" / "map", world / "camera.yaml", poses_tum=None if args.sfm else world / "map_poses.tum"
    )
    started = time.perf_counter()
    summary = build_map(frames, out, progress=False)
    total = time.perf_counter() - started
    print(
        f"\n{args.frames} images 640x480, {'incremental SfM' if args.sfm else 'known poses'}: "
        f"{summary.images_registered} registered, {summary.num_points} points, "
        f"mean track {summary.mean_track_length:.2f}, reprojection {summary.mean_reprojection_error_px:.3f} px"
    )
    print(f"{'stage':<16} {'s':>8} {'ms/image':>9}")
    for stage, seconds in {**summary.stage_seconds, "total": total}.items():
        print(f"{stage:<16} {seconds:8.1f} {1000 * seconds / args.frames:9.0f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
