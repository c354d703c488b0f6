"""GPU check: sslcurate's k-means on a CUDA device beside faiss, and a 2-level curation under torchrun.

The one prepared script for a machine with a GPU (``benchmarks/gpu_check.sh`` runs it there). Two parts:

1. **k-means** at N=1M, D=1024, K=10k (``--n --d --k``): the same seeded float32 Gaussian mixture, the same
   number of Lloyd iterations, each method with its own initialisation. Methods: ``ours-fp32`` (sslcurate's torch
   backend on the device, exact float32 distances), ``ours-bf16`` (bf16 distances, near-ties settled in fp32; only
   where the device runs bf16), and ``faiss`` (``faiss.Kmeans`` on the GPU; where the installed faiss has no GPU
   support its row says so instead of running on the CPU, and with ``--device cpu`` it runs on the CPU). Per method: seconds for everything (init, iterations, final assignment), seconds
   per iteration, effective TFLOP/s counting 2NKD per iteration, and the objective recomputed one way for all (each
   point's squared distance to its nearest returned centroid, in float64 on the device).
2. **curation**: a 2-level hierarchical curation (``sslcurate.curate``) of a memory-mapped pool, run three ways:
   one CPU process (the reference), ``torchrun --nproc_per_node=1`` on the GPU in an NCCL process group (so every
   collective goes through NCCL), and ``torchrun --nproc_per_node=G`` with G the number of GPUs (NCCL) or, with one
   GPU, 2 processes sharing it over gloo. Per run: wall time and whether ``indices`` is byte-identical to the CPU's.

    python benchmarks/bench_gpu.py                                    # on the GPU machine (never timed there yet)
    python benchmarks/bench_gpu.py --device cpu --n 4000 --d 32 --k 40 --iters 3 --curate-n 6000 --out /tmp/g

Writes ``benchmarks/results/gpu_kmeans.{json,md}`` and ``gpu_curate.{json,md}`` (or ``--out PREFIX``:
``PREFIX_kmeans.*``, ``PREFIX_curate.*``). Without a GPU it runs on the CPU when ``--device cpu`` says so (the test
does, at small sizes); otherwise it refuses in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_data(n: int, d: int, n_centers: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n, d) float32 mixture of ``n_centers`` Gaussian blobs, generated on ``device`` (1M x 1024 is 4 GiB)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    means = torch.randn(n_centers, d, generator=gen, device=device)
    labels = torch.randint(n_centers, (n,), generator=gen, device=device)
    return means[labels].add_(torch.randn(n, d, generator=gen, device=device), alpha=0.5)


def objective(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65_536) -> float:
    """Sum over points of the squared distance to the nearest centroid, in float64 (one way for every method)."""
    c = centroids.to(x.device, torch.float64)
    c_sq = (c * c).sum(1)
    total = 0.0
    for lo in range(0, x.shape[0], chunk):
        xc = x[lo:lo + chunk].double()
        d2 = (xc * xc).sum(1, keepdim=True) - 2 * xc @ c.T + c_sq
        total += float(d2.min(1).values.clamp_min(0).sum())
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(x: torch.Tensor, k: int, iters: int, precision: str) -> dict:
    from sslcurate import KMeansSettings, kmeans

    settings = KMeansSettings(backend="torch", precision=precision)
    _sync(x.device)
    start = time.perf_counter()
    res = kmeans(x, k, settings=settings, n_iters=iters, seed=0)
    _sync(x.device)
    return {"seconds": time.perf_counter() - start, "centroids": torch.as_tensor(res.centroids)}


def run_faiss(x: torch.Tensor, k: int, iters: int) -> dict:
    import faiss

    gpu = x.device.type == "cuda" and faiss.get_num_gpus() > 0
    if x.device.type == "cuda" and not gpu:  # faiss-cpu at this size: CPU time on a GPU lease
        raise ImportError("the installed faiss has no GPU support (faiss-gpu-cu12 needs CUDA 12's cuBLAS)")
    xn = x.cpu().numpy()
    start = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=0, gpu=gpu, max_points_per_centroid=10**9)
    km.train(xn)
    km.index.search(xn, 1)  # the final assignment, as ours returns one
    return {"seconds": time.perf_counter() - start, "centroids": torch.from_numpy(km.centroids),
            "note": "faiss on the GPU" if gpu else "faiss on the CPU"}


def bench_kmeans(args, device: torch.device) -> dict:
    x = make_data(args.n, args.d, max(2, args.k // 10), args.seed, device)
    methods = {"ours-fp32": lambda: run_ours(x, args.k, args.iters, "fp32")}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        methods["ours-bf16"] = lambda: run_ours(x, args.k, args.iters, "bf16")
    methods["faiss"] = lambda: run_faiss(x, args.k, args.iters)
    flops = 2.0 * args.n * args.k * args.d * args.iters
    rows = []
    for name, method in methods.items():
        try:
            out = method()
        except ImportError as e:
            rows.append({"method": name, "note": f"not run: {e}"})
            continue
        rows.append({"method": name, "seconds": out["seconds"], "s_per_iter": out["seconds"] / args.iters,
                     "tflops": flops / out["seconds"] / 1e12, "objective": objective(x, out["centroids"]),
                     "note": out.get("note", "")})
        print(f"{name}: {out['seconds']:.2f} s", flush=True)
    return {"n": args.n, "d": args.d, "k": args.k, "iters": args.iters, "rows": rows}


def _curation_config(args):
    from sslcurate import CurationConfig, KMeansSettings, LevelConfig

    k1 = max(4, args.curate_n // 50)
    return CurationConfig(levels=[LevelConfig(k1, 3, 10, n_iters=5), LevelConfig(max(2, k1 // 10), 3, 3, n_iters=5)],
                          kmeans=KMeansSettings(backend="torch", precision="fp32"),
                          target_size=args.curate_n // 4, seed=args.seed)


def curate_worker(args) -> None:
    """One process of a torchrun curation (``--curate-worker``): join the group torchrun set up (NCCL when
    ``--backend nccl``, even for one process, so its collectives run), curate, leave."""
    import torch.distributed as tdist

    from sslcurate import curate
    from sslcurate import distributed as sd

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(args.backend, rank=rank, world_size=world)
    try:
        curate(args.pool, _curation_config(args), out_dir=args.work, gather=True)
    finally:
        sd.shutdown()


def bench_curate(args, device: torch.device, tmp: Path) -> dict:
    pool = tmp / "pool.npy"
    np.save(pool, make_data(args.curate_n, args.curate_d, 64, args.seed, torch.device("cpu")).numpy())
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    # (processes, process-group backend, GPU visible); the first, one CPU process, is the reference.
    launches = [(1, "gloo", False)]
    if gpus:
        launches += [(1, "nccl", True), (gpus, "nccl", True) if gpus > 1 else (2, "gloo", True)]
    else:
        launches += [(2, "gloo", False)]
    runs, reference = [], None
    for procs, backend, on_gpu in launches:
        work = tmp / f"{procs}_{backend}_{on_gpu}"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port=29617",
               str(Path(__file__).resolve()), "--curate-worker", "--pool", str(pool), "--work", str(work),
               "--backend", backend, "--curate-n", str(args.curate_n), "--seed", str(args.seed)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if not on_gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""  # sslcurate's torch backend runs on CUDA wherever it sees a GPU
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        where = f"{procs} process{'es' if procs > 1 else ''}, {backend}, {'GPU' if on_gpu else 'CPU'}"
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            runs.append({"run": where, "seconds": seconds, "identical": False,
                         "error": lines[-1] if lines else "failed"})
            print(proc.stderr[-4000:], file=sys.stderr)
            continue
        from sslcurate.pipeline import load_selection

        selection = load_selection(work)
        reference = selection if reference is None else reference
        same = bool(np.array_equal(selection, reference))
        runs.append({"run": where, "seconds": seconds, "identical": same})
        print(f"{where}: {seconds:.1f} s, identical to one CPU process's: {same}", flush=True)
    return {"n": args.curate_n, "d": args.curate_d, "target": args.curate_n // 4, "runs": runs}


def machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{name}; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch {torch.__version__}"


def render_kmeans(doc: dict) -> str:
    lines = [f"# k-means on the GPU: N={doc['n']:,}, D={doc['d']}, K={doc['k']:,}, {doc['iters']} iterations", "",
             f"Machine: {doc['machine']}. Written by `benchmarks/bench_gpu.py`.", "",
             "| method | total s | s / iteration | effective TFLOP/s | objective | note |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        if "seconds" not in r:
            lines.append(f"| {r['method']} | | | | | {r['note']} |")
            continue
        lines.append(f"| {r['method']} | {r['seconds']:.2f} | {r['s_per_iter']:.3f} | {r['tflops']:.3g} | "
                     f"{r['objective']:.6g} | {r['note']} |")
    return "\n".join(lines) + "\n"


def render_curate(doc: dict) -> str:
    lines = [f"# A 2-level curation on the GPU under torchrun: {doc['n']:,} x {doc['d']}, target {doc['target']:,}",
             "", f"Machine: {doc['machine']}. Written by `benchmarks/bench_gpu.py`.", "",
             "| run | wall s | selection identical to the CPU's | error |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['seconds']:.1f} | {r['identical']} | {r.get('error', '')} |" for r in doc["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a small check of the script)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--curate-n", type=int, default=200_000)
    ap.add_argument("--curate-d", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output prefix (default: benchmarks/results/gpu)")
    ap.add_argument("--curate-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pool", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.curate_worker:
        return curate_worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device here; run it on a GPU machine, or pass --device cpu for a small check")
    device = torch.device(args.device)
    prefix = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "gpu"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for part, bench, render in (("kmeans", bench_kmeans, render_kmeans), ("curate", bench_curate, render_curate)):
        with tempfile.TemporaryDirectory() as tmp:
            doc = bench(args, device) if part == "kmeans" else bench(args, device, Path(tmp))
        doc["machine"] = machine(device)
        out = Path(f"{prefix}_{part}")
        out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(doc))
        print(f"wrote {out.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    main()
