"""Local features: ``create_extractor({"name": "xfeat" | "aliked", ...}) -> Extractor``, and matchers."""

from .base import Extractor, Features
from .matching import create_matcher, match_mutual_nn


def create_extractor(config: dict | None = None, device: str = "cpu") -> Extractor:
    """An extractor from a plain config dict; ``name`` defaults to ``"xfeat"``, other keys override
    the extractor's ``default_config`` (unknown keys raise ``ValueError``).

    ``backend`` (see ``vloc_ros.backends``) and ``backend_options`` choose how XFeat runs; ALIKED runs
    in PyTorch and takes ``auto`` (the localizer's default) or ``torch_cpu`` only. They stay out of
    ``extractor.config``: backends agree to within precision, so a map built with one localizes with
    any other."""
    config = dict(config or {})
    backend, backend_options = config.pop("backend", None), config.pop("backend_options", None)
    name = config.get("name", "xfeat")
    if name == "xfeat":
        from .xfeat import XFeatExtractor

        return XFeatExtractor(config, device, backend, backend_options)
    if name == "aliked":
        if backend not in (None, "auto", "torch_cpu") or backend_options:
            raise ValueError(f"backend {backend!r} is for XFeat; ALIKED runs in PyTorch on the given device")
        from .aliked import AlikedExtractor

        return AlikedExtractor(config, device)
    raise ValueError(f"unknown extractor {name!r}; choose 'xfeat' or 'aliked'")


__all__ = ["Extractor", "Features", "create_extractor", "create_matcher", "match_mutual_nn"]
