"""Sharded curation benchmark: one memory-mapped pool curated by 1, 2 and 4 gloo processes.

Each world runs in fresh processes (torch.multiprocessing spawn, 1 thread each): hierarchical k-means with every
level written to a level store, then sharded sampling (every rank picks among its own rows of level 1;
``sslcurate.sampling.sample_tree``) and the sharded manifest (``sslcurate.pipeline.write_selection``). Per world:
wall time per phase, each rank's peak RSS above its RSS before the run (Linux VmHWM, reset with ``clear_refs``;
the claim is that it is flat in N at fixed N / world and that rank 0's is no larger than the others' beyond the
gathered selection), and the bytes each rank sends into collectives per level and for the sampling
(``sslcurate.distributed.comm_bytes``). The selection of each world is compared with world 1's.

    nice -n 5 python benchmarks/bench_sharded.py                 # 10M x 64 float32 (2.4 GiB on disk)
    python benchmarks/bench_sharded.py --rows 20000 --worlds 1,2  # a quick look
    python benchmarks/bench_sharded.py --rows 200000 --split 10   # level 1 split, its centroids sharded

Writes ``benchmarks/results/sharded_{rows}.json`` and ``.md`` (or ``--out PATH``). The machine load is recorded,
since other jobs skew timings; with 4 ranks on fewer cores the ranks share cores and time says little.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distributed import _status_mib, write_pool  # noqa: E402  (the same pool and RSS reading)


def _reset_peak() -> float:
    """Set this process's VmHWM to its current RSS (Linux ``clear_refs``) and return that, in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmHWM")


class RecordingStore:
    """A LevelStore that notes the time, the bytes sent and the peak RSS when each level is saved (every rank saves
    each level), so the run is split into levels without changing it. The peak is reset at each mark, so each
    level's peak is its own."""

    def __init__(self, store, comm):
        self.store, self.comm, self.marks = store, comm, []

    def load_level(self, i, row_range=None):
        return self.store.load_level(i, row_range)

    def checkpoint(self, i):
        return self.store.checkpoint(i)

    def save_centroid_parts(self, i, block, centroid_range):
        return self.store.save_centroid_parts(i, block, centroid_range)

    def save_level(self, i, level):
        self.store.save_level(i, level)
        self.marks.append((time.perf_counter(), self.comm.comm_bytes(), _status_mib("VmHWM")))
        _reset_peak()


def _run(rank: int, world: int, pool: str, work: str, levels: list[list[int]], target: int, seed: int) -> dict:
    from sslcurate import KMeansSettings, LevelConfig, hierarchical_kmeans
    from sslcurate import distributed as sd
    from sslcurate.artifacts import LevelStore
    from sslcurate.pipeline import write_selection
    from sslcurate.sampling import sample_tree

    configs = [LevelConfig(k, steps, r, n_iters=iters, split=split) for k, steps, r, iters, split in levels]
    settings = KMeansSettings(chunk_rows=16_384, backend="torch", precision="fp32")
    before = _reset_peak()
    sd.reset_comm_bytes()
    store = RecordingStore(LevelStore(Path(work) / "clustering", {"bench": 1}), sd)
    start = time.perf_counter()
    tree = hierarchical_kmeans(pool, configs, seed=seed, store=store, settings=settings)
    clustered = time.perf_counter()
    after_levels = sd.comm_bytes()
    selection = sample_tree(tree, target, seed=seed)
    write_selection(Path(work), selection.rows, None)
    end = time.perf_counter()
    sampling_peak = _status_mib("VmHWM")
    marks = [(start, {k: 0 for k in after_levels}, before)] + store.marks
    per_level = [{"seconds": t1 - t0, "bytes": sum(b1.values()) - sum(b0.values()), "added_peak_mib": p1 - before}
                 for (t0, b0, _), (t1, b1, p1) in itertools.pairwise(marks)]
    return {"rank": rank, "rows": int(tree.levels[0].assignments.size), "picked": int(selection.rows.size),
            "levels": per_level, "cluster_s": clustered - start, "sampling_s": end - clustered,
            "sampling_bytes": sum(sd.comm_bytes().values()) - sum(after_levels.values()),
            "total_s": end - start, "sampling_added_peak_mib": sampling_peak - before,
            "added_peak_mib": max([sampling_peak] + [p for _, _, p in store.marks]) - before, "baseline_mib": before}


def _worker(rank: int, world: int, init_file: str, args: dict, out_file: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        Path(f"{out_file}.{rank}.json").write_text(json.dumps(_run(rank, world, **args)))
    finally:
        if world > 1:
            dist.destroy_process_group()


def launch(world: int, args: dict, tmp: Path) -> list[dict]:
    out = tmp / f"w{world}"
    mp.start_processes(_worker, args=(world, str(tmp / f"w{world}.init"), args, str(out)), nprocs=world,
                       join=True, start_method="spawn")
    return [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(world)]


def default_levels(rows: int, split: int = 0) -> list[list[int]]:
    """(k, resampling steps, r, Lloyd iterations, split) per level: ~74 points per level-1 cluster as in the paper,
    then 10x smaller; few iterations, since the benchmark is about memory and communication. split: level 1 as a
    split k-means without resampling (the paper's level 1), whose centroids stay sharded over the ranks."""
    k1 = max(4, rows // 74)
    ks = [k1, max(2, k1 // 10), max(2, k1 // 100)]
    ks = sorted(set(ks), reverse=True)
    below = [rows] + ks[:-1]
    levels = [[k, 1 if b // k >= 4 else 0, max(1, b // k // 2), 3, 0] for k, b in zip(ks, below)]
    if split:
        levels[0][1], levels[0][4] = 0, split
    return levels


def render(doc: dict) -> str:
    head = (f"Levels (k, steps, r, iterations, split): {doc['levels']}; target {doc['target']:,}. "
            f"Machine: {doc['machine']}; load average before: {doc['load_before']}. Written by `benchmarks/bench_sharded.py`.")
    columns = ("| ranks | total s | clustering s | sampling s | peak RSS added per rank, MiB (rank 0 first) | "
               "peak RSS added per level and in the sampling, MiB (rank 0) | bytes sent per level (rank 0) | "
               "sampling bytes (rank 0) | same selection as 1 rank |")
    lines = [f"# Sharded curation: {doc['rows']:,} x {doc['d']} float32, memory-mapped", "", head, "", columns,
             "|---|---|---|---|---|---|---|---|---|"]
    for w in doc["worlds"]:
        r0 = w["ranks"][0]
        rss = ", ".join(f"{r['added_peak_mib']:.0f}" for r in w["ranks"])
        per_level = ", ".join(f"{lv['bytes']:,}" for lv in r0["levels"])
        peaks = ", ".join(f"{p:.0f}" for p in [lv["added_peak_mib"] for lv in r0["levels"]]
                          + [r0["sampling_added_peak_mib"]])
        lines.append(f"| {w['world']} | {max(r['total_s'] for r in w['ranks']):.1f} | "
                     f"{max(r['cluster_s'] for r in w['ranks']):.1f} | {max(r['sampling_s'] for r in w['ranks']):.2f}"
                     f" | {rss} | {peaks} | {per_level} | {r0['sampling_bytes']:,} | {w['same_selection']:.4f} |")
    lines += ["", ("Same selection: the fraction of world 1's selected rows that this world also selects (k-means "
                   "sums in another order can move a few points between clusters; the sampling itself is exact, "
                   "see tests/test_sharded_sampling.py).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="pool rows N (default 10M: 2.4 GiB at d=64)")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--worlds", default="1,2,4", help="process counts to run")
    ap.add_argument("--target", type=int, help="subset size (default: N / 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", type=int, default=0, help="level 1 split into this many fine clusters per coarse one, "
                    "without resampling (its centroids sharded over ranks); 0: one k-means")
    ap.add_argument("--work", help="folder for the pool and outputs (default: a temp folder, removed after)")
    ap.add_argument("--out", help="output path without suffix (default: benchmarks/results/sharded_{rows})")
    args = ap.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    target = args.target or args.rows // 4
    levels = default_levels(args.rows, args.split)
    name = f"sharded_{args.rows}" + (f"_split{args.split}" if args.split else "")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        pool = tmp / "pool.npy"
        write_pool(pool, args.rows, args.d, args.seed)
        doc = {"rows": args.rows, "d": args.d, "levels": levels, "target": target,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
               "load_before": os.getloadavg()[0], "worlds": []}
        reference = None
        for world in worlds:
            work = tmp / f"run{world}"
            ranks = launch(world, {"pool": str(pool), "work": str(work), "levels": levels, "target": target,
                                   "seed": args.seed}, tmp)
            from sslcurate.pipeline import load_selection

            selection = load_selection(work)
            reference = selection if reference is None else reference
            same = float(np.isin(reference, selection).mean()) if reference.size else 1.0
            doc["worlds"].append({"world": world, "ranks": ranks, "same_selection": same,
                                  "selected": int(selection.size)})
            print(f"world {world}: {max(r['total_s'] for r in ranks):.1f} s, peak RSS added "
                  f"{[round(r['added_peak_mib']) for r in ranks]} MiB", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(doc))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
