"""Localization over time on the 7-Scenes excerpt replayed in order: tracking against each frame alone,
with and without odometry, map -> odom jitter and error, NEES and the time to relocalize.

    python bench/bench_tracking.py [--frames 600:1000] [--work bench_out/tracking] [--force-loss-every 3]

Frames 600-999 of ``../shared/data/7scenes_redkitchen_excerpt`` become two bags at 30 Hz with
``vloc images-to-bag``: one without odometry, one with perfect odometry (``--odometry-from-ground-truth``,
so the true map -> odom is the identity). Each is replayed through ``vloc eval`` (fast profile, the
bench's cached XFeat map of frames 0-599, ``bench_real.py``) with tracking and with ``--no-prior``, the
tracker forced LOST every ``--force-loss-every`` seconds. Prints one markdown table; the reports stay
under ``--work``. Beyond = (0.25 m, 10 deg), the real-imagery protocol's bound: the ground truth is
offset by 5-7 deg around frames 820-885, which ``vloc eval``'s own (0.5 m, 5 deg) counts as wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vloc_ros.cli import main as vloc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real import cached_map  # noqa: E402  (the bench's map cache)
from real_sets import REAL_SETS, SHARED_DATA  # noqa: E402  (put on the path by bench_real)

EXCERPT = SHARED_DATA / "7scenes_redkitchen_excerpt"
CAMERA_YAML = "width: 640\nheight: 480\nfx: 525\nfy: 525\ncx: 320\ncy: 240\n"  # baselines.md
BEYOND = (0.25, 10.0)


def make_bag(work: Path, frames: str, odometry: bool) -> Path:
    bag = work / ("bag_odometry" if odometry else "bag")
    if not bag.exists():
        camera = work / "camera.yaml"
        camera.write_text(CAMERA_YAML)
        arguments = ["images-to-bag", str(EXCERPT / "images"), "--intrinsics", str(camera)]
        arguments += ["--poses-tum", str(EXCERPT / "groundtruth_tum.txt"), "--rate", "30", "--frames", frames]
        arguments += ["--out", str(bag)] + (["--odometry-from-ground-truth"] if odometry else [])
        if vloc(arguments) != 0:
            raise SystemExit(f"vloc images-to-bag failed for {bag}")
    return bag


def pair(summary: dict | None, key: str) -> str:
    if summary is None or summary[key]["translation"]["median"] is None:
        return "—"
    return f"{summary[key]['translation']['median'] * 1000:.1f} mm / {summary[key]['rotation_deg']['median']:.2f}°"


def row(name: str, report_dir: Path) -> str:
    report = json.loads((report_dir / "report.json").read_text())
    metrics, frames = report["metrics"], report["frames"]
    localized = [f for f in frames if f["localized"] and f["evaluated"]]
    beyond = sum(f["translation_error"] > BEYOND[0] or f["rotation_error_deg"] > BEYOND[1] for f in localized)
    within = sum(f["translation_error"] <= 0.1 and f["rotation_error_deg"] <= 5.0 for f in localized)
    nees, latency = metrics["nees"], metrics["latency_ms"]["total"]
    map_to_odom, relocalization = metrics["map_to_odom"], metrics["relocalization"]
    jitter = map_to_odom and f"{pair(map_to_odom['jitter'], 'fused')} ({pair(map_to_odom['jitter'], 'per_fix')})"
    seconds = relocalization and relocalization["seconds"]
    cells = [
        name,
        f"{len(localized)}/{len(frames)}",
        f"{within / len(frames):.3f}",
        str(beyond),
        f"{metrics['translation_error']['median']:.3f} m / {metrics['rotation_error_deg']['median']:.2f}°",
        f"{nees['mean']:.1f}, {nees['inside_band']:.0%}" if nees else "—",
        jitter or "—",
        f"{seconds['median']:.2f} / {seconds['max']:.2f} s" if seconds and seconds["median"] is not None else "—",
        f"{latency['p50']:.1f} / {latency['p95']:.0f} ms",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="600:1000", help="START:STOP of the replayed frames")
    parser.add_argument("--work", type=Path, default=Path("bench_out/tracking"))
    parser.add_argument("--maps", type=Path, default=Path("bench_out/real"), help="bench_real.py's map cache")
    parser.add_argument("--force-loss-every", default="3", help="seconds between forced losses")
    args = parser.parse_args()
    if not EXCERPT.is_dir():
        print(f"7-Scenes replay: skipped, {EXCERPT} is absent")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    map_dir = args.maps / REAL_SETS["7scenes"]().name / "map"
    cached_map(REAL_SETS["7scenes"](), args.maps)
    rows = []
    for odometry in (False, True):
        bag = make_bag(args.work, args.frames, odometry)
        for tracking in (True, False):
            name = f"{'tracking' if tracking else 'each frame alone'}, {'perfect' if odometry else 'no'} odometry"
            output = args.work / name.replace(", ", "_").replace(" ", "_")
            arguments = ["eval", str(bag), "--map", str(map_dir), "--profile", "fast", "-o", str(output)]
            arguments += ["--force-loss-every", args.force_loss_every] + ([] if tracking else ["--no-prior"])
            if vloc(arguments) != 0:
                raise SystemExit(f"vloc eval failed: {' '.join(arguments)}")
            rows.append(row(name, output))
    header = (
        "| replay | published | within (10 cm, 5°) | beyond (0.25 m, 10°) | median error | NEES mean, inside band "
        "| map -> odom jitter fused (each fix) | time to relocalize median / max | latency p50 / p95 |"
    )
    print("\n" + header + "\n|" + "---|" * 9)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
