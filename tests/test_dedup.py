import numpy as np
import pytest

from sslcurate import CurationInputError
from sslcurate.dedup import deduplicate


def _reference(x, thr, groups=None, priority=None):
    """Sequential greedy: visit rows by (group, priority, row); drop a row near a kept one of its group."""
    n = len(x)
    groups = np.zeros(n, np.int64) if groups is None else groups
    priority = np.arange(n, dtype=float) if priority is None else priority
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    keep = np.zeros(n, bool)
    kept = []
    for i in np.lexsort((np.arange(n), priority, groups)):
        if not any(groups[j] == groups[i] and u[i] @ u[j] >= thr for j in kept):
            keep[i] = True
            kept.append(i)
    return keep


def _clumpy(rng, n_base=60, d=16, copies=4, noise=0.15):
    """Base vectors with noisy copies: many partial near-duplicate chains at a mid threshold."""
    base = rng.normal(size=(n_base, d))
    x = np.concatenate([base] + [base + noise * rng.normal(size=base.shape) for _ in range(copies)])
    return x[rng.permutation(len(x))].astype(np.float32)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 4096])
def test_matches_sequential_greedy(chunk_rows):
    x = _clumpy(np.random.default_rng(0))
    for thr in (0.97, 0.99):
        keep = deduplicate(x, thr, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(keep, _reference(x, thr))


def test_kept_rows_are_independent_and_every_dropped_row_has_a_kept_twin():
    x = _clumpy(np.random.default_rng(1))
    thr = 0.98
    keep = deduplicate(x, thr, chunk_rows=32)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = u @ u.T
    np.fill_diagonal(sim, -1)
    assert (sim[np.ix_(keep, keep)] < thr).all()
    assert (sim[np.ix_(~keep, keep)] >= thr).any(axis=1).all()
    assert 0 < keep.sum() < len(x)


def test_exact_copies_keep_the_first_occurrence():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 32)).astype(np.float32)
    x = np.concatenate([base, base[::-1] * 3.0, base[:10]])  # scaled copies: same direction, same cosine
    keep = deduplicate(x, 0.999, chunk_rows=16)
    np.testing.assert_array_equal(np.flatnonzero(keep), np.arange(50))


def test_chain_keeps_both_ends():
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.3), np.sin(0.3)])
    c = np.array([np.cos(0.6), np.sin(0.6)])
    thr = np.cos(0.35)  # a~b and b~c, but not a~c
    np.testing.assert_array_equal(deduplicate(np.stack([a, b, c]), thr), [True, False, True])


def test_groups_and_priority():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(1, 8))
    x = np.concatenate([v, v, v, v]).astype(np.float32)
    np.testing.assert_array_equal(deduplicate(x, 0.99, groups=np.array([0, 1, 0, 1])), [True, True, False, False])
    np.testing.assert_array_equal(deduplicate(x, 0.99, priority=np.array([3.0, 1.0, 2.0, 5.0])),
                                  [False, True, False, False])
    x = _clumpy(rng)
    groups = rng.integers(0, 5, len(x))
    prio = rng.normal(size=len(x))
    np.testing.assert_array_equal(deduplicate(x, 0.98, groups=groups, priority=prio, chunk_rows=13),
                                  _reference(x, 0.98, groups, prio))


def test_n_clusters_is_deterministic_and_within_clusters(tmp_path):
    x = _clumpy(np.random.default_rng(4), n_base=120)
    a = deduplicate(x, 0.98, n_clusters=8, seed=5)
    np.testing.assert_array_equal(a, deduplicate(x, 0.98, n_clusters=8, seed=5))
    # clustering can only split duplicates apart, never join non-duplicates: it keeps a superset
    assert (a | deduplicate(x, 0.98)).sum() == a.sum()
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(deduplicate(str(tmp_path / "x.npy"), 0.98, n_clusters=8, seed=5), a)


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": 0.9, "groups": np.zeros(3, np.int64)}, "groups must have shape"),
    ({"threshold": 0.9, "groups": np.zeros(10)}, "integer labels"),
    ({"threshold": 0.9, "priority": np.full(10, np.nan)}, "finite"),
    ({"threshold": 0.9, "groups": np.zeros(10, np.int64), "n_clusters": 2}, "not both"),
    ({"threshold": 0.9, "n_clusters": 11}, "n_clusters"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(CurationInputError, match=match):
        deduplicate(x, **kwargs)


def test_bad_rows_name_the_problem():
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    x[7] = 0
    with pytest.raises(CurationInputError, match=r"all-zero embeddings: row\(s\) \[7\]"):
        deduplicate(x, 0.9)
    x[7] = np.nan
    with pytest.raises(CurationInputError, match="NaN"):
        deduplicate(x, 0.9)


def test_window_scanned_in_blocks(monkeypatch):
    """A window larger than one tile gives the same answer as one tile (the block loop and its group masks)."""
    import sslcurate.dedup as dedup

    rng = np.random.default_rng(6)
    x = _clumpy(rng)
    groups = rng.integers(0, 3, len(x))
    want = _reference(x, 0.98, groups)
    monkeypatch.setattr(dedup, "WINDOW_BLOCK", 7)
    np.testing.assert_array_equal(deduplicate(x, 0.98, groups=groups, chunk_rows=11), want)
    np.testing.assert_array_equal(deduplicate(x, 0.98, chunk_rows=11), _reference(x, 0.98))
