"""The record every run leaves beside its outputs: the resolved config, the git SHA and the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sslcurate import distributed
from sslcurate.io import atomic_save_json

ROOT = Path(__file__).resolve().parents[2]  # the repository


def git_revision() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha or "unknown", "git_dirty": bool(status) if status is not None else None}


def command_overrides() -> list[str]:
    """This Hydra run's command-line overrides (none outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def run_command() -> str:
    """The command that reruns this Hydra run."""
    return " ".join(["python run.py", *command_overrides()])


def run_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_record(cfg: DictConfig, out: Path) -> None:
    """Resolved config and code version beside the outputs (Hydra's .hydra/ keeps the unresolved one)."""
    if not distributed.is_main_process():
        return
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    atomic_save_json(out / "run_info.json", {**git_revision(), "command_overrides": command_overrides()})
