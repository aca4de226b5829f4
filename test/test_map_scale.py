"""Memory-mapped map loading (``load_map(mmap=True)``): the same arrays and search results as an eager
load, read-only arrays that every reader accepts, and damaged files still refused with MapError."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vloc_ros.localizer import map_search
from vloc_ros.mapping import map_format
from vloc_ros.mapping.map_format import MapError, load_map
from vloc_ros.mapping.synthetic import query_source, write_synthetic_map
from vloc_ros.search.guided import GuidedConfig, GuidedMatcher
from vloc_ros.search.synthetic import make_query

SEARCH_CONFIG = {"local_search": {"max_leaves_per_tree": 4}}


@pytest.fixture(scope="module")
def synthetic_map(tmp_path_factory):
    directory = tmp_path_factory.mktemp("map_scale")
    info = write_synthetic_map(directory / "map", 4000, seed=3, centres_path=directory / "centres.npy")
    return info, directory / "centres.npy"


@pytest.fixture()
def map_everything_mapped(monkeypatch):
    """Every file memory-mapped, however small (a small test map has no file over MMAP_MIN_BYTES)."""
    monkeypatch.setattr(map_format, "MMAP_MIN_BYTES", 0)


def is_mapped(array: np.ndarray) -> bool:
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return array is not None


def test_written_map_has_the_requested_tracks(synthetic_map):
    info, _ = synthetic_map
    localization_map = load_map(info.path)
    assert localization_map.num_points == info.num_points == 4000
    assert 3 <= info.num_observations / info.num_points <= 4
    assert localization_map.manifest.counts.observations == info.num_observations


def test_mapped_load_gives_the_eager_arrays_read_only(synthetic_map, map_everything_mapped):
    info, _ = synthetic_map
    eager = load_map(info.path, mmap=False)
    mapped = load_map(info.path, mmap=True)
    assert set(mapped.arrays) == set(eager.arrays) and set(mapped.states) == set(eager.states)
    for name, array in eager.arrays.items():
        assert type(mapped.arrays[name]) is np.ndarray, name  # a view, not an np.memmap
        assert is_mapped(mapped.arrays[name]) and not mapped.arrays[name].flags.writeable, name
        np.testing.assert_array_equal(mapped.arrays[name], array, err_msg=name)
    for component, state in eager.states.items():
        for key, array in state.items():
            np.testing.assert_array_equal(mapped.states[component][key], array, err_msg=f"{component}/{key}")
    with pytest.raises(ValueError, match="read-only"):
        mapped.arrays["points_xyz"][0] = 0.0


def test_small_files_are_read_and_large_ones_mapped(synthetic_map, monkeypatch):
    info, _ = synthetic_map
    sizes = {path.stem: path.stat().st_size for path in (info.path / "arrays").glob("*.npy")}
    monkeypatch.setattr(map_format, "MMAP_MIN_BYTES", sizes["observation_descriptors"])
    mapped = load_map(info.path)  # mmap is the default
    assert is_mapped(mapped.arrays["observation_descriptors"])
    assert not is_mapped(mapped.arrays["points_xyz"]) and mapped.arrays["points_xyz"].flags.writeable


def test_mapped_map_searches_as_the_eager_one(synthetic_map, map_everything_mapped):
    info, centres = synthetic_map
    eager, mapped = load_map(info.path, mmap=False), load_map(info.path, mmap=True)
    searches = [map_search(localization_map, SEARCH_CONFIG) for localization_map in (eager, mapped)]
    guided = [
        GuidedMatcher(m.arrays, [k.world_from_camera for k in m.keyframes], GuidedConfig()) for m in (eager, mapped)
    ]
    camera = eager.keyframes[0].camera
    rng = np.random.default_rng(0)
    try:
        for seed in range(3):
            queries = make_query(query_source(eager, info.config, info.seed, centres), 512, seed=seed)
            results = [search.search(queries.descriptors, queries.global_descriptor) for search in searches]
            assert len(results[0]) > 100
            # The search finds the true points of the synthetic queries (the map is not noise).
            correct = results[0].point_ids == queries.true_point_ids[results[0].query_indices]
            assert correct.mean() > 0.8
            for field in ("query_indices", "point_ids", "distances", "retrieved_keyframes"):
                np.testing.assert_array_equal(getattr(results[1], field), getattr(results[0], field), err_msg=field)
            # Guided matching reads the observations and points in place.
            keypoints = rng.random((512, 2)) * [camera.width, camera.height]
            pose = eager.keyframes[queries.keyframe].world_from_camera
            guided_results = [matcher.match(keypoints, queries.descriptors, camera, pose) for matcher in guided]
            assert len(guided_results[0]) > 0
            for field in ("query_indices", "point_ids", "distances", "retrieved_keyframes"):
                np.testing.assert_array_equal(
                    getattr(guided_results[1], field), getattr(guided_results[0], field), err_msg=field
                )
    finally:
        for search in searches:
            search.close()


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_damaged_file_is_refused_when_mapped(synthetic_map, tmp_path, map_everything_mapped, mmap, damage):
    info, _ = synthetic_map
    copy = tmp_path / "map"
    shutil.copytree(info.path, copy)
    path = copy / "arrays" / "observation_descriptors.npy"
    data = bytearray(path.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    with pytest.raises(MapError, match="observation_descriptors.npy .* is corrupt or truncated"):
        load_map(copy, mmap=mmap)
    if damage == "truncate":
        # Without checksums the mapping itself must still fail as a MapError, not later in numpy.
        with pytest.raises(MapError, match="observation_descriptors.npy .* is not a readable .npy array"):
            load_map(copy, verify_checksums=False, mmap=mmap)
