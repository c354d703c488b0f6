"""``experiment=curate``: raw items (or embeddings) in, a curated manifest and a report a person can look at out.

    python run.py experiment=curate data=image_folder data.path=DIR curation.target_size=N
    python run.py experiment=curate data=text data.path=DIR_OR_GLOB data.text_field=text curation.target_size=N
    python run.py experiment=curate data=embeddings data.path=emb.npy curation.target_size=N

Stages (:mod:`experiments.curate.stages`): read -> embed -> near-duplicate removal (on by default) -> hierarchy
sized from the deduplicated pool (unless ``curation.levels`` is given) -> balanced sampling. Writes into the run
directory: ``manifest.parquet`` (one row per selected item), ``indices.npy`` (rows of the embeddings),
``report.json``, ``report.html``, ``cluster_sizes.png``, ``metrics.json``, and the stage caches (``embeddings/``,
``dedup/``, ``clustering/``), which a rerun in the same directory reuses.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.common import Tracker, curation_config, metrics_doc, run_dir, study_levels, write_metrics
from experiments.curate import stages
from experiments.curate.report_html import ITEMS_PER_CLUSTER, MAX_CLUSTERS, write_report_html
from experiments.plots import plot_cluster_sizes
from sslcurate import CurationInputError, curate, distributed
from sslcurate.artifacts import atomic_save_json
from sslcurate.metrics import concept_stats
from sslcurate.sources import load_labels

log = logging.getLogger(__name__)
MODALITY = {"image_folder": "image", "webdataset": "image", "text": "text", "geotiff": "tile"}


def _reader_options(data: DictConfig) -> dict:
    """The data group's settings the reader of its kind takes (every key of the group is used by one kind)."""
    opts = OmegaConf.to_container(data, resolve=True)
    for key in ("kind", "path", "strict", "num_workers", "shard_items"):
        opts.pop(key, None)
    return opts


def _labels_as_ints(labels: list) -> tuple[np.ndarray, list[str]] | None:
    """String labels -> (n,) int64 codes (-1 for unlabelled) and the names; None when no item has one."""
    names = sorted({str(lb) for lb in labels if lb is not None})
    if not names:
        return None
    code = {name: i for i, name in enumerate(names)}
    return np.array([code[str(lb)] if lb is not None else -1 for lb in labels], dtype=np.int64), names


def _random_baseline(labels: np.ndarray, size: int, seed: int, n_concepts: int) -> dict:
    """Label balance of a uniform random subset of the same size: the bar a curated subset has to clear."""
    pick = np.random.default_rng([seed, 7]).choice(labels.size, size=min(size, labels.size), replace=False)
    return concept_stats(labels[pick], n_concepts, pool_labels=labels)


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    ccfg = curation_config(cfg.curation)
    data = cfg.data
    kind = "embeddings" if ccfg.embeddings else data.kind
    path = ccfg.embeddings or data.path
    if not path:
        raise CurationInputError("no input: pass data=image_folder|webdataset|text|geotiff|embeddings data.path=PATH "
                                 "(or curation.embeddings=PATH)")
    from experiments.curate.readers import make_reader

    strict = bool(data.get("strict", False))
    reader = make_reader(kind, str(Path(str(path)).expanduser()),
                         **({} if ccfg.embeddings else _reader_options(data)), strict=strict)
    clock = stages.StageClock()
    items, listing = stages.read_stage(reader, out)
    clock.lap("read")
    skipped = [{"item": i, "reason": r} for i, r in getattr(reader, "skipped", [])]
    embedder_info = {"name": "given embeddings"}
    if kind == "embeddings":
        source, rows = reader.source, np.arange(len(items))
        throughput = {"seconds": 0.0, "items_per_second": 0.0}
    else:
        from experiments.embedders import create_embedder

        embedder = create_embedder(cfg.embedder, MODALITY[kind])
        emb = stages.embed_stage(reader, items, listing, embedder, out, shard_items=int(data.shard_items),
                                 num_workers=int(data.num_workers), strict=strict, progress=cfg.progress)
        source, rows, skipped = emb.source, emb.rows, skipped + emb.skipped
        embedder_info = {"name": embedder.name, **embedder.key}
        throughput = {"seconds": round(emb.seconds, 2), "items_per_second": round(emb.items_per_second, 2)}
    clock.lap("embed")
    log.info("%d items listed, %d embedded, %d skipped", len(items), len(rows), len(skipped))

    d = ccfg.dedup
    threshold = d.threshold
    if threshold is None and kind != "embeddings":
        threshold = cfg.embedder.get("dedup_threshold")
        if threshold == "auto":  # embedder=auto: the default of the model it picks for this modality
            threshold = cfg.embedder.get("dedup_threshold_text" if MODALITY[kind] == "text" else "dedup_threshold_image")
    kept, dedup_report = stages.dedup_stage(source, threshold, d.n_clusters, ccfg.seed, out, cfg.progress)
    clock.lap("dedup")
    pool = stages.subset_source(source, kept)
    levels, sized = study_levels(ccfg, len(pool))
    log.info("levels (%s): %s", "sized from the pool" if sized else "given",
             [(lv.n_clusters, lv.resampling_steps, lv.sample_size) for lv in levels])
    # Deduplicated above (with examples for the report), so the core gets the kept rows and dedup off.
    core = dataclasses.replace(ccfg, levels=levels, auto_levels=False, dedup=dataclasses.replace(d, threshold=None))

    label_names = None
    if ccfg.labels:
        labels_all = load_labels(ccfg.labels, len(items))
    elif kind != "embeddings":
        labels_all, label_names = _labels_as_ints([it.label for it in items]) or (None, None)
    else:
        labels_all = None
    labels = labels_all[rows[kept]] if labels_all is not None else None
    tracker = Tracker(cfg, out)
    result = curate(pool, core, out_dir=out, labels=labels, progress=cfg.progress)
    clock.lap("curate")
    if not distributed.is_main_process():
        return {}

    report = dict(result.report)
    report.update(data={"kind": kind, "path": str(path)}, items={"listed": len(items), "embedded": int(rows.size)},
                  skipped=skipped, embedder=embedder_info, embedding=throughput, dedup=dedup_report,
                  levels_used=[dataclasses.asdict(lv) for lv in levels], levels_sized_from_pool=sized)
    if labels is not None:
        n_concepts = int(labels_all.max()) + 1 if labels_all.size else 0
        report["concepts"]["random"] = _random_baseline(labels, len(result.indices), ccfg.seed, n_concepts)
        if label_names:
            report["concepts"]["names"] = label_names
    for ex in dedup_report["examples"]:
        ex["dropped_item"], ex["kept_item"] = items[rows[ex["dropped"]]].id, items[rows[ex["kept"]]].id
    stages.write_manifest(stages.manifest_table(result, kept, rows, items), out / "manifest.parquet")
    atomic_save_json(out / "report.json", report)
    fig = plot_cluster_sizes(result.tree, result.indices, out / "cluster_sizes.png")
    _write_html(out, report, fig, result, kept, rows, items, reader, kind)
    clock.lap("outputs")
    report["stage_seconds"] = clock.laps
    atomic_save_json(out / "report.json", report)  # again, now with the outputs' own time

    top = len(result.tree.levels)
    results = {v: {f"level{lv}_{m}": [stats[v][m]] for lv, stats in report["levels"].items()
                   for m in ("normalized_entropy", "gini", "max_over_min_nonempty")} for v in ("pool", "subset")}
    if labels is not None:
        results["random"] = {}
        for v in ("pool", "subset", "random"):
            results[v]["label_normalized_entropy"] = [report["concepts"][v]["normalized_entropy"]]
            results[v]["label_coverage"] = [report["concepts"][v]["coverage"]]
    doc = metrics_doc("curate", [ccfg.seed], f"level{top}_normalized_entropy", True, results,
                      primary_variant="subset", pool_size=len(items), subset_size=int(result.indices.size))
    write_metrics(out, doc)
    tracker.log_metrics_doc(doc)
    tracker.log_image("cluster_sizes", fig)
    tracker.finish()
    log.info("selected %d of %d items -> %s", result.indices.size, len(items), out / "manifest.parquet")
    return doc


def _write_html(out: Path, report: dict, fig: Path, result, kept, rows, items, reader, kind: str) -> None:
    """The report page: a grid of selected items per top-level cluster (largest selections first) and the
    near-duplicate examples, decoded again from the items (embeddings inputs show row ids)."""
    from experiments.embedders import tile_to_rgb

    def value(row: int):
        if kind == "embeddings":
            return f"row {row}"
        try:
            v = reader.load(int(rows[row]))
        except Exception:  # shown as "unreadable"; the page must not fail on one item
            return None
        return tile_to_rgb(v, report["embedder"].get("tile_bands")) if kind == "geotiff" else v

    tree = result.tree
    top = tree.point_labels(len(tree.levels))
    sel = np.unique(result.indices)
    counts = np.bincount(top[sel], minlength=tree.levels[-1].n_clusters)
    pool_counts = np.bincount(top, minlength=tree.levels[-1].n_clusters)
    clusters = []
    for c in np.argsort(-counts, kind="stable")[:MAX_CLUSTERS]:
        members = sel[top[sel] == c][:ITEMS_PER_CLUSTER]
        clusters.append({"id": int(c), "pool_size": int(pool_counts[c]), "selected": int(counts[c]),
                         "items": [(value(kept[m]), items[rows[kept[m]]].id) for m in members]})
    pairs = [{"dropped": (value(e["dropped"]), e["dropped_item"]), "kept": (value(e["kept"]), e["kept_item"]),
              "cosine": e["cosine"]} for e in report["dedup"]["examples"]]
    write_report_html(out / "report.html", report, fig, clusters, pairs)
