"""Balanced hierarchical sampling: top-down water-filling of a target size over a :class:`ClusterTree`.

At every level each node's quota is split over its children by water-filling: the largest cap c with
``sum_i min(c, size_i) <= quota``; each child gets ``min(c, size_i)`` and the remainder goes one by one to random
children larger than c. All nodes of a level are processed at once (grouped, vectorised), so a level with
millions of clusters costs a few sorts, not a Python loop.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import CurationInputError
from .hierarchy import ClusterTree
from .kmeans import make_rng

log = logging.getLogger(__name__)

STRATEGIES = ("random", "closest", "furthest")


def water_fill(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``target`` over clusters of ``sizes: (m,)`` as evenly as their sizes allow. Returns (m,) int64."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return grouped_water_fill(sizes, np.zeros(sizes.size, dtype=np.int64), np.array([target]), rng)


def grouped_water_fill(sizes: np.ndarray, groups: np.ndarray, quotas: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Water-fill ``quotas[g]`` over the items of each group ``g`` at once.

    sizes: (m,) int64 capacity of each item; groups: (m,) int64 group of each item (0..G-1); quotas: (G,) int64,
    each at most its group's total size. Returns (m,) int64 allocations summing to ``quotas`` per group.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    quotas = np.asarray(quotas, dtype=np.int64)
    n_groups = quotas.size
    group_total = np.bincount(groups, weights=sizes, minlength=n_groups).astype(np.int64)
    if np.any(quotas > group_total):
        g = int(np.argmax(quotas > group_total))
        raise CurationInputError(f"quota {quotas[g]} exceeds the {group_total[g]} items of group {g}")

    order = np.lexsort((sizes, groups))  # by group, ascending size within group
    s, g = sizes[order], groups[order]
    group_start = np.searchsorted(g, np.arange(n_groups))
    group_len = np.bincount(g, minlength=n_groups)
    pos = np.arange(s.size) - group_start[g]
    exclusive = np.cumsum(s) - s
    before = exclusive - exclusive[group_start[g]]  # sum of the smaller items of the same group
    # Total taken if the cap were this item's size: everything before it, plus this size for it and the rest.
    taken_at = before + s * (group_len[g] - pos)
    full = np.bincount(g, weights=taken_at <= quotas[g], minlength=n_groups).astype(np.int64)  # items filled
    # Items at positions < full[g] are taken whole; the rest share what is left equally, plus remainder.
    whole = pos < full[g]
    filled_sum = np.bincount(g, weights=np.where(whole, s, 0), minlength=n_groups).astype(np.int64)
    n_rest = group_len - full
    left = quotas - filled_sum
    cap = np.where(n_rest > 0, left // np.maximum(n_rest, 1), 0)
    remainder = left - cap * n_rest
    alloc = np.where(whole, s, cap[g])
    # Hand the remainder to random items among the capped ones (all larger than the cap).
    key = rng.random(s.size)
    key[whole] = np.inf
    rank = np.empty(s.size, dtype=np.int64)
    by_key = np.lexsort((key, g))
    rank[by_key] = np.arange(s.size) - group_start[g[by_key]]
    alloc += (~whole) & (rank < remainder[g])
    out = np.empty_like(alloc)
    out[order] = alloc
    return out


def hierarchical_sampling(tree: ClusterTree, target_size: int, *, strategy: str = "random", multiplier: int = 1,
                          seed: int | np.random.Generator | None = 0, clamp: bool = False) -> np.ndarray:
    """Pick ``target_size`` point indices balanced over the tree (Vo et al. 2024, Sec. 4.3).

    strategy: which points of a level-1 cluster fill its quota: ``"random"`` (the paper's best), ``"closest"``
    to the centroid, or ``"furthest"``. multiplier: a point may be picked up to this many times (a cluster's
    capacity is ``multiplier x size``). clamp: if the target exceeds the pool's capacity, take the whole
    capacity (logged) instead of raising. Returns sorted int64 indices, repeats adjacent.
    """
    if strategy not in STRATEGIES:
        raise CurationInputError(f"sampling strategy must be one of {STRATEGIES}, got {strategy!r}")
    target_size = check_target(tree.n_points, target_size, multiplier, clamp)
    rng = make_rng(seed)

    top = len(tree.levels)
    counts = [tree.point_counts(lv) for lv in range(top + 1)]  # counts[0]: ones for the points
    quotas = grouped_water_fill(counts[top] * multiplier, np.zeros(counts[top].size, dtype=np.int64),
                                np.array([target_size]), rng)
    for lv in range(top, 1, -1):  # split each level-lv quota over its children at level lv - 1
        child_parent = tree.levels[lv - 1].assignments
        quotas = grouped_water_fill(counts[lv - 1] * multiplier, child_parent, quotas, rng)
    return _pick_points(tree, quotas, strategy, multiplier, rng)


def check_target(n_points: int, target_size: int, multiplier: int = 1, clamp: bool = False) -> int:
    """The target to sample: ``target_size``, or the pool's capacity if clamping was asked for. Raises otherwise."""
    if multiplier < 1:
        raise CurationInputError(f"multiplier must be >= 1, got {multiplier}")
    if target_size < 0:
        raise CurationInputError(f"target size must be >= 0, got {target_size}")
    capacity = n_points * multiplier
    if target_size > capacity:
        if not clamp:
            raise CurationInputError(
                f"target size {target_size} is larger than the pool ({n_points} points x multiplier "
                f"{multiplier} = {capacity}); lower the target, raise the multiplier, or set clamp=true")
        log.warning("target size %d exceeds the pool's capacity %d: clamping to %d", target_size, capacity, capacity)
        return capacity
    return target_size


def _pick_points(tree: ClusterTree, quotas: np.ndarray, strategy: str, multiplier: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Fill each level-1 cluster's quota with its points: whole copies first, then a partial pass by strategy."""
    level = tree.levels[0]
    sizes = level.child_counts()
    points = level.order  # grouped by cluster, closest first
    cluster = np.repeat(np.arange(sizes.size), sizes)
    pos = np.arange(points.size) - level.offsets[cluster]
    copies = quotas // np.maximum(sizes, 1)
    partial = quotas - copies * sizes
    if strategy == "closest":
        rank = pos
    elif strategy == "furthest":
        rank = sizes[cluster] - 1 - pos
    else:
        key = rng.random(points.size)
        by_key = np.lexsort((key, cluster))
        rank = np.empty(points.size, dtype=np.int64)
        rank[by_key] = np.arange(points.size) - level.offsets[cluster[by_key]]
    repeats = copies[cluster] + (rank < partial[cluster])
    assert repeats.max(initial=0) <= multiplier
    return np.sort(np.repeat(points, repeats))
