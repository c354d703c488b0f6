"""What every stage of k-means shares: the settings' allowed values, the result type, seeding, the
counter-based row hash, device and row-range helpers, and the argument checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import distributed as dist
from ..errors import CurationInputError
from ..sources import shard_bounds

INITS = ("auto", "k-means++", "k-means||", "random")
METRICS = ("l2", "cosine")
EMPTY_CLUSTER_POLICIES = ("keep", "farthest", "error")


# Hamerly bounds by default only in low dimension. Measured (shared 2-core CPU, so provisional): the rings toy
# (d=2) runs ~5x faster with them; at d=384 (N=20k, K=200) they skipped 31% of rows yet the iteration was ~20%
# slower than the dense pass (top-2 epilogue, gathers, float64 bookkeeping), since one lower bound decays by the
# largest centroid shift, which is large in high dimension.
BOUNDS_MAX_DIM = 64


@dataclass
class KMeansResult:
    """Outcome of one k-means run.

    centroids: (k, d) float32. assignments: (n,) int64 cluster of each row. distances: (n,) float32 squared
    L2 distance of each row to its centroid. objective: sum of ``distances`` (float64). history: objective after
    each Lloyd iteration. In a multi-process run, ``assignments`` and ``distances`` cover this rank's rows,
    ``row_range``.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    objective: float
    n_iters: int = 0
    history: list[float] = field(default_factory=list)
    iteration_seconds: list[float] = field(default_factory=list)  # wall time from the loop's start to each iteration's end
    n_empty_clusters: int = 0
    row_range: tuple[int, int] | None = None

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=self.n_clusters)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed, or the Generator itself: library code never touches global state."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (numpy's uint64 arithmetic wraps mod 2^64): a bijection with good
    avalanche, the mixing step of every counter-based draw (here and in :mod:`sslcurate.sampling`)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_hash(rows: np.ndarray, salt: int) -> np.ndarray:
    """(n,) float64 in [0, 1): splitmix64 of (row + salt), a counter-based draw, so any rank can produce the
    number of any row without the others' (a shared generator would need all N draws on every rank)."""
    z = splitmix64(rows.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) % 2 ** 64))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _draw_salt(rng: np.random.Generator) -> int:
    return int(rng.integers(2 ** 62))


def _default_device(device, backend: str) -> torch.device:
    # faiss and the fused kernels take CPU tensors (faiss-gpu moves its own index to the GPU).
    return torch.device(device or ("cuda" if torch.cuda.is_available() and backend not in ("faiss", "fused")
                                   else "cpu"))


def _row_offset(n: int) -> int:
    return shard_bounds(n, dist.get_rank(), dist.get_world_size())[0]


def _row_range(n: int) -> tuple[int, int] | None:
    return shard_bounds(n, dist.get_rank(), dist.get_world_size()) if dist.get_world_size() > 1 else None


def _to_device(chunk: np.ndarray, dev: torch.device, cosine: bool) -> torch.Tensor:
    xc = torch.from_numpy(chunk).to(dev, non_blocking=True)
    return _normalize(xc) if cosine else xc


def _check_kmeans_args(n: int, k: int, n_iters: int) -> None:
    """The arguments of one run; its settings are checked by :class:`~sslcurate.kmeans.settings.KMeansSettings`."""
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise CurationInputError(f"number of clusters k={k} must be between 1 and the number of points ({n})")
    if n_iters < 0:
        raise CurationInputError(f"n_iters must be >= 0, got {n_iters}")
