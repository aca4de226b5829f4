"""Rigid transforms and pinhole cameras with explicit, tested conventions.

Naming: a transform ``a_from_b`` maps coordinates expressed in frame ``b`` into frame ``a``
(``p_a = R @ p_b + t``). A camera pose in the world is therefore ``world_from_camera``; the
projection side (what COLMAP stores per image) is ``camera_from_world``. The ROS TF transform with
parent ``map`` and child ``camera`` has exactly the rotation and translation of ``map_from_camera``.

Camera frames are optical frames (REP-103 ``*_optical``): x right, y down, z forward.
Quaternions are (x, y, z, w) everywhere in this package, as in ROS messages; COLMAP's own text
format writes (w, x, y, z) and the code that reads or writes it converts explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

# Rotation taking optical-frame vectors (x right, y down, z forward) into a REP-103 body frame
# (x forward, y left, z up): body_from_optical.
BODY_FROM_OPTICAL_ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Rigid3:
    """A rigid transform ``a_from_b``: ``p_a = rotation @ p_b + translation``."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        translation = np.asarray(self.translation, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise ValueError("Rigid3 needs finite rotation and translation")
        if abs(np.linalg.det(rotation) - 1.0) > 1e-6:
            raise ValueError(f"rotation is not a proper rotation (det={np.linalg.det(rotation):.6f})")
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)

    @staticmethod
    def from_quaternion(quat_xyzw, translation) -> "Rigid3":
        quat = np.asarray(quat_xyzw, dtype=np.float64)
        norm = np.linalg.norm(quat)
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"invalid quaternion {quat_xyzw}")
        return Rigid3(Rotation.from_quat(quat / norm).as_matrix(), translation)

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        return Rotation.from_matrix(self.rotation).as_quat()

    @property
    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    def to_dict(self) -> dict:
        """``{"translation": [x, y, z], "quaternion_xyzw": [x, y, z, w]}``, how every JSON file here stores a pose."""
        return {"translation": self.translation.tolist(), "quaternion_xyzw": self.quaternion_xyzw.tolist()}

    @staticmethod
    def from_dict(data: dict) -> "Rigid3":
        return Rigid3.from_quaternion(data["quaternion_xyzw"], data["translation"])

    def inverse(self) -> "Rigid3":
        return Rigid3(self.rotation.T, -self.rotation.T @ self.translation)

    def __matmul__(self, other: "Rigid3") -> "Rigid3":
        """Compose: ``a_from_b @ b_from_c -> a_from_c``."""
        return Rigid3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def transform(self, points) -> np.ndarray:
        """Map (N, 3) points from frame b to frame a."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.rotation.T + self.translation


def rotation_error_deg(rotation_a, rotation_b) -> float:
    """Angle of ``rotation_a^T rotation_b`` in degrees."""
    cos = (np.trace(np.asarray(rotation_a).T @ np.asarray(rotation_b)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_error(estimate: Rigid3, truth: Rigid3) -> tuple[float, float]:
    """(translation error in map units, rotation error in degrees) of two ``world_from_camera`` poses."""
    return (
        float(np.linalg.norm(estimate.translation - truth.translation)),
        rotation_error_deg(estimate.rotation, truth.rotation),
    )


def pose_difference(a: Rigid3, b: Rigid3) -> np.ndarray:
    """The 6-vector taking ``b`` to ``a`` in the covariance convention (ROS order): position difference, then the
    rotation vector of ``a.rotation @ b.rotation^T`` (map axes)."""
    rotation = Rotation.from_matrix(a.rotation @ b.rotation.T).as_rotvec()
    return np.concatenate([a.translation - b.translation, rotation])


def apply_difference(delta: np.ndarray, pose: Rigid3) -> Rigid3:
    """``pose`` moved by ``delta`` (the inverse of ``pose_difference``)."""
    return Rigid3(Rotation.from_rotvec(delta[3:]).as_matrix() @ pose.rotation, pose.translation + delta[:3])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with optional OpenCV (plumb_bob) distortion ``(k1, k2, p1, p2, k3)``.

    Pixel convention is OpenCV/ROS: the centre of the top-left pixel is (0, 0). (COLMAP puts it
    at (0.5, 0.5); ``to_pycolmap`` shifts the principal point accordingly.)
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0 and np.isfinite([self.cx, self.cy]).all()):
            raise ValueError(f"invalid intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        dist = tuple(float(d) for d in self.distortion) + (0.0,) * max(0, 5 - len(self.distortion))
        if len(dist) != 5 or not np.isfinite(dist).all():
            raise ValueError(f"distortion must be up to 5 finite plumb_bob coefficients, got {self.distortion}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "distortion", dist)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return any(abs(d) > 0 for d in self.distortion)

    @staticmethod
    def from_K(width, height, K, distortion=(0.0,) * 5) -> "Camera":
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return Camera(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2], tuple(distortion))

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera for an image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        # Pixel centres at integer coordinates: x' = (x + 0.5) * s - 0.5.
        return Camera(
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            self.distortion,
        )

    def project(self, points_camera) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) optical-frame points; returns (pixels (N, 2), in_front mask)."""
        points = np.asarray(points_camera, dtype=np.float64).reshape(-1, 3)
        in_front = points[:, 2] > 1e-9
        z = np.where(in_front, points[:, 2], 1.0)
        x, y = points[:, 0] / z, points[:, 1] / z
        k1, k2, p1, p2, k3 = self.distortion
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([self.fx * xd + self.cx, self.fy * yd + self.cy], axis=1), in_front

    def undistort_points(self, pixels) -> np.ndarray:
        """Distorted pixel coordinates -> the pixels an ideal pinhole camera with the same K sees."""
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion or len(pixels) == 0:
            return pixels.copy()
        import cv2

        # Iterate well past OpenCV's default 5 steps: strong lens distortion needs it for sub-pixel accuracy.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
        out = cv2.undistortPoints(
            pixels.reshape(-1, 1, 2), self.K, np.asarray(self.distortion), None, self.K, criteria=criteria
        )
        return out.reshape(-1, 2)

    def pinhole(self) -> "Camera":
        """This camera without distortion (what undistorted keypoints live in)."""
        return Camera(self.width, self.height, self.fx, self.fy, self.cx, self.cy)

    def to_pycolmap(self, camera_id: int = 1):
        """A pycolmap camera: PINHOLE without distortion, else FULL_OPENCV (holds k3)."""
        import pycolmap

        cx, cy = self.cx + 0.5, self.cy + 0.5
        if not self.has_distortion:
            model, params = "PINHOLE", [self.fx, self.fy, cx, cy]
        else:
            k1, k2, p1, p2, k3 = self.distortion
            model, params = "FULL_OPENCV", [self.fx, self.fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0]
        return pycolmap.Camera(model=model, width=self.width, height=self.height, params=params, camera_id=camera_id)

    @staticmethod
    def from_pycolmap(colmap_camera) -> "Camera":
        """The camera of a pycolmap camera (the inverse of ``to_pycolmap``).

        Only models whose distortion plumb_bob holds convert; FULL_OPENCV only with its rational
        terms k4..k6 zero. Any other model (fisheye, FOV, ...) raises ValueError.
        """
        parameter_names = {
            "SIMPLE_PINHOLE": ("f", "cx", "cy"),
            "PINHOLE": ("fx", "fy", "cx", "cy"),
            "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
            "RADIAL": ("f", "cx", "cy", "k1", "k2"),
            "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
            "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
        }
        model = colmap_camera.model.name
        if model not in parameter_names:
            raise ValueError(
                f"COLMAP camera model {model} has no plumb_bob equivalent; supported: {', '.join(parameter_names)}"
            )
        params = dict(zip(parameter_names[model], (float(p) for p in colmap_camera.params)))
        if any(params.get(name, 0.0) for name in ("k4", "k5", "k6")):
            raise ValueError(
                f"COLMAP camera model {model} with rational distortion k4..k6 "
                f"({params['k4']}, {params['k5']}, {params['k6']}) has no plumb_bob equivalent; "
                f"supported: {', '.join(parameter_names)} (FULL_OPENCV with k4..k6 zero)"
            )
        fx, fy = params.get("fx", params.get("f")), params.get("fy", params.get("f"))
        distortion = tuple(params.get(name, 0.0) for name in ("k1", "k2", "p1", "p2", "k3"))
        # COLMAP's first pixel centre is (0.5, 0.5), ours (0, 0).
        return Camera(
            colmap_camera.width, colmap_camera.height, fx, fy, params["cx"] - 0.5, params["cy"] - 0.5, distortion
        )

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "distortion": list(self.distortion),
        }

    @staticmethod
    def from_dict(data: dict) -> "Camera":
        try:
            return Camera(
                int(data["width"]),
                int(data["height"]),
                float(data["fx"]),
                float(data["fy"]),
                float(data["cx"]),
                float(data["cy"]),
                tuple(data.get("distortion", ())),
            )
        except KeyError as missing:
            raise ValueError(f"camera description lacks {missing}; needs width, height, fx, fy, cx, cy") from None


# Poses at query stamps (ground truth for evaluation, known poses for mapping): interpolation between
# the two bracketing samples.


class PoseInterpolator:
    """Ground truth prepared once (sorted, repeated stamps dropped) for many lookups.

    Linear in translation, slerp in rotation. A query outside the ground-truth span, or whose
    bracketing samples are more than ``max_gap`` seconds apart, gets None: the ground truth does not
    say where the camera was (unevaluated, which is not a localization failure). A query exactly on
    a sample gets that sample.
    """

    def __init__(self, stamps, poses: list[Rigid3], max_gap: float):
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if len(stamps) != len(poses):
            raise ValueError(f"{len(stamps)} stamps but {len(poses)} poses")
        # Sort, and keep the first of repeated stamps: a zero-length interval has no interpolation.
        self.stamps, first = np.unique(stamps, return_index=True)
        self.poses = [poses[i] for i in first]
        self.max_gap = max_gap

    def at(self, query: float) -> Rigid3 | None:
        stamps, poses = self.stamps, self.poses
        after = int(np.searchsorted(stamps, query, side="right"))
        before = after - 1
        if before >= 0 and stamps[before] == query:
            return poses[before]
        if before < 0 or after >= len(stamps) or stamps[after] - stamps[before] > self.max_gap:
            return None
        fraction = (query - stamps[before]) / (stamps[after] - stamps[before])
        return interpolate_pose(poses[before], poses[after], fraction)


def interpolate_poses(stamps, poses: list[Rigid3], query_stamps, max_gap: float) -> list[Rigid3 | None]:
    """Pose at each query stamp (see ``PoseInterpolator``)."""
    interpolator = PoseInterpolator(stamps, poses, max_gap)
    return [interpolator.at(query) for query in np.asarray(query_stamps, dtype=np.float64).reshape(-1)]


def interpolate_pose(start: Rigid3, end: Rigid3, fraction: float) -> Rigid3:
    """The pose ``fraction`` (0..1) of the way from ``start`` to ``end``: linear translation, slerp rotation."""
    relative = Rotation.from_matrix(start.rotation.T @ end.rotation).as_rotvec()
    rotation = start.rotation @ Rotation.from_rotvec(fraction * relative).as_matrix()
    return Rigid3(rotation, (1.0 - fraction) * start.translation + fraction * end.translation)
