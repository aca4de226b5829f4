"""The vloc_map_builder node on a real rclpy graph: the sim map bag in, keyframes on disk, ~/build
gives a map that a vloc_localizer node reloads and localizes with, and with ``update`` grows it. Plus
the keyframe buffer's crash safety on its own."""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from std_srvs.srv import Trigger

from ros_harness import NAMESPACE, BagFrames, wait_until
from vloc_ros.geometry import Camera, Rigid3, pose_error
from vloc_ros.mapping.map_format import load_map
from vloc_ros.mapping.sources import load_intrinsics, read_image_rgb
from vloc_ros import msgs
from vloc_ros.nodes.keyframe_buffer import KeyframeBuffer
from vloc_ros.nodes.localizer_node import LocalizerNode
from vloc_ros.nodes.map_builder_node import MapBuilderNode
from vloc_ros.tum import read_tum

BUILD_TIMEOUT = 420.0  # ~20 keyframes on two busy cores


def test_keyframe_buffer_survives_an_interrupted_write(tmp_path):
    camera = Camera(64, 48, 50.0, 50.0, 31.5, 23.5, (0.01, 0.0, 0.0, 0.0, 0.0))
    images = [np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8) for seed in range(3)]
    poses = [Rigid3.from_quaternion((0.0, 0.0, 0.1 * i, 1.0), (i, 0.0, 0.5)) for i in range(2)] + [None]
    buffer = KeyframeBuffer(tmp_path)
    for stamp, (image, pose) in enumerate(zip(images, poses), start=1):
        buffer.add(stamp * 1_000_000_000, image, camera, pose)
    # What a kill mid-write leaves: a temporary file, and an image whose JSON was never written.
    (tmp_path / "4000000000.png.tmp").write_bytes(b"\x89PNG cut short")
    (tmp_path / "5000000000.png").write_bytes(b"an image without its record")

    recovered = KeyframeBuffer(tmp_path)
    assert [k.stamp_ns for k in recovered.keyframes] == [1_000_000_000, 2_000_000_000, 3_000_000_000]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{s}000000000.{ext}" for s in (1, 2, 3) for ext in ("png", "json")
    )
    frames = [k.to_map_frame() for k in recovered.keyframes]
    for frame, image, pose in zip(frames, images, poses):
        np.testing.assert_array_equal(frame.load_image(), image)
        assert frame.camera == camera
        if pose is None:
            assert frame.world_from_camera is None
        else:
            np.testing.assert_allclose(frame.world_from_camera.matrix, pose.matrix, atol=1e-12)
    recovered.clear()
    assert len(recovered) == 0 and not any(tmp_path.iterdir())


def test_record_build_reload_and_localize(graph, sim_dataset, tmp_path):
    mapping, query = BagFrames(sim_dataset / "bags" / "map_mcap"), BagFrames(sim_dataset / "bags" / "query_mcap")
    output = tmp_path / "built_map"
    # Every other mapping frame becomes a keyframe (they are ~0.2 m and ~9 deg apart).
    builder_parameters = dict(
        buffer_dir=str(tmp_path / "keyframes"),
        output_map_path=str(output),
        pose_topic="ground_truth/pose",
        pose_frame="base_link",
        min_interval_s=0.0,
        min_translation_m=0.35,
        min_rotation_deg=16.0,
        max_keypoints=1024,
    )
    namespace = f"{NAMESPACE}/builder"
    builder = graph.start(MapBuilderNode, "builder", **builder_parameters)
    graph.publish("/tf_static", mapping.tf_static)
    graph.wait_for_camera_input(namespace)
    for index in range(len(mapping.frames)):
        mapping.publish(graph, index, ("/ground_truth/pose", "/camera/camera_info", "/camera/image_raw"), namespace)
        time.sleep(0.1)
    status = graph.wait_for_diagnostic(builder, lambda d: int(d.get("frames_received", 0)) == len(mapping.frames))
    keyframes = int(status["keyframes"])
    assert 15 <= keyframes <= 24, status
    assert not any(key.startswith("rejected_") for key in status), status

    # A restarted node finds the buffer and continues it.
    graph.stop(builder)
    builder = graph.start(MapBuilderNode, "builder", **builder_parameters)
    assert graph.wait_for_diagnostic(builder, lambda d: "keyframes" in d)["keyframes"] == str(keyframes)

    started = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/build")
    assert started.success and "build started" in started.message, started.message
    again = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/build")
    assert not again.success and "already running" in again.message
    status = graph.wait_for_diagnostic(builder, lambda d: d.get("build_stage") in ("done", "failed"), BUILD_TIMEOUT)
    assert status["build_stage"] == "done", status["_message"]
    built = load_map(output)
    assert built.manifest.units == "m" and built.num_keyframes >= keyframes - 2
    print(f"\nmap builder: {status['_message']}")

    # A localizer without a map takes the new one: `ros2 param set map_path`, then ~/reload_map.
    localizer = graph.start(LocalizerNode, "relocalizer")
    try:
        poses = graph.collect(PoseStamped, f"{localizer.get_fully_qualified_name()}/pose")
        graph.set_parameter(localizer.get_fully_qualified_name(), "map_path", str(output))
        reloaded = graph.call(Trigger, f"{localizer.get_fully_qualified_name()}/reload_map")
        assert reloaded.success, reloaded.message

        namespace = f"{NAMESPACE}/relocalizer"
        graph.wait_for_camera_input(namespace)
        graph.publish("/tf_static", query.tf_static)
        # A map of 20 keyframes does not localize every query view: the first of a few that does counts.
        for index in (7, 8, 9, 10):
            query.publish(graph, index, ("/tf", "/camera/camera_info", "/camera/image_raw"), namespace)
            if wait_until(
                lambda: query.stamps[index] in {msgs.stamp_to_ns(m.header.stamp) for m in poses.messages}, 15
            ):
                break
        assert poses.messages, "no query frame localized against the built map"
        pose = poses.messages[-1]
        truth = msgs.pose_to_rigid(
            query.frames[query.stamps.index(msgs.stamp_to_ns(pose.header.stamp))]["/ground_truth/pose"].pose
        )  # base_link, as ~/pose
        errors = pose_error(msgs.pose_to_rigid(pose.pose), truth)
        assert errors[0] < 0.1 and errors[1] < 2.0, errors
    finally:
        graph.stop(localizer)

    reset = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/reset")
    assert reset.success and str(keyframes) in reset.message
    assert graph.wait_for_diagnostic(builder, lambda d: d.get("keyframes") == "0")
    assert not list((tmp_path / "keyframes").glob("*.png"))
    graph.stop(builder)


def test_a_failed_build_is_an_error_on_diagnostics_and_the_node_stays_up(graph, tmp_path):
    camera = Camera(64, 48, 50.0, 50.0, 31.5, 23.5, (0.0, 0.0, 0.0, 0.0, 0.0))
    buffer = KeyframeBuffer(tmp_path / "keyframes")
    for seed in range(3):
        image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        buffer.add((seed + 1) * 1_000_000_000, image, camera, None)
    output = tmp_path / "a_map_already_there"
    output.mkdir()
    builder = graph.start(
        MapBuilderNode, "failing_builder", buffer_dir=str(buffer.directory), output_map_path=str(output)
    )
    try:
        started = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/build")
        assert started.success and "build started: 3 keyframes" in started.message, started.message
        status = graph.wait_for_diagnostic(builder, lambda d: d.get("build_stage") == "failed", 60.0)
        assert status["_level"] == b"\x02" and status["_message"].startswith("build failed: "), status
        assert "exists" in status["_message"] and status["build_features_percent"] == "n/a", status
        # The build is over: the buffer can be emptied.
        reset = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/reset")
        assert reset.success and "removed 3 keyframes" in reset.message, reset.message
    finally:
        graph.stop(builder)


def test_build_with_update_grows_the_map_at_output_map_path(graph, sim_dataset, tmp_path):
    camera = load_intrinsics(sim_dataset / "camera.yaml")
    stamps, poses = read_tum(sim_dataset / "map_poses.tum")
    paths = sorted((sim_dataset / "images" / "map").glob("*.png"))
    buffer = KeyframeBuffer(tmp_path / "keyframes")

    def record(frames):
        for index in frames:
            buffer.add(round(stamps[index] * 1e9), read_image_rgb(paths[index]), camera, poses[index])

    output = tmp_path / "growing_map"
    parameters = dict(buffer_dir=str(buffer.directory), output_map_path=str(output), update=True, max_keypoints=1024)

    def build(expected_start: str, finished) -> dict:
        """~/build on a node started on the buffer as it is now (a restarted node continues it)."""
        builder = graph.start(MapBuilderNode, "growing_builder", **parameters)
        try:
            started = graph.call(Trigger, f"{builder.get_fully_qualified_name()}/build")
            assert started.success and started.message.startswith(expected_start), started.message
            return graph.wait_for_diagnostic(
                builder, lambda d: d.get("build_stage") == "failed" or finished(d.get("_message", "")), BUILD_TIMEOUT
            )
        finally:
            graph.stop(builder)

    # No map there yet: update builds it.
    record(range(0, 16, 2))
    status = build("build started: 8 keyframes", lambda message: message.startswith("map written"))
    assert status["build_stage"] == "done", status["_message"]
    first = load_map(output)

    # Recording on: the next ~/build adds what the map lacks.
    record(range(16, 24, 2))
    status = build("update started: 12 keyframes", lambda message: message.startswith("map updated"))
    assert status["build_stage"] == "done", status["_message"]
    assert "4 new keyframes registered (8 already in it)" in status["_message"], status["_message"]
    grown = load_map(output)
    assert grown.num_keyframes == first.num_keyframes + 4 and grown.num_points > first.num_points
    for old, new in zip(first.keyframes, grown.keyframes):
        assert old.name == new.name
        np.testing.assert_allclose(old.world_from_camera.matrix, new.world_from_camera.matrix, atol=1e-9)
