"""The ``main`` every node shares: DDS profile, init, construct, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from .dds import receive_buffer_warning, use_shipped_profile


def run_node(node_class, name: str, args=None) -> int:
    """Runs ``node_class()`` on a SingleThreadedExecutor (the nodes' docstrings say why); exit code 1
    when a parameter is outside its allowed values, else 0."""
    use_shipped_profile()  # before rclpy.init: Fast DDS reads its profile when the first participant is made
    rclpy.init(args=args)
    executor = SingleThreadedExecutor()
    try:
        node = node_class()
    except (ValueError, ParameterException) as error:
        rclpy.logging.get_logger(name).fatal(str(error))
        rclpy.try_shutdown()
        return 1
    warning = receive_buffer_warning()
    if warning:
        node.get_logger().warning(warning)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
