"""Shared test fixtures. Tests that need ../shared/data skip with a clear message when it is absent."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Fixtures that make a test slow: a rendered world and its map, real data, a ROS graph, a node.
SLOW_FIXTURES = {"sim_dataset", "shared_data", "graph", "ros", "repeated_world", "far_off_world"}


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the fast tier (`make test-fast`): no rendered world, real data or ROS graph",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: renders a world or needs its map in a way the fixtures do not show")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--fast"):
        return
    slow = [
        item
        for item in items
        if item.get_closest_marker("slow") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    config.hook.pytest_deselected(items=slow)
    items[:] = [item for item in items if item not in slow]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real-data test: {SHARED_DATA} is absent (it ships beside the checkout for developers and CI only)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def run_vloc():
    """``run_vloc(*args, timeout=120)``: ``python -m vloc_ros.cli ARGS`` from the repository root, its
    output captured as text; returns the CompletedProcess."""

    def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "vloc_ros.cli", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)

    return run


def build_killed_once_cached(arguments: list, output: Path, count: int) -> int:
    """Run ``vloc build-map ARGUMENTS --output OUTPUT --quiet`` and SIGKILL it once its feature cache
    holds ``count`` images (or it ended, or 300 s passed); the number of images cached at the kill."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vloc_ros.cli", "build-map", *map(str, arguments), "--output", str(output), "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = output.with_name(output.name + ".cache") / "features"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(cache.glob("*/*.npz"))) < count and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return len(list(cache.glob("*/*.npz")))


# The shared synthetic world (vloc_ros.sim): default courtyard, 640x480, bags in both storages.
SIM_DATASET_CONFIG = {"seed": 0, "map_frames": 40, "query_frames": 20}


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """A small synthetic world generated once per session (~15 s); layout in vloc_ros/sim/generate.py.

    Read-only for tests: copy what you need to modify."""
    from vloc_ros.sim import generate

    out = tmp_path_factory.mktemp("sim") / "world"
    generate(SIM_DATASET_CONFIG, out)
    return out


@pytest.fixture(scope="session")
def sim_map(sim_dataset, tmp_path_factory) -> Path:
    """A metric map of ``sim_dataset``'s mapping run, triangulated from its ground-truth poses.

    Read-only for tests."""
    from vloc_ros.mapping.builder import build_map
    from vloc_ros.mapping.sources import image_folder_frames

    frames = image_folder_frames(
        sim_dataset / "images" / "map", sim_dataset / "camera.yaml", poses_tum=sim_dataset / "map_poses.tum"
    )
    out = tmp_path_factory.mktemp("maps") / "sim"
    build_map(frames, out, progress=False)
    return out


@pytest.fixture()
def map_copy(sim_map, tmp_path) -> Path:
    """A copy of ``sim_map`` that a test may damage."""
    copy = tmp_path / "map"
    shutil.copytree(sim_map, copy)
    return copy


@pytest.fixture(scope="session")
def sim_queries(sim_dataset):
    """(camera, [(image, world_from_camera)]) of the synthetic query run (appearance changes on)."""
    from vloc_ros.mapping.sources import load_intrinsics, read_image_rgb
    from vloc_ros.tum import read_tum

    camera = load_intrinsics(sim_dataset / "camera.yaml")
    _, truth = read_tum(sim_dataset / "query_poses.tum")
    images = [read_image_rgb(p) for p in sorted((sim_dataset / "images" / "query").glob("*.png"))]
    return camera, list(zip(images, truth))


@pytest.fixture(scope="module")
def graph():
    """A real rclpy graph for a module's node tests (test/ros_harness.py)."""
    from ros_harness import RosGraph

    graph = RosGraph()
    yield graph
    graph.close()


@pytest.fixture(autouse=True)
def collectors_stop_with_their_test(request):
    """Else a test's collectors keep hoarding node output (debug images: 0.9 MB each) into later tests,
    whose memory checks would count it."""
    yield
    if "graph" in request.fixturenames:
        request.getfixturevalue("graph").close_collectors()


@pytest.fixture(scope="session")
def query(sim_dataset):
    """The sim query bag as rclpy messages per frame (ros_harness.BagFrames)."""
    from ros_harness import BagFrames

    return BagFrames(sim_dataset / "bags" / "query_mcap")


@pytest.fixture(scope="session")
def temple_map(shared_data, tmp_path_factory):
    """Metric map of the first 10 templeRing views, triangulated from the measured poses.

    Returns (map directory, views) with views as ``real_sets.temple_ring_views``; the other 9 are queries."""
    from real_sets import temple_ring_views

    from vloc_ros.mapping.builder import build_map
    from vloc_ros.mapping.sources import MapFrame, read_image_rgb

    dataset = shared_data / "middlebury_templeRing_partial"
    views = temple_ring_views(dataset)
    frames = [
        MapFrame(name, camera, lambda path=dataset / name: read_image_rgb(path), pose)
        for name, (camera, pose) in list(views.items())[:10]
    ]
    out = tmp_path_factory.mktemp("maps") / "temple"
    build_map(frames, out, progress=False)
    return out, views


@pytest.fixture(scope="session")
def llff_beer_map(shared_data, tmp_path_factory):
    """SfM map (unknown poses, arbitrary scale) of llff_beer's even frames.

    Returns (map directory, build summary, camera, ground-truth world_from_camera by image name)."""
    import pycolmap

    from vloc_ros.geometry import Camera
    from vloc_ros.mapping.builder import build_map
    from vloc_ros.mapping.reconstruction import world_from_camera
    from vloc_ros.mapping.sources import MapFrame, list_images, read_image_rgb

    dataset = shared_data / "llff_beer"
    model = pycolmap.Reconstruction(str(dataset / "sparse" / "0"))
    colmap_camera = next(iter(model.cameras.values()))
    assert colmap_camera.model.name == "SIMPLE_RADIAL"
    focal, cx, cy, k1 = colmap_camera.params  # COLMAP pixel centres are at +0.5
    camera = Camera(colmap_camera.width, colmap_camera.height, focal, focal, cx - 0.5, cy - 0.5, (k1,))
    truth = {image.name: world_from_camera(image) for image in model.images.values()}
    frames = [
        MapFrame(path.name, camera, lambda path=path: read_image_rgb(path))
        for path in list_images(dataset / "images")[::2]
    ]
    out = tmp_path_factory.mktemp("maps") / "beer"
    summary = build_map(frames, out, progress=False)
    return out, summary, camera, truth


# One ROS 2 domain per test run (from the pid), so concurrent runs on this machine do not see each
# other's topics; test_ros_graph.py derives the same id. Set before any test creates an rclpy context.
ROS_DOMAIN_ID = str(1 + os.getpid() % 100)


@pytest.fixture(scope="session", autouse=True)
def ros_domain_id() -> str:
    os.environ["ROS_DOMAIN_ID"] = ROS_DOMAIN_ID
    return ROS_DOMAIN_ID
