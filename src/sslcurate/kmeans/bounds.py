"""Hamerly bounds (skip rows whose centroid cannot have changed) and the farthest-point tracker that
reseeds empty clusters."""

from __future__ import annotations

import numpy as np
import torch

from .. import distributed as dist
from ..sources import EmbeddingSource
from .common import _normalize, _to_device
from .steps import lloyd_objective, squared_norm_total


class _HamerlyBounds:
    """Per-row state of Lloyd's k-means with Hamerly's bounds (Hamerly 2010, "Making k-means even faster").

    For every local row: ``assign`` (current centroid a), ``upper`` >= |x - c_a| and ``lower`` <= the distance
    to every other centroid. When centroids move by ``shift``, ``upper += shift[a]`` and ``lower -=`` the
    largest shift among the other centroids. A row keeps its centroid without any distance computation when
    ``upper <= max(lower, half_gap[a])``, ``half_gap[a]`` being half the distance from c_a to its nearest other
    centroid. Otherwise ``upper`` is tightened with one exact distance, and only the rows still unproven get a
    dense top-2 pass (which resets both bounds). Everything is vectorised over rows; no Python loop per point.

    Exactness: bounds hold for true distances, and the dense pass computes ``|x|^2 - 2 x.c + |c|^2`` in float32.
    Each bound built from a computed value is widened by a worst-case float32 error
    ``(d + 4) * 2^-23 * (|x|^2 + max |c|^2)`` (on squared distances), so a skipped row is one whose float32
    brute-force argmin could only differ by a tie within rounding. Cluster sums are float64 running totals
    updated by the rows that moved (``+x`` to the new cluster, ``-x`` from the old); the objective comes from
    them as ``sum |x|^2 - 2 sum_j c_j . S_j + sum_j n_j |c_j|^2`` in float64.

    Rows are identified by their position in ``source.iter_chunks(chunk_rows, lo, hi)``, which is fixed.
    """

    def __init__(self, n_local: int, n_clusters: int, n_total: int, d: int, device: torch.device):
        self.assign = torch.zeros(n_local, dtype=torch.int64, device=device)
        self.upper = torch.zeros(n_local, dtype=torch.float64, device=device)
        self.lower = torch.zeros(n_local, dtype=torch.float64, device=device)
        self.k, self.d = n_clusters, d
        self.rel_err = (d + 4) * 2.0 ** -23  # float32 dot-product error bound, relative to |x|^2 + |c|^2
        # half_gap costs a (k, k) distance pass: worth it while k is small next to n.
        self.use_half_gap = 4 * n_clusters <= n_total
        self.sums = torch.zeros((n_clusters, d), dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_clusters, dtype=torch.int64, device=device)
        self.x_sq_total = 0.0
        self.previous: torch.Tensor | None = None  # centroids of the last assignment pass
        self.rows_seen = 0
        self.rows_dense = 0

    def skipped_fraction(self) -> float:
        return 1.0 - self.rows_dense / max(self.rows_seen, 1)

    def iteration(self, source: EmbeddingSource, chunk_rows: int, lo: int, hi: int, cosine: bool,
                  centroids: torch.Tensor, prepared, assigner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One assignment pass against ``centroids: (k, d)``. Returns global (sums, counts, objective: float)."""
        dev = centroids.device
        c = centroids.float()
        c_sq = (c.double() ** 2).sum(1)
        self._c_sq_max = float(c_sq.max())
        first = self.previous is None
        if not first:
            shift = (c.double() - self.previous.double()).norm(dim=1)  # (k,)
            top = torch.topk(shift, min(2, self.k))
            other = torch.full_like(shift, float(top.values[0]))       # largest shift among the *other* centroids
            other[top.indices[0]] = float(top.values[1]) if self.k > 1 else 0.0
            half_gap = self._half_gap(c, prepared, assigner) if self.use_half_gap else torch.zeros_like(shift)
        d_sums = torch.zeros_like(self.sums)
        d_counts = torch.zeros_like(self.counts)
        for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
            xc = _to_device(chunk, dev, cosine)
            rows = slice(start - lo, start - lo + xc.shape[0])
            if first:
                self._dense(xc, rows, None, prepared, assigner, d_sums, d_counts)
            else:
                self._bounded(xc, rows, c, shift, other, half_gap, prepared, assigner, d_sums, d_counts)
        if first:
            self.x_sq_total = float(dist.all_reduce_sum(torch.tensor([self.x_sq_total], dtype=torch.float64))[0])
        dist.all_reduce_sum(d_sums)
        dist.all_reduce_sum(d_counts)
        self.sums += d_sums
        self.counts += d_counts
        self.previous = c.clone()
        return self.sums, self.counts, lloyd_objective(self.x_sq_total, c, self.sums, self.counts)

    def _half_gap(self, c: torch.Tensor, prepared, assigner) -> torch.Tensor:
        """(k,) half the distance from each centroid to its nearest other centroid, rounded down."""
        idx, d1, d2 = assigner.assign_top2(c, prepared)
        self_first = idx == torch.arange(self.k, device=c.device)
        nearest_other = torch.where(self_first, d2, d1).double()  # normally d1 is the centroid itself
        c_sq = (c.double() ** 2).sum(1)
        err = 2.0 * self.rel_err * (c_sq + self._c_sq_max)
        return 0.5 * (nearest_other - err).clamp(min=0).sqrt()

    def _dense(self, xr: torch.Tensor, rows, sel, prepared, assigner, d_sums, d_counts) -> None:
        """Top-2 pass over ``xr`` (the rows ``sel`` of chunk ``rows``, or all of it): reset a, upper, lower."""
        idx, d1, d2 = assigner.assign_top2(xr, prepared)
        x_sq = (xr.double() ** 2).sum(1)
        err = self.rel_err * (x_sq + self._c_sq_max)
        upper = (d1.double() + err).clamp(min=0).sqrt()
        lower = (d2.double() - err).clamp(min=0).sqrt()
        a, u, l = self.assign[rows], self.upper[rows], self.lower[rows]
        self.rows_dense += xr.shape[0]
        if sel is None:  # first pass: every row enters its cluster
            self.rows_seen += xr.shape[0]
            a.copy_(idx), u.copy_(upper), l.copy_(lower)
            self.x_sq_total += squared_norm_total(xr)
            d_sums.index_add_(0, idx, xr.double())
            d_counts.index_add_(0, idx, torch.ones_like(idx))
            return
        old = a[sel]
        moved = idx != old
        a[sel], u[sel], l[sel] = idx, upper, lower
        if bool(moved.any()):
            xm = xr[moved].double()
            d_sums.index_add_(0, idx[moved], xm)
            d_sums.index_add_(0, old[moved], -xm)
            ones = torch.ones_like(old[moved])
            d_counts.index_add_(0, idx[moved], ones)
            d_counts.index_add_(0, old[moved], -ones)

    def _bounded(self, xc: torch.Tensor, rows, c, shift, other, half_gap, prepared, assigner, d_sums,
                 d_counts) -> None:
        a, u, l = self.assign[rows], self.upper[rows], self.lower[rows]
        self.rows_seen += xc.shape[0]
        u += shift[a]
        l -= other[a]
        bound = torch.maximum(l, half_gap[a])
        # Strictly: a row whose bounds only prove a tie goes to the dense pass, which settles ties canonically.
        cand = torch.nonzero(u >= bound)[:, 0]
        if cand.numel() == 0:
            return
        # Tighten the upper bound with the exact distance to the current centroid (d flops per row).
        xr = xc[cand]
        du = ((xr - c[a[cand]]) ** 2).sum(1).double()
        u_tight = (du * (1.0 + self.rel_err)).sqrt()
        u[cand] = u_tight
        still = u_tight >= bound[cand]
        if not bool(still.any()):
            return
        self._dense(xr[still], rows, cand[still], prepared, assigner, d_sums, d_counts)


class _FarthestTracker:
    """Remembers the points farthest from their centroids, to re-seed empty clusters on them."""

    def __init__(self, n_clusters: int):
        self.k = n_clusters
        self.rows = torch.zeros(0, dtype=torch.int64)
        self.dists = torch.zeros(0)

    def update(self, start: int, dmin: torch.Tensor) -> None:
        rows = torch.cat([self.rows, torch.arange(start, start + dmin.shape[0])])
        dists = torch.cat([self.dists, dmin.cpu().float()])
        keep = _farthest_first(rows, dists)[: self.k]
        self.rows, self.dists = rows[keep], dists[keep]

    def reseed(self, centroids: torch.Tensor, empty: torch.Tensor, source: EmbeddingSource,
               cosine: bool) -> torch.Tensor:
        rows = dist.all_gather_rows(self.rows[:, None])[:, 0]
        dists = dist.all_gather_rows(self.dists[:, None])[:, 0]
        order = _farthest_first(rows, dists)
        empty_ids = torch.nonzero(empty.cpu())[:, 0]
        picked = rows[order[: empty_ids.numel()]].numpy()
        new = torch.from_numpy(source.take(picked)).to(centroids.device)
        centroids = centroids.clone()
        centroids[empty_ids[: new.shape[0]].to(centroids.device)] = _normalize(new) if cosine else new
        return centroids


def _farthest_first(rows: torch.Tensor, dists: torch.Tensor) -> torch.Tensor:
    """Positions ordered by decreasing distance, the lower row first among equals (topk's pick among equal values
    is unspecified)."""
    return torch.from_numpy(np.lexsort((rows.numpy(), -dists.double().numpy())))
