"""What the nodes report on /diagnostics: thread-safe counters, a latency window, the publisher."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Counters:
    """Named counts shared by callbacks and worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class LatencyWindow:
    """The last ``size`` durations, summarised as percentiles in milliseconds."""

    def __init__(self, size: int = 100):
        self._lock = threading.Lock()
        self._seconds: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds.append(seconds)

    def percentiles_ms(self, *percentiles: int) -> dict[str, float | None]:
        with self._lock:
            values = np.asarray(self._seconds) * 1e3
        return {f"p{q}": float(np.percentile(values, q)) if len(values) else None for q in percentiles}


def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str, values: dict) -> DiagnosticStatus:
    """A DiagnosticStatus with ``values`` as key/value strings (floats with 2 decimals, None as "n/a")."""

    def text(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=text(value)) for key, value in values.items()],
    )


class DiagnosticsPublisher:
    """Publishes what ``collect()`` returns on /diagnostics every ``period`` seconds (~1 Hz by convention)."""

    def __init__(self, node, collect, period: float = 1.0):
        self._node = node
        self._collect = collect
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self._publisher.publish(DiagnosticArray(header=header, status=self._collect()))


class ThrottledLogger:
    """Warnings and errors at most once per ``period`` seconds per key.

    rclpy throttles per call site, so two reasons logged through one call would hide each other.
    """

    def __init__(self, logger, period: float = 5.0):
        self._logger = logger
        self._period = period
        self._last: dict[str, float] = {}

    def warning(self, key: str, message: str) -> None:
        if self._due(key):
            self._logger.warning(message)

    def error(self, key: str, message: str) -> None:
        if self._due(key):
            self._logger.error(message)

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self._period:
            return False
        self._last[key] = now
        return True
