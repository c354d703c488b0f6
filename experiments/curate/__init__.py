"""``experiment=curate``: raw items (or embeddings) in, a curated manifest and a report a person can look at out.

    python run.py experiment=curate data=image_folder data.path=DIR curation.target_size=N
    python run.py experiment=curate data=text data.path=DIR_OR_GLOB data.text_field=text curation.target_size=N
    python run.py experiment=curate data=embeddings data.path=emb.npy curation.target_size=N

Stages (:mod:`experiments.curate.stages`): read -> embed -> near-duplicate removal (on by default) -> hierarchy
sized from the deduplicated pool (unless ``curation.levels`` is given) -> balanced sampling. Writes into the run
directory: ``manifest.parquet`` (one row per selected item), ``indices.npy`` (rows of the embeddings),
``report.json``, ``report.html``, ``cluster_sizes.png``, ``metrics.json``, the stage caches (``embeddings/``,
``dedup/``, ``clustering/``), which a rerun in the same directory reuses, and ``pool/``, the record a later
``curation.update_from=THIS_DIR`` builds on (:mod:`experiments.curate.pool`).

``curation.update_from=RUN`` embeds only the items RUN did not see and adds them to its hierarchy without
re-clustering (:mod:`experiments.curate.update`); ``curation.retrieval.seed=PATH`` fills
``curation.retrieval.fraction`` of the target with the pool's nearest items of a seed set
(:mod:`experiments.curate.retrieve`). Both combine, and both check their settings before any work.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.kit.config import curation_config
from experiments.kit.levels import study_levels
from experiments.kit.metrics import metrics_doc, write_metrics
from experiments.kit.record import run_dir
from experiments.kit.tracker import Tracker
from experiments.curate import stages
from experiments.curate.report_html import ITEMS_PER_CLUSTER, MAX_CLUSTERS, write_report_html
from experiments.plots import plot_cluster_sizes
from sslcurate import CurationInputError, LevelConfig, curate, distributed, hierarchical_sampling
from sslcurate.io import atomic_save_json, atomic_save_npy, config_hash, load_npy, remove_stale_temps
from sslcurate.hierarchy import ClusterLevel, ClusterTree
from sslcurate.incremental import drift_reference
from sslcurate.knn import embedding_space_check
from sslcurate.metrics import balance_report, concept_stats
from sslcurate.pipeline import CurationResult, run_environment
from sslcurate.retrieval import mixed_selection
from sslcurate.sampling import check_target
from sslcurate.sources import SubsetSource, load_labels

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


@dataclasses.dataclass
class Pool:
    """What the sampling, the outputs and the next pool record work on, from either path (a full curation or an
    update): ``result`` (selection, tree, balance report), ``source`` (the pool's embeddings, one row per point
    of the tree), ``item_rows`` (the listed item of each pool row), ``parts`` ([(embedding store, rows)]) and
    the report sections the path adds."""

    result: object
    source: object
    item_rows: np.ndarray
    parts: list
    labels: np.ndarray | None
    sections: dict
    levels: list
    sized: bool
    dedup: dict
    drift: dict


def _whole_tree(tree: ClusterTree, out: Path) -> ClusterTree:
    """The tree with level 1 whole. A multi-process run leaves each rank its own rows of level 1 and writes the
    whole level to ``out/clustering/``; the manifest, the page and the pool record need every row."""
    first = tree.levels[0]
    if first.row_range is None:
        return tree
    folder = out / "clustering"
    whole = ClusterLevel(first.centroids, load_npy(folder / "level1_assignments.npy"),
                         load_npy(folder / "level1_distances.npy"))
    return ClusterTree(levels=[whole, *tree.levels[1:]], n_points=int(whole.assignments.size))


def _full(cfg, ccfg, out, kind, path, reader, items, listing, embedder, clock, threshold, labels_all,
          embedded) -> Pool | None:
    """Embed every item, deduplicate, size the hierarchy from the deduplicated pool, cluster and sample (each
    stage timed on ``clock``)."""
    d = ccfg.dedup
    if kind == "embeddings":
        source, rows, store = reader.source, np.arange(len(items)), Path(str(path)).expanduser()
    else:
        emb = stages.embed_stage(reader, items, listing, embedder, out, shard_items=int(cfg.data.shard_items),
                                 num_workers=int(cfg.data.num_workers), strict=bool(cfg.data.get("strict", False)),
                                 progress=cfg.progress)
        embedded(emb)
        source, rows, store = emb.source, emb.rows, emb.vectors
    clock.lap("embed")
    kept, dedup_report = stages.dedup_stage(source, threshold, d.n_clusters, ccfg.seed, out, cfg.progress)
    clock.lap("dedup")
    pool = stages.subset_source(source, kept)
    levels, sized = study_levels(ccfg, len(pool))
    log.info("levels (%s): %s", "sized from the pool" if sized else "given",
             [(lv.n_clusters, lv.resampling_steps, lv.sample_size) for lv in levels])
    # Deduplicated above (with examples for the report), so the core gets the kept rows and dedup off.
    core = dataclasses.replace(ccfg, levels=levels, auto_levels=False, dedup=dataclasses.replace(d, threshold=None))
    labels = labels_all[rows[kept]] if labels_all is not None else None
    result = curate(pool, core, out_dir=out, labels=labels, progress=cfg.progress)
    clock.lap("curate")
    if not distributed.is_main_process():
        return None
    result = CurationResult(result.indices, _whole_tree(result.tree, out), result.report)
    for ex in dedup_report["examples"]:  # embedding rows -> listed items
        ex["dropped_item"], ex["kept_item"] = items[rows[ex["dropped"]]].id, items[rows[ex["kept"]]].id
        ex["dropped_index"], ex["kept_index"] = int(rows[ex["dropped"]]), int(rows[ex["kept"]])
    reference = drift_reference(result.tree.levels[0].distances)
    return Pool(result, pool, rows[kept], [(store, kept)], labels, {}, levels, sized,
                {**dedup_report, "n_clusters": d.n_clusters},
                {"reference_distance": reference, "since_clustering": {"added": 0, "beyond": 0}})


def _update(cfg, ccfg, out, kind, path, reader, items, listing, embedder, clock, base_meta, labels_all,
            embedded) -> Pool | None:
    """Embed the items the previous run did not see, add the new ones to its hierarchy, sample again (each stage
    timed on ``clock``)."""
    from experiments.curate import pool as pool_record
    from experiments.curate import update

    base = pool_record.load(ccfg.update_from)
    log.info("update of %s: keeping its hierarchy (k = %s), metric and near-duplicate threshold (%s); "
             "curation.levels and curation.dedup given here are not used", ccfg.update_from,
             [lv["n_clusters"] for lv in base.meta["levels"]], base.meta["dedup"]["threshold"])
    base_item, new = update.split_items(base, ccfg.update_from, items, kind, reader)
    new_source, store, store_rows, new_item = None, None, np.zeros(0, dtype=np.int64), new
    if kind == "embeddings":
        if new.size:
            new_source, store, store_rows = SubsetSource(reader.source, new), Path(str(path)).expanduser(), new
    elif new.size:
        emb = stages.embed_stage(reader, items, {**listing, "new": config_hash([items[i].id for i in new])},
                                 embedder, out, shard_items=int(cfg.data.shard_items),
                                 num_workers=int(cfg.data.num_workers), strict=bool(cfg.data.get("strict", False)),
                                 progress=cfg.progress, select=new)
        embedded(emb)
        new_source, store, store_rows, new_item = emb.source, emb.vectors, np.arange(emb.rows.size), emb.rows
    clock.lap("embed new")
    if not distributed.is_main_process():  # the update is a few passes over the new items: rank 0 does it whole
        return None
    with distributed.single_process():  # rank 0 alone from here: no collective may wait for the other ranks
        upd = update.update_pool(base, base_item, new_source, store, store_rows, new_item,
                                 drift_threshold=float(ccfg.drift_threshold), chunk_rows=ccfg.kmeans.chunk_rows)
        s = ccfg.sampling
        check_target(upd.tree.n_points, ccfg.target_size, s.multiplier, s.clamp)
        indices = hierarchical_sampling(upd.tree, ccfg.target_size, strategy=s.strategy, multiplier=s.multiplier,
                                        seed=ccfg.seed, clamp=s.clamp)
    clock.lap("update")
    labels = labels_all[upd.item_rows] if labels_all is not None else None
    report = balance_report(upd.tree, indices, labels)
    report.update(config=dataclasses.asdict(ccfg), environment=run_environment())
    atomic_save_npy(out / "indices.npy", indices.astype(np.int64))
    meta = base.meta
    levels = [LevelConfig(**lv) for lv in meta["levels"]]
    drop = upd.report
    dedup_report = {"threshold": meta["dedup"]["threshold"], "n_clusters": meta["dedup"]["n_clusters"],
                    "input_rows": drop["new_items_embedded"], "kept_rows": drop["new_added"],
                    "dropped_rows": drop["new_near_duplicates"], "examples": [], "new_items_only": True}
    since = drop["drift"]["since_clustering"]
    return Pool(CurationResult(indices, upd.tree, report), upd.source, upd.item_rows, upd.parts, labels,
                {"update": drop}, levels, bool(meta["levels_sized_from_pool"]), dedup_report,
                {"reference_distance": meta["drift"]["reference_distance"],
                 "since_clustering": {"added": since["added"], "beyond": since["beyond"]}})


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    ccfg = curation_config(cfg.curation)
    data = cfg.data
    kind = "embeddings" if ccfg.embeddings else data.kind
    path = ccfg.embeddings or data.path
    if not path:
        raise CurationInputError("no input: pass data=image_folder|webdataset|text|geotiff|embeddings data.path=PATH "
                                 "(or curation.embeddings=PATH)")
    from experiments.curate import pool as pool_record
    from experiments.curate import retrieve, update
    from experiments.curate.readers import make_reader

    # Settings that cannot work fail here, before anything is read, embedded or clustered.
    seed_path = retrieve.check_settings(ccfg.retrieval)
    if not 0.0 <= float(ccfg.drift_threshold) <= 1.0:
        raise CurationInputError(f"curation.drift_threshold is a share of the new items, in [0, 1]; got "
                                 f"{ccfg.drift_threshold}")
    base_meta = None
    if ccfg.update_from:
        base_meta = pool_record.read_meta(ccfg.update_from)
        update.check_compatible(base_meta, kind, out, ccfg.update_from)
    strict = bool(data.get("strict", False))
    options = {} if ccfg.embeddings else _reader_options(data)
    reader = make_reader(kind, str(Path(str(path)).expanduser()), **options, strict=strict)
    if seed_path is not None and kind == "embeddings":  # the pool's dimension is known without reading it
        seeds = retrieve.load_seeds(seed_path, ccfg.retrieval.fraction, kind=kind, reader=reader, items=[],
                                    embedder=None, reader_options=options)
    clock = stages.StageClock()
    items, listing = stages.read_stage(reader, out)
    clock.lap("read")
    skipped = [{"item": i, "reason": r} for i, r in getattr(reader, "skipped", [])]
    embedder, embedder_info = None, {"name": "given embeddings"}
    if kind != "embeddings":
        from experiments.embedders import create_embedder

        embedder = create_embedder(cfg.embedder, MODALITY[kind])
        embedder_info = {"name": embedder.name, **embedder.key}
    if base_meta is not None:
        update.check_embedder(base_meta, embedder_info)
    if seed_path is not None and kind != "embeddings":  # embedded before the pool: a bad seed set fails first
        seeds = retrieve.load_seeds(seed_path, ccfg.retrieval.fraction, kind=kind, reader=reader, items=items,
                                    embedder=embedder, reader_options=options)
    throughput = {"seconds": 0.0, "items_per_second": 0.0}
    n_embedded = [len(items) if kind == "embeddings" else 0]

    def embedded(emb) -> None:  # the embedding stage's numbers, for the report
        nonlocal skipped
        skipped = skipped + emb.skipped
        n_embedded[0] = int(emb.rows.size)
        throughput.update(seconds=round(emb.seconds, 2), items_per_second=round(emb.items_per_second, 2))
        if seed_path is not None and emb.source is not None:  # .npy seeds for an item pool: checked against the
            # embeddings as soon as they exist, before clustering writes anything (mixed_selection checks again)
            embedding_space_check(emb.source, seeds, metric=ccfg.kmeans.metric)

    threshold = ccfg.dedup.threshold
    if threshold is None and kind != "embeddings":
        threshold = cfg.embedder.get("dedup_threshold")
        if threshold == "auto":  # embedder=auto: the default of the model it picks for this modality
            threshold = cfg.embedder.get("dedup_threshold_text" if MODALITY[kind] == "text" else "dedup_threshold_image")

    label_names = None
    if ccfg.labels:
        labels_all = load_labels(ccfg.labels, len(items))
    elif kind != "embeddings":
        labels_all, label_names = _labels_as_ints([it.label for it in items]) or (None, None)
    else:
        labels_all = None
    tracker = Tracker(cfg, out)
    args = (cfg, ccfg, out, kind, path, reader, items, listing, embedder, clock)
    if base_meta is None:
        pool = _full(*args, threshold, labels_all, embedded)
    else:
        pool = _update(*args, base_meta, labels_all, embedded)
    if pool is None:  # other ranks of a multi-process run: rank 0 samples and writes
        return {}
    log.info("%d items listed, %d embedded, %d skipped", len(items), n_embedded[0], len(skipped))
    result, labels = pool.result, pool.labels
    report = dict(result.report)
    if seed_path is not None:
        s = ccfg.sampling
        alone = result.indices
        with distributed.single_process():  # rank 0 alone: its sampling must not wait for the other ranks
            indices, retrieved, section = mixed_selection(
                result.tree, pool.source, seeds, ccfg.target_size, float(ccfg.retrieval.fraction),
                clustering_alone=alone, strategy=s.strategy, multiplier=s.multiplier, seed=ccfg.seed,
                clamp=s.clamp, metric=ccfg.kmeans.metric, chunk_rows=min(ccfg.kmeans.chunk_rows, 16_384))
        section["seed"] = str(seed_path)
        mixed = balance_report(result.tree, indices, labels)
        report.update(levels=mixed["levels"], subset_size=mixed["subset_size"],
                      unique_in_subset=mixed["unique_in_subset"], retrieval=section)
        if labels is not None:
            report["concepts"] = {**mixed["concepts"], "clustering_alone": report["concepts"]["subset"]}
        result = CurationResult(indices, result.tree, report)
        atomic_save_npy(out / "indices.npy", indices.astype(np.int64))
    else:
        retrieved = None
    report.update(pool.sections)
    report.update(data={"kind": kind, "path": str(path)}, items={"listed": len(items), "embedded": n_embedded[0]},
                  skipped=skipped, embedder=embedder_info, embedding=throughput, dedup=pool.dedup,
                  levels_used=[dataclasses.asdict(lv) for lv in pool.levels], levels_sized_from_pool=pool.sized)
    if labels is not None:
        n_concepts = int(labels_all.max()) + 1 if labels_all.size else 0
        report["concepts"]["random"] = _random_baseline(labels, len(result.indices), ccfg.seed, n_concepts)
        if label_names:
            report["concepts"]["names"] = label_names
    stages.write_manifest(stages.manifest_table(result, pool.item_rows, items, retrieved), out / "manifest.parquet")
    atomic_save_json(out / "report.json", report)
    fig = plot_cluster_sizes(result.tree, result.indices, out / "cluster_sizes.png")
    _write_html(out, report, fig, result, pool.item_rows, items, reader, kind)
    pool_record.write(out, meta={"kind": kind, "data_path": str(path), "listed": len(items), "run_dir": str(out),
                                 "embedder": embedder_info,
                                 "dedup": {"threshold": pool.dedup["threshold"], "n_clusters": pool.dedup["n_clusters"]},
                                 "metric": ccfg.kmeans.metric, "levels": report["levels_used"],
                                 "levels_sized_from_pool": pool.sized, "drift": pool.drift},
                      tree=result.tree, parts=pool.parts,
                      ids=None if kind == "embeddings" else [items[i].id for i in pool.item_rows],
                      input_rows=pool.item_rows if kind == "embeddings" else None)
    remove_stale_temps(out)  # what a killed earlier attempt left half-written (an update never calls curate)
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


def _write_html(out: Path, report: dict, fig: Path, result, item_rows: np.ndarray, items, reader, kind: str) -> None:
    """The report page: a grid of selected items per top-level cluster (largest selections first) and the
    near-duplicate examples, decoded again from the items (embeddings inputs show row ids)."""
    from experiments.embedders import tile_to_rgb

    def value(item: int):
        if kind == "embeddings":
            return items[item].id
        try:
            v = reader.load(int(item))
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
                         "items": [(value(item_rows[m]), items[item_rows[m]].id) for m in members]})
    pairs = [{"dropped": (value(e["dropped_index"]), e["dropped_item"]),
              "kept": (value(e["kept_index"]), e["kept_item"]), "cosine": e["cosine"]}
             for e in report["dedup"]["examples"]]
    write_report_html(out / "report.html", report, fig, clusters, pairs)
