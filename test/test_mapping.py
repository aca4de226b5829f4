"""Map builder: geometry against the synthetic world's true scene, the artifact's validation,
resume after a kill, bad input, and real image sets from ../shared/data."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_killed_once_cached

from vloc_ros.config import to_dict
from vloc_ros.evaluation.alignment import align
from vloc_ros.geometry import Camera
from vloc_ros.mapping.builder import BuildError, build_map
from vloc_ros.mapping.map_format import MapError, load_map
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.tum import read_tum, write_tum


def distance_to_scene(points: np.ndarray, scene: dict) -> np.ndarray:
    """Distance of each point to the nearest textured quad of the synthetic scene."""
    best = np.full(len(points), np.inf)
    for surface in scene["surfaces"]:
        c0, c1, _, c3 = (np.asarray(c, dtype=np.float64) for c in surface["corners"])
        e1, e2 = c1 - c0, c3 - c0
        u = np.clip((points - c0) @ e1 / (e1 @ e1), 0, 1)
        v = np.clip((points - c0) @ e2 / (e2 @ e2), 0, 1)
        closest = c0 + u[:, None] * e1 + v[:, None] * e2
        best = np.minimum(best, np.linalg.norm(points - closest, axis=1))
    return best


def median_track_error_px(map_dir: Path) -> float:
    import pycolmap

    model = pycolmap.Reconstruction(str(map_dir / "sparse"))
    return float(np.median([point.error for point in model.points3D.values()]))


def test_known_poses_give_a_metric_map_on_the_scene_geometry(sim_map, sim_dataset):
    localization_map = load_map(sim_map)
    manifest = localization_map.manifest
    num_images = len(list((sim_dataset / "images" / "map").glob("*.png")))
    assert manifest.units == "m"
    assert localization_map.num_keyframes >= 0.95 * num_images
    assert median_track_error_px(sim_map) < 1.0
    assert localization_map.num_points > 2000
    distances = distance_to_scene(
        localization_map.arrays["points_xyz"], json.loads((sim_dataset / "scene.json").read_text())
    )
    assert np.median(distances) < 0.01, np.median(distances)
    # Measured 91 %: the rest are wrong matches on repetitive texture that stay within COLMAP's 4 px
    # filter at small triangulation angles (6-11 cm off the wall); RANSAC absorbs them.
    assert np.mean(distances < 0.05) > 0.85
    # Keyframe poses are the given ground truth, in the map frame.
    _, truth = read_tum(sim_dataset / "map_poses.tum")
    for keyframe in localization_map.keyframes[:5]:
        index = int(Path(keyframe.name).stem)
        assert np.allclose(keyframe.world_from_camera.matrix, truth[index].matrix, atol=1e-6)
    # The typed manifest writes back exactly the JSON it was read from.
    assert to_dict(manifest) == json.loads((sim_map / "manifest.json").read_text())


def test_sfm_without_poses_matches_the_scene_after_sim3(sim_dataset, tmp_path):
    frames = image_folder_frames(sim_dataset / "images" / "map", sim_dataset / "camera.yaml")
    summary = build_map(frames, tmp_path / "sfm", progress=False)
    assert summary.images_registered >= 0.95 * summary.images_given
    localization_map = load_map(tmp_path / "sfm")
    assert localization_map.manifest.units == "arbitrary"
    assert median_track_error_px(tmp_path / "sfm") < 1.0
    _, truth = read_tum(sim_dataset / "map_poses.tum")
    centres = np.array([k.world_from_camera.translation for k in localization_map.keyframes])
    true_centres = np.array([truth[int(Path(k.name).stem)].translation for k in localization_map.keyframes])
    rigid, scale = align(centres, true_centres, with_scale=True)
    aligned = scale * localization_map.arrays["points_xyz"] @ rigid.rotation.T + rigid.translation
    distances = distance_to_scene(aligned, json.loads((sim_dataset / "scene.json").read_text()))
    assert np.median(distances) < 0.02, np.median(distances)


def test_cli_builds_a_metric_map_from_a_bag(sim_dataset, tmp_path, run_vloc):
    out = tmp_path / "bagmap"
    completed = run_vloc(
        "build-map",
        "--bag",
        sim_dataset / "bags" / "map_mcap",
        "--pose-topic",
        "/ground_truth/pose",
        "--camera-frame",
        "camera_optical_frame",
        "--every-nth",
        "2",
        "--min-interval-s",
        "0.15",
        "--output",
        out,
        "--quiet",
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "images registered / given" in completed.stdout
    localization_map = load_map(out)
    assert localization_map.manifest.units == "m"
    # Bag poses (base_link + /tf_static extrinsic) compose to the camera ground truth.
    stamps, truth = read_tum(sim_dataset / "map_poses.tum")
    by_stamp = {round(s, 6): pose for s, pose in zip(stamps, truth)}
    for keyframe in localization_map.keyframes:
        expected = by_stamp[round(float(keyframe.name), 6)]
        assert np.allclose(keyframe.world_from_camera.matrix, expected.matrix, atol=1e-5)


def test_bag_without_the_topic_names_the_topics_it_has(sim_dataset, tmp_path, run_vloc):
    completed = run_vloc(
        "build-map", "--bag", sim_dataset / "bags" / "map_mcap", "--image-topic", "/nope", "--output", tmp_path / "m"
    )
    assert completed.returncode == 2
    assert "/nope" in completed.stderr and "/camera/image_raw" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_array", "corrupt or truncated"),
        ("delete_array", "missing"),
        ("old_version", "Rebuild the map"),
        ("garbage_manifest", "corrupt"),
        ("no_manifest", "manifest.json is missing"),
    ],
)
def test_damaged_maps_give_a_clear_error(map_copy, damage, message):
    target = map_copy / "arrays" / "points_xyz.npy"
    manifest_path = map_copy / "manifest.json"
    if damage == "truncate_array":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "delete_array":
        target.unlink()
    elif damage == "old_version":
        manifest = json.loads(manifest_path.read_text())
        manifest["format_version"] = 0
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "garbage_manifest":
        manifest_path.write_bytes(b"\x00\xffnot json")
    else:
        manifest_path.unlink()
    with pytest.raises(MapError, match=message):
        load_map(map_copy)


def test_truncated_array_without_checksums_is_still_a_map_error(map_copy):
    target = map_copy / "arrays" / "point_descriptors.npy"
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(MapError):
        load_map(map_copy, verify_checksums=False)


def _small_image_set(sim_dataset: Path, folder: Path, count: int) -> tuple[Path, Path]:
    """The first ``count`` mapping images and their poses."""
    folder.mkdir()
    stamps, poses = read_tum(sim_dataset / "map_poses.tum")
    for path in sorted((sim_dataset / "images" / "map").glob("*.png"))[:count]:
        shutil.copy(path, folder / path.name)
    write_tum(folder.parent / "poses.tum", stamps[:count], poses[:count])
    return folder, folder.parent / "poses.tum"


def test_killed_build_resumes_from_the_feature_cache(sim_dataset, tmp_path):
    images, poses = _small_image_set(sim_dataset, tmp_path / "images", 16)
    out = tmp_path / "resumed"
    arguments = ["--images", images, "--intrinsics", sim_dataset / "camera.yaml", "--poses-tum", poses]
    cached = build_killed_once_cached(arguments, out, 4)
    assert cached >= 4, "the build never got far enough to cache features"
    assert not out.exists(), "a killed build must not leave a map behind"
    assert not list(tmp_path.glob(".resumed.*")), "no half-written map directory either"

    frames = image_folder_frames(images, sim_dataset / "camera.yaml", poses_tum=poses)
    summary = build_map(frames, out, progress=False)
    assert summary.features_from_cache >= cached - 1  # the file being written at the kill may be lost
    assert summary.images_registered == 16
    load_map(out)
    assert not (tmp_path / "resumed.cache").exists(), "the resume cache is removed once the map is complete"


def test_unreadable_images_are_skipped_and_named(sim_dataset, tmp_path):
    images, poses = _small_image_set(sim_dataset, tmp_path / "images", 8)
    (images / "000008.png").write_bytes(b"not a png at all")
    stamps, truth = read_tum(poses)
    write_tum(poses, list(stamps) + [stamps[-1] + 0.1], truth + [truth[-1]])
    frames = image_folder_frames(images, sim_dataset / "camera.yaml", poses_tum=poses)
    summary = build_map(frames, tmp_path / "map", progress=False)
    assert list(summary.skipped_images) == ["000008.png"]
    assert "cannot decode" in summary.skipped_images["000008.png"]
    assert summary.images_given == 9 and summary.images_registered == 8
    assert "000008.png" in summary.format()


def test_misspelt_build_config_is_a_usage_error_naming_the_valid_keys(sim_dataset, tmp_path, run_vloc):
    config = tmp_path / "build.yaml"
    config.write_text("pairs:\n  sequential_windw: 3\n")
    completed = run_vloc(
        "build-map", "--bag", sim_dataset / "bags" / "map_mcap", "--config", config, "--output", tmp_path / "m"
    )
    assert completed.returncode == 2
    assert "sequential_windw" in completed.stderr and "sequential_window" in completed.stderr
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match=r"\['min_registered_image'\]"):
        build_map([], tmp_path / "m", {"min_registered_image": 3}, progress=False)


def test_too_few_registered_images_is_a_clear_error_and_writes_nothing(sim_dataset, tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    import cv2

    for index in range(5):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    frames = image_folder_frames(folder, sim_dataset / "camera.yaml")
    with pytest.raises(BuildError, match="registered"):
        build_map(frames, tmp_path / "map", progress=False)
    assert not (tmp_path / "map").exists()
    assert not list(tmp_path.glob(".map.*"))


def test_real_llff_beer_even_frames_register(llff_beer_map):
    map_dir, summary, _, _ = llff_beer_map
    print(summary.format())
    assert summary.images_registered >= 0.9 * summary.images_given
    assert median_track_error_px(map_dir) < 1.5


def test_real_ngp_fox_with_distortion(shared_data, tmp_path):
    dataset = shared_data / "ngp_fox"
    meta = json.loads((dataset / "transforms.json").read_text())
    camera = Camera(
        int(meta["w"]),
        int(meta["h"]),
        meta["fl_x"],
        meta["fl_y"],
        meta["cx"] - 0.5,
        meta["cy"] - 0.5,
        (meta.get("k1", 0.0), meta.get("k2", 0.0), meta.get("p1", 0.0), meta.get("p2", 0.0), 0.0),
    )
    assert camera.has_distortion
    (tmp_path / "camera.yaml").write_text(json.dumps(camera.to_dict()))
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((dataset / "images").iterdir())[::2]:
        os.symlink(path, folder / path.name)
    frames = image_folder_frames(folder, tmp_path / "camera.yaml")
    summary = build_map(frames, tmp_path / "fox", progress=False)
    print(summary.format())
    assert summary.images_registered >= 0.9 * summary.images_given
    assert median_track_error_px(tmp_path / "fox") < 1.5


def test_pairs_grow_linearly_and_retrieval_blocks_do_not_change_them(monkeypatch):
    from vloc_ros.mapping import pairs

    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(3000, 32)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    whole = pairs.select_pairs(descriptors, sequential_window=4, retrieval_top_k=5)
    assert len(whole) <= 3000 * (4 + 5)
    assert all(i < j for i, j in whole) and whole == sorted(set(whole))
    assert {(i, i + 1) for i in range(2999)} <= set(whole)
    monkeypatch.setattr(pairs, "RETRIEVAL_BLOCK", 7)
    assert pairs.select_pairs(descriptors, sequential_window=4, retrieval_top_k=5) == whole
    # An update pairs only the new images (from 2000 on), sequentially among themselves.
    update = pairs.select_pairs(descriptors, sequential_window=4, retrieval_top_k=5, matched=2000)
    assert all(j >= 2000 for _, j in update) and (1999, 2000) not in update
