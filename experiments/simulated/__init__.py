"""``experiment=simulated``: the paper's simulated-data study (Vo et al. 2024, Fig. 1a and Fig. 3; REFERENCE.md §2).

Three parts, each optional (``simulated.parts``):

- ``fig3``: the 2-D mixture (7000/1000/500 Gaussian points + 500 uniform on [-3, 3]^2); 300 final centroids from
  k-means, 2- and 3-level hierarchical k-means (with and without resampling), DBSCAN and agglomerative clustering,
  plus the raw points and 300 uniform points (the lower bound). Metric: ``kl_to_uniform`` of a Gaussian KDE of the
  centroids (:mod:`experiments.simulated.kde`), over ``simulated.seeds`` (each seed draws new data and new clusterings).
- ``fig1a``: the 1-D truncated-Gaussian mixture (~243k points), k = 5000: centroid density vs the data density
  for generalised k-means with ``|x - c|^p``, p = 2, 4, 8, and for hierarchical / resampled k-means; the fitted
  exponent ``a`` of ``centroid density ~ p^a`` (theory 1/3, 1/5, 1/9).
- ``rings``: the official README's toy example; pool, a random subset and the curated subset, counted per ring.

Writes ``metrics.json`` (common format: the Fig. 3 variants; ``fig1a`` and ``rings`` as extra sections),
``fig3_centroids.png``, ``fig3_kde.png``, ``fig1a_density.png``, ``rings.png`` into the run directory and, with
``publish=true``, into ``results/simulated/`` together with the README table
(:mod:`experiments.simulated.report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.simulated import data
from experiments.kit.metrics import metrics_doc, write_metrics
from experiments.kit.publish import publish
from experiments.kit.record import run_dir
from experiments.kit.tracker import Tracker
from experiments.simulated.gkmeans1d import hierarchical_kmeans_1d, kmeans_1d
from experiments.simulated.kde import centroid_density, kl_to_uniform
from sslcurate import (CurationInputError, KMeansSettings, LevelConfig, hierarchical_kmeans, hierarchical_sampling,
                       kmeans)

log = logging.getLogger(__name__)

FIG3_VARIANTS = ("raw", "kmeans", "hkmeans_2level", "hkmeans_3level", "hkmeans_3level_resampled", "dbscan",
                 "agglomerative", "uniform_bound")
# Paper values (official notebook, one stored run); uniform_bound is mean ± std over 10 draws.
PAPER_KL = {"raw": 0.942, "kmeans": 0.340, "hkmeans_2level": 0.132, "hkmeans_3level": 0.081,
            "hkmeans_3level_resampled": 0.0418, "dbscan": 0.853, "agglomerative": 0.374,
            "uniform_bound": 0.0401}
PAPER_KL_STD = {"uniform_bound": 0.0073}


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class KLSettings:
    bandwidth: float = 0.5  # kernel std in data units (sklearn KernelDensity convention); paper: 0.5
    box: float = 3.0  # uniform reference on [-box, box]^2; paper: [-3, 3]^2
    grid_step: float = 0.02  # paper: 0.02


@dataclass
class Fig3Settings:
    sizes: List[int] = field(default_factory=lambda: [7000, 1000, 500])  # Gaussian components; paper
    means: List[List[float]] = field(default_factory=lambda: [[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0]])
    std: float = 0.5  # paper: N(mean, 0.5^2 I)
    n_uniform: int = 500  # uniform background points; paper
    n_clusters: int = 300  # final number of centroids of every method; paper
    levels_2: List[int] = field(default_factory=lambda: [1500, 300])  # paper
    levels_3: List[int] = field(default_factory=lambda: [3000, 1000, 300])  # paper
    resampling_steps: int = 10  # paper: T = 10
    sample_size: int = 2  # r per level; paper
    sample_strategy: str = "closest"  # which r points per cluster are re-clustered
    n_iters: int = 50  # Lloyd iterations of every k-means run; official code
    init: str = "k-means++"
    backend: str = "torch"  # core assignment backend, pinned so results do not follow the core's "auto" choice
    dbscan_min_samples: int = 4  # 2 x dim (Sander et al. 1998); eps from the k-distance elbow
    agglomerative_linkage: str = "ward"  # scikit-learn's default
    uniform_draws: int = 10  # draws of 300 uniform points averaged per seed; paper: 10
    kl: KLSettings = field(default_factory=KLSettings)


@dataclass
class Fig1aSettings:
    n_clusters: int = 5000  # paper
    powers: List[int] = field(default_factory=lambda: [2, 4, 8])  # distortion |x - c|^p; paper
    n_iters: int = 50  # Lloyd iterations (the exponents are stable from ~30 on)
    levels_2: List[int] = field(default_factory=lambda: [25000, 5000])  # hierarchical variant
    levels_3: List[int] = field(default_factory=lambda: [50000, 15000, 5000])
    resampled_levels: List[int] = field(default_factory=lambda: [25000, 5000])
    resampled_sample_sizes: List[int] = field(default_factory=lambda: [5, 2])  # ~half the mean cluster size
    resampling_steps: int = 10  # paper: T = 10
    fit_min_density: float = 1e-3  # fit a only where p > this x max p (the far tails are sparse)
    fit_edge_margin: float = 0.5  # and farther than this from a truncation edge (density jumps)
    fit_window: int = 10  # centroid density over 2 x 10 neighbouring centroids
    seed: int = 0  # data and clustering seed of the 1-D study (one run, as the paper)


@dataclass
class RingsSettings:
    sizes: List[int] = field(default_factory=lambda: [20000, 200, 1000, 500, 8000])  # official README
    levels: List[int] = field(default_factory=lambda: [1000, 300])  # official README
    sample_sizes: List[int] = field(default_factory=lambda: [15, 2])  # r per level; official README
    resampling_steps: int = 10  # paper: T = 10
    target_size: int = 1000  # official README
    strategy: str = "random"  # leaf sampling; paper's best
    backend: str = "torch"  # core assignment backend (pinned, see Fig3Settings)
    seed: int = 0


@dataclass
class SimulatedSettings:
    parts: List[str] = field(default_factory=lambda: ["fig3", "fig1a", "rings"])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # fig3 seeds (data + clustering)
    scale: float = 1.0  # multiplies every point count and k (1 = paper sizes; tests use less)
    torch_threads: Optional[int] = 1  # torch threads per worker (None: torch's default)
    workers: int = 1  # processes running seeds / parts side by side (results do not depend on it)
    fig3: Fig3Settings = field(default_factory=Fig3Settings)
    fig1a: Fig1aSettings = field(default_factory=Fig1aSettings)
    rings: RingsSettings = field(default_factory=RingsSettings)


def settings(node) -> SimulatedSettings:
    """Typed settings from the ``simulated`` config node: unknown keys and bad types fail here, clearly."""
    try:
        s = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SimulatedSettings), node))
    except OmegaConfBaseException as err:
        raise CurationInputError(f"bad simulated config: {err}") from None
    bad = set(s.parts) - {"fig3", "fig1a", "rings"}
    if bad:
        raise CurationInputError(f"simulated.parts: unknown part(s) {sorted(bad)}; use fig3, fig1a, rings")
    if not s.seeds:
        raise CurationInputError("simulated.seeds is empty")
    if s.workers < 1:
        raise CurationInputError(f"simulated.workers must be >= 1, got {s.workers}")
    if not 0 < s.scale <= 1:
        raise CurationInputError(f"simulated.scale must be in (0, 1], got {s.scale}")
    return s


def _scale(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


# ------------------------------------------------------------------------------------------------- Fig. 3
def dbscan_eps(x: np.ndarray, min_samples: int) -> float:
    """eps at the elbow of the sorted k-distance curve (Ester et al. 1996), k = ``min_samples`` (the point
    itself counted, as DBSCAN counts it): the point of the curve farthest from the chord joining its ends."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=min_samples).fit(x).kneighbors(x)
    kd = np.sort(dist[:, -1])
    t = np.linspace(0.0, 1.0, kd.size)
    y = (kd - kd[0]) / max(kd[-1] - kd[0], 1e-12)
    return float(kd[int(np.argmax(t - y))])  # the curve is convex and increasing: farthest below the chord


def dbscan_centroids(x: np.ndarray, min_samples: int) -> np.ndarray:
    """Means of the DBSCAN clusters (noise dropped): (m, 2); m is whatever DBSCAN finds."""
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=dbscan_eps(x, min_samples), min_samples=min_samples).fit(x).labels_
    keep = labels >= 0
    if not keep.any():
        return x.mean(0, keepdims=True)
    m = labels[keep].max() + 1
    sums = np.stack([np.bincount(labels[keep], weights=x[keep, j], minlength=m) for j in range(2)], 1)
    return (sums / np.bincount(labels[keep], minlength=m)[:, None]).astype(np.float32)


def agglomerative_centroids(x: np.ndarray, n_clusters: int, linkage: str) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=n_clusters, linkage=linkage).fit(x).labels_
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=n_clusters) for j in range(2)], 1)
    return (sums / np.bincount(labels, minlength=n_clusters)[:, None]).astype(np.float32)


def fig3_levels(ks, s: Fig3Settings, scale: float, resample: bool) -> list[LevelConfig]:
    return [LevelConfig(_scale(k, scale), resampling_steps=s.resampling_steps if resample else 0,
                        sample_size=s.sample_size, sample_strategy=s.sample_strategy, n_iters=s.n_iters)
            for k in ks]


def fig3_one_seed(seed: int, s: Fig3Settings, scale: float) -> dict:
    """All Fig. 3 variants on one draw of the data. Returns ``{"x": points, variant: (centroids, seconds)}``."""
    x, comp = data.mixture_2d(np.random.default_rng([seed, 0]), means=s.means, std=s.std,
                              sizes=[_scale(n, scale) for n in s.sizes], n_uniform=_scale(s.n_uniform, scale),
                              box=s.kl.box)
    k = _scale(s.n_clusters, scale)
    out = {"x": x, "component": comp}

    def timed(name, fn):
        t0 = time.perf_counter()
        c = fn()
        out[name] = (np.asarray(c, dtype=np.float32), time.perf_counter() - t0)
        log.info("seed %d %-26s %4d centroids  %.1fs", seed, name, len(c), out[name][1])

    def tree_top(ks, resample, i):
        tree = hierarchical_kmeans(x, fig3_levels(ks, s, scale, resample), seed=seed * 100 + i,
                                   settings=KMeansSettings(init=s.init, backend=s.backend))
        return tree.levels[-1].centroids

    timed("raw", lambda: x)
    timed("kmeans", lambda: kmeans(x, k, n_iters=s.n_iters, init=s.init, seed=seed * 100 + 1,
                                   backend=s.backend).centroids)
    timed("hkmeans_2level", lambda: tree_top(s.levels_2, False, 2))
    timed("hkmeans_3level", lambda: tree_top(s.levels_3, False, 3))
    timed("hkmeans_3level_resampled", lambda: tree_top(s.levels_3, True, 4))
    timed("dbscan", lambda: dbscan_centroids(x, s.dbscan_min_samples))
    timed("agglomerative", lambda: agglomerative_centroids(x, k, s.agglomerative_linkage))
    urng = np.random.default_rng([seed, 9])
    out["uniform_draws"] = [urng.uniform(-s.kl.box, s.kl.box, (k, 2)) for _ in range(s.uniform_draws)]
    out["uniform_bound"] = (out["uniform_draws"][0].astype(np.float32), 0.0)
    return out


def fig3_kl(run: dict, s: Fig3Settings) -> dict:
    """KL to uniform of every variant of one seed (uniform_bound: the mean over its draws)."""
    kl = {v: kl_to_uniform(run[v][0], s.kl.bandwidth, s.kl.box, s.kl.grid_step)
          for v in FIG3_VARIANTS if v != "uniform_bound"}
    draws = [kl_to_uniform(u, s.kl.bandwidth, s.kl.box, s.kl.grid_step) for u in run["uniform_draws"]]
    kl["uniform_bound"] = float(np.mean(draws))
    return kl, draws


# ------------------------------------------------------------------------------------------------ Fig. 1a
def fit_exponent(c: np.ndarray, s: Fig1aSettings, components) -> dict:
    """Least-squares slope of log(centroid density) on log(data density), away from edges and far tails.

    The density is measured over ``fit_window`` neighbours on each side (one gap alone is very noisy)."""
    pos, lam = centroid_density(c, max(1, min(s.fit_window, (c.size - 1) // 2)))
    p = data.mixture_1d_pdf(pos, components)
    edges = data.mixture_1d_edges(components)
    ok = (p > s.fit_min_density * p.max()) & (np.min(np.abs(pos[:, None] - edges[None]), 1) > s.fit_edge_margin)
    if ok.sum() < 3:
        return {"exponent": float("nan"), "r2": float("nan"), "n_fit": int(ok.sum())}
    lx, ly = np.log(p[ok]), np.log(lam[ok])
    a, b = np.polyfit(lx, ly, 1)
    resid = ly - (a * lx + b)
    r2 = 1.0 - resid.var() / ly.var()
    return {"exponent": float(a), "intercept": float(b), "r2": float(r2), "n_fit": int(ok.sum())}


FIG1A_THEORY = {"kmeans_p2": 1 / 3, "kmeans_p4": 1 / 5, "kmeans_p8": 1 / 9, "hkmeans_2level": 1 / 9,
                "hkmeans_3level": 1 / 27}


def fig1a(s: Fig1aSettings, scale: float) -> tuple[dict, dict, np.ndarray]:
    """Returns (per-variant fit summary, per-variant centroids, data)."""
    components = data.scaled(data.PAPER_1D, scale)
    x = data.mixture_1d(np.random.default_rng([s.seed, 1]), components)
    k = min(_scale(s.n_clusters, scale), x.size)
    cents, fits, levels = {}, {}, {}

    def record(name, fn):
        t0 = time.perf_counter()
        cents[name] = fn()
        fits[name] = {**fit_exponent(cents[name], s, components), "k": int(cents[name].size),
                      "levels": levels.get(name, [int(cents[name].size)])}
        if name in FIG1A_THEORY:
            fits[name]["theory"] = FIG1A_THEORY[name]
        log.info("1-D %-22s a = %.3f (theory %s)  %.1fs", name, fits[name]["exponent"],
                 f"{FIG1A_THEORY[name]:.3f}" if name in FIG1A_THEORY else "-", time.perf_counter() - t0)

    for i, pw in enumerate(s.powers):
        record(f"kmeans_p{pw}", lambda pw=pw, i=i: kmeans_1d(x, k, power=pw, n_iters=s.n_iters,
                                                               seed=np.random.default_rng([s.seed, 10 + i])).centroids)
    lv2 = [min(_scale(v, scale), x.size) for v in s.levels_2]
    lv3 = [min(_scale(v, scale), x.size) for v in s.levels_3]
    lvr = [min(_scale(v, scale), x.size) for v in s.resampled_levels]
    levels.update({"hkmeans_2level": lv2, "hkmeans_3level": lv3, "hkmeans_2level_resampled": lvr})
    record("hkmeans_2level", lambda: hierarchical_kmeans_1d(x, lv2, seed=s.seed * 100 + 2, n_iters=s.n_iters)[-1].centroids)
    record("hkmeans_3level", lambda: hierarchical_kmeans_1d(x, lv3, seed=s.seed * 100 + 3, n_iters=s.n_iters)[-1].centroids)
    record("hkmeans_2level_resampled", lambda: hierarchical_kmeans_1d(
        x, lvr, steps=s.resampling_steps, sample_sizes=s.resampled_sample_sizes, seed=s.seed * 100 + 4,
        n_iters=s.n_iters)[-1].centroids)
    summary = {"n_points": int(x.size), "n_clusters": int(k), "variants": fits}
    return summary, cents, x


# -------------------------------------------------------------------------------------------------- rings
def rings(s: RingsSettings, scale: float) -> tuple[dict, dict]:
    rng = np.random.default_rng([s.seed, 2])
    x, ring = data.rings(rng, sizes=[_scale(n, scale) for n in s.sizes])
    levels = [LevelConfig(_scale(k, scale), resampling_steps=s.resampling_steps, sample_size=r)
              for k, r in zip(s.levels, s.sample_sizes)]
    target = _scale(s.target_size, scale)
    tree = hierarchical_kmeans(x, levels, seed=s.seed, settings=KMeansSettings(backend=s.backend))
    curated = hierarchical_sampling(tree, target, strategy=s.strategy, seed=s.seed)
    random_subset = np.sort(np.random.default_rng([s.seed, 3]).choice(x.shape[0], target, replace=False))
    n_rings = len(s.sizes)
    counts = {"pool": np.bincount(ring, minlength=n_rings).tolist(),
              "random": np.bincount(ring[random_subset], minlength=n_rings).tolist(),
              "curated": np.bincount(ring[curated], minlength=n_rings).tolist()}
    return {"counts": counts, "target_size": int(target), "levels": [lv.n_clusters for lv in levels]}, \
        {"x": x, "ring": ring, "random": random_subset, "curated": curated}


# ---------------------------------------------------------------------------------------------------- run
def _task(job: tuple, s: SimulatedSettings):
    """One unit of work (a Fig. 3 seed, the 1-D study, or the rings), run in a worker or in this process."""
    if s.torch_threads:
        torch.set_num_threads(int(s.torch_threads))
    kind, arg = job
    if kind == "fig3":
        res = fig3_one_seed(arg, s.fig3, s.scale)
        kl, draws = fig3_kl(res, s.fig3)
        return res, kl, draws
    if kind == "fig1a":
        return fig1a(s.fig1a, s.scale)
    return rings(s.rings, s.scale)


def _run_tasks(jobs: list, s: SimulatedSettings) -> list:
    """Results of ``jobs`` in order; with ``workers > 1`` in a process pool (every job seeds its own RNGs, so
    the results are the same either way)."""
    if s.workers == 1 or len(jobs) == 1:
        return [_task(j, s) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # Longest first (the 1-D study, then the seeds) so the pool finishes together.
    order = sorted(range(len(jobs)), key=lambda i: {"fig1a": 0, "rings": 2}.get(jobs[i][0], 1))
    with ProcessPoolExecutor(max_workers=s.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {i: pool.submit(_task, jobs[i], s) for i in order}
        return [futures[i].result() for i in range(len(jobs))]


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    s = settings(cfg.simulated)
    if s.torch_threads:
        torch.set_num_threads(int(s.torch_threads))
    tracker = Tracker(cfg, out)
    from experiments.simulated import plots  # matplotlib only when running

    t_start = time.perf_counter()
    jobs = [("fig3", int(seed)) for seed in s.seeds] if "fig3" in s.parts else []
    jobs += [(part, None) for part in ("fig1a", "rings") if part in s.parts]
    log.info("running %d job(s) on %d worker(s): %s", len(jobs), s.workers, [j[0] for j in jobs])
    outputs = dict(zip([j if j[0] == "fig3" else j[0] for j in jobs], _run_tasks(jobs, s)))
    log.info("computed in %.1fs", time.perf_counter() - t_start)
    results, extra, figures = {}, {"scale": s.scale}, []
    if "fig3" in s.parts:
        per_seed, draws, first = {v: [] for v in FIG3_VARIANTS}, [], None
        n_cent = {v: [] for v in FIG3_VARIANTS}
        for seed in s.seeds:
            res, kl, d = outputs[("fig3", int(seed))]
            for v in FIG3_VARIANTS:
                per_seed[v].append(kl[v])
                n_cent[v].append(len(res[v][0]))
            draws.extend(d)
            tracker.log({f"fig3/{v}/kl_to_uniform": kl[v] for v in FIG3_VARIANTS}, step=int(seed))
            log.info("seed %d KL: %s", seed, "  ".join(f"{v}={kl[v]:.4f}" for v in FIG3_VARIANTS))
            if first is None:
                first = res
        results = {v: {"kl_to_uniform": per_seed[v], "n_centroids": n_cent[v]} for v in FIG3_VARIANTS}
        extra["uniform_bound_draws"] = {"mean": float(np.mean(draws)), "std": float(np.std(draws)),
                                        "n": len(draws)}
        extra["paper_kl"] = PAPER_KL
        extra["kl_definition"] = {"kde": "isotropic Gaussian, std = bandwidth (sklearn KernelDensity)",
                                  "bandwidth": s.fig3.kl.bandwidth, "box": s.fig3.kl.box,
                                  "grid_step": s.fig3.kl.grid_step,
                                  "kl": "sum_g p_g log(p_g G): KDE at the grid nodes normalised to 1 vs uniform"}
        kl0 = {v: per_seed[v][0] for v in FIG3_VARIANTS}
        figures.append(plots.fig3_centroids(first, kl0, s.fig3.kl.box, out / "fig3_centroids.png", s.seeds[0]))
        figures.append(plots.fig3_kde(first, kl0, s.fig3.kl, out / "fig3_kde.png", s.seeds[0]))
    if "fig1a" in s.parts:
        summary, cents, _ = outputs["fig1a"]
        extra["fig1a"] = summary
        figures.append(plots.fig1a_density(cents, summary, data.scaled(data.PAPER_1D, s.scale),
                                           out / "fig1a_density.png"))
    if "rings" in s.parts:
        summary, arrays = outputs["rings"]
        extra["rings"] = summary
        figures.append(plots.rings_figure(arrays, summary, out / "rings.png"))
    # Timings vary from run to run: logged, kept out of metrics.json so that a rerun writes the same file.
    log.info("total %.1fs (%d worker(s))", time.perf_counter() - t_start, s.workers)

    doc = metrics_doc("simulated", s.seeds, "kl_to_uniform", False, results,
                      primary_variant="hkmeans_3level_resampled", **extra)
    path = write_metrics(out, doc)
    tracker.log_metrics_doc(doc)
    for f in figures:
        tracker.log_image(Path(f).stem, f)
    tracker.finish()
    if cfg.publish:
        dest = publish(cfg, [path, *figures])
        if dest is not None:
            from experiments.simulated.report import write_readme
            write_readme(dest)
    return doc
