"""Incremental curation: add new embeddings to a finished hierarchy without clustering again.

A curated pool keeps its tree; new rows are (1) deduplicated against the kept pool and among themselves at the
pool's own cosine threshold, (2) assigned to the existing level-1 centroids with the core's assignment kernels
(:func:`sslcurate.kmeans.assign_source`), which places them under every higher level too (a level-l cluster
contains the level-1 clusters it already contained), and (3) the whole tree is re-sampled by the caller with
:func:`sslcurate.hierarchical_sampling`. What this cannot do is create clusters: new concepts land in the nearest
existing cluster. :func:`drift` measures how many new rows lie farther from every level-1 centroid than the
pool's own 99th percentile of distance-to-nearest-centroid, the sign that a full re-clustering is due.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from . import distributed as dist
from .dedup import deduplicate
from .errors import CurationInputError
from .hierarchy import ClusterLevel, ClusterTree
from .kmeans import KMeansSettings, assign_source
from .sources import EmbeddingSource, SubsetSource, as_source

log = logging.getLogger(__name__)

DRIFT_QUANTILE = 0.99  # reference: the pool's 99th percentile of distance to its nearest level-1 centroid
# Share of new rows beyond that reference above which re-clustering is recommended. Rows drawn from the pool's own
# distribution land beyond it ~1% of the time (a little more, as the centroids were fit on the pool's rows, not
# on them: 0.3-1.8% in tests/test_incremental.py's seeded mixtures, 2.9% in bench_incremental's tiny run); 5% is
# several times that, and B made of new concepts lands far above it (> 30% in those tests).
DRIFT_THRESHOLD = 0.05


class ConcatSource(EmbeddingSource):
    """Rows of several sources one after the other (the kept pool of a previous run, then the new rows)."""

    def __init__(self, parts: list):
        self.parts = [as_source(p) for p in parts]
        if not self.parts:
            raise CurationInputError("ConcatSource needs at least one part")
        dims = {p.dim for p in self.parts}
        if len(dims) != 1:
            raise CurationInputError(f"the parts have different dimensions: {sorted(dims)}")
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.name = "+".join(p.name for p in self.parts)

    @property
    def shape(self):
        return int(self.starts[-1]), self.parts[0].dim

    def _read(self, start, stop):
        chunks = [p.read(max(start, lo) - lo, min(stop, hi) - lo)
                  for p, lo, hi in zip(self.parts, self.starts[:-1], self.starts[1:]) if max(start, lo) < min(stop, hi)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def _read_rows(self, sorted_idx):
        out = np.empty((sorted_idx.size, self.dim), dtype=np.float32)
        part = np.searchsorted(self.starts, sorted_idx, side="right") - 1
        for j in np.unique(part):  # one take per part (rows are sorted, so each part's rows are one run)
            sel = part == j
            out[sel] = self.parts[j].take(sorted_idx[sel] - self.starts[j])
        return out


def _normalised(rows: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(rows)
    return t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min(1e-30)


def near_duplicates_of(new, pool, threshold: float, *, chunk_rows: int = 16_384) -> np.ndarray:
    """(m,) bool: which rows of ``new`` have a row of ``pool`` at cosine similarity >= ``threshold``.

    new: (m, d), pool: (n, d) (arrays, paths or sources). Memory: the normalised new rows plus one
    (m, chunk_rows) similarity tile; the new rows are compared in blocks when m is large."""
    new, pool = as_source(new), as_source(pool)
    hit = np.zeros(len(new), dtype=bool)
    for q0, q in new.iter_chunks(chunk_rows):
        qn = _normalised(q)
        h = torch.zeros(len(q), dtype=torch.bool)
        for _, block in pool.iter_chunks(chunk_rows):
            h |= (qn @ _normalised(block).T >= threshold).any(dim=1)
        hit[q0:q0 + len(q)] = h.numpy()
    return hit


def dedup_new_rows(new, pool, threshold: float | None, *, chunk_rows: int = 16_384) -> np.ndarray:
    """(m,) bool keep-mask of the new rows: not a near-duplicate of a pool row, and not of an earlier kept new
    row (greedy in row order). The same rows the greedy pass of :func:`sslcurate.deduplicate` keeps when the
    pool (already free of near-duplicates) is visited first. threshold None: keep every new row."""
    new = as_source(new)
    if threshold is None or len(new) == 0:
        return np.ones(len(new), dtype=bool)
    keep = ~near_duplicates_of(new, pool, threshold, chunk_rows=chunk_rows)
    survivors = np.flatnonzero(keep)
    if survivors.size:
        keep[survivors] = deduplicate(SubsetSource(new, survivors), threshold, chunk_rows=min(chunk_rows, 4096))
    return keep


def assign_new_rows(new, centroids: np.ndarray, *, settings: KMeansSettings | None = None,
                    **setting_overrides) -> tuple[np.ndarray, np.ndarray]:
    """Nearest level-1 centroid and squared distance of every new row: ``(m,) int64, (m,) float32``.

    settings: the :class:`KMeansSettings` whose ``metric``, ``backend``, ``precision`` and
    ``chunk_rows`` assign them (None: the defaults), overridden by keyword arguments named as its fields (as
    :func:`sslcurate.kmeans.assign_source`, which this calls).

    Computed whole on every process (the new rows are few next to the pool), so every rank holds the same
    result without a collective; the distances are canonical (:mod:`sslcurate.canonical`), the same for any
    backend, precision and thread count."""
    new = as_source(new)
    if len(new) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    with dist.single_process():
        return assign_source(new, centroids, settings=settings, **setting_overrides)


def extend_tree(tree: ClusterTree, assignments: np.ndarray, distances: np.ndarray) -> ClusterTree:
    """The tree with new points appended at level 1 (rows ``n_points ..``); the levels above are unchanged,
    as a level-1 cluster keeps its parent."""
    first = tree.levels[0]
    if first.row_range is not None:
        raise CurationInputError("extend_tree needs the whole level 1 (rank 0's tree of a multi-process run)")
    k = first.n_clusters
    if assignments.size and (assignments.min() < 0 or assignments.max() >= k):
        raise CurationInputError(f"new assignments must be level-1 clusters in [0, {k})")
    level = ClusterLevel(first.centroids, np.concatenate([first.assignments, assignments.astype(np.int64)]),
                         np.concatenate([first.distances, distances.astype(first.distances.dtype)]))
    return ClusterTree(levels=[level, *tree.levels[1:]], n_points=tree.n_points + int(assignments.size))


def subtree(tree: ClusterTree, rows: np.ndarray) -> ClusterTree:
    """The tree over points ``rows`` only (point i of the result is point ``rows[i]``); clusters left empty stay
    in the tree with size 0, which balanced sampling simply gives nothing."""
    rows = np.asarray(rows, dtype=np.int64)
    first = tree.levels[0]
    level = ClusterLevel(first.centroids, first.assignments[rows], first.distances[rows])
    return ClusterTree(levels=[level, *tree.levels[1:]], n_points=int(rows.size))


def drift_reference(distances: np.ndarray, quantile: float = DRIFT_QUANTILE) -> float:
    """The pool's ``quantile`` of distance to its nearest level-1 centroid (the reference :func:`drift` uses)."""
    if distances.size == 0:
        raise CurationInputError("the drift reference needs at least one pool row")
    return float(np.quantile(distances.astype(np.float64), quantile))


def drift(new_distances: np.ndarray, reference: float, *, threshold: float = DRIFT_THRESHOLD,
          before: dict | None = None) -> dict:
    """How far new rows sit from the hierarchy: the share farther from every level-1 centroid than
    ``reference`` (:func:`drift_reference` of the pool the hierarchy was fit on).

    before: ``{"added", "beyond"}`` of earlier updates since the last full clustering, so a run of small
    updates that together drift is caught. Re-clustering is recommended when the share over all rows added
    since the clustering exceeds ``threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise CurationInputError(f"the drift threshold is a share in [0, 1], got {threshold}")
    beyond = int((new_distances > reference).sum())
    added = int(new_distances.size)
    before = before or {"added": 0, "beyond": 0}
    total_added, total_beyond = before["added"] + added, before["beyond"] + beyond
    cumulative = total_beyond / total_added if total_added else 0.0
    return {"reference_quantile": DRIFT_QUANTILE, "reference_distance": reference, "new_rows": added,
            "beyond": beyond, "share": beyond / added if added else 0.0,
            "since_clustering": {"added": total_added, "beyond": total_beyond, "share": cumulative},
            "threshold": threshold, "recommend_reclustering": bool(cumulative > threshold)}
