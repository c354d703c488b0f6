"""Distributed k-means benchmark: 1 vs 2 processes, peak RSS per rank vs N out of core, bytes sent per iteration.

Three measurements, each in fresh processes joined by a gloo group on this machine (torch.multiprocessing spawn):

1. Scaling: the same memory-mapped pool clustered by 1 process and by 2 processes (1 thread each, same starting
   centroids, so the same iterations): seconds per Lloyd iteration, speed-up and efficiency (speed-up / 2); and
   the k-means++ initialisation on a 200k-row sample (all of the pool), timed apart.
2. Out of core: hierarchical k-means (2 levels, resampling) on memory-mapped pools of growing N at 2 ranks; each
   rank's peak RSS over the run, above its RSS before it (Linux VmHWM, reset with ``clear_refs``). Rank 0 also
   gathers level 1 of the tree (12 bytes per point) and orders it; the other ranks hold only their rows.
3. Communication: bytes each rank sends into collectives (``sslcurate.distributed.comm_bytes``) per Lloyd
   iteration, for K and D varied apart, next to the model 8 K D (float64 sums) + 8 K (counts) + 8 (objective);
   and per resampling round, the candidates' all-gather.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nice -n 5 python benchmarks/bench_distributed.py

Writes ``benchmarks/results/distributed.json`` and ``distributed.md`` (or ``--out PATH``). The machine has 2 cores,
so 2 ranks x 1 thread is the largest world here; the load average is recorded because other jobs skew timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def write_pool(path: Path, n: int, d: int, seed: int = 0, block: int = 16_384) -> None:
    """(n, d) float32 Gaussian mixture written block by block into a .npy file."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, (128, d)).astype(np.float32)
    for lo in range(0, n, block):
        m = min(block, n - lo)
        out[lo:lo + m] = centers[rng.integers(0, 128, m)] + rng.standard_normal((m, d), dtype=np.float32)
    out.flush()
    del out


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank: int, world: int, init_file: str, task: str, args: dict, out_file: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = TASKS[task](rank, world, **args)
        Path(f"{out_file}.{rank}.json").write_text(json.dumps(result))
    finally:
        if world > 1:
            dist.destroy_process_group()


def task_scaling(rank, world, path, k, iters, repeat, init_sample):
    from sslcurate import kmeans
    from sslcurate.kmeans import _initial_centroids, make_rng
    from sslcurate.sources import as_source

    source = as_source(path)
    init = source.read(0, k)
    best, best_init = float("inf"), float("inf")
    for _ in range(repeat):
        if world > 1:
            dist.barrier()
        res = kmeans(path, k, n_iters=iters, init_centroids=init, backend="torch", precision="fp32", bounds=False)
        per_iter = np.diff([0.0] + res.iteration_seconds)[1:]  # the first iteration also warms the caches
        best = min(best, float(np.median(per_iter)))
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()  # once: k-means++ on the sample costs more than the iterations
    centres = _initial_centroids(source, k, "k-means++", make_rng(0), init_sample, None, False, precision="fp32")
    best_init = time.perf_counter() - t0
    return {"s_per_iter": best, "objective": res.objective, "init_s": best_init,
            "init_checksum": float(centres.double().sum())}


def task_rss(rank, world, path, k, iters):
    from sslcurate import KMeansSettings, LevelConfig, hierarchical_kmeans

    settings = KMeansSettings(chunk_rows=2048, init_sample_size=2000, backend="torch", precision="fp32")
    warm = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    hierarchical_kmeans(warm, [LevelConfig(16, 1, 20, n_iters=2), LevelConfig(4, 0, 1)], seed=0, settings=settings)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    before = _status_mib("VmHWM")
    levels = [LevelConfig(k, 1, 100, n_iters=iters), LevelConfig(8, 0, 1, n_iters=iters)]
    hierarchical_kmeans(path, levels, seed=0, settings=settings)
    return {"added_peak_mib": _status_mib("VmHWM") - before, "baseline_mib": before}


def task_comm(rank, world, n, ks, ds, k_fixed, d_fixed):
    from sslcurate import KMeansSettings, kmeans
    from sslcurate import distributed as sd
    from sslcurate.kmeans import resampling_kmeans

    exact = KMeansSettings(backend="torch", precision="fp32")
    rows = []
    for k, d in [(k, d_fixed) for k in ks] + [(k_fixed, d) for d in ds]:
        x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        sent = {}
        for iters in (1, 3):
            sd.reset_comm_bytes()
            kmeans(x, k, n_iters=iters, init_centroids=x[:k], bounds=False, backend="torch", precision="fp32")
            sent[iters] = sd.comm_bytes()
        per_iter = {kind: (sent[3][kind] - sent[1][kind]) / 2 for kind in sent[1]}
        sd.reset_comm_bytes()
        resampling_kmeans(x, k, steps=0, n_iters=1, seed=0, settings=exact)
        base = sd.comm_bytes()
        r = max(1, n // k // 2)  # paper: r about half the mean cluster size
        sd.reset_comm_bytes()
        resampling_kmeans(x, k, steps=1, sample_size=r, n_iters=1, seed=0, settings=exact)
        one = sd.comm_bytes()
        rows.append({"k": k, "d": d, "bytes_per_iter": sum(per_iter.values()), "by_kind": per_iter,
                     "model_bytes": 8 * k * d + 8 * k + 8,
                     "round_all_gather_bytes": one["all_gather"] - base["all_gather"],
                     "r": r, "round_candidates_bound": 24 * min(-(-n // world), k * r)})
    return {"rows": rows}


TASKS = {"scaling": task_scaling, "rss": task_rss, "comm": task_comm}


def launch(task: str, world: int, args: dict, tmp: Path) -> list[dict]:
    tag = f"{task}-{world}-{time.monotonic_ns()}"
    out = tmp / tag
    mp.start_processes(_worker, args=(world, str(tmp / f"{tag}.init"), task, args, str(out)), nprocs=world,
                       join=True, start_method="spawn")
    return [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed"))
    ap.add_argument("--scaling-n", type=int, default=200_000)
    ap.add_argument("--scaling-d", type=int, default=128)
    ap.add_argument("--scaling-k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--init-sample", type=int, default=200_000, help="rows of the timed k-means++")
    ap.add_argument("--rss-ns", default="100000,200000,400000,800000")
    ap.add_argument("--rss-d", type=int, default=256)
    ap.add_argument("--tmp", default=None, help="folder for the pools (default: a temporary one)")
    a = ap.parse_args()
    t0 = time.time()
    load_before = os.getloadavg()
    doc = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                       "load_before": load_before}}
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp_name:
        tmp = Path(tmp_name)
        pool = tmp / "scaling.npy"
        write_pool(pool, a.scaling_n, a.scaling_d)
        args = {"path": str(pool), "k": a.scaling_k, "iters": a.iters, "repeat": a.repeat,
                "init_sample": a.init_sample}
        one = launch("scaling", 1, args, tmp)[0]
        two = launch("scaling", 2, args, tmp)
        t1, t2 = one["s_per_iter"], max(r["s_per_iter"] for r in two)
        doc["scaling"] = {"n": a.scaling_n, "d": a.scaling_d, "k": a.scaling_k, "iters": a.iters,
                          "threads_per_rank": 1, "s_per_iter_1": t1, "s_per_iter_2": t2, "speedup": t1 / t2,
                          "efficiency": t1 / t2 / 2, "objective_1": one["objective"],
                          "objective_2": two[0]["objective"], "init_sample": a.init_sample,
                          "init_s_1": one["init_s"], "init_s_2": max(r["init_s"] for r in two),
                          "init_same_centres": one["init_checksum"] == two[0]["init_checksum"]}
        pool.unlink()
        rss_rows = []
        for n in [int(v) for v in a.rss_ns.split(",")]:
            path = tmp / f"rss{n}.npy"
            write_pool(path, n, a.rss_d, seed=1)
            ranks = launch("rss", 2, {"path": str(path), "k": 64, "iters": 3}, tmp)
            rss_rows.append({"n": n, "d": a.rss_d, "file_mib": path.stat().st_size / 2 ** 20,
                             "rank0_added_mib": ranks[0]["added_peak_mib"],
                             "rank1_added_mib": ranks[1]["added_peak_mib"]})
            path.unlink()
        doc["rss"] = rss_rows
        comm = launch("comm", 2, {"n": 20_000, "ks": [64, 256, 1024, 4096], "ds": [32, 128, 512], "k_fixed": 256,
                                  "d_fixed": 64}, tmp)
        doc["comm"] = comm[0]["rows"]
    doc["machine"]["load_after"] = os.getloadavg()
    doc["wall_s"] = time.time() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(doc))
    print(render(doc))


def render(doc: dict) -> str:
    s, m = doc["scaling"], doc["machine"]
    lines = ["# Distributed k-means: 1 vs 2 processes, RSS out of core, communication", "",
             "    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nice -n 5 python benchmarks/bench_distributed.py", "",
             f"{m['cpus']} CPUs, torch {m['torch']}, load average before {m['load_before'][0]:.2f}, after "
             f"{m['load_after'][0]:.2f}; whole run {doc['wall_s']:.0f} s.", "",
             f"## Scaling (N={s['n']:,}, D={s['d']}, K={s['k']}, {s['iters']} iterations, fp32, 1 thread per rank, "
             "memory-mapped pool, same starting centroids)", "",
             "| processes | s / iteration | speed-up | efficiency | objective |", "|---|---|---|---|---|",
             f"| 1 | {s['s_per_iter_1']:.4f} | 1.00 | 1.00 | {s['objective_1']:.6g} |",
             f"| 2 | {s['s_per_iter_2']:.4f} | {s['speedup']:.2f} | {s['efficiency']:.2f} | {s['objective_2']:.6g} |",
             "", f"k-means++ (K={s['k']}, on {s['init_sample']:,} sampled rows, split over the ranks): "
             f"{s['init_s_1']:.2f} s on 1 process, {s['init_s_2']:.2f} s on 2 (speed-up "
             f"{s['init_s_1'] / s['init_s_2']:.2f}); same centres: {s['init_same_centres']}.",
             "", "## Peak RSS per rank vs N (out of core, 2 ranks, chunk 2048 rows)", "",
             "| N | D | file MiB | rank 0 added MiB | rank 1 added MiB |", "|---|---|---|---|---|"]
    for r in doc["rss"]:
        lines.append(f"| {r['n']:,} | {r['d']} | {r['file_mib']:.0f} | {r['rank0_added_mib']:.1f} | "
                     f"{r['rank1_added_mib']:.1f} |")
    lines += ["", "## Bytes sent per rank (2 ranks, N=20,000)", "",
              "| K | D | per Lloyd iteration | model 8KD+8K+8 | r | resampling round: candidates all-gather | "
              "bound 24 min(N/world, K r) |", "|---|---|---|---|---|---|---|"]
    for r in doc["comm"]:
        lines.append(f"| {r['k']} | {r['d']} | {r['bytes_per_iter']:,.0f} | {r['model_bytes']:,} | "
                     f"{r['r']} | {r['round_all_gather_bytes']:,} | {r['round_candidates_bound']:,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
