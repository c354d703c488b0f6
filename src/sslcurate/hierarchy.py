"""Hierarchical k-means (bottom-up): level 1 clusters the points, each later level clusters the previous centroids.

The result is a :class:`ClusterTree`. Level ``l`` maps every node of level ``l - 1`` (level 0 = the points) to one
of its ``k_l`` clusters; members of each cluster are stored CSR-style, sorted by distance to the centroid, so
"the points of cluster j" is one slice and "the closest r" is its first r entries.

Who checks what: the public entry points (:func:`hierarchical_kmeans` here, :func:`sslcurate.curate`, through
:func:`sslcurate.planning.plan_run`) check the levels against the data once (:func:`check_levels`) and settle
each level's k-means settings once (:func:`level_settings`); :func:`build_tree` and :func:`cluster_level` below
them trust their caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import distributed as dist
from .errors import CurationInputError
from .kmeans import KMeansResult, KMeansSettings, resampling_kmeans, split_kmeans
from .sources import as_source, shard_bounds

log = logging.getLogger(__name__)


@dataclass
class LevelConfig:
    """Settings of one level of the hierarchy."""

    n_clusters: int  # k of this level; must shrink from level to level
    resampling_steps: int = 10  # T; paper: 10 (0 is clearly worse, 100 barely better)
    sample_size: int = 1  # r points per cluster per resampling step; paper: about half the mean cluster size
    sample_strategy: str = "closest"  # which r points: "closest" to the centroid or "random"
    n_iters: int = 50  # Lloyd iterations of every k-means run of this level (official code: 50)
    # > 1: two-stage k-means for very large k, ceil(k / split) coarse clusters each split into its share of k in
    # proportion to its size (kmeans.split_kmeans); paper's level 1: 10M = 100k coarse x 100. 0: one k-means.
    split: int = 0

    def __post_init__(self):
        if self.n_clusters < 1:
            raise CurationInputError(f"a level's n_clusters must be >= 1, got {self.n_clusters}")
        if self.resampling_steps < 0:
            raise CurationInputError(f"resampling_steps must be >= 0, got {self.resampling_steps}")
        if self.resampling_steps and self.sample_size < 1:
            raise CurationInputError(f"sample_size (r) must be >= 1 when resampling, got {self.sample_size}")
        if self.split == 1 or self.split < 0:
            raise CurationInputError(
                f"split must be 0 (off) or >= 2 fine clusters per coarse cluster, got {self.split}")
        if self.sample_strategy not in ("closest", "random"):
            raise CurationInputError(f"sample_strategy must be 'closest' or 'random', got {self.sample_strategy!r}")


@dataclass
class ClusterLevel:
    """One level: ``centroids: (k, d)`` (an array, or for a level whose centroids are sharded over ranks the
    :class:`~sslcurate.sources.EmbeddingSource` over the ranks' parts, read lazily: :func:`sharded_centroids`);
    ``assignments``/``distances``: (n_children,) cluster of each child node
    and its squared distance to that centroid; ``order``: child indices grouped by cluster, closest first;
    ``offsets``: (k + 1,) so cluster j's children are ``order[offsets[j]:offsets[j + 1]]``.

    row_range: set on every rank of a multi-process run for level 1: ``assignments``/``distances`` then cover
    only children ``[lo, hi)`` (this rank's rows) and ``order``/``offsets`` index those. No rank holds level 1
    whole: each writes its slice of the level's files and samples from its own rows (:mod:`sslcurate.sampling`)."""

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    row_range: tuple[int, int] | None = None
    order: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)

    def __post_init__(self):
        k = self.centroids.shape[0]
        self.order = np.lexsort((self.distances, self.assignments)).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(self.assignments, minlength=k))]).astype(np.int64)

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    def members(self, cluster: int) -> np.ndarray:
        """Children of ``cluster``, closest to its centroid first."""
        return self.order[self.offsets[cluster]:self.offsets[cluster + 1]]

    def child_counts(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class ClusterTree:
    """Levels from the bottom (level 1, clusters of points) to the top."""

    levels: list[ClusterLevel]
    n_points: int

    def _check_whole(self) -> None:
        if self.levels and self.levels[0].row_range is not None:
            lo, hi = self.levels[0].row_range
            raise CurationInputError(
                f"level 1 of this tree holds only rows {lo}..{hi} of a multi-process run; per-cluster counts "
                "come from sslcurate.sampling.sample_tree (cluster_sizes), which all-reduces them")

    def point_counts(self, level: int) -> np.ndarray:
        """Number of original points under each cluster of ``level`` (1-based). A whole tree only."""
        self._check_whole()
        counts = np.ones(self.n_points, dtype=np.int64)
        for lv in self.levels[:level]:
            counts = np.bincount(lv.assignments, weights=counts, minlength=lv.n_clusters).astype(np.int64)
        return counts

    def point_labels(self, level: int) -> np.ndarray:
        """Cluster of ``level`` (1-based) that every original point falls under: (n_points,) int64. A whole
        tree only."""
        self._check_whole()
        labels = np.arange(self.n_points)
        for lv in self.levels[:level]:
            labels = lv.assignments[labels]
        return labels


def level_seed(seed: int, level: int) -> np.random.Generator:
    """Independent generator per level, so resuming at level l gives the same result as running through."""
    return np.random.default_rng([int(seed), int(level)])


def check_levels(levels: list[LevelConfig], n_points: int) -> None:
    """Refuse levels that cannot cluster ``n_points`` items: each k within the items of the level below, and
    each level's r x k resampled items within them too."""
    if not levels:
        raise CurationInputError("hierarchical k-means needs at least one level")
    n = n_points
    for i, lv in enumerate(levels, 1):
        if not 1 <= lv.n_clusters <= n:
            what = "points" if i == 1 else f"level-{i - 1} centroids"
            raise CurationInputError(f"level {i}: k={lv.n_clusters} must be between 1 and the number of {what} ({n})")
        if lv.resampling_steps and lv.sample_size * lv.n_clusters > n:
            raise CurationInputError(
                f"level {i}: r={lv.sample_size} points per cluster is larger than the clusters hold "
                f"({n} items in {lv.n_clusters} clusters, {n / lv.n_clusters:.2f} per cluster on average); "
                "choose r <= n / k (the paper uses about half the mean cluster size)")
        n = lv.n_clusters


def level_settings(settings: KMeansSettings, level: LevelConfig, dim: int, device) -> KMeansSettings:
    """The settings every k-means of ``level`` runs with on ``device``, on ``dim`` features: ``backend`` and
    ``precision`` resolved (:meth:`KMeansSettings.resolved` with the level's k) where one name holds for all of
    them, and left as given where it cannot:

    - off the CPU (a CUDA run), both stay as given: a k-means there runs its k-means|| passes on the CPU, where
      ``"auto"`` names other paths (:func:`sslcurate.kmeans.kmeans` resolves each for its device);
    - in a split level, ``precision`` stays as given: its k-means have other k's than the level's (``k / split``
      coarse clusters, then each coarse cluster's share), and ``"auto"`` depends on k (each resolves its own).
    """
    if torch.device(device).type != "cpu":
        return settings
    resolved = settings.resolved(device, dim, level.n_clusters)
    return resolved if not level.split else replace(resolved, precision=settings.precision)


def sharded_centroids(level: LevelConfig, world_size: int) -> bool:
    """Whether a level's centroids stay sharded over the ranks: a split level without resampling in a
    multi-process run. Each rank keeps the fine centroids of its coarse clusters; nothing needs all k of them
    (a resampling round would: it reassigns every row to its nearest of all k)."""
    return world_size > 1 and level.split > 1 and level.resampling_steps == 0


def cluster_level(x, level: LevelConfig, *, settings: KMeansSettings, seed: int, index: int,
                  progress: bool = False, checkpoint=None, store=None) -> ClusterLevel:
    """Run one level (k-means + resampling) on ``x`` (points for level 1, centroids above) with ``settings``.

    Multi-process: every rank keeps only its rows of level 1 (:class:`ClusterLevel` ``row_range``; nothing
    O(N) is gathered); a higher level's assignments (k of the level below) are gathered on every rank. A level
    with :func:`sharded_centroids` leaves each rank its block of centroids: with ``store`` each rank writes its
    block as its own file and the level's centroids are those parts, read lazily (the next level reads them in
    shards, as level 1 reads the pool); without one the blocks are gathered on every rank.
    """
    desc = f"level {index} (k={level.n_clusters})"
    if sharded_centroids(level, dist.get_world_size()):
        # What resampling_kmeans runs with no resampling round (same generator, arguments and tags), keeping
        # the fine centroids where they were computed.
        result: KMeansResult = split_kmeans(
            x, level.n_clusters, split=level.split, settings=settings, seed=level_seed(seed, index),
            n_iters=level.n_iters, desc=desc, checkpoint=checkpoint, tag=f"level{index}.round0", progress=progress,
            shard_centroids=True)
        centroids = _place_centroids(result, index, store)
    else:
        result = resampling_kmeans(
            x, level.n_clusters, settings=settings, steps=level.resampling_steps, sample_size=level.sample_size,
            sample_strategy=level.sample_strategy, n_iters=level.n_iters, seed=level_seed(seed, index),
            progress=progress, desc=desc, split=level.split, checkpoint=checkpoint, tag=f"level{index}")
        centroids = result.centroids
    if result.row_range is None:
        return ClusterLevel(centroids, result.assignments, result.distances)
    if index > 1:
        return ClusterLevel(centroids, _all_rows(result.assignments), _all_rows(result.distances))
    return ClusterLevel(centroids, result.assignments, result.distances, row_range=result.row_range)


def _place_centroids(result, index: int, store):
    """A sharded level's centroids: the store's per-rank parts, or (no folder every rank sees) the whole (k, d)
    matrix on every rank, each block summed in from its rank (zeros elsewhere, so the sum is exact)."""
    if store is not None:
        return store.save_centroid_parts(index, result.centroids, result.centroid_range)
    whole = np.zeros((result.n_clusters, result.centroids.shape[1]), dtype=np.float32)
    whole[slice(*result.centroid_range)] = result.centroids
    return dist.all_reduce_sum(torch.from_numpy(whole)).numpy()


def _all_rows(values: np.ndarray) -> np.ndarray:
    return dist.all_gather_rows(torch.from_numpy(values)[:, None])[:, 0].numpy()


def hierarchical_kmeans(x, levels: list[LevelConfig], *, settings: KMeansSettings | None = None, seed: int = 0,
                        progress: bool = False, store=None) -> ClusterTree:
    """Bottom-up hierarchical k-means with resampling-clustering at every level (Vo et al. 2024, Alg. 1).

    x: (n, d) embeddings (array, path, or :class:`~sslcurate.sources.EmbeddingSource`).
    levels: one :class:`LevelConfig` per level, bottom first, k shrinking; checked against ``x`` here.
    settings: the :class:`KMeansSettings` of every k-means run (metric, init, backend, chunk_rows, ...; None:
    the defaults), settled per level by :func:`level_settings`.
    store: optional object with ``load_level(i, row_range) -> ClusterLevel | None``, ``save_level(i, level)``,
    ``checkpoint(i)`` and ``save_centroid_parts(i, block, centroid_range)`` (:class:`sslcurate.artifacts.LevelStore`);
    finished levels are read back instead of recomputed and a level in progress resumes from its last checkpoint,
    so a killed run resumes where it stopped.

    Multi-process: every rank reads only its rows of ``x`` and ends with its rows of level 1
    (``ClusterLevel.row_range``) and the assignments of the levels above; no rank holds level 1 whole, nor the
    centroids of a split level without resampling (:func:`sharded_centroids`).
    """
    source = as_source(x)
    check_levels(levels, len(source))
    settings = settings or KMeansSettings()
    device = settings.run_device()
    return build_tree(source, levels, [level_settings(settings, lv, source.dim, device) for lv in levels],
                      seed=seed, progress=progress, store=store)


def build_tree(source, levels: list[LevelConfig], settings: list[KMeansSettings], *, seed: int = 0,
               progress: bool = False, store=None) -> ClusterTree:
    """The loop of :func:`hierarchical_kmeans` over levels whose check and settings its caller has done:
    ``levels`` fit ``source`` (:func:`check_levels`), ``settings`` holds each level's (:func:`level_settings`)."""
    built: list[ClusterLevel] = []
    data = source
    world, rank = dist.get_world_size(), dist.get_rank()
    for i, (lv, lv_settings) in enumerate(zip(levels, settings, strict=True), 1):
        partial = shard_bounds(len(source), rank, world) if i == 1 and world > 1 else None
        level = store.load_level(i, partial) if store is not None else None
        if world > 1:  # every rank must take the same branch, or the collectives below would hang
            found = dist.broadcast(torch.tensor([int(level is not None)]))
            if not bool(found[0]):
                level = None
        if level is None:
            checkpoint = store.checkpoint(i) if store is not None else None
            level = cluster_level(data, lv, settings=lv_settings, seed=seed, index=i, progress=progress,
                                  checkpoint=checkpoint, store=store)
            if store is not None:
                store.save_level(i, level)
        else:
            log.info("level %d: reusing finished clustering (k=%d)", i, level.n_clusters)
        built.append(level)
        data = level.centroids
    return ClusterTree(levels=built, n_points=len(source))
