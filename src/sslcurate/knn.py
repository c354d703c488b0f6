"""The k nearest rows of a pool for each of a few queries (retrieval's seed -> pool search), settled canonically.

Scores come from the core's blocked float32 GEMM form (``|c|^2 - 2 q.c``, the torch path of
:mod:`sslcurate.assign`), one ``(queries, chunk_rows)`` tile per pool chunk, merged into a running top-``k'``
per query (``k' > k``: a margin of spare candidates). A GEMM's rounding changes with the thread count and the
blocking, so the float32 order is not the answer: every row whose float32 score lies within twice the rounding
bound (:func:`sslcurate.canonical.gemm_error`) of the query's k-th best is a candidate, and the candidates are
rescored with the canonical float64 distance (:func:`sslcurate.canonical.canonical_pair_distances`), nearest
first, the lower row first among equals. The canonical top-k is always among the candidates (a row that is nearer
in float64 cannot score beyond the bound in any float32 arithmetic), so the result is the same for every thread
count, chunking and query blocking. A query whose spare candidates do not reach past the bound (many rows tied at
the k-th distance: duplicates) gets a second pass collecting every row within it.

Cosine: rows and queries are scaled to unit length first, with their canonical float64 norms (the same float32
unit vectors whatever the threads), and ranked by the squared distance of unit vectors, ``2 - 2 cos``.
"""

from __future__ import annotations

import numpy as np
import torch

from .canonical import canonical_pair_distances, canonical_sq_norms, gemm_error
from .errors import CurationInputError
from .sources import SubsetSource, as_source

QUERY_BLOCK = 1024  # queries per pass: a (QUERY_BLOCK, chunk_rows) float32 score tile at a time
SPARE = 32  # candidates kept beyond k per query (at least; k // 4 for large k): near-ties rarely need more
PAIR_BLOCK = 1 << 16  # candidate pairs rescored per piece: the pool rows they read stay within (PAIR_BLOCK, d)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to unit length by their canonical float64 norms (zero rows stay zero)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    norm = np.sqrt(canonical_sq_norms(rows))
    return (rows / np.maximum(norm, 1e-30)[:, None]).astype(np.float32)


def _scores(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(nq, m) float32 ``|c|^2 - 2 q.c``: the squared distance less the query's own norm, which ranks the same."""
    return torch.addmm((c * c).sum(1)[None, :], q, c.T, alpha=-2.0)


def _chunks(source, chunk_rows: int, metric: str):
    for start, chunk in source.iter_chunks(chunk_rows):
        yield start, torch.from_numpy(unit_rows(chunk) if metric == "cosine" else np.ascontiguousarray(chunk))


def _candidates(source, q: torch.Tensor, k: int, metric: str, chunk_rows: int):
    """Candidate pairs ``(query, row)`` of a block of queries: for each query every row whose float32 score is
    within twice the rounding bound of its k-th best (at least k rows, the canonical top-k among them)."""
    n = len(source)
    kk = min(n, k + max(SPARE, k // 4))
    best_s = torch.full((len(q), 0), float("inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.int64)
    err = torch.zeros(len(q), dtype=torch.float64)
    for start, c in _chunks(source, chunk_rows, metric):
        err = torch.maximum(err, gemm_error(q, c))  # grows with the largest pool row seen: the bound over all
        s = torch.cat([best_s, _scores(q, c)], 1)
        i = torch.cat([best_i, torch.arange(start, start + len(c)).expand(len(q), -1)], 1)
        best_s, pos = torch.topk(s, min(kk, s.shape[1]), dim=1, largest=False, sorted=True)
        best_i = torch.gather(i, 1, pos)
    limit = best_s[:, k - 1].double() + 2.0 * err
    inside = best_s.double() <= limit[:, None]
    # Complete: the spare candidates reach past the limit, or every row was kept.
    complete = (~inside[:, -1]) | (best_s.shape[1] == n)
    qi, col = torch.nonzero(inside & complete[:, None], as_tuple=True)
    pairs_q, pairs_r = [qi.numpy()], [best_i[qi, col].numpy()]
    redo = torch.nonzero(~complete)[:, 0]
    if redo.numel():  # many rows tied near the k-th: every row within the limit, from a second pass
        qr, lim = q[redo], limit[redo]
        for start, c in _chunks(source, chunk_rows, metric):
            r, j = torch.nonzero(_scores(qr, c).double() <= lim[:, None], as_tuple=True)
            pairs_q.append(redo[r].numpy())
            pairs_r.append((j + start).numpy())
    return np.concatenate(pairs_q), np.concatenate(pairs_r)


def _rescore(source, q: np.ndarray, pq: np.ndarray, pr: np.ndarray, metric: str) -> np.ndarray:
    """Canonical float64 squared distances of the pairs (``q[pq[i]]``, pool row ``pr[i]``)."""
    out = np.empty(pq.size)
    for s in range(0, pq.size, PAIR_BLOCK):
        rows, where = np.unique(pr[s:s + PAIR_BLOCK], return_inverse=True)
        c = source.take(rows)
        if metric == "cosine":
            c = unit_rows(c)
        out[s:s + PAIR_BLOCK] = canonical_pair_distances(q, c, pq[s:s + PAIR_BLOCK], where)
    return out


def topk_rows(x, queries: np.ndarray, k: int, *, metric: str = "l2", chunk_rows: int = 16_384
              ) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of ``x`` nearest to each query, nearest first, the lower row first among equal distances.

    x: (n, d) array, path or source, read a chunk at a time; queries: (q, d). metric: "l2" (squared Euclidean on
    raw features) or "cosine". Returns ``rows: (q, k) int64`` and ``distances: (q, k) float64``, the canonical
    squared distances (for cosine, of the unit vectors: ``2 - 2 cos``). The same for any thread count,
    ``chunk_rows`` and number of queries."""
    source = as_source(x)
    n = len(source)
    if metric not in ("l2", "cosine"):
        raise CurationInputError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    if not 1 <= k <= n:
        raise CurationInputError(f"k must be between 1 and the pool size ({n}), got {k}")
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != source.dim:
        raise CurationInputError(f"queries must be (q, {source.dim}), got shape {queries.shape}")
    rows = np.empty((len(queries), k), dtype=np.int64)
    dist = np.empty((len(queries), k))
    for q0 in range(0, len(queries), QUERY_BLOCK):
        q = np.ascontiguousarray(queries[q0:q0 + QUERY_BLOCK], dtype=np.float32)  # a copy: may be a memmap
        if metric == "cosine":
            q = unit_rows(q)
        pq, pr = _candidates(source, torch.from_numpy(q), k, metric, chunk_rows)
        d = _rescore(source, q, pq, pr, metric)
        order = np.lexsort((pr, d, pq))  # per query: nearest first, lower row among equals
        pq, pr, d = pq[order], pr[order], d[order]
        first = np.searchsorted(pq, np.arange(len(q)))
        keep = np.arange(pq.size) - first[pq] < k  # every query has at least k candidates
        rows[q0:q0 + len(q)] = pr[keep].reshape(len(q), k)
        dist[q0:q0 + len(q)] = d[keep].reshape(len(q), k)
    return rows, dist


# ------------------------------------------------------------------------------------------------------------
# Do query embeddings live in the pool's embedding space?

SPACE_SAMPLE = 512  # pool rows (and queries, at most) whose nearest-neighbour distances the check compares
SPACE_POOL = 65_536  # pool rows searched by the check, at most (a seeded sample of a larger pool)
NORM_FACTOR = 2.0  # l2: the queries' median norm may lie this factor beyond the pool's 1st-99th percentile norms


def rotated_rows(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(m, d) float32: the rows of ``x`` under one orthogonal map drawn uniformly (Haar). With ``m < d`` only its
    action on the rows' span is drawn: ``x = r^T q^T`` (thin QR of ``x^T``), and ``q^T`` times a uniform rotation
    is a uniform orthonormal m-frame ``w^T`` (thin QR of a Gaussian ``(d, m)``, signs fixed), so the rows are
    ``r^T w^T``: O(m^2 d) instead of the O(d^3) of a whole rotation."""
    m, d = x.shape
    w, r = torch.linalg.qr(torch.from_numpy(rng.standard_normal((d, min(m, d)))))
    w = w * torch.sign(torch.diagonal(r))
    x64 = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if m >= d:
        return (x64 @ w).numpy().astype(np.float32)
    _, r1 = torch.linalg.qr(x64.T)
    return (r1.T @ w.T).numpy().astype(np.float32)


def embedding_space_check(pool, queries: np.ndarray, *, metric: str = "l2", seed: int = 0,
                          sample: int = SPACE_SAMPLE, max_pool: int = SPACE_POOL, chunk_rows: int = 16_384,
                          what: str = "the retrieval seed set") -> dict:
    """A one-line error when ``queries`` (q, d) clearly do not live in the embedding space of ``pool`` (n, d):
    embeddings of another model of the same dimension, or of another normalisation.

    Three nearest-neighbour distances in ``metric`` (:func:`topk_rows`), against the pool (or ``max_pool`` rows of
    it, drawn with ``seed``): of the queries; of ``sample`` pool rows to their nearest other pool row (what an
    embedding of the pool's model gets); of the same rows under a random rotation (what embeddings of another
    model get: the pool's own geometry, in other coordinates). The queries are refused when their median distance
    is beyond the pool rows' 99th percentile and beyond the rotated rows' 1st percentile: farther from the pool
    than nearly every pool row, and as far as another model's embeddings. A rare concept of the pool's model
    stays well inside (its items are in the pool's own distribution, if in its tail); where the two references
    overlap (isotropic data, which a rotation does not change) only queries beyond nearly every pool row are
    refused. With ``metric="l2"`` the queries' median norm must also lie within ``NORM_FACTOR`` of the pool's
    1st-99th percentile norms (squared L2 ranks pool rows by their norm when the scales differ). ``what`` names
    the queries in the message. Returns the statistics (for the report)."""
    source = as_source(pool)
    queries = np.asarray(queries, dtype=np.float32)
    n = len(source)
    if n < 2 or len(queries) == 0:
        return {}
    rng = np.random.default_rng([seed, 29])
    if n > max_pool:
        source = SubsetSource(source, np.sort(rng.choice(n, max_pool, replace=False)))
    if len(queries) > sample:
        queries = queries[np.sort(rng.choice(len(queries), sample, replace=False))]
    rows = np.sort(rng.choice(len(source), min(sample, len(source)), replace=False))
    x = source.take(rows)
    # LAPACK's rounding may differ with the thread count: it moves this reference by ~1e-15 relative, which
    # changes the decision only for a seed set sitting exactly on it.
    rotated = rotated_rows(x, rng)
    nq, m = len(queries), len(rows)
    idx, dist = topk_rows(source, np.concatenate([queries, x, rotated]), 2, metric=metric, chunk_rows=chunk_rows)
    own = idx[nq:nq + m, 0] == rows  # the row itself, unless an equal row comes first
    stats = {"metric": metric, "seed_nn_median": float(np.median(dist[:nq, 0])),
             "pool_nn_p99": float(np.quantile(np.where(own, dist[nq:nq + m, 1], dist[nq:nq + m, 0]), 0.99)),
             "rotated_nn_p01": float(np.quantile(dist[nq + m:, 0], 0.01)), "pool_rows_searched": len(source)}
    if stats["seed_nn_median"] > max(stats["pool_nn_p99"], stats["rotated_nn_p01"]):
        raise CurationInputError(
            f"{what} does not lie in the pool's embedding space: its median distance to the nearest pool item "
            f"({metric}) is {stats['seed_nn_median']:.4g}, beyond the pool's own 99th percentile "
            f"({stats['pool_nn_p99']:.4g}) and as far as a rotated copy of the pool gets "
            f"({stats['rotated_nn_p01']:.4g}): seed embeddings from another model or another normalisation? Embed "
            "the seeds with the pool's embedder (or give seed items)")
    if metric == "l2":
        pool_norm = np.sqrt(canonical_sq_norms(x))
        lo, hi = np.quantile(pool_norm, [0.01, 0.99])
        norm = float(np.median(np.sqrt(canonical_sq_norms(queries))))
        stats.update(seed_norm_median=norm, pool_norm_p01=float(lo), pool_norm_p99=float(hi))
        if not lo / NORM_FACTOR <= norm <= hi * NORM_FACTOR:
            raise CurationInputError(
                f"{what} has median norm {norm:.4g}, the pool's embeddings {lo:.4g} to {hi:.4g} (1st-99th "
                "percentile): seed embeddings with another normalisation or from another model? Squared L2 "
                "retrieval needs the pool's scale (or use curation.kmeans.metric=cosine)")
    return stats
