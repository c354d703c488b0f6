"""Exact fp32 nearest centroid: a tiled torch GEMM + argmin, and faiss (CPU or GPU). The fused AVX-512 / AVX2
kernel, the third exact path, is :class:`sslcurate.fused.FusedAssigner`.

The torch path walks ``block_rows x block_cols`` tiles: one GEMM per tile writes ``|c|^2 - 2 x.c`` into a
reused buffer small enough to stay in the L2 cache, and the argmin reads it back from there. The GEMM runs near
the machine's peak; what costs is this epilogue over the ``n x k`` score matrix, so keeping the tile in cache
(rather than materialising ``block_rows x k`` in RAM) is what matters. Memory stays bounded for any k.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from ..canonical import settle_exact

# Tile shape of the torch path. Measured on the 2-core CPU (benchmarks/bench_kmeans.py, N=100k, D=384,
# K=1000): 256 x 1024 tiles (1 MiB of float32 scores, in L2) beat 4096 x 1024 (16 MiB) by ~20%; the GEMM
# of a 256-row panel is still large enough to run at full speed. On a GPU bigger tiles are better.
CPU_BLOCK_ROWS = 256
CPU_BLOCK_COLS = 1024
GPU_BLOCK_ROWS = 16384
GPU_BLOCK_COLS = 16384


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def assign_chunk(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor, block_rows: int = CPU_BLOCK_ROWS,
                 block_cols: int = CPU_BLOCK_COLS) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (n, d), c: (k, d), c_sq: (k,) squared norms of c. Returns (n,) int64 argmin and (n,) float32 min
    squared distance (computed as ``|x|^2 - 2 x.c + |c|^2``, clamped at 0)."""
    n, k = x.shape[0], c.shape[0]
    best_idx = torch.empty(n, dtype=torch.int64, device=x.device)
    best_val = torch.empty(n, dtype=x.dtype, device=x.device)
    bc = min(block_cols, k)
    buf = torch.empty((min(block_rows, n), bc), dtype=x.dtype, device=x.device)  # the tile, reused
    c_t = c.T
    for r0 in range(0, n, block_rows):
        xb = x[r0:r0 + block_rows]
        val = idx = None
        for c0 in range(0, k, bc):
            scores = buf[:xb.shape[0], :min(bc, k - c0)]
            torch.addmm(c_sq[None, c0:c0 + bc], xb, c_t[:, c0:c0 + bc], alpha=-2.0, out=scores)
            if val is None:
                val, idx = best_val[r0:r0 + block_rows], best_idx[r0:r0 + block_rows]
                torch.min(scores, 1, out=(val, idx))
            else:
                v, i = scores.min(1)
                better = v < val
                val.copy_(torch.where(better, v, val))
                idx.copy_(torch.where(better, i + c0, idx))
    best_val += (x * x).sum(1)
    return best_idx, best_val.clamp_(min=0)


def assign_chunk_top2(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor, block_rows: int = CPU_BLOCK_ROWS,
                      block_cols: int = CPU_BLOCK_COLS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`assign_chunk`, plus the squared distance to the second-closest centroid.

    Returns ``(idx: (n,) int64, d1: (n,) float32, d2: (n,) float32)``, ``d1 <= d2``; ``d2`` is ``inf`` when
    ``k == 1``. Neither is clamped (callers bounding true distances need the raw values).
    """
    n, k = x.shape[0], c.shape[0]
    best_idx = torch.empty(n, dtype=torch.int64, device=x.device)
    best1 = torch.empty(n, dtype=x.dtype, device=x.device)
    best2 = torch.empty(n, dtype=x.dtype, device=x.device)
    bc = min(block_cols, k)
    buf = torch.empty((min(block_rows, n), bc), dtype=x.dtype, device=x.device)
    c_t = c.T
    inf = float("inf")
    for r0 in range(0, n, block_rows):
        xb = x[r0:r0 + block_rows]
        v1, i1, v2 = best1[r0:r0 + block_rows], best_idx[r0:r0 + block_rows], best2[r0:r0 + block_rows]
        for c0 in range(0, k, bc):
            scores = buf[:xb.shape[0], :min(bc, k - c0)]
            torch.addmm(c_sq[None, c0:c0 + bc], xb, c_t[:, c0:c0 + bc], alpha=-2.0, out=scores)
            bv1, bi1 = scores.min(1)
            if scores.shape[1] > 1:
                scores.scatter_(1, bi1[:, None], inf)  # the tile is scratch: knock out the best, take the next
                bv2 = scores.amin(1)
            else:
                bv2 = torch.full_like(bv1, inf)
            if c0 == 0:
                v1.copy_(bv1), i1.copy_(bi1), v2.copy_(bv2)
            else:
                better = bv1 < v1
                v2.copy_(torch.minimum(torch.maximum(v1, bv1), torch.minimum(v2, bv2)))
                i1.copy_(torch.where(better, bi1 + c0, i1))
                v1.copy_(torch.minimum(v1, bv1))
    x_sq = (x * x).sum(1)
    return best_idx, best1 + x_sq, best2 + x_sq


class TorchAssigner:
    """Exact nearest centroid by blocks of ``|c|^2 - 2 x.c`` followed by a running argmin."""

    def __init__(self, block_rows: int | None = None, block_cols: int | None = None):
        self.block_rows = block_rows
        self.block_cols = block_cols

    def _blocks(self, x: torch.Tensor) -> tuple[int, int]:
        gpu = x.device.type != "cpu"
        return (self.block_rows or (GPU_BLOCK_ROWS if gpu else CPU_BLOCK_ROWS),
                self.block_cols or (GPU_BLOCK_COLS if gpu else CPU_BLOCK_COLS))

    def prepare(self, centroids: torch.Tensor):
        """Returns ``(c: (k, d), c_sq: (k,))`` with ``c`` contiguous."""
        c = centroids.contiguous()
        return c, (c * c).sum(1)

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        idx, d1, _ = self.assign_top2(x, prepared)
        return idx, d1.clamp_(min=0)

    def assign_top2(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest (near-ties settled canonically, :func:`sslcurate.canonical.settle_exact`), its squared
        distance and the second-nearest's."""
        c, c_sq = prepared
        idx, d1, d2 = assign_chunk_top2(x, c, c_sq, *self._blocks(x))
        return settle_exact(x, c, idx, d1, d2), d1, d2


class FaissAssigner:
    """faiss ``IndexFlatL2`` search; on a GPU device the index lives on that GPU."""

    def __init__(self, device: torch.device):
        import faiss

        self.faiss = faiss
        self.gpu = device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
        self.resources = faiss.StandardGpuResources() if self.gpu else None

    def _search(self, x: torch.Tensor, index, k: int):
        xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return index.search(xn, k)

    def prepare(self, centroids: torch.Tensor):
        c = np.ascontiguousarray(centroids.detach().cpu().numpy(), dtype=np.float32)
        index = self.faiss.IndexFlatL2(c.shape[1])
        if self.gpu:
            index = self.faiss.index_cpu_to_gpu(self.resources, torch.cuda.current_device(), index)
        index.add(c)
        return index, torch.from_numpy(c)

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        idx, d1, _ = self.assign_top2(x, prepared)
        return idx, d1.clamp_(min=0)

    def assign_top2(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest (near-ties settled canonically), its squared distance and the second-nearest's."""
        index, c = prepared
        dist, idx = self._search(x, index, 2)
        d2 = dist[:, 1] if idx.shape[1] > 1 else np.full(len(dist), np.inf, dtype=np.float32)
        d2 = np.where(idx[:, 1] < 0, np.inf, d2).astype(np.float32)  # k == 1: faiss pads with -1
        i1, d1 = torch.from_numpy(idx[:, 0].astype(np.int64)), torch.from_numpy(dist[:, 0])
        i1 = settle_exact(x.detach().cpu(), c, i1, d1, torch.from_numpy(d2))
        return i1.to(x.device), d1.to(x.device), torch.from_numpy(d2).to(x.device)
