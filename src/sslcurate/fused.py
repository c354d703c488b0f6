"""Fused CPU assignment: the distance GEMM and the nearest-centroid search in one pass (``sslcurate._kernels``).

The C extension keeps a register tile of rows x centroids (8 x 32 with AVX-512; 6 x 16 for fp32 and 3 x 32 for
int16 with AVX2) and folds it into each row's best and second best as soon as it is computed, so the ``(n, k)``
score matrix never reaches memory. The kernels:

- :class:`FusedAssigner`: exact fp32 (FMA), ``|c|^2 - 2 x.c`` as faiss and the torch path compute it, but
  centred on the centroid mean (see :meth:`FusedAssigner.prepare`). AVX-512 where the CPU has it, else AVX2.
- :class:`FusedInt8Assigner`: int8 scores with AVX512-VNNI (four times the multiply-adds of fp32 per
  instruction); :class:`FusedInt16Assigner`: int16 scores with AVX2's ``vpmaddwd`` (twice the multiply-adds of
  fp32 per instruction, and 11-15 bit codes, so far fewer near-ties than int8). Each row is quantised on its own
  scale, then the rows whose best and second-best scores are within twice their error bound are settled exactly
  in fp32 (the bound and its ``sigmas`` rule as in :class:`sslcurate.assign.Int8Assigner`). Returned distances
  are exact fp32 for every row.

The extension is built at install time (``setup.py``, optional) without ``-march`` flags; the kernels run where
:func:`fused_available` says this CPU has their instructions. Elsewhere sslcurate.assign uses faiss or torch.
"""

from __future__ import annotations

import functools
import math

import torch

NR = 32  # centroids per packed panel
ISAS = {"avx512": 1, "avx2": 2}  # fp32 kernels, best first
CODES = {"int8": 0, "int16": 1}  # integer kernels


@functools.lru_cache(maxsize=1)
def _module():
    try:
        from . import _kernels
    except ImportError:  # not built here (no compiler at install time, or not x86-64)
        return None
    return _kernels


@functools.lru_cache(maxsize=1)
def _features() -> dict:
    mod = _module()
    return mod.cpu_features() if mod is not None else {}


def fused_available(kind: str = "f32") -> bool:
    """True where the extension is built and this CPU runs the ``kind`` kernel: ``"f32"`` (either ISA),
    ``"avx512"`` or ``"avx2"`` (the fp32 kernel for that ISA: AVX-512 F/BW/DQ/VL, or AVX2 + FMA), ``"int8"``
    (AVX512-VNNI) or ``"int16"`` (AVX2)."""
    feats = _features()
    if kind == "f32":
        return any(feats.get(isa, False) for isa in ISAS)
    return bool(feats.get(kind, False))


def fused_isa() -> str | None:
    """The instruction set the fp32 kernel runs with here (the widest available), or None."""
    return next((isa for isa in ISAS if fused_available(isa)), None)


def _rows_f32(x: torch.Tensor) -> torch.Tensor:
    """float32 on the CPU with unit column stride (any row stride): what the kernels read in place."""
    if x.device.type != "cpu":
        raise ValueError(f"the fused kernels run on the CPU; got a tensor on {x.device}")
    x = x.float()
    return x if x.dim() == 2 and x.stride(1) == 1 else x.contiguous()


def bf16_prep(x: torch.Tensor, mu: torch.Tensor, n_threads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bf16 path's norm-augmented rows ``[bf16(x - mu), |x - mu|^2 hi, lo, 1, 1]`` (``(n, d + 4)`` bfloat16),
    ``|x - mu|^2`` and the rounding residual ``|x - mu - bf16(x - mu)|`` per row, in one pass over ``x`` (needs
    ``fused_available("avx512")``)."""
    x = _rows_f32(x)
    n, d = x.shape
    mu = mu.float().contiguous()
    aug = torch.empty((n, d + 4), dtype=torch.bfloat16)
    x_sq, ex = torch.empty(n), torch.empty(n)
    if n:
        _module().bf16_prep(x.data_ptr(), n, d, x.stride(0), mu.data_ptr(), aug.data_ptr(), d + 4, x_sq.data_ptr(),
                            ex.data_ptr(), n_threads)
    return aug, x_sq, ex


def bf16_settle(codes: torch.Tensor, k: int, x: torch.Tensor, c: torch.Tensor, a: torch.Tensor, u: float,
                n_threads: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Nearest of the ``k`` centroids ``c`` for each row of ``x`` from the bf16 distances ``codes``, the GEMM's
    output in column tiles (``(n_tiles, n, tile_cols)`` bfloat16, contiguous; tile ``t`` holds columns
    ``t * tile_cols ...``): every column within twice the row's error bound ``(a + u |d1|)`` of the smallest is a
    candidate, and rows with several are re-scored exactly in fp32. -> indices, exact fp32 squared distances
    ``|x - c|^2``, and the number of rows re-scored."""
    x = _rows_f32(x)
    n, d = x.shape
    c = c.float().contiguous()
    a = a.float().contiguous()
    if (codes.dtype != torch.bfloat16 or codes.dim() != 3 or not codes.is_contiguous() or codes.shape[1] != n
            or codes.shape[0] * codes.shape[2] < k):
        raise ValueError(f"codes must be contiguous (n_tiles, n, tile_cols) bfloat16 covering {k} columns of {n} "
                         f"rows; got {tuple(codes.shape)} {codes.dtype}")
    idx, dist = torch.empty(n, dtype=torch.int64), torch.empty(n)
    settled = 0
    if n:
        settled = _module().bf16_settle(codes.data_ptr(), n, codes.shape[2], k, x.data_ptr(), d, x.stride(0),
                                        c.data_ptr(), a.data_ptr(), u, idx.data_ptr(), dist.data_ptr(), n_threads)
    return idx, dist, settled


class FusedAssigner:
    """Exact fp32 nearest centroid with the fused kernel (same interface as
    :class:`sslcurate.assign.TorchAssigner`); ``isa`` picks ``"avx512"`` or ``"avx2"`` (default: the widest this
    CPU runs)."""

    def __init__(self, n_threads: int | None = None, isa: str | None = None):
        self.n_threads = n_threads
        self.isa = isa or fused_isa()
        if self.isa not in ISAS or not fused_available(self.isa):
            raise RuntimeError(f"the fused fp32 kernel for {self.isa!r} does not run here (CPU features: "
                               f"{_features() or 'extension not built'})")

    def _threads(self) -> int:
        return self.n_threads or torch.get_num_threads()

    def prepare(self, centroids: torch.Tensor):
        """``-2 (c - mu)`` packed in panels of 32 centroids, ``[panel][d][32]``, and the bias
        ``|c - mu|^2 + 2 mu.(c - mu)`` (``+inf`` for padding), ``mu`` the centroid mean.

        Scores are then ``|c - mu|^2 - 2 (x - mu).(c - mu)``, the squared distance less ``|x - mu|^2``: centred,
        so far from the origin the fp32 sums cancel ``|x| |c - mu|`` rather than ``|x| |c| + |c|^2`` (the GEMM
        form's error; what matters when ``|x|^2`` dwarfs the distances), yet x is read as it is. The returned
        nearest distance is recomputed in the direct form ``|x - c|^2`` (O(d) per row).
        """
        c = centroids.detach().float().cpu()
        k, d = c.shape
        k_pad = -(-k // NR) * NR
        mu = c.double().mean(0)
        cc = c.double() - mu
        packed = torch.zeros((k_pad, d))
        packed[:k] = (cc * -2.0).float()
        packed = packed.view(k_pad // NR, NR, d).permute(0, 2, 1).contiguous()
        bias = torch.full((k_pad,), float("inf"))
        bias[:k] = ((cc * cc).sum(1) + 2.0 * (cc @ mu)).float()
        return {"c": c.contiguous(), "mu": mu.float().contiguous(), "packed": packed, "bias": bias, "k": k,
                "k_pad": k_pad, "d": d}

    def _run(self, x: torch.Tensor, prepared, top2: bool):
        x = _rows_f32(x)
        n, d = x.shape
        idx = torch.empty(n, dtype=torch.int64)
        d1 = torch.empty(n)
        d2 = torch.empty(n) if top2 else None
        if n:
            p = prepared
            _module().assign_f32(ISAS[self.isa], x.data_ptr(), n, d, x.stride(0), p["c"].data_ptr(),
                                 p["mu"].data_ptr(), p["packed"].data_ptr(), p["bias"].data_ptr(), p["k_pad"],
                                 idx.data_ptr(), d1.data_ptr(), d2.data_ptr() if top2 else 0, self._threads())
        return idx, d1, d2

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centroid (near-ties settled canonically) and its squared distance. The top-2 pass costs more
        than the nearest-only one, but only the margin to the second tells a tie within rounding."""
        idx, d1, _ = self.assign_top2(x, prepared)
        return idx, d1.clamp_(min=0)

    def assign_top2(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Also the squared distance to the second-nearest centroid (``inf`` when ``k == 1``); neither clamped.
        Rows whose margin is within rounding are settled canonically (:func:`sslcurate.canonical.settle_exact`)."""
        from . import canonical  # canonical imports this module

        idx, d1, d2 = self._run(x, prepared, top2=True)
        return canonical.settle_exact(x, prepared["c"], idx, d1, d2), d1, d2


class SettlingBase:
    """What every reduced-precision assigner shares: the exact assigner ``exact`` it wraps (prepared on first use:
    the top-2 queries of the bounded Lloyd loop, blocks the cheap path cannot take), the ``sigmas`` rule of its
    error bound, and the count of rows it settled exactly."""

    def __init__(self, exact, sigmas: float | None = 6.0):
        self.exact = exact
        self.sigmas = sigmas
        self.rows_seen = 0
        self.rows_settled = 0

    def settled_fraction(self) -> float:
        return self.rows_settled / max(self.rows_seen, 1)

    def _spread(self, d: int) -> float:
        """Factor on the Cauchy-Schwarz bound of a residual dot product: ``min(1, sigmas / sqrt(d))`` (rounding
        residuals have components of independent sign, so their dot product is ~ ``|e| |c| / sqrt(d)``), or 1
        (the worst case) with ``sigmas=None``."""
        return 1.0 if self.sigmas is None else min(1.0, self.sigmas / math.sqrt(d))

    def _exact_prepared(self, prepared):
        if "exact" not in prepared:
            prepared["exact"] = self.exact.prepare(prepared["c"])
        return prepared["exact"]

    def assign_top2(self, x: torch.Tensor, prepared):
        return self.exact.assign_top2(x, self._exact_prepared(prepared))


class _FusedIntAssigner(SettlingBase):
    """Nearest centroid from fused integer scores, settled exactly in fp32 where the margin is not conclusive.

    Centroids are centred on their mean and quantised on one scale ``s_c = max |c - mu| / qmax``; each row of x
    on its own ``s_x = max |x - mu| / qmax`` (the kernel rescales its integer dot products by ``-2 s_x s_c`` in
    fp32, so rows need not share a scale, and a row's codes use the whole range). Subclasses set the code kind,
    ``qmax`` and the packed layout.

    A row's score error is at most ``E = 2 spread (|e_x| max|c| + (|x| + |e_x|) max|e_c|)`` plus fp32 rounding
    (``e``: quantisation residuals, ``spread = min(1, sigmas / sqrt(d))``, as in
    :class:`sslcurate.assign.Int8Assigner`). Rows whose second-best score is within ``2E`` of the best are
    settled: every centroid scoring at most ``best + 2E`` is re-scored exactly in fp32 and the nearest taken. The
    kernel keeps, per lane of 32 column classes, the best scores and the columns of the best (int16) or the best two
    (int8), so the candidates are read off those lanes in the same pass. A lane whose next score is under the limit
    too may hold more: up to 4 such lanes get exact distances for all their columns in that pass, and rows with more
    go through a second, listing pass (see ``run_q`` in ``_kernels.c``). ``exact`` (any assigner) serves the top-2
    queries of the bounded Lloyd loop.
    """

    codes = ""  # key of sslcurate.fused.CODES

    def __init__(self, exact, sigmas: float | None = 6.0, n_threads: int | None = None):
        if not fused_available(self.codes):
            raise RuntimeError(f"the fused {self.codes} kernel does not run here (CPU features: "
                               f"{_features() or 'extension not built'})")
        super().__init__(exact, sigmas)
        self.n_threads = n_threads
        self.rows_listed = 0  # settled rows that needed the listing pass
        self.rows_all_centroids = 0  # listed rows with more than the kernel's CAP candidates: scanned in full

    def _threads(self) -> int:
        return self.n_threads or torch.get_num_threads()

    def _qmax(self, d: int) -> int:
        raise NotImplementedError

    group = 0  # features per code group: what one lane of the kernel's dot-product instruction sums
    dtype = torch.int8

    def _init(self, q: torch.Tensor, k_pad: int) -> torch.Tensor:
        """Each centroid's accumulator start value (int32)."""
        return torch.zeros(k_pad, dtype=torch.int32)

    def _pack(self, q: torch.Tensor, k_pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed panels of the centroid codes ``q`` and the accumulators' initial values."""
        k, d = q.shape
        g = -(-d // self.group)
        codes = torch.zeros((k_pad, g * self.group), dtype=self.dtype)
        codes[:k, :d] = q.to(self.dtype)
        # The layout the kernel reads: per panel of 32 centroids, per group, the 32 centroids' codes of that group.
        packed = codes.view(k_pad // NR, NR, g, self.group).permute(0, 2, 1, 3).contiguous()
        return packed, self._init(q, k_pad)

    def prepare(self, centroids: torch.Tensor):
        c = centroids.detach().float().cpu().contiguous()
        k, d = c.shape
        k_pad, qmax = -(-k // NR) * NR, self._qmax(d)
        mu = c.mean(0)
        cc = (c - mu).contiguous()
        s_c = float(cc.abs().max()) / qmax or 1.0
        q = torch.round(cc / s_c).clamp_(-qmax, qmax)
        packed, init = self._pack(q, k_pad)
        c_sq = (cc.double() ** 2).sum(1)
        bias = torch.full((k_pad,), float("inf"))
        bias[:k] = c_sq.float()
        bounds = torch.tensor([float(cc.norm(dim=1).max()), float((cc - q * s_c).norm(dim=1).max()), self._spread(d),
                               float(c_sq.max())], dtype=torch.float64)
        return {"c": c, "mu": mu.contiguous(), "cc": cc, "s_c": s_c, "qmax": float(qmax), "packed": packed,
                "init": init, "bias": bias, "bounds": bounds, "k": k, "k_pad": k_pad}

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        x = _rows_f32(x)
        n, d = x.shape
        idx = torch.empty(n, dtype=torch.int64)
        dist = torch.empty(n)
        if not n:
            return idx, dist
        limit = torch.empty(n)
        status = torch.empty(n, dtype=torch.int8)
        p = prepared
        mod, threads, kind = _module(), self._threads(), CODES[self.codes]
        common = (p["mu"].data_ptr(), p["packed"].data_ptr(), p["init"].data_ptr(), p["bias"].data_ptr(), p["s_c"],
                  p["qmax"], p["k_pad"], p["cc"].data_ptr(), p["c"].data_ptr())
        mod.assign_q(kind, x.data_ptr(), n, d, x.stride(0), *common, p["k"], p["bounds"].data_ptr(), idx.data_ptr(),
                     dist.data_ptr(), limit.data_ptr(), status.data_ptr(), threads)
        listed = torch.nonzero(status == 2)[:, 0]
        if listed.numel():
            lim = limit[listed].contiguous()
            self.rows_all_centroids += mod.settle_q(kind, x.data_ptr(), d, x.stride(0), *common,
                                                    float(p["bounds"][0]), p["k"], listed.data_ptr(),
                                                    listed.numel(), lim.data_ptr(), idx.data_ptr(),
                                                    dist.data_ptr(), threads)
        self.rows_seen += n
        self.rows_settled += int((status > 0).sum())
        self.rows_listed += listed.numel()
        return idx, dist


class FusedInt8Assigner(_FusedIntAssigner):
    """Integer scores from int8 codes with AVX512-VNNI (``qmax = 127``). The u8 codes of x are offset by 128 for
    VNNI's unsigned-by-signed product; the column sums undo the offset exactly."""

    codes = "int8"
    group = 4  # vpdpbusd: 4 u8 x s8 products per int32 lane
    dtype = torch.int8

    def _qmax(self, d: int) -> int:
        return 127

    def _init(self, q: torch.Tensor, k_pad: int) -> torch.Tensor:
        init = torch.zeros(k_pad, dtype=torch.int32)
        init[:q.shape[0]] = (q.sum(1) * -128).to(torch.int32)  # undoes the +128 offset of the u8 codes of x
        return init


class FusedInt16Assigner(_FusedIntAssigner):
    """Integer scores from int16 codes with AVX2 (``vpmaddwd``: pairs of features, int32 sums).

    ``qmax`` is as large as the int32 accumulator allows: a row's dot product over ``g = ceil(d / 2)`` pairs is
    at most ``2 g qmax^2``, kept under ``2^31`` (and ``qmax`` at most 32767): 4095 at d=128, 1672 at d=768, so the
    codes carry 12-13 bits and the error bound is 13-32x tighter than int8's, while ``vpmaddwd`` does twice the
    multiply-adds of an fp32 FMA per instruction.
    """

    codes = "int16"
    group = 2  # vpmaddwd: 2 s16 x s16 products per int32 lane
    dtype = torch.int16

    def _qmax(self, d: int) -> int:
        return min(32767, math.isqrt((2 ** 31 - 1) // (2 * -(-d // 2))))
