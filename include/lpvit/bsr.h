/*
 * bsr.h — block-sparse rows (BSR) weights and the engine's sparse GEMM.
 *
 * A weight W (rows = out × cols = in) is cut into R×C blocks (R, C each one of
 * 8, 16, 32, 64; rectangular allowed). Edge blocks may be partial (e.g. the
 * 1000-row head with R = 64); they are stored zero-padded to R×C. Only kept
 * blocks are stored, in the torch/scipy BSR arrays that the safetensors export
 * uses (NAME.bsr_row_ptr / .bsr_col_indices / .bsr_values):
 *     row_ptr (nbr + 1)       blocks of block row i are [row_ptr[i], row_ptr[i+1])
 *     col_idx (nnzb)          block column of each block, strictly increasing in a row
 *     values  (nnzb, R, C)    row-major blocks
 * plus a kernel layout `packed` (the same numbers reordered, see bsr.c) and
 * small tables for the K-chunking and the thread split.
 *
 * The product, on feature-major activations (layout.h) (features × tokens,
 * row stride ld; columns [T, round16(T)) are padding the kernels may read and
 * write when round16(T) <= ld):
 *     Y (rows, T) = epi(W · X (cols, T) + b)        epi: LPV_EPI_* of layout.h
 * Three implementations: a plain-loop reference, AVX2 (4 rows × 24 tokens
 * register tile) and AVX-512 (8 rows × 48 tokens), chosen with lpv_isa_get().
 * 8-row groups are split over lpv_threads_get() OpenMP threads by kept-block
 * count (tokens instead when there are fewer than 2 groups per thread).
 * Measured (tests/bench_bsr_kernel.c, Zen 4, DeiT shapes, random masks): the
 * AVX-512 kernel runs 1.01-1.14x OpenBLAS at d = 1 and keeps >= 0.9 of
 * OpenBLAS's GFLOP/s down to d = 0.1 in quiet conditions.
 *
 * Memory: every array of an lpv_bsr lives in one lpv_arena. Pass your own
 * arena (e.g. the model's BSR arena; the arrays die with it and lpv_bsr_free
 * only forgets them) or NULL to let the lpv_bsr own a private arena that
 * lpv_bsr_free releases (no pointer into the struct itself, so it may be
 * moved; free exactly one copy). Storage is 2 × nnzb·R·C floats (values +
 * packed) plus O(nbr · cols/256) ints. The builders copy their inputs. The
 * kernels allocate nothing and only read the lpv_bsr, so one lpv_bsr may be
 * used by several threads at once.
 *
 *     lpv_bsr w; lpv_err err;
 *     if (lpv_bsr_from_dense(&w, W, 768, 3072, 32, 32, mask, NULL, "blocks.0.mlp.fc2", &err)) die(err.msg);
 *     lpv_bsr_matmul(&w, bias, X, ldx, Y, ldy, T, LPV_EPI_BIAS | LPV_EPI_ACC);
 *     lpv_bsr_free(&w);
 */
#ifndef LPVIT_BSR_H
#define LPVIT_BSR_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/cpu.h"
#include "lpvit/error.h"
#include "lpvit/layout.h"

/* K (input feature) granule of the chunk tables; a multiple of every C. */
#define LPV_BSR_KGRAN 64

typedef struct lpv_bsr {
    int rows, cols;     /* dense shape (out, in) */
    int R, C;           /* block shape: R output rows × C input columns */
    int nbr, nbc;       /* ceil(rows / R), ceil(cols / C) */
    int64_t nnzb;       /* kept blocks */
    int32_t *row_ptr;   /* (nbr + 1) */
    int32_t *col_idx;   /* (nnzb) */
    float *values;      /* (nnzb, R, C) canonical, zero beyond the dense edges */
    /* ---- kernel tables (derived; see bsr.c) ---- */
    float *packed;      /* (nnzb·R·C): per block row, per 8-row group, its blocks' [C][8] slices */
    uint32_t *packed_bf16; /* (nnzb·R·C/2) the same order in BF16 pairs along K, [C/2][8] per slice, or NULL
                            * until lpv_bsr_pack_bf16 (pair = bf16(w[k]) | bf16(w[k+1]) << 16) */
    /* ---- int8 weights (lpv_bsr_set_int8; all NULL until then) ---- */
    int8_t *qvalues;    /* (nnzb, R, C) like values; values then hold qvalues · qscale[row] */
    float *qscale;      /* (8 · ngroups) per output row, > 0; 0 past the last row */
    float *qsum;        /* (8 · ngroups) Σ_k qvalues of the row (exact in float) */
    uint32_t *packed_q8;  /* (nnzb·R·C/4) packed's order, [C/4][8] quads: byte j = q[r][4p + j] (every int8 kernel) */
    int ngran;          /* ceil(cols / LPV_BSR_KGRAN) */
    int32_t *gran_ptr;  /* (nbr, ngran + 1): first block of a row at or after granule g */
    int ngroups;        /* 8-row groups holding at least one dense row */
    int64_t *group_cost;/* (ngroups + 1) prefix of per-group work, for the thread split */
    /* ---- memory ---- */
    int owns_arena;     /* 1: the arrays live in `own`, freed by lpv_bsr_free */
    lpv_arena own;
} lpv_bsr;

/* W (rows, cols) row-major, mask (nbr, nbc) with nonzero = keep (NULL keeps
 * every block). `name` prefixes error messages. */
lpv_status lpv_bsr_from_dense(lpv_bsr *b, const float *W, int rows, int cols, int R, int C, const uint8_t *mask,
                              lpv_arena *arena, const char *name, lpv_err *err);

/* From the three file arrays with their element counts (n_values floats,
 * n_col ints, n_row_ptr ints). Validates everything: block shape, dims > 0,
 * n_row_ptr == nbr + 1, row_ptr[0] == 0, row_ptr non-decreasing,
 * row_ptr[nbr] == n_col, n_values == n_col·R·C, every column in [0, nbc) and
 * strictly increasing within a block row. Values beyond the dense edge of a
 * partial block are ignored (stored as 0). Errors name `name` (e.g.
 * "blocks.3.mlp.fc1.weight") and the broken rule. Everything is validated
 * before anything is allocated; on any failure *b is left empty (all zero,
 * safe to lpv_bsr_free) and only an out-of-memory failure can leave partial
 * allocations in a caller's arena. */
lpv_status lpv_bsr_from_arrays(lpv_bsr *b, int rows, int cols, int R, int C, const float *values, int64_t n_values,
                               const int32_t *col_idx, int64_t n_col, const int32_t *row_ptr, int64_t n_row_ptr,
                               lpv_arena *arena, const char *name, lpv_err *err);

/* W (rows, cols) with zeros in pruned blocks. */
void lpv_bsr_to_dense(const lpv_bsr *b, float *W);
/* The kept blocks' values from W (rows, cols) (its pruned blocks are ignored), and the kernels' packs of them
 * (FP32, and BF16 when there is one; not the int8 weights). */
void lpv_bsr_set_dense_values(lpv_bsr *b, const float *W);
/* mask (nbr, nbc): 1 where a block is kept. */
void lpv_bsr_mask(const lpv_bsr *b, uint8_t *mask);
/* Kept blocks / all blocks (0 for an empty shape). */
double lpv_bsr_density(const lpv_bsr *b);
/* Releases the private arena (if any) and zeroes *b. */
void lpv_bsr_free(lpv_bsr *b);

/* Y (rows, T) ld ldy = epi(W X + bias), X (cols, T) ld ldx; bias (rows) or
 * NULL (then LPV_EPI_BIAS adds nothing). GELU is not combined with ACC.
 * Needs ldx, ldy >= T; T >= 1. ISA from lpv_isa_get(), threads from
 * lpv_threads_get() (1 when called inside a parallel region). X and Y must
 * not overlap. */
void lpv_bsr_matmul(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T, int epi);

/* The same with an explicit ISA (one the CPU can run; see lpv_isa_best) and
 * thread count (tests, benchmarks). */
void lpv_bsr_matmul_isa(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T, int epi,
                        lpv_isa isa, int nthreads);

/* Thread `tid`'s share of the product split `nthreads` ways, for callers that
 * keep one parallel region open: every thread of the team calls it with its
 * omp_get_thread_num(); outputs are disjoint, so no barrier is needed inside
 * (the caller puts one before Y is read). */
void lpv_bsr_matmul_part(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T,
                         int epi, lpv_isa isa, int tid, int nthreads);

/* ---- BF16: BF16 products, FP32 sums (AVX512-BF16 vdpbf16ps) ----
 * Weights and activations are rounded to BF16 (round to nearest even; NaN stays NaN), multiplied exactly
 * and summed in FP32; bias, GELU and the residual add stay FP32. Activations go in as "pairs" along K:
 *     X2 (ceil(K / 2), ldx) uint32, X2[p][t] = bf16(X[2p][t]) | bf16(X[2p + 1][t]) << 16
 * (lpv_bf16_pack_x; an odd K gets a zero high half). Y is FP32 as in lpv_bsr_matmul. The kernel needs
 * ISA avx512bf16; LPV_ISA_REF runs the plain-loop reference (same numbers up to the order of the
 * FP32 sums: |Δ| <= 2^-20 · Σ_k |w_k x_k| is what test_bsr checks). */

/* The BF16 form of W's packed weights, in arena (NULL: W's own arena; W must own one). */
lpv_status lpv_bsr_pack_bf16(lpv_bsr *W, lpv_arena *arena, lpv_err *err);
/* X2 <- X (K, T) as pairs, both with row stride ld; columns [T, round16(T)) too when round16(T) <= ld. */
void lpv_bf16_pack_x(uint32_t *X2, const float *X, int ld, int K, int T);
void lpv_bsr_matmul_bf16(const lpv_bsr *W, const float *bias, const uint32_t *X2, int ldx, float *Y, int ldy, int T,
                         int epi);
/* With an explicit ISA (LPV_ISA_AVX512BF16 or LPV_ISA_REF) and thread count. */
void lpv_bsr_matmul_bf16_isa(const lpv_bsr *W, const float *bias, const uint32_t *X2, int ldx, float *Y, int ldy, int T,
                             int epi, lpv_isa isa, int nthreads);
/* ---- int8: uint8 activations × int8 weights, exact int32 sums ----
 * Weights: symmetric per output row, w[r][k] ≈ qscale[r] · q[r][k], q in [-128, 127] (lpvit writes
 * [-127, 127]). Activations: uint8 with a zero point, per tensor or per token column:
 *     x[k][t] ≈ xa[t] · (u[k][t] − zp[t]),   u in [0, N];   xc[t] = xa[t] · zp[t]
 * N = lpv_q8_levels of the kernel: 255, or 127 for the AVX2 kernel (see below)
 * stored as "quads" along K: X4 (ceil(K / 4), ldx) uint32, byte j of X4[p][t] = u[4p + j][t] (0 past K).
 * The product, with acc[r][t] = Σ_k q[r][k] · u[k][t] in int32 (exact):
 *     Y[r][t] = epi( qscale[r] · (xa[t] · acc[r][t] − xc[t] · qsum[r]) + b[r] )
 * in FP32, per K chunk (a later chunk adds qscale[r] · xa[t] · acc_chunk). Kernels: the plain-loop
 * reference, AVX2 (vpmaddubsw: it sums two u8·s8 products into a saturating int16, so its inputs have 127
 * levels, 127·128·2 < 2^15), AVX-VNNI (vpdpbusd on ymm, 8 tokens a vector) and AVX-512 VNNI (vpdpbusd on
 * zmm), all with the reference's int32 sums on the same bytes; lpv_q8_kernel says which an ISA runs, and the
 * quantizers below write the grid of that ISA's kernel (a kernel given bytes past its N is wrong, not unsafe).
 * xa and xc have one entry per readable token column (round16(T) when ldx allows, as X). */
typedef enum { LPV_Q8_REF = 0, LPV_Q8_AVX2 = 1, LPV_Q8_VNNI = 2, LPV_Q8_AVXVNNI = 3 } lpv_q8_kernel;
/* The int8 kernel an ISA level runs: VNNI at avx512 and above when the CPU has avx512_vnni, else AVX-VNNI at
 * avxvnni and above when it has avx_vnni, else AVX2 at avx2 and above, else the reference. */
lpv_q8_kernel lpv_q8_kernel_for(lpv_isa isa);
const char *lpv_q8_kernel_name(lpv_q8_kernel k);
/* N, the largest input byte the kernel takes: 127 for LPV_Q8_AVX2, else 255. */
int lpv_q8_levels(lpv_q8_kernel k);

/* Gives W int8 weights: q (nnzb, R, C) in the order of W->values and scale (rows) when given, else rounds
 * W->values per row, q = round-half-even(w / scale) clamped to ±127, with the given scale or, when scale is
 * NULL, scale = max |w| / 127 (an all-zero row gets scale 1).
 * Every scale must be finite and > 0. W->values become q · scale (what the int8 kernels compute with, and
 * what lpv_bsr_to_dense and the exports see). Arrays go into arena (NULL: W's own; W must own one). */
lpv_status lpv_bsr_set_int8(lpv_bsr *W, const int8_t *q, const float *scale, lpv_arena *arena, const char *name,
                            lpv_err *err);

/* Activation quantization of one linear input. */
typedef struct {
    int per_token;  /* 1: each token column's own range, found at run time (scale, zp unused) */
    float scale;    /* per tensor: > 0 */
    int zp;         /* per tensor: in [0, 255] */
} lpv_qact;

/* X4 (ceil(K / 4), ld), xa, xc (readable columns) <- X (K, T) with row stride ld, by q, on the N levels of the
 * ISA's int8 kernel (lpv_q8_levels):
 *     u = clamp(round-half-even(x · (1 / scale)) + zp, 0, N)
 * per token: lo = min(0, min_k x), hi = max(0, max_k x), scale = (hi − lo) / N (1 when hi == lo),
 * zp = clamp(round(−lo / scale), 0, N); per tensor at N = 127: scale · 255 / 127, zp = round(zp · 127 / 255).
 * ISA from lpv_isa_get(); every ISA with the same N gives the reference's bytes. */
void lpv_q8_quantize_x(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T, const lpv_qact *q);
void lpv_q8_quantize_x_isa(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                           const lpv_qact *q, lpv_isa isa);

/* The same with the per-token range given instead of found: lo[t] <= 0 <= hi[t] per readable column (as the
 * product below records it), so only the quantizing pass reads X. Equal bytes to lpv_q8_quantize_x when lo / hi
 * are X's column min / max with 0. */
void lpv_q8_quantize_x_range(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                             const float *lo, const float *hi);
/* lo[t] = min(0, min_k X[k][t]) and hi[t] = max(0, max_k X[k][t]) per readable column (NaN ignored): the range
 * lpv_q8_quantize_x_range takes, as the per-token quantizer finds it (ISA from lpv_isa_get()). */
void lpv_q8_column_range(float *lo, float *hi, const float *X, int ld, int K, int T);

/* Y (rows, T) = epi(...) as above; W must have int8 weights. Same threading and epilogue rules as
 * lpv_bsr_matmul. */
void lpv_bsr_matmul_q8(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                       int ldx, float *Y, int ldy, int T, int epi);
void lpv_bsr_matmul_q8_isa(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                           int ldx, float *Y, int ldy, int T, int epi, lpv_isa isa, int nthreads);
/* A GELU product (epi has LPV_EPI_GELU) that also records each column's range of its output, what the next
 * layer's per-token quantizer needs (lpv_q8_quantize_x_range): afterwards range[c] = min(0, min_r Y[r][c]) and
 * range[ldy + c] = max(0, max_r Y[r][c]) over the columns the product wrote (NaN ignored). range: scratch of
 * 2 · ldy · (threads) floats (threads: lpv_threads_get(), or nthreads). */
void lpv_bsr_matmul_q8_range(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                             int ldx, float *Y, int ldy, int T, int epi, float *range);
void lpv_bsr_matmul_q8_range_isa(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa,
                                 const float *xc, int ldx, float *Y, int ldy, int T, int epi, float *range, lpv_isa isa,
                                 int nthreads);

/* (the scalar conversions, lpv_bf16_from_f32 / lpv_bf16_to_f32, are in safetensors.h) */
/* ---- vectorized exact GELU (used by the BSR epilogue) ----
 * x[i] = 0.5·x·(1 + erf(x/√2)) in place, relative error <= ~5e-7 everywhere
 * (src/engine/kernels/vmath.h), AVX-512 / AVX2 by lpv_isa_get(), scalar otherwise.
 * Single-threaded; n >= 0, any alignment. */
void lpv_vgelu(float *x, int64_t n);
/* With an explicit ISA; LPV_ISA_REF is the same algorithm in scalar C. */
void lpv_vgelu_isa(float *x, int64_t n, lpv_isa isa);
/* y = erf(x) with the vmath algorithm (exposed for tests). */
void lpv_verf_isa(float *y, const float *x, int64_t n, lpv_isa isa);

#endif
