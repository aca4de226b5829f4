"""Hostile input against the localizer node running as its own process, as on a robot.

From this process (a real rclpy graph) the node gets poisoned TF, image bombs, corrupt JPEGs, a wrong
calibration, a few hundred random malformed messages and damaged maps (at start-up and on a live
``~/reload_map``). After each attack: the process is alive, its log holds no traceback, /diagnostics
never paused for more than 2 s, valid frames are localized again, and no wrong pose was published.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.serialization import deserialize_message, serialize_message
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from ros_harness import NAMESPACE, BagFrames, RosGraph, bit_flipped, jpeg_claiming, png_claiming, stamp_ns, wait_until
from vloc_ros.geometry import pose_error
from vloc_ros.hashing import file_sha256
from vloc_ros import msgs

IMAGE, CAMERA_INFO, GROUND_TRUTH = "/camera/image_raw/compressed", "/camera/camera_info", "/ground_truth/pose"
WRONG = (0.05, 1.0)  # m, deg: right poses on the sim are within a few mm
MAX_DIAGNOSTICS_GAP_S = 2.0
POSE_TIMEOUT = 20.0


class NodeProcess:
    """``vloc_localizer`` in a process of its own, its output in a log file."""

    def __init__(self, label: str, log_dir: Path, **parameters):
        self.namespace = f"{NAMESPACE}/{label}"
        self.name = f"{self.namespace}/vloc_localizer"
        self.log_path = log_dir / f"{label}.log"
        parameters = {
            "image_topic": f"{self.namespace}/camera/image_raw",
            "camera_info_topic": f"{self.namespace}{CAMERA_INFO}",
            "transport": "compressed",
            "max_rate_hz": 0.0,
            **parameters,
        }
        command = [sys.executable, "-m", "vloc_ros.nodes.localizer_node", "--ros-args", "-r", f"__ns:={self.namespace}"]
        for key, value in parameters.items():
            command += ["-p", f"{key}:={value}"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def topic(self, name: str) -> str:
        return f"{self.name}/{name}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_healthy(self) -> None:
        assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
        assert "Traceback" not in self.log(), f"{self.name} logged a traceback:\n{self.log()[-3000:]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def clone(msg, stamp_ns_: int | None = None):
    """A copy of ``msg`` (through the wire format), restamped when ``stamp_ns_`` is given."""
    copy = deserialize_message(serialize_message(msg), type(msg))
    if stamp_ns_ is not None:
        copy.header.stamp.sec, copy.header.stamp.nanosec = divmod(stamp_ns_, 1_000_000_000)
    return copy


class Attack:
    """Publishes to one node process and judges it: fresh stamps for every frame, so each pose is
    traced to the frame (and its ground truth) it came from."""

    def __init__(self, graph: RosGraph, node: NodeProcess, query: BagFrames):
        self.graph, self.node, self.query = graph, node, query
        self.next_stamp = 1_000 * 1_000_000_000
        self.truth: dict[int, object] = {}  # stamp -> map_from_base of the frame sent with it
        self.poses = graph.collect(PoseStamped, node.topic("pose"))
        self.diagnostics = graph.collect(DiagnosticArray, "/diagnostics", 50)

    def stamp(self) -> int:
        self.next_stamp += 50_000_000
        return self.next_stamp

    def publish(self, topic: str, msg) -> None:
        self.graph.publish(topic if topic.startswith("/tf") else f"{self.node.namespace}{topic}", msg)

    def send_frame(self, index: int, camera_info=None, image_data: bytes | None = None) -> int:
        """Frame ``index`` of the query bag under a new stamp (optionally another CameraInfo or other
        image bytes); returns the stamp."""
        stamp = self.stamp()
        frame = self.query.frames[index]
        self.publish(CAMERA_INFO, clone(camera_info or frame[CAMERA_INFO], stamp))
        image = clone(frame[IMAGE], stamp)
        if image_data is not None:
            image.data = image_data
        self.publish(IMAGE, image)
        self.truth[stamp] = msgs.pose_to_rigid(frame[GROUND_TRUTH].pose)
        return stamp

    def localizes(self, index: int = 2, tries: int = 3) -> bool:
        """A valid frame (and a valid CameraInfo) gives a right pose."""
        for _ in range(tries):
            stamp = self.send_frame(index)
            if wait_until(lambda: stamp in self.poses.by_stamp(), POSE_TIMEOUT / tries):
                return True
        return False

    def diagnostics_times(self) -> list[float]:
        return [
            t
            for t, m in zip(self.diagnostics.times, self.diagnostics.messages)
            if any(s.hardware_id == self.node.name for s in m.status)
        ]

    def counters(self) -> dict[str, str]:
        return self.graph.diagnostics.get(self.node.name, {})

    def wait_for_counter(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        assert wait_until(lambda: int(self.counters().get(name, 0)) >= at_least, timeout), (
            f"{name} never reached {at_least}: {self.counters()}"
        )
        return int(self.counters()[name])

    def judge(self, started: float) -> None:
        """Alive, no traceback, diagnostics without a long pause, a valid frame localized, no wrong pose."""
        self.node.assert_healthy()
        assert self.localizes(), f"no pose for a valid frame after the attack: {self.counters()}"
        times = [started, *(t for t in self.diagnostics_times() if t >= started), time.monotonic()]
        assert max(np.diff(times)) <= MAX_DIAGNOSTICS_GAP_S, f"/diagnostics paused {max(np.diff(times)):.1f} s"
        wrong = []
        for msg in self.poses.messages:
            truth = self.truth.get(stamp_ns(msg.header))
            assert truth is not None, "a pose with a stamp no frame had"
            errors = pose_error(msgs.pose_to_rigid(msg.pose), truth)
            if errors[0] > WRONG[0] or errors[1] > WRONG[1]:
                wrong.append((stamp_ns(msg.header), *errors))
        assert not wrong, f"wrong poses published (stamp, m, deg): {wrong}"
        self.node.assert_healthy()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def node(graph, query, sim_map, tmp_path_factory):
    """The node under attack, serving the sim map, with the bag's static TF (base_link -> camera)."""
    graph.publish("/tf_static", query.tf_static)
    node = NodeProcess("hostile", tmp_path_factory.mktemp("logs"), map_path=sim_map)
    try:
        assert wait_until(lambda: graph.diagnostics.get(node.name, {}).get("map", "none") != "none", 60.0), (
            f"the node never served its map:\n{node.log()[-3000:]}"
        )
        yield node
        node.assert_healthy()
    finally:
        node.stop()


@pytest.fixture
def attack(graph, node, query):
    attack = Attack(graph, node, query)
    assert attack.localizes(), f"the node does not localize before the attack:\n{node.log()[-3000:]}"
    return attack


# ----------------------------------------------------------------------------- attacks


POISONED_TRANSFORMS = {
    "zero quaternion": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)),
    "nan quaternion": ((0.0, 0.0, 0.0), (float("nan"), 0.0, 0.0, 1.0)),
    "nan translation": ((float("nan"), 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
    "inf translation": ((0.0, float("inf"), 0.0), (0.0, 0.0, 0.0, 1.0)),
}


def poisoned(stamp: int, translation, quaternion, parent: str = "odom", child: str = "base_link"):
    transform = TransformStamped(child_frame_id=child)
    transform.header.frame_id = parent
    transform.header.stamp.sec, transform.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    t, q = transform.transform.translation, transform.transform.rotation
    t.x, t.y, t.z = translation
    q.x, q.y, q.z, q.w = quaternion
    return transform


def test_poisoned_tf(attack, query):
    """Each poison on /tf and on the latched /tf_static (beside the good static transforms, as a
    static broadcaster sends them), and a valid transform stamped at the end of time (2038), which
    would push every current sample of its link out of the TF cache."""
    started = time.monotonic()
    for translation, quaternion in POISONED_TRANSFORMS.values():
        attack.publish("/tf", TFMessage(transforms=[poisoned(attack.stamp(), translation, quaternion)]))
        static = clone(query.tf_static)
        static.transforms.append(poisoned(0, translation, quaternion, "base_link", "poisoned_frame"))
        attack.publish("/tf_static", static)
        time.sleep(0.2)
    end_of_time = (2**31 - 1) * 1_000_000_000
    attack.publish("/tf", TFMessage(transforms=[poisoned(end_of_time, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]))
    attack.wait_for_counter("rejected_invalid_tf", 2 * len(POISONED_TRANSFORMS) + 1)
    attack.judge(started)
    attack.publish("/tf_static", query.tf_static)


def black_png(width: int, height: int) -> bytes:
    """A valid all-black PNG, compressed row block by row block (the pixels never exist at once)."""
    compressor = zlib.compressobj(9)
    rows = bytes(100 * (width + 1))
    data = b"".join(compressor.compress(rows) for _ in range(height // 100)) + compressor.flush()
    return png_claiming(width, height, data)


def test_image_bombs(attack, query):
    """Headers claiming huge images are refused before decoding: no stall, no memory spike."""
    jpeg = bytes(query.frames[0][IMAGE].data)
    bombs = [
        png_claiming(65535, 65535),
        jpeg_claiming(jpeg, 65000, 65000),
        jpeg_claiming(jpeg, 30000, 30000),
        black_png(30000, 30000),
    ]
    assert len(bombs[0]) < 300 and len(bombs[3]) > 500_000
    started = time.monotonic()
    for data in bombs:
        rejected = int(attack.counters().get("rejected_camera_info_size_mismatch", 0))
        for _ in range(3):  # best effort across processes: a lost bomb is sent again
            attack.send_frame(0, image_data=data)
            if wait_until(lambda: int(attack.counters().get("rejected_camera_info_size_mismatch", 0)) > rejected, 3.0):
                break
        else:
            pytest.fail(f"a {len(data)}-byte bomb was never counted: {attack.counters()}")
    attack.judge(started)


def test_bit_flipped_jpegs(attack, query):
    """30 random bits flipped in each query JPEG: refused as corrupt, never a wrong pose."""
    rng = np.random.default_rng(7)
    before = int(attack.counters().get("rejected_undecodable_image", 0))
    started = time.monotonic()
    frames = range(0, len(query.frames), 2)
    for index in frames:
        attack.send_frame(index, image_data=bit_flipped(bytes(query.frames[index][IMAGE].data), 30, rng))
        time.sleep(0.3)
    attack.wait_for_counter("rejected_undecodable_image", before + len(frames) - 1)
    attack.judge(started)


def test_focal_twice_as_long(attack, query):
    """A valid CameraInfo with the focal length doubled: no pose is better than the wrong one it gives."""
    started = time.monotonic()
    before = int(attack.counters().get("calibration_mismatch", 0))
    for index in range(0, len(query.frames), 2):
        info = clone(query.frames[index][CAMERA_INFO])
        info.k = [2 * v if i in (0, 4) else v for i, v in enumerate(info.k)]
        processed = int(attack.counters().get("frames_processed", 0))
        attack.send_frame(index, camera_info=info)
        wait_until(lambda: int(attack.counters().get("frames_processed", 0)) > processed, 5.0)
    attack.wait_for_counter("calibration_mismatch", before + 5)
    assert attack.counters()["_message"].startswith("suspected calibration mismatch"), attack.counters()
    assert attack.counters()["_level"] == b"\x02"
    attack.judge(started)


def random_malformed_messages(query: BagFrames, count: int, seed: int):
    """(topic, message) pairs: CameraInfos, compressed images and TF with random damage."""
    rng = np.random.default_rng(seed)
    jpeg = bytes(query.frames[0][IMAGE].data)
    specials = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e300, -1e-300]

    def number():
        return float(rng.choice(specials)) if rng.random() < 0.5 else float(rng.normal(0, 1e3))

    def camera_info():
        msg = clone(query.frames[0][CAMERA_INFO])
        damage = rng.integers(6)
        if damage == 0:
            msg.width, msg.height = (int(v) for v in rng.choice([0, 1, 639, 641, 65535, 2**31 - 1], 2))
        elif damage == 1:
            msg.k = [number() for _ in range(9)]
        elif damage == 2:
            msg.d = [number() for _ in range(int(rng.integers(0, 20)))]
        elif damage == 3:
            msg.distortion_model = str(rng.choice(["", "equidistant", "fisheye", "\x00", "plumb_bob" * 50]))
        elif damage == 4:
            msg.binning_x, msg.roi.x_offset, msg.roi.width = (int(v) for v in rng.integers(0, 1000, 3))
        else:
            msg.p = [number() for _ in range(12)]
        return CAMERA_INFO, msg

    def image():
        msg = clone(query.frames[0][IMAGE])
        damage = rng.integers(5)
        if damage == 0:
            msg.data = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        elif damage == 1:
            msg.data = jpeg[: int(rng.integers(0, len(jpeg)))]
        elif damage == 2:
            msg.data = bit_flipped(jpeg, int(rng.integers(1, 200)), rng)
        elif damage == 3:
            msg.data = jpeg_claiming(jpeg, int(rng.integers(0, 65536)), int(rng.integers(0, 65536)))
        else:
            msg.format, msg.header.frame_id = str(rng.choice(["png", "16UC1; compressedDepth", ""])), ""
        return IMAGE, msg

    def tf():
        quaternion = [number() for _ in range(4)]
        translation = [number() for _ in range(3)]
        frames = [str(rng.choice(["odom", "base_link", "camera_optical_frame", "", "map"])) for _ in range(2)]
        return str(rng.choice(["/tf", "/tf_static"])), TFMessage(
            transforms=[poisoned(int(rng.integers(0, 2**40)), translation, quaternion, *frames)]
        )

    makers = [camera_info, image, tf]
    return [makers[int(rng.integers(3))]() for _ in range(count)]


def test_random_malformed_messages(attack, query):
    started = time.monotonic()
    for topic, msg in random_malformed_messages(query, 300, seed=11):
        attack.publish(topic, msg)
        time.sleep(0.01)
    attack.publish("/tf_static", query.tf_static)
    time.sleep(1.0)
    counters = attack.counters()
    assert sum(int(v) for k, v in counters.items() if k.startswith("rejected_")) >= 100, counters
    assert int(counters.get("callback_errors", 0)) == 0, counters
    attack.judge(started)


# ----------------------------------------------------------------------------- damaged maps


def damaged_map(source: Path, target: Path, damage: str) -> Path:
    """A copy of a map damaged as a careless edit or a broken copy would, its checksums still valid."""
    shutil.copytree(source, target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "unknown_local_index":
        manifest["local_index"]["type"] = "no_such_index"
    elif damage == "no_extractor":
        del manifest["extractor"]
    elif damage == "no_local_index_state":
        shutil.rmtree(target / "state" / "local_index")
        manifest["files"] = {
            name: file_sha256(target / name) for name in manifest["files"] if not name.startswith("state/local_index/")
        }
    manifest_path.write_text(json.dumps(manifest))
    return target


DAMAGES = ("unknown_local_index", "no_extractor", "no_local_index_state")


def test_damaged_maps_on_live_reload(attack, graph, node, sim_map, tmp_path):
    """Each damaged map is refused with a reason while the old map keeps serving."""
    started = time.monotonic()
    try:
        for damage in DAMAGES:
            graph.set_parameter(node.name, "map_path", str(damaged_map(sim_map, tmp_path / damage, damage)))
            response = graph.call(Trigger, node.topic("reload_map"))
            assert not response.success and "still serving" in response.message, response.message
            assert attack.localizes(), f"the old map stopped serving after the {damage} map"
    finally:
        graph.set_parameter(node.name, "map_path", str(sim_map))
    attack.judge(started)


def test_damaged_maps_at_start_up(graph, query, sim_map, tmp_path):
    """A node started on a damaged map, into a latched /tf_static that carries a poisoned transform
    (what a restarted node gets), stays up, says why on /diagnostics, and serves once fixed."""
    static = clone(query.tf_static)
    static.transforms.append(poisoned(0, *POISONED_TRANSFORMS["zero quaternion"], "base_link", "poisoned_frame"))
    graph.publish("/tf_static", static)
    nodes = [
        NodeProcess(f"damaged_{damage}", tmp_path, map_path=damaged_map(sim_map, tmp_path / damage, damage))
        for damage in DAMAGES
    ]
    try:
        for node in nodes:
            assert wait_until(lambda: graph.diagnostics.get(node.name, {}).get("_level") == b"\x02", 60.0), (
                f"{node.name} never reported ERROR:\n{node.log()[-3000:]}"
            )
            assert graph.diagnostics[node.name]["_message"].startswith("no map"), graph.diagnostics[node.name]
            assert wait_until(lambda: int(graph.diagnostics[node.name].get("rejected_invalid_tf", 0)) >= 1, 5.0)
            node.assert_healthy()
        fixed = nodes[0]
        graph.set_parameter(fixed.name, "map_path", str(sim_map))
        assert graph.call(Trigger, fixed.topic("reload_map")).success
        attack = Attack(graph, fixed, query)
        attack.judge(time.monotonic())
        for node in nodes:
            node.assert_healthy()
    finally:
        for node in nodes:
            node.stop()
        graph.publish("/tf_static", query.tf_static)
