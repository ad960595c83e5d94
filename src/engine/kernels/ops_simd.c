/*
 * ops_simd.c — AVX-512 / AVX2 versions of the softmax and LayerNorm kernels, the fused attention
 * and its BF16 twin (avx512bf16) (see src/engine/kernels/ops_internal.h). Each function carries its own target attribute;
 * src/engine/ops.c only calls one when lpv_isa_get() allows it.
 *
 * Softmax uses vmath.h's exp on (-inf, 0] (relative error ~1e-7, like expf).
 * LayerNorm walks a 64-column band as four 16-column strips; each strip's
 * three passes (mean, variance, normalize) stay in L1.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

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

/* ---- LayerNorm over features, 16-column strips ----
 *
 * A strip of 16 columns by D rows (24 KB at D = 384) stays in L1 for all
 * three passes, so only the first pass reads L2. Four accumulators per pass
 * (rows d, d+1, d+2, d+3) hide the add/FMA latency.
 */

LPV_TARGET_AVX512 static void layernorm_strip16(float *y, const float *x, const float *w, const float *b, int D, int ld,
                                                __mmask16 m, float eps, float *lo, float *hi) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int d = 0;
    for (; d + 4 <= D; d += 4) {
        const float *xr = x + (long)d * ld;
        s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, xr));
        s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m, xr + ld));
        s2 = _mm512_add_ps(s2, _mm512_maskz_loadu_ps(m, xr + 2L * ld));
        s3 = _mm512_add_ps(s3, _mm512_maskz_loadu_ps(m, xr + 3L * ld));
    }
    for (; d < D; d++) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, x + (long)d * ld));
    __m512 invD = _mm512_set1_ps(1.0f / (float)D);
    __m512 mean = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)), invD);
    /* two-pass variance: exact enough for activations far from zero mean */
    s0 = s1 = s2 = s3 = _mm512_setzero_ps();
    for (d = 0; d + 4 <= D; d += 4) {
        const float *xr = x + (long)d * ld;
        __m512 c0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr), mean);
        __m512 c1 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + ld), mean);
        __m512 c2 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + 2L * ld), mean);
        __m512 c3 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + 3L * ld), mean);
        s0 = _mm512_fmadd_ps(c0, c0, s0), s1 = _mm512_fmadd_ps(c1, c1, s1);
        s2 = _mm512_fmadd_ps(c2, c2, s2), s3 = _mm512_fmadd_ps(c3, c3, s3);
    }
    for (; d < D; d++) {
        __m512 c = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + (long)d * ld), mean);
        s0 = _mm512_fmadd_ps(c, c, s0);
    }
    __m512 var = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
    /* rstd, with a real division and sqrt, not rsqrt14 */
    __m512 rstd = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_fmadd_ps(var, invD, _mm512_set1_ps(eps))));
    if (lo) { /* the output's range too (min_ps / max_ps keep the running value against a NaN) */
        __m512 mn = _mm512_setzero_ps(), mx = mn;
        for (d = 0; d < D; d++) {
            __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + (long)d * ld), mean), rstd);
            __m512 v = _mm512_fmadd_ps(c, _mm512_set1_ps(w[d]), _mm512_set1_ps(b[d]));
            _mm512_mask_storeu_ps(y + (long)d * ld, m, v);
            mn = _mm512_min_ps(v, mn), mx = _mm512_max_ps(v, mx);
        }
        _mm512_mask_storeu_ps(lo, m, mn), _mm512_mask_storeu_ps(hi, m, mx);
        return;
    }
    for (d = 0; d < D; d++) {
        __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + (long)d * ld), mean), rstd);
        _mm512_mask_storeu_ps(y + (long)d * ld, m, _mm512_fmadd_ps(c, _mm512_set1_ps(w[d]), _mm512_set1_ps(b[d])));
    }
}

LPV_TARGET_AVX512 void lpv__layernorm_band_avx512(float *y, const float *x, const float *w, const float *b, int D,
                                                  int t0, int n, int ld, float eps, float *lo, float *hi) {
    for (int j = 0; j < n; j += 16) {
        int c = n - j;
        __mmask16 m = c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << c) - 1u);
        layernorm_strip16(y + t0 + j, x + t0 + j, w, b, D, ld, m, eps, lo ? lo + t0 + j : NULL, hi ? hi + t0 + j : NULL);
    }
}

/* The same three passes on 8-column strips (AVX2), the last strip masked: vmaskmovps only there (full = 0), as
 * a masked load costs more than a plain one (the AVX2 attention's took 8-20 % of its time on AMD Zen 5; this
 * op's share of the forward is too small to time the change apart). */
#define LN8_LD(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m))
LPV_VINLINE LPV_TARGET_AVX2 void layernorm_strip8(float *y, const float *x, const float *w, const float *b, int D,
                                                  int ld, int n, int full, float eps, float *lo, float *hi) {
    const __m256i m = lpv__lane_mask8(n);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int d = 0;
    for (; d + 4 <= D; d += 4) {
        const float *xr = x + (long)d * ld;
        s0 = _mm256_add_ps(s0, LN8_LD(xr));
        s1 = _mm256_add_ps(s1, LN8_LD(xr + ld));
        s2 = _mm256_add_ps(s2, LN8_LD(xr + 2L * ld));
        s3 = _mm256_add_ps(s3, LN8_LD(xr + 3L * ld));
    }
    for (; d < D; d++) s0 = _mm256_add_ps(s0, LN8_LD(x + (long)d * ld));
    __m256 invD = _mm256_set1_ps(1.0f / (float)D);
    __m256 mean = _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)), invD);
    s0 = s1 = s2 = s3 = _mm256_setzero_ps();
    for (d = 0; d + 4 <= D; d += 4) {
        const float *xr = x + (long)d * ld;
        __m256 c0 = _mm256_sub_ps(LN8_LD(xr), mean);
        __m256 c1 = _mm256_sub_ps(LN8_LD(xr + ld), mean);
        __m256 c2 = _mm256_sub_ps(LN8_LD(xr + 2L * ld), mean);
        __m256 c3 = _mm256_sub_ps(LN8_LD(xr + 3L * ld), mean);
        s0 = _mm256_fmadd_ps(c0, c0, s0), s1 = _mm256_fmadd_ps(c1, c1, s1);
        s2 = _mm256_fmadd_ps(c2, c2, s2), s3 = _mm256_fmadd_ps(c3, c3, s3);
    }
    for (; d < D; d++) {
        __m256 c = _mm256_sub_ps(LN8_LD(x + (long)d * ld), mean);
        s0 = _mm256_fmadd_ps(c, c, s0);
    }
    __m256 var = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m256 rstd = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_sqrt_ps(_mm256_fmadd_ps(var, invD, _mm256_set1_ps(eps))));
    __m256 mn = _mm256_setzero_ps(), mx = mn;
    for (d = 0; d < D; d++) {
        __m256 c = _mm256_mul_ps(_mm256_sub_ps(LN8_LD(x + (long)d * ld), mean), rstd);
        __m256 v = _mm256_fmadd_ps(c, _mm256_set1_ps(w[d]), _mm256_set1_ps(b[d]));
        if (full) _mm256_storeu_ps(y + (long)d * ld, v);
        else _mm256_maskstore_ps(y + (long)d * ld, m, v);
        if (lo) mn = _mm256_min_ps(v, mn), mx = _mm256_max_ps(v, mx); /* the running value wins against a NaN */
    }
    if (lo) _mm256_maskstore_ps(lo, m, mn), _mm256_maskstore_ps(hi, m, mx);
}
#undef LN8_LD

__attribute__((noinline)) LPV_TARGET_AVX2 static void layernorm_strip8_full(float *y, const float *x, const float *w,
                                                                          const float *b, int D, int ld, float eps,
                                                                          float *lo, float *hi) {
    layernorm_strip8(y, x, w, b, D, ld, 8, 1, eps, lo, hi);
}

__attribute__((noinline)) LPV_TARGET_AVX2 static void layernorm_strip8_tail(float *y, const float *x, const float *w,
                                                                          const float *b, int D, int ld, int n,
                                                                          float eps, float *lo, float *hi) {
    layernorm_strip8(y, x, w, b, D, ld, n, 0, eps, lo, hi);
}

LPV_TARGET_AVX2 void lpv__layernorm_band_avx2(float *y, const float *x, const float *w, const float *b, int D, int t0,
                                              int n, int ld, float eps, float *lo, float *hi) {
    for (int j = 0; j < n; j += 8) {
        float *l = lo ? lo + t0 + j : NULL, *h = hi ? hi + t0 + j : NULL;
        if (n - j >= 8) layernorm_strip8_full(y + t0 + j, x + t0 + j, w, b, D, ld, eps, l, h);
        else layernorm_strip8_tail(y + t0 + j, x + t0 + j, w, b, D, ld, n - j, eps, l, h);
    }
}

/* ---- fused attention, one (image, head) ----
 *
 * Queries sit in the vector lanes: for a tile of nv*16 queries the score
 * tile St (T, ATT_LD) = k^T q holds one key per row, so the softmax over keys
 * is a vertical max/sum across rows (no horizontal reductions), and the tile
 * (at most 197 x 32 floats = 25 KB for DeiT) stays in a 32 KB L1 for the AV product.
 *   1. St[j][i] = sum_d k[d][j] q[d][i]      8 keys x nv vectors in registers
 *   2. St[j][i] = exp(scale (St[j][i] - max_j St[j][i])), colsum[i], as a power of 2
 *   3. out[d][i] = sum_j v[d][j] St[j][i] / colsum[i]   8 rows x nv vectors
 * k is first copied into kp (ceil(T/8), hd, 8), zero padded, so each step of
 * the QK^T loop broadcasts 8 keys from one 32-byte run.
 */

#define ATT_JB 8  /* keys per QK^T register block, head rows per AV block */
#define ATT_QV 2  /* max query vectors per tile */
#define ATT_LD 32 /* St row stride: ATT_QV * 16 */

int64_t lpv__attention_scratch_avx512(int T, int hd) {
    int64_t tp = (T + ATT_JB - 1) / ATT_JB * ATT_JB;
    return tp * hd + (int64_t)T * ATT_LD + 16;
}

/* kp (nb, hd, 8) <- k (hd, T) stride ld, keys >= T zero. */
LPV_TARGET_AVX512 static void pack_keys(float *kp, const float *k, int ld, int T, int hd) {
    for (int j0 = 0; j0 < T; j0 += ATT_JB) {
        int n = T - j0 < ATT_JB ? T - j0 : ATT_JB;
        __mmask8 m = (__mmask8)((1u << n) - 1u);
        float *dst = kp + (int64_t)j0 * hd;
        for (int d = 0; d < hd; d++) _mm256_storeu_ps(dst + d * ATT_JB, _mm256_maskz_loadu_ps(m, k + (int64_t)d * ld + j0));
    }
}

/* Step 1 on one tile: St (T, ATT_LD). q (hd, .) stride ld at the tile's first query. */
LPV_VINLINE LPV_TARGET_AVX512 void att_scores(float *St, const float *q, int ld, const float *kp, int T, int hd, int nv,
                                              const __mmask16 *qm) {
    for (int j0 = 0; j0 < T; j0 += ATT_JB) {
        __m512 acc[ATT_JB][ATT_QV];
        for (int jj = 0; jj < ATT_JB; jj++)
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_setzero_ps();
        const float *kb = kp + (int64_t)j0 * hd;
        for (int d = 0; d < hd; d++) {
            __m512 qv[ATT_QV];
            for (int v = 0; v < nv; v++) qv[v] = _mm512_maskz_loadu_ps(qm[v], q + (int64_t)d * ld + 16 * v);
            for (int jj = 0; jj < ATT_JB; jj++) {
                __m512 kj = _mm512_set1_ps(kb[d * ATT_JB + jj]);
                for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_fmadd_ps(kj, qv[v], acc[jj][v]);
            }
        }
        int n = T - j0 < ATT_JB ? T - j0 : ATT_JB;
        for (int jj = 0; jj < ATT_JB; jj++) /* constant bounds keep acc in registers */
            for (int v = 0; v < nv; v++)
                if (jj < n) _mm512_storeu_ps(St + (int64_t)(j0 + jj) * ATT_LD + 16 * v, acc[jj][v]);
    }
}

/* 2^y for y <= 0: y = n + f, |f| <= 1/2, 2^f by a degree-6 fit (relative error 1.3e-8).
   Called with y = log2(e) scale (s - max): rounding y costs a relative ~4e-8 |y|, which
   matters only for terms already below e^-20 of the largest. */
LPV_VINLINE LPV_TARGET_AVX512 __m512 att_exp2(__m512 y) {
    y = _mm512_max_ps(y, _mm512_set1_ps(-200.0f)); /* scalef gives 0 below -149 */
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.499087521e-04f), f, _mm512_set1_ps(1.339308335e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.619673714e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550347269e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402263731e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471825e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Step 2: St <- exp(scale (St - column max)) in place; inv (ATT_LD) = 1 / column sums. */
LPV_VINLINE LPV_TARGET_AVX512 void att_softmax(float *St, float *inv, int T, float scale, int nv) {
    __m512 sc = _mm512_set1_ps(scale * LPV_EXP_LOG2E), ms[ATT_QV], sum[ATT_QV];
    for (int v = 0; v < nv; v++) ms[v] = _mm512_set1_ps(-INFINITY), sum[v] = _mm512_setzero_ps();
    for (int j = 0; j < T; j++)
        for (int v = 0; v < nv; v++) ms[v] = _mm512_max_ps(ms[v], _mm512_loadu_ps(St + (int64_t)j * ATT_LD + 16 * v));
    for (int v = 0; v < nv; v++) ms[v] = _mm512_mul_ps(ms[v], sc);
    for (int j = 0; j < T; j++)
        for (int v = 0; v < nv; v++) {
            float *p = St + (int64_t)j * ATT_LD + 16 * v;
            __m512 e = att_exp2(_mm512_fmsub_ps(_mm512_loadu_ps(p), sc, ms[v]));
            _mm512_storeu_ps(p, e);
            sum[v] = _mm512_add_ps(sum[v], e);
        }
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(inv + 16 * v, _mm512_div_ps(_mm512_set1_ps(1.0f), sum[v]));
}

/* Step 3: out (hd, .) stride ld at the tile's first query = v St * inv. */
LPV_VINLINE LPV_TARGET_AVX512 void att_values(float *out, const float *vh, int ld, const float *St, const float *inv,
                                              int T, int hd, int nv, const __mmask16 *qm) {
    for (int d0 = 0; d0 < hd; d0 += ATT_JB) {
        __m512 acc[ATT_JB][ATT_QV];
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++) acc[dd][v] = _mm512_setzero_ps();
        const float *vr = vh + (int64_t)d0 * ld;
        for (int j = 0; j < T; j++) {
            __m512 p[ATT_QV];
            for (int v = 0; v < nv; v++) p[v] = _mm512_loadu_ps(St + (int64_t)j * ATT_LD + 16 * v);
            for (int dd = 0; dd < ATT_JB; dd++) {
                __m512 vj = _mm512_set1_ps(vr[(int64_t)dd * ld + j]);
                for (int v = 0; v < nv; v++) acc[dd][v] = _mm512_fmadd_ps(vj, p[v], acc[dd][v]);
            }
        }
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++)
                _mm512_mask_storeu_ps(out + (int64_t)(d0 + dd) * ld + 16 * v, qm[v],
                                      _mm512_mul_ps(acc[dd][v], _mm512_loadu_ps(inv + 16 * v)));
    }
}

/* The lanes of a tile's nv query vectors that hold one of its nq queries. */
static inline void att_query_masks(__mmask16 *qm, int nv, int nq) {
    for (int v = 0; v < nv; v++) {
        int c = nq - 16 * v;
        qm[v] = c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << c) - 1u);
    }
}

/* Each step is its own function, specialized on nv: inlined into one body,
 * GCC kept softmax constants and the inv vectors live across the AV loop and
 * spilled two of its three St vectors to the stack every key. */
#define ATT_STEPS(NV)                                                                                                  \
    __attribute__((noinline)) LPV_TARGET_AVX512 static void att_scores##NV(float *St, const float *q, int ld,          \
                                                                           const float *kp, int T, int hd,             \
                                                                           const __mmask16 *qm) {                      \
        att_scores(St, q, ld, kp, T, hd, NV, qm);                                                                      \
    }                                                                                                                  \
    __attribute__((noinline)) LPV_TARGET_AVX512 static void att_softmax##NV(float *St, float *inv, int T,              \
                                                                            float scale) {                             \
        att_softmax(St, inv, T, scale, NV);                                                                            \
    }                                                                                                                  \
    __attribute__((noinline)) LPV_TARGET_AVX512 static void att_values##NV(float *out, const float *vh, int ld,        \
                                                                           const float *St, const float *inv, int T,   \
                                                                           int hd, const __mmask16 *qm) {              \
        att_values(out, vh, ld, St, inv, T, hd, NV, qm);                                                               \
    }                                                                                                                  \
    LPV_TARGET_AVX512 static void att_tile##NV(float *o, const float *q, const float *vh, int ld, const float *kp,      \
                                               float *St, int T, int hd, float scale, int nq) {                        \
        __mmask16 qm[ATT_QV];                                                                                          \
        float inv[ATT_LD];                                                                                             \
        att_query_masks(qm, NV, nq);                                                                                   \
        att_scores##NV(St, q, ld, kp, T, hd, qm);                                                                      \
        att_softmax##NV(St, inv, T, scale);                                                                            \
        att_values##NV(o, vh, ld, St, inv, T, hd, qm);                                                                 \
    }

ATT_STEPS(1)
ATT_STEPS(2)

/* Query tile `tile` of a unit's `ntiles` prefetches its share of the 3·hd q/k/v rows of the unit this thread
 * runs next, (image nb, head nh), into L2 (every fused kernel; nb < 0: there is no next unit). */
static void prefetch_next_share(const float *qkv, int ld, int nb, int nh, int T, int D, int hd, int tile, int ntiles) {
    if (nb < 0) return;
    int rows = 3 * hd, per = (rows + ntiles - 1) / ntiles, r0 = tile * per, r1 = r0 + per < rows ? r0 + per : rows;
    for (int r = r0; r < r1; r++) {
        int part = r / hd, d = r % hd;
        const char *p = (const char *)(qkv + (int64_t)(part * D + nh * hd + d) * ld + (int64_t)nb * T);
        for (int64_t o = 0; o < (int64_t)T * 4; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
    }
}

/* (image b, head h)'s operands in the feature-major qkv (3 D, ld): q, k, v each (hd, T) from column b·T, and
 * its output rows in out (D, ld). */
typedef struct {
    const float *q, *k, *v;
    float *o;
} head_operands;

static head_operands head_of(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd) {
    int64_t col = (int64_t)b * T;
    head_operands r = {qkv + (int64_t)h * hd * ld + col, qkv + (int64_t)(D + h * hd) * ld + col,
                       qkv + (int64_t)(2 * D + h * hd) * ld + col, out + (int64_t)h * hd * ld + col};
    return r;
}

/* One (image b, head h); hd % 8 == 0. Query tiles of 2 vectors: a 3-vector tile's
 * score block (197 x 48 floats, 38 KB) overflows a 32 KB L1 and ran ~15 % slower.
 * (nb, nh), when nb >= 0, is the unit this thread runs next: its q/k/v rows are
 * prefetched a slice per tile, so they come from L2 rather than memory at batch 8. */
LPV_TARGET_AVX512 void lpv__attention_head_avx512(float *out, const float *qkv, int ld, int b, int h, int T, int D,
                                                  int hd, float *scratch, int nb, int nh) {
    head_operands x = head_of(out, qkv, ld, b, h, T, D, hd);
    float *kp = scratch, *St = scratch + (int64_t)(T + ATT_JB - 1) / ATT_JB * ATT_JB * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int ntiles = (T + 31) / 32, tile = 0;
    pack_keys(kp, x.k, ld, T, hd);
    for (int i0 = 0; i0 < T; tile++) {
        int nq = T - i0 < 32 ? T - i0 : 32;
        prefetch_next_share(qkv, ld, nb, nh, T, D, hd, tile, ntiles);
        if (nq > 16) att_tile2(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        else att_tile1(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        i0 += nq;
    }
}

/* ---- fused attention on AVX2: the same three steps with 8-lane vectors ----
 *
 * 16 ymm registers hold a 4-key x 3-vector score block (12 accumulators), so a
 * query tile is up to 24 queries and k is packed in runs of 4 keys; the score
 * tile (T, A2_LD) is 197 x 24 floats = 19 KB at DeiT's T, in L1. The softmax
 * uses vmath.h's exp on (-inf, 0] of scale (s - max).
 */

#define A2_JB 4  /* keys per QK^T register block, head rows per AV block */
#define A2_QV 3  /* max query vectors per tile */
#define A2_LD 24 /* St row stride: A2_QV * 8 */

int64_t lpv__attention_scratch_avx2(int T, int hd) {
    int64_t tp = (T + A2_JB - 1) / A2_JB * A2_JB;
    return tp * hd + (int64_t)T * A2_LD + 8;
}

/* kp (nb, hd, 4) <- k (hd, T) stride ld, keys >= T zero. */
LPV_TARGET_AVX2 static void a2_pack_keys(float *kp, const float *k, int ld, int T, int hd) {
    for (int j0 = 0; j0 < T; j0 += A2_JB) {
        int n = T - j0 < A2_JB ? T - j0 : A2_JB;
        __m128i m = _mm256_castsi256_si128(lpv__lane_mask8(n));
        float *dst = kp + (int64_t)j0 * hd;
        for (int d = 0; d < hd; d++) _mm_storeu_ps(dst + d * A2_JB, _mm_maskload_ps(k + (int64_t)d * ld + j0, m));
    }
}

/* Step 1: St (T, A2_LD) = k^T q for the tile; q (hd, .) stride ld at the tile's first query. full: all nv * 8
 * queries are there, so q loads need no mask (vmaskmovps in this loop made the whole attention ~20 % slower on
 * AMD Zen 5). */
LPV_VINLINE LPV_TARGET_AVX2 void a2_scores(float *St, const float *q, int ld, const float *kp, int T, int hd, int nv,
                                           int full, const __m256i *qm) {
    for (int j0 = 0; j0 < T; j0 += A2_JB) {
        __m256 acc[A2_JB][A2_QV];
        for (int jj = 0; jj < A2_JB; jj++)
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm256_setzero_ps();
        const float *kb = kp + (int64_t)j0 * hd;
        for (int d = 0; d < hd; d++) {
            __m256 qv[A2_QV];
            for (int v = 0; v < nv; v++) {
                const float *qd = q + (int64_t)d * ld + 8 * v;
                qv[v] = full ? _mm256_loadu_ps(qd) : _mm256_maskload_ps(qd, qm[v]);
            }
            for (int jj = 0; jj < A2_JB; jj++) {
                __m256 kj = _mm256_broadcast_ss(kb + d * A2_JB + jj);
                for (int v = 0; v < nv; v++) acc[jj][v] = _mm256_fmadd_ps(kj, qv[v], acc[jj][v]);
            }
        }
        int n = T - j0 < A2_JB ? T - j0 : A2_JB;
        for (int jj = 0; jj < A2_JB; jj++) /* constant bounds keep acc in registers */
            for (int v = 0; v < nv; v++)
                if (jj < n) _mm256_storeu_ps(St + (int64_t)(j0 + jj) * A2_LD + 8 * v, acc[jj][v]);
    }
}

/* Step 2: St <- exp(scale (St - column max)) in place; inv (A2_LD) = 1 / column sums. */
LPV_VINLINE LPV_TARGET_AVX2 void a2_softmax(float *St, float *inv, int T, float scale, int nv) {
    __m256 sc = _mm256_set1_ps(scale), ms[A2_QV], sum[A2_QV];
    for (int v = 0; v < nv; v++) ms[v] = _mm256_set1_ps(-INFINITY), sum[v] = _mm256_setzero_ps();
    for (int j = 0; j < T; j++)
        for (int v = 0; v < nv; v++) ms[v] = _mm256_max_ps(ms[v], _mm256_loadu_ps(St + (int64_t)j * A2_LD + 8 * v));
    for (int v = 0; v < nv; v++) ms[v] = _mm256_mul_ps(ms[v], sc);
    for (int j = 0; j < T; j++)
        for (int v = 0; v < nv; v++) {
            float *p = St + (int64_t)j * A2_LD + 8 * v;
            __m256 e = lpv__exp_neg8(_mm256_fmsub_ps(_mm256_loadu_ps(p), sc, ms[v]));
            _mm256_storeu_ps(p, e);
            sum[v] = _mm256_add_ps(sum[v], e);
        }
    for (int v = 0; v < nv; v++) _mm256_storeu_ps(inv + 8 * v, _mm256_div_ps(_mm256_set1_ps(1.0f), sum[v]));
}

/* Step 3: out (hd, .) stride ld at the tile's first query = v St * inv. */
LPV_VINLINE LPV_TARGET_AVX2 void a2_values(float *out, const float *vh, int ld, const float *St, const float *inv, int T,
                                           int hd, int nv, int full, const __m256i *qm) {
    for (int d0 = 0; d0 < hd; d0 += A2_JB) {
        __m256 acc[A2_JB][A2_QV];
        for (int dd = 0; dd < A2_JB; dd++)
            for (int v = 0; v < nv; v++) acc[dd][v] = _mm256_setzero_ps();
        const float *vr = vh + (int64_t)d0 * ld;
        for (int j = 0; j < T; j++) {
            __m256 p[A2_QV];
            for (int v = 0; v < nv; v++) p[v] = _mm256_loadu_ps(St + (int64_t)j * A2_LD + 8 * v);
            for (int dd = 0; dd < A2_JB; dd++) {
                __m256 vj = _mm256_broadcast_ss(vr + (int64_t)dd * ld + j);
                for (int v = 0; v < nv; v++) acc[dd][v] = _mm256_fmadd_ps(vj, p[v], acc[dd][v]);
            }
        }
        for (int dd = 0; dd < A2_JB; dd++)
            for (int v = 0; v < nv; v++) {
                float *o = out + (int64_t)(d0 + dd) * ld + 8 * v;
                __m256 r = _mm256_mul_ps(acc[dd][v], _mm256_loadu_ps(inv + 8 * v));
                if (full) _mm256_storeu_ps(o, r);
                else _mm256_maskstore_ps(o, qm[v], r);
            }
    }
}

/* As for AVX-512, each step its own function specialized on nv, and on full (every query of the tile there:
 * the q loads and out stores unmasked; name suffix f). */
#define A2_STEPS(NV, FULL, SFX)                                                                                        \
    __attribute__((noinline)) LPV_TARGET_AVX2 static void a2_scores##SFX(float *St, const float *q, int ld,            \
                                                                         const float *kp, int T, int hd,               \
                                                                         const __m256i *qm) {                          \
        a2_scores(St, q, ld, kp, T, hd, NV, FULL, qm);                                                                 \
    }                                                                                                                  \
    __attribute__((noinline)) LPV_TARGET_AVX2 static void a2_softmax##SFX(float *St, float *inv, int T, float scale) { \
        a2_softmax(St, inv, T, scale, NV);                                                                             \
    }                                                                                                                  \
    __attribute__((noinline)) LPV_TARGET_AVX2 static void a2_values##SFX(float *out, const float *vh, int ld,          \
                                                                         const float *St, const float *inv, int T,     \
                                                                         int hd, const __m256i *qm) {                  \
        a2_values(out, vh, ld, St, inv, T, hd, NV, FULL, qm);                                                          \
    }                                                                                                                  \
    LPV_TARGET_AVX2 static void a2_tile##SFX(float *o, const float *q, const float *vh, int ld, const float *kp,        \
                                             float *St, int T, int hd, float scale, int nq) {                          \
        __m256i qm[A2_QV];                                                                                             \
        float inv[A2_LD];                                                                                              \
        for (int v = 0; v < NV; v++) qm[v] = lpv__lane_mask8(nq - 8 * v);                                             \
        a2_scores##SFX(St, q, ld, kp, T, hd, qm);                                                                      \
        a2_softmax##SFX(St, inv, T, scale);                                                                            \
        a2_values##SFX(o, vh, ld, St, inv, T, hd, qm);                                                                 \
    }

A2_STEPS(1, 0, 1)
A2_STEPS(2, 0, 2)
A2_STEPS(3, 0, 3)
A2_STEPS(3, 1, 3f)

/* One (image b, head h); hd % 4 == 0. Query tiles of up to 24. (nb, nh), when nb >= 0, is the unit this
 * thread runs next: its q/k/v rows are prefetched a slice per tile, as in the AVX-512 kernel. */
LPV_TARGET_AVX2 void lpv__attention_head_avx2(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                              float *scratch, int nb, int nh) {
    head_operands x = head_of(out, qkv, ld, b, h, T, D, hd);
    float *kp = scratch, *St = scratch + (int64_t)(T + A2_JB - 1) / A2_JB * A2_JB * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int ntiles = (T + A2_LD - 1) / A2_LD, tile = 0;
    a2_pack_keys(kp, x.k, ld, T, hd);
    for (int i0 = 0; i0 < T; tile++) {
        int nq = T - i0 < A2_LD ? T - i0 : A2_LD;
        prefetch_next_share(qkv, ld, nb, nh, T, D, hd, tile, ntiles);
        if (nq == A2_LD) a2_tile3f(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        else if (nq > 16) a2_tile3(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        else if (nq > 8) a2_tile2(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        else a2_tile1(x.o + i0, x.q + i0, x.v, ld, kp, St, T, hd, scale, nq);
        i0 += nq;
    }
}

/* ---- fused attention in BF16 (avx512bf16), one (image, head) ----
 *
 * The AVX-512 kernel's three steps with BF16 operands: q, k, v and the softmax's
 * exponentials are rounded to BF16 (nearest even, vcvtne2ps2bf16) and packed
 * in pairs along each product's reduction axis, so one vdpbf16ps does two
 * multiply-adds per lane into FP32 sums; the scores, the softmax and the final
 * 1 / sum stay FP32. Pairs (u32: low half the first, high half the second):
 *   kp (ceil(T/8), hd/2, 8)   keys along d: (k[2p][j], k[2p+1][j]), keys >= T zero
 *   vp (hd, T2)               values along keys: (v[d][2p], v[d][2p+1]), T2 = ceil(T/2), v[d][T] = 0
 *   qp (hd/2, ATT_LD)         the tile's queries along d
 *   Pp (T2, ATT_LD)           the tile's exponentials along keys, written over the first
 *                             rows of the FP32 score tile St (T, ATT_LD) as it is read
 * Half the multiply instructions of the FP32 kernel in both products; the packing
 * is O(T hd) per head against the products' O(T² hd).
 */

#define T512BF LPV_TARGET_AVX512BF16

static int64_t bf_kp_size(int T, int hd) { return (int64_t)(T + ATT_JB - 1) / ATT_JB * ATT_JB * (hd / 2); }

int64_t lpv__attention_scratch_avx512bf16(int T, int hd) {
    int64_t T2 = (T + 1) / 2;
    return bf_kp_size(T, hd) + (int64_t)hd * T2 + (int64_t)(hd / 2) * ATT_LD + (int64_t)T * ATT_LD + 16;
}

/* BF16 by vcvtne2ps2bf16: nearest even as lpv_bf16_from_f32, except that denormals (below 1.2e-38) go to
 * zero, a change no attention output can see. */

/* Lane i = bf16(lo[i]) | bf16(hi[i]) << 16: the converted halves interleaved by one word permute. */
LPV_VINLINE T512BF __m512i bf_pair16(__m512 lo, __m512 hi) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                                6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* The same for 8 lanes. */
LPV_VINLINE T512BF __m256i bf_pair8(__m256 lo, __m256 hi) {
    const __m256i interleave = _mm256_set_epi16(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    return _mm256_permutexvar_epi16(interleave, (__m256i)_mm256_cvtne2ps_pbh(hi, lo));
}

/* kp (ceil(T/8), hd/2, 8) <- k (hd, T) stride ld. hd even. */
T512BF static void bf_pack_keys(uint32_t *kp, const float *k, int ld, int T, int hd) {
    for (int j0 = 0; j0 < T; j0 += ATT_JB) {
        int n = T - j0 < ATT_JB ? T - j0 : ATT_JB;
        __mmask8 m = (__mmask8)((1u << n) - 1u);
        uint32_t *dst = kp + (int64_t)j0 * (hd / 2);
        for (int p = 0; p < hd / 2; p++) {
            const float *k0 = k + (int64_t)(2 * p) * ld + j0;
            __m256i pr = bf_pair8(_mm256_maskz_loadu_ps(m, k0), _mm256_maskz_loadu_ps(m, k0 + ld));
            _mm256_storeu_si256((__m256i *)(dst + p * ATT_JB), pr);
        }
    }
}

/* vp (hd, T2) <- v (hd, T) stride ld: 32 values of a row, converted in order, are 16 pairs. */
T512BF static void bf_pack_values(uint32_t *vp, const float *v, int ld, int T, int hd) {
    int T2 = (T + 1) / 2;
    for (int d = 0; d < hd; d++) {
        const float *vr = v + (int64_t)d * ld;
        uint32_t *dst = vp + (int64_t)d * T2;
        for (int t = 0; t < T; t += 32) {
            int n0 = T - t < 16 ? T - t : 16, n1 = T - t - 16 < 0 ? 0 : T - t - 16 < 16 ? T - t - 16 : 16;
            __m512 lo = _mm512_maskz_loadu_ps((__mmask16)((1u << n0) - 1u), vr + t);
            __m512 hi = _mm512_maskz_loadu_ps((__mmask16)((1u << n1) - 1u), vr + t + 16);
            int np = T2 - t / 2 < 16 ? T2 - t / 2 : 16;
            _mm512_mask_storeu_epi32(dst + t / 2, (__mmask16)((1u << np) - 1u), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

/* qp (hd/2, ATT_LD) <- the tile's queries q (hd, .) stride ld, lanes outside qm zero. */
LPV_VINLINE T512BF void bf_pack_queries(uint32_t *qp, const float *q, int ld, int hd, int nv, const __mmask16 *qm) {
    for (int p = 0; p < hd / 2; p++)
        for (int v = 0; v < nv; v++) {
            const float *q0 = q + (int64_t)(2 * p) * ld + 16 * v;
            __m512i pr = bf_pair16(_mm512_maskz_loadu_ps(qm[v], q0), _mm512_maskz_loadu_ps(qm[v], q0 + ld));
            _mm512_storeu_si512(qp + p * ATT_LD + 16 * v, pr);
        }
}

/* Step 1: St (T, ATT_LD) = k^T q, one d pair per vdpbf16ps; 8 keys x nv vectors in registers. */
LPV_VINLINE T512BF void bf_scores(float *St, const uint32_t *qp, const uint32_t *kp, int T, int hd, int nv) {
    int hp = hd / 2;
    for (int j0 = 0; j0 < T; j0 += ATT_JB) {
        __m512 acc[ATT_JB][ATT_QV];
        for (int jj = 0; jj < ATT_JB; jj++)
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_setzero_ps();
        const uint32_t *kb = kp + (int64_t)j0 * hp;
        for (int p = 0; p < hp; p++) {
            __m512bh qv[ATT_QV];
            for (int v = 0; v < nv; v++) qv[v] = (__m512bh)_mm512_loadu_si512(qp + p * ATT_LD + 16 * v);
            for (int jj = 0; jj < ATT_JB; jj++) {
                __m512bh kj = (__m512bh)_mm512_set1_epi32((int)kb[p * ATT_JB + jj]);
                for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_dpbf16_ps(acc[jj][v], kj, qv[v]);
            }
        }
        int n = T - j0 < ATT_JB ? T - j0 : ATT_JB;
        for (int jj = 0; jj < ATT_JB; jj++) /* constant bounds keep acc in registers */
            for (int v = 0; v < nv; v++)
                if (jj < n) _mm512_storeu_ps(St + (int64_t)(j0 + jj) * ATT_LD + 16 * v, acc[jj][v]);
    }
}

/* Step 2: e = exp(scale (St - column max)) in FP32, inv (ATT_LD) = 1 / column sums of e (unrounded);
 * Pp row p <- the pairs (e[2p], e[2p + 1]), e[T] = 0. Row p of Pp overlays row p of St, which rows 2p and
 * 2p + 1, read just before, come at or after: nothing is overwritten before it is read. */
LPV_VINLINE T512BF void bf_softmax(float *St, float *inv, int T, float scale, int nv) {
    __m512 sc = _mm512_set1_ps(scale * LPV_EXP_LOG2E), ms[ATT_QV], sum[ATT_QV];
    uint32_t *Pp = (uint32_t *)St;
    for (int v = 0; v < nv; v++) ms[v] = _mm512_set1_ps(-INFINITY), sum[v] = _mm512_setzero_ps();
    for (int j = 0; j < T; j++)
        for (int v = 0; v < nv; v++) ms[v] = _mm512_max_ps(ms[v], _mm512_loadu_ps(St + (int64_t)j * ATT_LD + 16 * v));
    for (int v = 0; v < nv; v++) ms[v] = _mm512_mul_ps(ms[v], sc);
    for (int j = 0; j < T; j += 2)
        for (int v = 0; v < nv; v++) {
            const float *s = St + (int64_t)j * ATT_LD + 16 * v;
            __m512 e0 = att_exp2(_mm512_fmsub_ps(_mm512_loadu_ps(s), sc, ms[v]));
            __m512 e1 = j + 1 < T ? att_exp2(_mm512_fmsub_ps(_mm512_loadu_ps(s + ATT_LD), sc, ms[v])) : _mm512_setzero_ps();
            sum[v] = _mm512_add_ps(sum[v], _mm512_add_ps(e0, e1));
            _mm512_storeu_si512(Pp + (int64_t)(j / 2) * ATT_LD + 16 * v, bf_pair16(e0, e1));
        }
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(inv + 16 * v, _mm512_div_ps(_mm512_set1_ps(1.0f), sum[v]));
}

/* Step 3: out (hd, .) stride ld at the tile's first query = (v Pp) * inv, one key pair per vdpbf16ps;
 * 8 rows x nv vectors in registers. hd % 8 == 0. */
LPV_VINLINE T512BF void bf_values(float *out, int ld, const uint32_t *vp, const uint32_t *Pp, const float *inv, int T,
                                  int hd, int nv, const __mmask16 *qm) {
    int T2 = (T + 1) / 2;
    for (int d0 = 0; d0 < hd; d0 += ATT_JB) {
        __m512 acc[ATT_JB][ATT_QV];
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++) acc[dd][v] = _mm512_setzero_ps();
        const uint32_t *vr = vp + (int64_t)d0 * T2;
        for (int p = 0; p < T2; p++) {
            __m512bh pv[ATT_QV];
            for (int v = 0; v < nv; v++) pv[v] = (__m512bh)_mm512_loadu_si512(Pp + (int64_t)p * ATT_LD + 16 * v);
            for (int dd = 0; dd < ATT_JB; dd++) {
                __m512bh vj = (__m512bh)_mm512_set1_epi32((int)vr[(int64_t)dd * T2 + p]);
                for (int v = 0; v < nv; v++) acc[dd][v] = _mm512_dpbf16_ps(acc[dd][v], vj, pv[v]);
            }
        }
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++)
                _mm512_mask_storeu_ps(out + (int64_t)(d0 + dd) * ld + 16 * v, qm[v],
                                      _mm512_mul_ps(acc[dd][v], _mm512_loadu_ps(inv + 16 * v)));
    }
}

/* Each step its own function specialized on nv, as in the FP32 kernel. */
#define BF_STEPS(NV)                                                                                                   \
    __attribute__((noinline)) T512BF static void bf_scores##NV(float *St, const uint32_t *qp, const uint32_t *kp,     \
                                                               int T, int hd) {                                        \
        bf_scores(St, qp, kp, T, hd, NV);                                                                              \
    }                                                                                                                  \
    __attribute__((noinline)) T512BF static void bf_softmax##NV(float *St, float *inv, int T, float scale) {          \
        bf_softmax(St, inv, T, scale, NV);                                                                             \
    }                                                                                                                  \
    __attribute__((noinline)) T512BF static void bf_values##NV(float *out, int ld, const uint32_t *vp,                \
                                                               const uint32_t *Pp, const float *inv, int T, int hd,    \
                                                               const __mmask16 *qm) {                                  \
        bf_values(out, ld, vp, Pp, inv, T, hd, NV, qm);                                                                \
    }                                                                                                                  \
    T512BF static void bf_tile##NV(float *o, const float *q, int ld, const uint32_t *kp, const uint32_t *vp,          \
                                   uint32_t *qp, float *St, int T, int hd, float scale, int nq) {                      \
        __mmask16 qm[ATT_QV];                                                                                          \
        float inv[ATT_LD];                                                                                             \
        att_query_masks(qm, NV, nq);                                                                                   \
        bf_pack_queries(qp, q, ld, hd, NV, qm);                                                                        \
        bf_scores##NV(St, qp, kp, T, hd);                                                                              \
        bf_softmax##NV(St, inv, T, scale);                                                                             \
        bf_values##NV(o, ld, vp, (const uint32_t *)St, inv, T, hd, qm);                                                \
    }

BF_STEPS(1)
BF_STEPS(2)

/* One (image b, head h) in BF16; hd % 8 == 0. Tiles of 32 queries and the next unit's prefetch as in
 * lpv__attention_head_avx512. */
T512BF void lpv__attention_head_avx512bf16(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                           float *scratch, int nb, int nh) {
    head_operands x = head_of(out, qkv, ld, b, h, T, D, hd);
    uint32_t *kp = (uint32_t *)scratch, *vp = kp + bf_kp_size(T, hd), *qp = vp + (int64_t)hd * ((T + 1) / 2);
    float *St = (float *)(qp + (int64_t)(hd / 2) * ATT_LD);
    float scale = 1.0f / sqrtf((float)hd);
    int ntiles = (T + 31) / 32, tile = 0;
    bf_pack_keys(kp, x.k, ld, T, hd);
    bf_pack_values(vp, x.v, ld, T, hd);
    for (int i0 = 0; i0 < T; tile++) {
        int nq = T - i0 < 32 ? T - i0 : 32;
        prefetch_next_share(qkv, ld, nb, nh, T, D, hd, tile, ntiles);
        if (nq > 16) bf_tile2(x.o + i0, x.q + i0, ld, kp, vp, qp, St, T, hd, scale, nq);
        else bf_tile1(x.o + i0, x.q + i0, ld, kp, vp, qp, St, T, hd, scale, nq);
        i0 += nq;
    }
}

/* ---- int8 attention on AVX-512 VNNI ----
 *
 * q k^T and p v as u8 x s8 products with int32 sums (vpdpbusd: four products per 32-bit lane), the softmax in
 * FP32 between them (att_softmax), the same tiles as lpv__attention_head_avx512:
 *   k  s8, symmetric per key token (over its hd features): sk[j] = max |k[., j]| / 127;
 *   q  s8, symmetric per query token, then + 128 into u8 (vpdpbusd's unsigned operand): each sum then holds
 *      128 · ksum[j] (ksum = Σ_d k8[d][j]) too, taken off before the scales;
 *   p  exp(s − max) lies in (0, 1]: round(255 e) in u8 with the fixed scale 1/255; the row sums stay FP32;
 *   v  s8, symmetric per feature row of the head (over its T tokens): sv[d] = max |v[d, .]| / 127.
 * Scratch (floats): kp (T8 / 8 blocks × hd/4 quads × 8 keys words), sk, ksum (T8), vp (hd rows of T4 bytes),
 * sv (hd), qp (hd/4 × 32 words), sq (32), pp (T4/4 × 32 words), St (T × ATT_LD); T8, T4: T rounded up.
 */
#define TQ8 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))

typedef struct {
    uint32_t *kp, *vp, *qp, *pp;
    float *sk, *sv, *sq, *St;
    int32_t *ksum;
    int T8, T4;
} q8_att_scratch;

static q8_att_scratch q8_att_layout(float *s, int T, int hd) {
    q8_att_scratch x;
    x.T8 = (T + ATT_JB - 1) / ATT_JB * ATT_JB, x.T4 = (T + 3) / 4 * 4;
    x.kp = (uint32_t *)s, s += (int64_t)x.T8 * hd / 4;
    x.sk = s, s += x.T8;
    x.ksum = (int32_t *)s, s += x.T8;
    x.vp = (uint32_t *)s, s += (int64_t)hd * x.T4 / 4;
    x.sv = s, s += hd;
    x.qp = (uint32_t *)s, s += (int64_t)(hd / 4) * ATT_LD;
    x.sq = s, s += ATT_LD;
    x.pp = (uint32_t *)s, s += (int64_t)(x.T4 / 4) * ATT_LD;
    x.St = s;
    return x;
}

int64_t lpv__attention_scratch_q8(int T, int hd) {
    int64_t T8 = (T + ATT_JB - 1) / ATT_JB * ATT_JB, T4 = (T + 3) / 4 * 4;
    return T8 * hd / 4 + 2 * T8 + hd * T4 / 4 + hd + (int64_t)(hd / 4) * ATT_LD + ATT_LD + T4 / 4 * ATT_LD +
           (int64_t)T * ATT_LD + 16;
}

/* acc += Σ of four u · s8 byte products per lane (vpdpbusd). Inline asm ties acc to the instruction's
 * destination: with the intrinsic, gcc 12 kept the scores' and values' 16 accumulators in two register sets
 * and copied each one back and forth around every vpdpbusd, some through the stack (34 moves per 16
 * vpdpbusd in the inner loops), which made this attention slower than the BF16 one on Zen 5. */
LPV_VINLINE TQ8 __m512i q8_dot(__m512i acc, __m512i u, __m512i s) {
    __asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));
    return acc;
}

/* Four int32 vectors of values in 0..255 (or s8 as int32) into bytes of one word per lane, d = 0 lowest. */
LPV_VINLINE TQ8 __m512i q8_bytes4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i m = _mm512_set1_epi32(255);
    a = _mm512_and_si512(a, m), b = _mm512_slli_epi32(_mm512_and_si512(b, m), 8);
    c = _mm512_slli_epi32(_mm512_and_si512(c, m), 16), d = _mm512_slli_epi32(d, 24);
    return _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d));
}

/* k (hd, T) stride ld -> kp words [T8/8][hd/4][8 keys], sk, ksum; keys >= T: 0. 16 keys a pass. */
TQ8 static void q8_pack_keys(q8_att_scratch *x, const float *k, int ld, int T, int hd) {
    for (int j0 = 0; j0 < x->T8; j0 += 16) {
        int n = T - j0 < 16 ? (T - j0 > 0 ? T - j0 : 0) : 16;
        __mmask16 m = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1u);
        __m512 mx = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, k + (int64_t)d * ld + j0)));
        __m512 s = _mm512_div_ps(mx, _mm512_set1_ps(127.0f)); /* max |x| / 127, as the rule says */
        __mmask16 nz = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
        __m512 inv = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), s); /* an all-zero key: codes 0 */
        __m512i sum = _mm512_setzero_si512();
        for (int dq = 0; dq < hd / 4; dq++) {
            __m512i c[4];
            for (int t = 0; t < 4; t++) {
                __m512 v = _mm512_maskz_loadu_ps(m, k + (int64_t)(4 * dq + t) * ld + j0);
                c[t] = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv)); /* |c| <= 127 by the scale */
                c[t] = _mm512_max_epi32(_mm512_min_epi32(c[t], _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
                sum = _mm512_add_epi32(sum, c[t]);
            }
            /* keys j0..j0+7 and j0+8..j0+15 are two blocks of ATT_JB (= 8) keys: one 8-word store into each */
            __m512i wq = q8_bytes4(c[0], c[1], c[2], c[3]);
            uint32_t *dst = x->kp + ((int64_t)(j0 / ATT_JB) * (hd / 4) + dq) * ATT_JB;
            _mm256_storeu_si256((__m256i *)dst, _mm512_castsi512_si256(wq));
            if (j0 + ATT_JB < x->T8)
                _mm256_storeu_si256((__m256i *)(dst + (int64_t)(hd / 4) * ATT_JB), _mm512_extracti64x4_epi64(wq, 1));
        }
        float sb[16];
        int32_t kb[16];
        _mm512_storeu_ps(sb, s), _mm512_storeu_si512(kb, sum);
        for (int jj = 0; jj < 16 && j0 + jj < x->T8; jj++) x->sk[j0 + jj] = sb[jj], x->ksum[j0 + jj] = kb[jj];
    }
}

/* v (hd, T) stride ld -> vp rows of T4 s8 bytes (keys >= T: 0), sv; 16 tokens a step. */
TQ8 static void q8_pack_values(q8_att_scratch *x, const float *v, int ld, int T, int hd) {
    for (int d = 0; d < hd; d++) {
        const float *r = v + (int64_t)d * ld;
        __m512 mx = _mm512_setzero_ps();
        for (int j = 0; j < T; j += 16) {
            __mmask16 m = (__mmask16)(T - j >= 16 ? 0xffff : (1u << (T - j)) - 1u);
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, r + j)));
        }
        float s = _mm512_reduce_max_ps(mx) / 127.0f;
        __m512 inv = _mm512_set1_ps(s > 0.0f ? 1.0f / s : 0.0f);
        int8_t *o = (int8_t *)(x->vp + (int64_t)d * x->T4 / 4);
        for (int j = T; j < x->T4; j++) o[j] = 0;
        for (int j = 0; j < T; j += 16) {
            __mmask16 m = (__mmask16)(T - j >= 16 ? 0xffff : (1u << (T - j)) - 1u);
            __m512i c = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, r + j), inv));
            c = _mm512_max_epi32(_mm512_min_epi32(c, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
            _mm512_mask_cvtepi32_storeu_epi8(o + j, m, c);
        }
        x->sv[d] = s;
    }
}

/* The tile's queries (nv vectors of 16 lanes, lanes past nq masked to 0) -> qp words [hd/4][nv][16] of u8 (+128), sq. */
LPV_VINLINE TQ8 void q8_pack_queries(q8_att_scratch *x, const float *q, int ld, int hd, int nv, const __mmask16 *qm) {
    for (int v = 0; v < nv; v++) {
        __m512 mx = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(qm[v], q + (int64_t)d * ld + 16 * v)));
        __m512 s = _mm512_div_ps(mx, _mm512_set1_ps(127.0f)); /* max |x| / 127, as the rule says */
        __m512 inv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), s);
        _mm512_storeu_ps(x->sq + 16 * v, s);
        for (int dq = 0; dq < hd / 4; dq++) {
            __m512i c[4];
            for (int t = 0; t < 4; t++) {
                __m512 f = _mm512_maskz_loadu_ps(qm[v], q + (int64_t)(4 * dq + t) * ld + 16 * v);
                __m512i u = _mm512_cvtps_epi32(_mm512_mul_ps(f, inv));
                u = _mm512_max_epi32(_mm512_min_epi32(u, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
                c[t] = _mm512_add_epi32(u, _mm512_set1_epi32(128));
            }
            _mm512_storeu_si512(x->qp + ((int64_t)dq * ATT_QV + v) * 16, q8_bytes4(c[0], c[1], c[2], c[3]));
        }
    }
}

/* Step 1: St (T, ATT_LD) = sq sk (Σ_d u k8 − 128 ksum) for the tile (unscaled by 1/√hd, as att_scores). */
LPV_VINLINE TQ8 void q8_scores(const q8_att_scratch *x, int T, int hd, int nv) {
    for (int j0 = 0; j0 < T; j0 += ATT_JB) {
        __m512i acc[ATT_JB][ATT_QV];
        for (int jj = 0; jj < ATT_JB; jj++)
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm512_setzero_si512();
        const uint32_t *kb = x->kp + (int64_t)(j0 / ATT_JB) * (hd / 4) * ATT_JB;
        for (int dq = 0; dq < hd / 4; dq++) {
            __m512i qv[ATT_QV];
            for (int v = 0; v < nv; v++) qv[v] = _mm512_loadu_si512(x->qp + ((int64_t)dq * ATT_QV + v) * 16);
            for (int jj = 0; jj < ATT_JB; jj++) {
                __m512i kw = _mm512_set1_epi32((int)kb[dq * ATT_JB + jj]);
                for (int v = 0; v < nv; v++) acc[jj][v] = q8_dot(acc[jj][v], qv[v], kw);
            }
        }
        int n = T - j0 < ATT_JB ? T - j0 : ATT_JB;
        for (int jj = 0; jj < ATT_JB; jj++)
            for (int v = 0; v < nv; v++)
                if (jj < n) {
                    int j = j0 + jj;
                    __m512i a = _mm512_sub_epi32(acc[jj][v], _mm512_set1_epi32(128 * x->ksum[j]));
                    __m512 sc = _mm512_mul_ps(_mm512_loadu_ps(x->sq + 16 * v), _mm512_set1_ps(x->sk[j]));
                    _mm512_storeu_ps(x->St + (int64_t)j * ATT_LD + 16 * v, _mm512_mul_ps(_mm512_cvtepi32_ps(a), sc));
                }
    }
}

/* Step 3: p = round(255 e) packed [T4/4][nv][16] words (keys >= T: 0); out = sv / 255 · Σ_j p v8 · inv. */
LPV_VINLINE TQ8 void q8_values(const q8_att_scratch *x, float *out, int ld, const float *inv, int T, int hd, int nv,
                               const __mmask16 *qm) {
    const __m512 k255 = _mm512_set1_ps(255.0f);
    for (int jq = 0; jq < x->T4 / 4; jq++)
        for (int v = 0; v < nv; v++) {
            __m512i c[4];
            for (int t = 0; t < 4; t++) {
                int j = 4 * jq + t;
                c[t] = j < T ? _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x->St + (int64_t)j * ATT_LD + 16 * v), k255))
                             : _mm512_setzero_si512();
            }
            _mm512_storeu_si512(x->pp + ((int64_t)jq * ATT_QV + v) * 16, q8_bytes4(c[0], c[1], c[2], c[3]));
        }
    for (int d0 = 0; d0 < hd; d0 += ATT_JB) {
        __m512i acc[ATT_JB][ATT_QV];
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++) acc[dd][v] = _mm512_setzero_si512();
        for (int jq = 0; jq < x->T4 / 4; jq++) {
            __m512i p[ATT_QV];
            for (int v = 0; v < nv; v++) p[v] = _mm512_loadu_si512(x->pp + ((int64_t)jq * ATT_QV + v) * 16);
            for (int dd = 0; dd < ATT_JB; dd++) {
                __m512i vw = _mm512_set1_epi32((int)x->vp[(int64_t)(d0 + dd) * x->T4 / 4 + jq]);
                for (int v = 0; v < nv; v++) acc[dd][v] = q8_dot(acc[dd][v], p[v], vw);
            }
        }
        for (int dd = 0; dd < ATT_JB; dd++)
            for (int v = 0; v < nv; v++) {
                __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[dd][v]), _mm512_set1_ps(x->sv[d0 + dd] / 255.0f));
                _mm512_mask_storeu_ps(out + (int64_t)(d0 + dd) * ld + 16 * v, qm[v],
                                      _mm512_mul_ps(r, _mm512_loadu_ps(inv + 16 * v)));
            }
    }
}

#define Q8_STEPS(NV)                                                                                                   \
    __attribute__((noinline)) TQ8 static void q8_scores##NV(const q8_att_scratch *x, int T, int hd) {                  \
        q8_scores(x, T, hd, NV);                                                                                       \
    }                                                                                                                  \
    __attribute__((noinline)) TQ8 static void q8_values##NV(const q8_att_scratch *x, float *out, int ld,               \
                                                            const float *inv, int T, int hd, const __mmask16 *qm) {    \
        q8_values(x, out, ld, inv, T, hd, NV, qm);                                                                     \
    }                                                                                                                  \
    TQ8 static void q8_tile##NV(q8_att_scratch *x, float *o, const float *q, int ld, int T, int hd, float scale,       \
                                int nq) {                                                                              \
        __mmask16 qm[ATT_QV];                                                                                          \
        float inv[ATT_LD];                                                                                             \
        att_query_masks(qm, NV, nq);                                                                                   \
        q8_pack_queries(x, q, ld, hd, NV, qm);                                                                         \
        q8_scores##NV(x, T, hd);                                                                                       \
        att_softmax##NV(x->St, inv, T, scale);                                                                         \
        q8_values##NV(x, o, ld, inv, T, hd, qm);                                                                       \
    }

Q8_STEPS(1)
Q8_STEPS(2)

/* One (image b, head h) in int8; hd % 8 == 0. Tiles of 32 queries and the next unit's prefetch as in
 * lpv__attention_head_avx512. */
TQ8 void lpv__attention_head_q8(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                float *scratch, int nb, int nh) {
    head_operands hop = head_of(out, qkv, ld, b, h, T, D, hd);
    q8_att_scratch x = q8_att_layout(scratch, T, hd);
    float scale = 1.0f / sqrtf((float)hd);
    int ntiles = (T + 31) / 32, tile = 0;
    q8_pack_keys(&x, hop.k, ld, T, hd);
    q8_pack_values(&x, hop.v, ld, T, hd);
    for (int i0 = 0; i0 < T; tile++) {
        int nq = T - i0 < 32 ? T - i0 : 32;
        prefetch_next_share(qkv, ld, nb, nh, T, D, hd, tile, ntiles);
        if (nq > 16) q8_tile2(&x, hop.o + i0, hop.q + i0, ld, T, hd, scale, nq);
        else q8_tile1(&x, hop.o + i0, hop.q + i0, ld, T, hd, scale, nq);
        i0 += nq;
    }
}

/* ---- int8 attention on AVX-VNNI (vpdpbusd on ymm) ----
 *
 * The rules and scratch of the AVX-512 VNNI kernel above (the same codes, scales and int32 sums, so the same
 * outputs up to the FP32 epilogue's order) on the AVX2 kernel's tiles: 8-lane vectors, query tiles of up to
 * A2_QV vectors (24 queries), key blocks of A2_JB (4 keys x 3 vectors = 12 accumulators), the score tile
 * St (T, A2_LD) and its softmax (a2_softmax). Scratch (floats): kp (T4 / 4 blocks x hd/4 quads x 4 keys
 * words), sk, ksum (T4), vp (hd rows of T4 bytes), sv (hd), qp (hd/4 x 24 words), sq (24), pp (T4/4 x 24
 * words), St (T x A2_LD); T4: T rounded up to 4.
 */
#define TQ8Y __attribute__((target("avx2,fma,avxvnni")))

/* q8_dot on ymm (AVX-VNNI's {vex} vpdpbusd), for the same reason. */
LPV_VINLINE TQ8Y __m256i q8y_dot(__m256i acc, __m256i u, __m256i s) {
    __asm__("%{vex%} vpdpbusd %[s], %[u], %[acc]" : [acc] "+x"(acc) : [u] "x"(u), [s] "x"(s));
    return acc;
}

static q8_att_scratch q8y_layout(float *s, int T, int hd) {
    q8_att_scratch x;
    x.T8 = (T + 3) / 4 * 4, x.T4 = x.T8; /* keys are packed in blocks of A2_JB = 4 */
    x.kp = (uint32_t *)s, s += (int64_t)x.T4 * hd / 4;
    x.sk = s, s += x.T4;
    x.ksum = (int32_t *)s, s += x.T4;
    x.vp = (uint32_t *)s, s += (int64_t)hd * x.T4 / 4;
    x.sv = s, s += hd;
    x.qp = (uint32_t *)s, s += (int64_t)(hd / 4) * A2_LD;
    x.sq = s, s += A2_LD;
    x.pp = (uint32_t *)s, s += (int64_t)(x.T4 / 4) * A2_LD;
    x.St = s;
    return x;
}

int64_t lpv__attention_scratch_q8y(int T, int hd) {
    int64_t T4 = (T + 3) / 4 * 4;
    return T4 * hd / 4 + 2 * T4 + hd * T4 / 4 + hd + (int64_t)(hd / 4) * A2_LD + A2_LD + T4 / 4 * A2_LD +
           (int64_t)T * A2_LD + 8;
}

LPV_VINLINE TQ8Y __m256i q8y_bytes4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i m = _mm256_set1_epi32(255);
    a = _mm256_and_si256(a, m), b = _mm256_slli_epi32(_mm256_and_si256(b, m), 8);
    c = _mm256_slli_epi32(_mm256_and_si256(c, m), 16), d = _mm256_slli_epi32(d, 24);
    return _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
}

LPV_VINLINE TQ8Y __m256i q8y_code(__m256 v, __m256 inv) { /* clamp(round(v · inv), ±127) */
    __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
    return _mm256_max_epi32(_mm256_min_epi32(c, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
}

LPV_VINLINE TQ8Y __m256 q8y_abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* max |x| / 127 per lane and its inverse (0 where the scale is 0: codes 0), as the rule says */
LPV_VINLINE TQ8Y void q8y_scale(__m256 mx, __m256 *s, __m256 *inv) {
    *s = _mm256_div_ps(mx, _mm256_set1_ps(127.0f));
    __m256 nz = _mm256_cmp_ps(*s, _mm256_setzero_ps(), _CMP_GT_OQ);
    *inv = _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), *s));
}

/* k (hd, T) stride ld -> kp words [T4/4][hd/4][4 keys], sk, ksum; keys >= T: 0. 8 keys a pass. */
TQ8Y static void q8y_pack_keys(q8_att_scratch *x, const float *k, int ld, int T, int hd) {
    for (int j0 = 0; j0 < x->T4; j0 += 8) {
        __m256i m = lpv__lane_mask8(T - j0);
        __m256 mx = _mm256_setzero_ps(), s, inv;
        for (int d = 0; d < hd; d++) mx = _mm256_max_ps(mx, q8y_abs(_mm256_maskload_ps(k + (int64_t)d * ld + j0, m)));
        q8y_scale(mx, &s, &inv);
        __m256i sum = _mm256_setzero_si256();
        for (int dq = 0; dq < hd / 4; dq++) {
            __m256i c[4];
            for (int t = 0; t < 4; t++) {
                c[t] = q8y_code(_mm256_maskload_ps(k + (int64_t)(4 * dq + t) * ld + j0, m), inv);
                sum = _mm256_add_epi32(sum, c[t]);
            }
            /* keys j0..j0+3 and j0+4..j0+7 are two blocks of A2_JB (= 4) keys: one 4-word store into each, as in
             * q8_pack_keys */
            __m256i wq = q8y_bytes4(c[0], c[1], c[2], c[3]);
            uint32_t *dst = x->kp + ((int64_t)(j0 / A2_JB) * (hd / 4) + dq) * A2_JB;
            _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(wq));
            if (j0 + A2_JB < x->T4)
                _mm_storeu_si128((__m128i *)(dst + (int64_t)(hd / 4) * A2_JB), _mm256_extracti128_si256(wq, 1));
        }
        float sb[8];
        int32_t kb[8];
        _mm256_storeu_ps(sb, s), _mm256_storeu_si256((__m256i *)kb, sum);
        for (int jj = 0; jj < 8 && j0 + jj < x->T4; jj++) x->sk[j0 + jj] = sb[jj], x->ksum[j0 + jj] = kb[jj];
    }
}

/* v (hd, T) stride ld -> vp rows of T4 s8 bytes (keys >= T: 0), sv; 8 tokens a step. */
TQ8Y static void q8y_pack_values(q8_att_scratch *x, const float *v, int ld, int T, int hd) {
    for (int d = 0; d < hd; d++) {
        const float *r = v + (int64_t)d * ld;
        __m256 mx = _mm256_setzero_ps();
        for (int j = 0; j < T; j += 8) mx = _mm256_max_ps(mx, q8y_abs(_mm256_maskload_ps(r + j, lpv__lane_mask8(T - j))));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float s = _mm_cvtss_f32(h) / 127.0f;
        __m256 inv = _mm256_set1_ps(s > 0.0f ? 1.0f / s : 0.0f);
        int8_t *o = (int8_t *)(x->vp + (int64_t)d * x->T4 / 4);
        for (int j = 0; j < T; j += 8) {
            __m256i c = q8y_code(_mm256_maskload_ps(r + j, lpv__lane_mask8(T - j)), inv);
            __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            p = _mm_packs_epi16(p, p); /* bytes 0..7: the 8 codes (|c| <= 127: no saturation) */
            int8_t b8[16];
            _mm_storeu_si128((__m128i *)b8, p);
            int n = T - j < 8 ? T - j : 8;
            memcpy(o + j, b8, (size_t)n);
        }
        for (int j = T; j < x->T4; j++) o[j] = 0;
        x->sv[d] = s;
    }
}

/* The tile's queries (nv vectors of 8 lanes, lanes past nq 0) -> qp words [hd/4][A2_QV][8] of u8 (+128), sq. */
LPV_VINLINE TQ8Y void q8y_pack_queries(q8_att_scratch *x, const float *q, int ld, int hd, int nv, const __m256i *qm) {
    for (int v = 0; v < nv; v++) {
        __m256 mx = _mm256_setzero_ps(), s, inv;
        for (int d = 0; d < hd; d++) mx = _mm256_max_ps(mx, q8y_abs(_mm256_maskload_ps(q + (int64_t)d * ld + 8 * v, qm[v])));
        q8y_scale(mx, &s, &inv);
        _mm256_storeu_ps(x->sq + 8 * v, s);
        for (int dq = 0; dq < hd / 4; dq++) {
            __m256i c[4];
            for (int t = 0; t < 4; t++)
                c[t] = _mm256_add_epi32(q8y_code(_mm256_maskload_ps(q + (int64_t)(4 * dq + t) * ld + 8 * v, qm[v]), inv),
                                        _mm256_set1_epi32(128));
            _mm256_storeu_si256((__m256i *)(x->qp + ((int64_t)dq * A2_QV + v) * 8), q8y_bytes4(c[0], c[1], c[2], c[3]));
        }
    }
}

/* Step 1: St (T, A2_LD) = sq sk (Σ_d u k8 − 128 ksum) for the tile (unscaled by 1/√hd, as a2_scores). */
LPV_VINLINE TQ8Y void q8y_scores(const q8_att_scratch *x, int T, int hd, int nv) {
    for (int j0 = 0; j0 < T; j0 += A2_JB) {
        __m256i acc[A2_JB][A2_QV];
        for (int jj = 0; jj < A2_JB; jj++)
            for (int v = 0; v < nv; v++) acc[jj][v] = _mm256_setzero_si256();
        const uint32_t *kb = x->kp + (int64_t)(j0 / A2_JB) * (hd / 4) * A2_JB;
        for (int dq = 0; dq < hd / 4; dq++) {
            __m256i qv[A2_QV];
            for (int v = 0; v < nv; v++) qv[v] = _mm256_loadu_si256((const __m256i *)(x->qp + ((int64_t)dq * A2_QV + v) * 8));
            for (int jj = 0; jj < A2_JB; jj++) {
                __m256i kw = _mm256_set1_epi32((int)kb[dq * A2_JB + jj]);
                for (int v = 0; v < nv; v++) acc[jj][v] = q8y_dot(acc[jj][v], qv[v], kw);
            }
        }
        int n = T - j0 < A2_JB ? T - j0 : A2_JB;
        for (int jj = 0; jj < A2_JB; jj++)
            for (int v = 0; v < nv; v++)
                if (jj < n) {
                    int j = j0 + jj;
                    __m256i a = _mm256_sub_epi32(acc[jj][v], _mm256_set1_epi32(128 * x->ksum[j]));
                    __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(x->sq + 8 * v), _mm256_set1_ps(x->sk[j]));
                    _mm256_storeu_ps(x->St + (int64_t)j * A2_LD + 8 * v, _mm256_mul_ps(_mm256_cvtepi32_ps(a), sc));
                }
    }
}

/* Step 3: p = round(255 e) packed [T4/4][A2_QV][8] words (keys >= T: 0); out = sv / 255 · Σ_j p v8 · inv. */
LPV_VINLINE TQ8Y void q8y_values(const q8_att_scratch *x, float *out, int ld, const float *inv, int T, int hd, int nv,
                                 const __m256i *qm) {
    const __m256 k255 = _mm256_set1_ps(255.0f);
    for (int jq = 0; jq < x->T4 / 4; jq++)
        for (int v = 0; v < nv; v++) {
            __m256i c[4];
            for (int t = 0; t < 4; t++) {
                int j = 4 * jq + t;
                c[t] = j < T ? _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x->St + (int64_t)j * A2_LD + 8 * v), k255))
                             : _mm256_setzero_si256();
            }
            _mm256_storeu_si256((__m256i *)(x->pp + ((int64_t)jq * A2_QV + v) * 8), q8y_bytes4(c[0], c[1], c[2], c[3]));
        }
    for (int d0 = 0; d0 < hd; d0 += A2_JB) {
        __m256i acc[A2_JB][A2_QV];
        for (int dd = 0; dd < A2_JB; dd++)
            for (int v = 0; v < nv; v++) acc[dd][v] = _mm256_setzero_si256();
        for (int jq = 0; jq < x->T4 / 4; jq++) {
            __m256i p[A2_QV];
            for (int v = 0; v < nv; v++) p[v] = _mm256_loadu_si256((const __m256i *)(x->pp + ((int64_t)jq * A2_QV + v) * 8));
            for (int dd = 0; dd < A2_JB; dd++) {
                __m256i vw = _mm256_set1_epi32((int)x->vp[(int64_t)(d0 + dd) * x->T4 / 4 + jq]);
                for (int v = 0; v < nv; v++) acc[dd][v] = q8y_dot(acc[dd][v], p[v], vw);
            }
        }
        for (int dd = 0; dd < A2_JB; dd++)
            for (int v = 0; v < nv; v++) {
                __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[dd][v]), _mm256_set1_ps(x->sv[d0 + dd] / 255.0f));
                _mm256_maskstore_ps(out + (int64_t)(d0 + dd) * ld + 8 * v, qm[v], _mm256_mul_ps(r, _mm256_loadu_ps(inv + 8 * v)));
            }
    }
}

#define Q8Y_STEPS(NV)                                                                                                  \
    __attribute__((noinline)) TQ8Y static void q8y_scores##NV(const q8_att_scratch *x, int T, int hd) {                \
        q8y_scores(x, T, hd, NV);                                                                                      \
    }                                                                                                                  \
    __attribute__((noinline)) TQ8Y static void q8y_values##NV(const q8_att_scratch *x, float *out, int ld,             \
                                                              const float *inv, int T, int hd, const __m256i *qm) {    \
        q8y_values(x, out, ld, inv, T, hd, NV, qm);                                                                    \
    }                                                                                                                  \
    TQ8Y static void q8y_tile##NV(q8_att_scratch *x, float *o, const float *q, int ld, int T, int hd, float scale,     \
                                  int nq) {                                                                            \
        __m256i qm[A2_QV];                                                                                             \
        float inv[A2_LD];                                                                                              \
        for (int v = 0; v < NV; v++) qm[v] = lpv__lane_mask8(nq - 8 * v);                                              \
        q8y_pack_queries(x, q, ld, hd, NV, qm);                                                                        \
        q8y_scores##NV(x, T, hd);                                                                                      \
        a2_softmax##NV(x->St, inv, T, scale);                                                                          \
        q8y_values##NV(x, o, ld, inv, T, hd, qm);                                                                      \
    }

Q8Y_STEPS(1)
Q8Y_STEPS(2)
Q8Y_STEPS(3)

/* One (image b, head h) in int8 on AVX-VNNI; hd % 4 == 0. Query tiles of up to 24 and the next unit's prefetch
 * as in lpv__attention_head_avx2. */
TQ8Y void lpv__attention_head_q8y(float *out, const float *qkv, int ld, int b, int h, int T, int D, int hd,
                                  float *scratch, int nb, int nh) {
    head_operands hop = head_of(out, qkv, ld, b, h, T, D, hd);
    q8_att_scratch x = q8y_layout(scratch, T, hd);
    float scale = 1.0f / sqrtf((float)hd);
    int ntiles = (T + A2_LD - 1) / A2_LD, tile = 0;
    q8y_pack_keys(&x, hop.k, ld, T, hd);
    q8y_pack_values(&x, hop.v, ld, T, hd);
    for (int i0 = 0; i0 < T; tile++) {
        int nq = T - i0 < A2_LD ? T - i0 : A2_LD;
        prefetch_next_share(qkv, ld, nb, nh, T, D, hd, tile, ntiles);
        if (nq > 16) q8y_tile3(&x, hop.o + i0, hop.q + i0, ld, T, hd, scale, nq);
        else if (nq > 8) q8y_tile2(&x, hop.o + i0, hop.q + i0, ld, T, hd, scale, nq);
        else q8y_tile1(&x, hop.o + i0, hop.q + i0, ld, T, hd, scale, nq);
        i0 += nq;
    }
}
