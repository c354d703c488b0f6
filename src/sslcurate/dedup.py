"""Near-duplicate removal in embedding space (the step before curation: the paper's 743M-image pool was already
deduplicated, and re-uploads of one image would otherwise each count as data).

Rule: rows are visited in priority order (row order by default); a row is dropped when its cosine similarity to a
row that was visited earlier *and kept* reaches ``threshold``. This is the greedy maximal independent set of the
"near-duplicate" graph, so every dropped row has a kept near-duplicate, and two kept rows are never
near-duplicates of each other (within a group, when ``groups`` restrict the comparison). Unlike SemDeDup's
"drop if similar to any earlier row" rule, a chain a ~ b ~ c with a !~ c keeps both a and c.

Cost: without groups every row is compared with every kept row before it, ``O(n * kept * d)`` flops and the kept
rows held in memory: fine up to a few hundred thousand rows. For larger pools pass ``groups`` (for example the
level-1 k-means assignments, or ``n_clusters`` to have them computed here, as SemDeDup does): rows are then only
compared within their group, and only the current window of groups is held in memory. Near-duplicates split
across two groups are then missed, which is the usual price of that shortcut.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import CurationInputError
from .progress import progress_bar
from .sources import as_source, validate_finite

WINDOW_BLOCK = 16_384  # kept rows compared per tile: a (chunk_rows, WINDOW_BLOCK) float32 tile, 128 MiB at 2048


def deduplicate(x, threshold: float = 0.95, *, groups: np.ndarray | None = None, n_clusters: int | None = None,
                priority: np.ndarray | None = None, seed: int = 0, chunk_rows: int = 2048,
                progress: bool = False) -> np.ndarray:
    """Boolean keep-mask of the rows of ``x`` after greedy near-duplicate removal at cosine ``threshold``.

    x: (n, d) array, ``.npy`` path, shard folder or :class:`sslcurate.EmbeddingSource`; rows are compared by
    cosine similarity (each is L2-normalised here, so raw features are fine). threshold: in (-1, 1]; 1 removes
    only exact duplicates (up to float rounding).
    groups: optional (n,) integer labels; rows are only compared with rows of the same label.
    n_clusters: instead of ``groups``, cluster the normalised rows with k-means (``seed``) and use the clusters.
    priority: optional (n,) numbers; lower is visited first (kept in preference). Default: row order, so the
    first copy of a duplicate group is the one kept. Ties break by row order.
    Returns an (n,) bool array, True for the rows to keep. Deterministic for given inputs and ``seed``.
    """
    source = as_source(x)
    n, d = source.shape
    if not -1.0 < float(threshold) <= 1.0:
        raise CurationInputError(f"threshold is a cosine similarity in (-1, 1], got {threshold}")
    if chunk_rows < 1:
        raise CurationInputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if groups is not None and n_clusters is not None:
        raise CurationInputError("pass groups or n_clusters, not both")
    validate_finite(source)
    if n_clusters is not None:
        groups = _cluster(source, int(n_clusters), seed)
    groups = _as_vector(groups, n, "groups", np.int64) if groups is not None else np.zeros(n, np.int64)
    priority = _as_vector(priority, n, "priority", np.float64) if priority is not None else np.arange(n, dtype=np.float64)
    if n == 0:
        return np.zeros(0, dtype=bool)

    # Visit order: by group, then priority, then row. Sorting by group first makes each group a contiguous run,
    # so a chunk is only compared with kept rows from the run of groups it spans (a window, not the whole past).
    order = np.lexsort((np.arange(n), priority, groups))
    sorted_groups = groups[order]
    keep_sorted = np.zeros(n, dtype=bool)
    thr = float(threshold)
    # Kept rows of the current window of groups, in visit order: normalised embeddings (``buf[:m]``) and their
    # groups, so the rows of groups that fell behind the window can be forgotten.
    # Stored in a buffer that grows by doubling, so appending a chunk does not copy the whole window.
    buf = torch.empty((min(n, 4 * chunk_rows), d), dtype=torch.float32)
    win_g = np.zeros(0, dtype=np.int64)
    with progress_bar(total=n, desc="dedup", enabled=progress, unit="row") as bar:
        for lo in range(0, n, chunk_rows):
            hi = min(lo + chunk_rows, n)
            g = sorted_groups[lo:hi]
            rows = _normalised(source.take(order[lo:hi]), order[lo:hi])
            if win_g.size:  # forget kept rows of groups this chunk (and every later one) cannot contain
                live = win_g >= g[0]
                if not live.all():
                    first = int(np.argmax(live)) if live.any() else win_g.size  # groups are sorted: a prefix dies
                    buf[: win_g.size - first] = buf[first: win_g.size].clone()
                    win_g = win_g[first:]
            alive = ~_hits_window(rows, g, buf, win_g, thr)
            kept = _greedy_within(rows, g, alive, thr)
            keep_sorted[lo:hi] = kept
            if kept.any():
                m, add = win_g.size, int(kept.sum())
                if m + add > buf.shape[0]:
                    grown = torch.empty((max(2 * buf.shape[0], m + add), d), dtype=torch.float32)
                    grown[:m] = buf[:m]
                    buf = grown
                buf[m: m + add] = rows[torch.from_numpy(kept)]
                win_g = np.concatenate([win_g, g[kept]])
            bar.update(hi - lo)
    keep = np.zeros(n, dtype=bool)
    keep[order] = keep_sorted
    return keep


def _hits_window(rows: torch.Tensor, g: np.ndarray, buf: torch.Tensor, win_g: np.ndarray, thr: float) -> np.ndarray:
    """(chunk,) bool: which rows have a near-duplicate of their group among the window's kept rows. The window
    is scanned in column blocks, so memory stays at one (chunk, WINDOW_BLOCK) tile however large it grows."""
    hit = torch.zeros(rows.shape[0], dtype=torch.bool)
    gt = torch.from_numpy(g)
    for c0 in range(0, win_g.size, WINDOW_BLOCK):
        c1 = min(c0 + WINDOW_BLOCK, win_g.size)
        close = rows @ buf[c0:c1].T >= thr
        if win_g[c0] != win_g[c1 - 1] or g[0] != g[-1] or g[0] != win_g[c0]:  # several groups: compare labels
            close &= gt[:, None] == torch.from_numpy(win_g[c0:c1])[None, :]
        hit |= close.any(dim=1)
    return hit.numpy()


def _greedy_within(rows: torch.Tensor, g: np.ndarray, alive: np.ndarray, thr: float) -> np.ndarray:
    """Greedy decision inside one chunk (rows in visit order), for the rows not already dropped by the window.

    Row i is kept iff no earlier kept row of the chunk is its near-duplicate. Solved in rounds on the chunk's
    "earlier near-duplicate" matrix: a row whose earlier neighbours are all decided-dropped is kept; a row with a
    kept earlier neighbour is dropped. Each round settles at least the first undecided row, and real data needs
    two or three rounds (a round per link of the longest chain of partial duplicates).
    """
    m = rows.shape[0]
    idx = torch.from_numpy(np.flatnonzero(alive))
    if idx.numel() == 0:
        return np.zeros(m, dtype=bool)
    sub = rows[idx]
    gs = torch.from_numpy(g[alive])
    adj = (sub @ sub.T >= thr) & (gs[:, None] == gs[None, :])
    adj = torch.tril(adj, diagonal=-1).to(torch.float32)  # adj[i, j]: j is an earlier near-duplicate of i
    kept = torch.zeros(idx.numel(), dtype=torch.bool)
    dropped = torch.zeros_like(kept)
    while True:
        undecided = ~(kept | dropped)
        if not undecided.any():
            break
        dropped |= undecided & ((adj @ kept.to(torch.float32)) > 0)
        undecided = ~(kept | dropped)
        kept |= undecided & ((adj @ undecided.to(torch.float32)) == 0)
    out = np.zeros(m, dtype=bool)
    out[idx.numpy()] = kept.numpy()
    return out


def _normalised(rows: np.ndarray, row_ids: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(rows)
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    zero = (norms[:, 0] == 0).numpy()
    if zero.any():
        raise CurationInputError(
            f"cosine similarity is undefined for all-zero embeddings: row(s) {sorted(row_ids[zero].tolist())[:5]} "
            f"(drop or fix them before deduplicating)")
    return t / norms


def _as_vector(values, n: int, name: str, dtype) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise CurationInputError(f"{name} must have shape ({n},), one value per row; got {arr.shape}")
    if dtype is np.int64 and not np.issubdtype(arr.dtype, np.integer):
        raise CurationInputError(f"{name} must be integer labels, got dtype {arr.dtype}")
    if dtype is np.float64 and not np.all(np.isfinite(arr.astype(np.float64))):
        raise CurationInputError(f"{name} must be finite numbers")
    return arr.astype(dtype)


def _cluster(source, n_clusters: int, seed: int) -> np.ndarray:
    from .kmeans import kmeans

    n = len(source)
    if not 1 <= n_clusters <= n:
        raise CurationInputError(f"n_clusters must be between 1 and the number of rows ({n}), got {n_clusters}")
    return kmeans(source, n_clusters, n_iters=10, metric="cosine", seed=seed).assignments
