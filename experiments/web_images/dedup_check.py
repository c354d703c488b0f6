"""What near-duplicate removal drops from the study's generated pool at several cosine thresholds.

    python -m experiments.web_images.dedup_check [--thresholds 0.9,0.95,0.97,0.98,0.99,0.995] [--json PATH]
                                                 [--experiment NAME] [overrides]

The generated pool knows its near-copies (``kinds == 1``, clusters of 5-40 copies of one rendered image), so each
threshold's drops can be told apart: redundant copies (a copy whose cluster keeps another), distinct clean concept
images, junk. ``near_copy_share`` is the share of the drops that are redundant copies: the precision of the
near-duplicate call, which the study's threshold (``dedup_threshold`` in configs/embedder/efficientnet_lite0.yaml)
keeps at 90% or more, as experiments/curate/evidence.py does for the curation product on real pools.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslcurate import deduplicate


def dedup_check(cfg, thresholds: list[float], work_dir: Path) -> dict:
    """{threshold: counts of what removal at that cosine drops}, on the pool and embeddings the study uses."""
    from .data import build_data
    from .embed_stage import embed_pool

    cache = Path(cfg.paths.cache_dir)
    data = build_data(cfg, cache)
    emb, _ = embed_pool(cfg, data, cache, work_dir)
    kinds, group = data.kinds, data.dup_group
    copies = kinds == 1
    n_clusters = np.unique(group[copies]).size
    rows = {}
    for thr in thresholds:
        dropped = ~deduplicate(emb, thr)
        kept_groups = np.unique(group[copies & ~dropped])
        redundant = dropped & copies & np.isin(group, kept_groups)
        rows[str(thr)] = {"dropped": int(dropped.sum()), "kept": int((~dropped).sum()),
                          "redundant_copies_dropped": int(redundant.sum()),
                          "clean_dropped": int((dropped & (kinds == 0)).sum()),
                          "junk_dropped": int((dropped & (kinds == 2)).sum()),
                          "near_copy_share": float(redundant.sum() / max(dropped.sum(), 1))}
    return {"embedder": cfg.embedder.name, "input_size": cfg.embedder.get("input_size"),
            "pool_size": len(kinds), "clean": int((kinds == 0).sum()), "junk": int((kinds == 2).sum()),
            "copies": int(copies.sum()), "copy_clusters": int(n_clusters),
            "redundant_copies": int(copies.sum() - n_clusters), "thresholds": rows}


def main() -> None:
    from .selection_stats import run_check

    doc, _ = run_check(__doc__.splitlines()[0], ("--thresholds", "0.9,0.95,0.97,0.98,0.99,0.995",
                                                 "comma-separated cosine thresholds"),
                       lambda cfg, thresholds, tmp, _: dedup_check(cfg, [float(t) for t in thresholds.split(",")], tmp))
    print(f"{doc['pool_size']} images: {doc['clean']} clean, {doc['junk']} junk, {doc['copies']} near-copies in "
          f"{doc['copy_clusters']} clusters ({doc['redundant_copies']} redundant); embedder {doc['embedder']}")
    print("| cosine | dropped | redundant copies | clean | junk | near-copy share |\n|---|---|---|---|---|---|")
    for t, r in doc["thresholds"].items():
        print(f"| {t} | {r['dropped']} | {r['redundant_copies_dropped']} | {r['clean_dropped']} | "
              f"{r['junk_dropped']} | {r['near_copy_share']:.1%} |")


if __name__ == "__main__":
    main()
