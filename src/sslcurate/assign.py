"""Nearest-centroid assignment backends: a tiled torch GEMM + argmin, and faiss (CPU or GPU).

Both take a chunk ``x: (n, d)`` float32 tensor and return ``(assignments: (n,) int64, sq_distances: (n,)
float32)``. The torch path walks ``block_rows x block_cols`` tiles so the distance block stays in cache and
memory stays bounded for any k.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .errors import CurationInputError

BACKENDS = ("auto", "torch", "faiss")


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class TorchAssigner:
    """Exact nearest centroid by blocks of ``|c|^2 - 2 x.c`` followed by a running argmin."""

    def __init__(self, block_rows: int = 4096, block_cols: int = 1024):
        self.block_rows = block_rows
        self.block_cols = block_cols

    def prepare(self, centroids: torch.Tensor):
        return centroids.contiguous(), (centroids * centroids).sum(1)

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        c, c_sq = prepared
        return assign_chunk(x, c, c_sq, self.block_rows, self.block_cols)


def assign_chunk(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor, block_rows: int = 4096,
                 block_cols: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (n, d), c: (k, d), c_sq: (k,) squared norms of c. Returns (n,) int64 argmin and (n,) float32 min
    squared distance."""
    n, k = x.shape[0], c.shape[0]
    best_idx = torch.empty(n, dtype=torch.int64, device=x.device)
    best_val = torch.empty(n, dtype=x.dtype, device=x.device)
    for r0 in range(0, n, block_rows):
        xb = x[r0:r0 + block_rows]
        val = idx = None
        for c0 in range(0, k, block_cols):
            scores = torch.addmm(c_sq[None, c0:c0 + block_cols], xb, c[c0:c0 + block_cols].T, alpha=-2.0)
            v, i = scores.min(1)
            if val is None:
                val, idx = v, i
            else:
                better = v < val
                val = torch.where(better, v, val)
                idx = torch.where(better, i + c0, idx)
        best_idx[r0:r0 + block_rows] = idx
        best_val[r0:r0 + block_rows] = val
    best_val += (x * x).sum(1)
    return best_idx, best_val.clamp_(min=0)


class FaissAssigner:
    """faiss ``IndexFlatL2`` search with k=1; on a GPU device the index lives on that GPU."""

    def __init__(self, device: torch.device):
        import faiss

        self.faiss = faiss
        self.gpu = device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
        self.resources = faiss.StandardGpuResources() if self.gpu else None

    def prepare(self, centroids: torch.Tensor):
        c = np.ascontiguousarray(centroids.detach().cpu().numpy(), dtype=np.float32)
        index = self.faiss.IndexFlatL2(c.shape[1])
        if self.gpu:
            index = self.faiss.index_cpu_to_gpu(self.resources, torch.cuda.current_device(), index)
        index.add(c)
        return index

    def assign(self, x: torch.Tensor, index) -> tuple[torch.Tensor, torch.Tensor]:
        xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        dist, idx = index.search(xn, 1)
        return (torch.from_numpy(idx[:, 0].astype(np.int64)).to(x.device),
                torch.from_numpy(np.maximum(dist[:, 0], 0)).to(x.device))


def get_assigner(backend: str, device: torch.device):
    """``"torch"``, ``"faiss"``, or ``"auto"``: torch on a GPU tensor (no host round trip) and on the CPU."""
    if backend not in BACKENDS:
        raise CurationInputError(f"assignment backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss":
        if not faiss_available():
            raise CurationInputError("backend='faiss' asked for, but faiss is not installed (pip install faiss-cpu)")
        return FaissAssigner(device)
    return TorchAssigner()
