"""``torchrun --nproc_per_node=2 run.py experiment=curate ...`` (gloo on CPU) selects what one process selects."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT, make_blobs, run_cli

ARGS = ("experiment=curate", "curation.target_size=600", "logger=none", "progress=false",
        "curation.levels=[{n_clusters:60,resampling_steps:2,sample_size:10,n_iters:8,split:4},"
        "{n_clusters:8,resampling_steps:2,sample_size:2,n_iters:8}]")


def test_torchrun_two_processes_match_one(tmp_path):
    np.save(tmp_path / "emb.npy", make_blobs(np.random.default_rng(0), n=4001, d=16))
    args = (*ARGS, f"curation.embeddings={tmp_path / 'emb.npy'}")
    single = run_cli(*args, f"hydra.run.dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "run.py"), *args, f"hydra.run.dir={tmp_path / 'two'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    logs = proc.stderr + proc.stdout + "".join(p.read_text() for p in (tmp_path / "two").glob("*.log"))
    assert "rank 1 of 2" in logs  # two processes joined one group (plain `python run.py` joins none)
    one, two = np.load(tmp_path / "one" / "indices.npy"), np.load(tmp_path / "two" / "indices.npy")
    np.testing.assert_array_equal(one, two)
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["subset_size"] == 600
    levels = json.loads((tmp_path / "two" / "clustering" / "level1.json").read_text())
    assert levels["n_clusters"] == 60
