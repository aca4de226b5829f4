"""Re-ranking the global shortlist by discriminative local matches (``KeyframeReranker``) and its hook
in ``CandidateSearch`` (``SearchConfig.rerank_shortlist``).

The data is ``vloc_ros.search.synthetic``'s map (40 keyframes along a trajectory, far-apart keyframes
share no points) and a query that sees the points of one keyframe, 25 % distractors.
"""

import numpy as np
import pytest

from vloc_ros.search import synthetic
from vloc_ros.search.binary import Binarizer
from vloc_ros.search.candidates import CandidateSearch
from vloc_ros.search.global_index import GlobalIndex
from vloc_ros.search.random_trees import RandomTreesIndex
from vloc_ros.search.rerank import KeyframeReranker, mutual_ratio_matches


@pytest.fixture(scope="module")
def world():
    synthetic_map = synthetic.make_map(4000, seed=0, config={"points_per_keyframe_step": 100})
    query = synthetic.make_query(synthetic_map, 512, seed=1)
    keyframe_points = (synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids)
    return synthetic_map, query, KeyframeReranker(synthetic_map.point_descriptors, keyframe_points)


def far_shortlist(synthetic_map, keyframe: int, length: int) -> np.ndarray:
    """``length`` keyframes best first as a wrong global order would give them: keyframes far from
    ``keyframe`` (sharing none of its points), then ``keyframe`` last."""
    num_keyframes = len(synthetic_map.keyframe_point_offsets) - 1
    far = [(keyframe + 10 + 2 * i) % num_keyframes for i in range(length - 1)]
    return np.array([*far, keyframe])


def test_reranking_moves_the_keyframe_the_query_sees_up(world):
    synthetic_map, query, reranker = world
    shortlist = far_shortlist(synthetic_map, query.keyframe, 8)
    shares = reranker.match_shares(query.descriptors, shortlist)
    assert np.argmax(shares) == len(shortlist) - 1 and shares[-1] > 5 * np.sort(shares)[-2]
    reranked, scores = reranker.rerank(query.descriptors, shortlist)
    assert sorted(reranked) == sorted(shortlist) and np.all(np.diff(scores) <= 0)
    # Fused with the global order, the local winner from last place passes all but the global first.
    assert list(reranked[:2]) == [shortlist[0], query.keyframe]


def test_reranking_keeps_a_right_global_order(world):
    synthetic_map, query, reranker = world
    shortlist = far_shortlist(synthetic_map, query.keyframe, 8)[::-1]
    reranked, _ = reranker.rerank(query.descriptors, shortlist)
    assert reranked[0] == query.keyframe


def test_points_seen_by_many_keyframes_weigh_less(world):
    synthetic_map, _, reranker = world
    seen_by = np.bincount(synthetic_map.keyframe_point_ids, minlength=len(synthetic_map.point_descriptors))
    assert reranker.point_weights[np.argmax(seen_by)] < reranker.point_weights[np.argmin(seen_by)]
    # Each keyframe takes part with its rarest points only.
    counts = np.diff(reranker.keyframe_point_offsets)
    assert counts.max() <= 256 and np.all(counts == np.minimum(np.diff(synthetic_map.keyframe_point_offsets), 256))


def test_mutual_ratio_matches_agrees_with_a_dense_computation():
    rng = np.random.default_rng(0)
    queries, points = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(70, 8)).astype(np.float32)
    squared = ((queries[:, None] - points[None]) ** 2).sum(axis=2)
    nearest, second = np.argsort(squared, axis=1)[:, 0], np.sort(squared, axis=1)[:, 1]
    keep = (np.argmin(squared, axis=0)[nearest] == np.arange(50)) & (squared[np.arange(50), nearest] <= 0.81 * second)
    found = mutual_ratio_matches(
        queries @ points.T, 0.5 * (points**2).sum(axis=1), (queries**2).sum(axis=1), np.float32(0.81)
    )
    np.testing.assert_array_equal(found, nearest[keep])


def test_reranking_handles_edge_cases_and_rejects_bad_input(world):
    synthetic_map, query, reranker = world
    single = np.array([query.keyframe])
    np.testing.assert_array_equal(reranker.rerank(query.descriptors, single)[0], single)
    shortlist = far_shortlist(synthetic_map, query.keyframe, 5)
    # No query keypoints: no local evidence, the global order stays.
    np.testing.assert_array_equal(reranker.rerank(query.descriptors[:0], shortlist)[0], shortlist)
    with pytest.raises(ValueError):
        reranker.rerank(query.descriptors[:, :32], shortlist)
    with pytest.raises(ValueError):
        KeyframeReranker(synthetic_map.point_descriptors, (np.array([0, 5]), np.arange(3)))
    with pytest.raises(ValueError):
        KeyframeReranker(
            synthetic_map.point_descriptors,
            (synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids),
            ratio=0.0,
        )


def make_search(synthetic_map, config, reranker=None):
    binarizer = Binarizer.fit(synthetic_map.observation_descriptors, 64, seed=0)
    trees = RandomTreesIndex.build(
        binarizer.encode(synthetic_map.observation_descriptors), synthetic_map.observation_point_ids, num_trees=6
    )
    return CandidateSearch(
        config,
        point_descriptors=synthetic_map.point_descriptors.astype(np.float16),
        point_index=trees,
        binarizer=binarizer,
        global_index=GlobalIndex(synthetic_map.keyframe_global_descriptors),
        keyframe_points=(synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids),
        reranker=reranker,
    )


def test_search_without_a_shortlist_is_unchanged_by_a_reranker(world):
    synthetic_map, query, reranker = world
    config = {"device": "cpu", "threads": 1}
    plain = make_search(synthetic_map, config).search(query.descriptors, query.global_descriptor)
    with_reranker = make_search(synthetic_map, config, reranker).search(query.descriptors, query.global_descriptor)
    for field in ("query_indices", "point_ids", "distances", "retrieved_keyframes"):
        np.testing.assert_array_equal(getattr(with_reranker, field), getattr(plain, field))


def test_search_keeps_the_top_k_of_the_reranked_shortlist(world):
    synthetic_map, query, reranker = world
    config = {"device": "cpu", "threads": 1, "global_top_k": 3, "rerank_shortlist": 8}
    search = make_search(synthetic_map, config, reranker)
    shortlist, _ = search.global_index.top_k(query.global_descriptor, 8)
    expected, _ = reranker.rerank(query.descriptors, shortlist)
    np.testing.assert_array_equal(search.retrieve_keyframes(query.global_descriptor, query.descriptors), expected[:3])
    result = search.search(query.descriptors, query.global_descriptor)
    np.testing.assert_array_equal(result.retrieved_keyframes, expected[:3])
    # Without the query's local descriptors there is nothing to re-rank by.
    np.testing.assert_array_equal(search.retrieve_keyframes(query.global_descriptor), shortlist[:3])
    with pytest.raises(ValueError, match="reranker"):
        make_search(synthetic_map, config)
