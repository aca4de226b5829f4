"""The evaluation report: ``report.md`` with a metrics table and plots, ``report.json`` (metrics and
per-frame records), PNG plots and TUM trajectories for evo (``evo_ape tum groundtruth.tum estimate.tum``).

Everything is written into a temporary sibling folder that is then renamed into place, so a
report folder is never half-written. Plots use matplotlib's object API (no pyplot, no global
backend): safe in any process.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..atomic import atomic_directory
from ..tum import write_tum
from .records import FrameRecord

PLOTS = {
    "trajectory.png": "Trajectory (top view)",
    "errors_over_time.png": "Errors over time",
    "error_cdf.png": "Error distribution",
    "latency.png": "Latency",
}


def write_report(output_dir, records: list[FrameRecord], metrics: dict, description: dict) -> Path:
    """Write the report folder ``output_dir`` (replacing an older one) and return its path.

    ``description`` says what was evaluated (bag, topics, map, configuration); it is shown in
    ``report.md`` and stored in ``report.json``.
    """
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as staging:
        _write_files(staging, records, metrics, description)
    return output_dir


def format_table(metrics: dict) -> str:
    """The metrics as aligned text lines for a terminal."""
    rows = _metric_rows(metrics)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _write_files(folder: Path, records: list[FrameRecord], metrics: dict, description: dict) -> None:
    records = sorted(records, key=lambda r: r.stamp)
    report = {"description": description, "metrics": metrics, "frames": [r.to_dict() for r in records]}
    (folder / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False, default=str) + "\n")
    evaluated = [r for r in records if r.evaluated]
    localized = [r for r in records if r.localized]
    write_tum(folder / "groundtruth.tum", [r.stamp for r in evaluated], [r.ground_truth for r in evaluated])
    write_tum(folder / "estimate.tum", [r.stamp for r in localized], [r.estimate for r in localized])
    _plot_trajectory(records, metrics).savefig(folder / "trajectory.png", dpi=110)
    _plot_errors_over_time(records, metrics).savefig(folder / "errors_over_time.png", dpi=110)
    _plot_error_cdf(records, metrics).savefig(folder / "error_cdf.png", dpi=110)
    _plot_latency(records, metrics).savefig(folder / "latency.png", dpi=110)
    (folder / "report.md").write_text(_markdown(metrics, description))


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    counts = metrics["counts"]
    wrong_bound = metrics["wrong_pose_bound"]
    rows = [
        (
            "frames",
            f"{counts['frames']} ({counts['evaluated']} evaluated, {counts['unevaluated']} without ground truth)",
        ),
        (
            "localized (of evaluated)",
            f"{_percent(metrics['localized_rate'])} "
            f"({counts['localized_evaluated']}/{counts['evaluated']}; "
            f"{counts['localized']} of all frames)",
        ),
    ]
    for level in metrics["recall"]:
        rows.append(
            (f"recall @ {level['max_translation']:g} m, {level['max_rotation_deg']:g}°", _percent(level["recall"]))
        )
    rows += [
        (
            f"wrong-pose rate (> {wrong_bound['max_translation']:g} m or > {wrong_bound['max_rotation_deg']:g}°)",
            f"{_percent(metrics['wrong_pose_rate'])} "
            f"({counts['wrong_poses']}/{counts['localized_evaluated']} localized)",
        ),
        (
            "translation error median / p90",
            f"{_number(metrics['translation_error']['median'], '.3f')} / "
            f"{_number(metrics['translation_error']['p90'], '.3f')} m",
        ),
        (
            "rotation error median / p90",
            f"{_number(metrics['rotation_error_deg']['median'], '.2f')} / "
            f"{_number(metrics['rotation_error_deg']['p90'], '.2f')}°",
        ),
        ("APE RMSE (translation)", f"{_number(metrics['ape_translation_rmse'], '.3f')} m"),
        (
            "not localized, by reason",
            ", ".join(f"{reason} {n}" for reason, n in sorted(counts["not_localized_by_reason"].items())) or "none",
        ),
    ]
    nees = metrics.get("nees")
    if nees:
        rows.append(
            (
                "NEES mean / median (6 if the covariance is consistent)",
                f"{nees['mean']:.1f} / {nees['median']:.1f}; {_percent(nees['inside_band'])} inside "
                f"[{nees['band'][0]:.2f}, {nees['band'][1]:.2f}] (95 % expected)",
            )
        )
    tracking = metrics.get("tracking")
    if tracking:
        rows += [
            (
                "localized from the first pose on",
                f"{_percent(tracking['localized_once_localized'])} ({tracking['guided']} poses guided by the last one)",
            ),
            (
                "frames by tracking state",
                ", ".join(f"{state} {n}" for state, n in sorted(tracking["frames_by_state"].items())),
            ),
        ]
    map_to_odom = metrics.get("map_to_odom")
    if map_to_odom:
        rows += [
            (f"map -> odom {what}, fused / each fix alone (median)", _fused_and_per_fix(map_to_odom[key]))
            for what, key in (("jitter between fixes", "jitter"), ("error", "error"))
        ]
        settling = map_to_odom["after_relocalization"]
        rows.append(("map -> odom error in the 1 s after relocalizing (median)", _error_pair(settling)))
    relocalization = metrics.get("relocalization")
    if relocalization:
        seconds = relocalization["seconds"]
        rows.append(
            (
                "time to relocalize after a forced loss, median / max",
                f"{_number(seconds['median'], '.2f')} / {_number(seconds['max'], '.2f')} s "
                f"({relocalization['forced_losses']} losses, {relocalization['not_relocalized']} not relocalized)",
            )
        )
    latency = metrics["latency_ms"]
    for stage in sorted(latency, key=lambda s: (s != "total", s)):
        values = latency[stage]
        rows.append(
            (f"latency {stage} p50 / p95 / p99", f"{values['p50']:.1f} / {values['p95']:.1f} / {values['p99']:.1f} ms")
        )
    return rows


def _markdown(metrics: dict, description: dict) -> str:
    lines = [
        "# Localization evaluation",
        "",
        f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        "",
        "## What was evaluated",
        "",
    ]
    nested = {key: value for key, value in description.items() if isinstance(value, (dict, list, tuple))}
    lines += [f"- **{key}**: `{value}`" for key, value in description.items() if key not in nested]
    for key, value in nested.items():
        lines += ["", f"**{key}**", "", "```json", json.dumps(value, indent=2, default=str), "```"]
    lines += [
        "",
        "## Metrics",
        "",
        "Errors are in map units (metres for a metric map); rates of frames with ground truth.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {value} |" for label, value in _metric_rows(metrics)]
    lines += ["", "## Plots", ""]
    for file, title in PLOTS.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += [
        "## Files",
        "",
        "- `report.json`: every metric and every frame (estimate, ground truth, errors, timings)",
        "- `groundtruth.tum`, `estimate.tum` (localized frames only): `evo_ape tum groundtruth.tum estimate.tum`",
        "",
    ]
    return "\n".join(lines)


def _error_pair(summary: dict) -> str:
    return f"{_number(summary['translation']['median'], '.4f')} m, {_number(summary['rotation_deg']['median'], '.3f')}°"


def _fused_and_per_fix(summaries: dict) -> str:
    return f"{_error_pair(summaries['fused'])} / {_error_pair(summaries['per_fix'])}"


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{100.0 * ratio:.1f} %"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _plot_trajectory(records: list[FrameRecord], metrics: dict) -> Figure:
    figure = Figure(figsize=(7, 6))
    ax = figure.add_subplot()
    truth = np.array([r.ground_truth.translation for r in records if r.evaluated]).reshape(-1, 3)
    scored = [r for r in records if r.localized and r.evaluated]
    unscored = np.array([r.estimate.translation for r in records if r.localized and not r.evaluated]).reshape(-1, 3)
    missed = np.array([r.ground_truth.translation for r in records if r.evaluated and not r.localized]).reshape(-1, 3)
    estimates = np.array([r.estimate.translation for r in scored]).reshape(-1, 3)
    everything = np.concatenate([truth, unscored, missed, estimates])
    if len(everything) == 0:
        _no_data(ax, "no poses")
        return figure
    # Top view = the two axes the trajectory spreads over most (z-up worlds and y-down SfM maps alike).
    spread = np.ptp(everything, axis=0)
    u, v = sorted(np.argsort(spread)[-2:])
    ax.plot(truth[:, u], truth[:, v], "-", color="0.35", linewidth=1.2, label="ground truth")
    if len(estimates):
        errors = np.array([r.errors()[0] for r in scored])
        points = ax.scatter(
            estimates[:, u],
            estimates[:, v],
            c=errors,
            s=14,
            cmap="viridis",
            norm=Normalize(0.0, metrics["wrong_pose_bound"]["max_translation"]),
            label="estimate",
            zorder=3,
        )
        figure.colorbar(points, ax=ax, extend="max", label="translation error")
    if len(unscored):
        ax.scatter(unscored[:, u], unscored[:, v], s=10, color="0.6", label="estimate, no ground truth")
    if len(missed):
        ax.scatter(missed[:, u], missed[:, v], marker="x", s=30, color="tab:red", label="not localized", zorder=4)
    names = "xyz"
    ax.set_xlabel(names[u])
    ax.set_ylabel(names[v])
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize="small")
    ax.set_title("Trajectory (top view)")
    return figure


def _plot_errors_over_time(records: list[FrameRecord], metrics: dict) -> Figure:
    figure = Figure(figsize=(9, 5.5))
    translation_ax, rotation_ax = figure.subplots(2, 1, sharex=True)
    evaluated = [r for r in records if r.evaluated]
    if not evaluated:
        _no_data(translation_ax, "no frame with ground truth")
        return figure
    start = records[0].stamp
    scored = [r for r in evaluated if r.localized]
    times = np.array([r.stamp - start for r in scored])
    errors = np.array([r.errors() for r in scored]).reshape(-1, 2)
    missed_times = [r.stamp - start for r in evaluated if not r.localized]
    bound = metrics["wrong_pose_bound"]
    for ax, column, limit, label in (
        (translation_ax, 0, bound["max_translation"], "translation error"),
        (rotation_ax, 1, bound["max_rotation_deg"], "rotation error (°)"),
    ):
        ax.plot(times, errors[:, column], ".-", markersize=4, linewidth=0.6, label="localized")
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=0.8, label="wrong-pose bound")
        if missed_times:
            ax.plot(
                missed_times, np.zeros(len(missed_times)), "|", color="tab:red", markersize=12, label="not localized"
            )
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    translation_ax.legend(loc="upper right", fontsize="small")
    rotation_ax.set_xlabel("time since first frame (s)")
    return figure


def _plot_error_cdf(records: list[FrameRecord], metrics: dict) -> Figure:
    figure = Figure(figsize=(10, 4.5))
    translation_ax, rotation_ax = figure.subplots(1, 2, sharey=True)
    evaluated = [r for r in records if r.evaluated]
    if not evaluated:
        _no_data(translation_ax, "no frame with ground truth")
        return figure
    errors = np.array([r.errors() for r in evaluated if r.localized]).reshape(-1, 2)
    for ax, column, key, unit in (
        (translation_ax, 0, "max_translation", "translation error"),
        (rotation_ax, 1, "max_rotation_deg", "rotation error (°)"),
    ):
        # Share of *evaluated* frames within an error: frames not localized never are, so the
        # curve tops out at the localized rate.
        values = np.sort(np.maximum(errors[:, column], 1e-4))  # log axis: clamp exact zeros
        ax.step(values, np.arange(1, len(values) + 1) / len(evaluated), where="post")
        for level in metrics["recall"]:
            ax.axvline(max(level[key], 1e-4), color="0.5", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    translation_ax.set_ylabel("share of evaluated frames")
    figure.suptitle("Error CDF (dotted: recall thresholds)")
    return figure


def _plot_latency(records: list[FrameRecord], metrics: dict) -> Figure:
    figure = Figure(figsize=(8, 4.5))
    ax = figure.add_subplot()
    timed = [r.timings for r in records if r.timings]
    if not timed:
        _no_data(ax, "no timings")
        return figure
    stages = sorted({stage for timings in timed for stage in timings if stage != "total"})
    totals = np.array([t.get("total", sum(t.values())) for t in timed]) * 1e3
    bins = np.linspace(0.0, max(totals.max(), 1e-3) * 1.05, 40)
    ax.hist(totals, bins=bins, color="0.8", label="total")
    for stage in stages:
        ax.hist(
            np.array([t[stage] for t in timed if stage in t]) * 1e3,
            bins=bins,
            histtype="step",
            linewidth=1.2,
            label=stage,
        )
    total = metrics["latency_ms"]["total"]
    for percentile, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        ax.axvline(
            total[percentile],
            color="black",
            linestyle=style,
            linewidth=0.9,
            label=f"total {percentile} {total[percentile]:.1f} ms",
        )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize="small")
    return figure
