"""Binary codes for real-valued local descriptors.

A code is the sign of a linear projection of the centred descriptor:
``bits = (descriptor - mean) @ rotation > 0``. The rotation is
- ``"sign"``: the identity (raw descriptor signs; ``num_bits`` must equal the descriptor size),
- ``"pca"``: the top ``num_bits`` principal directions,
- ``"itq"``: the PCA directions followed by the Iterative Quantization rotation of Gong & Lazebnik
  (CVPR 2011), which spreads the variance over the bits so that the signs lose less of it.

Codes are packed with ``np.packbits(bits, axis=1)`` (big-endian bit order): bit ``j`` is in byte
``j // 8`` at bit position ``7 - j % 8``, i.e. ``(code[:, j // 8] >> (7 - j % 8)) & 1``.
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("sign", "pca", "itq")
ITQ_ITERATIONS = 50
MAX_FIT_SAMPLES = 25_000  # a 64x64 rotation is well determined by far fewer; keeps ITQ at ~seconds


class Binarizer:
    def __init__(self, mean: np.ndarray, rotation: np.ndarray, method: str):
        self.mean = np.asarray(mean, dtype=np.float32)  # (D,)
        self.rotation = np.asarray(rotation, dtype=np.float32)  # (D, num_bits)
        self.method = method
        self._tensors: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def descriptor_dim(self) -> int:
        return self.rotation.shape[0]

    @property
    def num_bits(self) -> int:
        return self.rotation.shape[1]

    @classmethod
    def fit(cls, descriptors: np.ndarray, num_bits: int, method: str = "pca", seed: int = 0) -> Binarizer:
        """Fit on (N, D) descriptors (a random subset of at most MAX_FIT_SAMPLES is used).

        The default is PCA because it gives the random trees the best recall (bench/bench_search.py:
        0.73 vs 0.65 for ITQ and 0.64 for raw signs at 100k points) and shallower trees: its bits
        differ in reliability and the trees pick the reliable ones. ITQ (or raw signs) keeps
        Hamming nearest neighbours best and suits exhaustive Hamming search such as the faiss baseline.
        """
        descriptors = np.asarray(descriptors, dtype=np.float32)
        dim = descriptors.shape[1]
        if method not in METHODS:
            raise ValueError(f"unknown binarization method {method!r}; expected one of {METHODS}")
        if num_bits % 8 or not 0 < num_bits <= dim:
            raise ValueError(f"num_bits must be a positive multiple of 8 and <= {dim}, got {num_bits}")
        if method == "sign" and num_bits != dim:
            raise ValueError(f"method 'sign' needs num_bits == descriptor size ({dim}), got {num_bits}")
        rng = np.random.default_rng(seed)
        if len(descriptors) > MAX_FIT_SAMPLES:
            descriptors = descriptors[rng.choice(len(descriptors), MAX_FIT_SAMPLES, replace=False)]
        mean = descriptors.mean(axis=0)
        if method == "sign":
            return cls(mean, np.eye(dim, dtype=np.float32), method)

        centred = (descriptors - mean).astype(np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
        pca = eigenvectors[:, np.argsort(eigenvalues)[::-1][:num_bits]]
        if method == "pca":
            return cls(mean, pca, method)
        return cls(mean, pca @ _itq_rotation((centred @ pca).astype(np.float32), rng), method)

    def project(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, num_bits) float32 values whose signs are the bits; |value| is the bit's certainty."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"expected descriptors of shape (N, {self.descriptor_dim}), got {descriptors.shape}")
        return (descriptors - self.mean) @ self.rotation

    def project_torch(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``project`` in torch, on the tensor's device (float32): the GPU search's projection."""
        device = descriptors.device
        if device not in self._tensors:  # uploaded once per device
            self._tensors[device] = (torch.from_numpy(self.mean).to(device), torch.from_numpy(self.rotation).to(device))
        mean, rotation = self._tensors[device]
        return (descriptors.float() - mean) @ rotation

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, num_bits / 8) uint8 packed codes, big-endian bit order."""
        return pack_bits(self.project(descriptors) > 0)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "rotation": self.rotation, "method": np.array(self.method)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Binarizer:
        return cls(state["mean"], state["rotation"], str(state["method"]))


def _itq_rotation(projected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal R minimising ||sign(V R) - V R||_F (alternating: fix B, solve Procrustes for R)."""
    num_bits = projected.shape[1]
    rotation = np.linalg.qr(rng.standard_normal((num_bits, num_bits)))[0].astype(np.float32)
    for _ in range(ITQ_ITERATIONS):
        bits_t = np.where(rotation.T @ projected.T > 0, np.float32(1), np.float32(-1))
        u, _, vt = np.linalg.svd(bits_t @ projected)
        rotation = (u @ vt).T
    return rotation


def pack_bits(bits: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(bits, dtype=bool), axis=1, bitorder="big")


def unpack_bits(codes: np.ndarray) -> np.ndarray:
    """(N, B/8) uint8 -> (N, B) bool."""
    return np.unpackbits(codes, axis=1, bitorder="big").astype(bool)


def majority_codes(codes: np.ndarray, labels: np.ndarray, num_points: int | None = None) -> np.ndarray:
    """One code per point: each bit is the majority over the point's observations (ties -> 1).

    codes: (M, B/8) packed observation codes; labels: (M,) point indices. Returns (P, B/8) uint8;
    a point without observations gets the all-zero code.
    """
    labels = np.asarray(labels, np.int64)
    num_points = int(labels.max()) + 1 if num_points is None else num_points
    observations = np.bincount(labels, minlength=num_points)
    bits = unpack_bits(codes)
    votes = np.stack(
        [np.bincount(labels, weights=bits[:, j], minlength=num_points) for j in range(bits.shape[1])], axis=1
    )
    return pack_bits(2 * votes >= np.maximum(observations, 1)[:, None])
