"""The planner: per-rank memory O(N / world x D + k x D), FLOPs per level, refusal before any work."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, make_blobs
from sslcurate import CurationConfig, CurationInputError, LevelConfig, curate
from sslcurate.planning import check_budget, plan_run

LEVELS = [LevelConfig(100_000, 10, 5), LevelConfig(5_000, 10, 10), LevelConfig(500, 10, 5)]


def test_per_rank_memory_scales_with_rows_per_rank_and_k():
    """Doubling the ranks halves the per-row state; doubling N at fixed k and world doubles it; level 1's
    centroids and sums grow with k x D only."""
    a = plan_run(10_000_000, 256, LEVELS, world_size=8)
    b = plan_run(10_000_000, 256, LEVELS, world_size=16)
    c = plan_run(20_000_000, 256, LEVELS, world_size=8)
    state = lambda p: p["levels"][0]["memory"]["row_state"]  # noqa: E731
    assert state(b) == pytest.approx(state(a) / 2, rel=1e-3)
    assert state(c) == pytest.approx(state(a) * 2, rel=1e-3)
    assert a["levels"][0]["memory"]["centroids_and_sums"] == c["levels"][0]["memory"]["centroids_and_sums"]
    assert a["levels"][0]["memory"]["input"] == 0  # memory-mapped: paged a chunk at a time


def test_flops_follow_two_n_k_d_per_pass():
    lv = LevelConfig(1000, 0, 1, n_iters=10)
    plan = plan_run(100_000, 64, [lv])
    assert plan["levels"][0]["flops"]["lloyd"] == 2 * 100_000 * 1000 * 64 * 11  # 10 iterations + final assignment
    resampled = plan_run(100_000, 64, [LevelConfig(1000, 2, 40, n_iters=10)])["levels"][0]["flops"]
    assert resampled["resampling"] > 2 * 2 * 100_000 * 1000 * 64  # 2 rounds, each at least one reassignment
    split = plan_run(100_000, 64, [LevelConfig(1000, 0, 1, n_iters=10, split=10)])["levels"][0]["flops"]
    assert split["lloyd"] < plan["levels"][0]["flops"]["lloyd"] / 4


def test_over_budget_is_refused_with_the_limit_named():
    plan = plan_run(10_000_000, 256, LEVELS, world_size=1, in_memory=True)
    with pytest.raises(CurationInputError, match=r"over the memory budget of 1\.0 GiB.*world size 1"):
        check_budget(plan, 2 ** 30)
    check_budget(plan, plan["peak_rank0"])


def test_curate_refuses_before_any_work(tmp_path):
    x = make_blobs(np.random.default_rng(0), n=2000, d=8)
    cfg = CurationConfig(levels=[LevelConfig(50, 1, 10), LevelConfig(5, 0, 1)], target_size=100,
                         memory_budget_gb=1e-6)
    with pytest.raises(CurationInputError, match="memory budget"):
        curate(x, cfg, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_planner_command():
    args = ["--n", "743e6", "--d", "1024", "--levels", "10000000,500000,50000,10000", "--r", "1,10,5,3",
            "--steps", "0,10,10,10", "--split", "100", "--world", "128"]
    proc = subprocess.run([sys.executable, "-m", "sslcurate.planning", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "level 1: 743,000,000 -> k=10,000,000 (split 100), centroids sharded over ranks" in proc.stdout
    assert "per rank" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sslcurate.planning", *args, "--budget", "1GiB"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "over the memory budget of 1.0 GiB" in proc.stderr


def test_dedup_window_is_planned_and_refused_by_name():
    """Dedup without clusters may hold every kept row; with n_clusters only the largest cluster's."""
    whole = plan_run(20_000_000, 384, LEVELS, world_size=8, dedup=True)
    grouped = plan_run(20_000_000, 384, LEVELS, world_size=8, dedup=True, dedup_clusters=10_000)
    assert whole["dedup"]["memory"]["kept_window"] == 20_000_000 * 384 * 4
    assert grouped["dedup"]["memory"]["kept_window"] == 4 * 2_000 * 384 * 4
    assert whole["peak_rank0"] >= whole["dedup"]["peak"] > grouped["dedup"]["peak"]
    with pytest.raises(CurationInputError, match="near-duplicate removal.*kept_window.*dedup.n_clusters"):
        check_budget(whole, grouped["peak_rank0"])
    check_budget(grouped, grouped["peak_rank0"])


def test_kmeans_parallel_init_is_planned():
    """k-means|| trades the sample's k sequential passes for a few GEMM passes over every row."""
    lv = [LevelConfig(10_000, 0, 1, n_iters=10)]
    pp = plan_run(1_000_000, 128, lv, init="k-means++")["levels"][0]
    par = plan_run(1_000_000, 128, lv, init="k-means||")["levels"][0]
    assert par["flops"]["init"] < pp["flops"]["init"]
    assert par["flops"]["init"] >= 2 * 1_000_000 * 40_000 * 128  # 4 rounds of ~k candidates over every row
    assert par["memory"]["init_sample"] < pp["memory"]["init_sample"]
    # "auto" plans what each k-means will run: k-means|| before 10 iterations here, k-means++ before 50.
    assert plan_run(1_000_000, 128, lv)["levels"][0] == par
    lv50 = [LevelConfig(10_000, 0, 1, n_iters=50)]
    assert plan_run(1_000_000, 128, lv50)["levels"][0]["flops"]["init"] == pp["flops"]["init"]


def test_rank_zero_holds_no_more_and_sampling_is_flat_in_n():
    """Every rank samples from its own rows: rank 0's peak is the others'; at fixed N / world (and fixed k) the
    sampling's per-rank memory does not grow with N."""
    a = plan_run(10_000_000, 256, LEVELS, world_size=8, target_size=1_000_000)
    b = plan_run(40_000_000, 256, LEVELS, world_size=32, target_size=1_000_000)
    assert a["peak_rank0"] == a["peak_per_rank"] and a["rank0_extra"] == 0
    assert a["sampling"]["memory"] == b["sampling"]["memory"]
    assert a["levels"][0]["memory"]["row_state"] == b["levels"][0]["memory"]["row_state"]
    sharded = plan_run(10_000_000, 256, LEVELS, world_size=8, target_size=60_000_000)
    assert sharded["sampling"]["memory"]["gathered_selection"] == 0  # above GATHER_MAX_ROWS: left in shards


PAPER = (743_000_000, [10_000_000, 500_000, 50_000, 10_000], 128, 16)
DINOV3 = (17_000_000_000, [200_000_000, 8_000_000, 800_000, 100_000, 25_000], 1024, 64)


def _levels(n, ks, splits, steps):
    """The README's levels: r half the mean cluster size; ``steps`` None: 10 where clusters hold >= 4 items."""
    below = [n] + ks[:-1]
    return [LevelConfig(k, (10 if b / k >= 4 else 0) if steps is None else t, max(1, b // k // 2), split=sp)
            for k, b, sp, t in zip(ks, below, splits, steps or [None] * len(ks))]


@pytest.mark.parametrize("n, ks, world, budget", [PAPER, DINOV3])
def test_billion_scale_configs_are_refused_while_split_levels_resample(n, ks, world, budget):
    """Resampling at the split level reassigns every row to its nearest of all k fine centroids, so those stay
    whole on every rank (and k r candidates are gathered): the paper's and DINOv3's runs are refused, naming that
    part."""
    plan = plan_run(n, 1024, _levels(n, ks, [100] + [0] * (len(ks) - 1), None), world_size=world)
    assert not plan["levels"][0]["sharded_centroids"]
    assert plan["sampling"]["memory"]["sampling_rows"] < 2 * 2 ** 30  # the sampling itself is small per rank
    with pytest.raises(CurationInputError, match=r"per rank.*largest part: (resampling|fine_centroids|input)"):
        check_budget(plan, budget * 2 ** 30)


@pytest.mark.parametrize("n, ks, world, budget, splits", [(*PAPER, [100, 0, 0, 0]), (*DINOV3, [100, 100, 0, 0, 0])])
def test_billion_scale_configs_fit_with_sharded_centroids(n, ks, world, budget, splits):
    """Split levels without resampling keep their fine centroids sharded (each rank ~k / world of them) and the
    level above reads them from the parts: with k-means++ (the official code's init) the paper's run fits 16 GiB
    per rank on 128 ranks and DINOv3's 64 GiB on 1,024, rank 0 included. Without the parts (no shared folder)
    the blocks are gathered and the same runs are refused."""
    steps = [0 if sp else 10 for sp in splits]
    plan = plan_run(n, 1024, _levels(n, ks, splits, steps), world_size=world, init="k-means++")
    assert [lv["sharded_centroids"] for lv in plan["levels"]] == [bool(sp) for sp in splits]
    first = plan["levels"][0]["memory"]
    assert first["fine_centroids"] < 2 * (ks[0] / world) * 1024 * 4  # this rank's block, not k x D
    assert plan["levels"][1]["memory"]["input"] == 0  # level 2 reads level 1's parts a chunk at a time
    assert plan["peak_rank0"] == plan["peak_per_rank"] <= budget * 2 ** 30
    check_budget(plan, budget * 2 ** 30)
    whole = plan_run(n, 1024, _levels(n, ks, splits, steps), world_size=world, init="k-means++", shared_files=False)
    with pytest.raises(CurationInputError, match="largest part: (fine_centroids|input|tree_centroids)"):
        check_budget(whole, budget * 2 ** 30)


def test_sharded_block_shrinks_with_world_and_one_process_holds_the_matrix():
    """A rank's block of fine centroids is about k / world; one process holds the whole k x D once."""
    lv = [LevelConfig(100_000, 0, 1, split=50), LevelConfig(1_000, 10, 20)]
    block = {w: plan_run(20_000_000, 128, lv, world_size=w)["levels"][0]["memory"]["fine_centroids"]
             for w in (1, 8, 64)}
    assert block[1] == 100_000 * 128 * 4
    assert block[64] < block[8] / 4 < block[1] / 8


def test_readme_commands_that_fit_and_their_figures():
    """The README's planner commands with sharded centroids, as written: both fit (exit 0) and the per-rank peaks
    the README quotes are the planner's."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("both fit:"):]
    block = re.search(r"```bash\n(.*?)```", block, flags=re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and all(c[:3] == ["python", "-m", "sslcurate.planning"] for c in commands)
    for command in commands:
        proc = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 0 and "fits the budget" in proc.stdout, proc.stderr
        peak = re.search(r"peak per rank ([\d.]+ GiB)", proc.stdout).group(1)
        assert f"needs {peak} per rank" in readme
