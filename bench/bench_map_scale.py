"""Benchmark of maps of millions of points: size on disk, index build, loading, memory and search latency.

    python bench/bench_map_scale.py [--sizes 10000 1000000 10000000] [--workdir DIR [--keep]]
                                    [--queries 1024] [--repeats 20]

Per size, a synthetic map (``vloc_ros.mapping.synthetic``: synthetic descriptors, 3-4 observations
per point, a keyframe per 400 new points) is written with ``save_map`` under ``--workdir`` (default:
a temp dir under bench_out/), then:
1. the map: points, observations, keyframes, size on disk (all, and the observations' share),
   generation, random-trees build and ``save_map`` seconds;
2. loading, each in a fresh process: ``load_map`` seconds with checksums on/off and mmap on/off,
   from a cold page cache (this map's pages dropped with posix_fadvise) and a warm one, then the
   memory after the load and after building the localizer's search (``localizer.map_search``):
   RSS, anonymous (the process's own memory) and file-backed (page cache pages it maps, shared
   and reclaimable), from /proc/self/smaps_rollup, above a process that imported everything;
3. the whole ``CandidateSearch`` (global + local branch, merge; 2 threads) p50/p95 for
   ``--queries`` keypoints with bench_search.py's query protocol (``synthetic.make_query``, seed
   100 + repeat, repeat 0 the warm-up), the sizes taking turns frame by frame; and the target
   1M p50 <= 2x 10k p50.

Maps are deleted at the end unless ``--keep``; with ``--keep`` a later run with the same
``--workdir`` reuses them (their build times come from the JSON beside each map).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_search import SEARCH_CONFIG, found_fraction, print_table, timed  # also pins BLAS/OpenMP threads

import numpy as np  # noqa: E402 (after bench_search pinned the thread counts)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vloc_ros.localizer import map_search  # noqa: E402
from vloc_ros.mapping.map_format import load_map  # noqa: E402
from vloc_ros.mapping.synthetic import query_source, write_synthetic_map  # noqa: E402
from vloc_ros.search import synthetic  # noqa: E402

MB = 1e6
LOAD_CASES = [(True, True), (False, True), (True, False), (False, False)]  # (mmap, checksums)


def memory() -> dict[str, float]:
    """This process's memory, MB: rss, anon (its own pages) and file (mapped page-cache pages)."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024 / MB
    return {"rss": fields["Rss"], "anon": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


def map_files(map_dir: Path) -> list[Path]:
    return [path for path in sorted(map_dir.rglob("*")) if path.is_file()]


def drop_from_page_cache(map_dir: Path) -> None:
    """Evict the map's (clean) pages from the page cache: a cold load without dropping everyone's cache."""
    for path in map_files(map_dir):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def read_into_page_cache(map_dir: Path) -> None:
    for path in map_files(map_dir):
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def load_child(map_dir: Path, mmap: bool, checksums: bool, cold: bool) -> None:
    """One load in this (fresh) process; prints its measurements as JSON."""
    (drop_from_page_cache if cold else read_into_page_cache)(map_dir)
    before = memory()
    localization_map, load_seconds = timed(load_map, map_dir, verify_checksums=checksums, mmap=mmap)
    loaded = memory()
    search, search_seconds = timed(map_search, localization_map, SEARCH_CONFIG)
    searching = memory()
    search.close()
    result = {"load s": load_seconds, "search s": search_seconds}
    for label, values in (("load", loaded), ("search", searching)):
        result.update({f"{label} {key}": values[key] - before[key] for key in values})
    result["base rss"] = before["rss"]
    print(json.dumps(result))


def prepare_map(workdir: Path, num_points: int) -> dict:
    """The map of ``num_points`` in ``workdir`` (written unless a kept one is there) and its build info."""
    map_dir, info_path = workdir / f"map_{num_points}", workdir / f"map_{num_points}.json"
    if not (info_path.is_file() and (map_dir / "manifest.json").is_file()):
        shutil.rmtree(map_dir, ignore_errors=True)
        print(f"writing the {num_points}-point map", flush=True)
        info = write_synthetic_map(map_dir, num_points, centres_path=workdir / f"map_{num_points}.centres.npy")
        info_path.write_text(json.dumps({**dataclasses.asdict(info), "path": str(info.path)}, indent=1))
    info = json.loads(info_path.read_text())
    files = map_files(map_dir)
    observations = [path for path in files if path.name.startswith("observation_")]
    info["disk MB"] = sum(path.stat().st_size for path in files) / MB
    info["observations MB"] = sum(path.stat().st_size for path in observations) / MB
    return info


def measure_loads(info: dict) -> list[list]:
    rows = []
    for mmap, checksums in LOAD_CASES:
        for cold in (True, False):
            command = [sys.executable, __file__, "--load-child", info["path"], str(int(mmap)), str(int(checksums)),
                       str(int(cold))]  # fmt: skip
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            rows.append(
                [info["num_points"], "on" if mmap else "off", "on" if checksums else "off", "cold" if cold else "warm"]
                + [result[key] for key in ("load s", "load rss", "load anon", "load file", "search s",
                                           "search rss", "search anon", "search file", "base rss")]
            )  # fmt: skip
            print(f"  loaded {info['num_points']} mmap={mmap} checksums={checksums} cold={cold}", flush=True)
    return rows


def measure_latency(infos: list[dict], workdir: Path, num_queries: int, repeats: int) -> dict[int, dict]:
    """Each map loaded as the localizer loads it (mmap), searched frame by frame in turns."""
    runs = {}
    for info in infos:
        localization_map = load_map(info["path"])
        source = query_source(
            localization_map, info["config"], info["seed"], workdir / f"map_{info['num_points']}.centres.npy"
        )
        runs[info["num_points"]] = {"search": map_search(localization_map, SEARCH_CONFIG), "source": source,
                                    "total": [], "global": [], "local": [], "merge": [], "precision": [],
                                    "found": []}  # fmt: skip
    for repeat in range(repeats + 1):
        for run in runs.values():
            queries = synthetic.make_query(run["source"], num_queries, seed=100 + repeat)
            result = run["search"].search(queries.descriptors, queries.global_descriptor)
            if repeat == 0:
                continue
            run["total"].append(result.timings["search"])
            for stage in ("global", "local", "merge"):
                run[stage].append(result.timings[stage])
            correct = result.point_ids == queries.true_point_ids[result.query_indices]
            run["precision"].append(float(correct.mean()))
            found = np.full((len(queries.descriptors), 1), -1)
            found[result.query_indices[correct], 0] = result.point_ids[correct]
            run["found"].append(found_fraction(found, queries.true_point_ids))
    for run in runs.values():
        run["search"].close()
    return runs


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--load-child":
        load_child(Path(sys.argv[2]), *(bool(int(flag)) for flag in sys.argv[3:]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, help="where the maps go (default: a temp dir under bench_out/)")
    parser.add_argument("--keep", action="store_true", help="keep the maps (reused by a later run)")
    parser.add_argument("--queries", type=int, default=1024, help="query keypoints (the localizer default)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-loads", action="store_true", help="only build and search")
    args = parser.parse_args()
    if args.workdir is None:
        (ROOT / "bench_out").mkdir(exist_ok=True)
        args.workdir = Path(tempfile.mkdtemp(prefix="map_scale_", dir=ROOT / "bench_out"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}, maps in {args.workdir}")
    print(shutil.disk_usage(args.workdir))
    try:
        infos = [prepare_map(args.workdir, num_points) for num_points in sorted(args.sizes)]
        print_table(
            "maps (synthetic, save_map)",
            ["points", "observations", "keyframes", "disk MB", "observations MB", "generate s", "trees build s",
             "save_map s"],
            [[i["num_points"], i["num_observations"], i["num_keyframes"], i["disk MB"], i["observations MB"],
              i["generate_seconds"], i["trees_seconds"], i["save_seconds"]] for i in infos],
        )  # fmt: skip
        if not args.skip_loads:
            rows = [row for info in infos for row in measure_loads(info)]
            print_table(
                "load_map then localizer.map_search, each in a fresh process; memory MB above the imports "
                "(rss: all, anon: the process's own, file: mapped page cache)",
                ["points", "mmap", "checksums", "cache", "load s", "rss", "anon", "file", "search s",
                 "+search rss", "anon", "file", "base rss"],
                rows,
            )  # fmt: skip
        runs = measure_latency(infos, args.workdir, args.queries, args.repeats)
        rows = []
        for points, run in runs.items():
            for stage in ("total", "global", "local", "merge"):
                p50, p95 = 1e3 * np.percentile(run[stage], [50, 95])
                rows.append([points, stage if stage == "total" else f"{stage} cpu", float(p50), float(p95)])
        print_table(f"CandidateSearch latency for {args.queries} query keypoints, ms", ["points", "stage", "p50",
                                                                                       "p95"], rows)  # fmt: skip
        print_table(
            "final correspondences", ["points", "precision", "recall"],
            [[points, float(np.mean(run["precision"])), float(np.mean(run["found"]))] for points, run in runs.items()],
        )  # fmt: skip
        p50 = {points: float(np.percentile(run["total"], 50)) for points, run in runs.items()}
        if 10_000 in p50:
            for points in sorted(p50):
                if points > 10_000:
                    ratio = p50[points] / p50[10_000]
                    verdict = ("holds" if ratio <= 2 else "FAILS") if points == 1_000_000 else "(no target)"
                    print(f"p50 {points} / p50 10000 = {ratio:.2f}; target <= 2 at 1M {verdict}")
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
