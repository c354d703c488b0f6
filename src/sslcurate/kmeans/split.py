"""Two-stage k-means for very large k: coarse clusters, each split into its share of k."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import distributed as dist
from ..errors import CurationInputError
from ..progress import progress_bar
from ..sources import as_source
from .common import KMeansResult, _check_kmeans_args, _draw_salt, _row_offset, _row_range, make_rng
from .lloyd import kmeans
from .settings import KMeansSettings

log = logging.getLogger(__name__)


def split_shares(sizes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Split ``n_clusters`` over coarse clusters of ``sizes: (m,)`` in proportion to their sizes: every non-empty
    cluster gets at least 1 and at most its size, the total is exactly ``n_clusters`` (largest remainders
    first, ties to the lower index). Returns (m,) int64."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total, nonempty = int(sizes.sum()), int((sizes > 0).sum())
    if not nonempty <= n_clusters <= total:
        raise CurationInputError(f"cannot split {n_clusters} clusters over {nonempty} non-empty coarse clusters "
                                 f"holding {total} points (need between {nonempty} and {total})")
    exact = n_clusters * sizes / total
    share = np.clip(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64), sizes)
    index = np.arange(sizes.size)
    while (diff := n_clusters - int(share.sum())) != 0:
        frac = exact - share  # > 0: under its proportional share
        if diff > 0:
            order = np.lexsort((index, -frac))
            order = order[share[order] < sizes[order]][:diff]
            share[order] += 1
        else:
            order = np.lexsort((index, frac))
            order = order[share[order] > 1][:-diff]
            share[order] -= 1
    return share


def contiguous_owners(cost: np.ndarray, world: int) -> np.ndarray:
    """Deal clusters of ``cost: (m,)`` to ``world`` ranks in contiguous runs of about equal total cost: cluster j
    goes to the rank whose equal slice of the cumulative cost holds j's midpoint. Returns (m,) int64,
    non-decreasing, so each rank's clusters (and so their fine cluster ids) form one contiguous range."""
    cost = np.asarray(cost, dtype=np.int64)
    total = int(cost.sum())
    if total == 0:
        return np.zeros(cost.size, dtype=np.int64)
    before = np.cumsum(cost) - cost
    # Integer arithmetic (no float rounding to disagree on between ranks), exact while 2 x total x world < 2^63
    # (DINOv3's level 1, ~17e9 points x ~100 fine clusters each on 1,024 ranks: ~3.5e15).
    return np.minimum((2 * before + cost) * world // (2 * total), world - 1).astype(np.int64)


@dataclass
class ShardedKMeansResult(KMeansResult):
    """A split k-means whose fine centroids stay with the ranks that computed them: ``centroids`` holds rows
    ``centroid_range = [first, stop)`` of the (total_clusters, d) centroid matrix (this rank's coarse clusters'
    fine centroids); in rank order the blocks are the whole matrix."""

    centroid_range: tuple[int, int] = (0, 0)
    total_clusters: int = 0

    @property
    def n_clusters(self) -> int:
        return self.total_clusters


def split_kmeans(x, n_clusters: int, *, split: int, settings: KMeansSettings | None = None,
                 seed: int | np.random.Generator | None = 0, n_iters: int = 50, desc: str = "k-means",
                 checkpoint=None, tag: str = "kmeans", progress: bool = False,
                 shard_centroids: bool = False) -> KMeansResult:
    """Two-stage k-means for very large k (Vo et al. 2024, App.: level 1's 10M clusters as 100k coarse clusters,
    each split independently).

    A coarse k-means with ``ceil(k / split)`` clusters, then each coarse cluster j is clustered on its own
    points into ``split_shares`` of k (proportional to its size, total exactly k). Fine cluster ids of j are
    ``offset_j .. offset_j + share_j``. Cost per iteration: about ``2 N D (k / split + split)`` (every row meets
the coarse centroids, then its own coarse cluster's ~split fine ones) instead of ``2 N D k``.
    settings: the :class:`KMeansSettings` of every one of these k-means (None: the defaults); a precision
    ``"auto"`` is resolved by each with its own k.

    Multi-process: the coarse k-means is sharded as usual; coarse clusters are dealt to ranks in contiguous runs
    of about equal cost (size x share, :func:`contiguous_owners`), so each rank's fine centroids are one block of
    ids; each rank sends the row ids of its rows to their cluster's owner (one all-to-all, O(N / world) per
    rank), the owner reads those rows and clusters them, and the fine assignments travel back the same way.
    Fine cluster j is seeded by (salt, j), so the result does not depend on which rank ran it. With
    ``checkpoint``, each rank saves its finished coarse clusters (its block of centroids, its received rows'
    assignments) every ``checkpoint.every_seconds``.
    shard_centroids: keep each rank's block of fine centroids where it was computed and return a
    :class:`ShardedKMeansResult` (no rank holds all k centroids); otherwise the blocks are summed into the whole
    (k, d) matrix on every rank.
    Returns a :class:`KMeansResult` over this rank's rows (``row_range`` when several ranks).
    """
    source = as_source(x)
    n, d = source.shape
    if split < 2:
        raise CurationInputError(f"split must be >= 2 (fine clusters per coarse cluster), got {split}")
    _check_kmeans_args(n, n_clusters, n_iters)
    settings = settings or KMeansSettings()
    rng = make_rng(seed)
    k_coarse = -(-n_clusters // split)
    coarse = kmeans(source, k_coarse, settings=settings, n_iters=n_iters, seed=rng, desc=f"{desc} coarse",
                    checkpoint=checkpoint, tag=f"{tag}.coarse", progress=progress)
    sizes = dist.all_reduce_sum(torch.from_numpy(np.bincount(coarse.assignments, minlength=k_coarse))).numpy()
    shares = split_shares(sizes, n_clusters)
    offsets = np.concatenate([[0], np.cumsum(shares)])
    salt = _draw_salt(rng)
    world, rank = dist.get_world_size(), dist.get_rank()
    owner = contiguous_owners(sizes * shares, world)
    # This rank's fine cluster ids: one block, from its first coarse cluster's offset to the next rank's.
    first, stop = (int(offsets[np.searchsorted(owner, r, side="left")]) for r in (rank, rank + 1))

    # Route (coarse cluster, row) of every local row to the owner of its cluster. Buffers of one row each are
    # dropped as soon as they are spent: with millions of rows per rank, each one is tens of MB.
    coarse_iters, coarse_history, cluster_of = coarse.n_iters, coarse.history, coarse.assignments
    del coarse
    lo = _row_offset(n)
    n_local = cluster_of.size
    local_rows = np.arange(lo, lo + n_local, dtype=np.int64)
    dest = owner[cluster_of]
    send_order = np.lexsort((local_rows, dest))
    send_counts = np.bincount(dest, minlength=world).tolist()
    packed = torch.from_numpy(np.stack([cluster_of[send_order], local_rows[send_order]], axis=1))
    del cluster_of, local_rows, dest
    received, recv_counts = dist.all_to_all_rows(packed, send_counts)
    del packed
    # Each coarse cluster's rows in ascending row order (whatever order the ranks sent them in): by_cluster[i] is
    # the received position of the i-th row so ordered, rows_sorted[i] its row id.
    by_cluster = np.lexsort((received[:, 1].numpy(), received[:, 0].numpy()))
    rows_sorted = received[:, 1].numpy()[by_cluster]
    starts = np.searchsorted(received[:, 0].numpy()[by_cluster], np.arange(k_coarse + 1))
    n_received = rows_sorted.size
    del received

    # This rank's block of fine centroids; when they are to be summed into the whole matrix on every rank, a view
    # of that matrix (no second copy).
    whole = None if shard_centroids else np.zeros((n_clusters, d), dtype=np.float32)
    centroids = whole[first:stop] if whole is not None else np.zeros((stop - first, d), dtype=np.float32)
    fine_assign = np.zeros(n_received, dtype=np.int64)  # in received order: the order they are sent back in
    fine_dist = np.zeros(n_received, dtype=np.float32)
    mine = np.flatnonzero((owner == rank) & (sizes > 0))
    ckpt_tag = f"{tag}.fine.rank{rank}of{world}"
    saved = checkpoint.load(ckpt_tag) if checkpoint is not None else None
    done = 0
    if (saved is not None and saved[0]["fine_assign"].shape == fine_assign.shape
            and saved[0]["centroids"].shape == centroids.shape):
        arrays, meta = saved
        done = int(meta["done"])
        centroids[:], fine_assign[:], fine_dist[:] = arrays["centroids"], arrays["fine_assign"], arrays["fine_dist"]
        log.info("%s: resuming the split after %d of this rank's %d coarse clusters", desc, done, mine.size)
    last_save = time.monotonic()
    bar = progress_bar(total=mine.size - done, desc=f"{desc} split", enabled=progress)
    with dist.single_process():  # each coarse cluster is a whole, ordinary k-means on this rank
        for i in range(done, mine.size):
            j = int(mine[i])
            sel = by_cluster[starts[j]:starts[j + 1]]
            xj = source.take(rows_sorted[starts[j]:starts[j + 1]])
            res = kmeans(xj, int(shares[j]), settings=settings, n_iters=n_iters,
                         seed=np.random.default_rng([salt, j]), desc=f"{desc} split {j}")
            centroids[offsets[j] - first:offsets[j + 1] - first] = res.centroids
            fine_assign[sel] = offsets[j] + res.assignments
            fine_dist[sel] = res.distances
            bar.update(1)
            if checkpoint is not None and time.monotonic() - last_save >= checkpoint.every_seconds:
                checkpoint.save(ckpt_tag, {"centroids": centroids, "fine_assign": fine_assign,
                                           "fine_dist": fine_dist}, {"done": i + 1}, shared=False)
                last_save = time.monotonic()
    bar.close()
    del by_cluster, rows_sorted
    back = np.empty((n_received, 2), dtype=np.float64)  # (fine cluster, distance): ids exact below 2^53
    back[:, 0], back[:, 1] = fine_assign, fine_dist
    del fine_assign, fine_dist
    returned, _ = dist.all_to_all_rows(torch.from_numpy(back), recv_counts)
    del back
    assignments = np.empty(n_local, dtype=np.int64)
    distances = np.empty(n_local, dtype=np.float32)
    assignments[send_order] = returned[:, 0].numpy()
    distances[send_order] = returned[:, 1].numpy()
    del returned, send_order
    objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
    counts = dist.all_reduce_sum(torch.from_numpy(np.bincount(assignments, minlength=n_clusters)))
    common = {"assignments": assignments, "distances": distances, "objective": objective,
              "n_iters": coarse_iters + n_iters, "history": coarse_history,
              "n_empty_clusters": int((counts == 0).sum()), "row_range": _row_range(n)}
    if shard_centroids:
        return ShardedKMeansResult(centroids=centroids, centroid_range=(first, stop), total_clusters=n_clusters,
                                   **common)
    # Each fine centroid was written by exactly one rank (zeros elsewhere), so the sum is exact.
    return KMeansResult(centroids=dist.all_reduce_sum(torch.from_numpy(whole)).numpy(), **common)
