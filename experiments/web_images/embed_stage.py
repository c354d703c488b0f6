"""The embed stage: pick the ``embedder=`` encoder, embed the pool in batches, cache the ``.npy``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.embedders import ImageModelEmbedder, create_embedder
from experiments.kit.cache import cache_path
from sslcurate.io import atomic_save_json

from .data import StudyData
from .embed import cached_embeddings, embed_files, embed_images

log = logging.getLogger(__name__)


def ssl_manual_encoder(cfg: DictConfig, data: StudyData, cache: Path, out: Path) -> tuple[ImageModelEmbedder, dict]:
    """The paper's "SSL on ImageNet" embedder, analog: DINO pretrained on the ``manual`` set (trained once,
    its teacher backbone cached under ``cache/embedders/<hash>.pt``)."""
    from experiments.ssl.dino import DINO
    from experiments.ssl.pretrain import dino_config

    from .train import pretrain

    e = cfg.embedder
    model = OmegaConf.merge(cfg.model, e.model_overrides or {})
    trainer = OmegaConf.merge(cfg.trainer, {"max_steps": e.max_steps})
    key = {"kind": "ssl_manual", "data": data.key, "model": OmegaConf.to_container(model, resolve=True),
           "max_steps": int(e.max_steps), "batch_size": int(trainer.batch_size), "seed": int(e.seed)}
    path = cache_path(cache, "embedders", key, ".pt")
    module = DINO(dino_config(model, trainer, int(e.seed)))
    if path.exists():
        log.info("embedder: reusing %s", path)
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        log.info("embedder: DINO on the manual set (%d images, %d steps)", len(data.manual.images), e.max_steps)
        module = pretrain(np.ascontiguousarray(data.manual.images), model, trainer, int(e.seed), out,
                          "embedder_ssl_manual", cfg.progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
        atomic_save_json(path.with_suffix(".json"), key)
    backbone = module.teacher_backbone.eval()
    mean, std = list(model.mean), list(model.std)
    return ImageModelEmbedder("ssl_manual", backbone, None, mean, std, int(e.batch_size)), key


def embed_pool(cfg: DictConfig, data: StudyData, cache: Path, out: Path) -> tuple[np.ndarray, Path]:
    """The pool's curation embeddings. A pretrained embedder reads a file-backed pool's items again from their
    files at its own input size (``embedder.from_source``): the study trains on small copies (data.image_size), and
    on the real icon pool, embedding those copies upsampled left the curated subset no more label-balanced than
    raw (results/web_images/real/selection_training_copies_32px_at_64.json)."""
    e = cfg.embedder
    if e.kind == "ssl_manual":  # trained on the study's own images: it sees what the training sees
        encoder, ekey = ssl_manual_encoder(cfg, data, cache, out)
    else:
        encoder = create_embedder(e, "image")
        ekey = OmegaConf.to_container(e, resolve=True)
        ekey.pop("from_source", None)
    desc = f"embed ({e.name})"
    if e.kind != "ssl_manual" and e.get("from_source", True) and data.source_files and encoder.input_size:
        log.info("embedder: reading the %d pool files at %d px", len(data.source_files), encoder.input_size)
        ekey["read"] = "source files"
        return cached_embeddings(cache, ekey, data.key,
                                 lambda: embed_files(encoder, data.source_files, int(e.batch_size), cfg.progress,
                                                     desc=desc))
    return cached_embeddings(cache, ekey, data.key,
                             lambda: embed_images(encoder, data.images, int(e.batch_size), cfg.progress, desc=desc))
