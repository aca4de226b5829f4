"""PyTorch fp32 eager: the reference every other backend is compared with."""

from __future__ import annotations

import torch

from .base import Backbone


class TorchBackbone(Backbone):
    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.name = f"torch_{self.device.type}"
        self.model = model.to(self.device).eval()

    def run(self, images: torch.Tensor):
        return self.model(images)
