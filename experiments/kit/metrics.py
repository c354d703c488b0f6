"""The one metrics.json shape every study writes (per variant and metric: the mean, std and per-seed values), and
the "mean ± std" text its READMEs print."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sslcurate import distributed
from sslcurate.io import atomic_save_json


def per_metric(seed_results: list[dict]) -> dict:
    """``{metric: [value of each seed]}`` from one metrics dict per seed (in seed order); the metrics are those of
    the first seed."""
    return {m: [r[m] for r in seed_results] for m in seed_results[0]}


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


def no_value(stats: dict | None) -> bool:
    """Whether a summary is absent or has no mean (None or NaN)."""
    return stats is None or stats.get("mean") is None or (isinstance(stats["mean"], float)
                                                          and math.isnan(stats["mean"]))


def mean_std(stats: dict | None, digits: int = 3, scale: float = 1, missing: str | None = None) -> str:
    """``"mean ± std"`` of a summary (:func:`summarize`), both times ``scale`` (100: percent) with ``digits``
    decimals. missing: the text for an absent summary or a NaN mean (:func:`no_value`); None formats any summary
    as it is."""
    if missing is not None and no_value(stats):
        return missing
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"


def write_metrics(out: Path, doc: dict) -> Path:
    path = out / "metrics.json"
    if distributed.is_main_process():
        atomic_save_json(path, doc)
    return path


def load_metrics(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def compare(results: dict, a: str, b: str, metric: str) -> tuple[float, float, str, str]:
    """Variant ``a`` minus variant ``b`` on ``metric`` (means), the larger of their seed spreads, and the words a
    results README uses for them: ("beats" | "trails", "beyond" | "WITHIN") the seed spread."""
    d = results[a][metric]["mean"] - results[b][metric]["mean"]
    spread = max(results[a][metric]["std"], results[b][metric]["std"])
    return d, spread, "beats" if d > 0 else "trails", "beyond" if abs(d) > spread else "WITHIN"
