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
 * the epilogue is a store, plus GELU on the last chunk.
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T512 LPV_TARGET_AVX512

/* Everything a tile needs besides its position. */
typedef struct {
    const float *X;   /* at the tile's first column */
    float *Y;         /* at the group's first row and the tile's first column */
    int64_t ldx, ldy;
    const float *wp;  /* the group's packed weights for the chunk's first block */
    const int32_t *ci;/* col_idx of that block */
    int nb;           /* blocks in the chunk */
    int C, K;
    int nrows;        /* valid rows of the group (<= 8) */
    int init_y;       /* start from Y (ACC, or a K chunk after the first) */
    const float *b8;  /* (8) bias per row, zeros when none or not the first chunk */
} tile_args;

LPV_VINLINE T512 __m512 ld_v(const float *p, int masked, __mmask16 m) {
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}

LPV_VINLINE T512 void st_v(float *p, __m512 v, int masked, __mmask16 m) {
    if (masked) _mm512_mask_storeu_ps(p, m, v);
    else _mm512_storeu_ps(p, v);
}

/* The 8 × NV tile; NV and MASKED (last vector partial) are compile-time. */
LPV_VINLINE T512 void tile(const tile_args *a, const int NV, const int MASKED, __mmask16 m) {
    __m512 acc[8][3];
    const int64_t ldx = a->ldx, ldy = a->ldy;
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        __m512 bv = _mm512_set1_ps(a->b8[i]);
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

__attribute__((noinline)) static T512 void tile3(const tile_args *a) { tile(a, 3, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile2(const tile_args *a) { tile(a, 2, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile1(const tile_args *a) { tile(a, 1, 0, 0xffff); }
__attribute__((noinline)) static T512 void tile1m(const tile_args *a, __mmask16 m) { tile(a, 1, 1, m); }

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

/* Runs the tiles of vectors [va, vb) (all full) for one group and chunk. */
static T512 void run_vectors(tile_args *a, const float *X0, float *Y0, int va, int vb) {
    int n = vb - va, n3 = n / 3, r = n % 3, v = va;
    if (r == 1 && n3 >= 1) { /* 3 + 1 -> 2 + 2 */
        n3--;
        r = 4;
    }
    for (int q = 0; q < n3; q++, v += 3) {
        a->X = X0 + 16 * v;
        a->Y = Y0 + 16 * v;
        tile3(a);
    }
    for (; r >= 2; r -= 2, v += 2) {
        a->X = X0 + 16 * v;
        a->Y = Y0 + 16 * v;
        tile2(a);
    }
    if (r == 1) {
        a->X = X0 + 16 * v;
        a->Y = Y0 + 16 * v;
        tile1(a);
    }
}

T512 void lpv__bsr_part_avx512(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int epi,
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
        int has_tail = p->tail > 0 && pv1 > p->nvec_full; /* then vector pv1 - 1 is the partial one */
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
                a.nrows = W->rows - 8 * g < 8 ? W->rows - 8 * g : 8;
                a.wp = W->packed + (int64_t)rp * R * C + ((int64_t)s * nbt + (bs - rp)) * 8 * C;
                a.ci = W->col_idx + bs;
                a.nb = be - bs;
                a.init_y = !first || acc_mode;
                if (first && bias) {
                    for (int r = 0; r < 8; r++) b8[r] = r < a.nrows ? bias[8 * g + r] : 0.0f;
                    a.b8 = b8;
                } else {
                    a.b8 = zeros;
                }
                float *Yg = Y + (int64_t)8 * g * ldy;
                run_vectors(&a, X, Yg, pv0, full1);
                if (has_tail) {
                    a.X = X + 16 * full1;
                    a.Y = Yg + 16 * full1;
                    tile1m(&a, (__mmask16)((1u << p->tail) - 1));
                }
                if (last && gelu) gelu_rows(Yg + 16 * pv0, ldy, a.nrows, ncols);
            }
        }
    }
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
