"""Global image descriptors for keyframe retrieval.

``VladDescriptor`` is training-free: its vocabulary is learned by k-means on the map's own local
descriptors at map-build time, then every image is summarised by VLAD (Jegou et al. 2010) with
intra-normalisation (Arandjelovic & Zisserman 2013), signed square-root and L2 normalisation, so
that the dot product of two descriptors is their similarity.

Anything with the ``GlobalDescriptor`` interface can replace it (e.g. a learned descriptor).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class GlobalDescriptor(Protocol):
    name: str
    dim: int

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        """Local descriptors (N, D) of one image -> (dim,) float32, L2-normalised (all zeros for N = 0)."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to store in the map; ``from_state`` rebuilds an identical descriptor."""

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "GlobalDescriptor":
        """The descriptor that ``state()`` was taken from."""


class VocabularyDescriptor:
    """A global descriptor aggregating local descriptors over a vocabulary of ``centroids`` (V, D):
    one residual block of D per visual word."""

    centroids: np.ndarray

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.size

    @torch.inference_mode()
    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        """Local descriptors (N, D) of one image -> (dim,) float32, L2-normalised (all zeros for N = 0)."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"descriptors must be (N, {self.centroids.shape[1]}), got shape {descriptors.shape}")
        if len(descriptors) == 0:
            return np.zeros(self.dim, np.float32)
        # torch rather than numpy: its thread count is the one the pipeline sets; numpy's OpenBLAS pool
        # runs 10-100x slower when the cores are shared.
        return self._aggregate(torch.from_numpy(np.ascontiguousarray(descriptors))).numpy()

    def _aggregate(self, local: torch.Tensor) -> torch.Tensor:
        """(N, D) local descriptors, N > 0 -> the (dim,) descriptor."""
        raise NotImplementedError


class VladDescriptor(VocabularyDescriptor):
    name = "vlad"

    def __init__(self, centroids: np.ndarray):
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be (K, D) with K > 0, got shape {centroids.shape}")
        self.centroids = np.ascontiguousarray(centroids)
        self._centroid_sq_norms = torch.from_numpy(np.square(self.centroids).sum(axis=1))

    @classmethod
    def fit(
        cls,
        descriptors: np.ndarray,
        num_clusters: int = 64,
        seed: int = 0,
        max_samples: int = 100_000,
        num_iterations: int = 25,
    ) -> "VladDescriptor":
        """Learn the vocabulary with k-means on (a seeded random subset of at most ``max_samples``
        of) ``descriptors``; the same inputs and seed give the same vocabulary."""
        import faiss

        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or len(descriptors) < num_clusters:
            raise ValueError(
                f"need at least num_clusters={num_clusters} descriptors (N, D), got shape {descriptors.shape}"
            )
        if len(descriptors) > max_samples:
            rng = np.random.default_rng(seed)
            descriptors = descriptors[np.sort(rng.choice(len(descriptors), max_samples, replace=False))]
        kmeans = faiss.Kmeans(
            descriptors.shape[1],
            num_clusters,
            niter=num_iterations,
            seed=seed,
            max_points_per_centroid=len(descriptors),  # we subsampled already
            verbose=False,
        )
        kmeans.train(np.ascontiguousarray(descriptors))
        return cls(kmeans.centroids)

    def _aggregate(self, local: torch.Tensor) -> torch.Tensor:
        centroids = torch.from_numpy(self.centroids)
        clusters = torch.argmin(self._centroid_sq_norms[None, :] - 2.0 * local @ centroids.T, dim=1)
        # Sum of residuals per cluster: sum(x) - count * centroid.
        counts = torch.bincount(clusters, minlength=self.num_clusters).to(local.dtype)
        vlad = torch.zeros_like(centroids).index_add_(0, clusters, local) - counts[:, None] * centroids
        # Intra-normalisation: each visual word votes equally, so bursty repeated textures cannot dominate.
        vlad = F.normalize(vlad, dim=1).flatten()  # empty clusters stay zero
        vlad = torch.sign(vlad) * torch.sqrt(torch.abs(vlad))
        return F.normalize(vlad, dim=0)

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids.copy()}

    @classmethod
    def from_state(cls, state: dict) -> "VladDescriptor":
        return cls(state["centroids"])
