"""The nodes' one pattern for work that takes seconds to minutes (``~/build``, ``~/reload_map``).

A ``LongJob`` runs one function at a time on a thread of its own, so that images, TF and
diagnostics keep flowing on the executor meanwhile. ``start`` refuses a second run while one is
going (``JobRunning``), which is what both services answer then. It returns an rclpy ``Future``: a
service that answers when the work is done (``~/reload_map``) awaits it in an async callback (the
executor resumes the callback when the result is in); one that answers at once (``~/build``) does
not, and diagnostics read its progress and outcome from the job (``progress``), which the function
feeds through ``report``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rclpy.task import Future


@dataclass(frozen=True)
class JobProgress:
    """One consistent snapshot: the job thread replaces it whole, readers on other threads never see
    a stage with another stage's counts."""

    stage: str = "idle"  # idle, the function's own stage names, then done or failed
    done: int = 0
    total: int = 0  # 0 while unknown
    outcome: str = ""  # once finished: the result as text, or "failed: <error>"


class JobRunning(RuntimeError):
    """``start`` while the job's previous run has not finished."""


class LongJob:
    def __init__(self, node, name: str):
        self._node = node
        self._name = name
        # Cleared before the Future resolves, so that a caller resumed by the result can start the
        # next run at once (the thread itself lives a little longer).
        self._running = False
        self._progress = JobProgress()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def progress(self) -> JobProgress:
        return self._progress

    def report(self, stage: str, done: int = 0, total: int = 0) -> None:
        """Progress from inside the running function (its thread); ignored once the run has ended."""
        with self._lock:
            if self._running:
                self._progress = JobProgress(stage, done, total)

    def start(self, function, *args, stage: str = "running", total: int = 0) -> Future:
        """``function(*args)`` on the job's thread, as a Future that callbacks of the node's executor can
        await; progress starts at ``stage`` with ``total`` steps. The result becomes the outcome as
        text; an exception becomes the Future's exception and the outcome "failed: <error>". Raises
        ``JobRunning`` if the previous run is still going."""
        with self._lock:
            if self._running:
                raise JobRunning(f"{self._name} is already running ({self._progress.stage})")
            future = Future(executor=self._node.executor)
            future.add_done_callback(lambda _: None)  # a done callback makes the result wake the executor
            self._progress = JobProgress(stage, 0, total)
            self._running = True
            threading.Thread(
                target=self._run, args=(future, function, args), name=f"vloc_{self._name}", daemon=True
            ).start()
        return future

    def _run(self, future: Future, function, args) -> None:
        try:
            result = function(*args)
        except Exception as error:  # noqa: BLE001 - the job's failure is the caller's to report, not the node's end
            self._finish(JobProgress("failed", self._progress.done, self._progress.total, f"failed: {error}"))
            future.set_exception(error)
            return
        self._finish(JobProgress("done", self._progress.done, self._progress.total, str(result)))
        future.set_result(result)

    def _finish(self, progress: JobProgress) -> None:
        with self._lock:
            self._progress = progress
            self._running = False
