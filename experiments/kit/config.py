"""The typed curation schema of a study's config (``curation=``), and reading it back as a dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslcurate import CurationConfig, CurationInputError


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
