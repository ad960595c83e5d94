/*
 * linear.h — the one place a linear layer runs, dense (OpenBLAS) or block
 * sparse (BSR), with its epilogue fused: bias, exact GELU, or accumulate into
 * the output (the residual add).
 *
 * Activations and epilogues follow layout.h:
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

#include "lpvit/bsr.h"
#include "lpvit/layout.h"

typedef struct lpv_linear {
    int out, in;
    float *w;            /* (out, in) dense weight; NULL when only bsr is set */
    float *b;            /* (out) or NULL */
    struct lpv_bsr *bsr; /* block-sparse form; when set, forward uses it */
    struct lpv_bsr *blocked; /* the dense w again, every block kept, in the BSR kernel's
                              * layout: forward prefers it to OpenBLAS (lpv_model_pack_dense).
                              * A copy: whoever changes w afterwards must drop it. */
    lpv_qact qx;         /* int8 layers (bsr or blocked with int8 weights, lpv_model_quantize_int8): how the
                          * input is quantized (per token at run time, or a calibrated per-tensor scale) */
    const float *codebook; /* (codebook_k) the levels every weight is one of (codebook.h), or NULL; saving
                            * writes codes only when every weight still is one of them */
    int codebook_k;
    const float *codebook_scale; /* (out) with a codebook: weight = codebook_scale[row] * level, or NULL (= 1) */
} lpv_linear;

/* Y = epi(W X + b), X (in, T) with row stride ldx, Y (out, T) with row stride ldy.
 * Runs bsr if set, else blocked if set, else OpenBLAS. */
void lpv_linear_forward(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);
/* The BF16 path: X2 is the input as BF16 pairs (lpv_bf16_pack_x, bsr.h) with row stride ldx; runs the layer's
 * BSR weights, or its blocked dense copy, in their BF16 pack. Only for a layer with lpv_linear_has_bf16. */
void lpv_linear_forward_bf16(const lpv_linear *L, const uint32_t *X2, int ldx, float *Y, int ldy, int T, int epi);
/* 1 when the layer has a BF16 pack (lpv_model_pack_bf16, model.h). */
int lpv_linear_has_bf16(const lpv_linear *L);
/* In BF16 when X2 is given (scratch for X as pairs, ((in + 1) / 2, ldx)) and the layer has a pack: X is
 * converted into X2, then lpv_linear_forward_bf16; else lpv_linear_forward on X. */
void lpv_linear_forward_pick(const lpv_linear *L, const float *X, uint32_t *X2, int ldx, float *Y, int ldy, int T,
                             int epi);

/* The int8 path (bsr.h): X is quantized by L->qx into X4 ((in + 3) / 4, ldx) with per-column xa, xc (scratch of
 * the readable columns), then the layer's int8 weights run. Only for a layer with lpv_linear_has_int8. */
void lpv_linear_forward_q8(const lpv_linear *L, const float *X, int ldx, uint32_t *X4, float *xa, float *xc, float *Y,
                           int ldy, int T, int epi);
/* The layer's BSR weights (or blocked copy) when they carry int8 weights, else NULL. */
const lpv_bsr *lpv_linear_int8_weights(const lpv_linear *L);
/* 1 when lpv_linear_int8_weights is not NULL. */
int lpv_linear_has_int8(const lpv_linear *L);
/* Replaces an FP32 layer's weights by W (out, in): the dense w and/or the BSR layer's kept blocks (W's pruned
 * blocks are ignored), repacked; a blocked dense pack is dropped (lpv_model_pack_dense makes it again). */
void lpv_linear_set_weights(lpv_linear *L, const float *W);

/* Dense path with OpenBLAS, whatever L->bsr says (the baseline bench compares against). */
void lpv_linear_forward_dense(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);
/* Naive triple loop with the same contract (reference for tests). */
void lpv_linear_forward_ref(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi);

/* dst's dense w (and b, when dst has one) <- src's; both dense, same shape. */
void lpv_linear_copy_weights(lpv_linear *dst, const lpv_linear *src);

/* Fraction of weight blocks kept (1 for a dense layer). */
double lpv_linear_density(const lpv_linear *L);

/* Exact GELU 0.5·x·(1 + erf(x/√2)) on n floats in place. */
void lpv_gelu_inplace(float *x, int64_t n);

#endif
