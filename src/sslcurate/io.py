"""Generic persistence: atomic writes of bytes, JSON and ``.npy`` (a temp file beside the target, then a rename),
pickle-free reads, and the short hash that keys a cache entry by its settings. The clustering's level store built
on these is :mod:`sslcurate.artifacts`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TEMP_SUFFIX = ".tmp"


def process_umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status); elsewhere set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file handle on a temp file beside ``path``, renamed over ``path`` only if the block succeeds:
    readers see the old file or the complete new one, never a half-written one. The file gets the mode an
    ordinary ``open`` would give it (0666 less the umask), not mkstemp's private 0600: on a shared cluster a
    colleague reads the outputs as the user's umask allows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, 0o666 & ~process_umask())
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_stale_temps(root: str | os.PathLike) -> int:
    """Delete the temp files that killed writes of :func:`atomic_open` left under ``root`` (``.NAME.XXXX.tmp``)
    and the checkpoint folders left empty; called once a run has finished. Returns the number of files removed."""
    root = Path(root)
    removed = 0
    for tmp in root.rglob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    for folder in sorted((p for p in root.rglob("checkpoints") if p.is_dir()), reverse=True):
        for sub in sorted(folder.rglob("*"), reverse=True):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def atomic_save_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n").encode())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def config_hash(obj) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as sorted JSON: the same settings give the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()[:16]


def json_default(o):
    """JSON for NumPy scalars and arrays and paths (``json.dumps(..., default=json_default)``)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
