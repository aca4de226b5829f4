"""Ablation of the learned descriptors: today's training-free PCA codes + VLAD against each learned part.

    python bench/bench_learning.py [--parts codes retrieval localization] [--sets 7scenes llff_beer ...]
                                   [--work bench_out/learning] [--max-queries N]

Three tables, one per part (each also runs alone as its own script):
- ``codes`` (bench_local_codes.py): recall of the true map point among the local branch's candidates
  and the branch's time at 10k / 100k / 1M points, PCA codes vs learned codes;
- ``retrieval`` (bench_retrieval.py): Recall@1/5 of keyframe retrieval, VLAD vs NetVLAD trained with
  SARE or the triplet loss, discriminative-region re-ranking off and on;
- ``localization``: end to end on the real sets of ``test/real_sets.py`` and on the demo's synthetic
  world (``make demo`` writes ``demo_out/world``), fast profile, one map per variant built from the
  same frames (``bench_real.cached_map``): localized share, recall, median error, wrong poses, latency,
  the build's learning time and the map's size;
- ``scale``: end to end on 7-Scenes with the map grown to 100k and 1M points by distractor points
  (``with_distractors``: real XFeat descriptors of unrelated images, bench_local_codes.distractors),
  PCA codes vs learned codes: what the local branch's codes are for, maps of a building.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from vloc_ros.components import BINARIZER_TYPES
from vloc_ros.config import from_dict
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.builder import BuildConfig, BuildError
from vloc_ros.mapping.map_format import LocalizationMap
from vloc_ros.search.random_trees import RandomTreesIndex
from vloc_ros.mapping.sources import image_folder_frames, load_intrinsics, read_image_rgb
from vloc_ros.tum import read_tum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from bench_real import bound_label, cached_map  # noqa: E402
from real_sets import REAL_SET_FOLDERS, REAL_SETS, SHARED_DATA, Query, RealSet, score  # noqa: E402

SIM_WORLD = Path("demo_out/world")
LEARNED_CODES = {"binarizer": {"method": "learned"}}
LEARNED_GLOBAL = {"global_descriptor": {"name": "netvlad"}}
RERANK = {"search": {"rerank_shortlist": 12}}
# variant -> (BuildConfig overrides, LocalizerConfig overrides)
VARIANTS = {
    "PCA codes + VLAD (training-free)": ({}, {}),
    "learned codes": (LEARNED_CODES, {}),
    "NetVLAD (SARE)": (LEARNED_GLOBAL, {}),
    "re-ranking": ({}, RERANK),
    "learned codes + re-ranking": (LEARNED_CODES, RERANK),
    "all three": ({**LEARNED_CODES, **LEARNED_GLOBAL}, RERANK),
}


def sim_set(world: Path = SIM_WORLD) -> RealSet:
    """The synthetic world ``vloc sim`` writes: map = its mapping images, queries = its query images."""
    camera = load_intrinsics(world / "camera.yaml")
    frames = image_folder_frames(world / "images" / "map", world / "camera.yaml", world / "map_poses.tum")
    _, truths = read_tum(world / "query_poses.tum")
    paths = sorted((world / "images" / "query").iterdir())
    queries = [Query(p.name, camera, truth, lambda p=p: read_image_rgb(p)) for p, truth in zip(paths, truths)]
    return RealSet("sim", frames, queries, 1.0, "m", ((0.05, 1.0), (0.1, 5.0), (0.25, 5.0)), (0.25, 5.0))


def evaluation_sets(keys: list[str], max_queries: int | None) -> list[RealSet]:
    sets = []
    for key in keys:
        if key == "sim":
            if not (SIM_WORLD / "camera.yaml").is_file():
                print(f"sim: skipped, {SIM_WORLD} is absent (run `make demo` first)")
                continue
            real_set = sim_set()
        else:
            folder = SHARED_DATA / REAL_SET_FOLDERS[key]
            if not folder.is_dir():
                print(f"{key}: skipped, {folder} is absent")
                continue
            real_set = REAL_SETS[key]()
        if max_queries is not None:
            real_set = dataclasses.replace(real_set, queries=real_set.queries[:max_queries])
        sets.append(real_set)
    return sets


def map_megabytes(map_dir: Path) -> float:
    return sum(path.stat().st_size for path in map_dir.rglob("*") if path.is_file()) / 2**20


def localization_rows(real_set: RealSet, work: Path) -> list[list[str]]:
    rows = []
    for variant, (build, localizer_overrides) in VARIANTS.items():
        try:
            localization_map = cached_map(real_set, work, from_dict(BuildConfig, build))
        except BuildError as error:  # e.g. too few images to learn places from
            rows.append([variant, f"not built: {error}"] + [""] * (len(real_set.recall_bounds) + 5))
            continue
        localizer = Localizer(localization_map, {**localizer_overrides, "profile": "fast"})
        result = score(localizer, real_set, progress=True)
        distance, degrees = result.median_error()
        learning = localization_map.manifest.build.stage_seconds.get("learning", 0.0)
        rows.append([
            variant,
            f"{len(result.published)}/{len(result.outcomes)}",
            *(f"{result.recall(*bound):.3f}" for bound in real_set.recall_bounds),
            f"{distance:.3g} {real_set.unit_name} / {degrees:.3g}°",
            str(len(result.wrong)),
            f"{result.seconds(50) * 1e3:.0f}",
            f"{learning:.0f}",
            f"{map_megabytes(localization_map.path):.1f}",
        ])  # fmt: skip
    return rows


def with_distractors(localization_map: LocalizationMap, descriptors: np.ndarray, seed: int = 0) -> LocalizationMap:
    """``localization_map`` plus a point per row of ``descriptors``, at random places within the map's
    bounding box and seen by no keyframe: only the local branch finds them, and a match to one is a
    plausible outlier, as a far part of a large map would give. The codes are the map's binarizer's;
    the random trees are rebuilt over the map's observations and the distractors."""
    arrays, manifest = dict(localization_map.arrays), localization_map.manifest
    binarizer = BINARIZER_TYPES[manifest.binarizer.method].from_state(localization_map.states["binarizer"])
    rng = np.random.default_rng(seed)
    low, high = arrays["points_xyz"].min(axis=0), arrays["points_xyz"].max(axis=0)
    count, first = len(descriptors), localization_map.num_points
    arrays["points_xyz"] = np.concatenate([arrays["points_xyz"], rng.uniform(low, high, (count, 3))])
    arrays["point_descriptors"] = np.concatenate([arrays["point_descriptors"], descriptors.astype(np.float16)])
    arrays["point_codes"] = np.concatenate([arrays["point_codes"], binarizer.encode(descriptors)])
    offsets = arrays["point_keyframes_offsets"]
    arrays["point_keyframes_offsets"] = np.concatenate([offsets, np.full(count, offsets[-1])])
    observations = arrays["observation_descriptors"].astype(np.float32)
    index_options = {k: v for k, v in manifest.local_index.items() if k != "type"}
    trees = RandomTreesIndex.build(
        np.concatenate([binarizer.encode(observations), binarizer.encode(descriptors)]),
        np.concatenate([arrays["observation_points"], np.arange(first, first + count)]),
        **index_options,
    )
    states = {**localization_map.states, "local_index": trees.state()}
    counts = dataclasses.replace(manifest.counts, points=first + count)
    return LocalizationMap(dataclasses.replace(manifest, counts=counts), localization_map.keyframes, arrays, states)


def scale_rows(real_set: RealSet, work: Path, sizes: list[int]) -> list[list[str]]:
    import bench_local_codes

    rows = []
    for variant, build in (("PCA codes", {}), ("learned codes", LEARNED_CODES)):
        base = cached_map(real_set, work, from_dict(BuildConfig, build))
        for size in sizes:
            grown = with_distractors(base, bench_local_codes.distractors(size - base.num_points))
            result = score(Localizer(grown, {"profile": "fast"}), real_set, progress=True)
            distance, degrees = result.median_error()
            rows.append([
                variant,
                f"{grown.num_points:,}",
                f"{len(result.published)}/{len(result.outcomes)}",
                *(f"{result.recall(*bound):.3f}" for bound in real_set.recall_bounds),
                f"{distance:.3g} {real_set.unit_name} / {degrees:.3g}°",
                str(len(result.wrong)),
                f"{result.seconds(50) * 1e3:.0f}",
                f"{result.seconds(95) * 1e3:.0f}",
            ])  # fmt: skip
    return rows


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["codes", "retrieval", "localization", "scale"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="map points, scale part")
    parser.add_argument("--sets", nargs="+", default=["7scenes", "llff_beer", "ngp_fox", "templeRing", "sim"])
    parser.add_argument("--work", type=Path, default=Path("bench_out/learning"), help="map and feature cache")
    parser.add_argument("--max-queries", type=int, default=None, help="the first N queries of each set only")
    args = parser.parse_args()

    if "codes" in args.parts:
        import bench_local_codes

        bench_local_codes.main([])
    if "retrieval" in args.parts:
        import bench_retrieval

        bench_retrieval.main([])
    if "localization" in args.parts:
        for real_set in evaluation_sets(args.sets, args.max_queries):
            header = [
                "variant",
                "localized",
                *(bound_label(*bound, real_set.unit_name) for bound in real_set.recall_bounds),
                "median error",
                f"wrong (>{bound_label(*real_set.wrong, real_set.unit_name)[1:]})",
                "ms p50",
                "learning s",
                "map MB",
            ]
            title = f"{real_set.name}: {len(real_set.map_frames)} map frames, {len(real_set.queries)} queries, fast"
            print_table(title, header, localization_rows(real_set, args.work / "maps"))
    if "scale" in args.parts:
        for real_set in evaluation_sets(["7scenes"], args.max_queries):
            header = [
                "codes",
                "map points",
                "localized",
                *(bound_label(*bound, real_set.unit_name) for bound in real_set.recall_bounds),
                "median error",
                f"wrong (>{bound_label(*real_set.wrong, real_set.unit_name)[1:]})",
                "ms p50",
                "ms p95",
            ]
            title = f"{real_set.name} with distractor points, {len(real_set.queries)} queries, fast"
            print_table(title, header, scale_rows(real_set, args.work / "maps", args.sizes))


if __name__ == "__main__":
    main()
