"""Decoded items for a DataLoader: a dataset that turns an unreadable item into ``(i, None, reason)`` instead of
killing a worker, its collate function, and the batch iterator that enforces ``strict`` in the main process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from sslcurate import CurationInputError

from .base import ItemError, Reader, strict_error


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
