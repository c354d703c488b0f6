"""The one study loop (experiments/kit/loop.py), driven by a toy study whose hooks record how they were called."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from experiments.kit.loop import Study, run_study, seed_seconds, stage
from experiments.kit.metrics import metrics_doc
from sslcurate import CurationInputError


class Toy(Study):
    """Pool rows 0..99; raw takes a seeded random half, curated the even rows; the metric is the mean row. A result
    listed in ``cfg.uncached`` is unavailable (None), as a cache-only run would find it."""

    calls: list = []

    def load(self):
        self.calls.append("load")
        self.pool = np.arange(100)

    def dry_run(self):
        self.calls.append("dry_run")
        return {"dry_run": True, "pool": len(self.pool)}

    def prepare(self, timings):
        self.calls.append("prepare")
        with stage(timings, "embed_s"):
            self.emb = self.pool.astype(float)

    def select(self, seed):
        self.calls.append(f"select {seed}")
        rng = np.random.default_rng(seed)
        return {"raw": rng.choice(self.pool, 50, replace=False), "curated": self.pool[::2]}

    def result(self, selection, variant, seed):
        self.calls.append(f"result {variant} {seed}")
        if f"{variant} {seed}" in self.cfg.uncached:
            return None
        res = {"mean_row": float(self.emb[selection[variant]].mean())}
        return {**res, "_seconds": 7.0} if variant == "curated" else res

    def document(self, results, done, timings):
        self.calls.append("document")
        seeds = [int(s) for s in self.cfg.seeds]
        return metrics_doc("toy", seeds, "mean_row", True, results, seeds_per_variant=done, timings=timings,
                           seed_seconds=seed_seconds(timings, seeds), missing=self.missing)

    def figures(self, doc):
        path = self.out / "fig.png"
        path.write_bytes(b"not really a png")
        return [path]

    def write_readme(self, folder):
        (folder / "README.md").write_text(f"toy: {json.loads((folder / 'metrics.json').read_text())['seeds']}\n")
        return folder / "README.md"


def _cfg(tmp_path, **over):
    base = {"paths": {"run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"),
                      "results_dir": str(tmp_path / "results")},
            "logger": {"name": "none"}, "seeds": [0, 1], "variants": ["raw", "curated"], "publish": False,
            "dry_run": False, "torch_threads": None, "uncached": []}
    return OmegaConf.create({**base, **over})


@pytest.fixture(autouse=True)
def fresh_calls():
    Toy.calls = []


def test_the_loop_calls_the_hooks_in_order_and_writes_one_metrics_file(tmp_path):
    doc = run_study(_cfg(tmp_path), Toy)
    assert Toy.calls == ["load", "prepare", "select 0", "result raw 0", "result curated 0", "select 1",
                         "result raw 1", "result curated 1", "document"]
    assert doc["results"]["curated"]["mean_row"] == {"mean": 49.0, "std": 0.0, "values": [49.0, 49.0]}
    assert len(doc["results"]["raw"]["mean_row"]["values"]) == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == doc
    t = doc["timings"]
    # a result's own time (cached results keep theirs) is taken over the loop's measurement
    assert t["seed0_curated_s"] == 7.0 and t["seed1_curated_s"] == 7.0
    assert {"load_at_start", "data_s", "embed_s", "seed0_curate_s", "seed0_raw_s", "total_s"} <= set(t)
    assert doc["seed_seconds"]["0"] == pytest.approx(t["seed0_curate_s"] + t["seed0_raw_s"] + 7.0)
    assert not (tmp_path / "results").exists()  # publish=false


def test_dry_run_stops_after_the_data(tmp_path):
    assert run_study(_cfg(tmp_path, dry_run=True), Toy) == {"dry_run": True, "pool": 100}
    assert Toy.calls == ["load", "dry_run"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unavailable_results_are_listed_and_the_seeds_each_variant_has_are_recorded(tmp_path):
    doc = run_study(_cfg(tmp_path, uncached=["curated 1"]), Toy)
    assert doc["missing"] == ["curated seed 1"]
    assert doc["seeds_per_variant"] == {"raw": [0, 1], "curated": [0]}
    assert doc["results"]["curated"]["mean_row"]["values"] == [49.0]


def test_no_result_at_all_is_a_one_line_error_and_no_metrics_file(tmp_path):
    cfg = _cfg(tmp_path, uncached=["raw 0", "raw 1", "curated 0", "curated 1"])
    with pytest.raises(CurationInputError, match="nothing to run"):
        run_study(cfg, Toy)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_publish_copies_metrics_and_figures_and_writes_the_readme(tmp_path):
    run_study(_cfg(tmp_path, publish=True), Toy)
    dest = tmp_path / "results"
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "fig.png", "metrics.json"]
    assert (dest / "README.md").read_text() == "toy: [0, 1]\n"


def test_the_readme_lists_the_hooks_the_kit_has():
    """The README's "Writing a study" sketch names real hooks of :class:`Study` and the real entry point."""
    readme = (ROOT / "README.md").read_text()
    sketch = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "(Study)" in b)
    hooks = re.findall(r"def (\w+)\(", sketch)
    assert {"load", "prepare", "select", "result", "document"} <= set(hooks)
    assert all(callable(getattr(Study, h, None)) for h in hooks if h != "run")
    assert "run_study(cfg, " in sketch
