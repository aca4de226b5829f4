"""RANSAC PnP as batched torch code, so that it runs on the GPU next to the features.

poselib's LO-RANSAC (``vloc_ros.pose``) draws one sample at a time and stops early; on the GPU that
serial loop is the cost, so this module does the opposite: it draws every sample at once, solves
all the P3P problems in one batch, scores every pose against every correspondence in one batched
operation and refines the best on its inliers with Gauss-Newton (local optimisation). There is no
early stop and no ``.item()`` before the end: the whole estimate is a fixed sequence of kernels and
one transfer back to the host.

P3P is Grunert's formulation (as reviewed by Haralick et al. 1994): a quartic in the ratio of two
depths, solved in closed form (Ferrari, with complex arithmetic so that every branch is the same
kernel) and polished by Newton steps; the pose then follows from the triangle the three depths
give in the camera frame. The minimal solver and the refinement run in float64 on every device:
in float32 the quartic's coefficients lose too many digits for near-double roots (the tests
measure it), and they are per-sample, not per-correspondence, work. The scoring, which touches
hypotheses x correspondences, runs in float32 on CUDA.

Inputs are undistorted pixels of a pinhole camera, sorted best first: samples come from growing
prefixes of the correspondences (PROSAC-like), so the best-ranked ones are tried first.
"""

from __future__ import annotations

import numpy as np
import torch

# Scoring is done in chunks of hypotheses so that one chunk holds at most this many
# hypothesis-correspondence pairs: on a GPU all of a frame's pairs at once (a few hundred MB), on a CPU
# a few million, so that the temporaries stay small.
MAX_SCORED_PAIRS = {"cuda": 1 << 25, "cpu": 1 << 22}


def solve_quartic(coefficients: torch.Tensor) -> torch.Tensor:
    """The four complex roots (..., 4) of ``c4 x^4 + c3 x^3 + c2 x^2 + c1 x + c0`` with
    ``coefficients`` (..., 5) ordered c4..c0 and c4 != 0 (Ferrari's method)."""
    complex_dtype = torch.complex128 if coefficients.dtype == torch.float64 else torch.complex64
    c4, c3, c2, c1, c0 = (coefficients[..., i].to(complex_dtype) for i in range(5))
    b, c, d, e = c3 / c4, c2 / c4, c1 / c4, c0 / c4
    # Depressed quartic y^4 + p y^2 + q y + r with x = y - b / 4.
    p = c - 3 * b**2 / 8
    q = d - b * c / 2 + b**3 / 8
    r = e - b * d / 4 + b**2 * c / 16 - 3 * b**4 / 256
    # Resolvent cubic m^3 + p m^2 + (p^2 / 4 - r) m - q^2 / 8 = 0, by Cardano; any root m != 0 splits
    # the quartic into two quadratics, and the largest is the best conditioned.
    cubic_b, cubic_c, cubic_d = p, p**2 / 4 - r, -(q**2) / 8
    shifted_p = cubic_c - cubic_b**2 / 3
    shifted_q = 2 * cubic_b**3 / 27 - cubic_b * cubic_c / 3 + cubic_d
    root = torch.sqrt(shifted_q**2 / 4 + shifted_p**3 / 27)
    # Of the two signs, the one away from cancellation keeps u^3 far from zero.
    u_cubed = torch.where(
        (-shifted_q / 2 + root).abs() >= (-shifted_q / 2 - root).abs(), -shifted_q / 2 + root, -shifted_q / 2 - root
    )
    u = u_cubed ** (1 / 3)
    cube_roots_of_unity = torch.tensor(
        [1, complex(-0.5, 3**0.5 / 2), complex(-0.5, -(3**0.5) / 2)], dtype=complex_dtype, device=coefficients.device
    )
    u_all = u[..., None] * cube_roots_of_unity
    tiny = torch.finfo(coefficients.dtype).tiny
    m_all = u_all - shifted_p[..., None] / (3 * u_all + tiny) - cubic_b[..., None] / 3
    m = torch.gather(m_all, -1, m_all.abs().argmax(-1, keepdim=True))[..., 0]
    sqrt_2m = torch.sqrt(2 * m)
    offset = q / (2 * sqrt_2m + tiny)
    # y^2 -/+ sqrt(2m) y + p/2 + m +/- q / (2 sqrt(2m)) = 0
    roots = []
    for sign in (1, -1):
        linear = -sign * sqrt_2m
        constant = p / 2 + m + sign * offset
        discriminant = torch.sqrt(linear**2 - 4 * constant)
        roots += [(-linear + discriminant) / 2, (-linear - discriminant) / 2]
    return torch.stack(roots, -1) - b[..., None] / 4


def _polish_real_roots(coefficients: torch.Tensor, roots: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """Newton steps on the real polynomial from the real parts of ``roots``: closed-form roots
    carry the rounding of the cube and square roots, which these remove."""
    c4, c3, c2, c1, c0 = (coefficients[..., i, None] for i in range(5))
    x = roots
    for _ in range(steps):
        value = (((c4 * x + c3) * x + c2) * x + c1) * x + c0
        slope = ((4 * c4 * x + 3 * c3) * x + 2 * c2) * x + c1
        x = x - torch.where(slope.abs() > 1e-300, value / slope, torch.zeros_like(x))
    return x


def _triangle_frame(first: torch.Tensor, second: torch.Tensor, third: torch.Tensor):
    """(..., 3, 3) orthonormal frame (columns) of a triangle, and whether the triangle is not flat."""
    edge = second - first
    normal = torch.linalg.cross(edge, third - first)
    area_scale = edge.norm(dim=-1) * (third - first).norm(dim=-1)
    not_flat = normal.norm(dim=-1) > 1e-6 * area_scale
    axis_x = edge / edge.norm(dim=-1, keepdim=True)
    axis_z = normal / normal.norm(dim=-1, keepdim=True)
    axis_y = torch.linalg.cross(axis_z, axis_x)
    return torch.stack([axis_x, axis_y, axis_z], -1), not_flat


def p3p(bearings: torch.Tensor, points3d: torch.Tensor):
    """Grunert's P3P for a batch: ``bearings`` (B, 3, 3) unit rays and ``points3d`` (B, 3, 3) world
    points, one per row. Returns camera_from_world rotations (B, 4, 3, 3), translations (B, 4, 3) and
    which of the 4 solutions are real, with positive depths, on a non-flat triangle (B, 4)."""
    point1, point2, point3 = points3d.unbind(-2)
    ray1, ray2, ray3 = bearings.unbind(-2)
    a2 = (point2 - point3).pow(2).sum(-1)
    b2 = (point1 - point3).pow(2).sum(-1)
    c2 = (point1 - point2).pow(2).sum(-1)
    cos_alpha = (ray2 * ray3).sum(-1)
    cos_beta = (ray1 * ray3).sum(-1)
    cos_gamma = (ray1 * ray2).sum(-1)
    # Depths s2 = u s1 and s3 = v s1; eliminating u leaves a quartic in v.
    a_minus_c = (a2 - c2) / b2
    a_plus_c = (a2 + c2) / b2
    coefficients = torch.stack(
        [
            (a_minus_c - 1) ** 2 - 4 * c2 / b2 * cos_alpha**2,
            4
            * (
                a_minus_c * (1 - a_minus_c) * cos_beta
                - (1 - a_plus_c) * cos_alpha * cos_gamma
                + 2 * c2 / b2 * cos_alpha**2 * cos_beta
            ),
            2
            * (
                a_minus_c**2
                - 1
                + 2 * a_minus_c**2 * cos_beta**2
                + 2 * (b2 - c2) / b2 * cos_alpha**2
                - 4 * a_plus_c * cos_alpha * cos_beta * cos_gamma
                + 2 * (b2 - a2) / b2 * cos_gamma**2
            ),
            4
            * (
                -a_minus_c * (1 + a_minus_c) * cos_beta
                + 2 * a2 / b2 * cos_gamma**2 * cos_beta
                - (1 - a_plus_c) * cos_alpha * cos_gamma
            ),
            (1 + a_minus_c) ** 2 - 4 * a2 / b2 * cos_gamma**2,
        ],
        -1,
    )
    roots = solve_quartic(coefficients)
    # Near-double roots come out with a small imaginary part from rounding; they are real poses.
    real = roots.imag.abs() <= 1e-3 * (1 + roots.real.abs())
    v = _polish_real_roots(coefficients, roots.real)
    cos_alpha, cos_beta, cos_gamma, a_minus_c = (x[..., None] for x in (cos_alpha, cos_beta, cos_gamma, a_minus_c))
    u = ((a_minus_c - 1) * v**2 - 2 * a_minus_c * cos_beta * v + 1 + a_minus_c) / (2 * (cos_gamma - v * cos_alpha))
    s1_squared = b2[..., None] / (1 + v**2 - 2 * v * cos_beta)
    s1 = s1_squared.clamp_min(0).sqrt()
    depths = torch.stack([s1, u * s1, v * s1], -1)  # (B, 4, 3)
    valid = real & (s1_squared > 0) & (depths > 0).all(-1) & depths.isfinite().all(-1)
    camera_points = depths[..., None] * bearings[:, None]  # (B, 4, 3 points, 3)
    camera_frame, camera_not_flat = _triangle_frame(*camera_points.unbind(-2))
    world_frame, world_not_flat = _triangle_frame(point1, point2, point3)
    rotations = camera_frame @ world_frame[:, None].transpose(-1, -2)
    translations = camera_points[..., 0, :] - (rotations @ point1[:, None, :, None])[..., 0]
    valid &= camera_not_flat & world_not_flat[:, None]
    valid &= rotations.isfinite().all(-1).all(-1) & translations.isfinite().all(-1)
    return rotations, translations, valid


def _draw_samples(num_points: int, num_samples: int, progressive: bool, generator, device) -> torch.Tensor:
    """(num_samples, 3) distinct indices; with ``progressive``, sample i draws from the first
    n_i correspondences, n_i growing linearly from a small prefix to all of them."""
    if progressive:
        smallest = min(num_points, 20)
        prefix = smallest + (num_points - smallest) * (torch.arange(num_samples, device=device) + 1) // num_samples
    else:
        prefix = torch.full((num_samples,), num_points, device=device)
    uniform = torch.rand((num_samples, 3), generator=generator, device=device, dtype=torch.float64)
    # Draw from n, n-1, n-2 values and shift past the ones already taken: distinct and uniform.
    first = (uniform[:, 0] * prefix).long()
    second = (uniform[:, 1] * (prefix - 1)).long()
    second = second + (second >= first)
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    third = (uniform[:, 2] * (prefix - 2)).long()
    third = third + (third >= low)
    third = third + (third >= high)
    return torch.stack([first, second, third], -1)


def _squared_errors(rotations, translations, points2d, points3d, intrinsics):
    """(H, N) squared pixel errors of every pose for every correspondence; inf behind the camera."""
    # One (H, 3, 4) @ (4, N) product gives the homogeneous pixels of all pairs, rows contiguous.
    fx, fy, cx, cy = intrinsics
    calibration = torch.stack([fx, fx * 0, cx, fx * 0, fy, cy, fx * 0, fx * 0, fx * 0 + 1]).reshape(3, 3)
    projection = calibration @ torch.cat([rotations, translations[..., None]], -1)
    homogeneous = torch.cat([points3d, torch.ones_like(points3d[:, :1])], -1).T
    pixels = projection @ homogeneous
    depth = pixels[:, 2]
    errors = (pixels[:, 0] / depth - points2d[:, 0]).square_()
    errors += (pixels[:, 1] / depth - points2d[:, 1]).square_()
    return errors.masked_fill_(depth <= 0, torch.inf)


def _skew(vectors: torch.Tensor) -> torch.Tensor:
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*vectors.shape[:-1], 3, 3)


def _refine(rotation, translation, points2d, points3d, intrinsics, threshold_squared, iterations):
    """Gauss-Newton on the pose's inliers, which are re-selected after every step (local
    optimisation). Inliers are weights, not an index, so that the shapes stay fixed on the device."""
    fx, fy = intrinsics[0], intrinsics[1]
    identity = torch.eye(6, dtype=points3d.dtype, device=points3d.device)
    for _ in range(iterations):
        camera_points = points3d @ rotation.T + translation
        x, y, z = camera_points.unbind(-1)
        inverse_z = 1 / z
        projected = torch.stack([fx * x * inverse_z, fy * y * inverse_z], -1) + intrinsics[2:]
        weights = (((projected - points2d).square().sum(-1) < threshold_squared) & (z > 0)).to(z.dtype)
        residuals = torch.nan_to_num((projected - points2d) * weights[:, None], posinf=0.0, neginf=0.0)
        # d(pixel)/d(camera point) times d(camera point)/d(rotation on the left, translation).
        projection = torch.zeros(len(z), 2, 3, dtype=z.dtype, device=z.device)
        projection[:, 0, 0] = fx * inverse_z
        projection[:, 0, 2] = -fx * x * inverse_z**2
        projection[:, 1, 1] = fy * inverse_z
        projection[:, 1, 2] = -fy * y * inverse_z**2
        rotated = camera_points - translation
        point_jacobian = torch.cat([-_skew(rotated), identity[:3, :3].expand(len(z), 3, 3)], -1)
        jacobian = torch.nan_to_num((projection @ point_jacobian) * weights[:, None, None])
        normal = torch.einsum("nki,nkj->ij", jacobian, jacobian)
        gradient = torch.einsum("nki,nk->i", jacobian, residuals)
        # A small Levenberg damping keeps the step defined when the inliers leave a direction free.
        damping = 1e-6 * normal.diagonal().mean() + 1e-12
        # solve_ex, unlike solve, does not check for singularity on the host, so the GPU never waits.
        step = torch.nan_to_num(-torch.linalg.solve_ex(normal + damping * identity, gradient).result)
        update = torch.linalg.matrix_exp(_skew(step[:3]))
        rotation = update @ rotation
        translation = update @ translation + step[3:]
    return rotation, translation


def ransac_pnp_torch(
    points2d,
    points3d,
    camera_params,
    *,
    max_error_px: float = 4.0,
    num_hypotheses: int = 2048,
    seed: int = 0,
    device: str | torch.device = "cpu",
    min_inliers: int = 6,
    progressive: bool = True,
    refinement_iterations: int = 10,
):
    """RANSAC PnP on the device: ``points2d`` (N, 2) undistorted pixels and ``points3d`` (N, 3) world
    points, sorted best first; ``camera_params`` (fx, fy, cx, cy). Returns numpy (camera_from_world
    rotation (3, 3), translation (3,), inlier mask (N,) bool), or None when fewer than ``min_inliers``
    agree with any pose."""
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    if len(points2d) != len(points3d):
        raise ValueError(f"{len(points2d)} 2D points but {len(points3d)} 3D points")
    if len(points2d) < max(4, min_inliers):
        return None
    device = torch.device(device)
    scoring_dtype = torch.float32 if device.type == "cuda" else torch.float64
    pixels = torch.as_tensor(points2d, device=device)
    world = torch.as_tensor(points3d, device=device)
    intrinsics = torch.as_tensor(np.asarray(camera_params, dtype=np.float64), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)

    samples = _draw_samples(len(points2d), num_hypotheses, progressive, generator, device)
    rays = torch.cat([(pixels - intrinsics[2:]) / intrinsics[:2], torch.ones_like(pixels[:, :1])], -1)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    rotations, translations, valid = p3p(rays[samples], world[samples])
    rotations, translations, valid = rotations.reshape(-1, 3, 3), translations.reshape(-1, 3), valid.reshape(-1)

    # MSAC: truncated squared error, so that among poses with as many inliers the tighter one wins.
    threshold_squared = max_error_px**2
    scoring_pixels, scoring_world = pixels.to(scoring_dtype), world.to(scoring_dtype)
    scoring_intrinsics = intrinsics.to(scoring_dtype)
    chunk = max(1, MAX_SCORED_PAIRS.get(device.type, MAX_SCORED_PAIRS["cpu"]) // len(points2d))
    costs = []
    for start in range(0, len(rotations), chunk):
        errors = _squared_errors(
            rotations[start : start + chunk].to(scoring_dtype),
            translations[start : start + chunk].to(scoring_dtype),
            scoring_pixels,
            scoring_world,
            scoring_intrinsics,
        )
        costs.append(errors.clamp(max=threshold_squared).sum(-1))
    cost = torch.where(
        valid, torch.cat(costs).to(torch.float64), torch.full_like(valid, torch.inf, dtype=torch.float64)
    )
    best = cost.argmin()
    rotation, translation = _refine(
        rotations[best], translations[best], pixels, world, intrinsics, threshold_squared, refinement_iterations
    )
    errors = _squared_errors(rotation[None], translation[None], pixels, world, intrinsics)[0]
    inliers = (errors < threshold_squared) & valid.any()

    # One transfer back to the host for the whole estimate.
    packed = torch.cat([rotation.reshape(-1), translation, inliers.to(rotation.dtype)]).cpu().numpy()
    rotation, translation, inliers = packed[:9].reshape(3, 3), packed[9:12], packed[12:] > 0.5
    if inliers.sum() < min_inliers or not (np.isfinite(rotation).all() and np.isfinite(translation).all()):
        return None
    return rotation, translation, inliers
