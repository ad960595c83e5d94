/*
 * bsr_q8.c — the int8 BSR micro-kernels (AVX-512 VNNI and AVX2) and the vector activation
 * quantizers (contract: the int8 part of include/lpvit/bsr.h; the walk over panels, chunks and
 * groups is bsr.c's plain order, the reference is part_ref_q8 in bsr.c).
 *
 * Both kernels keep int32 accumulators of Σ q·u for a tile and convert once, in the epilogue:
 *     y = (float(acc) · xa[t] − xc[t] · qsum[r]) · qscale[r] + b[r]   (+ Y when accumulating)
 * VNNI (8 rows × 1..3 zmm of 16 tokens): per k-quad, NV loads of X4 and 8 weight broadcasts feed
 *   8·NV vpdpbusd (u8 × s8, four products summed into each int32 lane: 4x the FP32 FMA's work).
 * AVX2 and AVX-VNNI (2 rows × 1..6 ymm of 8 tokens, bsr.c's x_in_l1 walk over a copy of the panel's quads):
 *   AVX-VNNI's vpdpbusd on ymm is VNNI's on half the width. AVX2 has no u8 × s8 instruction that sums into
 *   int32: vpmaddubsw sums two u8·s8 products into a saturating int16 (255·128·2 overflows it), so the AVX2
 *   kernel's inputs have 127 levels (lpv_q8_levels: u in [0, 127], 127·128·2 = 32512 fits) and a k-quad is
 *   vpmaddubsw, vpmaddwd by ones (the two int16 pair sums into int32) and vpaddd: 3 ops for 32 multiply-adds,
 *   where an FP32 FMA does 8. Exact: its int32 sums are the reference's on the same bytes.
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define T256 LPV_TARGET_AVX2

/* ---- AVX-512 VNNI ---- */

LPV_VINLINE TVNNI __m512i ldq(const uint32_t *p, int masked, __mmask16 m) {
    return masked ? _mm512_maskz_loadu_epi32(m, p) : _mm512_loadu_si512(p);
}

LPV_VINLINE TVNNI __m512 ldf(const float *p, int masked, __mmask16 m) {
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}

/* One k-quad of the 8 x NV tile at panel row xk, weights quad line wk: NV loads, 8 broadcasts, 8·NV vpdpbusd,
 * and a prefetch into L2 as the FP32 tile's (bsr_avx512.c, lpv__bsr_tune.avx512_pf): the next tile's X, or the
 * next group's weights (zen5: DeiT-B int8, 2 threads, batch 1 dense 33-36 -> 26-31 ms/image, pruned 50 %
 * 19-25 -> 17-21; batch 8 equal within noise). */
#define VNNI_STEP()                                                                                        \
    do {                                                                                                   \
        __m512i x[3];                                                                                      \
        _Pragma("GCC unroll 3") for (int j = 0; j < NV; j++) x[j] = ldq(xk + 16 * j, MASKED && j == NV - 1, m); \
        lpv__prefetch_step(PF, xk + 16 * NV, NV, wk + a->wnext);                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {                                              \
            __m512i wv = _mm512_set1_epi32((int)wk[i]);                                                    \
            _Pragma("GCC unroll 3") for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], x[j], wv); \
        }                                                                                                  \
    } while (0)

/* The 8 x NV tile: int32 sums over the group's blocks of the chunk, then the epilogue. */
LPV_VINLINE TVNNI void tile_vnni(const lpv__tile *a, const lpv__bsr_group *g, const int NV, const int MASKED,
                                 __mmask16 m, const int PF) {
    __m512i acc[8][3];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_si512();
    const int64_t ldx = a->ldx;
    const uint32_t *w = a->wp, *X = a->X;
    const int C = a->C;
    /* blocks that are all adjacent (dense rows) as one run: their quads and panel rows follow each other;
     * scattered whole 32-wide blocks one at a time, their 8 quads unrolled (no trip count to mispredict), each
     * k-step asking for the next block's X row into L1: at every jump the hardware's stride prefetch has lost
     * the stream, and the block's 8 k-steps are too few to hide the misses (Zen 5, bench_q8_kernel, DeiT-B
     * shapes, d = 0.5: the four products 1.72-1.74x -> 1.84-1.86x faster than dense int8; with every block
     * reading the same, L1-resident rows, 1.97x). The loop below for other widths prefetches nothing: at 16x16
     * the same prefetch made the products 12 % slower (bench_q8_kernel --block 16, d = 0.5: 7.9 -> 8.8 ms) */
    const int one_run = lpv__one_run(a->ci, a->nb);
    if (!one_run && C == 32 && a->K % 32 == 0) {
        for (int b = 0; b < a->nb; b++) {
            const uint32_t *xk = X + (int64_t)a->ci[b] * 8 * ldx, *wk = w + (int64_t)64 * b;
            const uint32_t *xn = X + (int64_t)lpv__next_ci(a->ci, a->nb, b) * 8 * ldx;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++, xk += ldx, wk += 8, xn += ldx) {
                VNNI_STEP();
                lpv__prefetch_row_l1(xn, NV);
            }
        }
    } else {
        const int nrun = one_run ? 1 : a->nb, span = one_run ? a->nb * C : C;
        for (int b = 0; b < nrun; b++, w += 2 * span) { /* a block's [C/4][8] quads */
            int c0 = a->ci[b] * C;
            int kn = a->K - c0 < span ? a->K - c0 : span, nq = (kn + 3) / 4;
            const uint32_t *xk = X + (int64_t)(c0 / 4) * ldx, *wk = w;
#pragma GCC unroll 2
            for (int k = 0; k < nq; k++, xk += ldx, wk += 8) VNNI_STEP();
        }
    }
    /* epilogue; a->X points at column col of X4 and a->Y at column col of Y: xa, xc follow X */
    const int64_t col = (const uint32_t *)a->X - g->X4;
    __m512 xa[3], xc[3];
#pragma GCC unroll 3
    for (int j = 0; j < NV; j++)
        xa[j] = ldf(g->xa + col + 16 * j, MASKED && j == NV - 1, m),
        xc[j] = ldf(g->xc + col + 16 * j, MASKED && j == NV - 1, m);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        if (i >= a->nrows) break;
        __m512 ws = _mm512_set1_ps(g->ws8[i]), sum = _mm512_set1_ps(g->wsum8[i]), bv = _mm512_set1_ps(a->b[i]);
        float *y = a->Y + i * a->ldy;
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) {
            int mk = MASKED && j == NV - 1;
            __m512 v = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][j]), xa[j]), _mm512_mul_ps(xc[j], sum));
            v = _mm512_add_ps(_mm512_mul_ps(v, ws), bv);
            if (a->init_y) v = _mm512_add_ps(v, ldf(y + 16 * j, mk, m));
            if (mk) _mm512_mask_storeu_ps(y + 16 * j, m, v);
            else _mm512_storeu_ps(y + 16 * j, v);
        }
    }
}

/* the tile functions of lpv__run_tiles take only the tile: the group rides along in a wrapper */
typedef struct {
    lpv__tile t;
    const lpv__bsr_group *g;
    int64_t col; /* AVX2: the tile's first token column (xa, xc index) */
} q8_tile;

#define VNNI_FN(name, NV, MASKED, PF)                                                        \
    __attribute__((noinline)) static TVNNI void name(const lpv__tile *a) {                  \
        const q8_tile *q = (const q8_tile *)a;                                              \
        tile_vnni(a, q->g, NV, MASKED, MASKED ? (__mmask16)a->mask : (__mmask16)0xffff, PF); \
    }
VNNI_FN(vnni3_x, 3, 0, LPV_PF_NEXT_X)
VNNI_FN(vnni2_x, 2, 0, LPV_PF_NEXT_X)
VNNI_FN(vnni1_x, 1, 0, LPV_PF_NEXT_X)
VNNI_FN(vnni1m_x, 1, 1, LPV_PF_NEXT_X)
VNNI_FN(vnni3_w, 3, 0, LPV_PF_NEXT_W)
VNNI_FN(vnni2_w, 2, 0, LPV_PF_NEXT_W)
VNNI_FN(vnni1_w, 1, 0, LPV_PF_NEXT_W)
VNNI_FN(vnni1m_w, 1, 1, LPV_PF_NEXT_W)

TVNNI void lpv__bsr_group_q8_vnni(const lpv__bsr_group *g) {
    q8_tile q = {{NULL, NULL, g->ldx, g->ldy, 0, g->wq, g->ci, g->nb, g->C, g->K, g->nrows, g->init_y, g->b8, 0, 0,
                  g->wnext / 4},
                 g, 0};
    const int pw = lpv__bsr_tune.avx512_pf == LPV_PF_NEXT_W;
    lpv__run_tiles(&q.t, g->X4, 0, g->Y, g->v0, g->v1, 16, pw ? vnni3_w : vnni3_x, pw ? vnni2_w : vnni2_x,
                   pw ? vnni1_w : vnni1_x);
    if (g->tail) {
        lpv__tile_at(&q.t, g->X4, 0, g->Y, 16 * g->v1);
        q.t.mask = (1u << g->tail) - 1;
        (pw ? vnni1m_w : vnni1m_x)(&q.t);
    }
    if (g->gelu)
        lpv__gelu_rows16(g->Y + 16 * g->v0, g->ldy, g->nrows, (g->v1 - g->v0) * 16 + g->tail, g->cmin ? g->cmin + 16 * g->v0 : NULL,
                     g->cmax ? g->cmax + 16 * g->v0 : NULL);
}

/* Step 2 of the quantizer (bsr_q8.c) for nk (1..4) rows of X into one row of quads, columns [0, n). */
TVNNI void lpv__q8_quantize_avx512(uint32_t *o, const float *inv_t, const float *zp_t, const float *X, int ld, int nk,
                                   int n, int levels) {
    const __m512 lo = _mm512_set1_ps(-512.0f), hi = _mm512_set1_ps(512.0f);
    const __m512i z = _mm512_setzero_si512(), top = _mm512_set1_epi32(levels);
    for (int t = 0; t < n; t += 16) {
        __mmask16 m = n - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - t)) - 1);
        __m512 inv = _mm512_maskz_loadu_ps(m, inv_t + t);
        __m512i zp = _mm512_cvtps_epi32(_mm512_maskz_loadu_ps(m, zp_t + t));
        __m512i word = z;
        for (int j = 0; j < nk; j++) {
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, X + (int64_t)j * ld + t), inv);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN -> -512 (max returns its second operand) */
            __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
            u = _mm512_min_epi32(_mm512_max_epi32(u, z), top);
            word = _mm512_or_si512(word, _mm512_slli_epi32(u, 8 * j));
        }
        _mm512_mask_storeu_epi32(o + t, m, word);
    }
}

/* min/max per column, row by row (each row's n floats are contiguous; a column-first walk jumps a page per
 * row and ran 3x slower at K = 3072); lo and hi stay in L1. max_ps/min_ps return the second operand (the
 * running value) when x is NaN. */
TVNNI void lpv__q8_minmax_avx512(float *lo, float *hi, const float *X, int ld, int K, int n) {
    int nv = n / 16;
    __mmask16 mt = (__mmask16)((1u << (n % 16)) - 1);
    for (int t = 0; t < n; t++) lo[t] = 0.0f, hi[t] = 0.0f;
    for (int k = 0; k < K; k++) {
        const float *x = X + (int64_t)k * ld;
        for (int v = 0; v < nv; v++) {
            __m512 xv = _mm512_loadu_ps(x + 16 * v);
            _mm512_storeu_ps(lo + 16 * v, _mm512_min_ps(xv, _mm512_loadu_ps(lo + 16 * v)));
            _mm512_storeu_ps(hi + 16 * v, _mm512_max_ps(xv, _mm512_loadu_ps(hi + 16 * v)));
        }
        if (mt) {
            __m512 xv = _mm512_maskz_loadu_ps(mt, x + 16 * nv);
            _mm512_mask_storeu_ps(lo + 16 * nv, mt, _mm512_min_ps(xv, _mm512_maskz_loadu_ps(mt, lo + 16 * nv)));
            _mm512_mask_storeu_ps(hi + 16 * nv, mt, _mm512_max_ps(xv, _mm512_maskz_loadu_ps(mt, hi + 16 * nv)));
        }
    }
}

/* ---- AVX2 ---- */


#define Q8_MR 2

/* The epilogue of bsr.h on the MR x NV tile's int32 sums (the tile's xa, xc: columns col.. of the group's). */
LPV_VINLINE T256 void epilogue_avx2(const lpv__tile *a, const lpv__bsr_group *g, __m256i acc[][6], const int NV) {
    const int64_t col = ((const q8_tile *)a)->col, ldy = a->ldy;
    const int masked = a->mask < 8;
    const __m256i m = lpv__lane_mask8((int)a->mask);
#pragma GCC unroll 4
    for (int i = 0; i < Q8_MR; i++) {
        if (i >= a->nrows) break;
        const int r = (int)(a->b - g->b8) + i; /* the tile's rows inside the group */
        __m256 ws = _mm256_set1_ps(g->ws8[r]), sum = _mm256_set1_ps(g->wsum8[r]), bv = _mm256_set1_ps(a->b[i]);
        float *y = a->Y + i * ldy;
#pragma GCC unroll 6
        for (int j = 0; j < NV; j++) {
            int mk = masked && j == NV - 1;
            __m256 xa = mk ? _mm256_maskload_ps(g->xa + col + 8 * j, m) : _mm256_loadu_ps(g->xa + col + 8 * j);
            __m256 xc = mk ? _mm256_maskload_ps(g->xc + col + 8 * j, m) : _mm256_loadu_ps(g->xc + col + 8 * j);
            __m256 v = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][j]), xa), _mm256_mul_ps(xc, sum));
            v = _mm256_add_ps(_mm256_mul_ps(v, ws), bv);
            if (a->init_y) v = _mm256_add_ps(v, mk ? _mm256_maskload_ps(y + 8 * j, m) : _mm256_loadu_ps(y + 8 * j));
            if (mk) _mm256_maskstore_ps(y + 8 * j, m, v);
            else _mm256_storeu_ps(y + 8 * j, v);
        }
    }
}

/* The k-quad step of one accumulator: acc += Σ_j x.byte[4l + j] · w.byte[j] per 32-bit lane l (x unsigned, w
 * signed). AVX2: lpv__dot4_u7 (vmath.h); AVX-VNNI: vpdpbusd. */
#define TAVXVNNI __attribute__((target("avx2,fma,avxvnni")))
LPV_VINLINE TAVXVNNI __m256i dot4_avxvnni(__m256i acc, __m256i x, __m256i w) { return _mm256_dpbusd_avx_epi32(acc, x, w); }

/* The Q8_MR x NV tile (NV = 1..6 vectors of 8 tokens) over the group's quad panel (Xp, zero-padded past the
 * tokens, so its loads need no mask; the last vector's Y columns are masked when a->mask < 8): per k-quad, Q8_MR
 * weight broadcasts (a quad line of packed_q8 holds the group's 8 rows) and NV loads feed Q8_MR·NV DOT4 steps.
 * 2 x 6 fills the 16 ymm registers (12 accumulators, 2 weights, x, the product); measured on Zen 4 for the
 * int16 kernel this replaced against 2 x 4 and 4 x 2 (slower: more loads and broadcasts a step) and 4 x 3
 * (spills). Defined once per instruction set (TARGET, DOT4) by Q8Y_KERNEL. */
/* One k-quad of the tile: Q8_MR weight broadcasts, NV panel loads, Q8_MR·NV DOT4 steps (xk, wk: the quad). */
#define Q8Y_STEP(DOT4)                                                                                                \
    {                                                                                                                 \
        __m256i wv[Q8_MR];                                                                                            \
        _Pragma("GCC unroll 4") for (int i = 0; i < Q8_MR; i++) wv[i] = _mm256_set1_epi32((int)wk[i]);                \
        _Pragma("GCC unroll 6") for (int j = 0; j < NV; j++) {                                                        \
            __m256i x = _mm256_loadu_si256((const __m256i *)(xk + 8 * j));                                            \
            _Pragma("GCC unroll 4") for (int i = 0; i < Q8_MR; i++) acc[i][j] = DOT4(acc[i][j], x, wv[i]);           \
        }                                                                                                             \
    }
#define Q8Y_KERNEL(SUF, TARGET, DOT4)                                                                                 \
    LPV_VINLINE TARGET void tile_##SUF(const lpv__tile *a, const lpv__bsr_group *g, const int NV) {                  \
        __m256i acc[Q8_MR][6];                                                                                        \
        _Pragma("GCC unroll 4") for (int i = 0; i < Q8_MR; i++) _Pragma("GCC unroll 6") for (int j = 0; j < NV; j++) \
            acc[i][j] = _mm256_setzero_si256();                                                                       \
        const int64_t ldx = a->ldx, ldy = a->ldy;                                                                     \
        const uint32_t *w = a->wp;                                                                                    \
        const int C = a->C;                                                                                           \
        /* the next row tile's Y (the group walks its row tiles in order, then the next group's) */                  \
        for (int i = Q8_MR; i < 2 * Q8_MR; i++)                                                                       \
            for (int j = 0; j < NV; j += 2) _mm_prefetch((const char *)(a->Y + i * ldy + 8 * j), _MM_HINT_T0);       \
        if (C == 32 && a->K % 32 == 0 && lpv__scattered(a->ci, a->nb)) {                                             \
            /* scattered whole 32-wide blocks, one at a time, 8 quads unrolled: no run to find and no trip count  \
             * that varies from run to run (their branches mispredict on a random mask); blocks that are all       \
             * adjacent (a dense row) keep the single run below */                                                   \
            const uint32_t *X0 = (const uint32_t *)a->X - (int64_t)(a->k0 / 4) * ldx;                                \
            for (int b = 0; b < a->nb; b++) {                                                                         \
                const uint32_t *xk = X0 + (int64_t)a->ci[b] * 8 * ldx, *wk = w + (int64_t)64 * b;                   \
                _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++, xk += ldx, wk += 8) {                             \
                    if (!(u & 1)) _mm_prefetch((const char *)(wk + 256), _MM_HINT_T0); /* a line: 2 quads */         \
                    Q8Y_STEP(DOT4)                                                                                    \
                }                                                                                                     \
            }                                                                                                         \
        } else                                                                                                        \
            /* runs of blocks in consecutive block columns (all of a dense row) are one loop: their [C/4][8] quads  \
             * and their panel rows follow each other (only a row's last block can be partial) */                    \
            for (int b = 0; b < a->nb;) {                                                                             \
                int c0 = a->ci[b] * C, e = b + 1;                                                                     \
                while (e < a->nb && a->ci[e] == a->ci[e - 1] + 1) e++;                                                \
                int c1 = a->ci[e - 1] * C + C < a->K ? a->ci[e - 1] * C + C : a->K, nq = (c1 - c0 + 3) / 4;           \
                const uint32_t *xk = (const uint32_t *)a->X + (int64_t)((c0 - a->k0) / 4) * ldx, *wk = w;             \
                w += (int64_t)2 * C * (e - b), b = e;                                                                 \
                _Pragma("GCC unroll 2") for (int k = 0; k < nq; k++, xk += ldx, wk += 8) {                            \
                    _mm_prefetch((const char *)(wk + 256), _MM_HINT_T0); /* weights come from L2 */                   \
                    Q8Y_STEP(DOT4)                                                                                    \
                }                                                                                                     \
            }                                                                                                         \
        epilogue_avx2(a, g, acc, NV);                                                                                 \
    }                                                                                                                 \
    __attribute__((noinline)) static TARGET void SUF##_1(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 1); } \
    __attribute__((noinline)) static TARGET void SUF##_2(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 2); } \
    __attribute__((noinline)) static TARGET void SUF##_3(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 3); } \
    __attribute__((noinline)) static TARGET void SUF##_4(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 4); } \
    __attribute__((noinline)) static TARGET void SUF##_5(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 5); } \
    __attribute__((noinline)) static TARGET void SUF##_6(const lpv__tile *a) { tile_##SUF(a, ((const q8_tile *)a)->g, 6); } \
    static const lpv__tile_fn SUF##_tiles[7] = {NULL, SUF##_1, SUF##_2, SUF##_3, SUF##_4, SUF##_5, SUF##_6};         \
    /* The group over its panel: 48-token positions, each as four row pairs. */                                       \
    TARGET void lpv__bsr_group_##SUF(const lpv__bsr_group *g) {                                                       \
        q8_tile q = {{NULL, NULL, g->ldx, g->ldy, g->k0, NULL, g->ci, g->nb, g->C, g->K, 0, g->init_y, NULL, 8, 0, 0}, g, 0}; \
        int c1 = 16 * g->v1 + g->tail;                                                                                \
        for (int c = 16 * g->v0; c < c1; c += 48) {                                                                   \
            int n = c1 - c < 48 ? c1 - c : 48, nv = (n + 7) / 8;                                                      \
            q.t.mask = (unsigned)(n - 8 * (nv - 1));                                                                  \
            lpv__tile_at(&q.t, g->Xp, g->xt0, g->Y, c);                                                               \
            q.col = c;                                                                                                \
            float *Yc = q.t.Y;                                                                                        \
            for (int p = 0; Q8_MR * p < g->nrows; p++) {                                                              \
                q.t.nrows = g->nrows - Q8_MR * p < Q8_MR ? g->nrows - Q8_MR * p : Q8_MR;                              \
                q.t.wp = g->wq + Q8_MR * p, q.t.b = g->b8 + Q8_MR * p, q.t.Y = Yc + (int64_t)Q8_MR * p * g->ldy;     \
                SUF##_tiles[nv](&q.t);                                                                                \
            }                                                                                                         \
        }                                                                                                             \
        if (g->gelu)                                                                                                  \
            lpv__gelu_rows8(g->Y + 16 * g->v0, g->ldy, g->nrows, (g->v1 - g->v0) * 16 + g->tail,                     \
                            g->cmin ? g->cmin + 16 * g->v0 : NULL, g->cmax ? g->cmax + 16 * g->v0 : NULL);            \
    }

Q8Y_KERNEL(q8_avx2, T256, lpv__dot4_u7)
Q8Y_KERNEL(q8_avxvnni, TAVXVNNI, dot4_avxvnni)

/* As lpv__q8_minmax_avx512: row by row. */
T256 void lpv__q8_minmax_avx2(float *lo, float *hi, const float *X, int ld, int K, int n) {
    int nv = n / 8;
    for (int t = 0; t < n; t++) lo[t] = 0.0f, hi[t] = 0.0f;
    for (int k = 0; k < K; k++) {
        const float *x = X + (int64_t)k * ld;
        for (int v = 0; v < nv; v++) {
            __m256 xv = _mm256_loadu_ps(x + 8 * v);
            _mm256_storeu_ps(lo + 8 * v, _mm256_min_ps(xv, _mm256_loadu_ps(lo + 8 * v)));
            _mm256_storeu_ps(hi + 8 * v, _mm256_max_ps(xv, _mm256_loadu_ps(hi + 8 * v)));
        }
        for (int t = 8 * nv; t < n; t++) {
            lo[t] = x[t] < lo[t] ? x[t] : lo[t];
            hi[t] = x[t] > hi[t] ? x[t] : hi[t];
        }
    }
}

T256 void lpv__q8_quantize_avx2(uint32_t *o, const float *inv_t, const float *zp_t, const float *X, int ld, int nk, int n,
                                 int levels) {
    const __m256 lo = _mm256_set1_ps(-512.0f), hi = _mm256_set1_ps(512.0f);
    const __m256i z = _mm256_setzero_si256(), top = _mm256_set1_epi32(levels);
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        __m256 inv = _mm256_loadu_ps(inv_t + t);
        __m256i zp = _mm256_cvtps_epi32(_mm256_loadu_ps(zp_t + t));
        __m256i word = z;
        for (int j = 0; j < nk; j++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(X + (int64_t)j * ld + t), inv);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            __m256i u = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
            u = _mm256_min_epi32(_mm256_max_epi32(u, z), top);
            word = _mm256_or_si256(word, _mm256_sllv_epi32(u, _mm256_set1_epi32(8 * j)));
        }
        _mm256_storeu_si256((__m256i *)(o + t), word);
    }
    for (; t < n; t++) { /* the scalar step 2 of bsr_q8.c */
        uint32_t word = 0;
        for (int j = 0; j < nk; j++) {
            float v = X[(int64_t)j * ld + t] * inv_t[t];
            v = fmaxf(v, -512.0f), v = fminf(v, 512.0f);
            int u = (int)nearbyintf(v) + (int)zp_t[t];
            u = u < 0 ? 0 : u > levels ? levels : u;
            word |= (uint32_t)u << (8 * j);
        }
        o[t] = word;
    }
}
