"""On-disk cache of exported networks (ONNX models, TensorRT engines).

A cached file is named by what it is plus a key: a hash of everything that makes a different file
(weights, resolution, precision, tool versions, GPU). A change in any of them gives a new name, so
a stale file is never loaded; old files are simply left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..atomic import atomic_write_text


def default_cache_dir() -> Path:
    """``$VLOC_CACHE_DIR``, else ``$XDG_CACHE_HOME/vloc_ros``, else ``~/.cache/vloc_ros``."""
    if os.environ.get("VLOC_CACHE_DIR"):
        return Path(os.environ["VLOC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vloc_ros"


def cache_key(fields: dict) -> str:
    """16 hex digits identifying ``fields`` (JSON-able values); independent of key order."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_path(cache_dir: str | Path | None, stem: str, fields: dict, suffix: str) -> Path:
    """``cache_dir/{stem}-{key}{suffix}``, e.g. ``xfeat-onnx-opset18-torchscript-1a2b...onnx``."""
    return Path(cache_dir or default_cache_dir()) / f"{stem}-{cache_key(fields)}{suffix}"


def write_description(path: Path, fields: dict) -> None:
    """Record what a cached file was built from, as ``path.json``, for people inspecting the cache."""
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(fields, indent=2, sort_keys=True) + "\n")
