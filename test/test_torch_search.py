"""The torch local branch and merge (``search.torch_search``) against the compiled CPU path: the
same ids in the same order, on the CPU here and on the GPU where there is one."""

import numpy as np
import pytest
import torch

from vloc_ros.search import synthetic
from vloc_ros.search.binary import Binarizer, pack_bits
from vloc_ros.search.kernels import ratio_test_matches
from vloc_ros.search.random_trees import RandomTreesIndex, codes_to_words
from vloc_ros.search.torch_search import (
    TorchLocalSearch,
    popcount,
    projections_to_words,
    torch_ratio_test_matches,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NUM_QUERIES = 300
# (points, code bits, build arguments): a default-like index, a deep one with tiny leaves and
# 32-bit codes, and a single-leaf tree (depth 0: nothing to flip).
INDEXES = {
    "default": (3000, 64, {"num_trees": 6}),
    "deep_32_bits": (1500, 32, {"num_trees": 3, "leaf_size": 3, "max_depth": 12}),
    "one_leaf": (40, 64, {"num_trees": 2, "leaf_size": 64}),
}


@pytest.fixture(scope="module", params=list(INDEXES))
def case(request):
    num_points, num_bits, build = INDEXES[request.param]
    synthetic_map = synthetic.make_map(num_points, seed=0, config={"points_per_keyframe_step": 100})
    query = synthetic.make_query(synthetic_map, NUM_QUERIES, seed=1)
    binarizer = Binarizer.fit(synthetic_map.observation_descriptors, num_bits, seed=0)
    codes = binarizer.encode(synthetic_map.observation_descriptors)
    index = RandomTreesIndex.build(codes, synthetic_map.observation_point_ids, seed=0, **build)
    return synthetic_map, query, binarizer, index


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.mark.parametrize("with_projections", [True, False])
def test_search_matches_the_compiled_search(case, device, with_projections):
    synthetic_map, query, binarizer, index = case
    projections = binarizer.project(query.descriptors)
    codes = pack_bits(projections > 0)
    projections = projections if with_projections else None
    torch_search = TorchLocalSearch(index, device)
    num_points = len(synthetic_map.point_descriptors)
    for max_leaves_per_tree in (1, 2, 4, index.depth + 3):
        for max_candidates in (1, 32, num_points + 5):  # the last: more than the probed leaves hold
            expected = index.search(codes, projections, max_candidates, max_leaves_per_tree)
            found = torch_search.search(codes, projections, max_candidates, max_leaves_per_tree)
            assert found.dtype == np.int64
            np.testing.assert_array_equal(found, expected, err_msg=f"{max_leaves_per_tree=} {max_candidates=}")
    assert (expected >= 0).any(axis=1).all()  # every query found points: the comparison saw real rankings


def test_search_tensors_stay_on_the_device(case, device):
    _, query, binarizer, index = case
    torch_search = TorchLocalSearch(index, device)
    projections = torch.from_numpy(binarizer.project(query.descriptors)).to(device)
    found = torch_search.search_tensors(projections_to_words(projections), projections, 16, 3)
    assert found.device.type == device
    expected = index.search(pack_bits(projections.cpu().numpy() > 0), projections.cpu().numpy(), 16, 3)
    np.testing.assert_array_equal(found.cpu().numpy(), expected)
    assert torch_search.search(np.zeros((0, index.num_bits // 8), np.uint8), None, 7).shape == (0, 7)


def test_projections_to_words_packs_like_the_cpu(device):
    projections = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    projections[0] = 1.0  # bit 63 set: a negative int64
    for num_bits in (64, 32, 8):
        words = projections_to_words(torch.from_numpy(projections[:, :num_bits]).to(device)).cpu().numpy()
        np.testing.assert_array_equal(words, codes_to_words(pack_bits(projections[:, :num_bits] > 0)).view(np.int64))


def test_popcount_counts_every_bit(device):
    words = np.random.default_rng(1).integers(0, 2**64, 1000, dtype=np.uint64, endpoint=False)
    words[:4] = [0, 2**64 - 1, 2**63, 2**63 - 1]
    expected = np.unpackbits(words.view(np.uint8)).reshape(-1, 64).sum(1)
    found = popcount(torch.from_numpy(words.view(np.int64)).to(device)).cpu().numpy()
    np.testing.assert_array_equal(found, expected)


def _assert_same_matches(found, expected):
    query_indices, point_ids, distances = (x.cpu().numpy() for x in found)
    np.testing.assert_array_equal(query_indices, expected[0])
    np.testing.assert_array_equal(point_ids, expected[1])
    np.testing.assert_allclose(distances, expected[2], rtol=1e-5)


@pytest.mark.parametrize("max_matches", [1, 2, 3])
def test_ratio_test_matches_the_compiled_merge(case, device, max_matches):
    synthetic_map, query, binarizer, index = case
    projections = binarizer.project(query.descriptors)
    local = index.search(pack_bits(projections > 0), projections, 24, 4)
    rng = np.random.default_rng(2)
    # A global-like block: some of the local points again (found by both branches), random points, -1.
    others = rng.integers(0, len(synthetic_map.point_descriptors), (NUM_QUERIES, 6))
    candidates = np.hstack([local, local[:, ::3], others, np.full((NUM_QUERIES, 2), -1)])
    candidates[:20] = -1  # keypoints without candidates
    candidates[20:40, 1:] = candidates[20:40, :1]  # one point, many times
    descriptors = synthetic_map.point_descriptors.astype(np.float32)
    tied = descriptors.copy()  # pairs of points with one descriptor: equal distances keep column order
    tied[1::2] = tied[0 : len(tied) - 1 : 2]
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(device)  # noqa: E731
    for ratio in (0.7, 0.9, 1.0):
        for columns in (candidates, candidates[:, :1], candidates[:, :0]):
            for table in (descriptors, tied):
                expected = ratio_test_matches(query.descriptors, columns, table, np.float32(ratio), max_matches)
                found = torch_ratio_test_matches(
                    as_tensor(query.descriptors), as_tensor(columns), as_tensor(table), ratio, max_matches
                )
                _assert_same_matches(found, expected)
                assert found[0].device.type == device
    assert len(expected[0]) == 0  # no candidate columns: no matches
    full = ratio_test_matches(query.descriptors, candidates, descriptors, np.float32(0.9), max_matches)
    assert len(full[0]) > 0 and not np.isin(np.arange(20), full[0]).any()
