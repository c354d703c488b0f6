"""What every study shares: the run record (resolved config, git SHA, metrics.json), the tracker (W&B offline by
default, rank 0 only), the common metrics format, and publishing to ``results/<name>/``."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslcurate import CurationConfig, CurationInputError, distributed
from sslcurate.artifacts import atomic_save_json

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CurationJobConfig(CurationConfig):
    """The core's settings plus where a job finds its inputs (``experiment=curate``)."""

    embeddings: Optional[str] = None  # (n, d) .npy file or folder of .npy shards
    labels: Optional[str] = None  # optional (n,) int .npy of concept labels, for the balance report only
    auto_levels: bool = False  # size levels from the pool (suggest_levels) even when curation.levels is given


def register_schemas() -> None:
    ConfigStore.instance().store(group="curation", name="curation_schema", node=CurationJobConfig)


def curation_config(node: DictConfig) -> CurationJobConfig:
    """The typed curation settings of a composed config; bad values raise a clear CurationInputError."""
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        raise CurationInputError(f"bad curation config: {err}") from None


def git_revision() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha or "unknown", "git_dirty": bool(status) if status is not None else None}


def run_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_record(cfg: DictConfig, out: Path) -> None:
    """Resolved config and code version beside the outputs (Hydra's .hydra/ keeps the unresolved one)."""
    if not distributed.is_main_process():
        return
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    atomic_save_json(out / "run_info.json", {**git_revision(), "command_overrides": _overrides()})


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


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


def summarize(values) -> dict:
    """``{"mean", "std", "values"}`` of one metric over seeds (population std; 0 for one seed)."""
    v = [float(x) for x in np.atleast_1d(values)]
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}


def metrics_doc(experiment: str, seeds, primary_metric: str, higher_is_better: bool, results: dict,
                **extra) -> dict:
    """The one metrics.json shape every experiment writes.

    results: ``{variant: {metric: list of per-seed values | summary dict}}``.
    """
    res = {variant: {m: (v if isinstance(v, dict) and "mean" in v else summarize(v)) for m, v in ms.items()}
           for variant, ms in results.items()}
    return {"experiment": experiment, "seeds": [int(s) for s in seeds], "primary_metric": primary_metric,
            "higher_is_better": bool(higher_is_better), "results": res, **extra}


def write_metrics(out: Path, doc: dict) -> Path:
    path = out / "metrics.json"
    if distributed.is_main_process():
        atomic_save_json(path, doc)
    return path


def publish(cfg: DictConfig, files: list[Path]) -> Path | None:
    """Copy a run's metrics.json and figures to ``results/<name>/`` when ``publish=true``."""
    if not cfg.publish or not distributed.is_main_process():
        return None
    dest = Path(cfg.paths.results_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / Path(f).name)
    log.info("published %d file(s) to %s", len(files), dest)
    return dest


def load_metrics(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def compare(results: dict, a: str, b: str, metric: str) -> tuple[float, float, str, str]:
    """Variant ``a`` minus variant ``b`` on ``metric`` (means), the larger of their seed spreads, and the words a
    results README uses for them: ("beats" | "trails", "beyond" | "WITHIN") the seed spread."""
    d = results[a][metric]["mean"] - results[b][metric]["mean"]
    spread = max(results[a][metric]["std"], results[b][metric]["std"])
    return d, spread, "beats" if d > 0 else "trails", "beyond" if abs(d) > spread else "WITHIN"
