"""The backbone interface shared by all inference backends, and the start-up error for missing ones."""

from __future__ import annotations

import torch

RawMaps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # features, keypoint logits, reliability


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here: says what is missing and how to get it."""

    def __init__(self, backend: str, missing: str, remedy: str):
        super().__init__(f"inference backend {backend!r} is not available: {missing}. {remedy}")
        self.backend, self.missing, self.remedy = backend, missing, remedy


class Backbone:
    """The descriptor network's dense part on one device.

    Called with the preprocessed batch (B, 1, H, W) float32 in [0, 1] on ``device``; returns the raw
    maps as torch tensors on ``device`` (any float dtype). Keypoint selection and descriptor sampling
    stay the extractor's shared code, so all backends give the same ``Features`` up to precision.
    """

    name: str
    device: torch.device

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> RawMaps:
        return self.run(images)

    def run(self, images: torch.Tensor) -> RawMaps:
        raise NotImplementedError

    def prepare(self, shape: tuple[int, int, int, int]) -> None:
        """Get ready for inputs of ``shape`` now rather than at the first frame: fixed-shape backends
        build their engine or capture their CUDA graph for it, the others just warm up."""
        self(torch.zeros(shape, device=self.device))
