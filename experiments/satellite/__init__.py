"""``experiment=satellite``: the paper's satellite study (its Study 4, after Tolan et al. 2023) at CPU scale.

Stages: scenes (generated GeoTIFFs, or a user's folder) -> tiles (windowed reads) -> embed the pool (DINO trained
on the raw pool, cached) -> curate -> pretrain DINO on each variant (same tile count, same steps x batch) ->
dense canopy-height head on the frozen backbone, trained on a small labelled set -> MAE / RMSE / R^2 / block R^2
on held-out regions -> figures, metrics.json, README (``publish=true``).

Variants: ``raw`` (uniform random tiles of the pool), ``curated`` (hierarchical k-means with resampling +
balanced sampling on the tile embeddings), ``manual`` (balanced over the true land-cover classes: the one variant
that reads labels, by design), and two references without pretraining: ``random_init`` (the untrained backbone
under the same head: what pretraining adds) and ``pixel_gbm`` (boosted trees on one pixel's bands: what colour
alone tells). Otherwise land-cover labels are read only to measure the training sets.

Before curating, the pool's near-duplicate tiles are removed (cosine on the embeddings at
``curation.dedup.threshold``, default the embedder's ``dedup_threshold``; ``embedder.dedup_threshold=null``: off);
raw, curated and manual all select from the deduplicated pool. The hierarchy is sized from it
(:func:`experiments.kit.levels.study_levels` with ``level_sizing``) unless ``curation.levels`` is given on the command
line. Bands, the reflectance scale and the per-band input normalisation are inferred from the scenes unless set.
``manual`` needs land-cover rasters and is skipped, with the reason logged and recorded, without them.

Every variant that trains on pool tiles records ``label_entropy``: the normalised entropy of the tiles' labels over
its training set, the labels being land cover when the pool has land-cover rasters, else the site of each tile's
scene (:func:`experiments.satellite.data.tile_labels`). ``data=satellite_real`` (``experiment=satellite_real``) runs
the study on real scenes (:mod:`experiments.satellite.real`).

Each (variant, seed) result is cached under ``paths.cache_dir/satellite_results/`` keyed by everything that
decides it, so a killed run resumes and per-seed runs merge into one multi-seed call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path, cached
from experiments.kit.config import curation_config
from experiments.kit.levels import dedup_setting, kept_rows, level_sizing, levels_given, levels_record, study_levels
from experiments.kit.loop import Study, machine, run_study, seed_seconds, stage
from experiments.kit.metrics import metrics_doc
from experiments.kit.record import run_command
from sslcurate import CurationInputError, curate
from sslcurate.io import atomic_save_json, atomic_save_npy, config_hash

from .data import StudyData, band_statistics, build_data, data_summary, forest_mask, has_land_cover, \
    land_cover_shares, normalised_entropy, tile_labels
from .scenes import CLASSES

log = logging.getLogger(__name__)
METRICS = ("r2", "block_r2", "mae", "rmse")
# random_init: the untrained backbone under the same head (what pretraining adds); pixel_gbm: gradient boosting on
# each pixel's band values alone, no backbone and no spatial context (how much colour alone tells); manual:
# pretraining on a set balanced over the true land-cover classes (what perfect concept balance would give)
VARIANTS = ("raw", "curated", "manual", "random_init", "pixel_gbm")


def run(cfg: DictConfig) -> dict:
    return run_study(cfg, SatelliteStudy)


class SatelliteStudy(Study):
    """The hooks of :func:`experiments.kit.loop.run_study` for this study."""

    def load(self) -> None:
        cfg = self.cfg
        self.data = data = build_data(cfg, self.cache, progress=cfg.progress)
        self.norm = resolve_normalisation(cfg, data.pool.images)
        self.skipped = skip_variants(cfg, data)
        self.summary = data_summary(data)
        forest = self.summary["pool_forest_share"]
        log.info("pool %d tiles (forest %s), labelled %d, eval %d over %s", len(data.pool),
                 "unknown" if forest is None else f"{100 * forest:.1f}%", len(data.labelled), len(data.eval),
                 data.regions)

    def dry_run(self) -> dict:
        return dry_run(self.cfg, self.data, self.out, self.norm)

    def prepare(self, timings: dict) -> None:
        cfg = self.cfg
        _check_sizes(cfg, len(self.data.pool))
        with stage(timings, "embed_s"):
            self.emb, self.emb_path = embed_pool(cfg, self.data, self.cache, self.out)
        if embedder_seconds(self.emb_path) is not None:
            timings["embed_computed_s"] = embedder_seconds(self.emb_path)
        with stage(timings, "dedup_s"):
            self.kept, self.dedup = dedup_pool(cfg, self.data, self.emb)
        _check_sizes(cfg, len(self.kept), "deduplicated pool")
        self.levels, self.sized = None, False
        if "curated" in cfg.variants:
            self.levels, self.sized = study_levels(curation_config(cfg.curation), len(self.kept), level_sizing(cfg))
            log.info("curation levels (%s): %s", "sized from the deduplicated pool" if self.sized else "given",
                     [(lv.n_clusters, lv.resampling_steps, lv.sample_size) for lv in self.levels])
        self.selections: dict = {}
        self.tree_stats: dict = {}
        self.predictions: dict = {}  # the first seed's, for the figures

    def select(self, seed: int) -> dict:
        sel, self.tree_stats[seed] = select_variants(self.cfg, self.data, self.emb, seed, self.out / f"seed{seed}",
                                                     self.kept, self.levels)
        self.selections[seed] = sel
        return sel

    def result(self, selection: dict, variant: str, seed: int) -> dict:
        res, pred = variant_result(self.cfg, self.data, selection, variant, seed, self.cache, self.out)
        if variant == "curated":  # recomputed on every call (never cached), so a merge reports every seed
            res.update(self.tree_stats[seed])
        if seed == int(self.cfg.seeds[0]):
            self.predictions[variant] = pred
        return res

    def document(self, results: dict, done: dict, timings: dict) -> dict:
        cfg, data, seeds = self.cfg, self.data, [int(s) for s in self.cfg.seeds]
        return metrics_doc(cfg.experiment_name, seeds, "r2_mean", True, results, primary_variant="curated",
                           regions=data.regions, land_cover_classes=list(CLASSES), data=self.summary,
                           subset_size=int(cfg.subset_size), backbone=cfg.model.backbone,
                           tile_size=int(cfg.data.tile_size), train_steps=int(cfg.trainer.max_steps),
                           batch_size=int(cfg.trainer.batch_size), embedder_steps=int(cfg.embedder.max_steps),
                           head=OmegaConf.to_container(cfg.head, resolve=True),
                           block_px=int(cfg.evaluation.block_px), embeddings=str(self.emb_path),
                           normalisation=self.norm, dedup=self.dedup, skipped_variants=self.skipped,
                           curation_levels=(levels_record(self.levels, self.sized, level_sizing(cfg))
                                            if self.levels else None),
                           timings=timings, seed_seconds=seed_seconds(timings, seeds),
                           command=cfg.get("command") or run_command(), machine=machine(),
                           label_kind=self.summary["label_kind"], target=target_name(cfg),
                           design_note=cfg.get("design_note"), timing_note=cfg.get("timing_note"))

    def figures(self, doc: dict) -> list[Path]:
        from .figures import make_figures
        return make_figures(doc, self.data, self.selections[int(self.cfg.seeds[0])], self.predictions, self.out)

    def write_readme(self, folder: Path) -> Path:
        from .report import write_readme
        return write_readme(folder)


def target_name(cfg: DictConfig) -> str:
    """What the labelled raster holds (``data.target_name``; the generated and folder presets: canopy height)."""
    return str(cfg.data.get("target_name") or "canopy height")


def skip_variants(cfg: DictConfig, data: StudyData) -> dict:
    """Drop the variants the data cannot support (``manual`` without land-cover rasters) from ``cfg.variants``,
    logging why; returns ``{variant: reason}``."""
    skipped = {}
    if "manual" in cfg.variants and not has_land_cover(data.pool.land_cover):
        skipped["manual"] = ("the pool has no land-cover rasters (<scene>_landcover.tif beside each scene), which "
                             "the manual baseline balances over")
        log.warning("variant manual skipped: %s", skipped["manual"])
    if skipped:
        cfg.variants = [v for v in cfg.variants if v not in skipped]
    return skipped


def dedup_pool(cfg: DictConfig, data: StudyData, emb: np.ndarray) -> tuple[np.ndarray, dict]:
    """(m,) sorted pool rows left after near-duplicate removal on the curation embeddings (``sslcurate.deduplicate``
    at :func:`experiments.kit.levels.dedup_setting`'s threshold; every row when off), and what was dropped.

    The cosine is taken between embeddings centred on the pool mean: pooled features of a CNN after its last ReLU
    share a large positive component, so unrelated tiles look alike uncentred (quick preset's pool: median pair
    cosine 0.67 uncentred, -0.07 centred; the default pool at 0.9 keeps 436 tiles uncentred, fewer than the
    subset, and 1,348 centred: benchmarks/results/satellite_dedup.md). The curation's L2 k-means does not see the
    shift."""
    threshold, n_clusters, source = dedup_setting(cfg)
    n = len(emb)
    kept = kept_rows(emb, threshold, n_clusters, centred=True)
    record = {"threshold": threshold, "threshold_from": source, "n_clusters": n_clusters, "centred": True,
              "input_tiles": n, "kept_tiles": int(kept.size), "dropped_tiles": int(n - kept.size)}
    labels, names, kind = tile_labels(data)  # measurement only: which labels the removal thinned
    gone = np.delete(labels, kept)
    gone = np.bincount(gone[gone >= 0], minlength=len(names))
    record["dropped_" + kind] = {c: int(v) for c, v in zip(names, gone) if v}
    record["kept_label_entropy"] = normalised_entropy(labels[kept], len(names))
    log.info("pool dedup (%s): kept %d of %d tiles", source, kept.size, n)
    return kept, record


def resolve_normalisation(cfg: DictConfig, images: np.ndarray) -> dict:
    """Set ``model.mean`` / ``model.std`` left at ``auto`` to the per-band statistics of ``images`` (the pool,
    :func:`band_statistics`); values given in the config are kept. Returns what the run uses, and where from."""
    source = {}
    auto = any(isinstance(cfg.model.get(k), str) for k in ("mean", "std"))
    stats = band_statistics(images) if auto else (None, None)
    for key, value in zip(("mean", "std"), stats):
        if isinstance(cfg.model.get(key), str):
            if cfg.model[key] != "auto":
                raise CurationInputError(f"model.{key} must be 'auto' or one number per band, not {cfg.model[key]!r}")
            cfg.model[key] = value
            source[key] = "pool"
        else:
            source[key] = "config"
    log.info("input normalisation: mean %s (%s), std %s (%s)", list(cfg.model.mean), source["mean"],
             list(cfg.model.std), source["std"])
    return {"mean": list(cfg.model.mean), "std": list(cfg.model.std), "source": source}


def _check_sizes(cfg: DictConfig, n: int, what: str = "pool") -> None:
    """Before the work it would waste: the subset fits the pool (then the deduplicated pool), holds one batch, the
    variants are known, and levels given on the command line fit."""
    k = int(cfg.subset_size)
    if k > n:
        hint = "; lower subset_size, or raise curation.dedup.threshold" if what != "pool" else ""
        raise CurationInputError(f"subset_size={k} is larger than the {what} ({n} tiles){hint}")
    if k < int(cfg.trainer.batch_size):
        raise CurationInputError(f"subset_size={k} is smaller than one batch ({cfg.trainer.batch_size})")
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise CurationInputError(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")
    if "curated" in cfg.variants:
        study_levels(curation_config(cfg.curation), n, level_sizing(cfg))


def embed_pool(cfg: DictConfig, data: StudyData, cache: Path, out: Path) -> tuple[np.ndarray, Path]:
    """Curation embeddings: pooled features of DINO trained on the whole raw pool (as the paper embeds its
    satellite pool with an SSL model trained on raw data), trained once and cached by (data, model, steps)."""
    from .model import pooled_features, pretrain

    e = cfg.embedder
    key = {"data": data.key, "model": OmegaConf.to_container(cfg.model, resolve=True), "steps": int(e.max_steps),
           "seed": int(e.seed), "batch": int(cfg.trainer.batch_size)}
    t = time.perf_counter()

    def features() -> np.ndarray:
        log.info("embedder: DINO on the %d raw pool tiles for %d steps", len(data.pool), e.max_steps)
        module = pretrain(data.pool.images, cfg.model, cfg.trainer, int(e.seed), out, "embedder", cfg.progress,
                          max_steps=int(e.max_steps))
        return pooled_features(module, data.pool.images)
    # the record beside the embeddings: a run that reuses them still reports what computing them cost
    emb, path, _ = cached("satellite_embeddings", key, features, cache=cache,
                          record=lambda _: {"seconds": time.perf_counter() - t, "machine": machine()})
    return emb, path


def embedder_seconds(emb_path: Path) -> float | None:
    """Measured time of the run that computed these embeddings (None if not recorded)."""
    meta = Path(emb_path).with_suffix(".json")
    return json.loads(meta.read_text())["seconds"] if meta.exists() else None


def select_variants(cfg: DictConfig, data: StudyData, emb: np.ndarray, seed: int, out: Path, kept: np.ndarray,
                    levels: list | None) -> tuple[dict, dict]:
    """Pool indices of each selected variant for one seed, all drawn from the deduplicated pool rows ``kept``
    (land cover never read by raw or curated), and the hierarchy's top-level statistics (:func:`tree_stats`;
    empty without curated)."""
    n = int(cfg.subset_size)
    stats: dict = {}
    rng = np.random.default_rng([seed, 7])
    sel = {"raw": np.sort(kept[rng.choice(len(kept), size=n, replace=False)])}
    if "curated" in cfg.variants:
        ccfg = curation_config(cfg.curation)
        # the pool is deduplicated above, for every variant: the core gets the kept rows with dedup off
        core = dataclasses.replace(ccfg, seed=seed, target_size=n, levels=levels, auto_levels=False,
                                   dedup=dataclasses.replace(ccfg.dedup, threshold=None))
        res = curate(emb[kept], core, out_dir=out / "curated", labels=None, progress=cfg.progress)
        sel["curated"] = kept[res.indices]
        stats = tree_stats(data.pool.land_cover[kept], res.tree.point_labels(len(res.tree.levels)), res.indices)
    if "manual" in cfg.variants:
        local = class_balanced(data.pool.land_cover[kept], n, np.random.default_rng([seed, 13]))
        sel["manual"] = kept[local]
    return sel, stats


def class_balanced(land_cover: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``manual`` baseline (reads the labels by design): ``n`` pool rows water-filled over the land-cover
    classes (every forest kind as much as it has, up to an equal share), random within a class. (n,) sorted."""
    from sslcurate.sampling import water_fill

    known = land_cover >= 0
    if not known.any():
        raise CurationInputError("variant manual needs land-cover labels for the pool (<scene>_landcover.tif)")
    classes = np.unique(land_cover[known])
    members = [np.nonzero(land_cover == c)[0] for c in classes]
    quota = water_fill(np.array([len(m) for m in members]), n, rng)
    return np.sort(np.concatenate([rng.choice(m, size=int(q), replace=False) for m, q in zip(members, quota)]))


def tree_stats(land_cover: np.ndarray, top: np.ndarray, idx: np.ndarray) -> dict:
    """How the curation hierarchy's top level treats the tail (measurement only: reads land cover).

    land_cover, top: (n,) majority class and top-level cluster of every clustered tile; idx: the curated rows.
    Returns the number of top-level clusters, how many were taken whole (smaller than the water-filling cap) with
    their share of the subset and, when land cover is known, how many of them hold 90% of the forest tiles."""
    n_top = int(top.max()) + 1
    size = np.bincount(top, minlength=n_top)
    taken = np.bincount(top[idx], minlength=n_top)
    whole = (taken == size) & (size > 0)
    out = {"top_clusters": int((size > 0).sum()), "top_clusters_taken_whole": int(whole.sum()),
           "subset_share_from_whole_clusters": float(taken[whole].sum() / max(len(idx), 1))}
    if has_land_cover(land_cover):
        forest = forest_mask(land_cover)
        per_cluster = np.sort(np.bincount(top[forest], minlength=n_top))[::-1]
        need = np.searchsorted(np.cumsum(per_cluster), 0.9 * max(forest.sum(), 1)) + 1
        out["top_clusters_90pct_forest"] = int(need)
    return out


def composition(data: StudyData, idx: np.ndarray) -> dict:
    """Make-up of a training set (measurement only). Every study's ``label_entropy``: the normalised entropy of the
    labels of :func:`experiments.satellite.data.tile_labels` over the set (land cover when the pool has it, else the
    site of each tile's scene; log of the pool's label count as the unit, so 1 is an even spread over the pool's
    labels); the number of distinct tiles; with land cover its shares and forest share, without it each site's."""
    labels, names, kind = tile_labels(data)
    lab = labels[idx]
    out = {"label_entropy": normalised_entropy(lab, len(names)), "unique_tiles": int(np.unique(idx).size)}
    if kind != "land_cover":
        shares = np.bincount(lab[lab >= 0], minlength=len(names)) / max(int((lab >= 0).sum()), 1)
        return {**out, **{f"share_site_{n}": float(v) for n, v in zip(names, shares)}}
    shares = land_cover_shares(lab)
    return {**out, "forest_share": float(forest_mask(lab).mean()),
            "land_cover_entropy": normalised_entropy(lab, len(CLASSES)),
            **{f"share_{c}": float(v) for c, v in zip(CLASSES, shares)}}


def variant_result(cfg: DictConfig, data: StudyData, sel: dict, variant: str, seed: int, cache: Path,
                   out: Path) -> tuple[dict, np.ndarray]:
    """Pretrain (same budget), fit the head, evaluate one variant for one seed; cached by all its inputs."""
    from experiments.ssl.pretrain import dino_config

    from . import model as M

    key = {"data": data.key, "variant": variant, "seed": seed,
           "model": OmegaConf.to_container(cfg.model, resolve=True),
           "trainer": {k: cfg.trainer[k] for k in ("max_steps", "batch_size", "precision")},
           "head": OmegaConf.to_container(cfg.head, resolve=True),
           "eval": OmegaConf.to_container(cfg.evaluation, resolve=True),
           "selection": config_hash(sel[variant].tolist()) if variant in sel else None}
    path = cache_path(cache, "satellite_results", key, ".json")
    folder, pred_path = path.parent, cache_path(cache, "satellite_results", key, "_pred.npy")
    if cfg.reuse_results and path.exists() and pred_path.exists():
        log.info("%s seed %d: reusing %s", variant, seed, path)
        stored = json.loads(path.read_text())
        return {**stored["metrics"], "_seconds": stored["seconds"]}, np.load(pred_path).astype(np.float32)
    t = time.perf_counter()
    res: dict = {}
    if variant == "pixel_gbm":
        pred = M.pixel_baseline(data.labelled.images, data.labelled.chm, data.eval.images, seed)
        return _score(cfg, data, variant, seed, res, pred, t, folder, path, pred_path, key)
    if variant == "random_init":
        torch.manual_seed(seed)
        module = M.DINO(dino_config(cfg.model, cfg.trainer, seed, data.pool.images.shape[1]))
    else:
        idx = sel[variant]
        res.update(composition(data, idx))
        module, info = pretrained_backbone(cfg, data, idx, variant, seed, cache, out)
        res.update(info)
        # the variant's time counts its pretraining as measured when it ran, also when the backbone is reused
        t -= info["pretrain_s"] - (time.perf_counter() - t)
    res["pretrain_s"] = res.get("pretrain_s", time.perf_counter() - t)
    fi, skip = list(cfg.head.feature_indices), bool(cfg.head.image_skip)
    lab = M.head_inputs(module, data.labelled.images, fi, data.labelled.chm, bool(cfg.head.symmetries), skip)
    heads, loss = M.train_head(lab, cfg.head, seed, int(cfg.data.tile_size))
    res["head_loss_final"] = loss
    pred = heads.predict(M.head_inputs(module, data.eval.images, fi, image_skip=skip))
    return _score(cfg, data, variant, seed, res, pred, t, folder, path, pred_path, key)


def pretrained_backbone(cfg: DictConfig, data: StudyData, idx: np.ndarray, variant: str, seed: int, cache: Path,
                        out: Path):
    """DINO pretrained on the pool rows ``idx``, cached by everything that decides it (not the head), so a new
    head protocol reuses the backbones. Returns (module, {"pretrain_loss_final", "pretrain_s"}), the time being
    the one measured when the backbone was trained."""
    from experiments.ssl.pretrain import dino_config

    from . import model as M

    path = cache_path(cache, "satellite_backbones", {
        "data": data.key, "variant": variant, "seed": seed, "model": OmegaConf.to_container(cfg.model, resolve=True),
        "trainer": {k: cfg.trainer[k] for k in ("max_steps", "batch_size", "precision")},
        "selection": config_hash(idx.tolist())}, ".pt")
    module = M.DINO(dino_config(cfg.model, cfg.trainer, seed, data.pool.images.shape[1]))
    if path.exists() and path.with_suffix(".json").exists():
        log.info("%s seed %d: reusing the pretrained backbone %s", variant, seed, path)
        module.teacher_backbone.load_state_dict(torch.load(path, map_location="cpu"))
        return module, json.loads(path.with_suffix(".json").read_text())
    lc = data.pool.land_cover[idx]
    log.info("%s seed %d: pretraining on %d tiles (forest %s) for %d steps", variant, seed, len(idx),
             f"{100 * float(forest_mask(lc).mean()):.1f}%" if has_land_cover(lc) else "unknown", cfg.trainer.max_steps)
    t = time.perf_counter()
    module = M.pretrain(np.ascontiguousarray(data.pool.images[idx]), cfg.model, cfg.trainer, seed, out,
                        f"{variant}_seed{seed}", cfg.progress)
    info = {"pretrain_loss_final": float(module.trainer.callback_metrics.get("train/dino_loss", float("nan"))),
            "pretrain_s": time.perf_counter() - t}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(module.teacher_backbone.state_dict(), tmp)
    tmp.replace(path)
    atomic_save_json(path.with_suffix(".json"), info)
    return module, info


def _score(cfg: DictConfig, data: StudyData, variant: str, seed: int, res: dict, pred: np.ndarray, t: float,
           folder: Path, path: Path, pred_path: Path, key: dict) -> tuple[dict, np.ndarray]:
    """Metrics of ``pred`` per evaluation region and averaged; the result is cached under ``path``."""
    from .metrics import height_metrics

    per_region = {}
    for r, name in enumerate(data.regions):
        m = data.eval.scene == r
        per_region[name] = height_metrics(pred[m], data.eval.chm[m], block=int(cfg.evaluation.block_px))
        for k in METRICS:
            res[f"{k}_{name}"] = per_region[name][k]
    for k in METRICS:
        res[f"{k}_mean"] = float(np.mean([per_region[n][k] for n in data.regions]))
    seconds = time.perf_counter() - t
    log.info("%s seed %d: r2_mean=%.3f block_r2_mean=%.3f mae_mean=%.2f m (%.0f s)", variant, seed,
             res["r2_mean"], res["block_r2_mean"], res["mae_mean"], seconds)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(pred_path, pred.astype(np.float16))
    atomic_save_json(path, {"key": key, "metrics": res, "seconds": seconds})
    return {**res, "_seconds": seconds}, pred


def dry_run(cfg: DictConfig, data: StudyData, out: Path, norm: dict | None = None) -> dict:
    """Build every piece of the configured run (curation config, model, trainer, head) and stop before the work;
    what the run would refuse (sizes, levels) is listed under ``problems`` rather than raised."""
    from experiments.kit.trainer import build_trainer
    from experiments.ssl.pretrain import dino_config

    from . import model as M

    ccfg = curation_config(cfg.curation)
    problems = []
    try:
        _check_sizes(cfg, len(data.pool))
    except CurationInputError as err:
        problems.append(str(err))
    given = levels_given() and not ccfg.auto_levels
    dcfg = dino_config(cfg.model, cfg.trainer, int(cfg.seed), data.pool.images.shape[1])
    module = M.DINO(dcfg)
    x = torch.from_numpy(np.asarray(data.labelled.images[:2], np.float32))
    if dcfg.img_size:  # ViTs take their configured input size
        x = torch.nn.functional.interpolate(x, size=(dcfg.img_size, dcfg.img_size), mode="bilinear")
    with torch.no_grad():
        maps = module.teacher_backbone.forward_intermediates(module.normalize(x),
                                                             indices=list(cfg.head.feature_indices),
                                                             intermediates_only=True)
    head = M.DenseHeightHead([m.shape[1] for m in maps], int(cfg.data.tile_size), int(cfg.head.dim),
                             image_channels=x.shape[1] if cfg.head.image_skip else 0)
    with torch.no_grad():  # the decoder runs on the backbone's maps (and the bands, with the skip)
        head(maps, module.normalize(x) if cfg.head.image_skip else None)
    trainer_ok: object = True
    try:
        build_trainer(cfg.trainer, out, False, "dry_run")
    except Exception as err:  # e.g. a multi-GPU strategy on a CPU machine
        trainer_ok = f"{type(err).__name__}: {err}"
    summary = {"dry_run": True, **data_summary(data), "variants": list(cfg.variants),
               "levels": [lv.n_clusters for lv in ccfg.levels] if given else "sized from the deduplicated pool",
               "level_sizing": level_sizing(cfg), "normalisation": norm,
               "dedup": dict(zip(("threshold", "n_clusters", "from"), dedup_setting(cfg))), "problems": problems,
               "target_size": int(cfg.subset_size), "backbone": dcfg.backbone, "in_chans": dcfg.in_chans,
               "feature_shapes": [list(m.shape[1:]) for m in maps],
               "params_millions": sum(p.numel() for p in module.student_backbone.parameters()) / 1e6,
               "head_params": sum(p.numel() for p in head.parameters()), "trainer": trainer_ok,
               "devices": int(cfg.trainer.devices), "num_nodes": int(cfg.trainer.num_nodes)}
    atomic_save_json(out / "dry_run.json", summary)
    log.info("dry run: %s", summary)
    return summary
