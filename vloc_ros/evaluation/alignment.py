"""Umeyama alignment of point sets, applied to trajectories of ``world_from_camera`` poses.

Used when the map frame is not the ground-truth frame (a map built without metric anchoring):
SE3 for a metric map in another frame, Sim3 when the map scale is arbitrary too.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..geometry import Rigid3
from .records import FrameRecord


def align(src, dst, with_scale: bool) -> tuple[Rigid3, float]:
    """Least-squares ``dst ≈ scale * R @ src + t`` (Umeyama 1991); returns (Rigid3(R, t), scale).

    Without ``with_scale`` the scale is fixed to 1 (SE3).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source points but {len(dst)} destination points")
    if len(src) < 3:
        raise ValueError(f"alignment needs at least 3 point pairs, got {len(src)}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centered, dst_centered = src - src_mean, dst - dst_mean
    covariance = dst_centered.T @ src_centered / len(src)
    u, singular_values, vt = np.linalg.svd(covariance)
    # Two vanishing singular values mean collinear points: the rotation about that line is free.
    if singular_values[1] <= 1e-12 * max(singular_values[0], 1e-300):
        raise ValueError("alignment is degenerate: the points are collinear or coincide")
    # Flip the last axis when the best orthogonal matrix would be a reflection.
    signs = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ np.diag(signs) @ vt
    scale = 1.0
    if with_scale:
        scale = float(singular_values @ signs / np.mean(np.sum(src_centered**2, axis=1)))
    translation = dst_mean - scale * rotation @ src_mean
    return Rigid3(rotation, translation), scale


def apply_alignment(poses: list[Rigid3], rigid: Rigid3, scale: float = 1.0) -> list[Rigid3]:
    """Map ``src_from_camera`` poses into the ``dst`` frame of ``align``: positions get the full
    similarity, orientations only the rotation (a scale does not rotate the camera)."""
    return [
        Rigid3(rigid.rotation @ pose.rotation, scale * rigid.rotation @ pose.translation + rigid.translation)
        for pose in poses
    ]


def align_records(records: list[FrameRecord], with_scale: bool) -> tuple[list[FrameRecord], Rigid3, float]:
    """Align all estimates onto the ground truth using the frames that have both.

    Wrong poses take part in the fit too (there is no robust weighting), so an alignment always
    flatters a little; prefer evaluating without it when the map is registered to the ground truth.
    """
    pairs = [record for record in records if record.localized and record.evaluated]
    rigid, scale = align(
        [r.estimate.translation for r in pairs], [r.ground_truth.translation for r in pairs], with_scale
    )
    # The covariance turns with the estimate: positions by scale x R, rotations by R.
    jacobian = np.zeros((6, 6))
    jacobian[:3, :3], jacobian[3:, 3:] = scale * rigid.rotation, rigid.rotation
    aligned = [
        replace(
            r,
            estimate=apply_alignment([r.estimate], rigid, scale)[0] if r.localized else None,
            covariance=None if r.covariance is None else jacobian @ r.covariance @ jacobian.T,
            # map -> odom turns with the map; with a scale it is no longer rigid (metric odometry
            # in a scaled map), so there is nothing to compare.
            map_from_odom=None if r.map_from_odom is None or with_scale else rigid @ r.map_from_odom,
        )
        for r in records
    ]
    return aligned, rigid, scale
