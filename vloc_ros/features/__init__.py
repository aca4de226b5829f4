"""Local features: ``create_extractor({"name": "xfeat" | "aliked", ...}) -> Extractor``, and matchers."""

from .base import Extractor, Features
from .matching import create_matcher, match_mutual_nn


def create_extractor(config: dict | None = None, device: str = "cpu") -> Extractor:
    """An extractor from a plain config dict; ``name`` defaults to ``"xfeat"``, other keys override
    the extractor's ``default_config`` (unknown keys raise ``ValueError``)."""
    config = dict(config or {})
    name = config.get("name", "xfeat")
    if name == "xfeat":
        from .xfeat import XFeatExtractor
        return XFeatExtractor(config, device)
    if name == "aliked":
        from .aliked import AlikedExtractor
        return AlikedExtractor(config, device)
    raise ValueError(f"unknown extractor {name!r}; choose 'xfeat' or 'aliked'")


__all__ = ["Extractor", "Features", "create_extractor", "create_matcher", "match_mutual_nn"]
