"""Sampling by per-row keys: quotas met exactly, the pick a function of (seed, row id) only, and the same subset
however the rows are split over ranks (threads standing in for ranks here; gloo processes below).

Trees are built directly from seeded assignments (no k-means), so adversarial shapes are cheap: exact distance
ties, duplicated rows, clusters of one point, empty clusters, multiplier > 1.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcurate import ClusterLevel, ClusterTree, CurationInputError, sampling
from sslcurate.metrics import balance_report
from sslcurate.pipeline import selection_report
from sslcurate.sampling import hierarchical_sampling, row_keys, sample_tree, smallest_per_cluster
from sslcurate.sources import shard_bounds

STRATEGIES = ("random", "closest", "furthest")


def make_tree(seed: int, n: int, ks: tuple[int, ...], ties: bool = False) -> tuple[ClusterTree, dict]:
    """A tree over n points with level sizes ks, skewed cluster sizes (some of one point, some empty);
    ``ties``: distances drawn from 3 values, so most rows tie. Returns the tree and its raw arrays."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(ks[0], 0.3))
    assign = rng.choice(ks[0], size=n, p=weights)
    dists = (rng.integers(0, 3, n) if ties else rng.exponential(1.0, n)).astype(np.float32)
    raw = {"assign": assign, "dists": dists, "upper": []}
    levels = [ClusterLevel(np.zeros((ks[0], 1), np.float32), assign, dists)]
    for k_below, k in itertools.pairwise(ks):
        parent = rng.integers(0, k, k_below)
        raw["upper"].append(parent)
        levels.append(ClusterLevel(np.zeros((k, 1), np.float32), parent, np.zeros(k_below, np.float32)))
    return ClusterTree(levels, n), raw


def shard_tree(raw: dict, n: int, ks, lo: int, hi: int) -> ClusterTree:
    """Rank view of ``make_tree``'s tree: level 1 holds rows [lo, hi) only (``row_range``)."""
    levels = [ClusterLevel(np.zeros((ks[0], 1), np.float32), raw["assign"][lo:hi], raw["dists"][lo:hi],
                           row_range=(lo, hi))]
    for parent, k in zip(raw["upper"], ks[1:]):
        levels.append(ClusterLevel(np.zeros((k, 1), np.float32), parent, np.zeros(parent.size, np.float32)))
    return ClusterTree(levels, n)


def reference_pick(values, rows, clusters, need):
    """Brute force: sort each cluster by (value, row id), take its first need[c]."""
    order = np.lexsort((rows, values, clusters))
    starts = np.searchsorted(clusters[order], np.arange(need.size))
    rank = np.empty(rows.size, dtype=np.int64)
    rank[order] = np.arange(rows.size) - starts[clusters[order]]
    return rank < need[clusters]


@pytest.mark.parametrize("trial", range(40))
def test_smallest_per_cluster_matches_sorting(trial):
    """The threshold search takes exactly the need[c] smallest (value, row id) of each cluster, with heavy key
    ties (values from a range of 1-4) half the time; row ids arbitrary distinct, rows in any order."""
    rng = np.random.default_rng(trial)
    n, k = int(rng.integers(1, 400)), int(rng.integers(1, 30))
    clusters = rng.integers(0, k, n)
    sizes = np.bincount(clusters, minlength=k)
    values = (rng.integers(0, rng.integers(1, 5), n).astype(np.uint64) if trial % 2
              else row_keys(np.arange(n), trial))
    rows = rng.permutation(5 * n)[:n].astype(np.int64)
    need = np.minimum((sizes * rng.uniform(0, 1.3, k)).astype(np.int64), sizes)
    got = smallest_per_cluster(values, rows, clusters, need, sizes)
    np.testing.assert_array_equal(got, reference_pick(values, rows, clusters, need))


def test_row_keys_are_distinct_and_seeded():
    """splitmix64 is a bijection of uint64: distinct rows never tie; another salt reorders them."""
    rows = np.arange(200_000)
    a = row_keys(rows, 1)
    assert np.unique(a).size == rows.size
    assert not np.array_equal(np.argsort(a), np.argsort(row_keys(rows, 2)))
    np.testing.assert_array_equal(a[[7, 99]], row_keys(np.array([7, 99]), 1))  # a row's key alone


SHAPES = [(1, (1,)), (7, (3, 2)), (60, (20, 4)), (500, (40, 8, 2)), (2000, (300, 30, 5))]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_quotas_are_met_exactly(shape, multiplier, strategy):
    """Total equals the target; each level-1 cluster gets its quota, a point at most multiplier times, every point
    of a cluster either q // s or q // s + 1 times; the pick within a cluster is the strategy's order."""
    n, ks = shape
    tree, raw = make_tree(n + ks[0], n, ks, ties=strategy != "random")
    for target in sorted({0, 1, n // 3, n, multiplier * n - 1, multiplier * n} - {-1}):
        target = max(0, min(target, multiplier * n))
        sel = sample_tree(tree, target, strategy=strategy, multiplier=multiplier, seed=3)
        idx = sel.rows
        assert idx.size == target and np.all(np.diff(idx) >= 0)
        per_row = np.bincount(idx, minlength=n)
        assert per_row.max(initial=0) <= multiplier
        np.testing.assert_array_equal(np.bincount(raw["assign"], weights=per_row, minlength=ks[0]),
                                      sel.cluster_quotas)
        copies = sel.cluster_quotas // np.maximum(sel.cluster_sizes, 1)
        extra = per_row - copies[raw["assign"]]
        assert np.all((extra == 0) | (extra == 1))
        if strategy == "random":
            values = row_keys(np.arange(n), sampling._sub_salt(sampling.sampling_salt(3), sampling._TAG_PICK))
        else:
            values = sampling.distance_keys(raw["dists"], furthest=strategy == "furthest")
        partial = sel.cluster_quotas - copies * sel.cluster_sizes
        np.testing.assert_array_equal(extra.astype(bool), reference_pick(values, np.arange(n), raw["assign"],
                                                                         partial))


def test_water_fill_is_balanced_over_the_tree():
    """Clusters left below their size all get the same quota (up to one): the top-down water-fill."""
    tree, raw = make_tree(0, 5000, (200, 20))
    sel = sample_tree(tree, 1000, seed=0)
    q, s = sel.cluster_quotas, sel.cluster_sizes
    capped2 = np.bincount(raw["upper"][0], weights=q, minlength=20) < np.bincount(raw["upper"][0], weights=s,
                                                                                    minlength=20)
    top = np.bincount(raw["upper"][0], weights=q, minlength=20)[capped2]
    assert top.max() - top.min() <= 1


def test_same_seed_same_subset_and_seed_matters():
    tree, _ = make_tree(1, 3000, (100, 10))
    a = hierarchical_sampling(tree, 700, seed=11)
    np.testing.assert_array_equal(a, hierarchical_sampling(tree, 700, seed=11))
    assert not np.array_equal(a, hierarchical_sampling(tree, 700, seed=12))
    g = hierarchical_sampling(tree, 700, seed=np.random.default_rng(5))  # a Generator gives one draw
    np.testing.assert_array_equal(g, hierarchical_sampling(tree, 700, seed=np.random.default_rng(5)))


def test_permuted_rows_pick_the_same_rows():
    """The pick depends on (seed, row id), not on the order rows arrive in: permuting the rows (with their ids
    and distances) picks the same ids."""
    tree, raw = make_tree(2, 4000, (150, 12), ties=True)
    for strategy in STRATEGIES:
        sel = sample_tree(tree, 900, strategy=strategy, seed=4)
        perm = np.random.default_rng(9).permutation(4000)
        if strategy == "random":
            values = row_keys(perm, sampling._sub_salt(sampling.sampling_salt(4), sampling._TAG_PICK))
        else:
            values = sampling.distance_keys(raw["dists"][perm], furthest=strategy == "furthest")
        copies = sel.cluster_quotas // np.maximum(sel.cluster_sizes, 1)  # whole clusters taken (multiplier 1)
        partial = sel.cluster_quotas - copies * sel.cluster_sizes
        got = smallest_per_cluster(values, perm, raw["assign"][perm], partial, sel.cluster_sizes)
        np.testing.assert_array_equal(np.sort(np.repeat(perm, copies[raw["assign"][perm]] + got)), sel.rows)


class ThreadRanks:
    """Ranks simulated by threads: ``_reduce`` sums every thread's array at a barrier, in lockstep, as an
    all-reduce does; a rank that calls it a different number of times than the others would hang (timeout)."""

    def __init__(self, world: int):
        self.world, self.parts = world, [None] * world
        self.barrier = threading.Barrier(world, timeout=60)
        self.local = threading.local()

    def reduce(self, counts):
        if not hasattr(self.local, "rank"):  # called outside run(): one process, nothing to sum
            return np.asarray(counts, dtype=np.int64)
        self.parts[self.local.rank] = np.asarray(counts, dtype=np.int64).copy()
        self.barrier.wait()
        total = np.sum(self.parts, axis=0)
        self.barrier.wait()  # everyone has read the parts before the next round overwrites them
        return total

    def run(self, fn):
        out, errors = [None] * self.world, []

        def body(r):
            self.local.rank = r
            try:
                out[r] = fn(r)
            except BaseException as err:  # noqa: BLE001 (re-raised below)
                errors.append(err)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("world", [2, 3, 4, 7])
def test_any_split_over_ranks_gives_the_one_process_subset(monkeypatch, shape, world):
    """Level 1 sharded over ``world`` ranks (uneven, some possibly empty): each rank's picks, concatenated in
    rank order, are byte-identical to one process's, for every strategy, with ties and multiplier 3."""
    n, ks = shape
    tree, raw = make_tree(world * 31 + n, n, ks, ties=True)
    ranks = ThreadRanks(world)
    monkeypatch.setattr(sampling, "_reduce", ranks.reduce)
    for strategy in STRATEGIES:
        for multiplier, target in ((1, n // 2), (3, 2 * n + 1)):
            single = hierarchical_sampling(tree, target, strategy=strategy, multiplier=multiplier, seed=8)

            def rank_pick(r, strategy=strategy, multiplier=multiplier, target=target):
                lo, hi = shard_bounds(n, r, world)
                return hierarchical_sampling(shard_tree(raw, n, ks, lo, hi), target, strategy=strategy,
                                             multiplier=multiplier, seed=8)

            parts = ranks.run(rank_pick)
            joined = np.concatenate(parts)
            assert joined.tobytes() == single.tobytes()


def test_report_from_counts_equals_the_tree_report():
    """The report built from per-cluster counts (what every rank holds) is balance_report's on the whole tree."""
    tree, _ = make_tree(3, 3000, (120, 12, 3))
    labels = np.random.default_rng(0).integers(-1, 6, 3000)
    sel = sample_tree(tree, 1700, multiplier=2, seed=0)
    assert selection_report(tree, sel, labels) == balance_report(tree, sel.rows, labels)


def test_bad_input_is_refused():
    tree, _ = make_tree(4, 100, (10,))
    with pytest.raises(CurationInputError, match="strategy"):
        sample_tree(tree, 10, strategy="nearest")
    with pytest.raises(CurationInputError, match="larger than the pool"):
        sample_tree(tree, 101)
    assert sample_tree(tree, 500, clamp=True).rows.size == 100
    sharded = shard_tree(make_tree(4, 100, (10,))[1], 100, (10,), 0, 50)
    with pytest.raises(CurationInputError, match="holds only rows 0..50"):
        sharded.point_counts(1)


# --- real processes: gloo, 1 to 4 ranks --------------------------------------------------------------------------

GLOO_CASES = [  # (seed, n, ks, ties, target, multiplier, strategy)
    (0, 1001, (37, 5), False, 400, 1, "random"),
    (1, 1001, (37, 5), True, 700, 1, "closest"),
    (2, 640, (90, 9, 3), True, 1500, 3, "furthest"),
    (3, 5, (3,), False, 7, 2, "random"),
]


def _gloo_worker(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for i, (seed, n, ks, ties, target, mult, strategy) in enumerate(GLOO_CASES):
            _, raw = make_tree(seed, n, ks, ties)
            lo, hi = shard_bounds(n, rank, world)
            rows = hierarchical_sampling(shard_tree(raw, n, ks, lo, hi), target, strategy=strategy,
                                         multiplier=mult, seed=seed)
            np.save(out / f"case{i}.rank{rank}.npy", rows)
    finally:
        dist.destroy_process_group()


# One spawn costs seconds (each process imports torch): worlds 1 and 3 (uneven shards) by default, 2 and 4 slow.
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow),
                                   3, pytest.param(4, marks=pytest.mark.slow)])
def test_gloo_processes_give_byte_identical_selections(tmp_path, world):
    """1, 2, 3 and 4 gloo processes, each holding only its rows of level 1, pick the one-process selection
    byte for byte (pool shapes with ties, tiny clusters, multiplier > 1)."""
    singles = [hierarchical_sampling(make_tree(seed, n, ks, ties)[0], target, strategy=strategy, multiplier=mult,
                                     seed=seed) for seed, n, ks, ties, target, mult, strategy in GLOO_CASES]
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_gloo_worker, args=(world, tmp_path / "init", out), nprocs=world, join=True,
                       start_method="spawn")
    for i, single in enumerate(singles):
        joined = np.concatenate([np.load(out / f"case{i}.rank{r}.npy") for r in range(world)])
        assert joined.tobytes() == single.astype(np.int64).tobytes(), (world, i)
