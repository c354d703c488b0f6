"""What the canonical settling (sslcurate.canonical) costs: the same k-means timed on this checkout and on another
checkout of sslcurate (e.g. the commit before it), each in a fresh process, alternating, best of ``--repeats``.

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/bench_invariance.py --baseline-src /tmp/base/src

Two pools, N x D with K clusters (``bench_kmeans.make_pool``): ``reallike`` (2,000 anisotropic Gaussian concepts
with Zipf sizes) and ``blobs64`` (a 64-blob mixture: many points sit between centroids of one blob, so the
reduced-precision paths settle many rows). Prints a Markdown table; run it on an idle machine and name the CPU with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time, numpy as np
sys.path.insert(0, sys.argv[7])
from bench_kmeans import make_pool
from sslcurate import kmeans
kind, n, d, k, iters, repeats = sys.argv[1], *map(int, sys.argv[2:7])
precision, threads = sys.argv[8], int(sys.argv[9])
import torch
torch.set_num_threads(threads)
x = make_pool(kind, n, d, k, 0)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    r = kmeans(x, k, n_iters=iters, seed=0, init="random", precision=precision)
    times.append(time.perf_counter() - t)
print(json.dumps({"seconds": min(times), "objective": r.objective}))
"""


def run(src: Path, kind: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", CHILD, kind, *map(str, (args.n, args.d, args.k, args.iters,
                                                                          args.repeats)),
                          str(Path(__file__).resolve().parent), args.precision, str(args.threads)],
                         capture_output=True, text=True, env=env, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-src", type=Path, required=True, help="src/ folder of the checkout to compare with")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternations of baseline and this checkout")
    p.add_argument("--precision", default="auto", help="k-means precision (auto, fp32, bf16, int8, int16)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pools", default="reallike,blobs64", help="comma-separated pool kinds (bench_kmeans.POOLS)")
    args = p.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    print(f"N={args.n}, D={args.d}, K={args.k}, {args.iters} Lloyd iterations, precision {args.precision}, "
          f"{args.threads} threads, best of {args.repeats} x {args.rounds} rounds\n")
    print("| pool | baseline (s) | this checkout (s) | ratio | same objective |\n|---|---|---|---|---|")
    for kind in args.pools.split(","):
        base, ours = [], []
        for _ in range(args.rounds):
            base.append(run(args.baseline_src, kind, args))
            ours.append(run(here, kind, args))
        b, o = min(r["seconds"] for r in base), min(r["seconds"] for r in ours)
        same = base[0]["objective"] == ours[0]["objective"]
        print(f"| {kind} | {b:.2f} | {o:.2f} | {o / b:.3f} | {same} |")


if __name__ == "__main__":
    main()
