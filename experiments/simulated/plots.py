"""Figures of ``experiment=simulated``: one PNG per panel set, written atomically (``experiments.plots``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.simulated.kde import centroid_density, grid_axis, kde_grid
from experiments.plots import plt, save_figure

TITLES = {"raw": "raw data (KDE of all points)", "kmeans": "k-means", "hkmeans_2level": "2-level h. k-means",
          "hkmeans_3level": "3-level h. k-means", "hkmeans_3level_resampled": "3-level + resampling",
          "dbscan": "DBSCAN (cluster means)", "agglomerative": "agglomerative (ward)",
          "uniform_bound": "uniform random (bound)"}
VARIANTS = tuple(TITLES)


def _voronoi(ax, c: np.ndarray, box: float) -> None:
    """Voronoi cells of the centroids as thin lines (scipy.spatial), clipped to the box by the axes."""
    if len(c) < 4:
        return
    from scipy.spatial import Voronoi, voronoi_plot_2d

    far = 10 * box  # mirror points far away so every cell inside the box is bounded
    pad = np.array([[-far, -far], [-far, far], [far, -far], [far, far]])
    voronoi_plot_2d(Voronoi(np.vstack([c, pad])), ax=ax, show_points=False, show_vertices=False,
                    line_colors="tab:blue", line_width=0.4, line_alpha=0.7)


def fig3_centroids(run: dict, kl: dict, box: float, path: Path, seed: int) -> Path:
    """Data (grey) with each method's centroids (red) and their Voronoi cells; KL of the seed in the title."""
    x = run["x"]
    fig, axes = plt.subplots(2, 4, figsize=(17, 9.4))
    for ax, v in zip(axes.ravel(), VARIANTS):
        c = run[v][0]
        ax.scatter(x[:, 0], x[:, 1], s=0.6, c="0.6", alpha=0.5, linewidths=0, rasterized=True)
        if v != "raw":
            _voronoi(ax, c, box)
            ax.scatter(c[:, 0], c[:, 1], s=5, c="tab:red", linewidths=0, zorder=3)
        ax.set_xlim(-box, box)
        ax.set_ylim(-box, box)
        ax.set_aspect("equal")
        ax.set_title(f"{TITLES[v]}\n{len(c)} {'points' if v == 'raw' else 'centroids'}, KL = {kl[v]:.3f}",
                     fontsize=10)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Fig. 3 reproduction: {len(x):,}-point mixture (grey), centroids (red) and Voronoi cells "
                 f"(seed {seed}); KL = KL(KDE of centroids || uniform on [-{box:g},{box:g}]²)", fontsize=12, y=1.01)
    fig.tight_layout()
    return save_figure(fig, path)


def fig3_kde(run: dict, kl: dict, klset, path: Path, seed: int) -> Path:
    """KDE surfaces (bandwidth as in the metric) of every variant, on a shared colour scale."""
    dens = {v: kde_grid(run[v][0], klset.bandwidth, klset.box, klset.grid_step) for v in VARIANTS}
    dens = {v: d / (d.sum() * klset.grid_step ** 2) for v, d in dens.items()}  # normalised on the box
    vmax = max(float(d.max()) for d in dens.values())
    g = grid_axis(klset.box, klset.grid_step)
    fig, axes = plt.subplots(2, 4, figsize=(17, 8.4))
    for ax, v in zip(axes.ravel(), VARIANTS):
        im = ax.imshow(dens[v], origin="lower", extent=(g[0], g[-1], g[0], g[-1]), cmap="viridis", vmin=0,
                       vmax=vmax)
        ax.set_title(f"{TITLES[v]}\nKL = {kl[v]:.3f}", fontsize=10)
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="KDE density (normalised on the box)")
    fig.suptitle(f"Gaussian KDE (bandwidth {klset.bandwidth:g}) of each method's centroids (seed {seed}); "
                 f"uniform density = {1 / (2 * klset.box) ** 2:.4f}", fontsize=12)
    return save_figure(fig, path)


def fig1a_density(cents: dict, summary: dict, components, path: Path) -> Path:
    """Left: centroid density along x with p and p^(1/3) (all normalised). Right: log-log with fitted slopes."""
    from experiments.simulated.data import mixture_1d_pdf

    xs = np.linspace(-15, 24, 4000)
    p = mixture_1d_pdf(xs, components)
    dx = xs[1] - xs[0]

    def norm(f):
        return f / (f.sum() * dx)

    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(19, 5.2))
    ax0.fill_between(xs, norm(p), color="0.85", label="data density p")
    ax0.plot(xs, norm(p ** (1 / 3)), "k--", lw=1.2, label="p^(1/3) (k-means theory)")
    ax0.text(0.01, 0.98, "centroid density: 2w / (k * span of 2w neighbours), w = k/200", transform=ax0.transAxes,
             fontsize=7.5, va="top")
    ax0.plot(xs, norm(p ** (1 / 5)), "k:", lw=1.2, label="p^(1/5) (|x-c|^4 theory)")
    ax0.plot(xs, norm(p ** (1 / 9)), "k-.", lw=1.0, label="p^(1/9) (|x-c|^8 theory)")
    colors = {"kmeans_p2": "tab:red", "kmeans_p4": "tab:orange", "kmeans_p8": "tab:olive",
              "hkmeans_2level": "tab:blue", "hkmeans_3level": "tab:purple", "hkmeans_2level_resampled": "tab:green"}

    def window_density(c, w):
        """Centroid density over 2w neighbours: 2w / (k (c[i+w] - c[i-w])), at c[i]."""
        c = np.sort(c)
        return c[w:-w], 2 * w / (c.size * (c[2 * w:] - c[:-2 * w]))

    variants = summary["variants"]
    for name, c in cents.items():
        pos, lam = window_density(c, max(2, c.size // 200))
        lam = np.where(mixture_1d_pdf(pos, components) > 1e-4 * p.max(), lam, np.nan)
        jump = np.flatnonzero(np.diff(pos) > 1.0) + 1  # break the line across the empty gaps
        pos, lam = np.insert(pos, jump, np.nan), np.insert(lam, jump, np.nan)
        target = ax0 if name.startswith("kmeans") else ax1
        target.plot(pos, lam, color=colors.get(name), lw=1.2,
                    label=f"{name} (k={variants[name]['k']}, a={variants[name]['exponent']:.3f})")
    ax1.fill_between(xs, norm(p), color="0.85", label="data density p")
    ax1.plot(xs, norm(p ** (1 / 3)), "k--", lw=1.2, label="p^(1/3)")
    ax1.plot(xs, norm(np.ones_like(p) * (p > 1e-6)), "k:", lw=1.0, label="uniform on the support")
    for ax, title in ((ax0, "generalised k-means |x-c|^p, k = %d" % summary["n_clusters"]),
                      (ax1, "hierarchical / resampled k-means (p = 2)")):
        ax.set_ylim(0, 0.16)
        ax.set_xlabel("x")
        ax.set_ylabel("density (normalised)")
        ax.set_title(title)
        ax.legend(fontsize=7.5, loc="upper right")
    for name, c in cents.items():
        pos, lam = centroid_density(c, 10)
        pd = mixture_1d_pdf(pos, components)
        ok = pd > 1e-5
        ax2.loglog(pd[ok], lam[ok], ".", ms=1.5, alpha=0.35, color=colors.get(name))
        f = variants[name]
        xx = np.geomspace(pd[ok].min(), pd[ok].max(), 10)
        theory = f" (theory {f['theory']:.3f})" if "theory" in f else ""
        ax2.loglog(xx, np.exp(f["intercept"]) * xx ** f["exponent"], "-", color=colors.get(name), lw=1.5,
                   label=f"{name}: a = {f['exponent']:.3f}{theory}")
    ax2.set_ylim(3e-3, 0.3)
    ax2.set_xlabel("data density p(x) at the centroid")
    ax2.set_ylabel("centroid density (20 / (k * span of 20 neighbours))")
    ax2.set_title("fitted exponent a of centroid density ~ p^a")
    ax2.legend(fontsize=7.5)
    fig.suptitle(f"Fig. 1a reproduction: {summary['n_points']:,} points from a truncated-Gaussian mixture",
                 fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def rings_figure(arrays: dict, summary: dict, path: Path) -> Path:
    """Pool, a random subset and the curated subset, coloured by ring, with per-ring counts."""
    x, ring = arrays["x"], arrays["ring"]
    counts = summary["counts"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    cmap = plt.get_cmap("tab10")
    for ax, (key, idx, title) in zip(axes, (("pool", np.arange(x.shape[0]), "pool"),
                                            ("random", arrays["random"], "random subset"),
                                            ("curated", arrays["curated"], "curated subset"))):
        pts, lab = x[idx], ring[idx]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5 if key == "pool" else 3, c=[cmap(i) for i in lab], linewidths=0,
                   rasterized=True)
        ax.set_aspect("equal")
        ax.set_title(f"{title}: {len(idx):,} points\nper ring: {counts[key]}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if key == "pool":
            for i in range(len(counts["pool"])):
                cx, cy = x[ring == i].mean(0)
                ax.text(cx, cy, f"ring {i + 1}\n{counts['pool'][i]:,}", ha="center", va="center", fontsize=9,
                        color=cmap(i), weight="bold")
    fig.suptitle(f"Toy rings: hierarchical k-means {summary['levels']} with resampling, balanced sampling "
                 f"of {summary['target_size']} points", fontsize=12, y=1.04)
    fig.tight_layout()
    return save_figure(fig, path)
