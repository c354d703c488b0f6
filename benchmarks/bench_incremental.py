"""Incremental curation against curating from scratch: the cost of ``curation.update_from`` when a pool A grows by
B, and how the two selections compare.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_incremental.py   # 100k + 20k, d=64
    python benchmarks/bench_incremental.py --n 3000 --new 600 --out /tmp/inc                 # a quick look

Data: a seeded Gaussian mixture of 40 concepts with Zipf weights (``--dim`` dims); A holds ``--n`` rows, B
``--new`` more rows of the same distribution, appended (``ab.npy``). For each seed, three runs of the product
(``python run.py experiment=curate data=embeddings ...``, each in a fresh process and directory, the hierarchy
sized from the pool as by default, near-duplicates removed at ``--dedup``): the full run on A, the update of it
with A + B (``curation.update_from``), and the full run on A + B from scratch. Recorded: each run's wall seconds
(process start included) and ``stage_seconds``, the update / from-scratch time ratio, the label balance
(normalised entropy over the 40 concepts) of both subsets, the share of items they have in common, and the
update's drift share. Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/incremental``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import machine_info, write_outputs  # noqa: E402

CONCEPTS = 40


def write_pool(work: Path, n: int, new: int, dim: int, seed: int = 0) -> None:
    """``a.npy`` (n rows), ``ab.npy`` (n + new rows, A first) and ``labels.npy`` (concept of each row of AB)."""
    if (work / "DONE").exists():
        return
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, CONCEPTS + 1)
    means = rng.normal(0, 4, (CONCEPTS, dim))
    labels = rng.choice(CONCEPTS, size=n + new, p=w / w.sum())
    x = (means[labels] + rng.standard_normal((n + new, dim))).astype(np.float32)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "a.npy", x[:n])
    np.save(work / "ab.npy", x)
    np.save(work / "labels.npy", labels)
    np.save(work / "labels_a.npy", labels[:n])
    (work / "DONE").write_text("")


def run_product(out: Path, data: Path, labels: Path, target: int, seed: int, dedup: float, *extra: str) -> dict:
    """One product run in a fresh process; its report plus the process's wall seconds."""
    # a fresh folder every time: a run directory left by an earlier invocation would let the product reuse its
    # clustering, and the time would not be a run's
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "run.py"), "experiment=curate", "data=embeddings", f"data.path={data}",
           f"curation.labels={labels}", f"curation.target_size={target}", f"curation.dedup.threshold={dedup}",
           f"seed={seed}", f"hydra.run.dir={out}", "logger=none", "progress=false", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_seconds": round(seconds, 2), "stage_seconds": report["stage_seconds"], "report": report}


def label_entropy(report: dict) -> float:
    return report["concepts"]["subset"]["normalized_entropy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows of A")
    p.add_argument("--new", type=int, default=20_000, help="rows of B, appended to A")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--target", type=float, default=0.2, help="subset size as a share of the pool")
    p.add_argument("--dedup", type=float, default=0.98, help="near-duplicate cosine threshold of every run")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--work", default=str(Path("~/.cache/sslcurate/bench_incremental").expanduser()),
                   help="pool files and run folders")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "incremental"))
    args = p.parse_args()

    work = Path(args.work) / f"n{args.n}_new{args.new}_d{args.dim}"
    write_pool(work, args.n, args.new, args.dim)
    runs = []
    for seed in range(args.seeds):
        runs_dir = work / "runs" / f"seed{seed}"
        a = run_product(runs_dir / "a", work / "a.npy", work / "labels_a.npy", int(args.target * args.n), seed,
                        args.dedup)
        target = int(args.target * (args.n + args.new))
        upd = run_product(runs_dir / "update", work / "ab.npy", work / "labels.npy", target, seed, args.dedup,
                          f"curation.update_from={runs_dir / 'a'}")
        scratch = run_product(runs_dir / "scratch", work / "ab.npy", work / "labels.npy", target, seed, args.dedup)
        # the same item in both subsets: rows of ab.npy, read from the manifests
        items = [set(pq.read_table(runs_dir / name / "manifest.parquet").column("item").to_pylist())
                 for name in ("update", "scratch")]
        runs.append({"seed": seed, "full_a_seconds": a["wall_seconds"], "update_seconds": upd["wall_seconds"],
                     "scratch_seconds": scratch["wall_seconds"],
                     "update_stage_seconds": upd["stage_seconds"], "scratch_stage_seconds": scratch["stage_seconds"],
                     "ratio": upd["wall_seconds"] / scratch["wall_seconds"],
                     "update_label_entropy": label_entropy(upd["report"]),
                     "scratch_label_entropy": label_entropy(scratch["report"]),
                     "common_share": len(items[0] & items[1]) / target,
                     "drift_share": upd["report"]["update"]["drift"]["share"],
                     "update": {k: v for k, v in upd["report"]["update"].items() if k != "drift"}})
    mean = lambda key: float(np.mean([r[key] for r in runs]))  # noqa: E731
    std = lambda key: float(np.std([r[key] for r in runs]))  # noqa: E731
    report = {"n": args.n, "new": args.new, "dim": args.dim, "target_share": args.target, "dedup": args.dedup,
              "seeds": args.seeds, "machine": machine_info(), "runs": runs,
              "summary": {k: {"mean": mean(k), "std": std(k)} for k in
                          ("update_seconds", "scratch_seconds", "ratio", "update_label_entropy",
                           "scratch_label_entropy", "common_share", "drift_share")}}
    s = report["summary"]
    md = "\n".join([
        f"# Incremental curation: {args.n:,} + {args.new:,} embeddings (d={args.dim})", "",
        f"Machine: {report['machine']}", "",
        f"Command: `python benchmarks/bench_incremental.py --n {args.n} --new {args.new} --dim {args.dim} "
        f"--seeds {args.seeds}`; each run a fresh `python run.py experiment=curate data=embeddings` process "
        f"(start-up included), target {args.target:.0%} of the pool, dedup at cosine {args.dedup}.", "",
        "| seed | full run on A (s) | update A -> A+B (s) | from scratch on A+B (s) | update / scratch | "
        "label entropy update | label entropy scratch | items in common | drift share |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['seed']} | {r['full_a_seconds']:.1f} | {r['update_seconds']:.1f} | {r['scratch_seconds']:.1f} | "
          f"{r['ratio']:.3f} | {r['update_label_entropy']:.4f} | {r['scratch_label_entropy']:.4f} | "
          f"{r['common_share']:.1%} | {r['drift_share']:.2%} |" for r in runs], "",
        f"Mean over seeds: update / scratch time {s['ratio']['mean']:.3f}; label entropy update "
        f"{s['update_label_entropy']['mean']:.4f} +- {s['update_label_entropy']['std']:.4f}, scratch "
        f"{s['scratch_label_entropy']['mean']:.4f} +- {s['scratch_label_entropy']['std']:.4f}.", ""])
    write_outputs(args.out, report, md)


if __name__ == "__main__":
    main()
