"""Localizer core: accuracy on the synthetic world, the paper's ablation, rejections with a reason,
the map/extractor contract, the covariance, and real image sets from ../shared/data."""

import json

import numpy as np
import pytest

from vloc_ros.geometry import Camera, pose_error
from vloc_ros.localizer import LocalizationStatus, Localizer, MapMismatchError
from vloc_ros.mapping.builder import build_map
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.sources import image_folder_frames, list_images, load_intrinsics, read_image_rgb
from vloc_ros.search import SearchMode
from vloc_ros.sim import HARD_QUERY, generate
from vloc_ros.tum import read_tum


@pytest.fixture(scope="module")
def far_off_world(tmp_path_factory):
    """(map, camera, [(image, world_from_camera)]): a 60-image map and 30 queries up to 0.6 m and 45 deg
    off the mapping path under harsh light, blur and occluders (``HARD_QUERY``; bench_localizer --hard)."""
    out = tmp_path_factory.mktemp("far_off")
    generate({"map_frames": 60, "query_frames": 30, "query": HARD_QUERY, "bags": {"storages": []}}, out / "world")
    build_map(
        image_folder_frames(
            out / "world" / "images" / "map", out / "world" / "camera.yaml", poses_tum=out / "world" / "map_poses.tum"
        ),
        out / "map",
        progress=False,
    )
    _, truth = read_tum(out / "world" / "query_poses.tum")
    images = [read_image_rgb(p) for p in sorted((out / "world" / "images" / "query").glob("*.png"))]
    return load_map(out / "map"), load_intrinsics(out / "world" / "camera.yaml"), list(zip(images, truth))


@pytest.fixture(scope="module")
def sim_localization_map(sim_map):
    return load_map(sim_map)


def recall(localizer: Localizer, camera: Camera, queries, max_translation=0.05, max_rotation_deg=1.0):
    hits, errors = 0, []
    for image, truth in queries:
        result = localizer.localize(image, camera)
        if result.ok:
            errors.append(pose_error(result.world_from_camera, truth))
            hits += errors[-1][0] <= max_translation and errors[-1][1] <= max_rotation_deg
    return hits / len(queries), errors


def test_synthetic_queries_localize_within_5cm_and_1deg(sim_localization_map, sim_queries):
    camera, queries = sim_queries
    rate, errors = recall(Localizer(sim_localization_map), camera, queries)
    print(
        f"recall@(5 cm, 1 deg) = {rate:.3f}; median errors "
        f"{np.median([e[0] for e in errors]) * 100:.2f} cm, {np.median([e[1] for e in errors]):.3f} deg"
    )
    assert rate >= 0.95


# parallel >= each branch is tested in test_search.py, which forces a retrieval failure so that the
# branches differ.


def test_far_off_queries_parallel_recalls_at_least_each_branch_and_none_is_ambiguous(far_off_world):
    localization_map, camera, queries = far_off_world
    rates = {
        mode: recall(Localizer(localization_map, {"search": {"mode": mode}}), camera, queries)[0]
        for mode in (SearchMode.GLOBAL_ONLY, SearchMode.LOCAL_ONLY)
    }
    localizer = Localizer(localization_map)
    results = [localizer.localize(image, camera) for image, _ in queries]
    errors = [pose_error(r.world_from_camera, truth) if r.ok else None for r, (_, truth) in zip(results, queries)]
    rates["parallel"] = np.mean([e is not None and e[0] <= 0.05 and e[1] <= 1.0 for e in errors])
    print("far-off queries, recall@(5 cm, 1 deg) by search mode:", rates)
    assert rates["parallel"] >= max(rates["global_only"], rates["local_only"])
    assert rates["parallel"] >= 0.9
    # The courtyard has no repeated structure: a second pose found among the leftover matches is the
    # same pose fitted less well (two of these queries, before verification's shared-inlier test).
    assert not any("ambiguous" in r.reason for r in results), [r.reason for r in results if not r.ok]


def test_result_carries_inliers_timings_and_a_sane_covariance(sim_localization_map, sim_queries):
    camera, queries = sim_queries
    image, truth = queries[0]
    result = Localizer(sim_localization_map).localize(image, camera)
    assert result.status is LocalizationStatus.OK and result.reason == ""
    assert result.num_inliers >= 12 and len(result.inlier_keypoints) == result.num_inliers
    # Inliers reproject onto their keypoints with the returned pose.
    pixels, in_front = camera.project(result.camera_from_world.transform(result.inlier_points3d))
    assert in_front.all() and np.median(np.linalg.norm(pixels - result.inlier_keypoints, axis=1)) < 2.0
    assert {"extract", "pose"} <= set(result.timings)
    covariance = result.covariance
    assert covariance.shape == (6, 6) and np.allclose(covariance, covariance.T)
    assert np.all(np.linalg.eigvalsh(covariance) > 0)
    position_sigma = np.sqrt(np.diag(covariance)[:3])
    translation_error, _ = pose_error(result.world_from_camera, truth)
    assert position_sigma.max() < 0.05  # a well-constrained frame claims centimetre precision...
    assert translation_error < 10 * max(position_sigma.max(), 1e-3)  # ...and is not wildly overconfident
    json.dumps(result.summary())


@pytest.mark.parametrize("kind", ["black", "tiny", "outside_the_map"])
def test_unlocalizable_images_say_why(sim_localization_map, sim_queries, kind):
    camera, _ = sim_queries
    if kind == "black":
        image = np.zeros((camera.height, camera.width, 3), np.uint8)
    elif kind == "tiny":
        camera = Camera(8, 6, 5.0, 5.0, 3.5, 2.5)
        image = np.full((6, 8, 3), 128, np.uint8)
    else:  # a real photograph that is not part of the synthetic world
        from skimage import data

        import cv2

        image = cv2.resize(data.astronaut(), (camera.width, camera.height))
    result = Localizer(sim_localization_map).localize(image, camera)
    assert result.status is LocalizationStatus.NOT_LOCALIZED
    assert result.world_from_camera is None and result.covariance is None
    assert result.reason, "a rejection must say why"
    print(kind, "->", result.reason)


def test_image_that_does_not_fit_its_camera_is_a_caller_error(sim_localization_map, sim_queries):
    camera, queries = sim_queries
    with pytest.raises(ValueError, match="does not match camera"):
        Localizer(sim_localization_map).localize(queries[0][0][:100], camera)


@pytest.mark.parametrize(
    ("config", "unknown", "valid"),
    [
        ({"min_inlier": 30}, "min_inlier", "min_inliers"),  # a misspelt key
        ({"pose": {"ransac_max_error": 2.0}}, "ransac_max_error", "ransac_max_error_px"),  # nested
        ({"verification": {"min_spred": 0.5}}, "min_spred", "min_spread"),
        ({"search": {"mode": "both"}}, "both", "local_only"),  # a mode that does not exist
    ],
)
def test_misspelt_config_is_refused_naming_the_valid_keys(sim_localization_map, config, unknown, valid):
    with pytest.raises(ValueError, match=unknown) as refused:
        Localizer(sim_localization_map, config)
    assert valid in str(refused.value)


def test_query_extractor_must_match_the_map(sim_localization_map):
    from vloc_ros.features import create_extractor

    with pytest.raises(MapMismatchError, match="max_keypoints|weights|name|descriptor"):
        Localizer(sim_localization_map, extractor=create_extractor({"name": "aliked"}))


def test_localize_cli_writes_tum_and_json_lines(sim_map, sim_dataset, tmp_path, run_vloc):
    images = sorted((sim_dataset / "images" / "query").glob("*.png"))[:3]
    completed = run_vloc(
        "localize",
        "--map",
        sim_map,
        "--intrinsics",
        sim_dataset / "camera.yaml",
        "--output",
        tmp_path / "poses.tum",
        *images,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in images]
    assert all(r["status"] == "OK" and "extract" in r["timings_ms"] for r in records)
    _, poses = read_tum(tmp_path / "poses.tum")
    _, truth = read_tum(sim_dataset / "query_poses.tum")
    for pose, expected in zip(poses, truth):
        assert pose_error(pose, expected)[0] < 0.05


def test_real_llff_beer_odd_frames_against_the_even_frame_map(llff_beer_map, shared_data):
    """Scale-free and local. The reference model (like ours) jumps by ~170 deg and metres between some
    consecutive frames (the clip is cut segments of a near-symmetric scene), and our SfM map registers
    some keyframes mirrored against their neighbours (0052 against 0054: 180 deg off the reference's
    relative pose), so no single Sim3 aligns the two models and no one keyframe suits every query.
    Compare each localized odd frame's pose relative to the map keyframe that sees most of its inlier
    points (the part of the map it was localized in) with the reference's relative pose: rotation
    directly, translation after one global scale. Where keyframes tie for that part of the map (within
    5 % of the most shared points; frame 0035 shares as many with 0036 as with the mirrored 0034), the
    pose is compared with each and judged by the best: the map, not the pose, is what disagrees."""
    map_dir, _, camera, truth = llff_beer_map
    localizer = Localizer(load_map(map_dir))
    keyframes = localizer.map.keyframes
    offsets, point_keyframes = localizer.map.arrays["point_keyframes_offsets"], localizer.map.arrays["point_keyframes"]
    odd = list_images(shared_data / "llff_beer" / "images")[1::2]
    relatives = []  # (ours, reference) poses of the query relative to the keyframe it shares most points with
    for path in odd:
        result = localizer.localize(read_image_rgb(path), camera)
        if result.ok:
            seen = np.concatenate([point_keyframes[offsets[p] : offsets[p + 1]] for p in result.inlier_point_ids])
            shared = np.bincount(seen)
            candidates = [
                (
                    keyframe.world_from_camera.inverse() @ result.world_from_camera,
                    truth[keyframe.name].inverse() @ truth[path.name],
                )
                for keyframe in (keyframes[k] for k in np.flatnonzero(shared >= 0.95 * shared.max()))
            ]
            relatives.append(min(candidates, key=lambda pair: pose_error(*pair)[1]))
    rotation_errors = np.array([pose_error(ours, reference)[1] for ours, reference in relatives])
    scale = np.median([np.linalg.norm(r.translation) / max(np.linalg.norm(o.translation), 1e-12) for o, r in relatives])
    translation_errors = np.array([np.linalg.norm(scale * o.translation - r.translation) for o, r in relatives])
    step = np.median([np.linalg.norm(r.translation) for _, r in relatives])
    print(
        f"llff_beer: {len(relatives)}/{len(odd)} localized; relative rotation error median "
        f"{np.median(rotation_errors):.2f} deg (max {rotation_errors.max():.2f}), translation error median "
        f"{np.median(translation_errors):.3f} (median keyframe distance {step:.3f}, reference units)"
    )
    # Repetitive floor tiles around a near-symmetric can: without verification every frame gets a pose
    # and several are flipped by ~180 deg; with it most are published (measured 30/35), all right.
    assert len(relatives) >= 0.75 * len(odd)
    assert rotation_errors.max() < 5.0, "a wrong pose was published"
    assert np.median(rotation_errors) < 1.0
    assert np.median(translation_errors) < 0.25 * step


def test_profiles_auto_is_fast_on_a_cpu_and_accurate_rematches_keyframes(sim_localization_map, sim_queries):
    """The accurate profile adds LightGlue matches against covisible keyframes to the search's and uses
    its own keypoint count and RANSAC threshold; auto picks fast where the network runs on the CPU."""
    from vloc_ros.localizer import Profile

    camera, queries = sim_queries
    assert Localizer(sim_localization_map, {"inference": {"backend": "torch_cpu"}}).profile is Profile.FAST
    fast = Localizer(sim_localization_map, {"profile": "fast"})
    accurate = Localizer(sim_localization_map, {"profile": "accurate"})
    assert accurate.profile is Profile.ACCURATE and accurate.rematch_pose_config.ransac_max_error_px == 20.0
    tuned = Localizer(sim_localization_map, {"profile": "accurate", "rematch": {"ransac_max_error_px": {"xfeat": 8.0}}})
    assert tuned.rematch_pose_config.ransac_max_error_px == 8.0  # per extractor: the others keep theirs
    assert accurate.extractor.config["max_keypoints"] == 2048 and fast.extractor.config["max_keypoints"] == 1024
    for image, truth in queries[:3]:
        quick, careful = fast.localize(image, camera), accurate.localize(image, camera)
        assert "rematch" in careful.timings and "rematch" not in quick.timings
        assert careful.ok and careful.num_matches > quick.num_matches
        translation, rotation = pose_error(careful.world_from_camera, truth)
        assert translation < 0.05 and rotation < 1.0


def test_keyframe_matcher_lifts_a_keyframe_image_to_its_own_points(sim_localization_map, sim_dataset):
    """A map image matched against its own keyframe's observations: the matches are its keypoints of
    those observations, and covisibility votes put that keyframe first."""
    from vloc_ros.features import create_extractor, create_matcher
    from vloc_ros.search.keyframe_matching import KeyframeMatcher

    arrays = sim_localization_map.arrays
    keyframes = sim_localization_map.keyframes
    matcher = KeyframeMatcher(
        arrays, [(k.camera.width, k.camera.height) for k in keyframes], create_matcher({"name": "mutual_nn"})
    )
    index = len(keyframes) // 2
    start, end = arrays["keyframe_observations_offsets"][index : index + 2]
    assert list(matcher.covisible_keyframes(arrays["observation_points"][start:end], 1)) == [index]
    extractor = create_extractor(sim_localization_map.manifest.extractor.config)
    features = extractor.extract(read_image_rgb(sim_dataset / "images" / "map" / keyframes[index].name))
    query_rows, point_ids = matcher.match(features, np.array([index]))
    assert len(point_ids) > 0.8 * (end - start)
    observed = dict(zip(arrays["observation_points"][start:end].tolist(), arrays["observation_keypoints"][start:end]))
    offsets = np.array([np.linalg.norm(features.keypoints[row] - observed[p]) for row, p in zip(query_rows, point_ids)])
    assert np.mean(offsets < 0.5) > 0.95
