"""The learned local head (vloc_ros.learning.local_head) on synthetic tracks. Real descriptors are
left to bench/bench_local_codes.py: a real map takes a map build."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from vloc_ros.learning.local_head import (
    BitFlipModel,
    LearnedBinarizer,
    LocalHeadConfig,
    leave_one_out_flips,
    train_local_head,
)
from vloc_ros.search import synthetic
from vloc_ros.search.binary import Binarizer, majority_codes, pack_bits
from vloc_ros.search.random_trees import RandomTreesIndex

FAST = LocalHeadConfig(steps=10)


@pytest.fixture(scope="module")
def tracks():
    """A synthetic map's tracks (each observation in its own keyframe) and fresh held-out
    observations of its points with their true point ids."""
    synthetic_map = synthetic.make_map(2000, seed=0)
    rng = np.random.default_rng(1)
    query_points = rng.choice(len(synthetic_map.point_centres), 1500, replace=False)
    queries = synthetic_map.descriptor_model.observe(synthetic_map.point_centres[query_points], rng)
    points = synthetic_map.observation_point_ids
    return synthetic_map.observation_descriptors, points, np.arange(len(points)), queries, query_points


@pytest.fixture(scope="module")
def head(tracks) -> LearnedBinarizer:
    descriptors, points, keyframes, *_ = tracks
    return train_local_head(descriptors, points, keyframes, LocalHeadConfig(steps=300))


def hamming_recall(binarizer, descriptors, points, queries, query_points, top_k=10) -> float:
    """Fraction of held-out observations whose point is among their top_k Hamming neighbours."""
    index = faiss.IndexBinaryFlat(binarizer.num_bits)
    index.add(majority_codes(binarizer.encode(descriptors), points))
    _, nearest = index.search(binarizer.encode(queries), top_k)
    return float((nearest == query_points[:, None]).any(axis=1).mean())


def test_learned_codes_keep_held_out_observations_nearer_their_point_than_pca(tracks, head):
    descriptors, points, _, queries, query_points = tracks
    pca = Binarizer.fit(descriptors, 64, "pca")
    learned = hamming_recall(head, descriptors, points, queries, query_points)
    baseline = hamming_recall(pca, descriptors, points, queries, query_points)
    print(f"Hamming top-10 recall of held-out observations: learned {learned:.3f}, PCA {baseline:.3f}")
    assert learned > baseline + 0.05  # the training must move the codes off their PCA start, for the better


def test_learned_codes_search_in_random_trees(tracks, head):
    descriptors, points, _, queries, query_points = tracks
    trees = RandomTreesIndex.build(head.encode(descriptors), points)
    projections = head.project(queries)
    candidates = trees.search(pack_bits(projections > 0), projections, 32)
    assert (candidates == query_points[:, None]).any(axis=1).mean() > 0.6


def test_training_is_deterministic_for_a_seed(tracks):
    descriptors, points, keyframes, *_ = tracks
    first, second, other = (
        train_local_head(descriptors, points, keyframes, LocalHeadConfig(steps=30, seed=seed)).state()
        for seed in (0, 0, 1)
    )
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[key], second[key]) for key in first)
    assert not np.array_equal(first["binary_weights"], other["binary_weights"])


def test_state_round_trip_gives_the_same_codes(tracks, head):
    queries = tracks[3]
    state = head.state()
    assert {key: (value.dtype.kind, value.shape) for key, value in state.items()} == {
        "method": ("U", ()),
        "mean": ("f", (64,)),
        "binary_weights": ("f", (64, 64)),
        "binary_bias": ("f", (64,)),
        "real_weights": ("f", (64, 64)),
        "real_bias": ("f", (64,)),
        "flip_bin_width": ("f", (64,)),
        "flip_probability": ("f", (64, LocalHeadConfig().flip_bins)),
    }
    restored = LearnedBinarizer.from_state({key: np.array(value) for key, value in state.items()})
    assert restored.method == "learned" and restored.num_bits == 64 and restored.descriptor_dim == 64
    np.testing.assert_array_equal(restored.project(queries), head.project(queries))
    np.testing.assert_array_equal(restored.encode(queries), head.encode(queries))
    np.testing.assert_array_equal(restored.describe_real(queries), head.describe_real(queries))


def test_project_encode_and_describe_agree(tracks, head):
    queries = tracks[3]
    projections = head.project(queries)
    assert projections.dtype == np.float32 and projections.shape == (len(queries), 64)
    np.testing.assert_array_equal(head.encode(queries), pack_bits(projections > 0))
    np.testing.assert_array_equal(projections > 0, head.logits(queries) > 0)
    assert (np.abs(projections) >= np.log(2) - 1e-6).all()  # P(flip) <= 1/2
    real = head.describe_real(queries)
    assert real.dtype == np.float32 and real.shape == (len(queries), 64)
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), 1, atol=1e-5)


def test_project_torch_equals_project(tracks, head):
    queries = tracks[3]
    on_torch = head.project_torch(torch.from_numpy(queries)).numpy()
    expected = head.project(queries)
    clear = np.abs(head.logits(queries)) > 1e-4  # a logit at the threshold may round either way
    np.testing.assert_array_equal((on_torch > 0)[clear], (expected > 0)[clear])
    np.testing.assert_allclose(on_torch, expected, rtol=1e-4, atol=1e-4)


def test_128_bit_codes(tracks):
    descriptors, points, keyframes, queries, _ = tracks
    head = train_local_head(descriptors, points, keyframes, LocalHeadConfig(num_bits=128, real_dim=32, steps=20))
    assert head.encode(queries).shape == (len(queries), 16)
    assert head.describe_real(queries).shape == (len(queries), 32)


def test_bad_input_is_refused(tracks, head):
    descriptors, points, keyframes, *_ = tracks
    with pytest.raises(ValueError, match="shape"):
        head.project(descriptors[:, :32])
    with pytest.raises(ValueError, match="shape"):
        head.encode(descriptors[0])
    with pytest.raises(ValueError, match="M > 0"):
        train_local_head(descriptors, points[:-1], keyframes, FAST)
    with pytest.raises(ValueError, match="num_bits"):
        train_local_head(descriptors, points, keyframes, {"num_bits": 60})
    with pytest.raises(ValueError, match="real_dim"):
        train_local_head(descriptors, points, keyframes, {"real_dim": 65})
    with pytest.raises(ValueError, match="unknown"):
        train_local_head(descriptors, points, keyframes, {"bits": 64})
    with pytest.raises(ValueError, match="two keyframes"):  # every track seen by one keyframe only
        train_local_head(descriptors, points, np.zeros_like(keyframes), FAST)
    with pytest.raises(ValueError, match="learned"):
        LearnedBinarizer.from_state({**head.state(), "method": np.array("pca")})


def test_flip_model_on_pca_projections_is_calibrated_and_monotone(tracks):
    descriptors, points, *_ = tracks
    projections = Binarizer.fit(descriptors, 64, "pca").project(descriptors)
    model = BitFlipModel.fit(projections, points)
    assert ((model.flip_probability > 0) & (model.flip_probability <= 0.5)).all()
    # The modelled flip rate matches the counted one, and a larger margin is never less certain.
    flips, tracked = leave_one_out_flips(projections > 0, points)
    predicted = np.exp(-model.certainty(projections[tracked]))
    np.testing.assert_allclose(predicted.mean(axis=0), flips.mean(axis=0), atol=0.02)
    margins = np.linspace(0, 3, 200, dtype=np.float32)[:, None] * model.bin_width * model.num_bins
    assert (np.diff(model.certainty(margins), axis=0) >= -1e-6).all()
    assert (np.diff(model.certainty(-margins), axis=0) >= -1e-6).all()


def test_leave_one_out_flips_count_against_the_other_observations():
    bits = np.array([[1], [1], [0], [1], [0], [1]], bool)
    points = np.array([0, 0, 0, 1, 1, 2])  # point 2 has no other observation
    flips, tracked = leave_one_out_flips(bits, points)
    np.testing.assert_array_equal(tracked, [True] * 5 + [False])
    # Point 0: each 1 meets a tie (1 vs 0), the 0 meets two 1s; point 1: each disagrees with the other.
    np.testing.assert_array_equal(flips[:, 0], [0.5, 0.5, 1, 1, 1])


def test_flip_model_refuses_bad_input():
    with pytest.raises(ValueError, match="two observations"):
        BitFlipModel.fit(np.ones((3, 8), np.float32), np.arange(3))
    with pytest.raises(ValueError, match="point ids"):
        BitFlipModel.fit(np.ones((3, 8), np.float32), np.arange(4))
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        BitFlipModel(np.ones(8), np.full((8, 4), 0.7))
