/*
 * bsr_avx2.c — AVX2+FMA BSR kernel and vector GELU/erf loops (dispatched from
 * bsr.c when lpv_isa_get() == LPV_ISA_AVX2; every function here carries the
 * AVX2 target attribute).
 *
 * Register tile: 4 output rows (half an 8-row group) × NV ymm token vectors
 * (NV = 1..3, up to 24 tokens): 4·NV accumulators of the 16 ymm registers,
 * 3 loads + 4 broadcasts per 12 FMAs. A group runs as two half-tiles reading
 * weights 0..3 and 4..7 of each packed [C][8] line. Same plan, chunks and
 * epilogue as the AVX-512 kernel; columns of a partial last vector use
 * vmaskmov (the plan's tail, only when round16(T) exceeds ld).
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T256 LPV_TARGET_AVX2

typedef struct {
    const float *X;   /* at the tile's first column */
    float *Y;         /* at the half-group's first row and the tile's first column */
    int64_t ldx, ldy;
    const float *wp;  /* the group's packed weights for the chunk's first block, + 4 for the upper half */
    const int32_t *ci;
    int nb;
    int C, K;
    int nrows;        /* valid rows of this half (0..4) */
    int init_y;
    const float *b4;  /* (4) bias per row */
} tile_args;

LPV_VINLINE T256 __m256 ld_v(const float *p, int masked, __m256i m) {
    return masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}

LPV_VINLINE T256 void st_v(float *p, __m256 v, int masked, __m256i m) {
    if (masked) _mm256_maskstore_ps(p, m, v);
    else _mm256_storeu_ps(p, v);
}

LPV_VINLINE T256 void tile(const tile_args *a, const int NV, const int MASKED, __m256i m) {
    __m256 acc[4][3];
    const int64_t ldx = a->ldx, ldy = a->ldy;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m256 bv = _mm256_set1_ps(a->b4[i]);
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
        const float *xk = a->X + (int64_t)c0 * ldx;
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

__attribute__((noinline)) static T256 void tile3(const tile_args *a) { tile(a, 3, 0, _mm256_setzero_si256()); }
__attribute__((noinline)) static T256 void tile2(const tile_args *a) { tile(a, 2, 0, _mm256_setzero_si256()); }
__attribute__((noinline)) static T256 void tile1(const tile_args *a) { tile(a, 1, 0, _mm256_setzero_si256()); }
__attribute__((noinline)) static T256 void tile1m(const tile_args *a, __m256i m) { tile(a, 1, 1, m); }

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

/* Tiles over ymm vectors [ua, ub) (all full) for one half-group. */
static T256 void run_vectors(tile_args *a, const float *X0, float *Y0, int ua, int ub) {
    int n = ub - ua, n3 = n / 3, r = n % 3, u = ua;
    if (r == 1 && n3 >= 1) {
        n3--;
        r = 4;
    }
    for (int q = 0; q < n3; q++, u += 3) {
        a->X = X0 + 8 * u;
        a->Y = Y0 + 8 * u;
        tile3(a);
    }
    for (; r >= 2; r -= 2, u += 2) {
        a->X = X0 + 8 * u;
        a->Y = Y0 + 8 * u;
        tile2(a);
    }
    if (r == 1) {
        a->X = X0 + 8 * u;
        a->Y = Y0 + 8 * u;
        tile1(a);
    }
}

T256 void lpv__bsr_part_avx2(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int epi,
                             const lpv__bsr_plan *p) {
    const int R = W->R, C = W->C, gpb = R / 8, ngran = W->ngran;
    const int acc_mode = (epi & LPV_EPI_ACC) != 0, gelu = (epi & LPV_EPI_GELU) != 0;
    static const float zeros[8];
    float b8[8];
    tile_args a;
    a.ldx = ldx;
    a.ldy = ldy;
    a.C = C;
    a.K = W->cols;
    for (int pv0 = p->v0; pv0 < p->v1; pv0 += p->panel_vec) {
        int pv1 = pv0 + p->panel_vec < p->v1 ? pv0 + p->panel_vec : p->v1;
        int has_tail = p->tail > 0 && pv1 > p->nvec_full;
        int full1 = has_tail ? pv1 - 1 : pv1;
        int ncols = (full1 - pv0) * 16 + (has_tail ? p->tail : 0);
        for (int gl = 0; gl < ngran; gl += p->chunk_gran) {
            int gh = gl + p->chunk_gran < ngran ? gl + p->chunk_gran : ngran;
            int first = gl == 0, last = gh == ngran;
            for (int g = p->g0; g < p->g1; g++) {
                int i = g / gpb, s = g % gpb;
                int32_t rp = W->row_ptr[i], nbt = W->row_ptr[i + 1] - rp;
                const int32_t *gp = W->gran_ptr + (int64_t)i * (ngran + 1);
                int32_t bs = gp[gl], be = gp[gh];
                if (!first && bs == be && !(last && gelu)) continue;
                int nrows = W->rows - 8 * g < 8 ? W->rows - 8 * g : 8;
                const float *wp = W->packed + (int64_t)rp * R * C + ((int64_t)s * nbt + (bs - rp)) * 8 * C;
                a.ci = W->col_idx + bs;
                a.nb = be - bs;
                a.init_y = !first || acc_mode;
                if (first && bias)
                    for (int r = 0; r < 8; r++) b8[r] = r < nrows ? bias[8 * g + r] : 0.0f;
                float *Yg = Y + (int64_t)8 * g * ldy;
                for (int h = 0; h < 2; h++) {
                    a.nrows = nrows - 4 * h < 0 ? 0 : (nrows - 4 * h > 4 ? 4 : nrows - 4 * h);
                    if (a.nrows == 0) break;
                    a.wp = wp + 4 * h;
                    a.b4 = (first && bias ? b8 : zeros) + 4 * h;
                    float *Yh = Yg + (int64_t)4 * h * ldy;
                    run_vectors(&a, X, Yh, 2 * pv0, 2 * full1);
                    for (int c = 16 * full1; has_tail && c < 16 * full1 + p->tail; c += 8) {
                        int n = 16 * full1 + p->tail - c;
                        a.X = X + c;
                        a.Y = Yh + c;
                        tile1m(&a, lane_mask(n > 8 ? 8 : n));
                    }
                }
                if (last && gelu) gelu_rows(Yg + 16 * pv0, ldy, nrows, ncols);
            }
        }
    }
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
