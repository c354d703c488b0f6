"""The fast k-means paths give the same clustering as the plain ones: bounded Lloyd vs dense Lloyd, tiled top-2
assignment vs brute force, subsampled k-means++ vs k-means++ on all rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs
from sslcurate import kmeans
from sslcurate.assign import assign_chunk, assign_chunk_top2
from sslcurate.kmeans import kmeans_plusplus


def brute_force(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), d


@pytest.mark.parametrize("case", ["blobs", "offset", "cosine", "small_chunks", "tiny_d"])
def test_bounds_give_the_same_lloyd_iterations(rng, case):
    """Hamerly bounds only skip work: same centroids, per-iteration objective and final assignments as the
    dense pass, and the final assignments are the brute-force nearest centroids."""
    x = make_blobs(rng, n=4000, d=16, centers=30)
    kw = {"n_iters": 15, "seed": 3}
    if case == "offset":  # far from the origin: |x|^2 >> distances, where float error in the GEMM form is largest
        x = x + 50.0
    if case == "cosine":
        kw["metric"] = "cosine"
        # Other blobs: on the fixture's, a row's two nearest centroids tie within fp32 rounding at iteration 5,
        # and which one wins depends on the backend's rounding (1e-7 relative noise on x flips faiss's own dense
        # run there), after which the two trajectories are different, equally valid, clusterings.
        x = make_blobs(np.random.default_rng(1), n=4000, d=16, centers=30)
    if case == "small_chunks":
        kw["chunk_rows"] = 333
    if case == "tiny_d":
        x = rng.standard_normal((4000, 2)).astype(np.float32)
    dense = kmeans(x, 40, bounds=False, **kw)
    fast = kmeans(x, 40, bounds=True, **kw)
    np.testing.assert_allclose(fast.centroids, dense.centroids, rtol=1e-5, atol=1e-5)
    # The dense history sums float32 GEMM-form distances (cancellation far from the origin); the bounded one is
    # computed from float64 cluster sums, so it is the more accurate of the two.
    np.testing.assert_allclose(fast.history, dense.history, rtol=1e-4 if case == "offset" else 1e-5)
    assert fast.objective == pytest.approx(dense.objective, rel=1e-6)
    assert (fast.assignments == dense.assignments).mean() > 0.999
    xb = x / np.linalg.norm(x, axis=1, keepdims=True) if case == "cosine" else x
    idx, _ = brute_force(xb, fast.centroids)
    assert (fast.assignments == idx).mean() > 0.999


def test_bounds_with_faiss_backend_and_empty_clusters(rng):
    """The bounded loop drives the faiss backend too, and an empty cluster (kept centroid) does not break it."""
    x = make_blobs(rng, n=3000)
    init = np.concatenate([x[:9], np.full((1, x.shape[1]), 1e3, dtype=np.float32)])
    a = kmeans(x, 10, n_iters=8, init_centroids=init, bounds=False)
    b = kmeans(x, 10, n_iters=8, init_centroids=init, bounds=True)
    np.testing.assert_allclose(b.centroids, a.centroids, rtol=1e-5, atol=1e-5)
    assert a.n_empty_clusters == b.n_empty_clusters == 1
    pytest.importorskip("faiss")
    c = kmeans(x, 10, n_iters=8, init_centroids=init, bounds=True, backend="faiss")
    np.testing.assert_allclose(c.centroids, a.centroids, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_cols", [7, 64, 1024])
def test_tiled_top2_matches_brute_force(rng, block_cols):
    """Running top-2 over column blocks (including a ragged last block) equals a float64 brute force."""
    x = rng.standard_normal((700, 12)).astype(np.float32)
    c = rng.standard_normal((50, 12)).astype(np.float32)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    idx, d1, d2 = assign_chunk_top2(xt, ct, (ct * ct).sum(1), block_rows=128, block_cols=block_cols)
    ref_idx, d = brute_force(x, c)
    ref = np.sort(d, axis=1)
    assert (idx.numpy() == ref_idx).mean() > 0.999
    np.testing.assert_allclose(d1.numpy(), ref[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d2.numpy(), ref[:, 1], rtol=1e-4, atol=1e-4)
    i1, v1 = assign_chunk(xt, ct, (ct * ct).sum(1), block_rows=128, block_cols=block_cols)
    np.testing.assert_array_equal(i1.numpy(), idx.numpy())


def test_kmeanspp_is_deterministic_and_spreads(rng):
    """Same generator state, same centres; centres are distinct rows of x."""
    x = torch.from_numpy(make_blobs(rng, n=3000, d=8, centers=20))
    a = kmeans_plusplus(x, 20, np.random.default_rng(5))
    b = kmeans_plusplus(x, 20, np.random.default_rng(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len({tuple(r) for r in a.numpy()}) == 20


def test_subsampled_kmeanspp_keeps_quality(rng):
    """k-means++ on the default subsample ends Lloyd within 2% of k-means++ on all rows (mean over seeds)."""
    x = make_blobs(rng, n=30000, d=16, centers=80)
    sub = np.mean([kmeans(x, 100, n_iters=10, seed=s, init="k-means++").objective for s in range(3)])
    full = np.mean([kmeans(x, 100, n_iters=10, seed=s, init="k-means++", init_sample_size=len(x)).objective
                    for s in range(3)])
    assert sub <= 1.02 * full


def test_default_init_is_reproducible(rng):
    x = make_blobs(rng, n=30000, d=8)
    a, b = kmeans(x, 50, n_iters=3, seed=11), kmeans(x, 50, n_iters=3, seed=11)
    np.testing.assert_array_equal(a.centroids, b.centroids)
