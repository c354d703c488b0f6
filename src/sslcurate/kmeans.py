"""k-means: k-means++ / random init, chunked assignment, Lloyd updates, resampling-clustering.

The math is a handful of pure functions (distances -> init -> assign -> accumulate -> update), and :func:`kmeans`
is the short loop over them. Data arrive through an :class:`~sslcurate.sources.EmbeddingSource`, one chunk at a
time, so memory is bounded by ``chunk_rows x (d + n_clusters_block)`` whatever N and K are. Per-cluster sums and
counts are partial reductions combined with :func:`~sslcurate.distributed.all_reduce_sum`, so several processes
(each reading its own rows) run exactly this code.

Distances are squared L2, computed as ``|x|^2 - 2 x.c + |c|^2`` with a GEMM; ``metric="cosine"`` normalises the
inputs and centroids first (spherical k-means), which makes squared L2 equal ``2 - 2 cos``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import distributed as dist
from .assign import get_assigner
from .errors import CurationInputError
from .progress import progress_bar
from .sources import DEFAULT_CHUNK_ROWS, EmbeddingSource, as_source, shard_bounds

log = logging.getLogger(__name__)

INITS = ("k-means++", "random")
METRICS = ("l2", "cosine")
EMPTY_CLUSTER_POLICIES = ("keep", "farthest", "error")


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


def sq_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances ``(n, m)`` between rows of ``x: (n, d)`` and ``c: (m, d)``, clamped at 0."""
    d = torch.addmm((c * c).sum(1)[None, :], x, c.T, alpha=-2.0)
    d += (x * x).sum(1, keepdim=True)
    return d.clamp_(min=0)


def kmeans_plusplus(x: torch.Tensor, n_clusters: int, rng: np.random.Generator,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007): each new centre is the best of ``n_local_trials``
    candidates drawn with probability proportional to squared distance, judged by the resulting potential.

    x: (n, d) float32. Returns (n_clusters, d) float32 centres (copies of rows of x).
    """
    n = x.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))  # scikit-learn's and the official code's choice
    x_sq = (x * x).sum(1)
    chosen = np.empty(n_clusters, dtype=np.int64)
    chosen[0] = rng.integers(n)
    closest = sq_distances(x, x[chosen[:1]])[:, 0].double()
    for i in range(1, n_clusters):
        cum = torch.cumsum(closest, 0).numpy()
        total = cum[-1]
        if total <= 0:  # fewer distinct points than clusters: fill with unused rows
            unused = np.setdiff1d(np.arange(n), chosen[:i])
            chosen[i:] = unused[: n_clusters - i] if unused.size >= n_clusters - i else rng.choice(n, n_clusters - i)
            break
        cand = np.searchsorted(cum, rng.random(n_local_trials) * total, side="right").clip(max=n - 1)
        xc = x[cand]
        d_cand = torch.addmm((xc * xc).sum(1)[None, :] + x_sq[:, None], x, xc.T, alpha=-2.0).clamp_(min=0)
        new_closest = torch.minimum(closest[:, None], d_cand.double())
        best = int(torch.argmin(new_closest.sum(0)))
        chosen[i] = cand[best]
        closest = new_closest[:, best].contiguous()
    return x[torch.from_numpy(chosen)].clone()


def random_init(x: torch.Tensor, n_clusters: int, rng: np.random.Generator) -> torch.Tensor:
    """``n_clusters`` distinct rows of ``x: (n, d)`` drawn uniformly at random."""
    idx = rng.choice(x.shape[0], size=n_clusters, replace=False)
    return x[torch.from_numpy(np.sort(idx))].clone()


def accumulate(x: torch.Tensor, assignments: torch.Tensor, n_clusters: int, sums: torch.Tensor,
               counts: torch.Tensor) -> None:
    """Add the rows of ``x: (n, d)`` into ``sums: (k, d)`` and their number into ``counts: (k,)`` per cluster."""
    sums.index_add_(0, assignments, x.to(sums.dtype))
    counts.index_add_(0, assignments, torch.ones_like(assignments, dtype=counts.dtype))


def update_centroids(sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, int]:
    """New centroids = cluster means; an empty cluster keeps its previous centroid. Returns (centroids, n_empty)."""
    empty = counts == 0
    new = (sums / counts.clamp(min=1)[:, None].to(sums.dtype)).to(previous.dtype)
    new[empty] = previous[empty]
    return new, int(empty.sum())


def _initial_centroids(source: EmbeddingSource, n_clusters: int, init: str, rng: np.random.Generator,
                       init_sample_size: int | None, n_local_trials: int | None, cosine: bool) -> torch.Tensor:
    n = len(source)
    sample_size = n if init_sample_size is None else min(n, max(int(init_sample_size), n_clusters))
    rows = np.arange(n) if sample_size == n else np.sort(rng.choice(n, size=sample_size, replace=False))
    # Every rank draws the same rows with the same generator, so all ranks start from the same centroids.
    x = torch.from_numpy(source.take(rows) if sample_size < n else source.read(0, n))
    if cosine:
        x = _normalize(x)
    if init == "k-means++":
        return kmeans_plusplus(x, n_clusters, rng, n_local_trials)
    return random_init(x, n_clusters, rng)


def kmeans(x, n_clusters: int, *, n_iters: int = 50, init: str = "k-means++", tol: float = 0.0,
           metric: str = "l2", seed: int | np.random.Generator | None = 0,
           accumulate_dtype: str = "float64", empty_cluster: str = "keep", backend: str = "auto",
           chunk_rows: int = DEFAULT_CHUNK_ROWS, init_sample_size: int | None = None,
           n_local_trials: int | None = None, init_centroids: np.ndarray | None = None,
           device: str | None = None, progress: bool = False, desc: str = "k-means") -> KMeansResult:
    """Lloyd's k-means on the rows of ``x``.

    x: (n, d) array, tensor, ``.npy`` path, shard folder or :class:`EmbeddingSource` (read in chunks).
    n_clusters: k, 1 <= k <= n. n_iters: Lloyd iterations (each = one assignment pass + one update).
    init: ``"k-means++"`` (greedy, ``n_local_trials`` candidates per centre, default 2 + ln k) or ``"random"``.
    tol: stop early once the relative objective decrease of an iteration falls below ``tol`` (0: never).
    metric: ``"l2"`` (squared Euclidean on raw features, as the paper) or ``"cosine"`` (normalised inputs).
    seed: int or ``np.random.Generator``; the only source of randomness.
    accumulate_dtype: dtype of the per-cluster sums (``"float64"`` keeps large clusters exact).
    empty_cluster: ``"keep"`` (previous centroid stays, as the official code), ``"farthest"`` (re-seed on the
    points farthest from their centroids) or ``"error"``.
    backend: ``"torch"``, ``"faiss"`` or ``"auto"`` (see :func:`sslcurate.assign.get_assigner`).
    init_sample_size: run the initialisation on this many random rows (None: all) to bound its cost.
    init_centroids: (k, d) starting centroids; skips the initialisation.
    """
    source = as_source(x)
    n, d = source.shape
    _check_kmeans_args(n, n_clusters, n_iters, init, metric, empty_cluster, accumulate_dtype)
    rng = make_rng(seed)
    cosine = metric == "cosine"
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and backend != "faiss" else "cpu"))
    acc_dtype = getattr(torch, accumulate_dtype)

    if init_centroids is not None:
        centroids = torch.as_tensor(np.asarray(init_centroids, dtype=np.float32))
        if centroids.shape != (n_clusters, d):
            raise CurationInputError(f"init_centroids has shape {tuple(centroids.shape)}, expected {(n_clusters, d)}")
        centroids = _normalize(centroids) if cosine else centroids.clone()
    else:
        centroids = _initial_centroids(source, n_clusters, init, rng, init_sample_size, n_local_trials, cosine)
    centroids = centroids.to(dev)

    lo, hi = shard_bounds(n, dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(backend, dev)
    history: list[float] = []
    n_empty = 0
    bar = progress_bar(total=n_iters, desc=desc, enabled=progress)
    for it in range(n_iters):
        sums = torch.zeros((n_clusters, d), dtype=acc_dtype, device=dev)
        counts = torch.zeros(n_clusters, dtype=torch.int64, device=dev)
        objective = torch.zeros(1, dtype=torch.float64, device=dev)
        prepared = assigner.prepare(centroids)
        far = _FarthestTracker(n_clusters) if empty_cluster == "farthest" else None
        for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
            xc = _to_device(chunk, dev, cosine)
            idx, dmin = assigner.assign(xc, prepared)
            accumulate(xc, idx, n_clusters, sums, counts)
            objective += dmin.double().sum()
            if far is not None:
                far.update(start, dmin)
        dist.all_reduce_sum(sums)
        dist.all_reduce_sum(counts)
        dist.all_reduce_sum(objective)
        centroids, n_empty = update_centroids(sums, counts, centroids)
        if n_empty and empty_cluster == "error":
            raise CurationInputError(f"{desc}: {n_empty} empty cluster(s) at iteration {it + 1} "
                                     "(empty_cluster='error'); lower k or use empty_cluster='keep'/'farthest'")
        if n_empty and far is not None:
            centroids = far.reseed(centroids, counts == 0, source, cosine)
        if cosine:
            centroids = _normalize(centroids)
        history.append(float(objective))
        bar.update(1)
        bar.set_postfix(objective=f"{history[-1]:.4g}", empty=n_empty)
        if tol > 0 and len(history) > 1 and history[-2] - history[-1] <= tol * abs(history[-2]):
            break
    bar.close()

    assignments, distances = assign_source(source, centroids, backend=backend, chunk_rows=chunk_rows,
                                           metric=metric, device=dev)
    objective = float(dist.all_reduce_sum(torch.tensor([distances.astype(np.float64).sum()]))[0])
    if n_empty:
        log.info("%s: %d empty cluster(s) after %d iterations (policy %r)", desc, n_empty, len(history),
                 empty_cluster)
    return KMeansResult(centroids=centroids.cpu().numpy(), assignments=assignments, distances=distances,
                        objective=objective, n_iters=len(history), history=history, n_empty_clusters=n_empty,
                        row_range=(lo, hi) if dist.get_world_size() > 1 else None)


def assign_source(x, centroids, *, backend: str = "auto", chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  metric: str = "l2", device=None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and squared distance for every row of this rank's share of ``x``, chunk by chunk.

    centroids: (k, d). Returns ``assignments: (n,) int64`` and ``distances: (n,) float32``.
    """
    source = as_source(x)
    dev = torch.device(device or "cpu")
    cosine = metric == "cosine"
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32) if not torch.is_tensor(centroids) else centroids)
    c = (_normalize(c) if cosine else c).to(dev)
    lo, hi = shard_bounds(len(source), dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(backend, dev)
    prepared = assigner.prepare(c)
    assignments = np.empty(hi - lo, dtype=np.int64)
    distances = np.empty(hi - lo, dtype=np.float32)
    for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
        idx, dmin = assigner.assign(_to_device(chunk, dev, cosine), prepared)
        assignments[start - lo:start - lo + len(chunk)] = idx.cpu().numpy()
        distances[start - lo:start - lo + len(chunk)] = dmin.cpu().numpy()
    return assignments, distances


def sample_per_cluster(assignments: np.ndarray, distances: np.ndarray, n_clusters: int, r: int, strategy: str,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``r`` points of every cluster: the ``r`` closest to the centroid or ``r`` at random.

    Vectorised over clusters: rows are ordered by (cluster, key) and the first ``r`` of each cluster kept.
    Returns sorted int64 indices.
    """
    if strategy == "closest":
        key = distances
    elif strategy == "random":
        key = rng.random(assignments.shape[0])
    else:
        raise CurationInputError(f"resampling strategy must be 'closest' or 'random', got {strategy!r}")
    order = np.lexsort((key, assignments))
    sorted_assign = assignments[order]
    starts = np.searchsorted(sorted_assign, np.arange(n_clusters))
    rank_in_cluster = np.arange(order.size) - starts[sorted_assign]
    return np.sort(order[rank_in_cluster < r])


def resampling_kmeans(x, n_clusters: int, *, steps: int = 10, sample_size: int = 1,
                      sample_strategy: str = "closest", seed: int | np.random.Generator | None = 0,
                      progress: bool = False, desc: str = "k-means", **kmeans_kwargs) -> KMeansResult:
    """k-means followed by ``steps`` rounds of resampling-clustering (Vo et al. 2024, Sec. 4.2).

    Each round takes ``sample_size`` (r) points per cluster (closest to the centroid or random), runs a fresh
    k-means with the same k on only those points, and reassigns every point to the new centroids. Keeping
    about r points per cluster makes the centroids of dense regions stop outnumbering sparse ones.
    """
    source = as_source(x)
    rng = make_rng(seed)
    n = len(source)
    if steps < 0:
        raise CurationInputError(f"resampling steps must be >= 0, got {steps}")
    if steps and not 1 <= sample_size * n_clusters <= n:
        raise CurationInputError(
            f"{desc}: resampling r={sample_size} points per cluster is larger than the clusters hold "
            f"({n} points in {n_clusters} clusters, {n / n_clusters:.2f} per cluster on average); "
            "choose r <= n / k (the paper uses about half the mean cluster size)")
    result = kmeans(source, n_clusters, seed=rng, progress=progress, desc=desc, **kmeans_kwargs)
    if dist.get_world_size() > 1 and steps:
        raise CurationInputError("resampling-clustering runs in one process; run it on the gathered level")
    for step in range(steps):
        picked = sample_per_cluster(result.assignments, result.distances, n_clusters, sample_size,
                                    sample_strategy, rng)
        if picked.size < n_clusters:
            raise CurationInputError(
                f"{desc}: resampling step {step + 1} kept {picked.size} points, fewer than k={n_clusters} "
                "(too many empty clusters); raise r or lower k")
        sub = kmeans(source.take(picked), n_clusters, seed=rng, desc=f"{desc} resample {step + 1}/{steps}",
                     **kmeans_kwargs)
        metric = kmeans_kwargs.get("metric", "l2")
        assignments, distances = assign_source(source, sub.centroids, backend=kmeans_kwargs.get("backend", "auto"),
                                               metric=metric, device=kmeans_kwargs.get("device"))
        result = KMeansResult(centroids=sub.centroids, assignments=assignments, distances=distances,
                              objective=float(distances.astype(np.float64).sum()),
                              n_iters=result.n_iters + sub.n_iters, history=result.history + [sub.objective],
                              n_empty_clusters=int((np.bincount(assignments, minlength=n_clusters) == 0).sum()))
    return result


class _FarthestTracker:
    """Remembers the points farthest from their centroids, to re-seed empty clusters on them."""

    def __init__(self, n_clusters: int):
        self.k = n_clusters
        self.rows = torch.zeros(0, dtype=torch.int64)
        self.dists = torch.zeros(0)

    def update(self, start: int, dmin: torch.Tensor) -> None:
        top = torch.topk(dmin.cpu(), min(self.k, dmin.shape[0]))
        self.rows = torch.cat([self.rows, top.indices + start])
        self.dists = torch.cat([self.dists, top.values])
        keep = torch.topk(self.dists, min(self.k, self.dists.shape[0])).indices
        self.rows, self.dists = self.rows[keep], self.dists[keep]

    def reseed(self, centroids: torch.Tensor, empty: torch.Tensor, source: EmbeddingSource,
               cosine: bool) -> torch.Tensor:
        rows = dist.all_gather_rows(self.rows[:, None])[:, 0]
        dists = dist.all_gather_rows(self.dists[:, None])[:, 0]
        order = torch.argsort(dists, descending=True, stable=True)
        empty_ids = torch.nonzero(empty.cpu())[:, 0]
        picked = rows[order[: empty_ids.numel()]].numpy()
        new = torch.from_numpy(source.take(picked)).to(centroids.device)
        centroids = centroids.clone()
        centroids[empty_ids[: new.shape[0]].to(centroids.device)] = _normalize(new) if cosine else new
        return centroids


def _to_device(chunk: np.ndarray, dev: torch.device, cosine: bool) -> torch.Tensor:
    xc = torch.from_numpy(chunk).to(dev, non_blocking=True)
    return _normalize(xc) if cosine else xc


def _check_kmeans_args(n: int, k: int, n_iters: int, init: str, metric: str, empty_cluster: str,
                       accumulate_dtype: str) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise CurationInputError(f"number of clusters k={k} must be between 1 and the number of points ({n})")
    if n_iters < 0:
        raise CurationInputError(f"n_iters must be >= 0, got {n_iters}")
    if init not in INITS:
        raise CurationInputError(f"init must be one of {INITS}, got {init!r}")
    if metric not in METRICS:
        raise CurationInputError(f"metric must be one of {METRICS}, got {metric!r}")
    if empty_cluster not in EMPTY_CLUSTER_POLICIES:
        raise CurationInputError(f"empty_cluster must be one of {EMPTY_CLUSTER_POLICIES}, got {empty_cluster!r}")
    if accumulate_dtype not in ("float32", "float64"):
        raise CurationInputError(f"accumulate_dtype must be 'float32' or 'float64', got {accumulate_dtype!r}")
