"""The synthetic world: a photo-textured courtyard rendered headless on the CPU, with exact poses
and intrinsics, mapping and query runs, appearance changes, and ROS 2 bags.

``generate(config, out_dir)`` writes everything (layout in ``generate.py``);
``write_camera_bag`` / ``CameraBagWriter`` write a bag from any stamps, images and poses (``bag.py``).
"""

from .bag import CameraBagWriter, write_camera_bag
from .generate import DEFAULT_CONFIG, HARD_QUERY, generate, resolve_config

__all__ = ["DEFAULT_CONFIG", "HARD_QUERY", "CameraBagWriter", "generate", "resolve_config", "write_camera_bag"]
