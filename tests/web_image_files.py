"""Helpers the web-images tests share: the CLI as a user runs it, random images, PNG folders, composed configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` with W&B disabled and Hydra's full tracebacks (the study tests read them on failure)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def random_images(n=12, s=20, seed=0) -> np.ndarray:
    """(n, s, s, 3) uint8 noise images."""
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def write_pngs(folder: Path, names: list[str], images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, im in zip(names, images):
        Image.fromarray(im).save(folder / name)


def study_config(*overrides: str, experiment: str = "web_images_quick"):
    """The composed config of ``experiment`` with ``overrides`` (progress bars off)."""
    from experiments.web_images.selection_stats import compose

    return compose(["progress=false", *overrides], experiment)
