"""The k-means settings every run of every level shares: the one place their defaults live.

:func:`~sslcurate.kmeans.kmeans`, :func:`~sslcurate.kmeans.assign_source`, :func:`~sslcurate.kmeans.split_kmeans`,
:func:`~sslcurate.kmeans.resampling_kmeans` and :func:`~sslcurate.hierarchical_kmeans` take a
:class:`KMeansSettings`; the first two also take its fields as keyword arguments, which override the settings
given (:func:`settings_with`), so no function restates a default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..assign import BACKENDS, PRECISIONS, resolve_backend, resolve_precision
from ..errors import CurationInputError
from ..sources import DEFAULT_CHUNK_ROWS
from .common import EMPTY_CLUSTER_POLICIES, INITS, METRICS, _default_device


@dataclass
class KMeansSettings:
    """k-means settings shared by every run of every level."""

    init: str = "auto"  # paper: k-means++ (beats random init); "k-means||": its cheap parallel version; "auto":
    # k-means++ unless it would cost more than the Lloyd iterations and k-means|| less (kmeans.resolve_init)
    metric: str = "l2"  # paper: squared L2 on raw (not normalised) features
    accumulate_dtype: str = "float64"  # centroid sums; official code: float64
    empty_cluster: str = "keep"  # official code: an empty cluster keeps its previous centroid
    backend: str = "auto"  # assignment: "fused", "torch", "faiss" or "auto"
    precision: str = "auto"  # distances: "fp32", "bf16"/"int8"/"int16" (near-ties settled in fp32), "auto"
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # rows read and assigned at a time; bounds memory for any N
    init_sample_size: int | None = None  # k-means++ on this many random rows (None: the backend's default)
    tol: float = 0.0  # stop a run early below this relative objective decrease (0: fixed iterations)

    def __post_init__(self):
        for name, value, allowed in (("init", self.init, INITS), ("metric", self.metric, METRICS),
                                     ("empty_cluster", self.empty_cluster, EMPTY_CLUSTER_POLICIES),
                                     ("accumulate_dtype", self.accumulate_dtype, ("float32", "float64")),
                                     ("backend", self.backend, BACKENDS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise CurationInputError(f"kmeans.{name} must be one of {allowed}, got {value!r}")
        if self.chunk_rows < 1:
            raise CurationInputError(f"kmeans.chunk_rows must be >= 1, got {self.chunk_rows}")

    def run_device(self) -> torch.device:
        """The device the Lloyd loop and the assignment passes run on: CUDA where available, except for the CPU
        backends ``"faiss"`` and ``"fused"`` (faiss-gpu moves its own index to the GPU)."""
        return _default_device(None, self.backend)

    def resolved(self, device: torch.device | str, dim: int, n_clusters: int | None) -> KMeansSettings:
        """These settings with ``backend`` and ``precision`` named as a k-means of ``n_clusters`` centroids of
        ``dim`` features runs them on ``device`` (:func:`sslcurate.assign.resolve_backend`,
        :func:`sslcurate.assign.resolve_precision`: ``"auto"`` depends on the device, and the precision on d and
        k). Resolved settings resolve to themselves."""
        return replace(self, backend=resolve_backend(self.backend, device),
                       precision=resolve_precision(self.precision, device, dim, n_clusters))


SETTING_NAMES = frozenset(f.name for f in fields(KMeansSettings))


def settings_with(settings: KMeansSettings | None, overrides: dict) -> KMeansSettings:
    """``settings`` (None: ``KMeansSettings()``, every default) with the fields named in ``overrides`` replaced:
    how the public functions' keyword arguments (``kmeans(x, k, backend="torch")``) become settings."""
    unknown = set(overrides) - SETTING_NAMES
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; the k-means settings are "
                        f"{sorted(SETTING_NAMES)}")
    if settings is None:
        return KMeansSettings(**overrides)
    return replace(settings, **overrides) if overrides else settings
