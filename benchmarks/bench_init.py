"""k-means++ initialisation cost against the Lloyd iterations that follow it, and its quality against full k-means++.

Part 1 (cost, default N=1M, D=128, K=10k): the core's default initialisation (greedy k-means++ on a random
subsample of INIT_SAMPLE_PER_CLUSTER rows per cluster; bf16 steps where the precision resolves to bf16), then
``--iters`` Lloyd iterations from it, both timed; then the same for ``init="k-means||"`` (KMPAR_ROUNDS passes
over every row, then greedy k-means++ over the weighted candidates).

Part 2 (quality, default N=100k, D=128, K=1000, where full k-means++ on every row is affordable): the default
initialisation and full greedy k-means++ on all rows, each followed by the same ``--iters`` Lloyd iterations;
the objectives after Lloyd are compared, over ``--seeds`` seeds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_init.py
    python benchmarks/bench_init.py --n 20000 --k 200 --quality-n 5000 --quality-k 50 --iters 2 --seeds 1 --out /tmp/i

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


def init_then_lloyd(x: np.ndarray, k: int, iters: int, seed: int, sample: int | None,
                    init: str = "k-means++") -> dict:
    km = sys.modules["sslcurate.kmeans"]
    src = km.as_source(x)
    t = time.perf_counter()
    c0 = km._initial_centroids(src, k, init, km.make_rng(seed), sample, None, False,
                               precision="auto")
    init_s = time.perf_counter() - t
    res = km.kmeans(src, k, n_iters=iters, init_centroids=c0.numpy())
    lloyd_s = res.iteration_seconds[-1]
    return {"init_s": init_s, "lloyd_s": lloyd_s, "s_per_iter": lloyd_s / res.n_iters,
            "objective": res.objective, "sample_rows": len(x) if sample or init == "k-means||" else min(
                len(x), max(km.INIT_SAMPLE_PER_CLUSTER * k, km.INIT_SAMPLE_MIN))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=10_000)
    p.add_argument("--quality-n", type=int, default=100_000)
    p.add_argument("--quality-k", type=int, default=1000)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "init"))
    args = p.parse_args(argv)

    import torch

    import sslcurate  # noqa: F401  (registers sslcurate.kmeans)
    from sslcurate.assign import resolve_precision

    torch.set_num_threads(args.threads)
    loadavg = os.getloadavg()
    x = make_data(args.n, args.d, 3 * args.k, 0.5, 0)
    cost = init_then_lloyd(x, args.k, args.iters, 0, None)
    print(f"cost: init {cost['init_s']:.1f} s, {args.iters} Lloyd iterations {cost['lloyd_s']:.1f} s",
          file=sys.stderr, flush=True)
    cost_par = init_then_lloyd(x, args.k, args.iters, 0, None, init="k-means||")
    print(f"cost: k-means|| {cost_par['init_s']:.1f} s, {args.iters} Lloyd iterations {cost_par['lloyd_s']:.1f} s",
          file=sys.stderr, flush=True)
    del x
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
    report = {"config": vars(args), "precision": resolve_precision("auto", "cpu", args.d),
              "loadavg_start": [round(v, 2) for v in loadavg], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
              "machine": machine_info(),
              "cost": cost, "cost_kmeans_parallel": cost_par, "quality": quality}
    ratios = [q["objective_ratio"] for q in quality]
    par_ratios = [q["parallel_objective_ratio"] for q in quality]
    md = [f"# k-means++ initialisation: cost at N={args.n:,}, D={args.d}, K={args.k:,}; quality at "
          f"N={args.quality_n:,}, K={args.quality_k:,}",
          "", f"{report['machine']}; precision {report['precision']}; load average {report['loadavg_start']} at "
          f"start, {report['loadavg_end']} at the end.", "",
          "| cost | seconds |", "|---|---|",
          f"| k-means++ (default init) on a {cost['sample_rows']:,}-row sample | {cost['init_s']:.1f} |",
          f"| {args.iters} Lloyd iterations on all {args.n:,} rows | {cost['lloyd_s']:.1f} "
          f"({cost['s_per_iter']:.2f} per iteration) |",
          f"| k-means++ init / Lloyd | {cost['init_s'] / cost['lloyd_s']:.2f} |",
          f"| k-means\\|\\| (`init=\"k-means\\|\\|\"`) on all {args.n:,} rows | {cost_par['init_s']:.1f} |",
          f"| {args.iters} Lloyd iterations after it | {cost_par['lloyd_s']:.1f} |",
          f"| k-means\\|\\| init / Lloyd | {cost_par['init_s'] / cost_par['lloyd_s']:.2f} |", "",
          "Objective after the same Lloyd iterations, relative to full greedy k-means++ on every row:", "",
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
