"""Damaged maps that pass the checksums (a hand-edited manifest, a file dropped from disk and from
the file list, a state array of the wrong kind): each is a MapError naming what is wrong and saying
to rebuild, from ``load_map`` or, for a state only its component can judge, from ``Localizer`` — the
two calls the localizer node makes — never a KeyError or a crash in the search."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vloc_ros.geometry import pose_error
from vloc_ros.hashing import file_sha256
from vloc_ros.localizer import Localizer
from vloc_ros.components import BINARIZER_TYPES, GLOBAL_DESCRIPTOR_TYPES
from vloc_ros.mapping.map_format import (
    BINARIZER_STATES,
    GLOBAL_DESCRIPTOR_STATES,
    LOCAL_INDEX_STATES,
    MapError,
    load_map,
    state_specs,
)
from vloc_ros.mapping.sources import load_intrinsics, read_image_rgb
from vloc_ros.retrieval import VladDescriptor
from vloc_ros.search import LOCAL_INDEX_TYPES, Binarizer, FaissBinaryIndex
from vloc_ros.tum import read_tum


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=1))


def edit_manifest(edit):
    return lambda map_dir: edit_json(map_dir / "manifest.json", edit)


def resign(map_dir: Path) -> None:
    """Recompute the sha256 of every file the manifest lists, so that the damage passes the checksums."""
    manifest_path = map_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if isinstance(manifest.get("files"), dict):
        manifest["files"] = {relative: file_sha256(map_dir / relative) for relative in manifest["files"]}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def remove(relative: str):
    """Delete a file or directory of the map and its entries in the file list."""

    def damage(map_dir: Path) -> None:
        target = map_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        edit_manifest(
            lambda m: m.update(
                files={
                    path: digest
                    for path, digest in m["files"].items()
                    if path != relative and not path.startswith(relative + "/")
                }
            )
        )(map_dir)

    return damage


def edit_array(relative: str, edit):
    def damage(map_dir: Path) -> None:
        path = map_dir / relative
        np.save(path, edit(np.load(path)), allow_pickle=False)

    return damage


def set_item(array: np.ndarray, index, value) -> np.ndarray:
    array[index] = value
    return array


def replace_local_index(make_state, manifest_entry: dict):
    """Swap the map's local index state for ``make_state()`` (its files listed, to be signed by ``resign``)."""

    def damage(map_dir: Path) -> None:
        directory = map_dir / "state" / "local_index"
        remove("state/local_index")(map_dir)
        directory.mkdir()
        state = make_state()
        for key, array in state.items():
            np.save(directory / f"{key}.npy", array, allow_pickle=False)
        edit_manifest(
            lambda m: m.update(
                local_index=manifest_entry,
                files={**m["files"], **{f"state/local_index/{key}.npy": "" for key in state}},
            )
        )(map_dir)

    return damage


def faiss_index_state(num_bits: int) -> dict:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (400, num_bits // 8), dtype=np.uint8)
    return FaissBinaryIndex.build(codes, np.arange(400) % 100).state()


def drop_pose(keyframes: list) -> None:
    del keyframes[3]["world_from_camera"]


# (id, damage, message): load_map raises a MapError matching the message.
LOAD_DAMAGE = [
    (
        "unknown_local_index_type",
        edit_manifest(lambda m: m["local_index"].update(type="kd_tree")),
        r"local_index.type in .*manifest.json is 'kd_tree', expected one of 'random_trees', 'faiss_binary'",
    ),
    ("no_extractor", edit_manifest(lambda m: m.pop("extractor")), r"manifest.json lacks extractor;"),
    (
        "extractor_is_a_string",
        edit_manifest(lambda m: m.update(extractor="xfeat")),
        r"extractor in .*manifest.json is a string, expected an object",
    ),
    (
        "extractor_without_config",
        edit_manifest(lambda m: m["extractor"].pop("config")),
        r"manifest.json lacks extractor.config",
    ),
    (
        "descriptor_dim_is_a_string",
        edit_manifest(lambda m: m["extractor"].update(descriptor_dim="64")),
        r"extractor.descriptor_dim in .* is a string, expected an integer",
    ),
    (
        "keyframe_count_is_a_boolean",
        edit_manifest(lambda m: m["counts"].update(keyframes=True)),
        r"counts.keyframes in .* is a boolean, expected an integer",
    ),
    (
        "map_frame_is_a_number",
        edit_manifest(lambda m: m.update(map_frame=5)),
        r"map_frame in .* is an integer, expected a string",
    ),
    ("unknown_units", edit_manifest(lambda m: m.update(units="ft")), r"units in .* is 'ft', expected one of 'm'"),
    (
        "unknown_manifest_key",
        edit_manifest(lambda m: m.update(mapframe="odom")),
        r"manifest.json has unknown key\(s\) mapframe \(valid: created, vloc_ros_version, map_frame,",
    ),
    (
        "unknown_counts_key",
        edit_manifest(lambda m: m["counts"].update(images=3)),
        r"counts in .*manifest.json has unknown key\(s\) images \(valid: keyframes, points,",
    ),
    (
        "files_is_a_list",
        edit_manifest(lambda m: m.update(files=sorted(m["files"]))),
        r"files in .*manifest.json is a list, expected an object",
    ),
    (
        "file_outside_the_map",
        lambda map_dir: (
            np.save(map_dir.parent / "elsewhere.npy", np.zeros(3)),
            edit_manifest(lambda m: m["files"].update({"../elsewhere.npy": ""}))(map_dir),
        ),
        r"files in .*manifest.json has the entry '../elsewhere.npy'",
    ),
    (
        "no_local_index_state",
        remove("state/local_index"),
        r"incomplete: manifest.json does not list state/local_index/node_bit.npy",
    ),
    (
        "state_array_missing",
        remove("state/binarizer/rotation.npy"),
        r"incomplete: manifest.json does not list state/binarizer/rotation.npy;",
    ),
    (
        "keyframe_without_pose",
        lambda map_dir: edit_json(map_dir / "keyframes.json", drop_pose),
        r"keyframes.json entry 3 lacks world_from_camera;",
    ),
    (
        "keyframe_with_a_zero_quaternion",
        lambda map_dir: edit_json(
            map_dir / "keyframes.json", lambda k: k[0]["world_from_camera"].update(quaternion_xyzw=[0, 0, 0, 0])
        ),
        r"keyframes.json entry 0 is malformed \(invalid quaternion",
    ),
    (
        "keyframes_not_a_list",
        lambda map_dir: (map_dir / "keyframes.json").write_text("{}"),
        r"keyframes.json holds an object, expected a list of keyframes",
    ),
    (
        "state_array_of_ints",
        edit_array("state/binarizer/mean.npy", lambda a: a.astype(np.int64)),
        r"damaged: state/binarizer/mean.npy has dtype int64, expected a float dtype",
    ),
    (
        "vocabulary_of_another_descriptor_size",
        edit_array("state/global_descriptor/centroids.npy", lambda a: a[:, :32]),
        r"damaged: state/global_descriptor/centroids.npy has shape \(32, 32\); axis 1 should be 64",
    ),
    (
        "trees_of_other_codes",
        edit_array("state/local_index/point_codes.npy", lambda a: a[:, :4]),
        r"damaged: state/local_index/point_codes.npy has shape \(\d+, 4\); axis 1 should be 8",
    ),
    (
        "manifest_disagrees_with_the_arrays",
        edit_manifest(lambda m: m["counts"].update(points=5)),
        r"damaged: manifest.json says counts.points is 5, but the map's arrays have \d+",
    ),
    (
        "pickled_state_array",
        lambda map_dir: np.save(map_dir / "state/binarizer/method.npy", np.array([{"method": "pca"}], dtype=object)),
        r"map file state/binarizer/method.npy .* is not a readable .npy array",
    ),
]

# (id, damage, message): load_map accepts the map; Localizer raises a MapError matching the message.
LOCALIZER_DAMAGE = [
    (
        "tree_link_out_of_range",
        edit_array("state/local_index/node_child.npy", lambda a: set_item(a, 0, 10**8)),
        r"state/local_index is unusable \(ValueError: node_child of inner nodes holds values outside",
    ),
    (
        "trees_deeper_than_their_depth",
        edit_array("state/local_index/depth.npy", lambda a: np.array(1)),
        r"state/local_index is unusable \(ValueError: a tree is deeper than depth 1\)",
    ),
    (
        "faiss_index_of_garbage",
        replace_local_index(lambda: {"faiss_index": np.arange(200, dtype=np.uint8)}, {"type": "faiss_binary"}),
        r"state/local_index is unusable \(ValueError: faiss_index is not a serialized faiss binary index",
    ),
    (
        "faiss_index_of_other_codes",
        replace_local_index(lambda: faiss_index_state(32), {"type": "faiss_binary"}),
        r"state/local_index indexes 32-bit codes but state/binarizer makes 64-bit codes",
    ),
    (
        "unknown_extractor_option",
        edit_manifest(lambda m: m["extractor"]["config"].update(bogus=1)),
        r"cannot make the query extractor from the map's extractor.config .*unknown xfeat options \['bogus'\]",
    ),
]


@pytest.mark.parametrize("damage, message", [case[1:] for case in LOAD_DAMAGE], ids=[case[0] for case in LOAD_DAMAGE])
def test_damaged_map_is_refused_by_load_map(map_copy, damage, message):
    damage(map_copy)
    resign(map_copy)
    with pytest.raises(MapError, match=message) as error:
        load_map(map_copy)
    assert "rebuild the map with `vloc build-map`" in str(error.value)


@pytest.mark.parametrize(
    "damage, message", [case[1:] for case in LOCALIZER_DAMAGE], ids=[case[0] for case in LOCALIZER_DAMAGE]
)
def test_damaged_component_is_refused_by_the_localizer(map_copy, damage, message):
    damage(map_copy)
    resign(map_copy)
    localization_map = load_map(map_copy)
    with pytest.raises(MapError, match=message) as error:
        Localizer(localization_map)
    assert "rebuild the map" in str(error.value)


def test_valid_map_loads_and_localizes(sim_map, sim_dataset, map_copy):
    localization_map = load_map(sim_map)
    for component, spec in state_specs(localization_map.manifest).items():
        assert set(localization_map.states[component]) == set(spec)
    localizer = Localizer(localization_map)
    camera = load_intrinsics(sim_dataset / "camera.yaml")
    _, truth = read_tum(sim_dataset / "query_poses.tum")
    images = sorted((sim_dataset / "images" / "query").glob("*.png"))[:3]
    for path, expected in zip(images, truth):
        result = localizer.localize(read_image_rgb(path), camera)
        assert result.ok, result.reason
        assert pose_error(result.world_from_camera, expected)[0] < 0.05

    # A file the manifest does not list (so no checksum covers it) is not part of the map.
    np.save(map_copy / "arrays" / "stray.npy", np.zeros(3))
    assert "stray" not in load_map(map_copy).arrays


def assert_state_matches(state: dict, spec: dict) -> None:
    assert set(state) == set(spec)
    for key, (kind, shape) in spec.items():
        array = np.asarray(state[key])
        assert (array.dtype.kind, array.ndim) == (kind, len(shape)), key


def test_declared_states_are_what_the_components_store():
    """map_format declares the component kinds and every kind's state without importing them (the learned
    kinds' states: test_learned_map.py)."""
    assert set(LOCAL_INDEX_TYPES) == set(LOCAL_INDEX_STATES)
    assert set(BINARIZER_TYPES) == set(BINARIZER_STATES)
    assert set(GLOBAL_DESCRIPTOR_TYPES) == set(GLOBAL_DESCRIPTOR_STATES)
    rng = np.random.default_rng(0)
    codes, labels = rng.integers(0, 256, (400, 8), dtype=np.uint8), np.arange(400) % 100
    for name, index_type in LOCAL_INDEX_TYPES.items():
        assert_state_matches(index_type.build(codes, labels).state(), LOCAL_INDEX_STATES[name])
    descriptors = rng.standard_normal((500, 64)).astype(np.float32)
    for method in ("pca", "itq"):
        assert_state_matches(Binarizer.fit(descriptors, 64, method).state(), BINARIZER_STATES[method])
    assert_state_matches(VladDescriptor(descriptors[:8]).state(), GLOBAL_DESCRIPTOR_STATES["vlad"])
