"""Loaders for the real-data pools that ``scripts/prepare_real_data.py`` installs from the package registries.

The root is ``$SSLCURATE_REAL_DATA`` or ``~/.cache/sslcurate/real``; see the script's docstring for the layout and
``ROOT/sources.json`` for the packages, versions and licences behind each pool. Nothing here downloads: a pool
that is not prepared raises :class:`sslcurate.CurationInputError` naming the command that prepares it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from sslcurate import CurationInputError

DEFAULT_ROOT = Path("~/.cache/sslcurate/real")  # also in scripts/prepare_real_data.py
ROOT_ENV = "SSLCURATE_REAL_DATA"
IMAGE_POOLS = ("tuxpaint", "oxygen")


def real_data_root() -> Path:
    """Where the prepared pools live: ``$SSLCURATE_REAL_DATA`` if set, else ``~/.cache/sslcurate/real``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


def _require(path: Path, pool: str) -> Path:
    if not path.is_file():
        raise CurationInputError(f"real {pool} data not prepared ({path} is missing): run "
                                 f"`python scripts/prepare_real_data.py --only {pool}` (set {ROOT_ENV} to use "
                                 "another root)")
    return path


def image_pool(name: str) -> tuple[list[Path], np.ndarray, list[str], np.ndarray]:
    """One prepared image pool (``tuxpaint`` or ``oxygen``).

    Returns (paths: n absolute PNG paths, labels: (n,) int64 index into class_names, class_names: sorted category
    names, groups: (n,) int64 item id; variants of one stamp / icon share a group, so split by group)."""
    if name not in IMAGE_POOLS:
        raise CurationInputError(f"unknown real image pool {name!r}; choose from {', '.join(IMAGE_POOLS)}")
    index = _require(real_data_root() / "images" / name / "index.csv", "images")
    with open(index, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise CurationInputError(f"{index} lists no images: delete {index.parent.parent} and rerun "
                                 "`python scripts/prepare_real_data.py --only images`")
    class_names, labels = np.unique([r["label"] for r in rows], return_inverse=True)
    _, groups = np.unique([r["group"] for r in rows], return_inverse=True)
    paths = [index.parent / r["path"] for r in rows]
    return paths, labels.astype(np.int64), [str(c) for c in class_names], groups.astype(np.int64)


def text_pool() -> list[dict]:
    """The prepared text pool: one dict per chunk with ``text``, ``domain`` (python_docs, changelog, copyright,
    wiki, news) and ``group`` (source document; split by group); the three columns make an
    ``experiments.text.pool.TextCorpus``."""
    path = _require(real_data_root() / "text" / "pool.jsonl", "text")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def satellite_scenes() -> list[dict]:
    """The prepared satellite scenes: dicts with ``name``, ``source``, ``paths`` (absolute, one file per band or
    one multi-band file), ``band_names``, ``band_count``, ``dtype``, ``width``, ``height``, ``res``, ``crs``,
    ``crs_name``, ``bounds``, ``transform``, ``dem`` (absolute path of the elevation raster covering the scene, or
    None), ``dem_same_grid``, ``qa`` (QA band path or None), ``duplicates`` (byte-identical copies, not separate
    scenes) and ``site`` (scenes over overlapping ground share it: split by site)."""
    index = _require(real_data_root() / "satellite" / "index.json", "satellite")
    base = index.parent
    scenes = json.loads(index.read_text())["scenes"]
    for s in scenes:
        s["paths"] = [base / p for p in s["paths"]]
        s["duplicates"] = [base / p for p in s.get("duplicates", [])]
        for key in ("dem", "qa"):
            s[key] = base / s[key] if s.get(key) else None
    return scenes
