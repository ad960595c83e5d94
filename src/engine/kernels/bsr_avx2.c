/*
 * bsr_avx2.c — AVX2+FMA BSR kernel and vector GELU/erf loops (dispatched from
 * bsr.c when lpv_isa_fp32(lpv_isa_get()) == LPV_ISA_AVX2 (avx2, avxvnni); every function here carries the
 * AVX2 target attribute).
 *
 * The AVX2 walk is bsr.c's x_in_l1 order: X arrives as a packed panel (the K
 * chunk's rows of at most a few 16-token vectors, contiguous, zero-padded to
 * whole vectors), which stays in L1 while every group of a row block runs over
 * it; the weights stream from L2 (prefetched a kilobyte ahead).
 *
 * Register tile: 2 output rows × NV ymm token vectors (NV = 1..6, up to 48
 * tokens): 2·NV accumulators, NV loads + 2 broadcasts per 2·NV FMAs. Two rows
 * rather than four keep the broadcasts (which take a shuffle slot beside the
 * FMAs on AMD) at one per six FMAs, as in the AVX-512 tile; X comes from L1,
 * so its extra loads are cheap. A group runs as four row pairs reading weights
 * 2p, 2p + 1 of each packed [C][8] line. Only Y's partial last vector is
 * masked (the panel's X is padded).
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T256 LPV_TARGET_AVX2

LPV_VINLINE T256 __m256 ld_y(const float *p, int masked, __m256i m) {
    return masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}

LPV_VINLINE T256 void st_y(float *p, __m256 v, int masked, __m256i m) {
    if (masked) _mm256_maskstore_ps(p, m, v);
    else _mm256_storeu_ps(p, v);
}

/* One k-step: rows 0, 1 (weights wk[0], wk[1]) times NV vectors of X row xk. */
LPV_VINLINE T256 void step(__m256 acc[2][6], const float *wk, const float *xk, const int NV) {
    __m256 w0 = _mm256_broadcast_ss(wk), w1 = _mm256_broadcast_ss(wk + 1);
#pragma GCC unroll 6
    for (int j = 0; j < NV; j++) {
        __m256 x = _mm256_loadu_ps(xk + 8 * j);
        acc[0][j] = _mm256_fmadd_ps(w0, x, acc[0][j]);
        acc[1][j] = _mm256_fmadd_ps(w1, x, acc[1][j]);
    }
}

/* The 2 × NV tile over packed X; the last vector's Y columns are masked when a->mask < 8 (lanes). */
LPV_VINLINE T256 void tile(const lpv__tile *a, const int NV) {
    __m256 acc[2][6];
    const int64_t ldx = a->ldx, ldy = a->ldy;
    const int masked = a->mask < 8;
    const __m256i m = lpv__lane_mask8((int)a->mask);
    /* the next row pair's accumulators (the group walks its row pairs in order, then the next group's): Y
     * comes from L3 once per K chunk, and its misses at the start of every call cost ~10 % */
    for (int i = 2; i < 4; i++)
        for (int j = 0; j < NV; j += 2) _mm_prefetch((const char *)(a->Y + i * ldy + 8 * j), _MM_HINT_T0);
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        __m256 bv = _mm256_set1_ps(a->b[i]);
#pragma GCC unroll 6
        for (int j = 0; j < NV; j++) {
            __m256 v = bv;
            if (a->init_y && i < a->nrows) v = _mm256_add_ps(v, ld_y(a->Y + i * ldy + 8 * j, masked && j == NV - 1, m));
            acc[i][j] = v;
        }
    }
    const float *wk = a->wp;
    const int C = a->C;
    for (int b = 0; b < a->nb; b++) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < C ? a->K - c0 : C;
        const float *xk = (const float *)a->X + (int64_t)(c0 - a->k0) * ldx;
#pragma GCC unroll 2
        for (int k = 0; k < kn; k++, xk += ldx, wk += 8) {
            _mm_prefetch((const char *)(wk + 256), _MM_HINT_T0); /* weights come from L2 */
            step(acc, wk, xk, NV);
        }
        wk += (int64_t)8 * (C - kn); /* a partial last block keeps its full packed size */
    }
    /* GELU on the registers, not as a pass over the group's rows afterwards (that pass re-read 8 rows x the
     * panel from L2): the same lpv__gelu8 on the same sums, so the same bits */
    if (a->gelu)
#pragma GCC unroll 2
        for (int i = 0; i < 2; i++)
#pragma GCC unroll 6
            for (int j = 0; j < NV; j++) acc[i][j] = lpv__gelu8(acc[i][j]);
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        if (i < a->nrows)
#pragma GCC unroll 6
            for (int j = 0; j < NV; j++) st_y(a->Y + i * ldy + 8 * j, acc[i][j], masked && j == NV - 1, m);
}

#define TILE_FN(n) \
    __attribute__((noinline)) static T256 void tile##n(const lpv__tile *a) { tile(a, n); }
TILE_FN(1)
TILE_FN(2)
TILE_FN(3)
TILE_FN(4)
TILE_FN(5)
TILE_FN(6)
static const lpv__tile_fn tiles[7] = {NULL, tile1, tile2, tile3, tile4, tile5, tile6};

/* The group over its panel: 48-token positions, each run as four row pairs (rows 2p, 2p + 1). */
T256 void lpv__bsr_group_avx2(const lpv__bsr_group *g) {
    lpv__tile a = {NULL, NULL, g->ldx, g->ldy, g->k0, NULL, g->ci, g->nb, g->C, g->K, 0, g->init_y, NULL, 8, g->gelu};
    int c1 = 16 * g->v1 + g->tail; /* one past the last valid token */
    for (int c = 16 * g->v0; c < c1; c += 48) {
        int n = c1 - c < 48 ? c1 - c : 48, nv = (n + 7) / 8;
        a.mask = (unsigned)(n - 8 * (nv - 1)); /* valid lanes of the last vector */
        lpv__tile_at(&a, g->X, g->xt0, g->Y, c);
        float *Yc = a.Y;
        for (int p = 0; 2 * p < g->nrows; p++) {
            a.nrows = g->nrows - 2 * p < 2 ? g->nrows - 2 * p : 2;
            a.wp = g->wp + 2 * p, a.b = g->b8 + 2 * p, a.Y = Yc + (int64_t)2 * p * g->ldy;
            tiles[nv](&a);
        }
    }
}

T256 void lpv__vgelu_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, lpv__gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = lpv__lane_mask8((int)(n - i));
        _mm256_maskstore_ps(x + i, m, lpv__gelu8(_mm256_maskload_ps(x + i, m)));
    }
}

T256 void lpv__verf_avx2(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, lpv__erf8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = lpv__lane_mask8((int)(n - i));
        _mm256_maskstore_ps(y + i, m, lpv__erf8(_mm256_maskload_ps(x + i, m)));
    }
}
