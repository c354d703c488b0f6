"""Multi-process k-means (gloo, 2 CPU processes) is the same math as one process: same centroids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslcurate import kmeans


def _worker(rank, world, init_file, data_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        res = kmeans(data_file, 12, n_iters=6, seed=5, backend="torch")
        if rank == 0:
            np.save(out_file, res.centroids)
        np.save(f"{out_file}.rank{rank}.npy", res.assignments)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_process_kmeans_matches_single_process(tmp_path):
    x = np.random.default_rng(0).standard_normal((3001, 8)).astype(np.float32)  # odd n: unequal shards
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "centroids.npy"
    mp.start_processes(_worker, args=(2, tmp_path / "init", tmp_path / "x.npy", out), nprocs=2, join=True,
                       start_method="spawn")
    single = kmeans(tmp_path / "x.npy", 12, n_iters=6, seed=5, backend="torch")
    np.testing.assert_allclose(np.load(out), single.centroids, rtol=1e-4, atol=1e-5)
    parts = np.concatenate([np.load(f"{out}.rank{r}.npy") for r in range(2)])
    assert (parts == single.assignments).mean() > 0.999


def _tree_worker(rank, world, init_file, data_file, out_file):
    from sslcurate import LevelConfig, hierarchical_kmeans

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        tree = hierarchical_kmeans(data_file, [LevelConfig(20, 2, 20, n_iters=5), LevelConfig(4, 2, 2, n_iters=5)],
                                   seed=1, backend="torch")
        np.save(f"{out_file}.rank{rank}.npy", tree.point_labels(2))
    finally:
        dist.destroy_process_group()


def test_two_process_hierarchy_gathers_level_one(tmp_path):
    """Level 1 and its resampling steps run sharded; every rank ends with the full tree, equal to the one-process
    tree."""
    from sslcurate import LevelConfig, hierarchical_kmeans

    x = np.random.default_rng(1).standard_normal((2001, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "labels"
    mp.start_processes(_tree_worker, args=(2, tmp_path / "init", tmp_path / "x.npy", out), nprocs=2, join=True,
                       start_method="spawn")
    single = hierarchical_kmeans(x, [LevelConfig(20, 2, 20, n_iters=5), LevelConfig(4, 2, 2, n_iters=5)], seed=1,
                                 backend="torch")
    for r in range(2):
        assert (np.load(f"{out}.rank{r}.npy") == single.point_labels(2)).mean() > 0.999
