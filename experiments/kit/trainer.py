"""The one Lightning trainer builder, from the one ``trainer`` schema every study's trainer group follows:
``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``, ``max_steps``, ``batch_size`` and
``log_every_n_steps`` (a study's group may add its own keys, e.g. the text study's ``eval_every`` and ``optim``).
Torch threads are the run's ``torch_threads``, set once for every stage (:func:`experiments.kit.loop.run_study`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def build_trainer(trainer: DictConfig, out: Path, progress: bool, name: str, max_steps: int | None = None,
                  **options):
    """A Lightning trainer for ``max_steps`` (default ``trainer.max_steps``) steps, its CSV log under
    ``out/lightning/<name>``, no checkpoints or sanity steps; ``options`` are further ``pl.Trainer`` arguments
    (validation cadence, gradient clipping) or replace these defaults."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    settings = dict(max_steps=int(max_steps or trainer.max_steps), accelerator=trainer.accelerator,
                    devices=trainer.devices, num_nodes=trainer.num_nodes, strategy=trainer.strategy,
                    precision=trainer.precision, logger=CSVLogger(str(out), name="lightning", version=name),
                    log_every_n_steps=int(trainer.log_every_n_steps), enable_checkpointing=False,
                    enable_model_summary=False, enable_progress_bar=progress, deterministic=False,
                    num_sanity_val_steps=0)
    return pl.Trainer(**{**settings, **options})
