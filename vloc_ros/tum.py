"""TUM trajectory files: one pose per line, ``timestamp tx ty tz qx qy qz qw`` (what evo reads).

A pose line is ``world_from_frame`` of whatever frame the file describes (the name says which).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .geometry import Rigid3


def write_tum(path, stamps, poses: list[Rigid3]) -> None:
    """Write atomically (``vloc_ros.atomic``)."""
    if len(stamps) != len(poses):
        raise ValueError(f"{len(stamps)} stamps but {len(poses)} poses")
    lines = [
        f"{float(stamp):.9f} " + " ".join(f"{v:.9f}" for v in (*pose.translation, *pose.quaternion_xyzw)) + "\n"
        for stamp, pose in zip(stamps, poses)
    ]
    atomic_write_text(path, "".join(lines))


def read_tum(path) -> tuple[np.ndarray, list[Rigid3]]:
    """Read a TUM file; '#' comments and blank lines are skipped, anything else malformed raises."""
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
            if len(values) != 8:
                raise ValueError(f"expected 8 numbers, got {len(values)}")
            pose = Rigid3.from_quaternion(values[4:8], values[1:4])
        except ValueError as error:
            raise ValueError(f"{path}:{number}: bad TUM line ({error}): {line!r}") from None
        stamps.append(values[0])
        poses.append(pose)
    return np.asarray(stamps, dtype=np.float64), poses
