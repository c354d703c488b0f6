"""The Lloyd step's arithmetic: per-cluster sums and counts, the objective from exact float64 sums, and the
centroid update."""

from __future__ import annotations

import numpy as np
import torch

from ..canonical import accumulate_f64, canonical_sq_norms


def _split_bf16(v: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> None:
    """Write float32 ``v`` as ``hi + lo``, two bf16 tensors (~16 significant bits together)."""
    hi.copy_(v)
    lo.copy_(v - hi.float())


def accumulate(x: torch.Tensor, assignments: torch.Tensor, n_clusters: int, sums: torch.Tensor,
               counts: torch.Tensor) -> None:
    """Add the rows of ``x: (n, d)`` into ``sums: (k, d)`` and their number into ``counts: (k,)`` per cluster.

    float64 ``sums`` take every row in float64 (:func:`sslcurate.canonical.accumulate_f64`), not a float32
    partial per chunk: a chunk's float32 partial rounds differently when ranks split the rows differently, and
    the centroids (hence near-tie assignments) would then depend on the world size.
    """
    if sums.dtype == torch.float64:
        accumulate_f64(x, assignments, sums)
    else:
        sums.index_add_(0, assignments, x.to(sums.dtype))
    counts.index_add_(0, assignments, torch.ones_like(assignments, dtype=counts.dtype))


def squared_norm_total(x: torch.Tensor) -> float:
    """Sum of the canonical squared norms of the rows of ``x``, in float64 in numpy's fixed order (torch's
    reductions regroup with the thread count and the instruction set)."""
    return float(canonical_sq_norms(x.detach().float().cpu().numpy()).sum())


def lloyd_objective(x_sq_total: float, centroids: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> float:
    """The k-means objective of the assignment that produced ``sums`` and ``counts`` (float64 per-cluster sums
    and sizes) against ``centroids``: ``sum |x|^2 - 2 sum_j c_j . S_j + sum_j n_j |c_j|^2``.

    Every input is the same for any thread count and backend (the sums are exact, see
    :func:`sslcurate.canonical.accumulate_f64`), and the arithmetic here runs in numpy's fixed order, so the
    ``tol`` early stop that reads it makes the same decision everywhere; a sum of per-row float32 distances
    would not."""
    c = centroids.detach().cpu().double().numpy()
    s = sums.detach().cpu().double().numpy()
    n = counts.detach().cpu().double().numpy()
    value = x_sq_total - 2.0 * float((c * s).sum()) + float((n * np.square(c).sum(1)).sum())
    return max(value, 0.0)


def update_centroids(sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, int]:
    """New centroids = cluster means; an empty cluster keeps its previous centroid. Returns (centroids, n_empty)."""
    empty = counts == 0
    new = (sums / counts.clamp(min=1)[:, None].to(sums.dtype)).to(previous.dtype)
    new[empty] = previous[empty]
    return new, int(empty.sum())
