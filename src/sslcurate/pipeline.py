"""The whole core in one call: validate embeddings -> hierarchical k-means (resumable) -> balanced sampling ->
balance report, with every artifact written atomically under an output folder."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import distributed as dist
from .artifacts import LevelStore
from .io import atomic_save_json, atomic_save_npy, remove_stale_temps
from .assign import cpu_description
from .config import CurationConfig, KMeansSettings
from .dedup import deduplicate
from .errors import CurationInputError
from .hierarchy import ClusterTree, LevelConfig, build_tree, check_levels, level_settings
from .metrics import concept_stats, size_stats
from .sampling import Selection, check_target, sample_tree
from .sources import SubsetSource, as_source, validate_finite

log = logging.getLogger(__name__)


# Above this many selected rows a multi-process run leaves the selection in per-rank shards unless asked to gather
# it: 50M int64 rows are 400 MB on every rank; the paper's 743M -> 100M+ subsets would not be.
GATHER_MAX_ROWS = 50_000_000


@dataclass
class CurationResult:
    indices: np.ndarray | None  # (target_size,) int64 selected pool rows, sorted, repeats adjacent; None when a
    # multi-process run left the selection sharded (not gathered)
    tree: ClusterTree
    report: dict
    rank_indices: np.ndarray | None = None  # this rank's share of the selection (the whole of it in one process)


def curate(x, config: CurationConfig, *, out_dir: str | os.PathLike | None = None,
           labels: np.ndarray | None = None, check_finite: bool = True, progress: bool = False,
           gather: bool | None = None) -> CurationResult:
    """Curate a subset of the rows of ``x`` (array, ``.npy`` path, shard folder or source).

    With ``out_dir``, each clustering level goes to ``out_dir/clustering/`` (reused by a rerun with the same
    clustering settings, so a killed run resumes and a new sampling config costs no clustering; a level in
    progress resumes from its checkpoints there), and the selection to ``out_dir/indices.npy`` +
    ``out_dir/report.json``. labels: optional (n,) concept labels, used only by the report.

    Before any work, the run is planned (:func:`sslcurate.planning.plan_run`, which checks the levels against the
    pool with :func:`sslcurate.hierarchy.check_levels`; a dedup that drops rows has them checked again against
    the rows it keeps) and refused with a CurationInputError if rank 0 would need more than
    ``config.memory_budget_gb`` (default: the RAM available). Each level's k-means settings are settled once
    (:func:`sslcurate.hierarchy.level_settings`: backend and precision resolved for this machine and the level's
    k); the levels run with those, and the report and the reuse key record them.
    Several processes (torchrun, SLURM): each reads its share of the rows, keeps only its rows of level 1 and
    picks its own share of the selection (:func:`sslcurate.sampling.sample_tree`; the same subset for any
    number of ranks). ``out_dir`` then gets ``indices.rank{r}.npy`` per rank plus ``indices.json`` (the shards'
    index), and ``indices.npy`` whole when ``gather`` (None: when the target is at most ``GATHER_MAX_ROWS``);
    every rank returns the report, its ``rank_indices``, and ``indices`` (the whole selection) when gathered.
    """
    from .planning import available_memory, check_budget, format_bytes, format_plan, plan_run  # no cycle at import

    source = as_source(x)
    # The plan (which checks the levels) comes before any pass over the data: a run that cannot fit fails in
    # seconds, not hours.
    plan = plan_run(len(source), source.dim, config.levels, world_size=dist.get_world_size(),
                    chunk_rows=config.kmeans.chunk_rows, in_memory=source.in_memory,
                    device="cuda" if torch.cuda.is_available() else "cpu",
                    init_sample_size=config.kmeans.init_sample_size, init=config.kmeans.init,
                    dedup=config.dedup.enabled,
                    dedup_clusters=config.dedup.n_clusters, shared_files=out_dir is not None,
                    target_size=config.target_size if gather is not True else min(config.target_size, len(source)))
    if config.memory_budget_gb:
        budget = config.memory_budget_gb * 2 ** 30
    else:  # an array already in RAM is in the plan but no longer in MemAvailable: count it once
        budget = available_memory() + (getattr(source, "array", np.empty(0)).nbytes if source.in_memory else 0)
    log.info("plan:\n%s", format_plan(plan))
    check_budget(plan, budget)
    if check_finite:
        validate_finite(source, config.kmeans.chunk_rows)
    if labels is not None and len(labels) != len(source):
        raise CurationInputError(f"labels has {len(labels)} entries for {len(source)} embeddings")
    input_info = {"name": source.name, "shape": list(source.shape), "fingerprint": source.fingerprint()}
    kept = None
    if config.dedup.enabled:
        kept = _deduplicated_rows(source, config, input_info["fingerprint"], out_dir, progress)
        source = SubsetSource(source, kept)
        labels = labels[kept] if labels is not None else None
        check_levels(config.levels, len(source))  # the levels must fit the rows kept, not only the pool
    s = config.sampling
    check_target(len(source), config.target_size, s.multiplier, s.clamp)  # fail before, not after, the clustering

    log.info("curating %d x %d -> %d with k = %s; planned peak memory %s per rank", *source.shape,
             config.target_size, [lv.n_clusters for lv in config.levels], format_bytes(plan["peak_rank0"]))
    # What each level runs with: "auto" resolved once, here, for this machine and the level's k.
    device = config.kmeans.run_device()
    settings = [level_settings(config.kmeans, lv, source.dim, device) for lv in config.levels]
    backend, precision = _recorded_paths(settings, config.levels, source.dim, device)
    store = None
    if out_dir is not None:
        key = {**config.clustering_dict(), "resolved_backend": backend, "resolved_precision": precision,
               "input": {k: input_info[k] for k in ("shape", "fingerprint")}}
        store = LevelStore(Path(out_dir) / "clustering", key, checkpoint_every=config.checkpoint_every,
                           checkpoint_seconds=config.checkpoint_seconds)
    tree = build_tree(source, config.levels, settings, seed=config.seed, progress=progress, store=store)
    selection = sample_tree(tree, config.target_size, strategy=s.strategy, multiplier=s.multiplier,
                            seed=config.seed, clamp=s.clamp)
    # over the deduplicated pool, where the balancing happened
    report = selection_report(tree, selection, labels)
    rows = selection.rows if kept is None else kept[selection.rows]  # kept is sorted: rows stay sorted
    if kept is not None:
        report["dedup"] = {"threshold": config.dedup.threshold, "n_clusters": config.dedup.n_clusters,
                           "input_rows": int(input_info["shape"][0]), "kept_rows": int(kept.size),
                           "dropped_rows": int(input_info["shape"][0] - kept.size)}
    report["config"] = asdict(config)
    report["input"] = input_info
    report["resolved_backend"] = backend
    report["resolved_precision"] = precision
    report["environment"] = run_environment()
    report["sslcurate_version"] = __version__
    world = dist.get_world_size()
    if gather is None:
        gather = world == 1 or report["subset_size"] <= GATHER_MAX_ROWS
    indices = _gather_rows(rows) if gather else None
    if out_dir is not None:
        write_selection(Path(out_dir), rows, indices)
        if dist.is_main_process():
            atomic_save_json(Path(out_dir) / "report.json", report)
            stale = remove_stale_temps(out_dir)
            log.info("wrote %d indices and the balance report to %s%s", report["subset_size"], out_dir,
                     f" (removed {stale} temp file(s) of an interrupted run)" if stale else "")
    return CurationResult(indices=indices, tree=tree, report=report, rank_indices=rows)


def _recorded_paths(settings: list[KMeansSettings], levels: list[LevelConfig], dim: int,
                    device) -> tuple[str, str | list[str]]:
    """The backend and the precision(s) the levels' k-means run with, as the report and the reuse key record
    them: one precision when every level has the same, else one per level. Where a level's settings keep
    ``"auto"`` (:func:`sslcurate.hierarchy.level_settings`: a CUDA run; a split level's precision, which each of
    its k-means resolves for its own k), the name is what ``"auto"`` stands for on ``device`` at the level's k."""
    runs = [s.resolved(device, dim, lv.n_clusters) for s, lv in zip(settings, levels)]
    precisions = [r.precision for r in runs]
    return runs[0].backend, precisions[0] if len(set(precisions)) == 1 else precisions


def selection_report(tree: ClusterTree, selection: Selection, labels: np.ndarray | None = None) -> dict:
    """The balance of pool vs subset at every level (and over concepts if labelled), from the per-cluster
    counts every rank holds: :func:`sslcurate.metrics.balance_report`'s figures without level 1 or the
    selection whole on any rank. A quota of q from a cluster of s points holds min(q, s) distinct points."""
    pool, subset = selection.cluster_sizes, selection.cluster_quotas
    report = {"pool_size": int(tree.n_points), "subset_size": int(subset.sum()),
              "unique_in_subset": int(np.minimum(pool, subset).sum()), "levels": {}}
    for lv, level in enumerate(tree.levels, 1):
        if lv > 1:  # counts of a level are its children's counts summed by parent
            pool = np.bincount(level.assignments, weights=pool, minlength=level.n_clusters).astype(np.int64)
            subset = np.bincount(level.assignments, weights=subset, minlength=level.n_clusters).astype(np.int64)
        report["levels"][str(lv)] = {"pool": size_stats(pool), "subset": size_stats(subset)}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        n_concepts = int(labels.max(initial=-1)) + 1
        # this rank's picks per concept (slot 0: unlabelled), summed over ranks: O(concepts), not O(subset)
        local = np.bincount(np.maximum(labels[selection.rows], -1) + 1, minlength=n_concepts + 1)
        counts = dist.all_reduce_sum(torch.from_numpy(local.astype(np.int64))).numpy()
        picked = np.repeat(np.arange(-1, n_concepts), counts)  # the subset's labels, in concept order
        report["concepts"] = {"pool": concept_stats(labels, n_concepts),
                              "subset": concept_stats(picked, n_concepts, labels)}
    return report


def write_selection(out_dir: Path, rows: np.ndarray, gathered: np.ndarray | None) -> None:
    """The selection on disk. One process: ``indices.npy``. Several: each rank writes ``indices.rank{r}.npy``
    (its sorted picks; in rank order they are the whole sorted selection), rank 0 writes ``indices.json`` (the
    shards and their sizes, written last: its presence means every shard is complete) and, if gathered,
    ``indices.npy``."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        atomic_save_npy(out_dir / "indices.npy", rows.astype(np.int64))
        return
    atomic_save_npy(out_dir / f"indices.rank{rank}.npy", rows.astype(np.int64))
    sizes = np.zeros(world, dtype=np.int64)
    sizes[rank] = rows.size
    sizes = dist.all_reduce_sum(torch.from_numpy(sizes)).numpy()  # O(world); also a barrier on the shards
    if not dist.is_main_process():
        return
    if gathered is not None:
        atomic_save_npy(out_dir / "indices.npy", gathered)
    atomic_save_json(out_dir / "indices.json", {
        "world_size": world, "total": int(sizes.sum()), "gathered": gathered is not None,
        "shards": [{"file": f"indices.rank{r}.npy", "rows": int(n)} for r, n in enumerate(sizes)]})


def load_selection(out_dir: str | os.PathLike) -> np.ndarray:
    """The whole selection of a finished run: ``indices.npy``, or its per-rank shards concatenated."""
    out_dir = Path(out_dir)
    if (out_dir / "indices.npy").exists():
        return np.load(out_dir / "indices.npy")
    index = out_dir / "indices.json"
    if not index.exists():
        raise CurationInputError(f"{out_dir} holds no selection (no indices.npy or indices.json)")
    shards = json.loads(index.read_text())["shards"]
    return np.concatenate([np.load(out_dir / s["file"]) for s in shards]).astype(np.int64)


def run_environment() -> dict:
    """What a run was made on: threads, world size, the CPU and its relevant flags, the fused kernels' ISA. The
    selection does not depend on any of it (sslcurate.canonical); it is recorded so a reader can check that."""
    from .fused import fused_isa  # the kernels' module loads lazily

    return {"torch_threads": torch.get_num_threads(), "world_size": dist.get_world_size(),
            **cpu_description(), "fused_isa": fused_isa(), "torch_version": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _deduplicated_rows(source, config: CurationConfig, fingerprint: str, out_dir, progress: bool) -> np.ndarray:
    """Sorted rows of ``source`` that survive near-duplicate removal; cached in ``out_dir/dedup/`` so a resumed
    run or a new sampling config does not redo it."""
    if dist.get_world_size() > 1:
        raise CurationInputError(
            "dedup runs in one process: deduplicate the pool first (sslcurate.deduplicate, or experiment=curate "
            "with curation.dedup.threshold on one process), then curate the kept rows with several processes")
    key = {"dedup": asdict(config.dedup), "seed": config.seed, "shape": list(source.shape), "fingerprint": fingerprint}
    folder = Path(out_dir) / "dedup" if out_dir is not None else None
    if folder is not None and (folder / "key.json").exists():
        if json.loads((folder / "key.json").read_text()) == key and (folder / "kept_rows.npy").exists():
            log.info("dedup: reusing %s", folder)
            return np.load(folder / "kept_rows.npy")
    d = config.dedup
    keep = deduplicate(source, d.threshold, n_clusters=d.n_clusters, seed=config.seed, progress=progress,
                       chunk_rows=min(config.kmeans.chunk_rows, 4096))
    kept = np.flatnonzero(keep).astype(np.int64)
    log.info("dedup at cosine %.4g: kept %d of %d rows (%d near-duplicates dropped)", d.threshold, kept.size,
             len(source), len(source) - kept.size)
    if folder is not None:
        atomic_save_npy(folder / "kept_rows.npy", kept)
        atomic_save_json(folder / "key.json", key)  # written last: its presence means the rows are complete
    return kept


def _gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's picks concatenated in rank order on every rank (a no-op in one process): the sorted
    selection, since rank r holds rows below rank r + 1's."""
    return dist.all_gather_rows(torch.from_numpy(rows.astype(np.int64))).numpy()
