"""Merge the metrics.json of runs that differ only in their seeds (e.g. one job per seed, run in parallel or as a
SLURM array) into one document over all seeds, with figures and README:

    python -m experiments.text.merge RUN_DIR [RUN_DIR ...] --out results/text
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.kit.metrics import metrics_doc
from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json

from .readme import write_readme
from .report import make_figures

MUST_MATCH = ("experiment", "primary_metric", "budget_tokens", "train_tokens", "macro_domains", "eval_domains",
              "variants")


def merge_docs(docs: list[dict]) -> dict:
    """One metrics document over the seeds of ``docs`` (same pool, budget, evaluation and variants)."""
    if not docs:
        raise CurationInputError("nothing to merge")
    first = docs[0]
    for d in docs[1:]:
        for k in MUST_MATCH:
            if d.get(k) != first.get(k):
                raise CurationInputError(f"cannot merge runs that differ in {k!r}: {first.get(k)} vs {d.get(k)}")
        if d["pool"]["fingerprint"] != first["pool"]["fingerprint"]:
            raise CurationInputError("cannot merge runs on different pools")
    seeds = [s for d in docs for s in d["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise CurationInputError(f"duplicate seeds across runs: {seeds}")
    variants = first["variants"]
    results = {v: {m: [x for d in docs for x in d["results"][v][m]["values"]] for m in first["results"][v]}
               for v in variants}
    weights = np.array([len(d["seeds"]) for d in docs], dtype=float)

    def mean_shares(v):
        return {kind: {dom: float(np.average([d["shares"][v][kind][dom] for d in docs], weights=weights))
                       for dom in first["shares"][v][kind]} for kind in ("docs", "tokens")}

    stages = sorted({k for d in docs for k in d["timings_s"]})
    extra = {k: v for k, v in first.items() if k not in ("experiment", "seeds", "primary_metric",
                                                           "higher_is_better", "results")}
    extra.update(
        shares={v: mean_shares(v) for v in variants},
        learning_curves={v: [c for d in docs for c in d["learning_curves"][v]] for v in variants},
        curation_balance={k: v for d in docs for k, v in d.get("curation_balance", {}).items()},
        timings_s={k: round(float(np.mean([d["timings_s"].get(k, 0.0) for d in docs])), 1) for k in stages},
        timings_per_run_s=[d["timings_s"] for d in docs],
        machines=[d.get("machine", {}) for d in docs],
        commands=[d.get("command") for d in docs],
        command="\n".join([*(d.get("command") for d in docs),
                           "python -m experiments.text.merge " + " ".join(sys.argv[1:])]),
        merged_runs=len(docs),
        # a run that computed the SBERT embeddings, if any, has the embedding time itself (not a cache hit)
        embedding=next((d["embedding"] for d in docs if d.get("embedding") and
                        not d["embedding"].get("cache_hit")), first.get("embedding")))
    return metrics_doc(first["experiment"], seeds, first["primary_metric"], first["higher_is_better"], results,
                       **extra)


def run_settings(run: Path) -> dict:
    """The settings the README describes (curation hierarchy, model, trainer, pool), from the run's own
    ``.hydra/config.yaml``; empty when the run has none."""
    path = Path(run) / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(path)
    keep = ("curation", "model", "trainer", "pool_dedup", "embedder", "level_sizing")
    out = {k: OmegaConf.to_container(cfg[k], resolve=False) for k in keep if k in cfg}
    if "data" in cfg and "junk" in cfg.data:
        out["junk"] = OmegaConf.to_container(cfg.data.junk, resolve=False)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.json")
    ap.add_argument("--out", type=Path, required=True, help="folder for the merged metrics.json, figures, README")
    args = ap.parse_args(argv)
    docs = []
    for r in args.runs:
        path = r / "metrics.json"
        if not path.exists():
            raise CurationInputError(f"{path} does not exist")
        docs.append(json.loads(path.read_text()))
    doc = merge_docs(docs)
    settings = run_settings(args.runs[0])
    if settings:
        doc["settings"] = settings
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_save_json(args.out / "metrics.json", doc)
    make_figures(doc, args.out)
    write_readme(args.out, doc)
    return args.out


if __name__ == "__main__":
    print(main())
