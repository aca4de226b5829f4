"""Baseline for the local branch: a faiss binary index over one code per 3D point.

Same build/search interface as ``RandomTreesIndex``. Each point's code is the bitwise majority of
its observations' codes; the index returns the ``max_candidates`` points nearest in Hamming
distance among the cells it probes (IVF) or the graph nodes it visits (HNSW).
"""

from __future__ import annotations

import faiss
import numpy as np

from .binary import majority_codes

DEFAULT_BUILD = {"kind": "ivf", "hnsw_neighbors": 16}
DEFAULT_SEARCH = {"nprobe": 16, "ef_search": 64}


class FaissBinaryIndex:
    def __init__(self, index: faiss.IndexBinary):
        self.index = index
        self.num_bits = index.d

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.state().values())

    @classmethod
    def build(
        cls,
        codes: np.ndarray,
        labels: np.ndarray,
        kind: str = DEFAULT_BUILD["kind"],
        num_lists: int | None = None,
        hnsw_neighbors: int = DEFAULT_BUILD["hnsw_neighbors"],
        seed: int = 0,
    ) -> FaissBinaryIndex:
        """codes: (M, B/8) uint8 observation codes; labels: (M,) their point indices.

        kind "ivf": IndexBinaryIVF with ``num_lists`` cells (default ~4 sqrt(P)); "hnsw": IndexBinaryHNSW.
        """
        codes = np.asarray(codes, np.uint8)
        labels = np.asarray(labels, np.int64)
        if codes.ndim != 2 or len(codes) != len(labels) or len(codes) == 0 or labels.min() < 0:
            raise ValueError(
                f"need (M, B/8) codes and (M,) labels >= 0 with M > 0, got {codes.shape} and {labels.shape}"
            )
        point_ids = np.unique(labels)
        point_codes = np.ascontiguousarray(majority_codes(codes, labels)[point_ids])
        num_bits = codes.shape[1] * 8
        if kind == "ivf":
            num_lists = num_lists or max(1, min(int(4 * np.sqrt(len(point_ids))), len(point_ids) // 39))
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(num_bits), num_bits, num_lists)
            index.cp.seed = seed
            # A 64-point sample per cell and 10 k-means rounds train well enough, and fast.
            index.cp.max_points_per_centroid = 64
            index.cp.niter = 10
            index.train(point_codes)
            index.add_with_ids(point_codes, point_ids)
        elif kind == "hnsw":
            # HNSW numbers its nodes by insertion order; the id map returns point ids instead.
            index = faiss.IndexBinaryIDMap(faiss.IndexBinaryHNSW(num_bits, hnsw_neighbors))
            index.add_with_ids(point_codes, point_ids)
        else:
            raise ValueError(f"unknown faiss binary index kind {kind!r}; expected 'ivf' or 'hnsw'")
        return cls(index)

    def search(
        self,
        query_codes: np.ndarray,
        query_projections: np.ndarray | None = None,
        max_candidates: int = 64,
        nprobe: int = DEFAULT_SEARCH["nprobe"],
        ef_search: int = DEFAULT_SEARCH["ef_search"],
    ) -> np.ndarray:
        """(Q, max_candidates) int64 candidate point ids per query, -1 padded, as
        ``RandomTreesIndex.search``. Projections are accepted for interface parity and unused."""
        query_codes = np.ascontiguousarray(query_codes, np.uint8)
        if query_codes.ndim != 2 or query_codes.shape[1] * 8 != self.num_bits:
            raise ValueError(f"expected query codes of shape (Q, {self.num_bits // 8}), got {query_codes.shape}")
        if len(query_codes) == 0:
            return np.zeros((0, max_candidates), np.int64)
        inner = self.index
        if isinstance(inner, faiss.IndexBinaryIDMap):
            inner = faiss.downcast_IndexBinary(inner.index)
        if isinstance(inner, faiss.IndexBinaryIVF):
            inner.nprobe = nprobe
        else:
            inner.hnsw.efSearch = max(ef_search, max_candidates)
        _, ids = self.index.search(query_codes, max_candidates)
        return ids.astype(np.int64, copy=False)

    def state(self) -> dict[str, np.ndarray]:
        return {"faiss_index": faiss.serialize_index_binary(self.index)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FaissBinaryIndex:
        """The index that ``state()`` was taken from; ValueError if the bytes are not a faiss binary index."""
        try:
            index = faiss.deserialize_index_binary(np.asarray(state["faiss_index"], np.uint8))
        except RuntimeError as error:  # faiss's C++ exceptions arrive as RuntimeError
            raise ValueError(f"faiss_index is not a serialized faiss binary index ({error})") from None
        return cls(index)
