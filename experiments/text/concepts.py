"""Which domains the curation's clusters belong to: per run, the top-level clusters counted by their majority
domain, and the documents each domain holds in the clustered (deduplicated) pool. Balanced sampling gives each
top-level cluster an equal share, so this says how "balanced over clusters" translates into domain shares.
Domain labels are read here for measurement only (after the runs).

    python -m experiments.text.concepts RUN_DIR [RUN_DIR ...] --out results/text

adds ``concepts`` to ``--out``/metrics.json and rewrites the README there. A run's pool, embeddings and dedup are
read from the cache its run used (``SSLCURATE_ROOT``/.cache, or --cache).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json

ROOT = Path(__file__).resolve().parents[2]


def run_concepts(run: Path, cache: Path) -> dict:
    """{seed: {"top_clusters": {domain: n}, "points": {domain: n}, "levels": [k...]}} for one run directory."""
    from . import load_pool, pool_rows, run_dedup_setting
    from .embed import cached_embeddings

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    split = load_pool(cfg, cache)
    pool = split.pool
    emb, emb_path, _ = cached_embeddings(pool.texts, pool.fingerprint(), cfg.embedder, cache, progress=False)
    threshold, n_clusters, _ = run_dedup_setting(cfg)
    kept = pool_rows(emb, threshold, n_clusters, emb_path.stem, cache)
    doms = np.array(pool.domains, dtype=object)[kept]
    out = {}
    for seed_dir in sorted((run / "curation").glob("seed*")):
        folder = seed_dir / "clustering"
        levels = sorted(int(p.stem[len("level"):].split("_")[0]) for p in folder.glob("level*_assignments.npy"))
        if not levels:
            continue
        labels = np.arange(len(kept))
        for lv in levels:
            labels = np.load(folder / f"level{lv}_assignments.npy")[labels]
        majority: dict[str, int] = {}
        for k in np.unique(labels):
            names, counts = np.unique(doms[labels == k], return_counts=True)
            d = str(names[counts.argmax()])
            majority[d] = majority.get(d, 0) + 1
        names, counts = np.unique(doms, return_counts=True)
        out[seed_dir.name[len("seed"):]] = {
            "levels": [int(json.loads((folder / f"level{lv}.json").read_text())["n_clusters"]) for lv in levels],
            "top_clusters": dict(sorted(majority.items(), key=lambda kv: -kv[1])),
            "points": {str(n): int(c) for n, c in zip(names, counts)}}
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder holding the merged metrics.json")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    path = args.out / "metrics.json"
    if not path.exists():
        raise CurationInputError(f"{path} does not exist (merge the runs first)")
    doc = json.loads(path.read_text())
    concepts = {}
    for run in args.runs:
        if not (run / ".hydra" / "config.yaml").exists():
            raise CurationInputError(f"{run} has no .hydra/config.yaml")
        concepts.update(run_concepts(run, args.cache))
    doc["concepts"] = concepts
    doc["command"] = doc.get("command", "") + "\npython -m experiments.text.concepts " + " ".join(map(str, argv))
    atomic_save_json(path, doc)
    from .readme import write_readme
    write_readme(args.out, doc)
    return path


if __name__ == "__main__":
    print(main())
