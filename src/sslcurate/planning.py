"""Help choosing the hierarchy and knowing what a run will cost, before running it.

The paper's web-image run scaled as: about 74 points per level-1 cluster (743M points into 10M clusters), then
each level 5-20x smaller (10M, 500k, 50k, 10k), r about half the mean cluster size of the level, 10 resampling
steps (REFERENCE.md, section 6). :func:`suggest_levels` applies that rule to any pool size.
"""

from __future__ import annotations

import math

from .errors import CurationInputError
from .hierarchy import LevelConfig


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


def estimate_memory(n_points: int, dim: int, levels: list[LevelConfig], *, chunk_rows: int = 65_536,
                    in_memory: bool = False, block_cols: int = 1024) -> dict:
    """Peak bytes of a curation run by component (an estimate, not a measurement).

    Per point the core keeps an int64 assignment and a float32 distance (12 bytes), plus the sorted member
    order of level 1 (8 bytes); per chunk a float32 copy and a ``chunk_rows x block_cols`` distance tile;
    the embeddings themselves only if ``in_memory`` (memory-mapped sources are paged by the OS).
    """
    k1 = levels[0].n_clusters
    parts = {
        "embeddings": 4 * n_points * dim if in_memory else 0,
        "per_point_state": 20 * n_points,
        "chunk": 4 * chunk_rows * dim + 4 * chunk_rows * min(block_cols, k1),
        "centroids_and_sums": 12 * k1 * dim,  # float32 centroids + float64 sums
        "resampling_sample": 4 * min(n_points, k1 * levels[0].sample_size) * dim if levels[0].resampling_steps
        else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
