"""PyTorch on an NVIDIA GPU: fp16 (or fp32) weights, and the backbone at one fixed input shape
captured as a CUDA graph (static input and output buffers, one replay per frame: no per-layer
kernel launch cost from Python). Inputs of any other shape run eagerly.
"""

from __future__ import annotations

import logging

import torch

from .base import Backbone

logger = logging.getLogger(__name__)

PRECISIONS = {"fp16": torch.float16, "fp32": torch.float32}


def check_precision(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def capture_cuda_graph(model: torch.nn.Module, example: torch.Tensor, warmup_runs: int = 3):
    """``model`` captured for inputs shaped like ``example`` -> a function running it by graph replay."""
    static_input = example.clone()
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):  # cuDNN picks its algorithms and allocates before the capture
        for _ in range(warmup_runs):
            model(static_input)
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_outputs = model(static_input)

    def replay(images: torch.Tensor):
        static_input.copy_(images)
        graph.replay()
        # Copies: the static buffers are overwritten by the next replay.
        return tuple(output.clone() for output in static_outputs)

    return replay


class CudaBackbone(Backbone):
    """The first input shape (or the one given to ``prepare``) becomes the fixed shape that runs
    through ``fixed_shape_runner``; any other shape falls back to eager PyTorch, with a warning once."""

    name = "cuda"
    # NHWC activations: cuDNN's convolutions run faster channels-last (docs/decisions.md).
    memory_format = torch.channels_last

    def __init__(
        self, model: torch.nn.Module, precision: str = "fp16", cuda_graph: bool = True, device: str = "cuda"
    ):  # device="cpu" (fp32, no graph) tests the shape logic without a GPU
        self.device = torch.device(device)
        self.dtype = check_precision(precision)
        self.precision = precision
        self.model = model.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self.cuda_graph = cuda_graph
        self.fixed_shape: torch.Size | None = None
        self.fixed_shape_run = None
        self.warned_shapes: set[torch.Size] = set()

    def run(self, images: torch.Tensor):
        images = images.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        if self.fixed_shape is None:
            self.fixed_shape = images.shape
            self.fixed_shape_run = self.fixed_shape_runner(images)
        if images.shape == self.fixed_shape:
            return self.fixed_shape_run(images)
        if images.shape not in self.warned_shapes:
            self.warned_shapes.add(images.shape)
            logger.warning(
                "%s backbone prepared for input %s, got %s: running it eagerly (slower)",
                self.name,
                tuple(self.fixed_shape),
                tuple(images.shape),
            )
        return self.model(images)

    def fixed_shape_runner(self, example: torch.Tensor):
        return capture_cuda_graph(self.model, example) if self.cuda_graph else self.model
