"""Generalised k-means in one dimension, distortion ``|x - c|^p`` (p = 2: ordinary k-means), for Fig. 1a.

Study code, not part of the curation core: in 1-D with sorted data every cluster is a contiguous run of points
and the nearest centroid is one ``searchsorted`` on the midpoints between sorted centroids, so a Lloyd iteration
over 243k points and 5000 centroids costs milliseconds and needs no distance matrix.

- init: generalised k-means++ (``D^p`` seeding, Arthur & Vassilvitskii 2007, Sec. 5): each new centre is a point
  drawn with probability proportional to ``|x - nearest centre|^p``. Only the points whose nearest centre
  changes (between the midpoints to the new centre's sorted neighbours) are updated, and block sums make each
  draw O(sqrt n).
- update: the minimiser of ``sum_i |x_i - c|^p`` over each cluster; the mean for p = 2, Newton steps from the
  previous centroid for even p > 2 (the cost is smooth and strictly convex there).
- empty clusters keep their centroid (as the curation core does).

Asymptotics (Zador; Graf & Luschgy 2000): the optimal centroid density in d dimensions is proportional to
``p_data^(d / (d + p))``; in 1-D this is ``p_data^(1/3)``, ``^(1/5)``, ``^(1/9)`` for p = 2, 4, 8.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass
class KMeans1DResult:
    """centroids: (k,) sorted float64. labels: (n,) int64 cluster of each (sorted) point. objective: sum of
    ``|x - c|^p``. n_iters: Lloyd iterations run (p = 2 stops early at a fixed point)."""

    centroids: np.ndarray
    labels: np.ndarray
    objective: float
    n_iters: int = 0


def _check(x: np.ndarray, k: int, power: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"1-D k-means needs a (n,) array, got shape {x.shape}")
    if not 1 <= k <= x.size:
        raise ValueError(f"k={k} must be between 1 and n={x.size}")
    if power < 2 or power % 2:
        raise ValueError(f"power must be an even integer >= 2, got {power}")
    if np.any(np.diff(x) < 0):
        x = np.sort(x)
    return x


def ipow(d: np.ndarray, m: int) -> np.ndarray:
    """``d ** m`` for a small non-negative integer m by repeated squaring (much faster than ``np.power``)."""
    out, base = np.ones_like(d), d
    while m:
        if m & 1:
            out = out * base
        m >>= 1
        if m:
            base = base * base
    return out


def assign_sorted(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid of every point. x: (n,) sorted; centroids: (k,) sorted. Returns (n,) int64 labels."""
    mids = 0.5 * (centroids[1:] + centroids[:-1])
    return np.searchsorted(mids, x, side="left").astype(np.int64)


def dp_seeding(x: np.ndarray, k: int, power: int, rng: np.random.Generator, block: int | None = None) -> np.ndarray:
    """Generalised k-means++ seeding on sorted ``x: (n,)``: k distinct-by-index centres, returned sorted (k,)."""
    n = x.size
    block = block or max(64, int(np.sqrt(n)))
    n_blocks = -(-n // block)
    first = int(rng.integers(n))
    centres = [x[first]]
    weight = ipow(np.abs(x - x[first]), power)
    pad = np.zeros(n_blocks * block)
    pad[:n] = weight
    block_sums = pad.reshape(n_blocks, block).sum(1)
    for _ in range(1, k):
        total = block_sums.sum()
        if total <= 0:  # fewer distinct values than k: fill with random points
            extra = x[rng.choice(n, k - len(centres), replace=False)]
            centres = sorted(centres + extra.tolist())
            break
        u = rng.random() * total
        b = min(int(np.searchsorted(np.cumsum(block_sums), u, side="right")), n_blocks - 1)
        u -= block_sums[:b].sum()
        lo_b = b * block
        cw = np.cumsum(weight[lo_b:lo_b + block])
        i = lo_b + min(int(np.searchsorted(cw, u, side="right")), cw.size - 1)
        while weight[i] <= 0:  # guard against round-off landing on an existing centre
            i = (i + 1) % n
        c = x[i]
        pos = bisect.bisect_left(centres, c)
        left = 0.5 * (centres[pos - 1] + c) if pos > 0 else -np.inf
        right = 0.5 * (centres[pos] + c) if pos < len(centres) else np.inf
        centres.insert(pos, c)
        lo = int(np.searchsorted(x, left, side="left"))
        hi = int(np.searchsorted(x, right, side="right"))
        weight[lo:hi] = np.minimum(weight[lo:hi], ipow(np.abs(x[lo:hi] - c), power))
        b0, b1 = lo // block, (max(hi, lo + 1) - 1) // block + 1
        for bb in range(b0, b1):
            block_sums[bb] = weight[bb * block:(bb + 1) * block].sum()
    return np.asarray(centres, dtype=np.float64)


def update_centroids(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, power: int,
                     newton_steps: int = 3) -> np.ndarray:
    """Minimiser of ``sum |x - c|^p`` per cluster (mean for p = 2, Newton from ``centroids`` otherwise)."""
    k = centroids.size
    counts = np.bincount(labels, minlength=k)
    nonempty = counts > 0
    if power == 2:
        sums = np.bincount(labels, weights=x, minlength=k)
        return np.where(nonempty, sums / np.maximum(counts, 1), centroids)
    c = centroids.copy()
    for _ in range(newton_steps):
        d = x - c[labels]
        d_pm2 = ipow(d, power - 2)
        grad = np.bincount(labels, weights=d_pm2 * d, minlength=k)  # -f'(c) / p
        hess = (power - 1) * np.bincount(labels, weights=d_pm2, minlength=k)  # f''(c) / p
        ok = hess > 0
        c[ok] += grad[ok] / hess[ok]
    return c


def kmeans_1d(x: np.ndarray, k: int, *, power: int = 2, n_iters: int = 100, init: str = "k-means++",
              seed: int | np.random.Generator = 0, newton_steps: int = 3) -> KMeans1DResult:
    """Lloyd iterations of generalised k-means on ``x: (n,)`` (sorted here if it is not).

    init: ``"k-means++"`` (``D^power`` seeding) or ``"random"`` (k distinct points). Returns sorted centroids.
    """
    x = _check(x, k, power)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if init == "k-means++":
        c = dp_seeding(x, k, power, rng)
    elif init == "random":
        c = np.sort(x[rng.choice(x.size, k, replace=False)])
    else:
        raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
    labels = assign_sorted(x, c)
    n_done = 0
    for n_done in range(1, n_iters + 1):
        c = np.sort(update_centroids(x, labels, c, power, newton_steps))
        new_labels = assign_sorted(x, c)
        if np.array_equal(new_labels, labels) and power == 2:
            break  # Lloyd fixed point: the means cannot move any more
        labels = new_labels
    objective = float(np.sum(ipow(np.abs(x - c[labels]), power)))
    return KMeans1DResult(centroids=c, labels=labels, objective=objective, n_iters=n_done)


def resampling_kmeans_1d(x: np.ndarray, k: int, *, steps: int, sample_size: int, strategy: str = "closest",
                         seed: int | np.random.Generator = 0, **kw) -> KMeans1DResult:
    """k-means, then ``steps`` times: keep ``sample_size`` points per cluster (closest to the centroid or
    random), rerun k-means on them, reassign every point (the paper's resampling-clustering)."""
    x = _check(x, k, kw.get("power", 2))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    res = kmeans_1d(x, k, seed=rng, **kw)
    for _ in range(steps):
        if strategy == "closest":
            key = np.abs(x - res.centroids[res.labels])
        elif strategy == "random":
            key = rng.random(x.size)
        else:
            raise ValueError(f"strategy must be 'closest' or 'random', got {strategy!r}")
        order = np.lexsort((key, res.labels))
        starts = np.searchsorted(res.labels[order], np.arange(k))
        rank = np.arange(x.size) - starts[res.labels[order]]
        picked = np.sort(x[order[rank < sample_size]])
        sub = kmeans_1d(picked, min(k, picked.size), seed=rng, **kw)
        labels = assign_sorted(x, sub.centroids)
        objective = float(np.sum(ipow(np.abs(x - sub.centroids[labels]), kw.get("power", 2))))
        res = KMeans1DResult(sub.centroids, labels, objective, res.n_iters + sub.n_iters)
    return res


def hierarchical_kmeans_1d(x: np.ndarray, ks, *, steps=0, sample_sizes=None, seed: int = 0, **kw) -> list:
    """Bottom-up levels: level 1 clusters ``x``, level l the centroids of level l - 1. Returns the list of
    per-level results (the last one's centroids are the final ones)."""
    steps = [steps] * len(ks) if np.isscalar(steps) else list(steps)
    sample_sizes = sample_sizes or [1] * len(ks)
    data, out = np.asarray(x, dtype=np.float64), []
    for i, (k, t, r) in enumerate(zip(ks, steps, sample_sizes)):
        rng = np.random.default_rng([seed, i + 1])
        res = resampling_kmeans_1d(data, k, steps=t, sample_size=r, seed=rng, **kw)
        out.append(res)
        data = res.centroids
    return out
