"""The pool record: what a finished ``experiment=curate`` run leaves for a later ``curation.update_from=THIS_DIR``.

Written under ``<run>/pool/`` by every run (a full one or an update), ``pool.json`` last, so its presence means
the record is complete:

- ``level{i}_{centroids,assignments,distances}.npy``: the hierarchy over the deduplicated pool (level 1 holds
  one row per pool item);
- ``part{j}_rows.npy``: the pool's embeddings, as rows of the embedding stores named in ``pool.json`` ``parts``
  (a full run: one part, its embeddings; an update: the previous parts, then its new items' embeddings), so
  nothing is copied; a chain of updates reads the stores of the earlier runs, which must stay in place;
- ``ids.json`` (items) or ``input_rows.npy`` (data=embeddings): which item each pool row is;
- ``pool.json``: the settings an update must keep (data kind, embedder, near-duplicate threshold, metric) and the
  drift reference (the pool's 99th percentile of distance to its nearest level-1 centroid, from the last full
  clustering) with the rows added since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json, atomic_save_npy, load_npy
from sslcurate.hierarchy import ClusterLevel, ClusterTree
from sslcurate.incremental import ConcatSource
from sslcurate.sources import SubsetSource, as_source

FORMAT = 1


@dataclass
class PoolRecord:
    """A previous run's pool: ``meta`` (pool.json), ``tree``, ``source`` (the pool's embeddings, one row per
    point of the tree), ``parts`` ([(store path, rows)]) and the item of each row: ``ids`` (list of str) for
    items, ``input_rows`` ((n,) int64) for data=embeddings."""

    meta: dict
    tree: ClusterTree
    source: object
    parts: list
    ids: list | None
    input_rows: np.ndarray | None


def read_meta(run: str | Path) -> dict:
    """pool.json of a previous run, or a one-line error naming what is wrong (checked before any work)."""
    run = Path(str(run)).expanduser()
    if not run.is_dir():
        raise CurationInputError(f"curation.update_from={run} is not a directory: give a previous experiment=curate "
                                 "run's output directory")
    path = run / "pool" / "pool.json"
    if not path.exists():
        raise CurationInputError(f"curation.update_from={run} holds no finished curation (no pool/pool.json; runs "
                                 "made before incremental curation existed must be rerun once)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise CurationInputError(f"{path}: pool record format {meta.get('format')}, this version reads {FORMAT}")
    return meta


def load(run: str | Path) -> PoolRecord:
    run = Path(str(run)).expanduser()
    meta = read_meta(run)
    folder = run / "pool"
    levels = [ClusterLevel(*(load_npy(folder / f"level{i}_{name}.npy")
                             for name in ("centroids", "assignments", "distances")))
              for i in range(1, meta["n_levels"] + 1)]
    tree = ClusterTree(levels=levels, n_points=int(levels[0].assignments.size))
    parts = []
    for p in meta["parts"]:
        if not Path(p["store"]).exists():
            raise CurationInputError(f"the embeddings of a previous run are gone: {p['store']} (an update reads the "
                                     "embedding stores of the runs it builds on)")
        parts.append((p["store"], load_npy(folder / p["rows"])))
    source = ConcatSource([SubsetSource(as_source(store), rows) for store, rows in parts])
    if len(source) != tree.n_points:
        raise CurationInputError(f"{folder}: {len(source)} embedding rows for a tree of {tree.n_points} points")
    ids = json.loads((folder / "ids.json").read_text())["ids"] if meta["kind"] != "embeddings" else None
    input_rows = load_npy(folder / "input_rows.npy") if meta["kind"] == "embeddings" else None
    return PoolRecord(meta, tree, source, parts, ids, input_rows)


def write(out: Path, *, meta: dict, tree: ClusterTree, parts: list, ids: list | None,
          input_rows: np.ndarray | None) -> None:
    """Write the record of this run's pool (rank 0 only; the caller checks). parts: [(store path, rows)]."""
    folder = out / "pool"
    (folder / "pool.json").unlink(missing_ok=True)  # a killed rewrite must not leave an old pool.json over new arrays
    for i, lv in enumerate(tree.levels, 1):
        for name in ("centroids", "assignments", "distances"):
            atomic_save_npy(folder / f"level{i}_{name}.npy", getattr(lv, name))
    records = []
    for j, (store, rows) in enumerate(parts):
        atomic_save_npy(folder / f"part{j}_rows.npy", np.asarray(rows, dtype=np.int64))
        records.append({"store": str(Path(store).resolve()), "rows": f"part{j}_rows.npy", "n": int(len(rows))})
    if ids is not None:
        atomic_save_json(folder / "ids.json", {"ids": list(ids)})
    if input_rows is not None:
        atomic_save_npy(folder / "input_rows.npy", np.asarray(input_rows, dtype=np.int64))
    atomic_save_json(folder / "pool.json", {**meta, "format": FORMAT, "n_levels": len(tree.levels),
                                            "n": int(tree.n_points), "parts": records})
