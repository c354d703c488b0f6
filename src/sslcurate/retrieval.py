"""Retrieval-based curation: part of the subset is the pool's nearest neighbours of a seed set from the target
domain, the rest balanced hierarchical sampling of what is left (DINOv3's data pipeline mixes the two).

:func:`retrieve` takes the top-k pool rows of every seed item (:mod:`sslcurate.knn`: blocked matrix products,
near-ties settled canonically) and merges them round-robin, round r taking every seed's r-th neighbour, so each
seed item contributes as long as the quota allows one per seed; a row retrieved by two seeds counts once.
:func:`mixed_selection` refuses a seed set that does not lie in the pool's embedding space
(:func:`sslcurate.knn.embedding_space_check`), then fills the rest of the target by
:func:`sslcurate.hierarchical_sampling` over the tree with the retrieved rows removed.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import CurationInputError
from .hierarchy import ClusterTree
from .incremental import subtree
from .knn import embedding_space_check, topk_rows
from .sampling import hierarchical_sampling
from .sources import as_source

log = logging.getLogger(__name__)


def check_retrieval(seed_shape: tuple[int, ...], dim: int, fraction: float) -> None:
    """One-line errors for a seed set the pool cannot be searched with, before any work."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise CurationInputError(f"curation.retrieval.fraction is the retrieval share of the target, in [0, 1]; "
                                 f"got {fraction}")
    if len(seed_shape) != 2:
        raise CurationInputError(f"the retrieval seed set must be an (n, d) matrix, got shape {tuple(seed_shape)}")
    if seed_shape[0] == 0:
        raise CurationInputError("the retrieval seed set is empty: give at least one seed item")
    if seed_shape[1] != dim:
        raise CurationInputError(f"the retrieval seed set has dimension {seed_shape[1]} but the pool's embeddings "
                                 f"have {dim}: embed the seeds with the pool's embedder")


def nearest_rows(x, queries: np.ndarray, k: int, *, metric: str = "l2", chunk_rows: int = 16_384) -> np.ndarray:
    """(q, k) int64: the k rows of ``x`` nearest to each query, nearest first, the lower row first among equal
    distances (:func:`sslcurate.knn.topk_rows`: near-ties settled canonically, the same for any thread count).

    x: (n, d) array, path or source, read a chunk at a time; queries: (q, d). metric: "l2" (squared Euclidean on
    raw features, the core's default) or "cosine"."""
    return topk_rows(x, queries, k, metric=metric, chunk_rows=chunk_rows)[0]


def retrieve(x, seeds: np.ndarray, quota: int, *, metric: str = "l2", chunk_rows: int = 16_384
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """``quota`` distinct rows of ``x`` near the seed items, round-robin over the seeds.

    Returns ``rows: (quota,) int64`` in the order taken, ``origin: (quota,) int64`` the seed each row was taken
    for, and the k (neighbours per seed) that sufficed: k starts at ceil(quota / seeds) and doubles while
    overlapping neighbourhoods leave fewer than ``quota`` distinct rows."""
    n, n_seeds = len(as_source(x)), len(seeds)
    if quota > n:
        raise CurationInputError(f"retrieval quota {quota} exceeds the pool of {n} rows")
    if quota == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    k = min(n, -(-quota // n_seeds))
    while True:
        top = nearest_rows(x, seeds, k, metric=metric, chunk_rows=chunk_rows)
        flat = top.T.ravel()  # round r holds every seed's r-th neighbour, seeds in order
        _, first = np.unique(flat, return_index=True)
        taken = np.sort(first)  # the first time each row comes up, in round-robin order
        if taken.size >= quota or k == n:
            break
        k = min(n, 2 * k)
    taken = taken[:quota]
    return flat[taken], taken % n_seeds, k


def mixed_selection(tree: ClusterTree, x, seeds: np.ndarray, target_size: int, fraction: float, *,
                    clustering_alone: np.ndarray, strategy: str = "random", multiplier: int = 1,
                    seed: int | np.random.Generator | None = 0, clamp: bool = False, metric: str = "l2",
                    chunk_rows: int = 16_384) -> tuple[np.ndarray, np.ndarray, dict]:
    """The subset of ``target_size`` rows: ``round(fraction * target_size)`` retrieved around ``seeds`` (d-dim,
    the pool's embedding space), the rest balanced hierarchical sampling of the pool without them.

    tree: the pool's whole tree (n points = rows of ``x``); clustering_alone: the selection balanced sampling
    makes on its own (for the overlap in the report). Returns ``indices`` (sorted, repeats adjacent),
    ``retrieved`` (sorted rows taken by retrieval) and the report's ``retrieval`` section."""
    source = as_source(x)
    check_retrieval(np.shape(seeds), source.dim, fraction)
    if len(source) != tree.n_points:
        raise CurationInputError(f"the tree has {tree.n_points} points but the pool {len(source)} rows")
    # Seeds from another model or normalisation would retrieve arbitrary rows: refused before any selection.
    space = embedding_space_check(source, seeds, metric=metric, seed=0, chunk_rows=chunk_rows)
    quota = int(round(fraction * target_size))
    rows, origin, k = retrieve(source, seeds, quota, metric=metric, chunk_rows=chunk_rows)
    rest = np.setdiff1d(np.arange(tree.n_points), rows)
    picks = hierarchical_sampling(subtree(tree, rest), target_size - quota, strategy=strategy,
                                  multiplier=multiplier, seed=seed, clamp=clamp) if target_size > quota else \
        np.zeros(0, dtype=np.int64)
    indices = np.sort(np.concatenate([rows, rest[picks]]))
    retrieved = np.sort(rows)
    alone = np.unique(clustering_alone)
    per_seed = np.bincount(origin, minlength=len(seeds))
    report = {
        "seed_items": int(len(seeds)), "fraction": float(fraction), "metric": metric,
        "mix": {"retrieval": int(quota), "clustering": int(indices.size - quota)},
        "neighbours_per_seed": int(k),
        "seeds_contributing": int((per_seed > 0).sum()), "embedding_space": space,
        "per_seed": {"min": int(per_seed.min()), "max": int(per_seed.max())},
        # How much of what retrieval picked clustering alone would have picked too, and how much of the whole
        # subset is unchanged: low overlap means retrieval brought items balanced sampling leaves out.
        "overlap": {"retrieved_also_in_clustering_alone": int(np.isin(retrieved, alone).sum()),
                    "share_of_retrieved": float(np.isin(retrieved, alone).mean()) if quota else 0.0,
                    "subset_share_in_clustering_alone": float(np.isin(np.unique(indices), alone).mean())},
    }
    log.info("retrieval: %d of %d rows near %d seed items (k=%d), %d by balanced sampling; %.0f%% of the "
             "retrieved rows were in the clustering-alone selection", quota, indices.size, len(seeds), k,
             indices.size - quota, 100 * report["overlap"]["share_of_retrieved"])
    return indices, retrieved, report
