"""Figures shared by the studies. Headless (Agg), written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sslcurate.io import atomic_open  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """``fig`` as a PNG at ``path``, written atomically with the mode the user's umask gives (not mkstemp's 0600),
    then closed."""
    path = Path(path)
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_cluster_sizes(tree, indices: np.ndarray, path: Path) -> Path:
    """Per level: cluster sizes sorted from largest to smallest, pool vs curated subset (log scale)."""
    n_levels = len(tree.levels)
    fig, axes = plt.subplots(1, n_levels, figsize=(4.2 * n_levels, 3.4), squeeze=False)
    for lv, ax in enumerate(axes[0], 1):
        labels = tree.point_labels(lv)
        k = tree.levels[lv - 1].n_clusters
        pool = np.sort(np.bincount(labels, minlength=k))[::-1]
        sub = np.sort(np.bincount(labels[indices], minlength=k))[::-1]
        ax.plot(np.arange(1, k + 1), np.maximum(pool, 0.8), label=f"pool ({tree.n_points:,})")
        ax.plot(np.arange(1, k + 1), np.maximum(sub, 0.8), label=f"curated ({len(indices):,})")
        ax.set_yscale("log")
        ax.set_xlabel("cluster rank (largest first)")
        ax.set_ylabel("points in cluster")
        ax.set_title(f"level {lv}: k = {k}")
        ax.legend(fontsize=8)
    fig.suptitle("Cluster sizes before and after balanced hierarchical sampling")
    return save_figure(fig, path)
