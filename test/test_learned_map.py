"""Maps with learned descriptors (learned codes, NetVLAD): built, stored, loaded and localized with; and
the map format version they brought: a version 2 map still loads and localizes, a newer one is refused."""

import json
import shutil

import numpy as np
import pytest
from test_map_validation import assert_state_matches

from vloc_ros.components import BINARIZER_TYPES, GLOBAL_DESCRIPTOR_TYPES
from vloc_ros.geometry import pose_error
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.builder import build_map
from vloc_ros.mapping.map_format import (
    BINARIZER_STATES,
    FORMAT_VERSION,
    GLOBAL_DESCRIPTOR_STATES,
    MapError,
    load_map,
)
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.mapping.update import update_map

LEARNED = {"binarizer": {"method": "learned"}, "global_descriptor": {"name": "netvlad"}}


LEFT_FOR_THE_UPDATE = 6  # mapping frames the learned map lacks, for the update test


@pytest.fixture(scope="module")
def mapping_frames(sim_dataset):
    return image_folder_frames(
        sim_dataset / "images" / "map", sim_dataset / "camera.yaml", poses_tum=sim_dataset / "map_poses.tum"
    )


@pytest.fixture(scope="module")
def learned_map(mapping_frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned") / "map"
    build_map(mapping_frames[:-LEFT_FOR_THE_UPDATE], out, LEARNED, progress=False)
    return out


def localized_share(map_dir, sim_queries, count: int = 8, config: dict | None = None) -> float:
    camera, queries = sim_queries
    localizer = Localizer(load_map(map_dir), {"profile": "fast", **(config or {})})
    right = 0
    for image, truth in queries[:count]:
        result = localizer.localize(image, camera)
        right += result.ok and pose_error(result.world_from_camera, truth)[0] < 0.05
    return right / count


def test_a_learned_map_stores_its_trained_components_and_localizes(learned_map, sim_queries):
    localization_map = load_map(learned_map)
    manifest = localization_map.manifest
    assert manifest.format_version == FORMAT_VERSION
    assert (manifest.binarizer.method, manifest.global_descriptor.name) == ("learned", "netvlad")
    assert manifest.build.stage_seconds["learning"] > 0
    assert_state_matches(localization_map.states["binarizer"], BINARIZER_STATES["learned"])
    assert_state_matches(localization_map.states["global_descriptor"], GLOBAL_DESCRIPTOR_STATES["netvlad"])
    # The stored keyframe descriptors are the trained descriptor's, so queries and keyframes compare alike.
    netvlad = GLOBAL_DESCRIPTOR_TYPES["netvlad"].from_state(localization_map.states["global_descriptor"])
    assert netvlad.dim == localization_map.arrays["keyframe_global_descriptors"].shape[1]
    # The stored codes are the learned binarizer's (up to the bits the descriptors' float16 storage flips;
    # PCA codes would differ in about half the bits).
    codes = BINARIZER_TYPES["learned"].from_state(localization_map.states["binarizer"])
    recoded = codes.encode(localization_map.arrays["point_descriptors"].astype(np.float32))
    differing = np.unpackbits(recoded ^ localization_map.arrays["point_codes"]).mean()
    assert differing < 0.01, differing
    assert localized_share(learned_map, sim_queries) >= 0.9


def test_re_ranking_the_shortlist_localizes(learned_map, sim_queries):
    localizer = Localizer(load_map(learned_map), {"search": {"rerank_shortlist": 12}})
    assert localizer.search.reranker is not None
    assert localized_share(learned_map, sim_queries, config={"search": {"rerank_shortlist": 12}}) >= 0.9


def test_an_update_retrains_the_codes_and_keeps_the_global_descriptor(learned_map, mapping_frames, tmp_path):
    before = load_map(learned_map)
    update_map(mapping_frames[-LEFT_FOR_THE_UPDATE:], learned_map, tmp_path / "updated", progress=False)
    after = load_map(tmp_path / "updated")
    assert after.num_keyframes == before.num_keyframes + LEFT_FOR_THE_UPDATE
    assert (after.manifest.binarizer.method, after.manifest.global_descriptor.name) == ("learned", "netvlad")
    for key, array in before.states["global_descriptor"].items():
        np.testing.assert_array_equal(after.states["global_descriptor"][key], array)
    # New keyframes are described with the map's trained descriptor, old ones keep theirs.
    netvlad = GLOBAL_DESCRIPTOR_TYPES["netvlad"].from_state(after.states["global_descriptor"])
    np.testing.assert_array_equal(
        after.arrays["keyframe_global_descriptors"][: before.num_keyframes],
        before.arrays["keyframe_global_descriptors"],
    )
    assert netvlad.dim == after.arrays["keyframe_global_descriptors"].shape[1]
    assert after.manifest.build.stage_seconds["learning"] > 0  # the codes are trained on the grown tracks


def test_a_version_2_map_still_loads_and_localizes(sim_map, sim_queries, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(sim_map, old)
    manifest_path = old / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 2  # what version 2 wrote: training-free codes and VLAD, no other change
    manifest_path.write_text(json.dumps(manifest))
    assert load_map(old).manifest.format_version == 2
    assert localized_share(old, sim_queries) >= 0.9


def test_a_version_2_manifest_naming_learned_components_is_refused(learned_map, tmp_path):
    copy = tmp_path / "map"
    shutil.copytree(learned_map, copy)
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 2
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(MapError, match="learned components, which map format version 2 does not have"):
        load_map(copy)


def test_a_newer_map_is_refused_in_one_line(map_copy):
    manifest_path = map_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(MapError, match="newer or unknown") as error:
        load_map(map_copy)
    assert "\n" not in str(error.value) and "vloc build-map" in str(error.value)
