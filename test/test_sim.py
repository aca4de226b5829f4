"""The synthetic world (vloc_ros.sim): geometric ground truth, pose conventions, output files,
ROS 2 bags, determinism and the command line. Everything is rendered for real (EGL/OSMesa)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from scipy.spatial.transform import Rotation

from vloc_ros.geometry import Camera, Rigid3, pose_error, rotation_error_deg
from vloc_ros.sim import generate, write_camera_bag
from vloc_ros.sim.bag import TOPICS
from vloc_ros.sim.generate import make_camera
from vloc_ros.sim.render import Renderer
from vloc_ros.sim.scene import Scene, build_scene, quad, yaw_rotation
from vloc_ros.sim.trajectories import UPSIDE_DOWN, camera_mount, ring_pose
from vloc_ros.tum import read_tum

TINY = {"width": 160, "height": 120, "map_frames": 4, "query_frames": 3, "bags": {"storages": []}}


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def summary_of(root: Path) -> dict:
    return json.loads((root / "summary.json").read_text())


def backproject(camera: Camera, world_from_camera: Rigid3, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """World points seen at (distorted) ``pixels`` with optical-axis ``depth``."""
    ideal = camera.undistort_points(pixels)
    rays = np.column_stack(
        [(ideal[:, 0] - camera.cx) / camera.fx, (ideal[:, 1] - camera.cy) / camera.fy, np.ones(len(ideal))]
    )
    return world_from_camera.transform(rays * depth[:, None])


# ---------------------------------------------------------------- the renderer's geometry


def marker_scene(world_from_camera: Rigid3, card_centre, marker_texels: int) -> tuple[Scene, np.ndarray]:
    """A 1 m white card facing the camera (fronto-parallel) at ``card_centre`` (camera frame), with
    a black square painted into its texture; returns the scene and the square's centre (world)."""
    texture = np.full((512, 512, 3), 255, dtype=np.uint8)
    top, left = 100, 300  # texel rows/columns of the square's top-left corner
    texture[top : top + marker_texels, left : left + marker_texels] = 0
    axes = world_from_camera.rotation
    centre = world_from_camera.transform([card_centre])[0]
    card = quad("card", "wall", centre, -axes[:, 2], 0.5, 0.5, -axes[:, 1], "card")
    top_left, top_right, bottom_left = card.corners[3], card.corners[2], card.corners[0]
    # Texel-edge coordinates: the square's centre lies marker_texels / 2 past its corner texel's edge.
    u, v = (left + marker_texels / 2) / 512, (top + marker_texels / 2) / 512
    marker = top_left + u * (top_right - top_left) + v * (bottom_left - top_left)
    return Scene("marker", 4.0, 2.5, 512.0, [card], {"card": texture}, [], {}), marker


def dark_centroid(image: np.ndarray, around: np.ndarray, radius: int) -> np.ndarray:
    x0, y0 = np.rint(around).astype(int)
    window = 255.0 - image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].mean(axis=2)
    v, u = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(window * u).sum(), (window * v).sum()]) / window.sum()


ODD_POSE = Rigid3(Rotation.from_euler("zyx", [37.0, -20.0, 65.0], degrees=True).as_matrix(), [0.4, -1.3, 0.9])


def test_marker_is_drawn_where_the_pose_and_intrinsics_project_it():
    """Sub-pixel: a square's image centroid is the projection of its centre (OpenCV pixel centres,
    off-centre principal point, arbitrary pose), and depth is the distance along the optical axis."""
    camera = Camera(320, 240, 260.0, 250.0, 171.3, 110.7)
    scene, marker = marker_scene(ODD_POSE, (0.25, -0.15, 2.0), 48)
    with Renderer(scene, camera) as renderer:
        image, depth = renderer.render(ODD_POSE), renderer.render_depth(ODD_POSE)
    expected, in_front = camera.project(ODD_POSE.inverse().transform([marker]))
    assert in_front[0]
    measured = dark_centroid(image, expected[0], radius=25)
    assert np.linalg.norm(measured - expected[0]) < 0.03, (measured, expected)
    card = depth > 0
    assert card.sum() > 100 * 100
    assert np.allclose(depth[card], 2.0, atol=2e-4)


def test_distorted_render_puts_points_at_camera_project():
    """plumb_bob distortion by inverse warping: a small marker appears at ``Camera.project`` of its
    centre, and depth back-projected through ``undistort_points`` lands on the card."""
    camera = Camera(320, 240, 250.0, 250.0, 159.5, 119.5, (-0.28, 0.09, 0.002, -0.001, -0.01))
    scene, marker = marker_scene(ODD_POSE, (0.8, -0.45, 2.0), 16)  # near a corner: strong distortion
    with Renderer(scene, camera) as renderer:
        image, depth = renderer.render(ODD_POSE), renderer.render_depth(ODD_POSE)
    expected, _ = camera.project(ODD_POSE.inverse().transform([marker]))
    pinhole_expected, _ = camera.pinhole().project(ODD_POSE.inverse().transform([marker]))
    assert np.linalg.norm(expected - pinhole_expected) > 5  # the distortion does move this point
    measured = dark_centroid(image, expected[0], radius=9)
    assert np.linalg.norm(measured - expected[0]) < 0.1, (measured, expected)
    rows, cols = np.nonzero(depth > 0)
    points = backproject(camera, ODD_POSE, np.column_stack([cols, rows]).astype(float), depth[rows, cols])
    card = scene.surfaces[0]
    assert np.abs((points - card.corners[0]) @ card.normal).max() < 2e-3


# ---------------------------------------------------------------- the generated world


def test_ground_truth_pose_reproduces_image_and_depth_lies_on_scene_surfaces(sim_dataset):
    """Re-rendering a map frame at its TUM pose gives the saved image byte for byte, and its depth,
    back-projected with that pose, lies on the surfaces of scene.json within 1 mm."""
    config = summary_of(sim_dataset)["config"]
    camera = make_camera(config)
    stamps, poses = read_tum(sim_dataset / "map_poses.tum")
    index = 7
    scene = build_scene(config["scene"], config["scene_size"], config["seed"], camera.fx)
    with Renderer(scene, camera) as renderer:
        image, depth = renderer.render(poses[index]), renderer.render_depth(poses[index])
    assert np.array_equal(image, read_rgb(sim_dataset / "images" / "map" / f"{index:06d}.png"))

    assert (depth > 0).all()  # enclosed courtyard: no sky in a mapping view
    rows, cols = np.mgrid[0 : camera.height : 2, 0 : camera.width : 2].reshape(2, -1)  # every 4th pixel is plenty
    points = backproject(camera, poses[index], np.column_stack([cols, rows]).astype(float), depth[rows, cols])
    surfaces = json.loads((sim_dataset / "scene.json").read_text())["surfaces"]
    distances = []
    for surface in surfaces:
        corners, normal = np.array(surface["corners"]), np.array(surface["normal"])
        width, height = surface["extent"]
        right, up = (corners[1] - corners[0]) / width, (corners[3] - corners[0]) / height
        offset = points - corners[0]
        inside = (
            (offset @ right > -0.01)
            & (offset @ right < width + 0.01)
            & (offset @ up > -0.01)
            & (offset @ up < height + 0.01)
        )
        distances.append(np.where(inside, np.abs(offset @ normal), np.inf))
    distances = np.array(distances)
    assert distances.min(axis=0).max() < 1e-3
    seen = {surfaces[i]["kind"] for i in np.unique(distances.argmin(axis=0))}
    assert {"wall", "floor", "box"} <= seen


def test_pose_files_share_one_convention(sim_dataset):
    """TUM = world_from_camera (optical: x right, y down, z forward; world z up), COLMAP = its
    inverse in (qw qx qy qz) order with the +0.5 principal point, camera.yaml = Camera.to_dict()."""
    summary = summary_of(sim_dataset)
    camera = Camera.from_dict(yaml.safe_load((sim_dataset / "camera.yaml").read_text()))
    assert set(yaml.safe_load((sim_dataset / "camera.yaml").read_text())) == set(camera.to_dict())
    assert camera == make_camera(summary["config"]) and (camera.fx, camera.width) == (500.0, 640)
    stamps, poses = read_tum(sim_dataset / "map_poses.tum")
    names = sorted(p.name for p in (sim_dataset / "images" / "map").iterdir())
    assert len(poses) == len(names) == 40
    assert np.allclose(stamps, np.array(summary["map"]["stamps_ns"]) * 1e-9, atol=1e-6, rtol=0)
    assert np.allclose(np.diff(stamps), 0.1, atol=1e-6)
    for pose in poses:
        centre = pose.translation
        assert abs(centre[2] - 1.3) < 1e-6  # base_link 0.1 m up + 1.2 m mount
        assert pose.rotation[:, 1] @ [0, 0, 1] < -0.95  # image y points down
        outward = np.append(centre[:2] / np.linalg.norm(centre[:2]), 0.0)
        assert pose.rotation[:, 2] @ outward > 0.9  # looking out at the walls

    model = pycolmap.Reconstruction(str(sim_dataset / "colmap_gt"))
    assert model.num_points3D() == 0 and len(model.images) == 40
    colmap_camera = model.cameras[1]
    assert colmap_camera.model.name == "PINHOLE"
    assert np.allclose(colmap_camera.params, [camera.fx, camera.fy, camera.cx + 0.5, camera.cy + 0.5])
    text_lines = [
        line
        for line in (sim_dataset / "colmap_gt" / "images.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    first = text_lines[0].split()
    qw, qx, qy, qz, tx, ty, tz = map(float, first[1:8])
    assert np.allclose(Rigid3.from_quaternion([qx, qy, qz, qw], [tx, ty, tz]).inverse().matrix, poses[0].matrix)
    for image in model.images.values():
        pose = poses[names.index(image.name)]
        assert np.allclose(image.cam_from_world().matrix(), pose.inverse().matrix[:3], atol=1e-7)  # TUM: 9 decimals
        # A point in view, through pycolmap and through Camera: 0.5 px apart by convention, no more.
        point = pose.transform([[0.4, -0.3, 2.0]])
        ours, _ = camera.project(pose.inverse().transform(point))
        theirs = colmap_camera.img_from_cam(image.cam_from_world() * point)
        assert np.allclose(theirs - 0.5, ours, atol=1e-6)


def test_queries_leave_the_mapping_views_but_stay_localizable_in_range(sim_dataset):
    _, map_poses = read_tum(sim_dataset / "map_poses.tum")
    _, query_poses = read_tum(sim_dataset / "query_poses.tum")
    frames = summary_of(sim_dataset)["query"]["frames"]
    assert len(query_poses) == len(frames) == 20
    nearest_distance, nearest_angle, ring_offset = [], [], []
    for pose in query_poses:
        errors = np.array([pose_error(pose, mapped) for mapped in map_poses])
        nearest = errors[:, 0].argmin()  # the mapping view taken closest to this query
        nearest_distance.append(errors[nearest, 0])
        nearest_angle.append(errors[nearest, 1])
        ring_offset.append(abs(np.linalg.norm(pose.translation[:2]) - np.linalg.norm(map_poses[0].translation[:2])))
    assert min(nearest_distance) > 0.01 and max(nearest_distance) < 0.6
    assert 8.0 < max(nearest_angle) < 25.0  # heading offsets of up to 15 deg, plus pitch and roll
    assert 0.15 < max(ring_offset) < 0.45  # lateral offsets of up to 0.3 m, plus the camera's lever arm
    assert any(f["occluder_x"] is not None for f in frames) and any(f["occluder_x"] is None for f in frames)
    assert any(f["blur_px"] > 1 for f in frames)
    exposures = [f["exposure"] for f in frames]
    assert min(exposures) < 0.9 and max(exposures) > 1.1


# ---------------------------------------------------------------- bags


def read_bag(path: Path) -> dict:
    """topic -> list of (log time, message); plus the connections."""
    messages = {}
    with AnyReader([path]) as reader:
        for connection, stamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((stamp, reader.deserialize(raw, connection.msgtype)))
        connections = {c.topic: c for c in reader.connections}
    return {"messages": messages, "connections": connections}


def as_pose(position, orientation) -> Rigid3:
    return Rigid3.from_quaternion(
        [orientation.x, orientation.y, orientation.z, orientation.w], [position.x, position.y, position.z]
    )


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("split", ["map", "query"])
def test_bag_reads_back_what_the_sim_wrote(sim_dataset, split, storage):
    summary = summary_of(sim_dataset)
    bag = read_bag(sim_dataset / summary["bags"][f"{split}_{storage}"])
    messages, connections = bag["messages"], bag["connections"]
    count = len(summary[split]["images"])
    assert set(messages) == set(TOPICS.values())
    assert {topic: len(m) for topic, m in messages.items()} == {
        topic: 1 if topic == "/tf_static" else count for topic in TOPICS.values()
    }
    assert connections["/camera/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert connections["/tf_static"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL

    stamps = summary[split]["stamps_ns"]
    camera = make_camera(summary["config"])
    _, tum_poses = read_tum(sim_dataset / f"{split}_poses.tum")
    (static,) = [m for _, m in messages["/tf_static"]]
    link = static.transforms[0]
    assert (link.header.frame_id, link.child_frame_id) == ("base_link", "camera_optical_frame")
    base_from_camera = as_pose(link.transform.translation, link.transform.rotation)
    assert np.allclose(base_from_camera.matrix, camera_mount().matrix, atol=1e-9)
    for index, (log_time, image) in enumerate(messages["/camera/image_raw"]):
        assert log_time == stamps[index] == stamp_ns(image.header)
        assert (image.encoding, image.width, image.height, image.header.frame_id) == (
            "rgb8",
            640,
            480,
            "camera_optical_frame",
        )
        png = read_rgb(sim_dataset / summary[split]["images"][index])
        assert np.array_equal(image.data.reshape(480, 640, 3), png)
        if index % 10 == 0:
            compressed = messages["/camera/image_raw/compressed"][index][1]
            jpeg = cv2.cvtColor(cv2.imdecode(compressed.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert np.abs(jpeg.astype(int) - png).mean() < 4.0

        truth = messages["/ground_truth/pose"][index][1]
        assert (stamp_ns(truth.header), truth.header.frame_id) == (stamps[index], "map")
        map_from_base = as_pose(truth.pose.position, truth.pose.orientation)
        assert np.allclose((map_from_base @ base_from_camera).matrix, tum_poses[index].matrix, atol=1e-8)

        info = messages["/camera/camera_info"][index][1]
        assert (info.width, info.height, info.distortion_model) == (640, 480, "plumb_bob")
        assert np.allclose(info.k.reshape(3, 3), camera.K) and np.allclose(info.d, camera.distortion)
        assert np.allclose(info.p.reshape(3, 4)[:, :3], camera.K)

        odom = messages["/odom"][index][1]
        (tf,) = messages["/tf"][index][1].transforms
        assert (odom.header.frame_id, odom.child_frame_id, tf.header.frame_id, tf.child_frame_id) == (
            "odom",
            "base_link",
            "odom",
            "base_link",
        )
        assert stamp_ns(odom.header) == stamp_ns(tf.header) == stamps[index]
        odom_pose = as_pose(odom.pose.pose.position, odom.pose.pose.orientation)
        assert np.allclose(odom_pose.matrix, as_pose(tf.transform.translation, tf.transform.rotation).matrix)
        if index == 0:
            first_map_from_base = map_from_base
            assert np.allclose(odom_pose.matrix, np.eye(4))
    # Odometry drifts: close to the truth over the run, but not equal to it.
    truth_from_start = first_map_from_base.inverse() @ map_from_base
    drift, _ = pose_error(odom_pose, truth_from_start)
    assert 0.005 < drift < 0.5


def test_write_camera_bag_round_trip_gray_distorted(tmp_path):
    camera = Camera(48, 32, 40.0, 41.0, 23.5, 15.5, (-0.1, 0.01, 0.001, 0.0, 0.0))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 48), dtype=np.uint8) for _ in range(3)]
    poses = [Rigid3(yaw_rotation(10.0 * i), [0.1 * i, 0.0, 1.0]) for i in range(3)]
    stamps = [5 * 10**9 + i * 50_000_000 for i in range(3)]
    mount = camera_mount()  # the default extrinsic
    write_camera_bag(tmp_path / "bag", stamps, images, poses, camera, storage="mcap", distro="humble")
    messages = read_bag(tmp_path / "bag")["messages"]
    for index, (log_time, image) in enumerate(messages["/camera/image_raw"]):
        assert log_time == stamps[index] and image.encoding == "mono8"
        assert np.array_equal(image.data.reshape(32, 48), images[index])
    assert np.allclose(messages["/camera/camera_info"][0][1].d, camera.distortion)
    # Default odometry: drift-free, starting at identity.
    odom = [as_pose(m.pose.pose.position, m.pose.pose.orientation) for _, m in messages["/odom"]]
    bases = [pose @ mount.inverse() for pose in poses]
    assert np.allclose(odom[2].matrix, (bases[0].inverse() @ bases[2]).matrix)
    with pytest.raises(ValueError, match="increase"):
        write_camera_bag(tmp_path / "again", stamps[::-1], images, poses, camera)


# ---------------------------------------------------------------- options, determinism, variants


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    first = generate({**TINY, "seed": 5}, tmp_path / "a")
    generate({**TINY, "seed": 5}, tmp_path / "b")
    generate({**TINY, "seed": 6}, tmp_path / "c")
    files = [path.relative_to(tmp_path / "a") for path in sorted((tmp_path / "a").rglob("*")) if path.is_file()]
    assert len(files) >= len(first["map"]["images"]) + len(first["query"]["images"]) + 5
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    changed = [
        (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes() for name in first["map"]["images"]
    ]
    assert all(changed)


def test_generate_refuses_bad_configs_and_used_directories(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate(TINY, tmp_path / "used")
    with pytest.raises(ValueError, match="unknown sim option 'colour'"):
        generate({"colour": "red"}, tmp_path / "new")
    with pytest.raises(ValueError, match="query.lateral_m must be a number in"):
        generate({"query": {"lateral_m": 2.0}}, tmp_path / "new")
    with pytest.raises(ValueError, match="bags.storages"):
        generate({"bags": {"storages": ["rosbag1"]}}, tmp_path / "new")
    assert not (tmp_path / "new").exists() and (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_repeated_scene_is_four_fold_symmetric_and_queries_are_flagged(tmp_path):
    summary = generate({**TINY, "scene": "repeated", "query_frames": 4}, tmp_path / "world")
    frames = summary["query"]["frames"]
    assert [(f["covered"], f["upside_down"]) for f in frames] == [(False, False)] * 2 + [(True, True)] * 2
    _, queries = read_tum(tmp_path / "world" / "query_poses.tum")
    assert queries[0].rotation[:, 1] @ [0, 0, 1] < -0.9 and queries[3].rotation[:, 1] @ [0, 0, 1] > 0.9
    _, mapped = read_tum(tmp_path / "world" / "map_poses.tum")
    mapped_angles = [np.degrees(np.arctan2(p.translation[1], p.translation[0])) for p in mapped]
    assert -46 < min(mapped_angles) and max(mapped_angles) < 136  # only the east and north copies

    # Turning a view 90 deg about the centre gives the same picture: the copies are indistinguishable.
    camera = Camera(160, 120, 125.0, 125.0, 79.5, 59.5)
    scene = build_scene("repeated", 6.0, 0, camera.fx)
    view = ring_pose(6.0, 20.0, radial_offset=0.2, heading_offset_deg=-10.0) @ camera_mount()
    quarter_turn = Rigid3(yaw_rotation(90.0), np.zeros(3))
    with Renderer(scene, camera) as renderer:
        image = renderer.render(view)
        turned = renderer.render(quarter_turn @ view)
        upside_down = renderer.render(view @ UPSIDE_DOWN)
    assert np.abs(image.astype(int) - turned).mean() < 1.0
    assert np.abs(image.astype(int) - upside_down[::-1, ::-1]).mean() < 1.0
    assert rotation_error_deg(view.rotation, (quarter_turn @ view).rotation) == pytest.approx(90.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "-5"], "width must be an integer"),
        (["--scene", "moon"], "scene must be one of courtyard, repeated"),
        (["--distortion", "-0.5"], "distortion [-0.5, 0.0, 0.0, 0.0, 0.0] is not invertible"),
    ],
)
def test_invalid_options_exit_2_with_a_message(tmp_path, args, message, run_vloc):
    result = run_vloc("sim", "--out", tmp_path / "out", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_distorted_world(tmp_path, run_vloc):
    args = [
        "--out",
        str(tmp_path / "out"),
        "--width",
        "96",
        "--height",
        "64",
        "--map-frames",
        "3",
        "--query-frames",
        "2",
        "--distortion",
        "-0.1",
        "0.01",
        "--storages",
        "sqlite3",
    ]
    result = run_vloc("sim", *args)
    assert result.returncode == 0, result.stderr
    camera = Camera.from_dict(yaml.safe_load((tmp_path / "out" / "camera.yaml").read_text()))
    assert camera.distortion == (-0.1, 0.01, 0.0, 0.0, 0.0) and camera.width == 96
    assert (tmp_path / "out" / "colmap_gt" / "cameras.txt").read_text().splitlines()[-1].split()[1] == "FULL_OPENCV"
    assert sorted(p.name for p in (tmp_path / "out" / "bags").iterdir()) == ["map_sqlite3", "query_sqlite3"]
