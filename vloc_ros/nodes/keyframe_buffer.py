"""The map builder's keyframes, kept on disk as they arrive so that no recorded keyframe is lost.

One keyframe is two files in the buffer directory: ``<stamp_ns>.png`` (the image) and
``<stamp_ns>.json`` (stamp, camera, ``world_from_camera`` or null). Each is written under a
temporary name, flushed and renamed; the JSON comes last, so a keyframe exists exactly when its
JSON does. A process killed mid-write leaves at most one incomplete keyframe, which the next
start removes; the keyframes before it are found again and recording continues.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vloc_ros.atomic import atomic_write_bytes
from vloc_ros.geometry import Camera, Rigid3
from vloc_ros.mapping.sources import MapFrame, read_image_rgb


@dataclass(frozen=True)
class Keyframe:
    stamp_ns: int
    camera: Camera
    world_from_camera: Rigid3 | None
    image_path: Path

    def to_map_frame(self) -> MapFrame:
        return MapFrame(
            self.image_path.name,
            self.camera,
            lambda: read_image_rgb(self.image_path),
            self.world_from_camera,
            self.stamp_ns * 1e-9,
        )


class KeyframeBuffer:
    def __init__(self, directory):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keyframes: list[Keyframe] = self._recover()

    @property
    def build_cache(self) -> Path:
        """Where ``build_map`` keeps features between an interrupted build and the next."""
        return self.directory / "build_cache"

    def __len__(self) -> int:
        return len(self.keyframes)

    def add(self, stamp_ns: int, image: np.ndarray, camera: Camera, world_from_camera: Rigid3 | None) -> Keyframe:
        """Write one keyframe (RGB or gray ``uint8`` image) durably and return it."""
        image_path = self.directory / f"{stamp_ns}.png"
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, png = cv2.imencode(".png", pixels)
        if not ok:
            raise OSError(f"OpenCV could not encode keyframe {stamp_ns} as PNG")
        atomic_write_bytes(image_path, png.tobytes())
        pose = None if world_from_camera is None else world_from_camera.to_dict()
        record = {"stamp_ns": stamp_ns, "image": image_path.name, "camera": camera.to_dict(), "world_from_camera": pose}
        atomic_write_bytes(self.directory / f"{stamp_ns}.json", json.dumps(record).encode())
        keyframe = Keyframe(stamp_ns, camera, world_from_camera, image_path)
        self.keyframes.append(keyframe)
        return keyframe

    def clear(self) -> None:
        for path in self.directory.iterdir():
            if path.is_file() and path.suffix in (".png", ".json", ".tmp"):
                path.unlink()
        shutil.rmtree(self.build_cache, ignore_errors=True)
        self.keyframes = []

    def _recover(self) -> list[Keyframe]:
        """Keyframes already on disk, in stamp order; removes what an interrupted write left behind."""
        keyframes = []
        for path in self.directory.glob("*.tmp*"):  # unfinished writes: temporary names contain ".tmp"
            path.unlink()
        for path in self.directory.glob("*.json"):
            record = json.loads(path.read_text())
            pose = record["world_from_camera"]
            keyframes.append(
                Keyframe(
                    int(record["stamp_ns"]),
                    Camera.from_dict(record["camera"]),
                    None if pose is None else Rigid3.from_dict(pose),
                    self.directory / record["image"],
                )
            )
        recorded = {k.image_path.name for k in keyframes}
        for path in self.directory.glob("*.png"):
            if path.name not in recorded:  # image written, JSON not: the keyframe never completed
                path.unlink()
        return sorted(keyframes, key=lambda k: k.stamp_ns)
