"""NetVLAD global descriptor trained on co-visibility (SARE / triplet): interface, state, determinism,
and that training separates places better than its VLAD start on a synthetic set of places."""

import numpy as np
import pytest

from vloc_ros.learning.global_head import (
    GlobalHeadConfig,
    NetVladDescriptor,
    covisibility,
    train_global_descriptor,
)
from vloc_ros.retrieval import GlobalDescriptor, VladDescriptor

# Small and quick: 60 steps over 40 images of 200 descriptors.
QUICK = {"steps": 60, "negatives": 4, "negative_pool": 8, "descriptors_per_image": 128}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_places(views: int, num_places: int = 10, dim: int = 64, seed: int = 0):
    """Images of ``num_places`` places: each view sees 40 of its place's 60 landmarks (noisy) among
    160 clutter descriptors from 6 modes that every place shares, as floors and walls are.
    Returns (per image descriptors, place labels, co-visibility = shared landmarks)."""
    rng = np.random.default_rng(seed)
    clutter_modes = unit(rng.normal(size=(6, dim)))
    landmarks = unit(rng.normal(size=(num_places, 60, dim)))
    images, labels, seen = [], [], []
    for place in range(num_places):
        for _ in range(views):
            ids = rng.choice(60, 40, replace=False)
            own = unit(landmarks[place, ids] + 0.35 / np.sqrt(dim) * rng.normal(size=(40, dim)))
            clutter = unit(clutter_modes[rng.integers(0, 6, 160)] + 0.8 / np.sqrt(dim) * rng.normal(size=(160, dim)))
            images.append(rng.permutation(np.concatenate([own, clutter])))
            labels.append(place)
            seen.append(set(ids + 60 * place))
    shared = np.array([[len(a & b) for b in seen] for a in seen])
    return images, np.array(labels), shared


@pytest.fixture(scope="module")
def places():
    # Views 0-3 of every place train; view 4 is held out.
    images, labels, shared = synthetic_places(views=5)
    train = [i for i in range(len(images)) if i % 5 < 4]
    shared = shared[np.ix_(train, train)]
    vlad = VladDescriptor.fit(np.concatenate([images[i] for i in train]), num_clusters=8, seed=0)
    return images, labels, train, shared, vlad


@pytest.fixture(scope="module")
def trained(places):
    images, _, train, shared, vlad = places
    return {
        loss: train_global_descriptor([images[i] for i in train], shared, vlad, GlobalHeadConfig(loss=loss, **QUICK))
        for loss in ("sare", "triplet")
    }


def held_out_separation(descriptor, places) -> float:
    """Mean similarity of each held-out view to the training views of its place, minus that to the others."""
    images, labels, train, _, _ = places
    held_out = [i for i in range(len(images)) if i % 5 == 4]
    similarity = (
        np.stack([descriptor.describe(images[i]) for i in held_out])
        @ np.stack([descriptor.describe(images[i]) for i in train]).T
    )
    same_place = labels[held_out][:, None] == labels[train][None, :]
    return float(similarity[same_place].mean() - similarity[~same_place].mean())


def test_training_separates_unseen_views_of_places_better_than_the_vlad_start(places, trained):
    images, _, train, _, vlad = places
    start = NetVladDescriptor.from_vlad(vlad, np.concatenate([images[i] for i in train]))
    before = held_out_separation(start, places)
    for loss, descriptor in trained.items():
        after = held_out_separation(descriptor, places)
        print(f"{loss}: held-out separation {before:.3f} -> {after:.3f}")
        assert after > before + 0.015


def test_training_is_deterministic_for_a_seed(places, trained):
    images, _, train, shared, vlad = places
    descriptors = [images[i] for i in train]
    again = train_global_descriptor(descriptors, shared, vlad, GlobalHeadConfig(loss="sare", **QUICK))
    other_seed = train_global_descriptor(descriptors, shared, vlad, GlobalHeadConfig(loss="sare", seed=1, **QUICK))
    for key, value in trained["sare"].state().items():
        np.testing.assert_array_equal(again.state()[key], value)
    assert not np.array_equal(other_seed.state()["centroids"], trained["sare"].state()["centroids"])


def test_describe_gives_unit_vectors_and_rejects_bad_input(trained):
    descriptor: GlobalDescriptor = trained["sare"]
    assert descriptor.name == "netvlad" and descriptor.dim == 8 * 64
    local = unit(np.random.default_rng(3).normal(size=(1024, 64)))
    vector = descriptor.describe(local)
    assert vector.shape == (descriptor.dim,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    # An image is a set of features: their order does not matter.
    np.testing.assert_allclose(descriptor.describe(local[::-1]), vector, atol=1e-6)
    empty = descriptor.describe(local[:0])
    assert empty.shape == (descriptor.dim,) and not np.any(empty)
    for bad in (local[:, :32], local[0]):
        with pytest.raises(ValueError):
            descriptor.describe(bad)


def test_state_round_trip_gives_identical_descriptors(trained):
    state = trained["triplet"].state()
    assert {key: (value.dtype, value.shape) for key, value in state.items()} == {
        "centroids": (np.float32, (8, 64)),
        "assignment_weight": (np.float32, (8, 64)),
        "assignment_bias": (np.float32, (8,)),
    }
    restored = NetVladDescriptor.from_state({key: value.copy() for key, value in state.items()})
    local = unit(np.random.default_rng(4).normal(size=(300, 64)))
    np.testing.assert_array_equal(restored.describe(local), trained["triplet"].describe(local))
    with pytest.raises(ValueError):
        NetVladDescriptor(state["centroids"], state["assignment_weight"][:4], state["assignment_bias"])


def test_the_start_is_close_to_vlad_with_its_hard_assignment(places):
    images, _, train, _, vlad = places
    start = NetVladDescriptor.from_vlad(vlad, np.concatenate([images[i] for i in train]))
    np.testing.assert_array_equal(start.centroids, vlad.centroids)
    for local in images[4::5]:
        # VLAD with hard assignment, intra-normalised (no signed square root).
        nearest = np.argmin(((local[:, None] - vlad.centroids[None]) ** 2).sum(axis=2), axis=1)
        residuals = np.stack([(local[nearest == v] - vlad.centroids[v]).sum(axis=0) for v in range(8)])
        hard = residuals / np.maximum(np.linalg.norm(residuals, axis=1, keepdims=True), 1e-12)
        assert start.describe(local) @ hard.ravel() / np.linalg.norm(hard) > 0.8


def test_covisibility_counts_shared_points_once():
    # Keyframe 0 sees points 0, 1, 2 (2 listed twice), keyframe 1 sees 1, 2, 3, keyframe 2 sees 4.
    offsets = np.array([0, 4, 7, 8])
    points = np.array([0, 1, 2, 2, 1, 2, 3, 4], np.int32)
    np.testing.assert_array_equal(covisibility(offsets, points, 3), [[3, 2, 0], [2, 3, 0], [0, 0, 1]])
    with pytest.raises(ValueError):
        covisibility(offsets, points, 4)


def test_training_rejects_bad_input(places):
    images, _, train, shared, vlad = places
    descriptors = [images[i] for i in train]
    with pytest.raises(ValueError, match="loss"):
        train_global_descriptor(descriptors, shared, vlad, GlobalHeadConfig(loss="contrastive", **QUICK))
    with pytest.raises(ValueError, match="covisibility"):
        train_global_descriptor(descriptors[:-1], shared, vlad, GlobalHeadConfig(**QUICK))
    # Every image sees every other: no place to tell apart.
    with pytest.raises(ValueError, match="shares nothing"):
        train_global_descriptor(descriptors, np.full_like(shared, 40), vlad, GlobalHeadConfig(**QUICK))
