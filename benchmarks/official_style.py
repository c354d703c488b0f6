"""A reference hierarchical k-means written the way the official ssl-data-curation code is structured (see
shared/REFERENCE.md; written from that description, not copied): float64 everywhere, greedy k-means++ on the
whole input of every k-means run, a fixed number of Lloyd iterations, centroid updates and resampling by
Python loops over clusters with boolean masks. Only the benchmark uses it, as the baseline that
``bench_pipeline.py`` times the core against on the same data and settings.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch


def sq_dists(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(n, k) float64 squared distances, as a matmul (the official code's formulation)."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    return x_sq[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]


def nearest(x: torch.Tensor, c: torch.Tensor, block: int = 16_384) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (distance, index) of the nearest centroid, by row blocks (the full n x k matrix would not fit)."""
    dist = torch.empty(x.shape[0], dtype=torch.float64)
    idx = torch.empty(x.shape[0], dtype=torch.int64)
    for r0 in range(0, x.shape[0], block):
        dist[r0:r0 + block], idx[r0:r0 + block] = sq_dists(x[r0:r0 + block], c).min(1)
    return dist, idx


def kmeans_plusplus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centres = [int(torch.randint(n, (1,), generator=gen))]
    closest = ((x - x[centres[0]]) ** 2).sum(1)
    x_sq = (x * x).sum(1)  # once, not per centre: the baseline should not be slow for a reason of our making
    for _ in range(1, k):
        cand = torch.multinomial(closest.clamp(min=0) + 1e-30, trials, replacement=True, generator=gen)
        d = sq_dists(x, x[cand], x_sq).T  # (trials, n)
        pot = torch.minimum(d, closest[None, :]).sum(1)
        best = int(torch.argmin(pot))
        centres.append(int(cand[best]))
        closest = torch.minimum(closest, d[best])
    return x[centres].clone()


def kmeans(x: torch.Tensor, k: int, n_iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    c = kmeans_plusplus(x, k, gen)
    for _ in range(n_iters):
        assign = nearest(x, c)[1]
        for j in range(k):  # per-cluster Python loop, as the official update
            mask = assign == j
            if mask.any():
                c[j] = x[mask].mean(0)
    dist, assign = nearest(x, c)
    return c, assign, dist


def resample_closest(assign: torch.Tensor, dist: torch.Tensor, k: int, r: int) -> torch.Tensor:
    picked = []
    for j in range(k):  # per-cluster Python loop
        members = torch.nonzero(assign == j)[:, 0]
        if members.numel():
            picked.append(members[torch.argsort(dist[members])[:r]])
    return torch.cat(picked)


def resampling_kmeans(x: torch.Tensor, k: int, steps: int, r: int, n_iters: int, gen: torch.Generator,
                      timings: dict, name: str, steps_run: int | None = None):
    """``steps`` resampling steps, of which only ``steps_run`` are executed (all when None); the time of the
    steps not run is extrapolated from the mean of those run and marked as such in ``timings``."""
    t = time.perf_counter()
    c, assign, dist = kmeans(x, k, n_iters, gen)
    timings[f"{name} k-means"] = time.perf_counter() - t
    run = steps if steps_run is None else min(steps, steps_run)
    step_times = []
    for _ in range(run):
        t = time.perf_counter()
        sub = resample_closest(assign, dist, k, r)
        c, _, _ = kmeans(x[sub], k, n_iters, gen)
        dist, assign = nearest(x, c)
        step_times.append(time.perf_counter() - t)
    timings[f"{name} resampling ({run} of {steps} steps run)"] = sum(step_times)
    if run < steps and step_times:
        timings[f"{name} resampling, {steps - run} steps extrapolated"] = (steps - run) * float(np.mean(step_times))
    return c


def hierarchical_kmeans(x: np.ndarray, levels: list[dict], seed: int, steps_run: int | None = None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(x).double()
    timings: dict = {}
    for i, lv in enumerate(levels, 1):
        data = resampling_kmeans(data, lv["n_clusters"], lv["resampling_steps"], lv["sample_size"], lv["n_iters"],
                                 gen, timings, f"level {i}", steps_run if i == 1 else None)
    return timings
