"""Embedding sources: one small interface over in-memory arrays, memory-mapped ``.npy`` files and shard folders.

The clustering code only ever asks a source for its shape, for consecutive row chunks and for a set of rows, so a
pool larger than RAM is read from disk a chunk at a time. Chunks come back as C-contiguous ``float32`` arrays.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import CurationInputError

DEFAULT_CHUNK_ROWS = 65_536


class EmbeddingSource:
    """Rows of an ``(n, d)`` matrix. Subclasses implement ``shape``, ``_read(start, stop)`` and ``name``."""

    name: str = "embeddings"
    in_memory: bool = False  # True when the rows already sit in RAM (not paged in from disk)

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a writable ``(stop - start, d)`` float32 array (torch refuses read-only ones)."""
        rows = np.ascontiguousarray(self._read(start, stop), dtype=np.float32)
        return rows if rows.flags.writeable else rows.copy()

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, chunk)`` over rows ``[start, stop)``; memory stays at one chunk."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, chunk_rows):
            yield lo, self.read(lo, min(lo + chunk_rows, stop))

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices`` (any order) as a ``(len(indices), d)`` float32 array."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        out = np.empty((indices.size, self.dim), dtype=np.float32)
        out[order] = self._take_sorted(sorted_idx)
        return out

    def _take_sorted(self, sorted_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._read_rows(sorted_idx), dtype=np.float32)

    def _read_rows(self, sorted_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row as one ``(n, d)`` array (``np.asarray(source)``): for consumers that hold a whole matrix in
        one process, such as the writer of a run's tree, where a level's centroids are the ranks' parts."""
        rows = self.read(0, len(self))
        return rows if dtype is None else rows.astype(dtype, copy=False)

    def fingerprint(self) -> str:
        """A cheap content hash (shape, dtype, and a few sampled rows) so stale artifacts are detected."""
        n, d = self.shape
        h = hashlib.sha256(f"{n}x{d}".encode())
        probe = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, 64)).astype(np.int64))
        h.update(self.take(probe).tobytes())
        return h.hexdigest()[:16]


class ArraySource(EmbeddingSource):
    """An in-memory ``(n, d)`` array (numpy or anything ``np.asarray`` accepts)."""

    def __init__(self, array, name: str = "array"):
        array = np.asarray(array)
        _check_matrix(array, name)
        self.array = array
        self.name = name
        self.in_memory = not isinstance(array, np.memmap)

    @property
    def shape(self):
        return tuple(self.array.shape)

    def _read(self, start, stop):
        return self.array[start:stop]

    def _read_rows(self, sorted_idx):
        return self.array[sorted_idx]


class NpySource(ArraySource):
    """A ``.npy`` file opened as a read-only memory map: nothing is loaded until a chunk is asked for.

    Rows are copied out of the map and the mapped pages released at once (``MADV_DONTNEED``: the OS page cache
    keeps them, this process's resident set does not), so a pass over a file larger than RAM leaves the
    process at one chunk, not at the file's size.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        array = _open_npy(path)
        super().__init__(array, name=str(path))
        self.map = array  # the np.memmap itself (np.asarray drops the subclass, and with it the map)
        self.in_memory = False
        self.path = path

    def read(self, start, stop):
        rows = np.array(self.map[start:stop], dtype=np.float32, order="C", copy=True)
        _release(self.map, start, stop)
        return rows

    def _read_rows(self, sorted_idx):
        return _take_released(self.map, sorted_idx)


class SubsetSource(EmbeddingSource):
    """Rows ``indices`` (sorted, int64) of another source, read lazily: a resampling step's sample, sharded
    over ranks like any source, without copying the sample into memory."""

    def __init__(self, base: EmbeddingSource, indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.name = f"{base.name}[{self.indices.size} rows]"
        self.in_memory = base.in_memory

    @property
    def shape(self):
        return int(self.indices.size), self.base.dim

    def read(self, start, stop):
        return self.base.take(self.indices[start:stop])

    def _read_rows(self, sorted_idx):
        return self.base.take(self.indices[sorted_idx])


class ShardedNpySource(EmbeddingSource):
    """A folder of ``.npy`` shards (sorted by file name), read as one matrix of their concatenated rows.

    files: the shards' names in order, when the folder may hold others (a level's centroid parts, listed by its
    manifest); None: every ``.npy`` in the folder."""

    def __init__(self, folder: str | os.PathLike, files: list[str] | None = None):
        folder = Path(folder)
        files = sorted(folder.glob("*.npy")) if files is None else [folder / f for f in files]
        if not files:
            raise CurationInputError(f"{folder}: folder holds no .npy shards")
        self.shards = [_open_npy(f) for f in files]
        dims = {s.shape[1] for s in self.shards}
        if len(dims) != 1:
            detail = ", ".join(f"{f.name}: {s.shape[1]}" for f, s in zip(files, self.shards))
            raise CurationInputError(f"{folder}: shards disagree on the embedding dimension ({detail})")
        self.offsets = np.cumsum([0] + [s.shape[0] for s in self.shards])
        self.name = str(folder)
        self.files = files

    @property
    def shape(self):
        return int(self.offsets[-1]), self.shards[0].shape[1]

    def _read(self, start, stop):
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        for s in range(first, len(self.shards)):
            lo, hi = self.offsets[s], self.offsets[s + 1]
            if lo >= stop:
                break
            parts.append(self.shards[s][max(start - lo, 0):min(stop, hi) - lo])
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def read(self, start, stop):
        rows = np.array(self._read(start, stop), dtype=np.float32, order="C", copy=True)
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        for s in range(first, len(self.shards)):  # see NpySource: copy, then drop the mapped pages
            lo, hi = self.offsets[s], self.offsets[s + 1]
            if lo >= stop:
                break
            _release(self.shards[s], max(start - lo, 0), min(stop, hi) - lo)
        return rows

    def _read_rows(self, sorted_idx):
        shard_of = np.searchsorted(self.offsets, sorted_idx, side="right") - 1
        out = np.empty((sorted_idx.size, self.dim), dtype=np.float32)
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = _take_released(self.shards[s], sorted_idx[sel] - self.offsets[s])
        return out


FAULT_AROUND_BYTES = 1 << 16
# Rows fetched per madvise when reading scattered rows. A fault on a lone row maps far more than the row
# (fault-around and read-around: about 200 KiB per scattered row measured here), so a batch holds at most
# TAKE_BATCH x that of the map at once; a batch per syscall keeps the madvise cost small next to the copy.
TAKE_BATCH = 16


def _take_released(mm: np.ndarray, sorted_idx: np.ndarray) -> np.ndarray:
    """Rows ``sorted_idx`` of a memory map, copied out a batch at a time with the batch's pages dropped after."""
    out = np.empty((sorted_idx.size, mm.shape[1]), dtype=np.float32)
    for b in range(0, sorted_idx.size, TAKE_BATCH):
        idx = sorted_idx[b:b + TAKE_BATCH]
        out[b:b + idx.size] = mm[idx]
        _release(mm, int(idx[0]), int(idx[-1]) + 1)
    return out


def _release(array: np.ndarray, start: int, stop: int) -> None:
    """Drop the mapped pages of rows ``[start, stop)`` of a memory map from this process (no-op otherwise)."""
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or stop <= start:
        return
    row_bytes = array.strides[0]
    base = array.offset % mmap.ALLOCATIONGRANULARITY  # where numpy placed row 0 inside the map
    lo = base + start * row_bytes
    hi = min(base + stop * row_bytes, len(mm))
    # Reading a page maps its aligned neighbours too (fault-around, 64 KiB on Linux), some of them before
    # ``start``: release from that far back, or they would stay mapped after their own chunk was released.
    lo = max(0, lo - FAULT_AROUND_BYTES)
    lo -= lo % mmap.PAGESIZE  # madvise wants a page-aligned start
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError):  # an advice, never a failure
        pass


def as_source(x) -> EmbeddingSource:
    """Wrap an array, tensor, ``.npy`` path or shard folder as an :class:`EmbeddingSource`."""
    if isinstance(x, EmbeddingSource):
        return x
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if path.is_dir():
            return ShardedNpySource(path)
        return NpySource(path)
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return ArraySource(x)


def validate_finite(source: EmbeddingSource, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
    """Raise if any row holds NaN or Inf, naming how many rows and the first one. One pass over the data,
    split over the ranks of a multi-process run (each checks its own rows)."""
    import torch

    from . import distributed as dist

    n = len(source)
    start, stop = shard_bounds(n, dist.get_rank(), dist.get_world_size())
    n_bad, first = 0, n
    for lo, chunk in source.iter_chunks(chunk_rows, start, stop):
        bad = ~np.isfinite(chunk).all(axis=1)
        if bad.any():
            n_bad += int(bad.sum())
            first = min(first, lo + int(np.argmax(bad)))
    # Only sums cross ranks: each rank fills its own slot of ``firsts``, and the minimum is taken after.
    found = dist.all_reduce_sum(torch.tensor([n_bad], dtype=torch.int64))
    firsts = torch.zeros(dist.get_world_size(), dtype=torch.int64)
    firsts[dist.get_rank()] = first
    first = int(dist.all_reduce_sum(firsts).min())
    n_bad = int(found[0])
    if n_bad:
        raise CurationInputError(
            f"{source.name}: {n_bad} row(s) contain NaN or Inf values (first bad row: index {first})")


def _check_matrix(array: np.ndarray, name: str) -> None:
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                     or np.issubdtype(array.dtype, np.integer)):
        raise CurationInputError(f"{name}: embeddings must be numeric, got dtype {array.dtype}")
    if array.ndim != 2:
        raise CurationInputError(f"{name}: embeddings must be a 2-D (n, d) array, got {array.ndim} dimension(s) "
                                 f"with shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise CurationInputError(f"{name}: embeddings are empty (shape {tuple(array.shape)})")


def load_labels(path: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """A (n,) integer label vector from a ``.npy`` file, checked like embeddings (no pickles, no truncation)."""
    labels = np.asarray(_open_npy(Path(path), ndim=1))
    if not np.issubdtype(labels.dtype, np.integer):
        raise CurationInputError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    if n is not None and labels.shape[0] != n:
        raise CurationInputError(f"{path}: {labels.shape[0]} labels for {n} embeddings")
    return labels.astype(np.int64)


def _open_npy(path: Path, ndim: int = 2) -> np.ndarray:
    """Memory-map a ``.npy`` file after checking its header, so bad files fail with a clear message."""
    if not path.exists():
        raise CurationInputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise CurationInputError(f"{path}: file is empty")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                      else np.lib.format.read_array_header_2_0(f))
            data_offset = f.tell()
    except (ValueError, OSError, SyntaxError) as err:
        raise CurationInputError(f"{path}: not a valid .npy file ({err})") from None
    shape, fortran, dtype = header
    if dtype.hasobject:
        raise CurationInputError(f"{path}: holds pickled Python objects (dtype {dtype}); "
                                 "only plain numeric .npy files are read, never pickles")
    expected = data_offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise CurationInputError(f"{path}: file is truncated ({actual} bytes, header promises {expected})")
    if len(shape) != ndim:
        what = "embeddings must be a 2-D (n, d) array" if ndim == 2 else f"expected a {ndim}-D array"
        raise CurationInputError(f"{path}: {what}, got shape {tuple(shape)}")
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if ndim == 2:
        _check_matrix(array, str(path))
    return array


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous row range ``[lo, hi)`` of ``rank`` when ``n`` rows are split over ``world_size`` processes."""
    per = -(-n // world_size)
    return min(rank * per, n), min((rank + 1) * per, n)

