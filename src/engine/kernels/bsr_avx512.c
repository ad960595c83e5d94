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
 *
 * Each k-step also prefetches into L2, one of two things (lpv__bsr_tune.avx512_pf, per blocking profile; an
 * instantiation each, so the hot loop reads no knob; and one each for groups of scattered blocks, whose k-steps
 * also prefetch the next block's X, tile_k):
 *  - LPV_PF_NEXT_X (zen = Zen 4, intel): the group's next tile's X, which otherwise comes from L3 at every
 *    block's jump into a new row;
 *  - LPV_PF_NEXT_W (zen5): a line of the next group's weights. On Zen 5 (full-width AVX-512, 2 x 512-bit
 *    FMA a cycle) the group's first tile otherwise waits on its weights from L3 or memory, and the X prefetch
 *    costs more than it saves: DeiT-B, 2 threads, dense 97-120 -> 85-97 ms/image at batch 8, 112-140 ->
 *    86-98 at batch 1 (docs/benchmarks.md#on-amd-zen-5).
 *
 * The BF16 tile (avx512bf16) is the same tile on BF16 pairs: vdpbf16ps does
 * two input columns per instruction, so the FP32 rate doubles (Zen 4: 117 vs
 * 234 GFLOP/s per core, register-only loops). Its functions carry the
 * avx512bf16 target; only lpv_isa_get() >= LPV_ISA_AVX512BF16 calls them.
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

#define T512 LPV_TARGET_AVX512
#define T512BF LPV_TARGET_AVX512BF16

LPV_VINLINE T512 __m512 ld_v(const float *p, int masked, __mmask16 m) {
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}

LPV_VINLINE T512 void st_v(float *p, __m512 v, int masked, __mmask16 m) {
    if (masked) _mm512_mask_storeu_ps(p, m, v);
    else _mm512_storeu_ps(p, v);
}

/* The accumulators of an 8 x NV tile start from the bias, plus Y when accumulating. */
LPV_VINLINE T512 void tile_init(__m512 acc[8][3], const lpv__tile *a, const int NV, const int MASKED, __mmask16 m) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        __m512 bv = _mm512_set1_ps(a->b[i]);
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) {
            __m512 v = bv;
            if (a->init_y && i < a->nrows)
                v = _mm512_add_ps(v, ld_v(a->Y + i * a->ldy + 16 * j, MASKED && j == NV - 1, m));
            acc[i][j] = v;
        }
    }
}

LPV_VINLINE T512 void tile_store(__m512 acc[8][3], const lpv__tile *a, const int NV, const int MASKED, __mmask16 m) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        if (i < a->nrows)
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) st_v(a->Y + i * a->ldy + 16 * j, acc[i][j], MASKED && j == NV - 1, m);
}

/* The k-steps of the 8 × NV tile over its blocks. BPF (a group of scattered blocks): each k-step also asks for
 * the same row of the next block's X into L1 (lpv__prefetch_row_l1), as the int8 tile does. Zen 5, 2 threads,
 * T = 1576, d = 0.5 (bench_bsr_kernel --model B, 3 alternating rounds), the four products' sum: FP32 7-10 % faster at 32x32 (1.70-1.73x -> 1.85-1.92x the d = 1 time) and
 * 7 % at 16x16; BF16 11 % at 16x16, unchanged at 32x32; T = 197 unchanged. A group of adjacent blocks (dense
 * rows) runs the tiles without it (the hardware streams those), as separate functions: with both loops in one
 * function the dense BF16 and 16x16 FP32 products ran 5 % slower. */
LPV_VINLINE T512 void tile_k(__m512 acc[8][3], const lpv__tile *a, const int NV, const int MASKED, __mmask16 m,
                             const int PF, const int BPF) {
    const int64_t ldx = a->ldx;
    const float *w = a->wp, *X = a->X;
    const int C = a->C;
    for (int b = 0; b < a->nb; b++, w += 8 * C) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < C ? a->K - c0 : C;
        const float *xk = X + (int64_t)(c0 - a->k0) * ldx;
        const float *xn = BPF ? X + (int64_t)(lpv__next_ci(a->ci, a->nb, b) * C - a->k0) * ldx : NULL;
        const float *wk = w;
#pragma GCC unroll 2
        for (int k = 0; k < kn; k++, xk += ldx, wk += 8) {
            __m512 x[3];
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) x[j] = ld_v(xk + 16 * j, MASKED && j == NV - 1, m);
            lpv__prefetch_step(PF, xk + 16 * NV, NV, wk + a->wnext);
            if (BPF) lpv__prefetch_row_l1(xn, NV), xn += ldx;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 wv = _mm512_set1_ps(wk[i]);
#pragma GCC unroll 3
                for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(wv, x[j], acc[i][j]);
            }
        }
    }
}

/* The 8 × NV tile; NV, MASKED (last vector partial), PF (what it prefetches) and BPF are compile-time. */
LPV_VINLINE T512 void tile(const lpv__tile *a, const int NV, const int MASKED, __mmask16 m, const int PF,
                           const int BPF) {
    __m512 acc[8][3];
    tile_init(acc, a, NV, MASKED, m);
    tile_k(acc, a, NV, MASKED, m, PF, BPF);
    tile_store(acc, a, NV, MASKED, m);
}

/* One instantiation of the tiles for a (PF, BPF): 3, 2 and 1 vectors, and 1 masked. Separate functions, so a
 * dense group's tiles run the same code whether or not the scattered ones prefetch. */
typedef struct {
    lpv__tile_fn t3, t2, t1, t1m;
} tile_set;

#define TILE_SET(name, T, tile, PF, BPF)                                                                       \
    __attribute__((noinline)) static T void name##_3(const lpv__tile *a) { tile(a, 3, 0, 0xffff, PF, BPF); } \
    __attribute__((noinline)) static T void name##_2(const lpv__tile *a) { tile(a, 2, 0, 0xffff, PF, BPF); } \
    __attribute__((noinline)) static T void name##_1(const lpv__tile *a) { tile(a, 1, 0, 0xffff, PF, BPF); } \
    __attribute__((noinline)) static T void name##_1m(const lpv__tile *a) {                                 \
        tile(a, 1, 1, (__mmask16)a->mask, PF, BPF);                                                         \
    }                                                                                                       \
    static const tile_set name = {name##_3, name##_2, name##_1, name##_1m};
TILE_SET(fp32_x, T512, tile, LPV_PF_NEXT_X, 0)
TILE_SET(fp32_x_scat, T512, tile, LPV_PF_NEXT_X, 1)
TILE_SET(fp32_w, T512, tile, LPV_PF_NEXT_W, 0)
TILE_SET(fp32_w_scat, T512, tile, LPV_PF_NEXT_W, 1)

/* The BF16 tile: the same walk, one K pair per step. X holds pairs (bf16(x[k]) | bf16(x[k+1]) << 16 per
 * token), the weights pairs per row; vdpbf16ps adds w[k]·x[k] + w[k+1]·x[k+1] into each FP32 lane, so a
 * step does twice an FP32 step's work for the same instructions. */
LPV_VINLINE T512BF void tile_k_bf16(__m512 acc[8][3], const lpv__tile *a, const int NV, const int MASKED, __mmask16 m,
                                    const int PF, const int BPF) {
    const int64_t ldx = a->ldx;
    const uint32_t *w = a->wp, *X = a->X;
    const int C = a->C;
    for (int b = 0; b < a->nb; b++, w += 4 * C) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < C ? a->K - c0 : C, np = (kn + 1) / 2;
        const uint32_t *xk = X + (int64_t)((c0 - a->k0) / 2) * ldx;
        const uint32_t *xn = BPF ? X + (int64_t)((lpv__next_ci(a->ci, a->nb, b) * C - a->k0) / 2) * ldx : NULL;
        const uint32_t *wk = w;
#pragma GCC unroll 2
        for (int k = 0; k < np; k++, xk += ldx, wk += 8) {
            __m512bh x[3];
#pragma GCC unroll 3
            for (int j = 0; j < NV; j++) x[j] = (__m512bh)ld_v((const float *)(xk + 16 * j), MASKED && j == NV - 1, m);
            lpv__prefetch_step(PF, xk + 16 * NV, NV, wk + a->wnext);
            if (BPF) lpv__prefetch_row_l1(xn, NV), xn += ldx;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512bh wv = (__m512bh)_mm512_set1_epi32((int)wk[i]);
#pragma GCC unroll 3
                for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, x[j]);
            }
        }
    }
}

LPV_VINLINE T512BF void tile_bf16(const lpv__tile *a, const int NV, const int MASKED, __mmask16 m, const int PF,
                                  const int BPF) {
    __m512 acc[8][3];
    tile_init(acc, a, NV, MASKED, m);
    tile_k_bf16(acc, a, NV, MASKED, m, PF, BPF);
    tile_store(acc, a, NV, MASKED, m);
}

TILE_SET(bf16_x, T512BF, tile_bf16, LPV_PF_NEXT_X, 0)
TILE_SET(bf16_x_scat, T512BF, tile_bf16, LPV_PF_NEXT_X, 1)
TILE_SET(bf16_w, T512BF, tile_bf16, LPV_PF_NEXT_W, 0)
TILE_SET(bf16_w_scat, T512BF, tile_bf16, LPV_PF_NEXT_W, 1)
#undef TILE_SET

/* One group over the panel's full vectors, the partial one, then GELU: the same for both precisions. wdiv:
 * floats of packed per weight element of wp (FP32 1, BF16 pairs 2). */
LPV_VINLINE T512 void group(const lpv__bsr_group *g, const void *X, const void *wp, int wdiv, const tile_set *t) {
    lpv__tile a = {NULL, NULL, g->ldx, g->ldy, g->k0, wp, g->ci, g->nb, g->C, g->K, g->nrows, g->init_y, g->b8, 0, 0,
                   g->wnext / wdiv};
    lpv__run_tiles(&a, X, g->xt0, g->Y, g->v0, g->v1, 16, t->t3, t->t2, t->t1);
    if (g->tail) {
        lpv__tile_at(&a, X, g->xt0, g->Y, 16 * g->v1);
        a.mask = (1u << g->tail) - 1;
        t->t1m(&a);
    }
    if (g->gelu) lpv__gelu_rows16(g->Y + 16 * g->v0, g->ldy, g->nrows, (g->v1 - g->v0) * 16 + g->tail, NULL, NULL);
}

/* [prefetch of the profile: 0 next X, 1 next weights][scattered blocks] */
static const tile_set *const FP32_TILES[2][2] = {{&fp32_x, &fp32_x_scat}, {&fp32_w, &fp32_w_scat}};
static const tile_set *const BF16_TILES[2][2] = {{&bf16_x, &bf16_x_scat}, {&bf16_w, &bf16_w_scat}};

T512 void lpv__bsr_group_avx512(const lpv__bsr_group *g) {
    group(g, g->X, g->wp, 1, FP32_TILES[lpv__bsr_tune.avx512_pf == LPV_PF_NEXT_W][lpv__scattered(g->ci, g->nb)]);
}

T512 void lpv__bsr_group_avx512bf16(const lpv__bsr_group *g) {
    group(g, g->X2, g->wp2, 2, BF16_TILES[lpv__bsr_tune.avx512_pf == LPV_PF_NEXT_W][lpv__scattered(g->ci, g->nb)]);
}

/* Round to nearest even into the high 16 bits (NaN: a quiet NaN, never an Inf or a sign flip). */
LPV_VINLINE T512 __m512i bf16_hi(__m512 x) {
    __m512i b = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), odd);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, b, _mm512_set1_epi32(0x00400000));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
}

T512 void lpv__bf16_pack_x_avx512(uint32_t *X2, const float *X, int ld, int K, int ncols) {
    for (int p = 0; p < (K + 1) / 2; p++) {
        const float *x0 = X + (int64_t)(2 * p) * ld, *x1 = 2 * p + 1 < K ? x0 + ld : NULL;
        uint32_t *o = X2 + (int64_t)p * ld;
        for (int t = 0; t < ncols; t += 16) {
            __mmask16 m = ncols - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (ncols - t)) - 1);
            __m512i lo = _mm512_srli_epi32(bf16_hi(_mm512_maskz_loadu_ps(m, x0 + t)), 16);
            __m512i hi = x1 ? bf16_hi(_mm512_maskz_loadu_ps(m, x1 + t)) : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32(o + t, m, _mm512_or_si512(lo, hi));
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
