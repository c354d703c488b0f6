"""Retrieval's seed -> pool search (sslcurate.knn.topk_rows): the exact k nearest rows, near-ties settled
canonically (float64, lower row first among equals), the same for any thread count, chunking and query blocking;
and the check that refuses seed embeddings that do not lie in the pool's embedding space
(sslcurate.knn.embedding_space_check, run by mixed_selection and, for data=embeddings, before any work)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_cli
from sslcurate import CurationInputError, LevelConfig, hierarchical_kmeans, hierarchical_sampling, knn
from sslcurate.knn import embedding_space_check, topk_rows
from sslcurate.retrieval import mixed_selection, nearest_rows, retrieve


def reference(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Brute force in float64 (exact for the small integer coordinates used here), lower row first among equals."""
    d = ((x.astype(np.float64)[None] - q.astype(np.float64)[:, None]) ** 2).sum(-1)
    return np.stack([np.lexsort((np.arange(len(x)), row))[:k] for row in d])


@pytest.fixture
def tied_pool():
    """Integer points at an offset of 1000 (the float32 GEMM form |c|^2 - 2 q.c rounds by ~1 there, more than
    the gaps between the distances, which are small integers): many exact ties, 30 duplicates of one row, and
    rows in a shuffled order so the lower-index rule is visible."""
    rng = np.random.default_rng(0)
    x = 1000.0 + rng.integers(-2, 3, size=(700, 16)).astype(np.float32)
    x[rng.choice(700, 30, replace=False)] = x[5]
    q = 1000.0 + rng.integers(-2, 3, size=(9, 16)).astype(np.float32)
    q[0] = x[5]  # its nearest rows: the 31 copies of row 5, all at distance 0
    return x, q


def test_topk_settles_exact_ties_by_the_lower_row(tied_pool):
    """The result is the float64 order with the lower row first among equal distances, at both metrics' ranks
    (l2 here), for k inside and across a block of 31 duplicates (the second pass collects all of them)."""
    x, q = tied_pool
    for k in (1, 12, 40, 120):
        rows, dist = topk_rows(x, q, k, chunk_rows=64)
        assert np.array_equal(rows, reference(x, q, k)), k
        assert (np.diff(dist, axis=1) >= 0).all()
        assert np.array_equal(nearest_rows(x, q, k, chunk_rows=64), rows)  # what retrieval searches with
    rows, dist = topk_rows(x, q[:1], 10)
    assert np.array_equal(rows[0], np.sort(np.flatnonzero((x == x[5]).all(1)))[:10]) and (dist == 0).all()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_topk_is_the_same_for_any_threads_chunking_and_query_blocks(tied_pool, metric, monkeypatch):
    """1 or 2 torch threads, chunks of 37 or 4096 rows, queries one block or blocks of 4, queries in another
    order: identical rows and distances."""
    x, q = tied_pool
    x = np.concatenate([x, 2.0 * x[:50]])  # cosine: exact ties between a row and its double
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads, chunk, block in ((1, 37, 1024), (2, 4096, 1024), (2, 37, 4)):
            torch.set_num_threads(n_threads)
            monkeypatch.setattr(knn, "QUERY_BLOCK", block)
            results.append(topk_rows(x, q, 25, metric=metric, chunk_rows=chunk))
        perm = np.random.default_rng(1).permutation(len(q))
        rows, dist = topk_rows(x, q[perm], 25, metric=metric)
        assert np.array_equal(dist, results[0][1][perm])
    finally:
        torch.set_num_threads(threads)
    for r, d in results[1:]:
        assert np.array_equal(r, results[0][0]) and np.array_equal(d, results[0][1])
    assert np.array_equal(rows, results[0][0][perm])
    if metric == "cosine":  # row 700 + j is row j doubled, the same unit vector: row j always comes first
        for row in results[0][0]:
            pos = {r: i for i, r in enumerate(row)}
            assert all(pos.get(r - 700, 99) < i for r, i in pos.items() if r >= 700)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_topk_matches_brute_force_on_random_data(rng, metric):
    x = rng.normal(size=(900, 12)).astype(np.float32)
    q = rng.normal(size=(7, 12)).astype(np.float32)
    rows, _ = topk_rows(x, q, 15, metric=metric, chunk_rows=128)
    if metric == "cosine":
        xn, qn = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
        ref = np.argsort(-(qn @ xn.T), axis=1)[:, :15]
    else:
        ref = reference(x, q, 15)
    assert np.array_equal(rows, ref)


def test_retrieve_with_duplicate_seeds_and_rows_is_thread_independent(tied_pool):
    """The round-robin retrieval over tied neighbourhoods takes the same rows at 1 and 2 threads."""
    x, q = tied_pool
    threads = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(retrieve(x, np.concatenate([q, q[:2]]), 60, chunk_rows=100))
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(*out))


# ------------------------------------------------------------------------------------------ embedding space


def mixture(rng, n: int, means: np.ndarray, weights: np.ndarray):
    labels = rng.choice(len(means), size=n, p=weights / weights.sum())
    return (means[labels] + rng.standard_normal((n, means.shape[1]))).astype(np.float32), labels


def haar(d: int, rng) -> np.ndarray:
    """Another model of the same dimension: the pool's space under a random rotation."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


@pytest.fixture(scope="module")
def space():
    """A pool of 20 concepts in 32-d (concept 19 is 0.2% of it: ~12 items), and held-out items of the same model."""
    rng = np.random.default_rng(1)
    means = rng.normal(0, 3, (20, 32))
    weights = np.r_[np.full(19, 5.0), 0.2]
    pool, labels = mixture(rng, 5000, means, weights)
    held, held_labels = mixture(rng, 3000, means, weights)
    return pool, labels, held, held_labels


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_seeds_of_the_pools_model_pass_and_another_models_are_refused(space, metric):
    """Over 4 draws: held-out items of the pool's model pass, as do held-out and in-pool items of the rare
    concept; the same held-out items in a rotated space (another model), 5 of them or a single one, are refused
    in one line naming the likely causes."""
    pool, labels, held, held_labels = space
    for t in range(4):
        r = np.random.default_rng([t, 3])
        rare_held = held[held_labels == 19]
        for seeds in (held[r.choice(len(held), 5, replace=False)], rare_held[r.choice(len(rare_held), 3)],
                      pool[np.flatnonzero(labels == 19)[:4]]):
            stats = embedding_space_check(pool, seeds, metric=metric)
            assert stats["seed_nn_median"] < 0.5 * max(stats["pool_nn_p99"], stats["rotated_nn_p01"])
        for n_seeds in (5, 1):
            rotated = held[r.choice(len(held), n_seeds, replace=False)] @ haar(32, r)
            with pytest.raises(CurationInputError, match="another model or another normalisation") as err:
                embedding_space_check(pool, rotated, metric=metric)
            assert "\n" not in str(err.value)


def test_another_normalisation_is_refused_for_l2_only(space):
    """Unit-length seeds against a raw pool rank pool rows by their norm under squared L2: refused there; under
    cosine the scale does not matter and they pass."""
    pool, _, held, _ = space
    unit = held[:5] / np.linalg.norm(held[:5], axis=1, keepdims=True)
    with pytest.raises(CurationInputError, match="another normalisation"):
        embedding_space_check(pool, unit, metric="l2")
    embedding_space_check(pool, unit, metric="cosine")


def test_mixed_selection_refuses_rotated_seeds_and_reports_the_check(space):
    pool, _, held, held_labels = space
    tree = hierarchical_kmeans(pool, [LevelConfig(40, 1, 10, n_iters=10), LevelConfig(8, 1, 2, n_iters=10)], seed=0)
    alone = hierarchical_sampling(tree, 300, seed=0)
    seeds = held[held_labels == 19][:3]
    _, _, report = mixed_selection(tree, pool, seeds, 300, 0.2, clustering_alone=alone, seed=0)
    space_stats = report["embedding_space"]  # rare items sit in the pool's tail, far inside another model's reach
    assert space_stats["seed_nn_median"] < 0.5 * space_stats["rotated_nn_p01"]
    with pytest.raises(CurationInputError, match="does not lie in the pool's embedding space"):
        mixed_selection(tree, pool, seeds @ haar(32, np.random.default_rng(4)), 300, 0.2, clustering_alone=alone)


def test_product_refuses_seeds_of_another_model_before_any_work(space, tmp_path):
    """data=embeddings with a seed .npy from a rotated space: exit code 2, a one-line message, no stage run."""
    pool, _, held, _ = space
    np.save(tmp_path / "pool.npy", pool)
    np.save(tmp_path / "seeds.npy", held[:6] @ haar(32, np.random.default_rng(5)))
    out = tmp_path / "run"
    proc = run_cli("experiment=curate", "data=embeddings", f"data.path={tmp_path / 'pool.npy'}", "logger=none",
                   "progress=false", "curation.target_size=300", f"curation.retrieval.seed={tmp_path / 'seeds.npy'}",
                   f"hydra.run.dir={out}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in log, log[-2000:]
    assert "does not lie in the pool's embedding space" in log.strip().splitlines()[-1]
    assert not any((out / d).exists() for d in ("clustering", "dedup", "report.json"))


def test_item_pool_refuses_npy_seeds_of_another_model_before_clustering(tmp_path):
    """An image folder with a seed .npy from a rotated space: refused in one line as soon as the pool is embedded,
    before clustering writes anything (no indices.npy, no clustering/, no report)."""
    from PIL import Image

    from sslcurate.sources import as_source

    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        (tmp_path / "pool" / f"c{c}").mkdir(parents=True)
        for i in range(16):
            a = np.kron(rng.normal(size=(4, 4, 3)) * 70 + colour, np.ones((6, 6, 1)))
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(tmp_path / "pool" / f"c{c}" / f"{i}.png")
    base = ("experiment=curate", "data=image_folder", f"data.path={tmp_path / 'pool'}", "logger=none",
            "progress=false", "embedder.input_size=32", "data.num_workers=0", "curation.target_size=12")
    first = run_cli(*base, f"hydra.run.dir={tmp_path / 'plain'}")
    assert first.returncode == 0, first.stderr[-2000:]
    vectors = as_source(next((tmp_path / "plain" / "embeddings").glob("*/vectors")))
    own = vectors.take(np.arange(6))
    np.save(tmp_path / "seeds.npy", own @ haar(own.shape[1], np.random.default_rng(6)))
    out = tmp_path / "run"
    proc = run_cli(*base, f"curation.retrieval.seed={tmp_path / 'seeds.npy'}", f"hydra.run.dir={out}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in log, log[-2000:]
    assert "does not lie in the pool's embedding space" in log.strip().splitlines()[-1]
    assert not any((out / d).exists() for d in ("clustering", "indices.npy", "report.json", "manifest.parquet"))
    embedding_space_check(vectors, own, metric="l2")  # the pool's own embeddings pass (l2: the product's default)
