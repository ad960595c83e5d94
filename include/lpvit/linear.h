/*
 * linear.h — the one place a linear layer runs, dense (OpenBLAS) or block
 * sparse (BSR), with its epilogue fused: bias, exact GELU, or accumulate into
 * the output (the residual add).
 *
 * Activations are feature-major: a (features x tokens) row-major matrix whose
 * row stride `ld` is a multiple of 16 floats; columns [T, round16(T)) are
 * padding that kernels may read and write (values there are unspecified, and
 * column j of the output depends only on column j of the input).
 *
 *     Y (out, T) = epi(W (out, in) · X (in, T) + b)
 *
 * Weights are borrowed: the model (or its BSR arena) owns w, b and bsr.
 * Work is split over lpv_threads_get() threads with OpenMP; OpenBLAS runs
 * single-threaded inside each.
 */
#ifndef LPVIT_LINEAR_H
#define LPVIT_LINEAR_H

#include <stdint.h>

struct lpv_bsr;

enum {
    LPV_EPI_NONE = 0,
    LPV_EPI_BIAS = 1, /* + b[row] */
    LPV_EPI_GELU = 2, /* exact erf GELU after the bias */
    LPV_EPI_ACC = 4,  /* Y += result (residual); not combined with GELU */
};

typedef struct lpv_linear {
    int out, in;
    float *w;            /* (out, in) dense weight; NULL when only bsr is set */
    float *b;            /* (out) or NULL */
    struct lpv_bsr *bsr; /* block-sparse form; when set, forward uses it */
    struct lpv_bsr *blocked; /* the dense w again, every block kept, in the BSR kernel's
                              * layout: forward prefers it to OpenBLAS (lpv_model_pack_dense).
                              * A copy: whoever changes w afterwards must drop it. */
} lpv_linear;

/* Y = epi(W X + b), X (in, T) with row stride ldx, Y (out, T) with row stride ldy.
 * Runs bsr if set, else blocked if set, else OpenBLAS. */
void lpv_linear_forward(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);
/* Dense path with OpenBLAS, whatever L->bsr says (the baseline bench compares against). */
void lpv_linear_forward_dense(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);
/* Naive triple loop with the same contract (reference for tests). */
void lpv_linear_forward_ref(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);

/* Which kernel a dense model's linears should run in the inference commands: lpvit's own
 * blocked kernel (lpv_model_pack_dense; default) or OpenBLAS. Process-wide, like the ISA. */
typedef enum { LPV_DENSE_BLOCKED = 0, LPV_DENSE_BLAS = 1 } lpv_dense_kernel;
void lpv_dense_kernel_set(lpv_dense_kernel k);
lpv_dense_kernel lpv_dense_kernel_get(void);
const char *lpv_dense_kernel_name(lpv_dense_kernel k);

/* dst's dense w (and b, when dst has one) <- src's; both dense, same shape. */
void lpv_linear_copy_weights(lpv_linear *dst, const lpv_linear *src);

/* Fraction of weight blocks kept (1 for a dense layer). */
double lpv_linear_density(const lpv_linear *L);

/* Exact GELU 0.5·x·(1 + erf(x/√2)) on n floats in place. */
void lpv_gelu_inplace(float *x, int64_t n);

static inline int lpv_round16(int t) { return (t + 15) & ~15; }

#endif
