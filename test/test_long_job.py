"""``LongJob`` on a real rclpy graph: an async service callback awaits a job while the
SingleThreadedExecutor keeps serving other callbacks, as ``~/reload_map`` does; the job's progress
and outcome are what ``~/build``'s diagnostics read."""

from __future__ import annotations

import threading

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from std_srvs.srv import Trigger

from ros_harness import NAMESPACE, wait_until
from vloc_ros.nodes.long_job import JobProgress, JobRunning, LongJob


class Worker:
    """A node whose ``~/work`` awaits ``job`` running ``function`` and answers with its result or error,
    and whose ``~/ping`` answers at once."""

    def __init__(self, graph, label: str, function):
        self.node = graph.add(rclpy.create_node(f"long_job_{label}", namespace=NAMESPACE, context=graph.context))
        self.job = LongJob(self.node, label)
        self.function = function
        self.node.create_service(Trigger, "~/work", self._on_work, callback_group=ReentrantCallbackGroup())
        self.node.create_service(Trigger, "~/ping", self._on_ping)
        self.work, self.ping = (f"{self.node.get_fully_qualified_name()}/{name}" for name in ("work", "ping"))

    async def _on_work(self, request, response):
        try:
            result = await self.job.start(self.function, stage="starting", total=3)
        except Exception as error:  # noqa: BLE001 - the answer says what the job raised
            response.success, response.message = False, f"{type(error).__name__}: {error}"
        else:
            # The awaiting callback resumes with the job over: a next run can start at once.
            response.success, response.message = not self.job.running, str(result)
        return response

    def _on_ping(self, request, response):
        response.success, response.message = True, f"{self.job.progress.stage} {self.job.running}"
        return response


def call_async(graph, name: str):
    client = graph.node.create_client(Trigger, name)
    assert client.wait_for_service(timeout_sec=20.0), f"service {name} not available"
    return client.call_async(Trigger.Request())


def test_awaited_job_leaves_the_executor_serving_and_refuses_a_second_start(graph):
    release = threading.Event()

    def wait_for_release():
        assert release.wait(20.0)
        return "released"

    worker = Worker(graph, "awaited", wait_for_release)
    answer = call_async(graph, worker.work)
    assert wait_until(lambda: worker.job.running, 10.0)
    # The work service holds no executor thread while it awaits: another service answers meanwhile.
    assert graph.call(Trigger, worker.ping, timeout=10.0).message == "starting True"
    with pytest.raises(JobRunning, match="awaited is already running \\(starting\\)"):
        worker.job.start(str)
    assert not answer.done()

    release.set()
    assert wait_until(answer.done, 10.0)
    assert answer.result().success and answer.result().message == "released"
    assert worker.job.progress == JobProgress("done", 0, 3, "released")
    # And again: the job runs once more once the previous run has ended.
    assert graph.call(Trigger, worker.work, timeout=10.0).message == "released"


def test_an_exception_ends_the_job_failed_and_reaches_the_awaiting_callback(graph):
    def fail():
        raise ValueError("no keyframes")

    worker = Worker(graph, "failing", fail)
    answer = graph.call(Trigger, worker.work, timeout=10.0)
    assert not answer.success and answer.message == "ValueError: no keyframes"
    assert worker.job.progress == JobProgress("failed", 0, 3, "failed: no keyframes")
    assert not worker.job.running


def test_progress_reports_are_read_while_the_job_runs(graph):
    steps = [threading.Event() for _ in range(3)]
    reported = threading.Semaphore(0)

    def count_steps():
        for done, step in enumerate(steps, start=1):
            assert step.wait(20.0)
            worker.job.report("counting", done, len(steps))
            reported.release()
        return len(steps)

    worker = Worker(graph, "counting", count_steps)
    answer = call_async(graph, worker.work)
    assert wait_until(lambda: worker.job.running, 10.0)
    assert worker.job.progress == JobProgress("starting", 0, 3)
    for done, step in enumerate(steps[:-1], start=1):
        step.set()
        assert reported.acquire(timeout=10.0)
        assert worker.job.progress == JobProgress("counting", done, 3)
        assert graph.call(Trigger, worker.ping, timeout=10.0).message == "counting True"
    steps[-1].set()
    assert wait_until(answer.done, 10.0) and answer.result().message == "3"
    assert worker.job.progress == JobProgress("done", 3, 3, "3")
    worker.job.report("late", 1, 1)  # from a thread that outlived the run: the finished state stays
    assert worker.job.progress.stage == "done"
