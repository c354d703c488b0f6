"""The Lloyd loop (:func:`kmeans`) and one assignment pass over a source (:func:`assign_source`)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .. import distributed as dist
from ..assign import get_assigner
from ..canonical import canonical_row_distances
from ..errors import CurationInputError
from ..progress import progress_bar
from ..sources import as_source, shard_bounds
from .bounds import _FarthestTracker, _HamerlyBounds
from .common import BOUNDS_MAX_DIM, KMeansResult, _check_kmeans_args, _default_device, _normalize, _to_device, make_rng
from .init import (
    _initial_centroids,
    init_costs,
    resolve_init,
)
from .settings import KMeansSettings, settings_with
from .steps import accumulate, lloyd_objective, squared_norm_total, update_centroids

log = logging.getLogger(__name__)


def kmeans(x, n_clusters: int, *, settings: KMeansSettings | None = None, n_iters: int = 50,
           seed: int | np.random.Generator | None = 0, n_local_trials: int | None = None,
           init_centroids: np.ndarray | None = None, device: str | None = None, progress: bool = False,
           desc: str = "k-means", bounds: bool | None = None, checkpoint=None, tag: str = "kmeans",
           **setting_overrides) -> KMeansResult:
    """Lloyd's k-means on the rows of ``x``.

    x: (n, d) array, tensor, ``.npy`` path, shard folder or :class:`EmbeddingSource` (read in chunks).
    n_clusters: k, 1 <= k <= n. n_iters: Lloyd iterations (each = one assignment pass + one update).
    seed: int or ``np.random.Generator``; the only source of randomness.
    settings: the :class:`~sslcurate.kmeans.settings.KMeansSettings` of the run (None: its defaults); keyword
    arguments named as its fields override them (``kmeans(x, k, backend="torch")``). Its fields:

    init: ``"k-means++"`` (greedy, ``n_local_trials`` candidates per centre, default 2 + ln k, on a sample),
    ``"k-means||"`` (:func:`_kmeans_parallel`: a few passes over every row, then greedy k-means++ on the weighted
    candidates; ignores ``init_sample_size``), ``"random"``, or ``"auto"``: k-means++ unless it would cost more
    than the ``n_iters`` Lloyd iterations and k-means|| less (:func:`resolve_init`).
    tol: stop early once the relative objective decrease of an iteration falls below ``tol`` (0: never).
    metric: ``"l2"`` (squared Euclidean on raw features, as the paper) or ``"cosine"`` (normalised inputs).
    accumulate_dtype: dtype of the per-cluster sums (``"float64"`` keeps large clusters exact).
    empty_cluster: ``"keep"`` (previous centroid stays, as the official code), ``"farthest"`` (re-seed on the
    points farthest from their centroids) or ``"error"``.
    backend: ``"fused"``, ``"torch"``, ``"faiss"`` or ``"auto"`` (see :func:`sslcurate.assign.resolve_backend`).
    precision: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int16"`` (reduced-precision candidates, near-ties settled
    in fp32: the same assignments up to ties within float rounding) or ``"auto"`` (for d > 64: bf16 on CPUs with
    AMX except at large k and small d, else int8 on CPUs that run the fused VNNI kernel, else bf16 where the
    hardware runs it fast, else int16 on AVX2 CPUs; see :func:`sslcurate.assign.resolve_precision`).
    init_sample_size: run the initialisation on this many random rows to bound its cost; None: the default
    ``max(INIT_SAMPLE_PER_CLUSTER * k, INIT_SAMPLE_MIN)`` rows (all of them when n is smaller); ``>= n``: all.
    chunk_rows: rows read and assigned at a time.

    n_local_trials: k-means++ candidates per centre (None: 2 + ln k).
    init_centroids: (k, d) starting centroids; skips the initialisation.
    bounds: skip the rows whose nearest centroid is proven unchanged by triangle-inequality bounds (Hamerly
    2010; see :class:`_HamerlyBounds`). Same Lloyd iterations as the dense pass (up to float ties), fewer
    distance computations. Used with ``accumulate_dtype="float64"`` and ``empty_cluster`` other than
    ``"farthest"``; otherwise every iteration is a dense pass. None: on for ``d <= BOUNDS_MAX_DIM``.
    checkpoint: optional store with ``load(tag)``, ``save(tag, arrays, meta)``, ``every`` and ``every_seconds``
    (:class:`sslcurate.artifacts.Checkpoint`). Every ``every`` Lloyd iterations the centroids, iteration,
    history and generator state are saved under ``tag``; a rerun with the same store resumes there and ends with
    the same result as an uninterrupted run (the bounds are rebuilt at each checkpoint in both).
    In a multi-process run, each rank reads only its rows ``shard_bounds(n, rank, world)``, and the result's
    ``assignments``/``distances`` cover those rows (``row_range``).
    """
    settings = settings_with(settings, setting_overrides)
    source = as_source(x)
    n, d = source.shape
    _check_kmeans_args(n, n_clusters, n_iters)
    init, sample_size, chunk_rows = settings.init, settings.init_sample_size, settings.chunk_rows
    if init == "auto" and init_centroids is None:
        init = resolve_init(init, n, n_clusters, n_iters, sample_size, n_local_trials)
        log.debug("%s: init=auto runs %s (modelled cost in Lloyd passes: %s; %d iterations follow)", desc, init,
                  {name: round(c, 1) for name, c in init_costs(n, n_clusters, sample_size,
                                                                n_local_trials).items()}, n_iters)
    rng = make_rng(seed)
    cosine = settings.metric == "cosine"
    empty_cluster, tol = settings.empty_cluster, settings.tol
    dev = _default_device(device, settings.backend)
    acc_dtype = getattr(torch, settings.accumulate_dtype)

    resumed = checkpoint.load(f"{tag}.lloyd") if checkpoint is not None else None
    if resumed is not None and resumed[0]["centroids"].shape == (n_clusters, d):
        arrays, meta = resumed
        centroids = torch.from_numpy(arrays["centroids"])
        start_iter, history, n_empty = int(meta["iteration"]), list(meta["history"]), int(meta["n_empty"])
        rng.bit_generator.state = meta["rng"]
        log.info("%s: resuming at Lloyd iteration %d of %d", desc, start_iter, n_iters)
    elif init_centroids is not None:
        start_iter, history, n_empty = 0, [], 0
        centroids = torch.as_tensor(np.asarray(init_centroids, dtype=np.float32))
        if centroids.shape != (n_clusters, d):
            raise CurationInputError(f"init_centroids has shape {tuple(centroids.shape)}, expected {(n_clusters, d)}")
        centroids = _normalize(centroids) if cosine else centroids.clone()
    else:
        start_iter, history, n_empty = 0, [], 0
        # k-means|| runs its passes on the CPU whatever ``dev``: it resolves the settings' "auto" there.
        centroids = _initial_centroids(source, n_clusters, init, rng, sample_size, n_local_trials, cosine,
                                       checkpoint=checkpoint, tag=f"{tag}.init", precision=settings.precision,
                                       backend=settings.backend, chunk_rows=chunk_rows)
    centroids = centroids.to(dev)

    lo, hi = shard_bounds(n, dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(settings.backend, dev, settings.precision, d, n_clusters)
    # Bounds need exact float64 running sums (they are updated by the rows that move, not rebuilt) and no
    # re-seeding from exact per-row distances; otherwise every iteration is a dense pass.
    if bounds is None:
        bounds = d <= BOUNDS_MAX_DIM
    bounded = bounds and settings.accumulate_dtype == "float64" and empty_cluster != "farthest"
    state = _HamerlyBounds(hi - lo, n_clusters, n, d, dev) if bounded else None
    x_sq_total = None  # sum of |x|^2 over all rows (dense passes): the objective's constant term
    seconds: list[float] = []
    t_start = time.perf_counter()
    bar = progress_bar(total=n_iters - start_iter, desc=desc, enabled=progress)
    for it in range(start_iter, n_iters):
        prepared = assigner.prepare(centroids)
        if state is not None:  # sums, counts: running totals over all ranks, changed by the rows that moved
            sums, counts, objective = state.iteration(source, chunk_rows, lo, hi, cosine, centroids, prepared,
                                                      assigner)
            far = None
        else:
            sums = torch.zeros((n_clusters, d), dtype=acc_dtype, device=dev)
            counts = torch.zeros(n_clusters, dtype=torch.int64, device=dev)
            far = _FarthestTracker(n_clusters) if empty_cluster == "farthest" else None
            first_pass = x_sq_total is None
            x_sq_local = 0.0
            for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
                xc = _to_device(chunk, dev, cosine)
                idx, dmin = assigner.assign(xc, prepared)
                accumulate(xc, idx, n_clusters, sums, counts)
                if first_pass:
                    x_sq_local += squared_norm_total(xc)
                if far is not None:  # canonical distances: which rows are farthest must not depend on rounding
                    far.update(start, canonical_row_distances(xc, centroids, idx))
            dist.all_reduce_sum(sums)
            dist.all_reduce_sum(counts)
            if first_pass:
                x_sq_total = float(dist.all_reduce_sum(torch.tensor([x_sq_local], dtype=torch.float64))[0])
            objective = lloyd_objective(x_sq_total, centroids, sums, counts)
        centroids, n_empty = update_centroids(sums, counts, centroids)
        if n_empty and empty_cluster == "error":
            raise CurationInputError(f"{desc}: {n_empty} empty cluster(s) at iteration {it + 1} "
                                     "(empty_cluster='error'); lower k or use empty_cluster='keep'/'farthest'")
        if n_empty and far is not None:
            centroids = far.reseed(centroids, counts == 0, source, cosine)
        if cosine:
            centroids = _normalize(centroids)
        history.append(objective)
        seconds.append(time.perf_counter() - t_start)
        bar.update(1)
        bar.set_postfix(objective=f"{history[-1]:.4g}", empty=n_empty)
        if tol > 0 and len(history) > 1 and history[-2] - history[-1] <= tol * abs(history[-2]):
            break
        if checkpoint is not None and (it + 1) % checkpoint.every == 0 and it + 1 < n_iters:
            checkpoint.save(f"{tag}.lloyd", {"centroids": centroids.cpu().numpy()},
                            {"iteration": it + 1, "history": history, "n_empty": n_empty,
                             "rng": rng.bit_generator.state})
            if state is not None:  # a resumed run starts with fresh bounds; so does this one, to stay identical
                state = _HamerlyBounds(hi - lo, n_clusters, n, d, dev)
    if state is not None:
        log.debug("%s: bounds skipped %.1f%% of the row-centroid distance rows over %d iterations", desc,
                  100 * state.skipped_fraction(), len(history))
    bar.close()

    assignments, distances = assign_source(source, centroids, settings=settings, device=dev)
    objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
    if n_empty:
        log.info("%s: %d empty cluster(s) after %d iterations (policy %r)", desc, n_empty, len(history),
                 empty_cluster)
    return KMeansResult(centroids=centroids.cpu().numpy(), assignments=assignments, distances=distances,
                        objective=objective, n_iters=len(history), history=history, iteration_seconds=seconds,
                        n_empty_clusters=n_empty,
                        row_range=(lo, hi) if dist.get_world_size() > 1 else None)


def assign_source(x, centroids, *, settings: KMeansSettings | None = None, device=None,
                  **setting_overrides) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and squared distance for every row of this rank's share of ``x``, chunk by chunk.

    centroids: (k, d). settings: the run's :class:`~sslcurate.kmeans.settings.KMeansSettings` (its ``backend``,
    ``precision``, ``metric`` and ``chunk_rows``; None: the defaults), overridden by keyword arguments named as
    its fields, as :func:`kmeans`. device: where the chunks are assigned (None: the CPU).
    Returns ``assignments: (n,) int64`` and ``distances: (n,) float32``, both canonical
    (:mod:`sslcurate.canonical`): the same for any backend, precision, thread count and world size.
    """
    settings = settings_with(settings, setting_overrides)
    source = as_source(x)
    dev = torch.device(device or "cpu")
    cosine = settings.metric == "cosine"
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32) if not torch.is_tensor(centroids) else centroids)
    c = (_normalize(c) if cosine else c).to(dev)
    lo, hi = shard_bounds(len(source), dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(settings.backend, dev, settings.precision, c.shape[1], c.shape[0])
    prepared = assigner.prepare(c)
    assignments = np.empty(hi - lo, dtype=np.int64)
    distances = np.empty(hi - lo, dtype=np.float32)
    for start, chunk in source.iter_chunks(settings.chunk_rows, lo, hi):
        xc = _to_device(chunk, dev, cosine)
        idx, _ = assigner.assign(xc, prepared)
        assignments[start - lo:start - lo + len(chunk)] = idx.cpu().numpy()
        # The distances the selections read (closest-to-centroid sampling): canonical, the same on every path.
        distances[start - lo:start - lo + len(chunk)] = canonical_row_distances(xc, c, idx).numpy()
    return assignments, distances
