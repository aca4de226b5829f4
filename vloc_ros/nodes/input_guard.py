"""The one door of a node's incoming messages.

Every subscription of the nodes is made through :meth:`InputGuard.subscribe`. Its callback converts
and validates the message (the conversions in ``vloc_ros.msgs`` raise ``InvalidMessage`` with a
reason), and the guard turns that into a rejection counted on /diagnostics as ``rejected_<reason>``
and logged at most every few seconds per reason. Anything else a callback raises is a bug, yet no
reason to end the node: an exception out of a callback stops rclpy's executor, and with it every
output. It is counted as ``callback_errors`` and logged with its traceback.
"""

from __future__ import annotations

import traceback

from .diagnostics import Counters, ThrottledLogger
from vloc_ros.msgs import InvalidMessage


class InputGuard:
    def __init__(self, node, counters: Counters):
        self._node = node
        self.counters = counters
        self._log = ThrottledLogger(node.get_logger())

    def reject(self, reason: str, detail: str) -> None:
        self.counters.add(f"rejected_{reason}")
        self._log.warning(reason, f"{detail} (counted on /diagnostics as rejected_{reason})")

    def subscribe(self, msg_type, topic: str, callback, qos, **kwargs):
        """``node.create_subscription`` with ``callback`` guarded."""
        return self._node.create_subscription(msg_type, topic, self.guarded(callback, topic), qos, **kwargs)

    def guarded(self, callback, topic: str):
        def guarded_callback(msg) -> None:
            try:
                callback(msg)
            except InvalidMessage as error:
                self.reject(error.reason, f"message on {topic} rejected: {error}")
            except Exception:  # noqa: BLE001 - the executor must keep spinning; see the module docstring
                self.counters.add("callback_errors")
                self._log.error(
                    f"callback_error {topic}",
                    f"the callback of {topic} failed (counted on /diagnostics "
                    f"as callback_errors):\n{traceback.format_exc()}",
                )

        return guarded_callback
