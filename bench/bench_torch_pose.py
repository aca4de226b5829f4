"""Benchmark of batched torch RANSAC PnP (``vloc_ros.pose_torch``) against poselib's LO-RANSAC.

    python bench/bench_torch_pose.py [--device cuda cpu] [--runs 20] [--cpu-runs 5] [--hypotheses 2048]

Prints one table: for 500 / 1500 / 3000 correspondences at 30 % and 70 % outliers, the wall time
p50/p95 of poselib ``estimate_absolute_pose`` (as ``vloc_ros.pose`` calls it: PROSAC, 1x trials,
10 refinement iterations; one thread) and of ``ransac_pnp_torch`` on each device, with the median
rotation error to the truth and the median inlier count. Scenes are random points 2-8 m in front
of a 640x480 pinhole camera (fx = fy = 525) with 0.5 px noise; outliers are spread through the
list, so that progressive sampling gets no help from the order and the numbers are a worst case.
Every method sees the same scenes; each scene is timed after one untimed warm-up call, and GPU
timings end with ``torch.cuda.synchronize()``. torch on the CPU uses torch's default thread count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import poselib
import torch
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vloc_ros.pose_torch import ransac_pnp_torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from test_pose_torch import CAMERA_PARAMS, HEIGHT, WIDTH, _scene  # noqa: E402  (the tests' scenes)

SIZES = (500, 1500, 3000)
OUTLIER_FRACTIONS = (0.3, 0.7)


def run_poselib(observed, points3d):
    fx, fy, cx, cy = CAMERA_PARAMS
    camera = {"model": "PINHOLE", "width": WIDTH, "height": HEIGHT, "params": [fx, fy, cx, cy]}
    # The options vloc_ros.pose.estimate_pose passes by default.
    ransac = {
        "max_reproj_error": 4.0,
        "min_iterations": 20,
        "max_iterations": 10000,
        "dyn_num_trials_mult": 1.0,
        "success_prob": 0.9999,
        "progressive_sampling": True,
    }
    refinement = {"max_iterations": 10}
    pose, info = poselib.estimate_absolute_pose(observed, points3d, camera, ransac, refinement)
    return pose.R, np.asarray(info["inliers"], dtype=bool)


def time_method(method, scenes, synchronize):
    """Per-scene wall times (ms), rotation errors (deg) and inlier counts."""
    times, rotation_errors, inlier_counts = [], [], []
    for rotation, _, observed, points3d, _ in scenes:
        method(observed, points3d)
        synchronize()
        start = time.perf_counter()
        result = method(observed, points3d)
        synchronize()
        times.append(1e3 * (time.perf_counter() - start))
        if result is None:
            rotation_errors.append(np.inf)
            inlier_counts.append(0)
            continue
        estimated_rotation, inliers = result
        rotation_errors.append(np.degrees(Rotation.from_matrix(estimated_rotation @ rotation.T).magnitude()))
        inlier_counts.append(int(inliers.sum()))
    return np.array(times), np.array(rotation_errors), np.array(inlier_counts)


def torch_method(device: str, num_hypotheses: int):
    def method(observed, points3d):
        result = ransac_pnp_torch(observed, points3d, CAMERA_PARAMS, num_hypotheses=num_hypotheses, device=device)
        return None if result is None else (result[0], result[2])

    return method


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--device", nargs="+", default=default_devices, help="devices for ransac_pnp_torch")
    parser.add_argument("--runs", type=int, default=20, help="scenes per row for poselib and torch on a GPU")
    parser.add_argument("--cpu-runs", type=int, default=5, help="scenes per row for torch on the CPU (slow)")
    parser.add_argument("--hypotheses", type=int, default=2048, help="minimal samples ransac_pnp_torch draws")
    args = parser.parse_args()

    def no_sync():
        pass

    methods = [("poselib", run_poselib, no_sync, args.runs)]
    for device in args.device:
        synchronize = torch.cuda.synchronize if device.startswith("cuda") else no_sync
        runs = args.runs if device.startswith("cuda") else args.cpu_runs
        methods.append((f"torch {device}", torch_method(device, args.hypotheses), synchronize, runs))
    if any(device.startswith("cuda") for device in args.device):
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.hypotheses} hypotheses")

    rows = []
    for num_points in SIZES:
        for outlier_fraction in OUTLIER_FRACTIONS:
            scenes = [_scene(seed, num_points, outlier_fraction) for seed in range(args.runs)]
            for name, method, synchronize, runs in methods:
                times, rotation_errors, inlier_counts = time_method(method, scenes[:runs], synchronize)
                rows.append(
                    [
                        num_points,
                        f"{outlier_fraction:.0%}",
                        name,
                        float(np.percentile(times, 50)),
                        float(np.percentile(times, 95)),
                        float(np.median(rotation_errors)),
                        float(rotation_errors.max()),
                        int(np.median(inlier_counts)),
                    ]
                )
    print_table(["N", "outliers", "method", "p50 ms", "p95 ms", "rot err deg p50", "max", "inliers p50"], rows)


if __name__ == "__main__":
    main()
