"""Canopy-height metrics (Tolan et al. 2023): MAE, RMSE and R^2 over valid pixels, and block R^2 (R^2 of the
heights averaged over ``block`` x ``block`` pixel blocks, which forgives small misregistrations and crown-level
noise). Arrays in, numbers out."""

from __future__ import annotations

import numpy as np


def r2_score(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
    ss_tot = ((true - true.mean()) ** 2).sum()
    return float(1 - ((pred - true) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def block_means(x: np.ndarray, valid: np.ndarray, block: int, min_valid: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``x`` (n, t, t) over valid pixels of each block x block block: ((m,) means, (m,) kept mask)."""
    n, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"block size {block} must divide the tile size {h} x {w}")
    xb = np.where(valid, x, 0).reshape(n, h // block, block, w // block, block).sum(axis=(2, 4))
    cnt = valid.reshape(n, h // block, block, w // block, block).sum(axis=(2, 4))
    keep = cnt >= min_valid * block * block
    return (xb / np.maximum(cnt, 1)).ravel(), keep.ravel()


def height_metrics(pred: np.ndarray, true: np.ndarray, block: int = 16) -> dict:
    """pred, true: (n, t, t) metres; NaN in ``true`` marks unknown pixels (excluded)."""
    valid = np.isfinite(true)
    p, t = pred[valid].astype(np.float64), true[valid].astype(np.float64)
    err = p - t
    bp, keep = block_means(pred, valid, block)
    bt, _ = block_means(np.nan_to_num(true), valid, block)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "r2": r2_score(p, t),
            "block_r2": r2_score(bp[keep], bt[keep]), "bias": float(err.mean())}
