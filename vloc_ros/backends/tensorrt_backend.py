"""TensorRT through torch-tensorrt: the backbone compiled for one input shape and precision (fp16 by
default) into an engine cached on disk. The key holds the weights hash, input shape, precision, the
TensorRT and torch-tensorrt versions and the GPU name, so only the first start on a machine builds it
(minutes on a Jetson) and ``vloc export --backend tensorrt`` can build it ahead of time.

Everything up to the compile call (the torch.export program, cache keys and paths) runs without a
GPU; compiling and running engines needs torch-tensorrt and CUDA.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch

from ..atomic import atomic_path
from .cache import cached_path, write_description
from .cuda_backend import CudaBackbone

logger = logging.getLogger(__name__)


def export_program(model: torch.nn.Module, input_shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """The graph TensorRT compiles: ``model`` traced by torch.export at one static input shape,
    with the model's own dtype and device."""
    parameter = next(model.parameters())
    example = torch.zeros(input_shape, dtype=parameter.dtype, device=parameter.device)
    return torch.export.export(model, (example,))


def tensorrt_environment() -> dict:
    """The parts of the engine key that come from this machine (an engine runs only where it was built)."""
    import tensorrt
    import torch_tensorrt

    return {
        "tensorrt": tensorrt.__version__,
        "torch_tensorrt": torch_tensorrt.__version__,
        "gpu": torch.cuda.get_device_name(),
    }


def engine_fields(
    model_name: str, weights_sha256: str, input_shape: tuple[int, ...], precision: str, environment: dict
) -> dict:
    return {
        "model": model_name,
        "weights_sha256": weights_sha256,
        "input_shape": [int(n) for n in input_shape],
        "precision": precision,
        **environment,
    }


def engine_path(cache_dir, fields: dict) -> Path:
    """``{model}-tensorrt-{W}x{H}-{precision}-{key}.ep`` in ``cache_dir``."""
    height, width = fields["input_shape"][-2:]
    return cached_path(cache_dir, f"{fields['model']}-tensorrt-{width}x{height}-{fields['precision']}", fields, ".ep")


def precision_settings(compile_function, dtype: torch.dtype) -> dict:
    """The graph is already in ``dtype``. torch-tensorrt versions whose compile follows the graph's
    types (``use_explicit_typing`` on by default) need nothing more; older ones build fp32 layers
    unless the precision is also enabled."""
    explicit_typing = inspect.signature(compile_function).parameters.get("use_explicit_typing")
    if explicit_typing is not None and explicit_typing.default is True:
        return {}
    return {"enabled_precisions": {dtype}}


def build_engine(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Compile ``model`` (on the GPU, in the engine's precision) and save it as an ExportedProgram."""
    import torch_tensorrt

    dtype = next(model.parameters()).dtype
    example = torch.zeros(input_shape, dtype=dtype, device="cuda")
    engine = torch_tensorrt.dynamo.compile(
        export_program(model, input_shape), inputs=[example], **precision_settings(torch_tensorrt.dynamo.compile, dtype)
    )
    with atomic_path(path) as temporary:
        torch_tensorrt.save(engine, str(temporary), inputs=[example])


def ensure_engine(
    model: torch.nn.Module,
    model_name: str,
    weights_sha256: str,
    input_shape: tuple[int, ...],
    precision: str,
    cache_dir=None,
) -> Path:
    """The cached engine for this model, shape, precision, TensorRT and GPU; built now if missing."""
    fields = engine_fields(model_name, weights_sha256, input_shape, precision, tensorrt_environment())
    path = engine_path(cache_dir, fields)
    if not path.is_file():
        logger.info(
            "building the TensorRT engine for %s %s %s (once per machine; minutes) -> %s",
            model_name,
            tuple(input_shape),
            precision,
            path,
        )
        build_engine(model, input_shape, path)
        write_description(path, fields)
    return path


def load_engine(path: Path):
    import torch_tensorrt  # noqa: F401 - registers the TensorRT engine class the saved program refers to

    return torch.export.load(str(path)).module()


class TensorRTBackbone(CudaBackbone):
    """The engine runs the fixed shape; other shapes run eagerly in PyTorch (CudaBackbone's fallback)."""

    name = "tensorrt"
    memory_format = torch.contiguous_format  # TensorRT chooses its own layouts; the export stays as it was

    def __init__(
        self, model: torch.nn.Module, model_name: str, weights_sha256: str, precision: str = "fp16", cache_dir=None
    ):
        super().__init__(model, precision, cuda_graph=False)
        self.model_name, self.weights_sha256, self.cache_dir = model_name, weights_sha256, cache_dir
        self.exported_path: Path | None = None  # the engine, once the fixed shape is known

    def fixed_shape_runner(self, example: torch.Tensor):
        self.exported_path = ensure_engine(
            self.model, self.model_name, self.weights_sha256, tuple(example.shape), self.precision, self.cache_dir
        )
        logger.info("TensorRT engine %s", self.exported_path)
        return load_engine(self.exported_path)
