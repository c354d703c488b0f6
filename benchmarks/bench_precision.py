"""Exact fp32 and reduced-precision k-means against faiss.Kmeans over a grid of D and K, side by side, on the same
data.

For every (D, K): one seeded Gaussian mixture (as bench_kmeans.py), one shared starting point (K rows drawn with
the seed, so every method runs the same Lloyd iterations from the same centroids), then round-robin repeats of

- ``faiss``: ``faiss.Kmeans(...).train(x, init_centroids=c0)``, time per iteration from its own iteration stats;
- ``fp32``: ``sslcurate.kmeans(precision="fp32")`` (default backend: the fused AVX-512 or AVX2 kernel where the
  CPU runs it, else faiss flat search; plus our float64 update);
- ``bf16``: ``sslcurate.kmeans(precision="bf16")`` (bf16 GEMM candidates, near-ties settled in fp32);
- ``int8``: ``sslcurate.kmeans(precision="int8")`` (the fused VNNI kernel where the CPU runs it, else the torch
  int8 GEMM; near-ties settled in fp32);
- ``int16``: ``sslcurate.kmeans(precision="int16")`` (the fused AVX2 int16 kernel; near-ties settled in fp32).

``--methods`` picks them; by default faiss, fp32 and each reduced precision this CPU runs natively (bf16 with
AVX512-BF16 / AMX, int8 with VNNI, int16 with AVX2), so an AVX2-only CPU is not timed on emulated bf16.

Reported per method: the median seconds per Lloyd iteration, effective GFLOP/s (2*N*K*D per iteration) and its
fraction of the fp32 GEMM peak measured in the same run (4096^3 matmul, best of 5, before and after, the better
of torch's MKL and numpy's OpenBLAS),
speed-up over faiss, and the final objective (every method's centroids re-assigned by the same exact pass).
For the reduced precisions also: the share of points whose assignment to the fp32 run's final centroids is identical
between that path and the exact one, the relative objective difference of its run and the fp32 run, and the share
of rows it settled exactly (near-ties) in a pass to the starting centroids and to the fp32 run's final ones.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_precision.py            # full grid
    python benchmarks/bench_precision.py --n 20000 --dims 128 --ks 100 --iters 3 --repeat 1 --out /tmp/p
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_precision.py --data blobs64 \
        --dims 384 --ks 1000 --threads 1 --out benchmarks/results/precision_blobs64_t1   # near-tie-heavy pool
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_precision.py \
        --out benchmarks/results/precision_avx2           # what the README shows for CPUs without AVX-512

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/precision``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import (POOLS, faiss_blas_line, faiss_blas_probe, faiss_env, gemm_peaks,  # noqa: E402
                          machine_info, make_pool, write_outputs)

METHODS = ("faiss", "fp32", "bf16", "int8", "int16")
LOWP = ("bf16", "int8", "int16")


def native_methods() -> tuple[str, ...]:
    """faiss, fp32 and the reduced precisions this CPU runs natively (not emulated)."""
    from sslcurate.assign import bf16_fast, int8_fast
    from sslcurate.fused import fused_available

    native = {"bf16": bf16_fast("cpu"), "int8": fused_available("int8") or int8_fast("cpu"),
              "int16": fused_available("int16")}
    return ("faiss", "fp32") + tuple(m for m in LOWP if native[m])


def run_faiss(x: np.ndarray, c0: np.ndarray, iters: int) -> tuple[float, np.ndarray]:
    import faiss

    km = faiss.Kmeans(x.shape[1], c0.shape[0], niter=iters, max_points_per_centroid=10 ** 9, verbose=False)
    km.train(x, init_centroids=c0)
    stats = km.iteration_stats
    # iteration_stats' "time" is cumulative; the first entry includes building the index on c0.
    per_iter = float(stats[-1]["time"]) / len(stats)
    return per_iter, km.centroids.copy()


def run_ours(x: np.ndarray, c0: np.ndarray, iters: int, precision: str) -> tuple[float, np.ndarray, float]:
    from sslcurate import kmeans

    t = time.perf_counter()
    res = kmeans(x, c0.shape[0], n_iters=iters, init_centroids=c0, precision=precision, bounds=False)
    total = time.perf_counter() - t
    lloyd = res.iteration_seconds[-1]  # the loop alone, without the final assignment pass
    return lloyd / res.n_iters, res.centroids, total


def exact_assign(x: np.ndarray, c: np.ndarray, precision: str = "fp32") -> tuple[np.ndarray, float]:
    from sslcurate.kmeans import assign_source

    idx, dist = assign_source(x, c, precision=precision)
    return idx, float(dist.astype(np.float64).sum())


def settled_fraction(x: np.ndarray, c: np.ndarray, precision: str, chunk_rows: int = 65_536) -> float:
    """Share of the rows of ``x`` whose reduced-precision candidates had to be re-scored exactly (near-ties) in
    one assignment pass to the centroids ``c``."""
    import torch

    from sslcurate.assign import get_assigner

    assigner = get_assigner("auto", torch.device("cpu"), precision, x.shape[1], c.shape[0])
    prepared = assigner.prepare(torch.from_numpy(c))
    for start in range(0, len(x), chunk_rows):
        assigner.assign(torch.from_numpy(x[start:start + chunk_rows]), prepared)
    return assigner.settled_fraction()


def bench_point(n: int, d: int, k: int, iters: int, repeat: int, seed: int, methods: tuple[str, ...],
                data: str = "mixture") -> dict:
    x = make_pool(data, n, d, k, seed)
    rng = np.random.default_rng(seed + 1)
    c0 = x[np.sort(rng.choice(n, size=k, replace=False))].copy()
    times = {m: [] for m in methods}
    cents = {}
    for _ in range(repeat):
        for m in methods:
            if m == "faiss":
                s, c = run_faiss(x, c0, iters)
            else:
                s, c, _ = run_ours(x, c0, iters, m)
            times[m].append(s)
            cents[m] = c
            print(f"  D={d} K={k} {m}: {s:.3f} s/iter", file=sys.stderr, flush=True)
    flops = 2.0 * n * k * d
    out = {"n": n, "d": d, "k": k, "iters": iters, "methods": {}}
    for m in methods:
        med = statistics.median(times[m])
        _, obj = exact_assign(x, cents[m])
        out["methods"][m] = {"s_per_iter_median": med, "s_per_iter_all": times[m], "gflops": flops / med / 1e9,
                             "objective": obj}
    idx_exact, obj_exact = exact_assign(x, cents["fp32"], "fp32")
    fp32_run = out["methods"]["fp32"]["objective"]
    for m in (m for m in methods if m in LOWP):
        idx_m, obj_m = exact_assign(x, cents["fp32"], m)
        out[f"{m}_assignment_agreement"] = float((idx_exact == idx_m).mean())
        out[f"{m}_same_centroids_objective_rel_diff"] = abs(obj_m - obj_exact) / obj_exact
        out[f"{m}_vs_fp32_run_objective_rel_diff"] = abs(out["methods"][m]["objective"] - fp32_run) / fp32_run
        out[f"{m}_settled_at_start"] = settled_fraction(x, c0, m)
        out[f"{m}_settled_at_end"] = settled_fraction(x, cents["fp32"], m)
    return out


def _fmt_peaks(report: dict, lib: str) -> str:
    """``before / after`` GFLOP/s of one library's GEMM (runs before both were measured: 'n/a')."""
    if "gemm_peaks_before" not in report:
        return "n/a"
    return f"{report['gemm_peaks_before'][lib]:.0f} / {report['gemm_peaks_after'][lib]:.0f}"


def markdown(report: dict) -> str:
    peak = report["gemm_peak_gflops"]
    methods = [m for m in METHODS if m in report["points"][0]["methods"]]
    lowp = [m for m in methods if m in LOWP]
    ours = [m for m in methods if m != "faiss"]
    lines = [f"# Exact fp32 and reduced-precision k-means vs faiss.Kmeans: {report['config'].get('data', 'mixture')} "
             f"pool, N={report['config']['n']:,}, "
             f"{report['config']['iters']} Lloyd iterations from shared initial centroids, "
             f"{report['config']['threads']} threads, median of {report['config']['repeat']} repeats",
             "",
             f"fp32 GEMM peak (4096^3, the better of torch and numpy): {report['gemm_peak_gflops_before']:.0f} "
             f"GFLOP/s before, {report['gemm_peak_gflops_after']:.0f} after (used: {peak:.0f}; torch "
             f"{_fmt_peaks(report, 'torch')}, numpy {_fmt_peaks(report, 'numpy')}). Load average at start: "
             f"{report['loadavg_start']}. {report['machine']}."
             + (f" {faiss_blas_line(report['faiss_blas'])}." if report.get("faiss_blas") else ""),
             ""]
    cols = (["D", "K"] + [f"{m} s/iter" for m in methods] + ["faiss frac. peak", "fp32 frac. peak"]
            + [f"{m} / faiss speed" for m in ours] + [f"{m} = exact assignments" for m in lowp]
            + ["objective: fp32 vs faiss"] + [f"{m} vs fp32 run" for m in lowp]
            + [f"{m} settled: start, end" for m in lowp])
    lines += ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for p in report["points"]:
        m = p["methods"]
        s = {k: m[k]["s_per_iter_median"] for k in methods}
        row = ([str(p["d"]), f"{p['k']:,}"] + [f"{s[k]:.3f}" for k in methods]
               + [f"{m['faiss']['gflops'] / peak:.2f}", f"{m['fp32']['gflops'] / peak:.2f}"]
               + [f"{s['faiss'] / s[k]:.2f}x" for k in ours]
               + [f"{p[f'{k}_assignment_agreement']:.5%}" for k in lowp]
               + [f"{m['fp32']['objective'] / m['faiss']['objective'] - 1:+.2e}"]
               + [f"{p[f'{k}_vs_fp32_run_objective_rel_diff']:.1e}" for k in lowp]
               + [f"{p[f'{k}_settled_at_start']:.0%}, {p[f'{k}_settled_at_end']:.0%}" for k in lowp])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "s/iter: median wall seconds per Lloyd iteration (assignment + update). frac. peak: effective "
              "GFLOP/s (2*N*K*D per iteration) over the measured fp32 GEMM peak. = exact assignments: "
              "share of points assigned identically by that path and the exact fp32 path to the fp32 run's final "
              "centroids. Objectives: every method's final centroids re-assigned by the same exact pass. settled: "
              "share of the rows whose near-tied candidates that path re-scored exactly in fp32, in one pass to the "
              "starting centroids and one to the fp32 run's final centroids.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dims", default="128,384,768")
    p.add_argument("--ks", default="1000,10000")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="mixture", choices=POOLS, help="pool kind (bench_kmeans.make_pool)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision"))
    p.add_argument("--methods", default="native",
                   help=f"comma-separated subset of {','.join(METHODS)} (faiss and fp32 always run), or 'native': "
                        "those this CPU runs natively")
    args = p.parse_args(argv)
    if args.methods == "native":
        methods = native_methods()
    else:
        asked = set(args.methods.split(",")) | {"faiss", "fp32"}
        if asked - set(METHODS):
            p.error(f"unknown methods {sorted(asked - set(METHODS))}; choose from {METHODS}")
        methods = tuple(m for m in METHODS if m in asked)

    if "faiss" in sys.modules:
        raise RuntimeError("faiss was loaded before its OpenBLAS kernel could be chosen; run this as a script")
    faiss_blas = faiss_blas_probe(args.threads)
    # Read by faiss's own OpenBLAS as it loads below; numpy's OpenBLAS was loaded (and chose its kernel) already.
    os.environ.pop("OPENBLAS_CORETYPE", None)
    os.environ.update(faiss_env(faiss_blas))
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    loadavg = os.getloadavg()
    peaks_before = gemm_peaks(args.threads)
    points = [bench_point(args.n, int(d), int(k), args.iters, args.repeat, args.seed, methods, args.data)
              for d in args.dims.split(",") for k in args.ks.split(",")]
    peaks_after = gemm_peaks(args.threads)
    peak_before, peak_after = max(peaks_before.values()), max(peaks_after.values())
    report = {"config": {**{k: getattr(args, k) for k in ("n", "dims", "ks", "iters", "repeat", "threads", "seed",
                                                          "data")},
                         "methods": list(methods)},
              "gemm_peak_gflops_before": peak_before, "gemm_peak_gflops_after": peak_after,
              "gemm_peaks_before": peaks_before, "gemm_peaks_after": peaks_after,
              "gemm_peak_gflops": max(peak_before, peak_after), "loadavg_start": [round(v, 2) for v in loadavg],
              "machine": machine_info(), "faiss_blas": faiss_blas, "points": points}
    write_outputs(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
