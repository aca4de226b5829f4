"""Typed configuration: each stage owns a frozen dataclass of its options, read from plain dicts.

``from_dict(SomeConfig, {...})`` starts from the dataclass's defaults, rejects a key that is not a
field (naming the valid ones, so a typo fails loudly instead of being ignored), reads nested
dataclass fields from nested dicts, converts strings to Enum fields, and merges dict-valued fields
(component options such as the extractor's) with ``merge_config``. ``to_dict`` gives the plain
JSON-friendly dict back, for logs and the map manifest.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Mapping, TypeVar

Config = TypeVar("Config")


def merge_config(base: dict, override: Mapping | None) -> dict:
    """Recursive dict merge: ``override`` wins, nested dicts merge. A nested dict naming another
    component (a different ``name``, e.g. another matcher) replaces the default one whole, so
    options of the default never leak into it."""
    merged = dict(base)
    for key, value in (override or {}).items():
        default = merged.get(key)
        switches = (
            isinstance(value, Mapping)
            and "name" in value
            and isinstance(default, dict)
            and value["name"] != default.get("name")
        )
        if isinstance(default, dict) and isinstance(value, Mapping) and not switches:
            merged[key] = merge_config(default, value)
        else:
            merged[key] = value
    return merged


def from_dict(cls: type[Config], data: Mapping | Config | None = None) -> Config:
    """``cls``'s defaults overridden by ``data`` (a dict, or already a ``cls``); ValueError names an
    unknown key or an Enum value that is not allowed."""
    if isinstance(data, cls):
        return data
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} must be given as a mapping, got {type(data).__name__}")
    defaults = cls()
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(data or {}) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid: {valid}")
    values = {key: _typed_value(cls, key, getattr(defaults, key), value) for key, value in (data or {}).items()}
    return dataclasses.replace(defaults, **values)


def _typed_value(cls: type, key: str, default: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(default):
        return from_dict(type(default), value)
    if isinstance(default, Enum):
        try:
            return type(default)(value)
        except ValueError:
            allowed = [member.value for member in type(default)]
            raise ValueError(f"{cls.__name__}.{key} must be one of {allowed}, got {value!r}") from None
    if isinstance(default, dict) and isinstance(value, Mapping):
        return merge_config({key: default}, {key: value})[key]  # under its key: naming another component replaces
    if isinstance(default, tuple) and isinstance(value, list):  # a YAML or JSON list
        return tuple(value)
    return value


def to_dict(config) -> dict:
    """The plain dict of a config dataclass (nested ones as dicts, Enums as their values)."""
    return dataclasses.asdict(
        config,
        dict_factory=lambda items: {key: value.value if isinstance(value, Enum) else value for key, value in items},
    )


def nested_dict(values_by_path: Mapping[str, Any]) -> dict:
    """``{"pose.ransac_max_error_px": 4.0}`` -> ``{"pose": {"ransac_max_error_px": 4.0}}``: flat
    settings (node parameters) as the nested dict ``from_dict`` reads."""
    nested: dict = {}
    for path, value in values_by_path.items():
        *parents, key = path.split(".")
        section = nested
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    return nested
