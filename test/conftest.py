"""Shared test fixtures. Tests that need ../shared/data skip with a clear message when it is absent."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data test: {SHARED_DATA} is absent (it ships beside the checkout for developers and CI only)")
    return SHARED_DATA


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

    frames = image_folder_frames(sim_dataset / "images" / "map", sim_dataset / "camera.yaml",
                                 poses_tum=sim_dataset / "map_poses.tum")
    out = tmp_path_factory.mktemp("maps") / "sim"
    build_map(frames, out, progress=False)
    return out
