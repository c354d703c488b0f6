"""The satellite study's height head: seconds per fit and evaluation R² for several head settings, on the study's
generated labelled and evaluation regions (default data config), under one frozen backbone.

    nice python benchmarks/bench_satellite_head.py --settings 600x3x64,300x1x64 --threads 2
    python benchmarks/bench_satellite_head.py --settings 20x1x16 --n-labelled 16 --out /tmp/h   # a quick look

A setting is ``STEPSxFITSxDIM`` (``head.steps``, ``head.n_fits``, ``head.dim``), fitted with each of
``--seeds``; every other head setting is the study's default (configs/experiment/satellite.yaml). The backbone is
the study's DINO (configs/model/dino_satellite.yaml, per-band normalisation from the labelled tiles) at random
initialisation, optionally pretrained ``--pretrain-steps`` steps on the labelled tiles: the head's cost does not
depend on the backbone's weights, its R² does (the ``random_init`` reference of the study). Seconds: wall clock of
fitting the heads of one setting (``train_head``); the frozen features of the 8 views, the same for every setting,
are timed once. Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/satellite_head``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import machine_info, write_outputs  # noqa: E402


def study_config(n_labelled: int, cache: Path):
    """The satellite experiment's config with the generated pool cut to one small region (the head never reads
    the pool; labelled and evaluation regions are the study's own)."""
    from hydra import compose, initialize_config_dir

    from experiments.kit.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=satellite", "logger=none",
                                                       f"paths.cache_dir={cache}",
                                                       f"data.n_labelled={n_labelled}"])
    regions = [r for r in cfg.data.generator.regions if r.role != "pool"]
    pool = dict(cfg.data.generator.regions[0])
    pool["size"] = 128
    cfg.data.generator.regions = [pool, *regions]
    return cfg


def step_seconds(lab, cfg, settings, rounds: int, count: int) -> dict:
    """Seconds per training step of one head of each ``dim`` among ``settings``: ``count`` steps, the dims taken in
    turn for ``rounds`` rounds, the fastest round kept (robust to other jobs on the machine)."""
    from experiments.satellite import model as M

    best: dict = {}
    for _ in range(rounds):
        for dim in sorted({d for _, _, d in settings}):
            head = cfg.head.copy()
            head.steps, head.n_fits, head.dim = count, 1, dim
            t = time.perf_counter()
            M._fit_head(lab, M.FeatureNorm([f[0] for f in lab.feats]), head, 0, int(cfg.data.tile_size))
            best[dim] = min(best.get(dim, float("inf")), (time.perf_counter() - t) / count)
    return {d: round(v, 4) for d, v in best.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="600x3x64,300x1x64", help="comma-separated STEPSxFITSxDIM")
    ap.add_argument("--n-labelled", type=int, default=320)
    ap.add_argument("--pretrain-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="backbone seed")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1], help="head seeds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--step-rounds", type=int, default=3, help="rounds of the interleaved per-step timing")
    ap.add_argument("--step-count", type=int, default=20, help="steps per round of the per-step timing")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "satellite_head")
    args = ap.parse_args(argv)

    import torch

    from experiments.satellite import resolve_normalisation
    from experiments.satellite import model as M
    from experiments.satellite.data import build_data
    from experiments.satellite.metrics import height_metrics
    from experiments.ssl.pretrain import dino_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = study_config(args.n_labelled, args.cache)
    data = build_data(cfg, args.cache)
    resolve_normalisation(cfg, data.labelled.images)
    torch.manual_seed(args.seed)
    module = M.DINO(dino_config(cfg.model, cfg.trainer, args.seed, data.labelled.images.shape[1]))
    if args.pretrain_steps:
        cfg.trainer.batch_size = min(int(cfg.trainer.batch_size), len(data.labelled))
        module = M.pretrain(data.labelled.images, cfg.model, cfg.trainer, args.seed, args.out.parent / "lightning",
                            "bench_head", max_steps=args.pretrain_steps)
    fi, skip = list(cfg.head.feature_indices), bool(cfg.head.image_skip)
    t = time.perf_counter()
    lab = M.head_inputs(module, data.labelled.images, fi, data.labelled.chm, bool(cfg.head.symmetries), skip)
    ev = M.head_inputs(module, data.eval.images, fi, image_skip=skip)
    features_s = time.perf_counter() - t
    settings = [tuple(int(v) for v in st.lower().split("x")) for st in args.settings.split(",")]
    per_step = step_seconds(lab, cfg, settings, args.step_rounds, args.step_count)
    rows = []
    for setting in args.settings.split(","):
        steps, fits, dim = (int(v) for v in setting.lower().split("x"))
        head = cfg.head.copy()
        head.steps, head.n_fits, head.dim = steps, fits, dim
        for seed in args.seeds:
            t = time.perf_counter()
            heads, loss = M.train_head(lab, head, seed, int(cfg.data.tile_size))
            fit_s = time.perf_counter() - t
            pred = heads.predict(ev)
            per_region = [height_metrics(pred[data.eval.scene == r], data.eval.chm[data.eval.scene == r],
                                         block=int(cfg.evaluation.block_px)) for r in range(len(data.regions))]
            rows.append({"steps": steps, "n_fits": fits, "dim": dim, "seed": seed, "fit_s": round(fit_s, 1),
                         "step_s": per_step[dim], "fit_s_from_steps": round(per_step[dim] * steps * fits, 1),
                         "r2_mean": float(np.mean([m["r2"] for m in per_region])),
                         "block_r2_mean": float(np.mean([m["block_r2"] for m in per_region])),
                         "mae_mean": float(np.mean([m["mae"] for m in per_region])), "train_loss": loss})
            print(rows[-1], flush=True)  # noqa: T201 (progress of a long benchmark)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = {"machine": machine_info(), "torch_threads": torch.get_num_threads(), "loadavg_end": round(load, 2),
              "labelled_tiles": len(data.labelled), "eval_tiles": len(data.eval), "regions": data.regions,
              "pretrain_steps": args.pretrain_steps, "seed": args.seed, "features_s": round(features_s, 1),
              "rows": rows,
              "command": "python benchmarks/bench_satellite_head.py " + " ".join(argv or sys.argv[1:])}
    md = ["# Satellite height head: cost and R² per setting\n", f"Machine: {report['machine']}; torch threads "
          f"{report['torch_threads']}; 1-min load average at the end {report['loadavg_end']} (other jobs shared "
          f"the cores when it is above the threads).", f"Labelled tiles {len(data.labelled)} (8 views each), "
          f"evaluation tiles {len(data.eval)} over {', '.join(data.regions)}; backbone "
          f"{'random init' if not args.pretrain_steps else f'pretrained {args.pretrain_steps} steps'} (seed "
          f"{args.seed}); frozen features of every view, computed once for all settings: {features_s:.0f} s.",
          f"Command: `{report['command']}`\n",
          "Fit seconds: measured wall clock of the fit; from steps: steps x fits x the fastest of "
          f"{args.step_rounds} interleaved rounds of {args.step_count} steps per head width (less exposed to other "
          "jobs on the machine).\n",
          "| steps | fits | dim | head seed | fit seconds | from steps | R² (mean over regions) | block R² | MAE (m) |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['steps']} | {r['n_fits']} | {r['dim']} | {r['seed']} | {r['fit_s']:.0f} | "
           f"{r['fit_s_from_steps']:.0f} | {r['r2_mean']:.3f} | {r['block_r2_mean']:.3f} | {r['mae_mean']:.2f} |"
           for r in rows]
    write_outputs(args.out, report, "\n".join(md) + "\n")
    return report


if __name__ == "__main__":
    main()
