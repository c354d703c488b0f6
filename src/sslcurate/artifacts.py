"""Atomic, pickle-free artifacts: ``.npy`` arrays plus JSON manifests, written to a temp file then renamed.

A clustering level is complete when its manifest exists (written last); a manifest whose key (clustering
settings, seed, input fingerprint, level index) does not match the current run is ignored, so a changed setting
never reuses a stale level.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .distributed import is_main_process
from .hierarchy import ClusterLevel

log = logging.getLogger(__name__)


@contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file handle on a temp file beside ``path``, renamed over ``path`` only if the block succeeds:
    readers see the old file or the complete new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def atomic_save_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class LevelStore:
    """Saves and reloads the levels of one hierarchical k-means run under ``root``.

    key: the settings that decide the clustering (dict, JSON-able); level i's manifest records the hash of the
    key, so level i is reused only by a run with the same settings, seed and input.
    """

    ARRAYS = ("centroids", "assignments", "distances")

    def __init__(self, root: str | os.PathLike, key: dict):
        self.root = Path(root)
        self.key = key
        self.key_hash = config_hash(key)

    def _manifest(self, i: int) -> Path:
        return self.root / f"level{i}.json"

    def load_level(self, i: int) -> ClusterLevel | None:
        manifest = self._manifest(i)
        if not manifest.exists():
            return None
        try:
            meta = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            log.warning("%s: unreadable manifest, recomputing level %d", manifest, i)
            return None
        if meta.get("key_hash") != self.key_hash:
            log.info("level %d: stored clustering has other settings (key %s, now %s), recomputing",
                     i, meta.get("key_hash"), self.key_hash)
            return None
        arrays = {name: load_npy(self.root / f"level{i}_{name}.npy") for name in self.ARRAYS}
        return ClusterLevel(**arrays)

    def save_level(self, i: int, level: ClusterLevel) -> None:
        if not is_main_process():  # every rank holds the same level; one writes it
            return
        for name in self.ARRAYS:
            atomic_save_npy(self.root / f"level{i}_{name}.npy", getattr(level, name))
        atomic_save_json(self._manifest(i), {"level": i, "key_hash": self.key_hash, "key": self.key,
                                             "n_clusters": level.n_clusters, "sslcurate_version": __version__})
