"""Embeddings already computed: an (n, d) ``.npy`` file or a folder of shards, handed to the core as they are."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sslcurate import CurationInputError
from sslcurate.sources import as_source

from .base import Item, Reader


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
