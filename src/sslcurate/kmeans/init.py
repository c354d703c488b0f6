"""Initialisation: greedy k-means++ (on a subsample by default), k-means|| and random, and the cost model
with which ``init="auto"`` chooses between them."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from .. import distributed as dist
from ..assign import get_assigner
from ..canonical import canonical_row_distances
from ..errors import CurationInputError
from ..sources import DEFAULT_CHUNK_ROWS, EmbeddingSource, shard_bounds
from .common import _draw_salt, _normalize, _to_device, uniform_hash
from .steps import _split_bf16

log = logging.getLogger(__name__)


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
    # float64 copy for the potentials: a preallocated buffer, since sum(dtype=float64) converts into a fresh
    # (n_trials, n) allocation at every step, which at large n costs more than the sum itself.
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
