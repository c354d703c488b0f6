"""``curation.retrieval.seed=PATH``: the seed set of retrieval-based curation (:mod:`sslcurate.retrieval`).

The seed set is an ``(n, d)`` ``.npy`` of embeddings from the pool's embedding space, or items the run's data kind
reads (a folder of images, a JSONL, ...), embedded here with the pool's embedder. Every check runs before the
pool is embedded or clustered: a fraction outside [0, 1], a missing or empty seed set, another dimension, and
for data=embeddings seed embeddings that do not lie in the pool's embedding space (another model, another
normalisation: :func:`sslcurate.knn.embedding_space_check`, in cosine here as the run's metric is not known
yet; :func:`sslcurate.retrieval.mixed_selection` checks again in the run's metric, for every data kind).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from sslcurate import CurationInputError
from sslcurate.knn import embedding_space_check
from sslcurate.retrieval import check_retrieval

log = logging.getLogger(__name__)


def check_settings(settings) -> Path | None:
    """The seed set's path when retrieval is on (None: off); a one-line error for impossible settings."""
    if not 0.0 <= float(settings.fraction) <= 1.0:
        raise CurationInputError(f"curation.retrieval.fraction is the retrieval share of the target, in [0, 1]; "
                                 f"got {settings.fraction}")
    if settings.seed is None:
        return None
    path = Path(str(settings.seed)).expanduser()
    if not path.exists():
        raise CurationInputError(f"curation.retrieval.seed={settings.seed} does not exist: give a .npy of seed "
                                 "embeddings or seed items of the run's data kind")
    return path


def npy_seeds(path: Path) -> np.ndarray | None:
    """The seed embeddings of a ``.npy`` seed set (None: the seed set is items)."""
    if path.suffix != ".npy":
        return None
    try:
        seeds = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CurationInputError(f"curation.retrieval.seed={path}: not a readable .npy ({err})") from None
    if seeds.ndim == 2 and seeds.shape[0] and not np.isfinite(seeds).all():
        raise CurationInputError(f"curation.retrieval.seed={path}: non-finite values")
    return np.array(seeds, dtype=np.float32) if seeds.ndim == 2 else seeds  # read whole: a seed set is small


def embed_items(reader, indices, embedder) -> np.ndarray:
    """Embeddings of the readable items among ``indices`` of ``reader``, in one process, batch by batch."""
    from experiments.curate.readers import ItemDataset, collate_items

    dataset = ItemDataset(reader, embedder.prepare, strict=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, list(indices)),
                                         batch_size=embedder.batch_size, num_workers=0, collate_fn=collate_items)
    out = [embedder.embed(values) for idx, values, _bad in loader if len(idx)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)


def pool_dim(reader, items: list, embedder) -> int:
    """The embedding dimension of the pool, from its first readable item (one forward pass)."""
    for start in range(0, len(items), 16):
        v = embed_items(reader, range(start, min(start + 16, len(items))), embedder)
        if v.size:
            return int(v.shape[1])
    raise CurationInputError("none of the pool's items could be read")


def load_seeds(path: Path, fraction: float, *, kind: str, reader, items: list, embedder, reader_options: dict
               ) -> np.ndarray:
    """(n, d) float32 seed embeddings, checked against the pool's dimension (one-line errors)."""
    seeds = npy_seeds(path)
    if seeds is not None:
        dim = reader.source.dim if kind == "embeddings" else pool_dim(reader, items, embedder)
        check_retrieval(seeds.shape, dim, fraction)
        if kind == "embeddings":  # the pool is at hand: seeds from another model fail before any work
            embedding_space_check(reader.source, seeds, metric="cosine")
        return seeds
    if kind == "embeddings":
        raise CurationInputError(f"curation.retrieval.seed={path}: with data=embeddings the seed set is a .npy of "
                                 "embeddings from the same model")
    from experiments.curate.readers import make_reader

    seed_reader = make_reader(kind, str(path), **reader_options, strict=False)
    try:
        seed_items = seed_reader.list_items()
    except CurationInputError:
        seed_items = []
    if not seed_items:
        raise CurationInputError(f"the retrieval seed set is empty: no {kind} items in {path}")
    seeds = embed_items(seed_reader, range(len(seed_items)), embedder)
    if seeds.size == 0:
        raise CurationInputError(f"the retrieval seed set is empty: none of the {len(seed_items)} items in {path} "
                                 "could be read")
    log.info("retrieval seed set: %d items embedded from %s (%d unreadable)", len(seeds), path,
             len(seed_items) - len(seeds))
    return seeds
