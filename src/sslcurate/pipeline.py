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
from .assign import cpu_description, resolve_backend, resolve_precision
from .artifacts import LevelStore, atomic_save_json, atomic_save_npy, remove_stale_temps
from .config import CurationConfig
from .dedup import deduplicate
from .hierarchy import ClusterTree, check_levels, hierarchical_kmeans
from .metrics import balance_report
from .errors import CurationInputError
from .sampling import check_target, hierarchical_sampling
from .sources import SubsetSource, as_source, validate_finite

log = logging.getLogger(__name__)


@dataclass
class CurationResult:
    indices: np.ndarray  # (target_size,) int64 selected pool rows, sorted, repeats adjacent
    tree: ClusterTree
    report: dict


def curate(x, config: CurationConfig, *, out_dir: str | os.PathLike | None = None,
           labels: np.ndarray | None = None, check_finite: bool = True, progress: bool = False) -> CurationResult:
    """Curate a subset of the rows of ``x`` (array, ``.npy`` path, shard folder or source).

    With ``out_dir``, each clustering level goes to ``out_dir/clustering/`` (reused by a rerun with the same
    clustering settings, so a killed run resumes and a new sampling config costs no clustering; a level in
    progress resumes from its checkpoints there), and the selection to ``out_dir/indices.npy`` +
    ``out_dir/report.json``. labels: optional (n,) concept labels, used only by the report.

    Before any work, the run is planned (:func:`sslcurate.planning.plan_run`) and refused with a
    CurationInputError if rank 0 would need more than ``config.memory_budget_gb`` (default: the RAM available).
    Several processes (torchrun, SLURM): each reads its share of the rows; rank 0 samples, writes and returns
    the report; every rank returns the selection (broadcast from rank 0), the other ranks an empty report and
    only their rows of level 1 in ``tree``.
    """
    from .planning import available_memory, check_budget, format_bytes, format_plan, plan_run  # no cycle at import

    source = as_source(x)
    check_levels(config.levels, len(source))
    # The plan comes before any pass over the data: a run that cannot fit fails in seconds, not hours.
    plan = plan_run(len(source), source.dim, config.levels, world_size=dist.get_world_size(),
                    chunk_rows=config.kmeans.chunk_rows, in_memory=source.in_memory,
                    device="cuda" if torch.cuda.is_available() else "cpu",
                    init_sample_size=config.kmeans.init_sample_size, init=config.kmeans.init,
                    dedup=config.dedup.enabled,
                    dedup_clusters=config.dedup.n_clusters)
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
    s = config.sampling
    check_target(len(source), config.target_size, s.multiplier, s.clamp)  # fail before, not after, the clustering

    log.info("curating %d x %d -> %d with k = %s; planned peak memory %s per rank (rank 0: %s)", *source.shape,
             config.target_size, [lv.n_clusters for lv in config.levels], format_bytes(plan["peak_per_rank"]),
             format_bytes(plan["peak_rank0"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = resolve_backend(config.kmeans.backend, device)
    # Each level's k-means resolves "auto" with its own k; recorded as one name when all levels agree.
    per_level = [resolve_precision(config.kmeans.precision, device, source.shape[1], lv.n_clusters)
                 for lv in config.levels]
    precision = per_level[0] if len(set(per_level)) == 1 else per_level
    store = None
    if out_dir is not None:
        key = {**config.clustering_dict(), "resolved_backend": backend, "resolved_precision": precision,
               "input": {k: input_info[k] for k in ("shape", "fingerprint")}}
        store = LevelStore(Path(out_dir) / "clustering", key, checkpoint_every=config.checkpoint_every,
                           checkpoint_seconds=config.checkpoint_seconds)
    tree = hierarchical_kmeans(source, config.levels, seed=config.seed, progress=progress, store=store,
                               **config.kmeans.as_kwargs())
    if not dist.is_main_process():  # rank 0 holds level 1 of the tree whole; it samples, reports and writes
        return CurationResult(indices=_broadcast_indices(None), tree=tree, report={})
    indices = hierarchical_sampling(tree, config.target_size, strategy=s.strategy, multiplier=s.multiplier,
                                    seed=np.random.default_rng([config.seed, 1_000_003]), clamp=s.clamp)
    report = balance_report(tree, indices, labels)  # over the deduplicated pool, where the balancing happened
    if kept is not None:
        indices = kept[indices]  # back to rows of x; kept is sorted, so the selection stays sorted
        report["dedup"] = {"threshold": config.dedup.threshold, "n_clusters": config.dedup.n_clusters,
                           "input_rows": int(input_info["shape"][0]), "kept_rows": int(kept.size),
                           "dropped_rows": int(input_info["shape"][0] - kept.size)}
    report["config"] = asdict(config)
    report["input"] = input_info
    report["resolved_backend"] = backend
    report["resolved_precision"] = precision
    report["environment"] = run_environment()
    report["sslcurate_version"] = __version__
    if out_dir is not None and dist.is_main_process():
        atomic_save_npy(Path(out_dir) / "indices.npy", indices.astype(np.int64))
        atomic_save_json(Path(out_dir) / "report.json", report)
        stale = remove_stale_temps(out_dir)
        log.info("wrote %d indices and the balance report to %s%s", indices.size, out_dir,
                 f" (removed {stale} temp file(s) of an interrupted run)" if stale else "")
    return CurationResult(indices=_broadcast_indices(indices), tree=tree, report=report)


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


def _broadcast_indices(indices: np.ndarray | None) -> np.ndarray:
    """Rank 0's selection on every rank (a no-op in one process): every training rank needs the subset."""
    if dist.get_world_size() == 1:
        return indices
    size = dist.broadcast(torch.tensor([0 if indices is None else indices.size], dtype=torch.int64))
    buf = torch.from_numpy(indices.astype(np.int64)) if indices is not None else torch.empty(int(size[0]),
                                                                                          dtype=torch.int64)
    return dist.broadcast(buf).numpy()
