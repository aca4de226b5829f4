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

Everything is vectorised over queries, trees and probes; Python loops run over tree levels only.
Codes have at most 64 bits so that a query code is one uint64 and a bit test is a shift.

Storage (see ``state``): ``node_bit[n]`` is the bit tested by node ``n`` (bit ``j`` as packed by
``binary.pack_bits``) or -1 for a leaf; ``node_child[n]`` is the left child (the right child is
``node_child[n] + 1``) or, for a leaf, its leaf index; ``leaf_points[l]`` lists the point ids of
leaf ``l``, padded with -1 to ``leaf_size``; ``point_codes[p]`` is point ``p``'s code.
"""

from __future__ import annotations

import numpy as np

from .binary import majority_codes
from .csr import CandidateLists

DEFAULT_BUILD = {
    "num_trees": 8,
    "leaf_size": 16,  # max distinct points per leaf
    "max_depth": 24,  # bounds the descent; a leaf forced at this depth keeps its most observed points
    "candidate_bits_per_node": 16,
    "split_weight": 0.5,  # cost of splitting a track over two children, relative to child size
}
MAX_BITS = 64
_LEAF_SHIFT = 64  # shifting a uint64 by 64 gives 0 in numpy: a leaf "goes left" onto itself
_LEVEL_MASK = 63  # tree levels packed into flip-cost keys: depth must stay below 64
_INF_KEY = np.float32(np.inf).view(np.int32)


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
        # Derived for the descent: one uint64 per node, (left child) << 7 | (the right shift that
        # brings the tested bit of a uint64 code to bit 0). Leaves are their own left child.
        is_leaf = self.node_bit < 0
        left = np.where(is_leaf, np.arange(len(self.node_bit)), self.node_child).astype(np.uint64)
        shift = np.where(is_leaf, _LEAF_SHIFT, MAX_BITS - 1 - self.node_bit).astype(np.uint64)
        self._step = (left << np.uint64(7)) | shift
        # Leaf index of every leaf node; an extra last node stands for "no probe" and maps to an
        # extra all-padding row of the leaf table.
        self._leaf = np.append(np.where(is_leaf, self.node_child, -1), len(self.leaf_points))
        self._padding_node = np.uint64(len(self.node_bit))
        # Ranking keys (Hamming distance << point_bits) | point: int32 (fast sort) while they fit.
        # The all-ones point id marks padding.
        self._point_bits = max(int(len(self.point_codes)).bit_length(), 1)
        self._key_dtype = np.int32 if self._point_bits + 7 <= 31 else np.int64  # distance <= 64: 7 bits
        self._point_mask = self._key_dtype((1 << self._point_bits) - 1)
        table = np.vstack([self.leaf_points, np.full((1, self.leaf_points.shape[1]), -1, np.int32)])
        self._leaf_table = np.where(table >= 0, table, self._point_mask).astype(self._key_dtype)

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
        words = codes_to_words(codes)
        rng = np.random.default_rng(seed)
        by_label = np.argsort(labels, kind="stable")
        trees = [
            _build_tree(words, codes.shape[1] * 8, labels, by_label, rng, leaf_size, max_depth,
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
    ) -> CandidateLists:
        """Candidate point ids per query (CSR), at most ``max_candidates`` each.

        Without projections every bit is equally certain and the flips go to the deepest levels.
        """
        query_codes = np.asarray(query_codes, np.uint8)
        if query_codes.ndim != 2 or query_codes.shape[1] * 8 != self.num_bits:
            raise ValueError(f"expected query codes of shape (Q, {self.num_bits // 8}), got {query_codes.shape}")
        num_queries = len(query_codes)
        if num_queries == 0:
            return CandidateLists.empty(0)
        words = codes_to_words(query_codes)[:, None]
        # Flip cost per query, indexed by shift (the bit is 63 - shift); the leaf shift costs +inf.
        costs = np.full((num_queries, _LEAF_SHIFT + 1), np.inf, np.float32)
        if query_projections is None:
            costs[:, : self.num_bits] = 1.0
        else:
            margins = np.abs(np.asarray(query_projections, np.float32))
            if margins.shape != (num_queries, self.num_bits):
                expected = (num_queries, self.num_bits)
                raise ValueError(f"query_projections must have shape {expected}, got {margins.shape}")
            costs[:, MAX_BITS - self.num_bits : MAX_BITS] = margins[:, ::-1]
        cost_row = (np.arange(num_queries, dtype=np.uint64) * np.uint64(costs.shape[1]))[:, None]

        roots = np.broadcast_to(self.tree_roots.astype(np.uint64), (num_queries, self.num_trees))
        path_nodes, path_cost = self._descend(roots, words, costs.ravel(), cost_row)
        leaf_nodes = [path_nodes[-1]]
        num_flips = min(max_leaves_per_tree - 1, len(path_cost))
        if num_flips > 0:
            if query_projections is None:  # equal certainty: flip deep in the tree, where leaves are near
                depth_cost = np.arange(len(path_cost), 0, -1, dtype=np.float32)[:, None, None]
                path_cost = np.where(np.isfinite(path_cost), depth_cost, np.inf).astype(np.float32)
            flipped, valid = self._cheapest_flips(path_nodes, path_cost, num_flips)
            flipped_leaves = self._descend(flipped, words)[0][-1]
            leaf_nodes.append(np.where(valid, flipped_leaves, self._padding_node))
        leaves = np.take(self._leaf, np.concatenate(leaf_nodes, axis=1))
        return self._rank_candidates(words, leaves, max_candidates)

    def _descend(self, nodes, words, costs=None, cost_row=None):
        """Follow the query bits from ``nodes`` (Q, X) down to leaves, all queries at once.

        Returns the nodes visited per level (depth + 1, Q, X), the last row being the leaf nodes,
        and, with ``costs``, the cost of flipping the bit tested at each level (+inf at a leaf).
        Everything is uint64 and gathers use ``np.take``: the fastest combination in numpy.
        """
        path_nodes, path_cost = [nodes], []
        for _ in range(self.depth):
            step = np.take(self._step, nodes)
            shift = step & np.uint64(127)
            if costs is not None:
                path_cost.append(np.take(costs, cost_row + shift))
            nodes = (step >> np.uint64(7)) + ((words >> shift) & np.uint64(1))
            path_nodes.append(nodes)
        return np.array(path_nodes), np.array(path_cost)

    def _cheapest_flips(self, path_nodes: np.ndarray, path_cost: np.ndarray, num_flips: int):
        """Per path the siblings at its ``num_flips`` cheapest levels -> (Q, T * num_flips) nodes, valid.

        The level is packed into the low mantissa bits of the (non-negative float32) cost, so a
        plain ``min`` over levels finds the cheapest level: much faster than ``argmin`` on axis 0.
        """
        depth, num_queries, num_trees = path_cost.shape
        levels = np.arange(depth, dtype=np.int32)[:, None]
        keys = (path_cost.reshape(depth, -1).view(np.int32) & ~np.int32(_LEVEL_MASK)) | levels
        columns = np.arange(keys.shape[1])
        parents = path_nodes[:-1].reshape(depth, -1)
        children = path_nodes[1:].reshape(depth, -1)
        siblings, valid = [], []
        for _ in range(num_flips):
            best = keys.min(axis=0)
            level = best & _LEVEL_MASK
            valid.append(best < _INF_KEY)
            parent, child = parents[level, columns], children[level, columns]
            # Children are pairs (left, left + 1): the sibling is the other one.
            siblings.append(((np.take(self._step, parent) >> np.uint64(7)) * np.uint64(2) + np.uint64(1)) - child)
            keys[level, columns] = np.iinfo(np.int32).max
        shape = (num_queries, num_trees * num_flips)
        return np.stack(siblings, axis=-1).reshape(shape), np.stack(valid, axis=-1).reshape(shape)

    def _rank_candidates(self, words: np.ndarray, leaves: np.ndarray, max_candidates: int) -> CandidateLists:
        """(Q, probes) leaves -> per query the distinct points of those leaves, the ``max_candidates``
        closest in Hamming distance between the query code and the point code first."""
        num_queries = len(leaves)
        points = np.take(self._leaf_table, leaves, axis=0).reshape(num_queries, -1)
        # Padding ids are >= num_points: clip their (ignored) code lookups.
        distance = np.bitwise_count(np.take(self.point_words, points, mode="clip") ^ words)
        # One sortable key per entry: (distance, point); duplicates of a point become neighbours.
        key = (distance.astype(self._key_dtype) << self._point_bits) | points
        key.sort(axis=1)
        point = key & self._point_mask
        first = np.ones(key.shape, bool)
        first[:, 1:] = key[:, 1:] != key[:, :-1]
        first &= point != self._point_mask
        first &= np.cumsum(first, axis=1) <= max_candidates
        width = int(np.flatnonzero(first.any(axis=0)).max(initial=-1)) + 1  # columns after it hold no pick
        return CandidateLists.from_padded(np.where(first[:, :width], point[:, :width], -1))

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
        return cls(
            state["node_bit"], state["node_child"], state["tree_roots"], state["leaf_points"],
            state["point_codes"], int(state["depth"]),
        )  # fmt: skip


def codes_to_words(codes: np.ndarray) -> np.ndarray:
    """(N, B/8) packed codes, B <= 64 -> (N,) uint64 with bit j of the code at bit 63 - j."""
    if codes.shape[1] > MAX_BITS // 8:
        raise ValueError(f"random trees take codes of at most {MAX_BITS} bits, got {codes.shape[1] * 8}")
    padded = np.zeros((len(codes), 8), np.uint8)
    padded[:, : codes.shape[1]] = codes
    return padded.view(">u8").ravel().astype(np.uint64)


def _segment_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values`` (n,) over the runs beginning at ``starts`` (a cumulative-sum difference)."""
    cumulative = np.zeros(len(values) + 1, np.int32)
    np.cumsum(values, dtype=np.int32, out=cumulative[1:])
    return cumulative[np.append(starts[1:], len(values))] - cumulative[starts]


def _build_tree(words, num_bits, labels, by_label, rng, leaf_size, max_depth, num_candidates, split_weight):
    """One tree, built level by level over all nodes of the level at once.

    Observations are kept sorted by (node, label), so a node's observations and, inside it, each
    track's observations are contiguous runs.
    Returns (node_bit, node_child with tree-local ids, leaf point table, depth).
    """
    obs = by_label
    obs_node = np.zeros(len(obs), np.int64)  # node ids of the current level, starting at 0
    level_bits, level_children, leaf_tables = [], [], []
    first_node, num_leaves = 0, 0
    for depth in range(max_depth + 1):
        local = obs_node - first_node
        lab = labels[obs]
        node_start = np.ones(len(obs), bool)
        node_start[1:] = local[1:] != local[:-1]
        group_start = node_start.copy()
        group_start[1:] |= lab[1:] != lab[:-1]
        num_nodes = int(node_start.sum())
        distinct_points = np.bincount(local[group_start], minlength=num_nodes)

        chosen_bit = np.full(num_nodes, -1, np.int64)
        splittable = (distinct_points > leaf_size) if depth < max_depth else np.zeros(num_nodes, bool)
        if splittable.any():
            chosen_bit[splittable] = _choose_bits(
                words, num_bits, obs, local, group_start, distinct_points, splittable, rng, num_candidates, split_weight
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
        obs, local = obs[keep], local[keep]
        go_right = ((words[obs] >> (MAX_BITS - 1 - chosen_bit[local]).astype(np.uint64)) & 1).astype(np.int64)
        child = left[local] + go_right
        # Stable sort by child keeps each child's observations sorted by label.
        order = np.argsort(child, kind="stable")
        obs, obs_node = obs[order], child[order]
        first_node += num_nodes
    return np.concatenate(level_bits), np.concatenate(level_children), np.vstack(leaf_tables), len(level_bits) - 1


def _choose_bits(words, num_bits, obs, local, group_start, node_points, splittable, rng, num_candidates, split_weight):
    """For every splittable node, the best of its random candidate bits, or -1 if none helps.

    Counted in points (tracks): a bit sends a point left if any of its observations in the node has
    the bit clear, right if any has it set, both if they disagree (the track is split). The score is
    the larger child's size plus ``split_weight`` x the number of split tracks, over the node size:
    small children mean shallow trees, few split tracks mean that a track stays in one leaf.
    """
    nodes = np.flatnonzero(splittable)
    candidates = rng.integers(0, num_bits, (num_candidates, len(nodes)))
    candidate_column = np.full(len(splittable), -1)
    candidate_column[nodes] = np.arange(len(nodes))
    # Bits shared by all observations of a track in the node (AND) and set in any of them (OR).
    groups = np.flatnonzero(group_start)
    obs_words = words[obs]
    in_splittable = splittable[local[groups]]
    all_set = np.bitwise_and.reduceat(obs_words, groups)[in_splittable]
    any_set = np.bitwise_or.reduceat(obs_words, groups)[in_splittable]
    group_node = local[groups[in_splittable]]
    group_column = candidate_column[group_node]
    node_groups = np.flatnonzero(np.r_[True, group_node[1:] != group_node[:-1]])
    left_points = np.empty(candidates.shape, np.int32)
    right_points = np.empty(candidates.shape, np.int32)
    for j, row in enumerate((MAX_BITS - 1 - candidates).astype(np.uint64)):  # one candidate per node at a time
        shift = row[group_column]
        left_points[j] = _segment_sums(((all_set >> shift) & 1) == 0, node_groups)
        right_points[j] = _segment_sums(((any_set >> shift) & 1) == 1, node_groups)
    size = node_points[nodes]
    split_tracks = left_points + right_points - size
    score = (np.maximum(left_points, right_points) + split_weight * split_tracks) / size
    score[(left_points == size) | (right_points == size)] = np.inf  # a child as big as its parent
    best = np.argmin(score, axis=0)
    columns = np.arange(len(nodes))
    return np.where(np.isfinite(score[best, columns]), candidates[best, columns], -1)


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
