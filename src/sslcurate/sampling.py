"""Balanced hierarchical sampling: top-down water-filling of a target size over a :class:`ClusterTree`.

At every level each node's quota is split over its children by water-filling: the largest cap c with
``sum_i min(c, size_i) <= quota``; each child gets ``min(c, size_i)`` and the remainder goes one by one to the
children larger than c with the smallest keys. All nodes of a level are processed at once (grouped, vectorised),
so a level with millions of clusters costs a few sorts, not a Python loop.

Every random choice is a counter-based key, never a draw from a generator stream: a row's key is splitmix64 of
(seed, row id) and a cluster's remainder key is splitmix64 of (seed, level, cluster id). The selection therefore
depends only on the seed and the data, not on the order rows are visited or on how they are split over ranks.
Within a level-1 cluster the partial quota takes the rows with the smallest (key, row id); in a multi-process run
each rank finds those rows among its own by a distributed binary search on the key (:func:`_thresholds`), with
O(k) per-cluster counts all-reduced per round and no rank holding another rank's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import distributed as dist
from .errors import CurationInputError
from .hierarchy import ClusterTree
from .kmeans import make_rng, splitmix64

log = logging.getLogger(__name__)

STRATEGIES = ("random", "closest", "furthest")

_MASK = 2 ** 64 - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (odd, so adding it is a bijection)
_TAG_PICK, _TAG_FILL = 0x5049434B, 0x46494C4C  # "PICK", "FILL": separate key streams of one seed
_U64_MAX = np.uint64(_MASK)


def _mix_int(z: int) -> int:
    """splitmix64's finaliser on one Python int (mod 2^64): a bijection with good avalanche."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def sampling_salt(seed: int | np.random.Generator | None) -> int:
    """The 64-bit salt of every key of one sampling run: from an int seed directly; a Generator (or None, fresh
    entropy) gives one 63-bit draw. Multi-process runs must pass the same int on every rank."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return _mix_int(int(seed) + _GOLDEN)
    return _mix_int(int(make_rng(seed).integers(2 ** 63)) + _GOLDEN)


def _sub_salt(salt: int, *parts: int) -> int:
    """A salt for one key stream (a tag, a level) derived from the run's salt."""
    for p in parts:
        salt = _mix_int(salt ^ _mix_int(int(p) + _GOLDEN))
    return salt


def row_keys(ids: np.ndarray, salt: int) -> np.ndarray:
    """(n,) uint64 key of each id: splitmix64(id + salt). For a fixed salt the map is a bijection of uint64, so
    distinct ids never share a key (no ties to break among rows)."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64(salt & _MASK)
    return splitmix64(z)


def distance_keys(distances: np.ndarray, furthest: bool = False) -> np.ndarray:
    """(n,) uint64 keys ordered as the float32 distances (closest first), or reversed for ``furthest``.

    The float's bits made monotone: non-negative floats get the sign bit set, negative ones (a squared distance
    can round below 0) are flipped whole. -0.0 is folded into +0.0 first so the two compare equal, as floats do.
    """
    bits = (np.asarray(distances, dtype=np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    sign = (bits >> np.uint64(31)).astype(bool)
    keys = np.where(sign, bits ^ np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    return np.uint64(0xFFFFFFFF) - keys if furthest else keys


def water_fill(sizes: np.ndarray, target: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Split ``target`` over clusters of ``sizes: (m,)`` as evenly as their sizes allow. Returns (m,) int64.
    seed: decides which capped clusters get the remainder (keys of their index, see :func:`row_keys`)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    keys = row_keys(np.arange(sizes.size), _sub_salt(sampling_salt(seed), _TAG_FILL))
    return grouped_water_fill(sizes, np.zeros(sizes.size, dtype=np.int64), np.array([target]), keys)


def grouped_water_fill(sizes: np.ndarray, groups: np.ndarray, quotas: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Water-fill ``quotas[g]`` over the items of each group ``g`` at once.

    sizes: (m,) int64 capacity of each item; groups: (m,) int64 group of each item (0..G-1); quotas: (G,) int64,
    each at most its group's total size; keys: (m,) uint64, the capped items with the smallest (key, index) take
    the remainder. Returns (m,) int64 allocations summing to ``quotas`` per group.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    quotas = np.asarray(quotas, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.uint64)
    if keys.shape != sizes.shape or groups.shape != sizes.shape:
        raise CurationInputError(f"sizes, groups and keys must have one entry per item, got shapes "
                                 f"{sizes.shape}, {groups.shape}, {keys.shape}")
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
    # The remainder goes to the capped items (all larger than the cap) with the smallest keys; whole items sort
    # last within their group (flag first), so ranks 0..remainder-1 are capped ones. Ties: the item's index.
    by_key = np.lexsort((order, keys[order], whole, g))
    rank = np.empty(s.size, dtype=np.int64)
    rank[by_key] = np.arange(s.size) - group_start[g[by_key]]
    alloc += (~whole) & (rank < remainder[g])
    out = np.empty_like(alloc)
    out[order] = alloc
    return out


def tree_quotas(level1_sizes: np.ndarray, upper: list[np.ndarray], target_size: int, multiplier: int,
                salt: int) -> np.ndarray:
    """Top-down water-fill of ``target_size`` to the level-1 clusters: (k_1,) int64 quotas.

    level1_sizes: (k_1,) points per level-1 cluster (global); upper: the assignments of levels 2..L, each mapping
    the previous level's clusters to its own. O(sum of k) and the same on every rank, as every input is."""
    sizes = [np.asarray(level1_sizes, dtype=np.int64)]
    for parent in upper:
        sizes.append(np.bincount(parent, weights=sizes[-1], minlength=int(parent.max(initial=-1)) + 1)
                     .astype(np.int64))
    top = len(sizes)

    def fill(level: int, groups: np.ndarray, quotas: np.ndarray) -> np.ndarray:
        caps = sizes[level - 1] * multiplier
        keys = row_keys(np.arange(caps.size), _sub_salt(salt, _TAG_FILL, level))
        return grouped_water_fill(caps, groups, quotas, keys)

    quotas = fill(top, np.zeros(sizes[-1].size, dtype=np.int64), np.array([target_size]))
    for lv in range(top, 1, -1):  # split each level-lv quota over its children at level lv - 1
        quotas = fill(lv - 1, upper[lv - 2], quotas)
    return quotas


def _reduce(counts: np.ndarray) -> np.ndarray:
    """Sum int64 ``counts`` over ranks (no-op in one process)."""
    return dist.all_reduce_sum(torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))).numpy()


def _thresholds(values: np.ndarray, clusters: np.ndarray, need: np.ndarray, search: np.ndarray) -> np.ndarray:
    """For each cluster in ``search``, a t with exactly ``need`` of its rows (all ranks) at ``value <= t``, or if
    ties make that impossible, the smallest t with more: a binary search on uint64 run in lockstep by every rank, each round all-reducing the counts of the
    clusters still open (O(k), never rows). A cluster closes early when a midpoint's count equals ``need``.

    values, clusters: (n,) this rank's rows; need: (k,) int64, 1 <= need <= the cluster's size where searched;
    search: sorted cluster ids to search (the same on every rank). Returns (k,) uint64 (0 where not searched).
    """
    k = need.size
    lo = np.zeros(k, dtype=np.uint64)
    hi = np.full(k, _U64_MAX, dtype=np.uint64)
    active = np.asarray(search, dtype=np.int64)
    slot = np.full(k, -1, dtype=np.int64)
    slot[active] = np.arange(active.size)
    keep = slot[clusters] >= 0
    v, c = values[keep], clusters[keep]
    while active.size:
        mid = lo[active] + (hi[active] - lo[active]) // np.uint64(2)
        s = slot[c]
        counts = _reduce(np.bincount(s[v <= mid[s]], minlength=active.size))
        wanted = need[active]
        ge = counts >= wanted
        hi[active[ge]] = mid[ge]
        lo[active[~ge]] = mid[~ge] + np.uint64(1)
        lo[active[counts == wanted]] = mid[counts == wanted]  # exactly need rows at or below mid: done
        still = lo[active] < hi[active]
        slot[active[~still]] = -1
        active = active[still]
        slot[active] = np.arange(active.size)
        alive = slot[c] >= 0  # drop the rows of closed clusters: later rounds touch fewer rows
        v, c = v[alive], c[alive]
    return hi


def smallest_per_cluster(values: np.ndarray, rows: np.ndarray, clusters: np.ndarray, need: np.ndarray,
                         sizes: np.ndarray) -> np.ndarray:
    """(n,) bool: which of this rank's rows are among the ``need[c]`` smallest (value, row id) of their cluster
    over all ranks.

    values: (n,) uint64 order key; rows: (n,) int64 global row ids (distinct over all ranks); clusters: (n,)
    int64; need, sizes: (k,) int64 global. The same rows are chosen whatever the number of ranks and whichever
    rank holds which row: a search on the key, then, where rows tie at the threshold, one on the row id.
    """
    need = np.minimum(np.asarray(need, dtype=np.int64), sizes)
    search = np.flatnonzero((need > 0) & (need < sizes))
    take = (need[clusters] >= sizes[clusters]) & (need[clusters] > 0)  # quota covers the cluster: every row
    t = _thresholds(values, clusters, need, search)
    in_search = np.zeros(need.size, dtype=bool)
    in_search[search] = True
    at_or_below = in_search[clusters] & (values <= t[clusters])
    # Clusters with more rows at or below t than needed have ties at t: break them by row id.
    count = _reduce(np.bincount(clusters[at_or_below], minlength=need.size))
    tied = np.flatnonzero(in_search & (count > need))
    if tied.size:
        is_tied = np.zeros(need.size, dtype=bool)
        is_tied[tied] = True
        in_tied = is_tied[clusters]
        below = in_tied & (values < t[clusters])
        n_below = _reduce(np.bincount(clusters[below], minlength=need.size))
        on_t = in_tied & (values == t[clusters])
        u = _thresholds(rows[on_t].astype(np.uint64), clusters[on_t], need - n_below, tied)
        first_on_t = on_t & (rows.astype(np.uint64) <= u[clusters])
        at_or_below = np.where(in_tied, below | first_on_t, at_or_below)
    return take | at_or_below


@dataclass
class Selection:
    """A sampling run's result on this rank: ``rows`` (sorted int64 row ids, repeats adjacent) among the rows
    this rank holds (all rows in one process); ``cluster_sizes`` and ``cluster_quotas`` (k_1,) int64, the same
    on every rank: points per level-1 cluster and how many picks each got."""

    rows: np.ndarray
    cluster_sizes: np.ndarray
    cluster_quotas: np.ndarray


def sample_tree(tree: ClusterTree, target_size: int, *, strategy: str = "random", multiplier: int = 1,
                seed: int | np.random.Generator | None = 0, clamp: bool = False) -> Selection:
    """Pick ``target_size`` point indices balanced over the tree (Vo et al. 2024, Sec. 4.3); see
    :func:`hierarchical_sampling`. Level 1 sharded over ranks (``row_range``): every rank of the process group
    must call this, and each gets the picks among its own rows; their concatenation in rank order is the
    one-process selection. Otherwise the tree is whole and no collective runs."""
    if strategy not in STRATEGIES:
        raise CurationInputError(f"sampling strategy must be one of {STRATEGIES}, got {strategy!r}")
    target_size = check_target(tree.n_points, target_size, multiplier, clamp)
    level = tree.levels[0]
    sharded = level.row_range is not None
    if sharded and dist.get_world_size() > 1 and not isinstance(seed, (int, np.integer)):
        raise CurationInputError("sharded sampling needs an int seed, the same on every rank")
    salt = sampling_salt(seed)
    lo = level.row_range[0] if sharded else 0
    rows = lo + np.arange(level.assignments.size, dtype=np.int64)
    clusters = level.assignments.astype(np.int64)
    if not sharded:  # a whole tree: everything is local, even inside a process group
        with dist.single_process():
            return _sample(tree, rows, clusters, level.distances, target_size, strategy, multiplier, salt)
    return _sample(tree, rows, clusters, level.distances, target_size, strategy, multiplier, salt)


def _sample(tree, rows, clusters, distances, target_size, strategy, multiplier, salt) -> Selection:
    k1 = tree.levels[0].n_clusters
    sizes = _reduce(np.bincount(clusters, minlength=k1))
    quotas = tree_quotas(sizes, [lv.assignments for lv in tree.levels[1:]], target_size, multiplier, salt)
    copies = quotas // np.maximum(sizes, 1)  # whole passes over the cluster (multiplier > 1)
    partial = quotas - copies * sizes
    if strategy == "random":
        values = row_keys(rows, _sub_salt(salt, _TAG_PICK))
    else:
        values = distance_keys(distances, furthest=strategy == "furthest")
    picked = smallest_per_cluster(values, rows, clusters, partial, sizes)
    repeats = copies[clusters] + picked
    assert repeats.max(initial=0) <= multiplier
    return Selection(np.repeat(rows, repeats), sizes, quotas)  # rows ascend, so the picks are sorted


def hierarchical_sampling(tree: ClusterTree, target_size: int, *, strategy: str = "random", multiplier: int = 1,
                          seed: int | np.random.Generator | None = 0, clamp: bool = False) -> np.ndarray:
    """Pick ``target_size`` point indices balanced over the tree (Vo et al. 2024, Sec. 4.3).

    strategy: which points of a level-1 cluster fill its partial quota: ``"random"`` (the paper's best: the
    smallest keys of (seed, row id)), ``"closest"`` to the centroid, or ``"furthest"`` (ties by row id).
    multiplier: a point may be picked up to this many times (a cluster's capacity is ``multiplier x size``; a
    quota of q from a cluster of s takes every point q // s times, then q % s of them once more). clamp: if the
    target exceeds the pool's capacity, take the whole capacity (logged) instead of raising. seed: int (or a
    Generator, which gives one draw). Returns sorted int64 indices, repeats adjacent: in a multi-process run
    with level 1 sharded, those among this rank's rows (:func:`sample_tree`).
    """
    return sample_tree(tree, target_size, strategy=strategy, multiplier=multiplier, seed=seed, clamp=clamp).rows


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
