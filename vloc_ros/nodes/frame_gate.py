"""Latest-frame-wins hand-over from a subscription callback to one worker thread.

A camera delivers frames faster than a localizer can process them. Queueing them would make
every output later than the one before; instead the gate holds one frame, a newer frame replaces
an unprocessed older one (the caller counts it as dropped), and the worker always takes the newest.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameGate(Generic[T]):
    def __init__(self):
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Offer the newest item; True when it replaced one the worker had not taken (a drop)."""
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
        return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None on time-out or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
        return item

    def clear(self) -> bool:
        """Forget a waiting item; True when there was one."""
        with self._condition:
            had_item, self._item = self._item is not None, None
        return had_item

    def close(self) -> None:
        """Wake the worker for good: ``take`` returns None from now on."""
        with self._condition:
            self._closed = True
            self._item = None
            self._condition.notify_all()
