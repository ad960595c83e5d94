/*
 * ops_internal.h — ISA-specific kernels behind include/lpvit/ops.h, chosen
 * at run time from lpv_isa_get() by src/engine/ops.c. Same contracts as the public
 * ops; n <= LPV_LN_BAND columns per LayerNorm band.
 */
#ifndef LPVIT_OPS_INTERNAL_H
#define LPVIT_OPS_INTERNAL_H

#include <stdint.h>

#define LPV_LN_BAND 64

void lpv__softmax_rows_avx512(float *x, int n, int len, int ld);
void lpv__softmax_rows_avx2(float *x, int n, int len, int ld);
/* lo, hi (indexed by column, or NULL): each column's min(0, min y) and max(0, max y), for the int8 quantizer. */
void lpv__layernorm_band_avx512(float *y, const float *x, const float *w, const float *b, int D, int t0, int n,
                                int ld, float eps, float *lo, float *hi);
void lpv__layernorm_band_avx2(float *y, const float *x, const float *w, const float *b, int D, int t0, int n, int ld,
                              float eps, float *lo, float *hi);

/* Fused attention for one (image b, head h), hd % 8 == 0; scratch of lpv__attention_scratch_avx512(T, hd).
   (nb, nh): the unit the caller runs next, prefetched meanwhile; nb < 0 for none. */
void lpv__attention_head_avx512(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                float *scratch, int nb, int nh);
int64_t lpv__attention_scratch_avx512(int T, int hd);

/* The same in BF16 (avx512bf16): q, k, v and the unnormalized probabilities rounded to BF16, FP32 sums;
   hd % 8 == 0; scratch of lpv__attention_scratch_avx512bf16(T, hd) floats. */
void lpv__attention_head_avx512bf16(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                    float *scratch, int nb, int nh);
int64_t lpv__attention_scratch_avx512bf16(int T, int hd);

/* The same in int8 (AVX-512 VNNI): q, k per token and v per feature row symmetric int8, the unnormalized
   probabilities as round(255 e) in u8; int32 sums; hd % 8 == 0; scratch of lpv__attention_scratch_q8(T, hd). */
void lpv__attention_head_q8(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd, float *scratch,
                            int nb, int nh);
int64_t lpv__attention_scratch_q8(int T, int hd);

/* The same rules on AVX-VNNI (vpdpbusd on ymm), the AVX2 kernel's tiles; hd % 4 == 0; scratch of
   lpv__attention_scratch_q8y(T, hd). */
void lpv__attention_head_q8y(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd, float *scratch,
                             int nb, int nh);
int64_t lpv__attention_scratch_q8y(int T, int hd);

/* The same on AVX2 for (image b, head h), hd % 4 == 0; scratch of lpv__attention_scratch_avx2(T, hd). */
void lpv__attention_head_avx2(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd, float *scratch,
                              int nb, int nh);
int64_t lpv__attention_scratch_avx2(int T, int hd);

#endif
