"""Soak test of the localizer node across processes, as a user runs it next to a camera driver.

    python bench/bench_soak.py [--minutes 10] [--rate 30] [--work bench_out/soak] [--no-profile]
                               [--param name:=value ...]

Renders a sim world with bags and builds its map (once; reused from --work), starts
``python -m vloc_ros.nodes.localizer_node`` in a process of its own (default parameters and QoS,
``max_rate_hz`` 0, and the Fast DDS profile its ``main`` applies, config/fastdds.xml), and from this
process, which plays the camera driver with Fast DDS's defaults, publishes the query bag's frames
(CameraInfo, /tf, image; /tf_static once) at --rate for --minutes, restamped with the current time
and played forth and back: a loop that jumped back to the first frame would make the odometry jump
against the map, and the node would rightly hold those poses back. The first --warmup-s seconds
(model warm-up) do not count towards latency, poses/s or the memory slope.

Measured: frames the node received (its /diagnostics counters) against frames published, poses/s,
end-to-end latency (pose receipt here minus the publish time of the image with that stamp), how
many poses came with map -> odom on /tf, the node's RSS every 10 s (/proc/<pid>/status) and its
slope (least squares; judged only over 5 minutes or more), and crashes (the node's process
exiting). ``--no-profile`` runs the node
without the shipped profile, as before it existed. Both processes use a ROS_DOMAIN_ID of their own
(from this pid), so concurrent test runs on the machine do not interfere.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from vloc_ros.mapping.builder import build_map
from vloc_ros.mapping.sources import image_folder_frames
from vloc_ros.nodes.live_evaluation import read_bag_messages

NODE = "vloc_localizer"
TOPICS = ("/camera/camera_info", "/tf", "/camera/image_raw")  # per frame, in publishing order
RSS_PERIOD_S = 10.0
MIN_SLOPE_SPAN_S = 300.0  # a shorter run's slope is mostly start-up and noise: printed, not judged
TARGETS = {"crashes": 0, "received_pct": 95.0, "p99_ms": 150.0, "rss_slope_mb_per_min": 1.0}


def prepare(work: Path, map_frames: int, query_frames: int) -> tuple[Path, Path]:
    """The sim world (with an mcap query bag) and its metric map under ``work``, made once."""
    world, map_dir = work / "world", work / "map"
    if not world.exists():
        from vloc_ros.sim import generate  # only to render: needs rosbags and pyrender

        print(f"rendering the sim world into {world} ...", flush=True)
        generate({"map_frames": map_frames, "query_frames": query_frames, "bags": {"storages": ["mcap"]}}, world)
    if not map_dir.exists():
        print(f"building its map into {map_dir} ...", flush=True)
        frames = image_folder_frames(world / "images" / "map", world / "camera.yaml", poses_tum=world / "map_poses.tum")
        build_map(frames, map_dir, progress=False)
    return world, map_dir


def read_frames(bag: Path):
    """The bag's messages per frame (``[{topic: msg}]`` in stamp order) and its /tf_static."""
    frames: dict[int, dict] = {}
    tf_static = None
    for topic, _, msg in read_bag_messages(bag, [*TOPICS, "/tf_static"]):
        if topic == "/tf_static":
            tf_static = tf_static or msg
            continue
        header = msg.transforms[0].header if topic == "/tf" else msg.header
        frames.setdefault(header.stamp.sec * 10**9 + header.stamp.nanosec, {})[topic] = msg
    return [frames[stamp] for stamp in sorted(frames) if len(frames[stamp]) == len(TOPICS)], tf_static


def restamp(frame: dict, stamp_ns: int) -> None:
    sec, nanosec = divmod(stamp_ns, 10**9)
    for topic, msg in frame.items():
        for header in [t.header for t in msg.transforms] if topic == "/tf" else [msg.header]:
            header.stamp.sec, header.stamp.nanosec = sec, nanosec


def read_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def slope_per_minute(samples: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """Least-squares slope of (seconds, MB) samples in MB per minute, and its standard error."""
    if len(samples) < 3:
        return None, None
    t, y = np.array(samples).T
    (slope, _), covariance = np.polyfit(t / 60.0, y, 1, cov="unscaled")
    residual = y - np.polyval(np.polyfit(t / 60.0, y, 1), t / 60.0)
    return float(slope), float(np.sqrt(covariance[0, 0] * residual @ residual / (len(y) - 2)))


class Observer:
    """This process's rclpy side: publishers of the camera driver and what comes back from the node."""

    def __init__(self, qos_name: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vloc_soak_driver", context=self.context)
        camera_qos = qos_profile_sensor_data if qos_name == "sensor_data" else 10
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.publishers = {
            "/camera/camera_info": self.node.create_publisher(CameraInfo, "/camera/camera_info", camera_qos),
            "/camera/image_raw": self.node.create_publisher(Image, "/camera/image_raw", camera_qos),
            "/tf": self.node.create_publisher(TFMessage, "/tf", 100),  # what tf2's broadcaster offers
            "/tf_static": self.node.create_publisher(TFMessage, "/tf_static", latched),
        }
        self._lock = threading.Lock()
        self.poses: list[tuple[int, float]] = []  # (stamp ns, receipt monotonic)
        self.map_to_odom: set[int] = set()  # stamps of the node's map -> odom transforms
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(PoseStamped, f"/{NODE}/pose", self._on_pose, 100)
        self.node.create_subscription(TFMessage, "/tf", self._on_tf, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_pose(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            self.poses.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, now))

    def _on_tf(self, msg) -> None:
        for t in msg.transforms:
            if t.header.frame_id == "map" and t.child_frame_id == "odom":
                with self._lock:
                    self.map_to_odom.add(t.header.stamp.sec * 10**9 + t.header.stamp.nanosec)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == f"/{NODE}":
                self.diagnostics = {**{v.key: v.value for v in status.values}, "_message": status.message}

    def snapshot(self):
        with self._lock:
            return list(self.poses), set(self.map_to_odom), dict(self.diagnostics)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def start_node(map_dir: Path, params: list[str], profile: bool, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if not profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = ""  # set but empty: main() leaves Fast DDS at its defaults
    ros_args = ["-p", f"map_path:={map_dir}", "-p", "max_rate_hz:=0.0"]
    for param in params:
        ros_args += ["-p", param]
    return subprocess.Popen(
        [sys.executable, "-m", "vloc_ros.nodes.localizer_node", "--ros-args", *ros_args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(observer: Observer, node: subprocess.Popen, timeout: float) -> None:
    """Until the node has loaded its map and its camera subscriptions match this process's publishers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"the node exited with code {node.returncode} while starting")
        matched = all(observer.publishers[t].get_subscription_count() for t in ("/camera/image_raw", "/tf"))
        if matched and observer.diagnostics.get("map", "none") != "none":
            return
        time.sleep(0.2)
    raise SystemExit(f"the node was not ready within {timeout:.0f} s (diagnostics: {observer.diagnostics})")


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument(
        "--warmup-s", type=float, default=15.0, help="seconds not counted towards latency, poses/s and the memory slope"
    )
    parser.add_argument("--work", type=Path, default=Path("bench_out/soak"))
    parser.add_argument("--map-frames", type=int, default=60)
    parser.add_argument("--query-frames", type=int, default=60)
    parser.add_argument(
        "--publisher-qos",
        choices=("default", "sensor_data"),
        default="default",
        help="QoS of this process's camera publishers (default: reliable, depth 10)",
    )
    parser.add_argument("--param", action="append", default=[], help="extra node parameter, name:=value")
    parser.add_argument("--no-profile", action="store_true", help="run the node without config/fastdds.xml")
    parser.add_argument("--domain", type=int, default=101 + os.getpid() % 100, help="ROS_DOMAIN_ID of the run")
    args = parser.parse_args()

    world, map_dir = prepare(args.work, args.map_frames, args.query_frames)
    frames, tf_static = read_frames(world / "bags" / "query_mcap")
    os.environ["ROS_DOMAIN_ID"] = str(args.domain)
    log = args.work / ("node-no-profile.log" if args.no_profile else "node.log")
    node = start_node(map_dir.resolve(), args.param, not args.no_profile, log)
    observer = Observer(args.publisher_qos)
    try:
        wait_ready(observer, node, timeout=300.0)
        report(run(observer, node, frames, tf_static, args), node, args, len(frames), log)
    finally:
        if node.poll() is None:
            node.terminate()
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        observer.close()


def run(observer: Observer, node: subprocess.Popen, frames, tf_static, args) -> dict:
    """Publishes for warm-up + --minutes; returns what was sent and sampled."""
    observer.publishers["/tf_static"].publish(tf_static)
    period, duration = 1.0 / args.rate, args.warmup_s + 60.0 * args.minutes
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))  # forth and back
    published: dict[int, float] = {}  # image stamp ns -> publish time (monotonic)
    rss: list[tuple[float, float]] = []
    crash = None
    start = next_rss = time.monotonic()
    index = late = 0
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        if node.poll() is not None:
            crash = (now - start, node.returncode)
            break
        if now >= next_rss:
            mb = read_rss_mb(node.pid)
            if mb is not None:
                rss.append((now - start, mb))
            print(
                f"  {now - start:4.0f} / {duration:.0f} s: {index} frames published, {len(observer.poses)} poses, "
                f"node RSS {fmt(mb, ' MB', 0)}",
                flush=True,
            )
            next_rss += RSS_PERIOD_S
        due = start + index * period
        if due > now:
            time.sleep(due - now)
        elif now - due > period:  # behind by more than a frame: skip ahead, as a camera does
            skipped = int((now - due) / period)
            index, late = index + skipped, late + skipped
            continue
        frame = frames[order[index % len(order)]]
        stamp_ns = time.time_ns()
        restamp(frame, stamp_ns)
        for topic in TOPICS:
            if topic == "/camera/image_raw":
                published[stamp_ns] = time.monotonic()
            observer.publishers[topic].publish(frame[topic])
        index += 1
    end = time.monotonic()
    time.sleep(2.5)  # the last poses, and a /diagnostics message after the last frame
    mb = read_rss_mb(node.pid)
    if mb is not None:
        rss.append((time.monotonic() - start, mb))
    if crash is None and node.poll() is not None:
        crash = (time.monotonic() - start, node.returncode)
    poses, map_to_odom, diagnostics = observer.snapshot()
    return {
        "published": published,
        "rss": rss,
        "crash": crash,
        "start": start,
        "end": end,
        "skipped": late,
        "poses": poses,
        "map_to_odom": map_to_odom,
        "diagnostics": diagnostics,
    }


def fmt(value, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def report(result: dict, node: subprocess.Popen, args, bag_frames: int, log: Path) -> None:
    published, diagnostics = result["published"], result["diagnostics"]
    measured_from = result["start"] + args.warmup_s
    window_s = result["end"] - measured_from
    measured = [
        (stamp, received)
        for stamp, received in result["poses"]
        if stamp in published and published[stamp] >= measured_from
    ]
    latency_ms = [(received - published[stamp]) * 1e3 for stamp, received in measured]
    with_tf = sum(stamp in result["map_to_odom"] for stamp, _ in measured)
    received = int(diagnostics.get("frames_received", 0))
    received_pct = 100.0 * received / len(published) if published else None
    rss = result["rss"]
    after_warmup = [(t, mb) for t, mb in rss if t >= args.warmup_s]
    slope, slope_error = slope_per_minute(after_warmup)
    judge_slope = slope is not None and after_warmup[-1][0] - after_warmup[0][0] >= MIN_SLOPE_SPAN_S
    crashes = 0 if result["crash"] is None else 1
    p99 = percentile(latency_ms, 99)

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("ok" if ok else "MISSED")

    profile = "none (--no-profile)" if args.no_profile else "the one main() applies (config/fastdds.xml)"
    print(
        f"\nsoak: {args.minutes:g} min at {args.rate:g} Hz after {args.warmup_s:g} s warm-up, "
        f"{len(published)} frames published ({result['skipped']} skipped while behind), bag of {bag_frames} "
        f"frames played forth and back; node pid {node.pid}, Fast DDS profile: {profile}; log {log}"
    )
    rows = [
        (
            "crashes (node exited)",
            f"{crashes}" + (f" (code {result['crash'][1]} at {result['crash'][0]:.0f} s)" if crashes else ""),
            "0",
            verdict(crashes == 0),
        ),
        (
            "frames received by the node",
            f"{received}/{len(published)} = {fmt(received_pct, ' %')}",
            f">= {TARGETS['received_pct']:g} %",
            verdict(received_pct is not None and received_pct >= TARGETS["received_pct"]),
        ),
        ("poses/s", fmt(len(measured) / window_s if window_s > 0 else None, "", 2), "", ""),
        ("end-to-end latency p50", fmt(percentile(latency_ms, 50), " ms"), "", ""),
        ("end-to-end latency p95", fmt(percentile(latency_ms, 95), " ms"), "", ""),
        (
            "end-to-end latency p99",
            fmt(p99, " ms"),
            f"<= {TARGETS['p99_ms']:g} ms",
            verdict(None if p99 is None else p99 <= TARGETS["p99_ms"]),
        ),
        ("poses with map -> odom on /tf", f"{with_tf}/{len(measured)}", "all", verdict(with_tf == len(measured))),
        (
            "node RSS first / last / max",
            " / ".join(
                fmt(v, " MB", 0)
                for v in (
                    rss[0][1] if rss else None,
                    rss[-1][1] if rss else None,
                    max((mb for _, mb in rss), default=None),
                )
            ),
            "",
            "",
        ),
        (
            "node RSS slope (after warm-up)",
            f"{fmt(slope, '', 2)} +- {fmt(slope_error, ' MB/min', 2)}",
            f"~0 (|x| <= {TARGETS['rss_slope_mb_per_min']:g})",
            verdict(abs(slope) <= TARGETS["rss_slope_mb_per_min"])
            if judge_slope
            else f"(judged from {MIN_SLOPE_SPAN_S / 60:g} min on)",
        ),
    ]
    print(f"{'metric':<34} {'value':<30} {'target':<22} ")
    for name, value, target, ok in rows:
        print(f"{name:<34} {value:<30} {target:<22} {ok}")
    counters = {
        k: v
        for k, v in sorted(diagnostics.items())
        if k.startswith(("frames_", "rejected_")) or k in ("localized", "held_back", "map_load_failures")
    }
    print("node counters:", ", ".join(f"{k} {v}" for k, v in counters.items()))
    print(
        "node's own latency (image received -> pose published, last 100): p50 "
        f"{diagnostics.get('latency_p50_ms', 'n/a')} p95 {diagnostics.get('latency_p95_ms', 'n/a')} ms; "
        f"processing p50 {diagnostics.get('processing_p50_ms', 'n/a')} p95 "
        f"{diagnostics.get('processing_p95_ms', 'n/a')} ms; status: {diagnostics.get('_message', 'n/a')}"
    )
    print("node RSS samples (s, MB):", " ".join(f"{t:.0f}:{mb:.0f}" for t, mb in rss))


if __name__ == "__main__":
    main()
