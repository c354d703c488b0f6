"""Pretraining a DINO model on a set of uint8 images and evaluating its frozen features (image-study glue
around the reusable :mod:`experiments.ssl` modules)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from experiments.ssl.dino import DINO
from experiments.ssl.evaluate import accuracy, extract_features, knn_classify, linear_probe
from experiments.ssl.pretrain import ArrayItems, pretrain as ssl_pretrain

log = logging.getLogger(__name__)


def collate_uint8(batch) -> torch.Tensor:
    return torch.stack(batch).float().div_(255)


def pretrain(images: np.ndarray, model: DictConfig, trainer: DictConfig, seed: int, out: Path, name: str,
             progress: bool = False) -> DINO:
    """DINO on uint8 ``images`` (n, S, S, C) for exactly ``trainer.max_steps`` steps of ``trainer.batch_size``
    (:func:`experiments.ssl.pretrain.pretrain`: the same budget for every dataset)."""
    return ssl_pretrain(ArrayItems(images, channels_last=True), model, trainer, seed, out, name,
                        in_chans=images.shape[-1], progress=progress, collate_fn=collate_uint8, unit="images")


@torch.no_grad()
def features(module: DINO, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Frozen teacher-backbone features of uint8 images: (n, d) float32."""
    module.eval()
    batches = (collate_uint8([torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in images[s:s + batch_size]])
               for s in range(0, len(images), batch_size))
    return extract_features(module.embed, batches)


def evaluate(module: DINO, data, k: int = 20, temperature: float = 0.07, probe_wd: float = 1e-3) -> dict:
    """k-NN (cosine, k) and linear probe trained on the balanced bank; accuracy on the balanced test set, on its
    tail concepts, and on the shifted rendering."""
    c = data.n_concepts
    fb = features(module, data.bank.images)
    sets = {"test": (features(module, data.test.images), data.test.labels)}
    if data.shifted is not None:
        sets["shifted"] = (features(module, data.shifted.images), data.shifted.labels)
    lin = linear_probe(fb, data.bank.labels, {n: f for n, (f, _) in sets.items()}, weight_decay=probe_wd,
                       n_classes=c)
    tail = np.isin(data.test.labels, data.tail_concepts)
    out = {}
    for name, (f, y) in sets.items():
        knn = knn_classify(fb, data.bank.labels, f, k=k, temperature=temperature, n_classes=c)
        prefix = "" if name == "test" else f"{name}_"
        out[f"{prefix}knn_top1"] = accuracy(knn, y)
        out[f"{prefix}linear_top1"] = accuracy(lin[name], y)
        if name == "test":
            out["tail_knn_top1"] = accuracy(knn, y, tail)
            out["tail_linear_top1"] = accuracy(lin[name], y, tail)
            out["head_knn_top1"] = accuracy(knn, y, ~tail)
    return out
