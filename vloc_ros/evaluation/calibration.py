"""Covariance calibration from an evaluation's records (``vloc eval --calibrate-covariance``)."""

from __future__ import annotations

from ..covariance import CovarianceConfig, fit_covariance, floor_covariance, nees, nees_summary, published_covariance
from ..geometry import pose_difference
from .records import FrameRecord


def calibrate_covariance(records: list[FrameRecord], current: CovarianceConfig) -> tuple[CovarianceConfig, dict, dict]:
    """The ``CovarianceConfig`` that makes the evaluated poses' covariances consistent, with the NEES
    summaries (``covariance.nees_summary`` + frames) before and after.

    The records' covariances were published under ``current``; undoing its scale and floors gives
    each pose's own covariance over its verification confidence, which is what the fit scales.
    """
    scored = [r for r in records if r.localized and r.evaluated and r.covariance is not None]
    errors = [pose_difference(r.estimate, r.ground_truth) for r in scored]
    floors = floor_covariance(current)
    own = [(r.covariance - floors) / current.scale for r in scored]
    calibrated = fit_covariance(errors, own, [1.0] * len(own), current)

    def summary(config: CovarianceConfig) -> dict:
        values = [nees(e, published_covariance(c, 1.0, config)) for e, c in zip(errors, own)]
        return {**nees_summary(values), "frames": len(values)}

    return calibrated, summary(current), summary(calibrated)
