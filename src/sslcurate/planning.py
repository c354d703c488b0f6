"""Help choosing the hierarchy and knowing what a run will cost, before running it.

The paper's web-image run scaled as: about 74 points per level-1 cluster (743M points into 10M clusters), then
each level 5-20x smaller (10M, 500k, 50k, 10k), r about half the mean cluster size of the level, 10 resampling
steps (REFERENCE.md, section 6). :func:`suggest_levels` applies that rule to any pool size.

:func:`plan_run` prices a run before it starts: per-rank memory by component, chunk sizes and FLOPs per level, for
any world size; :func:`check_budget` refuses a plan above a memory budget (``curate()`` does both first). As a
command: ``python -m sslcurate.planning --n 743e6 --d 1024 --levels 10000000,500000,50000,10000 --world 128``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .errors import CurationInputError
from .hierarchy import LevelConfig, check_levels, sharded_centroids


def suggest_levels(n_points: int, *, n_levels: int | None = None, points_per_cluster: float = 74.0,
                   shrink: float = 10.0, top_clusters: int | None = None, resampling_steps: int = 10,
                   n_iters: int = 50) -> list[LevelConfig]:
    """Levels for a pool of ``n_points``: level 1 with ~``points_per_cluster`` points per cluster, each level
    ``shrink`` times smaller, stopping at ``top_clusters`` (default: about the square root of level 1's k, at
    least 10) or after ``n_levels`` levels. r is half the mean cluster size of each level (at least 1); level 1
    with under 4 points per cluster gets no resampling, as r would be 1."""
    if n_points < 2:
        raise CurationInputError(f"a pool of {n_points} point(s) cannot be clustered")
    if shrink <= 1 or points_per_cluster <= 1:
        raise CurationInputError("shrink and points_per_cluster must be > 1")
    k1 = max(2, min(n_points // 2, round(n_points / points_per_cluster)))
    top = top_clusters or max(10, int(math.sqrt(k1)))
    ks = [k1]
    while (n_levels is None and ks[-1] / shrink >= top) or (n_levels is not None and len(ks) < n_levels):
        nxt = max(2, round(ks[-1] / shrink))
        if nxt >= ks[-1]:
            break
        ks.append(nxt)
    levels, below = [], n_points
    for k in ks:
        mean_size = below / k
        r = max(1, int(mean_size // 2))
        steps = resampling_steps if mean_size >= 4 else 0
        levels.append(LevelConfig(n_clusters=k, resampling_steps=steps, sample_size=r, n_iters=n_iters))
        below = k
    return levels


# What the planner assumes about the code it plans for (each figure is a property of that code, not a guess):
INDEX_BYTES = 8      # int64 row ids and assignments
DIST_BYTES = 4       # float32 distances
CANDIDATE_BYTES = 24  # one resampling candidate on the wire: (cluster, key, row) as float64
ROUTED_BYTES = 16    # one row routed to its coarse cluster's owner in a split level: (cluster, row) int64
BOUNDS_BYTES = 24    # Hamerly state per row: assignment int64 + two float64 bounds
# Sampling (sslcurate.sampling.sample_tree) on every rank, over its own rows of level 1: the level's assignments
# (8) and distances (4), its member order (8) and that sort's scratch (8); then the row ids, clusters, keys (3 x 8),
# the threshold search's filtered copies of keys and clusters and their slot lookup (3 x 8), a few masks (4), the
# per-row repeats (8) and the picks (8): 96 bytes per own row. No rank holds another's rows.
SAMPLING_BYTES_PER_ROW = 96
# ... and per level-1 cluster, the same on every rank: sizes, quotas, copies, partial, need, search bounds, slot
# lookup, counts and thresholds (10 x 8), plus the grouped water-fill's keys, sort orders, prefix sums and ranks
# (15 x 8) when it splits the level-2 quotas over level 1.
SAMPLING_BYTES_PER_CLUSTER = 200
DEDUP_BYTES_PER_ROW = 42  # dedup's visit order, labels, priorities, sorted labels, masks and lexsort scratch
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def plan_run(n_points: int, dim: int, levels: list[LevelConfig], *, world_size: int = 1, dtype: str = "float32",
             chunk_rows: int = 65_536, in_memory: bool = False, device: str = "cpu",
             init_sample_size: int | None = None, max_cluster_factor: float = 4.0, dedup: bool = False,
             init: str = "auto", dedup_clusters: int | None = None, target_size: int | None = None,
             shared_files: bool = True) -> dict:
    """Per-rank memory (by component), chunk sizes and FLOPs of every level of a run, before running it.

    levels: checked against ``n_points`` first (:func:`sslcurate.hierarchy.check_levels`; ``curate`` relies on this
    check). n_points, dim: the pool (N, D); dtype: how the embeddings are stored (read as float32 chunks); in_memory: the
    pool is an array in every process's RAM (a memory-mapped ``.npy`` or shard folder is paged a chunk at a
    time and counts nothing). world_size: ranks sharing the work. device: ``"cpu"`` or ``"cuda"`` (the size of
    the assignment's distance tile). init_sample_size: rows of each k-means++ (None: the k-means default,
    ``max(40 k, 10000)``). max_cluster_factor: in a split level, how much larger than the mean the
    largest coarse cluster is assumed to be (its rows are clustered in RAM on one rank).

    Per-rank memory is O(N / world x D + k x D): a rank's rows' state, one chunk, and (k, D) centroids and sums,
    except at a split level without resampling in a multi-process run (:func:`sslcurate.hierarchy.sharded_centroids`):
    each rank then holds only its block of the fine centroids (about k / world), the coarse k-means's k / split,
    and the next level reads the level's centroids from the ranks' part files a chunk at a time. That needs a
    folder every rank sees (``shared_files``: ``curate`` with an ``out_dir``); without one the blocks are
    gathered on every rank.
    No rank holds an O(N) buffer: every rank samples from its own rows of level 1 (``sampling``, after the last
    level, with the tree's centroids still held); the one extra is the gathered selection (``target_size``
    int64 rows, all-gathered on every rank when at most ``pipeline.GATHER_MAX_ROWS``; None: plan for the
    largest gathered selection). Rank 0 holds nothing more than the others (``rank0_extra`` is 0).
    FLOPs count the distance GEMMs (2 x rows x k x D per assignment pass): the k-means++ candidates, the Lloyd
    iterations plus the final assignment, and per resampling round the sample's k-means and the reassignment
    of every row. In a split level the fine work assumes shares proportional to sizes, a lower bound.
    init: ``"k-means++"`` (on the sample above) or ``"k-means||"`` (passes over every row, then k-means++ on the
    ~KMPAR_ROUNDS x KMPAR_OVERSAMPLING x k weighted candidates, which every rank holds), or ``"auto"``: each
    k-means planned with what :func:`sslcurate.kmeans.resolve_init` picks for its rows, k and iterations.
    dedup: near-duplicate removal runs first, in one process (:func:`sslcurate.deduplicate`); its window of kept
    rows is the whole pool at worst, or the largest of ``dedup_clusters`` clusters (``max_cluster_factor``).
    """
    from .assign import CPU_BLOCK_COLS, CPU_BLOCK_ROWS, GPU_BLOCK_COLS, GPU_BLOCK_ROWS
    from .kmeans import (BOUNDS_MAX_DIM, KMPAR_OVERSAMPLING, KMPAR_ROUNDS, init_sample_rows, kmeanspp_trials,
                         resolve_init)

    if dtype not in DTYPE_BYTES:
        raise CurationInputError(f"dtype must be one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    if world_size < 1 or chunk_rows < 1:
        raise CurationInputError(f"world_size and chunk_rows must be >= 1, got {world_size} and {chunk_rows}")
    check_levels(levels, n_points)
    tile_rows, tile_cols = (GPU_BLOCK_ROWS, GPU_BLOCK_COLS) if device == "cuda" else (CPU_BLOCK_ROWS, CPU_BLOCK_COLS)
    f32 = 4

    def kmeans_cost(rows: int, k: int, iters: int) -> tuple[dict, dict]:
        """Memory beyond the per-row state, and FLOPs, of one k-means of ``k`` clusters over ``rows`` rows."""
        sample = init_sample_rows(rows, k, init_sample_size)
        trials = kmeanspp_trials(k)
        chunk = min(chunk_rows, -(-rows // world_size))
        mem = {"chunk": chunk * dim * f32 + f32 * min(tile_rows, chunk) * min(tile_cols, k),
               "centroids_and_sums": k * dim * (3 * f32 + 8),  # centroids, prepared copy, update; float64 sums
               # k-means++ is split over ranks: each holds its share of the sample (rows, transposed copy,
               # candidate distances, cumulative weights); the sample's row ids are on every rank.
               "init_sample": -(-sample // world_size) * ((2 * dim + 2 + trials) * f32 + 8) + INDEX_BYTES * sample}
        flops = {"init": 2 * sample * (dim + 2) * trials * k, "lloyd": 2 * rows * k * dim * (iters + 1)}
        if resolve_init(init, rows, k, iters, init_sample_size) == "k-means||":
            cands = min(rows, int(KMPAR_ROUNDS * KMPAR_OVERSAMPLING * k) + 1)
            # per own row: distance and owner; every rank: all candidates, twice while they are reclustered (the
            # rounds' list and its concatenation), then k-means++ on its share of them
            mem["init_sample"] = (-(-rows // world_size) * (f32 + INDEX_BYTES) + cands * (2 * dim * f32 + 8)
                                  + -(-cands // world_size) * ((2 * dim + 2 + trials) * f32 + 8))
            flops["init"] = 2 * rows * cands * dim + 2 * cands * (dim + 2) * trials * k
        return mem, flops

    out_levels, n_in, level1_local, below_sharded = [], n_points, 0, False
    for i, lv in enumerate(levels, 1):
        k = lv.n_clusters
        local = -(-n_in // world_size)
        sharded = shared_files and sharded_centroids(lv, world_size)
        # Level 1 reads the pool; a level above reads the centroids below: in RAM on every rank, or from the ranks'
        # part files a chunk at a time when they are sharded.
        in_ram = (n_points * dim * DTYPE_BYTES[dtype] if in_memory else 0) if i == 1 else n_in * dim * f32
        mem = {"input": 0 if below_sharded else in_ram,
               "row_state": local * (INDEX_BYTES + DIST_BYTES) * 2 + (local * BOUNDS_BYTES if dim <= BOUNDS_MAX_DIM
                                                                       else 0),
               "level1_rows": level1_local}
        if lv.split:
            k_coarse = -(-k // lv.split)
            coarse_mem, coarse_flops = kmeans_cost(n_in, k_coarse, lv.n_iters)
            biggest = min(n_in, int(max_cluster_factor * n_in / k_coarse))
            fine_mem, _ = kmeans_cost(biggest, max(1, round(k * biggest / n_in)), lv.n_iters)
            run_mem = {name: max(coarse_mem[name], fine_mem[name]) for name in coarse_mem}
            # the coarse centroids stay while the fine k-means run
            run_mem["centroids_and_sums"] = max(coarse_mem["centroids_and_sums"],
                                                k_coarse * dim * f32 + fine_mem["centroids_and_sums"])
            biggest_share = max(1, round(k * biggest / n_in))
            # this rank's block of fine centroids: a contiguous run of coarse clusters of about equal cost, so
            # about k / world plus at most the largest cluster's share; otherwise the whole matrix on every rank
            run_mem["fine_centroids"] = ((-(-k // world_size) + biggest_share) * dim * f32 if sharded
                                         else k * dim * f32)
            run_mem["split_routing"] = 3 * local * ROUTED_BYTES + biggest * dim * f32
            flops = {"init": coarse_flops["init"] * (1 + lv.split),  # fine inits: k_coarse of them, split x smaller
                     "lloyd": coarse_flops["lloyd"] + 2 * n_in * (k / k_coarse) * dim * (lv.n_iters + 1)}
        else:
            run_mem, flops = kmeans_cost(n_in, k, lv.n_iters)
        mem.update(run_mem)
        flops["resampling"] = 0
        if lv.resampling_steps:
            sample = min(n_in, k * lv.sample_size)
            # the gathered candidates, the sample's row ids, and the previous round's centroids (held while the
            # sample's k-means runs)
            mem["resampling"] = (CANDIDATE_BYTES * min(sample, world_size * min(local, sample))
                                 + INDEX_BYTES * sample + k * dim * f32)
            _, sub = kmeans_cost(sample, k, lv.n_iters)
            if lv.split:
                sub["lloyd"] = flops["lloyd"] * sample / n_in
            flops["resampling"] = lv.resampling_steps * (sub["init"] + sub["lloyd"] + 2 * n_in * k * dim)
        flops["total"] = sum(flops.values())
        out_levels.append({
            "level": i, "n_in": n_in, "k": k, "split": lv.split, "sharded_centroids": sharded, "rows_per_rank": local,
            "chunk_rows": min(chunk_rows, local), "chunk_bytes": min(chunk_rows, local) * dim * f32,
            "memory": {name: int(v) for name, v in mem.items()}, "peak": int(sum(mem.values())),
            "flops": {name: float(v) for name, v in flops.items()},
            "flops_per_rank": float(flops["total"] / world_size)})
        if i == 1:
            level1_local = local * (INDEX_BYTES + DIST_BYTES)
        n_in, below_sharded = k, sharded
    sampling = _sampling_memory(n_points, dim, levels, world_size, target_size,
                                [lv["sharded_centroids"] for lv in out_levels])
    peak = max(max(lv["peak"] for lv in out_levels), sampling["peak"])
    plan = {"n_points": n_points, "dim": dim, "world_size": world_size, "dtype": dtype, "device": device,
            "in_memory": in_memory, "levels": out_levels, "sampling": sampling, "peak_per_rank": peak,
            "rank0_extra": 0, "peak_rank0": peak, "flops": float(sum(lv["flops"]["total"] for lv in out_levels))}
    if dedup:
        from .dedup import WINDOW_BLOCK

        window = n_points if not dedup_clusters else min(n_points, int(max_cluster_factor * n_points / dedup_clusters))
        chunk = min(2048, chunk_rows, n_points)
        mem = {"input": n_points * dim * DTYPE_BYTES[dtype] if in_memory else 0,
               "row_order_and_labels": DEDUP_BYTES_PER_ROW * n_points,
               "kept_window": window * dim * f32, "tiles": chunk * (dim + min(WINDOW_BLOCK, window)) * f32}
        plan["dedup"] = {"clusters": dedup_clusters, "window_rows": window,
                         "memory": {name: int(v) for name, v in mem.items()}, "peak": int(sum(mem.values()))}
        plan["peak_rank0"] = max(plan["peak_rank0"], plan["dedup"]["peak"])
    return plan


def _sampling_memory(n_points: int, dim: int, levels: list[LevelConfig], world_size: int,
                     target_size: int | None, sharded: list[bool]) -> dict:
    """Per-rank memory while sampling: the tree (the centroids of every level not sharded, which stay in their
    part files; level 1's own rows; the upper levels' assignments), the sampler's per-row and per-cluster arrays,
    and the gathered selection if any."""
    from .pipeline import GATHER_MAX_ROWS

    f32 = 4
    local = -(-n_points // world_size)
    ks = [lv.n_clusters for lv in levels]
    gathered = min(n_points if target_size is None else target_size, GATHER_MAX_ROWS)
    if world_size > 1 and target_size is not None and target_size > GATHER_MAX_ROWS:
        gathered = 0  # left in per-rank shards
    # all_gather_rows: the world's padded slots and their concatenation; one process: the picks are the selection
    gather_bytes = 2 * INDEX_BYTES * gathered if world_size > 1 else 0
    mem = {"tree_centroids": sum(k for k, part in zip(ks, sharded) if not part) * dim * f32,
           "tree_upper_levels": sum(k_below * (INDEX_BYTES + DIST_BYTES) * 3 for k_below in ks[:-1]),
           "sampling_rows": SAMPLING_BYTES_PER_ROW * local,
           "sampling_clusters": SAMPLING_BYTES_PER_CLUSTER * ks[0],
           "gathered_selection": gather_bytes}
    return {"rows_per_rank": local, "gathered_rows": gathered, "memory": {n: int(v) for n, v in mem.items()},
            "peak": int(sum(mem.values()))}


def check_budget(plan: dict, budget_bytes: float) -> None:
    """Refuse, before any work, a plan whose busiest rank exceeds ``budget_bytes``."""
    if plan["peak_rank0"] <= budget_bytes:
        return
    phases = [(lv["peak"], lv["memory"], f"level {lv['level']}, k={lv['k']}") for lv in plan["levels"]]
    phases.append((plan["sampling"]["peak"], plan["sampling"]["memory"], "the sampling"))
    if "dedup" in plan:
        phases.append((plan["dedup"]["peak"], plan["dedup"]["memory"], "the near-duplicate removal"))
    _, parts, where = max(phases, key=lambda p: p[0])
    name, size = max(parts.items(), key=lambda kv: kv[1])
    raise CurationInputError(
        f"the run needs about {format_bytes(plan['peak_rank0'])} per rank (peak at {where}"
        f"; largest part: {name} {format_bytes(size)}), over the memory budget of "
        f"{format_bytes(budget_bytes)} per rank with world size {plan['world_size']}. Options: more ranks, a "
        "memory-mapped .npy instead of an in-memory array, smaller kmeans.chunk_rows, a split level without "
        "resampling (levels[i].split, resampling_steps 0: its centroids stay sharded over ranks), kmeans.init "
        "k-means++ (k-means|| holds ~4 k candidates on every rank), dedup.n_clusters for the near-duplicate "
        "removal, or a larger curation.memory_budget_gb")


def format_plan(plan: dict, gflops_per_rank: float | None = None) -> str:
    """A table of the plan: per level, rows per rank, chunk, per-rank memory by component and FLOPs."""
    lines = [f"N={plan['n_points']:,} D={plan['dim']} dtype={plan['dtype']} world={plan['world_size']} "
             f"device={plan['device']} embeddings {'in RAM' if plan['in_memory'] else 'memory-mapped'}"]
    for lv in plan["levels"]:
        split = f" (split {lv['split']})" if lv["split"] else ""
        head = (f"level {lv['level']}: {lv['n_in']:,} -> k={lv['k']:,}{split}"
                + (", centroids sharded over ranks" if lv["sharded_centroids"] else "")
                + f"; {lv['rows_per_rank']:,} rows/rank, chunk {lv['chunk_rows']:,} rows"
                f" ({format_bytes(lv['chunk_bytes'])})")
        lines.append(head)
        mem = ", ".join(f"{name} {format_bytes(v)}" for name, v in lv["memory"].items() if v)
        lines.append(f"  memory per rank {format_bytes(lv['peak'])}: {mem}")
        fl = lv["flops"]
        flops = (f"  FLOPs {fl['total']:.3g} (init {fl['init']:.3g}, Lloyd {fl['lloyd']:.3g}, resampling "
                 f"{fl['resampling']:.3g}); per rank {lv['flops_per_rank']:.3g}")
        if gflops_per_rank:
            flops += f" = {lv['flops_per_rank'] / gflops_per_rank / 1e9 / 3600:.2f} h at {gflops_per_rank:g} GFLOP/s"
        lines.append(flops)
    if "dedup" in plan:
        dd = plan["dedup"]
        mem = ", ".join(f"{name} {format_bytes(v)}" for name, v in dd["memory"].items() if v)
        lines.insert(1, f"dedup first (one process; window up to {dd['window_rows']:,} kept rows): "
                        f"memory {format_bytes(dd['peak'])}: {mem}")
    sp = plan["sampling"]
    mem = ", ".join(f"{name} {format_bytes(v)}" for name, v in sp["memory"].items() if v)
    lines.append(f"sampling: {sp['rows_per_rank']:,} own rows/rank, selection gathered up to "
                 f"{sp['gathered_rows']:,} rows; memory per rank {format_bytes(sp['peak'])}: {mem}")
    lines.append(f"peak per rank {format_bytes(plan['peak_per_rank'])}, rank 0 included (every rank samples from "
                 "its own rows; no rank holds level 1 whole)")
    lines.append(f"total FLOPs {plan['flops']:.3g}")
    return "\n".join(lines)


def available_memory() -> int:
    """Bytes of RAM available now (Linux ``MemAvailable``; otherwise free pages), split over this node's ranks."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return avail // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def parse_bytes(text: str) -> float:
    """``"80GiB"``, ``"512MB"``, ``"1e9"`` -> bytes."""
    units = {"tib": 2 ** 40, "gib": 2 ** 30, "mib": 2 ** 20, "kib": 2 ** 10, "tb": 1e12, "gb": 1e9, "mb": 1e6,
             "kb": 1e3, "b": 1}
    t = text.strip().lower()
    for unit, scale in units.items():
        if t.endswith(unit):
            return float(t[: -len(unit)]) * scale
    return float(t)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def main(argv: list[str] | None = None) -> int:
    """``python -m sslcurate.planning --n 743e6 --d 1024 --levels 10000000,500000,50000,10000 --world 128``"""
    ap = argparse.ArgumentParser(prog="python -m sslcurate.planning", description=main.__doc__ and
                                 "Per-rank memory, chunk sizes and FLOPs of a hierarchical k-means run.")
    ap.add_argument("--n", type=float, required=True, help="pool size N (1e6 notation accepted)")
    ap.add_argument("--d", type=int, required=True, help="embedding dimension D")
    ap.add_argument("--levels", required=True, help="k of each level, bottom first: 10000000,500000,...")
    ap.add_argument("--steps", help="resampling rounds T per level (default: 10 where clusters hold >= 4 items)")
    ap.add_argument("--r", help="resampling sample size r per level (default: half the mean cluster size)")
    ap.add_argument("--split", type=int, default=0, help="level 1 as a two-stage split k-means (e.g. 100)")
    ap.add_argument("--n-iters", type=int, default=50, help="Lloyd iterations per k-means run")
    ap.add_argument("--world", type=int, default=1, help="number of ranks (nodes x GPUs)")
    ap.add_argument("--dtype", default="float32", choices=tuple(DTYPE_BYTES))
    ap.add_argument("--chunk-rows", type=int, default=65_536)
    ap.add_argument("--init-sample", type=float, help="rows of each k-means++ (default: max(40 k, 10000))")
    ap.add_argument("--init", default="auto", choices=("auto", "k-means++", "k-means||"),
                    help="initialisation of every k-means (default: auto, as curate)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--in-memory", action="store_true", help="embeddings held in RAM by every rank")
    ap.add_argument("--budget", help="memory budget per rank, e.g. 80GiB: refuse a plan above it")
    ap.add_argument("--target", type=float, help="subset size (sizes the gathered selection; default: the largest "
                    "gathered one)")
    ap.add_argument("--split-levels", help="split of each level, e.g. 100,0,0,0 (overrides --split)")
    ap.add_argument("--gflops", type=float, help="sustained GFLOP/s per rank, to turn FLOPs into hours")
    args = ap.parse_args(argv)
    n = int(args.n)
    ks = [int(float(k)) for k in args.levels.split(",")]
    below = [n] + ks[:-1]
    rs = [int(v) for v in args.r.split(",")] if args.r else [max(1, b // k // 2) for b, k in zip(below, ks)]
    steps = ([int(v) for v in args.steps.split(",")] if args.steps
             else [10 if b / k >= 4 else 0 for b, k in zip(below, ks)])
    if not len(rs) == len(steps) == len(ks):
        print("--levels, --r and --steps need one value per level", file=sys.stderr)
        return 2
    try:
        splits = ([int(v) for v in args.split_levels.split(",")] if args.split_levels
                  else [args.split] + [0] * (len(ks) - 1))
        if len(splits) != len(ks):
            raise CurationInputError("--split-levels needs one value per level")
        levels = [LevelConfig(k, t, r, n_iters=args.n_iters, split=sp) for k, t, r, sp in zip(ks, steps, rs, splits)]
        plan = plan_run(n, args.d, levels, world_size=args.world, dtype=args.dtype, chunk_rows=args.chunk_rows,
                        in_memory=args.in_memory, device=args.device, init=args.init,
                        init_sample_size=int(args.init_sample) if args.init_sample else None,
                        target_size=int(args.target) if args.target else None)
        print(format_plan(plan, args.gflops))
        if args.budget:
            check_budget(plan, parse_bytes(args.budget))
            print(f"fits the budget of {format_bytes(parse_bytes(args.budget))} per rank")
    except CurationInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
