"""``vloc_localizer_lifecycle``: ``vloc_localizer`` as a managed (lifecycle) node, for Nav2.

The same node (``localizer_node.LocalizerNodeMixin``: parameters, topics, services, /diagnostics), started
and stopped through the standard lifecycle services (``~/change_state``, ``~/get_state``) as
nav2_lifecycle_manager drives them:

  configure   loads ``map_path``; a map that does not load fails the transition (the reason is logged
              on one line and on /diagnostics) and the node stays unconfigured, up, ready to be
              configured again once ``map_path`` is fixed
  activate    starts localizing and publishing (``~/pose``, TF, ...; ``~/map_cloud`` and ``~/state``
              are sent again)
  deactivate  stops localizing; images are counted ``rejected_inactive`` before they are decoded
  cleanup     releases the map
  shutdown    stops and releases everything; the node stays, finalized, until its process ends

/diagnostics reports in every state (``node_state``). ``~/relocalize`` works while a map is loaded,
``~/reload_map`` once configured. An /initialpose received while inactive seeds the first frame after
activation. Loading the map holds the transition (and the node's callbacks) until it is done, as
Nav2's own nodes do.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .diagnostics import WARN
from .entry import run_node
from .localizer_node import NODE_NAME, LocalizerNodeMixin

SERVING_STATES = ("inactive", "active")


class LifecycleLocalizerNode(LocalizerNodeMixin, LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._setup(self.create_lifecycle_publisher)
        self._status = (WARN, "no map: the configure transition loads map_path")

    def _node_state(self) -> str:
        # rclpy keeps the state only in its state machine (no public accessor).
        return self._state_machine.current_state[1]

    def _configured(self) -> bool:
        return self._node_state() in SERVING_STATES

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        error = self._configure()
        if error:
            self.get_logger().error(
                f"configure failed: no map ({error}); fix map_path (`ros2 param set`) and configure again"
            )
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker_running():
            self.get_logger().error("activate refused: the last activation's worker is still localizing a frame")
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shut_down()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition raised: leave nothing running, so that the node is a clean unconfigured one.
        self.get_logger().error(f"a transition from {state.label} failed unexpectedly; releasing everything")
        self._shut_down()
        return super().on_error(state)


def main(args=None) -> int:
    return run_node(LifecycleLocalizerNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
