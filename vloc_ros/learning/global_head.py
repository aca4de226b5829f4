"""A global descriptor trained on the map's own co-visibility: NetVLAD with the SARE loss.

``NetVladDescriptor`` aggregates an image's local descriptors like VLAD, but each descriptor is
assigned to every visual word softly (a softmax of a learned linear function), which makes the
aggregation differentiable (NetVLAD, Arandjelovic et al. 2016). It starts as the map's VLAD: the
centroids are VLAD's and the assignment is the softmax of -alpha * squared distance to them, with
alpha large enough that it is nearly VLAD's hard assignment.

``train_global_descriptor`` then trains centroids and assignment on the map's images. Two images
are the same place when they share many 3D points and different places when they share none
(``GlobalHeadConfig``'s overlap thresholds); no label beyond the map's structure from motion is
needed. The loss is SARE's joint form (Liu, Li & Dai, ICCV 2019): the softmax over the negative
squared distances from an anchor to its positive and its negatives is the probability that the
anchor matches each, and the loss is the KL divergence to the truth (the positive), i.e.
-log(exp(-d_ap) / (exp(-d_ap) + sum_n exp(-d_an))). The triplet loss, max(0, m + d_ap - d_an) per
negative, is the ablation the SARE paper compares with. An anchor's negatives are drawn from its
hardest non-co-visible images under the descriptor being trained, mined again every
``mining_interval`` steps: training on the very hardest few for long makes the descriptor swing
between pushing one set of look-alikes away and the next.

Every step describes each image by a random subset of its descriptors: a query describes its fewer
keypoints than the map image had, and the subsets teach the aggregation not to depend on them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from ..retrieval import VladDescriptor, VocabularyDescriptor
from . import TrainingProgress, one_torch_thread, training_steps

LOSSES = ("sare", "triplet")


@dataclass(frozen=True)
class GlobalHeadConfig:
    loss: str = "sare"  # "sare" or "triplet"
    steps: int = 300
    anchors_per_step: int = 8
    negatives: int = 8  # per anchor, drawn from its ``negative_pool`` hardest different-place images
    negative_pool: int = 32
    mining_interval: int = 10  # steps between two minings of the hardest negatives
    margin: float = 0.1  # triplet loss only, on squared distances between unit descriptors
    learning_rate: float = 1e-3
    # Shares of the points the fewer-seeing image of a pair sees that both see: at least
    # ``positive_overlap``, the same place; at most ``negative_overlap``, different places.
    positive_overlap: float = 0.3
    negative_overlap: float = 0.0
    descriptors_per_image: int = 1024  # the random subset describing an image in a step
    seed: int = 0


class NetVladDescriptor(VocabularyDescriptor):
    name = "netvlad"

    def __init__(self, centroids: np.ndarray, assignment_weight: np.ndarray, assignment_bias: np.ndarray):
        centroids = np.ascontiguousarray(centroids, np.float32)
        assignment_weight = np.ascontiguousarray(assignment_weight, np.float32)
        assignment_bias = np.ascontiguousarray(assignment_bias, np.float32)
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be (V, D) with V > 0, got shape {centroids.shape}")
        if assignment_weight.shape != centroids.shape or assignment_bias.shape != centroids.shape[:1]:
            raise ValueError(
                f"assignment weight {assignment_weight.shape} and bias {assignment_bias.shape} do not fit "
                f"centroids {centroids.shape}: expected {centroids.shape} and {centroids.shape[:1]}"
            )
        self.centroids, self.assignment_weight, self.assignment_bias = centroids, assignment_weight, assignment_bias
        self._parameters = tuple(torch.from_numpy(array) for array in (centroids, assignment_weight, assignment_bias))

    @classmethod
    def from_vlad(cls, vlad: VladDescriptor, descriptors: np.ndarray) -> NetVladDescriptor:
        """VLAD's centroids with a soft assignment as sharp as ``descriptors`` (a sample of the local
        descriptors) need for it to be nearly hard: alpha as in NetVLAD's initialisation, such that
        the nearest centroid weighs about 100 times the second on average."""
        centroids = torch.from_numpy(vlad.centroids)
        squared_distances = torch.cdist(torch.from_numpy(np.asarray(descriptors, np.float32)), centroids).square()
        nearest_two = squared_distances.topk(2, dim=1, largest=False).values
        alpha = float(np.log(100.0) / (nearest_two[:, 1] - nearest_two[:, 0]).mean().clamp(min=1e-6))
        # softmax(-alpha |x - c|^2) = softmax(2 alpha x.c - alpha |c|^2): |x|^2 is the same for every word.
        return cls(vlad.centroids, 2.0 * alpha * vlad.centroids, -alpha * np.square(vlad.centroids).sum(axis=1))

    def _aggregate(self, local: torch.Tensor) -> torch.Tensor:
        return aggregate(local[None], None, *self._parameters)[0]

    def state(self) -> dict[str, np.ndarray]:
        return {
            "centroids": self.centroids.copy(),
            "assignment_weight": self.assignment_weight.copy(),
            "assignment_bias": self.assignment_bias.copy(),
        }

    @classmethod
    def from_state(cls, state: dict) -> NetVladDescriptor:
        return cls(state["centroids"], state["assignment_weight"], state["assignment_bias"])


def aggregate(
    local: torch.Tensor,
    mask: torch.Tensor | None,
    centroids: torch.Tensor,
    assignment_weight: torch.Tensor,
    assignment_bias: torch.Tensor,
) -> torch.Tensor:
    """NetVLAD of a batch: local (B, N, D), mask (B, N) (1 for a descriptor, 0 for padding) or None
    -> (B, V * D), L2-normalised. Describing and training share it, so the trained head is the one used."""
    assignment = torch.softmax(local @ assignment_weight.T + assignment_bias, dim=2)  # (B, N, V)
    if mask is not None:
        assignment = assignment * mask[..., None]
    # Sum of residuals per word: sum_i a_i x_i - (sum_i a_i) c.
    residuals = assignment.transpose(1, 2) @ local - assignment.sum(dim=1)[..., None] * centroids
    # Intra-normalisation: each visual word votes equally, so bursty repeated textures cannot dominate.
    return F.normalize(F.normalize(residuals, dim=2).flatten(1), dim=1)


def covisibility(keyframe_points_offsets: np.ndarray, keyframe_points: np.ndarray, num_keyframes: int) -> np.ndarray:
    """(K, K) int64: how many points each pair of keyframes both see (the map's keyframe -> points CSR);
    the diagonal holds how many points each keyframe sees."""
    offsets = np.asarray(keyframe_points_offsets, np.int64)
    if offsets.shape != (num_keyframes + 1,) or offsets[-1] != len(keyframe_points):
        raise ValueError(f"expected CSR offsets of shape ({num_keyframes + 1},) ending at {len(keyframe_points)}")
    rows = np.repeat(np.arange(num_keyframes), np.diff(offsets))
    points = np.asarray(keyframe_points, np.int64)
    incidence = scipy.sparse.csr_matrix(
        (np.ones(len(points), np.int64), (rows, points)), shape=(num_keyframes, int(points.max(initial=-1)) + 1)
    )
    incidence.data[:] = 1  # a point listed twice for a keyframe is seen once
    return (incidence @ incidence.T).toarray().astype(np.int64)


def place_labels(covisibility: np.ndarray, config: GlobalHeadConfig) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) bool same-place and different-place matrices from the shared-point counts."""
    seen = np.diag(covisibility).astype(np.float64)
    overlap = covisibility / np.maximum(np.minimum(seen[:, None], seen[None, :]), 1.0)
    same = overlap >= config.positive_overlap
    np.fill_diagonal(same, False)
    different = overlap <= config.negative_overlap
    return same, different


def train_global_descriptor(
    image_descriptors: list[np.ndarray],
    covisibility: np.ndarray,
    init: VladDescriptor,
    config: GlobalHeadConfig | None = None,
    progress: TrainingProgress = False,
) -> NetVladDescriptor:
    """NetVLAD initialised from ``init`` and trained on the map's images: ``image_descriptors`` holds
    each image's local descriptors (N_i, D) (every keypoint, not only those of 3D points),
    ``covisibility`` (K, K) the points each pair of images shares (``covisibility()``). The same
    inputs and seed give the same descriptor."""
    config = config or GlobalHeadConfig()
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; expected one of {LOSSES}")
    covisibility = np.asarray(covisibility)
    if covisibility.shape != (len(image_descriptors), len(image_descriptors)):
        raise ValueError(f"covisibility must be ({len(image_descriptors)}, {len(image_descriptors)}), "
                         f"got {covisibility.shape}")  # fmt: skip
    same, different = place_labels(covisibility, config)
    if not 1 <= config.negatives <= config.negative_pool:
        raise ValueError(f"need 1 <= negatives <= negative_pool, got {config.negatives} and {config.negative_pool}")
    anchors = np.flatnonzero(same.any(axis=1) & (different.sum(axis=1) >= config.negatives))
    if len(anchors) == 0:
        raise ValueError(
            f"no image has a co-visible image and {config.negatives} images it shares nothing with: "
            "the map is too small or too connected to learn from"
        )
    with one_torch_thread():
        return _train(image_descriptors, anchors, same, different, init, config, progress)


def _train(image_descriptors, anchors, same, different, init, config: GlobalHeadConfig, progress) -> NetVladDescriptor:
    rng = np.random.default_rng(config.seed)
    images = [np.ascontiguousarray(d, np.float32) for d in image_descriptors]
    start = NetVladDescriptor.from_vlad(init, np.concatenate([d[:256] for d in image_descriptors]))
    parameters = [torch.nn.Parameter(torch.from_numpy(array.copy())) for array in start.state().values()]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    for step in training_steps(config.steps, "learn global descriptor", progress):
        if step % config.mining_interval == 0:
            hardest = _hardest_negatives(images, parameters, different, config.negative_pool)
        batch = rng.choice(anchors, min(config.anchors_per_step, len(anchors)), replace=False)
        positives = np.array([rng.choice(np.flatnonzero(same[anchor])) for anchor in batch])
        negatives = np.stack([rng.choice(hardest[anchor], config.negatives, replace=False) for anchor in batch])
        # Rows: the anchors, then their positives, then their negatives (anchor-major).
        rows = np.concatenate([batch, positives, negatives.ravel()])
        local, mask = _random_subsets(images, rows, config.descriptors_per_image, rng)
        descriptors = aggregate(local, mask, *parameters)
        anchor, positive = descriptors[: len(batch)], descriptors[len(batch) : 2 * len(batch)]
        negative = descriptors[2 * len(batch) :].reshape(len(batch), config.negatives, -1)
        positive_distance = (anchor - positive).square().sum(dim=1)
        negative_distances = (anchor[:, None] - negative).square().sum(dim=2)
        if config.loss == "sare":
            logits = -torch.cat([positive_distance[:, None], negative_distances], dim=1)
            loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        else:
            loss = F.relu(config.margin + positive_distance[:, None] - negative_distances).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return NetVladDescriptor(*(parameter.detach().numpy() for parameter in parameters))


@torch.no_grad()
def _hardest_negatives(
    images: list[np.ndarray], parameters: list[torch.Tensor], different: np.ndarray, count: int
) -> list[np.ndarray]:
    """Per image its (at most) ``count`` different-place images most similar to it under the current head."""
    batches = [range(start, min(start + 32, len(images))) for start in range(0, len(images), 32)]
    descriptors = torch.cat([aggregate(*_padded([images[i] for i in batch]), *parameters) for batch in batches])
    similarity = np.where(different, (descriptors @ descriptors.T).numpy(), -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :count]
    return [row[: min(count, int(n))] for row, n in zip(order, different.sum(axis=1))]


def _random_subsets(
    images: list[np.ndarray], rows: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(rows), size, D) random subsets of the images' descriptors, zero-padded, and their mask."""
    return _padded([images[row][rng.choice(len(images[row]), min(size, len(images[row])), replace=False)]
                    for row in rows])  # fmt: skip


def _padded(descriptors: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max N, D) the descriptor arrays zero-padded to one length, and the (B, max N) mask of the real rows."""
    length = max(len(d) for d in descriptors)
    local = np.zeros((len(descriptors), length, descriptors[0].shape[1]), np.float32)
    mask = np.zeros((len(descriptors), length), np.float32)
    for slot, d in enumerate(descriptors):
        local[slot, : len(d)] = d
        mask[slot, : len(d)] = 1.0
    return torch.from_numpy(local), torch.from_numpy(mask)
