"""Every experiment file composes with the shared groups and points at a module with a run(cfg) function."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.kit.config import register_schemas

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _results_readme_commands() -> list[tuple[str, str]]:
    """(README, line) of every ``python run.py`` line in a code block of a committed results README."""
    found = []
    for readme in sorted((CONFIGS.parent / "results").rglob("README.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", readme.read_text(), flags=re.S):
            found += [(str(readme.relative_to(CONFIGS.parent)), line) for line in block.splitlines()
                      if line.startswith("python run.py ")]
    return found


@pytest.fixture(scope="module", autouse=True)
def schemas():
    register_schemas()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={name}", "logger=none"])
    assert cfg.experiment_name and cfg.task
    module = importlib.import_module(f"experiments.{cfg.task}")
    assert callable(module.run)
    # the curation node converts to the typed schema (cross-field rules pass)
    if "curation" in cfg and not OmegaConf.is_missing(cfg.curation, "target_size"):
        OmegaConf.to_object(cfg.curation)


def test_default_experiment_is_simulated():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config")
    assert cfg.task == "simulated"


def test_typo_in_curation_fails_at_composition():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        with pytest.raises(Exception, match="n_cluster"):
            compose(config_name="config", overrides=["experiment=curate", "curation.levels.0.n_cluster=3"])


def test_slurm_launcher_composes_with_requeue():
    """hydra/launcher=slurm: nodes, GPUs, partition, time limit and requeue are set and overridable."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=web_images_paper", "logger=none",
                                                       "hydra/launcher=slurm", "hydra.launcher.nodes=16",
                                                       "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.nodes == 16 and launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8
    assert launcher.partition == "gpu" and launcher.timeout_min > 0
    assert launcher.max_num_timeout > 0 and launcher.additional_parameters.requeue
    assert cfg.curation.levels[0].split == 100  # the paper's two-stage level 1


def test_readme_paper_curation_command_composes():
    """The README's SLURM curation command for the paper's configuration composes to a valid typed config."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=curate", "curation=web_images_paper", "curation.embeddings=/data/web/emb_vitl14/",
            "curation.target_size=100_000_000", "curation.memory_budget_gb=160", "logger=none"])
    ccfg = OmegaConf.to_object(cfg.curation)
    assert [lv.n_clusters for lv in ccfg.levels] == [10_000_000, 500_000, 50_000, 10_000]
    assert ccfg.levels[0].split == 100 and ccfg.memory_budget_gb == 160 and ccfg.target_size == 100_000_000


def test_readme_dinov3_curation_command_composes_and_fits_its_budget():
    """The README's SLURM command for DINOv3's curation composes to DINOv3's 5 levels, and the planner fits that
    configuration (17B x 1024 on 128 nodes x 8 ranks) in the command's memory budget, rank 0 included; so does
    the paper's configuration on 16 x 8 ranks in 16 GiB."""
    from sslcurate.planning import plan_run

    readme = (CONFIGS.parent / "README.md").read_text()
    line = next(b for b in readme.split("```bash\n") if "curation=dinov3" in b).split("```")[0]
    words = line.replace("\\\n", " ").split()
    overrides = words[words.index("-m") + 1:]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "logger=none"], return_hydra_config=True)
        paper = compose(config_name="config", overrides=["experiment=curate", "curation=web_images_paper",
                                                         "logger=none"])
    ccfg = OmegaConf.to_object(cfg.curation)
    assert [lv.n_clusters for lv in ccfg.levels] == [200_000_000, 8_000_000, 800_000, 100_000, 25_000]
    world = cfg.hydra.launcher.nodes * cfg.hydra.launcher.tasks_per_node
    plan = plan_run(int(17e9), 1024, ccfg.levels, world_size=world, init=ccfg.kmeans.init)
    assert world == 1024 and plan["peak_rank0"] <= ccfg.memory_budget_gb * 2**30
    pcfg = OmegaConf.to_object(paper.curation)
    assert plan_run(int(743e6), 1024, pcfg.levels, world_size=128, init=pcfg.kmeans.init)["peak_rank0"] <= 16 * 2**30


@pytest.mark.parametrize("readme,line", _results_readme_commands())
def test_results_readme_commands_compose(readme, line):
    """A command a results README shows runs as shown: its overrides compose (settings renamed since a result
    was made are shown under their new names)."""
    overrides = [w for w in shlex.split(line)[2:] if w != "-m"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_results_readmes_show_commands():
    """The collection above is not empty (the text study's READMEs show their commands in code blocks)."""
    assert any(readme.startswith("results/text") for readme, _ in _results_readme_commands())
