"""Text documents of JSONL, JSON-array, Parquet and plain-text files, one record at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Item, ItemError, Reader, _find_files, _read_bytes

TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".txt")


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
