"""Multi-process k-means (gloo, 2 CPU processes) is the same math as one process, without full-length buffers.

One spawn of two ranks runs every scenario (spawning costs seconds); the tests compare its files with
one-process runs of the same calls.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcurate import CurationConfig, KMeansSettings, LevelConfig, curate, hierarchical_kmeans, kmeans
from sslcurate.artifacts import LevelStore
from sslcurate.kmeans import kmeans_plusplus, resampling_kmeans, split_kmeans
from sslcurate.sources import shard_bounds

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")

N, D = 3001, 8  # odd n: unequal shards
LEVELS = [LevelConfig(24, 2, 40, n_iters=5), LevelConfig(6, 2, 2, n_iters=5)]
SPLIT_LEVELS = [LevelConfig(40, 1, 20, n_iters=5, split=5), LevelConfig(5, 0, 1, n_iters=5)]
TORCH = KMeansSettings(backend="torch")
CURATION = CurationConfig(levels=LEVELS, kmeans=TORCH, target_size=500, seed=0)
# k-means++ named: the byte bound below is resampling's own traffic (k-means|| would add its candidate gathers).
RESAMPLE = dict(steps=2, sample_size=30, n_iters=5, settings=KMeansSettings(backend="torch", init="k-means++"))


def _scenarios(data_file, out, rank):
    """Everything the tests compare; each result saved per rank as .npy files under ``out``."""
    from sslcurate import distributed as sd

    lo, hi = shard_bounds(N, rank, 2)
    centres = kmeans_plusplus(torch.from_numpy(np.load(data_file)[lo:hi]), 24, np.random.default_rng(7))
    np.save(out / f"kpp.{rank}.npy", centres.numpy())
    res = kmeans(data_file, 12, n_iters=6, seed=5, backend="torch")
    np.save(out / f"kmeans_assign.{rank}.npy", res.assignments)
    np.save(out / f"kmeans_centroids.{rank}.npy", res.centroids)
    res = kmeans(data_file, 24, n_iters=0, seed=6, backend="torch", init="k-means||", chunk_rows=500)
    np.save(out / f"kmpar_centroids.{rank}.npy", res.centroids)
    for strategy in ("closest", "random"):
        sd.reset_comm_bytes()
        res = resampling_kmeans(data_file, 24, sample_strategy=strategy, seed=3, **RESAMPLE)
        np.save(out / f"resample_{strategy}_assign.{rank}.npy", res.assignments)
        np.save(out / f"resample_{strategy}_objective.{rank}.npy", np.array([res.objective]))
        (out / f"resample_{strategy}_bytes.{rank}.json").write_text(json.dumps(sd.comm_bytes()))
    res = split_kmeans(data_file, 40, split=5, seed=4, n_iters=5, settings=TORCH)
    np.save(out / f"split_assign.{rank}.npy", res.assignments)
    np.save(out / f"split_objective.{rank}.npy", np.array([res.objective]))
    sd.reset_comm_bytes()
    store = LevelStore(out / "store", {"test": 1})
    tree = hierarchical_kmeans(data_file, LEVELS, seed=1, settings=TORCH, store=store)
    (out / f"tree_bytes.{rank}.json").write_text(json.dumps(sd.comm_bytes()))
    np.save(out / f"tree_level1.{rank}.npy", tree.levels[0].assignments)
    np.save(out / f"tree_level2.{rank}.npy", tree.levels[1].assignments)
    (out / f"tree_range.{rank}.json").write_text(json.dumps(tree.levels[0].row_range))
    tree = hierarchical_kmeans(data_file, SPLIT_LEVELS, seed=2, settings=TORCH)
    np.save(out / f"split_tree_level1.{rank}.npy", tree.levels[0].assignments)
    res = curate(data_file, CURATION, out_dir=out / "curate")
    np.save(out / f"curate_indices.{rank}.npy", res.indices)


def _worker(rank, world, init_file, data_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        _scenarios(data_file, out, rank)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(data file, folder of the 2-rank results)."""
    tmp = tmp_path_factory.mktemp("dist")
    np.save(tmp / "x.npy", np.random.default_rng(0).standard_normal((N, D)).astype(np.float32))
    (tmp / "out").mkdir()
    mp.start_processes(_worker, args=(2, tmp / "init", tmp / "x.npy", tmp / "out"), nprocs=2, join=True,
                       start_method="spawn")
    return tmp / "x.npy", tmp / "out"


def _both(out, name):
    return np.concatenate([np.load(out / f"{name}.{r}.npy") for r in range(2)])


def _agree(two, one, objective_two=None, objective_one=None):
    """Assignments identical, or (float sums in another order) the objective within 1e-6 relative."""
    if np.array_equal(two, one):
        return True
    return objective_two is not None and abs(objective_two - objective_one) <= 1e-6 * abs(objective_one)


def test_two_process_kmeans_plusplus_matches_single_process(runs):
    """k-means++ split over ranks (each holds half the sample) picks the centres one process picks."""
    data, out = runs
    single = kmeans_plusplus(torch.from_numpy(np.load(data)), 24, np.random.default_rng(7))
    np.testing.assert_array_equal(np.load(out / "kpp.0.npy"), single.numpy())
    np.testing.assert_array_equal(np.load(out / "kpp.1.npy"), single.numpy())


def test_two_process_kmeans_parallel_init_matches_single_process(runs):
    """k-means|| draws each row by a hash of its number, so two ranks pick the candidates and centres of one."""
    data, out = runs
    single = kmeans(data, 24, n_iters=0, seed=6, backend="torch", init="k-means||", chunk_rows=500)
    for r in range(2):
        np.testing.assert_allclose(np.load(out / f"kmpar_centroids.{r}.npy"), single.centroids, rtol=0, atol=0)


def test_two_process_kmeans_matches_single_process(runs):
    data, out = runs
    single = kmeans(data, 12, n_iters=6, seed=5, backend="torch")
    np.testing.assert_allclose(np.load(out / "kmeans_centroids.0.npy"), single.centroids, rtol=1e-4, atol=1e-5)
    assert (_both(out, "kmeans_assign") == single.assignments).mean() > 0.999


@pytest.mark.parametrize("strategy", ["closest", "random"])
def test_two_process_resampling_matches_single_process(runs, strategy):
    """The per-cluster sample is chosen from each rank's own candidates, with the same result as one process."""
    data, out = runs
    single = resampling_kmeans(data, 24, sample_strategy=strategy, seed=3, **RESAMPLE)
    two = _both(out, f"resample_{strategy}_assign")
    objective = float(np.load(out / f"resample_{strategy}_objective.0.npy")[0])
    assert _agree(two, single.assignments, objective, single.objective)


def test_resampling_gathers_only_candidates(runs):
    """No full-length all-gather: a rank sends at most its k r best candidates per round (24 bytes each), never
    its N / world rows' assignments."""
    _, out = runs
    for strategy in ("closest", "random"):
        sent = json.loads((out / f"resample_{strategy}_bytes.0.json").read_text())
        n_local = -(-N // 2)
        candidates = min(n_local, 24 * RESAMPLE["sample_size"])
        assert sent["all_gather"] <= RESAMPLE["steps"] * (24 * candidates + 64)
        assert sent["gather"] == 0


def test_two_process_split_matches_single_process(runs):
    data, out = runs
    single = split_kmeans(data, 40, split=5, seed=4, n_iters=5, settings=TORCH)
    objective = float(np.load(out / "split_objective.0.npy")[0])
    assert _agree(_both(out, "split_assign"), single.assignments, objective, single.objective)


def test_two_process_hierarchy_shards_level_one(runs, tmp_path):
    """No rank holds level 1 whole: each keeps its rows (``row_range``), together the one-process level, and
    writes them into the store's one full-length file; nothing O(N) is gathered or all-gathered."""
    data, out = runs
    single = hierarchical_kmeans(data, LEVELS, seed=1, settings=TORCH)
    ranges = [tuple(json.loads((out / f"tree_range.{r}.json").read_text())) for r in range(2)]
    assert ranges == [shard_bounds(N, 0, 2), shard_bounds(N, 1, 2)]
    full = _both(out, "tree_level1")
    assert full.size == N and (full == single.levels[0].assignments).mean() > 0.999
    np.testing.assert_array_equal(np.load(out / "tree_level2.0.npy"), np.load(out / "tree_level2.1.npy"))
    np.testing.assert_array_equal(np.load(out / "store" / "level1_assignments.npy"), full)
    for r in range(2):
        sent = json.loads((out / f"tree_bytes.{r}.json").read_text())
        assert sent["gather"] == 0
        assert sent["all_gather"] < 24 * 24 * 40 * 2 + 24 * 12 * 24 * 2 + 12 * 24 + 2_000
    # A rerun resumes from the store: each rank reads its own rows of level 1.
    store = LevelStore(out / "store", {"test": 1})
    lo, hi = ranges[1]
    part = store.load_level(1, (lo, hi))
    np.testing.assert_array_equal(part.assignments, full[lo:hi])


def test_two_process_split_hierarchy(runs):
    data, out = runs
    single = hierarchical_kmeans(data, SPLIT_LEVELS, seed=2, settings=TORCH)
    assert (_both(out, "split_tree_level1") == single.levels[0].assignments).mean() > 0.999


def test_two_process_curate_gives_every_rank_the_selection(runs):
    """Each rank picks its own rows and writes its shard; the gathered selection is on every rank and on disk,
    the concatenation of the shards, and (k-means sums in another order aside) the one a single process makes."""
    data, out = runs
    single = curate(data, CURATION)
    a, b = np.load(out / "curate_indices.0.npy"), np.load(out / "curate_indices.1.npy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.load(out / "curate" / "indices.npy"), a)
    index = json.loads((out / "curate" / "indices.json").read_text())
    assert index["world_size"] == 2 and index["total"] == 500 and index["gathered"]
    shards = [np.load(out / "curate" / s["file"]) for s in index["shards"]]
    np.testing.assert_array_equal(np.concatenate(shards), a)
    assert shards[0].max() < shard_bounds(N, 1, 2)[0] <= shards[1].min()  # each rank picked among its own rows
    assert a.size == 500 and (np.isin(a, single.indices).mean() > 0.99)
