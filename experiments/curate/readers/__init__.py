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

One module per kind (:mod:`.images`, :mod:`.webdataset`, :mod:`.text`, :mod:`.geotiff`, :mod:`.embeddings`);
:mod:`.base` holds the interface and the skip / strict machinery they share, :mod:`.batches` the DataLoader side.
"""

from __future__ import annotations

import inspect

from sslcurate import CurationInputError

from .base import Item, ItemError, Reader, strict_error
from .batches import ItemDataset, collate_items, iter_batches
from .embeddings import EmbeddingsReader
from .geotiff import TIF_SUFFIXES, GeoTiffReader
from .images import IMAGE_SUFFIXES, SIGNATURES, ImageFolderReader, _to_rgb, decode_image
from .text import TEXT_SUFFIXES, TextReader
from .webdataset import WDS_IMAGE_EXTS, WDS_LABEL_EXTS, WebDatasetReader

__all__ = ["IMAGE_SUFFIXES", "READERS", "SIGNATURES", "TEXT_SUFFIXES", "TIF_SUFFIXES", "WDS_IMAGE_EXTS",
           "WDS_LABEL_EXTS", "EmbeddingsReader", "GeoTiffReader", "ImageFolderReader", "Item", "ItemDataset",
           "ItemError", "Reader", "TextReader", "WebDatasetReader", "_to_rgb", "collate_items", "decode_image",
           "iter_batches", "make_reader", "strict_error"]

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
