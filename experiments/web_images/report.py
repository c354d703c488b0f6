"""README of ``results/web_images/`` generated from its ``metrics.json``.

    python -m experiments.web_images.report results/web_images [--command "python run.py ..."]
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.kit.publish import readme_cli
from experiments.kit.metrics import compare, mean_std, no_value

ROOT = Path(__file__).resolve().parents[2]

ACCURACY = ["knn_top1", "linear_top1", "tail_knn_top1", "tail_linear_top1", "shifted_knn_top1",
            "shifted_linear_top1"]
BALANCE = ["concept_entropy", "group_entropy", "concept_coverage", "tail_share", "junk_fraction", "duplicate_fraction"]


def _paired(doc: dict, a: str, b: str, metric: str) -> dict[int, float]:
    """Per-seed ``a - b`` on ``metric`` over the seeds both variants ran."""
    spv = doc.get("seeds_per_variant", {})
    vals = {}
    for v in (a, b):
        seeds = spv.get(v, doc["seeds"])
        values = doc["results"][v][metric].get("values", [])
        if len(values) != len(seeds):
            return {}
        vals[v] = dict(zip(seeds, values))
    return {s: vals[a][s] - vals[b][s] for s in vals[a] if s in vals[b]}


def verdicts(doc: dict) -> list[str]:
    """Plain statements of the comparisons the study must show, with the noise made explicit."""
    r = doc["results"]
    lines = []
    for a, b in (("curated", "raw"), ("curated", "flat"), ("curated", "manual")):
        if a not in r or b not in r:
            continue
        for m in ("knn_top1", "linear_top1", "tail_knn_top1", "shifted_knn_top1"):
            if m not in r[a] or m not in r[b]:
                continue
            d, spread, word, noise = compare(r, a, b, m)
            line = (f"- `{a}` {word} `{b}` on `{m}` by {100 * d:+.1f} points ({noise} the seed spread of "
                    f"{100 * spread:.1f})")
            diffs = _paired(doc, a, b, m) if b == "raw" else {}
            if diffs:  # same seed, same evaluation set: the paired view the means hide
                ahead = sum(x > 0 for x in diffs.values())
                line += (f"; ahead on {ahead} of {len(diffs)} seeds (per seed: "
                         + ", ".join(f"{100 * x:+.1f}" for x in diffs.values()) + ")")
            lines.append(line)
    for m in ("concept_entropy", "group_entropy", "junk_fraction", "duplicate_fraction"):
        if all(v in r and m in r[v] for v in ("curated", "raw")):
            line = (f"- `{m}` of the training set: curated {r['curated'][m]['mean']:.3f} vs raw "
                    f"{r['raw'][m]['mean']:.3f}")
            ceiling = doc.get("label_balanced_concept_entropy")
            if m == "concept_entropy" and ceiling is not None:
                closed = (r["curated"][m]["mean"] - r["raw"][m]["mean"]) / max(ceiling - r["raw"][m]["mean"], 1e-12)
                line += (f"; the most balanced subset of this pool (the budget water-filled over the true concepts) "
                         f"would reach {ceiling:.3f}, so curation closes {100 * closed:.0f}% of raw's gap to it")
            lines.append(line)
    if "random_init" in r:  # floor check: does training beat the untrained network at all?
        base = r["random_init"]
        for m in ("knn_top1", "linear_top1", "shifted_knn_top1", "shifted_linear_top1"):
            if m not in base:
                continue
            gains = {v: r[v][m]["mean"] - base[m]["mean"] for v in r if v != "random_init" and m in r[v]}
            noise = max([base[m]["std"]] + [r[v][m]["std"] for v in gains])
            if gains and max(gains.values()) <= noise:
                lines.append(f"- `{m}` is at the floor: no trained variant beats the untrained network "
                             f"(`random_init`) beyond the seed spread")
    return lines


def _selection_checks(folder: Path) -> list[str]:
    """The no-training balance checks stored beside metrics.json (``selection_*.json``, written by
    ``python -m experiments.web_images.selection_stats --json ...``), one table each with its command."""
    from .selection_stats import table

    files = sorted(folder.glob("selection_*.json"))
    if not files:
        return []
    lines = ["## Selection balance under other settings (no training)", "",
             "Mean over the listed seeds of the balance of each training set; the settings the study does not use "
             "were checked this way before any training.", ""]
    for f in files:
        doc = json.loads(f.read_text())
        extra = " ".join(doc.get("overrides", []))
        cmd = doc.get("command") or (  # files written before the command was recorded: the study's default
            f"python -m experiments.web_images.selection_stats --seeds {','.join(map(str, doc['seeds']))} "
            f"--json results/web_images/{f.name} {extra}").strip()
        read = ""
        if doc.get("input_size"):
            read = (f" at {doc['input_size']} px, " + ("from the pool's files" if doc.get("from_source")
                                                       else "from the study's training copies"))
        lines += [f"`{cmd}` (embedder `{doc['embedder']}`{read}, levels {doc['levels']}, {doc['subset_size']:,} per set):",
                  "", table(doc), ""]
    return lines


def _setup_lines(doc: dict) -> list[str]:
    """What the pool, the hierarchy and the budget were in this run, where a reader could assume otherwise."""
    lines = []
    d = doc.get("dedup")
    if d is not None:
        lines.append(f"Near-duplicates: {d['dropped_rows']:,} of {d['input_rows']:,} pool images removed at cosine "
                     f"{d['threshold']} before curation; `curated` and `flat` select from the other "
                     f"{d['kept_rows']:,}, `raw` draws from the whole pool." if d.get("threshold") is not None else
                     "Near-duplicates: not removed (no dedup threshold); every variant selects from the whole pool.")
    for v, levels in doc.get("levels", {}).items():
        how = "sized from the deduplicated pool" if doc.get("levels_sized_from_pool", {}).get(v) else "as given"
        lines.append(f"`{v}` levels ({how}): k = {[lv['n_clusters'] for lv in levels]}, "
                     f"r = {[lv['sample_size'] for lv in levels]}.")
    for v, n in doc.get("training_set_sizes", {}).items():
        if n < doc["subset_size"]:
            lines.append(f"**Unequal budget:** `{v}` trains on {n:,} images, fewer than the {doc['subset_size']:,} "
                         "of the other variants (its classes hold no more), so its comparison with them is not at "
                         "the same budget.")
    excluded = doc.get("eval_excluded_classes", [])
    if excluded:
        lines.append(f"{len(excluded)} class(es) too small for the evaluation split are in the pool but not "
                     f"evaluated: {', '.join(excluded[:20])}{', ...' if len(excluded) > 20 else ''}.")
    if doc.get("missing_results"):
        lines.append(f"Not in the cache, so not reported (skip_uncached=true): {', '.join(doc['missing_results'])}.")
    return [x for line in lines for x in (line, "")]


def write_readme(folder: Path, command: str | None = None) -> Path:
    folder = Path(folder)
    doc = json.loads((folder / "metrics.json").read_text())
    r = doc["results"]
    variants = list(r)
    t = doc.get("timings", {})
    seeds = doc["seeds"]
    generated = doc.get("data_kind", "generated") == "generated"
    n_eval = doc.get("eval_classes", doc["n_concepts"])
    pool = (f"{doc['pool_size']:,} generated images ({doc['n_concepts']} concepts, long-tailed, near-duplicates, junk)"
            if generated else f"{doc['pool_size']:,} images ({doc['data_kind']}, {doc['n_concepts']} classes)")
    shifted = ("; shifted = the same concepts drawn as renditions (pale fill, ink outline, paper background), the "
               "ImageNet-R/Sketch analog" if generated else "")
    real = doc["experiment"].endswith("_real")
    lines = [
        "# Study 2, real-data arm: curation of a real icon pool, self-supervised pretraining, frozen-feature "
        "evaluation" if real else "# Study 2: web-image curation, self-supervised pretraining, frozen-feature evaluation",
        "",
        f"Generated by `python -m experiments.web_images.report {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}` "
        "from `metrics.json`; do not edit by hand.",
        "",
        f"Command: `{command or doc.get('command', '?')}`",
        "",
        f"Pool: {pool} at {doc['image_size']}x{doc['image_size']}. Every variant trains on {doc['subset_size']:,} "
        f"images for {doc['train_steps']} steps x batch {doc['batch_size']} (DINO, `{doc['backbone']}`). Curation "
        f"embedder: `{doc['embedder']}`. Seeds: {seeds}. Accuracies in % (mean ± std over seeds); k-NN is "
        f"cosine with k = 20 on a balanced labelled bank; tail = the {len(doc['tail_concepts'])} rarest concepts "
        f"of the pool{shifted}; chance is {100 / max(n_eval, 1):.2g}%.",
        "",
        *_setup_lines(doc),
        *([f"Design: {doc['design_note'].strip()}", ""] if doc.get("design_note") else []),
        "## Frozen-feature accuracy",
        "",
        "| variant | " + " | ".join(ACCURACY) + " |",
        "|---|" + "---|" * len(ACCURACY),
    ]
    spv = doc.get("seeds_per_variant", {})
    sizes = doc.get("training_set_sizes", {})
    for v in variants:
        n = len(spv.get(v, seeds))
        label = v if n == len(seeds) else f"{v} (seed{'s' if n > 1 else ''} {spv[v]} only)"
        if sizes.get(v, doc["subset_size"]) < doc["subset_size"]:
            label += f" ({sizes[v]:,} images only)"
        lines.append(f"| {label} | " + " | ".join(mean_std(r[v].get(m), 1, scale=100, missing="–")
                                                 for m in ACCURACY) + " |")
    lines += ["", "## Concept balance of the training sets", "",
              *(["`concept_entropy` is this study's `label_entropy` (the normalised entropy of the labels over each "
                 "variant's training set, the name every study's metrics.json gives it).", ""] if real else []),
              "| variant | " + " | ".join(BALANCE) + " |", "|---|" + "---|" * len(BALANCE)]
    for v in variants:
        if "concept_entropy" in r[v]:
            lines.append(f"| {v} | " + " | ".join(
                "–" if no_value(r[v].get(m)) else f"{r[v][m]['mean']:.3f}" for m in BALANCE) + " |")
    lines += ["", "## What it shows", "", *verdicts(doc), "",
              "## Measured time", "",
              f"- this invocation ({len(seeds)} seed(s); stages found in the cache are reused, not rerun): "
              f"{t.get('total_s', float('nan')) / 60:.1f} min",
              f"- data generation: {t.get('data_s', 0):.0f} s; embedder + pool embeddings: {t.get('embed_s', 0):.0f} s "
              "(in this invocation; cached after the first run)"]
    for s, sec in doc.get("seed_seconds", {}).items():
        lines.append(f"- seed {s}: curation + every variant trained and evaluated, summed: {sec / 60:.1f} min")
    lines += ["", "Times are wall-clock on the machine that produced the run (2 CPU cores shared with other jobs); "
              "a result reused from the cache counts its original time, and the per-seed sums add up the times of "
              "variants that may have run in parallel processes.", ""]
    if doc.get("timing_note"):
        lines += [f"Conditions: {doc['timing_note']}", ""]
    lines += _selection_checks(folder)
    lines += [
              "## Figures", "", "![accuracy](accuracy.png)", "", "![concepts](concept_histogram.png)", "",
              "![samples](samples.png)", ""]
    for f in sorted(folder.glob("cluster_sizes_*.png")):
        lines += [f"![{f.stem}]({f.name})", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> Path:
    return readme_cli(write_readme, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
