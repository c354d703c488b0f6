"""Out-of-core: a memory-mapped pool several times larger than a memory budget is clustered with bounded RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")

BUDGET_MB = 64  # the RSS the clustering may add on top of the interpreter, torch and a warm-up run
N, D = 160_000, 512  # 312 MiB of float32: about 5x the budget

# Peak RSS is read in a fresh process after a small warm-up run (torch's kernels and allocator pools), with the
# high-water mark reset there (Linux ``clear_refs``); the peak is then what the big file's clustering added.
PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from sslcurate import KMeansSettings, LevelConfig, hierarchical_kmeans

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    kwargs = dict(settings=KMeansSettings(chunk_rows=2048, init_sample_size=2000, backend="torch"))
    levels = [LevelConfig(32, 2, 200, n_iters=4), LevelConfig(4, 1, 2, n_iters=4)]
    warm = np.random.default_rng(0).standard_normal((3000, int(sys.argv[2]))).astype(np.float32)
    hierarchical_kmeans(warm, [LevelConfig(32, 1, 20, n_iters=2), LevelConfig(4, 0, 1)], seed=0, **kwargs)
    del warm
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status("VmHWM")
    tree = hierarchical_kmeans(sys.argv[1], levels, seed=0, **kwargs)
    print(json.dumps({"before_mib": before, "peak_mib": status("VmHWM"), "n": int(tree.n_points)}))
""")


def write_pool(path, n, d, seed=0, block=16_384):
    """An (n, d) float32 .npy written block by block (the writer never holds the pool either)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (64, d)).astype(np.float32)
    for lo in range(0, n, block):
        m = min(block, n - lo)
        out[lo:lo + m] = centers[rng.integers(0, 64, m)] + rng.standard_normal((m, d), dtype=np.float32)
    out.flush()
    del out


def measure_peak_rss(path, d) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path), str(d)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pool_five_times_the_budget_clusters_in_bounded_rss(tmp_path):
    path = tmp_path / "pool.npy"
    write_pool(path, N, D)
    assert path.stat().st_size > 4.5 * BUDGET_MB * 2 ** 20
    got = measure_peak_rss(path, D)
    assert got["n"] == N
    added = got["peak_mib"] - got["before_mib"]
    assert added < BUDGET_MB, f"clustering a {path.stat().st_size / 2 ** 20:.0f} MiB file added {added:.0f} MiB RSS"
