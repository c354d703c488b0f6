"""Item readers of ``experiment=curate``: one small interface over the five kinds of raw input a user brings.

A reader lists the items of a pool cheaply and in a stable order (no pixel or text decoding), then decodes one
item at a time::

    reader = make_reader("image_folder", "/data/pool")          # or webdataset | text | geotiff | embeddings
    items = reader.list_items()                                  # [Item(id="cats/001.jpg", label="cats"), ...]
    dataset = ItemDataset(reader, transform)                     # bad items come back as (i, None, reason)
    for indices, values, skipped in iter_batches(dataset, batch_size=256, num_workers=8):
        ...

Item ids are what the manifest prints: a file path relative to ``data.path`` (image folders, ``.txt``
documents), ``shard.tar:key`` (WebDataset), ``file.jsonl:17`` (1-based line of a JSONL file),
``file.json:3`` / ``file.parquet:3`` (0-based record of a JSON array or a Parquet file) and ``scene.tif:row,col``
(pixel offset of the tile's top-left corner).

An unreadable item never stops a large pool: ``load`` raises :class:`ItemError` with a one-line reason, and
what is found broken while listing (a truncated tar, a Parquet file without the text column, a scene with too
few bands ...) is kept in ``reader.skipped`` as ``(id, reason)``. With ``strict=True`` the first of either
raises :class:`sslcurate.CurationInputError` naming the item and the reason. A missing path, an unknown kind or
a pool with no readable item is always a :class:`~sslcurate.CurationInputError` saying what to change.
"""

from __future__ import annotations

import glob
import inspect
import io
import json
import logging
import os
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.web_images.loaders import expand_shards
from sslcurate import CurationInputError
from sslcurate.sources import as_source

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".txt")
TIF_SUFFIXES = (".tif", ".tiff")
# WebDataset member extensions, in the order of preference when a sample holds several images
WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff", "gif")
WDS_LABEL_EXTS = ("cls", "txt")
# First bytes of each format: they turn PIL's "cannot identify image file" into a reason a user can act on
SIGNATURES = {"png": ("PNG", (b"\x89PNG\r\n\x1a\n",)), "jpg": ("JPEG", (b"\xff\xd8\xff",)),
              "jpeg": ("JPEG", (b"\xff\xd8\xff",)), "gif": ("GIF", (b"GIF87a", b"GIF89a")), "bmp": ("BMP", (b"BM",)),
              "webp": ("WebP", (b"RIFF",)), "tif": ("TIFF", (b"II*\x00", b"MM\x00*")),
              "tiff": ("TIFF", (b"II*\x00", b"MM\x00*"))}


# ----------------------------------------------------------------------------------------------------------------
# the interface

class ItemError(Exception):
    """An item that cannot be read; ``str(err)`` is a one-line reason ("empty document", "all nodata" ...)."""

    def __init__(self, reason: str):
        super().__init__(" ".join(str(reason).split()))  # one line: reasons end up in a manifest and a log line


@dataclass(frozen=True, slots=True)  # slots: a pool lists millions of these
class Item:
    """One pool item. ``id``: what the manifest prints (see the module docstring); ``label``: for the report only
    (image folders: first-level sub-folder; WebDataset: ``.cls``/``.txt`` member; text: ``data.label_field``)."""

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


# ----------------------------------------------------------------------------------------------------------------
# images

def _gray_to_uint8(a: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float gray image -> uint8, scaled (never clipped): 16-bit data (and 32-bit
    integers within 0..65535, how PIL holds some 16-bit files) by 255/65535, floats within [0, 1] by 255,
    anything else stretched from its minimum to its maximum."""
    kind, itemsize = a.dtype.kind, a.dtype.itemsize
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if itemsize == 2 or (kind in "iu" and lo >= 0 and hi <= 65535):
        lo, hi = 0.0, 65535.0
    elif kind == "f" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return np.round((a - lo) * (255.0 / max(hi - lo, 1e-12))).clip(0, 255).astype(np.uint8)


def _to_rgb(img) -> np.ndarray:
    """A decoded PIL image -> (H, W, 3) uint8 RGB: EXIF orientation applied, high bit depths scaled, alpha
    (and palette or gray transparency) composited on white."""
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) != 1:  # orientation tag; only then is a transposed copy worth making
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = _gray_to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:]
        return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _not_an_image(data: bytes, ext: str) -> str:
    """Why PIL could not identify ``data``: another kind of file, or an image whose header is damaged."""
    head = data[:16]
    fmt, signatures = SIGNATURES.get(ext, (None, ()))
    if fmt and not head.startswith(signatures):
        return f"not an image ({fmt} signature missing; file starts with {head!r})"
    found = next((f for f, sigs in SIGNATURES.values() if head.startswith(sigs)), None)
    if found:
        return f"corrupt image ({found} signature, but PIL cannot read its header)"
    return f"not an image PIL can identify (file starts with {head!r})"


def decode_image(data: bytes, ext: str = "") -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB (see :func:`_to_rgb`). ``ext`` (``png``, ``jpg`` ...) only
    words the reason when the bytes are not an image. Raises :class:`ItemError` for an empty, damaged or
    unidentifiable file and for one beyond PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ItemError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit PIL only warns; a pool is untrusted input, so that is an error too.
            # (catch_warnings is process-wide state: fine in DataLoader worker processes, not in threads.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return _to_rgb(img)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ItemError(f"image too large ({err})") from None
    except UnidentifiedImageError:
        raise ItemError(_not_an_image(data, ext.lower())) from None
    except Exception as err:  # noqa: BLE001  PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise ItemError(f"corrupt image ({type(err).__name__}: {err})") from None


class ImageFolderReader(Reader):
    """Image files under a folder, any nesting; extensions in any case; hidden files and folders ignored.
    Label: the first-level sub-folder (None for images directly under the folder)."""

    kind = "image_folder"
    what = "a folder of images (sub-folders as optional labels)"

    def _list(self):
        self.root, self.files = _find_files(self.path, IMAGE_SUFFIXES, self.what)
        rel = [f.relative_to(self.root).parts for f in self.files]
        return [Item("/".join(parts), parts[0] if len(parts) > 1 else None) for parts in rel]

    def _load(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        f = self.files[i]
        return decode_image(_read_bytes(f), f.suffix[1:])


# ----------------------------------------------------------------------------------------------------------------
# WebDataset shards

_WDS_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's split: key up to the basename's first dot


def _scan_tar(fh, size: int) -> tuple[list[tuple[str, dict]], str | None]:
    """Samples of an uncompressed tar from its headers alone, as WebDataset groups them (consecutive members
    sharing a key): ``[(key, {ext: (data offset, size)})]``, and the damage found (None for a sound tar).

    Python's tarfile ends its member list quietly at a cut or invalid header, so the end is checked here: a sound
    tar ends with a zero block, and every member's data lies inside the file. The sample cut by the damage is
    dropped; the ones before it are kept."""
    samples: list[tuple[str, dict]] = []
    key, members = None, {}
    tf, damage = None, None
    try:
        with tarfile.open(fileobj=fh, mode="r:") as tf:
            while (m := tf.next()) is not None:
                match = _WDS_KEY.match(m.name) if m.isfile() else None
                if match is None:
                    continue
                if match[1] != key:
                    if members:
                        samples.append((key, members))
                    key, members = match[1], {}
                if m.offset_data + m.size > size:
                    damage = f"member {m.name} is cut off at byte {size}"
                    members = {}  # this sample is incomplete
                    break
                members[match[2].lower()] = (m.offset_data, m.size)
    except tarfile.TarError as err:
        if tf is None:  # the first header already
            return [], f"not an uncompressed tar file ({err})"
        damage = f"{err} at byte {tf.offset}"
    if damage is None:
        fh.seek(tf.offset)
        if fh.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            damage = f"no valid header or end-of-archive marker at byte {tf.offset}"
    if members:
        samples.append((key, members))
    return samples, damage


class WebDatasetReader(Reader):
    """Image samples of WebDataset shards: ``data.path`` a folder of ``.tar``, a glob or a brace pattern
    ``shards/{000..099}.tar``. Label: a ``.cls`` (else ``.txt``) member."""

    kind = "webdataset"
    what = "WebDataset shards: a folder of .tar, a glob or shards/{000..099}.tar"

    def _list(self):
        p = os.path.expanduser(self.path)
        if not (glob.has_magic(p) or "{" in p or os.path.exists(p)):
            raise CurationInputError(f"data.path {self.path} does not exist: pass data.path= {self.what}")
        self.shards = [Path(s) for s in expand_shards(p)]
        root = os.path.commonpath([str(s.parent) for s in self.shards])
        items, self.where = [], []  # where[i]: (shard index, data offset, size, extension)
        for si, shard in enumerate(self.shards):
            name = os.path.relpath(shard, root)
            try:
                with open(shard, "rb") as fh:
                    samples, damage = _scan_tar(fh, shard.stat().st_size)
                    for key, members in samples:
                        ext = next((e for e in WDS_IMAGE_EXTS if e in members), None)
                        if ext is None:
                            self._skip(f"{name}:{key}", f"no image member ({'/'.join(WDS_IMAGE_EXTS)}); "
                                                        f"members: {', '.join(sorted(members))}")
                            continue
                        label_ext = next((e for e in WDS_LABEL_EXTS if e in members), None)
                        label = None
                        if label_ext is not None:
                            fh.seek(members[label_ext][0])
                            label = fh.read(members[label_ext][1]).decode("utf-8", "replace").strip()
                        items.append(Item(f"{name}:{key}", label))
                        self.where.append((si, *members[ext], ext))
            except OSError as err:
                self._skip(name, f"cannot read shard ({err.strerror or err})")
                continue
            if damage is not None:
                self._skip(name, f"truncated or corrupt tar: {damage}; only the {len(samples)} sample(s) before "
                                 "it are read")
        return items

    def _load(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        si, offset, size, ext = self.where[i]
        try:
            fh = self._cached(("shard", si), lambda: open(self.shards[si], "rb"))  # noqa: SIM115  _cached closes it
            fh.seek(offset)
            data = fh.read(size)
        except OSError as err:
            raise ItemError(f"cannot read shard ({err.strerror or err})") from None
        if len(data) != size:
            raise ItemError(f"member cut off ({len(data)} of {size} bytes)")
        return decode_image(data, ext)


# ----------------------------------------------------------------------------------------------------------------
# text

def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ItemError(f"invalid UTF-8 at byte {err.start}") from None


def _document(value, field: str) -> str:
    """The text of a record's field, checked: a non-empty string (UTF-8 bytes are decoded)."""
    if isinstance(value, (bytes, bytearray)):
        value = _utf8(bytes(value))
    if value is None:
        raise ItemError(f"'{field}' is null")
    if not isinstance(value, str):
        raise ItemError(f"'{field}' is not a string ({type(value).__name__})")
    if not value.strip():
        raise ItemError("empty document")
    return value


def _field(record, field: str):
    if not isinstance(record, dict):
        raise ItemError(f"record is a JSON {type(record).__name__}, not an object")
    if field not in record:
        raise ItemError(f"no '{field}' field (keys: {', '.join(sorted(record)[:8])}; set data.text_field)")
    return record[field]


def _json_line(line: bytes):
    try:
        return json.loads(_utf8(line).strip().lstrip("\ufeff"))
    except json.JSONDecodeError as err:
        raise ItemError(f"line is not JSON ({err.msg}: column {err.colno})") from None


def _label(record, field: str | None) -> str | None:
    value = record.get(field) if field and isinstance(record, dict) else None
    return None if value is None else str(value)


def _parse_json_array(path: Path) -> list:
    """A ``.json`` file holding one list of records; the whole file is parsed (use JSONL for big pools)."""
    try:
        records = json.loads(_utf8(_read_bytes(path)).lstrip("\ufeff"))
    except json.JSONDecodeError as err:
        raise ItemError(f"not valid JSON ({err.msg}: line {err.lineno} column {err.colno})") from None
    if not isinstance(records, list):
        raise ItemError(f"a JSON {type(records).__name__}, not a list of records")
    return records


class TextReader(Reader):
    """Documents of ``.jsonl`` (one record a line), ``.json`` (a list of records; a ``.json`` file that does not
    start with ``[`` is read as JSONL), ``.parquet`` and ``.txt`` (one document a file) files: ``data.path`` a
    file, a folder or a glob. ``text_field``: the field holding the document; ``label_field``: an optional one
    shown in the report. Parquet files are read by row group, only the needed columns."""

    kind = "text"
    what = "text files (.jsonl/.json/.parquet/.txt): a file, a folder or a glob"

    def __init__(self, path, text_field: str = "text", label_field: str | None = None, strict: bool = False):
        super().__init__(path, strict)
        self.text_field = text_field
        self.label_field = label_field

    def _list(self):
        root, paths = _find_files(self.path, TEXT_SUFFIXES, self.what)
        # files[f]: (path, format, Parquet row-group starts); item i is record pos[i] of file file_of[i]
        self.files, items, file_of, pos = [], [], [], []
        for path in paths:
            name = path.relative_to(root).as_posix()
            try:
                found = self._list_file(path, name)
            except ItemError as err:
                self._skip(name, str(err))
                continue
            except OSError as err:
                self._skip(name, f"cannot read file ({err.strerror or err})")
                continue
            if not found[1]:
                self._skip(name, "no records (empty file)")
                continue
            file_of += [len(self.files)] * len(found[1])
            self.files.append(found[0])
            items += found[1]
            pos += found[2]
        self.file_of = np.asarray(file_of, dtype=np.int32)
        self.pos = np.asarray(pos, dtype=np.int64)
        return items

    def _list_file(self, path: Path, name: str) -> tuple[tuple, list[Item], list[int]]:
        """``((path, format, row-group starts), items, positions)`` of one file; positions are byte offsets of
        JSONL lines, record indexes otherwise. Raises :class:`ItemError` when the whole file is unreadable."""
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return (path, "txt", None), [Item(name)], [0]
        if suffix == ".parquet":
            return self._list_parquet(path, name)
        if suffix == ".json":
            with open(path, "rb") as fh:
                head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(b"["):
                records = _parse_json_array(path)
                items = [Item(f"{name}:{k}", _label(r, self.label_field)) for k, r in enumerate(records)]
                return (path, "json", None), items, list(range(len(records)))
        items, offsets, offset = [], [], 0
        with open(path, "rb") as fh:  # one pass for line offsets; lines are parsed only for a label
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    label = None
                    if self.label_field:
                        try:
                            label = _label(_json_line(line), self.label_field)
                        except ItemError:
                            pass  # load() reports it
                    items.append(Item(f"{name}:{lineno}", label))
                    offsets.append(offset)
                offset += len(line)
        return (path, "jsonl", None), items, offsets

    def _list_parquet(self, path: Path, name: str):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001  pyarrow raises several types for a file that is not Parquet
            raise ItemError(f"not a readable Parquet file ({err})") from None
        n = pf.metadata.num_rows
        columns = pf.schema_arrow.names
        if self.text_field not in columns:
            raise ItemError(f"no '{self.text_field}' column for its {n} row(s) (columns: {', '.join(columns[:8])}; "
                            "set data.text_field)")
        labels = [None] * n
        if self.label_field and self.label_field in columns:
            labels = [None if v is None else str(v) for batch in pf.iter_batches(columns=[self.label_field])
                      for v in batch.column(0).to_pylist()]
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        return (path, "parquet", starts), [Item(f"{name}:{k}", labels[k]) for k in range(n)], list(range(n))

    def _row_group(self, path: Path, group: int) -> list:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).read_row_group(group, columns=[self.text_field]).column(0).to_pylist()
        except Exception as err:  # noqa: BLE001  a damaged page (several types): the whole group is unreadable
            raise ItemError(f"cannot read row group {group} ({err})") from None

    def _load(self, i: int) -> str:
        """The document (a non-empty string)."""
        path, fmt, starts = self.files[self.file_of[i]]
        pos = int(self.pos[i])
        if fmt == "txt":
            return _document(_read_bytes(path), "text")
        if fmt == "json":
            records = self._cached(("json", path), lambda: _parse_json_array(path))
            return _document(_field(records[pos], self.text_field), self.text_field)
        if fmt == "parquet":
            group = int(np.searchsorted(starts, pos, side="right")) - 1
            rows = self._cached(("parquet", path, group), lambda: self._row_group(path, group))
            return _document(rows[pos - starts[group]], self.text_field)
        try:
            fh = self._cached(("jsonl", path), lambda: open(path, "rb"))  # noqa: SIM115  _cached closes it
            fh.seek(pos)
            line = fh.readline()
        except OSError as err:
            raise ItemError(f"cannot read file ({err.strerror or err})") from None
        return _document(_field(_json_line(line), self.text_field), self.text_field)


# ----------------------------------------------------------------------------------------------------------------
# GeoTIFF tiles

class GeoTiffReader(Reader):
    """``tile`` x ``tile`` tiles (step ``stride``, default ``tile``) of GeoTIFF scenes: ``data.path`` a folder
    (searched recursively), a glob or one file. ``bands``: 1-based band indexes (default: every band of the first
    readable scene). Tiles that would cross the right or bottom edge are not cut. Listing reads only metadata;
    each tile is a windowed read."""

    kind = "geotiff"
    what = "GeoTIFF scenes (.tif/.tiff): a folder, a glob or a file"

    def __init__(self, path, tile: int = 224, stride: int | None = None, bands: list[int] | None = None,
                 strict: bool = False):
        super().__init__(path, strict)
        self.tile = int(tile)
        self.stride = int(stride or tile)
        self.bands = None if bands is None else [int(b) for b in bands]
        if self.tile < 1 or self.stride < 1:
            raise CurationInputError(f"data.tile ({tile}) and data.stride ({stride}) must be positive")
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise CurationInputError(f"data.bands {bands}: 1-based band indexes, e.g. [1, 2, 3]")

    def _list(self):
        import rasterio
        from rasterio.errors import RasterioError

        root, paths = _find_files(self.path, TIF_SUFFIXES, self.what)
        self.scenes, items, where = [], [], []
        t, s = self.tile, self.stride
        for path in paths:
            name = path.relative_to(root).as_posix()
            try:
                with rasterio.open(path) as ds:
                    count, height, width = ds.count, ds.height, ds.width
            except (RasterioError, OSError) as err:
                self._skip(name, f"not a readable GeoTIFF ({err})")
                continue
            if self.bands is None:
                self.bands = list(range(1, count + 1))
                log.info("geotiff: reading bands %s (all bands of %s; set data.bands to choose)", self.bands, name)
            if max(self.bands) > count:
                self._skip(name, f"{count} band(s), band {max(self.bands)} is asked for (data.bands={self.bands})")
                continue
            if height < t or width < t:
                self._skip(name, f"{width} x {height} px is smaller than one tile ({t} px)")
                continue
            rows, cols = np.arange(0, height - t + 1, s), np.arange(0, width - t + 1, s)
            items += [Item(f"{name}:{r},{c}") for r in rows for c in cols]
            rr, cc = np.meshgrid(rows, cols, indexing="ij")
            where.append(np.stack([np.full(rr.size, len(self.scenes)), rr.ravel(), cc.ravel()], axis=1))
            self.scenes.append(path)
        self.where = np.concatenate(where) if where else np.zeros((0, 3), np.int64)  # (n, 3): scene, row, col
        return items

    def _open(self, scene: int):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            return rasterio.open(self.scenes[scene])
        except (RasterioError, OSError) as err:
            raise ItemError(f"cannot open scene ({err})") from None

    def _load(self, i: int) -> np.ndarray:
        """(bands, tile, tile) float32 raw values; nodata (masked or NaN) pixels read as 0."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        scene, row, col = (int(v) for v in self.where[i])
        ds = self._cached(("scene", scene), lambda: self._open(scene))
        try:
            tile = ds.read(self.bands, window=Window(col, row, self.tile, self.tile), masked=True)
        except (RasterioError, OSError, ValueError) as err:
            raise ItemError(f"cannot read tile ({err})") from None
        data = np.asarray(tile.data, dtype=np.float32)
        invalid = np.ma.getmaskarray(tile) | np.isnan(data)
        if invalid.all():
            raise ItemError("all nodata")
        data[invalid] = 0
        return data


# ----------------------------------------------------------------------------------------------------------------
# embeddings already computed

class _RowItems(Sequence):
    """Items ``row 0`` .. ``row n-1``, made on access: an embeddings file may hold 10^8 rows."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return Item(f"row {i % self.n}")


class EmbeddingsReader(Reader):
    """An (n, d) ``.npy`` file or a folder of ``.npy`` shards, checked by :func:`sslcurate.sources.as_source`.
    The pipeline hands ``self.source`` to the core; ``load(i)`` is row ``i`` as (d,) float32."""

    kind = "embeddings"
    what = "an (n, d) .npy file or a folder of .npy shards"

    def __init__(self, path, strict: bool = False):
        super().__init__(path, strict)
        p = Path(os.path.expanduser(self.path))
        if not p.exists():
            raise CurationInputError(f"data.path {self.path} does not exist: pass data.path= {self.what}")
        self.source = as_source(p)

    def _list(self):
        return _RowItems(len(self.source))

    def _load(self, i: int) -> np.ndarray:
        return self.source.read(i, i + 1)[0]


# ----------------------------------------------------------------------------------------------------------------
# factory, dataset, batches

READERS: dict[str, type[Reader]] = {r.kind: r for r in (ImageFolderReader, WebDatasetReader, TextReader,
                                                         GeoTiffReader, EmbeddingsReader)}


def make_reader(kind: str, path, **options) -> Reader:
    """The reader of ``kind`` over ``path``; ``options`` are that kind's settings from the data config group
    (``text_field``, ``label_field``, ``tile``, ``stride``, ``bands``, and ``strict`` for every kind)."""
    if kind not in READERS:
        raise CurationInputError(f"unknown data kind {kind!r}: choose data= one of {', '.join(READERS)}")
    cls = READERS[kind]
    if path is None or str(path).strip() in ("", "???"):
        raise CurationInputError(f"data.path is not set: pass data.path= {cls.what}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CurationInputError(f"data.{unknown[0]} is not a setting of data={kind} (its settings: "
                                 f"{', '.join(accepted)})")
    return cls(path, **options)


class ItemDataset(torch.utils.data.Dataset):
    """The items of ``reader`` decoded and passed through ``transform``. ``dataset[i]`` is ``(i, value)``, or
    ``(i, None, reason)`` for an unreadable item, so a DataLoader worker never dies on one. ``strict`` (default:
    the reader's) makes an unreadable item a one-line :class:`~sslcurate.CurationInputError`: raised here in the
    main process, and by :func:`iter_batches` for items decoded in workers (an exception raised in a worker
    reaches the main process wrapped in a multi-line message). An error in ``transform`` is a bug, not a bad
    item, and is raised."""

    def __init__(self, reader: Reader, transform: Callable | None = None, strict: bool | None = None):
        self.reader = reader
        self.items = reader.list_items()
        self.transform = transform
        self.strict = reader.strict if strict is None else bool(strict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            value = self.reader.load(i)
        except ItemError as err:
            if self.strict and torch.utils.data.get_worker_info() is None:
                raise self.error(i, str(err)) from None
            return i, None, str(err)
        return i, value if self.transform is None else self.transform(value)

    def error(self, i: int, reason: str) -> CurationInputError:
        return strict_error(self.reader.kind, self.items[i].id, reason)


def collate_items(batch: list[tuple]) -> tuple[torch.Tensor, object, list[tuple[int, str]]]:
    """``(indices (b,) int64, values, skipped [(i, reason)])`` of a batch of :class:`ItemDataset` entries.
    ``values`` is stacked when every value is a tensor (or every one an array) of one shape, else a list."""
    good = [entry for entry in batch if len(entry) == 2]
    skipped = [(entry[0], entry[2]) for entry in batch if len(entry) == 3]
    values = [v for _, v in good]
    if values and len({getattr(v, "shape", None) for v in values}) == 1:
        if all(isinstance(v, torch.Tensor) for v in values):
            values = torch.stack(values)
        elif all(isinstance(v, np.ndarray) for v in values):
            values = np.stack(values)
    return torch.tensor([i for i, _ in good], dtype=torch.int64), values, skipped


def iter_batches(dataset: ItemDataset, batch_size: int, num_workers: int = 0
                 ) -> Iterator[tuple[torch.Tensor, object, list[tuple[int, str]]]]:
    """Batches of :func:`collate_items` in item order through a DataLoader; in strict mode the first unreadable
    item raises its one-line :class:`~sslcurate.CurationInputError` here, in the main process."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate_items)
    for indices, values, skipped in loader:
        if skipped and dataset.strict:
            raise dataset.error(*skipped[0])
        yield indices, values, skipped
