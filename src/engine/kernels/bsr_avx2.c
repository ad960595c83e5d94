/*
 * bsr_avx2.c — AVX2+FMA BSR kernel and vector GELU/erf loops (dispatched from
 * bsr.c when lpv_isa_get() == LPV_ISA_AVX2; every function here carries the
 * AVX2 target attribute).
 *
 * Register tile: 4 output rows (half an 8-row group) × NV ymm token vectors
 * (NV = 1..3, up to 24 tokens): 4·NV accumulators of the 16 ymm registers,
 * 3 loads + 4 broadcasts per 12 FMAs. A group runs as two half-tiles reading
 * weights 0..3 and 4..7 of each packed [C][8] line. The plan and the walk
 * over panels, chunks and groups are bsr.c's, shared with the AVX-512 kernel;
 * columns of a partial last vector use vmaskmov (the plan's tail, only when
 * round16(T) exceeds ld).
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T256 LPV_TARGET_AVX2

LPV_VINLINE T256 __m256 ld_v(const float *p, int masked, __m256i m) {
    return masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}

LPV_VINLINE T256 void st_v(float *p, __m256 v, int masked, __m256i m) {
    if (masked) _mm256_maskstore_ps(p, m, v);
    else _mm256_storeu_ps(p, v);
}

LPV_VINLINE T256 void tile(const lpv__tile *a, const int NV, const int MASKED, __m256i m) {
    __m256 acc[4][3];
    const int64_t ldx = a->ldx, ldy = a->ldy;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m256 bv = _mm256_set1_ps(a->b[i]);
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) {
            __m256 v = bv;
            if (a->init_y && i < a->nrows) v = _mm256_add_ps(v, ld_v(a->Y + i * ldy + 8 * j, MASKED && j == NV - 1, m));
            acc[i][j] = v;
        }
    }
    const float *w = a->wp;
    const int C = a->C;
    for (int b = 0; b < a->nb; b++, w += 8 * C) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < C ? a->K - c0 : C;
        const float *xk = (const float *)a->X + (int64_t)c0 * ldx;
        const float *wk = w;
#pragma GCC unroll 2
        for (int k = 0; k < kn; k++, xk += ldx, wk += 8) {
            __m256 x[3];
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) x[j] = ld_v(xk + 8 * j, MASKED && j == NV - 1, m);
            /* X of the next tile (see bsr_avx512.c) */
            _mm_prefetch((const char *)(xk + 8 * NV), _MM_HINT_T1);
            if (NV > 1) _mm_prefetch((const char *)(xk + 8 * NV + 16), _MM_HINT_T1);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                __m256 wv = _mm256_broadcast_ss(wk + i);
#pragma GCC unroll 3
                for (int j = 0; j < NV; j++) acc[i][j] = _mm256_fmadd_ps(wv, x[j], acc[i][j]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        if (i < a->nrows)
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) st_v(a->Y + i * ldy + 8 * j, acc[i][j], MASKED && j == NV - 1, m);
}

__attribute__((noinline)) static T256 void tile3(const lpv__tile *a) { tile(a, 3, 0, _mm256_setzero_si256()); }
__attribute__((noinline)) static T256 void tile2(const lpv__tile *a) { tile(a, 2, 0, _mm256_setzero_si256()); }
__attribute__((noinline)) static T256 void tile1(const lpv__tile *a) { tile(a, 1, 0, _mm256_setzero_si256()); }
static T256 __m256i lane_mask(int n);
__attribute__((noinline)) static T256 void tile1m(const lpv__tile *a) { tile(a, 1, 1, lane_mask((int)a->mask)); }

static T256 __m256i lane_mask(int n) { /* first n (0..8) lanes */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static T256 void gelu_rows(float *Y, int64_t ldy, int nrows, int ncols) {
    for (int i = 0; i < nrows; i++) {
        float *y = Y + i * ldy;
        int c = 0;
        for (; c + 8 <= ncols; c += 8) _mm256_storeu_ps(y + c, lpv__gelu8(_mm256_loadu_ps(y + c)));
        if (c < ncols) {
            __m256i m = lane_mask(ncols - c);
            _mm256_maskstore_ps(y + c, m, lpv__gelu8(_mm256_maskload_ps(y + c, m)));
        }
    }
}

/* The group runs as two half-tiles, rows 0..3 and 4..7, reading weights 0..3 and 4..7 of each packed line. */
T256 void lpv__bsr_group_avx2(const lpv__bsr_group *g) {
    lpv__tile a = {NULL, NULL, g->ldx, g->ldy, NULL, g->ci, g->nb, g->C, g->K, 0, g->init_y, NULL, 0};
    for (int h = 0; h < 2; h++) {
        a.nrows = g->nrows - 4 * h < 0 ? 0 : (g->nrows - 4 * h > 4 ? 4 : g->nrows - 4 * h);
        if (a.nrows == 0) break;
        a.wp = g->wp + 4 * h;
        a.b = g->b8 + 4 * h;
        float *Yh = g->Y + (int64_t)4 * h * g->ldy;
        lpv__run_tiles(&a, g->X, Yh, 2 * g->v0, 2 * g->v1, 8, tile3, tile2, tile1);
        for (int c = 16 * g->v1; g->tail && c < 16 * g->v1 + g->tail; c += 8) {
            int n = 16 * g->v1 + g->tail - c;
            lpv__tile_at(&a, g->X, Yh, c);
            a.mask = n > 8 ? 8 : (unsigned)n; /* lanes */
            tile1m(&a);
        }
    }
    if (g->gelu) gelu_rows(g->Y + 16 * g->v0, g->ldy, g->nrows, (g->v1 - g->v0) * 16 + g->tail);
}

T256 void lpv__vgelu_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, lpv__gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = lane_mask((int)(n - i));
        _mm256_maskstore_ps(x + i, m, lpv__gelu8(_mm256_maskload_ps(x + i, m)));
    }
}

T256 void lpv__verf_avx2(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, lpv__erf8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = lane_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, m, lpv__erf8(_mm256_maskload_ps(x + i, m)));
    }
}
