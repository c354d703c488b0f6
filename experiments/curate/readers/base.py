"""The reader interface every kind implements, and the machinery they share: the one-line :class:`ItemError`,
skipping (or, with ``strict``, stopping at) broken items, the per-process cache of an open file, and finding a
pool's files under ``data.path``."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sslcurate import CurationInputError

log = logging.getLogger(__name__)


class ItemError(Exception):
    """An item that cannot be read; ``str(err)`` is a one-line reason ("empty document", "all nodata" ...)."""

    def __init__(self, reason: str):
        super().__init__(" ".join(str(reason).split()))  # one line: reasons end up in a manifest and a log line


@dataclass(frozen=True, slots=True)  # slots: a pool lists millions of these
class Item:
    """One pool item. ``id``: what the manifest prints (see :mod:`experiments.curate.readers`); ``label``: for the
    report only (image folders: first-level sub-folder; WebDataset: ``.cls``/``.txt`` member; text:
    ``data.label_field``)."""

    id: str
    label: str | None = None


def strict_error(kind: str, item_id: str, reason: str) -> CurationInputError:
    return CurationInputError(f"unreadable {kind} item {item_id}: {reason} (data.strict=true stops at the first "
                              "unreadable item; data.strict=false skips and lists them)")


class Reader:
    """What every kind implements: ``kind``, ``list_items()`` (sorted, deterministic, cached; no decoding),
    ``load(i)`` (decode item ``i`` of that list or raise :class:`ItemError`) and ``skipped``, the ``(id, reason)``
    pairs found broken while listing. Subclasses fill ``_list`` and ``_load``."""

    kind = ""
    what = ""  # what data.path should name, for error messages

    def __init__(self, path, strict: bool = False):
        self.path = str(path)
        self.strict = bool(strict)
        self.skipped: list[tuple[str, str]] = []
        self._items: Sequence[Item] | None = None
        self._cache = None  # (pid, key, value): see _cached

    def list_items(self) -> Sequence[Item]:
        if self._items is None:
            self.skipped = []
            items = self._list()
            if not len(items):
                first = f"; first skipped: {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
                raise CurationInputError(f"{self.kind} {self.path}: no readable items ({len(self.skipped)} "
                                         f"skipped{first}); check data.path (it should name {self.what})")
            if self.skipped:
                log.warning("%s %s: %d skipped while listing (first: %s: %s)", self.kind, self.path,
                            len(self.skipped), *self.skipped[0])
            self._items = items
        return self._items

    def load(self, i: int) -> object:
        self.list_items()  # the listing holds where item i is
        return self._load(i)

    def _list(self) -> Sequence[Item]:
        raise NotImplementedError

    def _load(self, i: int) -> object:
        raise NotImplementedError

    def _skip(self, item_id: str, reason: str) -> None:
        if self.strict:
            raise strict_error(self.kind, item_id, reason)
        self.skipped.append((item_id, reason))

    def _cached(self, key, make: Callable):
        """``make()`` computed once for consecutive calls with the same ``key`` (an open file, a parsed JSON file,
        a Parquet row group): items are loaded mostly in order, so one entry is enough. Keyed by process too,
        because a forked DataLoader worker must not share its parent's open file (and its file offset). A failure
        is cached as well, so every item of a broken row group does not re-read it."""
        pid = os.getpid()
        if self._cache is None or self._cache[0] != pid or self._cache[1] != key:
            if self._cache is not None and self._cache[0] == pid and hasattr(self._cache[2], "close"):
                self._cache[2].close()
            try:
                value = make()
            except ItemError as err:
                value = err
            self._cache = (pid, key, value)
        value = self._cache[2]
        if isinstance(value, ItemError):
            raise ItemError(str(value))
        return value

    def __getstate__(self):  # open files and rasterio datasets do not pickle (spawned DataLoader workers)
        return {**self.__dict__, "_cache": None}



# ----------------------------------------------------------------------------------------------------------------
# finding files

def _walk_files(root: Path) -> Iterator[Path]:
    """Files under ``root``, recursively; hidden files and folders (name starting with ".") are left out.
    Symlinked folders are followed, each real folder once (a link cycle is not walked forever)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield from (Path(dirpath, f) for f in filenames if not f.startswith("."))


def _find_files(path: str, suffixes: tuple[str, ...], what: str) -> tuple[Path, list[Path]]:
    """``(root, files)`` for ``path`` a file, a folder (searched recursively) or a glob; ``files`` keeps the names
    ending in ``suffixes`` (any case), sorted by their path relative to ``root``, which is what ids print."""
    p = Path(os.path.expanduser(path))
    if glob.has_magic(str(p)):
        parts = p.parts
        n_plain = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        root = Path(*parts[:n_plain]) if n_plain else Path(".")
        found = [Path(f) for f in glob.glob(str(p), recursive=True) if os.path.isfile(f)]
        found = [f for f in found if not any(s.startswith(".") for s in f.relative_to(root).parts)]
    elif p.is_dir():
        root, found = p, list(_walk_files(p))
    elif p.is_file():
        root, found = p.parent, [p]
    else:
        raise CurationInputError(f"data.path {path} does not exist: pass data.path= {what}")
    files = [f for f in found if f.name.lower().endswith(suffixes)]
    if not files:
        raise CurationInputError(f"no {'/'.join(suffixes)} files under {path}: check data.path (it should name "
                                 f"{what}) and data= (the kind of input)")
    return root, sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:  # deleted since listing, permissions, a broken symlink
        raise ItemError(f"cannot read file ({err.strerror or err})") from None
