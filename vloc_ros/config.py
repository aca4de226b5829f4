"""Configuration helpers shared by the map builder and the localizer."""

from __future__ import annotations


def merge_config(base: dict, override: dict | None) -> dict:
    """Recursive dict merge: ``override`` wins, nested dicts merge. A nested dict naming another
    component (a different ``name``, e.g. another matcher) replaces the default one whole, so
    options of the default never leak into it."""
    merged = dict(base)
    for key, value in (override or {}).items():
        default = merged.get(key)
        switches = (
            isinstance(value, dict)
            and "name" in value
            and isinstance(default, dict)
            and value["name"] != default.get("name")
        )
        if isinstance(default, dict) and isinstance(value, dict) and not switches:
            merged[key] = merge_config(default, value)
        else:
            merged[key] = value
    return merged
