"""Resampling-clustering (Vo et al. 2024, Sec. 4.2): k-means repeated on r points per cluster, then one
assignment of every point."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import distributed as dist
from ..errors import CurationInputError
from ..sources import SubsetSource, as_source
from .common import KMeansResult, _draw_salt, _row_offset, _row_range, make_rng, uniform_hash
from .lloyd import assign_source, kmeans
from .settings import KMeansSettings
from .split import split_kmeans

log = logging.getLogger(__name__)


def sample_per_cluster(assignments: np.ndarray, distances: np.ndarray, n_clusters: int, r: int, strategy: str,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``r`` points of every cluster: the ``r`` closest to the centroid or ``r`` at random.

    assignments, distances: (n,) of all rows. The one-process form of :func:`select_per_cluster`.
    Returns sorted int64 indices.
    """
    return select_per_cluster(assignments, distances, 0, n_clusters, r, strategy, _draw_salt(rng))


def select_per_cluster(assignments: np.ndarray, distances: np.ndarray, row_offset: int, n_clusters: int, r: int,
                       strategy: str, salt: int) -> np.ndarray:
    """The ``r`` rows of every cluster with the smallest key, over all ranks, without full-length buffers.

    assignments, distances: (n_local,) of this rank's rows, the first being global row ``row_offset``.
    key: the distance (``"closest"``) or a hash of (salt, global row) (``"random"``, the same uniform draw
    whatever the number of ranks); ties go to the lower row. Each rank proposes its own ``r`` best per cluster
    (at most ``min(n_local, k r)`` candidates), only those are gathered, and every rank keeps the global
    ``r`` best per cluster: the same selection on 1 or many ranks. Returns sorted int64 global row indices
    (``<= k r`` of them, on every rank).

    The local rows are scanned in blocks of ``SELECT_BLOCK``, keeping the best ``r`` per cluster so far, so the
    selection's scratch is O(block + k r), not a few int64 arrays per row.
    """
    if strategy not in ("closest", "random"):
        raise CurationInputError(f"resampling strategy must be 'closest' or 'random', got {strategy!r}")
    cand_a = np.empty(0, dtype=np.int64)
    cand_key = np.empty(0, dtype=np.float64)
    cand_rows = np.empty(0, dtype=np.int64)
    for b in range(0, assignments.size, SELECT_BLOCK):
        a = assignments[b:b + SELECT_BLOCK]
        rows = np.arange(row_offset + b, row_offset + b + a.size, dtype=np.int64)
        key = (distances[b:b + SELECT_BLOCK].astype(np.float64) if strategy == "closest"
               else uniform_hash(rows, salt))
        a, key, rows = np.concatenate([cand_a, a]), np.concatenate([cand_key, key]), np.concatenate([cand_rows, rows])
        keep = _first_r_per_cluster(a, key, rows, n_clusters, r)
        cand_a, cand_key, cand_rows = a[keep], key[keep], rows[keep]
    if dist.get_world_size() > 1:
        # float64 carries the cluster and row ids exactly (< 2^53), so one (m, 3) gather moves everything.
        packed = torch.from_numpy(np.stack([cand_a.astype(np.float64), cand_key, cand_rows.astype(np.float64)], 1))
        allc = dist.all_gather_rows(packed).numpy()
        rows_all = allc[:, 2].astype(np.int64)
        cand_rows = rows_all[_first_r_per_cluster(allc[:, 0].astype(np.int64), allc[:, 1], rows_all, n_clusters, r)]
    return np.sort(cand_rows)


SELECT_BLOCK = 1 << 18  # rows per block of the per-cluster selection (~20 MiB of scratch)


def _first_r_per_cluster(assignments: np.ndarray, key: np.ndarray, rows: np.ndarray, n_clusters: int,
                         r: int) -> np.ndarray:
    """Positions of the ``r`` smallest (key, row) per cluster; vectorised: one sort, no loop over clusters."""
    order = np.lexsort((rows, key, assignments))
    sorted_assign = assignments[order]
    starts = np.searchsorted(sorted_assign, np.arange(n_clusters))
    rank_in_cluster = np.arange(order.size) - starts[sorted_assign]
    return order[rank_in_cluster < r]


def resampling_kmeans(x, n_clusters: int, *, settings: KMeansSettings | None = None, steps: int = 10,
                      sample_size: int = 1, sample_strategy: str = "closest", n_iters: int = 50,
                      seed: int | np.random.Generator | None = 0, progress: bool = False, desc: str = "k-means",
                      split: int = 0, checkpoint=None, tag: str = "kmeans") -> KMeansResult:
    """k-means followed by ``steps`` rounds of resampling-clustering (Vo et al. 2024, Sec. 4.2).

    Each round takes ``sample_size`` (r) points per cluster (closest to the centroid or random), runs a fresh
    k-means with the same k on only those points, and reassigns every point to the new centroids. Keeping
    about r points per cluster makes the centroids of dense regions stop outnumbering sparse ones.
    settings: the :class:`KMeansSettings` of every k-means and reassignment (None: the defaults); n_iters: Lloyd
    iterations of each k-means.

    split: > 1 runs every k-means of the level as :func:`split_kmeans` (coarse k-means, then each coarse cluster
    split), for very large k. checkpoint: after each round the centroids and generator state are saved, and
    inside a round the Lloyd iterations (see :func:`kmeans`); a rerun resumes to the same result.
    In a multi-process run, every rank holds only its rows' assignments (``row_range``); the sample's indices
    (at most k r) are on every rank, its rows are read sharded.
    """
    source = as_source(x)
    rng = make_rng(seed)
    n = len(source)
    if steps < 0:
        raise CurationInputError(f"resampling steps must be >= 0, got {steps}")
    if steps and not 1 <= sample_size * n_clusters <= n:
        raise CurationInputError(
            f"{desc}: resampling r={sample_size} points per cluster is larger than the clusters hold "
            f"({n} points in {n_clusters} clusters, {n / n_clusters:.2f} per cluster on average); "
            "choose r <= n / k (the paper uses about half the mean cluster size)")
    settings = settings or KMeansSettings()
    device = settings.run_device()  # where every row is reassigned: where the k-means runs

    def fit(data, run_tag, run_desc):
        if split > 1:
            return split_kmeans(data, n_clusters, split=split, settings=settings, seed=rng, n_iters=n_iters,
                                desc=run_desc, checkpoint=checkpoint, tag=run_tag)
        return kmeans(data, n_clusters, settings=settings, n_iters=n_iters, seed=rng, progress=progress,
                      desc=run_desc, checkpoint=checkpoint, tag=run_tag)

    saved = checkpoint.load(f"{tag}.rounds") if checkpoint is not None else None
    if saved is not None and saved[0]["centroids"].shape[0] == n_clusters:
        arrays, meta = saved
        done = int(meta["completed"])
        rng.bit_generator.state = meta["rng"]
        # Assignments are recomputed in one pass (the same function that produced them), not stored: O(N).
        assignments, distances = assign_source(source, arrays["centroids"], settings=settings, device=device)
        result = KMeansResult(centroids=arrays["centroids"], assignments=assignments, distances=distances,
                              objective=float(meta["objective"]), n_iters=int(meta["n_iters"]),
                              history=list(meta["history"]), row_range=_row_range(n))
        log.info("%s: resuming after resampling round %d of %d", desc, done, steps)
    else:
        done = 0
        result = fit(source, f"{tag}.round0", desc)
        if steps:
            _save_round(checkpoint, tag, 0, result, rng)
    for step in range(done, steps):
        picked = select_per_cluster(result.assignments, result.distances, _row_offset(n), n_clusters, sample_size,
                                    sample_strategy, _draw_salt(rng))
        if picked.size < n_clusters:
            raise CurationInputError(
                f"{desc}: resampling step {step + 1} kept {picked.size} points, fewer than k={n_clusters} "
                "(too many empty clusters); raise r or lower k")
        result.assignments = result.distances = None  # the rank's rows are reassigned below: hold one copy only
        sub = fit(SubsetSource(source, picked), f"{tag}.round{step + 1}", f"{desc} resample {step + 1}/{steps}")
        assignments, distances = assign_source(source, sub.centroids, settings=settings, device=device)
        counts = dist.all_reduce_sum(torch.from_numpy(np.bincount(assignments, minlength=n_clusters)))
        objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
        result = KMeansResult(centroids=sub.centroids, assignments=assignments, distances=distances,
                              objective=objective, n_iters=result.n_iters + sub.n_iters,
                              history=result.history + [sub.objective], n_empty_clusters=int((counts == 0).sum()),
                              row_range=_row_range(n))
        if step + 1 < steps:
            _save_round(checkpoint, tag, step + 1, result, rng)
    return result


def _save_round(checkpoint, tag: str, completed: int, result: KMeansResult, rng: np.random.Generator) -> None:
    if checkpoint is not None:
        checkpoint.save(f"{tag}.rounds", {"centroids": result.centroids},
                        {"completed": completed, "rng": rng.bit_generator.state, "objective": result.objective,
                         "n_iters": result.n_iters, "history": result.history})
