"""vloc_ros: real-time visual localization against a prebuilt map, with ROS 2 nodes on top.

The core (features, mapping, search, pose, evaluation, sim) imports no ROS package; only
``vloc_ros.nodes`` does.
"""

import os

# Idle OpenMP threads (torch's) otherwise spin after every parallel region and take the cores that
# the localizer's two search branches need right after feature extraction (docs/decisions.md). It
# must be set before torch loads its OpenMP runtime, hence here; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
