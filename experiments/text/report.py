"""Figures and the README table of the text study, made from its metrics.json alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.kit.metrics import mean_std
from experiments.plots import plt, save_figure

COLORS = {"raw": "#8c8c8c", "ccnet": "#1f77b4", "curated": "#d62728"}
DOMAIN_COLORS = {"wiki": "#1f77b4", "news": "#17becf", "code": "#2ca02c", "docs": "#98df8a", "pkgdocs": "#9467bd",
                 "boilerplate": "#c7c7c7", "spam": "#ff9896", "seo": "#c5b0d5", "duplicate": "#ffbb78",
                 "web": "#7f7f7f"}


def plot_domain_shares(doc: dict, path: Path) -> Path:
    """Stacked bars: domain shares (documents and tokens) of the pool and of each variant's training set."""
    names, sets = share_sets(doc)
    domains = list(doc["pool"]["shares"]["docs"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind in zip(axes, ("docs", "tokens")):
        bottom = np.zeros(len(names))
        for d in domains:
            vals = np.array([s[kind].get(d, 0.0) for s in sets])
            ax.bar(names, vals, bottom=bottom, label=d, color=DOMAIN_COLORS.get(d))
            bottom += vals
        ax.set_title(f"share of {'documents' if kind == 'docs' else 'tokens'}")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("fraction of the training set")
    axes[1].legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.suptitle("Domains in each variant's training set (labels used for this plot only)")
    return save_figure(fig, path)


def share_sets(doc: dict) -> tuple[list[str], list[dict]]:
    """(names, shares) of the pool, the deduplicated pool when there is one, and every variant's training set."""
    names, sets = ["pool"], [doc["pool"]["shares"]]
    dd = doc.get("pool_dedup") or {}
    if dd.get("threshold") is not None:
        names.append("pool, dedup")
        sets.append(dd["shares"])
    variants = [v for v in variant_order(doc) if v in doc["shares"]]
    return names + variants, sets + [doc["shares"][v] for v in variants]


def variant_order(doc: dict) -> list[str]:
    return [v for v in doc.get("variants", []) if v in doc["results"]] or list(doc["results"])


def plot_domain_perplexity(doc: dict, path: Path) -> Path:
    """Grouped bars: held-out perplexity per domain and macro average, mean +- std over seeds."""
    variants = variant_order(doc)
    domains = [*doc["macro_domains"], "macro"] + (["junk"] if "ppl_junk" in doc["results"][variants[0]] else [])
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = np.arange(len(domains))
    for i, v in enumerate(variants):
        r = doc["results"][v]
        keys = [("val_ppl_macro" if d == "macro" else f"ppl_{d}") for d in domains]
        mean = [r[k]["mean"] for k in keys]
        std = [r[k]["std"] for k in keys]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=v,
               color=COLORS.get(v))
    ax.set_xticks(x, domains)
    ax.set_yscale("log")
    ax.set_ylabel("held-out perplexity (log scale, lower is better)")
    n = len(doc["seeds"])
    ax.set_title(f"Per-domain perplexity, mean +- std over {n} seed{'s' * (n > 1)} (junk: not in the macro average)")
    ax.legend()
    return save_figure(fig, path)


def plot_learning_curves(doc: dict, path: Path) -> Path:
    """Held-out macro perplexity and training loss against steps, mean over seeds (band: min-max)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for v, runs in doc["learning_curves"].items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        steps = [h["step"] for h in runs[0][:n]]
        for ax, key in zip(axes, ("val_ppl_macro", "train_loss")):
            vals = np.array([[h[key] for h in r[:n]] for r in runs])
            ax.plot(steps, vals.mean(0), marker="o", ms=3, label=v, color=COLORS.get(v))
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2, color=COLORS.get(v))
    axes[0].set_yscale("log")
    axes[0].set_ylabel("held-out macro perplexity")
    axes[1].set_ylabel("training loss (nats/token, own data)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
    fig.suptitle("Learning curves (same steps x batch x context for every variant)")
    return save_figure(fig, path)


def make_figures(doc: dict, out: Path) -> list[Path]:
    out = Path(out)
    return [plot_domain_shares(doc, out / "domain_shares.png"),
            plot_domain_perplexity(doc, out / "ppl_per_domain.png"),
            plot_learning_curves(doc, out / "learning_curves.png")]


def results_table(doc: dict) -> str:
    """Markdown: one row per variant, macro perplexity, accuracy, then every domain's perplexity."""
    variants = variant_order(doc)
    first = doc["results"][variants[0]]
    doms = [*doc["macro_domains"]] + (["junk"] if "ppl_junk" in first else [])
    head = ["variant", "val_ppl_macro ↓", "mc_accuracy ↑"] + [f"ppl {d}" for d in doms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        r = doc["results"][v]
        cells = [v, mean_std(r["val_ppl_macro"], 2), mean_std(r["mc_accuracy"], 3)] + \
            [mean_std(r[f"ppl_{d}"], 1) for d in doms]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mc_table(doc: dict) -> str:
    variants = variant_order(doc)
    doms = list(doc["macro_domains"])
    head = ["variant"] + [f"mc {d}" for d in doms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        r = doc["results"][v]
        lines.append("| " + " | ".join([v] + [mean_std(r[f"mc_accuracy_{d}"], 3) if f"mc_accuracy_{d}" in r else "-"
                                             for d in doms]) + " |")
    return "\n".join(lines)


def shares_table(doc: dict, kind: str = "tokens") -> str:
    names, sets = share_sets(doc)
    domains = list(doc["pool"]["shares"][kind])
    lines = ["| set | " + " | ".join(domains) + " |", "|" + "---|" * (len(domains) + 1)]
    for n, s in zip(names, sets):
        lines.append(f"| {n} | " + " | ".join(f"{100 * s[kind][d]:.1f}%" for d in domains) + " |")
    return "\n".join(lines)
