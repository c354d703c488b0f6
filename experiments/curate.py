"""``experiment=curate``: curate a user's embeddings with the full core.

Writes into the run directory: ``indices.npy`` (int64), ``report.json`` (balance of pool vs subset),
``cluster_sizes.png``, ``metrics.json``, and ``clustering/`` (levels, reused by a rerun in the same directory).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from experiments.common import Tracker, curation_config, metrics_doc, run_dir, write_metrics
from experiments.plots import plot_cluster_sizes
from sslcurate import CurationInputError, curate, distributed
from sslcurate.planning import suggest_levels
from sslcurate.sources import as_source, load_labels

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    ccfg = curation_config(cfg.curation)
    if not ccfg.embeddings:
        raise CurationInputError("curation.embeddings is not set: pass curation.embeddings=PATH "
                                 "(an (n, d) .npy file or a folder of .npy shards)")
    source = as_source(Path(ccfg.embeddings).expanduser())
    if ccfg.auto_levels:
        ccfg.levels = suggest_levels(len(source))
        log.info("auto_levels: %s", [(lv.n_clusters, lv.resampling_steps, lv.sample_size) for lv in ccfg.levels])
    labels = load_labels(ccfg.labels, len(source)) if ccfg.labels else None
    tracker = Tracker(cfg, out)
    log.info("curating %s: %d x %d embeddings -> %d", source.name, *source.shape, ccfg.target_size)
    result = curate(source, ccfg, out_dir=out, labels=labels, progress=cfg.progress)
    if not distributed.is_main_process():  # under torchrun/SLURM rank 0 holds the selection and writes the outputs
        return {}

    fig = plot_cluster_sizes(result.tree, result.indices, out / "cluster_sizes.png")
    levels = result.report["levels"]
    results = {}
    for variant in ("pool", "subset"):
        results[variant] = {f"level{lv}_{k}": [stats[variant][k]] for lv, stats in levels.items()
                            for k in ("normalized_entropy", "gini", "max_over_min_nonempty")}
    if "concepts" in result.report:
        for variant in ("pool", "subset"):
            results[variant]["concept_normalized_entropy"] = [result.report["concepts"][variant]["normalized_entropy"]]
            results[variant]["concept_coverage"] = [result.report["concepts"][variant]["coverage"]]
    top = len(levels)
    doc = metrics_doc("curate", [ccfg.seed], f"level{top}_normalized_entropy", True, results,
                      primary_variant="subset", pool_size=result.report["pool_size"],
                      subset_size=result.report["subset_size"])
    write_metrics(out, doc)
    tracker.log_metrics_doc(doc)
    tracker.log_image("cluster_sizes", fig)
    tracker.finish()
    log.info("selected %d of %d points -> %s", result.indices.size, len(source), out / "indices.npy")
    return doc
