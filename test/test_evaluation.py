"""Evaluation library: alignment, ground-truth interpolation, metrics, report and bag reading.

Bags are real ROS 2 bags written here with rosbags (mcap and sqlite3); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import matplotlib.image
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from vloc_ros.bag_source import BagSource, MissingTopicError
from vloc_ros.msgs import InvalidMessage, image_to_numpy
from vloc_ros.evaluation.alignment import align, align_records, apply_alignment
from vloc_ros.evaluation.metrics import compute_metrics
from vloc_ros.evaluation.records import FrameRecord
from vloc_ros.evaluation.report import format_table, write_report
from vloc_ros.geometry import Rigid3, interpolate_poses, pose_error
from vloc_ros.tum import read_tum


def random_rigid(rng) -> Rigid3:
    return Rigid3(Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3) * 3.0)


def offset_pose(truth: Rigid3, translation_offset: float, rotation_offset_deg: float, rng) -> Rigid3:
    """A pose exactly ``translation_offset`` and ``rotation_offset_deg`` away from ``truth``."""
    direction = rng.normal(size=3)
    axis = rng.normal(size=3)
    rotation = Rotation.from_rotvec(np.radians(rotation_offset_deg) * axis / np.linalg.norm(axis)).as_matrix()
    return Rigid3(
        truth.rotation @ rotation, truth.translation + translation_offset * direction / np.linalg.norm(direction)
    )


# ---------------------------------------------------------------- alignment


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_umeyama_recovers_a_known_sim3(noise):
    rng = np.random.default_rng(3)
    truth, true_scale = random_rigid(rng), 2.7
    src = rng.uniform(-5, 5, size=(400, 3))
    dst = true_scale * src @ truth.rotation.T + truth.translation + rng.normal(scale=noise, size=src.shape)
    rigid, scale = align(src, dst, with_scale=True)
    tolerance = 1e-9 if noise == 0 else 5e-3
    assert scale == pytest.approx(true_scale, rel=tolerance)
    if noise == 0:  # arccos in pose_error cannot resolve tiny angles: compare matrices
        assert np.allclose(rigid.rotation, truth.rotation, atol=1e-12)
    else:
        assert pose_error(rigid, truth)[1] < 0.05
    assert np.allclose(rigid.translation, truth.translation, atol=1e-8 if noise == 0 else 0.02)


def test_se3_alignment_keeps_scale_one_and_recovers_a_rigid_motion():
    rng = np.random.default_rng(4)
    truth = random_rigid(rng)
    src = rng.uniform(-5, 5, size=(50, 3))
    rigid, scale = align(src, truth.transform(src), with_scale=False)
    assert scale == 1.0
    assert np.allclose(rigid.matrix, truth.matrix, atol=1e-9)
    with pytest.raises(ValueError, match="collinear"):
        align(np.outer(np.arange(5.0), [1.0, 2.0, 3.0]), np.outer(np.arange(5.0), [3.0, 2.0, 1.0]), True)


def test_apply_alignment_maps_whole_poses_and_align_records_removes_a_sim3_offset():
    rng = np.random.default_rng(5)
    truths = [random_rigid(rng) for _ in range(20)]
    world_from_map, scale = random_rigid(rng), 0.4
    map_from_world = world_from_map.inverse()
    # The same cameras in a map frame that is rotated, shifted and scaled by 1/scale.
    in_map = [
        Rigid3(map_from_world.rotation @ p.rotation, map_from_world.transform(p.translation[None])[0] / scale)
        for p in truths
    ]
    aligned = apply_alignment(in_map, *align([p.translation for p in in_map], [p.translation for p in truths], True))
    for estimate, truth in zip(aligned, truths):
        assert np.allclose(estimate.matrix, truth.matrix, atol=1e-9)

    records = [FrameRecord(float(i), pose, ground_truth=truth) for i, (pose, truth) in enumerate(zip(in_map, truths))]
    records.append(FrameRecord(99.0, None, reason="too_few_inliers", ground_truth=truths[0]))
    aligned_records, rigid, found_scale = align_records(records, with_scale=True)
    assert found_scale == pytest.approx(scale, rel=1e-9)
    assert np.allclose(rigid.matrix, world_from_map.matrix, atol=1e-9)
    assert aligned_records[-1] == records[-1]
    assert compute_metrics(aligned_records)["ape_translation_rmse"] < 1e-9


# ---------------------------------------------------------------- ground truth interpolation


def test_interpolation_is_exact_for_linear_motion_and_none_across_gaps():
    def pose_at(t):  # constant velocity and constant angular velocity about a fixed axis
        return Rigid3(
            Rotation.from_rotvec(0.3 * t * np.array([0.0, 0.6, 0.8])).as_matrix(), [1.0 + 2.0 * t, -0.5 * t, 0.25 * t]
        )

    stamps = np.concatenate([np.arange(0.0, 1.01, 0.1), np.arange(1.6, 2.01, 0.1)])  # a 0.6 s hole
    order = np.random.default_rng(0).permutation(len(stamps))  # unsorted input is fine
    poses = [pose_at(t) for t in stamps]
    queries = [0.0, 0.05, 0.37, 0.999, 1.0, 1.3, 1.75, 2.0, -0.01, 2.05]
    results = interpolate_poses(stamps[order], [poses[i] for i in order], queries, max_gap=0.15)
    for query, result in zip(queries, results):
        if 0.0 <= query <= 1.0 or 1.6 <= query <= 2.0:
            assert result is not None, query
            assert np.allclose(result.matrix, pose_at(query).matrix, atol=1e-12), query
        else:
            assert result is None, query
    # The same hole is bridged when max_gap allows it.
    assert interpolate_poses(stamps, poses, [1.3], max_gap=1.0)[0] is not None


# ---------------------------------------------------------------- metrics


def known_records() -> list[FrameRecord]:
    """10 frames with constructed errors: 2 not localized, 1 localized without ground truth."""
    rng = np.random.default_rng(7)
    # (translation offset, rotation offset deg) for localized frames with ground truth.
    offsets = {
        0: (0.01, 0.5),
        1: (0.01, 0.5),
        2: (0.1, 1.5),
        3: (0.3, 3.0),
        4: (1.0, 8.0),
        5: (0.3, 6.0),
        9: (0.04, 0.9),
    }
    records = []
    for i in range(10):
        truth = random_rigid(rng)
        timings = {"features": 0.004 * (i + 1), "search": 0.004 * (i + 1), "pose": 0.002 * (i + 1)}
        if i in offsets:
            records.append(
                FrameRecord(100.0 + 0.1 * i, offset_pose(truth, *offsets[i], rng), "", 50 + i, timings, truth)
            )
        elif i in (6, 7):
            reason = "too_few_inliers" if i == 6 else "no_candidates"
            records.append(FrameRecord(100.0 + 0.1 * i, None, reason, 3, timings, truth))
        else:  # 8: localized, but the ground truth has a hole here
            records.append(FrameRecord(100.0 + 0.1 * i, offset_pose(truth, 0.02, 0.1, rng), "", 60, timings, None))
    return records


def test_metrics_on_known_errors_are_exact():
    metrics = compute_metrics(known_records())
    assert metrics["counts"] == {
        "frames": 10,
        "evaluated": 9,
        "unevaluated": 1,
        "localized": 8,
        "localized_evaluated": 7,
        "wrong_poses": 2,
        "not_localized_by_reason": {"too_few_inliers": 1, "no_candidates": 1},
    }
    assert metrics["localized_rate"] == pytest.approx(7 / 9)
    assert [level["recall"] for level in metrics["recall"]] == pytest.approx([3 / 9, 4 / 9, 5 / 9, 7 / 9])
    assert metrics["wrong_pose_rate"] == pytest.approx(2 / 7)
    # Translation errors 0.01 0.01 0.04 0.1 0.3 0.3 1.0; rotation 0.5 0.5 0.9 1.5 3 6 8.
    assert metrics["translation_error"]["median"] == pytest.approx(0.1, abs=1e-9)
    assert metrics["translation_error"]["p90"] == pytest.approx(0.3 + 0.4 * 0.7, abs=1e-9)
    assert metrics["rotation_error_deg"]["median"] == pytest.approx(1.5, abs=1e-6)
    assert metrics["rotation_error_deg"]["p90"] == pytest.approx(6.0 + 0.4 * 2.0, abs=1e-6)
    squares = [0.01**2, 0.01**2, 0.04**2, 0.1**2, 0.3**2, 0.3**2, 1.0**2]
    assert metrics["ape_translation_rmse"] == pytest.approx(np.sqrt(np.mean(squares)), abs=1e-9)
    # Totals are 10, 20, ..., 100 ms over all 10 frames.
    assert metrics["latency_ms"]["total"]["p50"] == pytest.approx(55.0)
    assert metrics["latency_ms"]["total"]["p95"] == pytest.approx(95.5)
    assert metrics["latency_ms"]["total"]["p99"] == pytest.approx(99.1)
    assert metrics["latency_ms"]["pose"]["p50"] == pytest.approx(11.0)
    # A tighter wrong-pose bound is configurable.
    assert compute_metrics(known_records(), {"wrong_pose_bound": (0.05, 1.0)})["wrong_pose_rate"] == pytest.approx(
        4 / 7
    )


def test_nees_weighs_the_error_by_the_covariance_and_survives_alignment():
    """NEES = e^T C^-1 e over (position, world-axis rotation vector); aligning estimates from another
    frame turns their covariance with them, so the NEES comes back."""
    from dataclasses import replace

    truth = Rigid3(Rotation.from_euler("z", 20, degrees=True).as_matrix(), np.array([1.0, 2.0, 3.0]))
    turn = Rotation.from_rotvec([0.0, 0.02, 0.0]).as_matrix()  # 0.02 rad about the world's y axis
    estimate = Rigid3(turn @ truth.rotation, truth.translation + np.array([0.03, 0.0, 0.0]))
    sigmas = np.array([0.01, 0.02, 0.02, 0.01, 0.01, 0.01])
    record = FrameRecord(0.0, estimate, ground_truth=truth, covariance=np.diag(sigmas**2))
    assert record.nees() == pytest.approx((0.03 / 0.01) ** 2 + (0.02 / 0.01) ** 2)
    assert FrameRecord(0.0, estimate, ground_truth=truth).nees() is None

    rng = np.random.default_rng(3)
    anchors = [Rigid3(truth.rotation, position) for position in rng.uniform(-50.0, 50.0, (40, 3))]
    records = [record] + [FrameRecord(float(i), pose, ground_truth=pose) for i, pose in enumerate(anchors, 1)]
    other = Rigid3(Rotation.from_euler("xyz", [10, -30, 50], degrees=True).as_matrix(), np.array([5.0, -1.0, 2.0]))
    turned = np.kron(np.eye(2), other.rotation)
    elsewhere = [
        replace(
            r,
            estimate=apply_alignment([r.estimate], other)[0],
            covariance=None if r.covariance is None else turned @ r.covariance @ turned.T,
        )
        for r in records
    ]
    aligned, _, _ = align_records(elsewhere, with_scale=False)
    assert aligned[0].nees() == pytest.approx(record.nees(), rel=0.05)
    nees = compute_metrics(aligned)["nees"]
    assert nees["frames"] == 1 and nees["mean"] == pytest.approx(aligned[0].nees())
    assert nees["inside_band"] == 1.0  # 13 lies inside chi-square(6)'s 95 % band [1.24, 14.45]


def test_metrics_without_any_ground_truth_are_undefined_not_zero():
    records = [FrameRecord(float(i), Rigid3(), timings={"total": 0.01}) for i in range(3)]
    metrics = compute_metrics(records)
    assert metrics["counts"]["unevaluated"] == 3
    assert metrics["localized_rate"] is None and metrics["wrong_pose_rate"] is None
    assert metrics["translation_error"]["median"] is None and metrics["ape_translation_rmse"] is None
    assert metrics["latency_ms"]["total"]["p99"] == pytest.approx(10.0)


# ---------------------------------------------------------------- report


def test_report_writes_readable_files_and_replaces_atomically(tmp_path):
    records = known_records()
    metrics = compute_metrics(records)
    description = {"bag": "/data/run1", "image_topic": "/camera/image_raw", "config": {"max_gap": 0.1}}
    out = write_report(tmp_path / "report", records, metrics, description)

    for name in ("trajectory.png", "errors_over_time.png", "error_cdf.png", "latency.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 200, name
        rgb = (image[..., :3] * 255).astype(np.int64)
        colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
        assert len(colours) > 20, f"{name} is (nearly) a flat colour"
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == json.loads(json.dumps(metrics))
    assert len(report["frames"]) == 10 and report["description"]["bag"] == "/data/run1"
    markdown = (out / "report.md").read_text()
    assert "wrong-pose rate" in markdown and "![Trajectory (top view)](trajectory.png)" in markdown
    assert "/camera/image_raw" in markdown and '"max_gap": 0.1' in markdown

    stamps, estimates = read_tum(out / "estimate.tum")
    localized = [r for r in records if r.localized]
    assert np.allclose(stamps, [r.stamp for r in localized])
    assert all(np.allclose(a.matrix, r.estimate.matrix, atol=1e-8) for a, r in zip(estimates, localized))
    gt_stamps, _ = read_tum(out / "groundtruth.tum")
    assert np.allclose(gt_stamps, [r.stamp for r in records if r.evaluated])

    table = format_table(metrics)
    assert "recall @ 0.05 m, 1°" in table and "28.6 %" in table  # wrong-pose rate 2/7

    # A failing rewrite leaves the previous report whole and no temporary folder behind.
    with pytest.raises(KeyError):
        write_report(out, records, {"counts": {}}, description)
    assert json.loads((out / "report.json").read_text())["metrics"] == report["metrics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    # A successful rewrite replaces it.
    write_report(out, records[:5], compute_metrics(records[:5]), description)
    assert len(json.loads((out / "report.json").read_text())["frames"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# ---------------------------------------------------------------- bag source

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
NUM_IMAGES, WIDTH, HEIGHT, STEP = 40, 160, 120, 160 * 3 + 8  # 8 bytes of row padding
IMAGE_START = 100.0
K = np.array([[500.0, 0.0, 80.5], [0.0, 505.0, 60.25], [0.0, 0.0, 1.0]])
DISTORTION = (0.1, -0.05, 0.001, 0.002, 0.01)


def body_pose(t: float) -> Rigid3:  # odom_from_base_link
    return Rigid3(
        Rotation.from_euler("zyx", [0.3 * t, 0.05 * np.sin(t), 0.02]).as_matrix(), [t - 100.0, 0.5 * np.sin(t), 0.1]
    )


def map_from_odom(t: float) -> Rigid3:  # slow drift, linear in time so interpolation is exact
    return Rigid3(Rotation.from_euler("z", 0.4).as_matrix(), [1.0 + 0.2 * (t - 100.0), -2.0, 0.0])


BASE_FROM_CAMERA_LINK = Rigid3(Rotation.from_euler("z", 0.1).as_matrix(), [0.2, 0.0, 0.5])
CAMERA_LINK_FROM_OPTICAL = Rigid3(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.0, 0.01, 0.0])


def image_pixels(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def jpeg_source() -> np.ndarray:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:24, :32] = (255, 0, 0)
    image[:24, 32:] = (0, 255, 0)
    image[24:, :32] = (0, 0, 255)
    image[24:, 32:] = (255, 255, 255)
    return image


def header(t: float, frame: str):
    sec = int(np.floor(t))
    return TYPESTORE.types["std_msgs/msg/Header"](
        TYPESTORE.types["builtin_interfaces/msg/Time"](sec, int(round((t - sec) * 1e9))), frame
    )


def transform(t: float, parent: str, child: str, pose: Rigid3):
    types = TYPESTORE.types
    q = pose.quaternion_xyzw
    return types["geometry_msgs/msg/TransformStamped"](
        header(t, parent),
        child,
        types["geometry_msgs/msg/Transform"](
            types["geometry_msgs/msg/Vector3"](*pose.translation), types["geometry_msgs/msg/Quaternion"](*q)
        ),
    )


def raw_image_message(t: float, pixels: np.ndarray, encoding: str, channels: int, padding: int):
    height, width = pixels.shape[:2]
    step = width * channels + padding
    rows = np.full((height, step), 0xAB, np.uint8)  # padding bytes that must not leak into pixels
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return TYPESTORE.types["sensor_msgs/msg/Image"](
        header(t, "camera_optical"), height, width, encoding, 0, step, rows.ravel()
    )


def write_test_bag(path: Path, storage: StoragePlugin) -> None:
    """Images (raw, padded), jpeg images, camera info, PoseStamped and TF ground truth, static TF.
    Receive times lag header stamps by 50 ms, so a reader using them would be caught."""
    types = TYPESTORE.types
    lag = 0.05
    messages = []  # (receive time, topic, message)
    for i in range(NUM_IMAGES):
        t = IMAGE_START + 0.05 * i
        messages.append((t + lag, "/camera/image_raw", raw_image_message(t, image_pixels(i), "rgb8", 3, 8)))
    ok, jpeg = cv2.imencode(".jpg", jpeg_source()[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    for i in range(3):
        messages.append(
            (
                IMAGE_START + 0.3 * i + lag,
                "/camera/image_raw/compressed",
                types["sensor_msgs/msg/CompressedImage"](
                    header(IMAGE_START + 0.3 * i, "camera_optical"), "jpeg", jpeg.ravel()
                ),
            )
        )
    roi = types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
    info = types["sensor_msgs/msg/CameraInfo"](
        header(IMAGE_START, "camera_optical"),
        HEIGHT,
        WIDTH,
        "plumb_bob",
        np.array(DISTORTION),
        K.ravel(),
        np.eye(3).ravel(),
        np.zeros(12),
        0,
        0,
        roi,
    )
    messages.append((IMAGE_START + lag, "/camera/camera_info", info))
    for i in range(21):
        t = IMAGE_START + 0.1 * i
        pose = body_pose(t)
        q = pose.quaternion_xyzw
        ros_pose = types["geometry_msgs/msg/Pose"](
            types["geometry_msgs/msg/Point"](*pose.translation), types["geometry_msgs/msg/Quaternion"](*q)
        )
        messages.append((t + lag, "/gt/pose", types["geometry_msgs/msg/PoseStamped"](header(t, "odom"), ros_pose)))
        messages.append((t + lag, "/tf", types["tf2_msgs/msg/TFMessage"]([transform(t, "odom", "base_link", pose)])))
    for t in np.arange(IMAGE_START - 0.5, IMAGE_START + 2.6, 0.5):
        messages.append(
            (t + lag, "/tf", types["tf2_msgs/msg/TFMessage"]([transform(t, "/map", "odom", map_from_odom(t))]))
        )
    messages.append(
        (
            IMAGE_START - 1.0,
            "/tf_static",
            types["tf2_msgs/msg/TFMessage"](
                [
                    transform(0.0, "base_link", "camera_link", BASE_FROM_CAMERA_LINK),
                    transform(0.0, "camera_link", "camera_optical", CAMERA_LINK_FROM_OPTICAL),
                ]
            ),
        )
    )

    msgtypes = {topic: message.__msgtype__ for _, topic, message in messages}
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=TYPESTORE) for topic, msgtype in msgtypes.items()
        }
        for receive_time, topic, message in sorted(messages, key=lambda m: m[0]):
            writer.write(
                connections[topic], int(round(receive_time * 1e9)), TYPESTORE.serialize_cdr(message, msgtypes[topic])
            )


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    paths = {"mcap": root / "run_mcap", "sqlite3": root / "run_sqlite3"}
    write_test_bag(paths["mcap"], StoragePlugin.MCAP)
    write_test_bag(paths["sqlite3"], StoragePlugin.SQLITE3)
    return paths


@pytest.fixture(params=["mcap", "sqlite3"])
def test_bag(request, bags) -> Path:
    return bags[request.param]


def test_bag_images_and_camera_decode_exactly(test_bag):
    with BagSource(test_bag) as source:
        images = list(source.images("/camera/image_raw"))
        assert len(images) == NUM_IMAGES
        for i, (stamp, image) in enumerate(images):
            assert stamp == pytest.approx(IMAGE_START + 0.05 * i, abs=1e-9)  # header stamp, not receive time
            assert image.dtype == np.uint8 and np.array_equal(image, image_pixels(i))
        compressed = list(source.images("/camera/image_raw/compressed"))
        assert [s for s, _ in compressed] == pytest.approx([IMAGE_START, IMAGE_START + 0.3, IMAGE_START + 0.6])
        decoded = compressed[0][1]
        assert decoded.shape == (48, 64, 3)
        assert np.abs(decoded.astype(int) - jpeg_source()).mean() < 3.0
        assert tuple(decoded[5, 5]) > (230, 0, 0) and decoded[5, 5, 1] < 25 and decoded[5, 5, 2] < 25  # red, not blue
        camera = source.camera("/camera/camera_info")
        assert (camera.width, camera.height) == (WIDTH, HEIGHT)
        assert np.array_equal(camera.K, K) and camera.distortion == DISTORTION
        assert source.read_stops == []


def test_bag_ground_truth_from_pose_and_tf_chain_with_static_extrinsic(test_bag):
    with BagSource(test_bag) as source:
        stamps, poses = source.ground_truth({"topic": "/gt/pose"})
        assert len(stamps) == 21
        for t, pose in zip(stamps, poses):
            assert np.allclose(pose.matrix, body_pose(t).matrix, atol=1e-9)

        stamps, poses = source.ground_truth(
            {"topic": "/tf", "parent_frame": "map", "child_frame": "base_link", "camera_frame": "camera_optical"}
        )
        assert np.allclose(stamps, IMAGE_START + 0.1 * np.arange(21), atol=1e-9)
        for t, pose in zip(stamps, poses):
            expected = map_from_odom(t) @ body_pose(t) @ BASE_FROM_CAMERA_LINK @ CAMERA_LINK_FROM_OPTICAL
            assert np.allclose(pose.matrix, expected.matrix, atol=1e-9)
        # The chain can be walked against the links' direction too.
        _, inverse = source.tf_poses("base_link", "map")
        assert np.allclose(inverse[3].matrix, (map_from_odom(stamps[3]) @ body_pose(stamps[3])).inverse().matrix)


def test_bag_missing_topic_error_lists_the_topics(test_bag):
    with BagSource(test_bag) as source:
        with pytest.raises(MissingTopicError) as raised:
            list(source.images("/camera/left/image_raw"))
        message = str(raised.value)
        assert "/camera/left/image_raw" in message
        assert "/camera/image_raw  [sensor_msgs/msg/Image]" in message
        assert "/tf  [tf2_msgs/msg/TFMessage]" in message and "/gt/pose  [geometry_msgs/msg/PoseStamped]" in message
        with pytest.raises(MissingTopicError, match="it is sensor_msgs/msg/CameraInfo"):
            source.ground_truth({"topic": "/camera/camera_info"})


def test_truncated_mcap_is_read_up_to_the_damage(bags, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(bags["mcap"], damaged)
    mcap_file = next(damaged.glob("*.mcap"))
    os.truncate(mcap_file, int(mcap_file.stat().st_size * 0.7))

    for path in (damaged, mcap_file):  # the bag folder and the bare storage file
        with BagSource(path) as source:
            assert source.topics["/camera/image_raw"] == "sensor_msgs/msg/Image"
            images = list(source.images("/camera/image_raw"))
            assert 0 < len(images) < NUM_IMAGES
            for i, (stamp, image) in enumerate(images):
                assert np.array_equal(image, image_pixels(i))
            stop = source.read_stops[-1]
            assert stop.topics == ("/camera/image_raw",)
            assert stop.messages_read == len(images)
            assert stop.last_stamp == pytest.approx(images[-1][0] + 0.05, abs=1e-6)  # receive time of the last
            assert stop.error


@pytest.mark.parametrize(
    "encoding, channels, to_bytes",
    [
        ("bgr8", 3, lambda rgb: rgb[..., ::-1]),
        ("rgba8", 4, lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", 4, lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
        ("mono8", 1, lambda rgb: rgb[..., :1]),
    ],
)
def test_raw_image_encodings_with_row_padding(encoding, channels, to_bytes):
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    image = image_to_numpy(raw_image_message(1.0, to_bytes(rgb), encoding, channels, padding=3))
    assert np.array_equal(image, rgb[..., 0] if encoding == "mono8" else rgb)
    with pytest.raises(InvalidMessage, match="unsupported image encoding"):
        image_to_numpy(raw_image_message(1.0, to_bytes(rgb), "bayer_rggb8", channels, padding=0))


def test_eval_cli_offline_writes_a_report_of_the_query_bag(sim_dataset, sim_map, tmp_path):
    """`vloc eval` without --live, as `make demo` runs it: the query bag through the localizer in-process."""
    import json

    from vloc_ros.cli import main

    output, calibration = tmp_path / "report", tmp_path / "covariance.yaml"
    bag = str(sim_dataset / "bags" / "query_mcap")
    arguments = ["eval", bag, "--map", str(sim_map), "-o", str(output), "--force-loss-every", "0.5"]
    assert main([*arguments, "--calibrate-covariance", str(calibration)]) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["description"]["search_mode"] == "parallel"
    metrics = report["metrics"]
    assert metrics["counts"]["localized"] >= 15 and metrics["wrong_pose_rate"] == 0.0
    assert metrics["translation_error"]["median"] < 0.05 and metrics["rotation_error_deg"]["median"] < 1.0
    # Replayed as the node runs: through the tracker, with the bag's odometry (TF odom -> base_link).
    assert report["description"]["odometry"] == "from TF"
    tracking = metrics["tracking"]
    assert tracking["frames_by_state"].get("relocalized", 0) >= 1
    assert sum(tracking["frames_by_state"].values()) == metrics["counts"]["frames"]
    assert tracking["guided"] >= 1, "odometry carries the last pose to the next frame"
    # The sim's odometry drifts (2 %, 1 deg/m): fusing the fixes keeps map -> odom steadier than any
    # fix alone, and every forced loss was relocalized.
    map_to_odom = metrics["map_to_odom"]
    jitter = map_to_odom["jitter"]
    assert jitter["fused"]["translation"]["median"] < jitter["per_fix"]["translation"]["median"]
    relocalization = metrics["relocalization"]
    assert relocalization["forced_losses"] >= 2 and relocalization["not_relocalized"] == 0
    assert tracking["frames_by_state"]["relocalized"] >= relocalization["forced_losses"]
    # The default covariance is the real sets' calibration: conservative on the sim; calibrated on this
    # bag, the NEES is chi-square(6) on average.
    assert metrics["nees"]["mean"] < 6.0
    assert main([*arguments, "--covariance", str(calibration), "-o", str(tmp_path / "calibrated")]) == 0
    calibrated = json.loads((tmp_path / "calibrated" / "report.json").read_text())["metrics"]["nees"]
    assert 4.0 < calibrated["mean"] < 8.0, calibrated
