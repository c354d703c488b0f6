/* Fused nearest-centroid kernels for x86-64 CPUs: the distance GEMM and the search for each row's nearest
 * centroid in one pass, so the (n, k) score matrix is never written anywhere, not even to a cache tile.
 *
 *   assign_f32   exact fp32: scores  |c_j - mu|^2 - 2 (x - mu).(c_j - mu)  from FMA register tiles (mu: the
 *                centroid mean, folded into the bias so x is read as it is); the nearest centroid and its
 *                distance recomputed in the direct form |x - c|^2, or the best and second-best scores (+ |x - mu|^2)
 *                for the bounded Lloyd loop.
 *   assign_q     integer candidate scores from  q(x) . q(c)  register tiles, rescaled per row in fp32; rows whose
 *                best and second best are within the error bound settled exactly in the same pass. Two code
 *                kinds: int8 (AVX512-VNNI, u8 x s8, groups of 4 features) and int16 (AVX2 vpmaddwd, s16 x s16,
 *                groups of 2 features, up to ~12 bits per code: the int32 accumulator bounds it).
 *   settle_q     the integer scores again for the rows assign_q could not settle from its lanes: every column
 *                under the row's limit is listed and the exact nearest of them taken.
 *
 * Two instruction sets, one driver each way. The AVX-512 tile is MR = 8 rows against a panel of NR = 32
 * centroids (two zmm per row, 16 accumulators); the AVX2 tile is 6 rows against 16 centroids (two ymm per row,
 * 12 accumulators), run twice per panel. Centroids are packed by the caller into panels ([panel][d][32] floats, or
 * [panel][groups][32][4 bytes] codes) so a tile reads one contiguous stream; x is read in place, row by row
 * (broadcasts). Per row the state keeps, for each of LANES = 32 lanes (column j in lane j mod 32), the best
 * score, its column and the second best; it is reduced across lanes once per row at the end. Lanes see their
 * columns in increasing order and ties keep the lower column, so the result is the first minimum, as
 * torch.argmin gives it.
 *
 * Blocking: each thread (OpenMP) takes ROW_CHUNK rows at a time; for each block of centroid panels that fits in
 * L2 it walks the chunk's micro blocks over those panels. The chunk's rows are re-read once per centroid block,
 * the centroid block once per chunk. Rows are independent, so the answer does not depend on the thread count.
 *
 * The module is compiled without -march flags; the kernels carry target attributes, and cpu_features() tells
 * Python which of them this CPU runs (sslcurate.fused; sslcurate.assign falls back to faiss / torch elsewhere).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if !(defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)))
/* setup.py builds the extension only on x86-64, as optional: elsewhere sslcurate.fused finds no module. */
#error "sslcurate._kernels: x86-64 with GCC or clang only"
#endif
#include <immintrin.h>

#define MR 8      /* rows per AVX-512 tile */
#define MR2 6     /* rows per AVX2 fp32 tile */
#define MR_I16 6  /* rows per AVX2 int16 tile (3 x 32 with memory operands measured no faster) */
#define MR_MAX 8
#define NR 32
#define LANES 32 /* top-2 state per row: one lane per column of the panel (column j in lane j mod 32) */
#define ROW_CHUNK 504 /* a multiple of both tile heights */
#define CAP 256 /* candidates kept per settled row; a row with more is settled over all centroids */
#define DEEP_MAX 4 /* deep lanes (two candidates or more) a row may have and still be settled in the first pass */
#define L2_PANEL_BYTES (384 * 1024)

/* The AVX-512 fp32 kernels and their helpers need F/BW/DQ/VL; the int8 ones also VNNI (helpers inline into them).
 * The AVX2 ones need AVX2 and FMA only. */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define TARGET_I8 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512vnni")))
#define TARGET2 __attribute__((target("avx2,fma")))

/* ------------------------------------------------------------------------------------------------------------
 * AVX-512 (F/BW/DQ/VL; VNNI for int8).
 */

TARGET static inline void top2_update_512(float *b1p, float *b2p, int32_t *i1p, __m512 v, __m512i col)
{
    __m512 b1 = _mm512_loadu_ps(b1p), b2 = _mm512_loadu_ps(b2p);
    __m512i i1 = _mm512_loadu_si512(i1p);
    __mmask16 lt = _mm512_cmp_ps_mask(v, b1, _CMP_LT_OQ);
    b2 = _mm512_min_ps(b2, _mm512_max_ps(b1, v));
    _mm512_storeu_ps(b1p, _mm512_mask_mov_ps(b1, lt, v));
    _mm512_storeu_ps(b2p, b2);
    _mm512_storeu_si512(i1p, _mm512_mask_mov_epi32(i1, lt, col));
}

/* The int8 kernel's lane state: best, second and third best values and the columns of the first two. Strict
 * comparisons, so among equal values the lower (earlier) column keeps its place. */
TARGET static inline void top3_update_512(float *b1p, float *b2p, float *b3p, int32_t *i1p, int32_t *i2p, __m512 v,
                                          __m512i col)
{
    const __m512 b1 = _mm512_loadu_ps(b1p), b2 = _mm512_loadu_ps(b2p), b3 = _mm512_loadu_ps(b3p);
    const __m512i i1 = _mm512_loadu_si512(i1p), i2 = _mm512_loadu_si512(i2p);
    const __mmask16 lt1 = _mm512_cmp_ps_mask(v, b1, _CMP_LT_OQ), lt2 = _mm512_cmp_ps_mask(v, b2, _CMP_LT_OQ);
    /* v < b1: (v, b1, b2); b1 <= v < b2: (b1, v, b2); else (b1, b2, min(b3, v)) */
    _mm512_storeu_ps(b3p, _mm512_mask_mov_ps(_mm512_min_ps(b3, v), lt2, b2));
    _mm512_storeu_ps(b2p, _mm512_mask_mov_ps(_mm512_mask_mov_ps(b2, lt2, v), lt1, b1));
    _mm512_storeu_si512(i2p, _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(i2, lt2, col), lt1, i1));
    _mm512_storeu_ps(b1p, _mm512_mask_mov_ps(b1, lt1, v));
    _mm512_storeu_si512(i1p, _mm512_mask_mov_epi32(i1, lt1, col));
}

/* Across the LANES lanes: best value, lowest column holding it, second best (the best of the other lanes'
 * bests and every lane's second). */
static void top2_reduce(const float *b1, const float *b2, const int32_t *i1, float *v1, float *v2, int64_t *idx)
{
    int best = 0;
    for (int l = 1; l < LANES; l++)
        if (b1[l] < b1[best] || (b1[l] == b1[best] && i1[l] < i1[best]))
            best = l;
    float second = b2[best];
    for (int l = 0; l < LANES; l++) {
        if (l == best)
            continue;
        if (b1[l] < second)
            second = b1[l];
    }
    *v1 = b1[best];
    *v2 = second;
    *idx = i1[best];
}

/* fp32 micro kernel: rows x[0..MR) (row stride ldx) against one packed panel p ([d][32]); scores start from
 * bias (|c|^2, padding columns +inf) and p holds -2 c. */
TARGET static void tile_f32_512(const float *x, int64_t ldx, int64_t d, const float *p, const float *bias, int32_t col0,
                                float *b1, float *b2, int32_t *i1, int top2)
{
    __m512 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71;
    const __m512 z0 = _mm512_loadu_ps(bias), z1 = _mm512_loadu_ps(bias + 16);
    a00 = a10 = a20 = a30 = a40 = a50 = a60 = a70 = z0;
    a01 = a11 = a21 = a31 = a41 = a51 = a61 = a71 = z1;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    const float *x4 = x + 4 * ldx, *x5 = x + 5 * ldx, *x6 = x + 6 * ldx, *x7 = x + 7 * ldx;
    for (int64_t t = 0; t < d; t++) {
        const __m512 c0 = _mm512_loadu_ps(p + t * NR), c1 = _mm512_loadu_ps(p + t * NR + 16);
        __m512 s;
#define ROW(r)                                  \
    s = _mm512_set1_ps(x##r[t]);                \
    a##r##0 = _mm512_fmadd_ps(s, c0, a##r##0);  \
    a##r##1 = _mm512_fmadd_ps(s, c1, a##r##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i col_a = _mm512_add_epi32(lane, _mm512_set1_epi32(col0));
    const __m512i col_b = _mm512_add_epi32(col_a, _mm512_set1_epi32(16));
    if (top2) {
#define UPD(r)                                                                                      \
    top2_update_512(b1 + r * LANES, b2 + r * LANES, i1 + r * LANES, a##r##0, col_a);                  \
    top2_update_512(b1 + r * LANES + 16, b2 + r * LANES + 16, i1 + r * LANES + 16, a##r##1, col_b);
        UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5) UPD(6) UPD(7)
#undef UPD
        return;
    }
    /* Nearest only: the row's two registers folded into lanes 0-15 first (ties keep the lower column), then one
     * update; half the epilogue of the top-2 one, which at d = 128 cost ~8% of the tile. */
#define UPD(r)                                                                                      \
    {                                                                                               \
        const __mmask16 hi = _mm512_cmp_ps_mask(a##r##1, a##r##0, _CMP_LT_OQ);                     \
        const __m512 v = _mm512_min_ps(a##r##0, a##r##1), best = _mm512_loadu_ps(b1 + r * LANES);   \
        const __mmask16 lt = _mm512_cmp_ps_mask(v, best, _CMP_LT_OQ);                               \
        _mm512_storeu_ps(b1 + r * LANES, _mm512_mask_mov_ps(best, lt, v));                          \
        _mm512_storeu_si512(i1 + r * LANES, _mm512_mask_mov_epi32(_mm512_loadu_si512(i1 + r * LANES), lt, \
                                                                  _mm512_mask_mov_epi32(col_a, hi, col_b))); \
    }
    UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5) UPD(6) UPD(7)
#undef UPD
}

/* int8 micro kernel: u8 rows (stride ldu bytes, d4 groups of 4) against one packed s8 panel ([d4][32][4]).
 * Integer dot products start from init (-128 x column sums, undoing the +128 offset of the u8 codes), are
 * converted to fp32 and mapped to scores  bias + scale_r * dot  with scale_r = -2 s_x(r) s_c. */
TARGET_I8 static void tile_i8_512(const uint8_t *u, int64_t ldu, int64_t d4, const int8_t *p, const int32_t *init,
                               const float *bias, const float *scale, int32_t col0, float *b1, float *b2, int32_t *i1,
                               float *b3, int32_t *i2, const float *lim, int32_t *cand, int32_t *count)
{
    __m512i a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71;
    const __m512i z0 = _mm512_loadu_si512(init), z1 = _mm512_loadu_si512(init + 16);
    a00 = a10 = a20 = a30 = a40 = a50 = a60 = a70 = z0;
    a01 = a11 = a21 = a31 = a41 = a51 = a61 = a71 = z1;
    const uint8_t *u0 = u, *u1 = u + ldu, *u2 = u + 2 * ldu, *u3 = u + 3 * ldu;
    const uint8_t *u4 = u + 4 * ldu, *u5 = u + 5 * ldu, *u6 = u + 6 * ldu, *u7 = u + 7 * ldu;
    for (int64_t t = 0; t < d4; t++) {
        const __m512i c0 = _mm512_loadu_si512(p + t * 4 * NR), c1 = _mm512_loadu_si512(p + t * 4 * NR + 64);
        __m512i s;
        int32_t w;
#define ROW(r)                                         \
    memcpy(&w, u##r + 4 * t, 4);                       \
    s = _mm512_set1_epi32(w);                          \
    a##r##0 = _mm512_dpbusd_epi32(a##r##0, s, c0);     \
    a##r##1 = _mm512_dpbusd_epi32(a##r##1, s, c1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
    const __m512 f0 = _mm512_loadu_ps(bias), f1 = _mm512_loadu_ps(bias + 16);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i col_a = _mm512_add_epi32(lane, _mm512_set1_epi32(col0));
    const __m512i col_b = _mm512_add_epi32(col_a, _mm512_set1_epi32(16));
    if (!lim) {
#define UPD(r)                                                                                              \
    {                                                                                                       \
        const __m512 sc = _mm512_set1_ps(scale[r]);                                                         \
        top3_update_512(b1 + r * LANES, b2 + r * LANES, b3 + r * LANES, i1 + r * LANES, i2 + r * LANES,          \
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##0), sc, f0), col_a);                        \
        top3_update_512(b1 + r * LANES + 16, b2 + r * LANES + 16, b3 + r * LANES + 16, i1 + r * LANES + 16,      \
                        i2 + r * LANES + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##1), sc, f1), col_b);   \
    }
        UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5) UPD(6) UPD(7)
#undef UPD
        return;
    }
    /* Settling mode: the same scores, then every column at or under the row's limit is appended to its list
     * (a count past CAP marks the row for a search over all centroids). */
#define EMIT(r)                                                                                             \
    {                                                                                                       \
        const __m512 sc = _mm512_set1_ps(scale[r]), lr = _mm512_set1_ps(lim[r]);                            \
        const __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##0), sc, f0), lr,   \
                                                _CMP_LE_OQ);                                                \
        const __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##1), sc, f1), lr,   \
                                                _CMP_LE_OQ);                                                \
        const int c0n = __builtin_popcount(m0), c1n = __builtin_popcount(m1);                              \
        if (c0n + c1n) {                                                                                    \
            if (count[r] + c0n + c1n <= CAP) {                                                              \
                _mm512_mask_compressstoreu_epi32(cand + r * CAP + count[r], m0, col_a);                     \
                _mm512_mask_compressstoreu_epi32(cand + r * CAP + count[r] + c0n, m1, col_b);               \
            }                                                                                               \
            count[r] += c0n + c1n;                                                                          \
        }                                                                                                   \
    }
    EMIT(0) EMIT(1) EMIT(2) EMIT(3) EMIT(4) EMIT(5) EMIT(6) EMIT(7)
#undef EMIT
}

TARGET static float sq_norm_512(const float *x, const float *mu, int64_t d)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + t), _mm512_maskz_loadu_ps(m, mu + t));
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* |(x - mu) - c|^2 in fp32 (|x - c|^2 when mu is NULL): the direct form, the exact distance both kernels
 * return and the int8 path settles with. */
TARGET static float sq_dist_512(const float *x, const float *mu, const float *c, int64_t d)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + t);
        if (mu)
            v = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, mu + t));
        v = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, c + t));
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* out[j] = sq_dist_512(x, NULL, c + cols[j] * d, d) for m columns, bit for bit: four columns at a time, each
 * with its own accumulator and the same operations in the same order, so four independent FMA chains run where
 * one chain's latency would otherwise set the pace. */
TARGET static void sq_dist_cols_512(const float *x, const float *c, const int64_t *cols, int64_t m, int64_t d,
                                    float *out)
{
    int64_t j = 0;
    for (; j + 4 <= m; j += 4) {
        const float *c0 = c + cols[j] * d, *c1 = c + cols[j + 1] * d, *c2 = c + cols[j + 2] * d;
        const float *c3 = c + cols[j + 3] * d;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
        __m512 a3 = _mm512_setzero_ps();
        for (int64_t t = 0; t < d; t += 16) {
            const __mmask16 k16 = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
            const __m512 xv = _mm512_maskz_loadu_ps(k16, x + t);
            const __m512 v0 = _mm512_sub_ps(xv, _mm512_maskz_loadu_ps(k16, c0 + t));
            const __m512 v1 = _mm512_sub_ps(xv, _mm512_maskz_loadu_ps(k16, c1 + t));
            const __m512 v2 = _mm512_sub_ps(xv, _mm512_maskz_loadu_ps(k16, c2 + t));
            const __m512 v3 = _mm512_sub_ps(xv, _mm512_maskz_loadu_ps(k16, c3 + t));
            a0 = _mm512_fmadd_ps(v0, v0, a0);
            a1 = _mm512_fmadd_ps(v1, v1, a1);
            a2 = _mm512_fmadd_ps(v2, v2, a2);
            a3 = _mm512_fmadd_ps(v3, v3, a3);
        }
        out[j] = _mm512_reduce_add_ps(a0);
        out[j + 1] = _mm512_reduce_add_ps(a1);
        out[j + 2] = _mm512_reduce_add_ps(a2);
        out[j + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; j < m; j++)
        out[j] = sq_dist_512(x, NULL, c + cols[j] * d, d);
}

/* The same, one column at a time, for the AVX2 kernels. */
TARGET2 static float sq_dist_256(const float *x, const float *mu, const float *c, int64_t d);
static void sq_dist_cols_256(const float *x, const float *c, const int64_t *cols, int64_t m, int64_t d, float *out)
{
    for (int64_t j = 0; j < m; j++)
        out[j] = sq_dist_256(x, NULL, c + cols[j] * d, d);
}

/* The u8 codes of rows r0..r0+n_rows of x (or of the rows listed in `rows`), centred on mu, each on its own
 * scale s_x = max |x - mu| / qmax (127): u = round((x - mu) / s_x) + 128, padded to d4 groups of 4 with 128 (code 0).
 * Also per row the score scale -2 s_x s_c and, when asked, s_x, the quantisation residual |x - mu - s_x q| and
 * |x - mu|, which the caller's error bound needs. */
TARGET_I8 static void quantise_rows_512(const float *x, int64_t ldx, const int64_t *rows, int64_t r0,
                                        int64_t n_rows, int64_t d, int64_t d4, const float *mu, float s_c, float qmax,
                                        uint8_t *u, float *scale, float *sx_out, float *ex_out, float *xn_out)
{
    const __m512 lo = _mm512_set1_ps(-qmax), hi = _mm512_set1_ps(qmax);
    const __m512i off = _mm512_set1_epi32(128);
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + (rows ? rows[r] : r0 + r) * ldx;
        uint8_t *ur = u + r * d4 * 4;
        __m512 amax = _mm512_setzero_ps();
        for (int64_t t = 0; t < d; t += 16) {
            const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
            const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + t), _mm512_maskz_loadu_ps(m, mu + t));
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        }
        const float top = _mm512_reduce_max_ps(amax);
        const float s = top > 0.f ? top / qmax : 1.f;
        const __m512 inv = _mm512_set1_ps(1.f / s), sv = _mm512_set1_ps(s);
        __m512 e2 = _mm512_setzero_ps(), n2 = _mm512_setzero_ps();
        for (int64_t t = 0; t < d; t += 16) {
            const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
            const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + t), _mm512_maskz_loadu_ps(m, mu + t));
            __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
            const __m512 e = _mm512_fnmadd_ps(sv, q, v);
            e2 = _mm512_fmadd_ps(e, e, e2);
            n2 = _mm512_fmadd_ps(v, v, n2);
            _mm_mask_storeu_epi8(ur + t, m, _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(q), off)));
        }
        for (int64_t t = d; t < d4 * 4; t++)
            ur[t] = 128;
        scale[r] = -2.f * s * s_c;
        if (sx_out)
            sx_out[r] = s, ex_out[r] = sqrtf(_mm512_reduce_add_ps(e2)), xn_out[r] = sqrtf(_mm512_reduce_add_ps(n2));
    }
}

/* Error bound of a row's int8 scores against the fp32 ones ( |c|^2 - 2 x.c, both centred on mu): the residual
 * dot products  s_x q_x . e_c + e_x . c  (each bounded by `spread` x Cauchy-Schwarz, see Int8Assigner), plus fp32
 * rounding of the bias, of the integer-to-float conversion and of the rescaling. */
static double score_error(double ex, double xn, const double *bnd)
{
    const double c_max = bnd[0], ec_max = bnd[1], spread = bnd[2], c_sq_max = bnd[3];
    const double u = 1.0 / 16777216.0;
    return 1.01 * (2.0 * spread * (ex * c_max + (xn + ex) * ec_max) +
                   4.0 * u * (c_sq_max + 2.0 * (xn + ex) * (c_max + ec_max)));
}

/* ------------------------------------------------------------------------------------------------------------
 * AVX2 + FMA: the same tiles in 256-bit registers, for CPUs without AVX-512 (or where it is not exposed).
 */

TARGET2 static inline void top2_update_256(float *b1p, float *b2p, int32_t *i1p, __m256 v, __m256i col)
{
    const __m256 b1 = _mm256_loadu_ps(b1p), b2 = _mm256_loadu_ps(b2p);
    const __m256 lt = _mm256_cmp_ps(v, b1, _CMP_LT_OQ);
    const __m256 i1 = _mm256_loadu_ps((const float *)i1p);
    _mm256_storeu_ps(b2p, _mm256_min_ps(b2, _mm256_max_ps(b1, v)));
    _mm256_storeu_ps(b1p, _mm256_blendv_ps(b1, v, lt));
    _mm256_storeu_ps((float *)i1p, _mm256_blendv_ps(i1, _mm256_castsi256_ps(col), lt));
}

/* Nearest only: columns c..c+7 (v0) and c+8..c+15 (v1) folded into the 8 lanes at b1p (ties keep the lower
 * column), then one update. */
TARGET2 static inline void best_update_256(float *b1p, int32_t *i1p, __m256 v0, __m256 v1, __m256i col0,
                                           __m256i col1)
{
    const __m256 hi = _mm256_cmp_ps(v1, v0, _CMP_LT_OQ), v = _mm256_min_ps(v0, v1);
    const __m256 col = _mm256_blendv_ps(_mm256_castsi256_ps(col0), _mm256_castsi256_ps(col1), hi);
    const __m256 best = _mm256_loadu_ps(b1p), lt = _mm256_cmp_ps(v, best, _CMP_LT_OQ);
    _mm256_storeu_ps(b1p, _mm256_blendv_ps(best, v, lt));
    _mm256_storeu_ps((float *)i1p, _mm256_blendv_ps(_mm256_loadu_ps((const float *)i1p), col, lt));
}

TARGET2 static inline float hsum_256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

TARGET2 static inline float hmax_256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* fp32: rows x[0..MR2) against one packed panel p ([d][32]), as two halves of 16 columns (12 accumulators
 * each: what 16 ymm registers hold with the two centroid vectors and the broadcast). */
TARGET2 static void tile_f32_256(const float *x, int64_t ldx, int64_t d, const float *p, const float *bias,
                                 int32_t col0, float *b1, float *b2, int32_t *i1, int top2)
{
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx, *x5 = x + 5 * ldx;
    for (int h = 0; h < 2; h++) {
        const float *ph = p + 16 * h;
        const __m256 z0 = _mm256_loadu_ps(bias + 16 * h), z1 = _mm256_loadu_ps(bias + 16 * h + 8);
        __m256 a00 = z0, a01 = z1, a10 = z0, a11 = z1, a20 = z0, a21 = z1, a30 = z0, a31 = z1, a40 = z0, a41 = z1,
               a50 = z0, a51 = z1;
        for (int64_t t = 0; t < d; t++) {
            const __m256 c0 = _mm256_loadu_ps(ph + t * NR), c1 = _mm256_loadu_ps(ph + t * NR + 8);
            __m256 s;
#define ROW(r)                                  \
    s = _mm256_broadcast_ss(x##r + t);          \
    a##r##0 = _mm256_fmadd_ps(s, c0, a##r##0);  \
    a##r##1 = _mm256_fmadd_ps(s, c1, a##r##1);
            ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
        }
        const __m256i col_a = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32(col0 + 16 * h));
        const __m256i col_b = _mm256_add_epi32(col_a, _mm256_set1_epi32(8));
        const int o = 16 * h;
        if (top2) {
#define UPD(r)                                                                                          \
    top2_update_256(b1 + r * LANES + o, b2 + r * LANES + o, i1 + r * LANES + o, a##r##0, col_a);        \
    top2_update_256(b1 + r * LANES + o + 8, b2 + r * LANES + o + 8, i1 + r * LANES + o + 8, a##r##1, col_b);
            UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5)
#undef UPD
        } else {
#define UPD(r) best_update_256(b1 + r * LANES + o, i1 + r * LANES + o, a##r##0, a##r##1, col_a, col_b);
            UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5)
#undef UPD
        }
    }
}

/* Settling mode of the integer tiles on AVX2 (no compress-store): the columns of v at or under the row's limit
 * appended to its list. */
TARGET2 static inline void emit_256(__m256 v, float lim, int32_t col, int32_t *cand, int32_t *count)
{
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(lim), _CMP_LE_OQ));
    if (!m)
        return;
    const int n = __builtin_popcount(m);
    if (*count + n <= CAP)
        for (int b = m, at = *count; b; b &= b - 1)
            cand[at++] = col + __builtin_ctz(b);
    *count += n;
}

/* int16: s16 rows (stride ldu bytes, g groups of 2 features) against one packed s16 panel ([g][32][2]), as two
 * halves of 16 columns. vpmaddwd gives each column's 2-feature dot product in int32 (no saturation: codes stay
 * within +-qmax, and the caller bounds 2 g qmax^2 below 2^31). Scores, top-2 and settling as in tile_i8_512. */
TARGET2 static void tile_i16_256(const uint8_t *u, int64_t ldu, int64_t g, const int8_t *p, const int32_t *init,
                                 const float *bias, const float *scale, int32_t col0, float *b1, float *b2,
                                 int32_t *i1, float *b3, int32_t *i2, const float *lim, int32_t *cand,
                                 int32_t *count)
{
    const uint8_t *u0 = u, *u1 = u + ldu, *u2 = u + 2 * ldu, *u3 = u + 3 * ldu, *u4 = u + 4 * ldu, *u5 = u + 5 * ldu;
    for (int h = 0; h < 2; h++) {
        const int8_t *ph = p + 64 * h;
        const __m256i z0 = _mm256_loadu_si256((const __m256i *)(init + 16 * h));
        const __m256i z1 = _mm256_loadu_si256((const __m256i *)(init + 16 * h + 8));
        __m256i a00 = z0, a01 = z1, a10 = z0, a11 = z1, a20 = z0, a21 = z1, a30 = z0, a31 = z1, a40 = z0, a41 = z1,
                a50 = z0, a51 = z1;
        for (int64_t t = 0; t < g; t++) {
            const __m256i c0 = _mm256_loadu_si256((const __m256i *)(ph + t * 4 * NR));
            const __m256i c1 = _mm256_loadu_si256((const __m256i *)(ph + t * 4 * NR + 32));
            __m256i s;
            int32_t w;
#define ROW(r)                                                          \
    memcpy(&w, u##r + 4 * t, 4);                                        \
    s = _mm256_set1_epi32(w);                                           \
    a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(s, c0));      \
    a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(s, c1));
            ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
        }
        const __m256 f0 = _mm256_loadu_ps(bias + 16 * h), f1 = _mm256_loadu_ps(bias + 16 * h + 8);
        const int32_t c = col0 + 16 * h;
        const int o = 16 * h;
        if (!lim) {
            const __m256i col_a = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(c));
            const __m256i col_b = _mm256_add_epi32(col_a, _mm256_set1_epi32(8));
#define UPD(r)                                                                                                  \
    {                                                                                                           \
        const __m256 sc = _mm256_set1_ps(scale[r]);                                                             \
        top2_update_256(b1 + r * LANES + o, b2 + r * LANES + o, i1 + r * LANES + o,                             \
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##0), sc, f0), col_a);                           \
        top2_update_256(b1 + r * LANES + o + 8, b2 + r * LANES + o + 8, i1 + r * LANES + o + 8,                 \
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##1), sc, f1), col_b);                           \
    }
            UPD(0) UPD(1) UPD(2) UPD(3) UPD(4) UPD(5)
#undef UPD
        } else {
#define EMIT(r)                                                                                                 \
    {                                                                                                           \
        const __m256 sc = _mm256_set1_ps(scale[r]);                                                             \
        emit_256(_mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##0), sc, f0), lim[r], c, cand + r * CAP, count + r);   \
        emit_256(_mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##1), sc, f1), lim[r], c + 8, cand + r * CAP, count + r); \
    }
            EMIT(0) EMIT(1) EMIT(2) EMIT(3) EMIT(4) EMIT(5)
#undef EMIT
        }
    }
}

TARGET2 static float sq_norm_256(const float *x, const float *mu, int64_t d)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= d; t += 8) {
        const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + t), _mm256_loadu_ps(mu + t));
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float s = hsum_256(acc);
    for (; t < d; t++)
        s += (x[t] - mu[t]) * (x[t] - mu[t]);
    return s;
}

TARGET2 static float sq_dist_256(const float *x, const float *mu, const float *c, int64_t d)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= d; t += 8) {
        __m256 v = _mm256_loadu_ps(x + t);
        if (mu)
            v = _mm256_sub_ps(v, _mm256_loadu_ps(mu + t));
        v = _mm256_sub_ps(v, _mm256_loadu_ps(c + t));
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float s = hsum_256(acc);
    for (; t < d; t++) {
        const float v = (mu ? x[t] - mu[t] : x[t]) - c[t];
        s += v * v;
    }
    return s;
}

/* The s16 codes of rows (as quantise_rows_512, on +-qmax, no offset), padded to g groups of 2 with 0. The tail
 * past the last 8 features is done in scalar code with the same rounding (to nearest even) and clamping. */
TARGET2 static void quantise_rows_256(const float *x, int64_t ldx, const int64_t *rows, int64_t r0, int64_t n_rows,
                                      int64_t d, int64_t g, const float *mu, float s_c, float qmax, uint8_t *u,
                                      float *scale, float *sx_out, float *ex_out, float *xn_out)
{
    const __m256 lo = _mm256_set1_ps(-qmax), hi = _mm256_set1_ps(qmax);
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + (rows ? rows[r] : r0 + r) * ldx;
        int16_t *ur = (int16_t *)(u + r * g * 4);
        __m256 amax = _mm256_setzero_ps();
        int64_t t = 0;
        for (; t + 8 <= d; t += 8)
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_sub_ps(_mm256_loadu_ps(xr + t),
                                                                            _mm256_loadu_ps(mu + t))));
        float top = hmax_256(amax);
        for (; t < d; t++)
            top = fmaxf(top, fabsf(xr[t] - mu[t]));
        const float s = top > 0.f ? top / qmax : 1.f, inv = 1.f / s;
        const __m256 inv8 = _mm256_set1_ps(inv), s8 = _mm256_set1_ps(s);
        __m256 e2 = _mm256_setzero_ps(), n2 = _mm256_setzero_ps();
        for (t = 0; t + 8 <= d; t += 8) {
            const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(xr + t), _mm256_loadu_ps(mu + t));
            __m256 q = _mm256_round_ps(_mm256_mul_ps(v, inv8), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
            const __m256 e = _mm256_fnmadd_ps(s8, q, v);
            e2 = _mm256_fmadd_ps(e, e, e2);
            n2 = _mm256_fmadd_ps(v, v, n2);
            const __m256i qi = _mm256_cvtps_epi32(q);
            _mm_storeu_si128((__m128i *)(ur + t),
                             _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1)));
        }
        float es = hsum_256(e2), ns = hsum_256(n2);
        for (; t < d; t++) {
            const float v = xr[t] - mu[t];
            const float q = fminf(fmaxf(rintf(v * inv), -qmax), qmax);
            const float e = v - s * q;
            es += e * e;
            ns += v * v;
            ur[t] = (int16_t)q;
        }
        for (t = d; t < 2 * g; t++)
            ur[t] = 0;
        scale[r] = -2.f * s * s_c;
        if (sx_out)
            sx_out[r] = s, ex_out[r] = sqrtf(es), xn_out[r] = sqrtf(ns);
    }
}

/* ------------------------------------------------------------------------------------------------------------
 * Kernel tables: what the drivers call for each instruction set.
 */

typedef void (*tile_f32_fn)(const float *, int64_t, int64_t, const float *, const float *, int32_t, float *, float *,
                            int32_t *, int);
typedef void (*tile_q_fn)(const uint8_t *, int64_t, int64_t, const int8_t *, const int32_t *, const float *,
                          const float *, int32_t, float *, float *, int32_t *, float *, int32_t *, const float *,
                          int32_t *, int32_t *);
typedef float (*sq_norm_fn)(const float *, const float *, int64_t);
typedef float (*sq_dist_fn)(const float *, const float *, const float *, int64_t);
typedef void (*sq_dist_cols_fn)(const float *, const float *, const int64_t *, int64_t, int64_t, float *);
typedef void (*quantise_fn)(const float *, int64_t, const int64_t *, int64_t, int64_t, int64_t, int64_t,
                            const float *, float, float, uint8_t *, float *, float *, float *, float *);

typedef struct {
    int mr;
    tile_f32_fn tile;
    sq_norm_fn sq_norm;
    sq_dist_fn sq_dist;
} f32_kernels;

/* Integer codes: every group of `feats` features is 4 bytes (one broadcast), `pad` the byte of a zero code. */
typedef struct {
    int mr, feats;
    uint8_t pad;
    int top3; /* the tile keeps each lane's third best and the second's column (b3, i2) */
    tile_q_fn tile;
    quantise_fn quantise;
    sq_dist_fn sq_dist;
    sq_dist_cols_fn sq_dist_cols; /* sq_dist(x, NULL, c_j) for a list of columns, the same bits */
} q_kernels;

enum { ISA_AVX512 = 1, ISA_AVX2 = 2 };
enum { CODES_INT8 = 0, CODES_INT16 = 1 };

static const f32_kernels F32_512 = {MR, tile_f32_512, sq_norm_512, sq_dist_512};
static const f32_kernels F32_256 = {MR2, tile_f32_256, sq_norm_256, sq_dist_256};
static const q_kernels Q_INT8 = {MR, 4, 128, 1, tile_i8_512, quantise_rows_512, sq_dist_512, sq_dist_cols_512};
static const q_kernels Q_INT16 = {MR_I16, 2, 0, 0, tile_i16_256, quantise_rows_256, sq_dist_256,
                                  sq_dist_cols_256};

static int has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

static int has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int has_vnni(void)
{
    return has_avx512() && __builtin_cpu_supports("avx512vnni");
}

/* ------------------------------------------------------------------------------------------------------------
 * Drivers. Per thread: a chunk of up to ROW_CHUNK rows, its top-2 state (LANES lanes per row), and a padded copy
 * of the last micro block when the chunk's row count is not a multiple of the tile height.
 */

static int64_t panels_per_block(int64_t panel_bytes)
{
    int64_t p = L2_PANEL_BYTES / (panel_bytes > 0 ? panel_bytes : 1);
    return p > 0 ? p : 1;
}

static void state_reset(float *b1, float *b2, int32_t *i1, int64_t rows)
{
    for (int64_t i = 0; i < rows * LANES; i++) {
        b1[i] = INFINITY;
        b2[i] = INFINITY;
        i1[i] = 0;
    }
}

/* ------------------------------------------------------------------------------------------------------------
 * Canonical distances: the arithmetic every near-tie is settled in, the same on every CPU, thread count and
 * backend (sslcurate.canonical holds the numpy twin, which a test checks bit for bit). Float64, eight lanes:
 * lane l sums (x_j - c_j)^2 over j = l, l + 8, ... in order, multiply and add rounded separately (these functions
 * carry no target attribute, so the baseline x86-64 build has no FMA to contract them into), then
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
 */
#define CANON_LANES 8

__attribute__((noinline)) static double canon_dist(const float *x, const float *c, int64_t d)
{
    double acc[CANON_LANES] = {0};
    int64_t j = 0;
    for (; j + CANON_LANES <= d; j += CANON_LANES)
        for (int l = 0; l < CANON_LANES; l++) {
            const double t = (double)x[j + l] - (double)c[j + l];
            const double sq = t * t;
            acc[l] = acc[l] + sq;
        }
    for (int l = 0; j + l < d; l++) {
        const double t = (double)x[j + l] - (double)c[j + l];
        const double sq = t * t;
        acc[l] = acc[l] + sq;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Error bound of a kernel's fp32 squared distance b (centred direct form |(x - mu) - (c - mu)|^2 or the plain
 * |x - c|^2) against the exact one: the centring subtractions (u (|x - mu| + |c - mu|) per component, with
 * |x - mu| <= sqrt(b) + c_max), the difference, and the d-term sum; doubled for safety. */
static double fp32_dist_error(double b, double c_max, int64_t d)
{
    const double u = 1.0 / 16777216.0, r = sqrt(b > 0 ? b : 0);
    return 2.0 * u * (4.0 * r * (r + 2.0 * c_max) + (double)(d + 6) * b);
}

/* The canonical nearest among m candidate columns whose kernel distances are dj: every candidate within twice
 * the fp32 error of the smallest is re-scored canonically, the smallest wins, the lower column among equals.
 * Returns the column; *out gets the kernel distance of that column. */
static int64_t canon_pick(const float *xr, const float *c, int64_t d, const int64_t *cols, const float *dj,
                          int64_t m, double c_max, float *out)
{
    int64_t arg = -1;
    float best = INFINITY;
    for (int64_t j = 0; j < m; j++)
        if (dj[j] < best || (dj[j] == best && cols[j] < arg))
            best = dj[j], arg = cols[j];
    const double lim = (double)best + 2.0 * fp32_dist_error(best, c_max, d);
    int ties = 0;
    for (int64_t j = 0; j < m; j++)
        ties += cols[j] != arg && (double)dj[j] <= lim;
    if (ties) {
        double cbest = INFINITY;
        for (int64_t j = 0; j < m; j++) {
            if ((double)dj[j] > lim)
                continue;
            const double v = canon_dist(xr, c + cols[j] * d, d);
            if (v < cbest || (v == cbest && cols[j] < arg))
                cbest = v, arg = cols[j], best = dj[j];
        }
    }
    *out = best;
    return arg;
}

/* out[i] = (float) canon_dist(x_i, c_idx[i]) for n rows. */
static void run_canon_rows(const float *x, int64_t n, int64_t d, int64_t ldx, const float *c, const int64_t *idx,
                           float *out, int nthreads)
{
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)canon_dist(x + i * ldx, c + idx[i] * d, d);
}

/* out[i] = canon_dist(x_rows[i], c_cols[i]) in float64 for m pairs (rows == NULL: row i). */
static void run_canon_pairs(const float *x, int64_t ldx, int64_t d, const float *c, const int64_t *rows,
                            const int64_t *cols, int64_t m, double *out, int nthreads)
{
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < m; i++)
        out[i] = canon_dist(x + (rows ? rows[i] : i) * ldx, c + cols[i] * d, d);
}

/* sums[idx[i]] += (double) x_i over n rows, each output element in row order whatever the thread count: the
 * threads split the columns. Only exact conversions and one add per element, so the vector width (one clone per
 * instruction set) cannot change a bit. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void run_accumulate(const float *x, int64_t n, int64_t d, int64_t ldx, const int64_t *idx, double *sums,
                           int nthreads)
{
#pragma omp parallel num_threads(nthreads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t j0 = d * t / nt, j1 = d * (t + 1) / nt;
        for (int64_t i = 0; i < n; i++) {
            const float *xr = x + i * ldx;
            double *sr = sums + idx[i] * d;
            for (int64_t j = j0; j < j1; j++)
                sr[j] += (double)xr[j];
        }
    }
}

static void run_f32(const f32_kernels *kr, const float *x, int64_t n, int64_t d, int64_t ldx, const float *c,
                    const float *mu, const float *pk, const float *bias, int64_t k_pad, int64_t *idx, float *d1,
                    float *d2, int nthreads)
{
    const int64_t mr = kr->mr, n_panels = k_pad / NR, per_block = panels_per_block(d * NR * 4);
    const int64_t n_chunks = (n + ROW_CHUNK - 1) / ROW_CHUNK;
#pragma omp parallel num_threads(nthreads)
    {
        float *b1 = malloc(sizeof(float) * ROW_CHUNK * LANES), *b2 = malloc(sizeof(float) * ROW_CHUNK * LANES);
        int32_t *i1 = malloc(sizeof(int32_t) * ROW_CHUNK * LANES);
        float *tail = calloc((size_t)(MR_MAX * d), sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            const int64_t r0 = ch * ROW_CHUNK, rows = n - r0 < ROW_CHUNK ? n - r0 : ROW_CHUNK;
            state_reset(b1, b2, i1, (rows + mr - 1) / mr * mr);
            for (int64_t p0 = 0; p0 < n_panels; p0 += per_block) {
                const int64_t p1 = p0 + per_block < n_panels ? p0 + per_block : n_panels;
                for (int64_t m = 0; m < rows; m += mr) {
                    const float *xm = x + (r0 + m) * ldx;
                    int64_t lx = ldx;
                    if (m + mr > rows) {
                        for (int64_t r = 0; r < rows - m; r++)
                            memcpy(tail + r * d, xm + r * ldx, sizeof(float) * d);
                        xm = tail;
                        lx = d;
                    }
                    for (int64_t p = p0; p < p1; p++)
                        kr->tile(xm, lx, d, pk + p * d * NR, bias + p * NR, (int32_t)(p * NR), b1 + m * LANES,
                                 b2 + m * LANES, i1 + m * LANES, d2 != NULL);
                }
            }
            for (int64_t r = 0; r < rows; r++) {
                float v1, v2;
                top2_reduce(b1 + r * LANES, b2 + r * LANES, i1 + r * LANES, &v1, &v2, idx + r0 + r);
                const float *xr = x + (r0 + r) * ldx;
                if (d2) {  /* both in the same (score) form: the bounded Lloyd loop compares them */
                    const float xs = kr->sq_norm(xr, mu, d);
                    d1[r0 + r] = v1 + xs;
                    d2[r0 + r] = v2 + xs;
                } else {
                    d1[r0 + r] = kr->sq_dist(xr, NULL, c + idx[r0 + r] * d, d);
                }
            }
        }
        free(b1), free(b2), free(i1), free(tail);
    }
}

/* xm = x - mu, rounded per element as the kernels' sq_dist(x, mu, c) rounds its first subtraction, so that
 * sq_dist(xm, NULL, c) gives the same bits while reading one row instead of two for every candidate. */
static void centre_row(const float *x, const float *mu, int64_t d, float *xm)
{
    for (int64_t j = 0; j < d; j++)
        xm[j] = x[j] - mu[j];
}

/* The integer pass. Per row: best and second-best score over all centroids; if they are further apart than twice
 * the error bound, the best column is the exact nearest. Otherwise the row is near-tied, and every centroid
 * scoring at most  best + 2 x bound  must be re-scored exactly. Those candidates are the columns the lanes name
 * under it (the int8 kernel keeps each lane's best and second best column, the int16 one its best), plus, in a
 * lane whose next value is also under it ("deep": the third best for int8, the second for int16), possibly any of
 * its columns. With at most DEEP_MAX deep lanes the row is settled here, while it is in cache (status 1): the named
 * columns and every column of the deep lanes get exact fp32 distances (a superset of the candidates does not
 * change the pick). Each deep lane costs k / 32 fp32 distances, against k integer scores for a second pass, so
 * rows with more deep lanes are left to run_settle_q (status 2, limit[i] set). On pools where many centroids sit
 * within the bound of one another (about 16 per natural cluster in benchmarks/bench_kmeans.py's blobs64), two of
 * them often share a lane and three rarely do: the int8 kernel's third best turns most deep lanes into two exact
 * distances (benchmarks/results/precision_blobs64_t1.md). The candidates are listed first, then their distances
 * computed together (sq_dist_cols: four at a time for the int8 kernel).
 * dist[i] is the exact fp32 squared distance to idx[i] for rows of status 0 and 1. */
static void run_q(const q_kernels *kr, const float *x, int64_t n, int64_t d, int64_t ldx, const float *mu,
                  const int8_t *pk, const int32_t *init, const float *bias, float s_c, float qmax, int64_t k_pad,
                  const float *cc, const float *c, int64_t k, const double *bnd, int64_t *idx, float *dist,
                  float *limit, int8_t *status, int nthreads)
{
    const int64_t mr = kr->mr, g = (d + kr->feats - 1) / kr->feats, n_panels = k_pad / NR;
    const int64_t per_block = panels_per_block(g * 4 * NR), n_chunks = (n + ROW_CHUNK - 1) / ROW_CHUNK;
#pragma omp parallel num_threads(nthreads)
    {
        float *b1 = malloc(sizeof(float) * ROW_CHUNK * LANES), *b2 = malloc(sizeof(float) * ROW_CHUNK * LANES);
        int32_t *i1 = malloc(sizeof(int32_t) * ROW_CHUNK * LANES);
        uint8_t *u = malloc((size_t)(ROW_CHUNK * g * 4));
        float *scale = calloc(ROW_CHUNK, sizeof(float)), *sx = malloc(sizeof(float) * ROW_CHUNK);
        float *ex = malloc(sizeof(float) * ROW_CHUNK), *xn = malloc(sizeof(float) * ROW_CHUNK);
        float *b3 = malloc(sizeof(float) * ROW_CHUNK * LANES);
        int32_t *i2 = malloc(sizeof(int32_t) * ROW_CHUNK * LANES);
        const int64_t cap = 2 * LANES + DEEP_MAX * n_panels; /* settling candidates of one row, at most */
        int64_t *cols = malloc(sizeof(int64_t) * cap);
        float *dj = malloc(sizeof(float) * cap), *xm = malloc(sizeof(float) * d);
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            const int64_t r0 = ch * ROW_CHUNK, rows = n - r0 < ROW_CHUNK ? n - r0 : ROW_CHUNK;
            const int64_t padded = (rows + mr - 1) / mr * mr;
            kr->quantise(x, ldx, NULL, r0, rows, d, g, mu, s_c, qmax, u, scale, sx, ex, xn);
            memset(u + rows * g * 4, kr->pad, (size_t)((padded - rows) * g * 4));
            state_reset(b1, b2, i1, padded);
            state_reset(b3, b3, i2, padded); /* b3 := +inf (passed as both value arrays), i2 := 0 */
            for (int64_t p0 = 0; p0 < n_panels; p0 += per_block) {
                const int64_t p1 = p0 + per_block < n_panels ? p0 + per_block : n_panels;
                for (int64_t m = 0; m < rows; m += mr)
                    for (int64_t p = p0; p < p1; p++)
                        kr->tile(u + m * g * 4, g * 4, g, pk + p * g * 4 * NR, init + p * NR, bias + p * NR,
                                 scale + m, (int32_t)(p * NR), b1 + m * LANES, b2 + m * LANES, i1 + m * LANES,
                                 b3 + m * LANES, i2 + m * LANES, NULL, NULL, NULL);
            }
            for (int64_t r = 0; r < rows; r++) {
                const int64_t i = r0 + r;
                const float *lb1 = b1 + r * LANES, *lb2 = b2 + r * LANES, *lb3 = b3 + r * LANES;
                const int32_t *li1 = i1 + r * LANES, *li2 = i2 + r * LANES;
                /* A lane is deep when a column past those it names may be under the limit: past its best (top-2
                 * state), or past its best and second (top-3). */
                const float *ldeep = kr->top3 ? lb3 : lb2;
                const float *xr = x + i * ldx;
                float v1, v2;
                top2_reduce(lb1, lb2, li1, &v1, &v2, idx + i);
                const double e2 = 2.0 * score_error(ex[r], xn[r], bnd);
                status[i] = 0;
                if ((double)v2 - (double)v1 > e2) {
                    dist[i] = kr->sq_dist(xr, mu, cc + idx[i] * d, d);
                    continue;
                }
                const double lim = (double)v1 + e2;
                int n_deep = 0;
                for (int l = 0; l < LANES; l++)
                    n_deep += (double)ldeep[l] <= lim;
                if (n_deep > DEEP_MAX) {
                    status[i] = 2;
                    limit[i] = (float)lim;
                    continue;
                }
                status[i] = 1;
                centre_row(xr, mu, d, xm); /* each candidate's distance then reads one row, not two */
                int64_t m = 0;
                for (int l = 0; l < LANES; l++) {
                    if ((double)ldeep[l] <= lim) { /* deep lane: any of its columns may be under the limit */
                        for (int64_t col = l; col < k; col += NR)
                            cols[m++] = col;
                        continue;
                    }
                    if ((double)lb1[l] <= lim && li1[l] < k)
                        cols[m++] = li1[l];
                    if (kr->top3 && (double)lb2[l] <= lim && li2[l] < k)
                        cols[m++] = li2[l];
                }
                kr->sq_dist_cols(xm, cc, cols, m, d, dj);
                idx[i] = canon_pick(xr, c, d, cols, dj, m, bnd[0], dist + i);
            }
        }
        free(b1), free(b2), free(i1), free(b3), free(i2), free(u), free(scale), free(sx), free(ex), free(xn),
            free(cols), free(dj), free(xm);
    }
}

/* Settling of the rows run_q left (status 2): for each of `rows` (n_rows of them) the int8 scores are
 * recomputed, identically, and every column whose score is at most the row's limit is a candidate; the
 * candidate nearest in exact fp32 distance (the lowest column among equals) goes to idx[row], its distance to
 * dist[row]. */
static void run_settle_q(const q_kernels *kr, const float *x, int64_t d, int64_t ldx, const float *mu,
                         const int8_t *pk, const int32_t *init, const float *bias, float s_c, float qmax,
                         int64_t k_pad, const float *cc, const float *c, double c_max, int64_t k,
                         const int64_t *rows, int64_t n_rows, const float *limit, int64_t *idx, float *dist,
                         int64_t *n_overflow, int nthreads)
{
    const int64_t mr = kr->mr, g = (d + kr->feats - 1) / kr->feats, n_panels = k_pad / NR;
    const int64_t n_chunks = (n_rows + ROW_CHUNK - 1) / ROW_CHUNK;
    int64_t overflow = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : overflow)
    {
        uint8_t *u = malloc((size_t)(ROW_CHUNK * g * 4));
        float *scale = calloc(ROW_CHUNK, sizeof(float));
        int32_t *cand = malloc(sizeof(int32_t) * ROW_CHUNK * CAP);
        int32_t *count = malloc(sizeof(int32_t) * ROW_CHUNK);
        float lim[ROW_CHUNK];
        int64_t *cols = malloc(sizeof(int64_t) * (size_t)(k > CAP ? k : CAP));
        float *dj = malloc(sizeof(float) * (size_t)(k > CAP ? k : CAP)), *xm = malloc(sizeof(float) * d);
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            const int64_t q0 = ch * ROW_CHUNK, cnt = n_rows - q0 < ROW_CHUNK ? n_rows - q0 : ROW_CHUNK;
            const int64_t padded = (cnt + mr - 1) / mr * mr;
            kr->quantise(x, ldx, rows + q0, 0, cnt, d, g, mu, s_c, qmax, u, scale, NULL, NULL, NULL);
            memset(u + cnt * g * 4, kr->pad, (size_t)((padded - cnt) * g * 4));
            for (int64_t r = 0; r < padded; r++) {
                lim[r] = r < cnt ? limit[q0 + r] : -INFINITY;
                count[r] = 0;
            }
            for (int64_t m = 0; m < cnt; m += mr)
                for (int64_t p = 0; p < n_panels; p++)
                    kr->tile(u + m * g * 4, g * 4, g, pk + p * g * 4 * NR, init + p * NR, bias + p * NR,
                             scale + m, (int32_t)(p * NR), NULL, NULL, NULL, NULL, NULL, lim + m, cand + m * CAP,
                             count + m);
            for (int64_t r = 0; r < cnt; r++) {
                const int64_t row = rows[q0 + r];
                const float *xr = x + row * ldx;
                const int32_t *cr = cand + r * CAP;
                const int64_t m = count[r] <= CAP ? count[r] : k;
                overflow += count[r] > CAP;
                int64_t mc = 0;
                centre_row(xr, mu, d, xm);
                for (int64_t j = 0; j < m; j++) {
                    const int64_t col = count[r] <= CAP ? cr[j] : j;
                    if (col < k)
                        cols[mc++] = col;
                }
                kr->sq_dist_cols(xm, cc, cols, mc, d, dj);
                idx[row] = canon_pick(xr, c, d, cols, dj, mc, c_max, dist + row);
            }
        }
        free(u), free(scale), free(cand), free(count), free(cols), free(dj), free(xm);
    }
    *n_overflow = overflow;
}

/* ------------------------------------------------------------------------------------------------------------
 * Python entry points. Arrays travel as addresses (tensor.data_ptr()) with their sizes; sslcurate.fused checks
 * dtypes, shapes and contiguity before calling, so nothing here re-validates them. What is checked here is that
 * this CPU runs the kernels asked for (an illegal instruction would kill the interpreter). The GIL is released
 * while the kernels run.
 */

/* ------------------------------------------------------------------------------------------------------------
 * The bf16 path's two passes around its GEMM (sslcurate.assign.Bf16Assigner; the GEMM itself is torch's, on AMX
 * or AVX512-BF16): what the torch epilogue did in a dozen passes over (n, d) and (n, k) arrays, each row here is
 * read once, while it is in cache.
 *
 *   bf16_prep    per row: x - mu rounded to bf16 (to nearest even, as torch rounds), |x - mu|^2 split in two bf16
 *                halves, the two ones of the norm-augmented row; the fp32 norm and the rounding residual's norm.
 *   bf16_settle  per row of the GEMM's output (column tiles of bf16 distances, read as int16: non-negative bf16
 *                values order like their bit patterns): the smallest code, the row's limit from its error bound,
 *                every column at or under the limit; one column is the answer, several are re-scored exactly in
 *                fp32 (direct form |x - c|^2, ties to the lower column). The exact distance to the chosen centroid
 *                is returned.
 */

TARGET static inline __m256i bf16_rne_512(__m512 v)
{
    const __m512i b = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

static inline uint16_t bf16_rne(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

static inline float bf16_to_float(uint16_t h)
{
    const uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

TARGET static void run_bf16_prep(const float *x, int64_t n, int64_t d, int64_t ldx, const float *mu, uint16_t *aug,
                                 int64_t lda, float *x_sq, float *ex, int nthreads)
{
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * ldx;
        uint16_t *ar = aug + r * lda;
        __m512 sq = _mm512_setzero_ps(), e2 = _mm512_setzero_ps();
        for (int64_t t = 0; t < d; t += 16) {
            const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1u << (d - t)) - 1);
            const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + t), _mm512_maskz_loadu_ps(m, mu + t));
            const __m256i h = bf16_rne_512(v);
            _mm256_mask_storeu_epi16(ar + t, m, h);
            const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            const __m512 e = _mm512_sub_ps(v, back);
            sq = _mm512_fmadd_ps(v, v, sq);
            e2 = _mm512_fmadd_ps(e, e, e2);
        }
        const float s = _mm512_reduce_add_ps(sq);
        const uint16_t hi = bf16_rne(s);
        ar[d] = hi;
        ar[d + 1] = bf16_rne(s - bf16_to_float(hi));
        ar[d + 2] = ar[d + 3] = 0x3F80; /* 1.0 */
        x_sq[r] = s;
        ex[r] = sqrtf(_mm512_reduce_add_ps(e2));
    }
}

/* codes: n_tiles column tiles of the GEMM's output, one after the other, each (n, tile_cols) row-major: column j of
 * row r at codes[((j / tile_cols) * n + r) * tile_cols + j % tile_cols]. Columns >= k (padding) are never read. */
TARGET static int64_t run_bf16_settle(const int16_t *codes, int64_t n, int64_t tile_cols, int64_t k, const float *x,
                                      int64_t d, int64_t ldx, const float *c, const float *a, float u, int64_t *idx,
                                      float *dist, int nthreads)
{
    int64_t settled = 0;
    const int64_t n_tiles = (k + tile_cols - 1) / tile_cols;
#pragma omp parallel num_threads(nthreads) reduction(+ : settled)
    {
        int32_t *cand = malloc(sizeof(int32_t) * (size_t)(k + 32));
        int64_t *cols = malloc(sizeof(int64_t) * (size_t)(k + 32));
        float *dj = malloc(sizeof(float) * (size_t)(k + 32));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n; r++) {
            const float *xr = x + r * ldx;
            __m512i lo = _mm512_set1_epi16(INT16_MAX);
            int16_t v1 = INT16_MAX;
            for (int64_t t = 0; t < n_tiles; t++) {
                const int16_t *row = codes + (t * n + r) * tile_cols;
                const int64_t w = k - t * tile_cols < tile_cols ? k - t * tile_cols : tile_cols;
                int64_t j = 0;
                for (; j + 32 <= w; j += 32)
                    lo = _mm512_min_epi16(lo, _mm512_loadu_si512(row + j));
                for (; j < w; j++)
                    v1 = row[j] < v1 ? row[j] : v1;
            }
            {
                int16_t lanes[32];
                _mm512_storeu_si512(lanes, lo);
                for (int l = 0; l < 32; l++)
                    v1 = lanes[l] < v1 ? lanes[l] : v1;
            }
            /* The error bound of every bf16 distance near the minimum, as Bf16Assigner documents it: a[r] covers
             * the residual dot products, split norms and fp32 accumulation; u |d1| the output rounding. */
            const float d1 = bf16_to_float((uint16_t)v1);
            const float e = (a[r] + u * fabsf(d1)) / (1.0f - 4.0f * u) * 1.01f;
            const float limit = d1 + 2.0f * e;
            /* The largest bf16 at or under the limit (truncation): for non-negative codes, code <= lb exactly when
             * its value is <= limit. Negative codes (rounding artefacts next to 0) are below it, as wanted. */
            const float lpos = limit > 0.f ? limit : 0.f;
            uint32_t lbits;
            memcpy(&lbits, &lpos, 4);
            const int16_t lb = (int16_t)(lbits >> 16);
            const __m512i lim = _mm512_set1_epi16(lb);
            int64_t count = 0;
            for (int64_t t = 0; t < n_tiles; t++) {
                const int16_t *row = codes + (t * n + r) * tile_cols;
                const int64_t w = k - t * tile_cols < tile_cols ? k - t * tile_cols : tile_cols, j0 = t * tile_cols;
                int64_t j = 0;
                for (; j + 32 <= w; j += 32) {
                    __mmask32 m = _mm512_cmple_epi16_mask(_mm512_loadu_si512(row + j), lim);
                    while (m) {
                        cand[count++] = (int32_t)(j0 + j + __builtin_ctz(m));
                        m &= m - 1;
                    }
                }
                for (; j < w; j++)
                    if (row[j] <= lb)
                        cand[count++] = (int32_t)(j0 + j);
            }
            if (count == 0) /* only where the distances are not numbers (NaN input): keep the smallest code */
                for (int64_t j = 0; j < k && !count; j++)
                    if (codes[((j / tile_cols) * n + r) * tile_cols + j % tile_cols] == v1)
                        cand[count++] = (int32_t)j;
            if (count == 0)
                cand[count++] = 0;
            settled += count > 1;
            for (int64_t q = 0; q < count; q++) {
                cols[q] = cand[q];
                dj[q] = sq_dist_512(xr, NULL, c + (int64_t)cand[q] * d, d);
            }
            idx[r] = canon_pick(xr, c, d, cols, dj, count, 0.0, dist + r);
        }
        free(cand), free(cols), free(dj);
    }
    return settled;
}

static PyObject *py_bf16_prep(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, mu, aug, x_sq, ex;
    long long n, d, ldx, lda;
    int nthreads;
    if (!PyArg_ParseTuple(args, "KLLLKKLKKi", &x, &n, &d, &ldx, &mu, &aug, &lda, &x_sq, &ex, &nthreads))
        return NULL;
    if (!has_avx512())
        return PyErr_Format(PyExc_RuntimeError, "sslcurate._kernels.bf16_prep needs AVX-512");
    Py_BEGIN_ALLOW_THREADS
    run_bf16_prep((const float *)x, n, d, ldx, (const float *)mu, (uint16_t *)aug, lda, (float *)x_sq, (float *)ex,
                  nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_bf16_settle(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long codes, x, c, a, idx, dist;
    long long n, tile_cols, k, d, ldx;
    float u;
    int nthreads;
    if (!PyArg_ParseTuple(args, "KLLLKLLKKfKKi", &codes, &n, &tile_cols, &k, &x, &d, &ldx, &c, &a, &u, &idx, &dist,
                          &nthreads))
        return NULL;
    if (!has_avx512())
        return PyErr_Format(PyExc_RuntimeError, "sslcurate._kernels.bf16_settle needs AVX-512");
    if (k < 1 || tile_cols < 1)
        return PyErr_Format(PyExc_ValueError, "sslcurate._kernels.bf16_settle: k and tile_cols must be positive");
    int64_t settled;
    Py_BEGIN_ALLOW_THREADS
    settled = run_bf16_settle((const int16_t *)codes, n, tile_cols, k, (const float *)x, d, ldx, (const float *)c,
                              (const float *)a, u, (int64_t *)idx, (float *)dist, nthreads);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(settled);
}

static PyObject *py_cpu_features(PyObject *self, PyObject *args)
{
    (void)self, (void)args;
    const int w512 = has_avx512(), w256 = has_avx2();
    return Py_BuildValue("{s:O,s:O,s:O,s:O}", "avx512", w512 ? Py_True : Py_False, "avx2", w256 ? Py_True : Py_False,
                         "int8", has_vnni() ? Py_True : Py_False, "int16", w256 ? Py_True : Py_False);
}

static const f32_kernels *f32_for(int isa)
{
    if (isa == ISA_AVX512 && has_avx512())
        return &F32_512;
    if (isa == ISA_AVX2 && has_avx2())
        return &F32_256;
    PyErr_Format(PyExc_RuntimeError, "sslcurate._kernels: this CPU does not run the fp32 kernel %d", isa);
    return NULL;
}

static const q_kernels *q_for(int codes)
{
    if (codes == CODES_INT8 && has_vnni())
        return &Q_INT8;
    if (codes == CODES_INT16 && has_avx2())
        return &Q_INT16;
    PyErr_Format(PyExc_RuntimeError, "sslcurate._kernels: this CPU does not run the integer kernel %d", codes);
    return NULL;
}

static PyObject *py_assign_f32(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, c, mu, pk, bias, idx, d1, d2;
    long long n, d, ldx, k_pad;
    int nthreads, isa;
    if (!PyArg_ParseTuple(args, "iKLLLKKKKLKKKi", &isa, &x, &n, &d, &ldx, &c, &mu, &pk, &bias, &k_pad, &idx, &d1, &d2,
                          &nthreads))
        return NULL;
    const f32_kernels *kr = f32_for(isa);
    if (!kr)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_f32(kr, (const float *)x, n, d, ldx, (const float *)c, (const float *)mu, (const float *)pk,
            (const float *)bias, k_pad, (int64_t *)idx, (float *)d1, d2 ? (float *)d2 : NULL, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_assign_q(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, mu, pk, init, bias, cc, c, bnd, idx, dist, limit, status;
    long long n, d, ldx, k_pad, k;
    float s_c, qmax;
    int nthreads, codes;
    if (!PyArg_ParseTuple(args, "iKLLLKKKKffLKKLKKKKKi", &codes, &x, &n, &d, &ldx, &mu, &pk, &init, &bias, &s_c,
                          &qmax, &k_pad, &cc, &c, &k, &bnd, &idx, &dist, &limit, &status, &nthreads))
        return NULL;
    const q_kernels *kr = q_for(codes);
    if (!kr)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_q(kr, (const float *)x, n, d, ldx, (const float *)mu, (const int8_t *)pk, (const int32_t *)init,
          (const float *)bias, s_c, qmax, k_pad, (const float *)cc, (const float *)c, k, (const double *)bnd,
          (int64_t *)idx,
          (float *)dist, (float *)limit, (int8_t *)status, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_settle_q(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, mu, pk, init, bias, cc, c, rows, limit, idx, dist;
    long long d, ldx, k_pad, k, n_rows;
    float s_c, qmax;
    double c_max;
    int nthreads, codes;
    if (!PyArg_ParseTuple(args, "iKLLKKKKffLKKdLKLKKKi", &codes, &x, &d, &ldx, &mu, &pk, &init, &bias, &s_c, &qmax,
                          &k_pad, &cc, &c, &c_max, &k, &rows, &n_rows, &limit, &idx, &dist, &nthreads))
        return NULL;
    const q_kernels *kr = q_for(codes);
    if (!kr)
        return NULL;
    int64_t overflow = 0;
    Py_BEGIN_ALLOW_THREADS
    run_settle_q(kr, (const float *)x, d, ldx, (const float *)mu, (const int8_t *)pk, (const int32_t *)init,
                 (const float *)bias, s_c, qmax, k_pad, (const float *)cc, (const float *)c, c_max, k,
                 (const int64_t *)rows, n_rows,
                 (const float *)limit, (int64_t *)idx, (float *)dist, &overflow, nthreads);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(overflow);
}

static PyObject *py_canon_rows(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, c, idx, out;
    long long n, d, ldx;
    int nthreads;
    if (!PyArg_ParseTuple(args, "KLLLKKKi", &x, &n, &d, &ldx, &c, &idx, &out, &nthreads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_canon_rows((const float *)x, n, d, ldx, (const float *)c, (const int64_t *)idx, (float *)out, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_canon_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, c, rows, cols, out;
    long long ldx, d, m;
    int nthreads;
    if (!PyArg_ParseTuple(args, "KLLKKKLKi", &x, &ldx, &d, &c, &rows, &cols, &m, &out, &nthreads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_canon_pairs((const float *)x, ldx, d, (const float *)c, (const int64_t *)rows, (const int64_t *)cols, m,
                    (double *)out, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_accumulate(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long x, idx, sums;
    long long n, d, ldx;
    int nthreads;
    if (!PyArg_ParseTuple(args, "KLLLKKi", &x, &n, &d, &ldx, &idx, &sums, &nthreads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    run_accumulate((const float *)x, n, d, ldx, (const int64_t *)idx, (double *)sums, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"cpu_features", py_cpu_features, METH_NOARGS,
     "Which kernels this CPU runs: {'avx512': bool, 'avx2': bool, 'int8': bool, 'int16': bool}."},
    {"assign_f32", py_assign_f32, METH_VARARGS, "Fused exact fp32 nearest / second-nearest centroid."},
    {"assign_q", py_assign_q, METH_VARARGS, "Fused integer candidate scores, near-ties settled in the same pass."},
    {"settle_q", py_settle_q, METH_VARARGS, "Exact fp32 settling of the near-tied rows assign_q left listed."},
    {"bf16_prep", py_bf16_prep, METH_VARARGS, "The bf16 path's norm-augmented rows, norms and rounding residuals."},
    {"bf16_settle", py_bf16_settle, METH_VARARGS, "The bf16 path's nearest centroid from its GEMM's output."},
    {"canon_rows", py_canon_rows, METH_VARARGS, "Canonical float64 squared distance of each row to its centroid."},
    {"canon_pairs", py_canon_pairs, METH_VARARGS, "Canonical float64 squared distances of (row, centroid) pairs."},
    {"accumulate", py_accumulate, METH_VARARGS, "Per-cluster float64 sums of rows, in row order per element."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "Fused nearest-centroid kernels.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
