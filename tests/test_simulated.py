"""The simulated-data study (experiment=simulated): the KL metric, 1-D generalised k-means, the ordering of the
Fig. 3 methods on a reduced problem, determinism, and the run.py wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import simulated as sim
from experiments.simulated import data
from experiments.simulated.gkmeans1d import assign_sorted, hierarchical_kmeans_1d, kmeans_1d, update_centroids
from experiments.simulated.kde import grid_axis, kde_grid, kl_to_uniform

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """The study's setting (simulated.torch_threads=1): tiny GEMMs run ~10x faster on one thread here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------- metric
def test_kl_of_uniform_points_is_small_and_of_a_clump_is_large():
    """Many uniform points come close to the metric's floor; a tight clump is far from it.

    The floor is not 0: the KDE of a uniform sample sags within ~1 bandwidth of the box edges (the kernels lose
    mass outside), which costs ~0.021 nats at bandwidth 0.5 however many points there are."""
    rng = np.random.default_rng(0)
    assert 0.015 < kl_to_uniform(rng.uniform(-3, 3, (20000, 2))) < 0.025
    assert kl_to_uniform(rng.normal(0, 0.05, (300, 2))) > 1.5


def test_kl_of_raw_fig3_data_matches_the_paper():
    """With the sklearn bandwidth convention (kernel std 0.5) the raw Fig. 3 data give the paper's ~0.94."""
    x, _ = data.mixture_2d(np.random.default_rng(0))
    assert x.shape == (9000, 2)
    assert 0.92 < kl_to_uniform(x) < 0.98


def test_kde_grid_matches_sklearn_kernel_density():
    """kde_grid is sklearn's KernelDensity(bandwidth) evaluated on the grid (separable-kernel shortcut)."""
    from sklearn.neighbors import KernelDensity

    pts = np.random.default_rng(1).normal(0, 1, (50, 2))
    dens = kde_grid(pts, 0.5, 3.0, 0.1)
    g = grid_axis(3.0, 0.1)
    i, j = np.array([3, 30, 45]), np.array([10, 25, 59])
    ref = np.exp(KernelDensity(bandwidth=0.5).fit(pts).score_samples(np.c_[g[j], g[i]]))
    np.testing.assert_allclose(dens[i, j], ref, rtol=1e-10)


# ---------------------------------------------------------------------------------------------- 1-D k-means
def test_1d_kmeans_matches_the_core_objective():
    """Our 1-D k-means (p = 2) lands within 15% of the core k-means objective on the same data (1-D Lloyd
    stops in local optima; the core's greedy k-means++ seeding starts it better than plain D^2 seeding)."""
    from sslcurate import kmeans

    x = data.mixture_1d(np.random.default_rng(0), data.scaled(data.PAPER_1D, 0.02))
    ours = kmeans_1d(x, 100, n_iters=50, seed=0)
    core = kmeans(x[:, None].astype(np.float32), 100, n_iters=50, seed=0)
    assert ours.objective <= 1.15 * core.objective


def test_newton_update_minimises_the_generalised_distortion():
    """For p = 4 and 8 the centroid update reaches the minimiser of sum |x - c|^p of each cluster."""
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(2)
    x = np.sort(np.concatenate([rng.normal(0, 1, 200), rng.exponential(1, 200) + 5]))
    c0 = np.array([0.3, 5.5])
    labels = assign_sorted(x, c0)
    for p in (4, 8):
        c = c0
        for _ in range(20):
            c = update_centroids(x, labels, c, p)
        for j in range(2):
            xs = x[labels == j]
            best = minimize_scalar(lambda t: np.sum((xs - t) ** p), bracket=(xs.min(), xs.max())).x
            assert abs(c[j] - best) < 1e-6


def test_1d_centroid_density_exponents_are_ordered():
    """Centroid density ~ p^a with a decreasing in the distortion power (1/3 > 1/5 > 1/9) and with levels."""
    s = sim.Fig1aSettings(n_clusters=500, levels_2=[2500, 500], levels_3=[5000, 1500, 500], fit_window=1)
    comps = data.scaled(data.PAPER_1D, 0.1)
    x = data.mixture_1d(np.random.default_rng(0), comps)
    a = {p: sim.fit_exponent(kmeans_1d(x, 500, power=p, seed=0).centroids, s, comps)["exponent"] for p in (2, 4, 8)}
    assert abs(a[2] - 1 / 3) < 0.05
    assert a[2] > a[4] > a[8]
    h2 = sim.fit_exponent(hierarchical_kmeans_1d(x, [2500, 500], seed=0)[-1].centroids, s, comps)["exponent"]
    assert h2 < a[2] - 0.1


# ---------------------------------------------------------------------------------------------- Fig. 3 order
@pytest.fixture(scope="module")
def small_fig3():
    """Fig. 3 at 20% of the paper's sizes (1,800 points, 60 centroids), seed 0."""
    torch.set_num_threads(1)
    s = sim.Fig3Settings()
    run = sim.fig3_one_seed(0, s, 0.2)
    return s, run, sim.fig3_kl(run, s)[0]


def test_fig3_methods_keep_the_papers_order(small_fig3):
    """raw > k-means > 3-level hierarchical k-means > 3-level with resampling; agglomerative ~ k-means."""
    _, run, kl = small_fig3
    assert set(kl) == set(sim.FIG3_VARIANTS)
    assert kl["raw"] == max(kl[v] for v in kl if v != "dbscan")
    assert kl["raw"] > kl["kmeans"] > kl["hkmeans_3level"] > kl["hkmeans_3level_resampled"]
    assert kl["kmeans"] > kl["hkmeans_2level"]
    assert kl["agglomerative"] > kl["hkmeans_3level_resampled"]
    for v in ("kmeans", "hkmeans_2level", "hkmeans_3level", "hkmeans_3level_resampled", "agglomerative"):
        assert run[v][0].shape == (60, 2)


def test_fig3_is_deterministic(small_fig3):
    """Same seed, same centroids and the same KL for every method."""
    s, run, kl = small_fig3
    again = sim.fig3_one_seed(0, s, 0.2)
    for v in sim.FIG3_VARIANTS:
        np.testing.assert_array_equal(run[v][0], again[v][0])
    assert sim.fig3_kl(again, s)[0] == kl


def test_dbscan_eps_is_the_knee_of_the_k_distance_curve():
    """On blobs plus sparse noise the elbow eps lies between the in-blob and the noise neighbour distances."""
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.05, (500, 2)), rng.uniform(-3, 3, (50, 2))])
    eps = sim.dbscan_eps(x, 4)
    assert 0.02 < eps < 0.5


# --------------------------------------------------------------------------------------------------- wiring
def _run_cli(tmp: Path, *overrides: str) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "run.py", "experiment=simulated", "logger=none",
                           f"hydra.run.dir={tmp}", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "metrics.json").read_text())


def test_cli_reduced_run_writes_metrics_and_figures(tmp_path):
    """run.py experiment=simulated at 10% size: common metrics format, every variant key, every figure."""
    doc = _run_cli(tmp_path, "simulated.scale=0.1", "simulated.seeds=[0]")
    assert doc["experiment"] == "simulated" and doc["primary_metric"] == "kl_to_uniform"
    assert doc["higher_is_better"] is False
    assert set(doc["results"]) == set(sim.FIG3_VARIANTS)
    for v in sim.FIG3_VARIANTS:
        stats = doc["results"][v]["kl_to_uniform"]
        assert set(stats) == {"mean", "std", "values"} and len(stats["values"]) == 1
    assert set(doc["fig1a"]["variants"]) >= {"kmeans_p2", "kmeans_p4", "kmeans_p8", "hkmeans_2level"}
    assert sum(doc["rings"]["counts"]["curated"]) == doc["rings"]["target_size"]
    for f in ("fig3_centroids.png", "fig3_kde.png", "fig1a_density.png", "rings.png"):
        assert (tmp_path / f).stat().st_size > 10_000


def test_cli_rejects_unknown_keys(tmp_path):
    """A typo in the study's settings fails at start with exit code 2 and a one-line message."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "run.py", "experiment=simulated", "logger=none",
                           f"hydra.run.dir={tmp_path}", "+simulated.fig3.n_clusterz=3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "n_clusterz" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_rerun_gives_the_same_metrics(tmp_path):
    """Two runs with the same seeds write identical metrics.json (all randomness seeded)."""
    args = ("simulated.scale=0.1", "simulated.seeds=[0,1]", "simulated.parts=[fig3,fig1a]")
    assert _run_cli(tmp_path / "a", *args) == _run_cli(tmp_path / "b", *args)


def test_ablation_job_and_collect(tmp_path):
    """One experiment=simulated_ablation job writes its setting's KLs; --collect turns jobs into README tables."""
    from experiments.simulated import report

    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    job = tmp_path / "sweep" / "0"
    proc = subprocess.run([sys.executable, "run.py", "experiment=simulated_ablation", "logger=none",
                           f"hydra.run.dir={job}", "ablation.axis=levels", "ablation.n_levels=1",
                           "ablation.resampling_steps=0", "ablation.seeds=[0]", "ablation.target_size=300"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((job / "metrics.json").read_text())
    assert doc["axis"] == "levels" and doc["value"] == 1
    kl = doc["results"]["levels=1"]
    assert 0.1 < kl["kl_to_uniform"]["mean"] < 0.6  # flat k-means, 300 centroids (paper: 0.340)
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.json").write_text(json.dumps({"seeds": [0], "results": {}}))
    report.collect([tmp_path / "sweep"], results)
    text = report.write_readme(results).read_text()
    assert "number of levels" in text and "| 1 |" in text


def test_report_defaults_to_the_repository_results_folder():
    """``python -m experiments.simulated.report`` without a folder reads and writes results/simulated of the
    repository (it once resolved to experiments/results/ after the study became a package)."""
    from experiments.simulated import report

    root = Path(__file__).resolve().parents[1]
    assert report.DEFAULT_DIR == root / "results" / "simulated" and (report.DEFAULT_DIR / "metrics.json").exists()
