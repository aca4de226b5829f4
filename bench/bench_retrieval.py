"""Keyframe retrieval: Recall@1 and Recall@5 of the global descriptors, with and without re-ranking.

    python bench/bench_retrieval.py [--sets rtabmap 7scenes demo] [--work bench_out/learning/retrieval]
                                    [--shortlist 12] [--threads 2]

Rows: today's training-free VLAD, NetVLAD trained with the SARE loss and with the triplet loss
(``vloc_ros.learning.global_head``), each with the local re-ranking of ``vloc_ros.search.rerank`` off
and on; plus the training time and the re-ranking time per query.

Sets (each skipped with a message when its data is absent):

- ``rtabmap``: ../shared/data/rtabmap_samples_loopclosure at 320 px, 1024 keypoints (test_retrieval's
  protocol): map = images 1-40, queries = 41-84, positives from samples_GT.bmp. There are no
  intrinsics, so no map is built: the training co-visibility and the re-ranker's points are tracks of
  geometrically verified matches between the map images (mutual nearest neighbours kept by a
  fundamental-matrix RANSAC), chained over all pairs.
- ``7scenes``: the 7-Scenes map of bench_real (``bench_out/real/7scenes_redkitchen/map``: frames
  0-599, every 3rd); queries = the protocol's frames 600-999, every 5th, with 1024 keypoints.
- ``demo``: the synthetic world of ``make demo`` (``demo_out/``): its map and its query images.

On 7scenes and demo the map images are extracted again with the map's extractor settings (every
keypoint, as the builder has them), the co-visibility is the map's shared 3D points, and a keyframe
is a positive of a query when it views the query's scene (``view_positives``).

Features are cached under ``--work``; only the first run extracts them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

from vloc_ros.features import create_extractor
from vloc_ros.features.matching import match_mutual_nn
from vloc_ros.geometry import Camera, Rigid3
from vloc_ros.learning.global_head import GlobalHeadConfig, covisibility, train_global_descriptor
from vloc_ros.mapping.builder import FeatureCache, extract_all
from vloc_ros.mapping.map_format import MapError, load_map
from vloc_ros.mapping.sources import MapFrame, read_image_rgb
from vloc_ros.retrieval import VladDescriptor
from vloc_ros.search.rerank import KeyframeReranker
from vloc_ros.tum import read_tum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from bench_real import cached_map  # noqa: E402
from real_sets import SHARED_DATA, seven_scenes as seven_scenes_protocol  # noqa: E402  (the tests' protocols)

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK = REPO_ROOT / "bench_out" / "learning" / "retrieval"
MAP_EXTRACTOR = {"name": "xfeat", "max_keypoints": 2048, "resize_max": 1024}
QUERY_EXTRACTOR = {"name": "xfeat", "max_keypoints": 1024, "resize_max": 1024}
RTABMAP_EXTRACTOR = {"name": "xfeat", "max_keypoints": 1024, "resize_max": 320}
RECALL_AT = (1, 5)


@dataclass
class RetrievalSet:
    name: str
    map_descriptors: list[np.ndarray]  # per map image, every keypoint's descriptor
    query_descriptors: list[np.ndarray]  # per query, strongest keypoints first
    covisibility: np.ndarray  # (K, K) shared points, diagonal: points each image sees
    positives: np.ndarray  # (Q, K) bool
    vlad: VladDescriptor  # today's descriptor (the map's vocabulary)
    point_descriptors: np.ndarray  # (P, D) for the re-ranker
    keyframe_points: tuple[np.ndarray, np.ndarray]  # CSR (offsets, point ids)


def extracted(frames: list[MapFrame], extractor_config: dict, work: Path) -> list[np.ndarray]:
    extractor = create_extractor(extractor_config)
    extraction = extract_all(frames, extractor, FeatureCache(work / "features", extractor), progress=True)
    if extraction.skipped:
        raise RuntimeError(f"unreadable images: {extraction.skipped}")
    return [features.descriptors for features in extraction.features]


def view_positives(
    points_xyz: np.ndarray,
    keyframe_points: tuple[np.ndarray, np.ndarray],
    keyframe_poses: list[Rigid3],
    query_poses: list[Rigid3],
    camera: Camera,
    min_share: float = 0.5,
    max_angle_deg: float = 45.0,
) -> np.ndarray:
    """(Q, K) bool: keyframe k is a positive of query q when at least ``min_share`` of the points k sees
    project inside q's image, in front of it, and q sees them from within ``max_angle_deg`` of the
    direction k sees them from (so that a keyframe seeing the back of what the query sees is none)."""
    offsets, point_ids = keyframe_points
    positives = np.zeros((len(query_poses), len(keyframe_poses)), bool)
    for q, query_pose in enumerate(query_poses):
        pixels, in_front = camera.project(query_pose.inverse().transform(points_xyz))
        inside = in_front & (pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width)
        inside &= (pixels[:, 1] >= 0) & (pixels[:, 1] < camera.height)
        query_rays = points_xyz - query_pose.translation
        query_rays /= np.linalg.norm(query_rays, axis=1, keepdims=True)
        for k, keyframe_pose in enumerate(keyframe_poses):
            seen = point_ids[offsets[k] : offsets[k + 1]]
            rays = points_xyz[seen] - keyframe_pose.translation
            rays /= np.linalg.norm(rays, axis=1, keepdims=True)
            agree = np.einsum("pd,pd->p", rays, query_rays[seen]) > np.cos(np.radians(max_angle_deg))
            positives[q, k] = np.mean(inside[seen] & agree) >= min_share
    return positives


def from_map(name: str, map_dir: Path, map_frames: list[MapFrame], query_frames, query_poses, camera, work: Path):
    """A set whose map exists: its keyframes' images re-extracted in keyframe order."""
    try:
        localization_map = load_map(map_dir)
    except MapError as error:
        print(f"{name}: skipped ({error})")
        return None
    by_name = {frame.name: frame for frame in map_frames}
    arrays = localization_map.arrays
    keyframe_points = (arrays["keyframe_points_offsets"], arrays["keyframe_points"].astype(np.int64))
    return RetrievalSet(
        name,
        extracted([by_name[keyframe.name] for keyframe in localization_map.keyframes], MAP_EXTRACTOR, work),
        extracted(query_frames, QUERY_EXTRACTOR, work),
        covisibility(*keyframe_points, localization_map.num_keyframes),
        view_positives(
            arrays["points_xyz"],
            keyframe_points,
            [keyframe.world_from_camera for keyframe in localization_map.keyframes],
            query_poses,
            camera,
        ),
        VladDescriptor.from_state(localization_map.states["global_descriptor"]),
        np.asarray(arrays["point_descriptors"], np.float32),
        keyframe_points,
    )


def seven_scenes(work: Path = WORK) -> RetrievalSet | None:
    if not (SHARED_DATA / "7scenes_redkitchen_excerpt").is_dir():
        print("7scenes: skipped (../shared/data/7scenes_redkitchen_excerpt is absent)")
        return None
    protocol = seven_scenes_protocol()
    queries = [MapFrame(query.name, query.camera, query.load_image) for query in protocol.queries]
    return from_map(
        "7scenes",
        cached_map(protocol, REPO_ROOT / "bench_out" / "real").path,  # bench_real's map, built if absent
        protocol.map_frames,
        queries,
        [query.truth for query in protocol.queries],
        protocol.queries[0].camera,
        work,
    )


def demo_world(work: Path = WORK) -> RetrievalSet | None:
    world = REPO_ROOT / "demo_out" / "world"
    if not (world / "query_poses.tum").is_file() or not (REPO_ROOT / "demo_out" / "map").is_dir():
        print("demo: skipped (no demo_out/world and demo_out/map: run `make demo`)")
        return None
    camera = Camera.from_dict(yaml.safe_load((world / "camera.yaml").read_text()))

    def frames(run: str) -> tuple[list[MapFrame], list[Rigid3]]:
        # The images are numbered in the order of the run's poses; the map names keyframes by stamp.
        stamps, poses = read_tum(world / f"{run}_poses.tum")
        paths = sorted((world / "images" / run).glob("*.png"))
        named = [(f"{stamp:.9f}", path) for stamp, path in zip(stamps, paths)]
        return [MapFrame(name, camera, lambda p=path: read_image_rgb(p)) for name, path in named], poses

    map_frames, _ = frames("map")
    query_frames, query_poses = frames("query")
    return from_map("demo", REPO_ROOT / "demo_out" / "map", map_frames, query_frames, query_poses, camera, work)


def rtabmap(work: Path = WORK) -> RetrievalSet | None:
    root = SHARED_DATA / "rtabmap_samples_loopclosure"
    if not root.is_dir():
        print("rtabmap: skipped (../shared/data/rtabmap_samples_loopclosure is absent)")
        return None
    same_place = cv2.imread(str(root / "samples_GT.bmp"), cv2.IMREAD_GRAYSCALE) > 0
    camera = Camera(512, 384, 400.0, 400.0, 256.0, 192.0)  # a placeholder: only the image size is checked
    frames = [
        MapFrame(f"{i}.jpg", camera, lambda p=root / "images" / f"{i}.jpg": read_image_rgb(p)) for i in range(1, 85)
    ]
    extractor = create_extractor(RTABMAP_EXTRACTOR)
    extraction = extract_all(frames, extractor, FeatureCache(work / "features", extractor), progress=True)
    features = extraction.features
    map_descriptors = [f.descriptors for f in features[:40]]
    tracks = verified_match_tracks(features[:40])
    return RetrievalSet(
        "rtabmap",
        map_descriptors,
        [f.descriptors for f in features[40:]],
        covisibility(*tracks.keyframe_points, 40),
        same_place[40:, :40],
        VladDescriptor.fit(np.concatenate(map_descriptors), num_clusters=32, seed=0),
        tracks.point_descriptors,
        tracks.keyframe_points,
    )


@dataclass
class Tracks:
    point_descriptors: np.ndarray  # (P, D) normalised mean of each track's descriptors
    keyframe_points: tuple[np.ndarray, np.ndarray]  # CSR: the tracks each image is in


def verified_match_tracks(features, min_inliers: int = 20) -> Tracks:
    """Tracks chained (union-find) over the mutual nearest-neighbour matches of every image pair that
    a fundamental-matrix RANSAC keeps; a pair with fewer than ``min_inliers`` inliers shares none."""
    starts = np.cumsum([0] + [len(f) for f in features])
    parent = np.arange(starts[-1])

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for i in range(len(features)):
        for j in range(i + 1, len(features)):
            matches = match_mutual_nn(features[i].descriptors, features[j].descriptors, ratio=0.9)
            if len(matches) < min_inliers:
                continue
            _, inliers = cv2.findFundamentalMat(
                features[i].keypoints[matches[:, 0]], features[j].keypoints[matches[:, 1]], cv2.FM_RANSAC, 1.0, 0.999
            )
            if inliers is None or inliers.sum() < min_inliers:
                continue
            for a, b in matches[inliers.ravel() > 0]:
                parent[root(starts[i] + a)] = root(starts[j] + b)
    roots = np.array([root(node) for node in range(starts[-1])])
    image_of_node = np.repeat(np.arange(len(features)), np.diff(starts))
    tracked = np.bincount(roots, minlength=len(roots))[roots] > 1
    track_ids = np.unique(roots[tracked], return_inverse=True)[1]
    descriptors = np.concatenate([f.descriptors for f in features])[tracked]
    sums = np.zeros((track_ids.max() + 1, descriptors.shape[1]), np.float32)
    np.add.at(sums, track_ids, descriptors)
    # An image in a track twice (a chain closing on itself) sees the track once.
    pairs = np.unique(image_of_node[tracked] * (track_ids.max() + 1) + track_ids)
    images, points = np.divmod(pairs, track_ids.max() + 1)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(images, minlength=len(features)))])
    return Tracks(sums / np.linalg.norm(sums, axis=1, keepdims=True), (offsets, points))


SETS = {"rtabmap": rtabmap, "7scenes": seven_scenes, "demo": demo_world}
HEAD_LOSSES = {"NetVLAD+SARE": "sare", "NetVLAD+triplet": "triplet"}


def recall_at(ranking: np.ndarray, positives: np.ndarray) -> list[float]:
    """Per k in RECALL_AT the share of the queries with a positive among their first k keyframes."""
    return [float(np.mean([positives[q, ranking[q][:k]].any() for q in range(len(ranking))])) for k in RECALL_AT]


def evaluate(descriptor, data: RetrievalSet, reranker: KeyframeReranker, shortlist: int) -> list[dict]:
    """The rows of one descriptor: re-ranking off and on (the ``shortlist`` first keyframes re-ranked)."""
    started = time.perf_counter()
    queries = np.stack([descriptor.describe(d) for d in data.query_descriptors])
    describe_ms = (time.perf_counter() - started) / len(queries) * 1e3
    keyframes = np.stack([descriptor.describe(d) for d in data.map_descriptors])
    ranking = np.argsort(-(queries @ keyframes.T), axis=1, kind="stable")
    started = time.perf_counter()
    reranked = [
        np.concatenate([reranker.rerank(local, order[:shortlist])[0], order[shortlist:]])
        for local, order in zip(data.query_descriptors, ranking)
    ]
    rerank_ms = (time.perf_counter() - started) / len(queries) * 1e3
    return [
        {"re-ranking": "off", "recall": recall_at(ranking, data.positives), "describe_ms": describe_ms},
        {"re-ranking": "on", "recall": recall_at(reranked, data.positives), "describe_ms": describe_ms,
         "rerank_ms": rerank_ms},
    ]  # fmt: skip


def retrieval_rows(names=tuple(SETS), work: Path = WORK, shortlist: int = 12) -> dict[str, list[dict]]:
    """Per set its rows: descriptor, re-ranking (off / on), recall (at RECALL_AT), training seconds,
    re-ranking and describing milliseconds per query. Sets without their data are left out."""
    results = {}
    for name in names:
        data = SETS[name](work)
        if data is None:
            continue
        # Queries without a positive keyframe cannot be right or wrong: left out.
        keep = data.positives.any(axis=1)
        data.query_descriptors = [d for d, k in zip(data.query_descriptors, keep) if k]
        data.positives = data.positives[keep]
        reranker = KeyframeReranker(data.point_descriptors, data.keyframe_points)
        reranker.rerank(data.query_descriptors[0], np.arange(2))  # compiles (or loads) its kernel before timing
        rows = [{"descriptor": "VLAD", **row} for row in evaluate(data.vlad, data, reranker, shortlist)]
        for label, loss in HEAD_LOSSES.items():
            started = time.perf_counter()
            head = train_global_descriptor(
                data.map_descriptors, data.covisibility, data.vlad, GlobalHeadConfig(loss=loss), progress=True
            )
            seconds = time.perf_counter() - started
            rows += [
                {"descriptor": label, "train_s": seconds, **row} for row in evaluate(head, data, reranker, shortlist)
            ]
        results[name] = {"rows": rows, "map_images": len(data.map_descriptors), "queries": int(keep.sum()),
                         "skipped_queries": int((~keep).sum())}  # fmt: skip
    return results


def markdown(name: str, result: dict, shortlist: int) -> str:
    lines = [
        f"### {name}: {result['map_images']} map images, {result['queries']} queries "
        f"({result['skipped_queries']} without a positive left out); re-ranking the first {shortlist}",
        "",
        "| descriptor | re-ranking | " + " | ".join(f"R@{k}" for k in RECALL_AT)
        + " | training (s) | describe (ms/query) | re-ranking (ms/query) |",
        "|---|---|" + "---|" * len(RECALL_AT) + "---|---|---|",
    ]  # fmt: skip
    for row in result["rows"]:
        cells = [row["descriptor"], row["re-ranking"], *(f"{r:.3f}" for r in row["recall"])]
        cells += [f"{row['train_s']:.1f}" if "train_s" in row else "—", f"{row['describe_ms']:.2f}"]
        cells.append(f"{row['rerank_ms']:.2f}" if "rerank_ms" in row else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--shortlist", type=int, default=12, help="keyframes the re-ranking re-orders")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training, describing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # As the localizer runs: one BLAS thread (the re-ranking's matrix products are small).
    threadpool_limits(1, user_api="blas")
    results = retrieval_rows(args.sets, args.work, args.shortlist)
    for name, result in results.items():
        print()
        print(markdown(name, result, args.shortlist))


if __name__ == "__main__":
    main()
