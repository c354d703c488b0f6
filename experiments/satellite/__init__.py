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

Each (variant, seed) result is cached under ``paths.cache_dir/satellite_results/`` keyed by everything that
decides it, so a killed run resumes and per-seed runs merge into one multi-seed call.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.common import Tracker, curation_config, metrics_doc, publish, run_dir, write_metrics
from sslcurate import CurationInputError, curate
from sslcurate.artifacts import atomic_save_json, atomic_save_npy, config_hash

from .data import StudyData, build_data, data_summary, forest_mask, land_cover_shares
from .scenes import CLASSES

log = logging.getLogger(__name__)
METRICS = ("r2", "block_r2", "mae", "rmse")
# random_init: the untrained backbone under the same head (what pretraining adds); pixel_gbm: gradient boosting on
# each pixel's four band values alone, no backbone and no spatial context (how much colour alone tells); manual:
# pretraining on a set balanced over the true land-cover classes (what perfect concept balance would give)
VARIANTS = ("raw", "curated", "manual", "random_init", "pixel_gbm")


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    cache = Path(cfg.paths.cache_dir)
    timings: dict = {}
    t0 = time.perf_counter()
    data = build_data(cfg, cache, progress=cfg.progress)
    timings["data_s"] = time.perf_counter() - t0
    summary = data_summary(data)
    log.info("pool %d tiles (forest %.1f%%), labelled %d, eval %d over %s", len(data.pool),
             100 * summary["pool_forest_share"], len(data.labelled), len(data.eval), data.regions)
    if cfg.get("dry_run"):
        return dry_run(cfg, data, out)
    _check_sizes(cfg, data)

    t = time.perf_counter()
    emb, emb_path = embed_pool(cfg, data, cache, out)
    timings["embed_s"] = time.perf_counter() - t
    if embedder_seconds(emb_path) is not None:
        timings["embed_computed_s"] = embedder_seconds(emb_path)

    tracker = Tracker(cfg, out)
    seeds = [int(s) for s in cfg.seeds]
    per_seed: dict = {}
    selections: dict = {}
    predictions: dict = {}
    for seed in seeds:
        t = time.perf_counter()
        sel, stats = select_variants(cfg, data, emb, seed, out / f"seed{seed}")
        timings[f"seed{seed}_curate_s"] = time.perf_counter() - t
        selections[seed] = sel
        for variant in cfg.variants:
            res, pred = variant_result(cfg, data, sel, variant, seed, cache, out)
            timings[f"seed{seed}_{variant}_s"] = res.pop("_seconds")
            if variant == "curated":  # recomputed on every call (never cached), so a merge reports every seed
                res.update(stats)
            per_seed.setdefault(variant, {})[seed] = res
            if seed == seeds[0]:
                predictions[variant] = pred
            tracker.log({f"{variant}/seed{seed}/{m}": v for m, v in res.items()})
    results = {v: {m: [per_seed[v][s][m] for s in seeds] for m in per_seed[v][seeds[0]]} for v in per_seed}
    timings["total_s"] = time.perf_counter() - t0
    doc = metrics_doc(cfg.experiment_name, seeds, "r2_mean", True, results, primary_variant="curated",
                      regions=data.regions, land_cover_classes=list(CLASSES), data=summary,
                      subset_size=int(cfg.subset_size), backbone=cfg.model.backbone,
                      tile_size=int(cfg.data.tile_size), train_steps=int(cfg.trainer.max_steps),
                      batch_size=int(cfg.trainer.batch_size), embedder_steps=int(cfg.embedder.max_steps),
                      head=OmegaConf.to_container(cfg.head, resolve=True), block_px=int(cfg.evaluation.block_px),
                      embeddings=str(emb_path), timings=timings,
                      seed_seconds={str(s): sum(v for k, v in timings.items() if k.startswith(f"seed{s}_"))
                                    for s in seeds},
                      command=cfg.get("command") or _command(), machine=_machine())
    path = write_metrics(out, doc)
    from .figures import make_figures
    figs = make_figures(doc, data, selections[seeds[0]], predictions, out)
    for f in figs:
        tracker.log_image(f.stem, f)
    tracker.log_metrics_doc(doc)
    tracker.finish()
    if cfg.publish:
        from .report import write_readme
        dest = publish(cfg, [path, *figs])
        write_readme(dest)
    return doc


def _machine() -> str:
    import os
    import platform

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads "
            f"{torch.get_num_threads()}, 1-min load average at the end {load:.1f}")


def _command() -> str:
    from experiments.common import _overrides
    return " ".join(["python run.py", *_overrides()])


def _check_sizes(cfg: DictConfig, data: StudyData) -> None:
    n, k = len(data.pool), int(cfg.subset_size)
    if k > n:
        raise CurationInputError(f"subset_size={k} is larger than the pool ({n} tiles)")
    if k < int(cfg.trainer.batch_size):
        raise CurationInputError(f"subset_size={k} is smaller than one batch ({cfg.trainer.batch_size})")
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise CurationInputError(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")


def embed_pool(cfg: DictConfig, data: StudyData, cache: Path, out: Path) -> tuple[np.ndarray, Path]:
    """Curation embeddings: pooled features of DINO trained on the whole raw pool (as the paper embeds its
    satellite pool with an SSL model trained on raw data), trained once and cached by (data, model, steps)."""
    from .model import pooled_features, pretrain

    e = cfg.embedder
    key = config_hash({"data": data.key, "model": OmegaConf.to_container(cfg.model, resolve=True),
                       "steps": int(e.max_steps), "seed": int(e.seed), "batch": int(cfg.trainer.batch_size)})
    path = cache / "satellite_embeddings" / f"{key}.npy"
    if path.exists():
        log.info("reusing pool embeddings %s", path)
        return np.load(path), path
    log.info("embedder: DINO on the %d raw pool tiles for %d steps", len(data.pool), e.max_steps)
    t = time.perf_counter()
    module = pretrain(data.pool.images, cfg.model, cfg.trainer, int(e.seed), out, "embedder", cfg.progress,
                      max_steps=int(e.max_steps))
    emb = pooled_features(module, data.pool.images)
    atomic_save_npy(path, emb)
    # kept beside the embeddings so a run that reuses them still reports what computing them cost
    atomic_save_json(path.with_suffix(".json"), {"seconds": time.perf_counter() - t, "machine": _machine()})
    return emb, path


def embedder_seconds(emb_path: Path) -> float | None:
    """Measured time of the run that computed these embeddings (None if not recorded)."""
    meta = Path(emb_path).with_suffix(".json")
    return json.loads(meta.read_text())["seconds"] if meta.exists() else None


def select_variants(cfg: DictConfig, data: StudyData, emb: np.ndarray, seed: int, out: Path) -> tuple[dict, dict]:
    """Pool indices of raw and curated for one seed (land cover never read by the selection), and the
    hierarchy's top-level statistics (:func:`tree_stats`, measured with land cover; empty without curated)."""
    n = int(cfg.subset_size)
    stats: dict = {}
    rng = np.random.default_rng([seed, 7])
    sel = {"raw": np.sort(rng.choice(len(data.pool), size=n, replace=False))}
    if "curated" in cfg.variants:
        ccfg = curation_config(cfg.curation)
        ccfg.seed = seed
        ccfg.target_size = n
        res = curate(emb, ccfg, out_dir=out / "curated", labels=None, progress=cfg.progress)
        sel["curated"] = res.indices
        stats = tree_stats(data, res.tree.point_labels(len(res.tree.levels)), res.indices)
    if "manual" in cfg.variants:
        sel["manual"] = class_balanced(data.pool.land_cover, n, np.random.default_rng([seed, 13]))
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


def tree_stats(data: StudyData, top: np.ndarray, idx: np.ndarray) -> dict:
    """How the curation hierarchy's top level treats the tail (measurement only: reads land cover).

    top: (n_pool,) top-level cluster of every pool tile; idx: the curated rows. Returns the number of top-level
    clusters, how many of them hold 90% of the pool's forest tiles, and how many were taken whole (smaller than
    the water-filling cap) with their share of the subset."""
    forest = forest_mask(data.pool.land_cover)
    n_top = int(top.max()) + 1
    per_cluster = np.sort(np.bincount(top[forest], minlength=n_top))[::-1]
    need = int(np.searchsorted(np.cumsum(per_cluster), 0.9 * max(forest.sum(), 1)) + 1)
    size = np.bincount(top, minlength=n_top)
    taken = np.bincount(top[idx], minlength=n_top)
    whole = (taken == size) & (size > 0)
    return {"top_clusters": int((size > 0).sum()), "top_clusters_90pct_forest": need,
            "top_clusters_taken_whole": int(whole.sum()), "subset_share_from_whole_clusters":
            float(taken[whole].sum() / max(len(idx), 1))}


def composition(data: StudyData, idx: np.ndarray) -> dict:
    """Land-cover make-up of a training set (measurement only)."""
    lc = data.pool.land_cover[idx]
    shares = land_cover_shares(lc)
    nz = shares[shares > 0]
    return {"forest_share": float(forest_mask(lc).mean()),
            "land_cover_entropy": float(-(nz * np.log(nz)).sum() / np.log(len(CLASSES))),
            "unique_tiles": int(np.unique(idx).size),
            **{f"share_{c}": float(v) for c, v in zip(CLASSES, shares)}}


def variant_result(cfg: DictConfig, data: StudyData, sel: dict, variant: str, seed: int, cache: Path,
                   out: Path) -> tuple[dict, np.ndarray]:
    """Pretrain (same budget), fit the head, evaluate one variant for one seed; cached by all its inputs."""
    from . import model as M

    key = {"data": data.key, "variant": variant, "seed": seed,
           "model": OmegaConf.to_container(cfg.model, resolve=True),
           "trainer": {k: cfg.trainer[k] for k in ("max_steps", "batch_size", "precision")},
           "head": OmegaConf.to_container(cfg.head, resolve=True),
           "eval": OmegaConf.to_container(cfg.evaluation, resolve=True),
           "selection": config_hash(sel[variant].tolist()) if variant in sel else None}
    h = config_hash(key)
    folder = cache / "satellite_results"
    path, pred_path = folder / f"{h}.json", folder / f"{h}_pred.npy"
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
        module = M.DINO(M.dino_config(cfg.model, cfg.trainer, seed, data.pool.images.shape[1]))
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
    from . import model as M

    key = config_hash({"data": data.key, "variant": variant, "seed": seed,
                       "model": OmegaConf.to_container(cfg.model, resolve=True),
                       "trainer": {k: cfg.trainer[k] for k in ("max_steps", "batch_size", "precision")},
                       "selection": config_hash(idx.tolist())})
    path = cache / "satellite_backbones" / f"{key}.pt"
    module = M.DINO(M.dino_config(cfg.model, cfg.trainer, seed, data.pool.images.shape[1]))
    if path.exists() and path.with_suffix(".json").exists():
        log.info("%s seed %d: reusing the pretrained backbone %s", variant, seed, path)
        module.teacher_backbone.load_state_dict(torch.load(path, map_location="cpu"))
        return module, json.loads(path.with_suffix(".json").read_text())
    log.info("%s seed %d: pretraining on %d tiles (forest %.1f%%) for %d steps", variant, seed, len(idx),
             100 * float(forest_mask(data.pool.land_cover[idx]).mean()), cfg.trainer.max_steps)
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


def dry_run(cfg: DictConfig, data: StudyData, out: Path) -> dict:
    """Build every piece of the configured run (curation config, model, trainer, head) and stop before the work."""
    from . import model as M

    ccfg = curation_config(cfg.curation)
    dcfg = M.dino_config(cfg.model, cfg.trainer, int(cfg.seed), data.pool.images.shape[1])
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
        M.build_trainer(cfg.trainer, out, False, "dry_run")
    except Exception as err:  # e.g. a multi-GPU strategy on a CPU machine
        trainer_ok = f"{type(err).__name__}: {err}"
    summary = {"dry_run": True, **data_summary(data), "levels": [lv.n_clusters for lv in ccfg.levels],
               "target_size": int(cfg.subset_size), "backbone": dcfg.backbone, "in_chans": dcfg.in_chans,
               "feature_shapes": [list(m.shape[1:]) for m in maps],
               "params_millions": sum(p.numel() for p in module.student_backbone.parameters()) / 1e6,
               "head_params": sum(p.numel() for p in head.parameters()), "trainer": trainer_ok,
               "devices": int(cfg.trainer.devices), "num_nodes": int(cfg.trainer.num_nodes)}
    atomic_save_json(out / "dry_run.json", summary)
    log.info("dry run: %s", summary)
    return summary
