"""Entry point: ``python run.py [experiment=NAME] [overrides...]``; ``-m`` sweeps.

The Hydra main is thin: it hands the composed config to ``experiments.<task>.run(cfg)``, which returns the
metrics dict (tests call :func:`run` in-process). Bad input exits with code 2 and a one-line message; a run
stopped by SIGTERM exits with 143.
"""

from __future__ import annotations

import importlib
import logging
import sys

import hydra
from omegaconf import DictConfig

from experiments.kit.config import register_schemas
from experiments.kit.record import run_dir, write_run_record
from experiments.ssl.training import is_lightning_sigterm, stopped
from sslcurate import CurationInputError, distributed

log = logging.getLogger("run")
register_schemas()


def run(cfg: DictConfig) -> dict:
    """Run the experiment named by ``cfg.task`` and return its metrics document."""
    distributed.init_from_env()  # several processes under torchrun or SLURM; a no-op otherwise
    try:
        out = run_dir(cfg)
        write_run_record(cfg, out)
        doc = importlib.import_module(f"experiments.{cfg.task}").run(cfg)
    except BaseException:
        distributed.shutdown(barrier=False)
        raise
    distributed.shutdown()
    return doc


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        doc = run(cfg)
    except CurationInputError as err:
        log.error("%s", err)
        sys.exit(2)
    except SystemExit as err:  # Lightning's SIGTERMException exits 0: a stopped run must not look finished
        if is_lightning_sigterm(err):
            stopped()
        raise
    primary = doc.get("primary_metric")
    best = doc.get("results", {}).get(doc.get("primary_variant", ""), {}).get(primary, {})
    return best.get("mean")  # what an optimisation sweeper would read


if __name__ == "__main__":
    main()
