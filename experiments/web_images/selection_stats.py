"""Balance of the training sets a configuration selects, without training anything.

    python -m experiments.web_images.selection_stats [--seeds 0,1,2] [--json PATH] [--experiment NAME] [overrides]
    e.g. python -m experiments.web_images.selection_stats embedder=ssl_manual torch_threads=1

Builds (or reuses from the cache) the pool and its embeddings exactly as ``experiment=web_images`` does, makes the
raw / curated / flat selections of each seed with the study's own code, and prints the mean over seeds of the
balance metrics of each training set (plus ``manual`` and the whole pool). This is the cheap check to run before
deciding an embedder, pool or hierarchy change: it reads labels only to measure, as the study does.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def compose(overrides: list[str], experiment: str = "web_images"):
    from hydra import compose as hydra_compose, initialize_config_dir

    from experiments.kit.config import register_schemas
    from experiments.kit.record import ROOT

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        # outside a Hydra run there is no hydra.runtime.cwd: resolve the root as the study does (env var, else cwd)
        root = os.environ.get("SSLCURATE_ROOT", os.getcwd())
        return hydra_compose(config_name="config", overrides=[f"experiment={experiment}", "logger=none",
                                                              f"paths.root_dir={root}", *overrides])


def selection_stats(cfg, seeds: list[int], work_dir: Path, overrides: list[str] | None = None) -> dict:
    """{variant: {metric: mean over seeds}} for raw / curated / flat, manual and the pool, and the times taken.
    overrides: the command line that made ``cfg`` (decides whether the levels were given or are sized)."""
    from sslcurate import CurationInputError

    from . import balance_metrics, select_variants
    from .curation import deduplicated_rows, pool_problems
    from .data import build_data
    from .embed_stage import embed_pool

    cache = Path(cfg.paths.cache_dir)
    t = time.perf_counter()
    data = build_data(cfg, cache)
    emb, emb_path = embed_pool(cfg, data, cache, work_dir)
    kept, dedup = deduplicated_rows(cfg, emb, emb_path, cache)
    levels, problems = pool_problems(cfg, len(data.images), kept.size, len(data.manual.labels),
                                     "the deduplicated pool", overrides or [])
    if problems:
        raise CurationInputError("; ".join(problems))
    times = {"data_and_embed_s": time.perf_counter() - t}
    rows: dict = {}
    for seed in seeds:
        t = time.perf_counter()
        sel, _ = select_variants(cfg, data, np.asarray(emb), seed, work_dir / f"seed{seed}", kept,
                                 {v: lv for v, (lv, _) in levels.items()})
        times[f"seed{seed}_curate_s"] = time.perf_counter() - t
        for variant, idx in sel.items():
            rows.setdefault(variant, []).append(
                balance_metrics(data, data.labels[idx], data.kinds[idx], data.dup_group[idx]))
    m = data.manual
    rows["manual"] = [balance_metrics(data, m.labels, np.zeros(len(m.labels), np.uint8), np.full(len(m.labels), -1))]
    rows["pool"] = [balance_metrics(data, data.labels, data.kinds, data.dup_group)]
    means = {v: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for v, rs in rows.items()}
    spread = {v: {k: float(np.std([r[k] for r in rs])) for k in rs[0]} for v, rs in rows.items() if len(rs) > 1}
    return {"seeds": seeds, "embedder": cfg.embedder.name, "input_size": cfg.embedder.get("input_size"),
            "from_source": bool(data.source_files and cfg.embedder.kind != "ssl_manual"
                                and cfg.embedder.get("from_source", True)),
            "subset_size": int(cfg.subset_size),
            "levels": [int(lv.n_clusters) for lv in levels["curated"][0]] if "curated" in levels else None,
            "dedup": dedup, "stats": means, "std_over_seeds": spread, "times": times}


def table(doc: dict) -> str:
    """Mean over seeds (± std where the set changes with the seed)."""
    keys = [k for k in ("concept_entropy", "group_entropy", "concept_coverage", "tail_share", "junk_fraction",
                        "duplicate_fraction") if k in doc["stats"]["pool"]]
    spread = doc.get("std_over_seeds", {})
    cell = lambda v, k: f"{doc['stats'][v][k]:.3f}" + (f" ± {spread[v][k]:.3f}" if v in spread else "")  # noqa: E731
    lines = ["| set | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {v} | " + " | ".join(cell(v, k) for k in keys) + " |" for v in doc["stats"]]
    return "\n".join(lines)


def run_check(description: str, option: tuple[str, str, str], check) -> tuple[dict, argparse.Namespace]:
    """The command line both no-training checks share (this one and :mod:`.dedup_check`): ``option`` (flag,
    default, help) plus ``--json``, ``--experiment`` and Hydra overrides; ``check(cfg, value, tmp, overrides)``
    runs in a temporary folder (the curation artifacts of a check are not worth keeping); ``--json`` keeps the
    numbers."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument(option[0], default=option[1], help=option[2])
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--experiment", default="web_images", help="e.g. web_images_quick")
    ap.add_argument("overrides", nargs="*", help="hydra overrides of experiment=web_images")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = compose(a.overrides, a.experiment)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    with tempfile.TemporaryDirectory() as tmp:
        doc = check(cfg, getattr(a, option[0].lstrip("-")), Path(tmp), a.overrides)
    doc["overrides"] = a.overrides
    doc["experiment"] = a.experiment
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)  # the -m module that ran: this one or dedup_check
    doc["command"] = " ".join(["python -m", main_spec.name if main_spec else "experiments.web_images.selection_stats",
                               *(shlex.quote(arg) for arg in sys.argv[1:])])
    if a.json:
        from sslcurate.io import atomic_save_json
        atomic_save_json(a.json, doc)
    return doc, a


def main() -> None:
    doc, _ = run_check(__doc__.splitlines()[0], ("--seeds", "0,1,2", "comma-separated curation seeds"),
                       lambda cfg, seeds, tmp, overrides: selection_stats(
                           cfg, [int(s) for s in seeds.split(",")], tmp, overrides))
    print(f"embedder {doc['embedder']}, levels {doc['levels']}, {doc['subset_size']} per set, seeds {doc['seeds']}")
    print(table(doc))


if __name__ == "__main__":
    main()
