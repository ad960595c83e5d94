/*
 * ops.c — LayerNorm, softmax, attention and patch extraction on
 * feature-major activations (see include/lpvit/ops.h).
 *
 * Feature-major makes LayerNorm a column reduction: walking the D rows of a
 * band of columns keeps one running sum per column in registers, and each row
 * read is contiguous. Attention runs per (image, head): with AVX-512 (and
 * head dim % 8 == 0) as one fused kernel (src/engine/kernels/ops_simd.c), otherwise with
 * OpenBLAS for q^T k and v p^T around a row softmax, the (T, T) score matrix
 * in a per-thread scratch. In BF16 mode (lpv_attention_fm_bf16) the fused kernel's
 * avx512bf16 twin runs instead where it pays (lpv_attention_bf16_runs).
 */
#include "lpvit/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/layout.h"
#include "lpvit/safetensors.h"
#include "engine/kernels/ops_internal.h"

/* ---- LayerNorm ---- */

#define LN_BAND LPV_LN_BAND /* columns normalized together */

/* Columns [t0, t0 + n) of one band; mean_out / rstd_out, lo / hi (indexed by column) may be NULL. */
static void layernorm_band(float *y, float *mean_out, float *rstd_out, const float *x, const float *w, const float *b,
                           int D, int t0, int n, int ld, float eps, float *lo, float *hi) {
    float mean[LN_BAND], rstd[LN_BAND];
    for (int j = 0; j < n; j++) mean[j] = 0.0f, rstd[j] = 0.0f;
    for (int d = 0; d < D; d++) {
        const float *xr = x + (int64_t)d * ld + t0;
        for (int j = 0; j < n; j++) mean[j] += xr[j];
    }
    for (int j = 0; j < n; j++) mean[j] /= (float)D;
    /* two-pass variance: exact enough for activations far from zero mean */
    for (int d = 0; d < D; d++) {
        const float *xr = x + (int64_t)d * ld + t0;
        for (int j = 0; j < n; j++) {
            float c = xr[j] - mean[j];
            rstd[j] += c * c;
        }
    }
    for (int j = 0; j < n; j++) rstd[j] = 1.0f / sqrtf(rstd[j] / (float)D + eps);
    for (int d = 0; d < D; d++) {
        const float *xr = x + (int64_t)d * ld + t0;
        float *yr = y + (int64_t)d * ld + t0;
        float wd = w[d], bd = b[d];
        for (int j = 0; j < n; j++) yr[j] = (xr[j] - mean[j]) * rstd[j] * wd + bd;
    }
    for (int j = 0; mean_out && j < n; j++) mean_out[t0 + j] = mean[j], rstd_out[t0 + j] = rstd[j];
    if (!lo) return;
    for (int j = 0; j < n; j++) lo[t0 + j] = 0.0f, hi[t0 + j] = 0.0f;
    for (int d = 0; d < D; d++) {
        const float *yr = y + (int64_t)d * ld + t0;
        for (int j = 0; j < n; j++) {
            lo[t0 + j] = yr[j] < lo[t0 + j] ? yr[j] : lo[t0 + j]; /* a NaN never replaces the running value */
            hi[t0 + j] = yr[j] > hi[t0 + j] ? yr[j] : hi[t0 + j];
        }
    }
}

void lpv_layernorm_fm_range(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps,
                            float *lo, float *hi) {
    int nbands = (T + LN_BAND - 1) / LN_BAND;
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int i = 0; i < nbands; i++) {
        int t0 = i * LN_BAND, n = T - t0 < LN_BAND ? T - t0 : LN_BAND;
        lpv_isa isa = lpv_isa_fp32(lpv_isa_get());
        if (isa == LPV_ISA_AVX512) lpv__layernorm_band_avx512(y, x, w, b, D, t0, n, ld, eps, lo, hi);
        else if (isa == LPV_ISA_AVX2) lpv__layernorm_band_avx2(y, x, w, b, D, t0, n, ld, eps, lo, hi);
        else layernorm_band(y, NULL, NULL, x, w, b, D, t0, n, ld, eps, lo, hi);
    }
    for (int t = T; lo && t < lpv_round16(T) && t < ld; t++) lo[t] = 0.0f, hi[t] = 0.0f; /* padding: a defined range */
}

void lpv_layernorm_fm(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps) {
    lpv_layernorm_fm_range(y, x, w, b, D, T, ld, eps, NULL, NULL);
}

void lpv_layernorm_forward_fm(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                              int D, int T, int ld, float eps) {
    int nbands = (T + LN_BAND - 1) / LN_BAND;
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int i = 0; i < nbands; i++) {
        int t0 = i * LN_BAND, n = T - t0 < LN_BAND ? T - t0 : LN_BAND;
        layernorm_band(y, mean, rstd, x, w, b, D, t0, n, ld, eps, NULL, NULL);
    }
}

void lpv_layernorm_moments_ref(const float *x, int D, int ld, int t, float eps, double *mean, double *rstd) {
    double m = 0, v = 0;
    for (int d = 0; d < D; d++) m += x[(int64_t)d * ld + t];
    m /= D;
    for (int d = 0; d < D; d++) {
        double c = x[(int64_t)d * ld + t] - m;
        v += c * c;
    }
    *mean = m, *rstd = 1.0 / sqrt(v / D + eps);
}

void lpv_layernorm_fm_ref(float *y, const float *x, const float *w, const float *b, int D, int T, int ld, float eps) {
    for (int t = 0; t < T; t++) {
        double m, r;
        lpv_layernorm_moments_ref(x, D, ld, t, eps, &m, &r);
        for (int d = 0; d < D; d++)
            y[(int64_t)d * ld + t] = (float)((x[(int64_t)d * ld + t] - m) * r * w[d] + b[d]);
    }
}

/* ---- softmax ---- */

void lpv_softmax_rows(float *x, int n, int len, int ld) {
    lpv_isa isa = lpv_isa_fp32(lpv_isa_get());
    if (isa == LPV_ISA_AVX512) {
        lpv__softmax_rows_avx512(x, n, len, ld);
        return;
    }
    if (isa == LPV_ISA_AVX2) {
        lpv__softmax_rows_avx2(x, n, len, ld);
        return;
    }
    for (int i = 0; i < n; i++) {
        float *r = x + (int64_t)i * ld, mx = -INFINITY, s = 0.0f;
        for (int j = 0; j < len; j++) mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < len; j++) {
            r[j] = expf(r[j] - mx);
            s += r[j];
        }
        float inv = 1.0f / s;
        for (int j = 0; j < len; j++) r[j] *= inv;
    }
}

void lpv_softmax_rows_ref(float *x, int n, int len, int ld) {
    for (int i = 0; i < n; i++) {
        float *r = x + (int64_t)i * ld;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < len; j++) mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < len; j++) s += exp((double)r[j] - mx);
        for (int j = 0; j < len; j++) r[j] = (float)(exp((double)r[j] - mx) / s);
    }
}

/* ---- attention ---- */

int64_t lpv_attention_scratch(int T, int hd) {
    int64_t n = (int64_t)T * T + 64; /* OpenBLAS's score matrix */
    int64_t fused[5] = {lpv__attention_scratch_avx512(T, hd), lpv__attention_scratch_avx2(T, hd),
                        lpv__attention_scratch_avx512bf16(T, hd), lpv__attention_scratch_q8(T, hd),
                        lpv__attention_scratch_q8y(T, hd)};
    for (int i = 0; i < 5; i++) n = fused[i] > n ? fused[i] : n;
    return n;
}

void lpv_attention_head(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd, float *S) {
    int64_t col = (int64_t)b * T;
    const float *q = qkv + (int64_t)h * hd * ld + col;
    const float *k = qkv + (int64_t)(D + h * hd) * ld + col;
    const float *v = qkv + (int64_t)(2 * D + h * hd) * ld + col;
    float *o = out + (int64_t)h * hd * ld + col;
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, hd, scale, q, ld, k, ld, 0.0f, S, T);
    lpv_softmax_rows(S, T, T, T);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hd, T, T, 1.0f, v, ld, S, T, 0.0f, o, ld);
}

/* Which kernel runs every (image, head) of one attention call. */
typedef enum { ATT_BLAS, ATT_AVX2, ATT_AVX512, ATT_AVX512BF16, ATT_Q8, ATT_Q8Y } att_kernel;

static att_kernel fp32_kernel(int hd) {
    lpv_isa isa = lpv_isa_fp32(lpv_isa_get());
    if (isa == LPV_ISA_AVX512 && hd % 8 == 0) return ATT_AVX512;
    if (isa == LPV_ISA_AVX2 && hd % 4 == 0) return ATT_AVX2;
    return ATT_BLAS;
}

/* The B * heads units split over the threads in a static round robin: each thread knows its next unit
 * and the fused kernels prefetch it. */
static void attention_units(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch,
                            att_kernel kern) {
    int hd = D / heads, n = B * heads;
    int nt = omp_in_parallel() ? 1 : lpv_threads_get();
    int64_t per = lpv_attention_scratch(T, hd);
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), step = omp_get_num_threads();
        float *S = scratch + per * id;
        for (int i = id; i < n; i += step) {
            int j = i + step < n ? i + step : -1, b = i / heads, h = i % heads;
            int nb = j < 0 ? -1 : j / heads, nh = j < 0 ? 0 : j % heads;
            if (kern == ATT_Q8) lpv__attention_head_q8(out, qkv, ld, b, h, T, D, hd, S, nb, nh);
            else if (kern == ATT_Q8Y) lpv__attention_head_q8y(out, qkv, ld, b, h, T, D, hd, S, nb, nh);
            else if (kern == ATT_AVX512BF16) lpv__attention_head_avx512bf16(out, qkv, ld, b, h, T, D, hd, S, nb, nh);
            else if (kern == ATT_AVX512) lpv__attention_head_avx512(out, qkv, ld, b, h, T, D, hd, S, nb, nh);
            else if (kern == ATT_AVX2) lpv__attention_head_avx2(out, qkv, ld, b, h, T, D, hd, S, nb, nh);
            else lpv_attention_head(out, qkv, ld, b, h, T, D, hd, S);
        }
    }
}

void lpv_attention_fm(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch) {
    attention_units(out, qkv, ld, B, T, D, heads, scratch, fp32_kernel(D / heads));
}

/* Where BF16 pays (tests/bench/bench_attention --sweep, Zen 4): 1.2x the FP32 kernel at T = 17, 1.7x at
 * T = 197; below 16 tokens packing the operands costs more than the halved products save (0.8x at T = 1). */
#define ATT_BF16_MIN_T 16

int lpv_attention_bf16_runs(int T, int hd) {
    return lpv_isa_get() >= LPV_ISA_AVX512BF16 && hd % 8 == 0 && T >= ATT_BF16_MIN_T;
}

void lpv_attention_fm_bf16(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch) {
    int hd = D / heads;
    attention_units(out, qkv, ld, B, T, D, heads, scratch, lpv_attention_bf16_runs(T, hd) ? ATT_AVX512BF16 : fp32_kernel(hd));
}

/* The int8 attention kernel of the ISA's int8 kernel (the 127-level AVX2 one has none), or the FP32 one. */
static att_kernel q8_kernel(int hd) {
    lpv_q8_kernel k = lpv_q8_kernel_for(lpv_isa_get());
    if (k == LPV_Q8_VNNI && hd % 8 == 0) return ATT_Q8;
    if (k == LPV_Q8_AVXVNNI && hd % 4 == 0) return ATT_Q8Y;
    return fp32_kernel(hd);
}

int lpv_attention_q8_runs(int hd) {
    att_kernel k = q8_kernel(hd);
    return k == ATT_Q8 || k == ATT_Q8Y;
}

void lpv_attention_fm_q8(float *out, const float *qkv, int ld, int B, int T, int D, int heads, float *scratch) {
    attention_units(out, qkv, ld, B, T, D, heads, scratch, q8_kernel(D / heads));
}

/* Symmetric int8 codes of n values x[i·stride] with one scale (max |x| / 127; 0 and codes 0 for all zeros). */
static float q8_sym(const float *x, int64_t stride, int n, int *c) {
    float mx = 0.0f;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, fabsf(x[i * stride]));
    float s = mx / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (int i = 0; i < n; i++) {
        float u = nearbyintf(x[i * stride] * inv);
        c[i] = u > 127.0f ? 127 : u < -127.0f ? -127 : (int)u;
    }
    return s;
}

void lpv_attention_fm_q8_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads) {
    int hd = D / heads;
    float scale = 1.0f / sqrtf((float)hd);
    int *kc = malloc(sizeof(int) * (size_t)T * hd), *vc = malloc(sizeof(int) * (size_t)T * hd);
    int *qc = malloc(sizeof(int) * (size_t)hd), *p = malloc(sizeof(int) * (size_t)T);
    float *sk = malloc(sizeof(float) * (size_t)T), *sv = malloc(sizeof(float) * (size_t)hd);
    float *s = malloc(sizeof(float) * (size_t)T);
    if (kc && vc && qc && p && sk && sv && s)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < heads; h++) {
                const float *q = qkv + (int64_t)h * hd * ld + (int64_t)b * T;
                const float *k = q + (int64_t)D * ld, *v = q + (int64_t)2 * D * ld;
                for (int j = 0; j < T; j++) sk[j] = q8_sym(k + j, ld, hd, kc + (int64_t)j * hd); /* per key */
                for (int d = 0; d < hd; d++) sv[d] = q8_sym(v + (int64_t)d * ld, 1, T, vc + (int64_t)d * T);
                for (int i = 0; i < T; i++) {
                    float sq = q8_sym(q + i, ld, hd, qc), mx = -INFINITY, sum = 0.0f;
                    for (int j = 0; j < T; j++) { /* Σ (q8 + 128) k8 − 128 Σ k8 = Σ q8 k8, as the kernel */
                        int32_t acc = 0;
                        for (int d = 0; d < hd; d++) acc += qc[d] * kc[(int64_t)j * hd + d];
                        s[j] = (float)acc * (sq * sk[j]);
                        mx = s[j] > mx ? s[j] : mx;
                    }
                    for (int j = 0; j < T; j++) {
                        float e = expf(scale * (s[j] - mx));
                        sum += e;
                        p[j] = (int)nearbyintf(255.0f * e);
                    }
                    for (int d = 0; d < hd; d++) {
                        int32_t acc = 0;
                        for (int j = 0; j < T; j++) acc += p[j] * vc[(int64_t)d * T + j];
                        out[(int64_t)(h * hd + d) * ld + (int64_t)b * T + i] = (float)acc * (sv[d] / 255.0f) / sum;
                    }
                }
            }
    free(kc), free(vc), free(qc), free(p), free(sk), free(sv), free(s);
}

static float bf16_round(float x) { return lpv_bf16_to_f32(lpv_bf16_from_f32(x)); }

void lpv_attention_fm_bf16_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads) {
    int hd = D / heads;
    float scale = 1.0f / sqrtf((float)hd), *s = malloc(sizeof(float) * (size_t)T);
    if (!s) return;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            const float *q = qkv + (int64_t)h * hd * ld + (int64_t)b * T;
            const float *k = q + (int64_t)D * ld, *v = q + (int64_t)2 * D * ld;
            for (int i = 0; i < T; i++) {
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < T; j++) { /* s_j = q_i . k_j */
                    float acc = 0.0f;
                    for (int d = 0; d < hd; d++) acc += bf16_round(q[(int64_t)d * ld + i]) * bf16_round(k[(int64_t)d * ld + j]);
                    s[j] = acc;
                    mx = acc > mx ? acc : mx;
                }
                for (int j = 0; j < T; j++) sum += (s[j] = expf(scale * (s[j] - mx))); /* unrounded sum */
                for (int d = 0; d < hd; d++) {
                    float acc = 0.0f;
                    for (int j = 0; j < T; j++) acc += bf16_round(s[j]) * bf16_round(v[(int64_t)d * ld + j]);
                    out[(int64_t)(h * hd + d) * ld + (int64_t)b * T + i] = acc / sum;
                }
            }
        }
    free(s);
}

void lpv_attention_fm_ref(float *out, const float *qkv, int ld, int B, int T, int D, int heads) {
    int hd = D / heads;
    double *s = malloc(sizeof(double) * (size_t)T);
    if (!s) return;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < T; i++) {
                int64_t ci = (int64_t)b * T + i;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    int64_t cj = (int64_t)b * T + j;
                    double acc = 0;
                    for (int d = 0; d < hd; d++)
                        acc += (double)qkv[(int64_t)(h * hd + d) * ld + ci] * qkv[(int64_t)(D + h * hd + d) * ld + cj];
                    s[j] = acc / sqrt((double)hd);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++)
                        acc += s[j] * qkv[(int64_t)(2 * D + h * hd + d) * ld + (int64_t)b * T + j];
                    out[(int64_t)(h * hd + d) * ld + ci] = (float)(acc / sum);
                }
            }
    free(s);
}

/* ---- patches ---- */

void lpv_patchify(float *out, int ld, const float *img, int B, int C, int S, int p) {
    int G = S / p;
    int nt = omp_in_parallel() ? 1 : lpv_threads_get();
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static)
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < p; ky++)
            for (int kx = 0; kx < p; kx++) {
                float *row = out + (int64_t)((c * p + ky) * p + kx) * ld;
                for (int b = 0; b < B; b++) {
                    const float *im = img + ((int64_t)b * C + c) * S * S;
                    float *r = row + (int64_t)b * G * G;
                    for (int gy = 0; gy < G; gy++) {
                        const float *src = im + (int64_t)(gy * p + ky) * S + kx;
                        for (int gx = 0; gx < G; gx++) r[gy * G + gx] = src[gx * p];
                    }
                }
            }
}
