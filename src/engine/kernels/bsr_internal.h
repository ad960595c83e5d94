/*
 * bsr_internal.h — what src/engine/bsr.c hands the ISA kernels (src/engine/kernels/bsr_avx2.c,
 * src/engine/kernels/bsr_avx512.c): the blocking plan of one thread's share, and one 8-row group's
 * work inside it. The driver in bsr.c walks the plan (panels of tokens, K chunks, groups) for
 * every ISA; an ISA only supplies the micro-kernel that runs one group (lpv__bsr_group_fn).
 * Not installed; the benchmark includes it to try other blockings.
 *
 * Units: an 8-row "group" g covers output rows [8g, 8g + 8) (R is a multiple
 * of 8, so a group never straddles block rows: block row g / (R/8), slice
 * g % (R/8)); a "vector" v covers token columns [16v, 16v + 16).
 */
#ifndef LPVIT_BSR_INTERNAL_H
#define LPVIT_BSR_INTERNAL_H

#include <stdint.h>
#include <xmmintrin.h>

#include "lpvit/bsr.h"

typedef struct {
    int g0, g1;        /* groups [g0, g1) */
    int v0, v1;        /* vectors [v0, v1) */
    int nvec_full;     /* vectors below this are 16 wide (padding columns allowed) */
    int tail;          /* columns of vector nvec_full when it is partial (0: none) */
    int panel_vec;     /* token panel, in vectors: X (chunk × panel) should stay in L2 (in L1: x_in_l1) */
    int chunk_gran;    /* K chunk, in LPV_BSR_KGRAN granules (>= ngran: one chunk) */
    int x_in_l1;       /* walk order: 0 panels > chunks > groups (a group's weights stay in L1, X comes from L2);
                        * 1 chunks > row blocks > panels > groups (X of a narrow panel stays in L1 for every
                        * group of the row block, whose weights stay in L2): for tiles that reuse X little */
    int rowblock;      /* x_in_l1: groups per row block */
} lpv__bsr_plan;

/* Blocking knobs (bytes of X a panel may hold; kept columns per chunk). */
typedef struct {
    int64_t l2_bytes;  /* X (chunk × panel) budget */
    int64_t l1_w_bytes;/* no panels/chunks while a group's kept weights (8 rows × cols·d) fit this */
    int kept_cols;     /* target kept input columns per K chunk (chunk ≈ kept_cols / density) */
    int alpha;         /* fixed cost of an 8-row group, in k-steps, for the thread split */
    int64_t l1_x_bytes;/* x_in_l1 plans: X (chunk × panel) budget */
    int64_t l2_w_bytes;/* x_in_l1 plans: kept weights of a row block's chunk */
    int l1_panel_vec;  /* x_in_l1 plans: panel width in vectors (>= 1) */
    int64_t q8_l1_x_bytes; /* the same two for the int8 AVX2 and AVX-VNNI kernels' plans (a panel of quads) */
    int q8_panel_vec;
    int avx2_rows;     /* the FP32 AVX2 register tile: 2 rows x 6 ymm, or 4 rows x 3 ymm */
    int avx512_pf;     /* what the AVX-512 tiles (FP32, BF16, int8 VNNI) prefetch each k-step: LPV_PF_NEXT_X (the
                        * group's next tile's X, into L2) or LPV_PF_NEXT_W (the next group's weights, into L2) */
} lpv__bsr_tuning;
enum { LPV_PF_NEXT_X = 0, LPV_PF_NEXT_W = 1 };

/* The prefetch of one AVX-512 k-step (pf: LPV_PF_*, a compile-time constant in every caller): the nv 64-byte
 * lines of X at x_next (the next tile's, same row), or the line of weights at w_next (the next group's). */
static inline __attribute__((always_inline)) void lpv__prefetch_step(int pf, const void *x_next, int nv,
                                                                     const void *w_next) {
    if (pf == LPV_PF_NEXT_X) {
#pragma GCC unroll 3
        for (int j = 0; j < nv; j++) _mm_prefetch((const char *)x_next + 64 * j, _MM_HINT_T1);
    } else {
        _mm_prefetch((const char *)w_next, _MM_HINT_T1);
    }
}

/* 1 when a group's nb blocks (block columns ci, ascending) are one run of adjacent columns, as a dense row's are:
 * the kernels walk such blocks as one span of k-steps, scattered ones block by block. */
static inline int lpv__one_run(const int32_t *ci, int nb) { return nb > 0 && ci[nb - 1] - ci[0] == nb - 1; }

/* 1 when they are scattered instead: more than one block, not one run (the tiles that prefetch the next block). */
static inline int lpv__scattered(const int32_t *ci, int nb) { return nb > 1 && !lpv__one_run(ci, nb); }

/* The block column after block b (b's own for the last block): the one whose X rows such a tile prefetches. */
static inline int32_t lpv__next_ci(const int32_t *ci, int nb, int b) { return ci[b + 1 < nb ? b + 1 : b]; }

/* The nv 64-byte lines of X at p into L1: each k-step of an AVX-512 tile over scattered blocks asks for the same
 * row of the next block, since at every jump the hardware's stride prefetch has lost the stream and a block's
 * k-steps are too few to hide the misses (measured per kernel where it is called). */
static inline __attribute__((always_inline)) void lpv__prefetch_row_l1(const void *p, int nv) {
#pragma GCC unroll 3
    for (int j = 0; j < nv; j++) _mm_prefetch((const char *)p + 64 * j, _MM_HINT_T0);
}

/* The knobs every plan reads: the profile lpv_blocking_get() names, copied before main() (tests and benchmarks
 * may change them; lpv__bsr_tuning_of gives a profile's table). */
extern lpv__bsr_tuning lpv__bsr_tune;
const lpv__bsr_tuning *lpv__bsr_tuning_of(lpv_blocking b);

/* One 8-row group's blocks of one K chunk, over the token columns of one panel:
 *     Y[rows, cols] (+)= b8 + W_group,chunk · X[chunk, cols], then GELU when asked.
 * cols are the full 16-column vectors [v0, v1), then `tail` columns of vector v1 (0: none). */
typedef struct {
    const float *X;    /* (cols, ld ldx): row k holds input k0 + k from token column xt0 */
    const uint32_t *X2;/* BF16: (ceil(cols / 2), ld ldx) pairs at token column 0, else NULL */
    const uint32_t *X4;/* int8: (ceil(cols / 4), ld ldx) quads at token column 0, else NULL */
    const uint32_t *Xp;/* int8 AVX2 / AVX-VNNI: the panel's copy of X4's quad rows, row p for inputs k0 + 4p..,
                        * ld ldx, from token column xt0 */
    const float *xa, *xc; /* int8: per token column (from column 0): activation scale, scale · zero point */
    const float *ws8;  /* int8: (8) weight scale per row */
    const float *wsum8;/* int8: (8) Σ_k q per row: zeros when not the first chunk */
    float *Y;          /* at the group's first row, token column 0 */
    int64_t ldx, ldy;
    int k0, xt0;       /* first input row and token column X (Xp) holds (0, 0 unless X is a packed panel) */
    const float *wp;   /* the group's packed weights of the chunk's first block: per block [C][8] */
    const uint32_t *wp2; /* BF16: the same in packed_bf16, per block [C/2][8] pairs */
    const uint32_t *wq;  /* int8: the same in packed_q8 ([C/4][8] quads) */
    const int32_t *ci; /* col_idx of that block */
    int nb;            /* blocks in the chunk */
    int C, K;          /* block columns; input features (the last block may be partial) */
    int nrows;         /* valid rows of the group (1..8) */
    int init_y;        /* accumulate onto Y (ACC, or a K chunk after the first) */
    const float *b8;   /* (8) bias per row: zeros when none or not the first chunk */
    int v0, v1, tail;
    int gelu;          /* GELU on the group's rows afterwards (the last chunk of a GELU product) */
    int64_t wnext;     /* where the walk's next group's weights of its chunk start, from wp, in floats of packed
                        * (BF16 pairs and int8 quads: /2, /4 as for wp2, wq); 0 when no group follows on these
                        * granules (the prefetch then asks for the group's own lines) */
    float *cmin, *cmax;/* GELU products that record their output's range: this thread's running min / max per
                        * token column (from column 0), updated with the GELU values; else NULL */
} lpv__bsr_group;

typedef void (*lpv__bsr_group_fn)(const lpv__bsr_group *g);

/* One register tile of a group: 8 rows x 1..3 zmm vectors of tokens (AVX-512), 2 rows x 1..6
 * or 4 rows x 1..3 ymm (AVX2 FP32, lpv__bsr_tuning.avx2_rows). */
typedef struct {
    const void *X;    /* at the tile's first column: floats, or BF16 pairs (4 bytes a token either way) */
    float *Y;         /* at the tile's first row and column */
    int64_t ldx, ldy;
    int k0;           /* input of X's first row */
    const void *wp;   /* packed weights of the chunk's first block (floats or BF16 pairs), at the tile's first row */
    const int32_t *ci;
    int nb;
    int C, K;
    int nrows;        /* valid rows of the tile */
    int init_y;
    const float *b;   /* bias per row of the tile */
    unsigned mask;    /* AVX-512: the masked 1-vector tile's valid columns (bits); AVX2: valid lanes of the last vector */
    int gelu;         /* AVX2 FP32: GELU on the sums before they are stored (the group's last chunk of a GELU product) */
    int64_t wnext;    /* AVX-512 LPV_PF_NEXT_W: the next group's weights, from wp, in the tile's weight elements */
} lpv__tile;

typedef void (*lpv__tile_fn)(const lpv__tile *a);

/* The tiles over full vectors [va, vb) of `width` columns: 3-vector tiles, ending with 2 + 2 rather than
 * 3 + 1 (a 1-vector tile wastes most of the FMA latency). t3, t2, t1 run 3, 2 and 1 vectors. */
/* Points the tile at token column col (X0's column 0 is token xt0). */
static inline void lpv__tile_at(lpv__tile *a, const void *X0, int xt0, float *Y0, int col) {
    a->X = (const char *)X0 + (size_t)4 * (size_t)(col - xt0), a->Y = Y0 + col;
}

static inline void lpv__run_tiles(lpv__tile *a, const void *X0, int xt0, float *Y0, int va, int vb, int width,
                                  lpv__tile_fn t3, lpv__tile_fn t2, lpv__tile_fn t1) {
    int n = vb - va, n3 = n / 3, r = n % 3, v = va;
    if (r == 1 && n3 >= 1) n3--, r = 4;
    for (int q = 0; q < n3; q++, v += 3) lpv__tile_at(a, X0, xt0, Y0, width * v), t3(a);
    for (; r >= 2; r -= 2, v += 2) lpv__tile_at(a, X0, xt0, Y0, width * v), t2(a);
    if (r == 1) lpv__tile_at(a, X0, xt0, Y0, width * v), t1(a);
}

void lpv__bsr_group_avx512(const lpv__bsr_group *g);
void lpv__bsr_group_avx512bf16(const lpv__bsr_group *g);
void lpv__bf16_pack_x_avx512(uint32_t *X2, const float *X, int ld, int K, int ncols);
void lpv__bsr_group_avx2(const lpv__bsr_group *g);
/* packed (and packed_bf16, when there is one) again from values, after they changed (lpv_bsr_set_int8). */
void lpv__bsr_repack(lpv_bsr *b);
void lpv__bsr_group_q8_vnni(const lpv__bsr_group *g);
void lpv__bsr_group_q8_avx2(const lpv__bsr_group *g);
void lpv__bsr_group_q8_avxvnni(const lpv__bsr_group *g);
/* Step 2 of the activation quantizer (bsr_q8.c): nk (1..4) rows of X (row stride ld) into one row of quads o,
 * columns [0, n), with the columns' 1 / scale and zero point (a whole number, as float). */
void lpv__q8_quantize_avx512(uint32_t *o, const float *inv, const float *zp, const float *X, int ld, int nk, int n,
                             int levels);
void lpv__q8_quantize_avx2(uint32_t *o, const float *inv, const float *zp, const float *X, int ld, int nk, int n,
                           int levels); /* u clamped to [0, levels] */
/* lpv_q8_quantize_x_isa on a grid of `levels` (127 or 255) whatever the ISA's kernel reads: tests compare every
 * quantizer with the reference at each grid. */
void lpv__q8_quantize_levels(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                             const lpv_qact *q, lpv_isa isa, int levels);
/* Per column of X (K rows, stride ld, columns [0, n)): lo[t] = min(0, min_k x), hi[t] = max(0, max_k x), NaN ignored. */
void lpv__q8_minmax_avx512(float *lo, float *hi, const float *X, int ld, int K, int n);
void lpv__q8_minmax_avx2(float *lo, float *hi, const float *X, int ld, int K, int n);
void lpv__vgelu_avx512(float *x, int64_t n);
void lpv__vgelu_avx2(float *x, int64_t n);
void lpv__verf_avx512(float *y, const float *x, int64_t n);
void lpv__verf_avx2(float *y, const float *x, int64_t n);
/* Register-only FMA loops of `steps` x 12 instructions (peak.c, for lpv_bench_peak). */
float lpv__peak_avx2(int64_t steps, float m, float c);
float lpv__peak_avx512(int64_t steps, float m, float c);
float lpv__peak_avx512bf16(int64_t steps, float m, float c);
float lpv__peak_vnni(int64_t steps, float m, float c); /* vpdpbusd: int8 ops */
float lpv__peak_maddubs(int64_t steps, float m, float c); /* AVX2 vpmaddubsw + vpmaddwd + vpaddd: int8 ops */
float lpv__peak_avxvnni(int64_t steps, float m, float c); /* vpdpbusd on ymm: int8 ops */

#endif
