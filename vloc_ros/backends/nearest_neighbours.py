"""Exact k-nearest-neighbour search of float descriptors on the GPU, for the 2D-3D matching.

faiss's GPU flat index where a faiss build with GPU support is installed; otherwise a torch matrix
product in fp16 with a chunked top-k. Either way the database is uploaded once and stays on the GPU;
the random trees of the binary search stay on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from .cuda_backend import check_precision


def faiss_has_gpu() -> bool:
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def torch_top_k(queries: torch.Tensor, database: torch.Tensor, half_squared_norms: torch.Tensor, k: int,
                chunk_size: int) -> torch.Tensor:
    """Indices (Q, k) of the k database rows nearest to each query, by L2.

    The nearest rows maximise q.d - |d|^2 / 2; the database is scored ``chunk_size`` rows at a time
    so that the (Q, chunk) score matrix stays small, keeping a running top-k."""
    best_scores = best_indices = None
    for start in range(0, len(database), chunk_size):
        scores = queries @ database[start:start + chunk_size].T - half_squared_norms[start:start + chunk_size]
        scores, indices = scores.topk(min(k, scores.shape[1]), dim=1)
        indices += start
        if best_scores is not None:
            scores, order = torch.cat([best_scores, scores], 1).topk(k, dim=1)
            indices = torch.cat([best_indices, indices], 1).gather(1, order)
        best_scores, best_indices = scores, indices
    return best_indices


class GpuNearestNeighbours:
    """``GpuNearestNeighbours(database).search(queries, k) -> (distances, indices)``.

    ``distances`` (Q, k) float32 L2 ascending, ``indices`` (Q, k) int64 rows of ``database``.
    The torch path ranks in ``precision`` and recomputes the distances of the chosen rows in fp32, so
    only near-ties (within fp16 rounding) can come out in another order than an exact fp32 search.
    ``device="cpu"`` with ``precision="fp32"`` runs the same torch code without a GPU (tests).
    """

    def __init__(self, database, precision: str = "fp16", device: str = "cuda", use_faiss: bool | None = None,
                 chunk_size: int = 1 << 15):
        database = np.ascontiguousarray(database, dtype=np.float32)
        if database.ndim != 2 or len(database) == 0:
            raise ValueError(f"database must be a non-empty (N, D) array, got shape {database.shape}")
        self.size, self.dim = database.shape
        self.device, self.chunk_size = torch.device(device), chunk_size
        self.dtype = check_precision(precision)
        self.use_faiss = faiss_has_gpu() if use_faiss is None else use_faiss
        if self.use_faiss:
            import faiss

            self.faiss_resources = faiss.StandardGpuResources()  # must outlive the index
            config = faiss.GpuIndexFlatConfig()
            config.useFloat16 = precision == "fp16"
            self.faiss_index = faiss.GpuIndexFlatL2(self.faiss_resources, self.dim, config)
            self.faiss_index.add(database)
        else:
            self.database = torch.from_numpy(database).to(self.device)
            self.database_ranked = self.database.to(self.dtype)
            self.half_squared_norms = (0.5 * self.database.square().sum(1)).to(self.dtype)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got shape {queries.shape}")
        if not 0 < k <= self.size:
            raise ValueError(f"k must be in 1..{self.size} (the database size), got {k}")
        if self.use_faiss:
            squared, indices = self.faiss_index.search(queries, k)
            return np.sqrt(np.maximum(squared, 0)).astype(np.float32), indices.astype(np.int64)
        with torch.inference_mode():
            query_tensor = torch.from_numpy(queries).to(self.device)
            indices = torch_top_k(query_tensor.to(self.dtype), self.database_ranked, self.half_squared_norms, k,
                                  self.chunk_size)
            distances = (query_tensor[:, None, :] - self.database[indices]).norm(dim=2)
            distances, order = distances.sort(dim=1)
            return distances.cpu().numpy(), indices.gather(1, order).cpu().numpy()


def gpu_nearest_neighbours(queries, database, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One-off search: (Q, D) queries, (N, D) database -> (distances (Q, k), indices (Q, k)) on the GPU.
    Searching the same database repeatedly: keep a ``GpuNearestNeighbours`` (it uploads once)."""
    return GpuNearestNeighbours(database).search(queries, k)
