"""Maps that grow (``vloc build-map --update``, ``update_map``): a map of the first half of the sim's
mapping run takes the second half, as a full build of both would, without moving its keyframes; bad
input is refused with the old map left as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vloc_ros.geometry import pose_error
from vloc_ros.localizer import Localizer
from vloc_ros.mapping.builder import BuildError, build_map
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.mapping.update import update_map
from vloc_ros.tum import read_tum, write_tum

HALF = 20  # of the sim fixture's 40 mapping images


def _image_set(sim_dataset: Path, folder: Path, frames: slice) -> tuple[Path, Path]:
    """A folder with the mapping images ``frames`` and a TUM file of their poses beside it."""
    folder.mkdir()
    stamps, poses = read_tum(sim_dataset / "map_poses.tum")
    for path in sorted((sim_dataset / "images" / "map").glob("*.png"))[frames]:
        shutil.copy(path, folder / path.name)
    tum = folder.with_suffix(".tum")
    write_tum(tum, stamps[frames], poses[frames])
    return folder, tum


def _fingerprint(map_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(map_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(map_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def half_map(sim_dataset, tmp_path_factory) -> Path:
    """A metric map of the first HALF mapping images. Read-only: tests update copies."""
    images, tum = _image_set(sim_dataset, tmp_path_factory.mktemp("half") / "images", slice(0, HALF))
    out = images.parent / "map"
    build_map(image_folder_frames(images, sim_dataset / "camera.yaml", poses_tum=tum), out, progress=False)
    return out


@pytest.fixture()
def half_map_copy(half_map, tmp_path) -> Path:
    return Path(shutil.copytree(half_map, tmp_path / "map"))


def _localized(localization_map, sim_queries) -> int:
    """Queries localized within 5 cm and 1 deg."""
    camera, queries = sim_queries
    localizer = Localizer(localization_map)
    hits = 0
    for image, truth in queries:
        result = localizer.localize(image, camera)
        if result.ok:
            error = pose_error(result.world_from_camera, truth)
            hits += error[0] <= 0.05 and error[1] <= 1.0
    return hits


def test_cli_update_with_known_poses_grows_the_map_as_a_full_build(
    half_map_copy, half_map, sim_map, sim_dataset, sim_queries, tmp_path, run_vloc
):
    # Images 15-39: the first five are in the map already.
    images, tum = _image_set(sim_dataset, tmp_path / "second", slice(HALF - 5, None))
    completed = run_vloc(
        "build-map",
        "--update",
        half_map_copy,
        "--images",
        images,
        "--intrinsics",
        sim_dataset / "camera.yaml",
        "--poses-tum",
        tum,
        "--quiet",
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    print(completed.stdout)
    assert "already in the map        : 5 (skipped)" in completed.stdout
    before, grown, full = load_map(half_map), load_map(half_map_copy), load_map(sim_map)
    assert grown.manifest.units == "m" and "updated by triangulation" in grown.manifest.build.mode
    assert not (tmp_path / "map.cache").exists(), "the update's feature cache is removed once the map is written"

    # The map frame does not move: the old keyframes come first, with the same poses (but for rounding).
    assert [k.name for k in grown.keyframes[: before.num_keyframes]] == [k.name for k in before.keyframes]
    for old, new in zip(before.keyframes, grown.keyframes):
        np.testing.assert_allclose(old.world_from_camera.matrix, new.world_from_camera.matrix, atol=1e-9)
    # The new keyframes have their known poses.
    _, truth = read_tum(sim_dataset / "map_poses.tum")
    for keyframe in grown.keyframes[before.num_keyframes :]:
        np.testing.assert_allclose(keyframe.world_from_camera.matrix, truth[int(keyframe.name[:6])].matrix, atol=1e-6)
    assert grown.num_keyframes >= 0.95 * full.num_keyframes
    # Fewer points than a full build: keyframe keypoints outside the map's tracks cannot start one
    # (docs/benchmarks.md).
    assert grown.num_points >= 0.9 * full.num_points, (grown.num_points, full.num_points)
    assert grown.num_points > 1.5 * before.num_points
    assert _localized(grown, sim_queries) >= _localized(full, sim_queries) - 1


def test_new_images_without_poses_register_in_the_map_frame(half_map_copy, half_map, sim_dataset, tmp_path):
    """Incremental mapping with the map's keyframes held fixed: the new poses come out in the metric
    map frame, so they must agree with the ground truth the half map was triangulated from."""
    images, _ = _image_set(sim_dataset, tmp_path / "second", slice(HALF, HALF + 10))
    summary = update_map(image_folder_frames(images, sim_dataset / "camera.yaml"), half_map_copy, progress=False)
    print(summary.format())
    assert summary.images_registered == 10 and summary.previous.keyframes == HALF
    before, grown = load_map(half_map), load_map(half_map_copy)
    assert grown.num_keyframes == HALF + 10 and grown.manifest.units == "m"
    for old, new in zip(before.keyframes, grown.keyframes):
        np.testing.assert_allclose(old.world_from_camera.matrix, new.world_from_camera.matrix, atol=1e-9)
    _, truth = read_tum(sim_dataset / "map_poses.tum")
    errors = np.array([pose_error(k.world_from_camera, truth[int(k.name[:6])]) for k in grown.keyframes[HALF:]])
    print(f"new keyframes vs ground truth: median {np.median(errors, axis=0)}, max {errors.max(axis=0)} (m, deg)")
    # The worst is the last image, the furthest from the map's points: each registers on the points of
    # the ones before, as incremental mapping drifts (docs/benchmarks.md).
    assert np.all(np.median(errors, axis=0) < (0.02, 0.4)) and np.all(errors.max(axis=0) < (0.05, 1.0)), errors


def test_a_failed_update_leaves_the_old_map_as_it_was(half_map_copy, sim_dataset, tmp_path):
    import cv2

    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        cv2.imwrite(str(folder / f"noise{index}.png"), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    before = _fingerprint(half_map_copy)
    with pytest.raises(BuildError, match="none of the 4 new images registered"):
        update_map(image_folder_frames(folder, sim_dataset / "camera.yaml"), half_map_copy, progress=False)
    assert _fingerprint(half_map_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map", "map.cache", "noise"]  # no staging folder
    load_map(half_map_copy)


def test_images_all_in_the_map_are_a_clear_error(half_map_copy, sim_dataset, tmp_path):
    images, _ = _image_set(sim_dataset, tmp_path / "same", slice(0, 3))
    with pytest.raises(BuildError, match="no new images to add: of 3 given, 3 are already in"):
        update_map(image_folder_frames(images, sim_dataset / "camera.yaml"), half_map_copy, progress=False)


def test_an_older_map_format_is_refused_with_the_rebuild_line(half_map_copy, sim_dataset, tmp_path, run_vloc):
    manifest_path = half_map_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    before = _fingerprint(half_map_copy)
    images, _ = _image_set(sim_dataset, tmp_path / "second", slice(HALF, HALF + 2))
    completed = run_vloc(
        "build-map", "--update", half_map_copy, "--images", images, "--intrinsics", sim_dataset / "camera.yaml"
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert (
        "has map format version 1 (older); this vloc_ros reads versions 2, 3. Rebuild the map with `vloc build-map`."
        in (completed.stderr)
    )
    assert _fingerprint(half_map_copy) == before


def test_an_sfm_map_refuses_known_poses(sim_dataset, tmp_path):
    images, tum = _image_set(sim_dataset, tmp_path / "first", slice(0, 8))
    build_map(image_folder_frames(images, sim_dataset / "camera.yaml"), tmp_path / "sfm", progress=False)
    more, more_tum = _image_set(sim_dataset, tmp_path / "more", slice(8, 10))
    with pytest.raises(BuildError, match="arbitrary scale"):
        update_map(
            image_folder_frames(more, sim_dataset / "camera.yaml", poses_tum=more_tum), tmp_path / "sfm", progress=False
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((), "give --output for a new map, or --update MAP"),
        (("--update", "nowhere", "--config", "build.yaml"), "--update builds with the map's own build config"),
        (("--update", "nowhere", "--binarizer", "learned"), "--update builds with the map's own build config"),
        (("--update", "nowhere"), "no map at nowhere"),
    ],
)
def test_cli_update_usage_errors(sim_dataset, arguments, message, run_vloc):
    completed = run_vloc(
        "build-map", "--images", sim_dataset / "images" / "map", "--intrinsics", sim_dataset / "camera.yaml", *arguments
    )
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
