"""scripts/same_results.py: what it counts as a difference between two finished runs (the runs themselves are the
studies' quick presets, minutes each: run the script by hand before a refactor lands)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("same_results", ROOT / "scripts" / "same_results.py")
same_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(same_results)


def _run(folder, rows, knn, seconds):
    (folder / "seed0" / "curated").mkdir(parents=True)
    (folder / "selections").mkdir()
    np.save(folder / "seed0" / "curated" / "indices.npy", np.asarray(rows, np.int64))
    np.save(folder / "selections" / "raw_seed0.npy", np.arange(5))
    doc = {"results": {"curated": {"knn_top1": {"mean": knn, "std": 0.0, "values": [knn]},
                                   "pretrain_s": {"mean": seconds, "std": 0.0, "values": [seconds]}}}}
    (folder / "metrics.json").write_text(json.dumps(doc))
    return folder


def test_same_rows_and_metrics_are_same_whatever_the_wall_time(tmp_path):
    a = _run(tmp_path / "a", [1, 4, 9], 0.5, 10.0)
    b = _run(tmp_path / "b", [1, 4, 9], 0.5, 99.0)
    assert same_results.differences(a, b) == []
    assert set(same_results.selections(a)) == {"seed0/curated/indices.npy", "selections/raw_seed0.npy"}


def test_a_changed_row_a_changed_metric_and_a_missing_file_are_differences(tmp_path):
    a = _run(tmp_path / "a", [1, 4, 9], 0.5, 10.0)
    b = _run(tmp_path / "b", [1, 4, 8], 0.25, 10.0)
    (b / "selections" / "raw_seed0.npy").unlink()
    diff = same_results.differences(a, b)
    assert "selection seed0/curated/indices.npy" in diff
    assert "selection selections/raw_seed0.npy: only in one run" in diff
    assert "curated/knn_top1: [0.5] -> [0.25]" in diff
    assert len(diff) == 3


@pytest.mark.slow
def test_the_readme_command_finds_a_checkout_the_same_as_itself(capsys):
    """``python scripts/same_results.py`` as the README gives it, on one quick run: on a clean checkout HEAD and the
    working tree are the same code, so the runs must agree (a run-to-run determinism check as well)."""
    assert "python scripts/same_results.py" in (ROOT / "README.md").read_text()
    rc = same_results.main(["--runs", "experiment=satellite_quick seeds=[0] variants=[raw,curated]"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("same") and "selection files" in out
