"""The one study loop: data -> (dry run) -> prepare (embed, deduplicate, size the hierarchy) -> per seed: select the
variants' training sets -> per variant: train and evaluate (cached by the study) -> metrics.json -> figures ->
tracker and ``publish=true``.

A study is a subclass of :class:`Study` that fills in the hooks; :func:`run_study` drives them in that order and
keeps the bookkeeping every study shares: torch threads, stage timings, the per-seed results and their tracker
lines, the seeds each variant has, the metrics file and the last steps (:func:`experiments.kit.publish.finish_study`).
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from sslcurate import CurationInputError

from .metrics import per_metric, write_metrics
from .publish import finish_study
from .record import run_dir
from .tracker import Tracker


class Study:
    """A study's hooks. State the hooks share (the data, the embeddings, the kept rows) lives on the instance.

    ``result`` returns one (variant, seed)'s metrics, with the seconds it took as measured when it was computed under
    ``_seconds`` (a cached result keeps its original time), or None when it is not available (a cache-only run);
    ``document`` builds metrics.json from ``results`` (``{variant: {metric: per-seed values}}``) and ``done``
    (``{variant: seeds that have a result}``)."""

    def __init__(self, cfg: DictConfig, out: Path, cache: Path):
        self.cfg, self.out, self.cache = cfg, out, cache
        self.missing: list[str] = []  # "variant seed s" of every result not available
        self.tracker: Tracker | None = None  # the run's tracker, from the first seed on

    def load(self) -> None:
        """Build or read the data (cached by the study); check what can be checked before any work."""
        raise NotImplementedError

    def dry_run(self) -> dict:
        """Build every piece of the configured run and stop before the work; what the run would refuse is listed."""
        raise NotImplementedError

    def prepare(self, timings: dict) -> None:
        """Seed-independent stages (embed, deduplicate, size the hierarchy), timed into ``timings``."""
        raise NotImplementedError

    def select(self, seed: int) -> dict:
        """``{variant: pool rows}`` of one seed's training sets."""
        raise NotImplementedError

    def result(self, selection: dict, variant: str, seed: int) -> dict | None:
        raise NotImplementedError

    def nothing_to_report(self) -> str:
        """The message when no (variant, seed) gave a result."""
        return "variants is empty: nothing to run"

    def document(self, results: dict, done: dict, timings: dict) -> dict:
        raise NotImplementedError

    def figures(self, doc: dict) -> list[Path]:
        """The run's figures; a published run copies them to ``results/<name>/``."""
        return []

    def write_readme(self, folder: Path) -> Path | None:
        """The results README of a published run (``publish=true``)."""
        return None


@contextmanager
def stage(timings: dict, name: str):
    """Add the wall time of the ``with`` block to ``timings[name]`` (seconds)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none): other jobs on the cores slow every stage, so
    a timing means little without it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine() -> str:
    """The machine a timing was taken on, in words."""
    import torch

    load = load_average()
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads "
            f"{torch.get_num_threads()}, 1-min load average at the end {float('nan') if load is None else load:.1f}")


def seed_seconds(timings: dict, seeds) -> dict:
    """Wall time of each seed (curation + every variant's training and evaluation), as measured."""
    return {str(s): sum(v for k, v in timings.items() if k.startswith(f"seed{s}_")) for s in seeds}


def run_study(cfg: DictConfig, make: type[Study]) -> dict:
    """Run the study ``make(cfg, out, cache)`` end to end; returns its metrics document (a dry run: its summary)."""
    out = run_dir(cfg)
    if cfg.get("torch_threads"):
        import torch
        torch.set_num_threads(int(cfg.torch_threads))
    study = make(cfg, out, Path(cfg.paths.cache_dir))
    timings: dict = {"load_at_start": load_average()}
    t0 = time.perf_counter()
    with stage(timings, "data_s"):
        study.load()
    if cfg.get("dry_run"):
        return study.dry_run()
    study.prepare(timings)

    tracker = study.tracker = Tracker(cfg, out)
    seeds = [int(s) for s in cfg.seeds]
    per_seed: dict = {}
    for seed in seeds:
        with stage(timings, f"seed{seed}_curate_s"):
            selection = study.select(seed)
        for variant in cfg.variants:
            t = time.perf_counter()
            res = study.result(selection, variant, seed)
            if res is None:
                study.missing.append(f"{variant} seed {seed}")
                continue
            timings[f"seed{seed}_{variant}_s"] = res.pop("_seconds", time.perf_counter() - t)
            per_seed.setdefault(variant, {})[seed] = res
            tracker.log({f"{variant}/seed{seed}/{m}": v for m, v in res.items()})
    if not per_seed:
        tracker.finish()
        raise CurationInputError(study.nothing_to_report())
    done = {v: [s for s in seeds if s in runs] for v, runs in per_seed.items()}
    results = {v: per_metric([runs[s] for s in done[v]]) for v, runs in per_seed.items()}
    timings["total_s"] = time.perf_counter() - t0
    doc = study.document(results, done, timings)
    path = write_metrics(out, doc)
    finish_study(cfg, tracker, doc, path, study.figures(doc), study.write_readme)
    return doc
