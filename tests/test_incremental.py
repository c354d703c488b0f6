"""Incremental curation (sslcurate.incremental, ``experiment=curate curation.update_from=RUN``): new items are
deduplicated against the kept pool, placed in the existing hierarchy without re-clustering and the whole pool is
sampled again; drift beyond the pool's own p99 distance says when a full re-clustering is due."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import ROOT, run_cli
from sslcurate import LevelConfig, deduplicate, hierarchical_kmeans, hierarchical_sampling
from sslcurate.incremental import (
    DRIFT_THRESHOLD,
    ConcatSource,
    assign_new_rows,
    dedup_new_rows,
    drift,
    drift_reference,
    extend_tree,
)
from sslcurate.metrics import concept_stats

LEVELS = [LevelConfig(40, resampling_steps=2, sample_size=10, n_iters=20), LevelConfig(8, 2, 2, n_iters=20)]


def concept_mixture(rng, n: int, means: np.ndarray, weights: np.ndarray):
    """(n, d) float32 rows of a Gaussian mixture and their concept labels."""
    labels = rng.choice(len(means), size=n, p=weights / weights.sum())
    return (means[labels] + rng.standard_normal((n, means.shape[1]))).astype(np.float32), labels


@pytest.fixture(scope="module")
def concepts():
    rng = np.random.default_rng(5)
    means = rng.normal(0, 5, (12, 8))
    weights = np.array([30, 20, 12, 8, 6, 5, 4, 3, 2, 1.5, 1, 1.0])
    return rng, means, weights


def test_concat_source_reads_like_the_concatenated_array(rng):
    a, b = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    src, ref = ConcatSource([a, b]), np.concatenate([a, b])
    assert src.shape == (12, 3)
    assert np.array_equal(src.read(4, 10), ref[4:10])
    idx = np.array([11, 0, 6, 7, 3])
    assert np.array_equal(src.take(idx), ref[idx])


def test_new_rows_deduplicated_as_greedy_dedup_with_the_pool_first(rng):
    """dedup_new_rows keeps exactly the new rows that deduplicate() keeps on [pool; new] (pool visited first),
    for a pool already free of near-duplicates and new rows holding copies of pool rows and of each other."""
    pool = rng.normal(size=(300, 16)).astype(np.float32)
    pool = pool[deduplicate(pool, 0.9)]
    new = rng.normal(size=(120, 16)).astype(np.float32)
    new[:20] = pool[rng.choice(len(pool), 20)] + 1e-3 * rng.standard_normal((20, 16)).astype(np.float32)
    new[60:80] = new[30:50] * 1.01  # copies among the new rows
    keep = dedup_new_rows(new, pool, 0.9)
    ref = deduplicate(np.concatenate([pool, new]), 0.9)
    assert ref[:len(pool)].all()
    assert np.array_equal(keep, ref[len(pool):])
    assert not keep[:20].any() and not keep[60:80].any() and keep.sum() >= 70


def test_new_rows_go_to_their_nearest_level1_centroid_and_keep_the_tree_above(rng):
    x = rng.normal(size=(500, 8)).astype(np.float32)
    tree = hierarchical_kmeans(x, [LevelConfig(20, 0), LevelConfig(5, 0)], seed=0)
    new = rng.normal(size=(60, 8)).astype(np.float32)
    a, d = assign_new_rows(new, tree.levels[0].centroids)
    sq = ((new[:, None, :].astype(np.float64) - tree.levels[0].centroids[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(a, sq.argmin(1))
    np.testing.assert_allclose(d, sq.min(1), rtol=1e-4)
    grown = extend_tree(tree, a, d)
    assert grown.n_points == 560 and grown.levels[1] is tree.levels[1]
    assert np.array_equal(grown.point_labels(2)[500:], tree.levels[1].assignments[a])


def _update_vs_scratch(concepts, seed: int, b_means=None):
    """Label balance of an update (tree on A, B assigned) and of a from-scratch run on A + B, same seed."""
    _, means, weights = concepts
    r = np.random.default_rng([seed, 99])
    a, la = concept_mixture(r, 2400, means, weights)
    b_means = means if b_means is None else np.asarray(b_means)
    b, lb = concept_mixture(r, 600, b_means, weights[:len(b_means)])
    tree_a = hierarchical_kmeans(a, LEVELS, seed=seed)
    assign, dist = assign_new_rows(b, tree_a.levels[0].centroids)
    grown = extend_tree(tree_a, assign, dist)
    labels = np.concatenate([la, lb])
    upd = hierarchical_sampling(grown, 400, seed=seed)
    scratch = hierarchical_sampling(hierarchical_kmeans(np.concatenate([a, b]), LEVELS, seed=seed), 400, seed=seed)
    ent = lambda idx: concept_stats(labels[idx], 12, labels)["normalized_entropy"]  # noqa: E731
    share = drift(dist, drift_reference(tree_a.levels[0].distances))["share"]
    return ent(upd), ent(scratch), np.intersect1d(upd, scratch).size / 400, share, ent(r.choice(3000, 400, False))


def test_update_is_as_balanced_as_a_from_scratch_run_when_b_comes_from_a(concepts):
    """B drawn from A's distribution: over 4 seeds, the update's label balance is within two seed-spreads of the
    from-scratch run on A + B (and far above random); the two selections share more than random ones would;
    the drift share stays under the default threshold."""
    runs = np.array([_update_vs_scratch(concepts, s) for s in range(4)])
    upd, scratch, overlap, share, rand = runs.T
    print(f"update {upd.mean():.3f}+-{upd.std():.3f} scratch {scratch.mean():.3f}+-{scratch.std():.3f} "
          f"random {rand.mean():.3f} overlap {overlap.mean():.3f} drift {share}")
    assert abs(upd.mean() - scratch.mean()) <= 2 * scratch.std() + 0.01
    assert upd.mean() > rand.mean() + 0.05
    assert overlap.mean() > 400 / 3000
    assert (share < DRIFT_THRESHOLD).all()


def test_new_concepts_are_reported_as_drift(concepts):
    far = np.random.default_rng(8).normal(0, 5, (4, 8)) + 30.0  # four concepts A never had
    *_, share, _ = _update_vs_scratch(concepts, 0, b_means=list(far))
    assert share > 0.5 > DRIFT_THRESHOLD
    report = drift(np.array([5.0] * 10), 1.0, before={"added": 990, "beyond": 10})
    assert report["share"] == 1.0 and report["since_clustering"]["share"] == 20 / 1000
    assert not report["recommend_reclustering"]  # 2% over everything added since the clustering


# ---------------------------------------------------------------------------------------------------- product

ARGS = ["experiment=curate", "data=embeddings", "logger=none", "progress=false"]


@pytest.fixture(scope="module")
def grown_pool(tmp_path_factory, concepts):
    """a.npy (600 rows), ab.npy (a + 150 rows of the same distribution), abc.npy (+ 100 of new concepts) and
    their labels."""
    _, means, weights = concepts
    root = tmp_path_factory.mktemp("grown")
    r = np.random.default_rng(11)
    a, la = concept_mixture(r, 600, means, weights)
    b, lb = concept_mixture(r, 150, means, weights)
    c, lc = concept_mixture(r, 100, r.normal(0, 8, (2, 8)), np.ones(2))  # far from A's concepts
    np.save(root / "a.npy", a)
    np.save(root / "ab.npy", np.concatenate([a, b]))
    np.save(root / "abc.npy", np.concatenate([a, b, c]))
    np.save(root / "labels.npy", np.concatenate([la, lb, lc + 12]))
    return root


def _curate(root, data: str, out, *extra, n_labels: int = 850):
    labels = root / f"labels_{n_labels}.npy"
    if not labels.exists():
        np.save(labels, np.load(root / "labels.npy")[:n_labels])
    proc = run_cli(*ARGS, f"data.path={root / data}", f"curation.labels={labels}", "curation.target_size=150",
                   "curation.dedup.threshold=0.999", f"hydra.run.dir={out}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), proc.stdout + proc.stderr


def test_update_command_adds_new_rows_resumes_identically_and_chains(grown_pool, tmp_path):
    """The README's update command: only rows past the previous input are new; the report and page show the
    update and its drift; a run killed before its outputs (pool record, manifest and report gone, a temp file
    left) reruns to the same manifest, as does a fresh directory; a second update chains on the first, and the
    new concepts it brings are reported as drift with re-clustering recommended."""
    root = grown_pool
    _curate(root, "a.npy", tmp_path / "a", n_labels=600)
    report, _ = _curate(root, "ab.npy", tmp_path / "ab", f"curation.update_from={tmp_path / 'a'}", n_labels=750)
    u = report["update"]
    assert u["new_items_embedded"] == 150 and u["new_added"] + u["new_near_duplicates"] == 150
    assert u["pool"] == u["previous_pool"] + u["new_added"] and report["pool_size"] == u["pool"]
    assert not u["drift"]["recommend_reclustering"]
    table = pq.read_table(tmp_path / "ab" / "manifest.parquet")
    rows = [int(i.split()[1]) for i in table.column("item").to_pylist()]
    assert table.num_rows == 150 and max(rows) >= 600  # new rows are selected too
    assert "update of" in (tmp_path / "ab" / "report.html").read_text()

    for name in ("manifest.parquet", "report.json", "pool/pool.json", "indices.npy"):
        (tmp_path / "ab" / name).unlink()
    (tmp_path / "ab" / "pool" / ".level1_assignments.npy.x.tmp").write_bytes(b"half")
    _curate(root, "ab.npy", tmp_path / "ab", f"curation.update_from={tmp_path / 'a'}", n_labels=750)
    assert pq.read_table(tmp_path / "ab" / "manifest.parquet").equals(table)
    assert not list((tmp_path / "ab").rglob("*.tmp"))
    _curate(root, "ab.npy", tmp_path / "fresh", f"curation.update_from={tmp_path / 'a'}", n_labels=750)
    assert pq.read_table(tmp_path / "fresh" / "manifest.parquet").equals(table)

    report, log = _curate(root, "abc.npy", tmp_path / "abc", f"curation.update_from={tmp_path / 'ab'}")
    d = report["update"]["drift"]
    assert report["update"]["previous_pool"] == u["pool"] and report["update"]["new_items_embedded"] == 100
    assert d["share"] > 0.3 and d["recommend_reclustering"] and "re-clustering is recommended" in log
    assert d["since_clustering"]["added"] == u["new_added"] + report["update"]["new_added"]
    assert report["concepts"]["subset"]["counts"][12:] != [0, 0]  # the new concepts are in the subset


@pytest.mark.parametrize("case", ["missing", "not_a_run", "shrunk", "same_dir"])
def test_bad_update_sources_fail_in_one_line(grown_pool, tmp_path, case):
    root = grown_pool
    if case in ("shrunk", "same_dir"):
        _curate(root, "ab.npy", tmp_path / "prev", n_labels=750)
    base = {"missing": tmp_path / "nowhere", "not_a_run": tmp_path, "shrunk": tmp_path / "prev",
            "same_dir": tmp_path / "prev"}[case]
    out = tmp_path / ("prev" if case == "same_dir" else "out")
    proc = run_cli(*ARGS, f"data.path={root / 'a.npy'}", "curation.target_size=100",
                   f"curation.update_from={base}", f"hydra.run.dir={out}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in log
    expected = {"missing": "is not a directory", "not_a_run": "holds no finished curation",
                "shrunk": "may only grow", "same_dir": "another run directory"}[case]
    assert expected in log.strip().splitlines()[-1]


def _images(folder, colour, n, rng, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        a = (rng.normal(size=(40, 40, 3)) * 40 + colour).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")


def test_image_folder_update_embeds_only_new_items_and_drops_removed_ones(tmp_path):
    """Update of an image folder: only the added files are embedded (the log names their count), a deleted file
    leaves the pool, and a seed folder of the new kind retrieves them in the same run."""
    rng = np.random.default_rng(2)
    pool = tmp_path / "pool"
    for name, colour, n in (("red", (200, 30, 30), 24), ("green", (30, 200, 30), 10), ("blue", (30, 30, 200), 6)):
        _images(pool / name, colour, n, rng)
    fast = ["logger=none", "progress=false", "embedder.input_size=64", "data.num_workers=0",
            "embedder.dedup_threshold=null"]
    base = ["experiment=curate", "data=image_folder", f"data.path={pool}", "curation.target_size=16", *fast]
    proc = run_cli(*base, f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _images(pool / "white", (230, 230, 230), 8, rng)
    (pool / "red" / "0.png").unlink()
    _images(tmp_path / "seeds" / "white", (230, 230, 230), 2, rng, start=100)
    proc = run_cli(*base, f"hydra.run.dir={tmp_path / 'b'}", f"curation.update_from={tmp_path / 'a'}",
                   f"curation.retrieval.seed={tmp_path / 'seeds'}", "curation.retrieval.fraction=0.25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embedded 8 items" in proc.stdout + proc.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["update"]["new_items_embedded"] == 8 and report["update"]["removed"] == 1
    assert report["retrieval"]["mix"] == {"retrieval": 4, "clustering": 12}
    table = pq.read_table(tmp_path / "b" / "manifest.parquet").to_pydict()
    got = {i for i, r in zip(table["item"], table["retrieved"]) if r}
    assert len(got) == 4 and all(i.startswith("white/") for i in got)
    assert "red/0.png" not in table["item"]


def test_torchrun_update_and_retrieval_select_what_one_process_does(grown_pool, tmp_path):
    """Two processes: a full run with retrieval, then an update: the same manifests as one process."""
    root = grown_pool
    np.save(root / "seeds.npy", np.load(root / "abc.npy")[[700, 720]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    runs = {"one": [], "two": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]}
    for name, launcher in runs.items():
        for step, data, extra in (("a", "a.npy", [f"curation.retrieval.seed={root / 'seeds.npy'}"]),
                                  ("b", "ab.npy", [f"curation.update_from={tmp_path / name / 'a'}"])):
            proc = subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"), *ARGS, f"data.path={root / data}",
                                   "curation.target_size=120", "curation.dedup.threshold=0.995",
                                   f"hydra.run.dir={tmp_path / name / step}", *extra],
                                  cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for step in ("a", "b"):
        one = pq.read_table(tmp_path / "one" / step / "manifest.parquet")
        assert pq.read_table(tmp_path / "two" / step / "manifest.parquet").equals(one)
    assert sum(pq.read_table(tmp_path / "two" / "a" / "manifest.parquet").column("retrieved").to_pylist()) == 60


def test_bench_incremental_tiny(tmp_path):
    """The benchmark runs the full, update and from-scratch products and writes its table (tiny pool)."""
    out = tmp_path / "incremental"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_incremental.py"), "--n", "1500",
                           "--new", "300", "--dim", "8", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    (run,) = doc["runs"]
    assert run["update"]["new_items_embedded"] == 300 and run["ratio"] > 0
    assert 0 < run["common_share"] <= 1 and run["update_label_entropy"] > 0.5
    assert "| 0 |" in out.with_suffix(".md").read_text()
