"""Canonical arithmetic: how every near-tie the selection depends on is settled, the same on every CPU, thread
count, world size, backend and precision.

The fast paths (fused kernels, torch or faiss GEMMs, bf16 / int8 / int16 candidates) round differently from one
another, and a GEMM's rounding can change with the thread count. Wherever a decision's margin lies within the
error bound of the arithmetic that made it, the candidates are rescored here, in float64 with a fixed order of
operations, and the lower index wins among equals. Decisions with a larger margin are the same in every
arithmetic, so every path ends with the same answer.

The canonical squared distance of float32 vectors: eight float64 lanes, lane ``l`` summing ``(x_j - c_j)^2``
over ``j = l, l + 8, ...`` in order (multiply and add rounded separately), then
``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``. The C extension computes the same numbers bit for bit
(``_kernels.c``, ``canon_dist``; tests/test_canonical.py checks it); without it, numpy does.
"""

from __future__ import annotations

import numpy as np
import torch

from .fused import _module

LANES = 8
U32 = 2.0 ** -24  # unit roundoff of float32


def canonical_sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x, c: (m, d) float32, row i of one against row i of the other. Returns (m,) float64."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(c, dtype=np.float32)
    m, d = x.shape
    if m == 0:
        return np.zeros(0)
    pad = -d % LANES
    t = x.astype(np.float64) - c.astype(np.float64)
    if pad:
        t = np.concatenate([t, np.zeros((m, pad))], axis=1)
    t = t.reshape(m, -1, LANES)
    acc = np.zeros((m, LANES))
    for g in range(t.shape[1]):
        tg = t[:, g]
        acc += tg * tg
    return ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))


def canonical_row_distances(x: torch.Tensor, c: torch.Tensor, idx: torch.Tensor, n_threads: int | None = None
                            ) -> torch.Tensor:
    """(n,) float32: the canonical squared distance of each row of ``x: (n, d)`` to its centroid ``c[idx]``,
    rounded to float32. The distances every selection reads (closest-to-centroid sampling) come from here."""
    x = x.detach().float().cpu().contiguous()
    c = c.detach().float().cpu().contiguous()
    idx = idx.detach().cpu().long().contiguous()
    out = torch.empty(x.shape[0])
    mod = _module()
    if mod is not None and x.shape[0]:
        # One thread for small inputs: waking the extension's OpenMP team costs more than the work, and its
        # spinning threads then compete with torch's.
        threads = n_threads or (torch.get_num_threads() if x.shape[0] * x.shape[1] >= 1 << 18 else 1)
        mod.canon_rows(x.data_ptr(), x.shape[0], x.shape[1], x.shape[1], c.data_ptr(), idx.data_ptr(),
                       out.data_ptr(), threads)
        return out
    step = 1 << 15
    for s in range(0, x.shape[0], step):
        out[s:s + step] = torch.from_numpy(
            canonical_sq_dist(x[s:s + step].numpy(), c[idx[s:s + step]].numpy()).astype(np.float32))
    return out


def canonical_pair_distances(x: np.ndarray, c: np.ndarray, rows: np.ndarray | None, cols: np.ndarray
                             ) -> np.ndarray:
    """(m,) float64 canonical squared distances of the pairs (``x[rows[i]]``, ``c[cols[i]]``); ``rows=None``
    pairs row i with ``c[cols[i]]``. x: (n, d), c: (k, d) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(c, dtype=np.float32)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    rows = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty(cols.size)
    mod = _module()
    if mod is not None and cols.size:
        threads = torch.get_num_threads() if cols.size * x.shape[1] >= 1 << 18 else 1
        mod.canon_pairs(x.ctypes.data, x.shape[1], x.shape[1], c.ctypes.data, 0 if rows is None else rows.ctypes.data,
                        cols.ctypes.data, cols.size, out.ctypes.data, threads)
        return out
    step = 1 << 15
    for s in range(0, cols.size, step):
        r = np.arange(s, min(s + step, cols.size)) if rows is None else rows[s:s + step]
        out[s:s + step] = canonical_sq_dist(x[r], c[cols[s:s + step]])
    return out


def canonical_sq_norms(x: np.ndarray) -> np.ndarray:
    """(n,) float64 canonical squared norms of the rows of ``x``."""
    x = np.asarray(x, dtype=np.float32)
    return canonical_pair_distances(x, np.zeros((1, x.shape[1]), np.float32), None, np.zeros(len(x), np.int64))


def canonical_pick(x: np.ndarray, c: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> np.ndarray:
    """For candidate pairs (``rows[i]``, ``cols[i]``), the canonical nearest column of each row: the smallest
    canonical distance, the lowest column among equals. Every row in ``0..n_rows`` must have a candidate.
    Returns (n_rows,) int64."""
    dist = canonical_pair_distances(x, c, rows, cols)
    order = np.lexsort((cols, dist, rows))
    first = np.ones(order.size, dtype=bool)
    first[1:] = rows[order[1:]] != rows[order[:-1]]
    best = np.empty(n_rows, dtype=np.int64)
    best[rows[order[first]]] = cols[order[first]]
    return best


def fp32_dist_error(b, c_max: float, d: int):
    """Bound on the rounding error of a float32 squared distance ``b`` computed in the (centred) direct form
    ``|(x - mu) - (c - mu)|^2``, ``c_max`` bounding ``|c - mu|``: the twin of ``fp32_dist_error`` in _kernels.c."""
    r = b.clamp(min=0).sqrt() if torch.is_tensor(b) else max(b, 0.0) ** 0.5
    return 2.0 * U32 * (4.0 * r * (r + 2.0 * c_max) + (d + 6) * b)


def gemm_error(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per row of ``x: (n, d)``, a bound on the rounding error of any float32 squared distance to the centroids
    ``c: (k, d)`` computed in the GEMM form ``|x|^2 - 2 x.c + |c|^2`` (centred or not) or the direct form, by any
    of the backends: ``(d + 8) u (|x| + max |c|)^2``, doubled for safety (the dot product's worst-case bound, u
    the float32 unit roundoff). Returns (n,) float64."""
    d = x.shape[1]
    c_max = float(c.double().norm(dim=1).max()) if c.shape[0] else 0.0
    # Row norms in float32 (a float64 copy of x cost more than the settling), widened by their own rounding.
    x_norm = x.float().norm(dim=1).double() * (1.0 + (d + 2) * U32)
    return 2.0 * (d + 8) * U32 * (x_norm + c_max) ** 2


def settle_exact(x: torch.Tensor, c: torch.Tensor, idx: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor
                 ) -> torch.Tensor:
    """The canonical nearest centroid for rows assigned by an exact float32 path from its top-2 distances.

    x: (n, d), c: (k, d), idx: (n,) its nearest, d1 <= d2: (n,) its best and second-best squared distances.
    A row whose second best exceeds the best by more than twice the rounding bound (:func:`gemm_error`) keeps
    ``idx``: no other centroid can be nearer in any arithmetic. The others (exact ties among them) are rescored:
    every centroid within the bound of the best, canonically. Returns idx (modified in place)."""
    err = gemm_error(x, c)
    near = torch.nonzero((d2.double() - d1.double()) <= 2.0 * err.to(d1.device))[:, 0]
    if near.numel() == 0:
        return idx
    xr = x[near].float().cpu().contiguous()
    cf = c.float().cpu().contiguous()
    # Every centroid within twice the bound of the row's smallest float32 distance. The distances come from one
    # more float32 GEMM in pieces (GEMM form, within the same bound), which costs the near rows' share of a pass.
    rows_l, cols_l = [], []
    step = max(1, 2 ** 22 // max(1, cf.shape[0]))
    e = err[near.cpu()].cpu()
    c_sq = (cf * cf).sum(1)
    for s in range(0, xr.shape[0], step):
        xs = xr[s:s + step]
        dd = torch.addmm(c_sq[None, :], xs, cf.T, alpha=-2.0).add_((xs * xs).sum(1, keepdim=True))
        r, col = torch.nonzero(dd.double() <= dd.min(1, keepdim=True).values.double() + 4.0 * e[s:s + step, None],
                               as_tuple=True)
        rows_l.append(r + s)
        cols_l.append(col)
    rows = torch.cat(rows_l).numpy()
    cols = torch.cat(cols_l).numpy()
    best = canonical_pick(xr.numpy(), cf.numpy(), rows, cols, near.numel())
    idx[near] = torch.from_numpy(best).to(idx.device)
    return idx


def accumulate_f64(x: torch.Tensor, idx: torch.Tensor, sums: torch.Tensor) -> None:
    """``sums[idx[i]] += x_i`` in float64, each element's additions in row order whatever the thread count (the
    C kernel splits columns across threads; torch's index_add_ is serial over rows). Float64 sums of float32 rows
    are exact unless a cluster's coordinate mixes values more than 2^29 apart in magnitude, so the grouping of
    rows into chunks and ranks does not change the centroids either (rounding would have to survive the
    conversion of the mean to float32)."""
    mod = _module()
    if mod is not None and x.device.type == "cpu" and sums.device.type == "cpu" and sums.is_contiguous() \
            and x.shape[0]:
        xc = x.float().contiguous()
        ic = idx.long().contiguous()
        mod.accumulate(xc.data_ptr(), xc.shape[0], xc.shape[1], xc.shape[1], ic.data_ptr(), sums.data_ptr(),
                       torch.get_num_threads())
        return
    sums.index_add_(0, idx, x.double())
