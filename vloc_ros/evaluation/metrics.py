"""Localization metrics over per-frame records.

Frames without ground truth are *unevaluated*: counted, but outside every rate's denominator.
Recall is over evaluated frames (a frame counts when localized and within both bounds); the
wrong-pose rate is over evaluated *localized* frames, i.e. over the poses a node would have
published. Recall without the wrong-pose rate is not a result.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from ..covariance import NEES_BAND, nees_summary
from ..geometry import Rigid3, pose_error
from ..tracking import TrackingState
from .records import FrameRecord

DEFAULT_METRICS_CONFIG = {
    # (translation bound in map units, rotation bound in degrees)
    "recall_thresholds": [(0.05, 1.0), (0.25, 2.0), (0.5, 5.0), (5.0, 10.0)],
    "wrong_pose_bound": (0.5, 5.0),
}

LATENCY_PERCENTILES = (50, 95, 99)


def compute_metrics(records: list[FrameRecord], config: dict | None = None) -> dict:
    """All metrics as a JSON-ready dict; an undefined value (empty denominator) is None."""
    config = {**DEFAULT_METRICS_CONFIG, **(config or {})}
    evaluated = [r for r in records if r.evaluated]
    scored = [r for r in evaluated if r.localized]
    errors = np.array([r.errors() for r in scored], dtype=np.float64).reshape(-1, 2)
    translation_errors, rotation_errors = errors[:, 0], errors[:, 1]

    recall = []
    for max_translation, max_rotation in config["recall_thresholds"]:
        within = np.sum((translation_errors <= max_translation) & (rotation_errors <= max_rotation))
        recall.append(
            {
                "max_translation": float(max_translation),
                "max_rotation_deg": float(max_rotation),
                "recall": _ratio(within, len(evaluated)),
            }
        )
    wrong_translation, wrong_rotation = config["wrong_pose_bound"]
    wrong = int(np.sum((translation_errors > wrong_translation) | (rotation_errors > wrong_rotation)))

    return {
        "counts": {
            "frames": len(records),
            "evaluated": len(evaluated),
            "unevaluated": len(records) - len(evaluated),
            "localized": sum(r.localized for r in records),
            "localized_evaluated": len(scored),
            "wrong_poses": wrong,
            "not_localized_by_reason": dict(Counter(r.reason or "unspecified" for r in records if not r.localized)),
        },
        "localized_rate": _ratio(len(scored), len(evaluated)),
        "recall": recall,
        "wrong_pose_bound": {"max_translation": float(wrong_translation), "max_rotation_deg": float(wrong_rotation)},
        "wrong_pose_rate": _ratio(wrong, len(scored)),
        "translation_error": _median_p90(translation_errors),
        "rotation_error_deg": _median_p90(rotation_errors),
        "ape_translation_rmse": float(np.sqrt(np.mean(translation_errors**2))) if len(scored) else None,
        "latency_ms": latency_percentiles(records),
        "tracking": tracking_metrics(records),
        "nees": nees_metrics(scored),
        "map_to_odom": map_to_odom_metrics(records),
        "relocalization": relocalization_metrics(records),
    }


def nees_metrics(records: list[FrameRecord]) -> dict | None:
    """Mean and median NEES of the localized, evaluated frames with a covariance, and the share inside
    ``NEES_BAND`` (6 and 0.95 for a covariance an EKF can trust); None without covariances."""
    values = [value for value in (r.nees() for r in records) if value is not None]
    if not values:
        return None
    return {**nees_summary(values), "band": list(NEES_BAND), "frames": len(values)}


def map_to_odom_metrics(records: list[FrameRecord]) -> dict | None:
    """How smooth and how right the published map -> odom is, fused (``vloc_ros.fusion``) and as each
    fix alone would make it: jitter = its change from one published fix to the next (on a robot
    whose odometry is right it should not change at all), error = against the ground truth's
    ``ground_truth @ inverse(odom_from_camera)``; ``after_relocalization``: the fused error over the
    first second after each relocalization. None without odometry."""
    published = [r for r in records if r.localized and r.odom_from_camera is not None and r.map_from_odom is not None]
    if len(published) < 2:
        return None
    fused = [r.map_from_odom for r in published]
    per_fix = [r.estimate @ r.odom_from_camera.inverse() for r in published]
    truth = [None if r.ground_truth is None else r.ground_truth @ r.odom_from_camera.inverse() for r in published]
    relocalized = [r.stamp for r in published if r.state == TrackingState.RELOCALIZED.value]
    settling = [i for i, r in enumerate(published) if any(0.0 <= r.stamp - stamp <= 1.0 for stamp in relocalized)]
    return {
        "fixes": len(published),
        "jitter": {"fused": _changes(fused), "per_fix": _changes(per_fix)},
        "error": {"fused": _differences(fused, truth), "per_fix": _differences(per_fix, truth)},
        "after_relocalization": _differences([fused[i] for i in settling], [truth[i] for i in settling]),
    }


def relocalization_metrics(records: list[FrameRecord]) -> dict | None:
    """Time from each forced loss (``vloc eval --force-loss-every``) to the next published pose: the
    stamps between, plus the processing of the frame that relocalized; None without forced losses."""
    losses = [i for i, r in enumerate(records) if r.forced_loss]
    if not losses:
        return None
    seconds, failed = [], 0
    for start, end in zip(losses, losses[1:] + [len(records)]):
        found = next((r for r in records[start:end] if r.localized), None)
        if found is None:
            failed += 1
        else:
            seconds.append(found.stamp - records[start].stamp + found.timings.get("total", 0.0))
    return {
        "forced_losses": len(losses),
        "not_relocalized": failed,
        "seconds": _median_p90(np.array(seconds)) | {"max": max(seconds) if seconds else None},
    }


def _changes(poses: list[Rigid3]) -> dict:
    """Translation (map units) and rotation (degrees) from each pose to the next: median, p90."""
    return _error_summary([pose_error(a, b) for a, b in zip(poses[1:], poses[:-1])])


def _differences(estimates: list[Rigid3], truths: list[Rigid3 | None]) -> dict:
    return _error_summary([pose_error(e, t) for e, t in zip(estimates, truths) if t is not None])


def _error_summary(errors: list[tuple[float, float]]) -> dict:
    errors = np.array(errors, dtype=np.float64).reshape(-1, 2)
    return {"translation": _median_p90(errors[:, 0]), "rotation_deg": _median_p90(errors[:, 1])}


def tracking_metrics(records: list[FrameRecord]) -> dict | None:
    """Frames per tracking state, guided poses, and the share of frames with a pose from the first
    one on (a robot's view: once localized, how often is there a pose); None without states (live)."""
    if not any(r.state for r in records):
        return None
    first = next((i for i, r in enumerate(records) if r.localized), None)
    after = records[first:] if first is not None else []
    return {
        "frames_by_state": dict(Counter(r.state for r in records)),
        "guided": sum(r.guided for r in records),
        "localized_once_localized": _ratio(sum(r.localized for r in after), len(after)),
    }


def latency_percentiles(records: list[FrameRecord]) -> dict:
    """Per stage and ``total`` -> {p50, p95, p99, mean} in milliseconds, over frames that timed it.

    ``total`` is the localizer's own ``total`` timing when it reports one (stages may overlap or
    leave gaps), else the sum of the stages.
    """
    samples: dict[str, list[float]] = {}
    for record in records:
        if not record.timings:
            continue
        for stage, seconds in record.timings.items():
            samples.setdefault(stage, []).append(float(seconds))
        if "total" not in record.timings:
            samples.setdefault("total", []).append(float(sum(record.timings.values())))
    return {
        stage: {
            **{f"p{q}": float(np.percentile(np.multiply(values, 1e3), q)) for q in LATENCY_PERCENTILES},
            "mean": float(np.mean(values) * 1e3),
        }
        for stage, values in samples.items()
    }


def _median_p90(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"median": None, "p90": None}
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / denominator if denominator else None
