"""The README's commands and code, run as written (small data in place of the user's files)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_blobs, run_cli

README = (ROOT / "README.md").read_text()


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_python_api_snippet(tmp_path, monkeypatch):
    """The README's Python example runs on an (n, d) .npy file and writes the curated indices."""
    x = make_blobs(np.random.default_rng(0), n=5000, d=8, centers=40)
    np.save(tmp_path / "emb.npy", x)
    monkeypatch.chdir(tmp_path)
    (snippet,) = [b for b in _python_blocks() if "curate(" in b]
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["result"].indices.size == 1000 and len(scope["levels"]) >= 1
    assert (tmp_path / "curated" / "indices.npy").exists()


@pytest.mark.slow
def test_three_level_example(tmp_path):
    """The README's three-level override example, scaled down to a 30k pool."""
    x = make_blobs(np.random.default_rng(0), n=30000, d=8, centers=40)
    np.save(tmp_path / "emb.npy", x)
    proc = run_cli("experiment=curate", f"curation.embeddings={tmp_path / 'emb.npy'}", "curation.target_size=6000",
                   "curation.levels=[{n_clusters:600,resampling_steps:0},{n_clusters:60,sample_size:5},"
                   "{n_clusters:6,sample_size:5}]", "curation.sampling.strategy=random", "curation.seed=1",
                   "logger=none", "progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(tmp_path / "run" / "indices.npy").size == 6000


def test_sweep_command(tmp_path):
    """`-m` with comma-separated values runs one job per combination, each in its own directory."""
    np.save(tmp_path / "emb.npy", make_blobs(np.random.default_rng(0), n=1500, d=8))
    assert "python run.py -m experiment=curate" in README
    proc = run_cli("-m", "experiment=curate", f"curation.embeddings={tmp_path / 'emb.npy'}",
                   "curation.target_size=100", "curation.seed=0,1", "curation.sampling.strategy=random,closest",
                   "curation.levels=[{n_clusters:30,sample_size:10,n_iters:5},{n_clusters:5,sample_size:2,n_iters:5}]",
                   "logger=none", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted((tmp_path / "sweep").glob("*/indices.npy"))
    assert len(jobs) == 4
    assert len({np.load(j).tobytes() for j in jobs}) == 4


def test_sweep_without_a_sweep_dir(tmp_path):
    """`python run.py -m ...` as the README writes it (no hydra.sweep.dir): the jobs land under
    outputs/multiruns/ of the directory the command runs in (the sweep folder is resolved before any job, when
    Hydra's runtime paths are not set yet)."""
    import os
    import subprocess
    import sys

    np.save(tmp_path / "emb.npy", make_blobs(np.random.default_rng(0), n=600, d=8))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SSLCURATE_ROOT"))}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "experiment=curate",
                           f"curation.embeddings={tmp_path / 'emb.npy'}", "curation.target_size=50", "curation.seed=0,1",
                           "curation.levels=[{n_clusters:10,sample_size:5,n_iters:5}]", "logger=none", "progress=false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "outputs" / "multiruns" / "curate").glob("*/*/indices.npy"))) == 2


def test_quickstart_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = 'pip install -e ".[dev]" && python -m pytest'
    assert test_cmd in README and test_cmd in ci
    assert "pip install -e . && python run.py\n" in README


def test_billion_scale_planner_commands():
    """The README's planner commands for the paper's and DINOv3's runs, as written: both refused today (exit 2,
    one line naming the largest part), and the paper's per-rank figure the README quotes is the planner's."""
    import shlex
    import subprocess
    import sys

    block = README[README.index("Plan the paper's run"):]
    block = re.search(r"```bash\n(.*?)```", block, flags=re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and all(c[:3] == ["python", "-m", "sslcurate.planning"] for c in commands)
    outs = [subprocess.run([sys.executable, *c[1:]], capture_output=True, text=True, cwd=ROOT, timeout=120)
            for c in commands]
    for proc in outs:
        assert proc.returncode == 2 and "over the memory budget" in proc.stderr, proc.stderr
    paper = re.search(r"peak per rank ([\d.]+ GiB)", outs[0].stdout).group(1)
    assert f"needs {paper} per rank" in README
