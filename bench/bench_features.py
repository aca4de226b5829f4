"""Benchmark local features, matching and VLAD on CPU; prints a markdown table.

    python bench/bench_features.py [--images DIR] [--threads 1 2] [--runs 20]

Images are resized to 640x480 (the real-time input size); without ``--images`` the rtabmap samples
in ../shared/data are used when present, else synthetic noise texture.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import cv2
import faiss
import numpy as np
import torch

from vloc_ros.features import create_extractor, create_matcher
from vloc_ros.retrieval import VladDescriptor

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtabmap_samples_loopclosure" / "images"


def load_images(folder: Path | None, count: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.jpg"))[:count] if folder and folder.is_dir() else []
    if paths:
        return [cv2.resize(cv2.imread(str(p))[..., ::-1], (640, 480), interpolation=cv2.INTER_LINEAR) for p in paths]
    rng = np.random.default_rng(0)
    return [cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2) for _ in range(count)]


def timed(function, runs: int) -> tuple[np.ndarray, list]:
    """Seconds per call and the results of ``runs`` calls after one warm-up call."""
    function()
    times, results = [], []
    for _ in range(runs):
        start = time.perf_counter()
        results.append(function())
        times.append(time.perf_counter() - start)
    return np.array(times), results


def row(name: str, threads: int, times_s: np.ndarray, note: str) -> str:
    p50, p95 = np.percentile(times_s * 1e3, [50, 95])
    return f"| {name} | {threads} | {p50:.1f} | {p95:.1f} | {note} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per XFeat measurement (ALIKED: a quarter)")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    images = load_images(args.images, max(args.runs, args.batch))
    extractors = {"xfeat": create_extractor({"name": "xfeat"}), "aliked": create_extractor({"name": "aliked"})}
    lines = ["| stage | threads | p50 ms | p95 ms | notes |", "|---|---|---|---|---|"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        features = {}
        for name, extractor in extractors.items():
            runs = args.runs if name == "xfeat" else max(2, args.runs // 4)
            next_image = itertools.cycle(images).__next__
            times, results = timed(lambda: extractor.extract(next_image()), runs)
            features[name] = results[:2]
            counts = [len(f) for f in results]
            lines.append(
                row(
                    f"{name} extract 640x480 (loop)",
                    threads,
                    times,
                    f"{np.mean(counts):.0f} keypoints (min {min(counts)}, max {max(counts)})",
                )
            )
            batch = images[: args.batch]
            runs_batched = max(2, runs // len(batch))
            times, _ = timed(lambda: extractor.extract_batch(batch, batch_size=len(batch)), runs_batched)
            lines.append(row(f"{name} extract 640x480 (batch {len(batch)})", threads, times / len(batch), "per image"))

        pair = features["xfeat"]
        matcher = create_matcher({"name": "mutual_nn"})
        times, matches = timed(lambda: matcher.match(*pair), args.runs)
        lines.append(
            row(
                "mutual NN xfeat", threads, times, f"{len(pair[0])}x{len(pair[1])} keypoints, {len(matches[0])} matches"
            )
        )
        for name in extractors:
            matcher = create_matcher({"name": "lightglue", "features": name})
            pair = features[name]
            times, matches = timed(lambda: matcher.match(*pair), max(2, args.runs // 4))
            lines.append(
                row(
                    f"LightGlue {name}",
                    threads,
                    times,
                    f"{len(pair[0])}x{len(pair[1])} keypoints, {len(matches[0])} matches",
                )
            )

        descriptors = np.concatenate([f.descriptors for f in features["xfeat"]] * 10)
        times, fitted = timed(lambda: VladDescriptor.fit(descriptors, num_clusters=64, seed=0), 2)
        vlad = fitted[0]
        lines.append(row("VLAD fit (64 clusters)", threads, times, f"{len(descriptors)} x 64-D descriptors"))
        local = features["xfeat"][0].descriptors
        times, _ = timed(lambda: vlad.describe(local), args.runs)
        lines.append(row("VLAD describe", threads, times, f"{len(local)} descriptors -> {vlad.dim}-D"))

    print(f"CPU cores: {os.cpu_count()}, load average at end: {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
