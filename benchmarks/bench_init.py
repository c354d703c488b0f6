"""k-means++ initialisation cost against the Lloyd iterations that follow it, and its quality against full k-means++.

Part 1 (cost, default N=1M, D=128, K=10k): greedy k-means++ on a random subsample of INIT_SAMPLE_PER_CLUSTER rows
per cluster (bf16 steps where the precision resolves to bf16), then ``--iters`` Lloyd iterations from it, both
timed; the same for ``init="k-means||"`` (KMPAR_ROUNDS passes over every row, then greedy k-means++ over the
weighted candidates); and which of the two the default ``init="auto"`` picks (:func:`resolve_init`).

Part 2 (cost model, ``--model-points``): at a few smaller (N, K, D), both initialisations and one Lloyd pass are
timed, and each cost is given in Lloyd passes next to what :func:`init_costs` models (the constant KPP_STEP_COST
comes from these rows and part 1).

Part 3 (quality, default N=100k, D=128, K=1000, where full k-means++ on every row is affordable): k-means++ on
the sample, k-means|| and full greedy k-means++ on all rows, each followed by the same ``--iters`` Lloyd
iterations; the objectives after Lloyd are compared, over ``--seeds`` seeds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_init.py
    python benchmarks/bench_init.py --n 20000 --k 200 --quality-n 5000 --quality-k 50 --iters 2 --seeds 1 \
        --model-points 3000x30x16 --out /tmp/i

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/init``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import machine_info, make_data, write_outputs  # noqa: E402


def timed_init(x: np.ndarray, k: int, init: str, seed: int, sample: int | None = None) -> tuple[np.ndarray, float]:
    km = sys.modules["sslcurate.kmeans"]
    t = time.perf_counter()
    c0 = km._initial_centroids(km.as_source(x), k, init, km.make_rng(seed), sample, None, False, precision="auto")
    return c0.numpy(), time.perf_counter() - t


def init_then_lloyd(x: np.ndarray, k: int, iters: int, seed: int, sample: int | None,
                    init: str = "k-means++") -> dict:
    km = sys.modules["sslcurate.kmeans"]
    c0, init_s = timed_init(x, k, init, seed, sample)
    res = km.kmeans(x, k, n_iters=iters, init_centroids=c0)
    lloyd_s = res.iteration_seconds[-1]
    return {"init": init, "init_s": init_s, "lloyd_s": lloyd_s, "s_per_iter": lloyd_s / res.n_iters,
            "objective": res.objective,
            "sample_rows": len(x) if init == "k-means||" else km.init_sample_rows(len(x), k, sample)}


def model_row(n: int, k: int, d: int, pass_s: float, kmeanspp_s: float, kmeans_parallel_s: float,
              parallel_pass_s: float | None = None) -> dict:
    """One row of the cost-model table: both initialisations' times in Lloyd passes (``parallel_pass_s``: the pass
    timed after k-means||, where it was timed separately), measured and modelled."""
    model = sys.modules["sslcurate.kmeans"].init_costs(n, k)
    pp_passes = kmeanspp_s / pass_s
    return {"n": n, "k": k, "d": d, "lloyd_pass_s": pass_s, "kmeanspp_s": kmeanspp_s,
            "kmeans_parallel_s": kmeans_parallel_s, "kmeanspp_passes": pp_passes,
            "kmeans_parallel_passes": kmeans_parallel_s / (parallel_pass_s or pass_s),
            "kmeanspp_model": model["k-means++"],
            "kmeans_parallel_model": model["k-means||"],
            # the model is linear in KPP_STEP_COST: the constant that would have predicted this row exactly
            "implied_kpp_step_cost": pp_passes / model["k-means++"] * sys.modules["sslcurate.kmeans"].KPP_STEP_COST}


def model_point(n: int, k: int, d: int, iters: int) -> dict:
    """Both initialisations and one Lloyd pass (median of ``iters`` iterations) at one (N, K, D)."""
    km = sys.modules["sslcurate.kmeans"]
    x = make_data(n, d, 3 * k, 0.5, 2)
    c0, pp_s = timed_init(x, k, "k-means++", 0)
    _, par_s = timed_init(x, k, "k-means||", 0)
    res = km.kmeans(x, k, n_iters=iters, init_centroids=c0)
    return model_row(n, k, d, float(np.median(np.diff([0.0] + res.iteration_seconds))), pp_s, par_s)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=10_000)
    p.add_argument("--quality-n", type=int, default=100_000)
    p.add_argument("--quality-k", type=int, default=1000)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model-points", default="20000x200x128,100000x1000x128,50000x1000x384,200000x2000x128",
                   help="comma-separated NxKxD points of the cost-model table")
    p.add_argument("--skip-full", action="store_true",
                   help="skip full greedy k-means++ on all --n rows (the objective reference at scale; ~7 min)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "init"))
    args = p.parse_args(argv)
    points = [tuple(int(v) for v in pt.split("x")) for pt in args.model_points.split(",") if pt]
    if any(len(pt) != 3 for pt in points):
        p.error(f"--model-points takes NxKxD triples, got {args.model_points!r}")

    import torch

    import sslcurate  # noqa: F401  (registers sslcurate.kmeans)
    from sslcurate.assign import resolve_precision

    km = sys.modules["sslcurate.kmeans"]
    torch.set_num_threads(args.threads)
    loadavg = os.getloadavg()
    x = make_data(args.n, args.d, 3 * args.k, 0.5, 0)
    cost = init_then_lloyd(x, args.k, args.iters, 0, None)
    print(f"cost: k-means++ {cost['init_s']:.1f} s, {args.iters} Lloyd iterations {cost['lloyd_s']:.1f} s",
          file=sys.stderr, flush=True)
    cost_par = init_then_lloyd(x, args.k, args.iters, 0, None, init="k-means||")
    print(f"cost: k-means|| {cost_par['init_s']:.1f} s, {args.iters} Lloyd iterations {cost_par['lloyd_s']:.1f} s",
          file=sys.stderr, flush=True)
    full_scale = None
    if not args.skip_full:
        full_scale = init_then_lloyd(x, args.k, args.iters, 0, args.n)
        print(f"cost: full k-means++ {full_scale['init_s']:.1f} s, objective ratios "
              f"{cost['objective'] / full_scale['objective']:.4f} (sample), "
              f"{cost_par['objective'] / full_scale['objective']:.4f} (k-means||)", file=sys.stderr, flush=True)
    del x
    auto = km.resolve_init("auto", args.n, args.k, args.iters)
    picked = cost if auto == "k-means++" else cost_par
    model = []
    for n, k, d in points:
        model.append(model_point(n, k, d, 5))
        m = model[-1]
        print(f"model {n}x{k}x{d}: k-means++ {m['kmeanspp_passes']:.1f} passes (model {m['kmeanspp_model']:.1f}), "
              f"k-means|| {m['kmeans_parallel_passes']:.1f} (model {m['kmeans_parallel_model']:.1f})",
              file=sys.stderr, flush=True)
    xq = make_data(args.quality_n, args.d, 3 * args.quality_k, 0.5, 1)
    quality = []
    for seed in range(args.seeds):
        default = init_then_lloyd(xq, args.quality_k, args.iters, seed, None)
        par = init_then_lloyd(xq, args.quality_k, args.iters, seed, None, init="k-means||")
        full = init_then_lloyd(xq, args.quality_k, args.iters, seed, args.quality_n)
        quality.append({"seed": seed, "default": default, "kmeans_parallel": par, "full": full,
                        "objective_ratio": default["objective"] / full["objective"],
                        "parallel_objective_ratio": par["objective"] / full["objective"]})
        print(f"quality seed {seed}: ratio {quality[-1]['objective_ratio']:.4f}, k-means|| "
              f"{quality[-1]['parallel_objective_ratio']:.4f}", file=sys.stderr, flush=True)
    report = {"config": vars(args), "precision": resolve_precision("auto", "cpu", args.d, args.k),
              "loadavg_start": [round(v, 2) for v in loadavg], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
              "machine": machine_info(), "kpp_step_cost": km.KPP_STEP_COST,
              "cost": cost, "cost_kmeans_parallel": cost_par, "full_kmeanspp": full_scale, "auto_init": auto,
              "auto_init_over_lloyd": picked["init_s"] / picked["lloyd_s"], "model": model, "quality": quality,
              "model_cost_point": model_row(args.n, args.k, args.d, cost["s_per_iter"], cost["init_s"],
                                            cost_par["init_s"], cost_par["s_per_iter"])}
    ratios = [q["objective_ratio"] for q in quality]
    par_ratios = [q["parallel_objective_ratio"] for q in quality]
    quality_auto = km.resolve_init("auto", args.quality_n, args.quality_k, args.iters)
    md = [f"# k-means++ initialisation: cost at N={args.n:,}, D={args.d}, K={args.k:,}; quality at "
          f"N={args.quality_n:,}, K={args.quality_k:,}",
          "", f"{report['machine']}; precision {report['precision']}; load average {report['loadavg_start']} at "
          f"start, {report['loadavg_end']} at the end.", "",
          "| cost | seconds |", "|---|---|",
          f"| k-means++ (`init=\"k-means++\"`) on a {cost['sample_rows']:,}-row sample | {cost['init_s']:.1f} |",
          f"| {args.iters} Lloyd iterations on all {args.n:,} rows | {cost['lloyd_s']:.1f} "
          f"({cost['s_per_iter']:.2f} per iteration) |",
          f"| k-means++ init / Lloyd | {cost['init_s'] / cost['lloyd_s']:.2f} |",
          f"| k-means\\|\\| (`init=\"k-means\\|\\|\"`) on all {args.n:,} rows | {cost_par['init_s']:.1f} |",
          f"| {args.iters} Lloyd iterations after it | {cost_par['lloyd_s']:.1f} |",
          f"| k-means\\|\\| init / Lloyd | {cost_par['init_s'] / cost_par['lloyd_s']:.2f} |",
          f"| **default (`init=\"auto\"`): runs {auto.replace('|', chr(92) + '|')}; init / Lloyd** | "
          f"**{report['auto_init_over_lloyd']:.2f}** |"]
    if full_scale is not None:
        md += [f"| full greedy k-means++ on all {args.n:,} rows (objective reference) | {full_scale['init_s']:.1f} |",
               "", f"Objective after the same {args.iters} Lloyd iterations at this scale (seed 0), relative to full "
               f"k-means++ ({full_scale['objective']:.6e}): k-means++ on the sample "
               f"{cost['objective'] / full_scale['objective']:.4f}, k-means\\|\\| "
               f"{cost_par['objective'] / full_scale['objective']:.4f}."]
    md += ["",
           f"Cost model of `init=\"auto\"` (`sslcurate.kmeans.init_costs`, KPP_STEP_COST = {km.KPP_STEP_COST}), "
           "costs in Lloyd passes over the same rows (one pass: the median of 5 iterations):", "",
           "| N | K | D | Lloyd pass s | k-means++ s | passes | model | implied KPP_STEP_COST | k-means\\|\\| s | "
           "passes | model |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {m['n']:,} | {m['k']:,} | {m['d']} | {m['lloyd_pass_s']:.3f} | {m['kmeanspp_s']:.2f} | "
           f"{m['kmeanspp_passes']:.1f} | {m['kmeanspp_model']:.1f} | {m['implied_kpp_step_cost']:.2f} | "
           f"{m['kmeans_parallel_s']:.2f} | {m['kmeans_parallel_passes']:.1f} | {m['kmeans_parallel_model']:.1f} |"
           for m in model + [report["model_cost_point"]]]
    md += ["",
           f"Objective after the same {args.iters} Lloyd iterations, relative to full greedy k-means++ on every row "
           f"(`init=\"auto\"` runs {quality_auto.replace('|', chr(92) + '|')} here):", "",
           "| seed | k-means++ (sample) s | k-means\\|\\| s | full k-means++ s | full objective | k-means++ (sample) "
           "/ full | k-means\\|\\| / full |",
           "|---|---|---|---|---|---|---|"]
    md += [f"| {q['seed']} | {q['default']['init_s']:.1f} | {q['kmeans_parallel']['init_s']:.1f} | "
           f"{q['full']['init_s']:.1f} | {q['full']['objective']:.6e} | {q['objective_ratio']:.4f} | "
           f"{q['parallel_objective_ratio']:.4f} |" for q in quality]
    md += ["", f"Objective ratio over {len(ratios)} seeds: k-means++ on the sample mean {np.mean(ratios):.4f}, "
           f"max {np.max(ratios):.4f}; k-means|| mean {np.mean(par_ratios):.4f}, max {np.max(par_ratios):.4f}.", ""]
    write_outputs(args.out, report, "\n".join(md))
    return report


if __name__ == "__main__":
    main()
