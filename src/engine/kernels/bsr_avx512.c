/*
 * bsr_avx512.c — AVX-512 BSR kernel and vector GELU/erf loops (dispatched from
 * bsr.c when lpv_isa_get() == LPV_ISA_AVX512; every function here carries the
 * AVX-512 target attribute, the rest of the build stays generic x86-64).
 *
 * Register tile: 8 output rows (one group) × NV token vectors (NV = 1..3, so
 * up to 48 tokens): 8·NV zmm accumulators. Per input column k the 8 weights
 * W[r][k] (contiguous in `packed`) are broadcast and each feeds NV FMAs with
 * the NV vectors of X[k][t..t+16·NV). With NV = 3: 24 accumulators, 3 loads +
 * 8 broadcasts per 24 FMAs, which keeps the two FMA pipes busy.
 * The accumulators start from the bias (and Y for ACC or a later K chunk), so
 * the epilogue is a store, plus GELU on the last chunk. The walk over panels,
 * chunks and groups is bsr.c's, shared with the AVX2 kernel.
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T512 LPV_TARGET_AVX512

/* Everything a tile needs besides its position. */

LPV_VINLINE T512 __m512 ld_v(const float *p, int masked, __mmask16 m) {
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}

LPV_VINLINE T512 void st_v(float *p, __m512 v, int masked, __mmask16 m) {
    if (masked) _mm512_mask_storeu_ps(p, m, v);
    else _mm512_storeu_ps(p, v);
}

/* The 8 × NV tile; NV and MASKED (last vector partial) are compile-time. */
LPV_VINLINE T512 void tile(const lpv__tile *a, const int NV, const int MASKED, __mmask16 m) {
    __m512 acc[8][3];
    const int64_t ldx = a->ldx, ldy = a->ldy;
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        __m512 bv = _mm512_set1_ps(a->b[i]);
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) {
            __m512 v = bv;
            if (a->init_y && i < a->nrows)
                v = _mm512_add_ps(v, ld_v(a->Y + i * ldy + 16 * j, MASKED && j == NV - 1, m));
            acc[i][j] = v;
        }
    }
    const float *w = a->wp;
    const int C = a->C;
    for (int b = 0; b < a->nb; b++, w += 8 * C) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < C ? a->K - c0 : C;
        const float *xk = a->X + (int64_t)c0 * ldx;
        const float *wk = w;
#pragma GCC unroll 2
        for (int k = 0; k < kn; k++, xk += ldx, wk += 8) {
            __m512 x[3];
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) x[j] = ld_v(xk + 16 * j, MASKED && j == NV - 1, m);
            /* X of the group's next tile (same rows, next 16·NV columns): it is
             * this tile's successor, or the first tile of the next panel, whose
             * rows would otherwise come from L3 at every block's jump */
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) _mm_prefetch((const char *)(xk + 16 * NV + 16 * j), _MM_HINT_T1);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 wv = _mm512_set1_ps(wk[i]);
#pragma GCC unroll 3
                for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(wv, x[j], acc[i][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        if (i < a->nrows)
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) st_v(a->Y + i * ldy + 16 * j, acc[i][j], MASKED && j == NV - 1, m);
}

__attribute__((noinline)) static T512 void tile3(const lpv__tile *a) { tile(a, 3, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile2(const lpv__tile *a) { tile(a, 2, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile1(const lpv__tile *a) { tile(a, 1, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile1m(const lpv__tile *a, __mmask16 m) { tile(a, 1, 1, m); }

/* GELU in place on nrows × ncols of Y (row stride ldy). */
static T512 void gelu_rows(float *Y, int64_t ldy, int nrows, int ncols) {
    for (int i = 0; i < nrows; i++) {
        float *y = Y + i * ldy;
        int c = 0;
        for (; c + 16 <= ncols; c += 16) _mm512_storeu_ps(y + c, lpv__gelu16(_mm512_loadu_ps(y + c)));
        if (c < ncols) {
            __mmask16 m = (__mmask16)((1u << (ncols - c)) - 1);
            _mm512_mask_storeu_ps(y + c, m, lpv__gelu16(_mm512_maskz_loadu_ps(m, y + c)));
        }
    }
}

T512 void lpv__bsr_group_avx512(const lpv__bsr_group *g) {
    lpv__tile a = {NULL, NULL, g->ldx, g->ldy, g->wp, g->ci, g->nb, g->C, g->K, g->nrows, g->init_y, g->b8};
    lpv__run_tiles(&a, g->X, g->Y, g->v0, g->v1, 16, tile3, tile2, tile1);
    if (g->tail) {
        a.X = g->X + 16 * g->v1;
        a.Y = g->Y + 16 * g->v1;
        tile1m(&a, (__mmask16)((1u << g->tail) - 1));
    }
    if (g->gelu) gelu_rows(g->Y + 16 * g->v0, g->ldy, g->nrows, (g->v1 - g->v0) * 16 + g->tail);
}

T512 void lpv__vgelu_avx512(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, lpv__gelu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, lpv__gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

T512 void lpv__verf_avx512(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, lpv__erf16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, lpv__erf16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
