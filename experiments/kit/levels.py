"""What every study does before curating: near-duplicate removal, then a hierarchy that fits the deduplicated
pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslcurate import CurationInputError, deduplicate

from .cache import cached
from .config import CurationJobConfig
from .record import command_overrides


def dedup_setting(cfg: DictConfig) -> tuple[float | None, int | None, str]:
    """The near-duplicate threshold of a study's pool, the k-means groups it compares within, and where the
    threshold came from: ``curation.dedup.threshold`` when set, else the embedder's ``dedup_threshold`` (a cosine
    means something only in one embedding space); ``embedder.dedup_threshold=null`` turns removal off."""
    d = cfg.curation.get("dedup") or {}
    if d.get("threshold") is not None:
        return float(d["threshold"]), d.get("n_clusters"), "curation.dedup.threshold"
    thr = cfg.embedder.get("dedup_threshold") if "embedder" in cfg else None
    return (float(thr) if thr is not None else None), d.get("n_clusters"), \
        ("embedder.dedup_threshold" if thr is not None else "off (embedder.dedup_threshold=null)")


def kept_rows(emb: np.ndarray, threshold: float | None, n_clusters: int | None, *, seed: int = 0,
              centred: bool = False, progress: bool = False, cache: Path | None = None, kind: str = "dedup",
              key: dict | None = None, prefix: str = "", record: dict | None = None) -> np.ndarray:
    """(m,) sorted int64 rows of the pool ``emb`` that near-duplicate removal keeps (:func:`sslcurate.deduplicate`
    at cosine ``threshold`` within ``n_clusters`` k-means clusters; every row when ``threshold`` is None).
    centred: the cosine between embeddings centred on the pool mean (for features that share a large common
    component, such as a CNN's pooled activations after a ReLU). With ``cache``, the rows are a stage cache entry
    under ``cache/kind/`` keyed by ``key``, the settings and data that decide them
    (:func:`experiments.kit.cache.cached`)."""
    if threshold is None:
        return np.arange(len(emb), dtype=np.int64)

    def compute() -> np.ndarray:
        x = emb - emb.mean(axis=0, dtype=np.float64).astype(emb.dtype) if centred else emb
        return np.flatnonzero(deduplicate(x, float(threshold), n_clusters=n_clusters, seed=seed,
                                          progress=progress)).astype(np.int64)
    if cache is None:
        return compute()
    return cached(kind, key, compute, cache=cache, prefix=prefix, record=record).value


def levels_given(node: str = "curation", overrides: list[str] | None = None) -> bool:
    """Whether the command line (``overrides``, default: this Hydra run's) set the hierarchy of ``node``
    (``<node>.levels...``); otherwise a study sizes it from its deduplicated pool. Levels in config files are not
    "given": they were chosen for another pool."""
    return any(o.lstrip("+~").split("=")[0].startswith(f"{node}.levels")
               for o in (command_overrides() if overrides is None else overrides))


def level_sizing(cfg: DictConfig) -> dict:
    """A study's ``level_sizing``: the keywords of :func:`sslcurate.planning.suggest_levels` it sizes its hierarchy
    with (none: the paper's rule as ``suggest_levels`` defaults it)."""
    return OmegaConf.to_container(cfg.level_sizing, resolve=True) if cfg.get("level_sizing") else {}


def study_levels(ccfg: CurationJobConfig, n_points: int, sizing: dict | None = None,
                 given: bool | None = None) -> tuple[list, bool]:
    """The hierarchy a study curates ``n_points`` (its deduplicated pool) with, and whether it was sized.

    Sized from the pool (:func:`sslcurate.planning.suggest_levels` with the study's ``sizing`` keywords:
    ``points_per_cluster``, ``shrink``, ``n_levels``, ``top_clusters``) unless the levels were given on the command
    line and ``curation.auto_levels`` is false. Given levels that do not fit raise a one-line CurationInputError
    naming the setting that fits. given: None reads the command line (:func:`levels_given`)."""
    from sslcurate.hierarchy import check_levels
    from sslcurate.planning import suggest_levels

    sizing = dict(sizing or {})
    given = levels_given() if given is None else given
    if not given or ccfg.auto_levels:
        return suggest_levels(n_points, **sizing), True
    try:
        check_levels(ccfg.levels, n_points)
    except CurationInputError as err:
        try:
            fit = suggest_levels(n_points, **sizing)
            hint = (f"drop curation.levels to size them from the pool (or add curation.auto_levels=true; here "
                    f"k = {[lv.n_clusters for lv in fit]}, r = {[lv.sample_size for lv in fit]})")
        except CurationInputError as small:
            hint = str(small)
        raise CurationInputError(f"curation.levels do not fit the pool of {n_points}: {err}; {hint}") from None
    return list(ccfg.levels), False


def levels_record(levels: list, sized: bool, sizing: dict | None) -> dict:
    """How metrics.json records the hierarchy a run used."""
    return {"sized_from_pool": sized, "sizing": dict(sizing or {}) if sized else None,
            "levels": [{"n_clusters": lv.n_clusters, "resampling_steps": lv.resampling_steps,
                        "sample_size": lv.sample_size, "n_iters": lv.n_iters} for lv in levels]}
