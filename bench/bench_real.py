"""Recall, wrong poses and latency of each localizer profile on the real image sets of ../shared/data.

    python bench/bench_real.py [--sets 7scenes 7scenes_every_frame llff_beer ngp_fox templeRing]
                               [--profiles fast accurate] [--work bench_out/real] [--max-queries N]
                               [--build JSON] [--localizer JSON]

``7scenes_every_frame`` queries every frame of 7-Scenes' 600-999 (the protocol queries every 5th):
the wrong poses a camera running at 30 Hz would get.

``--build`` and ``--localizer`` override the build and localizer configurations (e.g. ``--build
'{"extractor": {"name": "aliked"}}'`` for ALIKED maps), to measure an option beside the defaults.

Each set's map is triangulated from its ground-truth poses (``test/real_sets.py`` holds the protocols)
and cached under ``--work``, one per build configuration; a cached map that no longer loads (e.g.
after a map format change) is rebuilt. Prints one markdown table per set, a row per profile beside
hloc's numbers from ``../shared/baselines.md``, then per profile the wrong poses by name and the
rejection reasons counted. Distances are in metres on 7-Scenes and relative to the median neighbouring
map-camera distance elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from vloc_ros.localizer import Localizer
from vloc_ros.config import from_dict, to_dict
from vloc_ros.mapping.builder import BuildConfig, build_map
from vloc_ros.mapping.map_format import MapError, load_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from real_sets import REAL_SET_FOLDERS, REAL_SETS, SHARED_DATA, RealSet, SetScore, score  # noqa: E402  (the tests' protocols)

MISSING = "—"


def cached_map(real_set: RealSet, work: Path, config: BuildConfig | None = None):
    """The set's map from ``work``, built first when absent, no longer loadable or built with another
    configuration than ``config`` (default: ``BuildConfig()``)."""
    config = config or BuildConfig()
    # A map per configuration, so that measuring an option does not rebuild the default's map.
    digest = hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:8]
    map_dir = work / real_set.name / ("map" if config == BuildConfig() else f"map-{digest}")
    if map_dir.exists():
        try:
            cached = load_map(map_dir)
        except MapError as error:
            print(f"{real_set.name}: rebuilding the cached map ({str(error)[:100]})")
        else:
            if cached.manifest.build.config == to_dict(config):
                return cached
            print(f"{real_set.name}: rebuilding the cached map (built with another configuration)")
    build_map(real_set.map_frames, map_dir, config, progress=True, overwrite=True)
    return load_map(map_dir)


def bound_label(distance: float, degrees: float, unit_name: str) -> str:
    if unit_name == "m":
        return f"≤{distance * 100:g}cm,{degrees:g}°" if distance < 1 else f"≤{distance:g}m,{degrees:g}°"
    return f"≤{distance:g},{degrees:g}°"


def fmt(value, spec: str = ".2f") -> str:
    return MISSING if value is None else format(value, spec)


def profile_row(profile: str, result: SetScore) -> list[str]:
    real_set = result.real_set
    distance, degrees = result.median_error()
    share = len(result.published) / len(result.outcomes)
    return [
        profile,
        f"{share:.2f} ({len(result.published)}/{len(result.outcomes)})",
        *(f"{result.recall(*bound):.2f}" for bound in real_set.recall_bounds),
        f"{distance:.3g} {real_set.unit_name} / {degrees:.3g}°",
        str(len(result.wrong)),
        f"{result.seconds(50):.2f}",
        f"{result.seconds(95):.2f}",
    ]


def hloc_row(real_set: RealSet) -> list[str]:
    hloc = real_set.hloc
    recall = hloc.get("recall") or ()
    median = hloc.get("median")
    return [
        "hloc (baselines.md)",
        fmt(hloc.get("localized")),
        *(fmt(recall[i] if i < len(recall) else None) for i in range(len(real_set.recall_bounds))),
        f"{median[0]:.3g} {real_set.unit_name} / {median[1]:.3g}°" if median else MISSING,
        fmt(hloc.get("wrong"), "d"),
        fmt(hloc.get("s")),  # baselines.md gives one time per query, not percentiles
        MISSING,
    ]


def table(real_set: RealSet, results: dict[str, SetScore]) -> str:
    header = [
        "profile",
        "localized",
        *(bound_label(*bound, real_set.unit_name) for bound in real_set.recall_bounds),
        "median error",
        f"wrong (>{bound_label(*real_set.wrong, real_set.unit_name)[1:]})",
        "s/query p50",
        "p95",
    ]
    rows = [profile_row(profile, result) for profile, result in results.items()]
    rows += [hloc_row(real_set)] if real_set.hloc else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def reason_head(reason: str) -> str:
    """The reason's kind: its text up to the first ':' or ' (' (the details there differ per query)."""
    return reason.split(":", 1)[0].split(" (", 1)[0][:40] or "(no reason)"


def details(profile: str, result: SetScore) -> str:
    unit = result.real_set.unit_name
    wrong = ", ".join(f"{o.name} ({o.error[0]:.3g} {unit}, {o.error[1]:.2f}°)" for o in result.wrong) or "none"
    rejected = Counter(reason_head(o.reason) for o in result.outcomes if not o.published)
    reasons = ", ".join(f"{reason} ×{count}" for reason, count in rejected.most_common()) or "none"
    return f"- {profile}: wrong poses: {wrong}\n- {profile}: rejections: {reasons}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(REAL_SETS), choices=list(REAL_SETS))
    parser.add_argument("--profiles", nargs="+", default=["fast", "accurate"])
    parser.add_argument("--work", type=Path, default=Path("bench_out/real"), help="map cache")
    parser.add_argument("--max-queries", type=int, default=None, help="the first N queries of each set only")
    parser.add_argument("--build", type=json.loads, default={}, help="BuildConfig overrides (JSON)")
    parser.add_argument("--localizer", type=json.loads, default={}, help="LocalizerConfig overrides (JSON)")
    args = parser.parse_args()
    build_config = from_dict(BuildConfig, args.build)

    reports = []
    for key in args.sets:
        folder = SHARED_DATA / REAL_SET_FOLDERS[key]
        if not folder.is_dir():
            print(f"{key}: skipped, {folder} is absent")
            continue
        real_set = REAL_SETS[key]()
        if args.max_queries is not None:
            real_set = dataclasses.replace(real_set, queries=real_set.queries[: args.max_queries])
        localization_map = cached_map(real_set, args.work, build_config)
        results = {}
        for profile in args.profiles:
            localizer = Localizer(localization_map, {**args.localizer, "profile": profile})
            print(f"{real_set.name}: {profile} profile, {len(real_set.queries)} queries")
            results[profile] = score(localizer, real_set, progress=True)
        heading = f"### {real_set.name} ({len(real_set.map_frames)} map frames, {len(real_set.queries)} queries)"
        text = [heading, "", table(real_set, results), ""]
        text += [details(profile, result) for profile, result in results.items()]
        reports.append("\n".join(text))
    if reports:
        print("\n\n" + "\n\n".join(reports))


if __name__ == "__main__":
    main()
