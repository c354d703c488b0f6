"""A run killed inside a level resumes from its checkpoints to the same result as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ROOT, make_blobs
from sslcurate import LevelConfig, hierarchical_kmeans
from sslcurate.artifacts import Checkpoint, LevelStore

LEVELS = [LevelConfig(30, 2, 20, n_iters=6), LevelConfig(5, 1, 2, n_iters=6)]
SPLIT_LEVELS = [LevelConfig(40, 1, 20, n_iters=6, split=4), LevelConfig(5, 0, 1, n_iters=6)]


class Crash(Exception):
    pass


class CrashingCheckpoint(Checkpoint):
    """Saves like a Checkpoint, then dies at the ``nth`` save whose tag contains ``where`` (after writing it)."""

    def __init__(self, *args, where: str, nth: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.where, self.left = where, nth

    def save(self, tag, arrays, meta, shared=True):
        super().save(tag, arrays, meta, shared)
        if self.where in tag:
            self.left -= 1
            if self.left == 0:
                raise Crash(tag)


class CrashingStore(LevelStore):
    def __init__(self, *args, where: str, nth: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.where, self.nth = where, nth

    def checkpoint(self, i):
        plain = super().checkpoint(i)
        return CrashingCheckpoint(plain.root, plain.key_hash, plain.every, plain.every_seconds, where=self.where,
                                  nth=self.nth)


@pytest.fixture(scope="module")
def x():
    return make_blobs(np.random.default_rng(5), n=2500, d=8, centers=12)


def _store(root, cls=LevelStore, **kwargs):
    return cls(root, {"resume-test": 1}, checkpoint_every=2, checkpoint_seconds=0.0, **kwargs)


@pytest.mark.parametrize("levels,where,nth", [
    (LEVELS, "round0.init", 7),     # inside k-means++ of the first run of level 1
    (LEVELS, "round0.lloyd", 2),    # between Lloyd iterations
    (LEVELS, "rounds", 1),          # between resampling rounds
    (LEVELS, "round2.lloyd", 1),    # inside the last round's k-means
    (LEVELS, "level2", 10 ** 9),    # never: the uninterrupted run itself (sanity)
    (SPLIT_LEVELS, "fine", 3),      # inside the split's fine clusters
    (SPLIT_LEVELS, "coarse.lloyd", 1),
])
def test_crash_and_resume_gives_the_uninterrupted_result(x, tmp_path, levels, where, nth):
    reference = hierarchical_kmeans(x, levels, seed=3, store=_store(tmp_path / "ref"))
    try:
        hierarchical_kmeans(x, levels, seed=3, store=_store(tmp_path / "run", CrashingStore, where=where, nth=nth))
        crashed = False
    except Crash:
        crashed = True
    assert crashed == (nth < 10 ** 9)
    resumed = hierarchical_kmeans(x, levels, seed=3, store=_store(tmp_path / "run"))
    for a, b in zip(resumed.levels, reference.levels):
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.assignments, b.assignments)
    assert not (tmp_path / "run" / "checkpoints" / "level1").exists()  # removed once the level is saved
    # Checkpointing itself does not move the result off a run without any store.
    plain = hierarchical_kmeans(x, levels, seed=3)
    np.testing.assert_allclose(plain.levels[0].centroids, reference.levels[0].centroids, rtol=1e-5, atol=1e-5)


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from sslcurate import LevelConfig, hierarchical_kmeans
    from sslcurate.artifacts import LevelStore
    x = np.load(sys.argv[1])
    levels = [LevelConfig(60, 3, 10, n_iters=40), LevelConfig(6, 1, 2, n_iters=5)]
    store = LevelStore(sys.argv[2], {"kill-test": 1}, checkpoint_every=1, checkpoint_seconds=0.0)
    tree = hierarchical_kmeans(x, levels, seed=9, store=store)
    np.save(sys.argv[3], tree.levels[0].assignments)
""")


def test_sigkill_mid_level_then_resume(x, tmp_path):
    """SIGKILL (no cleanup at all) as soon as a Lloyd checkpoint of resampling round 1 exists; a rerun resumes
    mid-level and ends with the same level 1 as an uninterrupted run."""
    big = make_blobs(np.random.default_rng(6), n=20000, d=16, centers=40)
    np.save(tmp_path / "x.npy", big)
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    ckpt = tmp_path / "run" / "checkpoints" / "level1" / "level1.round1.lloyd.npz"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "x.npy"),
                             str(tmp_path / "run"), str(tmp_path / "killed.npy")], env=env)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "run" / "level1.json").exists(), "the run was not killed mid-level"
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "x.npy"), str(tmp_path / "run"),
                    str(tmp_path / "resumed.npy")], env=env, check=True)
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "x.npy"), str(tmp_path / "ref"),
                    str(tmp_path / "reference.npy")], env=env, check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "reference.npy"))
