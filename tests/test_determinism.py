"""Same seed, same subset: whatever the thread count, world size, backend, precision or float rounding.

The data are tie-heavy on purpose (exact duplicates, isolated pairs, lattice grids, one point repeated k times):
there, every decision (k-means++ pick, nearest centroid, closest-to-centroid sample) has exact ties, and any
arithmetic that breaks them its own way changes the subset. Gaussian data would hide that.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT
from sslcurate import CurationConfig, LevelConfig, curate, kmeans
from sslcurate.io import atomic_save_npy
from sslcurate.assign import int8_fast
from sslcurate.canonical import canonical_pair_distances, canonical_row_distances, canonical_sq_dist
from sslcurate.fused import _module, fused_available
from sslcurate.kmeans import kmeans_plusplus

KINDS = ("duplicates", "pairs", "lattice", "repeated")


def tie_heavy(kind: str, seed: int = 0, d: int = 8) -> np.ndarray:
    """(n, d) float32 pools whose distances tie exactly."""
    rng = np.random.default_rng(seed)
    if kind == "duplicates":  # 150 distinct points, each 1-6 times
        base = rng.normal(size=(150, d)) * 5
        x = np.repeat(base, rng.integers(1, 7, 150), axis=0)
    elif kind == "pairs":  # isolated pairs: either point of a pair lowers the k-means++ potential equally
        x = np.repeat(rng.normal(size=(200, d)) * 10, 2, axis=0) + 0.1 * rng.normal(size=(400, d))
    elif kind == "lattice":  # integer grid: points equidistant from several centroids, repeated
        g = np.stack(np.meshgrid(*[np.arange(5)] * 3), -1).reshape(-1, 3)
        x = np.concatenate([np.repeat(g, 3, axis=0), np.zeros((3 * len(g), max(0, d - 3)))], axis=1)
    else:  # one point repeated k times among a few others
        x = np.concatenate([np.repeat(rng.normal(size=(1, d)), 60, axis=0), rng.normal(size=(240, d)) * 3])
    return rng.permutation(x).astype(np.float32)


def config(n: int, **kmeans) -> CurationConfig:
    k1 = max(4, n // 8)
    return CurationConfig(levels=[LevelConfig(k1, 2, 3, n_iters=8), LevelConfig(max(2, k1 // 5), 2, 2, n_iters=8)],
                          target_size=n // 4, seed=3, kmeans={"init": "k-means++", **kmeans})


def selection_hash(x: np.ndarray, **kmeans) -> str:
    return hashlib.sha1(curate(x, config(len(x), **kmeans)).indices.tobytes()).hexdigest()


def precisions() -> list[str]:
    """The reduced precisions this CPU runs (bf16 always runs, through torch)."""
    out = ["fp32", "bf16"]
    if fused_available("int8") or int8_fast("cpu"):
        out.append("int8")
    if fused_available("int16"):
        out.append("int16")
    return out


def backends() -> list[str]:
    return ["torch", "faiss"] + (["fused"] if fused_available("f32") else [])


def test_canonical_distance_kernel_matches_numpy_bit_for_bit():
    """The C twin of the canonical distance rounds exactly as the numpy definition, for any d."""
    if _module() is None:
        pytest.skip("C extension not built")
    rng = np.random.default_rng(0)
    for d in (1, 3, 8, 13, 64, 130):
        x = (rng.normal(size=(300, d)) * 10 ** rng.uniform(-3, 3, size=(300, 1))).astype(np.float32)
        c = rng.normal(size=(7, d)).astype(np.float32)
        idx = rng.integers(0, 7, 300)
        fast = canonical_row_distances(torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(idx))
        slow = canonical_sq_dist(x, c[idx]).astype(np.float32)
        np.testing.assert_array_equal(fast.numpy(), slow)
        rows = rng.integers(0, 300, 500)
        cols = rng.integers(0, 7, 500)
        np.testing.assert_array_equal(canonical_pair_distances(x, c, rows, cols), canonical_sq_dist(x[rows], c[cols]))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2 ** 16), d=st.sampled_from([3, 8, 72]))
def test_every_backend_and_precision_selects_the_same_subset(kind, seed, d):
    """fused / torch / faiss at fp32, and every reduced precision this CPU runs: identical indices."""
    x = tie_heavy(kind, seed, d)
    reference = selection_hash(x, backend="torch", precision="fp32")
    for backend in backends():
        assert selection_hash(x, backend=backend, precision="fp32") == reference, backend
    for precision in precisions():
        assert selection_hash(x, backend="auto", precision=precision) == reference, precision


def _perturbed(fn, seed: int, rel: float = 2.0 ** -21):
    """``fn`` (torch.mm / torch.addmm) whose float32 results are off by a few ulps, as another thread count or
    CPU may round them."""
    gen = torch.Generator().manual_seed(seed)

    def wrapped(*args, out=None, **kwargs):
        r = fn(*args, **kwargs)
        if r.dtype == torch.float32:
            r = r * (1 + rel * (torch.rand(r.shape, generator=gen) * 2 - 1))
        if out is not None:
            out.copy_(r)
            return out
        return r
    return wrapped


@pytest.mark.parametrize("kind", ["pairs", "lattice"])
def test_kmeans_plusplus_ignores_gemm_rounding(monkeypatch, kind):
    """The issue's reproduction: isolated pairs tie exactly in the k-means++ potential; a GEMM that rounds
    differently (another thread count, another CPU) must not change the centres."""
    x = torch.from_numpy(tie_heavy(kind, 1))
    reference = kmeans_plusplus(x, 30, np.random.default_rng(1))
    for seed in (1, 2):
        with monkeypatch.context() as m:
            m.setattr(torch, "mm", _perturbed(torch.mm, seed))
            torch.testing.assert_close(kmeans_plusplus(x, 30, np.random.default_rng(1)), reference, rtol=0, atol=0)


def _jittered_mm(seed: int, eps: float):
    """torch.mm whose float32 results are off by up to ``eps`` in absolute terms: the worst a GEMM's rounding
    may do to a squared distance of cancelling terms, which is where the k-means++ draw weights live."""
    gen = torch.Generator().manual_seed(seed)
    mm = torch.mm

    def wrapped(a, b, out=None):
        r = mm(a, b)
        if r.dtype == torch.float32:
            r = r + eps * (torch.rand(r.shape, generator=gen) * 2 - 1)
        if out is not None:
            out.copy_(r)
            return out
        return r
    return wrapped


@pytest.mark.parametrize("n,k,d", [(40, 30, 8), (600, 300, 2), (1000, 120, 16)])
def test_kmeans_plusplus_draw_weights_ignore_gemm_rounding(monkeypatch, n, k, d):
    """The D^2 draw weights must not come from the step GEMM: a thread count that rounds the GEMM differently
    changed one draw of the simulated study's r=2 resampling round (n=600, k=300, d=2), and every later centre
    with it. Here the GEMM is off by up to a quarter of its rounding bound; weighted draws (k-means||) too."""
    rng = np.random.default_rng(n)
    x = torch.from_numpy((np.repeat(rng.normal(size=(n // 2, d)) * 10, 2, 0)
                          + 0.1 * rng.normal(size=(n, d))).astype(np.float32))
    w = torch.from_numpy(rng.integers(1, 4, n).astype(np.float64))
    x_max = float(x.norm(dim=1).max())
    eps = 0.25 * (d + 8) * 2.0 ** -24 * (2 * x_max) ** 2
    for weights in (None, w):
        reference = kmeans_plusplus(x, k, np.random.default_rng(5), weights=weights)
        with monkeypatch.context() as m:
            m.setattr(torch, "mm", _jittered_mm(7, eps))
            jittered = kmeans_plusplus(x, k, np.random.default_rng(5), weights=weights)
        torch.testing.assert_close(jittered, reference, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_lloyd_assignments_ignore_gemm_rounding(monkeypatch, kind):
    """Nearest-centroid ties (lattice points between centroids) go to the same centroid whatever the rounding
    of the distance GEMM; the torch path, perturbed, agrees with the fused and faiss paths."""
    x = tie_heavy(kind, 2)
    kw = dict(n_iters=6, seed=0, init="random", bounds=False)
    reference = kmeans(x, 20, backend="faiss", **kw)
    for seed in (1, 2):
        with monkeypatch.context() as m:
            m.setattr(torch, "addmm", _perturbed(torch.addmm, seed))
            res = kmeans(x, 20, backend="torch", **kw)
        np.testing.assert_array_equal(res.assignments, reference.assignments)
        np.testing.assert_array_equal(res.distances, reference.distances)


@pytest.mark.parametrize("kind", ["pairs", "duplicates"])
def test_early_stop_reads_the_same_objective_everywhere(kind):
    """``tol`` stops on the objective; it comes from exact float64 cluster sums, so every backend, with or without
    bounds, and a GEMM rounded differently, records the same history bit for bit and stops at the same step."""
    x = tie_heavy(kind, 4, 16)
    kw = dict(n_iters=30, seed=0, init="k-means++", tol=1e-3)
    reference = kmeans(x, 25, backend="torch", bounds=False, **kw)
    assert 1 < reference.n_iters < 30  # the early stop decided
    runs = [kmeans(x, 25, backend=b, bounds=bounds, **kw) for b in backends() for bounds in (False, True)]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch, "addmm", _perturbed(torch.addmm, 3))
        runs.append(kmeans(x, 25, backend="torch", bounds=False, **kw))
    for res in runs:
        assert res.history == reference.history
        np.testing.assert_array_equal(res.centroids, reference.centroids)


@pytest.mark.parametrize("kind", ["pairs", "lattice"])
def test_kmeans_parallel_draws_the_same_candidates_on_every_backend(kind):
    """k-means|| keeps a row when its hash falls below its D^2 share: the share comes from canonical distances,
    so backends that round differently keep the same candidates and reach the same centres."""
    x = tie_heavy(kind, 6, 16)
    kw = dict(n_iters=3, seed=2, init="k-means||", bounds=False)
    reference = kmeans(x, 30, backend="torch", **kw)
    for b in backends():
        np.testing.assert_array_equal(kmeans(x, 30, backend=b, **kw).centroids, reference.centroids)


THREAD_SCRIPT = """
import hashlib, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_determinism import KINDS, selection_hash, tie_heavy
print(",".join(selection_hash(tie_heavy(kind, 5, 72)) for kind in KINDS))
"""


def test_thread_count_does_not_change_the_subset():
    """OMP_NUM_THREADS=1 and 2, in fresh processes (torch reads it at start)."""
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        proc = subprocess.run([sys.executable, "-c", THREAD_SCRIPT.format(tests=str(ROOT / "tests"))],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(proc.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]


def _world_worker(rank, world, init_file, out):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        hashes = [selection_hash(tie_heavy(kind, 5, 72)) for kind in KINDS]
        if rank == 0:
            out.write_text(",".join(hashes))
    finally:
        tdist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_world_size_does_not_change_the_subset(tmp_path, world):
    """gloo with 2 and 3 processes (unequal shards) selects what one process selects."""
    mp.start_processes(_world_worker, args=(world, tmp_path / "init", tmp_path / "out"), nprocs=world, join=True,
                       start_method="spawn")
    assert (tmp_path / "out").read_text() == ",".join(selection_hash(tie_heavy(kind, 5, 72)) for kind in KINDS)


def test_outputs_follow_the_umask(tmp_path):
    """Atomic writes get 0666 less the umask (mkstemp alone would give 0600)."""
    old = os.umask(0o027)
    try:
        atomic_save_npy(tmp_path / "a.npy", np.arange(3))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o640


def test_finished_run_leaves_no_temp_files_or_empty_checkpoint_folders(tmp_path):
    """A temp file that a killed write left behind is gone after the next successful run, and so is the empty
    clustering/checkpoints/ folder; report.json says what the run was made on."""
    (tmp_path / "clustering").mkdir(parents=True)
    (tmp_path / ".indices.npy.k1ll3d.tmp").write_bytes(b"half")
    (tmp_path / "clustering" / ".level1_centroids.npy.abc.tmp").write_bytes(b"half")
    x = tie_heavy("pairs", 0)
    curate(x, config(len(x)), out_dir=tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "clustering" / "checkpoints").exists()
    env = json.loads((tmp_path / "report.json").read_text())["environment"]
    assert env["torch_threads"] == torch.get_num_threads() and env["world_size"] == 1
    assert isinstance(env["cpu_flags"], list) and "cpu_model" in env


def test_cli_threads_and_torchrun_give_byte_identical_indices(tmp_path):
    """The issue's commands on isolated-pair data: OMP_NUM_THREADS=1, =2 and torchrun with 2 processes write the
    same indices.npy, readable by others (0644 under umask 022)."""
    x = np.repeat(np.random.default_rng(0).normal(size=(1500, 32)) * 10, 2, axis=0)
    x = (x + 0.1 * np.random.default_rng(1).normal(size=x.shape)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    args = ("experiment=curate", f"curation.embeddings={tmp_path / 'emb.npy'}", "curation.target_size=600",
            "logger=none", "progress=false",
            "curation.levels=[{n_clusters:100,resampling_steps:2,sample_size:15,n_iters:10},"
            "{n_clusters:30,resampling_steps:2,sample_size:2,n_iters:10}]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"})
    outs = []
    for name, threads, launcher in (("t1", "1", []), ("t2", "2", []),
                                    ("w2", "1", ["-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node=2"])):
        proc = subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"), *args,
                               f"hydra.run.dir={tmp_path / name}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env={**env, "OMP_NUM_THREADS": threads},
                              preexec_fn=lambda: os.umask(0o022))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(tmp_path / name / "indices.npy")
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()
    assert stat.S_IMODE(outs[0].stat().st_mode) == 0o644
    assert json.loads((tmp_path / "w2" / "report.json").read_text())["environment"]["world_size"] == 2
