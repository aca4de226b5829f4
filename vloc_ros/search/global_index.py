"""Global branch retrieval: the map keyframes nearest to the query's global descriptor."""

from __future__ import annotations

import faiss
import numpy as np


class GlobalIndex:
    """Exact inner-product search (faiss IndexFlatIP) over L2-normalised keyframe descriptors."""

    def __init__(self, keyframe_descriptors: np.ndarray):
        descriptors = np.ascontiguousarray(keyframe_descriptors, np.float32)
        if descriptors.ndim != 2 or len(descriptors) == 0:
            raise ValueError(f"expected (K, G) keyframe descriptors with K > 0, got shape {descriptors.shape}")
        self.keyframe_descriptors = descriptors
        self.index = faiss.IndexFlatIP(descriptors.shape[1])
        self.index.add(descriptors)

    @property
    def dim(self) -> int:
        return self.keyframe_descriptors.shape[1]

    @property
    def nbytes(self) -> int:
        return self.keyframe_descriptors.nbytes

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (k',) int64, scores (k',) float32), best first; k' = min(k, K)."""
        query = np.asarray(query, np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise ValueError(f"expected a global descriptor of size {self.dim}, got {query.shape[1]}")
        scores, ids = self.index.search(query, min(k, self.index.ntotal))
        return ids[0], scores[0]

    def state(self) -> dict[str, np.ndarray]:
        return {"keyframe_descriptors": self.keyframe_descriptors}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> GlobalIndex:
        return cls(state["keyframe_descriptors"])
