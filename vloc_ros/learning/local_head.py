"""A learned local head: binary codes (and a real-valued descriptor) for the local branch, trained on
the map's own SfM tracks, after Zhang, Wu & Liu (Pattern Recognition 2021).

Two linear heads on the centred local descriptor ``x - mean`` are trained together:
- the binary head's logits ``(x - mean) @ binary_weights + binary_bias``; their signs are the code;
- the real head ``normalise((x - mean) @ real_weights + real_bias)``, a real-valued descriptor.

Training pairs are two observations of one 3D point in different keyframes; the other tracks of a
batch are its negatives, and batches are built around mined hard negatives: each seed track brings
the tracks whose mean descriptors are nearest to its own (repeated structure above all), so that
the loss sees the confusions the search meets. The loss is InfoNCE over the real descriptors and
over the relaxed codes ``tanh(logits)``, plus a weighted Hamming regularisation: the relaxed Hamming
distance between the two observations of a track, bit by bit, weighted by each bit's stability in
the tracks (re-estimated as the training goes). The relaxed per-bit distance ``(1 - u_a u_b) / 2``
is small only when both observations agree *and* sit far from the sign threshold, so it holds
positives together after the sign; the weights hold the stable bits most, those that the random
trees' split cost prefers. The binary head starts from whitened PCA, i.e. from today's PCA codes.

A ``BitFlipModel`` then models, per bit and |logit|, the probability that an observation's bit
differs from its point's code (the majority of the point's other observations): ``project`` reports
``-log P(flip)`` as each bit's certainty, so that the random trees' priority probing flips first the
bits most likely to have flipped, comparing bits on one calibrated scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import from_dict
from ..search.binary import MAX_FIT_SAMPLES, pack_bits
from . import TrainingProgress, one_torch_thread, training_steps

METHOD = "learned"


@dataclass(frozen=True)
class LocalHeadConfig:
    num_bits: int = 64
    real_dim: int = 64  # at most the descriptor size
    steps: int = 800  # optimiser steps (cosine learning-rate decay over them)
    batch_tracks: int = 512  # tracks per batch, two observations of each
    learning_rate: float = 3e-2  # Adam; the whitened start has large weights, so small steps barely move it
    # Hard negatives: a batch is made of seed tracks, each with its nearest tracks (by mean descriptor).
    mined_neighbours: int = 7
    max_tracks: int = 30_000  # tracks kept for training, at random: mining is quadratic in them
    temperature: float = 0.1  # InfoNCE temperature, on cosine similarities
    hamming_weight: float = 1.0  # weight of the weighted Hamming regularisation
    stability_interval: int = 100  # steps between re-estimates of the bits' stability weights
    flip_bins: int = 16  # |logit| bins of the flip model
    seed: int = 0


class BitFlipModel:
    """Per bit and |projection|, the probability that an observation's bit differs from its point's
    code: a table over ``num_bins`` bins of width ``bin_width[bit]``, read with linear interpolation
    between the bins' centres. It applies to any projections whose signs are bits (learned logits or
    PCA projections).

    Flips are counted leave-one-out (against the majority of the point's *other* observations, a tie
    counting half), because a query is never part of the track it is matched against.
    """

    PRIOR_OBSERVATIONS = 20.0  # pseudo-count pulling a sparse bin towards the bit's overall flip rate
    MARGIN_QUANTILE = 0.99  # the bins span |projection| up to this quantile; larger margins share the last bin
    MIN_FLIP_PROBABILITY = 1e-4  # keeps every certainty finite

    def __init__(self, bin_width: np.ndarray, flip_probability: np.ndarray):
        self.bin_width = np.asarray(bin_width, np.float32)  # (B,)
        self.flip_probability = np.asarray(flip_probability, np.float32)  # (B, num_bins)
        num_bits = len(self.bin_width)
        if self.flip_probability.ndim != 2 or self.flip_probability.shape[0] != num_bits or self.num_bins < 2:
            raise ValueError(f"need (B,) bin widths and a (B, >= 2) table, got {self.flip_probability.shape}")
        if not (self.bin_width > 0).all():
            raise ValueError("bin widths must be positive")
        if not ((self.flip_probability > 0) & (self.flip_probability <= 0.5)).all():
            raise ValueError("flip probabilities must lie in (0, 0.5]")
        # Certainty -log P(flip) >= log 2 > 0, so that a bit's value keeps its sign. Interpolation
        # reads a bin's start and its slope towards the next bin, flattened for one gather each.
        certainty = -np.log(self.flip_probability)
        self._inverse_width = (1 / self.bin_width).astype(np.float32)
        self._start = np.ascontiguousarray(certainty[:, :-1]).ravel()
        self._slope = np.diff(certainty, axis=1).ravel()
        self._row = (np.arange(num_bits) * (self.num_bins - 1)).astype(np.int32)
        self._tensors: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def num_bits(self) -> int:
        return len(self.bin_width)

    @property
    def num_bins(self) -> int:
        return self.flip_probability.shape[1]

    @classmethod
    def fit(cls, projections: np.ndarray, observation_point: np.ndarray, num_bins: int = 16) -> BitFlipModel:
        """projections: (M, B) of the observations; observation_point: (M,) their point ids. Only
        points with at least two observations count."""
        projections = np.asarray(projections, np.float32)
        observation_point = np.asarray(observation_point, np.int64)
        if projections.ndim != 2 or len(projections) != len(observation_point):
            shapes = f"{projections.shape} and {observation_point.shape}"
            raise ValueError(f"need (M, B) projections and (M,) point ids, got {shapes}")
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        flips, tracked = leave_one_out_flips(projections > 0, observation_point)
        if not tracked.any():
            raise ValueError("the flip model needs points with at least two observations")
        margins = np.abs(projections[tracked])
        num_bits = projections.shape[1]
        bin_width = np.maximum(np.quantile(margins, cls.MARGIN_QUANTILE, axis=0), 1e-6) / num_bins
        bins = np.minimum(margins / bin_width, num_bins - 1).astype(np.int64) + num_bins * np.arange(num_bits)
        counts = np.bincount(bins.ravel(), minlength=num_bits * num_bins).reshape(num_bits, num_bins)
        flip_counts = np.bincount(bins.ravel(), flips.ravel(), num_bits * num_bins).reshape(num_bits, num_bins)
        prior = cls.PRIOR_OBSERVATIONS
        probability = (flip_counts + prior * flips.mean(axis=0)[:, None]) / (counts + prior)
        # A larger margin never makes a flip likelier: the running minimum keeps noisy bins in order.
        probability = np.minimum.accumulate(np.clip(probability, cls.MIN_FLIP_PROBABILITY, 0.5), axis=1)
        return cls(bin_width, probability)

    def certainty(self, projections: np.ndarray) -> np.ndarray:
        """(N, B) float32 ``-log P(flip)`` for each bit of (N, B) projections."""
        position = np.abs(np.asarray(projections, np.float32)) * self._inverse_width - np.float32(0.5)
        np.clip(position, 0, self.num_bins - 1, out=position)
        lower = np.minimum(position.astype(np.int32), self.num_bins - 2)
        fraction = np.subtract(position, lower, dtype=np.float32)
        flat = lower + self._row
        return self._start.take(flat) + fraction * self._slope.take(flat)

    def certainty_torch(self, projections: torch.Tensor) -> torch.Tensor:
        """``certainty`` in torch, on the tensor's device."""
        device = projections.device
        if device not in self._tensors:
            arrays = (self._inverse_width, self._start, self._slope, self._row.astype(np.int64))
            self._tensors[device] = tuple(torch.from_numpy(array).to(device) for array in arrays)
        inverse_width, start, slope, row = self._tensors[device]
        position = (projections.abs() * inverse_width - 0.5).clamp(0, self.num_bins - 1)
        lower = position.long().clamp(max=self.num_bins - 2)
        fraction = position - lower
        flat = lower + row
        return start.take(flat) + fraction * slope.take(flat)

    def state(self) -> dict[str, np.ndarray]:
        return {"bin_width": self.bin_width, "flip_probability": self.flip_probability}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> BitFlipModel:
        return cls(state["bin_width"], state["flip_probability"])


def leave_one_out_flips(bits: np.ndarray, observation_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per observation and bit, whether the bit differs from the majority of the point's other
    observations (1), agrees (0) or meets a tie (0.5): ``(flips (M', B) float32, tracked (M,) bool)``
    for the M' observations whose point has other observations (``tracked``)."""
    observations = np.bincount(observation_point)
    tracked = observations[observation_point] >= 2
    bits = bits[tracked]
    points = observation_point[tracked]
    order = np.argsort(points, kind="stable")
    starts = np.flatnonzero(np.r_[True, points[order][1:] != points[order][:-1]])
    ones = np.zeros((len(observations), bits.shape[1]), np.int32)
    if len(points):
        ones[points[order][starts]] = np.add.reduceat(bits[order].astype(np.int32), starts, axis=0)
    ones_elsewhere = ones[points] - bits
    others = (observations[points] - 1)[:, None]
    majority = np.sign(2 * ones_elsewhere - others)  # +1: the others say 1, -1: they say 0, 0: a tie
    flips = np.where(majority == 0, np.float32(0.5), ((majority > 0) != bits).astype(np.float32))
    return flips, tracked


class LearnedBinarizer:
    """The learned local head, with ``Binarizer``'s interface (``project``, ``encode``, ``state``) so
    that the search and the random trees take it unchanged."""

    method = METHOD

    def __init__(
        self,
        mean: np.ndarray,
        binary_weights: np.ndarray,
        binary_bias: np.ndarray,
        real_weights: np.ndarray,
        real_bias: np.ndarray,
        flip_model: BitFlipModel,
    ):
        self.mean = np.asarray(mean, np.float32)  # (D,)
        self.binary_weights = np.asarray(binary_weights, np.float32)  # (D, B)
        self.binary_bias = np.asarray(binary_bias, np.float32)  # (B,)
        self.real_weights = np.asarray(real_weights, np.float32)  # (D, R)
        self.real_bias = np.asarray(real_bias, np.float32)  # (R,)
        self.flip_model = flip_model
        dim, num_bits = self.binary_weights.shape
        if self.mean.shape != (dim,) or self.binary_bias.shape != (num_bits,) or flip_model.num_bits != num_bits:
            raise ValueError("mean, binary weights, binary bias and flip model disagree on D or B")
        if self.real_weights.ndim != 2 or self.real_weights.shape[0] != dim or self.real_bias.shape != (self.real_dim,):
            raise ValueError(f"real weights must be (D={dim}, R) with an (R,) bias, got {self.real_weights.shape}")
        self._tensors: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def descriptor_dim(self) -> int:
        return self.binary_weights.shape[0]

    @property
    def num_bits(self) -> int:
        return self.binary_weights.shape[1]

    @property
    def real_dim(self) -> int:
        return self.real_weights.shape[1]

    def logits(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, num_bits) float32 binary logits; their signs are the bits."""
        return (self._checked(descriptors) - self.mean) @ self.binary_weights + self.binary_bias

    def project(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, num_bits) float32 values whose signs are the bits; |value| is the bit's certainty,
        ``-log P(flip)`` under the flip model."""
        logits = self.logits(descriptors)
        certainty = self.flip_model.certainty(logits)
        return np.where(logits > 0, certainty, -certainty)

    def project_torch(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``project`` in torch, on the tensor's device (float32)."""
        mean, weights, bias = self._device_tensors(descriptors.device)
        logits = (descriptors.float() - mean) @ weights + bias
        certainty = self.flip_model.certainty_torch(logits)
        return torch.where(logits > 0, certainty, -certainty)

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, num_bits / 8) uint8 packed codes, big-endian bit order (as ``binary.pack_bits``)."""
        return pack_bits(self.logits(descriptors) > 0)

    def describe_real(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, real_dim) float32 L2-normalised real-valued descriptors of the co-trained real head."""
        real = (self._checked(descriptors) - self.mean) @ self.real_weights + self.real_bias
        return real / np.maximum(np.linalg.norm(real, axis=1, keepdims=True), np.float32(1e-12))

    def state(self) -> dict[str, np.ndarray]:
        return {
            "method": np.array(self.method),
            "mean": self.mean,
            "binary_weights": self.binary_weights,
            "binary_bias": self.binary_bias,
            "real_weights": self.real_weights,
            "real_bias": self.real_bias,
            "flip_bin_width": self.flip_model.bin_width,
            "flip_probability": self.flip_model.flip_probability,
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> LearnedBinarizer:
        if str(state["method"]) != METHOD:
            raise ValueError(f"not a learned binarizer state: method {str(state['method'])!r}")
        return cls(
            state["mean"], state["binary_weights"], state["binary_bias"], state["real_weights"], state["real_bias"],
            BitFlipModel(state["flip_bin_width"], state["flip_probability"]),
        )  # fmt: skip

    def _checked(self, descriptors: np.ndarray) -> np.ndarray:
        descriptors = np.asarray(descriptors, np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"expected descriptors of shape (N, {self.descriptor_dim}), got {descriptors.shape}")
        return descriptors

    def _device_tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._tensors:
            self._tensors[device] = tuple(
                torch.from_numpy(array).to(device) for array in (self.mean, self.binary_weights, self.binary_bias)
            )
        return self._tensors[device]


def train_local_head(
    observation_descriptors: np.ndarray,
    observation_point: np.ndarray,
    observation_keyframe: np.ndarray,
    config: LocalHeadConfig | dict | None = None,
    progress: TrainingProgress = False,
) -> LearnedBinarizer:
    """Train the local head on a map's tracks: (M, D) observation descriptors, (M,) their point ids
    and (M,) their keyframes. The same inputs and ``config.seed`` give the same head."""
    config = from_dict(LocalHeadConfig, config)
    descriptors = np.asarray(observation_descriptors, np.float32)
    points = np.asarray(observation_point, np.int64)
    keyframes = np.asarray(observation_keyframe, np.int64)
    if descriptors.ndim != 2 or not len(descriptors) == len(points) == len(keyframes) or len(points) == 0:
        raise ValueError(
            f"need (M, D) descriptors and (M,) points and keyframes with M > 0, got "
            f"{descriptors.shape}, {points.shape}, {keyframes.shape}"
        )
    if points.min() < 0:
        raise ValueError("point ids must be >= 0")
    dim = descriptors.shape[1]
    if config.num_bits % 8 or config.num_bits <= 0:
        raise ValueError(f"num_bits must be a positive multiple of 8, got {config.num_bits}")
    if not 0 < config.real_dim <= dim:
        raise ValueError(f"real_dim must be in [1, {dim}], got {config.real_dim}")
    with one_torch_thread():
        return _train(descriptors, points, keyframes, config, progress)


def _train(descriptors, points, keyframes, config: LocalHeadConfig, progress: TrainingProgress) -> LearnedBinarizer:
    rng = np.random.default_rng(config.seed)
    track_offsets, track_observations = _training_tracks(points, keyframes, config.max_tracks, rng)
    num_tracks = len(track_offsets) - 1
    if num_tracks < 2:
        raise ValueError("training needs at least two points seen by two keyframes each")

    mean = descriptors.mean(axis=0)
    sample = descriptors[rng.choice(len(descriptors), min(len(descriptors), MAX_FIT_SAMPLES), replace=False)] - mean
    principal = _principal_directions(sample)
    binary_init = _whitened_directions(sample, principal, config.num_bits, rng)
    centred = torch.from_numpy(descriptors[track_observations] - mean)
    track_of_row = np.repeat(np.arange(num_tracks), np.diff(track_offsets))
    neighbours = _nearest_tracks(centred, track_offsets, config.mined_neighbours)

    binary_weights = torch.tensor(binary_init, requires_grad=True)
    binary_bias = torch.zeros(config.num_bits, requires_grad=True)
    real_weights = torch.tensor(principal[:, : config.real_dim], requires_grad=True)
    real_bias = torch.zeros(config.real_dim, requires_grad=True)
    optimizer = torch.optim.Adam([binary_weights, binary_bias, real_weights, real_bias], lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    seeds_per_batch = max(1, min(num_tracks, config.batch_tracks // (1 + config.mined_neighbours)))
    for step in training_steps(config.steps, "learn local codes", progress):
        if step % config.stability_interval == 0:
            with torch.no_grad():
                bits = (centred @ binary_weights + binary_bias > 0).numpy()
            bit_weights = torch.from_numpy(_hamming_bit_weights(leave_one_out_flips(bits, track_of_row)[0]))
        batch = _batch_tracks(neighbours, seeds_per_batch, rng)
        first, second = _positive_pairs(track_offsets, batch, rng)
        anchors, positives = centred[first], centred[second]
        real_anchors = F.normalize(anchors @ real_weights + real_bias, dim=1)
        real_positives = F.normalize(positives @ real_weights + real_bias, dim=1)
        codes_anchors = torch.tanh(anchors @ binary_weights + binary_bias)
        codes_positives = torch.tanh(positives @ binary_weights + binary_bias)
        scale = config.num_bits**-0.5  # relaxed codes of +-1 then have a cosine similarity of 1 - 2 hamming / B
        loss = (
            _info_nce(real_anchors, real_positives, config.temperature)
            + _info_nce(codes_anchors * scale, codes_positives * scale, config.temperature)
            + config.hamming_weight * ((1 - codes_anchors * codes_positives) / 2 * bit_weights).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    head = [array.detach().numpy().copy() for array in (binary_weights, binary_bias, real_weights, real_bias)]
    logits = (descriptors - mean) @ head[0] + head[1]
    return LearnedBinarizer(mean, *head, BitFlipModel.fit(logits, points, config.flip_bins))


def _training_tracks(
    points: np.ndarray, keyframes: np.ndarray, max_tracks: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The tracks to train on as CSR ``(offsets, observation rows)``: one observation per point and
    keyframe, points seen by at least two keyframes, at most ``max_tracks`` of them at random."""
    order = np.lexsort((keyframes, points))
    first_in_keyframe = np.ones(len(order), bool)
    first_in_keyframe[1:] = (points[order][1:] != points[order][:-1]) | (keyframes[order][1:] != keyframes[order][:-1])
    rows = order[first_in_keyframe]
    _, starts, lengths = np.unique(points[rows], return_index=True, return_counts=True)
    trainable = np.flatnonzero(lengths >= 2)
    if len(trainable) > max_tracks:
        trainable = np.sort(rng.choice(trainable, max_tracks, replace=False))
    lengths = lengths[trainable]
    offsets = np.zeros(len(trainable) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    return offsets, rows[np.repeat(starts[trainable], lengths) + within]


def _principal_directions(centred: np.ndarray) -> np.ndarray:
    """(D, D) principal directions of (N, D) centred descriptors, by decreasing variance."""
    eigenvalues, eigenvectors = np.linalg.eigh(centred.astype(np.float64).T @ centred)
    return eigenvectors[:, np.argsort(eigenvalues)[::-1]].astype(np.float32)


def _whitened_directions(centred: np.ndarray, principal: np.ndarray, num_bits: int, rng: np.random.Generator):
    """(D, num_bits) start of the binary head: the top principal directions (today's PCA codes),
    followed, beyond D bits, by random rotations of them; each scaled to unit-variance logits so
    that ``tanh`` starts neither flat nor saturated."""
    dim = principal.shape[1]
    blocks = [principal]
    while dim * len(blocks) < num_bits:
        blocks.append(principal @ np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32))
    directions = np.concatenate(blocks, axis=1)[:, :num_bits]
    return directions / np.maximum((centred @ directions).std(axis=0), 1e-6)


def _nearest_tracks(centred: torch.Tensor, offsets: np.ndarray, count: int) -> np.ndarray:
    """(T, count) for every track the tracks with the nearest mean descriptors (hard negatives)."""
    num_tracks = len(offsets) - 1
    count = min(count, num_tracks - 1)
    track_of_row = torch.from_numpy(np.repeat(np.arange(num_tracks), np.diff(offsets)))
    means = torch.zeros(num_tracks, centred.shape[1]).index_add_(0, track_of_row, centred)
    means = F.normalize(means, dim=1)
    neighbours = []
    for start in range(0, num_tracks, 1024):
        similarity = means[start : start + 1024] @ means.T
        rows = torch.arange(len(similarity))
        similarity[rows, rows + start] = -np.inf
        neighbours.append(similarity.topk(count, dim=1).indices)
    return torch.cat(neighbours).numpy()


def _batch_tracks(neighbours: np.ndarray, num_seeds: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct tracks of a batch: random seed tracks and their mined hard negatives."""
    seeds = rng.choice(len(neighbours), num_seeds, replace=False)
    return np.unique(np.concatenate([seeds, neighbours[seeds].ravel()]))


def _positive_pairs(offsets: np.ndarray, tracks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two distinct observations (rows of the track CSR, so different keyframes) of each track."""
    starts, lengths = offsets[tracks], np.diff(offsets)[tracks]
    first = (rng.random(len(tracks)) * lengths).astype(np.int64)
    second = (first + 1 + (rng.random(len(tracks)) * (lengths - 1)).astype(np.int64)) % lengths
    return starts + first, starts + second


def _info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of each side is the positive of row i of the other, the rest negatives."""
    logits = anchors @ positives.T / temperature
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _hamming_bit_weights(flips: np.ndarray) -> np.ndarray:
    """(B,) float32 weights of the Hamming regularisation, mean 1: a bit's stability in the tracks,
    ``1 - 2 x`` its flip rate (0 for a bit as good as a coin, 1 for one that never flips)."""
    stability = np.clip(1 - 2 * flips.mean(axis=0), 0, None)
    return (stability / max(stability.mean(), 1e-6)).astype(np.float32)
