"""Write ``results/text/README.md`` from ``results/text/metrics.json`` (nothing in it is typed by hand):

    python -m experiments.text.readme [results/text]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.kit.metrics import mean_std
from sslcurate.io import atomic_write_bytes

from .pool import JUNK_DOMAINS, SEO_TOPICS
from .report import mc_table, results_table, shares_table

ROOT = Path(__file__).resolve().parents[2]


def verdict(doc: dict, a: str, b: str, metric: str = "val_ppl_macro") -> str:
    """Plain words on ``a`` vs ``b``: the gap against the seed spread (largest std of the two)."""
    r = doc["results"]
    if a not in r or b not in r:
        return ""
    ma, mb = r[a][metric]["mean"], r[b][metric]["mean"]
    spread = max(r[a][metric]["std"], r[b][metric]["std"])
    gap = mb - ma
    lower = "lower" if gap > 0 else "higher"
    if len(doc["seeds"]) < 2:
        return f"- `{a}` vs `{b}`: {metric} {ma:.2f} vs {mb:.2f} (one seed: no spread to compare with)."
    within = abs(gap) <= spread
    rel = 100 * abs(gap) / mb
    words = "within the seed spread: no difference can be claimed" if within else \
        f"{abs(gap) / max(spread, 1e-12):.1f}x the seed spread ({spread:.2f})"
    return f"- `{a}` vs `{b}`: {metric} {ma:.2f} vs {mb:.2f}, {abs(gap):.2f} ({rel:.0f}%) {lower} for `{a}`; {words}."


def per_domain_winners(doc: dict) -> str:
    r = doc["results"]
    lines = []
    for d in doc["macro_domains"]:
        key = f"ppl_{d}"
        best = min(r, key=lambda v: r[v][key]["mean"])
        vals = ", ".join(f"{v} {r[v][key]['mean']:.1f}" for v in r)
        lines.append(f"- {d}: lowest `{best}` ({vals})")
    return "\n".join(lines)


def junk_share(shares: dict) -> float:
    """Fraction of tokens from generated junk in a ``shares`` record (``{"tokens": {domain: share}}``)."""
    return sum(shares["tokens"].get(j, 0) for j in JUNK_DOMAINS)


def junk_line(doc: dict) -> str:
    """Share of training tokens from generated junk (boilerplate, spam, SEO articles, duplicates), per variant."""
    parts = [f"pool {100 * junk_share(doc['pool']['shares']):.1f}%"]
    dd = doc.get("pool_dedup") or {}
    if dd.get("threshold") is not None:
        parts.append(f"deduplicated pool {100 * junk_share(dd['shares']):.1f}%")
    parts += [f"{v} {100 * junk_share(doc['shares'][v]):.1f}%" for v in doc["shares"]]
    return "Junk (boilerplate + spam + SEO + duplicates) share of training tokens: " + ", ".join(parts) + "."


def label_balance_lines(doc: dict) -> list[str]:
    """Each variant's ``label_entropy`` (normalised entropy of the domains over its training documents), with the
    words for curated vs raw against the seed spread."""
    r = doc["results"]
    have = [v for v in r if "label_entropy" in r[v]]
    if not have:
        return []
    lines = ["Label balance (`label_entropy`: normalised entropy of the domains over each variant's training "
             "documents; 1 = every domain equally): " + ", ".join(
                 f"`{v}` {mean_std(r[v]['label_entropy'], 3)}" for v in have) + "."]
    if {"curated", "raw"} <= set(have) and len(doc["seeds"]) > 1:
        gap = r["curated"]["label_entropy"]["mean"] - r["raw"]["label_entropy"]["mean"]
        spread = max(r["curated"]["label_entropy"]["std"], r["raw"]["label_entropy"]["std"])
        lines.append(f"Curated is {'more' if gap > 0 else 'less'} domain-balanced than raw by {abs(gap):.3f}, "
                     + ("beyond" if abs(gap) > spread else "WITHIN") + f" the seed spread ({spread:.3f}).")
    return lines + [""]


def dedup_line(doc: dict) -> str:
    dd = doc.get("pool_dedup") or {}
    if dd.get("threshold") is None:
        return "No near-duplicate removal: every variant selects from the whole pool."
    return (f"Near-duplicate removal (cosine >= {dd['threshold']} on the SBERT embeddings, `sslcurate.deduplicate`) "
            f"leaves {dd['size']:,} documents ({dd['tokens']:,} tokens): "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(dd["domains"].items(), key=lambda kv: -kv[1]))
            + ". Every variant selects from these (raw is a random subset of the deduplicated pool, as in the paper).")


def _loads(doc: dict) -> list[float]:
    runs = doc.get("timings_per_run_s") and doc.get("machines") or [doc.get("machine", {})]
    return [m.get(k) for m in runs for k in ("loadavg_start", "loadavg_end") if m.get(k) is not None]


def load_words(doc: dict) -> str:
    """How loaded the machine was while the runs were measured (load averages recorded by each run)."""
    loads = _loads(doc)
    if not loads:
        return "machine load not recorded"
    return f"1-minute load average between {min(loads):.1f} and {max(loads):.1f} at the start and end of the runs"


def shared_machine(doc: dict) -> bool:
    """Whether other jobs ran beside the measured runs: a load average above the runs' own threads + 1 (the
    runs' threads count toward the load, so a load near them is an otherwise idle machine)."""
    threads = (doc.get("machine") or {}).get("cpu_threads")
    loads = _loads(doc)
    return bool(loads) and isinstance(threads, (int, float)) and max(loads) > threads + 1


# settings renamed when every study's trainer group took one schema: recorded commands are shown with today's names
RENAMED = {"trainer.steps=": "trainer.max_steps=", "trainer.threads=": "torch_threads="}


def renamed_settings(command: str) -> str:
    """``command`` with the settings of :data:`RENAMED` under their current names, so that it runs as shown."""
    words = command.replace("\n", " \n ").split(" ")
    for i, w in enumerate(words):
        for old, new in RENAMED.items():
            if w.startswith(old):
                words[i] = new + w[len(old):]
    return " ".join(words).replace(" \n ", "\n")


def trainer_steps(trainer: dict):
    """Training steps of a run's trainer settings (``max_steps``; runs written before the trainer schema was shared
    by every study call it ``steps``), or "?" when not recorded."""
    return trainer.get("max_steps", trainer.get("steps", "?"))


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def design_section(doc: dict) -> list[str]:
    """How the small-scale study mirrors the paper's text setting, from the settings the runs recorded."""
    st = doc.get("settings") or {}
    cur, tr, model, junk = st.get("curation", {}), st.get("trainer", {}), st.get("model", {}), st.get("junk", {})
    dd = doc.get("pool_dedup") or {}
    lines = ["## Design (what makes the small-scale study resemble the paper's)", ""]
    if dd.get("threshold") is not None:
        lines.append("- **Deduplicated pool.** The paper curates pools that were deduplicated first. Here "
                     "near-duplicates "
                     f"(cosine >= {dd['threshold']} between SBERT embeddings, greedy, `sslcurate.deduplicate`) are "
                     f"removed before any variant selects: {doc['pool']['size']:,} -> {dd['size']:,} documents. "
                     "Raw is a random subset of the deduplicated pool, CCNet ranks it, curation clusters it.")
    if junk.get("spam_campaigns"):
        lines.append(f"- **Spam as campaigns.** The {junk.get('spam', 0):,} spam pages come from "
                     f"{junk['spam_campaigns']} campaigns of Zipf-like size (one template, product, adjective and "
                     "phone "
                     "number each; city and numbers vary per page), as SEO doorway pages are mass-produced. Filling "
                     "every slot of every page at random, as the first version did, made each page a new "
                     "combination, and spam then spread over many SBERT clusters, each of which balanced sampling "
                     "gives an equal share.")
    if junk.get("seo"):
        topics = junk.get("seo_topics") or list(SEO_TOPICS)
        lines.append(f"- **A content farm.** {junk['seo']:,} machine-spun SEO articles on "
                     f"{', '.join(topics)}: every page is spun from the same sentence templates, so near-duplicate "
                     "removal keeps almost all of them and they remain the largest block of the deduplicated pool, "
                     "as low-value pages remain in a deduplicated crawl, while their meaning stays within "
                     f"{'one topic' if len(topics) == 1 else 'these topics'}.")
    levels = (doc.get("curation_levels") or {}).get("levels") or cur.get("levels") or []
    if levels:
        ks = " -> ".join(str(lv["n_clusters"]) for lv in levels)
        rs = ", ".join(str(lv["sample_size"]) for lv in levels)
        lines.append(f"- **Hierarchy scaled to the pool.** k = {ks} ({len(levels)} levels; paper's web images: ~74 "
                     f"points per level-1 cluster, each level 5-20x smaller), r = {rs} (about half the mean "
                     f"cluster size), {levels[0].get('resampling_steps')} resampling steps, "
                     f"{levels[0].get('n_iters')} Lloyd iterations; target {_count(cur.get('target_size'))} "
                     "documents, random leaf sampling.")
    if tr and model:
        epochs = doc["train_tokens"] / max(doc["budget_tokens"], 1)
        opt = tr.get("optim") or {}
        schedule = ""
        steps = trainer_steps(tr)
        if {"lr", "warmup_fraction"} <= set(opt) and isinstance(steps, int):
            schedule = (f"; AdamW, lr {opt['lr']:g} after {int(opt['warmup_fraction'] * steps)} warm-up "
                        "steps, cosine decay")
        lines.append(f"- **Language model.** A GPT-2-style decoder ({model.get('n_layers')} layers, "
                     f"d = {model.get('d_model')}, context {model.get('context')}, "
                     f"vocabulary {model.get('vocab_size')}) "
                     f"trained for {steps} steps x {tr.get('batch_size')} windows = "
                     f"{doc['train_tokens']:,} tokens on {doc['budget_tokens']:,} distinct tokens of each "
                     f"variant ({epochs:.1f} passes), the same for every variant{schedule}.")
    lines += ["- Ground-truth domains are read only by the evaluation and the tables below; curation sees SBERT "
              "embeddings, CCNet sees the text, training sees tokens.", ""]
    return lines


def concepts_lines(doc: dict) -> list[str]:
    """Top-level clusters of each seed's curation counted by majority domain (from experiments.text.concepts)."""
    c = doc.get("concepts")
    if not c:
        return []
    lines = ["Top-level clusters of the curation by their majority domain (balanced sampling gives each top-level "
             "cluster about the same quota, so these counts, not the domains' sizes, set the curated mix; "
             "`python -m experiments.text.concepts`):", ""]
    for seed, r in c.items():
        k = " -> ".join(map(str, r["levels"]))
        top = sorted(r["top_clusters"].items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append(f"- seed {seed} (k = {k}): " + ", ".join(f"{d} {n}" for d, n in top)
                     + "; documents in the deduplicated pool: "
                     + ", ".join(f"{d} {n:,}" for d, n in sorted(r["points"].items(), key=lambda kv: -kv[1])))
    return lines + [""]


def reading_lines(doc: dict) -> list[str]:
    """What the numbers say about the paper's claim, worded from metrics.json."""
    r = doc["results"]
    if not {"raw", "curated"} <= set(r) or len(doc["seeds"]) < 2:
        return []
    gap, spread = lead(r, "curated", "raw")
    if gap > spread:
        claim = "holds here: `curated` beats `raw` on macro perplexity by more than the seed spread"
    elif gap < -spread:
        claim = ("is not reproduced here: `curated` is worse than `raw` on macro perplexity, by more than the seed "
                 "spread")
    else:
        claim = "is not shown here: `curated` and `raw` differ by less than the seed spread"
    lines = ["## Reading", "",
             f"- The first half of the paper's text finding, curated clearly better than raw, {claim}."]
    if "ccnet" in r:
        cc_gap, cc_spread = lead(r, "curated", "ccnet")
        lines.append("- Its second half, curated on par with CCNet, " + (
            "holds: they differ by less than the seed spread." if abs(cc_gap) <= cc_spread else
            f"{'does not hold' if cc_gap < 0 else 'is exceeded'}: `{'ccnet' if cc_gap < 0 else 'curated'}` is "
            f"{abs(cc_gap):.1f} lower, more than the seed spread ({cc_spread:.1f})."))
    sh = doc["shares"]
    junk = {v: junk_share(sh[v]) for v in sh}
    why = ""
    if "curated" in sh and "raw" in sh:
        why = (" Balanced sampling gives every top-level cluster a similar quota, so junk that fills a few "
               "clusters, however many documents it has, is cut back to their quota." if junk["curated"] <
               junk["raw"] else " Balanced sampling gives every top-level cluster a similar quota, so junk "
               "that SBERT spreads over several clusters is drawn more often than in a random sample.")
    lines.append("- Junk share of training tokens: " + ", ".join(
        f"{v} {100 * junk[v]:.1f}%" for v in sh) + "." + why)
    doms = doc["macro_domains"]
    lines.append("- Evaluation domains' share of training tokens: " + "; ".join(
        f"{v}: " + ", ".join(f"{d} {100 * sh[v]['tokens'].get(d, 0):.0f}%" for d in doms) for v in sh) + ".")
    if all("final_train_loss" in r[v] for v in r):
        lines.append("- Training loss at the last step (nats/token on each variant's own data): " + ", ".join(
            f"{v} {r[v]['final_train_loss']['mean']:.2f}" for v in r) + ".")
    curves = [c for runs in doc.get("learning_curves", {}).values() for c in runs if len(c) >= 2]
    falling = sum(c[-1]["val_ppl_macro"] < c[-2]["val_ppl_macro"] for c in curves)
    if curves:
        lines.append(f"- Held-out macro perplexity still fell between the last two evaluations in {falling} of "
                     f"{len(curves)} runs: " + ("the models are in early training, and longer training may change "
                                                "the ranking." if falling == len(curves) else
                                                "see the learning curves."))
    lines += crossing_lines(doc)
    return lines + [""]


def mean_curve(runs: list[list[dict]]) -> dict[int, float]:
    """Mean held-out macro perplexity over seeds at every evaluation step all runs share."""
    steps = set.intersection(*({p["step"] for p in c} for c in runs)) if runs else set()
    return {s: float(sum(p["val_ppl_macro"] for c in runs for p in c if p["step"] == s) / len(runs))
            for s in sorted(steps)}


def crossing_lines(doc: dict) -> list[str]:
    """When (if at all) each selected variant's mean learning curve falls below raw's for good: where the curves
    cross, a shorter schedule would rank the variants differently, so the crossing is part of the result."""
    lc = doc.get("learning_curves") or {}
    if "raw" not in lc:
        return []
    raw = mean_curve(lc["raw"])
    out = []
    for v in (x for x in lc if x != "raw"):
        cur = mean_curve(lc[v])
        steps = [s for s in raw if s in cur]
        if len(steps) < 2:
            continue
        below = [cur[s] < raw[s] for s in steps]
        if all(below):
            out.append(f"`{v}` is below `raw` at every evaluation")
        elif below[-1]:
            k = max(i for i, b in enumerate(below) if not b) + 1
            out.append(f"`{v}` is above `raw` until step {steps[k - 1]} and below from step {steps[k]} on")
        else:
            out.append(f"`{v}` is above `raw` at the last evaluation (step {steps[-1]})"
                       + (f", below at step {steps[0]}" if below[0] else ""))
    return ["- Mean learning curves over seeds (held-out macro perplexity; figure below): " + "; ".join(out) + "."
            ] if out else []


def lead(r: dict, a: str, b: str) -> tuple[float, float]:
    """How much lower ``a``'s mean val_ppl_macro is than ``b``'s, and the seed spread to weigh it against (the
    larger of the two standard deviations)."""
    x, y = r[a]["val_ppl_macro"], r[b]["val_ppl_macro"]
    return y["mean"] - x["mean"], max(x["std"], y["std"])


def _versus_raw(r: dict) -> str:
    """curated vs raw on the primary metric, in words, relative to the seed spread."""
    gap, spread = lead(r, "curated", "raw")
    side = "lower" if gap > 0 else "higher"
    within = "more" if abs(gap) > spread else "less"
    return f"`curated` {abs(gap):.1f} {side} than `raw`, by {within} than the seed spread ({spread:.1f})"


def supplement_lines(folder: Path | None) -> list[str]:
    """The headline numbers of every sub-folder of ``folder`` holding a ``metrics.json``: the same study under
    other settings (for example a shorter training schedule), each with its own README and commands."""
    subs = sorted(p.parent for p in Path(folder).glob("*/metrics.json")) if folder is not None else []
    if not subs:
        return []
    lines = ["## The same study under other settings", ""]
    for sub in subs:
        sup = json.loads((sub / "metrics.json").read_text())
        r = sup["results"]
        steps = trainer_steps((sup.get("settings") or {}).get("trainer", {}))
        vals = ", ".join(f"`{v}` {mean_std(r[v]['val_ppl_macro'], 1)}" for v in r)
        verdict = f"; {_versus_raw(r)}" if {"raw", "curated"} <= set(r) and len(sup["seeds"]) > 1 else ""
        tokens = f"{sup['train_tokens']:,} training tokens on {sup['budget_tokens']:,} distinct"
        # a single run's metrics.json does not record its trainer settings: then the tokens alone
        detail = tokens if steps == "?" else f"{steps} steps ({tokens})"
        lines.append(f"- [`{sub.name}/`]({sub.name}/README.md): seeds {sup['seeds']}, {detail}: "
                     f"val_ppl_macro {vals}{verdict}.")
    return lines + [""]


def render(doc: dict, folder: Path | None = None) -> str:
    t = doc["timings_s"]
    n_seeds = len(doc["seeds"])
    train = {v: doc["results"][v]["train_time_s"]["mean"] for v in doc["results"]}
    pool = doc["pool"]
    real = doc.get("experiment", "").endswith("_real")
    has_junk = any(doc["pool"]["domains"].get(j) for j in JUNK_DOMAINS)
    lines = [
        "# Study 3, text, real-data arm: curated vs raw vs a CCNet-style filter on real multi-domain text (CPU scale)"
        if real else "# Study 3, text: curated vs raw web text vs a CCNet-style filter (CPU scale)",
        "",
        "Generated by `python -m experiments.text.readme` from `metrics.json`. Produced by"
        + (" (the trainer settings renamed since the runs, as the recorded commands in metrics.json show):"
           if renamed_settings(doc.get("command", "")) != doc.get("command", "") else ":"),
        "",
        "```",
        renamed_settings(doc.get("command", "python run.py experiment=text publish=true")),
        "```",
        "",
        f"Pool: {pool['size']:,} documents ({pool['tokens']:,} tokens); domains by count: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(pool["domains"].items(), key=lambda kv: -kv[1])) + ".",
        dedup_line(doc),
        f"Every variant trains the same GPT on {doc['budget_tokens']:,} distinct tokens of its own selection, "
        f"for the same {doc['train_tokens']:,} training tokens (steps x batch x context). Evaluation: "
        f"{doc['eval']['size']} held-out documents, the same number per domain "
        f"({', '.join(doc['eval_domains'])}), and {doc['eval']['mc_items']} 4-way continuation items "
        "(chance 0.25).",
        f"Seeds: {doc['seeds']} (each changes curation, the raw sample, initialisation and batch order). "
        "Mean ± std over seeds.",
        "",
        *design_section(doc),
        "## Results",
        "",
        results_table(doc),
        "",
        "`val_ppl_macro` (primary, lower is better) is the mean of the per-domain perplexities of "
        f"{', '.join(doc['macro_domains'])}"
        + ("; `junk` (fresh boilerplate, spam and SEO articles) is reported, not averaged." if has_junk else "."),
        "",
        *label_balance_lines(doc),
        verdict(doc, "curated", "raw"),
        verdict(doc, "curated", "ccnet"),
        verdict(doc, "ccnet", "raw"),
        "",
        *reading_lines(doc),
        "Per domain:",
        "",
        per_domain_winners(doc),
        "",
        "Multiple-choice accuracy per domain:",
        "",
        mc_table(doc),
        "",
        "## What each variant trains on (share of tokens, mean over seeds)",
        "",
        shares_table(doc, "tokens"),
        "",
        *([junk_line(doc), ""] if has_junk else []),
        "Share of documents:",
        "",
        shares_table(doc, "docs"),
        "",
        *concepts_lines(doc),
        "![domain shares](domain_shares.png)",
        "![per-domain perplexity](ppl_per_domain.png)",
        "![learning curves](learning_curves.png)",
        "",
        *supplement_lines(folder),
        "## Time",
        "",
        (f"Measured wall-clock per run; {doc['merged_runs']} runs (one seed each, "
         f"{(doc.get('machine') or {}).get('cpu_threads', '?')} training thread(s) each) on a 2-core machine "
         + (f"shared with other jobs ({load_words(doc)}), so an idle machine is faster."
            if shared_machine(doc) else f"with no other work ({load_words(doc)}, the runs' own threads included).")
         + " Mean seconds per run:"
         if doc.get("merged_runs") else
         f"Measured wall-clock of this run ({n_seeds} seed{'s' * (n_seeds > 1)}, "
         f"{(doc.get('machine') or {}).get('cpu_threads', '?')} CPU thread(s), {load_words(doc)}):"),
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    for k, v in t.items():
        lines.append(f"| {k} | {v:.0f} |")
    if doc.get("timing_note"):
        lines += ["", f"Conditions: {doc['timing_note'].strip()}"]
    emb = doc.get("embedding") or {}
    if emb.get("seconds"):
        lines += ["", f"SBERT embedding of the pool ({emb.get('distinct_texts', '?'):,} distinct texts, "
                  f"{emb.get('max_seq_length')} word pieces, {emb.get('dtype')}) took {emb['seconds']:.0f} s when "
                  f"first computed{' (this run read it from the cache)' if emb.get('cache_hit') else ''}."]
    per_run = doc.get("timings_per_run_s") or []
    if len(per_run) > 1:
        lines += ["", "Total per run: " + ", ".join(
            f"seed {s} {t.get('total', float('nan')):.0f} s"
            + (" (from an empty cache: pool, SBERT, tokenizer and n-gram scores computed)" if t.get("embed", 0) >= 1
               else "") for s, t in zip(doc["seeds"], per_run)) + "."]
    lines += ["", "Training time per run (mean over seeds): "
              + ", ".join(f"{v} {s:.0f} s" for v, s in train.items()) + ".",
              "Cached artifacts (pool, tokenizer, SBERT embeddings, n-gram scores) make later runs skip those "
              "stages; `embed` is 0 when the embeddings came from the cache.", ""]
    return "\n".join(lines)


def write_readme(folder: Path, doc: dict) -> Path:
    """Render ``doc`` to ``folder/README.md`` atomically (a reader never sees half a file)."""
    path = Path(folder) / "README.md"
    atomic_write_bytes(path, render(doc, folder).encode())
    return path


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else ROOT / "results" / "text"
    doc = json.loads((folder / "metrics.json").read_text())
    return write_readme(folder, doc)


if __name__ == "__main__":
    print(main())
