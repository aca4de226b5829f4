"""``vloc export``: build a backend's files for the XFeat backbone ahead of time (robots do this once).

    vloc export --backend tensorrt --width 640 --height 480 [--precision fp16] [--output DIR]
    vloc export --backend onnxruntime [--opset 18] [--output DIR]

Files go to the cache the extractor reads (``$VLOC_CACHE_DIR`` or ``~/.cache/vloc_ros``) unless
``--output`` names another; then give the extractor ``backend_options: {cache_dir: DIR}``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cli import UsageError
from . import BackendOptions, BackendUnavailableError
from .cache import default_cache_dir
from .cuda_backend import PRECISIONS

EXPORTABLE = ("onnxruntime", "tensorrt")  # cuda captures its CUDA graph at start-up: nothing to export


def register(subparsers) -> None:
    from ..features.xfeat import XFeatExtractor

    parser = subparsers.add_parser(
        "export",
        help="export the descriptor network for an inference backend",
        description="Build a backend's files for the XFeat backbone ahead of time, into the cache the extractor "
        "reads. tensorrt: an engine for one camera resolution and precision, valid on this GPU and "
        "TensorRT version only; onnxruntime: an ONNX model for any resolution. Prints the file's path.",
    )
    parser.add_argument("--backend", required=True, choices=EXPORTABLE)
    parser.add_argument("--width", type=int, help="camera image width in pixels (required for tensorrt)")
    parser.add_argument("--height", type=int, help="camera image height in pixels (required for tensorrt)")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default=BackendOptions.precision,
        help="tensorrt engine precision",
    )
    parser.add_argument("--opset", type=int, default=BackendOptions.opset, help="ONNX opset (17 or later)")
    parser.add_argument(
        "--resize-max",
        type=int,
        default=XFeatExtractor.default_config["resize_max"],
        help="the extractor's resize_max (longest side of the network input)",
    )
    parser.add_argument("--output", type=Path, help=f"cache directory to write (default: {default_cache_dir()})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..features import create_extractor

    image_size = (args.width, args.height) if args.width and args.height else None
    if args.backend == "tensorrt" and image_size is None:
        raise UsageError("--backend tensorrt needs --width and --height (the camera resolution)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = {"precision": args.precision, "opset": args.opset, "cache_dir": args.output, "image_size": image_size}
    try:
        extractor = create_extractor(
            {"name": "xfeat", "resize_max": args.resize_max, "backend": args.backend, "backend_options": options}
        )
    except (BackendUnavailableError, ValueError) as error:
        raise UsageError(str(error)) from error
    print(extractor.backbone.exported_path)
    return 0
