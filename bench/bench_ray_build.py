"""Map building on Ray workers against the single-machine path, and a projection to 10^5 images.

    python bench/bench_ray_build.py [--frames 200] [--workers 1 2] [--scaling-frames 50 100]
                                    [--project-images 100000] [--work bench_out/map_builder]

Builds the same synthetic sequence (640x480, known poses) on this machine and through a local Ray
instance of 1 and 2 worker CPUs, each from an empty feature cache, and prints:
1. per build: images/s, seconds per stage, registered images and points (the maps must agree);
2. the per-stage costs a projection needs: features per image and matching per pair on one worker
   CPU, the head's retrieval and reconstruction against the number of images, the features the head
   holds per image;
3. the projection for ``--project-images`` images on N workers, with the pair count of that many
   images (a synthetic trajectory through descriptor space) and how it grows.
Ray's start is timed apart from the build; the workers' first tasks load torch and the weights and
count in the build, as they would on a cluster.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import ray
from tables import print_table

from vloc_ros.config import to_dict
from vloc_ros.mapping.builder import BuildConfig, build_map
from vloc_ros.mapping.distributed import RayCluster
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.pairs import select_pairs
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.sim import generate

STAGES = ("features", "retrieval", "matching", "reconstruction", "indexes")


def build(frames, out: Path, workers: int | None) -> dict:
    """One build from an empty cache; ``workers``: None on this machine, else a local Ray of that many CPUs."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".cache"), ignore_errors=True)
    ray_start = 0.0
    if workers is not None:
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
        ray_start = time.perf_counter() - started
    try:
        started = time.perf_counter()
        if workers is None:
            summary = build_map(frames, out, progress=False)
        else:
            with RayCluster("local") as cluster:
                summary = build_map(frames, out, progress=False, cluster=cluster)
        total = time.perf_counter() - started
    finally:
        if workers is not None:
            ray.shutdown()
    built = load_map(out)
    pairs = select_pairs(built.arrays["keyframe_global_descriptors"], **to_dict(BuildConfig().pairs))
    return {
        "summary": summary,
        "total": total,
        "ray_start": ray_start,
        "pairs": len(pairs),
        "keyframes": [k.name for k in built.keyframes],
    }


def trajectory_descriptors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Global descriptors of a camera moving through a place: a random walk, normalised, so that
    neighbours in time are neighbours in descriptor space and a revisit is possible."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(count, dim)).astype(np.float32), axis=0)
    walk += rng.normal(scale=3.0, size=walk.shape).astype(np.float32)
    return walk / np.linalg.norm(walk, axis=1, keepdims=True)


def timed_pairs(count: int, dim: int) -> tuple[int, float]:
    descriptors = trajectory_descriptors(count, dim)
    started = time.perf_counter()
    pairs = select_pairs(descriptors, **to_dict(BuildConfig().pairs))
    return len(pairs), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker CPUs per run")
    parser.add_argument(
        "--scaling-frames", type=int, nargs="*", default=[50, 100], help="smaller single-machine builds"
    )
    parser.add_argument("--project-images", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("bench_out/map_builder"))
    args = parser.parse_args()

    world = args.work / f"world_{args.frames}"
    if not world.exists():
        generate({"map_frames": args.frames, "query_frames": 2, "bags": {"storages": []}}, world)
    frames = image_folder_frames(world / "images" / "map", world / "camera.yaml", poses_tum=world / "map_poses.tum")

    runs = {"this machine": build(frames, args.work / "map_single", None)}
    for workers in args.workers:
        runs[f"Ray, {workers} worker CPU{'s' if workers > 1 else ''}"] = build(frames, args.work / "map_ray", workers)
    reference = runs["this machine"]
    rows = []
    for name, run in runs.items():
        summary = run["summary"]
        same = "yes" if run["keyframes"] == reference["keyframes"] else "NO"
        rows.append(
            [name, f"{len(frames) / run['total']:.2f}", f"{run['total']:.1f}", f"{run['ray_start']:.1f}"]
            + [f"{summary.stage_seconds.get(stage, 0.0):.1f}" for stage in STAGES]
            + [summary.images_registered, summary.num_points, same]
        )
    print_table(
        f"{len(frames)} images 640x480, known poses, {reference['pairs']} pairs, each build from an empty cache",
        ["build", "images/s", "total s", "Ray start s", *(f"{s} s" for s in STAGES), "registered", "points", "same"],
        rows,
    )

    # Per-stage costs: the workers' from the one-CPU Ray run, the head's from single-machine builds.
    one_worker = runs.get("Ray, 1 worker CPU", reference)["summary"].stage_seconds
    feature_s = one_worker["features"] / len(frames)
    match_s = one_worker["matching"] / reference["pairs"]
    head = {len(frames): reference["summary"].stage_seconds}
    for count in args.scaling_frames:
        head[count] = build(frames[:count], args.work / "map_scaling", None)["summary"].stage_seconds
    sizes = sorted(head)
    head_stages = ("reconstruction", "indexes")
    exponents = {
        stage: np.polyfit(np.log(sizes), np.log([head[n][stage] for n in sizes]), 1)[0] for stage in head_stages
    }
    print_table(
        "Per-stage costs",
        ["cost", *(f"{n} images" for n in sizes), "growth exponent"],
        [["features per image, 1 worker CPU, ms", *[""] * (len(sizes) - 1), f"{1000 * feature_s:.0f}", ""]]
        + [["matching per pair, 1 worker CPU, ms", *[""] * (len(sizes) - 1), f"{1000 * match_s:.1f}", ""]]
        + [
            [f"head: {stage} s", *[f"{head[n][stage]:.1f}" for n in sizes], f"{exponents[stage]:.2f}"]
            for stage in head_stages
        ],
    )
    feature_bytes = 2048 * (2 + 1 + 64) * 4  # keypoints, scores, descriptors (float32) of a full image

    # The pairs of the projected size, counted on a trajectory, and retrieval's time (quadratic).
    dim = load_map(args.work / "map_single").arrays["keyframe_global_descriptors"].shape[1]
    counts = [10_000, args.project_images]
    pair_counts = {n: timed_pairs(n, 64)[0] for n in counts}
    _, retrieval_10k = timed_pairs(10_000, dim)
    retrieval_s = retrieval_10k * (args.project_images / 10_000) ** 2
    print_table(
        "Pairs (sequential window 4 + retrieval top 5, a synthetic trajectory)",
        ["images", "pairs", "pairs per image"],
        [[n, pair_counts[n], f"{pair_counts[n] / n:.2f}"] for n in counts],
    )

    images = args.project_images
    pairs = pair_counts[images]
    head_s = {stage: head[len(frames)][stage] * (images / len(frames)) ** exponents[stage] for stage in head_stages}
    rows = []
    for workers in (1, 8, 32, 128, 512):
        extract_h = images * feature_s / workers / 3600
        match_h = pairs * match_s / workers / 3600
        total_h = extract_h + match_h + (retrieval_s + sum(head_s.values())) / 3600
        rows.append(
            [workers, f"{extract_h:.2f}", f"{match_h:.2f}", f"{retrieval_s / 3600:.2f}"]
            + [f"{head_s[stage] / 3600:.2f}" for stage in head_stages]
            + [f"{total_h:.1f}"]
        )
    print_table(
        f"Projection: {images} images on N worker CPUs, hours ({pairs} pairs; retrieval at {dim}-D, "
        f"{retrieval_10k:.1f} s for 10k images, grown quadratically; head stages grown by their exponent)",
        ["workers", "features h", "matching h", "head: retrieval h", *(f"head: {s} h" for s in head_stages), "total h"],
        rows,
    )
    print(
        f"\nThe head holds every image's features until reconstruction: {feature_bytes / 2**20:.2f} MiB per image "
        f"at 2048 keypoints, {images * feature_bytes / 2**30:.0f} GiB for {images} images "
        f"({reference['summary'].num_points} points from {len(frames)} images here)."
    )


if __name__ == "__main__":
    main()
