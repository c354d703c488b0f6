"""``experiment=web_images``: the paper's image study (its Study 2) end to end at CPU scale.

Stages: pool -> embed -> near-duplicate removal -> curate -> pretrain (DINO, same budget per variant) -> evaluate
frozen features -> report. Variants (same number of images, same training steps x batch):

- ``raw``: a uniform random subset of the pool as collected;
- ``curated``: hierarchical k-means with resampling + balanced hierarchical sampling (the core), on the pool
  without its near-duplicates, levels sized from it (:mod:`.curation`);
- ``flat``: one-level k-means + balanced sampling on the same deduplicated pool (shows the value of the hierarchy);
- ``manual``: the "ImageNet" analog: class-balanced over a fixed set of concepts, clean;
- ``random_init``: the untrained network (floor of the evaluation; no data).

Each (variant, seed) result is cached under ``paths.cache_dir/web_images_results/`` keyed by everything that
decides it, so a killed run resumes and separate seed runs can be merged by one multi-seed call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path
from experiments.kit.config import curation_config
from experiments.kit.loop import Study, run_study, seed_seconds, stage
from experiments.kit.metrics import metrics_doc
from experiments.kit.record import run_command
from sslcurate import CurationInputError, curate
from sslcurate.io import atomic_save_json, config_hash
from sslcurate.config import DedupConfig
from sslcurate.metrics import concept_stats, normalized_entropy
from sslcurate.sources import SubsetSource, as_source

from .curation import CURATED, deduplicated_rows, pool_problems
from .data import StudyData, build_data

log = logging.getLogger(__name__)
TRAINED_VARIANTS = ("raw", "curated", "flat", "manual")


def run(cfg: DictConfig) -> dict:
    return run_study(cfg, WebImagesStudy)


class WebImagesStudy(Study):
    """The hooks of :func:`experiments.kit.loop.run_study` for this study."""

    def load(self) -> None:
        self.data = data = build_data(self.cfg, self.cache, progress=self.cfg.progress)
        log.info("pool: %d images of %dx%d, %d concepts", len(data.images), data.image_size, data.image_size,
                 data.n_concepts)

    def dry_run(self) -> dict:
        return dry_run(self.cfg, self.data, self.out)

    def prepare(self, timings: dict) -> None:
        cfg, data = self.cfg, self.data
        # before any work: the given levels, subset and batch must fit the whole pool (the deduplicated one is smaller)
        _, problems = pool_problems(cfg, len(data.images), len(data.images), len(data.manual.labels), "the pool")
        if problems:
            raise CurationInputError("; ".join(problems))
        from .embed_stage import embed_pool
        with stage(timings, "embed_s"):
            self.emb, self.emb_path = embed_pool(cfg, data, self.cache, self.out)
        with stage(timings, "dedup_s"):
            self.kept, self.dedup = deduplicated_rows(cfg, self.emb, self.emb_path, self.cache)
        self.levels, problems = pool_problems(cfg, len(data.images), self.kept.size, len(data.manual.labels),
                                              "the deduplicated pool")
        if problems:
            raise CurationInputError("; ".join(problems))
        for variant, (lv, sized) in self.levels.items():
            log.info("%s levels (%s): %s", variant, "sized from the deduplicated pool" if sized else "given",
                     [(x.n_clusters, x.resampling_steps, x.sample_size) for x in lv])
        self.selections: dict = {}

    def select(self, seed: int) -> dict:
        sel, trees = select_variants(self.cfg, self.data, self.emb, seed, self.out / f"seed{seed}", self.kept,
                                     {v: lv for v, (lv, _) in self.levels.items()})
        self.selections[seed] = (sel, trees)
        return sel

    def result(self, selection: dict, variant: str, seed: int) -> dict | None:
        cfg = self.cfg
        res = variant_result(cfg, self.data, selection, variant, seed, self.cache, self.out,
                             only_cached=cfg.skip_uncached)
        if res is None:
            log.warning("%s seed %d: not in the cache, skipped (skip_uncached=true)", variant, seed)
        return res

    def nothing_to_report(self) -> str:  # skip_uncached=true and an empty cache, or no variants
        if not self.missing:
            return super().nothing_to_report()
        return (f"skip_uncached=true: no result of this configuration is in the cache "
                f"({self.cache / 'web_images_results'}); missing: {', '.join(self.missing)}. Run without "
                "skip_uncached to train them")

    def document(self, results: dict, done: dict, timings: dict) -> dict:
        cfg, data, seeds = self.cfg, self.data, [int(s) for s in self.cfg.seeds]
        levels = self.levels
        return metrics_doc(cfg.experiment_name, seeds, "knn_top1", True, results, primary_variant="curated",
                           pool_size=int(len(data.images)), subset_size=int(cfg.subset_size),
                           n_concepts=data.n_concepts, tail_concepts=data.tail_concepts.tolist(),
                           backbone=cfg.model.backbone, image_size=data.image_size,
                           train_steps=int(cfg.trainer.max_steps), batch_size=int(cfg.trainer.batch_size),
                           embedder=cfg.embedder.name, embeddings=str(self.emb_path), timings=timings,
                           timing_note=cfg.get("timing_note"), design_note=cfg.get("design_note"),
                           command=cfg.get("command") or run_command(),
                           seed_seconds=seed_seconds(timings, seeds), seeds_per_variant=done,
                           label_balanced_concept_entropy=label_balanced_entropy(data, int(cfg.subset_size)),
                           data_kind=data.meta.get("kind", "generated"), dedup=self.dedup,
                           levels={v: [dataclasses.asdict(x) for x in lv] for v, (lv, _) in levels.items()},
                           levels_sized_from_pool={v: sized for v, (_, sized) in levels.items()},
                           training_set_sizes=training_set_sizes(cfg, data), missing_results=self.missing,
                           **eval_classes(data))

    def figures(self, doc: dict) -> list[Path]:
        from .figures import make_figures
        sel, trees = self.selections[int(self.cfg.seeds[0])]
        return make_figures(doc, self.data, sel, trees, self.out)

    def write_readme(self, folder: Path) -> Path:
        from .report import write_readme
        return write_readme(folder)


def select_variants(cfg: DictConfig, data: StudyData, emb: np.ndarray, seed: int, out: Path,
                    kept: np.ndarray | None = None, levels: dict | None = None):
    """Pool indices of raw / curated / flat for one seed (labels never read), and per curated variant its
    clustering tree with the selection as rows of that tree.

    raw draws from the whole pool; curated and flat select from its rows ``kept`` (sorted; None: all rows), the
    pool without near-duplicates, with ``levels[variant]`` (None: the configured levels)."""
    n = int(cfg.subset_size)
    rng = np.random.default_rng([seed, 7])
    sel = {"raw": np.sort(rng.choice(len(data.images), size=n, replace=False))}
    trees = {}
    pool = emb if kept is None or kept.size == len(emb) else SubsetSource(as_source(emb), kept)
    for variant, node in CURATED.items():
        if variant not in cfg.variants:
            continue
        ccfg = curation_config(cfg[node])
        # deduplicated above, once for every variant: the core gets the kept rows and its dedup off
        ccfg = dataclasses.replace(ccfg, seed=seed, target_size=n, dedup=DedupConfig(),
                                   levels=(levels or {}).get(variant, ccfg.levels))
        # labels=None: the core never sees concepts (and its report rejects the -1 of junk)
        res = curate(pool, ccfg, out_dir=out / variant, labels=None, progress=cfg.progress)
        sel[variant] = kept[res.indices] if pool is not emb else res.indices
        trees[variant] = (res.tree, res.indices)
    return sel, trees


def training_set_sizes(cfg: DictConfig, data: StudyData) -> dict:
    """Images each trained variant sees; ``manual`` can hold fewer than subset_size when its classes are small,
    which breaks the equal budget the comparison rests on (recorded, and said in the README)."""
    n = int(cfg.subset_size)
    return {v: (len(data.manual.labels) if v == "manual" else n) for v in cfg.variants if v in TRAINED_VARIANTS}


def eval_classes(data: StudyData) -> dict:
    """Classes in the evaluation and those left out of it (too small for the split: they stay in the pool)."""
    evaluated = data.meta.get("eval_concepts", list(range(data.n_concepts)))
    out = set(range(data.n_concepts)) - set(evaluated)
    return {"eval_classes": len(evaluated), "eval_excluded_classes": sorted(data.concept_names[k] for k in out)}


def training_set(data: StudyData, sel: dict, variant: str):
    """(images, concept labels for measurement, kinds, duplicate groups) of a variant's training set."""
    if variant == "manual":
        m = data.manual
        return m.images, m.labels, np.zeros(len(m.labels), np.uint8), np.full(len(m.labels), -1)
    idx = sel[variant]
    return data.images[idx], data.labels[idx], data.kinds[idx], data.dup_group[idx]


def label_balanced_entropy(data: StudyData, size: int) -> float:
    """Concept entropy of the most balanced ``size``-image subset of the pool: the budget water-filled over the
    true concepts. The ceiling any curation of this pool can reach (measurement only: curation never sees labels)."""
    from sslcurate.sampling import water_fill

    counts = np.bincount(data.labels[data.labels >= 0], minlength=data.n_concepts)
    take = water_fill(counts, min(size, int(counts.sum())), np.random.default_rng(0))
    return normalized_entropy(take)


def balance_metrics(data: StudyData, labels: np.ndarray, kinds: np.ndarray, dup: np.ndarray) -> dict:
    """Concept balance of a training set: normalised concept entropy and coverage (over the pool's concepts),
    share of the tail concepts, junk and near-duplicate fractions; for a generated pool also the normalised
    entropy over its coarse groups (the level where its long tail is hierarchical)."""
    pool_labels = data.labels[data.labels >= 0]
    concept = labels[labels >= 0]
    st = concept_stats(concept, data.n_concepts, pool_labels)
    dup_ids = dup[dup >= 0]
    extra = {}
    if "concept_group" in data.meta:
        group = np.asarray(data.meta["concept_group"], np.int64)
        extra["group_entropy"] = normalized_entropy(np.bincount(group[concept], minlength=group.max() + 1))
    # label_entropy: the name every study's metrics.json gives the normalised entropy of its labels over a variant's
    # training set (here the concepts), so the real arms read alike
    return {"concept_entropy": st["normalized_entropy"], "label_entropy": st["normalized_entropy"], **extra, "concept_coverage": st["coverage"],
            "tail_share": float(np.isin(concept, data.tail_concepts).mean()) if concept.size else 0.0,
            "junk_fraction": float((kinds == 2).mean()),
            "duplicate_fraction": float((kinds == 1).mean()),
            "redundant_fraction": float((dup_ids.size - np.unique(dup_ids).size) / max(len(labels), 1))}


def variant_result(cfg: DictConfig, data: StudyData, sel: dict, variant: str, seed: int, cache: Path,
                   out: Path, only_cached: bool = False) -> dict | None:
    """Train (same budget) and evaluate one variant for one seed; cached by everything that decides it.
    With ``only_cached``, a result that is not in the cache is None instead of being computed."""
    from .train import evaluate, pretrain

    key = {"data": data.key, "variant": variant, "seed": seed,
           "model": OmegaConf.to_container(cfg.model, resolve=True),
           "trainer": {k: cfg.trainer[k] for k in ("max_steps", "batch_size", "precision")},
           "eval": OmegaConf.to_container(cfg.evaluation, resolve=True),
           "selection": config_hash(sel[variant].tolist()) if variant in sel else None}
    path = cache_path(cache, "web_images_results", key, ".json")
    if path.exists() and cfg.reuse_results:
        import json
        log.info("%s seed %d: reusing %s", variant, seed, path)
        stored = json.loads(path.read_text())
        res = stored["metrics"]
        if variant != "random_init":  # balance is cheap and exact: recompute it, so metrics added since are filled
            res.update(balance_metrics(data, *training_set(data, sel, variant)[1:]))
        return {**res, "_seconds": stored["seconds"]}
    if only_cached:
        return None
    t = time.perf_counter()
    if variant == "random_init":
        from experiments.ssl.dino import DINO
        from experiments.ssl.pretrain import dino_config
        torch.manual_seed(seed)
        module = DINO(dino_config(cfg.model, cfg.trainer, seed))
        res = {}
    else:
        images, labels, kinds, dup = training_set(data, sel, variant)
        res = balance_metrics(data, labels, kinds, dup)
        images = np.ascontiguousarray(images)
        log.info("%s seed %d: pretraining on %d images for %d steps", variant, seed, len(images),
                 cfg.trainer.max_steps)
        module = pretrain(images, cfg.model, cfg.trainer, seed, out, f"{variant}_seed{seed}", cfg.progress)
        res["train_loss_final"] = float(module.trainer.callback_metrics.get("train/dino_loss", float("nan")))
    e = cfg.evaluation
    res.update(evaluate(module, data, k=e.k, temperature=e.temperature, probe_wd=e.linear_weight_decay))
    seconds = time.perf_counter() - t
    log.info("%s seed %d: %s (%.0f s)", variant, seed,
             ", ".join(f"{k}={v:.3f}" for k, v in res.items() if "top1" in k), seconds)
    atomic_save_json(path, {"key": key, "metrics": res, "seconds": seconds})
    return {**res, "_seconds": seconds}


def dry_run(cfg: DictConfig, data: StudyData, out: Path) -> dict:
    """Build every piece of the configured run (curation config, model, trainer) and stop before the work."""
    from experiments.kit.trainer import build_trainer
    from experiments.ssl.pretrain import dino_config
    from experiments.ssl.dino import DINO

    n = len(data.images)
    # near-duplicates are not removed in a dry run (no embeddings): levels are checked on, and sized from, the
    # whole pool; the run sizes them again from the deduplicated pool
    levels, problems = pool_problems(cfg, n, n, len(data.manual.labels), "the pool")
    for variant, node in CURATED.items():
        if variant in cfg.variants and variant not in levels:  # not fitting: flagged, shown as configured
            levels[variant] = (curation_config(cfg[node]).levels, False)
    dcfg = dino_config(cfg.model, cfg.trainer, int(cfg.seed))
    module = DINO(dcfg)
    trainer_ok = True
    try:
        build_trainer(cfg.trainer, out, False, "dry_run")
    except Exception as err:  # e.g. a multi-GPU strategy on a CPU machine
        trainer_ok = f"{type(err).__name__}: {err}"
    ks = {v: [lv.n_clusters for lv in lvs] for v, (lvs, _) in levels.items()}
    summary = {"dry_run": True, "pool_size": n, "levels": ks.get("curated"), "flat_levels": ks.get("flat"),
               "levels_sized_from_pool": {v: sized for v, (_, sized) in levels.items()},
               "target_size": int(cfg.subset_size), "backbone": dcfg.backbone, "num_features": module.num_features,
               "params_millions": sum(p.numel() for p in module.student_backbone.parameters()) / 1e6,
               "embedder": cfg.embedder.name, "trainer": trainer_ok, "problems": problems}
    atomic_save_json(out / "dry_run.json", summary)
    log.info("dry run: %s", summary)
    for line in problems:
        log.warning("dry run: the run would stop here: %s", line)
    return summary
