"""Correspondence search: binary codes, random trees, faiss binary baseline, global retrieval and the
parallel merge (see docs/architecture.md, "Search"). Every index is plain numpy arrays via
``state()`` / ``from_state()``."""

from .binary import Binarizer
from .candidates import CandidateSearch, Correspondences, SearchConfig, SearchMode
from .faiss_binary import FaissBinaryIndex
from .global_index import GlobalIndex
from .random_trees import RandomTreesIndex

# The local branch's index over binary codes: the paper's random trees, or faiss as a baseline. The map
# format declares the same names with each one's state (map_format.LOCAL_INDEX_STATES) to check maps by.
LOCAL_INDEX_TYPES = {"random_trees": RandomTreesIndex, "faiss_binary": FaissBinaryIndex}

__all__ = [
    "LOCAL_INDEX_TYPES",
    "Binarizer",
    "CandidateSearch",
    "Correspondences",
    "FaissBinaryIndex",
    "GlobalIndex",
    "RandomTreesIndex",
    "SearchConfig",
    "SearchMode",
]
