"""How much of the satellite study's pool near-duplicate removal keeps at several cosine thresholds, on the study's
own curation embeddings (DINO trained ``embedder.max_steps`` on the raw generated pool, default config), with the
cosine taken between raw and between pool-centred embeddings, and how much of the forest tail survives.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_satellite_dedup.py --cache .cache   # ~6 min for the embedder

The embeddings are the study's cached ones when ``--cache`` holds them (same key as ``python run.py
experiment=satellite paths.cache_dir=CACHE``). Writes ``OUT.json`` and ``OUT.md`` (default
``benchmarks/results/satellite_dedup``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import machine_info, write_outputs  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0.9,0.95,0.98,0.99")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides of experiment=satellite")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "satellite_dedup")
    args = ap.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir

    from experiments.kit.config import register_schemas
    from experiments.satellite import embed_pool, resolve_normalisation
    from experiments.satellite.data import build_data
    from experiments.satellite.scenes import CLASSES, FOREST
    from sslcurate import deduplicate

    torch.set_num_threads(1)
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=satellite", "logger=none", "progress=false",
                                                       f"paths.cache_dir={args.cache}", *args.overrides])
    t = time.perf_counter()
    data = build_data(cfg, args.cache)
    resolve_normalisation(cfg, data.pool.images)
    emb, path = embed_pool(cfg, data, args.cache, args.out.parent / "lightning")
    embed_s = time.perf_counter() - t
    lc = data.pool.land_cover
    forest = np.isin(lc, FOREST)
    rows = []
    for name, x in (("raw", emb), ("centred", emb - emb.mean(axis=0))):
        for thr in (float(v) for v in args.thresholds.split(",")):
            keep = deduplicate(x, thr)
            rows.append({"cosine_of": name, "threshold": thr, "kept": int(keep.sum()),
                         "forest_kept": int((keep & forest).sum()),
                         "kept_by_class": dict(zip(CLASSES, np.bincount(lc[keep], minlength=len(CLASSES)).tolist()))})
            print(rows[-1], flush=True)  # noqa: T201 (progress)
    report = {"machine": machine_info(), "pool_tiles": len(emb), "forest_tiles": int(forest.sum()),
              "subset_size": int(cfg.subset_size), "embedder_steps": int(cfg.embedder.max_steps),
              "embeddings": str(path), "embed_or_load_s": round(embed_s, 1), "rows": rows,
              "command": "python benchmarks/bench_satellite_dedup.py " + " ".join(argv or sys.argv[1:])}
    md = ["# Satellite pool: near-duplicate removal by threshold\n",
          f"Pool {len(emb):,} tiles ({int(forest.sum())} forest), embeddings of DINO trained "
          f"{cfg.embedder.max_steps} steps on the raw pool ({emb.shape[1]}-d); the study curates "
          f"{cfg.subset_size} tiles. Machine: {report['machine']}.", f"Command: `{report['command']}`\n",
          "| cosine of | threshold | tiles kept | forest tiles kept | kept per class |", "|---|---|---|---|---|"]
    md += [f"| {r['cosine_of']} | {r['threshold']} | {r['kept']:,} | {r['forest_kept']} | "
           + ", ".join(f"{c} {n}" for c, n in r["kept_by_class"].items()) + " |" for r in rows]
    write_outputs(args.out, report, "\n".join(md) + "\n")
    return report


if __name__ == "__main__":
    main()
