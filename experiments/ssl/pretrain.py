"""DINO pretraining for a fixed budget of steps, the one entry point the image and satellite studies share: the
DINO config from the ``model`` and ``trainer`` groups, the Lightning trainer, and the seeded run.

Every variant of a study trains for exactly ``max_steps`` steps of ``trainer.batch_size`` items (the budget the
comparison holds fixed), from ``seed``, on a shuffled DataLoader drawn from a generator seeded the same way, and
a SIGTERM during training ends the process with status 143 (:func:`experiments.ssl.training.fit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.kit.trainer import build_trainer
from sslcurate import CurationInputError

from .augment import MultiCropConfig
from .dino import DINO, DINOConfig
from .training import fit


class ArrayItems(torch.utils.data.Dataset):
    """Item ``i`` of an (n, ...) array (may be memory-mapped) as a tensor: cast to ``dtype`` (None: as stored) and,
    for ``channels_last`` images (n, H, W, C), moved to (C, H, W)."""

    def __init__(self, array: np.ndarray, dtype=None, channels_last: bool = False):
        self.array, self.dtype, self.channels_last = array, dtype, channels_last

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.array[i], dtype=self.dtype))
        return x.permute(2, 0, 1) if self.channels_last else x


def dino_config(model: DictConfig, trainer: DictConfig, seed: int, in_chans: int = 3,
                max_steps: int | None = None) -> DINOConfig:
    """The DINO config of the ``model`` group for ``in_chans`` input channels, scheduled over ``max_steps``
    (default ``trainer.max_steps``) steps of ``trainer.batch_size``."""
    m = OmegaConf.to_container(model, resolve=True)
    m.pop("name", None)
    aug = MultiCropConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in m.pop("augment").items()})
    if len(m["mean"]) != in_chans or len(m["std"]) != in_chans:
        raise CurationInputError(f"model.mean/std have {len(m['mean'])}/{len(m['std'])} values for {in_chans} "
                                 "channels: set model.mean=auto model.std=auto (computed on the pool) or one value "
                                 "per channel")
    return DINOConfig(**m, in_chans=in_chans, max_steps=int(max_steps or trainer.max_steps),
                      batch_size=int(trainer.batch_size), seed=seed, augment=aug)


def pretrain(dataset: torch.utils.data.Dataset, model: DictConfig, trainer: DictConfig, seed: int, out: Path,
             name: str, *, in_chans: int, progress: bool = False, max_steps: int | None = None,
             collate_fn: Callable | None = None, unit: str = "items") -> DINO:
    """DINO on ``dataset`` (items of ``in_chans`` channels) for exactly ``max_steps`` (default
    ``trainer.max_steps``) steps of ``trainer.batch_size``: the same budget for every variant."""
    pl.seed_everything(seed, workers=True, verbose=False)
    steps = int(max_steps or trainer.max_steps)
    module = DINO(dino_config(model, trainer, seed, in_chans, steps))
    bs = int(trainer.batch_size)
    if len(dataset) < bs:
        raise CurationInputError(f"{name}: {len(dataset)} {unit} is fewer than one batch "
                                 f"(trainer.batch_size = {bs})")
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, generator=g,
                                         collate_fn=collate_fn, num_workers=int(trainer.num_workers))
    fit(build_trainer(trainer, out, progress, name, steps), module, loader, name=f"pretraining {name}")
    return module
