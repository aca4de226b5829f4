"""Ground-truth files beside the images: camera.yaml and a COLMAP text model of known poses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from ..geometry import Camera, Rigid3


def write_camera_yaml(path, camera: Camera) -> None:
    """Exactly ``Camera.to_dict()`` (read back with ``Camera.from_dict(yaml.safe_load(...))``)."""
    Path(path).write_text(yaml.safe_dump(camera.to_dict(), sort_keys=False))


def write_colmap_text_model(
    directory, camera: Camera, image_names: Sequence[str], world_from_camera: Sequence[Rigid3]
) -> None:
    """cameras.txt, images.txt (camera_from_world, ``QW QX QY QZ TX TY TZ``, no 2D points) and an
    empty points3D.txt: the posed-images model that COLMAP's point triangulator starts from.

    The camera is ``camera.to_pycolmap()``: PINHOLE, or FULL_OPENCV with distortion, and the
    principal point shifted by +0.5 to COLMAP's pixel convention.
    """
    if len(image_names) != len(world_from_camera):
        raise ValueError(f"{len(image_names)} image names but {len(world_from_camera)} poses")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    colmap_camera = camera.to_pycolmap(camera_id=1)
    params = " ".join(repr(float(p)) for p in colmap_camera.params)
    (directory / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 {colmap_camera.model.name} {camera.width} {camera.height} {params}\n"
    )
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for image_id, (name, pose) in enumerate(zip(image_names, world_from_camera), start=1):
        camera_from_world = pose.inverse()
        qx, qy, qz, qw = camera_from_world.quaternion_xyzw
        values = " ".join(repr(float(v)) for v in (qw, qx, qy, qz, *camera_from_world.translation))
        lines += [f"{image_id} {values} 1 {name}", ""]
    (directory / "images.txt").write_text("\n".join(lines) + "\n")
    (directory / "points3D.txt").write_text("# 3D point list (empty: poses only)\n")
