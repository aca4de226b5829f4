"""The ``main`` every node shares: init, construct, spin until Ctrl-C or shutdown, clean up.

A node's ``main`` calls ``dds.use_shipped_profile()`` before ``rclpy.init`` and then ``run_node``.
"""

from __future__ import annotations

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException

from .dds import receive_buffer_warning


def run_node(node_class, name: str, executor) -> int:
    """Exit code 1 when a parameter is outside its allowed values, else 0."""
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
