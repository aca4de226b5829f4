"""Correspondence search: binary codes, random trees, faiss baseline, global index, merge.

All data comes from ``vloc_ros.search.synthetic``: a 4000-point map with 2-8 noisy observations per
point and 512 query keypoints, 75 % fresh observations of the points one keyframe sees, 25 %
distractors. Thresholds sit well below the values measured on this data (given in comments).
"""

import faiss
import numpy as np
import pytest
import torch

from vloc_ros.search import synthetic
from vloc_ros.search.binary import Binarizer, majority_codes, unpack_bits
from vloc_ros.search.candidates import CandidateSearch, SearchMode
from vloc_ros.search.csr import gather_ranges
from vloc_ros.search.faiss_binary import FaissBinaryIndex
from vloc_ros.search.global_index import GlobalIndex
from vloc_ros.search.kernels import ratio_test_matches, top_k_scores
from vloc_ros.search.random_trees import RandomTreesIndex

NUM_POINTS = 4000
NUM_QUERIES = 512


@pytest.fixture(scope="module")
def world():
    # 40 keyframes seeing ~500 points each, so that far-apart keyframes share no points.
    synthetic_map = synthetic.make_map(NUM_POINTS, seed=0, config={"points_per_keyframe_step": 100})
    query = synthetic.make_query(synthetic_map, NUM_QUERIES, seed=1)
    binarizer = Binarizer.fit(synthetic_map.observation_descriptors, 64, seed=0)
    codes = binarizer.encode(synthetic_map.observation_descriptors)
    trees = RandomTreesIndex.build(codes, synthetic_map.observation_point_ids, num_trees=6, seed=0)
    return synthetic_map, query, binarizer, codes, trees


@pytest.fixture(scope="module")
def itq_binarizer(world):
    return Binarizer.fit(world[0].observation_descriptors[:8000], 64, "itq", seed=3)  # a subset keeps ITQ quick


def true_point_recall(candidates: np.ndarray, true_point_ids: np.ndarray) -> float:
    """Fraction of true queries (point id >= 0) whose point is among their (Q, C) candidates."""
    true = true_point_ids >= 0
    return (candidates[true] == true_point_ids[true, None]).any(axis=1).mean()


def make_search(world, config, point_index=None):
    synthetic_map, _, binarizer, _, trees = world
    return CandidateSearch(
        config,
        point_descriptors=synthetic_map.point_descriptors.astype(np.float16),
        point_index=point_index or trees,
        binarizer=binarizer,
        global_index=GlobalIndex(synthetic_map.keyframe_global_descriptors),
        keyframe_points=(synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids),
    )


def correct_keypoint_recall(result, true_point_ids) -> float:
    correct = result.point_ids == true_point_ids[result.query_indices]
    found = np.zeros(len(true_point_ids), bool)
    found[result.query_indices[correct]] = True
    return found[true_point_ids >= 0].mean()


# --- binary codes ---------------------------------------------------------------------------


def test_binarizer_packs_signs_big_endian_and_is_deterministic(world, itq_binarizer):
    synthetic_map, query, binarizer, _, _ = world
    codes = binarizer.encode(query.descriptors)
    assert codes.shape == (NUM_QUERIES, 8) and codes.dtype == np.uint8
    signs = binarizer.project(query.descriptors) > 0
    for bit in (0, 7, 8, 63):  # bit j lives in byte j // 8 at position 7 - j % 8
        np.testing.assert_array_equal((codes[:, bit // 8] >> (7 - bit % 8)) & 1, signs[:, bit])
    np.testing.assert_array_equal(unpack_bits(codes), signs)
    again = Binarizer.fit(synthetic_map.observation_descriptors, 64, seed=0)
    np.testing.assert_array_equal(again.encode(query.descriptors), codes)
    itq_again = Binarizer.fit(synthetic_map.observation_descriptors[:8000], 64, "itq", seed=3)
    np.testing.assert_array_equal(itq_again.rotation, itq_binarizer.rotation)
    restored = Binarizer.from_state(itq_binarizer.state())
    np.testing.assert_array_equal(restored.encode(query.descriptors), itq_binarizer.encode(query.descriptors))
    assert restored.method == "itq"


def test_binarizer_rejects_bad_arguments(world):
    synthetic_map, _, binarizer, _, _ = world
    with pytest.raises(ValueError):
        Binarizer.fit(synthetic_map.observation_descriptors, 32, "sign")  # sign needs one bit per dimension
    with pytest.raises(ValueError):
        Binarizer.fit(synthetic_map.observation_descriptors, 60, "pca")  # not a multiple of 8
    with pytest.raises(ValueError):
        Binarizer.fit(synthetic_map.observation_descriptors, 64, "lsh")
    with pytest.raises(ValueError):
        binarizer.encode(np.zeros((3, 32), np.float32))


def hamming_nn_recall(binarizer, base, queries, k=10) -> float:
    """How often the real-valued nearest neighbour is among the k nearest in Hamming distance."""
    _, true_nn = faiss.knn(queries, base, 1)
    index = faiss.IndexBinaryFlat(binarizer.num_bits)
    index.add(binarizer.encode(base))
    _, hamming_nn = index.search(binarizer.encode(queries), k)
    return (hamming_nn == true_nn).any(axis=1).mean()


def test_itq_preserves_neighbours_at_least_as_well_as_pca(world):
    synthetic_map, query, _, _, _ = world
    recall = {
        method: hamming_nn_recall(
            Binarizer.fit(synthetic_map.observation_descriptors[:8000], 32, method, seed=0),
            synthetic_map.point_descriptors,
            query.descriptors,
        )
        for method in ("pca", "itq")
    }
    assert recall["itq"] >= recall["pca"], recall


def test_majority_codes_take_the_per_bit_majority():
    codes = np.array([[0b1100_0000], [0b1000_0000], [0b0000_0001], [0b1111_1111]], np.uint8)
    labels = np.array([0, 0, 0, 2])
    majority = majority_codes(codes, labels)
    np.testing.assert_array_equal(majority[:, 0], [0b1000_0000, 0, 0b1111_1111])  # point 1 has no observation


# --- random trees ---------------------------------------------------------------------------


def test_random_trees_find_the_true_point(world):
    synthetic_map, query, binarizer, codes, trees = world
    query_codes, projections = binarizer.encode(query.descriptors), binarizer.project(query.descriptors)
    candidates = trees.search(query_codes, projections, max_candidates=32, max_leaves_per_tree=4)
    assert candidates.shape == (NUM_QUERIES, 32) and candidates.dtype == np.int64
    for row in candidates[::37]:  # distinct points, then the padding
        found = row[row >= 0]
        assert len(np.unique(found)) == len(found) and np.all(row[len(found) :] == -1)
    recall = true_point_recall(candidates, query.true_point_ids)
    # Measured 0.97 on this map; 32 random candidates out of 4000 points would give ~0.01.
    assert recall >= 0.85, recall
    # More probes find more; the same budget without the margins finds less.
    single_leaf = true_point_recall(trees.search(query_codes, projections, 32, 1), query.true_point_ids)
    without_margins = true_point_recall(trees.search(query_codes, None, 32, 4), query.true_point_ids)
    assert single_leaf < recall and without_margins < recall, (single_leaf, without_margins, recall)


def test_random_trees_single_probe_matches_a_plain_descent(world):
    """One leaf per tree: the candidates are the distinct points of the leaves the query's bits lead
    to, nearest in Hamming distance first (ties: smaller id), as a plain Python walk finds them."""
    _, query, binarizer, _, trees = world
    query_codes = binarizer.encode(query.descriptors[:40])
    candidates = trees.search(query_codes, None, max_candidates=24, max_leaves_per_tree=1)
    bits = unpack_bits(query_codes)
    point_bits = unpack_bits(trees.point_codes)
    for i, query_bits in enumerate(bits):
        points = set()
        for root in trees.tree_roots:
            node = root
            while trees.node_bit[node] >= 0:
                node = trees.node_child[node] + query_bits[trees.node_bit[node]]
            points |= {p for p in trees.leaf_points[trees.node_child[node]] if p >= 0}
        ranked = sorted(points, key=lambda p: (np.count_nonzero(point_bits[p] != query_bits), p))
        assert candidates[i][candidates[i] >= 0].tolist() == ranked[:24]


def test_random_trees_index_every_point_in_every_tree(world):
    _, _, _, _, trees = world
    leaf_size = trees.leaf_points.shape[1]
    assert leaf_size == 16
    # Each tree's nodes are consecutive from its root; every tree holds every point (no leaf overflowed).
    node_ranges = np.append(trees.tree_roots, len(trees.node_bit))
    for start, end in zip(node_ranges[:-1], node_ranges[1:]):
        is_leaf = trees.node_bit[start:end] < 0
        points = trees.leaf_points[trees.node_child[start:end][is_leaf]]
        assert np.array_equal(np.unique(points[points >= 0]), np.arange(NUM_POINTS))


def test_random_trees_state_round_trip_gives_identical_results(world):
    _, query, binarizer, _, trees = world
    state = trees.state()
    assert all(isinstance(value, np.ndarray) for value in state.values())
    restored = RandomTreesIndex.from_state({key: value.copy() for key, value in state.items()})
    query_codes, projections = binarizer.encode(query.descriptors), binarizer.project(query.descriptors)
    np.testing.assert_array_equal(
        restored.search(query_codes, projections, 32, 4), trees.search(query_codes, projections, 32, 4)
    )


def test_random_trees_reject_bad_queries(world):
    _, query, binarizer, _, trees = world
    assert len(trees.search(np.zeros((0, 8), np.uint8))) == 0
    with pytest.raises(ValueError):
        trees.search(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        trees.search(binarizer.encode(query.descriptors), np.zeros((NUM_QUERIES, 32), np.float32))


# --- faiss baseline and global index --------------------------------------------------------


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_faiss_baseline_works_through_the_same_interface(world, itq_binarizer, kind):
    synthetic_map, query, _, _, _ = world
    # Exhaustive Hamming search works best with ITQ codes (PCA gives IVF 0.56 here).
    binarizer = itq_binarizer
    codes = binarizer.encode(synthetic_map.observation_descriptors)
    index = FaissBinaryIndex.build(codes, synthetic_map.observation_point_ids, kind=kind)
    query_codes = binarizer.encode(query.descriptors)
    candidates = index.search(query_codes, binarizer.project(query.descriptors), max_candidates=32)
    assert candidates.shape == (NUM_QUERIES, 32) and candidates.dtype == np.int64
    assert true_point_recall(candidates, query.true_point_ids) >= 0.75  # measured 0.95 (ivf), 0.98 (hnsw)
    restored = FaissBinaryIndex.from_state(index.state())
    np.testing.assert_array_equal(restored.search(query_codes, None, 32), candidates)


def test_global_index_returns_nearest_keyframes_best_first(world):
    synthetic_map, query, _, _, _ = world
    index = GlobalIndex(synthetic_map.keyframe_global_descriptors)
    ids, scores = index.top_k(query.global_descriptor, 3)
    assert ids[0] == query.keyframe and np.all(np.diff(scores) <= 0)
    restored = GlobalIndex.from_state(index.state())
    np.testing.assert_array_equal(restored.top_k(query.global_descriptor, 3)[0], ids)
    assert len(index.top_k(query.global_descriptor, 10_000)[0]) == len(synthetic_map.keyframe_global_descriptors)
    with pytest.raises(ValueError):
        index.top_k(np.zeros(7, np.float32), 3)


def test_gather_ranges_concatenates_csr_rows():
    offsets = np.array([0, 2, 2, 5])
    values = np.array([10, 11, 20, 21, 22])
    gathered, source = gather_ranges(offsets, values, np.array([2, 0, 1, 2]))
    np.testing.assert_array_equal(gathered, [20, 21, 22, 10, 11, 20, 21, 22])
    np.testing.assert_array_equal(source, [0, 0, 0, 1, 1, 3, 3, 3])


# --- candidate search -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(SearchMode))
def test_candidate_search_finds_correct_correspondences(world, mode):
    _, query, _, _, _ = world
    search = make_search(world, {"mode": mode, "max_matches_per_keypoint": 1})
    result = search.search(query.descriptors, query.global_descriptor)
    search.close()
    correct = result.point_ids == query.true_point_ids[result.query_indices]
    assert correct.mean() >= 0.9, correct.mean()  # measured 0.93-0.96
    assert correct_keypoint_recall(result, query.true_point_ids) >= 0.85  # measured 0.97-0.997
    # The GPU pass queues all stages without waiting for them, so it times the whole search only.
    stages = set(mode.branches) | {"merge"} if search.gpu_local_search is None else set()
    assert set(result.timings) == stages | {"search"}
    # Retrieval happens once, for the search and for verification, whichever the mode.
    top_k = search.global_index.top_k(query.global_descriptor, search.config.global_top_k)[0]
    np.testing.assert_array_equal(result.retrieved_keyframes, top_k)
    assert len(np.unique(result.query_indices)) == len(result)  # m = 1: one match per keypoint
    assert np.all(result.distances >= 0)
    assert np.all(np.diff(result.distances) >= 0), "best first, for PROSAC"


def test_parallel_search_is_the_union_of_both_branches(world):
    synthetic_map, query, _, _, _ = world
    # The global descriptor of a far-away keyframe: retrieval fails for this query, so the local
    # branch must carry it; for the true global descriptor the global branch does.
    far_keyframe = (query.keyframe + len(synthetic_map.keyframe_global_descriptors) // 2) % len(
        synthetic_map.keyframe_global_descriptors
    )
    for global_descriptor in (query.global_descriptor, synthetic_map.keyframe_global_descriptors[far_keyframe]):
        recall = {}
        for mode in SearchMode:
            search = make_search(world, {"mode": mode})
            result = search.search(query.descriptors, global_descriptor)
            recall[mode] = correct_keypoint_recall(result, query.true_point_ids)
            search.close()
        # The union can add a close second candidate that makes the ratio test drop a keypoint the
        # single branch kept, hence the small tolerance.
        assert recall["parallel"] >= max(recall["global_only"], recall["local_only"]) - 0.01, recall
    # The failed retrieval: the global branch finds nearly nothing, the local branch nearly all, and
    # parallel keeps what the local branch found.
    assert recall["global_only"] < 0.2 and recall["local_only"] > 0.9, recall
    assert recall["parallel"] > 0.9, recall


def test_search_threads_share_keypoints_without_changing_the_result(world):
    _, query, _, _, _ = world
    results = []
    for threads in (1, 2, 3):
        search = make_search(world, {"threads": threads})
        results.append(search.search(query.descriptors, query.global_descriptor))
        search.close()
    for result in results[1:]:
        np.testing.assert_array_equal(result.query_indices, results[0].query_indices)
        np.testing.assert_array_equal(result.point_ids, results[0].point_ids)
        np.testing.assert_array_equal(result.distances, results[0].distances)
    # Fewer keypoints than threads: the empty shares are skipped.
    search = make_search(world, {"threads": 3})
    single = search.search(query.descriptors[:1], query.global_descriptor)
    search.close()
    assert len(single) <= 3 and np.all(single.query_indices == 0)
    with pytest.raises(ValueError, match="threads"):
        make_search(world, {"threads": 0})


def test_ratio_test_drops_ambiguous_keypoints(world):
    synthetic_map, _, binarizer, _, _ = world
    # Two map points with identical descriptors: a query near them is ambiguous between them.
    descriptors = synthetic_map.point_descriptors.copy()
    descriptors[1] = descriptors[0]
    queries = synthetic_map.observation_descriptors[synthetic_map.observation_point_ids == 0][:1]
    for max_matches, expected in ((1, set()), (2, {0, 1})):
        search = CandidateSearch(
            {"mode": "global_only", "max_matches_per_keypoint": max_matches, "global_top_k": 100},
            point_descriptors=descriptors,
            point_index=world[4],
            binarizer=binarizer,
            global_index=GlobalIndex(synthetic_map.keyframe_global_descriptors),
            keyframe_points=(synthetic_map.keyframe_point_offsets, synthetic_map.keyframe_point_ids),
        )
        result = search.search(queries, synthetic_map.keyframe_global_descriptors[0])
        assert set(result.point_ids.tolist()) == expected


def test_ratio_test_removes_distractors(world):
    _, query, _, _, _ = world
    distractors = query.true_point_ids < 0
    matched = {}
    for ratio in (1.0, 0.85):
        search = make_search(world, {"ratio_test": ratio, "max_matches_per_keypoint": 1})
        result = search.search(query.descriptors, query.global_descriptor)
        matched[ratio] = np.isin(np.flatnonzero(distractors), result.query_indices).mean()
    assert matched[1.0] > 0.9 and matched[0.85] < 0.5 * matched[1.0], matched


def test_merge_rescores_deduplicates_and_keeps_the_ratio_test_matches():
    rng = np.random.default_rng(5)
    points = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((200, 16)).astype(np.float32)
    candidates = rng.integers(-1, 300, (200, 12))
    candidates[:, 6:] = np.where(rng.random((200, 6)) < 0.5, candidates[:, :6], candidates[:, 6:])  # repeats
    ratio, max_matches = 0.95, 3
    query_indices, point_ids, distances = ratio_test_matches(
        queries, candidates, points, np.float32(ratio), max_matches
    )
    expected = []
    for q in range(len(queries)):
        ids = np.unique(candidates[q][candidates[q] >= 0])
        ranked = sorted(zip(np.linalg.norm(points[ids] - queries[q], axis=1), ids))
        padded = [d for d, _ in ranked] + [np.inf] * (max_matches + 1)
        keep = next(
            (k for k in range(1, max_matches + 1) if np.isfinite(padded[k - 1]) and padded[k - 1] < ratio * padded[k]),
            0,
        )
        expected += [(q, i, d) for d, i in ranked[:keep]]
    assert [(q, p) for q, p, _ in expected] == list(zip(query_indices.tolist(), point_ids.tolist()))
    np.testing.assert_allclose(distances, [d for *_, d in expected], rtol=1e-5)
    assert 0 < len(expected) < 200 * max_matches  # the test exercises keeping and dropping


def test_top_k_scores_matches_a_sort():
    rng = np.random.default_rng(6)
    scores = rng.standard_normal((50, 700)).astype(np.float32)
    offsets = rng.standard_normal(700).astype(np.float32)
    expected = np.argsort(-(scores - offsets), axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(top_k_scores(scores, offsets, 8), expected)


def test_candidate_search_rejects_bad_input(world):
    _, query, _, _, _ = world
    search = make_search(world, {})
    empty = search.search(np.zeros((0, 64), np.float32), query.global_descriptor)
    assert len(empty) == 0 and empty.point_ids.dtype == np.int64
    with pytest.raises(ValueError):
        search.search(query.descriptors[:, :32], query.global_descriptor)
    with pytest.raises(ValueError):
        search.search(query.descriptors, query.global_descriptor[:10])
    with pytest.raises(ValueError):
        search.search(query.descriptors, None)
    search.close()
    with pytest.raises(ValueError):
        make_search(world, {"mode": "both"})
    with pytest.raises(ValueError):
        make_search(world, {"ratio": 0.8})  # a typo of ratio_test


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the search's GPU path)")
@pytest.mark.parametrize("mode", list(SearchMode))
def test_gpu_search_finds_the_cpu_search_matches(world, mode):
    _, query, _, _, _ = world
    results = []
    for device in ("cpu", "cuda"):
        search = make_search(world, {"device": device, "mode": mode})
        results.append(search.search(query.descriptors, query.global_descriptor))
        search.close()
    on_cpu, on_gpu = ({(q, p) for q, p in zip(r.query_indices, r.point_ids)} for r in results)
    # The GPU rounds the binary projections and the global ranking differently: a bit near zero or a
    # near tie can change a candidate, and so a match now and then.
    assert len(on_cpu & on_gpu) >= 0.99 * max(len(on_cpu), len(on_gpu))
    assert np.all(np.diff(results[1].distances) >= 0)
