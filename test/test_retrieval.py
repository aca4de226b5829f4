"""VLAD global descriptor: retrieval quality on real and synthetic images, state round trip, determinism."""

import cv2
import numpy as np
import pytest

from test_features import single_thread, textured_image  # noqa: F401 (autouse fixture)
from vloc_ros.features import create_extractor
from vloc_ros.retrieval import GlobalDescriptor, VladDescriptor


@pytest.fixture(scope="module")
def xfeat_small():
    # Retrieval needs no fine detail: 320 px keeps extracting 84 images cheap.
    return create_extractor({"name": "xfeat", "resize_max": 320, "max_keypoints": 1024})


@pytest.fixture(scope="module")
def unit_descriptors():
    descriptors = np.random.default_rng(0).normal(size=(3000, 64)).astype(np.float32)
    return descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)


def test_vlad_recognises_revisited_places_in_a_real_corridor(xfeat_small, shared_data):
    """rtabmap loop-closure samples: images 41-84 revisit the places of 1-40 (samples_GT.bmp).
    Map = images 1-40 (the vocabulary is learned on them only), queries = 41-84."""
    root = shared_data / "rtabmap_samples_loopclosure"
    same_place = cv2.imread(str(root / "samples_GT.bmp"), cv2.IMREAD_GRAYSCALE) > 0
    features = [
        xfeat_small.extract(cv2.imread(str(root / "images" / f"{i}.jpg"))[..., ::-1].copy()) for i in range(1, 85)
    ]
    vlad = VladDescriptor.fit(np.concatenate([f.descriptors for f in features[:40]]), num_clusters=64, seed=0)
    descriptors = np.stack([vlad.describe(f.descriptors) for f in features])
    ranking = np.argsort(-descriptors[40:] @ descriptors[:40].T, axis=1)
    positives = same_place[40:, :40]
    recall = {k: np.mean([positives[q, ranking[q, :k]].any() for q in range(44)]) for k in (1, 5)}
    print(f"rtabmap revisits: recall@1 {recall[1]:.3f}, recall@5 {recall[5]:.3f} (44 queries, 40 map images)")
    assert recall[1] >= 0.85 and recall[5] >= 0.95


def test_vlad_ranks_overlapping_crops_of_the_same_image_first(xfeat_small):
    scenes = [textured_image(640, 480, seed=seed) for seed in range(10, 15)]
    map_features = [xfeat_small.extract(scene[:360, :480]) for scene in scenes]
    # ~60 % overlap with the map crop, seen at a slightly different scale
    query_features = [
        xfeat_small.extract(cv2.resize(scene[80:440, 120:600], (400, 300), interpolation=cv2.INTER_AREA))
        for scene in scenes
    ]
    vlad = VladDescriptor.fit(np.concatenate([f.descriptors for f in map_features]), num_clusters=32, seed=0)
    similarity = (
        np.stack([vlad.describe(f.descriptors) for f in query_features])
        @ np.stack([vlad.describe(f.descriptors) for f in map_features]).T
    )
    np.testing.assert_array_equal(similarity.argmax(axis=1), np.arange(len(scenes)))


def test_describe_gives_unit_vectors_and_rejects_bad_input(unit_descriptors):
    vlad = VladDescriptor.fit(unit_descriptors, num_clusters=16, seed=0)
    descriptor_interface: GlobalDescriptor = vlad
    assert descriptor_interface.name == "vlad" and descriptor_interface.dim == 16 * 64
    descriptor = vlad.describe(unit_descriptors[:500])
    assert descriptor.shape == (vlad.dim,) and descriptor.dtype == np.float32
    assert np.linalg.norm(descriptor) == pytest.approx(1.0, abs=1e-5)
    # An image is a set of features: their order does not matter.
    np.testing.assert_allclose(vlad.describe(unit_descriptors[:500][::-1]), descriptor, atol=1e-6)
    assert not np.any(vlad.describe(unit_descriptors[:0]))
    with pytest.raises(ValueError):
        vlad.describe(unit_descriptors[:, :32])
    with pytest.raises(ValueError):
        VladDescriptor.fit(unit_descriptors[:10], num_clusters=16)


def test_state_round_trip_gives_identical_descriptors(unit_descriptors):
    vlad = VladDescriptor.fit(unit_descriptors, num_clusters=16, seed=0)
    state = vlad.state()
    assert all(isinstance(value, np.ndarray) for value in state.values())
    restored = VladDescriptor.from_state({key: value.copy() for key, value in state.items()})
    np.testing.assert_array_equal(restored.describe(unit_descriptors[:300]), vlad.describe(unit_descriptors[:300]))


def test_fit_is_deterministic_for_a_seed(unit_descriptors):
    first = VladDescriptor.fit(unit_descriptors, num_clusters=16, seed=3, max_samples=2000)
    second = VladDescriptor.fit(unit_descriptors, num_clusters=16, seed=3, max_samples=2000)
    other_seed = VladDescriptor.fit(unit_descriptors, num_clusters=16, seed=4, max_samples=2000)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    assert not np.allclose(first.centroids, other_seed.centroids)
