/*
 * ops_simd.c — AVX-512 / AVX2 versions of the softmax and LayerNorm kernels
 * (see src/ops_internal.h). Each function carries its own target attribute;
 * src/ops.c only calls one when lpv_isa_get() allows it.
 *
 * Softmax uses vmath.h's exp on (-inf, 0] (relative error ~1e-7, like expf).
 * LayerNorm keeps one running sum per column of a 64-column band in four zmm
 * registers while it walks the D feature rows: every load is a contiguous
 * 256-byte run, and the three passes (mean, variance, normalize) stay in L2.
 */
#include <immintrin.h>
#include <math.h>

#include "ops_internal.h"
#include "vmath.h"

/* ---- softmax ---- */

LPV_TARGET_AVX512 static void softmax_row16(float *r, int len) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mx = ninf;
    int j = 0;
    for (; j + 16 <= len; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(r + j));
    __mmask16 tail = (__mmask16)((1u << (len - j)) - 1u);
    if (tail) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tail, r + j));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= len; j += 16) {
        __m512 e = lpv__exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(r + j), m));
        _mm512_storeu_ps(r + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (tail) {
        __m512 e = lpv__exp_neg16(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, tail, r + j), m));
        _mm512_mask_storeu_ps(r + j, tail, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (j = 0; j + 16 <= len; j += 16) _mm512_storeu_ps(r + j, _mm512_mul_ps(_mm512_loadu_ps(r + j), inv));
    if (tail) _mm512_mask_storeu_ps(r + j, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, r + j), inv));
}

LPV_TARGET_AVX512 void lpv__softmax_rows_avx512(float *x, int n, int len, int ld) {
    for (int i = 0; i < n; i++) softmax_row16(x + (long)i * ld, len);
}

LPV_TARGET_AVX2 static float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

LPV_TARGET_AVX2 static float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

LPV_TARGET_AVX2 static void softmax_row8(float *r, int len) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int j = 0, full = len & ~7;
    for (; j < full; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(r + j));
    float m = hmax8(mx);
    for (; j < len; j++) m = r[j] > m ? r[j] : m;
    __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    for (j = 0; j < full; j += 8) {
        __m256 e = lpv__exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(r + j), mv));
        _mm256_storeu_ps(r + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    float s = hsum8(sum);
    for (; j < len; j++) s += (r[j] = lpv__exp_neg_s(r[j] - m));
    float inv = 1.0f / s;
    __m256 iv = _mm256_set1_ps(inv);
    for (j = 0; j < full; j += 8) _mm256_storeu_ps(r + j, _mm256_mul_ps(_mm256_loadu_ps(r + j), iv));
    for (; j < len; j++) r[j] *= inv;
}

LPV_TARGET_AVX2 void lpv__softmax_rows_avx2(float *x, int n, int len, int ld) {
    for (int i = 0; i < n; i++) softmax_row8(x + (long)i * ld, len);
}

/* ---- LayerNorm over features, 64-column bands ---- */

LPV_TARGET_AVX512 void lpv__layernorm_band_avx512(float *y, const float *x, const float *w, const float *b, int D,
                                                  int t0, int n, int ld, float eps) {
    __mmask16 m[4];
    for (int k = 0; k < 4; k++) {
        int c = n - 16 * k;
        m[k] = c >= 16 ? (__mmask16)0xffff : c <= 0 ? 0 : (__mmask16)((1u << c) - 1u);
    }
    __m512 s[4], v[4];
    for (int k = 0; k < 4; k++) s[k] = v[k] = _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        const float *xr = x + (long)d * ld + t0;
        for (int k = 0; k < 4; k++) s[k] = _mm512_add_ps(s[k], _mm512_maskz_loadu_ps(m[k], xr + 16 * k));
    }
    __m512 invD = _mm512_set1_ps(1.0f / (float)D);
    for (int k = 0; k < 4; k++) s[k] = _mm512_mul_ps(s[k], invD); /* mean */
    for (int d = 0; d < D; d++) {
        const float *xr = x + (long)d * ld + t0;
        for (int k = 0; k < 4; k++) {
            __m512 c = _mm512_sub_ps(_mm512_maskz_loadu_ps(m[k], xr + 16 * k), s[k]);
            v[k] = _mm512_fmadd_ps(c, c, v[k]);
        }
    }
    __m512 ve = _mm512_set1_ps(eps);
    for (int k = 0; k < 4; k++) /* rstd, with a real division and sqrt, not rsqrt14 */
        v[k] = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_fmadd_ps(v[k], invD, ve)));
    for (int d = 0; d < D; d++) {
        const float *xr = x + (long)d * ld + t0;
        float *yr = y + (long)d * ld + t0;
        __m512 wd = _mm512_set1_ps(w[d]), bd = _mm512_set1_ps(b[d]);
        for (int k = 0; k < 4; k++) {
            if (!m[k]) break;
            __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m[k], xr + 16 * k), s[k]), v[k]);
            _mm512_mask_storeu_ps(yr + 16 * k, m[k], _mm512_fmadd_ps(c, wd, bd));
        }
    }
}
