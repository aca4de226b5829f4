"""Random trees over binary codes of map observations (the local branch of the search).

Every node tests one bit of the code. At build time each node draws ``candidate_bits_per_node``
random bits and keeps the one that makes the larger child smallest (shallow, balanced trees) while
splitting few SfM tracks (a point whose observations disagree on the bit goes to both children).
A node with at most ``leaf_size`` distinct points becomes a leaf that stores those point ids.
Trees index every observation, so a point has several chances (its observations) to share a leaf
with a query; with the synthetic data this beats routing each track by its majority code (0.82 vs
0.71 recall at 30k points), and the split penalty itself hardly changes recall: balance does.

Search is multi-probe: every query descends each tree to its leaf, then also visits the leaves
reached by flipping the ``max_leaves_per_tree - 1`` least certain bits on its path (smallest
``|projection|``, the distance from the sign threshold) and descending greedily below the flip.
The distinct points of the probed leaves are ranked by the Hamming distance between the query
code and the point's code (the majority of its observations), and the nearest
``max_candidates`` are returned; Hamming ranking keeps far more true points than vote counting.

The search is compiled (numba; it releases the GIL, so the search threads run side by side): a descent
of all trees in lockstep per query (independent loads, so a large map's cache misses overlap),
then a counting sort of the probed points by Hamming distance. On a large map the search is bound
by the random reads of ~400 probed entries per keypoint, so the ranking prefetches them a keypoint
or two ahead (docs/decisions.md has the timings). Building is vectorised numpy, with a compiled
count of the candidate bits' splits.
Codes have at most 64 bits so that a query code is one uint64 and a bit test is a shift.

Storage (see ``state``): ``node_bit[n]`` is the bit tested by node ``n`` (bit ``j`` as packed by
``binary.pack_bits``) or -1 for a leaf; ``node_child[n]`` is the left child (the right child is
``node_child[n] + 1``) or, for a leaf, its leaf index; ``leaf_points[l]`` lists the point ids of
leaf ``l``, padded with -1 to ``leaf_size``; ``point_codes[p]`` is point ``p``'s code.
"""

from __future__ import annotations

import numba
import numpy as np

from .binary import majority_codes
from .kernels import prefetch

DEFAULT_BUILD = {
    "num_trees": 8,
    "leaf_size": 16,  # max distinct points per leaf
    "max_depth": 24,  # bounds the descent; a leaf forced at this depth keeps its most observed points
    "candidate_bits_per_node": 16,
    "split_weight": 0.5,  # cost of splitting a track over two children, relative to child size
}
MAX_BITS = 64
_LEVEL_MASK = 63  # tree levels packed into flip-cost keys: depth must stay below 64
_USED_KEY = np.int32(np.iinfo(np.int32).max)  # a flip already taken
_BIT_FIELD, _LEAF_BIT = 127, 64  # packed search nodes: the low 7 bits hold the tested bit, 64 = leaf


class RandomTreesIndex:
    def __init__(
        self,
        node_bit: np.ndarray,
        node_child: np.ndarray,
        tree_roots: np.ndarray,
        leaf_points: np.ndarray,
        point_codes: np.ndarray,
        depth: int,
    ):
        self.node_bit = np.asarray(node_bit, np.int32)
        self.node_child = np.asarray(node_child, np.int32)
        self.tree_roots = np.asarray(tree_roots, np.int32)
        self.leaf_points = np.asarray(leaf_points, np.int32)
        self.point_codes = np.asarray(point_codes, np.uint8)  # (P, B/8) to rank candidates
        self.point_words = codes_to_words(self.point_codes)
        self.num_bits = self.point_codes.shape[1] * 8
        self.depth = int(depth)  # deepest leaf over all trees: bounds the descent loop
        # One int64 per node for the search, so that a step down loads one value:
        # child (or leaf index) << 7 | the tested bit (_LEAF_BIT for a leaf).
        bits = np.where(self.node_bit >= 0, self.node_bit, _LEAF_BIT).astype(np.int64)
        self._nodes = (self.node_child.astype(np.int64) << 7) | bits

    @property
    def num_trees(self) -> int:
        return len(self.tree_roots)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.state().values())

    @classmethod
    def build(
        cls,
        codes: np.ndarray,
        labels: np.ndarray,
        num_trees: int = DEFAULT_BUILD["num_trees"],
        leaf_size: int = DEFAULT_BUILD["leaf_size"],
        max_depth: int = DEFAULT_BUILD["max_depth"],
        candidate_bits_per_node: int = DEFAULT_BUILD["candidate_bits_per_node"],
        split_weight: float = DEFAULT_BUILD["split_weight"],
        seed: int = 0,
    ) -> RandomTreesIndex:
        """codes: (M, B/8) uint8 packed codes of observations, B <= 64; labels: (M,) their point
        indices in [0, P) (P = labels.max() + 1; each point's code is the majority of its observations)."""
        codes = np.asarray(codes, np.uint8)
        labels = np.asarray(labels, np.int64)
        if codes.ndim != 2 or len(codes) != len(labels) or len(codes) == 0 or labels.min() < 0:
            raise ValueError(
                f"need (M, B/8) codes and (M,) labels >= 0 with M > 0, got {codes.shape} and {labels.shape}"
            )
        if not 0 < max_depth <= _LEVEL_MASK:
            raise ValueError(f"max_depth must be in [1, {_LEVEL_MASK}], got {max_depth}")
        rng = np.random.default_rng(seed)
        by_label = np.argsort(labels, kind="stable")
        # Every tree starts from the observations sorted by label, their words and labels in that order.
        words, sorted_labels = codes_to_words(codes)[by_label], labels[by_label]
        trees = [
            _build_tree(words, codes.shape[1] * 8, sorted_labels, rng, leaf_size, max_depth,
                        candidate_bits_per_node, split_weight)
            for _ in range(num_trees)
        ]  # fmt: skip
        # Stack the trees into one node array so that all trees are searched together.
        node_bit, node_child, roots, leaf_points = [], [], [], []
        num_nodes = num_leaves = 0
        for bit, child, leaves, _ in trees:
            roots.append(num_nodes)
            node_bit.append(bit)
            node_child.append(child + np.where(bit >= 0, num_nodes, num_leaves))
            leaf_points.append(leaves)
            num_nodes += len(bit)
            num_leaves += len(leaves)
        depth = max(tree_depth for *_, tree_depth in trees)
        return cls(
            np.concatenate(node_bit), np.concatenate(node_child), np.array(roots),
            np.concatenate(leaf_points), majority_codes(codes, labels), depth,
        )  # fmt: skip

    def search(
        self,
        query_codes: np.ndarray,
        query_projections: np.ndarray | None = None,
        max_candidates: int = 64,
        max_leaves_per_tree: int = 4,
    ) -> np.ndarray:
        """(Q, max_candidates) int64 candidate point ids per query, nearest first, -1 padded.

        Without projections every bit is equally certain and the flips go to the deepest levels.
        """
        query_codes = checked_query_codes(query_codes, self.num_bits)
        num_queries = len(query_codes)
        if num_queries == 0:
            return np.zeros((0, max_candidates), np.int64)
        # Flip costs as sortable int32 keys (non-negative float32 bits), the low bits freed for the level.
        if query_projections is None:
            bit_keys = np.zeros((num_queries, 0), np.int32)
        else:
            margins = np.abs(np.asarray(query_projections, np.float32))
            if margins.shape != (num_queries, self.num_bits):
                expected = (num_queries, self.num_bits)
                raise ValueError(f"query_projections must have shape {expected}, got {margins.shape}")
            bit_keys = margins.view(np.int32) & ~np.int32(_LEVEL_MASK)
        level_keys = np.arange(self.depth, 0, -1, dtype=np.float32).view(np.int32) & ~np.int32(_LEVEL_MASK)
        query_words = codes_to_words(query_codes)
        leaves = _probe_leaves(self._nodes, self.tree_roots, query_words, bit_keys, level_keys, max_leaves_per_tree)
        return _rank_points(self.leaf_points, self.point_words, query_words, leaves, max_candidates)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "node_bit": self.node_bit,
            "node_child": self.node_child,
            "tree_roots": self.tree_roots,
            "leaf_points": self.leaf_points,
            "point_codes": self.point_codes,
            "depth": np.array(self.depth),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> RandomTreesIndex:
        """The index that ``state()`` was taken from. A state read from disk may be damaged, and the
        compiled search does not check bounds, so its links are checked here: ValueError if one leads
        outside the arrays, or a tree is deeper than ``depth``."""
        index = cls(
            state["node_bit"], state["node_child"], state["tree_roots"], state["leaf_points"],
            state["point_codes"], int(state["depth"]),
        )  # fmt: skip
        index._check_links()
        return index

    def _check_links(self) -> None:
        num_nodes, num_leaves, num_points = len(self.node_bit), len(self.leaf_points), len(self.point_codes)
        if len(self.node_child) != num_nodes:
            raise ValueError(f"node_child has {len(self.node_child)} entries for {num_nodes} nodes")
        if not 0 <= self.depth <= _LEVEL_MASK:
            raise ValueError(f"depth {self.depth} is outside [0, {_LEVEL_MASK}]")
        inner = self.node_bit >= 0
        checks = (
            ("tree_roots", self.tree_roots, 0, num_nodes),
            ("node_bit", self.node_bit, -1, self.num_bits),
            ("node_child of inner nodes", self.node_child[inner], 0, num_nodes - 1),  # children are (c, c + 1)
            ("node_child of leaves", self.node_child[~inner], 0, num_leaves),
            ("leaf_points", self.leaf_points, -1, num_points),
        )
        for name, values, low, high in checks:
            if values.size and (values.min() < low or values.max() >= high):
                raise ValueError(f"{name} holds values outside [{low}, {high})")
        # Every descent from a root must reach a leaf within depth levels (the search stops there).
        frontier = self.tree_roots
        for _ in range(self.depth + 1):
            frontier = frontier[inner[frontier]]
            if len(frontier) == 0:
                return
            if len(frontier) > num_nodes:
                raise ValueError("the nodes do not form trees (a node is reached twice)")
            frontier = np.concatenate([self.node_child[frontier], self.node_child[frontier] + 1])
        raise ValueError(f"a tree is deeper than depth {self.depth}")


def checked_query_codes(query_codes, num_bits: int) -> np.ndarray:
    """``query_codes`` as (Q, num_bits / 8) uint8; ValueError for another shape."""
    query_codes = np.asarray(query_codes, np.uint8)
    if query_codes.ndim != 2 or query_codes.shape[1] * 8 != num_bits:
        raise ValueError(f"expected query codes of shape (Q, {num_bits // 8}), got {query_codes.shape}")
    return query_codes


def codes_to_words(codes: np.ndarray) -> np.ndarray:
    """(N, B/8) packed codes, B <= 64 -> (N,) uint64 with bit j of the code at bit 63 - j."""
    if codes.shape[1] > MAX_BITS // 8:
        raise ValueError(f"random trees take codes of at most {MAX_BITS} bits, got {codes.shape[1] * 8}")
    padded = np.zeros((len(codes), 8), np.uint8)
    padded[:, : codes.shape[1]] = codes
    return padded.view(">u8").ravel().astype(np.uint64)


@numba.njit(nogil=True, cache=True)
def _probe_leaves(nodes, tree_roots, query_words, bit_keys, level_keys, max_leaves_per_tree):
    """The multi-probe descent of ``RandomTreesIndex.search``, compiled: (Q, probes) leaf indices, -1
    where a tree has fewer flips to make. ``nodes``: packed nodes (see ``RandomTreesIndex``).

    A flip's key is its cost's key (``bit_keys[q, bit]``, or ``level_keys[level]`` without
    projections) with the level in the low bits, so the smallest key is the cheapest, then
    shallowest, flip.
    """
    num_queries, depth, num_trees = len(query_words), len(level_keys), len(tree_roots)
    has_projections = bit_keys.shape[1] > 0
    num_flips = min(max_leaves_per_tree - 1, depth)
    leaves = np.full((num_queries, num_trees * (num_flips + 1)), -1, np.int64)
    path_nodes = np.empty((num_trees, depth + 1), np.int64)
    path_keys = np.empty((num_trees, depth), np.int32)
    path_length = np.empty(num_trees, np.int64)
    current = np.empty(num_trees, np.int64)
    for query in range(num_queries):
        word = query_words[query]
        # All trees descend level by level together: their node loads are independent, so the
        # cache misses of a large map overlap instead of queueing one behind the other.
        current[:] = tree_roots
        path_length[:] = -1
        for level in range(depth + 1):
            for tree in range(num_trees):
                if path_length[tree] >= 0:
                    continue
                node = nodes[current[tree]]
                path_nodes[tree, level] = current[tree]
                bit = node & _BIT_FIELD
                if bit == _LEAF_BIT:
                    path_length[tree] = level
                    leaves[query, tree] = node >> 7
                    continue
                key = bit_keys[query, bit] if has_projections else level_keys[level]
                path_keys[tree, level] = key | level
                current[tree] = (node >> 7) + _bit(word, bit)
        for flip in range(num_flips):  # the next cheapest flip of every tree, then greedy descents
            for tree in range(num_trees):
                length = path_length[tree]
                current[tree] = -1
                if length == 0:
                    continue
                cheapest = 0
                for level in range(1, length):
                    if path_keys[tree, level] < path_keys[tree, cheapest]:
                        cheapest = level
                if path_keys[tree, cheapest] == _USED_KEY:
                    continue
                path_keys[tree, cheapest] = _USED_KEY
                parent, child = path_nodes[tree, cheapest], path_nodes[tree, cheapest + 1]
                current[tree] = 2 * (nodes[parent] >> 7) + 1 - child  # children are (left, left + 1)
            for _level in range(depth):
                for tree in range(num_trees):
                    if current[tree] >= 0:
                        node = nodes[current[tree]]
                        if node & _BIT_FIELD != _LEAF_BIT:
                            current[tree] = (node >> 7) + _bit(word, node & _BIT_FIELD)
            for tree in range(num_trees):
                if current[tree] >= 0:
                    leaves[query, (flip + 1) * num_trees + tree] = nodes[current[tree]] >> 7
    return leaves


@numba.njit(nogil=True, cache=True)
def _rank_points(leaf_points, point_words, query_words, leaves, max_candidates):
    """Per query the distinct points of its ``leaves`` (-1: none), the ``max_candidates`` nearest in
    Hamming distance first (ties: smaller id) -> (Q, max_candidates) point ids, -1 padded."""
    num_queries = len(query_words)
    result = np.full((num_queries, max_candidates), -1, np.int64)
    found = np.empty(leaves.shape[1] * leaf_points.shape[1], np.int64)  # Hamming distance << 32 | point id
    bucketed = np.empty_like(found)
    histogram = np.empty(MAX_BITS + 1, np.int64)
    for query in range(num_queries):
        # Prefetch, two keypoints ahead, the leaf rows, and one ahead the codes of their points
        # (rows fetched by then): on a large map both are random reads that miss the cache, and
        # this overlaps them with the ranking.
        if query + 2 < num_queries:
            for leaf in leaves[query + 2]:
                if leaf >= 0:
                    prefetch(leaf_points[leaf], 0)
        if query + 1 < num_queries:
            for leaf in leaves[query + 1]:
                if leaf >= 0:
                    for point in leaf_points[leaf]:
                        if point >= 0:
                            prefetch(point_words, point)
        word = query_words[query]
        # Points of the probed leaves bucketed by Hamming distance (a counting sort), then buckets
        # in order, each sorted by id and deduplicated, until max_candidates distinct points.
        # Duplicates (a point in several probed leaves) share a distance, so they meet in a bucket;
        # no lookup table over all points, whose random accesses cost more than this at 100k points.
        num_found = 0
        histogram[:] = 0
        for leaf in leaves[query]:
            if leaf < 0:
                continue
            for point in leaf_points[leaf]:
                if point >= 0:
                    distance = _popcount(point_words[point] ^ word)
                    histogram[distance] += 1
                    found[num_found] = (distance << 32) | point
                    num_found += 1
        position = 0
        for distance in range(MAX_BITS + 1):
            position, histogram[distance] = position + histogram[distance], position
        for key in found[:num_found]:
            distance = key >> 32
            bucketed[histogram[distance]] = key & 0xFFFFFFFF
            histogram[distance] += 1
        num_kept, start = 0, 0
        for distance in range(MAX_BITS + 1):
            stop = histogram[distance]
            _insertion_sort(bucketed, start, stop)
            for i in range(start, stop):
                if i == start or bucketed[i] != bucketed[i - 1]:
                    result[query, num_kept] = bucketed[i]
                    num_kept += 1
                    if num_kept == max_candidates:
                        break
            start = stop
            if num_kept == max_candidates or start == num_found:
                break
    return result


@numba.njit(inline="always")
def _insertion_sort(values, start, stop):
    """Sort ``values[start:stop]`` in place."""
    for i in range(start + 1, stop):
        value, j = values[i], i - 1
        while j >= start and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


@numba.njit(inline="always")
def _bit(word, bit):
    """Bit ``bit`` of a code packed by ``codes_to_words``, as 0 or 1 (int64: uint64 mixed with
    signed ints would make numba compute in float64)."""
    return np.int64((word >> np.uint64(MAX_BITS - 1 - bit)) & np.uint64(1))


@numba.njit(inline="always")
def _popcount(word):
    """Set bits of a uint64 (SWAR; LLVM turns it into one popcnt where the CPU has it)."""
    word = word - ((word >> np.uint64(1)) & np.uint64(0x5555555555555555))
    word = (word & np.uint64(0x3333333333333333)) + ((word >> np.uint64(2)) & np.uint64(0x3333333333333333))
    word = (word + (word >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((word * np.uint64(0x0101010101010101)) >> np.uint64(56))


def _build_tree(words, num_bits, labels, rng, leaf_size, max_depth, num_candidates, split_weight):
    """One tree, built level by level over all nodes of the level at once; ``words`` and ``labels``
    of the observations sorted by label.

    Observations are kept sorted by (node, label), so a node's observations and, inside it, each
    track's observations are contiguous runs. Their words and labels travel with them, permuted
    level by level, rather than being gathered by observation id: each level's permutation moves
    entries within a node, which is cache-friendly, while a gather by id from arrays of millions of
    observations misses the cache on almost every entry, so its cost per observation grows with the map.
    Returns (node_bit, node_child with tree-local ids, leaf point table, depth).
    """
    lab = labels
    obs_node = np.zeros(len(lab), np.int64)  # node ids of the current level, starting at 0
    level_bits, level_children, leaf_tables = [], [], []
    first_node, num_leaves = 0, 0
    for depth in range(max_depth + 1):
        local = obs_node - first_node
        node_start = np.ones(len(lab), bool)
        node_start[1:] = local[1:] != local[:-1]
        group_start = node_start.copy()
        group_start[1:] |= lab[1:] != lab[:-1]
        num_nodes = int(node_start.sum())
        distinct_points = np.bincount(local[group_start], minlength=num_nodes)

        chosen_bit = np.full(num_nodes, -1, np.int64)
        splittable = (distinct_points > leaf_size) if depth < max_depth else np.zeros(num_nodes, bool)
        if splittable.any():
            chosen_bit[splittable] = _choose_bits(
                words, num_bits, local, group_start, distinct_points, splittable, rng, num_candidates, split_weight
            )
        is_leaf = chosen_bit < 0
        leaf_tables.append(_leaf_table(lab, local, group_start, is_leaf, leaf_size))
        # Internal nodes: children get consecutive ids after this level's nodes, left then right.
        left = first_node + num_nodes + 2 * (np.cumsum(~is_leaf) - 1)
        level_bits.append(np.where(is_leaf, -1, chosen_bit).astype(np.int32))
        level_children.append(np.where(is_leaf, num_leaves + np.cumsum(is_leaf) - 1, left).astype(np.int32))
        num_leaves += int(is_leaf.sum())
        if is_leaf.all():
            break

        keep = ~is_leaf[local]
        words, lab, local = words[keep], lab[keep], local[keep]
        go_right = ((words >> (MAX_BITS - 1 - chosen_bit[local]).astype(np.uint64)) & 1).astype(np.int64)
        child = left[local] + go_right
        # Stable sort by child keeps each child's observations sorted by label.
        order = np.argsort(child, kind="stable")
        words, lab, obs_node = words[order], lab[order], child[order]
        first_node += num_nodes
    return np.concatenate(level_bits), np.concatenate(level_children), np.vstack(leaf_tables), len(level_bits) - 1


def _choose_bits(words, num_bits, local, group_start, node_points, splittable, rng, num_candidates, split_weight):
    """For every splittable node, the best of its random candidate bits, or -1 if none helps;
    ``words``, ``local``: the level's observations' words and nodes.

    Counted in points (tracks): a bit sends a point left if any of its observations in the node has
    the bit clear, right if any has it set, both if they disagree (the track is split). The score is
    the larger child's size plus ``split_weight`` x the number of split tracks, over the node size:
    small children mean shallow trees, few split tracks mean that a track stays in one leaf.
    """
    nodes = np.flatnonzero(splittable)
    candidates = rng.integers(0, num_bits, (num_candidates, len(nodes)))
    # Bits shared by all observations of a track in the node (AND) and set in any of them (OR).
    groups = np.flatnonzero(group_start)
    in_splittable = splittable[local[groups]]
    all_set = np.bitwise_and.reduceat(words, groups)[in_splittable]
    any_set = np.bitwise_or.reduceat(words, groups)[in_splittable]
    group_node = local[groups[in_splittable]]
    # Groups are sorted by node, and every splittable node has some: run k is column k's node.
    node_groups = np.flatnonzero(np.r_[True, group_node[1:] != group_node[:-1]])
    shifts = (MAX_BITS - 1 - candidates.T).astype(np.uint64)  # (nodes, candidates): a node's in one cache line
    left_points, right_points = (counts.T for counts in _count_sides(all_set, any_set, node_groups, shifts))
    size = node_points[nodes]
    split_tracks = left_points + right_points - size
    score = (np.maximum(left_points, right_points) + split_weight * split_tracks) / size
    score[(left_points == size) | (right_points == size)] = np.inf  # a child as big as its parent
    best = np.argmin(score, axis=0)
    columns = np.arange(len(nodes))
    return np.where(np.isfinite(score[best, columns]), candidates[best, columns], -1)


@numba.njit(nogil=True, cache=True)
def _count_sides(all_set, any_set, node_groups, shifts):
    """Per node and candidate bit: the tracks it sends left (the bit is clear in one of their
    observations: ``all_set`` lacks it) and right (``any_set`` has it), (nodes, candidates) int32.

    ``node_groups``: where each node's run of tracks starts; ``shifts[k, j]``: the shift that brings
    node k's candidate j to bit 0. One pass over the tracks counts all candidates: at millions of
    observations the level's arrays are far larger than the caches, and a pass per candidate (numpy)
    is bound by memory traffic, more so the larger the map.
    """
    num_nodes, num_candidates = shifts.shape
    left = np.empty((num_nodes, num_candidates), np.int32)
    right = np.empty((num_nodes, num_candidates), np.int32)
    left_count = np.empty(num_candidates, np.int64)
    right_count = np.empty(num_candidates, np.int64)
    for node in range(num_nodes):
        stop = node_groups[node + 1] if node + 1 < num_nodes else len(all_set)
        left_count[:] = 0
        right_count[:] = 0
        for group in range(node_groups[node], stop):
            shared, any_ = all_set[group], any_set[group]
            for j in range(num_candidates):
                left_count[j] += np.int64(((shared >> shifts[node, j]) & np.uint64(1)) ^ np.uint64(1))
                right_count[j] += np.int64((any_ >> shifts[node, j]) & np.uint64(1))
        left[node] = left_count
        right[node] = right_count
    return left, right


def _leaf_table(lab, local, group_start, is_leaf, leaf_size):
    """Point ids of this level's leaves, (num_leaves, leaf_size) padded with -1.

    A leaf that could not be split further keeps its ``leaf_size`` most observed points.
    """
    groups = np.flatnonzero(group_start)
    observations = np.diff(np.append(groups, len(lab)))
    in_leaf = is_leaf[local[groups]]
    groups, observations = groups[in_leaf], observations[in_leaf]
    leaf_of_group = (np.cumsum(is_leaf) - 1)[local[groups]]
    order = np.lexsort((-observations, leaf_of_group))
    leaf_of_group, groups = leaf_of_group[order], groups[order]
    rank = np.arange(len(groups)) - np.searchsorted(leaf_of_group, leaf_of_group)
    keep = rank < leaf_size
    table = np.full((int(is_leaf.sum()), leaf_size), -1, np.int32)
    table[leaf_of_group[keep], rank[keep]] = lab[groups[keep]]
    return table
