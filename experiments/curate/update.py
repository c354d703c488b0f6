"""``curation.update_from=PREVIOUS_RUN``: add the items a previous run has not seen to its curated pool, without
clustering again (:mod:`sslcurate.incremental`).

Which items are new: for items (images, text, tiles), the listed items whose id (path relative to ``data.path``,
record id, shard and key, scene and window) the previous run did not list; ``data.path`` is the grown collection,
and items of the previous pool no longer listed leave the pool (counted as ``removed``). For data=embeddings, the
rows past the previous input's row count (the file or shard folder may only grow; a sample of the previous pool's
rows is checked to be unchanged). Items the previous run listed and dropped (near-duplicates, unreadable) are not
new. The previous run's near-duplicate threshold, hierarchy, metric and embedder are kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.curate.pool import PoolRecord
from sslcurate import CurationInputError
from sslcurate.incremental import ConcatSource, assign_new_rows, dedup_new_rows, drift, extend_tree, subtree
from sslcurate.sources import SubsetSource

log = logging.getLogger(__name__)
CHECK_ROWS = 64  # previous pool rows compared with the grown embeddings file


def check_compatible(meta: dict, kind: str, run_dir: Path, base_dir: str) -> None:
    """One-line errors for an update the previous run cannot take (before any work)."""
    if Path(str(base_dir)).expanduser().resolve() == Path(run_dir).resolve():
        raise CurationInputError("curation.update_from must be another run directory than this run's "
                                 "(an update writes a new pool record)")
    if meta["kind"] != kind:
        raise CurationInputError(f"curation.update_from holds a data={meta['kind']} pool; this run reads data={kind}")


def check_embedder(meta: dict, embedder_info: dict) -> None:
    if meta["embedder"] != embedder_info:
        raise CurationInputError(f"the previous run embedded with {meta['embedder'].get('name')} "
                                 f"({meta['embedder']}), this run with {embedder_info.get('name')}: an update "
                                 "must use the same embedder")


def split_items(base: PoolRecord, base_dir: str, items: list, kind: str, reader) -> tuple[np.ndarray, np.ndarray]:
    """``(base_item, new)``: the current item index of each previous pool row (-1: no longer listed) and the
    sorted indices of the items the previous run did not see."""
    if kind == "embeddings":
        seen = int(base.meta["listed"])
        if len(items) < seen:
            raise CurationInputError(f"data.path has {len(items)} rows but the previous run curated {seen}: an "
                                     "embeddings input may only grow (new rows appended)")
        pos = np.unique(np.linspace(0, base.input_rows.size - 1, CHECK_ROWS).astype(np.int64))
        if not np.array_equal(reader.source.take(base.input_rows[pos]), base.source.take(pos)):
            raise CurationInputError("data.path's first rows differ from the previous run's input: an update "
                                     "reads the same embeddings file with rows appended")
        return base.input_rows.copy(), np.arange(seen, len(items))
    listed = json.loads((Path(str(base_dir)).expanduser() / "items.json").read_text())["ids"]
    where = {it.id: i for i, it in enumerate(items)}
    base_item = np.array([where.get(i, -1) for i in base.ids], dtype=np.int64)
    seen = set(listed)
    new = np.array([i for i, it in enumerate(items) if it.id not in seen], dtype=np.int64)
    return base_item, new


@dataclass
class Updated:
    """The updated pool: ``tree`` and ``source`` (one row per point), ``item_rows`` (current item index of each
    pool row), ``parts`` for the next pool record, and the report's ``update`` section."""

    tree: object
    source: object
    item_rows: np.ndarray
    parts: list
    report: dict


def update_pool(base: PoolRecord, base_item: np.ndarray, new_source, new_store: str | None,
                new_store_rows: np.ndarray, new_item: np.ndarray, *, drift_threshold: float,
                chunk_rows: int) -> Updated:
    """The previous pool minus its items no longer listed, plus the new rows that are not near-duplicates of it
    or of each other, each placed under its nearest level-1 centroid.

    new_source: embeddings of the new items (None: none); new_store/new_store_rows: where they are stored (the
    store path and each new row's row in it, for the pool record); new_item: current item index of each."""
    meta = base.meta
    present = np.flatnonzero(base_item >= 0)
    kept_pool = SubsetSource(base.source, present) if present.size < base.tree.n_points else base.source
    m = 0 if new_source is None else len(new_source)
    threshold = meta["dedup"]["threshold"]
    keep = dedup_new_rows(new_source, kept_pool, threshold) if m else np.zeros(0, dtype=bool)
    kept_new = np.flatnonzero(keep)
    new_kept = SubsetSource(new_source, kept_new) if m else None
    if kept_new.size:
        assignments, distances = assign_new_rows(new_kept, base.tree.levels[0].centroids, metric=meta["metric"],
                                                 chunk_rows=chunk_rows)
    else:
        assignments, distances = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    drift_report = drift(distances, meta["drift"]["reference_distance"], threshold=drift_threshold,
                         before=meta["drift"]["since_clustering"])
    tree = extend_tree(subtree(base.tree, present), assignments, distances)
    source = ConcatSource([kept_pool, new_kept]) if kept_new.size else kept_pool
    starts = np.cumsum([0] + [len(rows) for _, rows in base.parts])
    parts = [(store, rows[base_item[lo:lo + len(rows)] >= 0]) for (store, rows), lo in zip(base.parts, starts)]
    if kept_new.size:
        parts.append((new_store, new_store_rows[kept_new]))
    item_rows = np.concatenate([base_item[present], new_item[kept_new]])
    report = {"from": meta.get("run_dir"), "previous_pool": int(base.tree.n_points),
              "removed": int(base.tree.n_points - present.size), "new_items_embedded": int(m),
              "new_near_duplicates": int(m - kept_new.size), "new_added": int(kept_new.size),
              "pool": int(tree.n_points), "dedup_threshold": threshold, "drift": drift_report}
    if drift_report["recommend_reclustering"]:
        log.warning("drift: %.1f%% of the %d items added since the last full clustering lie farther from every "
                    "level-1 centroid than %.0f%% of the pool it was fit on (threshold %.1f%%): a full "
                    "re-clustering is recommended (rerun without curation.update_from)",
                    100 * drift_report["since_clustering"]["share"], drift_report["since_clustering"]["added"],
                    100 * drift_report["reference_quantile"], 100 * drift_threshold)
    log.info("update: %d previous pool items (%d removed), %d new embedded, %d near-duplicates, %d added; "
             "drift %.1f%% beyond the reference", base.tree.n_points, report["removed"], m,
             report["new_near_duplicates"], kept_new.size, 100 * drift_report["share"])
    return Updated(tree, source, item_rows, parts, report)
