"""The CUDA paths, run for real where there is a GPU (``-m gpu`` selects only these); skipped without one.

``benchmarks/bench_gpu.py`` (run by ``benchmarks/gpu_check.sh`` on a GPU machine) measures the same paths at
N=1M, D=1024, K=10k; here they are checked for the answers, at sizes a test can afford."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslcurate import KMeansSettings, kmeans

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("data", ["pairs", "gaussian"])
def test_kmeans_on_cuda_matches_cpu(data):
    """Same seed, same clustering on the GPU as on the CPU, also where isolated pairs make exact ties."""
    rng = np.random.default_rng(0)
    if data == "pairs":
        x = np.repeat(rng.normal(size=(200, 8)) * 10, 2, axis=0) + 0.1 * rng.normal(size=(400, 8))
    else:
        x = rng.normal(size=(5000, 32))
    x = x.astype(np.float32)
    settings = KMeansSettings(backend="torch", precision="fp32")
    on_cpu = kmeans(x, 30, settings=settings, n_iters=10, seed=1, device="cpu")
    on_gpu = kmeans(x, 30, settings=settings, n_iters=10, seed=1, device="cuda")
    np.testing.assert_array_equal(on_gpu.assignments, on_cpu.assignments)
    np.testing.assert_allclose(on_gpu.centroids, on_cpu.centroids, rtol=1e-5, atol=1e-5)


def test_bench_gpu_small(tmp_path):
    """The GPU check at small sizes: every method runs, and the curation on the GPU under torchrun (NCCL, one
    process; then two processes) selects exactly what one CPU process selects."""
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--n", "20000", "--d", "64",
                           "--k", "100", "--iters", "3", "--curate-n", "6000", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curated = json.loads(Path(f"{out}_curate.json").read_text())
    assert [r["identical"] for r in curated["runs"]] == [True, True, True], curated["runs"]
