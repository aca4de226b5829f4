"""The map's learned components by the kind its manifest names, so that the localizer and the map
update restore each from its state without knowing which kinds exist."""

from __future__ import annotations

from .learning.global_head import NetVladDescriptor
from .learning.local_head import LearnedBinarizer
from .retrieval import VladDescriptor
from .search import Binarizer

# manifest binarizer.method -> class; the keys are map_format.BINARIZER_STATES'.
BINARIZER_TYPES = {"pca": Binarizer, "itq": Binarizer, "sign": Binarizer, "learned": LearnedBinarizer}
# manifest global_descriptor.name -> class; the keys are map_format.GLOBAL_DESCRIPTOR_STATES'.
GLOBAL_DESCRIPTOR_TYPES = {"vlad": VladDescriptor, "netvlad": NetVladDescriptor}
