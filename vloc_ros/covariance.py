"""The covariance a localized pose is published with, and its calibration against ground truth.

The pose's own covariance (``vloc_ros.pose``: ``sigma^2 (J^T J)^-1`` of the inlier reprojection
residuals) treats every inlier as an independent measurement. On real data it is not: the map's
points carry the errors of the poses they were triangulated from, a calibration that is slightly
off moves every keypoint the same way, and the ground truth has errors of its own. The errors of
consecutive frames are correlated and biased, so the Jacobian's covariance is orders of magnitude
too small on real data, while on the synthetic world it is about right (docs/decisions.md). What
is published is

    scale * covariance / max(confidence, min_confidence) + diag(floor_position^2 x3, floor_rotation^2 x3)

- ``confidence``: the verification's (``vloc_ros.verification``), so a pose that barely passed is
  trusted less;
- ``scale`` and the floors: calibrated per deployment with ground truth (``vloc eval
  --calibrate-covariance``, ``fit_covariance``), because the part of the error a single frame cannot
  see (map, calibration, ground truth) depends on the place and the rig. The defaults are the
  calibration on the shared real sets.

Convention (ROS order, as ``PoseWithCovariance``): position x y z, then small rotations about the map
axes applied on the left; the rotation floor is in degrees, the position floor in map units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import minimize
from scipy.stats import chi2

from .config import from_dict

# A consistent 6-DoF covariance puts 95 % of the frames' NEES inside this chi-square(6) band.
NEES_BAND = (float(chi2.ppf(0.025, 6)), float(chi2.ppf(0.975, 6)))
NEES_EXPECTED = 6.0  # the mean of chi-square(6)


@dataclass(frozen=True)
class CovarianceConfig:
    # The defaults: the calibration on the hand-held 7-Scenes replay (docs/benchmarks.md). On a
    # precisely calibrated rig and map they are conservative (NEES below 6), never overconfident.
    scale: float = 200.0
    floor_position: float = 0.02  # map units, standard deviation per axis
    floor_rotation_deg: float = 1.0  # standard deviation per axis
    min_confidence: float = 0.05  # a pose that barely passed verification: x 1 / this at most


def floor_covariance(config: CovarianceConfig) -> np.ndarray:
    """The 6x6 diagonal of the floors, added to every published covariance."""
    return np.diag([config.floor_position**2] * 3 + [np.radians(config.floor_rotation_deg) ** 2] * 3)


def published_covariance(covariance, confidence: float, config: CovarianceConfig | dict | None = None) -> np.ndarray:
    """The 6x6 covariance to publish for a pose estimate's ``covariance`` and verification ``confidence``."""
    config = from_dict(CovarianceConfig, config)
    scaled = config.scale * np.asarray(covariance, dtype=np.float64) / max(confidence, config.min_confidence)
    return scaled + floor_covariance(config)


def nees(error: np.ndarray, covariance: np.ndarray) -> float:
    """Normalised estimation error squared of the 6-vector ``error`` under ``covariance`` (inf if singular)."""
    try:
        return float(error @ np.linalg.solve(covariance, error))
    except np.linalg.LinAlgError:
        return float("inf")


def nees_summary(values) -> dict:
    """Mean, median and the share inside ``NEES_BAND`` (6 and 0.95 when consistent)."""
    values = np.asarray(values, dtype=np.float64)
    inside = (values >= NEES_BAND[0]) & (values <= NEES_BAND[1])
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "inside_band": float(np.mean(inside))}


def fit_covariance(errors, covariances, confidences, base: CovarianceConfig | None = None) -> CovarianceConfig:
    """The ``scale`` and floors under which frames with these (6,) ``errors`` (estimate against ground
    truth, in the module's convention), pose ``covariances`` and verification ``confidences`` are
    consistent: mean NEES 6 with as many frames as possible inside the 95 % band.

    Fitting both keeps the two kinds of error apart: the floors take the error no frame can see (a
    bias the ground truth or the map carries), the scale the part that follows the frame's own
    geometry. The loss has several local minima, so Nelder-Mead (on the logarithms, which keeps every
    value positive) starts from a grid of scales and floors sized by the errors themselves.
    """
    base = base or CovarianceConfig()
    errors = np.asarray(errors, dtype=np.float64).reshape(-1, 6)
    if len(errors) < 6:
        raise ValueError(f"{len(errors)} frames with ground truth are too few to calibrate a 6x6 covariance")
    unit = np.stack(
        [
            np.asarray(covariance, dtype=np.float64) / max(confidence, base.min_confidence)
            for covariance, confidence in zip(covariances, confidences)
        ]
    )

    def candidate(log_values) -> CovarianceConfig:
        scale, floor_position, floor_rotation_deg = np.exp(np.clip(log_values, -30.0, 30.0))
        return CovarianceConfig(float(scale), float(floor_position), float(floor_rotation_deg), base.min_confidence)

    def loss(log_values) -> float:
        config = candidate(log_values)
        summary = nees_summary(batch_nees(errors, config.scale * unit + floor_covariance(config)))
        if not np.isfinite(summary["mean"]) or summary["mean"] <= 0:
            return np.inf
        return np.log(summary["mean"] / NEES_EXPECTED) ** 2 - 0.5 * summary["inside_band"]

    position_rms = float(np.sqrt(np.mean(errors[:, :3] ** 2))) + 1e-12
    rotation_rms_deg = float(np.degrees(np.sqrt(np.mean(errors[:, 3:] ** 2)))) + 1e-12
    starts = [
        np.log([scale, share * position_rms, share * rotation_rms_deg])
        for scale in (1.0, 10.0, 100.0, 1000.0)
        for share in (1e-3, 0.1, 0.3, 1.0)
    ]
    best = min(
        (minimize(loss, start, method="Nelder-Mead", options={"maxiter": 300}) for start in starts),
        key=lambda result: result.fun,
    )
    return candidate(best.x)


def batch_nees(errors: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """``nees`` of (N, 6) errors under (N, 6, 6) covariances (inf where one is singular)."""
    try:
        return np.einsum("ni,ni->n", errors, np.linalg.solve(covariances, errors[..., None])[..., 0])
    except np.linalg.LinAlgError:
        return np.array([nees(error, covariance) for error, covariance in zip(errors, covariances)])


# The localizer node's parameters that carry a CovarianceConfig, by field.
COVARIANCE_PARAMETERS = {
    "scale": "covariance_scale",
    "floor_position": "covariance_floor_position",
    "floor_rotation_deg": "covariance_floor_rotation_deg",
}
NODE_NAME = "vloc_localizer"


def write_calibration(path, config: CovarianceConfig, comment: str) -> None:
    """``config`` as a ROS 2 parameters file of the localizer node (a second ``params_file`` after
    config/localizer.yaml), which ``read_calibration`` and ``vloc eval/localize --covariance`` read too."""
    parameters = {name: float(getattr(config, field)) for field, name in COVARIANCE_PARAMETERS.items()}
    text = "".join(f"# {line}\n" for line in comment.splitlines())
    text += yaml.safe_dump({NODE_NAME: {"ros__parameters": parameters}}, sort_keys=False)
    Path(path).write_text(text)


def read_calibration(path) -> CovarianceConfig:
    """The ``CovarianceConfig`` of a file ``write_calibration`` wrote; ValueError says what is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        parameters = data[NODE_NAME]["ros__parameters"]
        values = {field: float(parameters[name]) for field, name in COVARIANCE_PARAMETERS.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path} is not a covariance calibration ({NODE_NAME}.ros__parameters with "
            f"{', '.join(COVARIANCE_PARAMETERS.values())}): {error!r}"
        ) from None
    if not all(np.isfinite(value) and value >= 0 for value in values.values()) or values["scale"] <= 0:
        raise ValueError(f"{path}: covariance scale must be positive and floors non-negative, got {values}")
    return CovarianceConfig(**values)
