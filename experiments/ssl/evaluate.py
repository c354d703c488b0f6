"""Frozen-feature evaluation: features of a fixed encoder, then k-NN, a linear probe, or a ridge probe.

Everything takes arrays (features ``(n, d)`` float, labels ``(n,)`` int or targets ``(n,)``/``(n, t)`` float) and
returns plain numbers, so the image study and the satellite study (regression) share it.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def extract_features(encoder: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Concatenated ``encoder(batch)`` outputs over ``batches`` as (n, d) float32 (the encoder should be in eval
    mode; this function does not change its mode)."""
    out = [encoder(b).float().cpu() for b in batches]
    return torch.cat(out).numpy().astype(np.float32)


def knn_classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20,
                 temperature: float = 0.07, n_classes: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Weighted k-NN on cosine similarity (DINO's protocol): each of the k nearest training points votes for its
    class with weight exp(sim / temperature). train_x: (n, d), train_y: (n,) int, test_x: (m, d) -> (m,) int."""
    tr = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    te = F.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    y = torch.as_tensor(train_y, dtype=torch.long)
    c = int(n_classes if n_classes is not None else y.max() + 1)
    k = min(k, tr.shape[0])
    preds = []
    for s in range(0, te.shape[0], chunk):
        sim = te[s:s + chunk] @ tr.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], c).scatter_add_(1, y[idx], torch.exp(top / temperature))
        preds.append(votes.argmax(1))
    return torch.cat(preds).numpy()


def _standardize(train_x: np.ndarray, *others: np.ndarray):
    mu = train_x.mean(0, keepdims=True)
    sd = train_x.std(0, keepdims=True) + 1e-6
    return [(a - mu) / sd for a in (train_x, *others)]


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_xs: dict[str, np.ndarray],
                 weight_decay: float = 1e-3, max_iter: int = 200, n_classes: int | None = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Multinomial logistic regression on standardised frozen features, full-batch L-BFGS (deterministic).

    test_xs: ``{name: (m, d)}`` -> ``{name: (m,) predicted class}``."""
    names = list(test_xs)
    tr, *tes = _standardize(train_x, *[test_xs[n] for n in names])
    x = torch.as_tensor(tr, dtype=torch.float32)
    y = torch.as_tensor(train_y, dtype=torch.long)
    c = int(n_classes if n_classes is not None else y.max() + 1)
    g = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(x.shape[1], c, generator=g)).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {n: (torch.as_tensor(t, dtype=torch.float32) @ w + b).argmax(1).numpy() for n, t in zip(names, tes)}


def ridge_probe(train_x: np.ndarray, train_t: np.ndarray, test_xs: dict[str, np.ndarray],
                alpha: float = 1.0) -> dict[str, np.ndarray]:
    """Ridge regression on standardised frozen features (closed form). train_t: (n,) or (n, t) real targets."""
    names = list(test_xs)
    tr, *tes = _standardize(train_x, *[test_xs[n] for n in names])
    t = np.asarray(train_t, dtype=np.float64)
    t2 = t[:, None] if t.ndim == 1 else t
    t_mean = t2.mean(0, keepdims=True)
    a = tr.astype(np.float64)
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (t2 - t_mean))
    out = {n: te.astype(np.float64) @ w + t_mean for n, te in zip(names, tes)}
    return {n: (v[:, 0] if t.ndim == 1 else v) for n, v in out.items()}


def accuracy(pred: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Top-1 accuracy, optionally on the subset ``mask``; NaN for an empty subset."""
    pred, y = np.asarray(pred), np.asarray(y)
    if mask is not None:
        pred, y = pred[mask], y[mask]
    return float((pred == y).mean()) if y.size else float("nan")


def regression_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    """MAE, RMSE and R^2 of real-valued predictions."""
    pred, target = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    err = pred - target
    ss_tot = ((target - target.mean()) ** 2).sum()
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": float(1 - (err ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")}
