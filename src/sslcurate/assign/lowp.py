"""Reduced precision in torch: bf16 or int8 candidate distances from one cheap GEMM per tile, each row's best and
second best read from the tile's integer codes, and the rows whose margin is within their error bound settled
exactly in fp32. Returned distances are exact fp32 for every row. (The fused int8 / int16 kernels are
:class:`sslcurate.fused.FusedInt8Assigner` and :class:`sslcurate.fused.FusedInt16Assigner`.)
"""

from __future__ import annotations

import torch

from ..canonical import canonical_pick, fp32_dist_error
from ..fused import SettlingBase, bf16_prep, bf16_settle, fused_available

BF16_BLOCK_ROWS = 4096
BF16_BLOCK_COLS = 4096
FUSED_TILE_COLS = 2048  # GEMM column tiles of the bf16 path's fused epilogue (see Bf16Assigner.prepare)
_SLOT = 64  # column slots of the first-stage min (see _tile_top2)
_U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)
_U_FP32 = 2.0 ** -24
_FAR = 1e30  # squared norm of the padding centroids: never the nearest, still finite in bf16


def _tile_top2(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column of the smallest entry per row of an int16 or int32 tile (``cols`` a multiple of ``_SLOT``), the
    smallest and second-smallest values (widened: int32 for int16 tiles, int64 for int32 ones), and the
    ``(rows, 64)`` slot minima (slot ``t``: the minimum over columns ``t, t + 64, ...``). Vectorised: the
    strided ``amin`` into slots carries the full pass."""
    rows, cols = codes.shape
    groups = cols // _SLOT
    wide, shift = (torch.int32, 16) if codes.dtype == torch.int16 else (torch.int64, 32)
    none = torch.iinfo(wide).max
    mask = (1 << shift) - 1
    slots = codes.view(rows, groups, _SLOT).amin(1).to(wide)  # slot t: min over columns t, t+64, ...
    lane = torch.arange(_SLOT, dtype=wide, device=codes.device)
    slot_min = slots.clone()
    packed = slots.bitwise_left_shift_(shift).bitwise_or_(lane)  # value in the high half: amin gives value and slot
    best = packed.amin(1)
    t = (best & mask).long()
    packed.scatter_(1, t[:, None], none)
    other = packed.amin(1).bitwise_right_shift_(shift)
    members = codes.gather(1, t[:, None] + _SLOT * torch.arange(groups, device=codes.device)[None]).to(wide)
    gl = torch.arange(groups, dtype=wide, device=codes.device)
    mpacked = members.bitwise_left_shift_(shift).bitwise_or_(gl)
    mbest = mpacked.amin(1)
    s = (mbest & mask).long()
    mpacked.scatter_(1, s[:, None], none)
    second = torch.minimum(other, mpacked.amin(1).bitwise_right_shift_(shift))
    return t + _SLOT * s, best.bitwise_right_shift(shift), second, slot_min


def _bits_to_float(bits: torch.Tensor) -> torch.Tensor:
    """int32 holding bf16 bit patterns (int16 range; 32767 = 'none') -> float32 values."""
    return bits.clamp(-32768, 32767).to(torch.int16).view(torch.bfloat16).float()


class _SettlingAssigner(SettlingBase):
    """What the torch reduced-precision assigners share: candidate scores from a cheap GEMM per tile, each row's
    best and second best read from the tile's integer codes (:func:`_tile_top2`), and exact fp32 re-scoring of
    the candidates of every row whose margin is within its error bound (:meth:`_settle`). Subclasses provide
    ``prepare`` and ``_assign_block``; the exact assigner ``exact`` serves the top-2 queries of the bounded
    Lloyd loop (:class:`sslcurate.fused.SettlingBase`)."""

    tile_bytes = 2  # bytes per entry of the tiles a block keeps for settling

    def __init__(self, exact, block_rows: int = BF16_BLOCK_ROWS, block_cols: int = BF16_BLOCK_COLS,
                 sigmas: float | None = 6.0):
        super().__init__(exact, sigmas)
        self.block_rows = block_rows
        self.block_cols = max(_SLOT, block_cols // _SLOT * _SLOT)

    def assign(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        idx = torch.empty(n, dtype=torch.int64, device=x.device)
        dist = torch.empty(n, dtype=torch.float32, device=x.device)
        rows = self._rows_per_block(prepared["k_pad"])
        for r0 in range(0, n, rows):
            idx[r0:r0 + rows], dist[r0:r0 + rows] = self._assign_block(x[r0:r0 + rows], prepared)
        self.rows_seen += n
        return idx, dist

    def _rows_per_block(self, k_pad: int) -> int:
        """The block's tiles over all centroids stay within ~32 MiB, so the settling pass can revisit them;
        everything per row is computed block by block, in cache."""
        return int(min(self.block_rows, max(256, 2 ** 25 // (self.tile_bytes * k_pad))))

    @staticmethod
    def _scan(code_tiles):
        """``(c0, codes)`` per column tile, computed as the iteration asks for it -> the tiles kept for settling
        ``(c0, codes, slot_min)``, and per row the best column, the best and the second-best code."""
        tiles = []
        for c0, codes in code_tiles:
            bi, b1, b2, slot_min = _tile_top2(codes)
            tiles.append((c0, codes, slot_min))
            if c0 == 0:
                idx, v1, v2 = bi, b1, b2
            else:
                v2 = torch.minimum(torch.maximum(v1, b1), torch.minimum(v2, b2))
                idx = torch.where(b1 < v1, bi + c0, idx)
                v1 = torch.minimum(v1, b1)
        return tiles, idx, v1, v2

    def _finish(self, x: torch.Tensor, xc: torch.Tensor, prepared, tiles, idx, near,
                limit) -> tuple[torch.Tensor, torch.Tensor]:
        """Settle the rows ``near`` (their margin is not conclusive) over the candidates whose code is at most
        the row's ``limit``, then return the indices and the exact fp32 distances of every row to its centroid."""
        rows = torch.nonzero(near)[:, 0]
        if rows.numel():
            self.rows_settled += rows.numel()
            idx[rows] = self._settle(x, xc, rows, prepared, tiles, limit[rows])
        # Exact fp32 distance to the chosen centroid (direct form, in place).
        return idx, torch.linalg.vector_norm(prepared["cc"].index_select(0, idx).sub_(xc), dim=1).square_()

    @staticmethod
    def _settle(x: torch.Tensor, xc: torch.Tensor, rows: torch.Tensor, prepared, tiles,
                limit: torch.Tensor) -> torch.Tensor:
        """Exact fp32 argmin for the block rows ``rows`` over their candidates: the centroids whose code is at
        most the row's ``limit`` (every centroid that can be the true nearest one is). Candidates are found
        through the slot minima first, so only the members of the few slots under the limit are read, not whole
        rows of the tiles."""
        n_rows = rows.numel()
        cc, k = prepared["cc"], prepared["k"]
        found_r, found_c = [], []
        for c0, codes, slot_min in tiles:
            r, t = torch.nonzero(slot_min.index_select(0, rows) <= limit[:, None], as_tuple=True)  # (row, slot)
            groups = codes.shape[1] // _SLOT
            cols = t[:, None] + _SLOT * torch.arange(groups, device=t.device)[None]  # members of each slot
            vals = codes[rows[r][:, None], cols]
            pr, pg = torch.nonzero(vals <= limit[r][:, None], as_tuple=True)
            found_r.append(r[pr])
            found_c.append(cols[pr, pg] + c0)
        r, c = torch.cat(found_r), torch.cat(found_c)
        keep = c < k  # padding centroids never qualify; guard anyway
        r, c = r[keep], c[keep]
        # Exact distances a few hundred pairs at a time: each piece's gathered rows (~2 MiB) are subtracted,
        # squared and summed while in cache, where one (pairs, d) temporary would make those passes go to RAM.
        dist = torch.empty(r.numel(), device=xc.device)
        xr = rows[r]
        step = max(1, 2 ** 19 // xc.shape[1])
        for s in range(0, r.numel(), step):
            diff = cc.index_select(0, c[s:s + step]).sub_(xc.index_select(0, xr[s:s + step]))
            dist[s:s + step] = diff.mul_(diff).sum(1)
        best = torch.full((n_rows,), float("inf"), device=xc.device).scatter_reduce(0, r, dist, "amin")
        # Candidates within the fp32 rounding of the best are equal as far as fp32 can tell: rescored canonically.
        c_max = float(cc.norm(dim=1).max())
        tied = dist.double() <= best[r].double() + 2.0 * fp32_dist_error(best[r].double(), c_max, xc.shape[1])
        r, c = r[tied].cpu().numpy(), c[tied].cpu().numpy()
        x_rows = x.index_select(0, rows).float().cpu().numpy()
        return torch.from_numpy(canonical_pick(x_rows, prepared["c"].float().cpu().numpy(), r, c,
                                               n_rows)).to(xc.device)


class Bf16Assigner(_SettlingAssigner):
    """Nearest centroid from bf16 GEMM distances, exact where it matters.

    One bf16 GEMM per tile computes the full squared distance ``|x|^2 - 2 x.c + |c|^2`` (norm-augmented rows
    ``[x, |x|^2_hi, |x|^2_lo, 1, 1] . [-2c, 1, 1, |c|^2_hi, |c|^2_lo]``, the norms split into two bf16 halves so
    they enter the fp32 accumulator at ~16-bit precision). Distances are non-negative, so their bf16 bit patterns
    order like int16 and the epilogue runs on integers: one vectorised ``amin`` folds each row's columns into 64
    slots (column ``j`` into slot ``j mod 64``), and the best and second-best values with their column come from
    those 64 slots and the members of the winning slot. Data and centroids are centred on the centroid mean first
    (distances do not change; bf16 rounding, relative to the norms, shrinks).

    Settling: for every row a bound ``E`` on the error of any bf16 distance near the minimum is computed from the
    row's actual rounding residual and the centroids' (the dot products of the residuals, the split norms, the
    fp32 accumulation, and the bf16 rounding of the output, which is relative to the distance itself). A row whose
    second-best bf16 distance exceeds the best by more than ``2E`` keeps its bf16 argmin; for every other row the
    candidates within ``2E`` are re-scored exactly in fp32. The returned distances are recomputed exactly in fp32
    for all rows.

    ``sigmas`` sets how the residual dot products ``e_x . c`` and ``x . e_c`` are bounded. Cauchy-Schwarz
    (``|e_x| |c|``, ``sigmas=None``) is a worst case that rounding noise never approaches in high dimension: the
    residuals' components are rounding errors of independent sign, so the dot product is about
    ``|e_x| |c| / sqrt(d)``. The default bounds it by ``sigmas`` such standard deviations (capped at the worst
    case): at d=384, K=1000 from a random start it settled 18% of rows instead of 28%, and the assignments
    matched the exact path's on 99.999-100% of points at every benchmark point (benchmarks/bench_precision.py
    reports the agreement).
    """

    tile_bytes = 2

    def __init__(self, exact, block_rows: int = BF16_BLOCK_ROWS, block_cols: int = BF16_BLOCK_COLS,
                 sigmas: float | None = 6.0, fused: bool | None = None):
        """``fused``: run the passes around the GEMM in the extension (:meth:`_assign_block_fused`); ``None``
        where it runs (CPU tensors on a CPU with AVX-512), ``False`` for the torch epilogue everywhere."""
        super().__init__(exact, block_rows, block_cols, sigmas)
        if fused and not fused_available("avx512"):
            raise RuntimeError("Bf16Assigner(fused=True) needs the extension's AVX-512 kernels, which do not run here")
        self.fused = fused_available("avx512") if fused is None else fused

    def prepare(self, centroids: torch.Tensor):
        c = centroids.float().contiguous()
        k, d = c.shape
        mu = c.mean(0)
        cc = c - mu
        cb = cc.bfloat16()
        c_sq = (cc.double() ** 2).sum(1)
        k_pad = -(-k // _SLOT) * _SLOT
        c_aug = torch.zeros((k_pad, d + 4), dtype=torch.bfloat16, device=c.device)
        c_aug[:k, :d] = cb * -2  # exact in bf16: a power of two
        c_aug[:, d:d + 2] = 1
        sq = torch.full((k_pad,), _FAR, dtype=torch.float64, device=c.device)
        sq[:k] = c_sq
        hi = sq.to(torch.bfloat16)
        c_aug[:, d + 2] = hi
        c_aug[:, d + 3] = (sq - hi.double()).to(torch.bfloat16)
        bounds = {"c_max": float(cc.norm(dim=1).max()), "ec_max": float((cc - cb.float()).norm(dim=1).max()),
                  "cb_max": float(cb.float().norm(dim=1).max()), "c_sq_max": float(c_sq.max())}
        # The fused epilogue's GEMM operands: column tiles of near-equal width (a multiple of _SLOT, at most
        # FUSED_TILE_COLS), each (d + 4, cols) contiguous: oneDNN's AMX GEMM slows down on very wide outputs (one
        # GEMM over all K=10k columns ran slower than several narrower ones), and padding to whole tiles instead
        # of near-equal ones would waste up to 40% of the GEMM.
        prepared = {"mu": mu, "cc": cc, "c_aug": c_aug, "k": k, "k_pad": k_pad, "bounds": bounds, "c": c}
        if self.fused and c.device.type == "cpu":
            n_tiles = -(-k_pad // min(self.block_cols, FUSED_TILE_COLS))
            cols = -(-k_pad // n_tiles // _SLOT) * _SLOT
            pad = n_tiles * cols - k_pad
            padded = torch.cat([c_aug, c_aug[-1:].expand(pad, -1)]) if pad else c_aug
            prepared["gemm_tiles"] = [padded[t * cols:(t + 1) * cols].T.contiguous() for t in range(n_tiles)]
        return prepared

    def _rows_per_block(self, k_pad: int) -> int:
        """The fused epilogue reads each row's codes once, right after the GEMM, so its blocks need not stay in
        cache: block_rows rows, as long as their codes stay within 256 MiB."""
        if not self.fused:
            return super()._rows_per_block(k_pad)
        return int(min(self.block_rows, max(256, 2 ** 28 // (2 * k_pad))))

    def _bound(self, d: int, x_sq: torch.Tensor, ex: torch.Tensor, b: dict) -> torch.Tensor:
        """Per row, the error of a bf16 distance before its output rounding: dot products of the actual
        residuals (see ``sigmas``), the split norms (2^-16 relative), fp32 accumulation over d + 4 terms."""
        xb_norm = x_sq.sqrt() + ex
        return (2.0 * self._spread(d) * (ex * b["c_max"] + xb_norm * b["ec_max"])
                + 2.0 ** -15 * (x_sq + b["c_sq_max"])
                + 1.01 * (d + 4) * _U_FP32 * (2.0 * xb_norm * b["cb_max"] + x_sq + b["c_sq_max"]))

    def _assign_block(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        if "gemm_tiles" in prepared and x.device.type == "cpu":
            return self._assign_block_fused(x, prepared)
        n, d = x.shape
        c_aug, b = prepared["c_aug"], prepared["bounds"]
        xc = x.float() - prepared["mu"]
        x_sq = (xc * xc).sum(1)
        x_aug = torch.empty((n, d + 4), dtype=torch.bfloat16, device=x.device)
        x_aug[:, :d] = xc
        hi = x_sq.to(torch.bfloat16)
        x_aug[:, d] = hi
        x_aug[:, d + 1] = (x_sq - hi.float()).to(torch.bfloat16)
        x_aug[:, d + 2:] = 1
        ex = torch.linalg.vector_norm(xc - x_aug[:, :d], dim=1)  # the rounding residual |x - bf16(x)|
        a = self._bound(d, x_sq, ex, b)

        tiles, idx, v1, v2 = self._scan((c0, torch.mm(x_aug, c_aug[c0:c0 + self.block_cols].T).view(torch.int16))
                                        for c0 in range(0, c_aug.shape[0], self.block_cols))
        d1 = _bits_to_float(v1)
        e = (a + _U_BF16 * d1.abs()) / (1.0 - 4.0 * _U_BF16) * 1.01
        limit = d1 + 2.0 * e
        # The limit in bf16 bits, rounded up: for non-negative values the int16 order is the float order, and
        # any negative bf16 distance (a rounding artefact next to 0) is below every non-negative limit.
        lim_bits = limit.clamp(min=0).to(torch.bfloat16).view(torch.int16)
        lim_bits = torch.where(lim_bits.view(torch.bfloat16).float() < limit, lim_bits + 1, lim_bits).to(v1.dtype)
        near = (_bits_to_float(v2) <= limit) | (v1 < 0)
        return self._finish(x, xc, prepared, tiles, idx, near, lim_bits)

    def _assign_block_fused(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        """The same answer with the passes around the GEMM in the extension (CPUs with AVX-512): one pass over
        ``x`` builds the bf16 rows, one over each row of the GEMM's output finds its candidates and settles
        them, where the torch epilogue above takes a dozen passes over ``(n, d)`` and ``(n, k)`` arrays (on the AMX
        Xeon, profiled ad hoc at d=768, K=1000, they took several times the GEMM's own time). The bound is the same
        and the candidates are exactly the columns whose bf16 distance is within it; settling and the returned
        distances use the direct form ``|x - c|^2``, as the exact fused kernel does."""
        threads = torch.get_num_threads()
        d = x.shape[1]
        x_aug, x_sq, ex = bf16_prep(x, prepared["mu"], threads)
        a = self._bound(d, x_sq, ex, prepared["bounds"])
        tiles = prepared["gemm_tiles"]
        codes = torch.empty((len(tiles), x.shape[0], tiles[0].shape[1]), dtype=torch.bfloat16)
        for t, tile in enumerate(tiles):
            torch.mm(x_aug, tile, out=codes[t])
        idx, dist, settled = bf16_settle(codes, prepared["k"], x, prepared["c"], a, _U_BF16, threads)
        self.rows_settled += settled
        return idx, dist


class Int8Assigner(_SettlingAssigner):
    """Nearest centroid from int8 GEMM scores (AVX512-VNNI or AMX-INT8 on CPUs), exact where it matters.

    It is for CPUs with int8 dot-product instructions; where it beats the bf16 path and where it does not is
    measured side by side by benchmarks/bench_precision.py.

    Data and centroids are centred on the centroid mean and quantised to int8 on one scale each: ``s_c`` for all
    centroids, ``s_x`` per block of rows (a common scale keeps the codes of a row comparable across columns).
    One int8 GEMM per tile gives ``-q(x) . q(c)`` exactly in int32, and adding the integer
    ``h_j = round((|c_j|^2 - min_l |c_l|^2) / (2 s_x s_c))`` makes the code ``T_ij`` with
    ``|x_i|^2 + min_l |c_l|^2 + 2 s_x s_c T_ij`` an estimate of the squared distance. The epilogue is
    :func:`_tile_top2` on the int32 codes.

    Settling, as in :class:`Bf16Assigner`: the error of ``2 s_x s_c T_ij`` is at most
    ``2 |x . e_c + e_x . c - e_x . e_c| + s_x s_c`` (the residuals ``e`` of the quantisation, the rounding of
    ``h``; the integer GEMM itself is exact), bounded per row from the actual residual norms with the same
    ``sigmas`` rule. Rows whose second-best code is within twice that bound of the best have their candidates
    re-scored exactly in fp32; the returned distances are exact fp32 for all rows. A uniform int8 grid leaves
    larger residuals than bf16's 8 significant bits, so more rows are settled; what pays is the faster GEMM.
    """

    tile_bytes = 4
    _H_PAD = 2 ** 30  # code of the padding centroids: above every real code (checked in _assign_block)

    def prepare(self, centroids: torch.Tensor):
        c = centroids.float().contiguous()
        k, d = c.shape
        mu = c.mean(0)
        cc = c - mu
        s_c = float(cc.abs().max()) / 127 or 1.0
        q = torch.round(cc / s_c)
        k_pad = -(-k // _SLOT) * _SLOT
        neg_q = torch.zeros((k_pad, d), dtype=torch.int8, device=c.device)
        neg_q[:k] = (-q).to(torch.int8)  # |q| <= 127: negation stays in int8
        c_sq = (cc.double() ** 2).sum(1)
        # One (d, cols) operand per column tile, contiguous, as the int8 GEMM wants its right-hand side.
        tiles = [neg_q[c0:c0 + self.block_cols].T.contiguous() for c0 in range(0, k_pad, self.block_cols)]
        bounds = {"c_max": float(cc.norm(dim=1).max()), "ec_max": float((cc - q * s_c).norm(dim=1).max()),
                  "s_c": s_c}
        return {"mu": mu, "cc": cc, "q_tiles": tiles, "h_sq": c_sq - c_sq.min(), "k": k, "k_pad": k_pad,
                "bounds": bounds, "c": c}

    def _assign_block(self, x: torch.Tensor, prepared) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = x.shape
        k, b = prepared["k"], prepared["bounds"]
        xc = x.float() - prepared["mu"]
        s_x = float(xc.abs().max()) / 127 or 1.0
        q = torch.round(xc / s_x)
        ex = torch.linalg.vector_norm(q.mul(s_x).sub_(xc), dim=1)  # the quantisation residual |x - s_x q(x)|
        scale = 2.0 * s_x * b["s_c"]
        h = prepared["h_sq"] / scale
        if float(h.max()) + d * 127 * 127 >= self._H_PAD:
            # A block spread ~1e4x less than the centroids: its codes would overflow int32; settle it exactly.
            self.rows_settled += n
            return self.exact.assign(x, self._exact_prepared(prepared))
        h_codes = torch.full((prepared["k_pad"],), self._H_PAD, dtype=torch.int32, device=x.device)
        h_codes[:k] = torch.round(h).to(torch.int32)
        xq = q.to(torch.int8)
        # Error bound of |x|^2 + scale * T against the fp32 distance, in code units (scale), rounded up, doubled.
        x_norm = torch.linalg.vector_norm(xc, dim=1)
        e = (2.0 * self._spread(d) * (ex * b["c_max"] + (x_norm + ex) * b["ec_max"]) + 0.5 * scale) * 1.01
        margin = torch.ceil(2.0 * e / scale).to(torch.int64)

        tiles, idx, v1, v2 = self._scan((c0, torch._int_mm(xq, neg_q).add_(h_codes[c0:c0 + neg_q.shape[1]]))
                                        for c0, neg_q in zip(range(0, prepared["k_pad"], self.block_cols),
                                                             prepared["q_tiles"]))
        return self._finish(x, xc, prepared, tiles, idx, v2 - v1 <= margin, v1 + margin)
