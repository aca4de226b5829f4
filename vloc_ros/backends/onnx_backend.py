"""ONNX Runtime on the CPU: the backbone exported to ONNX once (cached on disk), any input size.

Exporters are tried in order: the torch.export-based one (``dynamo=True``; needs the onnxscript
package), then the TorchScript one with dynamic axes. Both give the same numbers; the cache key
names the exporter that produced the file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from .base import Backbone
from ..atomic import atomic_path
from .cache import cached_path, write_description

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAMES = ("features", "keypoint_logits", "reliability")
# Any example size works: H and W are exported as dynamic (multiples of 32, at most 32 * 256 px).
EXAMPLE_SHAPE = (1, 1, 480, 640)


def onnx_model_fields(model_name: str, weights_sha256: str, opset: int, exporter: str) -> dict:
    return {"model": model_name, "weights_sha256": weights_sha256, "opset": opset, "exporter": exporter}


def onnx_model_path(cache_dir, model_name: str, weights_sha256: str, opset: int, exporter: str) -> Path:
    fields = onnx_model_fields(model_name, weights_sha256, opset, exporter)
    return cached_path(cache_dir, f"{model_name}-onnx-opset{opset}-{exporter}", fields, ".onnx")


def export_onnx(model: torch.nn.Module, path: Path, opset: int, exporter: str) -> None:
    """Write ``model`` (CPU, fp32) as ONNX with dynamic batch, height and width."""
    example = (torch.zeros(EXAMPLE_SHAPE),)
    names = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES), "opset_version": opset}
    if exporter == "dynamo":
        multiple = torch.export.Dim("height_32", max=256), torch.export.Dim("width_32", max=256)
        shapes = ({0: torch.export.Dim("batch", max=64), 2: 32 * multiple[0], 3: 32 * multiple[1]},)
        torch.onnx.export(
            model, example, str(path), dynamo=True, dynamic_shapes=shapes, external_data=False, verbose=False, **names
        )
    elif exporter == "torchscript":
        axes = {name: {0: "batch", 2: "height", 3: "width"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
        with warnings.catch_warnings():  # its deprecation notice, and notes on shape checks traced as constants
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "ONNX export mode is set to TrainingMode.EVAL", UserWarning)
            torch.onnx.export(model, example, str(path), dynamo=False, dynamic_axes=axes, **names)
    else:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose from {EXPORTERS}")


def ensure_onnx_model(model: torch.nn.Module, model_name: str, weights_sha256: str, opset: int, cache_dir=None) -> Path:
    """The cached ONNX file for these weights and opset, exported now if there is none (seconds)."""
    for exporter in EXPORTERS:
        path = onnx_model_path(cache_dir, model_name, weights_sha256, opset, exporter)
        if path.is_file():
            return path
    failures = []
    for exporter in EXPORTERS:
        path = onnx_model_path(cache_dir, model_name, weights_sha256, opset, exporter)
        logger.info("exporting %s to ONNX (opset %d, %s exporter) -> %s", model_name, opset, exporter, path)
        try:
            with atomic_path(path) as temporary:
                export_onnx(model, temporary, opset, exporter)
        except Exception as error:  # noqa: BLE001 - any exporter failure means: try the next one
            logger.warning("ONNX %s exporter failed (%s: %s)", exporter, type(error).__name__, error)
            failures.append(f"{exporter}: {type(error).__name__}: {error}")
            continue
        write_description(path, onnx_model_fields(model_name, weights_sha256, opset, exporter))
        return path
    raise RuntimeError(f"could not export {model_name} to ONNX: " + "; ".join(failures))


class OnnxRuntimeBackbone(Backbone):
    name = "onnxruntime"
    device = torch.device("cpu")

    def __init__(self, model_path: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one chain of nodes: parallelism is inside the convolutions
        # Idle ORT threads otherwise spin for a while after each run and take the cores from the torch
        # post-processing and the search that follow: on 2 cores spinning makes extraction 1.3-1.8x slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.exported_path = Path(model_path)
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def run(self, images: torch.Tensor):
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.contiguous().numpy()})
        return tuple(torch.from_numpy(output) for output in outputs)
