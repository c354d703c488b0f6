"""README of ``results/satellite/`` generated from its ``metrics.json``.

    python -m experiments.satellite.report results/satellite [--command "python run.py ..."]
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.kit.publish import readme_cli
from experiments.kit.metrics import compare, mean_std

MAIN = [("r2", "R²", 3), ("block_r2", "block R²", 3), ("mae", "MAE (m)", 2), ("rmse", "RMSE (m)", 2)]


def verdicts(doc: dict) -> list[str]:
    """Plain statements of the comparisons the study must show, with the noise made explicit."""
    r = doc["results"]
    lines = []
    classes = doc.get("land_cover_classes", [])
    if "curated" in r and "raw" in r and classes and f"share_{classes[0]}" in r["curated"]:
        sh = {v: {c: r[v][f"share_{c}"]["mean"] for c in classes} for v in ("raw", "curated")}
        up = max(classes, key=lambda c: sh["curated"][c] - sh["raw"][c])
        lines.append(f"- curation changes the forest share of the training set from "
                     f"{r['raw']['forest_share']['mean']:.3f} (`raw`) to {r['curated']['forest_share']['mean']:.3f} "
                     f"(`curated`); the class it raises most is {up} ({sh['raw'][up]:.3f} -> {sh['curated'][up]:.3f})")
    if "label_entropy" in r.get("curated", {}) and "label_entropy" in r.get("raw", {}):
        d, spread, word, noise = compare(r, "curated", "raw", "label_entropy")
        lines.append(f"- `curated` is {'more' if d > 0 else 'less'} balanced than `raw` over the "
                     f"{_label_words(doc)}: label entropy {r['curated']['label_entropy']['mean']:.3f} vs "
                     f"{r['raw']['label_entropy']['mean']:.3f} ({d:+.3f}, {noise} the seed spread of {spread:.3f})")
    sites = [k for k in r.get("curated", {}) if k.startswith("share_site_") and k in r.get("raw", {})]
    if sites:  # without land cover: where curation moved the training set
        delta = {k: r["curated"][k]["mean"] - r["raw"][k]["mean"] for k in sites}
        up, down = max(delta, key=delta.get), min(delta, key=delta.get)
        words = [f"{k[len('share_site_'):]} ({r['raw'][k]['mean']:.3f} -> {r['curated'][k]['mean']:.3f})"
                 for k in (up, down)]
        lines.append(f"- curation raises the share of site {words[0]} most and lowers {words[1]} most "
                     "(`raw` -> `curated`, mean over seeds)")
        written = ((doc.get("data") or {}).get("real") or {}).get("written", [])
        for site in sorted({w["site"] for w in written if w["role"] == "train"}):
            k = f"share_site_{site}"
            if k in r["curated"]:
                lines.append(f"- the labelled scene's own site, {site} (the evaluation blocks' sensor and ground), "
                             f"is {r['raw'][k]['mean']:.3f} of `raw` and {r['curated'][k]['mean']:.3f} of `curated`")
    c = r.get("curated", {})
    if "top_clusters_90pct_forest" in c:
        lines.append(f"- the curation hierarchy's top level has {c['top_clusters']['mean']:.0f} clusters; 90% of the "
                     f"pool's forest tiles (all four kinds) fall in {c['top_clusters_90pct_forest']['mean']:.1f} of "
                     f"them (mean over seeds), and {c['top_clusters_taken_whole']['mean']:.1f} small ones (below "
                     f"the water-filling cap) are taken whole, giving "
                     f"{100 * c['subset_share_from_whole_clusters']['mean']:.0f}% of the curated set")
    for a, b in (("curated", "raw"), ("manual", "raw"), ("raw", "random_init"), ("curated", "random_init"),
                 ("raw", "pixel_gbm"), ("curated", "pixel_gbm")):
        if a not in r or b not in r:
            continue
        for m in ("r2_mean", "block_r2_mean"):
            d, spread, word, noise = compare(r, a, b, m)
            rel = d / abs(r[b][m]["mean"]) if r[b][m]["mean"] else float("nan")
            lines.append(f"- `{a}` {word} `{b}` on `{m}` by {d:+.3f} ({100 * rel:+.0f}% relative; {noise} the "
                         f"seed spread of {spread:.3f})")
        if a == "curated" and b == "raw":
            regions = doc["regions"]
            wins = sum(r[a][f"r2_{g}"]["mean"] > r[b][f"r2_{g}"]["mean"] for g in regions)
            lines.append(f"- `curated` has the higher mean R² in {wins} of {len(regions)} evaluation regions")
    return lines


def _dedup_lines(doc: dict) -> list[str]:
    """The near-duplicate removal every variant selected after, in words (older metrics.json files: none)."""
    dd = doc.get("dedup") or {}
    if dd.get("threshold") is None:
        return []
    return [f"- Near-duplicate tiles were removed before any variant selected (cosine >= {dd['threshold']} between "
            f"pool-centred embeddings, from `{dd['threshold_from']}`): {dd['kept_tiles']:,} of "
            f"{dd['input_tiles']:,} pool tiles kept; "
            f"{_and([f'`{v}`' for v in ('raw', 'curated', 'manual') if v in doc['results']]) or 'every variant'} "
            f"draw from those." + _dropped_words(dd)]


def _and(words: list[str]) -> str:
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def _dropped_words(dd: dict) -> str:
    """Which labels the near-duplicate removal thinned, in words (none recorded: empty)."""
    gone = dd.get("dropped_site") or dd.get("dropped_land_cover")
    if not gone:
        return ""
    return " Dropped per " + ("site" if "dropped_site" in dd else "land-cover class") + ": " + ", ".join(
        f"{k} {v:,}" for k, v in sorted(gone.items(), key=lambda kv: -kv[1])) + "."


def _skipped_lines(doc: dict) -> list[str]:
    return [f"- Variant `{v}` was not run: {why}." for v, why in (doc.get("skipped_variants") or {}).items()]


def _label_words(doc: dict) -> str:
    """What ``label_entropy`` is measured over, in words (older metrics.json files: land cover)."""
    kind = doc.get("label_kind") or (doc.get("data") or {}).get("label_kind") or "land_cover"
    return "land-cover classes" if kind == "land_cover" else "sites (scenes over overlapping ground share one)"


def _forest_words(data: dict) -> str:
    """The pool's forest share in words: "unknown" without land-cover rasters (not 0%), then its sites."""
    share = data.get("pool_forest_share")
    if share is not None:
        return f"{100 * share:.1f}% of them forest"
    sites = data.get("pool_label_shares") or {}
    spread = f" at {len(sites)} sites (largest {100 * max(sites.values()):.1f}% of the tiles)" if sites else ""
    return f"forest share unknown (no land-cover rasters){spread}"


def _head_protocol(head: dict) -> str:
    """The head's training protocol in words (older metrics.json files lack the keys)."""
    parts = []
    if head.get("image_skip"):
        parts.append("the bands joining its output block at full resolution")
    if head.get("symmetries"):
        parts.append("the labelled tiles seen under all 8 rotations and mirrors")
    if int(head.get("n_fits", 1)) > 1:
        parts.append(f"{head['n_fits']} heads averaged")
    return f" ({'; '.join(parts)})" if parts else ""


def _design(doc: dict) -> list[str]:
    """The design section: the run's ``design_note`` (the real arm) or the generated pool's design."""
    if doc.get("design_note"):
        return [f"- {doc['design_note'].strip()}", *_dedup_lines(doc), *_skipped_lines(doc), ""]
    return [
              "- The pool is long-tailed as the paper's is: mostly water, bare ground, cropland and urban tiles; "
              "forests of four kinds (conifer, broadleaf, woodland, plantation) are the tail, each present as tens "
              "of tiles (pool row of the make-up table). Each variant trains on the same number of tiles (about "
              "13% of the pool; the paper curated 9M of 18M) with the same steps x batch, augmentations and head "
              "protocol; only the tiles differ.",
              "- Curation runs the paper's hierarchy scaled to the pool (about 10 tiles per level-1 cluster, each "
              "level 4-5x smaller, r about half the mean cluster size, 10 resampling steps) on pooled features of "
              "DINO trained on the raw pool, as the paper embeds its satellite pool with a model trained on raw "
              "data.", *_dedup_lines(doc),
              "- Heights are meant to be read from structure: every tree has its own brightness and NIR factor and "
              "NIR rises only weakly with height, so a pixel's colour says \"crown\" (and which kind) but little "
              "about \"how tall\". "
              "Two references bound the comparison: `random_init` (the same head on an untrained backbone: what "
              "pretraining adds) and `pixel_gbm` (gradient-boosted trees on one pixel's four band values, fitted "
              "on the same labelled pixels: how far colour alone goes).",
              "- `manual` pretrains on tiles balanced over the true land-cover classes (the only variant that "
              "reads them, by design): it shows whether a backbone trained on a forest-rich set helps the height "
              "head at this scale at all, i.e. what perfect concept balance could give curation.",
              "- The head (DPT-like, on the frozen teacher's multi-scale maps) is trained with one fixed protocol "
              "for every variant; the seed changes curation sampling, the raw draw, pretraining and the head. The "
              "finest map of a 32 px tile is 8 x 8, so the bands also reach the head's output block at full "
              "resolution (without them the head fell below `pixel_gbm`); the labelled tiles are seen under all 8 "
              "rotations and mirrors, because one evaluation region has its sun on the other side and a head that "
              "knew one shadow direction failed there; and several heads are fitted per backbone and averaged, "
              "because a single fit on a small labelled set adds its own noise to the seed spread.", "", ""]


def _figure_lines(folder: Path, target: str) -> list[str]:
    """The figures the run wrote, with what each shows."""
    lines = []
    if (folder / "land_cover_shares.png").exists():
        lines.append("- `land_cover_shares.png`: land-cover make-up (majority class per tile) of the pool and of "
                     "each pretraining set (first seed); curation never reads these labels.")
    lines += [f"- `height_panels.png`: per evaluation region, image / true {target} / predicted {target} of each "
              "variant (first seed).",
              f"- `height_scatter.png`: predicted vs true pixel {target} over all evaluation regions.",
              "- `r2_per_region.png`: R² and block R² per region, mean ± std over seeds.", ""]
    for name, alt in (("land_cover_shares", "land cover"), ("height_panels", "panels"),
                      ("height_scatter", "scatter"), ("r2_per_region", "per region")):
        if (folder / f"{name}.png").exists():
            lines += [f"![{alt}]({name}.png)", ""]
    return lines


def _shown(folder: Path) -> str:
    """``folder`` relative to the repository when inside it (as the README's regeneration command shows it)."""
    from experiments.kit.record import ROOT
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def write_readme(folder: Path, command: str | None = None) -> Path:
    folder = Path(folder)
    doc = json.loads((folder / "metrics.json").read_text())
    r = doc["results"]
    variants = list(r)
    regions = doc["regions"]
    seeds = doc["seeds"]
    t = doc.get("timings", {})
    d = doc.get("data", {})
    n_bands = len((d.get("bands") or {}).get("bands") or [0] * 4)  # runs before band inference read 4 bands
    target = doc.get("target") or "canopy height"
    entropy = any("label_entropy" in r[v] for v in variants)
    land = d.get("pool_forest_share") is not None or "forest_share" in r.get("raw", {})
    lines = [
        f"# Study 4: satellite-tile curation, self-supervised pretraining, {target.replace(' ', '-')} regression"
        + (" (real data)" if d.get("real") else ""),
        "",
        f"Generated by `python -m experiments.satellite.report {_shown(folder)}` from `metrics.json`; do not "
        "edit by hand.",
        "",
        f"Command: `{command or doc.get('command', '?')}`",
        "",
        f"Data: {d.get('pool_tiles', '?'):,} pool tiles of {doc['tile_size']} px cut from GeoTIFF scenes of "
        f"several regions, {_forest_words(d)}; a labelled set of {d.get('labelled_tiles', '?')} tiles; "
        f"{d.get('eval_tiles', '?')} "
        f"evaluation tiles from {len(regions)} held-out region{'s' if len(regions) != 1 else ''} "
        f"({', '.join(regions)}). Every variant pretrains "
        f"DINO (`{doc['backbone']}`, {n_bands} input bands) on {doc['subset_size']:,} tiles for "
        f"{doc['train_steps']} steps "
        f"x {doc['batch_size']} tiles; a DPT-like head (stages {doc['head']['feature_indices']}) is then trained on "
        f"the frozen backbone for {doc['head']['steps']} steps{_head_protocol(doc['head'])}. Curation embeds the "
        f"pool with DINO trained "
        f"{doc['embedder_steps']} steps on the raw pool. Seeds: {seeds} (mean ± std over seeds). Block R²: "
        f"{doc['block_px']} x {doc['block_px']} px blocks.",
        "",
        "## Averaged over the evaluation regions",
        "",
        "| variant | " + " | ".join(n for _, n, _ in MAIN) + (" | label entropy" if entropy else "")
        + (" | forest share of the training set" if land else "") + " |",
        "|---|" + "---|" * (len(MAIN) + entropy + land),
    ]
    for v in variants:
        row = [mean_std(r[v].get(f"{k}_mean"), dg, missing="–") for k, _, dg in MAIN]
        row += [mean_std(r[v].get("label_entropy"), 3, missing="–")] if entropy else []
        row += [mean_std(r[v].get("forest_share"), 3, missing="–")] if land else []
        lines.append(f"| `{v}` | " + " | ".join(row) + " |")
    pool_h = d.get("pool_label_entropy")
    lines += ["", f"Primary metric: `r2_mean` (pixel R² of {target} averaged over regions)."
              + (f" Label entropy: normalised entropy of the {_label_words(doc)} over the variant's training set (1: "
                 "spread evenly over the pool's labels; measured only, curation never reads them; none for the "
                 "variants that pretrain on nothing)" + (f"; the pool's is {pool_h:.3f}." if pool_h is not None
                                                          else ".") if entropy else ""), ""]
    site_keys = [k for k in (r.get("raw") or {}) if k.startswith("share_site_")]
    if site_keys:  # without land cover: what each variant trained on, by site
        pool = d.get("pool_label_shares", {})
        shown = [v for v in variants if site_keys[0] in r[v]]
        lines += ["## Make-up of the training sets by site", "",
                  "Share of tiles per site (mean over seeds); measured only.", "",
                  "| site | pool | " + " | ".join(f"`{v}`" for v in shown) + " |", "|---|---|" + "---|" * len(shown)]
        for k in site_keys:
            n = k[len("share_site_"):]
            lines.append(f"| {n} | {pool.get(n, float('nan')):.4f} | "
                         + " | ".join(f"{r[v][k]['mean']:.4f}" for v in shown) + " |")
        lines.append("")
    classes = doc.get("land_cover_classes", [])
    shared = [v for v in variants if f"share_{classes[0]}" in r[v]] if classes else []
    if shared:  # what each variant trained on, measured with the land-cover labels (curation never reads them)
        pool = d.get("pool_land_cover_shares", {})
        lines += ["## Make-up of the training sets", "",
                  "Share of tiles per majority land-cover class (mean over seeds); measured with the labels, which "
                  "curation and training never read.", "",
                  "| set | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes),
                  "| pool | " + " | ".join(f"{pool.get(c, float('nan')):.3f}" for c in classes) + " |"]
        for v in shared:
            lines.append(f"| `{v}` | " + " | ".join(f"{r[v][f'share_{c}']['mean']:.3f}" for c in classes) + " |")
        lines.append("")
    lines += ["## Per region", "",
              "| region | variant | " + " | ".join(n for _, n, _ in MAIN) + " |",
              "|---|---|" + "---|" * len(MAIN)]
    for g in regions:
        for v in variants:
            lines.append(f"| {g} | `{v}` | " + " | ".join(mean_std(r[v].get(f"{k}_{g}"), dg, missing="–")
                                                          for k, _, dg in MAIN)
                         + " |")
    lines += ["", "## What the numbers say", "", *verdicts(doc), "",
              "## Design of the small-scale analog", "",
              *_design(doc),
              "## Figures", "",
              *_figure_lines(folder, target),
              "## Run time (measured)", ""]
    if doc.get("timing_note"):
        lines.append(f"- {doc['timing_note'].strip()}")
    if t:
        seed_total = sum(doc.get("seed_seconds", {}).values())
        embed = t.get("embed_s", 0)
        lines.append(f"- compute time of the {len(seeds)} seed(s): {seed_total / 60:.1f} min (sum of the per-seed times "
                     f"below, each measured when that (variant, seed) was trained; results are cached and merged); "
                     f"this call's wall time {t.get('total_s', float('nan')) / 60:.1f} min")
        reused = f" (reused from the cache; computing it took {t['embed_computed_s']:.0f} s)" \
            if "embed_computed_s" in t else " (reused from the cache)"
        lines.append(f"- data (scene generation + windowed tiling, or the tile cache): {t.get('data_s', 0):.0f} s; "
                     f"pool embedder: {embed:.0f} s" + (reused if embed < 60 else ""))
        for s, sec in doc.get("seed_seconds", {}).items():
            parts = ", ".join(f"{v} {t.get(f'seed{s}_{v}_s', float('nan')):.0f} s" for v in variants)
            lines.append(f"- seed {s}: {sec / 60:.1f} min (curation {t.get(f'seed{s}_curate_s', 0):.0f} s, "
                         f"{parts})")
        start = f"; 1-min load average at the start {t['load_at_start']:.1f}" if "load_at_start" in t else ""
        lines.append(f"- machine: {doc.get('machine', 'see metrics.json')}{start}")
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    return readme_cli(write_readme, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
