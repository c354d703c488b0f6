"""What the curated variants select from: the pool without its near-duplicates, and hierarchies that fit it.

Near-duplicates are removed once, before every curated variant (hierarchical and flat), with the core's
:func:`sslcurate.deduplicate` at ``curation.dedup.threshold``, else the embedder's ``dedup_threshold`` (a cosine
means something only in one embedding space; ``embedder.dedup_threshold=null`` keeps them). The kept rows are
cached under ``paths.cache_dir/web_images_dedup/``.

Levels of a variant (``curation`` for the hierarchy, ``flat_curation`` for the flat baseline) are sized from the
deduplicated pool by :func:`sslcurate.planning.suggest_levels` with the study's ``level_sizing`` (flat: level 1 of
that hierarchy) unless ``<node>.levels`` is given on the command line or ``level_sizing`` is null;
``<node>.auto_levels=true`` sizes them even then. Levels that are not sized must fit the pool, else the run stops
before any work with a one-line error naming the levels that fit (the rule of ``experiment=curate``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.kit.config import curation_config
from experiments.kit.levels import kept_rows, levels_given
from sslcurate import CurationInputError
from sslcurate.config import LevelConfig
from sslcurate.hierarchy import check_levels
from sslcurate.planning import suggest_levels

log = logging.getLogger(__name__)
CURATED = {"curated": "curation", "flat": "flat_curation"}  # variant -> its curation node


def sized_levels(cfg: DictConfig, node: str, n_points: int) -> list[LevelConfig]:
    """Levels of ``node`` sized from a pool of ``n_points`` (suggest_levels with the study's ``level_sizing``,
    its defaults when that is null); the flat baseline gets level 1 of that hierarchy."""
    sizing = cfg.get("level_sizing")
    levels = suggest_levels(n_points, **(OmegaConf.to_container(sizing) if sizing is not None else {}))
    return levels if node == "curation" else levels[:1]


def variant_levels(cfg: DictConfig, node: str, n_points: int, pool: str, overrides: list[str] | None = None
                   ) -> tuple[list[LevelConfig], bool]:
    """(levels, sized from the pool) of ``node`` on a pool of ``n_points`` items (``pool`` names it in errors;
    ``overrides``: the command line, default this Hydra run's). Raises a one-line CurationInputError when given
    levels do not fit."""
    ccfg = curation_config(cfg[node])
    if ccfg.auto_levels or (cfg.get("level_sizing") is not None and not levels_given(node, overrides)):
        return sized_levels(cfg, node, n_points), True
    try:
        check_levels(ccfg.levels, n_points)
    except CurationInputError as err:
        fit = sized_levels(cfg, node, max(n_points, 2))
        raise CurationInputError(
            f"{node}.levels (k = {[lv.n_clusters for lv in ccfg.levels]}) do not fit {pool} of {n_points} images: "
            f"{err}. Levels that fit: {node}.auto_levels=true (here k = {[lv.n_clusters for lv in fit]}, "
            f"r = {[lv.sample_size for lv in fit]})") from None
    return list(ccfg.levels), False


def pool_problems(cfg: DictConfig, n_pool: int, n_curation_pool: int, n_manual: int, pool: str,
                  overrides: list[str] | None = None) -> tuple[dict, list[str]]:
    """What each curated variant would use on these pool sizes, and every reason the run cannot go through.

    n_pool: images the ``raw`` variant draws from; n_curation_pool: the (deduplicated) pool the curated variants
    select from, named ``pool`` in the messages; n_manual: images of the ``manual`` set; overrides: the command
    line (default: this Hydra run's).
    Returns ({variant: (levels, sized)}, problems: one line each)."""
    levels, problems = {}, []
    size, batch = int(cfg.subset_size), int(cfg.trainer.batch_size)
    for variant, node in CURATED.items():
        if variant not in cfg.variants:
            continue
        try:
            levels[variant] = variant_levels(cfg, node, n_curation_pool, pool, overrides)
        except CurationInputError as err:
            problems.append(str(err))
    if "raw" in cfg.variants and size > n_pool:
        problems.append(f"subset_size = {size} is larger than the pool ({n_pool} images): lower subset_size")
    if any(v in cfg.variants for v in CURATED) and size > n_curation_pool:
        problems.append(f"subset_size = {size} is larger than {pool} ({n_curation_pool} images) the curated "
                        "variants select from: lower subset_size")
    if size < batch:
        problems.append(f"subset_size = {size} is less than one batch (trainer.batch_size = {batch})")
    if "manual" in cfg.variants and n_manual < batch:
        problems.append(f"the manual set has {n_manual} images, less than one batch (trainer.batch_size = {batch}): "
                        "lower the batch or leave manual out of variants")
    return levels, problems


def dedup_threshold(cfg: DictConfig) -> float | None:
    """``curation.dedup.threshold``, else the embedder's ``dedup_threshold`` (None: keep near-duplicates)."""
    flat = cfg.flat_curation.get("dedup")
    if flat is not None and (flat.get("threshold") is not None or flat.get("n_clusters") is not None):
        raise CurationInputError("flat_curation.dedup is not read: the study removes near-duplicates once for every "
                                 "curated variant; set curation.dedup.threshold (or embedder.dedup_threshold)")
    t = cfg.curation.dedup.threshold
    return float(t) if t is not None else cfg.embedder.get("dedup_threshold")


def deduplicated_rows(cfg: DictConfig, emb, emb_path: Path, cache: Path) -> tuple[np.ndarray, dict]:
    """Sorted rows of the pool kept after near-duplicate removal (all rows when it is off) and its record:
    threshold, input, kept and dropped rows. Cached by embeddings, threshold and clustering."""
    threshold = dedup_threshold(cfg)
    n = len(emb)
    record = {"threshold": threshold, "n_clusters": None, "input_rows": n, "kept_rows": n, "dropped_rows": 0}
    if threshold is None:
        return np.arange(n, dtype=np.int64), record
    n_clusters = cfg.curation.dedup.n_clusters
    key = {"embeddings": Path(emb_path).stem, "shape": list(emb.shape), "threshold": threshold,
           "n_clusters": n_clusters, "seed": int(cfg.seed)}
    kept = kept_rows(emb, threshold, n_clusters, seed=int(cfg.seed), progress=cfg.progress, cache=cache,
                     kind="web_images_dedup", key=key, record=key)
    record.update(n_clusters=n_clusters, kept_rows=int(kept.size), dropped_rows=int(n - kept.size))
    log.info("dedup at cosine %.3g: kept %d of %d images (%d near-duplicates dropped)", threshold, kept.size, n,
             n - kept.size)
    return kept, record
