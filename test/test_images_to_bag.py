"""``vloc images-to-bag``: a posed image sequence becomes a bag that BagSource (and so ``vloc eval``)
reads back exactly: images, camera, ground-truth poses at the asked rate, no odometry unless asked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from real_sets import REAL_SET_FOLDERS, SHARED_DATA
from vloc_ros.bag_source import BagSource
from vloc_ros.geometry import Camera, Rigid3, pose_error
from vloc_ros.tum import read_tum, write_tum

CAMERA = Camera(64, 48, 50.0, 52.0, 31.5, 23.5)
GROUND_TRUTH = {"topic": "/ground_truth/pose", "child_frame": "base_link", "camera_frame": "camera_optical_frame"}


@pytest.fixture
def sequence(tmp_path):
    """Six random PNG frames, a TUM file with a pose each (stamps 10.0, 10.5, ...), a camera YAML."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    images = [rng.integers(0, 256, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8) for _ in range(6)]
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame-{index:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    poses = [Rigid3.from_quaternion(q / np.linalg.norm(q), rng.normal(size=3)) for q in rng.normal(size=(6, 4))]
    write_tum(tmp_path / "poses.tum", [10.0 + 0.5 * i for i in range(6)], poses)
    fields = {"width": 64, "height": 48, "fx": 50.0, "fy": 52.0, "cx": 31.5, "cy": 23.5}
    (tmp_path / "camera.yaml").write_text(yaml.safe_dump(fields))
    return folder, tmp_path / "poses.tum", tmp_path / "camera.yaml", images, poses


def read_back(bag):
    with BagSource(bag) as source:
        return (
            source.topics,
            list(source.images("/camera/image_raw")),
            source.camera("/camera/camera_info"),
            source.ground_truth(GROUND_TRUTH),
        )


def convert(run_vloc, sequence, bag, *options):
    """``vloc images-to-bag`` on the fixture's sequence into ``bag``, with ``options`` added."""
    folder, tum, intrinsics, _, _ = sequence
    return run_vloc("images-to-bag", folder, "--poses-tum", tum, "--intrinsics", intrinsics, *options, "--out", bag)


def test_the_bag_holds_the_frames_camera_and_poses_at_the_rate(sequence, tmp_path, run_vloc):
    _, _, _, images, poses = sequence
    done = convert(run_vloc, sequence, tmp_path / "sequence", "--rate", 30, "--frames", "1:6:2")
    assert done.returncode == 0, done.stderr
    topics, frames, camera, (stamps, truth) = read_back(tmp_path / "sequence")
    assert "/odom" not in topics and "/tf" not in topics  # no odometry made from the ground truth
    assert camera == CAMERA
    assert [stamp for stamp, _ in frames] == pytest.approx([1 / 30, 3 / 30, 5 / 30])
    for (_, image), expected in zip(frames, [images[1], images[3], images[5]]):
        np.testing.assert_array_equal(image, expected)
    assert stamps == pytest.approx([1 / 30, 3 / 30, 5 / 30])
    for pose, expected in zip(truth, [poses[1], poses[3], poses[5]]):
        distance, degrees = pose_error(pose, expected)
        assert distance < 1e-6 and degrees < 1e-4


def test_without_a_rate_the_tum_stamps_stamp_the_frames_and_odometry_is_on_request(sequence, tmp_path, run_vloc):
    done = convert(run_vloc, sequence, tmp_path / "sequence", "--odometry-from-ground-truth", "--storage", "sqlite3")
    assert done.returncode == 0, done.stderr
    topics, frames, _, _ = read_back(tmp_path / "sequence")
    assert topics["/odom"] == "nav_msgs/msg/Odometry"
    assert [stamp for stamp, _ in frames] == pytest.approx([10.0 + 0.5 * i for i in range(6)])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--frames": "4:2"}, "selects none"),
        ({"--frames": "0:6:0"}, "STEP must be positive"),
        ({"--rate": "-1"}, "--rate must be positive"),
        ({"--intrinsics": None}, "no intrinsics"),
    ],
)
def test_bad_arguments_are_named_and_no_bag_is_left(sequence, tmp_path, run_vloc, change, message):
    folder, tum, intrinsics, _, _ = sequence
    options = {"--poses-tum": tum, "--intrinsics": intrinsics, "--rate": "30", **change}
    arguments = [item for key, value in options.items() if value is not None for item in (key, value)]
    done = run_vloc("images-to-bag", folder, *arguments, "--out", tmp_path / "bag")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.yaml", "images", "poses.tum"]


@pytest.mark.parametrize("content", [b"not a png", cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes()])
def test_an_unreadable_or_misfit_image_leaves_no_bag(sequence, tmp_path, run_vloc, content):
    (sequence[0] / "frame-003.png").write_bytes(content)
    done = convert(run_vloc, sequence, tmp_path / "bag")
    assert done.returncode == 2 and "frame-003.png" in done.stderr, done.stderr
    assert not any(p.name.startswith((".bag", "bag")) for p in tmp_path.iterdir())


def test_a_7scenes_stretch_replays_with_its_ground_truth(tmp_path, run_vloc):
    root = SHARED_DATA / REAL_SET_FOLDERS["7scenes"]
    if not root.is_dir():
        pytest.skip(f"{root} is absent (../shared/data holds the real sets)")
    (tmp_path / "camera.yaml").write_text(
        yaml.safe_dump({"width": 640, "height": 480, "fx": 525.0, "fy": 525.0, "cx": 320.0, "cy": 240.0})
    )
    bag = tmp_path / "replay"
    done = run_vloc(
        "images-to-bag",
        root / "images",
        "--poses-tum",
        root / "groundtruth_tum.txt",
        "--intrinsics",
        tmp_path / "camera.yaml",
        "--rate",
        30,
        "--frames",
        "600:630",
        "--out",
        bag,
    )
    assert done.returncode == 0, done.stderr
    _, frames, camera, (stamps, truth) = read_back(bag)
    assert len(frames) == 30 and camera.fx == 525.0
    _, tum_poses = read_tum(root / "groundtruth_tum.txt")
    assert stamps[0] == pytest.approx(20.0)
    for pose, expected in zip(truth, tum_poses[600:630]):
        assert pose_error(pose, expected)[0] < 1e-6
