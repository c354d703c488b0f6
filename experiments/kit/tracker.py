"""The run's W&B mirror: offline unless asked otherwise, rank 0 only, and never the only copy of a result."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sslcurate import distributed


class Tracker:
    """W&B run on rank 0 (offline unless asked otherwise); a no-op for ``logger=none`` and other ranks."""

    def __init__(self, cfg: DictConfig, out: Path):
        self.run = None
        if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled" or not distributed.is_main_process():
            return
        import wandb

        self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                              tags=list(cfg.logger.tags), mode=cfg.logger.mode, dir=str(out), name=out.name,
                              config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_metrics_doc(self, doc: dict) -> None:
        if self.run is None:
            return
        flat = {f"{variant}/{metric}": stats["mean"] for variant, ms in doc["results"].items()
                for metric, stats in ms.items()}
        self.run.summary.update(flat)

    def log_image(self, key: str, path: Path) -> None:
        if self.run is not None:
            import wandb
            self.run.log({key: wandb.Image(str(path))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
