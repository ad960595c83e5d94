/*
 * ops.h — the non-GEMM layers of the forward pass on feature-major
 * activations (features x tokens, row stride ld): LayerNorm over features,
 * row softmax, multi-head attention, patch extraction. Each optimized op has
 * a plain reference beside it (suffix _ref) that the tests compare against.
 * No allocation: callers pass scratch buffers (sizes documented per op).
 */
#ifndef LPVIT_OPS_H
#define LPVIT_OPS_H

#include <stdint.h>

/* y[:, t] = (x[:, t] - mean_t) / sqrt(var_t + eps) * w + b for t < T; x, y (D, ld); y may equal x. */
void lpv_layernorm_fm(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps);
/* The same, also recording each column's range for the int8 quantizer (lpv_q8_quantize_x_range, bsr.h):
 * lo[t] = min(0, min_d y[d][t]), hi[t] = max(0, max_d y[d][t]) (NaN ignored) for t < T, 0 for the padding
 * columns [T, round16(T)) when ld holds them. */
void lpv_layernorm_fm_range(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps,
                            float *lo, float *hi);
void lpv_layernorm_fm_ref(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps);
/* Column t's mean and 1 / sqrt(var + eps) over the D features, in double (the references' shared part). */
void lpv_layernorm_moments_ref(const float *x, int D, int ld, int t, float eps, double *mean, double *rstd);
/* The same for a backward pass (grad_ops.h): the portable kernel whatever the ISA, saving each column's mean
 * (T) and 1/std (T). */
void lpv_layernorm_forward_fm(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                              int D, int T, int ld, float eps);

/* Softmax of each of n rows (len values, stride ld), in place. */
void lpv_softmax_rows(float *x, int n, int len, int ld);
void lpv_softmax_rows_ref(float *x, int n, int len, int ld);

/*
 * Multi-head self-attention for B images of T tokens each.
 * qkv (3D, ld): rows q | k | v, heads split inside each (rows h*hd .. h*hd+hd);
 * image b owns columns [b*T, (b+1)*T). out (D, ld) gets softmax(q k^T / sqrt(hd)) v
 * per head, written at the head's rows. scratch: lpv_attention_scratch(T, D / heads) floats
 * per thread, threads of lpv_threads_get().
 */
void lpv_attention_fm(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch);
void lpv_attention_fm_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads);
int64_t lpv_attention_scratch(int T, int hd);
/*
 * The same with BF16 products, the attention of the BF16 precision (lpv_workspace_use_bf16): q k^T and p v
 * from q, k, v and the unnormalized probabilities exp(scale (s - max)) rounded to BF16 (nearest even), FP32
 * sums; the scores' scaling, the softmax and the final 1 / sum stay FP32. Runs the fused avx512bf16 kernel
 * when lpv_attention_bf16_runs(T, hd); otherwise it is lpv_attention_fm (FP32, the same bits). Same scratch.
 * lpv_attention_fm_bf16_ref: plain loops, FP32 sums in key / feature order (the tests' reference).
 */
void lpv_attention_fm_bf16(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch);
void lpv_attention_fm_bf16_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads);
/* 1 when lpv_attention_fm_bf16 runs BF16 for T tokens and head dim hd: ISA avx512bf16 (lpv_isa_get()),
 * hd % 8 == 0 and T >= 16 (where it pays: below, packing the operands costs more than it saves). Below
 * avx512bf16 attention stays FP32, as before BF16 attention existed. */
int lpv_attention_bf16_runs(int T, int hd);
/*
 * The same with int8 products (the int8 precision's attention where this runs: lpv_model.attention,
 * lpv_attention_int8_for in forward.h): q, k
 * symmetric int8 per token (over the head's hd features), v symmetric int8 per feature row (over the image's
 * T tokens), the unnormalized probabilities e = exp(scale (s - max)) in (0, 1] as round(255 e) in uint8 with
 * the fixed scale 1/255; q k^T and p v as int32 sums (q shifted by 128 into uint8 for vpdpbusd and corrected);
 * the scores' scales, the softmax and 1 / sum in FP32. Runs the fused AVX-512 VNNI or AVX-VNNI kernel when
 * lpv_attention_q8_runs(hd); otherwise it is lpv_attention_fm (FP32, the same bits). Same scratch.
 * lpv_attention_fm_q8_ref: plain loops with the same quantization, expf (the tests' reference).
 */
void lpv_attention_fm_q8(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch);
void lpv_attention_fm_q8_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads);
/* 1 when lpv_attention_fm_q8 runs int8: the ISA's int8 kernel (lpv_q8_kernel_for) is AVX-512 VNNI and hd % 8 == 0,
 * or AVX-VNNI and hd % 4 == 0 (the AVX2 kernel's 127-level grid has no int8 attention). */
int lpv_attention_q8_runs(int hd);
/* One (image b, head h) with OpenBLAS: S (T, T) = softmax rows of q^T k / sqrt(hd), then out's head rows (hd, T)
 * = v S^T. S is left holding the probabilities (the backward pass keeps them). */
void lpv_attention_head(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd, float *S);

/*
 * Flattens non-overlapping p x p patches of B images (B, C, S, S) into columns:
 * out (C*p*p, ld) with row (c*p + ky)*p + kx and column b*G*G + gy*G + gx, G = S/p.
 * That makes the patch-embedding convolution one GEMM with weight (D, C*p*p).
 */
void lpv_patchify(float *out, int ld, const float *img, int B, int C, int S, int p);

#endif
