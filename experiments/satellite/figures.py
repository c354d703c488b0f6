"""Figures of the satellite study (first seed): land-cover shares of the pool / raw / curated sets, image / true /
predicted height mosaics of each evaluation region per variant, predicted vs true height scatter, R^2 per
region with the seed spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.plots import plt, save_figure

from .data import StudyData, has_land_cover, land_cover_shares
from .scenes import CLASSES


def mosaic(values: np.ndarray, origin: np.ndarray, tile: int) -> np.ndarray:
    """Stitch (n, ..., t, t) tiles back at their pixel origins: (..., H, W) with NaN where no tile."""
    h, w = origin[:, 0].max() + tile, origin[:, 1].max() + tile
    canvas = np.full(values.shape[1:-2] + (h, w), np.nan, np.float32)
    for v, (r, c) in zip(values, origin):
        canvas[..., r:r + tile, c:c + tile] = v
    return canvas


def rgb(bands: np.ndarray) -> np.ndarray:
    """(C, H, W) reflectance -> (H, W, 3) display image of the first three bands (one or two bands: grey),
    2-98 percentile stretch, NaN as white."""
    bands = bands[:3] if len(bands) >= 3 else np.repeat(bands[:1], 3, axis=0)
    x = bands.transpose(1, 2, 0)
    lo, hi = np.nanpercentile(x, 2), np.nanpercentile(x, 98)
    out = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.where(np.isnan(out), 1.0, out)


def plot_land_cover(data: StudyData, sel: dict, path: Path) -> Path:
    sets = {"pool": data.pool.land_cover, **{v: data.pool.land_cover[i] for v, i in sel.items()}}
    fig, ax = plt.subplots(figsize=(9, 3.6))
    w = 0.8 / len(sets)
    x = np.arange(len(CLASSES))
    for j, (name, lc) in enumerate(sets.items()):
        s = land_cover_shares(lc)
        ax.bar(x + (j - (len(sets) - 1) / 2) * w, 100 * s, w, label=f"{name} ({len(lc):,} tiles)")
    ax.set_xticks(x, CLASSES, rotation=20)
    ax.set_ylabel("% of tiles (majority class)")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title("Land cover of the pretraining sets (measured, never used by curation)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_panels(doc: dict, data: StudyData, predictions: dict, path: Path, max_px: int = 192) -> Path:
    regions, tile = data.regions, data.eval.images.shape[-1]
    variants = list(predictions)
    cols = 2 + len(variants)
    fig, axes = plt.subplots(len(regions), cols, figsize=(2.6 * cols, 2.7 * len(regions)), squeeze=False)
    vmax = float(np.nanpercentile(data.eval.chm, 99.5))
    for r, name in enumerate(regions):
        m = data.eval.scene == r
        org = data.eval.origin[m]
        img = mosaic(data.eval.images[m].astype(np.float32), org, tile)[:, :max_px, :max_px]
        true = mosaic(data.eval.chm[m], org, tile)[:max_px, :max_px]
        axes[r, 0].imshow(rgb(img))
        axes[r, 0].set_ylabel(name)
        axes[r, 1].imshow(true, vmin=0, vmax=vmax, cmap="viridis")
        for j, v in enumerate(variants):
            pm = mosaic(predictions[v][m], org, tile)[:max_px, :max_px]
            im = axes[r, 2 + j].imshow(pm, vmin=0, vmax=vmax, cmap="viridis")
            r2 = doc["results"][v].get(f"r2_{name}", {}).get("mean", float("nan"))
            axes[r, 2 + j].set_title(f"{v} (R² {r2:.2f})", fontsize=8)
        axes[r, 0].set_title("image (RGB)", fontsize=8)
        axes[r, 1].set_title(f"true {doc.get('target') or 'height'}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label=f"{doc.get('target') or 'canopy height'} (m)")
    return save_figure(fig, path)


def plot_scatter(data: StudyData, predictions: dict, path: Path, max_points: int = 200_000,
                 target: str = "height") -> Path:
    variants = list(predictions)
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.5), squeeze=False)
    valid = np.isfinite(data.eval.chm)
    t = data.eval.chm[valid]
    hi = float(np.percentile(t, 99.8))
    rng = np.random.default_rng(0)
    pick = rng.choice(t.size, size=min(max_points, t.size), replace=False)
    for ax, v in zip(axes[0], variants):
        p = predictions[v][valid]
        ax.hist2d(t[pick], p[pick], bins=60, range=[[0, hi], [0, hi]], cmap="magma_r", cmin=1,
                  norm=plt.matplotlib.colors.LogNorm())
        ax.plot([0, hi], [0, hi], "k--", lw=0.8)
        ss = ((t - t.mean()) ** 2).sum()
        ax.set_title(f"{v}: pixel R² {1 - ((p - t) ** 2).sum() / ss:.2f} (all regions)", fontsize=9)
        ax.set_xlabel(f"true {target} (m)")
        ax.set_ylabel(f"predicted {target} (m)")
    return save_figure(fig, path)


def plot_r2_regions(doc: dict, path: Path) -> Path:
    regions = doc["regions"] + ["mean"]
    variants = list(doc["results"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, metric in zip(axes, ("r2", "block_r2")):
        w = 0.8 / len(variants)
        for j, v in enumerate(variants):
            st = [doc["results"][v][f"{metric}_{r}"] for r in regions]
            ax.bar(np.arange(len(regions)) + (j - (len(variants) - 1) / 2) * w, [s["mean"] for s in st], w,
                   yerr=[s["std"] for s in st], capsize=2, label=v)
        ax.set_xticks(np.arange(len(regions)), regions)
        ax.set_title(f"{metric.replace('_', ' ')} per held-out region (mean ± std over {len(doc['seeds'])} seeds)",
                     fontsize=9)
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def make_figures(doc: dict, data: StudyData, sel: dict, predictions: dict, out: Path) -> list[Path]:
    """The study's figures; the land-cover one only when the pool has land-cover rasters."""
    land = [plot_land_cover(data, sel, out / "land_cover_shares.png")] if has_land_cover(data.pool.land_cover) else []
    return [*land, plot_panels(doc, data, predictions, out / "height_panels.png"),
            plot_scatter(data, predictions, out / "height_scatter.png", target=doc.get("target") or "height"),
            plot_r2_regions(doc, out / "r2_per_region.png")]
