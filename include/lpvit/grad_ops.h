/*
 * grad_ops.h — forward-with-save and backward kernels of the training pass
 * (grad.h) on feature-major activations (features × tokens, row stride ld,
 * image b owning columns [b*T, (b+1)*T); only the first N columns are read or
 * written, padding is left alone). llm.c argument order: outputs first, then
 * inputs, then weights, then sizes. Gradients named d* are accumulated (+=)
 * where the comment says so, overwritten otherwise. Each backward kernel has
 * a plain double-precision reference (suffix _ref) that tests compare against.
 * Nothing allocates: callers pass scratch (sizes documented per kernel).
 * Work is split over lpv_threads_get() OpenMP threads (one when called inside
 * a parallel region); OpenBLAS runs single-threaded inside each.
 */
#ifndef LPVIT_GRAD_OPS_H
#define LPVIT_GRAD_OPS_H

#include <stdint.h>

/* ---- LayerNorm over features ---- */

/* (the forward with saved statistics is lpv_layernorm_forward_fm in ops.h) */
/* dx += ∂/∂x, dw += Σ_t dy·x̂, db += Σ_t dy, given dy (D, ld) and the forward's x, mean, rstd.
   dx may not alias dy. dw/db may be NULL (skipped). */
void lpv_layernorm_backward_fm(float *dx, float *dw, float *db, const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *w, int D, int N, int ld);
void lpv_layernorm_backward_fm_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *w, int D, int N, int ld, float eps);

/* ---- exact GELU ---- */

/* y = gelu(x) = x·Φ(x) (rows, ld); same Φ as the backward below (a vectorizable
   erf: gelu and its derivative within ~2e-7 of exact). y and x do not overlap. */
void lpv_gelu_forward_fm(float *y, const float *x, int rows, int N, int ld);

/* On entry dx (rows, ld) holds ∂L/∂gelu(x); on exit ∂L/∂x = dx · (Φ(x) + x·φ(x)).
   y (rows, ld), optional: receives gelu(x) = x·Φ(x) (recomputed, so the forward need not keep it).
   dx, y and x do not overlap. */
void lpv_gelu_backward_fm(float *dx, float *y, const float *x, int rows, int N, int ld);
void lpv_gelu_backward_fm_ref(float *dx, float *y, const float *x, int rows, int N, int ld);

/* ---- multi-head self-attention ---- */

/* As lpv_attention_fm (ops.h), keeping the softmax probabilities: probs (B*heads, T, T),
   block b*heads + h, row i = query token i. out (D, ld), qkv (3D, ld). */
void lpv_attention_forward_fm(float *out, float *probs, const float *qkv, int ld, int B, int T, int D, int heads);
/* dqkv (3D, ld) = ∂/∂qkv (overwritten, columns < B*T) from dout (D, ld) and the forward's qkv, probs.
   scratch: lpv_attention_backward_scratch(T) floats per thread of lpv_threads_get(). */
void lpv_attention_backward_fm(float *dqkv, const float *dout, const float *qkv, const float *probs, int ld, int B,
                               int T, int D, int heads, float *scratch);
int64_t lpv_attention_backward_scratch(int T);
/* Recomputes the probabilities from qkv in double. */
void lpv_attention_backward_fm_ref(float *dqkv, const float *dout, const float *qkv, int ld, int B, int T, int D,
                                   int heads);

/* ---- linear Y (out, N) = W (out, in) · X (in, N) + b ---- */

/*
 * dX (in, ld): = Wᵀ dY (dx_acc 0) or += Wᵀ dY (dx_acc 1); NULL skips it.
 * dW (out, in) += dY Xᵀ and db (out) += row sums of dY; either may be NULL.
 * X, dX and dY share the row stride ld.
 */
void lpv_linear_backward(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W, int out,
                         int in, int N, int ld, int dx_acc);
void lpv_linear_backward_ref(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W,
                             int out, int in, int N, int ld, int dx_acc);
/*
 * Per-sample weight gradients: S samples of `cols` consecutive columns each. With
 * G_s = dY_s X_sᵀ (sample s's columns only): dW += Σ_s G_s, sq += Σ_s (scale·G_s)²,
 * db += row sums of dY (db and dW may be NULL: dW NULL skips the sum). tmp: out*in floats.
 */
void lpv_linear_backward_persample(float *dW, float *db, float *sq, float *tmp, const float *dY, const float *X,
                                   int out, int in, int S, int cols, int ld, float scale);
/* The same, plus per-block second moments when bsq != NULL: for every sample n and every R x C block b of W,
 * bsq[b] += (scale · Σ_{ij in b} G_n,ij W_ij)², G_n the sample's gradient — the exact empirical-Fisher
 * quadratic form of zeroing the block (within-block correlations included). sq may be NULL. With bsq, tmp
 * holds lpv_persample_tmp_floats(out, in, threads) floats for a team of `threads`. Each block's sum is
 * taken column by column in float over its R rows, then across its columns in double. */
void lpv_linear_backward_persample_blocks(float *dW, float *db, float *sq, float *bsq, const float *W, int R, int C,
                                          float *tmp, const float *dY, const float *X, int out, int in, int S, int cols,
                                          int ld, float scale);
/* The scratch lpv_linear_backward_persample_blocks needs: the gradient, and one weight row per thread. */
int64_t lpv_persample_tmp_floats(int out, int in, int threads);

#endif
