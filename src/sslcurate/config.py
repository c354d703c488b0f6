"""Typed settings of the curation core. Experiments register these as Hydra structured configs; the core only
sees the dataclasses. Cross-field rules are checked in ``__post_init__``. The k-means settings live with the
k-means (:mod:`sslcurate.kmeans.settings`, which the layers below import) and are re-exported here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import CurationInputError
from .hierarchy import LevelConfig
from .kmeans.settings import KMeansSettings
from .sampling import STRATEGIES

__all__ = ["CurationConfig", "DedupConfig", "KMeansSettings", "LevelConfig", "SamplingConfig"]


@dataclass
class SamplingConfig:
    """Balanced hierarchical sampling of the final subset."""

    strategy: str = "random"  # leaf strategy; paper: random ~ closest > furthest
    multiplier: int = 1  # a point may be picked up to this many times
    clamp: bool = False  # target above the pool's capacity: clamp (logged) instead of failing

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise CurationInputError(f"sampling.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.multiplier < 1:
            raise CurationInputError(f"sampling.multiplier must be >= 1, got {self.multiplier}")


@dataclass
class DedupConfig:
    """Near-duplicate removal before the clustering (the paper curates an already deduplicated pool); off by
    default. See :func:`sslcurate.deduplicate`."""

    threshold: float | None = None  # cosine similarity at which a row duplicates an earlier kept row (None: off)
    n_clusters: int | None = None  # compare rows only within this many k-means clusters (pools of millions)

    def __post_init__(self):
        if self.threshold is not None and not -1.0 < self.threshold <= 1.0:
            raise CurationInputError(f"dedup.threshold is a cosine similarity in (-1, 1], got {self.threshold}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise CurationInputError(f"dedup.n_clusters must be >= 1, got {self.n_clusters}")

    @property
    def enabled(self) -> bool:
        return self.threshold is not None


@dataclass
class CurationConfig:
    """Everything that decides a curated subset: the hierarchy, k-means settings, sampling, and the seed."""

    levels: list[LevelConfig] = field(default_factory=lambda: [LevelConfig(1000, 10, 15), LevelConfig(300, 10, 2)])
    kmeans: KMeansSettings = field(default_factory=KMeansSettings)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    target_size: int = 1_000  # points in the curated subset; paper: about 10-30% of the pool
    seed: int = 0  # the only source of randomness: same seed, same subset
    memory_budget_gb: float | None = None  # refuse a run planned above this per rank (None: the RAM available)
    checkpoint_every: int = 5  # Lloyd iterations between mid-level checkpoints (with an output folder)
    checkpoint_seconds: float = 60.0  # wall time between k-means++ / split-phase checkpoints

    def __post_init__(self):
        self.levels = [lv if isinstance(lv, LevelConfig) else LevelConfig(**lv) for lv in self.levels]
        if isinstance(self.kmeans, dict):
            self.kmeans = KMeansSettings(**self.kmeans)
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if isinstance(self.dedup, dict):
            self.dedup = DedupConfig(**self.dedup)
        if self.checkpoint_every < 1:
            raise CurationInputError(f"checkpoint_every must be >= 1 iteration, got {self.checkpoint_every}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise CurationInputError(f"memory_budget_gb must be > 0, got {self.memory_budget_gb}")
        if self.target_size < 1:
            raise CurationInputError(f"target_size must be >= 1, got {self.target_size}")
        if not self.levels:
            raise CurationInputError("curation needs at least one level")
        ks = [lv.n_clusters for lv in self.levels]
        if any(b >= a for a, b in zip(ks, ks[1:])):
            raise CurationInputError(f"level sizes must shrink from the bottom level up, got k = {ks}")

    def clustering_dict(self) -> dict:
        """The settings that decide the clustering (not the sampling): the key of reusable level artifacts."""
        key = {"levels": [asdict(lv) for lv in self.levels], "kmeans": asdict(self.kmeans), "seed": self.seed}
        if self.dedup.enabled:  # only when on, so artifacts of runs without dedup stay valid
            key["dedup"] = asdict(self.dedup)
        return key
