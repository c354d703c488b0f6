"""curate(): determinism, resumption after an interruption, reuse of the clustering, and bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import sslcurate.hierarchy as hierarchy
from conftest import make_blobs
from sslcurate import CurationConfig, CurationInputError, LevelConfig, SamplingConfig, curate

LEVELS = [LevelConfig(40, 2, 10, n_iters=10), LevelConfig(8, 2, 2, n_iters=10)]


def config(**kw):
    return CurationConfig(levels=[LevelConfig(**vars(lv)) for lv in LEVELS], target_size=kw.pop("target_size", 300),
                          **kw)


@pytest.fixture(scope="module")
def pool():
    return make_blobs(np.random.default_rng(0), n=2000, d=8)


def test_same_seed_same_subset(pool, tmp_path):
    a = curate(pool, config(seed=3), out_dir=tmp_path / "a")
    b = curate(pool, config(seed=3), out_dir=tmp_path / "b")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "indices.npy"), a.indices)
    assert np.load(tmp_path / "a" / "indices.npy").dtype == np.int64
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["subset_size"] == 300 and set(report["levels"]) == {"1", "2"}
    c = curate(pool, config(seed=4))
    assert not np.array_equal(a.indices, c.indices)


class Interrupt(Exception):
    pass


def test_resume_after_interruption(pool, tmp_path, monkeypatch):
    """A run killed after level 1 resumes at level 2 and ends with the same subset as an uninterrupted run."""
    reference = curate(pool, config(), out_dir=tmp_path / "ref")
    calls = []
    real = hierarchy.cluster_level

    def dies_at_level_2(x, level, *, index, **kw):
        calls.append(index)
        if index == 2 and len(calls) == 2:
            raise Interrupt
        return real(x, level, index=index, **kw)

    monkeypatch.setattr(hierarchy, "cluster_level", dies_at_level_2)
    with pytest.raises(Interrupt):
        curate(pool, config(), out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "clustering" / "level1.json").exists()
    assert not (tmp_path / "run" / "indices.npy").exists()
    resumed = curate(pool, config(), out_dir=tmp_path / "run")
    assert calls == [1, 2, 2]  # level 1 was not recomputed
    np.testing.assert_array_equal(resumed.indices, reference.indices)


def test_new_sampling_settings_reuse_the_clustering(pool, tmp_path, monkeypatch):
    curate(pool, config(), out_dir=tmp_path)
    monkeypatch.setattr(hierarchy, "cluster_level", lambda *a, **k: pytest.fail("clustering recomputed"))
    res = curate(pool, config(target_size=123, sampling=SamplingConfig(strategy="closest", multiplier=2)),
                 out_dir=tmp_path)
    assert res.indices.size == 123


def test_changed_clustering_settings_are_not_reused(pool, tmp_path, monkeypatch):
    curate(pool, config(seed=0), out_dir=tmp_path)
    calls = []
    real = hierarchy.cluster_level
    monkeypatch.setattr(hierarchy, "cluster_level", lambda *a, **k: calls.append(1) or real(*a, **k))
    curate(pool, config(seed=1), out_dir=tmp_path)
    assert len(calls) == 2


def test_report_with_labels(pool):
    labels = np.r_[np.zeros(1900, int), np.ones(100, int)]
    res = curate(pool, config(), labels=labels)
    concepts = res.report["concepts"]
    assert concepts["pool"]["counts"] == [1900, 100]
    assert sum(concepts["subset"]["counts"]) == 300 and concepts["subset"]["coverage"] == 1.0


# ---------------------------------------------------------------- bad input: clear message, no partial output


def _assert_no_outputs(out):
    assert not (out / "indices.npy").exists() and not (out / "report.json").exists()
    assert not list(out.glob("**/*.tmp"))


@pytest.mark.parametrize("bad,first", [("nan", 17), ("inf", 5)])
def test_nan_inf_rows_are_named(pool, tmp_path, bad, first):
    x = pool.copy()
    x[[first, first + 100, first + 200], 3] = np.nan if bad == "nan" else np.inf
    with pytest.raises(CurationInputError, match=rf"3 row\(s\) contain NaN or Inf.*first bad row: index {first}"):
        curate(x, config(), out_dir=tmp_path)
    _assert_no_outputs(tmp_path)


@pytest.mark.parametrize("make,match", [
    (lambda p: np.save(p, np.zeros(10, np.float32)), "2-D"),
    (lambda p: np.save(p, np.zeros((2, 3, 4), np.float32)), "2-D"),
    (lambda p: np.save(p, np.array([["a", "b"]])), "numeric"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"not a numpy file at all"), "not a valid .npy"),
    (lambda p: np.save(p, np.zeros((0, 4), np.float32)), "empty"),
    (lambda p: np.save(p, np.array([[object(), None]], dtype=object), allow_pickle=True), "pickle"),
])
def test_bad_files(tmp_path, make, match):
    path = tmp_path / "emb.npy"
    make(path)
    with pytest.raises(CurationInputError, match=match):
        curate(path, config(), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truncated_file(pool, tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, pool)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CurationInputError, match="truncated"):
        curate(path, config(), out_dir=tmp_path / "out")


def test_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "emb.npy"
    path.write_bytes(pickle.dumps(np.zeros((10, 2))))
    with pytest.raises(CurationInputError):
        curate(path, config())


@pytest.mark.parametrize("levels,match", [
    ([LevelConfig(2001, 0)], "between 1 and the number of points"),
    ([LevelConfig(100, 2, 30)], "larger than the clusters hold"),
    ([LevelConfig(100, 0), LevelConfig(50, 2, 5)], "larger than the clusters hold"),
])
def test_impossible_levels(pool, tmp_path, levels, match):
    with pytest.raises(CurationInputError, match=match):
        curate(pool, CurationConfig(levels=levels, target_size=10), out_dir=tmp_path)
    _assert_no_outputs(tmp_path)


def test_k_below_one_is_rejected():
    with pytest.raises(CurationInputError, match="n_clusters must be >= 1"):
        LevelConfig(0)


def test_levels_must_shrink():
    with pytest.raises(CurationInputError, match="shrink"):
        CurationConfig(levels=[LevelConfig(10, 0), LevelConfig(20, 0)])


def test_target_larger_than_pool_fails_before_clustering(pool, tmp_path, monkeypatch):
    monkeypatch.setattr(hierarchy, "cluster_level", lambda *a, **k: pytest.fail("clustered an impossible job"))
    with pytest.raises(CurationInputError, match="larger than the pool"):
        curate(pool, config(target_size=2001), out_dir=tmp_path)
    _assert_no_outputs(tmp_path)


def test_suggested_levels_follow_the_papers_scaling():
    from sslcurate.planning import plan_run, suggest_levels

    levels = suggest_levels(1_000_000)
    ks = [lv.n_clusters for lv in levels]
    assert 60 <= 1_000_000 / ks[0] <= 90  # ~74 points per level-1 cluster
    assert all(5 <= a / b <= 20 for a, b in zip(ks, ks[1:]))
    assert all(1 <= lv.sample_size * lv.n_clusters <= n for lv, n in zip(levels, [1_000_000] + ks))
    CurationConfig(levels=levels)  # passes the cross-level checks
    plan = plan_run(1_000_000, 384, levels)
    assert all(lv["peak"] == sum(lv["memory"].values()) for lv in plan["levels"])
    assert plan["levels"][0]["memory"]["input"] == 0
    assert plan_run(1_000_000, 384, levels, in_memory=True)["levels"][0]["memory"]["input"] == 4 * 384 * 1_000_000


def test_negative_labels_mean_unlabelled():
    """Junk or unlabelled items (label -1) are counted apart, not crash the report."""
    from sslcurate.metrics import concept_stats

    stats = concept_stats(np.array([0, 0, 1, -1, -1]), pool_labels=np.array([0, 1, 2, -1]))
    assert stats["counts"] == [2, 1, 0] and stats["unlabelled"] == 2
    assert stats["coverage"] == pytest.approx(2 / 3)
    with pytest.raises(CurationInputError, match="integers"):
        concept_stats(np.array([0.5, 1.0]))


def test_dedup_before_curation(pool, tmp_path, monkeypatch):
    """With dedup on, copies never reach the clustering, the selection holds no two copies of one row, and the
    kept rows are reused by a rerun (a new sampling config costs neither dedup nor clustering)."""
    from sslcurate import DedupConfig
    import sslcurate.pipeline as pipeline

    x = np.concatenate([pool, pool[:500]])  # rows 2000-2499 copy rows 0-499
    res = curate(x, config(dedup=DedupConfig(threshold=0.9999)), out_dir=tmp_path)
    assert res.indices.max() < 2000 and np.unique(res.indices).size == 300
    assert len(res.tree.levels[0].assignments) == 2000
    assert res.report["dedup"] == {"threshold": 0.9999, "n_clusters": None, "input_rows": 2500,
                                   "kept_rows": 2000, "dropped_rows": 500}
    assert res.report["pool_size"] == 2000
    monkeypatch.setattr(pipeline, "deduplicate", lambda *a, **k: pytest.fail("dedup recomputed"))
    monkeypatch.setattr(hierarchy, "cluster_level", lambda *a, **k: pytest.fail("clustering recomputed"))
    again = curate(x, config(target_size=200, dedup=DedupConfig(threshold=0.9999)), out_dir=tmp_path)
    assert again.indices.size == 200 and again.indices.max() < 2000


def test_dedup_settings_are_checked():
    with pytest.raises(CurationInputError, match="dedup.threshold"):
        CurationConfig(dedup={"threshold": 2.0})
    with pytest.raises(CurationInputError, match="dedup.n_clusters"):
        CurationConfig(dedup={"threshold": 0.9, "n_clusters": 0})


def test_report_records_the_precision_of_each_level(tmp_path, monkeypatch):
    """precision="auto" resolves per level with that level's k; the report (and the reuse key) names each
    level's choice when they differ."""
    import sslcurate.assign.resolve as assign_mod

    monkeypatch.setattr(assign_mod, "_cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    monkeypatch.setattr(assign_mod, "fused_available", lambda kind="f32": False)  # fused int8: every k alike
    monkeypatch.setattr(assign_mod, "INT8_MIN_K", 30)  # level 1 (k=40) on int8, level 2 (k=8) on bf16
    x = make_blobs(np.random.default_rng(1), n=1500, d=256)
    res = curate(x, config(), out_dir=tmp_path)
    assert res.report["resolved_precision"] == ["int8", "bf16"]
    assert json.loads((tmp_path / "report.json").read_text())["resolved_precision"] == ["int8", "bf16"]
    assert res.indices.size == 300


def test_levels_run_with_the_settings_recorded(pool, tmp_path, monkeypatch):
    """curate() checks the levels once and resolves backend and precision once: each level runs with exactly the
    names the report and the reuse key record (a split level keeps precision "auto", resolved per k-means by its
    own k)."""
    import sslcurate.pipeline as pipeline
    import sslcurate.planning as planning

    checks, seen = [], {}
    real_check, real_level = hierarchy.check_levels, hierarchy.cluster_level

    def check_levels(levels, n_points):
        checks.append(n_points)
        real_check(levels, n_points)

    def cluster_level(x, level, *, settings, index, **kw):
        seen[index] = settings
        return real_level(x, level, settings=settings, index=index, **kw)

    for module in (hierarchy, planning, pipeline):
        monkeypatch.setattr(module, "check_levels", check_levels)
    monkeypatch.setattr(hierarchy, "cluster_level", cluster_level)
    res = curate(pool, config(), out_dir=tmp_path)
    assert checks == [len(pool)]
    assert [seen[i].backend for i in (1, 2)] == [res.report["resolved_backend"]] * 2
    assert seen[1].precision == seen[2].precision == res.report["resolved_precision"] != "auto"
    split = CurationConfig(levels=[LevelConfig(40, 2, 10, n_iters=5, split=4), LevelConfig(8, 2, 2, n_iters=5)],
                           target_size=300)
    curate(pool, split)
    assert seen[1].precision == "auto" and seen[2].precision == res.report["resolved_precision"]
