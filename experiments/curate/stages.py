"""The curation product's stages, each cached under the run directory and keyed by its inputs, so a killed run
resumes and a rerun with new sampling settings costs no reading or embedding:

1. **read**: list the items (``items.json``: ids, labels), decode them in DataLoader workers;
2. **embed**: batched, written in shards of ``shard_items`` items (``embeddings/``); a killed run restarts at the
   first unfinished shard; items that cannot be read are skipped and listed per shard (``data.strict``: the first
   one is a one-line error);
   Under torchrun each process embeds every world-th shard, then all read all of them;
3. **dedup**: greedy near-duplicate removal at a cosine threshold (:func:`sslcurate.deduplicate`), with a few
   dropped/kept example pairs for the report (``dedup/``);
4. **levels**: sized from the deduplicated pool unless given (:func:`experiments.kit.levels.study_levels`);
5. **curate**: the core (:func:`sslcurate.curate`), then ``manifest.parquet`` (one row per selected item).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.kit.cache import cache_path
from sslcurate import CurationInputError, deduplicate
from sslcurate import distributed as dist
from sslcurate.io import atomic_save_json, atomic_save_npy, atomic_write_bytes, config_hash
from sslcurate.progress import progress_bar
from sslcurate.sources import SubsetSource, as_source

log = logging.getLogger(__name__)
DEDUP_EXAMPLES = 12  # dropped/kept pairs shown in the report


class StageClock:
    """Wall seconds per stage (``laps``), in the order the stages ran; a cached stage shows its reuse time."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 3)
        self._last = now


# ------------------------------------------------------------------------------------------------ read, embed


def read_stage(reader, out: Path) -> tuple[list, dict]:
    """The reader's items, listed once and recorded in ``out/items.json`` (ids and labels, in pool order)."""
    items = reader.list_items()
    if not items:
        raise CurationInputError(f"no items found in {reader.kind} input")
    if reader.kind == "embeddings":  # rows of a matrix (maybe 10^8 of them): nothing worth listing
        return items, {"kind": reader.kind, "n": len(items), "fingerprint": reader.source.fingerprint()}
    atomic_save_json(out / "items.json", {"kind": reader.kind, "ids": [it.id for it in items],
                                          "labels": [it.label for it in items]})
    listing = {"kind": reader.kind, "n": len(items),
               "ids": config_hash([it.id for it in items])}  # the embedding cache key: what was listed
    return items, listing


@dataclass
class Embedded:
    """The embedding stage's result: ``source`` (rows of embeddings, stored in the ``vectors`` folder), ``rows``
    ((m,) int64 item index of each embedding row), the skipped items ``[{item, reason}]`` and the throughput."""

    source: object
    vectors: Path
    rows: np.ndarray
    skipped: list
    seconds: float
    items_per_second: float


def _collate(batch):
    from experiments.curate.readers import collate_items

    return collate_items(batch)


def embed_stage(reader, items: list, listing: dict, embedder, out: Path, *, shard_items: int, num_workers: int,
                strict: bool, progress: bool, select: np.ndarray | None = None) -> Embedded:
    """Embeddings of every readable item, in shards under ``out/embeddings/<key>/`` (key: the listing and the
    embedder), reused by a rerun; one shard's vectors, item rows and skipped list are written together, the
    ``done`` marker last. select: embed only these item indices (an update's new items; the listing must then
    name them, so the cache key does)."""
    from experiments.curate.readers import ItemDataset

    select = np.arange(len(items)) if select is None else np.asarray(select, dtype=np.int64)
    key = {"listing": listing, "embedder": embedder.key, "shard_items": shard_items}
    folder = cache_path(out, "embeddings", key, suffix="")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_json(folder / "key.json", key)
    n = select.size
    n_shards = -(-n // shard_items)
    dataset = ItemDataset(reader, embedder.prepare, strict=strict)
    start = time.perf_counter()
    embedded_now = 0
    bar = progress_bar(total=n, desc="embed", enabled=progress, unit="item")
    rank, world = dist.get_rank(), dist.get_world_size()
    for s in range(n_shards):
        done = folder / f"done_{s:05d}.json"
        lo, hi = s * shard_items, min(n, (s + 1) * shard_items)
        if done.exists() or s % world != rank:  # several processes: shard s is rank (s mod world)'s
            bar.update(hi - lo)
            continue
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, select[lo:hi].tolist()),
                                             batch_size=embedder.batch_size, num_workers=num_workers,
                                             collate_fn=_collate)
        vectors, rows, skipped = [], [], []
        for idx, values, bad in loader:  # idx and bad carry item indices (the dataset's, not the Subset's)
            if bad:
                if strict:
                    raise dataset.error(*bad[0])
                skipped += [{"item": items[i].id, "reason": reason} for i, reason in bad]
            idx = idx.tolist()
            if idx:
                v = embedder.embed(values)
                # An all-zero or non-finite feature row has no direction: nothing to compare or cluster it by.
                ok = np.isfinite(v).all(1) & (np.abs(v).sum(1) > 0)
                if not ok.all():
                    bad_rows = [i for i, good in zip(idx, ok) if not good]
                    if strict:
                        raise dataset.error(bad_rows[0], "the embedder returned an all-zero or non-finite vector")
                    skipped += [{"item": items[i].id, "reason": "all-zero or non-finite embedding (blank item?)"}
                                for i in bad_rows]
                vectors.append(v[ok])
                rows.extend(i for i, good in zip(idx, ok) if good)
            bar.update(len(idx) + len(bad))
        embedded_now += len(rows)
        if rows:  # shards with rows only: the vectors folder is read as one sharded source
            atomic_save_npy(folder / "vectors" / f"shard_{s:05d}.npy", np.concatenate(vectors).astype(np.float32))
        atomic_save_npy(folder / f"rows_{s:05d}.npy", np.asarray(rows, dtype=np.int64))
        atomic_save_json(done, {"items": hi - lo, "embedded": len(rows), "skipped": skipped})
    bar.close()
    if world > 1:  # every rank's shards are on disk before any rank reads them all (a barrier)
        dist.all_reduce_sum(torch.zeros(1))
    seconds = time.perf_counter() - start
    rows, skipped = [], []
    for s in range(n_shards):
        skipped += json.loads((folder / f"done_{s:05d}.json").read_text())["skipped"]
        rows.append(np.load(folder / f"rows_{s:05d}.npy"))
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if rows.size == 0 and n:
        raise CurationInputError(f"none of the {n} items could be read; first reasons: "
                                 f"{[s['reason'] for s in skipped[:3]]}")
    rate = embedded_now / seconds if embedded_now else 0.0
    if embedded_now:
        log.info("embedded %d items in %.1f s (%.1f items/s); %d skipped so far", embedded_now, seconds, rate,
                 len(skipped))
    return Embedded(as_source(folder / "vectors") if rows.size else None, folder / "vectors", rows, skipped,
                    seconds, rate)


# ---------------------------------------------------------------------------------------------------- dedup


def dedup_stage(source, threshold: float | None, n_clusters: int | None, seed: int, out: Path,
                progress: bool) -> tuple[np.ndarray, dict]:
    """Sorted rows kept after near-duplicate removal at cosine ``threshold`` (None: all rows), and the report's
    dedup section with example pairs (a dropped row and its most similar kept row). Cached in ``out/dedup/``."""
    n = len(source)
    if threshold is None:
        return np.arange(n), {"threshold": None, "input_rows": n, "kept_rows": n, "dropped_rows": 0, "examples": []}
    folder = cache_path(out, "dedup", {"threshold": threshold, "n_clusters": n_clusters, "seed": seed,
                                       "input": source.fingerprint(), "shape": list(source.shape)}, suffix="")
    if (folder / "report.json").exists():
        log.info("dedup: reusing %s", folder)
        return np.load(folder / "kept.npy"), json.loads((folder / "report.json").read_text())
    keep = deduplicate(source, threshold, n_clusters=n_clusters, seed=seed, progress=progress)
    kept = np.flatnonzero(keep)
    report = {"threshold": threshold, "n_clusters": n_clusters, "input_rows": n, "kept_rows": int(kept.size),
              "dropped_rows": int(n - kept.size), "examples": _dedup_examples(source, keep, seed)}
    log.info("dedup at cosine %.3g: kept %d of %d (%d near-duplicates dropped)", threshold, kept.size, n,
             n - kept.size)
    atomic_save_npy(folder / "kept.npy", kept)
    atomic_save_json(folder / "report.json", report)
    return kept, report


def _dedup_examples(source, keep: np.ndarray, seed: int) -> list[dict]:
    """Up to DEDUP_EXAMPLES dropped rows (drawn with ``seed``), each with its most similar kept row and the
    cosine similarity between them (embedding rows; the caller maps them to items)."""
    dropped = np.flatnonzero(~keep)
    if dropped.size == 0:
        return []
    rng = np.random.default_rng([seed, 17])
    picks = np.sort(rng.choice(dropped, size=min(DEDUP_EXAMPLES, dropped.size), replace=False))
    q = torch.nn.functional.normalize(torch.from_numpy(source.take(picks)).float(), dim=1)
    kept_rows = np.flatnonzero(keep)
    best = torch.full((picks.size,), -2.0)
    arg = torch.zeros(picks.size, dtype=torch.int64)
    for s in range(0, kept_rows.size, 65_536):  # kept rows in blocks: one (examples, block) product each
        block = kept_rows[s:s + 65_536]
        k = torch.nn.functional.normalize(torch.from_numpy(source.take(block)).float(), dim=1)
        sim = q @ k.T
        v, j = sim.max(1)
        better = v > best
        best = torch.where(better, v, best)
        arg = torch.where(better, torch.from_numpy(block)[j], arg)
    return [{"dropped": int(d), "kept": int(k), "cosine": round(float(c), 4)}
            for d, k, c in zip(picks, arg.tolist(), best.tolist())]


# -------------------------------------------------------------------------------------------------- manifest


def manifest_table(result, item_rows: np.ndarray, items: list, retrieved: np.ndarray | None = None):
    """One row per selected item (a pyarrow Table): ``item``, ``label``, ``level{j}_cluster`` at every level,
    ``distance`` (squared L2 to its level-1 centroid), ``copies`` (> 1 only with sampling.multiplier > 1), and
    with retrieval ``retrieved`` (taken near a seed item, not by balanced sampling).

    result.indices are rows of the curated pool; ``item_rows``: the listed item of each pool row."""
    import pyarrow as pa

    sel, copies = np.unique(result.indices, return_counts=True)
    tree = result.tree
    cols = {"item": [items[i].id for i in item_rows[sel]],
            "label": [items[i].label for i in item_rows[sel]]}
    cluster = tree.levels[0].assignments[sel]
    cols["level1_cluster"] = cluster.astype(np.int64)
    for j in range(1, len(tree.levels)):
        cluster = tree.levels[j].assignments[cluster]
        cols[f"level{j + 1}_cluster"] = cluster.astype(np.int64)
    cols["distance"] = tree.levels[0].distances[sel].astype(np.float32)
    cols["copies"] = copies.astype(np.int64)
    if retrieved is not None:
        cols["retrieved"] = np.isin(sel, retrieved)
    return pa.table(cols)


def write_manifest(table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def subset_source(source, kept: np.ndarray):
    return source if kept.size == len(source) else SubsetSource(source, kept)
