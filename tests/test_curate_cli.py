"""`python run.py experiment=curate ...` end to end, as the README shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_blobs, run_cli

LEVELS = ("curation.levels=[{n_clusters:60,resampling_steps:2,sample_size:10,n_iters:10},"
          "{n_clusters:10,resampling_steps:2,sample_size:2,n_iters:10}]")


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    x = make_blobs(np.random.default_rng(0), n=3000, d=16)
    np.save(d / "emb.npy", x)
    np.save(d / "labels.npy", np.random.default_rng(1).integers(0, 5, 3000))
    return d


def test_curate_end_to_end_and_deterministic(embeddings, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_cli("experiment=curate", f"curation.embeddings={embeddings / 'emb.npy'}",
                       f"curation.labels={embeddings / 'labels.npy'}", "curation.target_size=500", LEVELS,
                       "logger=none", "progress=false", f"hydra.run.dir={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(out)
    a = np.load(outs[0] / "indices.npy")
    assert a.dtype == np.int64 and a.size == 500
    np.testing.assert_array_equal(a, np.load(outs[1] / "indices.npy"))
    report = json.loads((outs[0] / "report.json").read_text())
    assert report["subset_size"] == 500 and "concepts" in report
    metrics = json.loads((outs[0] / "metrics.json").read_text())
    assert metrics["experiment"] == "curate" and set(metrics["results"]) == {"pool", "subset", "random"}
    assert (outs[0] / "cluster_sizes.png").stat().st_size > 10_000
    assert (outs[0] / ".hydra" / "config.yaml").exists()
    info = json.loads((outs[0] / "run_info.json").read_text())
    assert "git_sha" in info


def test_rerun_in_same_dir_reuses_levels(embeddings, tmp_path):
    args = ["experiment=curate", f"curation.embeddings={embeddings / 'emb.npy'}", LEVELS, "logger=none",
            "progress=false", f"hydra.run.dir={tmp_path}"]
    assert run_cli(*args, "curation.target_size=400").returncode == 0
    proc = run_cli(*args, "curation.target_size=200", "curation.sampling.strategy=closest")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing finished clustering" in proc.stderr + proc.stdout
    assert np.load(tmp_path / "indices.npy").size == 200


@pytest.mark.parametrize("override,message", [
    ("curation.target_size=5000", "larger than the pool"),
    ("curation.levels.0.sample_size=200", "larger than the clusters hold"),
    ("curation.levels.0.n_cluster=3", "n_cluster"),  # a typo fails at composition
])
def test_bad_settings_exit_nonzero_without_outputs(embeddings, tmp_path, override, message):
    proc = run_cli("experiment=curate", f"curation.embeddings={embeddings / 'emb.npy'}", LEVELS, override,
                   "logger=none", "progress=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "indices.npy").exists()


def test_bad_embeddings_file(tmp_path):
    bad = tmp_path / "bad.npy"
    x = np.ones((100, 4), np.float32)
    x[42, 1] = np.nan
    np.save(bad, x)
    proc = run_cli("experiment=curate", f"curation.embeddings={bad}", "curation.target_size=10",
                   "curation.levels=[{n_clusters:5,resampling_steps:0}]", "logger=none", f"hydra.run.dir={tmp_path}/o")
    assert proc.returncode == 2
    assert "first bad row: index 42" in proc.stderr + proc.stdout
    assert not (tmp_path / "o" / "indices.npy").exists()


def test_wandb_offline_by_default(embeddings, tmp_path):
    """The default tracker works with no account and no network: an offline run directory to sync later."""
    proc = run_cli("experiment=curate", f"curation.embeddings={embeddings / 'emb.npy'}", "curation.target_size=100",
                   LEVELS, "progress=false", f"hydra.run.dir={tmp_path}", wandb=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_dedup_from_the_command_line(embeddings, tmp_path):
    x = np.load(embeddings / "emb.npy")
    np.save(tmp_path / "dup.npy", np.concatenate([x, x[:1000]]))
    proc = run_cli("experiment=curate", f"curation.embeddings={tmp_path / 'dup.npy'}", "curation.target_size=500",
                   "curation.dedup.threshold=0.9999", LEVELS, "logger=none", "progress=false",
                   f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    idx = np.load(tmp_path / "out" / "indices.npy")
    assert idx.size == 500 and idx.max() < 3000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dedup"]["dropped_rows"] == 1000
