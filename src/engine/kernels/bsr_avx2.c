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
 * Register tiles (lpv__bsr_tune.avx2_rows, per blocking profile):
 *  - zen: 2 output rows × NV ymm token vectors (NV = 1..6, up to 48 tokens): 2·NV accumulators, NV loads + 2
 *    broadcasts per 2·NV FMAs. Two rows rather than four keep the broadcasts (which take a shuffle slot beside
 *    the FMAs on AMD) at one per six FMAs, as in the AVX-512 tile. A group runs as four row pairs reading
 *    weights 2p, 2p + 1 of each packed [C][8] line.
 *  - intel: 4 rows × NV = 1..3 vectors (24 tokens): 3 loads + 4 broadcasts per 12 FMAs, X held in registers.
 *    On the Xeon the 2 × 6 tile topped out at ~82 % of the AVX2 peak on L1-resident data; the 4 × 3 one,
 *    whose full-width loop is in assembly (kloop4x3_asm), reaches ~92 %. A group runs as two row quads per
 *    24-token position.
 * X comes from L1, so the loads are cheap. Only Y's partial last vector is masked (the panel's X is padded).
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
LPV_VINLINE T256 void step(__m256 acc[4][6], const float *wk, const float *xk, const int NV) {
    __m256 w0 = _mm256_broadcast_ss(wk), w1 = _mm256_broadcast_ss(wk + 1);
#pragma GCC unroll 6
    for (int j = 0; j < NV; j++) {
        __m256 x = _mm256_loadu_ps(xk + 8 * j);
        acc[0][j] = _mm256_fmadd_ps(w0, x, acc[0][j]);
        acc[1][j] = _mm256_fmadd_ps(w1, x, acc[1][j]);
    }
}

/* One k-step of the 4-row tile: the NV vectors of X row xk held, one broadcast at a time (12 + 3 + 1
 * registers at NV = 3). */
LPV_VINLINE T256 void step4(__m256 acc[4][6], const float *wk, const float *xk, const int NV) {
    __m256 x[3];
#pragma GCC unroll 3
    for (int j = 0; j < NV; j++) x[j] = _mm256_loadu_ps(xk + 8 * j);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m256 w = _mm256_broadcast_ss(wk + i);
#pragma GCC unroll 3
        for (int j = 0; j < NV; j++) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
    }
}

/* n4 trips of four k-steps of the 4 x 3 tile, in assembly: it needs all 16 ymm registers, and GCC, given the
 * same loop in intrinsics, re-loaded X from memory and rotated the accumulators through the broadcast
 * register (78 against 88 GFLOP/s a core on L1-resident data, Xeon). Four steps a trip since the loop's own
 * integer ops share ports 0 and 1 with the FMAs. X rows xk + j·ldx; weights wk[8j + i] for row i. */
#define K4_STEP(xo, wo)                                                                                         \
    "vmovups " xo ", %%ymm12\n\t"                                                                               \
    "vmovups 32" xo ", %%ymm13\n\t"                                                                            \
    "vmovups 64" xo ", %%ymm14\n\t"                                                                            \
    "vbroadcastss " #wo "(%[w]), %%ymm15\n\t"                                                                   \
    "vfmadd231ps %%ymm12, %%ymm15, %[a00]\n\tvfmadd231ps %%ymm13, %%ymm15, %[a01]\n\t"                           \
    "vfmadd231ps %%ymm14, %%ymm15, %[a02]\n\t"                                                                   \
    "vbroadcastss 4+" #wo "(%[w]), %%ymm15\n\t"                                                                 \
    "vfmadd231ps %%ymm12, %%ymm15, %[a10]\n\tvfmadd231ps %%ymm13, %%ymm15, %[a11]\n\t"                           \
    "vfmadd231ps %%ymm14, %%ymm15, %[a12]\n\t"                                                                   \
    "vbroadcastss 8+" #wo "(%[w]), %%ymm15\n\t"                                                                 \
    "vfmadd231ps %%ymm12, %%ymm15, %[a20]\n\tvfmadd231ps %%ymm13, %%ymm15, %[a21]\n\t"                           \
    "vfmadd231ps %%ymm14, %%ymm15, %[a22]\n\t"                                                                   \
    "vbroadcastss 12+" #wo "(%[w]), %%ymm15\n\t"                                                                \
    "vfmadd231ps %%ymm12, %%ymm15, %[a30]\n\tvfmadd231ps %%ymm13, %%ymm15, %[a31]\n\t"                           \
    "vfmadd231ps %%ymm14, %%ymm15, %[a32]\n\t"

LPV_VINLINE T256 void kloop4x3_asm(__m256 acc[4][6], const float **wk, const float **xk, int64_t ldx, int n4) {
    __m256 a00 = acc[0][0], a01 = acc[0][1], a02 = acc[0][2], a10 = acc[1][0], a11 = acc[1][1], a12 = acc[1][2];
    __m256 a20 = acc[2][0], a21 = acc[2][1], a22 = acc[2][2], a30 = acc[3][0], a31 = acc[3][1], a32 = acc[3][2];
    const float *w = *wk, *x = *xk, *we = w + (int64_t)32 * n4; /* the loop ends on the weights' pointer */
    int64_t l = ldx * 4;                                       /* bytes */
    __asm__("1:\n\t"
            "prefetcht0 1024(%[w])\n\t" /* weights come from L2: two lines a trip */
            "prefetcht0 1088(%[w])\n\t"
            K4_STEP("(%[x])", 0) K4_STEP("(%[x],%[l],1)", 32) K4_STEP("(%[x],%[l],2)", 64)
            "lea (%[x],%[l],2), %[x]\n\t"
            K4_STEP("(%[x],%[l],1)", 96)
            "lea (%[x],%[l],2), %[x]\n\t"
            "sub $-128, %[w]\n\t"
            "cmp %[we], %[w]\n\t"
            "jne 1b\n\t"
            : [a00] "+x"(a00), [a01] "+x"(a01), [a02] "+x"(a02), [a10] "+x"(a10), [a11] "+x"(a11), [a12] "+x"(a12),
              [a20] "+x"(a20), [a21] "+x"(a21), [a22] "+x"(a22), [a30] "+x"(a30), [a31] "+x"(a31), [a32] "+x"(a32),
              [w] "+r"(w), [x] "+r"(x)
            : [l] "r"(l), [we] "r"(we)
            : "cc", "memory", "xmm12", "xmm13", "xmm14", "xmm15");
    acc[0][0] = a00, acc[0][1] = a01, acc[0][2] = a02, acc[1][0] = a10, acc[1][1] = a11, acc[1][2] = a12;
    acc[2][0] = a20, acc[2][1] = a21, acc[2][2] = a22, acc[3][0] = a30, acc[3][1] = a31, acc[3][2] = a32;
    *wk = w, *xk = x;
}
#undef K4_STEP

/* The RR × NV tile's k-steps over the chunk's blocks. Blocks that are all adjacent (dense rows) run as one
 * run: their X rows and packed weights follow each other, and stopping every 32 k-steps cost 5 %; scattered
 * ones one at a time (merging the shorter runs of sparse rows measured no faster at d = 0.5). The full-width
 * 4-row tile takes its four-step trips in assembly, the rest in C. */
LPV_VINLINE T256 void kloop(__m256 acc[4][6], const lpv__tile *a, const int RR, const int NV) {
    const float *wk = a->wp;
    const int64_t ldx = a->ldx;
    const int C = a->C;
    const int one_run = lpv__one_run(a->ci, a->nb);
    const int nrun = one_run ? 1 : a->nb, span = one_run ? a->nb * C : C;
    for (int b = 0; b < nrun; b++) {
        int c0 = a->ci[b] * C;
        int kn = a->K - c0 < span ? a->K - c0 : span, k = 0;
        const float *xk = (const float *)a->X + (int64_t)(c0 - a->k0) * ldx;
        if (RR == 4 && NV == 3 && kn >= 4) kloop4x3_asm(acc, &wk, &xk, ldx, kn / 4), k = kn & ~3;
#pragma GCC unroll 2
        for (; k < kn; k++, xk += ldx, wk += 8) {
            _mm_prefetch((const char *)(wk + 256), _MM_HINT_T0); /* weights come from L2 */
            if (RR == 2) step(acc, wk, xk, NV);
            else step4(acc, wk, xk, NV);
        }
        wk += (int64_t)8 * (span - kn); /* a partial last block keeps its full packed size */
    }
}

/* The RR × NV tile over packed X; the last vector's Y columns are masked when a->mask < 8 (lanes). */
LPV_VINLINE T256 void tile(const lpv__tile *a, const int RR, const int NV) {
    __m256 acc[4][6];
    const int64_t ldy = a->ldy;
    const int masked = a->mask < 8;
    const __m256i m = lpv__lane_mask8((int)a->mask);
    /* the next tile's accumulators (rows RR on, the same columns: the next row pair or quad of the group, or
     * the next group's first rows, which come next or one tile later): Y comes from L3 once per K chunk, and
     * its misses at the start of every call cost ~10 % */
    for (int i = RR; i < 2 * RR; i++)
        for (int j = 0; j < NV; j += 2) _mm_prefetch((const char *)(a->Y + i * ldy + 8 * j), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) {
        __m256 bv = _mm256_set1_ps(a->b[i]);
#pragma GCC unroll 6
        for (int j = 0; j < NV; j++) {
            __m256 v = bv;
            if (a->init_y && i < a->nrows) v = _mm256_add_ps(v, ld_y(a->Y + i * ldy + 8 * j, masked && j == NV - 1, m));
            acc[i][j] = v;
        }
    }
    kloop(acc, a, RR, NV);
    /* GELU on the registers, not as a pass over the group's rows afterwards (that pass re-read 8 rows x the
     * panel from L2): the same lpv__gelu8 on the same sums, so the same bits */
    if (a->gelu)
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 6
            for (int j = 0; j < NV; j++) acc[i][j] = lpv__gelu8(acc[i][j]);
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
        if (i < a->nrows)
#pragma GCC unroll 6
            for (int j = 0; j < NV; j++) st_y(a->Y + i * ldy + 8 * j, acc[i][j], masked && j == NV - 1, m);
}

#define TILE_FN(r, n) \
    __attribute__((noinline)) static T256 void tile##r##x##n(const lpv__tile *a) { tile(a, r, n); }
TILE_FN(2, 1)
TILE_FN(2, 2)
TILE_FN(2, 3)
TILE_FN(2, 4)
TILE_FN(2, 5)
TILE_FN(2, 6)
TILE_FN(4, 1)
TILE_FN(4, 2)
TILE_FN(4, 3)
static const lpv__tile_fn tiles2[7] = {NULL, tile2x1, tile2x2, tile2x3, tile2x4, tile2x5, tile2x6};
static const lpv__tile_fn tiles4[4] = {NULL, tile4x1, tile4x2, tile4x3};

/* Two-row tiles: 48-token positions, each run as four row pairs (rows 2p, 2p + 1). */
static T256 void group_rows2(lpv__tile *a, const lpv__bsr_group *g, int c0, int c1) {
    for (int c = c0; c < c1; c += 48) {
        int n = c1 - c < 48 ? c1 - c : 48, nv = (n + 7) / 8;
        a->mask = (unsigned)(n - 8 * (nv - 1)); /* valid lanes of the last vector */
        lpv__tile_at(a, g->X, g->xt0, g->Y, c);
        float *Yc = a->Y;
        for (int p = 0; 2 * p < g->nrows; p++) {
            a->nrows = g->nrows - 2 * p < 2 ? g->nrows - 2 * p : 2;
            a->wp = g->wp + 2 * p, a->b = g->b8 + 2 * p, a->Y = Yc + (int64_t)2 * p * g->ldy;
            tiles2[nv](a);
        }
    }
}

/* Four-row tiles: positions of 3 vectors (24 tokens), the last ones 2 + 2 rather than 3 + 1 (a 1-vector tile
 * has 4 accumulators, half of what hides the FMA latency), each run as two row quads. */
static T256 void group_rows4(lpv__tile *a, const lpv__bsr_group *g, int c0, int c1) {
    int nv = (c1 - c0 + 7) / 8;
    for (int c = c0, v = 0; v < nv;) {
        int w = nv - v == 4 ? 2 : nv - v < 3 ? nv - v : 3; /* vectors in this position */
        int n = c1 - c < 8 * w ? c1 - c : 8 * w;
        a->mask = (unsigned)(n - 8 * (w - 1));
        lpv__tile_at(a, g->X, g->xt0, g->Y, c);
        float *Yc = a->Y;
        for (int q = 0; 4 * q < g->nrows; q++) {
            a->nrows = g->nrows - 4 * q < 4 ? g->nrows - 4 * q : 4;
            a->wp = g->wp + 4 * q, a->b = g->b8 + 4 * q, a->Y = Yc + (int64_t)4 * q * g->ldy;
            tiles4[w](a);
        }
        c += 8 * w, v += w;
    }
}

/* The group over its panel, in the profile's tile (lpv__bsr_tune.avx2_rows). */
T256 void lpv__bsr_group_avx2(const lpv__bsr_group *g) {
    lpv__tile a = {NULL, NULL, g->ldx, g->ldy, g->k0, NULL, g->ci, g->nb, g->C, g->K, 0, g->init_y, NULL, 8, g->gelu, 0};
    int c0 = 16 * g->v0, c1 = 16 * g->v1 + g->tail; /* the panel's first and one past its last valid token */
    if (lpv__bsr_tune.avx2_rows == 4) group_rows4(&a, g, c0, c1);
    else group_rows2(&a, g, c0, c1);
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
