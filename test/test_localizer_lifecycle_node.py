"""vloc_localizer_lifecycle on a real rclpy graph, driven as nav2_lifecycle_manager drives it: ChangeState
and GetState requests from another node, the sim query bag in, poses out only while active."""

from __future__ import annotations

import threading

from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger

from ros_harness import LATCHED, NAMESPACE, wait_until
from test_localizer_node import publish_and_wait, topic
from vloc_ros.nodes.localizer_lifecycle_node import LifecycleLocalizerNode


def change_state(graph, node, transition: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    return graph.call(ChangeState, topic(node, "change_state"), request).success


def lifecycle_state(graph, node) -> str:
    return graph.call(GetState, topic(node, "get_state")).current_state.label


def rejected_inactive(graph, node) -> int:
    return int(graph.diagnostic(node).get("rejected_inactive", 0))


def assert_not_localized_while_inactive(graph, query, node, namespace, index, poses) -> None:
    """Frame ``index`` reaches the node (counted ``rejected_inactive``) and yields no pose."""
    before = rejected_inactive(graph, node)
    query.publish(graph, index, ("/tf", "/camera/camera_info", "/camera/image_raw"), namespace)
    graph.wait_for_diagnostic(node, lambda d: int(d.get("rejected_inactive", 0)) > before)
    assert query.stamps[index] not in poses.by_stamp(), "a pose was published while inactive"


def node_threads() -> set[int]:
    """The live threads a localizer node starts: its worker, its map loads, its search pool."""
    return {thread.ident for thread in threading.enumerate() if thread.name.startswith(("vloc_", "search"))}


def test_configure_activate_deactivate_cleanup_twice_then_shutdown(graph, query, sim_map):
    """unconfigured -> configure (the map loads) -> activate (an image yields ~/pose) -> deactivate (an
    image yields none) -> activate again (poses again, ~/relocalize and ~/reload_map work) -> deactivate
    -> cleanup (the map is released, no thread of the node is left); twice; then configure, activate and
    shut down from active."""
    namespace = f"{NAMESPACE}/managed"
    node = graph.start(LifecycleLocalizerNode, "managed", map_path=str(sim_map), max_rate_hz=0.0)
    try:
        poses = graph.collect(PoseStamped, topic(node, "pose"))
        map_cloud = graph.collect(PointCloud2, topic(node, "map_cloud"), LATCHED)
        graph.publish("/tf_static", query.tf_static)
        graph.wait_for_camera_input(namespace)
        baseline_threads = node_threads()

        assert lifecycle_state(graph, node) == "unconfigured"
        status = graph.wait_for_diagnostic(node, lambda d: d.get("node_state") == "unconfigured")
        assert status["map"] == "none" and status["_message"].startswith("unconfigured: images are not localized")
        assert_not_localized_while_inactive(graph, query, node, namespace, 0, poses)
        refused = graph.call(Trigger, topic(node, "reload_map"))
        assert not refused.success and "not configured" in refused.message

        index = 1
        for cycle in range(2):
            assert change_state(graph, node, Transition.TRANSITION_CONFIGURE)
            assert lifecycle_state(graph, node) == "inactive"
            localizer = node._map.localizer
            status = graph.wait_for_diagnostic(node, lambda d: d.get("node_state") == "inactive")
            assert status["map"] == str(sim_map) and status["_level"] == b"\x01"
            assert_not_localized_while_inactive(graph, query, node, namespace, index, poses)
            assert not map_cloud.messages, "~/map_cloud published while inactive"

            assert change_state(graph, node, Transition.TRANSITION_ACTIVATE)
            assert lifecycle_state(graph, node) == "active"
            assert wait_until(lambda: map_cloud.messages, 5.0), "no ~/map_cloud on activation"
            assert publish_and_wait(graph, query, node, namespace, index + 1, poses), f"no pose (cycle {cycle})"
            graph.wait_for_diagnostic(node, lambda d: d.get("node_state") == "active" and d["_level"] == b"\x00")

            assert change_state(graph, node, Transition.TRANSITION_DEACTIVATE)
            assert node._worker is None, "the worker runs on"
            assert_not_localized_while_inactive(graph, query, node, namespace, index + 2, poses)

            assert change_state(graph, node, Transition.TRANSITION_ACTIVATE)
            if cycle == 0:
                assert graph.call(Trigger, topic(node, "relocalize")).success
                assert graph.call(Trigger, topic(node, "reload_map")).success
                assert wait_until(lambda: localizer.search._pool._shutdown, 5.0), "the replaced map was not closed"
                localizer = node._map.localizer
            assert publish_and_wait(graph, query, node, namespace, index + 3, poses), "no pose after reactivation"

            assert change_state(graph, node, Transition.TRANSITION_DEACTIVATE)
            assert change_state(graph, node, Transition.TRANSITION_CLEANUP)
            assert lifecycle_state(graph, node) == "unconfigured" and node._map is None
            assert localizer.search._pool._shutdown, "cleanup did not release the map"
            assert wait_until(lambda: node_threads() <= baseline_threads, 5.0), "a thread outlived cleanup"
            graph.wait_for_diagnostic(node, lambda d: d.get("node_state") == "unconfigured" and d["map"] == "none")
            map_cloud.messages.clear()
            index += 4

        assert change_state(graph, node, Transition.TRANSITION_CONFIGURE)
        assert change_state(graph, node, Transition.TRANSITION_ACTIVATE)
        localizer = node._map.localizer
        assert change_state(graph, node, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lifecycle_state(graph, node) == "finalized"
        assert node._worker is None and node._map is None and localizer.search._pool._shutdown
        assert wait_until(lambda: node_threads() <= baseline_threads, 5.0), "a thread outlived shutdown"
        graph.wait_for_diagnostic(node, lambda d: d.get("node_state") == "finalized" and d["localized"] == "4")
        assert len(poses.by_stamp()) == 4
    finally:
        graph.stop(node)


def test_configure_with_a_bad_map_fails_and_the_node_stays_up(graph, query, sim_map, tmp_path):
    """The lifecycle manager sees the failure (ChangeState answers false); the node stays unconfigured,
    says why on /diagnostics, and configures once map_path is fixed."""
    from rclpy.parameter import Parameter

    namespace = f"{NAMESPACE}/bad_map"
    node = graph.start(LifecycleLocalizerNode, "bad_map", map_path=str(tmp_path / "no_map_here"), max_rate_hz=0.0)
    try:
        poses = graph.collect(PoseStamped, topic(node, "pose"))
        graph.publish("/tf_static", query.tf_static)
        graph.wait_for_camera_input(namespace)
        assert not change_state(graph, node, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(graph, node) == "unconfigured"
        status = graph.wait_for_diagnostic(node, lambda d: int(d.get("map_load_failures", 0)) >= 1)
        assert status["_level"] == b"\x02" and "no_map_here" in status["_message"], status["_message"]
        assert not change_state(graph, node, Transition.TRANSITION_ACTIVATE), "activated without a map"

        node.set_parameters([Parameter("map_path", value=str(sim_map))])  # as `ros2 param set` would
        assert change_state(graph, node, Transition.TRANSITION_CONFIGURE)
        assert change_state(graph, node, Transition.TRANSITION_ACTIVATE)
        assert publish_and_wait(graph, query, node, namespace, 0, poses), "no pose once configured"
    finally:
        graph.stop(node)
