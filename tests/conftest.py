"""Shared fixtures: seeded synthetic data small enough for unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

RING_SIZES = (20000, 200, 1000, 500, 8000)  # the paper's toy example


def make_rings(rng: np.random.Generator, sizes=RING_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """Five noisy rings with very different point counts; returns (points (n, 2) float32, ring label (n,))."""
    centers = [(0, 0), (5, 0), (0, 5), (5, 5), (2.5, 2.5)]
    pts, labels = [], []
    for i, (size, (cx, cy)) in enumerate(zip(sizes, centers)):
        theta = rng.uniform(0, 2 * np.pi, size)
        radius = 1.0 + 0.08 * rng.standard_normal(size)
        pts.append(np.c_[cx + radius * np.cos(theta), cy + radius * np.sin(theta)])
        labels.append(np.full(size, i))
    return np.concatenate(pts).astype(np.float32), np.concatenate(labels)


def make_blobs(rng: np.random.Generator, n: int = 4000, d: int = 16, centers: int = 20, spread: float = 4.0):
    """Gaussian mixture with unequal weights: (n, d) float32."""
    means = rng.normal(0, spread, (centers, d))
    weights = rng.dirichlet(np.ones(centers))
    labels = rng.choice(centers, size=n, p=weights)
    return (means[labels] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def rings():
    return make_rings(np.random.default_rng(0))


def run_cli(*args: str, timeout: int = 600, wandb: bool = False) -> subprocess.CompletedProcess:
    """Run ``python run.py ARGS`` from the repo root, as a user would (W&B disabled unless asked for)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HYDRA_FULL_ERROR": "0", "WANDB_SILENT": "true"})
    if not wandb:
        env["WANDB_MODE"] = "disabled"
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
