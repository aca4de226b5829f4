"""Per-image cameras: COLMAP cameras as ours, a COLMAP model's cameras for build-map, and per-image
cameras (YAML directory, COLMAP model, none) for ``vloc localize``."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from PIL import Image

from vloc_ros.geometry import Camera, Rigid3
from vloc_ros.mapping.sources import SourceError, image_folder_frames, load_intrinsics

SMALL_CAMERA = Camera(64, 48, 60.0, 62.0, 31.5, 23.25)
DISTORTED_CAMERA = Camera(80, 60, 70.0, 70.0, 39.75, 29.5, (-0.1, 0.02, 0.001, -0.002, 0.003))


def assert_same_camera(actual: Camera, expected: Camera) -> None:
    assert (actual.width, actual.height) == (expected.width, expected.height)
    assert np.allclose(
        [actual.fx, actual.fy, actual.cx, actual.cy, *actual.distortion],
        [expected.fx, expected.fy, expected.cx, expected.cy, *expected.distortion],
        atol=1e-12,
    )


def write_colmap_model(directory: Path, views: dict[str, tuple[pycolmap.Camera, Rigid3]]) -> Path:
    """A binary COLMAP model of posed ``views`` (image name -> (camera, world_from_camera)), one camera each."""
    reconstruction = pycolmap.Reconstruction()
    for image_id, (name, (colmap_camera, world_from_camera)) in enumerate(views.items(), start=1):
        colmap_camera.camera_id = image_id
        reconstruction.add_camera_with_trivial_rig(colmap_camera)
        camera_from_world = world_from_camera.inverse()
        reconstruction.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=image_id, image_id=image_id),
            pycolmap.Rigid3d(pycolmap.Rotation3d(camera_from_world.rotation), camera_from_world.translation),
        )
    directory.mkdir(parents=True)
    reconstruction.write(str(directory))
    return directory


def write_image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((height, width, 3), np.uint8))
    return path


@pytest.mark.parametrize("camera", [SMALL_CAMERA, DISTORTED_CAMERA], ids=["pinhole", "distorted"])
def test_from_pycolmap_inverts_to_pycolmap(camera):
    assert_same_camera(Camera.from_pycolmap(camera.to_pycolmap()), camera)


@pytest.mark.parametrize(
    "model, params",
    [
        ("SIMPLE_PINHOLE", [70.0, 40.0, 30.0]),
        ("SIMPLE_RADIAL", [70.0, 40.0, 30.0, -0.2]),
        ("RADIAL", [70.0, 40.0, 30.0, -0.2, 0.05]),
        ("OPENCV", [70.0, 72.0, 40.0, 30.0, -0.2, 0.05, 0.001, -0.002]),
    ],
)
def test_from_pycolmap_projects_as_colmap_does(model, params):
    colmap_camera = pycolmap.Camera(model=model, width=80, height=60, params=params)
    points = np.array([[0.1, -0.2, 1.0], [-0.3, 0.25, 1.5], [0.0, 0.0, 2.0]])
    ours, _ = Camera.from_pycolmap(colmap_camera).project(points)
    # COLMAP's first pixel centre is (0.5, 0.5), ours (0, 0).
    assert np.allclose(colmap_camera.img_from_cam(points) - 0.5, ours, atol=1e-9)


@pytest.mark.parametrize(
    "model, params",
    [
        ("OPENCV_FISHEYE", [70.0, 70.0, 40.0, 30.0, 0.1, 0.0, 0.0, 0.0]),
        ("FULL_OPENCV", [70.0, 70.0, 40.0, 30.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0]),
    ],
)
def test_from_pycolmap_refuses_distortion_plumb_bob_cannot_hold(model, params):
    colmap_camera = pycolmap.Camera(model=model, width=80, height=60, params=params)
    with pytest.raises(ValueError, match=f"{model}.*supported: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL"):
        Camera.from_pycolmap(colmap_camera)


@pytest.fixture()
def two_camera_folder(tmp_path) -> tuple[Path, Path, dict[str, Rigid3]]:
    """(image folder, COLMAP model, poses by name): a.png by SMALL_CAMERA and sub/b.png by
    DISTORTED_CAMERA in the model, c.jpg (no EXIF) not in it."""
    folder = tmp_path / "images"
    write_image(folder / "a.png", SMALL_CAMERA.width, SMALL_CAMERA.height)
    write_image(folder / "sub" / "b.png", DISTORTED_CAMERA.width, DISTORTED_CAMERA.height)
    write_image(folder / "c.jpg", 32, 24)
    poses = {"a.png": Rigid3(translation=[1.0, 2.0, 3.0]), "sub/b.png": Rigid3(np.diag([1.0, -1.0, -1.0]))}
    model = write_colmap_model(
        tmp_path / "model",
        {
            "a.png": (SMALL_CAMERA.to_pycolmap(), poses["a.png"]),
            "sub/b.png": (DISTORTED_CAMERA.to_pycolmap(), poses["sub/b.png"]),
        },
    )
    return folder, model, poses


def test_each_image_gets_its_colmap_camera_and_pose(two_camera_folder):
    folder, model, poses = two_camera_folder
    (folder / "c.jpg").unlink()
    frames = {frame.name: frame for frame in image_folder_frames(folder, poses_colmap=model)}
    assert sorted(frames) == ["a.png", "sub/b.png"]
    assert_same_camera(frames["a.png"].camera, SMALL_CAMERA)
    assert_same_camera(frames["sub/b.png"].camera, DISTORTED_CAMERA)
    for name, pose in poses.items():
        assert np.allclose(frames[name].world_from_camera.matrix, pose.matrix, atol=1e-12)


def test_an_image_outside_the_model_takes_its_exif_camera_else_is_named(two_camera_folder):
    folder, model, _ = two_camera_folder
    with pytest.raises(SourceError, match=r"no intrinsics for .*c\.jpg: it is not in COLMAP model"):
        image_folder_frames(folder, poses_colmap=model)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 36  # 35 mm-equivalent focal length: fx = image width
    Image.new("RGB", (32, 24)).save(folder / "c.jpg", exif=exif)
    frames = {frame.name: frame for frame in image_folder_frames(folder, poses_colmap=model)}
    assert frames["c.jpg"].world_from_camera is None
    assert_same_camera(frames["c.jpg"].camera, Camera(32, 24, 32.0, 32.0, 15.5, 11.5))


def test_intrinsics_override_the_colmap_cameras(two_camera_folder, tmp_path):
    folder, model, poses = two_camera_folder
    intrinsics = tmp_path / "camera.yaml"
    intrinsics.write_text(json.dumps(SMALL_CAMERA.to_dict()))  # JSON is YAML
    frames = {frame.name: frame for frame in image_folder_frames(folder, intrinsics, poses_colmap=model)}
    assert all(frame.camera == SMALL_CAMERA for frame in frames.values())
    assert frames["c.jpg"].world_from_camera is None
    assert np.allclose(frames["sub/b.png"].world_from_camera.matrix, poses["sub/b.png"].matrix, atol=1e-12)


def test_a_colmap_camera_without_plumb_bob_equivalent_names_image_and_model(tmp_path):
    folder = tmp_path / "images"
    write_image(folder / "fisheye.png", 80, 60)
    fisheye = pycolmap.Camera(model="OPENCV_FISHEYE", width=80, height=60, params=[70, 70, 40, 30, 0.1, 0, 0, 0])
    model = write_colmap_model(tmp_path / "model", {"fisheye.png": (fisheye, Rigid3())})
    with pytest.raises(SourceError, match=rf"fisheye\.png in COLMAP model {model}.*OPENCV_FISHEYE"):
        image_folder_frames(folder, poses_colmap=model)


# vloc localize: three query images, the first with its true camera, the second with a camera of
# another size (the localizer refuses it), the third with none; each gets its own JSON line.


def localize_records(run_vloc, sim_map, images: list[Path], tmp_path: Path, *camera_args) -> list[dict]:
    completed = run_vloc(
        "localize", "--map", sim_map, *camera_args, "--output", tmp_path / "poses.tum", *images, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [record["image"] for record in records] == [str(path) for path in images]
    return records


def assert_per_image_cameras_used(records: list[dict]) -> None:
    assert records[0]["status"] == "OK", records[0]
    assert records[1]["status"] == "ERROR" and "does not match camera 320x240" in records[1]["reason"]
    assert records[2]["status"] == "ERROR" and records[2]["reason"].startswith("no intrinsics for ")


@pytest.fixture(scope="module")
def query_images(sim_dataset) -> list[Path]:
    return sorted((sim_dataset / "images" / "query").glob("*.png"))[:3]


def test_localize_takes_a_yaml_per_image_from_a_directory(sim_map, sim_dataset, query_images, tmp_path, run_vloc):
    cameras = tmp_path / "cameras"
    cameras.mkdir()
    shutil.copy(sim_dataset / "camera.yaml", cameras / f"{query_images[0].stem}.yaml")
    wrong_size = load_intrinsics(sim_dataset / "camera.yaml").scaled(320, 240)
    (cameras / f"{query_images[1].stem}.yaml").write_text(json.dumps(wrong_size.to_dict()))
    records = localize_records(run_vloc, sim_map, query_images, tmp_path, "--intrinsics", cameras)
    assert_per_image_cameras_used(records)
    assert "has no <image stem>.yaml" in records[2]["reason"]


def test_localize_takes_each_image_camera_from_a_colmap_model(sim_map, sim_dataset, query_images, tmp_path, run_vloc):
    camera = load_intrinsics(sim_dataset / "camera.yaml")
    model = write_colmap_model(
        tmp_path / "model",
        {
            f"elsewhere/{query_images[0].name}": (camera.to_pycolmap(), Rigid3()),  # by basename
            f"query/{query_images[1].name}": (camera.scaled(320, 240).to_pycolmap(), Rigid3()),  # by path end
        },
    )
    records = localize_records(run_vloc, sim_map, query_images, tmp_path, "--cameras-colmap", model)
    assert_per_image_cameras_used(records)
    assert "is not in COLMAP model" in records[2]["reason"]
