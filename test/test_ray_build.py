"""Map building on a Ray cluster: a local cluster of a head and one more worker node on loopback, the
sim map built through it and compared with the single-machine build, a worker killed mid-build, and
a whole build killed and resumed from the feature cache."""

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import build_killed_once_cached

from vloc_ros.features import create_extractor
from vloc_ros.localizer import LocalizationStatus, Localizer
from vloc_ros.mapping.builder import BuildConfig, build_map
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.sources import image_folder_frames

# A cluster on 127.0.0.1 stays there only when Ray is told it runs on one machine: otherwise it swaps
# loopback addresses for the machine's own (ray._private.services.resolve_ip_for_localhost).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is the optional extra vloc_ros[ray]; `make setup` installs it")
from vloc_ros.mapping.distributed import RayCluster, ShardSizes  # noqa: E402

LOOPBACK = "127.0.0.1"
# Each test, its cluster's start included, ends within this; the cluster stops with the module.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head and one more worker node, one CPU each, on loopback; stopped with the module."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes(timeout=120)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def sim_frames(sim_dataset):
    return image_folder_frames(
        sim_dataset / "images" / "map", sim_dataset / "camera.yaml", poses_tum=sim_dataset / "map_poses.tum"
    )


def localize_all(map_dir: Path, sim_queries) -> list:
    camera, queries = sim_queries
    localizer = Localizer(load_map(map_dir))
    return [localizer.localize(image, camera) for image, _ in queries]


def test_cluster_build_makes_the_single_machine_map(ray_cluster, sim_dataset, sim_map, sim_queries, tmp_path):
    frames = sim_frames(sim_dataset)
    with RayCluster(ray_cluster.address) as cluster:
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
        assert cluster.num_workers == 2
        summary = build_map(frames, tmp_path / "ray", progress=False, cluster=cluster)
    assert not ray.is_initialized(), "the connection the build made is closed with it"

    single, distributed = load_map(sim_map), load_map(tmp_path / "ray")
    assert [k.name for k in distributed.keyframes] == [k.name for k in single.keyframes]
    assert summary.images_registered == single.num_keyframes
    assert abs(distributed.num_points - single.num_points) <= 0.01 * single.num_points

    for expected, result in zip(localize_all(sim_map, sim_queries), localize_all(tmp_path / "ray", sim_queries)):
        assert result.status == expected.status
        if expected.status == LocalizationStatus.OK:
            assert np.linalg.norm(result.world_from_camera.translation - expected.world_from_camera.translation) < 0.01


def test_workers_extract_what_the_head_would(ray_cluster, sim_dataset):
    """Image files travel as their bytes, decoded images (a bag's) as PNG: both decode to the head's
    image. Workers run torch on one thread, the head on all cores: descriptors agree to rounding, which
    may swap keypoints of equal score in their order or at the cut to max_keypoints."""
    extractor = create_extractor(BuildConfig().extractor)
    frames = sim_frames(sim_dataset)[:4]
    frames += [replace(frame, name=f"decoded {frame.name}", read_file=None) for frame in frames]
    with RayCluster(ray_cluster.address) as cluster:
        extracted = dict(cluster.extract(enumerate(frames), extractor))
    for index, frame in enumerate(frames):
        expected, got = extractor.extract(frame.load_image()), extracted[index]
        position = {tuple(xy): i for i, xy in enumerate(expected.keypoints)}
        common = [(i, position[tuple(xy)]) for i, xy in enumerate(got.keypoints) if tuple(xy) in position]
        assert len(got) == len(expected) and len(common) >= 0.995 * len(expected)
        got_index, expected_index = np.array(common).T
        np.testing.assert_allclose(got.descriptors[got_index], expected.descriptors[expected_index], atol=1e-5)


def running_task_pids(task_name: str) -> list[int]:
    """Ray workers title their process ``ray::TASK`` while they run a task."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(f"ray::{task_name}".encode()):
                pids.append(int(entry.name))
    return pids


def test_a_worker_killed_mid_build_costs_only_its_shard(ray_cluster, sim_dataset, sim_map, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_extracting_worker():
        while not stop.is_set() and not killed:
            for pid in running_task_pids("extract_shard"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_extracting_worker, daemon=True)
    with RayCluster(ray_cluster.address, ShardSizes(images_per_task=2)) as cluster:
        killer.start()
        try:
            summary = build_map(sim_frames(sim_dataset), tmp_path / "ray", progress=False, cluster=cluster)
        finally:
            stop.set()
            killer.join()
    assert killed, "no worker was seen extracting, so none was killed"
    assert summary.images_given == summary.images_registered == load_map(sim_map).num_keyframes
    assert not summary.skipped_images


def test_a_killed_cluster_build_resumes_from_the_feature_cache(ray_cluster, sim_dataset, tmp_path):
    images = sim_dataset / "images" / "map"
    arguments = ["--images", str(images), "--intrinsics", str(sim_dataset / "camera.yaml")]
    arguments += ["--poses-tum", str(sim_dataset / "map_poses.tum"), "--ray", ray_cluster.address]
    out = tmp_path / "resumed"
    cached = build_killed_once_cached(arguments, out, 8)
    assert cached >= 8, "the build never got far enough to cache features"
    assert not out.exists(), "a killed build must not leave a map behind"

    with RayCluster(ray_cluster.address) as cluster:
        summary = build_map(sim_frames(sim_dataset), out, progress=False, cluster=cluster)
    assert summary.features_from_cache >= cached - 1  # the file being written at the kill may be lost
    assert summary.images_registered == len(list(images.glob("*.png")))
    assert not (tmp_path / "resumed.cache").exists(), "the resume cache is removed once the map is complete"


@pytest.mark.parametrize(
    "address, message",
    [(f"{LOOPBACK}:1", "cannot connect to the Ray cluster"), ("cluster", "expected auto, local, HOST:PORT")],
)
def test_an_unreachable_cluster_is_a_clear_error(sim_dataset, tmp_path, run_vloc, address, message):
    arguments = ["--images", str(sim_dataset / "images" / "map"), "--intrinsics", str(sim_dataset / "camera.yaml")]
    result = run_vloc("build-map", *arguments, "--ray", address, "--output", str(tmp_path / "m"), "--quiet", timeout=60)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()
