"""Inference backends for the descriptor network's backbone: one interface, chosen by name.

| backend | runs on | how |
|---|---|---|
| ``tensorrt`` | NVIDIA GPU, Jetson | torch-tensorrt engine (fp16) for a fixed input shape, cached on disk |
| ``cuda`` | NVIDIA GPU | PyTorch fp16, the fixed input shape captured as a CUDA graph |
| ``onnxruntime`` | CPU | ONNX export (cached on disk) run by ONNX Runtime, any input shape |
| ``torch_cpu`` | CPU | PyTorch fp32 eager: the reference |

``auto`` takes the first available in that order and logs why. Asking for one that cannot run here
raises ``BackendUnavailableError`` at start-up, saying what is missing and how to get it.
Each backend module is imported only when chosen (torch-tensorrt takes seconds to import).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch

from ..config import from_dict
from .base import Backbone, BackendUnavailableError
from .cuda_backend import check_precision

logger = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "cuda", "onnxruntime", "torch_cpu")  # "auto" prefers them in this order


# One namespace for all backends' options, so that "auto" accepts any of them; each reads its own.
@dataclass(frozen=True)
class BackendOptions:
    precision: str = "fp16"  # tensorrt, cuda: "fp16" | "fp32"
    cuda_graph: bool = True  # cuda: replay the fixed input shape as a CUDA graph
    threads: int | None = None  # onnxruntime: intra-op threads; None = torch.get_num_threads()
    opset: int = 18  # onnxruntime: ONNX opset of the export (17 or later)
    cache_dir: str | None = None  # onnxruntime, tensorrt: exported files; None = cache.default_cache_dir()
    image_size: tuple[int, int] | None = None  # camera (width, height): the extractor prepares the backbone for it


def resolve_backend_options(options: BackendOptions | dict | None) -> BackendOptions:
    """``BackendOptions`` from ``options``; unknown keys and bad values raise ValueError."""
    options = from_dict(BackendOptions, options)
    check_precision(options.precision)
    if options.opset < 17:
        raise ValueError(f"opset must be 17 or later, got {options.opset}")
    return options


def unavailable_reason(backend: str) -> tuple[str, str] | None:
    """None when ``backend`` can run here, else (what is missing, how to get it)."""
    if backend == "torch_cpu":
        return None
    if backend == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return (
                "the onnxruntime package is not installed",
                "Install it (pip install onnxruntime) or use 'torch_cpu'.",
            )
        return None
    if not torch.cuda.is_available():
        problem = (
            "this PyTorch build has no CUDA"
            if torch.version.cuda is None
            else "PyTorch finds no CUDA GPU (driver, CUDA_VISIBLE_DEVICES)"
        )
        return (
            f"{problem} (torch {torch.__version__})",
            "Run on an NVIDIA GPU with a CUDA build of PyTorch, or use 'onnxruntime' or 'torch_cpu' on the CPU.",
        )
    if backend == "tensorrt":
        try:
            import torch_tensorrt  # noqa: F401
        except Exception as error:  # noqa: BLE001 - ImportError, or OSError for missing TensorRT libraries
            return (
                f"torch_tensorrt does not import ({type(error).__name__}: {error})",
                "Install torch-tensorrt built for this torch and CUDA (pip install torch-tensorrt; on Jetson, "
                "NVIDIA's JetPack wheels), or use 'cuda'.",
            )
    return None


def select_backend(requested: str = "auto") -> str:
    """The backend to run: ``requested`` if it can run here (else BackendUnavailableError), or for
    ``"auto"`` the first available of ``BACKENDS``."""
    if requested not in ("auto", *BACKENDS):
        raise ValueError(f"unknown backend {requested!r}; choose from {('auto', *BACKENDS)}")
    if requested != "auto":
        reason = unavailable_reason(requested)
        if reason:
            raise BackendUnavailableError(requested, *reason)
        return requested
    skipped = []
    for backend in BACKENDS:
        reason = unavailable_reason(backend)
        if reason is None:
            logger.info("inference backend auto -> %s%s", backend, "".join(f"; no {s}" for s in skipped))
            return backend
        skipped.append(f"{backend}: {reason[0]}")
    raise AssertionError("torch_cpu is always available")


def create_backbone(
    backend: str,
    model: torch.nn.Module,
    *,
    model_name: str,
    weights_sha256: str,
    options: BackendOptions | dict | None = None,
) -> Backbone:
    """``model`` (fp32, on the CPU) run by ``backend`` ("auto" or one of ``BACKENDS``).

    ``model_name`` and ``weights_sha256`` name and key the exported files in the cache."""
    options = resolve_backend_options(options)
    backend = select_backend(backend)
    if backend == "torch_cpu":
        from .torch_backend import TorchBackbone

        return TorchBackbone(model, "cpu")
    if backend == "onnxruntime":
        from .onnx_backend import OnnxRuntimeBackbone, ensure_onnx_model

        path = ensure_onnx_model(model, model_name, weights_sha256, options.opset, options.cache_dir)
        return OnnxRuntimeBackbone(path, options.threads or torch.get_num_threads())
    if backend == "cuda":
        from .cuda_backend import CudaBackbone

        return CudaBackbone(model, options.precision, options.cuda_graph)
    from .tensorrt_backend import TensorRTBackbone

    return TensorRTBackbone(model, model_name, weights_sha256, options.precision, options.cache_dir)


__all__ = [
    "BACKENDS",
    "BackendOptions",
    "Backbone",
    "BackendUnavailableError",
    "create_backbone",
    "resolve_backend_options",
    "select_backend",
    "unavailable_reason",
]
