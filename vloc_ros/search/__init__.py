"""Correspondence search: binary codes, random trees, faiss binary baseline, global retrieval and the
parallel merge (see docs/architecture.md, "Search"). Every index is plain numpy arrays via
``state()`` / ``from_state()``."""

from .binary import Binarizer
from .candidates import CandidateSearch, Correspondences
from .faiss_binary import FaissBinaryIndex
from .global_index import GlobalIndex
from .random_trees import RandomTreesIndex

__all__ = [
    "Binarizer",
    "CandidateSearch",
    "Correspondences",
    "FaissBinaryIndex",
    "GlobalIndex",
    "RandomTreesIndex",
]
