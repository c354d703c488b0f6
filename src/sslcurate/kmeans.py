"""k-means: k-means++ / random init, chunked assignment, Lloyd updates, resampling-clustering.

The math is a handful of pure functions (distances -> init -> assign -> accumulate -> update), and :func:`kmeans`
is the short loop over them. Data arrive through an :class:`~sslcurate.sources.EmbeddingSource`, one chunk at a
time, so memory is bounded by ``chunk_rows x (d + n_clusters_block)`` whatever N and K are. Per-cluster sums and
counts are partial reductions combined with :func:`~sslcurate.distributed.all_reduce_sum`, so several processes
(each reading its own rows) run exactly this code.

Distances are squared L2, computed as ``|x|^2 - 2 x.c + |c|^2`` with a GEMM; ``metric="cosine"`` normalises the
inputs and centroids first (spherical k-means), which makes squared L2 equal ``2 - 2 cos``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import distributed as dist
from .assign import get_assigner
from .canonical import accumulate_f64, canonical_row_distances, canonical_sq_norms
from .errors import CurationInputError
from .progress import progress_bar
from .sources import DEFAULT_CHUNK_ROWS, EmbeddingSource, SubsetSource, as_source, shard_bounds

log = logging.getLogger(__name__)

INITS = ("auto", "k-means++", "k-means||", "random")
METRICS = ("l2", "cosine")
EMPTY_CLUSTER_POLICIES = ("keep", "farthest", "error")
# Default k-means++ sample: greedy k-means++ makes k passes over its input, each costing ~(2 + ln k) distance
# rows, so on all of a large pool it outweighs the Lloyd iterations (REFERENCE §4: 35 s at N=100k, K=1000). On
# a random subsample of 40 rows per cluster the objective after Lloyd stays within ~1% of full k-means++
# (tests/test_kmeans_speed_paths.py; benchmarks/bench_kmeans.py --methods ours,ours-fullpp at N=100k);
# INIT_SAMPLE_MIN keeps small k from seeding on a handful of rows.
INIT_SAMPLE_PER_CLUSTER = 40
INIT_SAMPLE_MIN = 10_000
# k-means|| (init="k-means||"): rounds over all rows, each keeping ~oversampling x k candidates in expectation.
# 4 rounds of 1 x k (Bahmani et al. use 5 of 2 x k): at N=100k, K=1000 the objective after 10 Lloyd iterations
# was within 0.3% of full greedy k-means++ (benchmarks/bench_init.py), for 4 assignment passes of k columns.
KMPAR_ROUNDS = 4
KMPAR_OVERSAMPLING = 1.0
# init="auto" (resolve_init) compares costs in Lloyd assignment passes over the run's rows. A greedy k-means++
# step reads its whole sample once per centre (a skinny GEMM bound by memory) where a Lloyd pass is one GEMM near
# the peak, so its k steps on S rows with T trials cost about KPP_STEP_COST x S x T / n passes. The unit is the
# pass of the default assignment path: with the fused int8 kernel (AVX512-VNNI CPUs) the constant measured
# 8.1-10.7 for N=100k-1M, K=1k-10k, D=128 and 384, and 4.2 at N=20k, K=200 (benchmarks/results/init.md, "cost
# model" table); with the slower faiss / bf16 passes before it, 2.5-3.8. Where passes are slower the larger
# constant overstates k-means++, so auto errs toward k-means||, which costs less and ended within 0.5% of full
# k-means++ in those runs.
KPP_STEP_COST = 8.0
# Hamerly bounds by default only in low dimension. Measured (shared 2-core CPU, so provisional): the rings toy
# (d=2) runs ~5x faster with them; at d=384 (N=20k, K=200) they skipped 31% of rows yet the iteration was ~20%
# slower than the dense pass (top-2 epilogue, gathers, float64 bookkeeping), since one lower bound decays by the
# largest centroid shift, which is large in high dimension.
BOUNDS_MAX_DIM = 64


@dataclass
class KMeansResult:
    """Outcome of one k-means run.

    centroids: (k, d) float32. assignments: (n,) int64 cluster of each row. distances: (n,) float32 squared
    L2 distance of each row to its centroid. objective: sum of ``distances`` (float64). history: objective after
    each Lloyd iteration. In a multi-process run, ``assignments`` and ``distances`` cover this rank's rows,
    ``row_range``.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    objective: float
    n_iters: int = 0
    history: list[float] = field(default_factory=list)
    iteration_seconds: list[float] = field(default_factory=list)  # wall time from the loop's start to each iteration's end
    n_empty_clusters: int = 0
    row_range: tuple[int, int] | None = None

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=self.n_clusters)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed, or the Generator itself: library code never touches global state."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)




def kmeanspp_trials(n_clusters: int, n_local_trials: int | None = None) -> int:
    """Candidates per greedy k-means++ centre: ``n_local_trials``, or 2 + ln k (scikit-learn's and the official
    code's choice); at least 1."""
    return max(1, n_local_trials if n_local_trials is not None else 2 + int(math.log(n_clusters)))


def kmeans_plusplus(x: torch.Tensor, n_clusters: int, rng: np.random.Generator,
                    n_local_trials: int | None = None, checkpoint=None, tag: str = "init",
                    precision: str = "fp32", weights: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007): each new centre is the best of ``n_local_trials``
    candidates drawn with probability proportional to squared distance, judged by the resulting potential.

    x: (n, d) float32: the sample, or in a multi-process run this rank's contiguous share of it (rank order).
    Returns (n_clusters, d) float32 centres (copies of rows of the sample), the same on every rank.

    Multi-process: each rank computes the distances of its own rows only; per centre, the ranks' cumulative
    weights (world floats), the candidate rows (trials x d) and the candidates' potentials (trials floats,
    summed in float64) are all-reduced, so the work and memory per rank are 1 / world of one process's, with
    the same draws (one generator state on every rank).

    Each step is one ``(L, d+2) x (d+2, n)`` GEMM on norm-augmented rows (``[-2c, 1, |c|^2] . [x, |x|^2, 1]``
    gives the squared distances directly) into a reused ``(L, n)`` buffer, then a few in-place passes over it
    along contiguous rows; the loop over k allocates nothing of size n. The ``(L, n)`` orientation matters for
    small d (about 10x faster than ``(n, L)`` at d=2). The cost is still k passes over ``x``, so callers bound
    ``n`` with a subsample (:func:`_initial_centroids`).

    precision: ``"bf16"`` runs the step GEMM on bf16 copies (rows centred on their mean, squared norms split
    into two bf16 halves): the step is bound by reading ``x`` once per centre, and bf16 halves that read (about
    3x faster per step at n=400k, d=128). Its distances carry ~0.4% rounding, which only widens the set of rows
    and candidates rescored canonically; the draw weights and the centres are the same as in fp32.

    weights: optional (n,) non-negative weights of the rows (this rank's share): each row counts ``weights[i]``
    times, in the draws (first centre proportional to the weight, then to weight x D^2) and in the candidates'
    potentials. Used to recluster the weighted candidates of k-means|| (:func:`_kmeans_parallel`).

    checkpoint: optional store (see :class:`sslcurate.artifacts.Checkpoint`); the centres chosen so far, the
    distances to them and the generator state are saved (each rank its own rows') under ``tag`` every
    ``checkpoint.every_seconds`` (rank 0's clock decides for all), and a rerun continues to the same centres.
    """
    n, d = x.shape
    world, rank = dist.get_world_size(), dist.get_rank()
    counts = _per_rank(float(n)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_total = int(starts[-1])
    n_trials = kmeanspp_trials(n_clusters, n_local_trials)
    x = x.float().contiguous()
    w64 = None
    if weights is not None:
        w64 = torch.as_tensor(weights).double().reshape(-1)
        if w64.shape[0] != n or bool((w64 < 0).any()):
            raise CurationInputError(f"k-means++ weights must be {n} non-negative numbers, got shape "
                                     f"{tuple(w64.shape)}")
    lowp = precision == "bf16"
    if lowp and world > 1:  # one centre for all ranks: a candidate's |c - mu|^2 must mean the same everywhere
        mu = (dist.all_reduce_sum(x.double().sum(0)) / max(n_total, 1)).float()
    else:
        mu = x.mean(0) if lowp else torch.zeros(d)
    xm = x - mu if lowp else x
    x_sq = (xm * xm).sum(1)
    if lowp:  # [x, |x|^2_hi, |x|^2_lo, 1, 1] . [-2c, 1, 1, |c|^2_hi, |c|^2_lo]
        x_aug_t = torch.empty(d + 4, n, dtype=torch.bfloat16)
        x_aug_t[:d] = xm.T
        _split_bf16(x_sq, x_aug_t[d], x_aug_t[d + 1])
        x_aug_t[d + 2:] = 1.0
        c_aug = torch.empty(n_trials, d + 4, dtype=torch.bfloat16)
        c_aug[:, d:d + 2] = 1.0
        d_low = torch.empty(n_trials, n, dtype=torch.bfloat16)
    else:
        x_aug_t = torch.empty(d + 2, n)                                  # [x, |x|^2, 1] transposed, contiguous
        x_aug_t[:d] = x.T
        x_aug_t[d] = x_sq
        x_aug_t[d + 1] = 1.0
        c_aug = torch.empty(n_trials, d + 2)                             # [-2c, 1, |c|^2] per candidate
        c_aug[:, d] = 1.0
    del xm
    d_cand = torch.empty(n_trials, n)                                    # squared distances to the candidates
    may_move = torch.empty(n_trials, n, dtype=torch.bool)               # rows each candidate could take over
    # float64 copy for the potentials: a preallocated buffer, since sum(dtype=float64) converted into a fresh
    # allocation every step and took 14 ms of a 34 ms step (n=400k, 11 trials) against 2 ms this way.
    d_cand64 = torch.empty(n_trials, n, dtype=torch.float64)
    chosen = np.empty(n_clusters, dtype=np.int64)
    centres = torch.empty(n_clusters, d)
    ckpt_tag = f"{tag}.rank{rank}of{world}"
    saved = checkpoint.load(ckpt_tag) if checkpoint is not None else None
    if saved is not None and not (saved[0]["chosen"].size < n_clusters and saved[0]["closest"].shape == (n,)):
        saved = None
    first = saved[0]["chosen"].size if saved is not None else 0
    if world > 1:  # resume only if every rank saved the same step (a kill can fall between two ranks' writes)
        agree = dist.all_reduce_sum(torch.tensor([first, first * first, int(saved is not None)], dtype=torch.int64))
        if int(agree[2]) != world or int(agree[1]) * world != int(agree[0]) ** 2:
            saved = None
    if saved is not None:
        arrays, meta = saved
        first = arrays["chosen"].size
        chosen[:first] = arrays["chosen"]
        centres[:first] = torch.from_numpy(arrays["centres"])
        closest = torch.from_numpy(arrays["closest"]).float()
        rng.bit_generator.state = meta["rng"]
        log.info("%s: resuming k-means++ at centre %d of %d", tag, first, n_clusters)
    else:
        first = 1
        if w64 is None:
            chosen[0] = rng.integers(n_total)
        else:
            cum_w = torch.cumsum(w64, 0)
            chosen[0] = _draw_rows(cum_w, _per_rank(float(cum_w[-1]) if n else 0.0), 1, rng, starts, rank)[0]
            chosen[0] = dist.all_reduce_sum(torch.tensor([chosen[0] + 1], dtype=torch.int64))[0] - 1
        centres[0] = _sample_rows(x, x_sq, chosen[:1], starts, rank)[0][0]
        # (n,) canonical squared distance to the nearest centre (sslcurate.canonical), rounded to float32: the
        # draw weights, so they do not depend on the thread count or CPU the way the step GEMM's rounding does.
        closest = _canonical_to(x, centres[0])
    last_save = time.monotonic()
    cum = torch.empty(n, dtype=torch.float64)
    # Rounding bound of one step distance (GEMM form, centred or not; candidates are rows, so |c| <= x_max):
    # (d + 8) u (2 x_max)^2, doubled for safety, with u the unit roundoff of the step's precision.
    x_max = float(_per_rank(float(x.norm(dim=1).max()) if n else 0.0).max())
    err_scale = 2.0 * (d + 8) * (2.0 ** -8 if lowp else 2.0 ** -24) * (2.0 * x_max) ** 2
    for i in range(first, n_clusters):
        if w64 is None:
            torch.cumsum(closest, 0, dtype=torch.float64, out=cum)
        else:
            torch.cumsum(closest.double() * w64, 0, out=cum)
        totals = _per_rank(float(cum[-1]) if n else 0.0)                  # each rank's share of the D^2 weight
        if not float(totals.sum()) > 0:  # fewer distinct points than clusters: fill with unused rows
            unused = np.setdiff1d(np.arange(n_total), chosen[:i])
            chosen[i:] = (unused[: n_clusters - i] if unused.size >= n_clusters - i
                          else rng.choice(n_total, n_clusters - i))
            centres[i:] = _sample_rows(x, x_sq, chosen[i:], starts, rank)[0]
            break
        cand = _draw_rows(cum, totals, n_trials, rng, starts, rank)
        cand, cand_x, cand_sq = _candidates(x, x_sq, cand, starts, rank)
        if lowp:
            c_aug[:, :d] = (cand_x - mu) * -2.0
            _split_bf16(cand_sq, c_aug[:, d + 2], c_aug[:, d + 3])
            torch.mm(c_aug, x_aug_t, out=d_low)
            d_cand.copy_(d_low)
        else:
            c_aug[:, :d] = cand_x
            c_aug[:, :d] *= -2.0
            c_aug[:, d + 1] = cand_sq
            torch.mm(c_aug, x_aug_t, out=d_cand)
        # Rows each candidate could take over in any arithmetic (their number weighs the potentials' rounding
        # error in _settle_candidates; the chosen one's are rescored canonically below).
        torch.lt(d_cand, (closest + 2.0 * err_scale)[None, :], out=may_move)
        moved = may_move.sum(1, dtype=torch.float64)
        torch.minimum(d_cand, closest[None, :], out=d_cand)
        # Potential after adding each candidate, rows moved, and rank 0's "checkpoint now" flag, in one reduction.
        pot = torch.zeros(2 * n_trials + 1, dtype=torch.float64)
        pot[:n_trials] = d_cand64.copy_(d_cand).sum(1) if w64 is None else d_cand64.copy_(d_cand) @ w64
        pot[n_trials:2 * n_trials] = moved if w64 is None or not n else moved * float(w64.max())
        want_save = checkpoint is not None and rank == 0 and time.monotonic() - last_save >= checkpoint.every_seconds
        pot[2 * n_trials] = float(want_save)
        dist.all_reduce_sum(pot)
        best = _settle_candidates(x, closest, w64, cand, cand_x, pot[:n_trials], pot[n_trials:2 * n_trials],
                                  err_scale, n_total)
        chosen[i] = cand[best]
        centres[i] = cand_x[best]
        # Only rows the GEMM puts within its rounding bound of their closest can be nearer the new centre.
        rows = torch.nonzero(may_move[best])[:, 0]
        closest[rows] = torch.minimum(closest[rows], _canonical_to(x[rows], centres[i]))
        if pot[2 * n_trials] > 0 and i + 1 < n_clusters:
            # The state at the top of step i + 1: what a rerun needs to draw exactly the same remaining centres.
            checkpoint.save(ckpt_tag, {"chosen": chosen[:i + 1].copy(), "centres": centres[:i + 1].numpy(),
                                       "closest": closest.numpy()}, {"rng": rng.bit_generator.state},
                            shared=False)
            last_save = time.monotonic()
    return centres


def _canonical_to(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(m,) float32: the canonical squared distance of every row of ``x: (m, d)`` to the one point ``c: (d,)``."""
    return canonical_row_distances(x, c[None], torch.zeros(x.shape[0], dtype=torch.int64))


def _settle_candidates(x: torch.Tensor, closest: torch.Tensor, w64: torch.Tensor | None, cand: np.ndarray,
                       cand_x: torch.Tensor, pot: torch.Tensor, moved: torch.Tensor, err_scale: float,
                       n_total: int) -> int:
    """The k-means++ candidate to add: the lowest potential, with near-ties settled canonically.

    Potentials come from float32 GEMM distances whose rounding changes with the thread count and the CPU, and
    candidates often tie exactly (the two points of an isolated pair lower the potential by the same amount).
    Two candidates' potentials differ only on the rows either takes over (``moved``), each carrying at most
    ``err_scale`` of rounding (plus the float64 sum's own rounding over ``n_total`` rows), so candidates within
    that of the best are compared again: per row, the canonical distance to the candidate (min with the row's
    canonical ``closest``), and the sum of the nonzero *differences* to the current champion, so the rows both
    leave alone cancel exactly and do not enter the sum. The lower index wins among equals. Returns the
    candidate's position.
    """
    best = int(torch.argmin(pot))
    tol = (moved + moved[best]) * err_scale + n_total * 2.0 ** -52 * float(pot.abs().max())
    tied = torch.nonzero(pot - pot[best] <= tol)[:, 0].tolist()
    if len(tied) < 2:
        return best
    tied.sort(key=lambda t: (int(cand[t]), t))
    # Rows any contender could take over (float32 distance within the bound of the row's current closest).
    cx = cand_x[tied]
    near = torch.zeros(x.shape[0], dtype=torch.bool)
    for c in cx:
        near |= ((x - c) ** 2).sum(1) <= closest + 2.0 * err_scale
    rows = torch.nonzero(near)[:, 0]
    cl = closest[rows]
    w = w64[rows].numpy() if w64 is not None else None
    taken = [torch.minimum(_canonical_to(x[rows], c), cl).double().numpy() for c in cx]
    champion = 0
    for j in range(1, len(tied)):
        diff = taken[j] - taken[champion]
        if w is not None:
            diff = diff * w
        local = float(diff[diff != 0].sum())  # the same terms in the same order whichever rows were "near"
        if dist.all_reduce_sum(torch.tensor([local], dtype=torch.float64))[0] < 0:
            champion = j
    return tied[champion]


def _kmeans_parallel(source: EmbeddingSource, n_clusters: int, rng: np.random.Generator, cosine: bool, *,
                     rounds: int | None = None, oversampling: float | None = None, n_local_trials: int | None = None,
                     checkpoint=None, tag: str = "init", precision: str = "fp32", backend: str = "auto",
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """k-means|| (Bahmani et al. 2012): a few passes over every row pick a few k candidates, weighted by the rows
    nearest to them; greedy k-means++ on the weighted candidates then picks the k centres.

    Start from one uniform row; each of ``rounds`` rounds keeps row i with probability
    ``min(1, l * D(i) / sum D)`` (l = ``oversampling`` x k, D = squared distance to the nearest candidate so far)
    and updates D with one assignment pass against the new candidates. The passes are GEMMs through the
    Lloyd assigner (bf16 where ``precision`` says so), so they run near the machine's peak, where k-means++
    reads its sample once per centre; the sequential part is k-means++ over ~rounds x l candidates instead of
    40 k sampled rows. Each row's draw is a hash of (row, a per-round salt from ``rng``), so any number of ranks
    (each passing over its own rows) picks the same candidates and centres as one process.
    """
    n, d = source.shape
    rounds = KMPAR_ROUNDS if rounds is None else rounds
    ell = (KMPAR_OVERSAMPLING if oversampling is None else oversampling) * n_clusters
    world, rank = dist.get_world_size(), dist.get_rank()
    lo, hi = shard_bounds(n, rank, world)
    dev = torch.device("cpu")
    assigner = get_assigner(backend, dev, precision, d, n_clusters)
    closest = torch.empty(hi - lo)                       # squared distance of each own row to its nearest candidate
    owner = torch.zeros(hi - lo, dtype=torch.int64)      # which candidate that is (global candidate number)

    def rows_of(pick: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(source.take(pick))
        return _normalize(rows) if cosine else rows

    def update(new: torch.Tensor, offset: int) -> None:
        prepared = assigner.prepare(new.to(dev))
        for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
            xc = _to_device(chunk, dev, cosine)
            idx, _ = assigner.assign(xc, prepared)
            # Canonical distances: the draw probabilities below must not depend on the GEMM's rounding.
            dmin = canonical_row_distances(xc, new, idx)
            part = slice(start - lo, start - lo + chunk.shape[0])
            if offset == 0:
                closest[part], owner[part] = dmin, idx
            else:
                better = dmin < closest[part]
                closest[part] = torch.where(better, dmin, closest[part])
                owner[part] = torch.where(better, idx + offset, owner[part])

    candidates = [rows_of(np.array([rng.integers(n)]))]
    update(candidates[0], 0)
    n_cand = 1
    for _ in range(rounds):
        # numpy's float64 sum: one fixed order, where torch's changes with the thread count.
        phi = float(dist.all_reduce_sum(torch.tensor([closest.double().numpy().sum()]))[0])
        if not phi > 0:  # every row sits on a candidate: nothing left to draw
            break
        salt = _draw_salt(rng)
        picks = []
        for start in range(lo, hi, chunk_rows):  # chunked, so the draw needs no O(rows) temporaries
            stop = min(start + chunk_rows, hi)
            p = closest[start - lo: stop - lo].double().numpy() * (ell / phi)
            picks.append(start + np.flatnonzero(uniform_hash(np.arange(start, stop), salt) < p))
        new = dist.all_gather_rows(rows_of(np.concatenate(picks) if picks else np.zeros(0, np.int64)))
        if new.shape[0]:
            update(new, n_cand)
            candidates.append(new)
            n_cand += new.shape[0]
    cand = torch.cat(candidates)
    weights = dist.all_reduce_sum(torch.bincount(owner, minlength=n_cand).double())
    log.debug("%s: k-means|| kept %d candidates for k=%d in %d rounds", tag, n_cand, n_clusters, rounds)
    # Each rank reclusters its contiguous share of the candidates; kmeans_plusplus reduces across ranks.
    c_lo, c_hi = shard_bounds(n_cand, rank, world)
    return kmeans_plusplus(cand[c_lo:c_hi], n_clusters, rng, n_local_trials, checkpoint=checkpoint, tag=tag,
                           weights=weights[c_lo:c_hi])


def _draw_rows(cum: torch.Tensor, totals: np.ndarray, count: int, rng: np.random.Generator, starts: np.ndarray,
               rank: int) -> np.ndarray:
    """``count`` global rows drawn with probability proportional to the weights whose local cumulative sum is
    ``cum`` (``totals``: every rank's total, :func:`_per_rank`); -1 where the row is another rank's (its owner
    fills it in). Every rank makes the same draws."""
    n = cum.shape[0]
    ends = np.cumsum(totals)
    u = rng.random(count) * float(ends[-1])
    owner = np.searchsorted(ends, u, side="right").clip(max=dist.get_world_size() - 1)
    mine = owner == rank
    rows = np.full(count, -1, dtype=np.int64)
    rows[mine] = starts[rank] + np.searchsorted(cum.numpy(), u[mine] - (ends[rank] - totals[rank]),
                                                side="right").clip(max=n - 1)
    return rows


def _per_rank(value: float) -> np.ndarray:
    """(world,) float64: every rank's ``value``, in rank order (one all-reduce of a one-hot vector)."""
    out = torch.zeros(dist.get_world_size(), dtype=torch.float64)
    out[dist.get_rank()] = value
    return dist.all_reduce_sum(out).numpy()


def _candidates(x: torch.Tensor, x_sq: torch.Tensor, cand: np.ndarray, starts: np.ndarray,
                rank: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Complete the candidates each rank drew among its own rows (``cand``: global sample positions, -1
    elsewhere): their positions, rows and ``x_sq`` on every rank, in one reduction (float64 holds all exactly)."""
    if dist.get_world_size() == 1:
        local = torch.from_numpy(cand)
        return cand, x[local], x_sq[local]
    mine = cand >= 0
    local = torch.from_numpy(cand[mine] - starts[rank])
    buf = torch.zeros(cand.size, x.shape[1] + 2, dtype=torch.float64)
    buf[torch.from_numpy(mine), :-2] = x[local].double()
    buf[torch.from_numpy(mine), -2] = x_sq[local].double()
    buf[torch.from_numpy(mine), -1] = torch.from_numpy(cand[mine]).double()
    dist.all_reduce_sum(buf)
    return buf[:, -1].long().numpy(), buf[:, :-2].float(), buf[:, -2].float()


def _sample_rows(x: torch.Tensor, x_sq: torch.Tensor, rows: np.ndarray, starts: np.ndarray,
                 rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``rows`` (global positions in the sample) and their ``x_sq``, on every rank: the owner of each row
    fills it in, the others add zeros (exact)."""
    local = torch.from_numpy(rows - starts[rank])
    if dist.get_world_size() == 1:
        return x[local], x_sq[local]
    mine = torch.from_numpy((rows >= starts[rank]) & (rows < starts[rank + 1]))
    buf = torch.zeros(rows.size, x.shape[1] + 1, dtype=torch.float32)
    buf[mine, :-1] = x[local[mine]]
    buf[mine, -1] = x_sq[local[mine]].float()
    dist.all_reduce_sum(buf)
    return buf[:, :-1], buf[:, -1]


def _split_bf16(v: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> None:
    """Write float32 ``v`` as ``hi + lo``, two bf16 tensors (~16 significant bits together)."""
    hi.copy_(v)
    lo.copy_(v - hi.float())


def accumulate(x: torch.Tensor, assignments: torch.Tensor, n_clusters: int, sums: torch.Tensor,
               counts: torch.Tensor) -> None:
    """Add the rows of ``x: (n, d)`` into ``sums: (k, d)`` and their number into ``counts: (k,)`` per cluster.

    float64 ``sums`` take every row in float64 (:func:`sslcurate.canonical.accumulate_f64`), not a float32
    partial per chunk: a chunk's float32 partial rounds differently when ranks split the rows differently, and
    the centroids (hence near-tie assignments) would then depend on the world size.
    """
    if sums.dtype == torch.float64:
        accumulate_f64(x, assignments, sums)
    else:
        sums.index_add_(0, assignments, x.to(sums.dtype))
    counts.index_add_(0, assignments, torch.ones_like(assignments, dtype=counts.dtype))


def squared_norm_total(x: torch.Tensor) -> float:
    """Sum of the canonical squared norms of the rows of ``x``, in float64 in numpy's fixed order (torch's
    reductions regroup with the thread count and the instruction set)."""
    return float(canonical_sq_norms(x.detach().float().cpu().numpy()).sum())


def lloyd_objective(x_sq_total: float, centroids: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> float:
    """The k-means objective of the assignment that produced ``sums`` and ``counts`` (float64 per-cluster sums
    and sizes) against ``centroids``: ``sum |x|^2 - 2 sum_j c_j . S_j + sum_j n_j |c_j|^2``.

    Every input is the same for any thread count and backend (the sums are exact, see
    :func:`sslcurate.canonical.accumulate_f64`), and the arithmetic here runs in numpy's fixed order, so the
    ``tol`` early stop that reads it makes the same decision everywhere; a sum of per-row float32 distances
    would not."""
    c = centroids.detach().cpu().double().numpy()
    s = sums.detach().cpu().double().numpy()
    n = counts.detach().cpu().double().numpy()
    value = x_sq_total - 2.0 * float((c * s).sum()) + float((n * np.square(c).sum(1)).sum())
    return max(value, 0.0)


def update_centroids(sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, int]:
    """New centroids = cluster means; an empty cluster keeps its previous centroid. Returns (centroids, n_empty)."""
    empty = counts == 0
    new = (sums / counts.clamp(min=1)[:, None].to(sums.dtype)).to(previous.dtype)
    new[empty] = previous[empty]
    return new, int(empty.sum())


def init_sample_rows(n: int, n_clusters: int, init_sample_size: int | None) -> int:
    """Rows of the k-means++ sample: ``init_sample_size`` (None: ``max(INIT_SAMPLE_PER_CLUSTER k,
    INIT_SAMPLE_MIN)``), at least k, at most n."""
    if init_sample_size is None:
        init_sample_size = max(INIT_SAMPLE_PER_CLUSTER * n_clusters, INIT_SAMPLE_MIN)
    return min(n, max(int(init_sample_size), n_clusters))


def init_costs(n: int, n_clusters: int, init_sample_size: int | None = None,
               n_local_trials: int | None = None) -> dict:
    """Modelled cost of each initialisation of a k-means of ``n_clusters`` over ``n`` rows, in Lloyd assignment
    passes over those rows (k-means++ on its sample; k-means||: its passes plus k-means++ on its candidates)."""
    trials = kmeanspp_trials(n_clusters, n_local_trials)
    candidates = min(n, int(KMPAR_ROUNDS * KMPAR_OVERSAMPLING * n_clusters) + 1)
    return {"k-means++": KPP_STEP_COST * init_sample_rows(n, n_clusters, init_sample_size) * trials / n,
            "k-means||": KMPAR_ROUNDS + 1 + KPP_STEP_COST * candidates * trials / n}


def resolve_init(init: str, n: int, n_clusters: int, n_iters: int, init_sample_size: int | None = None,
                 n_local_trials: int | None = None) -> str:
    """The initialisation ``init`` stands for: itself, or for ``"auto"`` greedy k-means++ on its sample (the
    paper's) unless it would cost more than the ``n_iters`` Lloyd iterations that follow and k-means|| would
    cost less (:func:`init_costs`). At N=1M, K=10k and 10 iterations that is k-means|| (benchmarks/results/init.md:
    k-means++ on its 400k-row sample cost 3.55x the iterations, k-means|| 0.86x); with the default 50 iterations
    it is k-means++ for k below about n / 70, and always below k = 149."""
    if init != "auto":
        return init
    cost = init_costs(n, n_clusters, init_sample_size, n_local_trials)
    if cost["k-means++"] > n_iters and cost["k-means||"] < cost["k-means++"]:
        return "k-means||"
    return "k-means++"


def _initial_centroids(source: EmbeddingSource, n_clusters: int, init: str, rng: np.random.Generator,
                       init_sample_size: int | None, n_local_trials: int | None, cosine: bool,
                       checkpoint=None, tag: str = "init", precision: str = "fp32", backend: str = "auto",
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    n = len(source)
    if init == "k-means||":
        return _kmeans_parallel(source, n_clusters, rng, cosine, n_local_trials=n_local_trials,
                                checkpoint=checkpoint, tag=tag, precision=precision, backend=backend,
                                chunk_rows=chunk_rows)
    sample_size = init_sample_rows(n, n_clusters, init_sample_size)
    rows = np.arange(n) if sample_size == n else np.sort(rng.choice(n, size=sample_size, replace=False))
    # Every rank draws the same rows with the same generator and reads its own share of them; k-means++ then
    # reduces across ranks, so all ranks start from the same centroids.
    if init == "random":
        picked = rows[np.sort(rng.choice(sample_size, size=n_clusters, replace=False))]
        x = torch.from_numpy(source.take(picked))
        return _normalize(x) if cosine else x
    lo, hi = shard_bounds(sample_size, dist.get_rank(), dist.get_world_size())
    x = torch.from_numpy(source.take(rows[lo:hi]) if sample_size < n else source.read(lo, hi))
    if cosine:
        x = _normalize(x)
    # fp32 steps whatever the run's precision: the centres must not depend on it (or on whether this CPU has bf16).
    return kmeans_plusplus(x, n_clusters, rng, n_local_trials, checkpoint=checkpoint, tag=tag)


def kmeans(x, n_clusters: int, *, n_iters: int = 50, init: str = "auto", tol: float = 0.0,
           metric: str = "l2", seed: int | np.random.Generator | None = 0,
           accumulate_dtype: str = "float64", empty_cluster: str = "keep", backend: str = "auto",
           chunk_rows: int = DEFAULT_CHUNK_ROWS, init_sample_size: int | None = None,
           n_local_trials: int | None = None, init_centroids: np.ndarray | None = None,
           device: str | None = None, progress: bool = False, desc: str = "k-means",
           bounds: bool | None = None, checkpoint=None, tag: str = "kmeans",
           precision: str = "auto") -> KMeansResult:
    """Lloyd's k-means on the rows of ``x``.

    x: (n, d) array, tensor, ``.npy`` path, shard folder or :class:`EmbeddingSource` (read in chunks).
    n_clusters: k, 1 <= k <= n. n_iters: Lloyd iterations (each = one assignment pass + one update).
    init: ``"k-means++"`` (greedy, ``n_local_trials`` candidates per centre, default 2 + ln k, on a sample),
    ``"k-means||"`` (:func:`_kmeans_parallel`: a few passes over every row, then greedy k-means++ on the weighted
    candidates; ignores ``init_sample_size``), ``"random"``, or ``"auto"``: k-means++ unless it would cost more
    than the ``n_iters`` Lloyd iterations and k-means|| less (:func:`resolve_init`).
    tol: stop early once the relative objective decrease of an iteration falls below ``tol`` (0: never).
    metric: ``"l2"`` (squared Euclidean on raw features, as the paper) or ``"cosine"`` (normalised inputs).
    seed: int or ``np.random.Generator``; the only source of randomness.
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
    source = as_source(x)
    n, d = source.shape
    _check_kmeans_args(n, n_clusters, n_iters, init, metric, empty_cluster, accumulate_dtype)
    if init == "auto" and init_centroids is None:
        init = resolve_init(init, n, n_clusters, n_iters, init_sample_size, n_local_trials)
        log.debug("%s: init=auto runs %s (modelled cost in Lloyd passes: %s; %d iterations follow)", desc, init,
                  {name: round(c, 1) for name, c in init_costs(n, n_clusters, init_sample_size,
                                                                n_local_trials).items()}, n_iters)
    rng = make_rng(seed)
    cosine = metric == "cosine"
    dev = _default_device(device, backend)
    acc_dtype = getattr(torch, accumulate_dtype)

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
        centroids = _initial_centroids(source, n_clusters, init, rng, init_sample_size, n_local_trials, cosine,
                                       checkpoint=checkpoint, tag=f"{tag}.init", precision=precision,
                                       backend=backend, chunk_rows=chunk_rows)
    centroids = centroids.to(dev)

    lo, hi = shard_bounds(n, dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(backend, dev, precision, d, n_clusters)
    # Bounds need exact float64 running sums (they are updated by the rows that move, not rebuilt) and no
    # re-seeding from exact per-row distances; otherwise every iteration is a dense pass.
    if bounds is None:
        bounds = d <= BOUNDS_MAX_DIM
    bounded = bounds and accumulate_dtype == "float64" and empty_cluster != "farthest"
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

    assignments, distances = assign_source(source, centroids, backend=backend, chunk_rows=chunk_rows,
                                           metric=metric, device=dev, precision=precision)
    objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
    if n_empty:
        log.info("%s: %d empty cluster(s) after %d iterations (policy %r)", desc, n_empty, len(history),
                 empty_cluster)
    return KMeansResult(centroids=centroids.cpu().numpy(), assignments=assignments, distances=distances,
                        objective=objective, n_iters=len(history), history=history, iteration_seconds=seconds,
                        n_empty_clusters=n_empty,
                        row_range=(lo, hi) if dist.get_world_size() > 1 else None)


def assign_source(x, centroids, *, backend: str = "auto", chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  metric: str = "l2", device=None, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and squared distance for every row of this rank's share of ``x``, chunk by chunk.

    centroids: (k, d). Returns ``assignments: (n,) int64`` and ``distances: (n,) float32``, both canonical
    (:mod:`sslcurate.canonical`): the same for any backend, precision, thread count and world size.
    """
    source = as_source(x)
    dev = torch.device(device or "cpu")
    cosine = metric == "cosine"
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32) if not torch.is_tensor(centroids) else centroids)
    c = (_normalize(c) if cosine else c).to(dev)
    lo, hi = shard_bounds(len(source), dist.get_rank(), dist.get_world_size())
    assigner = get_assigner(backend, dev, precision, c.shape[1], c.shape[0])
    prepared = assigner.prepare(c)
    assignments = np.empty(hi - lo, dtype=np.int64)
    distances = np.empty(hi - lo, dtype=np.float32)
    for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
        xc = _to_device(chunk, dev, cosine)
        idx, _ = assigner.assign(xc, prepared)
        assignments[start - lo:start - lo + len(chunk)] = idx.cpu().numpy()
        # The distances the selections read (closest-to-centroid sampling): canonical, the same on every path.
        distances[start - lo:start - lo + len(chunk)] = canonical_row_distances(xc, c, idx).numpy()
    return assignments, distances


def sample_per_cluster(assignments: np.ndarray, distances: np.ndarray, n_clusters: int, r: int, strategy: str,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``r`` points of every cluster: the ``r`` closest to the centroid or ``r`` at random.

    assignments, distances: (n,) of all rows. The one-process form of :func:`select_per_cluster`.
    Returns sorted int64 indices.
    """
    return select_per_cluster(assignments, distances, 0, n_clusters, r, strategy, _draw_salt(rng))


def select_per_cluster(assignments: np.ndarray, distances: np.ndarray, row_offset: int, n_clusters: int, r: int,
                       strategy: str, salt: int) -> np.ndarray:
    """The ``r`` rows of every cluster with the smallest key, over all ranks, without full-length buffers.

    assignments, distances: (n_local,) of this rank's rows, the first being global row ``row_offset``.
    key: the distance (``"closest"``) or a hash of (salt, global row) (``"random"``, the same uniform draw
    whatever the number of ranks); ties go to the lower row. Each rank proposes its own ``r`` best per cluster
    (at most ``min(n_local, k r)`` candidates), only those are gathered, and every rank keeps the global
    ``r`` best per cluster: the same selection on 1 or many ranks. Returns sorted int64 global row indices
    (``<= k r`` of them, on every rank).

    The local rows are scanned in blocks of ``SELECT_BLOCK``, keeping the best ``r`` per cluster so far, so the
    selection's scratch is O(block + k r), not a few int64 arrays per row.
    """
    if strategy not in ("closest", "random"):
        raise CurationInputError(f"resampling strategy must be 'closest' or 'random', got {strategy!r}")
    cand_a = np.empty(0, dtype=np.int64)
    cand_key = np.empty(0, dtype=np.float64)
    cand_rows = np.empty(0, dtype=np.int64)
    for b in range(0, assignments.size, SELECT_BLOCK):
        a = assignments[b:b + SELECT_BLOCK]
        rows = np.arange(row_offset + b, row_offset + b + a.size, dtype=np.int64)
        key = (distances[b:b + SELECT_BLOCK].astype(np.float64) if strategy == "closest"
               else uniform_hash(rows, salt))
        a, key, rows = np.concatenate([cand_a, a]), np.concatenate([cand_key, key]), np.concatenate([cand_rows, rows])
        keep = _first_r_per_cluster(a, key, rows, n_clusters, r)
        cand_a, cand_key, cand_rows = a[keep], key[keep], rows[keep]
    if dist.get_world_size() > 1:
        # float64 carries the cluster and row ids exactly (< 2^53), so one (m, 3) gather moves everything.
        packed = torch.from_numpy(np.stack([cand_a.astype(np.float64), cand_key, cand_rows.astype(np.float64)], 1))
        allc = dist.all_gather_rows(packed).numpy()
        rows_all = allc[:, 2].astype(np.int64)
        cand_rows = rows_all[_first_r_per_cluster(allc[:, 0].astype(np.int64), allc[:, 1], rows_all, n_clusters, r)]
    return np.sort(cand_rows)


SELECT_BLOCK = 1 << 18  # rows per block of the per-cluster selection (~20 MiB of scratch)


def _first_r_per_cluster(assignments: np.ndarray, key: np.ndarray, rows: np.ndarray, n_clusters: int,
                         r: int) -> np.ndarray:
    """Positions of the ``r`` smallest (key, row) per cluster; vectorised: one sort, no loop over clusters."""
    order = np.lexsort((rows, key, assignments))
    sorted_assign = assignments[order]
    starts = np.searchsorted(sorted_assign, np.arange(n_clusters))
    rank_in_cluster = np.arange(order.size) - starts[sorted_assign]
    return order[rank_in_cluster < r]


def uniform_hash(rows: np.ndarray, salt: int) -> np.ndarray:
    """(n,) float64 in [0, 1): splitmix64 of (row + salt), a counter-based draw, so any rank can produce the
    number of any row without the others' (a shared generator would need all N draws on every rank)."""
    z = rows.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) % 2 ** 64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _draw_salt(rng: np.random.Generator) -> int:
    return int(rng.integers(2 ** 62))


def resampling_kmeans(x, n_clusters: int, *, steps: int = 10, sample_size: int = 1,
                      sample_strategy: str = "closest", seed: int | np.random.Generator | None = 0,
                      progress: bool = False, desc: str = "k-means", split: int = 0, checkpoint=None,
                      tag: str = "kmeans", **kmeans_kwargs) -> KMeansResult:
    """k-means followed by ``steps`` rounds of resampling-clustering (Vo et al. 2024, Sec. 4.2).

    Each round takes ``sample_size`` (r) points per cluster (closest to the centroid or random), runs a fresh
    k-means with the same k on only those points, and reassigns every point to the new centroids. Keeping
    about r points per cluster makes the centroids of dense regions stop outnumbering sparse ones.

    split: > 1 runs every k-means of the level as :func:`split_kmeans` (coarse k-means, then each coarse cluster
    split), for very large k. checkpoint: after each round the centroids and generator state are saved, and
    inside a round the Lloyd iterations (see :func:`kmeans`); a rerun resumes to the same result.
    In a multi-process run, every rank holds only its rows' assignments (``row_range``); the sample's indices
    (at most k r) are on every rank, its rows are read sharded.
    """
    source = as_source(x)
    rng = make_rng(seed)
    n = len(source)
    if steps < 0:
        raise CurationInputError(f"resampling steps must be >= 0, got {steps}")
    if steps and not 1 <= sample_size * n_clusters <= n:
        raise CurationInputError(
            f"{desc}: resampling r={sample_size} points per cluster is larger than the clusters hold "
            f"({n} points in {n_clusters} clusters, {n / n_clusters:.2f} per cluster on average); "
            "choose r <= n / k (the paper uses about half the mean cluster size)")
    backend = kmeans_kwargs.get("backend", "auto")
    assign_kwargs = {"backend": backend, "metric": kmeans_kwargs.get("metric", "l2"),
                     "device": _default_device(kmeans_kwargs.get("device"), backend),
                     "chunk_rows": kmeans_kwargs.get("chunk_rows", DEFAULT_CHUNK_ROWS),
                     "precision": kmeans_kwargs.get("precision", "auto")}

    def fit(data, run_tag, run_desc):
        if split > 1:
            return split_kmeans(data, n_clusters, split=split, seed=rng, desc=run_desc, checkpoint=checkpoint,
                                tag=run_tag, **kmeans_kwargs)
        return kmeans(data, n_clusters, seed=rng, progress=progress, desc=run_desc, checkpoint=checkpoint,
                      tag=run_tag, **kmeans_kwargs)

    saved = checkpoint.load(f"{tag}.rounds") if checkpoint is not None else None
    if saved is not None and saved[0]["centroids"].shape[0] == n_clusters:
        arrays, meta = saved
        done = int(meta["completed"])
        rng.bit_generator.state = meta["rng"]
        # Assignments are recomputed in one pass (the same function that produced them), not stored: O(N).
        assignments, distances = assign_source(source, arrays["centroids"], **assign_kwargs)
        result = KMeansResult(centroids=arrays["centroids"], assignments=assignments, distances=distances,
                              objective=float(meta["objective"]), n_iters=int(meta["n_iters"]),
                              history=list(meta["history"]), row_range=_row_range(n))
        log.info("%s: resuming after resampling round %d of %d", desc, done, steps)
    else:
        done = 0
        result = fit(source, f"{tag}.round0", desc)
        if steps:
            _save_round(checkpoint, tag, 0, result, rng)
    for step in range(done, steps):
        picked = select_per_cluster(result.assignments, result.distances, _row_offset(n), n_clusters, sample_size,
                                    sample_strategy, _draw_salt(rng))
        if picked.size < n_clusters:
            raise CurationInputError(
                f"{desc}: resampling step {step + 1} kept {picked.size} points, fewer than k={n_clusters} "
                "(too many empty clusters); raise r or lower k")
        result.assignments = result.distances = None  # the rank's rows are reassigned below: hold one copy only
        sub = fit(SubsetSource(source, picked), f"{tag}.round{step + 1}", f"{desc} resample {step + 1}/{steps}")
        assignments, distances = assign_source(source, sub.centroids, **assign_kwargs)
        counts = dist.all_reduce_sum(torch.from_numpy(np.bincount(assignments, minlength=n_clusters)))
        objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
        result = KMeansResult(centroids=sub.centroids, assignments=assignments, distances=distances,
                              objective=objective, n_iters=result.n_iters + sub.n_iters,
                              history=result.history + [sub.objective], n_empty_clusters=int((counts == 0).sum()),
                              row_range=_row_range(n))
        if step + 1 < steps:
            _save_round(checkpoint, tag, step + 1, result, rng)
    return result


def _save_round(checkpoint, tag: str, completed: int, result: KMeansResult, rng: np.random.Generator) -> None:
    if checkpoint is not None:
        checkpoint.save(f"{tag}.rounds", {"centroids": result.centroids},
                        {"completed": completed, "rng": rng.bit_generator.state, "objective": result.objective,
                         "n_iters": result.n_iters, "history": result.history})


def split_shares(sizes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Split ``n_clusters`` over coarse clusters of ``sizes: (m,)`` in proportion to their sizes: every non-empty
    cluster gets at least 1 and at most its size, the total is exactly ``n_clusters`` (largest remainders
    first, ties to the lower index). Returns (m,) int64."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total, nonempty = int(sizes.sum()), int((sizes > 0).sum())
    if not nonempty <= n_clusters <= total:
        raise CurationInputError(f"cannot split {n_clusters} clusters over {nonempty} non-empty coarse clusters "
                                 f"holding {total} points (need between {nonempty} and {total})")
    exact = n_clusters * sizes / total
    share = np.clip(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64), sizes)
    index = np.arange(sizes.size)
    while (diff := n_clusters - int(share.sum())) != 0:
        frac = exact - share  # > 0: under its proportional share
        if diff > 0:
            order = np.lexsort((index, -frac))
            order = order[share[order] < sizes[order]][:diff]
            share[order] += 1
        else:
            order = np.lexsort((index, frac))
            order = order[share[order] > 1][:-diff]
            share[order] -= 1
    return share


def split_kmeans(x, n_clusters: int, *, split: int, seed: int | np.random.Generator | None = 0,
                 n_iters: int = 50, desc: str = "k-means", checkpoint=None, tag: str = "kmeans",
                 progress: bool = False, **kmeans_kwargs) -> KMeansResult:
    """Two-stage k-means for very large k (Vo et al. 2024, App.: level 1's 10M clusters as 100k coarse clusters,
    each split independently).

    A coarse k-means with ``ceil(k / split)`` clusters, then each coarse cluster j is clustered on its own
    points into ``split_shares`` of k (proportional to its size, total exactly k). Fine cluster ids of j are
    ``offset_j .. offset_j + share_j``. Cost per iteration: about ``2 N D (k / split + split)`` (every row meets
the coarse centroids, then its own coarse cluster's ~split fine ones) instead of ``2 N D k``.

    Multi-process: the coarse k-means is sharded as usual; coarse clusters are dealt to ranks by cost
    (size x share, largest first, in snake order); each rank sends the row ids of its rows to their cluster's
    owner (one all-to-all, O(N / world) per rank), the owner reads those rows and clusters them, centroids are
    summed (O(k D)) and the fine assignments travel back the same way. Fine cluster j is seeded by
    (salt, j), so the result does not depend on which rank ran it. With ``checkpoint``, each rank saves its
    finished coarse clusters every ``checkpoint.every_seconds``.
    Returns a :class:`KMeansResult` over this rank's rows (``row_range`` when several ranks).
    """
    source = as_source(x)
    n, d = source.shape
    if split < 2:
        raise CurationInputError(f"split must be >= 2 (fine clusters per coarse cluster), got {split}")
    _check_kmeans_args(n, n_clusters, n_iters, kmeans_kwargs.get("init", "auto"),
                       kmeans_kwargs.get("metric", "l2"), kmeans_kwargs.get("empty_cluster", "keep"),
                       kmeans_kwargs.get("accumulate_dtype", "float64"))
    rng = make_rng(seed)
    k_coarse = -(-n_clusters // split)
    coarse = kmeans(source, k_coarse, n_iters=n_iters, seed=rng, desc=f"{desc} coarse", checkpoint=checkpoint,
                    tag=f"{tag}.coarse", progress=progress, **kmeans_kwargs)
    sizes = dist.all_reduce_sum(torch.from_numpy(np.bincount(coarse.assignments, minlength=k_coarse))).numpy()
    shares = split_shares(sizes, n_clusters)
    offsets = np.concatenate([[0], np.cumsum(shares)])
    salt = _draw_salt(rng)
    world, rank = dist.get_world_size(), dist.get_rank()
    by_cost = np.lexsort((np.arange(k_coarse), -(sizes * shares)))
    turn = np.arange(k_coarse) % (2 * world)
    owner = np.empty(k_coarse, dtype=np.int64)
    owner[by_cost] = np.where(turn < world, turn, 2 * world - 1 - turn)

    # Route (coarse cluster, row) of every local row to the owner of its cluster.
    lo = _row_offset(n)
    local_rows = np.arange(lo, lo + coarse.assignments.size, dtype=np.int64)
    dest = owner[coarse.assignments]
    send_order = np.lexsort((local_rows, dest))
    packed = torch.from_numpy(np.stack([coarse.assignments[send_order], local_rows[send_order]], axis=1))
    received, recv_counts = dist.all_to_all_rows(packed, np.bincount(dest, minlength=world).tolist())
    recv_cluster, recv_rows = received[:, 0].numpy(), received[:, 1].numpy()
    by_cluster = np.lexsort((recv_rows, recv_cluster))
    starts = np.searchsorted(recv_cluster[by_cluster], np.arange(k_coarse + 1))

    centroids = np.zeros((n_clusters, d), dtype=np.float32)
    fine_assign = np.zeros(recv_rows.size, dtype=np.int64)
    fine_dist = np.zeros(recv_rows.size, dtype=np.float32)
    mine = np.flatnonzero((owner == rank) & (sizes > 0))
    ckpt_tag = f"{tag}.fine.rank{rank}of{world}"
    saved = checkpoint.load(ckpt_tag) if checkpoint is not None else None
    done = 0
    if saved is not None and saved[0]["fine_assign"].shape == fine_assign.shape:
        arrays, meta = saved
        done = int(meta["done"])
        centroids[:], fine_assign[:], fine_dist[:] = arrays["centroids"], arrays["fine_assign"], arrays["fine_dist"]
        log.info("%s: resuming the split after %d of this rank's %d coarse clusters", desc, done, mine.size)
    last_save = time.monotonic()
    bar = progress_bar(total=mine.size - done, desc=f"{desc} split", enabled=progress)
    with dist.single_process():  # each coarse cluster is a whole, ordinary k-means on this rank
        for i in range(done, mine.size):
            j = int(mine[i])
            sel = by_cluster[starts[j]:starts[j + 1]]
            xj = source.take(recv_rows[sel])
            res = kmeans(xj, int(shares[j]), n_iters=n_iters, seed=np.random.default_rng([salt, j]),
                         desc=f"{desc} split {j}", **kmeans_kwargs)
            centroids[offsets[j]:offsets[j + 1]] = res.centroids
            fine_assign[sel] = offsets[j] + res.assignments
            fine_dist[sel] = res.distances
            bar.update(1)
            if checkpoint is not None and time.monotonic() - last_save >= checkpoint.every_seconds:
                checkpoint.save(ckpt_tag, {"centroids": centroids, "fine_assign": fine_assign,
                                           "fine_dist": fine_dist}, {"done": i + 1}, shared=False)
                last_save = time.monotonic()
    bar.close()
    # Each fine centroid was written by exactly one rank (zeros elsewhere), so the sum is exact.
    centroids_t = dist.all_reduce_sum(torch.from_numpy(centroids))
    back = torch.from_numpy(np.stack([fine_assign.astype(np.float64), fine_dist.astype(np.float64)], axis=1))
    returned, _ = dist.all_to_all_rows(back, recv_counts)
    assignments = np.empty(local_rows.size, dtype=np.int64)
    distances = np.empty(local_rows.size, dtype=np.float32)
    assignments[send_order] = returned[:, 0].numpy().astype(np.int64)
    distances[send_order] = returned[:, 1].numpy().astype(np.float32)
    objective = float(dist.all_reduce_sum(torch.tensor([distances.sum(dtype=np.float64)]))[0])
    counts = dist.all_reduce_sum(torch.from_numpy(np.bincount(assignments, minlength=n_clusters)))
    return KMeansResult(centroids=centroids_t.numpy(), assignments=assignments, distances=distances,
                        objective=objective, n_iters=coarse.n_iters + n_iters, history=coarse.history,
                        n_empty_clusters=int((counts == 0).sum()), row_range=_row_range(n))


def _default_device(device, backend: str) -> torch.device:
    # faiss and the fused kernels take CPU tensors (faiss-gpu moves its own index to the GPU).
    return torch.device(device or ("cuda" if torch.cuda.is_available() and backend not in ("faiss", "fused")
                                   else "cpu"))


def _row_offset(n: int) -> int:
    return shard_bounds(n, dist.get_rank(), dist.get_world_size())[0]


def _row_range(n: int) -> tuple[int, int] | None:
    return shard_bounds(n, dist.get_rank(), dist.get_world_size()) if dist.get_world_size() > 1 else None


class _HamerlyBounds:
    """Per-row state of Lloyd's k-means with Hamerly's bounds (Hamerly 2010, "Making k-means even faster").

    For every local row: ``assign`` (current centroid a), ``upper`` >= |x - c_a| and ``lower`` <= the distance
    to every other centroid. When centroids move by ``shift``, ``upper += shift[a]`` and ``lower -=`` the
    largest shift among the other centroids. A row keeps its centroid without any distance computation when
    ``upper <= max(lower, half_gap[a])``, ``half_gap[a]`` being half the distance from c_a to its nearest other
    centroid. Otherwise ``upper`` is tightened with one exact distance, and only the rows still unproven get a
    dense top-2 pass (which resets both bounds). Everything is vectorised over rows; no Python loop per point.

    Exactness: bounds hold for true distances, and the dense pass computes ``|x|^2 - 2 x.c + |c|^2`` in float32.
    Each bound built from a computed value is widened by a worst-case float32 error
    ``(d + 4) * 2^-23 * (|x|^2 + max |c|^2)`` (on squared distances), so a skipped row is one whose float32
    brute-force argmin could only differ by a tie within rounding. Cluster sums are float64 running totals
    updated by the rows that moved (``+x`` to the new cluster, ``-x`` from the old); the objective comes from
    them as ``sum |x|^2 - 2 sum_j c_j . S_j + sum_j n_j |c_j|^2`` in float64.

    Rows are identified by their position in ``source.iter_chunks(chunk_rows, lo, hi)``, which is fixed.
    """

    def __init__(self, n_local: int, n_clusters: int, n_total: int, d: int, device: torch.device):
        self.assign = torch.zeros(n_local, dtype=torch.int64, device=device)
        self.upper = torch.zeros(n_local, dtype=torch.float64, device=device)
        self.lower = torch.zeros(n_local, dtype=torch.float64, device=device)
        self.k, self.d = n_clusters, d
        self.rel_err = (d + 4) * 2.0 ** -23  # float32 dot-product error bound, relative to |x|^2 + |c|^2
        # half_gap costs a (k, k) distance pass: worth it while k is small next to n.
        self.use_half_gap = 4 * n_clusters <= n_total
        self.sums = torch.zeros((n_clusters, d), dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_clusters, dtype=torch.int64, device=device)
        self.x_sq_total = 0.0
        self.previous: torch.Tensor | None = None  # centroids of the last assignment pass
        self.rows_seen = 0
        self.rows_dense = 0

    def skipped_fraction(self) -> float:
        return 1.0 - self.rows_dense / max(self.rows_seen, 1)

    def iteration(self, source: EmbeddingSource, chunk_rows: int, lo: int, hi: int, cosine: bool,
                  centroids: torch.Tensor, prepared, assigner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One assignment pass against ``centroids: (k, d)``. Returns global (sums, counts, objective: float)."""
        dev = centroids.device
        c = centroids.float()
        c_sq = (c.double() ** 2).sum(1)
        self._c_sq_max = float(c_sq.max())
        first = self.previous is None
        if not first:
            shift = (c.double() - self.previous.double()).norm(dim=1)  # (k,)
            top = torch.topk(shift, min(2, self.k))
            other = torch.full_like(shift, float(top.values[0]))       # largest shift among the *other* centroids
            other[top.indices[0]] = float(top.values[1]) if self.k > 1 else 0.0
            half_gap = self._half_gap(c, prepared, assigner) if self.use_half_gap else torch.zeros_like(shift)
        d_sums = torch.zeros_like(self.sums)
        d_counts = torch.zeros_like(self.counts)
        for start, chunk in source.iter_chunks(chunk_rows, lo, hi):
            xc = _to_device(chunk, dev, cosine)
            rows = slice(start - lo, start - lo + xc.shape[0])
            if first:
                self._dense(xc, rows, None, prepared, assigner, d_sums, d_counts)
            else:
                self._bounded(xc, rows, c, shift, other, half_gap, prepared, assigner, d_sums, d_counts)
        if first:
            self.x_sq_total = float(dist.all_reduce_sum(torch.tensor([self.x_sq_total], dtype=torch.float64))[0])
        dist.all_reduce_sum(d_sums)
        dist.all_reduce_sum(d_counts)
        self.sums += d_sums
        self.counts += d_counts
        self.previous = c.clone()
        return self.sums, self.counts, lloyd_objective(self.x_sq_total, c, self.sums, self.counts)

    def _half_gap(self, c: torch.Tensor, prepared, assigner) -> torch.Tensor:
        """(k,) half the distance from each centroid to its nearest other centroid, rounded down."""
        idx, d1, d2 = assigner.assign_top2(c, prepared)
        self_first = idx == torch.arange(self.k, device=c.device)
        nearest_other = torch.where(self_first, d2, d1).double()  # normally d1 is the centroid itself
        c_sq = (c.double() ** 2).sum(1)
        err = 2.0 * self.rel_err * (c_sq + self._c_sq_max)
        return 0.5 * (nearest_other - err).clamp(min=0).sqrt()

    def _dense(self, xr: torch.Tensor, rows, sel, prepared, assigner, d_sums, d_counts) -> None:
        """Top-2 pass over ``xr`` (the rows ``sel`` of chunk ``rows``, or all of it): reset a, upper, lower."""
        idx, d1, d2 = assigner.assign_top2(xr, prepared)
        x_sq = (xr.double() ** 2).sum(1)
        err = self.rel_err * (x_sq + self._c_sq_max)
        upper = (d1.double() + err).clamp(min=0).sqrt()
        lower = (d2.double() - err).clamp(min=0).sqrt()
        a, u, l = self.assign[rows], self.upper[rows], self.lower[rows]
        self.rows_dense += xr.shape[0]
        if sel is None:  # first pass: every row enters its cluster
            self.rows_seen += xr.shape[0]
            a.copy_(idx), u.copy_(upper), l.copy_(lower)
            self.x_sq_total += squared_norm_total(xr)
            d_sums.index_add_(0, idx, xr.double())
            d_counts.index_add_(0, idx, torch.ones_like(idx))
            return
        old = a[sel]
        moved = idx != old
        a[sel], u[sel], l[sel] = idx, upper, lower
        if bool(moved.any()):
            xm = xr[moved].double()
            d_sums.index_add_(0, idx[moved], xm)
            d_sums.index_add_(0, old[moved], -xm)
            ones = torch.ones_like(old[moved])
            d_counts.index_add_(0, idx[moved], ones)
            d_counts.index_add_(0, old[moved], -ones)

    def _bounded(self, xc: torch.Tensor, rows, c, shift, other, half_gap, prepared, assigner, d_sums,
                 d_counts) -> None:
        a, u, l = self.assign[rows], self.upper[rows], self.lower[rows]
        self.rows_seen += xc.shape[0]
        u += shift[a]
        l -= other[a]
        bound = torch.maximum(l, half_gap[a])
        # Strictly: a row whose bounds only prove a tie goes to the dense pass, which settles ties canonically.
        cand = torch.nonzero(u >= bound)[:, 0]
        if cand.numel() == 0:
            return
        # Tighten the upper bound with the exact distance to the current centroid (d flops per row).
        xr = xc[cand]
        du = ((xr - c[a[cand]]) ** 2).sum(1).double()
        u_tight = (du * (1.0 + self.rel_err)).sqrt()
        u[cand] = u_tight
        still = u_tight >= bound[cand]
        if not bool(still.any()):
            return
        self._dense(xr[still], rows, cand[still], prepared, assigner, d_sums, d_counts)


class _FarthestTracker:
    """Remembers the points farthest from their centroids, to re-seed empty clusters on them."""

    def __init__(self, n_clusters: int):
        self.k = n_clusters
        self.rows = torch.zeros(0, dtype=torch.int64)
        self.dists = torch.zeros(0)

    def update(self, start: int, dmin: torch.Tensor) -> None:
        rows = torch.cat([self.rows, torch.arange(start, start + dmin.shape[0])])
        dists = torch.cat([self.dists, dmin.cpu().float()])
        keep = _farthest_first(rows, dists)[: self.k]
        self.rows, self.dists = rows[keep], dists[keep]

    def reseed(self, centroids: torch.Tensor, empty: torch.Tensor, source: EmbeddingSource,
               cosine: bool) -> torch.Tensor:
        rows = dist.all_gather_rows(self.rows[:, None])[:, 0]
        dists = dist.all_gather_rows(self.dists[:, None])[:, 0]
        order = _farthest_first(rows, dists)
        empty_ids = torch.nonzero(empty.cpu())[:, 0]
        picked = rows[order[: empty_ids.numel()]].numpy()
        new = torch.from_numpy(source.take(picked)).to(centroids.device)
        centroids = centroids.clone()
        centroids[empty_ids[: new.shape[0]].to(centroids.device)] = _normalize(new) if cosine else new
        return centroids


def _farthest_first(rows: torch.Tensor, dists: torch.Tensor) -> torch.Tensor:
    """Positions ordered by decreasing distance, the lower row first among equals (topk's pick among equal values
    is unspecified)."""
    return torch.from_numpy(np.lexsort((rows.numpy(), -dists.double().numpy())))


def _to_device(chunk: np.ndarray, dev: torch.device, cosine: bool) -> torch.Tensor:
    xc = torch.from_numpy(chunk).to(dev, non_blocking=True)
    return _normalize(xc) if cosine else xc


def _check_kmeans_args(n: int, k: int, n_iters: int, init: str, metric: str, empty_cluster: str,
                       accumulate_dtype: str) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise CurationInputError(f"number of clusters k={k} must be between 1 and the number of points ({n})")
    if n_iters < 0:
        raise CurationInputError(f"n_iters must be >= 0, got {n_iters}")
    if init not in INITS:
        raise CurationInputError(f"init must be one of {INITS}, got {init!r}")
    if metric not in METRICS:
        raise CurationInputError(f"metric must be one of {METRICS}, got {metric!r}")
    if empty_cluster not in EMPTY_CLUSTER_POLICIES:
        raise CurationInputError(f"empty_cluster must be one of {EMPTY_CLUSTER_POLICIES}, got {empty_cluster!r}")
    if accumulate_dtype not in ("float32", "float64"):
        raise CurationInputError(f"accumulate_dtype must be 'float32' or 'float64', got {accumulate_dtype!r}")
