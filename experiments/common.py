"""What every study shares: the run record (resolved config, git SHA, metrics.json), the tracker (W&B offline by
default, rank 0 only), the common metrics format, and publishing to ``results/<name>/``."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
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
class RetrievalSettings:
    """``experiment=curate``: part of the subset retrieved around a seed set (:mod:`sslcurate.retrieval`)."""

    seed: Optional[str] = None  # (n, d) .npy of seed embeddings, or items of the data kind (embedded likewise)
    fraction: float = 0.5  # retrieval share of the target; the rest is balanced sampling (an even mix)


@dataclass
class CurationJobConfig(CurationConfig):
    """The core's settings plus where a job finds its inputs (``experiment=curate``)."""

    embeddings: Optional[str] = None  # (n, d) .npy file or folder of .npy shards
    labels: Optional[str] = None  # optional (n,) int .npy of concept labels, for the balance report only
    auto_levels: bool = False  # size levels from the pool (suggest_levels) even when curation.levels is given
    update_from: Optional[str] = None  # experiment=curate: a previous run's directory to add the new items to
    drift_threshold: float = 0.05  # update: recommend re-clustering above this share of far new items
    # (sslcurate.incremental.DRIFT_THRESHOLD: same-distribution items land beyond the pool's p99 ~0.3-3%)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)


def register_schemas() -> None:
    """The typed curation schema, and ``${real_data:SUB}``: a path under the prepared real-data root
    (``$SSLCURATE_REAL_DATA`` or ``~/.cache/sslcurate/real``), which the real-data arms' configs name."""
    from experiments.realdata import real_data_root

    ConfigStore.instance().store(group="curation", name="curation_schema", node=CurationJobConfig)
    OmegaConf.register_new_resolver("real_data", lambda sub="": str(real_data_root() / sub), replace=True)


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


# ------------------------------------------------------------------------------------------------------------------
# what every study does before curating: near-duplicate removal, then a hierarchy that fits the deduplicated pool

def dedup_setting(cfg: DictConfig) -> tuple[float | None, int | None, str]:
    """The near-duplicate threshold of a study's pool, the k-means groups it compares within, and where the
    threshold came from: ``curation.dedup.threshold`` when set, else the embedder's ``dedup_threshold`` (a cosine
    means something only in one embedding space); ``embedder.dedup_threshold=null`` turns removal off."""
    d = cfg.curation.get("dedup") or {}
    if d.get("threshold") is not None:
        return float(d["threshold"]), d.get("n_clusters"), "curation.dedup.threshold"
    thr = cfg.embedder.get("dedup_threshold") if "embedder" in cfg else None
    return (float(thr) if thr is not None else None), d.get("n_clusters"), \
        ("embedder.dedup_threshold" if thr is not None else "off (embedder.dedup_threshold=null)")


def levels_given() -> bool:
    """Whether the command line set the hierarchy (``curation.levels...``); otherwise a study sizes it from its
    deduplicated pool. Levels in config files are not "given": they were chosen for another pool."""
    return any(o.lstrip("+~").split("=")[0].startswith("curation.levels") for o in _overrides())


def level_sizing(cfg: DictConfig) -> dict:
    """A study's ``level_sizing``: the keywords of :func:`sslcurate.planning.suggest_levels` it sizes its hierarchy
    with (none: the paper's rule as ``suggest_levels`` defaults it)."""
    return OmegaConf.to_container(cfg.level_sizing, resolve=True) if cfg.get("level_sizing") else {}


def study_levels(ccfg: CurationJobConfig, n_points: int, sizing: dict | None = None,
                 given: bool | None = None) -> tuple[list, bool]:
    """The hierarchy a study curates ``n_points`` (its deduplicated pool) with, and whether it was sized.

    Sized from the pool (:func:`sslcurate.planning.suggest_levels` with the study's ``sizing`` keywords:
    ``points_per_cluster``, ``shrink``, ``n_levels``, ``top_clusters``) unless the levels were given on the command
    line and ``curation.auto_levels`` is false. Given levels that do not fit raise a one-line CurationInputError
    naming the setting that fits. given: None reads the command line (:func:`levels_given`)."""
    from sslcurate.hierarchy import check_levels
    from sslcurate.planning import suggest_levels

    sizing = dict(sizing or {})
    given = levels_given() if given is None else given
    if not given or ccfg.auto_levels:
        return suggest_levels(n_points, **sizing), True
    try:
        check_levels(ccfg.levels, n_points)
    except CurationInputError as err:
        try:
            fit = suggest_levels(n_points, **sizing)
            hint = (f"drop curation.levels to size them from the pool (or add curation.auto_levels=true; here "
                    f"k = {[lv.n_clusters for lv in fit]}, r = {[lv.sample_size for lv in fit]})")
        except CurationInputError as small:
            hint = str(small)
        raise CurationInputError(f"curation.levels do not fit the pool of {n_points}: {err}; {hint}") from None
    return list(ccfg.levels), False


def levels_record(levels: list, sized: bool, sizing: dict | None) -> dict:
    """How metrics.json records the hierarchy a run used."""
    return {"sized_from_pool": sized, "sizing": dict(sizing or {}) if sized else None,
            "levels": [{"n_clusters": lv.n_clusters, "resampling_steps": lv.resampling_steps,
                        "sample_size": lv.sample_size, "n_iters": lv.n_iters} for lv in levels]}


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


def finish_study(cfg: DictConfig, tracker, doc: dict, metrics_path: Path, figures: list[Path], write_readme=None,
                 **readme_kwargs) -> None:
    """A study's last steps: log the figures and the metrics document, close the tracker, and with
    ``publish=true`` copy metrics and figures to ``results/<name>/`` and write its README there
    (``write_readme(dest, **readme_kwargs)``)."""
    for f in figures:
        tracker.log_image(f.stem, f)
    tracker.log_metrics_doc(doc)
    tracker.finish()
    if cfg.publish:
        dest = publish(cfg, [metrics_path, *figures])
        if write_readme is not None and dest is not None:
            write_readme(dest, **readme_kwargs)


def load_metrics(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def compare(results: dict, a: str, b: str, metric: str) -> tuple[float, float, str, str]:
    """Variant ``a`` minus variant ``b`` on ``metric`` (means), the larger of their seed spreads, and the words a
    results README uses for them: ("beats" | "trails", "beyond" | "WITHIN") the seed spread."""
    d = results[a][metric]["mean"] - results[b][metric]["mean"]
    spread = max(results[a][metric]["std"], results[b][metric]["std"])
    return d, spread, "beats" if d > 0 else "trails", "beyond" if abs(d) > spread else "WITHIN"
