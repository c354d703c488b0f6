"""The whole hierarchical k-means with resampling, timed per level and stage, against an official-style baseline.

Same data (seeded Gaussian mixture, as bench_kmeans.py), same levels, resampling steps, r and Lloyd iterations
for both; each side runs in its own process (peak RSS is its own):

- ``ours``: ``sslcurate.hierarchical_kmeans`` with default settings (k-means++ on a subsample, bf16 where the
  hardware has it, float64 cluster sums). Stages are timed by wrapping the core's ``kmeans`` and
  ``assign_source`` calls: per level, the first k-means, the k-means of the resampling steps, and the
  reassignment of all points after each step.
- ``official``: ``benchmarks/official_style.py``, float64 throughout, greedy k-means++ on all points of every
  run, per-cluster Python loops. ``--official-steps N`` runs only N resampling steps of level 1 and extrapolates
  the rest from their mean (every step does the same work: a k-means on k*r points and one reassignment); the
  table marks extrapolated time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pipeline.py       # N=1M, D=128
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pipeline.py --official-steps 2 \
        --out benchmarks/results/pipeline_1m                                            # ~20 min
    python benchmarks/bench_pipeline.py --n 20000 --levels 100,20,5,2 --official-steps 1 --out /tmp/p

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/pipeline``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def level_configs(n: int, ks: list[int], steps: int, n_iters: int) -> list[dict]:
    """r = half the mean cluster size of each level (the paper's rule), at least 1."""
    out, below = [], n
    for k in ks:
        out.append({"n_clusters": k, "resampling_steps": steps, "sample_size": max(1, below // k // 2),
                    "n_iters": n_iters})
        below = k
    return out


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_ours(x: np.ndarray, levels: list[dict], seed: int) -> dict:
    from sslcurate import LevelConfig, hierarchical_kmeans

    # the modules whose calls are timed: resampling-clustering calls kmeans and assign_source, split k-means kmeans
    callers = [sys.modules["sslcurate.kmeans.resampling"], sys.modules["sslcurate.kmeans.split"]]

    stages: dict = defaultdict(float)
    state = {"level": "?", "inside": 0}
    real_kmeans, real_assign = callers[0].kmeans, callers[0].assign_source

    def timed_kmeans(*args, desc: str = "k-means", **kwargs):
        state["level"] = desc.split(" (")[0]
        stage = "resampling k-means" if "resample" in desc else "first k-means"
        state["inside"] += 1
        t = time.perf_counter()
        try:
            return real_kmeans(*args, desc=desc, **kwargs)
        finally:
            state["inside"] -= 1
            stages[f"{state['level']}: {stage}"] += time.perf_counter() - t

    def timed_assign(*args, **kwargs):
        if state["inside"]:
            return real_assign(*args, **kwargs)
        t = time.perf_counter()
        try:
            return real_assign(*args, **kwargs)
        finally:
            stages[f"{state['level']}: reassign all points"] += time.perf_counter() - t

    for module in callers:
        module.kmeans = timed_kmeans
        if hasattr(module, "assign_source"):
            module.assign_source = timed_assign
    t = time.perf_counter()
    tree = hierarchical_kmeans(x, [LevelConfig(**lv) for lv in levels], seed=seed)
    total = time.perf_counter() - t
    return {"total_s": total, "stages": dict(stages), "top_level_sizes": tree.levels[-1].n_clusters}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    x = np.load(args.data, mmap_mode="r") if args.side == "ours" else np.load(args.data)
    levels = json.loads(args.levels_json)
    rss_before = _peak_rss_mib()
    if args.side == "ours":
        out = run_ours(x, levels, args.seed)
    else:
        from official_style import hierarchical_kmeans as official

        t = time.perf_counter()
        stages = official(x, levels, args.seed, steps_run=args.official_steps)
        out = {"measured_s": time.perf_counter() - t, "stages": stages}
        out["total_s"] = sum(stages.values())
    out.update(side=args.side, peak_rss_mib=_peak_rss_mib(), rss_at_start_mib=rss_before)
    print("RESULT " + json.dumps(out), flush=True)


def run_side(side: str, data: Path, levels: list[dict], args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)])}
    cmd = [sys.executable, __file__, "--worker", "--side", side, "--data", str(data), "--levels-json",
           json.dumps(levels), "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.official_steps is not None:
        cmd += ["--official-steps", str(args.official_steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def markdown(report: dict) -> str:
    c = report["config"]
    ours, off = report["ours"], report.get("official")
    lines = [f"# Hierarchical k-means with resampling: N={c['n']:,}, D={c['d']}, levels k={c['levels']}, "
             f"{c['steps']} resampling steps, {c['n_iters']} Lloyd iterations per k-means, {c['threads']} threads",
             "", f"{report['machine']}. Load average at start: {report['loadavg_start']}.", "",
             "| stage (ours) | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in sorted(ours["stages"].items())]
    lines += [f"| **total** | **{ours['total_s']:.1f}** |", "",
              f"Peak RSS (ours): {ours['peak_rss_mib']:.0f} MiB; the embeddings are "
              f"{report['data_mib']:.0f} MiB (memory-mapped)."]
    if off:
        lines += ["", "| stage (official style) | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in off["stages"].items()]
        lines += [f"| **total** | **{off['total_s']:.1f}** (measured {off['measured_s']:.1f}) |", "",
                  f"Peak RSS (official style): {off['peak_rss_mib']:.0f} MiB.", "",
                  f"**Speed-up of ours over the official style: {off['total_s'] / ours['total_s']:.1f}x** "
                  "(official total including any extrapolated steps, see the rows above)."]
        if off["measured_s"] < off["total_s"]:
            lines += ["", f"Measured part alone: the steps of the official style that were run took "
                      f"{off['measured_s']:.1f} s, {off['measured_s'] / ours['total_s']:.1f}x the whole of our run: "
                      "a lower bound on the speed-up that involves no extrapolation."]
    lines += ["", "Levels (r = half the mean cluster size of the level below):", "",
              "```", json.dumps(report["levels"]), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--levels", default="1000,200,50,10", help="k per level, bottom first")
    p.add_argument("--steps", type=int, default=10, help="resampling steps per level")
    p.add_argument("--n-iters", type=int, default=10, help="Lloyd iterations per k-means run")
    p.add_argument("--centers", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--official-steps", type=int, default=None,
                   help="run only this many level-1 resampling steps of the baseline and extrapolate the rest")
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--levels-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(HERE))
    from bench_kmeans import machine_info, make_data, write_outputs

    ks = [int(k) for k in args.levels.split(",")]
    levels = level_configs(args.n, ks, args.steps, args.n_iters)
    loadavg = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        x = make_data(args.n, args.d, args.centers, 0.5, args.seed)
        np.save(data, x)
        data_mib = x.nbytes / 2 ** 20
        del x
        ours = run_side("ours", data, levels, args)
        print(f"ours: {ours['total_s']:.1f} s", file=sys.stderr, flush=True)
        official = None if args.skip_official else run_side("official", data, levels, args)
        if official:
            print(f"official style: {official['total_s']:.1f} s", file=sys.stderr, flush=True)
    report = {"config": {"n": args.n, "d": args.d, "levels": ks, "steps": args.steps, "n_iters": args.n_iters,
                         "centers": args.centers, "threads": args.threads, "seed": args.seed,
                         "official_steps": args.official_steps},
              "levels": levels, "data_mib": data_mib, "loadavg_start": [round(v, 2) for v in loadavg],
              "machine": machine_info(), "ours": ours, "official": official}
    write_outputs(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
