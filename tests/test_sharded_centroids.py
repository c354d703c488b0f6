"""Sharded centroids: a split level without resampling leaves each rank the fine centroids of its coarse clusters,
written as one part file per rank; the level above reads them in shards. Real gloo processes, 1 to 4 ranks,
byte-identical selections; a 2-process run killed inside the split and inside the level above resumes per rank.

Pools have exact ties (duplicated rows) and tiny coarse clusters (a few far outliers, one point each).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcurate import CurationConfig, KMeansSettings, LevelConfig, curate, hierarchical_kmeans
from sslcurate.artifacts import LevelStore
from sslcurate.hierarchy import sharded_centroids
from sslcurate.kmeans import split_kmeans
from sslcurate.kmeans.split import contiguous_owners
from sslcurate.pipeline import load_selection
from sslcurate.sources import ShardedNpySource

KM = {"backend": "torch", "precision": "fp32"}


def make_pool(seed: int, n: int, d: int = 6) -> np.ndarray:
    """Blobs, one row repeated 12 times (exact distance ties) and 3 far outliers (coarse clusters of one)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (9, d))
    x = centers[rng.integers(0, 9, n - 15)] + rng.normal(0, 0.6, (n - 15, d))
    dup = np.repeat(x[:1], 12, axis=0)
    outliers = 60 + 30 * np.eye(3, d)
    return rng.permutation(np.concatenate([x, dup, outliers])).astype(np.float32)


CASES = [  # (seed, n, levels, target, strategy)
    (0, 900, [LevelConfig(60, 0, 1, n_iters=4, split=6), LevelConfig(8, 2, 3, n_iters=4)], 300, "closest"),
    (1, 700, [LevelConfig(70, 0, 1, n_iters=4, split=5), LevelConfig(14, 0, 1, n_iters=3, split=2),
              LevelConfig(4, 1, 2, n_iters=3)], 500, "random"),
]


def _config(levels, target, strategy, seed) -> CurationConfig:
    return CurationConfig(levels=levels, target_size=target, seed=seed, sampling={"strategy": strategy},
                          kmeans=dict(KM), checkpoint_seconds=0.0, checkpoint_every=1)


def _init(rank, world, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))


def _cases_worker(rank, world, init_file, out):
    _init(rank, world, init_file)
    try:
        for i, (seed, n, levels, target, strategy) in enumerate(CASES):
            x = make_pool(seed, n)
            res = curate(x, _config(levels, target, strategy, seed), out_dir=out / f"case{i}")
            first = res.tree.levels[0].centroids
            info = {"centroids_type": type(first).__name__, "k": int(first.shape[0])}
            # Without a folder the blocks are gathered: the same levels.
            tree = hierarchical_kmeans(x, levels, seed=seed, settings=KMeansSettings(**KM))
            np.save(out / f"case{i}.nostore_level2.rank{rank}.npy", tree.levels[1].assignments)
            (out / f"case{i}.rank{rank}.json").write_text(json.dumps(info))
    finally:
        dist.destroy_process_group()


def _reference(i):
    seed, n, levels, target, strategy = CASES[i]
    x = make_pool(seed, n)
    return x, curate(x, _config(levels, target, strategy, seed))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("world", [pytest.param(2, marks=pytest.mark.slow), 3, pytest.param(4, marks=pytest.mark.slow)])
def test_gloo_processes_shard_centroids_and_select_the_same_subset(tmp_path, world):
    """With 2, 3 and 4 gloo processes each rank writes only its block of a split level's fine centroids (one
    part per rank, together the one-process matrix byte for byte), the level above reads them in shards, and the
    selection is the one-process selection byte for byte; without an output folder the blocks are gathered and
    the tree is the same."""
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_cases_worker, args=(world, tmp_path / "init", out), nprocs=world, join=True,
                       start_method="spawn")
    for i, (_, _, levels, _, _) in enumerate(CASES):
        _, single = _reference(i)
        assert load_selection(out / f"case{i}").tobytes() == single.indices.tobytes(), (world, i)
        clustering = out / f"case{i}" / "clustering"
        for lv, (config, whole) in enumerate(zip(levels, single.tree.levels), 1):
            meta = json.loads((clustering / f"level{lv}.json").read_text())
            if not sharded_centroids(config, world):
                assert "centroid_parts" not in meta
                continue
            parts = [np.load(clustering / f"level{lv}_centroids" / f) for f in meta["centroid_parts"]]
            assert len(parts) >= 2 and all(p.shape[0] < config.n_clusters for p in parts)
            assert np.concatenate(parts).tobytes() == whole.centroids.tobytes()
            assert not (clustering / f"level{lv}_centroids.npy").exists()
        for r in range(world):
            info = json.loads((out / f"case{i}.rank{r}.json").read_text())
            assert info == {"centroids_type": "ShardedNpySource", "k": levels[0].n_clusters}
            np.testing.assert_array_equal(np.load(out / f"case{i}.nostore_level2.rank{r}.npy"),
                                          single.tree.levels[1].assignments)


def test_one_process_keeps_the_whole_matrix(tmp_path):
    """One process never shards: the level's centroids are one array and one file, as before."""
    x, single = _reference(0)
    assert isinstance(single.tree.levels[0].centroids, np.ndarray)
    res = curate(x, _config(*[CASES[0][k] for k in (2, 3, 4, 0)]), out_dir=tmp_path)
    assert (tmp_path / "clustering" / "level1_centroids.npy").exists()
    assert res.indices.tobytes() == single.indices.tobytes()


def test_contiguous_owners_balance_cost_in_runs():
    """Each rank gets one contiguous run of clusters (non-decreasing owners), every rank with work when there
    are enough clusters, and no rank's cost above the mean by more than the largest cluster's."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        m, world = int(rng.integers(1, 300)), int(rng.integers(1, 9))
        cost = rng.integers(0, 1000, m) * (rng.random(m) < 0.9)
        owner = contiguous_owners(cost, world)
        assert np.all(np.diff(owner) >= 0) and owner.min() >= 0 and owner.max() < world
        load = np.bincount(owner, weights=cost, minlength=world)
        if cost.sum():
            assert load.max() <= cost.sum() / world + cost.max()
    assert contiguous_owners(np.zeros(4, np.int64), 3).tolist() == [0, 0, 0, 0]


def test_sharded_split_result_in_one_process_is_the_whole_matrix():
    """shard_centroids in one process: the block is every fine centroid, identical to the gathered result."""
    x = make_pool(3, 500)
    a = split_kmeans(x, 40, split=4, seed=1, n_iters=3, settings=KMeansSettings(**KM))
    b = split_kmeans(x, 40, split=4, seed=1, n_iters=3, shard_centroids=True, settings=KMeansSettings(**KM))
    assert b.centroid_range == (0, 40) and b.n_clusters == 40
    assert a.centroids.tobytes() == b.centroids.tobytes()
    np.testing.assert_array_equal(a.assignments, b.assignments)


# --- kill and resume, 2 processes ---------------------------------------------------------------------------------

class Crash(Exception):
    pass


def _crashing_store(where: str):
    """A LevelStore whose checkpoints raise on every rank at their first save whose tag contains ``where`` (after
    writing it): every rank dies at the same point, before any collective another rank could wait in."""
    from sslcurate.artifacts import Checkpoint, LevelStore

    class CrashingCheckpoint(Checkpoint):
        def save(self, tag, arrays, meta, shared=True):
            super().save(tag, arrays, meta, shared)
            if where in tag:
                raise Crash(tag)

    class CrashingStore(LevelStore):
        def checkpoint(self, i):
            plain = super().checkpoint(i)
            return CrashingCheckpoint(plain.root, plain.key_hash, plain.every, plain.every_seconds)

    return CrashingStore


def _resume_worker(rank, world, init_file, out, where):
    from sslcurate import pipeline

    _init(rank, world, init_file)
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("sslcurate").addHandler(handler)
    logging.getLogger("sslcurate").setLevel(logging.INFO)
    if where:
        pipeline.LevelStore = _crashing_store(where)
    try:
        seed, n, levels, target, strategy = CASES[1]
        curate(make_pool(seed, n), _config(levels, target, strategy, seed), out_dir=out / "run")
    except Crash:
        (out / f"crashed.{where}.rank{rank}").write_text("\n".join(records))
        raise
    finally:
        (out / f"log.{where or 'final'}.rank{rank}").write_text("\n".join(records))
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_processes_killed_in_the_split_and_above_resume_per_rank(tmp_path):
    """Two ranks die after each saved its first finished coarse cluster (its own checkpoint: its block of
    centroids, its rows' assignments); the rerun resumes each rank's split there. It dies again inside level 2,
    whose input is level 1's parts; the last run reuses levels 1 and 2 from their per-rank parts. The selection
    is the uninterrupted one-process selection byte for byte."""
    out = tmp_path / "out"
    out.mkdir()
    for step, where in enumerate(["level1.round0.fine", "level2.round0.fine", ""]):
        args = (2, tmp_path / f"init{step}", out, where)
        if where:
            with pytest.raises(mp.ProcessRaisedException, match="Crash"):
                mp.start_processes(_resume_worker, args=args, nprocs=2, join=True, start_method="spawn")
            assert all((out / f"crashed.{where}.rank{r}").exists() for r in range(2))
        else:
            mp.start_processes(_resume_worker, args=args, nprocs=2, join=True, start_method="spawn")
    clustering = out / "run" / "clustering"
    for r in range(2):
        second = (out / f"log.level2.round0.fine.rank{r}").read_text()
        assert "resuming the split after 1 of this rank's" in second  # level 1's split, from this rank's checkpoint
        final = (out / f"log.final.rank{r}").read_text()
        assert "resuming the split after 1 of this rank's" in final  # level 2's split, from this rank's checkpoint
        assert "level 1: reusing finished clustering" in final
        assert (clustering / "level1_centroids" / f"part{r:05d}of00002.npy").exists()
        assert (clustering / "level2_centroids" / f"part{r:05d}of00002.npy").exists()
    _, single = _reference(1)
    assert load_selection(out / "run").tobytes() == single.indices.tobytes()
    # One process reads a sharded level back whole (it holds the whole tree); np.asarray reads the parts too.
    store = LevelStore(clustering, json.loads((clustering / "level1.json").read_text())["key"])
    level = store.load_level(1)
    assert isinstance(level.centroids, np.ndarray)
    assert level.centroids.tobytes() == single.tree.levels[0].centroids.tobytes()
    parts = json.loads((clustering / "level2.json").read_text())["centroid_parts"]
    assert np.asarray(ShardedNpySource(clustering / "level2_centroids", parts)).tobytes() == \
        single.tree.levels[1].centroids.tobytes()
