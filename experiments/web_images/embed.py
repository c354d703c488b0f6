"""The study's embedding loops and cache, over the shared embedders (``experiments.embedders``).

- ``ssl_manual``: the analog of the paper's embedder (a ViT-L self-supervised with DINOv2 on ImageNet-1k): a DINO
  model pretrained by this project on the ``manual`` set, trained once and cached (``embed_stage``).
- ``efficientnet_lite0`` and ``timm``: built by ``experiments.embedders.create_embedder``, as the curation product
  builds them.

Embeddings are computed in batches with a progress bar and cached as ``.npy`` under ``paths.cache_dir``, keyed by
a hash of the embedder and of the data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.embedders import ImageModelEmbedder
from experiments.kit.cache import cached

log = logging.getLogger(__name__)


def embed_images(embedder: ImageModelEmbedder, images: np.ndarray, batch_size: int = 256,
                 progress: bool = False, desc: str = "embed") -> np.ndarray:
    """Features of all ``images`` ((n, S, S, C) uint8, may be memory-mapped), in batches: (n, d) float32."""
    from tqdm.auto import tqdm

    chunks = []
    for s in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
        chunks.append(embedder.embed_images(images[s:s + batch_size]))
    return np.concatenate(chunks).astype(np.float32)


def embed_files(embedder: ImageModelEmbedder, files: list[str], batch_size: int = 256, progress: bool = False,
                desc: str = "embed") -> np.ndarray:
    """Features of image files decoded at the embedder's input size, in batches: (n, d) float32."""
    from tqdm.auto import tqdm

    from .loaders import load_images

    chunks = []
    for s in tqdm(range(0, len(files), batch_size), desc=desc, disable=not progress):
        chunks.append(embedder.embed_images(load_images(files[s:s + batch_size], embedder.input_size)))
    return np.concatenate(chunks).astype(np.float32)


def cached_embeddings(cache_dir: Path, embedder_key: dict, data_key: str, compute: Callable[[], np.ndarray]
                      ) -> tuple[np.ndarray, Path]:
    """Load ``embeddings/<hash>.npy`` (hash of embedder + data) or compute, save atomically and return it
    (memory-mapped)."""
    key = {"embedder": embedder_key, "data": data_key}
    emb, path, _ = cached("embeddings", key, compute, cache=cache_dir, mmap=True,
                          record=lambda x: {**key, "shape": list(x.shape)})
    return emb, path
