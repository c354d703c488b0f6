"""Stage caches: what a stage computed, stored once under the study's cache folder (``paths.cache_dir``) as
``<cache>/<kind>/<prefix><config_hash(key)><suffix>`` and read back by every run whose settings give the same key.
Writes are atomic, so a killed run leaves the old entry or none."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from sslcurate.io import atomic_save_json, atomic_save_npy, config_hash

log = logging.getLogger(__name__)


def cache_path(cache: Path, kind: str, key, suffix: str = ".npy", prefix: str = "") -> Path:
    """Where the entry of ``key`` (the JSON-able settings that decide it, never their hash) lives: the file
    ``cache/kind/<prefix><hash><suffix>``, or with ``suffix=""`` the folder of a stage that writes several files."""
    return Path(cache) / kind / f"{prefix}{config_hash(key)}{suffix}"


class Cached(NamedTuple):
    value: Any  # what ``compute`` returned, or the stored copy of it
    path: Path  # the entry's file
    hit: bool  # whether it was read from the cache


def cached(kind: str, key, compute: Callable[[], Any], *, cache: Path, suffix: str = ".npy", prefix: str = "",
           mmap: bool = False, record: dict | Callable[[Any], dict] | None = None, reuse: bool = True) -> Cached:
    """The stored entry of ``key`` under ``cache/kind/`` (:func:`cache_path`), else ``compute()`` written there.

    suffix: ``.npy`` (an array; ``mmap`` reads it memory-mapped, also right after writing it) or ``.json``.
    record: a JSON record written beside a new entry (``<hash>.json``; a callable gets the computed value).
    reuse: False computes and overwrites even when an entry exists."""
    path = cache_path(cache, kind, key, suffix, prefix)
    if reuse and path.exists():
        log.info("%s: reusing %s", kind, path)
        return Cached(_load(path, mmap), path, True)
    value = compute()
    _save(path, value)
    if record is not None:
        atomic_save_json(path.with_suffix(".json"), record(value) if callable(record) else record)
    log.info("%s: computed and wrote %s", kind, path)
    return Cached(_load(path, mmap) if mmap else value, path, False)


def _save(path: Path, value) -> None:
    if path.suffix == ".npy":
        atomic_save_npy(path, value)
    elif path.suffix == ".json":
        atomic_save_json(path, value)
    else:
        raise ValueError(f"cached: no format for {path.suffix!r} entries (.npy or .json)")


def _load(path: Path, mmap: bool):
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return json.loads(path.read_text())
