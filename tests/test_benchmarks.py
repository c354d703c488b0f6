"""The benchmark scripts run end to end on tiny settings and write what their READMEs describe."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_precision_tiny(tmp_path):
    out = tmp_path / "precision"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_precision.py"), "--n", "3000",
                           "--dims", "96", "--ks", "40", "--iters", "2", "--repeat", "1", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    (point,) = report["points"]
    assert set(point["methods"]) == {"faiss", "fp32", "bf16"}
    assert point["bf16_assignment_agreement"] >= 0.999
    assert point["bf16_same_centroids_objective_rel_diff"] < 1e-4
    assert "| 96 | 40 |" in out.with_suffix(".md").read_text()
