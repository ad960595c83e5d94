/*
 * layout.h — how the engine lays out activations and what a linear layer's
 * epilogue may do: the conventions every kernel (dense, BSR, per ISA) and
 * every caller share. Header only; nothing to free.
 *
 * Activations are feature-major: a (features x tokens) row-major matrix whose
 * row stride `ld` is a multiple of 16 floats; columns [T, round16(T)) are
 * padding that kernels may read and write (values there are unspecified, and
 * column j of the output depends only on column j of the input).
 *
 *     Y (out, T) = epi(W (out, in) · X (in, T) + b)
 */
#ifndef LPVIT_LAYOUT_H
#define LPVIT_LAYOUT_H

/* Epilogue flags of a linear product, fused into its last pass over Y. */
enum {
    LPV_EPI_NONE = 0,
    LPV_EPI_BIAS = 1, /* + b[row] */
    LPV_EPI_GELU = 2, /* exact erf GELU after the bias */
    LPV_EPI_ACC = 4,  /* Y += result (residual); not combined with GELU */
};

/* Row stride for t token columns: the next multiple of 16 floats (one AVX-512 vector). */
static inline int lpv_round16(int t) { return (t + 15) & ~15; }

/* ceil(a / b) for a >= 0, b > 0. */
static inline int lpv_ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Blocks of an R x C grid over a (rows, cols) matrix; edge blocks may be partial. */
static inline int lpv_nblocks(int rows, int cols, int R, int C) { return lpv_ceil_div(rows, R) * lpv_ceil_div(cols, C); }

#endif
