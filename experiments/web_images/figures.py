"""Figures of the image study, drawn from the metrics document and the first seed's selections."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.plots import plot_cluster_sizes, plt, save_figure

COLORS = {"raw": "tab:gray", "curated": "tab:blue", "flat": "tab:orange", "manual": "tab:green",
          "random_init": "tab:red"}


def concept_histogram(data, sel: dict, path: Path) -> Path:
    """Images per concept (concepts ordered by pool frequency), pool vs each variant, log scale."""
    c = data.n_concepts
    pool = np.bincount(data.labels[data.labels >= 0], minlength=c)
    order = np.argsort(-pool, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(np.arange(c), np.maximum(pool[order], 0.8), color="black", lw=1.5, label=f"pool ({len(data.labels):,})")
    sets = {**{v: data.labels[i] for v, i in sel.items()}, "manual": data.manual.labels}
    for v, labels in sets.items():
        counts = np.bincount(labels[labels >= 0], minlength=c)
        ax.plot(np.arange(c), np.maximum(counts[order], 0.8), color=COLORS.get(v), lw=1.2,
                label=f"{v} ({len(labels):,})", drawstyle="steps-mid")
    ax.set_yscale("log")
    ax.set_xlabel("concept (ordered by pool frequency)")
    ax.set_ylabel("images")
    ax.set_title("Concept distribution of the training sets (values < 1 drawn at 0.8)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def sample_grid(data, sel: dict, path: Path, n: int = 48, seed: int = 0) -> Path:
    """Random images of each variant's training set."""
    def draw(rows):  # up to n of them (a small set shows all it has)
        return np.sort(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))

    sets = {**{v: data.images[draw(i)] for v, i in sel.items()},
            "manual": data.manual.images[draw(np.arange(len(data.manual.images)))]}
    cols = 12
    rows = n // cols
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.6 * rows / cols + 0.6))
    for ax, (v, imgs) in zip(np.atleast_1d(axes), sets.items()):
        s = imgs.shape[1]
        canvas = np.ones((rows * (s + 2), cols * (s + 2), 3), np.uint8) * 255
        for i, im in enumerate(imgs[:rows * cols]):
            r, c = divmod(i, cols)
            canvas[r * (s + 2):r * (s + 2) + s, c * (s + 2):c * (s + 2) + s] = im
        ax.imshow(canvas, interpolation="nearest")
        ax.set_title(v)
        ax.axis("off")
    fig.suptitle("Random training images of each variant")
    return save_figure(fig, path)


def accuracy_bars(doc: dict, path: Path) -> Path | None:
    """Mean +- std over seeds of the accuracy metrics, per variant (None when no variant has a result)."""
    metrics = ["knn_top1", "linear_top1", "tail_knn_top1", "shifted_knn_top1", "shifted_linear_top1"]
    variants = list(doc["results"])
    metrics = [m for m in metrics if all(m in doc["results"][v] for v in variants)]
    if not variants or not metrics:
        return None
    w = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(1.9 * len(metrics) + 2, 3.8))
    for i, v in enumerate(variants):
        r = doc["results"][v]
        ax.bar(np.arange(len(metrics)) + i * w, [r[m]["mean"] for m in metrics], w,
               yerr=[r[m]["std"] for m in metrics], capsize=3, color=COLORS.get(v), label=v)
    ax.set_xticks(np.arange(len(metrics)) + w * (len(variants) - 1) / 2)
    ax.set_xticklabels(metrics, fontsize=8)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Frozen-feature evaluation, mean ± std over {len(doc['seeds'])} seed(s)")
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def make_figures(doc: dict, data, sel: dict, trees: dict, out: Path) -> list[Path]:
    """trees: {variant: (clustering tree, its selection as rows of the tree)}."""
    figs = [concept_histogram(data, sel, out / "concept_histogram.png"), sample_grid(data, sel, out / "samples.png"),
            accuracy_bars(doc, out / "accuracy.png")]
    for name, (tree, rows) in trees.items():
        figs.append(plot_cluster_sizes(tree, rows, out / f"cluster_sizes_{name}.png"))
    return [f for f in figs if f is not None]
