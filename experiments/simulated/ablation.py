"""``experiment=simulated_ablation``: one setting of hierarchical k-means on the Fig. 3 data, scored by KL to uniform.

Meant to be swept with Hydra (commands in ``configs/experiment/simulated_ablation.yaml``); each job writes the
common ``metrics.json`` with one variant, ``"<axis>=<value>"``, and two metrics over ``ablation.seeds``:

- ``kl_to_uniform``: KL(KDE of the final centroids || uniform), as in Fig. 3;
- ``kl_subset_to_uniform``: the same for the ``target_size`` points picked by balanced hierarchical sampling with
  ``leaf_strategy`` (what curation actually returns; the only metric the leaf strategy can change).

``python -m experiments.simulated.report --collect MULTIRUN_DIR...`` gathers the jobs into
``results/simulated/ablations.json`` and the README tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.simulated import data
from experiments.kit.metrics import metrics_doc, write_metrics
from experiments.kit.record import run_dir
from experiments.kit.tracker import Tracker
from experiments.simulated.kde import kl_to_uniform
from experiments.simulated import Fig3Settings
from sslcurate import CurationInputError, KMeansSettings, LevelConfig, hierarchical_kmeans, hierarchical_sampling

log = logging.getLogger(__name__)

AXES = ("base", "levels", "steps", "r", "init", "leaf")


@dataclass
class AblationSettings:
    axis: str = "base"  # which table the job belongs to: base, levels, steps, r, init, leaf
    n_levels: int = 3  # picks level_presets[n_levels]
    level_presets: Dict[str, List[int]] = field(default_factory=lambda: {
        "1": [300], "2": [1500, 300], "3": [3000, 1000, 300], "4": [4000, 2000, 1000, 300]})
    resampling_steps: int = 10  # paper: T = 10
    sample_size: int = 2  # r at every level; paper Fig. 3
    sample_strategy: str = "closest"
    init: str = "k-means++"
    n_iters: int = 50
    leaf_strategy: str = "random"  # balanced sampling at the leaves: random / closest / furthest
    target_size: int = 1000  # points picked for kl_subset_to_uniform
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    torch_threads: int = 1
    data: Fig3Settings = field(default_factory=Fig3Settings)


def settings(node) -> AblationSettings:
    try:
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)  # ablation.data interpolates simulated.fig3
        s = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblationSettings), node))
    except OmegaConfBaseException as err:
        raise CurationInputError(f"bad ablation config: {err}") from None
    if s.axis not in AXES:
        raise CurationInputError(f"ablation.axis must be one of {AXES}, got {s.axis!r}")
    if str(s.n_levels) not in s.level_presets:
        raise CurationInputError(f"ablation.n_levels={s.n_levels} has no entry in ablation.level_presets")
    return s


def setting_value(s: AblationSettings):
    return {"base": "paper", "levels": s.n_levels, "steps": s.resampling_steps, "r": s.sample_size,
            "init": s.init, "leaf": s.leaf_strategy}[s.axis]


def one_seed(s: AblationSettings, seed: int) -> dict:
    d = s.data
    x, _ = data.mixture_2d(np.random.default_rng([seed, 0]), means=d.means, std=d.std, sizes=d.sizes,
                           n_uniform=d.n_uniform, box=d.kl.box)
    levels = [LevelConfig(k, resampling_steps=s.resampling_steps, sample_size=s.sample_size,
                          sample_strategy=s.sample_strategy, n_iters=s.n_iters)
              for k in s.level_presets[str(s.n_levels)]]
    tree = hierarchical_kmeans(x, levels, seed=seed * 100 + 4, settings=KMeansSettings(init=s.init, backend=d.backend))
    subset = hierarchical_sampling(tree, s.target_size, strategy=s.leaf_strategy, seed=seed)
    kl = lambda p: kl_to_uniform(p, d.kl.bandwidth, d.kl.box, d.kl.grid_step)  # noqa: E731
    return {"kl_to_uniform": kl(tree.levels[-1].centroids), "kl_subset_to_uniform": kl(x[subset])}


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    s = settings(cfg.ablation)
    torch.set_num_threads(int(s.torch_threads))
    tracker = Tracker(cfg, out)
    variant = f"{s.axis}={setting_value(s)}"
    per = {"kl_to_uniform": [], "kl_subset_to_uniform": []}
    for seed in s.seeds:
        r = one_seed(s, int(seed))
        for m in per:
            per[m].append(r[m])
        log.info("%s seed %d: %s", variant, seed, {m: round(v, 4) for m, v in r.items()})
    doc = metrics_doc("simulated_ablation", s.seeds, "kl_to_uniform", False, {variant: per},
                      primary_variant=variant, axis=s.axis, value=setting_value(s),
                      setting={"levels": s.level_presets[str(s.n_levels)], "resampling_steps": s.resampling_steps,
                               "sample_size": s.sample_size, "init": s.init, "leaf_strategy": s.leaf_strategy,
                               "sample_strategy": s.sample_strategy, "target_size": s.target_size})
    write_metrics(out, doc)
    tracker.log_metrics_doc(doc)
    tracker.finish()
    return doc
