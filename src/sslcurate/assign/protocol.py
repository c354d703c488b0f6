"""The one interface every nearest-centroid path implements, and the registries that name the paths.

As faiss's ``contrib/clustering.py`` runs one k-means over any dataset adaptor, the Lloyd loop and the seeding
in :mod:`sslcurate.kmeans` run over any :class:`Assigner`: the exact paths are registered by backend name
(:data:`BACKEND_REGISTRY`) and the reduced-precision ones, which wrap an exact one, by precision name
(:data:`PRECISION_REGISTRY`); :func:`sslcurate.assign.get_assigner` resolves ``"auto"`` and looks both up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class Assigner(Protocol):
    """Nearest centroid of each row of a chunk.

    ``prepare(centroids: (k, d) float32)``: what the path computes once per set of centroids (norms, packed
    panels, a faiss index, quantised codes), passed back as ``prepared``.
    ``assign(x: (n, d) float32, prepared) -> (idx: (n,) int64, sq_dist: (n,) float32)``.
    ``assign_top2(x, prepared) -> (idx, d1, d2)``: also the squared distance ``d2`` to the second-nearest centroid
    (``inf`` when ``k == 1``), from which the bounded Lloyd loop sets its lower bounds.
    """

    def prepare(self, centroids: torch.Tensor) -> Any: ...

    def assign(self, x: torch.Tensor, prepared: Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    def assign_top2(self, x: torch.Tensor, prepared: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


BACKEND_REGISTRY: dict[str, Callable[[torch.device], Assigner]] = {}  # backend -> exact assigner on that device
PRECISION_REGISTRY: dict[str, Callable[[Assigner], Assigner]] = {}  # precision -> wrapper around an exact one


def register_backend(name: str, factory: Callable[[torch.device], Assigner]) -> None:
    """Name an exact path: ``factory(device)`` builds its assigner."""
    BACKEND_REGISTRY[name] = factory


def register_precision(name: str, wrap: Callable[[Assigner], Assigner]) -> None:
    """Name a precision: ``wrap(exact)`` builds its assigner around the exact one, which still serves
    ``assign_top2`` (the bounded loop's queries) and the rows whose reduced-precision margin is not conclusive."""
    PRECISION_REGISTRY[name] = wrap
