"""k-means: k-means++ / random init, chunked assignment, Lloyd updates, resampling-clustering.

The math is a handful of pure functions (distances -> init -> assign -> accumulate -> update), and :func:`kmeans`
is the short loop over them. Data arrive through an :class:`~sslcurate.sources.EmbeddingSource`, one chunk at a
time, so memory is bounded by ``chunk_rows x (d + n_clusters_block)`` whatever N and K are. Per-cluster sums and
counts are partial reductions combined with :func:`~sslcurate.distributed.all_reduce_sum`, so several processes
(each reading its own rows) run exactly this code.

Distances are squared L2, computed as ``|x|^2 - 2 x.c + |c|^2`` with a GEMM; ``metric="cosine"`` normalises the
inputs and centroids first (spherical k-means), which makes squared L2 equal ``2 - 2 cos``.

One stage per module, each read top to bottom: :mod:`.common` (the settings' allowed values, result type,
seeding, hashing), :mod:`.settings` (:class:`KMeansSettings`, the one place the settings' defaults live),
:mod:`.init` (k-means++, k-means||, the cost model of ``init="auto"``), :mod:`.steps` (sums, objective, update),
:mod:`.bounds` (Hamerly bounds, farthest-point reseeding), :mod:`.lloyd` (the loop), :mod:`.split` (two-stage
k-means for very large k), :mod:`.resampling` (the paper's resampling-clustering).
"""

from ..sources import as_source  # noqa: F401  (benchmarks read it from here)
from .bounds import _farthest_first, _FarthestTracker, _HamerlyBounds  # noqa: F401
from .common import (  # noqa: F401
    BOUNDS_MAX_DIM,
    EMPTY_CLUSTER_POLICIES,
    INITS,
    METRICS,
    KMeansResult,
    _check_kmeans_args,
    _default_device,
    _draw_salt,
    _normalize,
    _row_offset,
    _row_range,
    _to_device,
    make_rng,
    splitmix64,
    uniform_hash,
)
from .init import (  # noqa: F401
    INIT_SAMPLE_MIN,
    INIT_SAMPLE_PER_CLUSTER,
    KMPAR_OVERSAMPLING,
    KMPAR_ROUNDS,
    KPP_STEP_COST,
    _candidates,
    _canonical_to,
    _draw_rows,
    _initial_centroids,
    _kmeans_parallel,
    _per_rank,
    _sample_rows,
    _settle_candidates,
    init_costs,
    init_sample_rows,
    kmeans_plusplus,
    kmeanspp_trials,
    resolve_init,
)
from .lloyd import assign_source, kmeans  # noqa: F401
from .resampling import (  # noqa: F401
    SELECT_BLOCK,
    _first_r_per_cluster,
    _save_round,
    resampling_kmeans,
    sample_per_cluster,
    select_per_cluster,
)
from .settings import KMeansSettings, settings_with  # noqa: F401
from .split import split_kmeans, split_shares  # noqa: F401
from .steps import _split_bf16, accumulate, lloyd_objective, squared_norm_total, update_centroids  # noqa: F401
