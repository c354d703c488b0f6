"""Retrieval-based curation (sslcurate.retrieval, ``experiment=curate curation.retrieval.seed=PATH``): a share of
the target is the pool's nearest items of a seed set, round-robin over the seed items, the rest balanced
hierarchical sampling of the remaining pool; bad seed sets fail in one line before any work."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from sslcurate import CurationInputError, LevelConfig, hierarchical_kmeans, hierarchical_sampling
from sslcurate.retrieval import mixed_selection, nearest_rows, retrieve


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_rows_match_brute_force(rng, metric):
    x = rng.normal(size=(900, 12)).astype(np.float32)
    q = rng.normal(size=(7, 12)).astype(np.float32)
    got = nearest_rows(x, q, 15, metric=metric, chunk_rows=128)  # several chunks: the running top-k merges
    if metric == "cosine":
        xn, qn = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
        ref = np.argsort(-(qn @ xn.T), axis=1)[:, :15]
    else:
        ref = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :15]
    assert np.array_equal(got, ref)


def test_retrieve_is_round_robin_distinct_and_every_seed_contributes(rng):
    """Distinct seeds each give an equal share; a duplicated seed's neighbours are taken once (by the first copy),
    and the quota is still met with distinct rows (k grows past the shared neighbourhood); the first rows are
    every seed's nearest neighbours in turn."""
    x = rng.normal(size=(500, 6)).astype(np.float32)
    centres = np.eye(6, dtype=np.float32)[:3] * 50
    blobs = np.concatenate([c + x[:100] for c in centres])  # three far-apart neighbourhoods
    rows, origin, k = retrieve(blobs, centres, 30, chunk_rows=64)
    assert np.bincount(origin).tolist() == [10, 10, 10] and k == 10
    seeds = np.stack([x[3], x[3], x[400]]) + 0.01
    rows, origin, k = retrieve(x, seeds, 30, chunk_rows=64)
    assert rows.size == 30 and np.unique(rows).size == 30
    assert set(origin.tolist()) == {0, 2} and k > 10
    nearest = nearest_rows(x, seeds, 2)
    assert rows[0] == nearest[0, 0] and rows[1] == nearest[2, 0]  # seed 1's nearest is seed 0's: taken once
    assert rows[2] == nearest[0, 1]
    with pytest.raises(CurationInputError, match="exceeds the pool"):
        retrieve(x, seeds, 501)


@pytest.fixture(scope="module")
def rare_pool():
    """A long-tailed mixture of 10 concepts in 8-d; concept 9 holds 1% of the pool."""
    rng = np.random.default_rng(3)
    means = rng.normal(0, 5, (10, 8))
    weights = np.array([30, 20, 12, 10, 8, 6, 5, 4, 4, 1.0])
    labels = rng.choice(10, size=3000, p=weights / weights.sum())
    x = (means[labels] + rng.standard_normal((3000, 8))).astype(np.float32)
    tree = hierarchical_kmeans(x, [LevelConfig(40, 2, 10, n_iters=20), LevelConfig(8, 2, 2, n_iters=20)], seed=0)
    return x, labels, means, tree


def test_mixed_selection_sizes_and_extremes(rare_pool):
    """Target met exactly; the retrieved rows are in the subset; fraction 0 is clustering alone (same seed) and
    fraction 1 is retrieval alone."""
    x, labels, means, tree = rare_pool
    seeds = means[9:10] + 0.1
    alone = hierarchical_sampling(tree, 300, seed=4)
    idx, got, rep = mixed_selection(tree, x, seeds, 300, 0.3, clustering_alone=alone, seed=4)
    assert idx.size == 300 and np.unique(idx).size == 300 and got.size == 90 and np.isin(got, idx).all()
    assert rep["mix"] == {"retrieval": 90, "clustering": 210} and rep["seeds_contributing"] == 1
    idx0, got0, _ = mixed_selection(tree, x, seeds, 300, 0.0, clustering_alone=alone, seed=4)
    assert got0.size == 0 and np.array_equal(idx0, alone)
    idx1, got1, rep1 = mixed_selection(tree, x, seeds, 300, 1.0, clustering_alone=alone, seed=4)
    assert np.array_equal(idx1, got1) and rep1["mix"]["clustering"] == 0


def test_retrieval_raises_a_rare_concepts_share(rare_pool):
    """Five seed items of the rarest concept: with 20% of the target retrieved, that concept's share of the
    subset is at least twice its share under clustering alone, over 3 seeds."""
    x, labels, means, tree = rare_pool
    rng = np.random.default_rng(0)
    seeds = x[rng.choice(np.flatnonzero(labels == 9), 5, replace=False)]
    ratios = []
    for s in range(3):
        alone = hierarchical_sampling(tree, 300, seed=s)
        idx, _, _ = mixed_selection(tree, x, seeds, 300, 0.2, clustering_alone=alone, seed=s)
        ratios.append((labels[idx] == 9).mean() / max((labels[alone] == 9).mean(), 1 / 300))
    assert min(ratios) >= 2.0, ratios


# ---------------------------------------------------------------------------------------------------- product

@pytest.fixture(scope="module")
def pool_files(tmp_path_factory, rare_pool):
    x, labels, _, _ = rare_pool
    root = tmp_path_factory.mktemp("retrieval")
    np.save(root / "pool.npy", x)
    np.save(root / "labels.npy", labels)
    np.save(root / "seeds.npy", x[np.flatnonzero(labels == 9)[:4]])
    np.save(root / "seeds_wide.npy", np.zeros((4, 9), np.float32) + 1)
    np.save(root / "seeds_empty.npy", np.zeros((0, 8), np.float32))
    return root


ARGS = ["experiment=curate", "data=embeddings", "logger=none", "progress=false", "curation.target_size=300"]


def test_retrieval_command_reports_the_mix_and_the_overlap(pool_files, tmp_path):
    root = pool_files
    proc = run_cli(*ARGS, f"data.path={root / 'pool.npy'}", f"curation.labels={root / 'labels.npy'}",
                   f"curation.retrieval.seed={root / 'seeds.npy'}", "curation.retrieval.fraction=0.2",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    r = report["retrieval"]
    assert r["mix"] == {"retrieval": 60, "clustering": 240} and r["seeds_contributing"] == 4
    assert 0 <= r["overlap"]["share_of_retrieved"] < 1
    c = report["concepts"]
    # concept 9 has ~30 items: retrieval near four of them takes nearly all, clustering alone about half
    assert c["subset"]["counts"][9] >= 0.8 * c["pool"]["counts"][9] > c["clustering_alone"]["counts"][9]
    table = pq.read_table(tmp_path / "manifest.parquet").to_pydict()
    assert len(table["item"]) == 300 and sum(table["retrieved"]) == 60
    assert np.array_equal(np.load(tmp_path / "indices.npy"), np.sort(np.load(tmp_path / "indices.npy")))
    page = (tmp_path / "report.html").read_text()
    assert "retrieval mix" in page and "clustering alone" in page


@pytest.mark.parametrize("seed_file, extra, message", [
    ("seeds_wide.npy", [], "has dimension 9 but the pool's embeddings have 8"),
    ("seeds_empty.npy", [], "seed set is empty"),
    ("seeds.npy", ["curation.retrieval.fraction=1.5"], "in [0, 1]; got 1.5"),
    ("seeds.npy", ["curation.retrieval.fraction=-0.1"], "in [0, 1]; got -0.1"),
    ("missing.npy", [], "does not exist"),
])
def test_bad_seed_sets_fail_in_one_line_before_any_work(pool_files, tmp_path, seed_file, extra, message):
    """Each error is the last line of the log, with no traceback, and no stage has run (no embeddings, dedup or
    clustering folder, no report)."""
    root = pool_files
    start = time.perf_counter()
    proc = run_cli(*ARGS, f"data.path={root / 'pool.npy'}", f"curation.retrieval.seed={root / seed_file}",
                   f"hydra.run.dir={tmp_path}", *extra)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in log, log[-2000:]
    assert message in log.strip().splitlines()[-1]
    assert not any((tmp_path / d).exists() for d in ("clustering", "dedup", "embeddings", "report.json"))
    print(f"{seed_file} {extra}: failed in {time.perf_counter() - start:.1f} s")
