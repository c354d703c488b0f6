"""Retrieval-based curation on a real pool: does a handful of seed images of a rare label raise that label's share
of the subset, and by how much against clustering alone? Writes ``results/curate/<pool>_retrieval/``
(``evidence.json`` and ``README.md``).

    python -m experiments.curate.evidence --pool oxygen                  # once: the product's run on the pool
    python -m experiments.curate.evidence_retrieval --pool oxygen --label applets

Reads what ``experiments.curate.evidence`` left in its work folder (``~/.cache/sslcurate/evidence/<pool>/run``):
the EfficientNet-Lite0 embeddings, the pool deduplicated at the product's default threshold and its hierarchy
(``clustering/``), so nothing is embedded or clustered again. For each seed: ``--n-seed`` images of ``--label`` from
distinct groups (an icon and its variants at other sizes form a group) are the seed set; the subset of the same
target as the evidence study (20% of the pool) is drawn by balanced sampling alone and by the retrieval mix at each
``--fractions``. Measured: the label's share of the subset, and the same share counting only items outside the seed
items' groups (retrieving a seed image's own variants is the easy part).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.realdata import image_pool
from sslcurate import hierarchical_sampling
from sslcurate.io import load_npy
from sslcurate.hierarchy import ClusterLevel, ClusterTree
from sslcurate.retrieval import mixed_selection
from sslcurate.sources import SubsetSource, as_source

ROOT = Path(__file__).resolve().parents[2]
DEDUP_THRESHOLD = 0.99  # the product's default image threshold (results/curate/oxygen)


def load_run(run: Path, n_items: int):
    """(pool source, item index of each pool row, tree) of the evidence study's product run."""
    (emb,) = sorted((run / "embeddings").iterdir())
    rows = np.concatenate([load_npy(p) for p in sorted(emb.glob("rows_*.npy"))])
    source = as_source(emb / "vectors")
    meta = json.loads((run / "clustering" / "level1.json").read_text())
    shape = meta["key"]["input"]["shape"]
    kept = next(load_npy(d / "kept.npy") for d in sorted((run / "dedup").iterdir())
                if json.loads((d / "report.json").read_text())["threshold"] == DEDUP_THRESHOLD
                and json.loads((d / "report.json").read_text())["input_rows"] == len(source))
    if len(kept) != shape[0]:
        raise SystemExit(f"{run}/clustering was made on {shape[0]} rows, not the {len(kept)} kept at "
                         f"{DEDUP_THRESHOLD}: rerun python -m experiments.curate.evidence")
    levels = []
    for i in range(1, 1 + len(meta["key"]["levels"])):  # the levels of the last run (older files may linger)
        levels.append(ClusterLevel(*(load_npy(run / "clustering" / f"level{i}_{a}.npy")
                                     for a in ("centroids", "assignments", "distances"))))
    assert rows.max() < n_items
    return SubsetSource(source, kept), rows[kept], ClusterTree(levels, len(kept))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="oxygen")
    ap.add_argument("--label", default="applets", help="the rare label the seed set comes from")
    ap.add_argument("--n-seed", type=int, default=5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--work", default=None, help="default: ~/.cache/sslcurate/evidence/<pool>")
    ap.add_argument("--out", default=None, help="default: results/curate/<pool>_retrieval")
    args = ap.parse_args(argv)
    run = Path(args.work or Path("~/.cache/sslcurate/evidence").expanduser() / args.pool) / "run"
    _, _, names, groups = image_pool(args.pool)
    ids = json.loads((run / "items.json").read_text())
    item_labels = np.array([names.index(lb) for lb in ids["labels"]])
    item_groups = groups[[int(Path(i).name.split("_", 1)[0]) for i in ids["ids"]]]  # ids: <label>/<index>_<file>
    source, item_of_row, tree = load_run(run, len(ids["ids"]))
    target = int(round(0.2 * len(ids["ids"])))
    label = names.index(args.label)
    lab, grp = item_labels[item_of_row], item_groups[item_of_row]
    x = source.take(np.arange(len(source)))
    runs = []
    for s in range(args.seeds):
        rng = np.random.default_rng([s, 23])
        candidates = np.flatnonzero(lab == label)
        first_of_group = candidates[np.unique(grp[candidates], return_index=True)[1]]
        seed_rows = rng.choice(first_of_group, size=min(args.n_seed, first_of_group.size), replace=False)
        outside = ~np.isin(grp, grp[seed_rows])

        def shares(idx, outside=outside):
            return {"share": float((lab[idx] == label).mean()),
                    "share_outside_seed_groups": float(((lab[idx] == label) & outside[idx]).mean()),
                    "count": int((lab[idx] == label).sum())}

        alone = hierarchical_sampling(tree, target, seed=s)
        rec = {"seed": s, "seed_rows": seed_rows.tolist(), "clustering_alone": shares(alone), "mix": {}}
        for f in args.fractions:
            idx, _, rep = mixed_selection(tree, x, x[seed_rows], target, f, clustering_alone=alone, seed=s)
            rec["mix"][str(f)] = {**shares(idx), "overlap": rep["overlap"], "seeds_contributing":
                                  rep["seeds_contributing"]}
        runs.append(rec)
    pool_share = float((lab == label).mean())
    summary = {}
    for f in args.fractions:
        for key in ("share", "share_outside_seed_groups"):
            mix = np.array([r["mix"][str(f)][key] for r in runs])
            base = np.array([r["clustering_alone"][key] for r in runs])
            summary[f"{f}_{key}"] = {"mix": [float(mix.mean()), float(mix.std())],
                                     "clustering_alone": [float(base.mean()), float(base.std())],
                                     "multiple": float(mix.mean() / base.mean()) if base.mean() else None}
    doc = {"pool": args.pool, "label": args.label, "pool_items": len(ids["ids"]), "deduplicated_pool": len(source),
           "label_in_pool": int((lab == label).sum()), "label_share_of_pool": pool_share, "target": target,
           "n_seed": args.n_seed, "fractions": args.fractions, "seeds": args.seeds, "runs": runs, "summary": summary}
    out = Path(args.out or ROOT / "results" / "curate" / f"{args.pool}_retrieval")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Retrieval-based curation on the real {args.pool} pool: seed set from the rare label `{args.label}`",
             "", f"Command: `python -m experiments.curate.evidence_retrieval --pool {args.pool} --label {args.label} "
             f"--n-seed {args.n_seed} --seeds {args.seeds}` (reads the embeddings, the pool deduplicated at cosine "
             f"{DEDUP_THRESHOLD} and the hierarchy of `python -m experiments.curate.evidence --pool {args.pool}`).",
             "", f"Pool: {len(ids['ids']):,} icons, {len(source):,} after near-duplicate removal; `{args.label}`: "
             f"{doc['label_in_pool']} of them ({pool_share:.2%}). Subset: {target:,} items (20% of the pool). Seed "
             f"set: {args.n_seed} `{args.label}` icons from distinct groups, drawn per seed; mean +- std over "
             f"{args.seeds} seeds.", "",
             "| retrieval fraction | label share, mix | label share, clustering alone | multiple | "
             "outside the seed groups, mix | outside, clustering alone | multiple |", "|---|---|---|---|---|---|---|"]
    for f in args.fractions:
        a, b = summary[f"{f}_share"], summary[f"{f}_share_outside_seed_groups"]
        lines.append(f"| {f} | {a['mix'][0]:.2%} +- {a['mix'][1]:.2%} | {a['clustering_alone'][0]:.2%} +- "
                     f"{a['clustering_alone'][1]:.2%} | {a['multiple']:.2f} | {b['mix'][0]:.2%} +- {b['mix'][1]:.2%} "
                     f"| {b['clustering_alone'][0]:.2%} | {b['multiple']:.2f} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
