"""Synthetic data of the paper's simulated study (Vo et al. 2024, Sec. 3 and App.; REFERENCE.md §2 Study 1).

Every generator takes an ``np.random.Generator`` and returns float arrays plus, where useful, the ground-truth
component of each point (for plots and per-component counts only; no clustering step reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


# ---------------------------------------------------------------------------------------------- 2-D (Fig. 3)
def mixture_2d(rng: np.random.Generator, *, means=((-1.0, -1.0), (1.0, -1.0), (0.0, 1.0)),
               std: float = 0.5, sizes=(7000, 1000, 500), n_uniform: int = 500,
               box: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The Fig. 3 mixture: isotropic Gaussians ``N(mean, std^2 I)`` of ``sizes`` points, plus ``n_uniform``
    points uniform on ``[-box, box]^2``.

    Returns ``x: (n, 2) float32`` and ``component: (n,) int64`` (``len(sizes)`` marks the uniform points).
    """
    parts, comp = [], []
    for i, (mean, size) in enumerate(zip(means, sizes)):
        parts.append(rng.normal(mean, std, (int(size), 2)))
        comp.append(np.full(int(size), i))
    parts.append(rng.uniform(-box, box, (int(n_uniform), 2)))
    comp.append(np.full(int(n_uniform), len(sizes)))
    return np.concatenate(parts).astype(np.float32), np.concatenate(comp).astype(np.int64)


# --------------------------------------------------------------------------------------------- 1-D (Fig. 1a)
@dataclass(frozen=True)
class TruncatedGaussian:
    """``n`` draws of ``N(loc, scale^2)``, of which only those inside ``[low, high]`` are kept."""

    loc: float
    scale: float
    n: int
    low: float
    high: float

    @property
    def kept_fraction(self) -> float:
        return float(norm.cdf(self.high, self.loc, self.scale) - norm.cdf(self.low, self.loc, self.scale))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        x = rng.normal(self.loc, self.scale, self.n)
        return x[(x >= self.low) & (x <= self.high)]

    def pdf(self, x: np.ndarray) -> np.ndarray:
        """Density of one kept draw (the normal density renormalised on ``[low, high]``)."""
        x = np.asarray(x, dtype=np.float64)
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, norm.pdf(x, self.loc, self.scale) / self.kept_fraction, 0.0)


# REFERENCE.md §2: loc 2/5/9, scale 1/0.8/2, 60k/30k/40k draws kept within [0, 12]; loc 20, scale 1, 90k within
# [17, 23]; loc -10, scale 2, 30k within [-14, -7]. Drawing 250k and discarding what falls outside keeps
# 243,033 points on average: the notebook's 243,072 is one such draw.
PAPER_1D = (
    TruncatedGaussian(2.0, 1.0, 60_000, 0.0, 12.0),
    TruncatedGaussian(5.0, 0.8, 30_000, 0.0, 12.0),
    TruncatedGaussian(9.0, 2.0, 40_000, 0.0, 12.0),
    TruncatedGaussian(20.0, 1.0, 90_000, 17.0, 23.0),
    TruncatedGaussian(-10.0, 2.0, 30_000, -14.0, -7.0),
)


def scaled(components, scale: float):
    """The same mixture with every component's number of draws multiplied by ``scale`` (tests use < 1)."""
    return tuple(TruncatedGaussian(c.loc, c.scale, max(1, int(round(c.n * scale))), c.low, c.high)
                 for c in components)


def mixture_1d(rng: np.random.Generator, components=PAPER_1D) -> np.ndarray:
    """Sorted ``(n,) float64`` sample of the truncated-Gaussian mixture (n is random, ~243k for the paper's)."""
    return np.sort(np.concatenate([c.sample(rng) for c in components]))


def mixture_1d_pdf(x: np.ndarray, components=PAPER_1D) -> np.ndarray:
    """Exact density of one point of :func:`mixture_1d` at ``x`` (integrates to 1)."""
    w = np.array([c.n * c.kept_fraction for c in components], dtype=np.float64)
    w /= w.sum()
    return sum(wi * c.pdf(x) for wi, c in zip(w, components))


def mixture_1d_edges(components=PAPER_1D) -> np.ndarray:
    """Truncation points, where the density jumps (excluded from exponent fits)."""
    return np.unique(np.array([[c.low, c.high] for c in components]).ravel())


# ----------------------------------------------------------------------------------------------- toy rings
RING_SIZES = (20000, 200, 1000, 500, 8000)  # the official README's toy example
RING_CENTERS = ((0.0, 0.0), (5.0, 0.0), (0.0, 5.0), (5.0, 5.0), (2.5, 2.5))


def rings(rng: np.random.Generator, sizes=RING_SIZES, centers=RING_CENTERS, radius: float = 1.0,
          noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Noisy rings with very different point counts: ``x: (n, 2) float32`` and ``ring: (n,) int64``."""
    pts, labels = [], []
    for i, (size, (cx, cy)) in enumerate(zip(sizes, centers)):
        theta = rng.uniform(0, 2 * np.pi, int(size))
        rad = radius + noise * rng.standard_normal(int(size))
        pts.append(np.c_[cx + rad * np.cos(theta), cy + rad * np.sin(theta)])
        labels.append(np.full(int(size), i))
    return np.concatenate(pts).astype(np.float32), np.concatenate(labels).astype(np.int64)


__all__ = ["PAPER_1D", "RING_SIZES", "TruncatedGaussian", "mixture_1d", "mixture_1d_edges", "mixture_1d_pdf",
           "mixture_2d", "rings", "scaled"]
