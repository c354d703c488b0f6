"""Balance metrics of a pool or subset: cluster-size statistics, and concept statistics when labels exist.

Labels are for measurement only; nothing in curation reads them.
"""

from __future__ import annotations

import numpy as np

from .errors import CurationInputError


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def normalized_entropy(counts: np.ndarray) -> float:
    """Entropy divided by log(number of bins): 1 for a uniform distribution over all bins, 0 for one bin."""
    m = np.asarray(counts).size
    return float(entropy(counts) / np.log(m)) if m > 1 else 1.0


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of the counts: 0 when all equal, toward 1 when one bin holds everything."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    m, total = c.size, c.sum()
    if m == 0 or total <= 0:
        return 0.0
    return float((2 * np.arange(1, m + 1) - m - 1).dot(c) / (m * total))


def size_stats(counts: np.ndarray) -> dict:
    """Statistics of cluster (or concept) sizes, the numbers a report shows."""
    counts = np.asarray(counts, dtype=np.int64)
    nonzero = counts[counts > 0]
    return {
        "n_bins": int(counts.size),
        "n_nonempty": int(nonzero.size),
        "total": int(counts.sum()),
        "entropy": entropy(counts),
        "normalized_entropy": normalized_entropy(counts),
        "gini": gini(counts),
        "max": int(counts.max()) if counts.size else 0,
        "min": int(counts.min()) if counts.size else 0,
        "min_nonempty": int(nonzero.min()) if nonzero.size else 0,
        "max_over_min_nonempty": float(nonzero.max() / nonzero.min()) if nonzero.size else 0.0,
        "mean": float(counts.mean()) if counts.size else 0.0,
    }


def concept_stats(labels: np.ndarray, n_concepts: int | None = None, pool_labels: np.ndarray | None = None) -> dict:
    """Per-concept counts of a subset, their normalised entropy, and coverage of the pool's concepts.

    labels: (n,) int concept of each selected item; negative values mean "no concept" (unlabelled items, junk):
    they are counted in ``unlabelled`` and left out of the concept distribution. pool_labels: the pool's labels,
    for coverage (fraction of concepts present in the pool that the subset holds at least once).
    """
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise CurationInputError(f"concept labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    known = labels[labels >= 0]
    pool_known = None if pool_labels is None else np.asarray(pool_labels, dtype=np.int64)
    pool_known = None if pool_known is None else pool_known[pool_known >= 0]
    if n_concepts is None:
        n_concepts = int(max(known.max(initial=-1), -1 if pool_known is None else pool_known.max(initial=-1)) + 1)
    counts = np.bincount(known, minlength=n_concepts)
    out = {"counts": counts.tolist(), "unlabelled": int(labels.size - known.size),
           "normalized_entropy": normalized_entropy(counts), "gini": gini(counts)}
    if pool_known is not None:
        present = np.bincount(pool_known, minlength=n_concepts) > 0
        out["coverage"] = float((counts[present] > 0).mean()) if present.any() else 0.0
    else:
        out["coverage"] = float((counts > 0).mean()) if counts.size else 0.0
    return out


def balance_report(tree, indices: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Balance of pool vs subset at every level of the tree (cluster sizes) and over concepts if labelled."""
    indices = np.asarray(indices, dtype=np.int64)
    report = {"pool_size": int(tree.n_points), "subset_size": int(indices.size),
              "unique_in_subset": int(np.unique(indices).size), "levels": {}}
    for lv in range(1, len(tree.levels) + 1):
        point_labels = tree.point_labels(lv)
        k = tree.levels[lv - 1].n_clusters
        report["levels"][str(lv)] = {
            "pool": size_stats(np.bincount(point_labels, minlength=k)),
            "subset": size_stats(np.bincount(point_labels[indices], minlength=k)),
        }
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        n_concepts = int(labels.max(initial=-1)) + 1
        report["concepts"] = {"pool": concept_stats(labels, n_concepts),
                              "subset": concept_stats(labels[indices], n_concepts, labels)}
    return report
