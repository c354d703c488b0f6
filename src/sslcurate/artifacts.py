"""The clustering's stored levels and mid-level checkpoints: pickle-free ``.npy`` arrays plus JSON manifests,
written atomically with :mod:`sslcurate.io`.

A clustering level is complete when its manifest exists (written last); a manifest whose key (clustering
settings, seed, input fingerprint, level index) does not match the current run is ignored, so a changed setting
never reuses a stale level.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import distributed as dist
from .distributed import is_main_process
from .errors import CurationInputError
from .hierarchy import ClusterLevel
from .io import TEMP_SUFFIX, atomic_open, atomic_save_json, atomic_save_npy, config_hash, json_default, load_npy
from .sources import ShardedNpySource

log = logging.getLogger(__name__)


class Checkpoint:
    """Progress inside long k-means runs, so a preempted job resumes mid-level (see :func:`sslcurate.kmeans`).

    One ``.npz`` per tag under ``root`` (arrays plus a JSON meta record, no pickles), written atomically;
    a record whose ``key_hash`` differs from this run's is ignored. every: Lloyd iterations between
    checkpoints; every_seconds: wall time between k-means++ and split-phase checkpoints. Where the checkpoints
    fall never changes the result, only how much work a rerun repeats.
    """

    def __init__(self, root: str | os.PathLike, key_hash: str = "", every: int = 5, every_seconds: float = 60.0):
        if every < 1:
            raise ValueError(f"checkpoint every must be >= 1 iteration, got {every}")
        self.root = Path(root)
        self.key_hash = key_hash
        self.every = every
        self.every_seconds = every_seconds

    def _path(self, tag: str) -> Path:
        return self.root / f"{tag}.npz"

    def save(self, tag: str, arrays: dict, meta: dict, shared: bool = True) -> None:
        """shared: the state is the same on every rank and rank 0 writes it; False: each rank writes its own
        (``tag`` must then name the rank)."""
        if shared and not is_main_process():
            return
        record = json.dumps({**meta, "key_hash": self.key_hash}, default=json_default).encode()
        with atomic_open(self._path(tag)) as f:
            np.savez(f, __meta__=np.frombuffer(record, dtype=np.uint8), **arrays)

    def load(self, tag: str) -> tuple[dict, dict] | None:
        path = self._path(tag)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files if name != "__meta__"}
                meta = json.loads(z["__meta__"].tobytes())
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable checkpoint (%s), ignoring it", path, err)
            return None
        if meta.get("key_hash") != self.key_hash:
            return None
        return arrays, meta

    def clear(self) -> None:
        if is_main_process():
            shutil.rmtree(self.root, ignore_errors=True)


class LevelStore:
    """Saves and reloads the levels of one hierarchical k-means run under ``root``.

    key: the settings that decide the clustering (dict, JSON-able); level i's manifest records the hash of the
    key, so level i is reused only by a run with the same settings, seed and input.
    """

    def __init__(self, root: str | os.PathLike, key: dict, checkpoint_every: int = 5,
                 checkpoint_seconds: float = 60.0):
        self.root = Path(root)
        self.key = key
        self.key_hash = config_hash(key)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds

    def _manifest(self, i: int) -> Path:
        return self.root / f"level{i}.json"

    def checkpoint(self, i: int) -> Checkpoint:
        """Mid-level checkpoints of level i, under ``root/checkpoints/level{i}``; removed once the level is saved."""
        return Checkpoint(self.root / "checkpoints" / f"level{i}", f"{self.key_hash}-{i}", self.checkpoint_every,
                          self.checkpoint_seconds)

    def load_level(self, i: int, row_range: tuple[int, int] | None = None) -> ClusterLevel | None:
        """Level i if stored with this run's key. row_range: read only these children's assignments (the
        other ranks of a multi-process run read their own rows of level 1, never the full-length arrays)."""
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
        centroids = self._load_centroids(i, meta)
        if centroids is None:
            return None
        if row_range is None:
            arrays = {name: load_npy(self.root / f"level{i}_{name}.npy") for name in ("assignments", "distances")}
            return ClusterLevel(centroids, **arrays)
        lo, hi = row_range
        part = {name: np.array(np.load(self.root / f"level{i}_{name}.npy", mmap_mode="r", allow_pickle=False)[lo:hi])
                for name in ("assignments", "distances")}
        return ClusterLevel(centroids, **part, row_range=row_range)

    def _load_centroids(self, i: int, meta: dict):
        """Level i's centroids: the whole array, or the per-rank parts of a sharded level (read lazily; one
        process reads them whole, as it holds the whole tree). None if a part is missing."""
        if "centroid_parts" not in meta:
            return load_npy(self.root / f"level{i}_centroids.npy")
        try:
            parts = ShardedNpySource(self._parts_folder(i), meta["centroid_parts"])
        except CurationInputError as err:
            log.warning("level %d: centroid parts unreadable (%s), recomputing the level", i, err)
            return None
        return parts if dist.get_world_size() > 1 else parts.read(0, len(parts))

    def _parts_folder(self, i: int) -> Path:
        return self.root / f"level{i}_centroids"

    def save_centroid_parts(self, i: int, block: np.ndarray, centroid_range: tuple[int, int]) -> ShardedNpySource:
        """Each rank writes its block of level i's centroids (rows ``centroid_range`` of the (k, d) matrix) as its
        own file, ``level{i}_centroids/part{rank}of{world}.npy`` (none for an empty block); every rank calls it.
        Returns the parts in rank order as one (k, d) source any rank reads a chunk at a time: the next level's
        input, read in shards like the pool. No rank writes or holds another's block."""
        world, rank = dist.get_world_size(), dist.get_rank()
        folder = self._parts_folder(i)
        name = "part{:05d}of{:05d}.npy".format
        if block.shape[0]:
            atomic_save_npy(folder / name(rank, world), block)
        firsts = torch.zeros((world, 2), dtype=torch.int64)
        firsts[rank] = torch.tensor(centroid_range)
        firsts = dist.all_reduce_sum(firsts).numpy()  # O(world), and a barrier: every part is on disk
        if np.any(firsts[1:, 0] != firsts[:-1, 1]) or firsts[0, 0] != 0:
            raise CurationInputError(f"level {i}: the ranks' centroid blocks are not contiguous: {firsts.tolist()}")
        files = [name(r, world) for r in range(world) if firsts[r, 1] > firsts[r, 0]]
        if is_main_process():  # parts of an earlier run with another world size: never listed, removed
            for stale in {p.name for p in folder.glob("part*.npy")} - set(files):
                (folder / stale).unlink(missing_ok=True)
        return ShardedNpySource(folder, files)

    def save_level(self, i: int, level: ClusterLevel) -> None:
        """Write level i (every rank calls it). A level sharded over ranks (``row_range``) is written by all of
        them into the same full-length files, so a rerun with any number of ranks reads it back. Sharded
        centroids are already on disk, one part per rank (:meth:`save_centroid_parts`); the manifest lists them."""
        if level.row_range is not None:
            self._save_rows_sharded(i, level)
        elif not is_main_process():  # a whole level is the same on every rank: rank 0 writes it
            return
        else:
            for name in ("assignments", "distances"):
                atomic_save_npy(self.root / f"level{i}_{name}.npy", getattr(level, name))
        if not is_main_process():
            return
        meta = {"level": i, "key_hash": self.key_hash, "key": self.key, "n_clusters": level.n_clusters,
                "sslcurate_version": __version__}
        if isinstance(level.centroids, ShardedNpySource):
            meta["centroid_parts"] = [f.name for f in level.centroids.files]
            (self.root / f"level{i}_centroids.npy").unlink(missing_ok=True)  # a whole file of an earlier run
        else:
            atomic_save_npy(self.root / f"level{i}_centroids.npy", level.centroids)
        atomic_save_json(self._manifest(i), meta)
        self.checkpoint(i).clear()

    def _save_rows_sharded(self, i: int, level: ClusterLevel) -> None:
        """Each rank writes its rows ``[lo, hi)`` into one shared file (the run's outputs are on a filesystem all
        ranks see): rank 0 creates the full-length temp files, every rank fills its slice, and rank 0 renames them
        into place; the manifest, written after, marks the level complete. No rank holds more than its rows."""
        lo, hi = level.row_range
        n = int(dist.all_reduce_sum(torch.tensor([hi - lo], dtype=torch.int64))[0])
        temps = {name: self.root / f".level{i}_{name}.npy.sharded{TEMP_SUFFIX}" for name in ("assignments",
                                                                                            "distances")}
        if is_main_process():
            self.root.mkdir(parents=True, exist_ok=True)
            for name, tmp in temps.items():
                created = np.lib.format.open_memmap(tmp, mode="w+", dtype=getattr(level, name).dtype, shape=(n,))
                del created  # closes the map: the header and the file's full length are on disk
        dist.barrier()
        for name, tmp in temps.items():
            out = np.lib.format.open_memmap(tmp, mode="r+")
            out[lo:hi] = getattr(level, name)
            out.flush()
            del out
        dist.barrier()
        if is_main_process():
            for name, tmp in temps.items():
                os.replace(tmp, self.root / f"level{i}_{name}.npy")
