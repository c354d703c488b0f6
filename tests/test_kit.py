"""The study kit (experiments/kit/) and the core's persistence helpers (sslcurate.io) the studies use."""

import json

import numpy as np
import pytest

from experiments.kit.cache import cache_path, cached
from experiments.kit.levels import levels_given
from experiments.kit.metrics import mean_std, no_value, per_metric, summarize
from sslcurate import artifacts, io


def test_config_hash_is_stable():
    """The hash that names every cache entry never changes: committed results' caches keep hitting."""
    assert io.config_hash({"threshold": 0.9, "n": 3, "data": "x"}) == "a00978d0025b9905"
    assert io.config_hash({"a": np.int64(2), "b": np.float32(0.5)}) == io.config_hash({"b": 0.5, "a": 2})


def test_artifacts_store_levels_with_the_io_helpers():
    """The level store writes with sslcurate.io's atomic helpers and keys levels with its hash (one copy)."""
    assert artifacts.atomic_save_json is io.atomic_save_json and artifacts.config_hash is io.config_hash
    assert artifacts.TEMP_SUFFIX == io.TEMP_SUFFIX


def test_cache_path_is_kind_then_hash_of_the_key(tmp_path):
    """``cache/kind/<prefix><config_hash(key)><suffix>``: the layout the studies' caches had before the kit."""
    key = {"emb": "abc", "n": 5, "threshold": 0.95, "n_clusters": None}
    assert cache_path(tmp_path, "text_dedup", key, prefix="kept-") == \
        tmp_path / "text_dedup" / f"kept-{io.config_hash(key)}.npy"
    assert cache_path(tmp_path, "satellite_tiles", key, suffix="") == tmp_path / "satellite_tiles" / io.config_hash(key)


def test_cached_computes_once_then_reads_back(tmp_path, caplog):
    """A miss computes, writes the entry and its record; a hit reads it back without computing."""
    calls = []

    def compute():
        calls.append(1)
        return np.arange(4, dtype=np.int64)

    key = {"a": 1}
    first = cached("stage", key, compute, cache=tmp_path, record=lambda x: {**key, "shape": list(x.shape)})
    assert not first.hit and first.path == cache_path(tmp_path, "stage", key)
    assert json.loads(first.path.with_suffix(".json").read_text()) == {"a": 1, "shape": [4]}
    with caplog.at_level("INFO"):
        second = cached("stage", key, compute, cache=tmp_path, mmap=True)
    assert second.hit and calls == [1] and isinstance(second.value, np.memmap)
    np.testing.assert_array_equal(second.value, first.value)
    assert f"stage: reusing {first.path}" in caplog.text
    assert not cached("stage", key, compute, cache=tmp_path, reuse=False).hit and calls == [1, 1]
    doc = cached("results", key, lambda: {"metrics": {"x": 1.5}}, cache=tmp_path, suffix=".json")
    assert cached("results", key, list, cache=tmp_path, suffix=".json").value == doc.value == {"metrics": {"x": 1.5}}
    with pytest.raises(ValueError, match="no format"):
        cached("other", key, compute, cache=tmp_path, suffix=".pt")


def test_mean_std_and_missing_values():
    s = summarize([0.1, 0.3])
    assert mean_std(s, 3) == "0.200 ± 0.100"
    assert mean_std(s, 1, scale=100) == "20.0 ± 10.0"
    assert mean_std(None, missing="–") == "–" and mean_std({"mean": float("nan"), "std": 0.0}, missing="–") == "–"
    assert mean_std({"mean": float("nan"), "std": 0.0}, 2) == "nan ± 0.00"  # no `missing`: as it is
    assert no_value({"mean": None}) and not no_value(s)


def test_per_metric_lists_each_metric_over_seeds():
    assert per_metric([{"a": 1, "b": 2}, {"a": 3, "b": 4}]) == {"a": [1, 3], "b": [2, 4]}


def test_levels_given_reads_the_node_from_the_overrides():
    assert levels_given(overrides=["curation.levels=[{n_clusters:5}]"])
    assert not levels_given(overrides=["flat_curation.levels=[]"])
    assert levels_given("flat_curation", ["+flat_curation.levels.0.n_clusters=5"])
