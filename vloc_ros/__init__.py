"""vloc_ros: real-time visual localization against a prebuilt map, with ROS 2 nodes on top.

The core (features, mapping, search, pose, evaluation, sim) imports no ROS package; only
``vloc_ros.nodes`` does.
"""

__version__ = "0.1.0"
