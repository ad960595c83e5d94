/*
 * vmath.h — internal vectorized math for kernel epilogues: exp on (-inf, 0],
 * erf, and exact (erf) GELU, as static inline functions in three flavours:
 * portable scalar (lpv__erf_s / lpv__gelu_s), AVX2+FMA (8 lanes, *8) and
 * AVX-512 (16 lanes, *16). The vector functions carry their own target
 * attribute, so only TUs that dispatch on lpv_isa_get() may call them
 * (src/engine/kernels/bsr_avx2.c, src/engine/kernels/bsr_avx512.c); the generic build has no -m flags.
 * Nothing is allocated. The exported array routine is lpv_vgelu (bsr.h).
 *
 * Method (z = |x|; all flavours evaluate the same formulas with the same FMAs,
 * so they agree to within a few ulp — reciprocal and exp scaling differ):
 *   z <  1     erf(z)  = z + z·(P(z²) - 1)         P: degree 6, rel. err 1.2e-9
 *   z >= 1     erfc(z) = exp(-z²) · E(t), t = 2/(2+z), z clamped to 12
 *              E: degree 8 fit of erfcx(z) = exp(z²)·erfc(z), rel. err 5e-8
 *              exp(-z²) with z² split hi+lo by an FMA, so no argument rounding
 *              is amplified (erfc stays relatively accurate out to z ≈ 9).
 *   gelu(x) = x·Φ(x) with one branch-free path for every x: q = Φ(-|x|) =
 *   0.5·erfc(|x|/√2) = 0.5·exp(-x²/2)·G(t), t = 2/(2+|x|/√2) (G: degree 9
 *   fit of erfcx on [0, 14], rel. err 6.2e-8; t by reciprocal + Newton in
 *   the vector flavours), exp(-x²/2) from x directly (hi+lo as above); then
 *   gelu = x·(1 - q) for x > 0, x·q otherwise. The negative tail is thus
 *   accurate relative to its own (tiny) size, unlike 0.5·x·(1 + erff(·)).
 *   The AVX-512 GELU evaluates the same formula with fewer instructions (it
 *   runs in every fc1 epilogue): the 0.5 is folded into G's coefficients,
 *   the lo part of x² enters the exp's reduced argument instead of a
 *   (1 - lo/2) factor, t = 1/(1 + |x|/(2√2)), gelu = x - x·q for x > 0, and
 *   NaN propagates through the clamp by operand order (lpv__gelu16_exp,
 *   ~33 cycles per 16 values on Zen 4; the scalar-mirroring form took ~38).
 *   For |x| < 6, lpv__gelu16 skips the exp: Φ(-|x|) comes from 32 degree-6
 *   pieces fit to relative error 1.2e-7 (coefficients chosen per lane by a
 *   permute), ~18 cycles per 16 values; a vector with any |x| >= 5.99 or NaN
 *   takes lpv__gelu16_exp. lpv__gelu8 does the same below 4 with 8 degree-7
 *   pieces (AVX2's vpermps picks from 8 entries; rel. err 2.2e-7), else
 *   lpv__gelu8_exp, the exp formula without blends.
 * Measured over every 97th float in [-10, 10] against double erf/erfc:
 * |erf - erf_double| <= 7.5e-8 (erff: 5.2e-8); GELU relative error <= 5.7e-7
 * wherever |gelu| > 1e-30, absolute <= 3.9e-7 (tests/test_bsr.c checks both).
 * Special values: erf(±0) = ±0, erf(±inf) = ±1, gelu(+inf) = +inf,
 * gelu(±0) = ±0, gelu(-inf) = -0 (the limit; the erff formula gives NaN),
 * NaN -> NaN.
 */
#ifndef LPVIT_VMATH_H
#define LPVIT_VMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LPV_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define LPV_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define LPV_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))
#define LPV_VINLINE static inline __attribute__((always_inline))

/* erf(z)/z = P(z²) on [0, 1] */
#define LPV_ERF_P0M1 1.28379166e-01f /* P0 - 1 = 2/sqrt(pi) - 1 */
#define LPV_ERF_P1 -3.761262584e-01f
#define LPV_ERF_P2 1.128358527e-01f
#define LPV_ERF_P3 -2.685381592e-02f
#define LPV_ERF_P4 5.188334205e-03f
#define LPV_ERF_P5 -8.010244870e-04f
#define LPV_ERF_P6 7.854016490e-05f
/* erfcx(z) = E(t), t = 2/(2+z), z in [1, 12] */
#define LPV_ERF_E0 -1.897892076e-06f
#define LPV_ERF_E1 2.821460520e-01f
#define LPV_ERF_E2 2.815355727e-01f
#define LPV_ERF_E3 2.498983666e-01f
#define LPV_ERF_E4 1.684866753e-01f
#define LPV_ERF_E5 8.331159871e-02f
#define LPV_ERF_E6 5.323572151e-02f
#define LPV_ERF_E7 -2.050571196e-01f
#define LPV_ERF_E8 8.695131827e-02f
/* GELU: erfcx(z) = G(t), t = 2/(2+z), z in [0, 14], rel. err 6.2e-8 */
#define LPV_GELU_G0 -5.307243628e-07f
#define LPV_GELU_G1 2.820974815e-01f
#define LPV_GELU_G2 2.822770534e-01f
#define LPV_GELU_G3 2.435920688e-01f
#define LPV_GELU_G4 2.011884908e-01f
#define LPV_GELU_G5 -2.367692093e-02f
#define LPV_GELU_G6 2.743381358e-01f
#define LPV_GELU_G7 -4.842712967e-01f
#define LPV_GELU_G8 2.832758667e-01f
#define LPV_GELU_G9 -5.882039089e-02f
#define LPV_ERF_SPLIT 1.0f
#define LPV_ERF_ZMAX 12.0f
#define LPV_GELU_XMAX 12.5f /* the vector GELUs' tail: x or ±0 past it, no denormal on the way */
/* exp: Cephes expf reduction and polynomial */
#define LPV_EXP_LOG2E 1.44269504088896341f
#define LPV_EXP_C1 0.693359375f
#define LPV_EXP_C2 -2.12194440e-4f
#define LPV_EXP_Q0 1.9875691500e-4f
#define LPV_EXP_Q1 1.3981999507e-3f
#define LPV_EXP_Q2 8.3334519073e-3f
#define LPV_EXP_Q3 4.1665795894e-2f
#define LPV_EXP_Q4 1.6666665459e-1f
#define LPV_EXP_Q5 5.0000001201e-1f
#define LPV_EXP_MIN -87.0f /* below: result flushed to 0 */
#define LPV_SQRT1_2 0.70710678118654752f

/* ---------------------------------------------------------------------------
 * Scalar mirror (portable C, uses fmaf). */

/* exp(a) for a <= 0; 0 below LPV_EXP_MIN. */
static inline float lpv__exp_neg_s(float a) {
    if (!(a >= LPV_EXP_MIN)) return 0.0f;
    /* round to nearest by the 1.5·2^23 trick (|a·log2e| < 2^22), no libm call */
    float n = (a * LPV_EXP_LOG2E + 12582912.0f) - 12582912.0f;
    float r = fmaf(-n, LPV_EXP_C1, a);
    r = fmaf(-n, LPV_EXP_C2, r);
    float p = fmaf(LPV_EXP_Q0, r, LPV_EXP_Q1);
    p = fmaf(p, r, LPV_EXP_Q2);
    p = fmaf(p, r, LPV_EXP_Q3);
    p = fmaf(p, r, LPV_EXP_Q4);
    p = fmaf(p, r, LPV_EXP_Q5);
    p = fmaf(p, r * r, r) + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n >= -126 here */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float lpv__erf_small_s(float z) { /* erf(z), 0 <= z < 1 */
    float u = z * z;
    float p = fmaf(LPV_ERF_P6, u, LPV_ERF_P5);
    p = fmaf(p, u, LPV_ERF_P4);
    p = fmaf(p, u, LPV_ERF_P3);
    p = fmaf(p, u, LPV_ERF_P2);
    p = fmaf(p, u, LPV_ERF_P1);
    p = fmaf(p, u, LPV_ERF_P0M1);
    return fmaf(z, p, z);
}

static inline float lpv__erfcx_s(float z) { /* exp(z²)·erfc(z), 1 <= z <= 12 */
    float t = 2.0f / (2.0f + z);
    float e = fmaf(LPV_ERF_E8, t, LPV_ERF_E7);
    e = fmaf(e, t, LPV_ERF_E6);
    e = fmaf(e, t, LPV_ERF_E5);
    e = fmaf(e, t, LPV_ERF_E4);
    e = fmaf(e, t, LPV_ERF_E3);
    e = fmaf(e, t, LPV_ERF_E2);
    e = fmaf(e, t, LPV_ERF_E1);
    return fmaf(e, t, LPV_ERF_E0);
}

static inline float lpv__erf_s(float x) {
    if (isnan(x)) return x;
    float z = fabsf(x), r;
    if (z < LPV_ERF_SPLIT) {
        r = lpv__erf_small_s(z);
    } else {
        z = z < LPV_ERF_ZMAX ? z : LPV_ERF_ZMAX;
        float hi = z * z, lo = fmaf(z, z, -hi);
        float e = lpv__exp_neg_s(-hi) * (1.0f - lo);
        r = fmaf(-e, lpv__erfcx_s(z), 1.0f);
    }
    return copysignf(r, x);
}

static inline float lpv__gelu_g_s(float t) {
    float e = fmaf(LPV_GELU_G9, t, LPV_GELU_G8);
    e = fmaf(e, t, LPV_GELU_G7);
    e = fmaf(e, t, LPV_GELU_G6);
    e = fmaf(e, t, LPV_GELU_G5);
    e = fmaf(e, t, LPV_GELU_G4);
    e = fmaf(e, t, LPV_GELU_G3);
    e = fmaf(e, t, LPV_GELU_G2);
    e = fmaf(e, t, LPV_GELU_G1);
    return fmaf(e, t, LPV_GELU_G0);
}

static inline float lpv__gelu_s(float x) {
    if (isnan(x)) return x;
    float xc = x < -20.0f ? -20.0f : (x > 20.0f ? 20.0f : x);
    float z = fabsf(xc) * LPV_SQRT1_2;
    float t = 2.0f / (2.0f + z);
    float hi = xc * xc, lo = fmaf(xc, xc, -hi);
    float q = 0.5f * lpv__exp_neg_s(-0.5f * hi) * (1.0f - 0.5f * lo) * lpv__gelu_g_s(t); /* Φ(-|x|) */
    return x > 0 ? x * (1.0f - q) : xc * q;
}

/* ---------------------------------------------------------------------------
 * AVX2 + FMA, 8 lanes. */

/* The first n lanes (n <= 0: none, n >= 8: all), for vmaskmov loads and stores. */
LPV_VINLINE LPV_TARGET_AVX2 __m256i lpv__lane_mask8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* exp(a) = 2^n · e^r: n = round(a·log2 e), r = a - n·ln 2 in two parts (Cody-Waite), as lpv__exp_reduce16. */
LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__exp_reduce8(__m256 a, __m256 *n_out) {
    __m256 n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(LPV_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LPV_EXP_C1), a);
    *n_out = n;
    return _mm256_fnmadd_ps(n, _mm256_set1_ps(LPV_EXP_C2), r);
}

/* e^r for the reduced argument, |r| <= ln 2 / 2 (the polynomial of lpv__exp_poly16). */
LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__exp_poly8(__m256 r) {
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(LPV_EXP_Q0), r, _mm256_set1_ps(LPV_EXP_Q1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LPV_EXP_Q2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LPV_EXP_Q3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LPV_EXP_Q4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LPV_EXP_Q5));
    return _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
}

/* 2^n for whole n in the normal range, from its exponent bits. */
LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__pow2n8(__m256 n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}

LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__exp_neg8(__m256 a) {
    __m256 keep = _mm256_cmp_ps(a, _mm256_set1_ps(LPV_EXP_MIN), _CMP_GE_OQ);
    a = _mm256_max_ps(a, _mm256_set1_ps(LPV_EXP_MIN));
    __m256 n, r = lpv__exp_reduce8(a, &n);
    return _mm256_and_ps(_mm256_mul_ps(lpv__exp_poly8(r), lpv__pow2n8(n)), keep);
}

/* The AVX2 int8 kernel's k-quad step (bsr_q8.c) and the loop that measures its peak (peak.c): acc += Σ_j
 * x.byte[4l + j] · w.byte[j] per 32-bit lane l (x unsigned, w signed) by vpmaddubsw (u8 · s8 pairs into int16;
 * no saturation while x <= 127), vpmaddwd by ones, vpaddd. Inline asm keeps gcc from reassociating the int32
 * adds across k-steps, which keeps products live and spills accumulators (seen with the int16 kernel it
 * replaced, gcc 12); ones is a memory operand: the tile's 12 accumulators, 2 weights, x and the product already
 * fill the 16 ymm registers. */
static const int16_t LPV_ONES16[16] __attribute__((aligned(32))) = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
LPV_VINLINE LPV_TARGET_AVX2 __m256i lpv__dot4_u7(__m256i acc, __m256i x, __m256i w) {
    __m256i t;
    __asm__("vpmaddubsw %[w], %[x], %[t]\n\tvpmaddwd %[one], %[t], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
            : [acc] "+x"(acc), [t] "=&x"(t)
            : [x] "x"(x), [w] "x"(w), [one] "m"(*(const __m256i *)LPV_ONES16));
    return acc;
}

LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__erf_small8(__m256 z) {
    __m256 u = _mm256_mul_ps(z, z);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(LPV_ERF_P6), u, _mm256_set1_ps(LPV_ERF_P5));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(LPV_ERF_P4));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(LPV_ERF_P3));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(LPV_ERF_P2));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(LPV_ERF_P1));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(LPV_ERF_P0M1));
    return _mm256_fmadd_ps(z, p, z);
}

LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__erfcx8(__m256 z) {
    __m256 t = _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(_mm256_set1_ps(2.0f), z));
    __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(LPV_ERF_E8), t, _mm256_set1_ps(LPV_ERF_E7));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E6));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E5));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E4));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E3));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E2));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E1));
    return _mm256_fmadd_ps(e, t, _mm256_set1_ps(LPV_ERF_E0));
}

LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__erf8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_andnot_ps(sign, x);
    __m256 small = lpv__erf_small8(z);
    __m256 zc = _mm256_min_ps(_mm256_max_ps(z, _mm256_set1_ps(LPV_ERF_SPLIT)), _mm256_set1_ps(LPV_ERF_ZMAX));
    __m256 hi = _mm256_mul_ps(zc, zc), lo = _mm256_fmsub_ps(zc, zc, hi);
    __m256 e = _mm256_mul_ps(lpv__exp_neg8(_mm256_xor_ps(hi, sign)), _mm256_sub_ps(_mm256_set1_ps(1.0f), lo));
    __m256 big = _mm256_fnmadd_ps(e, lpv__erfcx8(zc), _mm256_set1_ps(1.0f));
    __m256 r = _mm256_blendv_ps(big, small, _mm256_cmp_ps(z, _mm256_set1_ps(LPV_ERF_SPLIT), _CMP_LT_OQ));
    r = _mm256_or_ps(r, _mm256_and_ps(x, sign));
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* GELU on 8 lanes for every x (lpv__gelu8 below takes it for |x| >= 4 and NaN), lpv__gelu16_exp's formula (0.5
 * folded into G, the lo part of x² in the exp's reduced argument) with no blend: gelu = max(0, x) - |xc|·q for
 * every x (x > 0: x - x·q; x <= 0: x·q), q = Φ(-|xc|); past -XMAX q is zeroed and the sign set (-0), past +XMAX
 * x - 12.5·q rounds to x. vblendvps is 3 uops on Intel cores: on
 * the 2-vCPU Xeon of docs/benchmarks.md this form takes 0.89-0.90 ns a value (build/tests/bench_gelu), the blend
 * one before 1.37.
 * NaN: max(0, x) and the clamps keep it (they return their second operand). */
LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__gelu8_exp(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 xc = _mm256_min_ps(_mm256_set1_ps(LPV_GELU_XMAX), _mm256_max_ps(_mm256_set1_ps(-LPV_GELU_XMAX), x));
    __m256 ax = _mm256_andnot_ps(sign, xc);
    /* t = 1/(1 + |x|/(2√2)): 12-bit reciprocal + one Newton step (rel. err ~1e-7) */
    __m256 d = _mm256_fmadd_ps(ax, _mm256_set1_ps(0.5f * LPV_SQRT1_2), _mm256_set1_ps(1.0f));
    __m256 t = _mm256_rcp_ps(d);
    t = _mm256_mul_ps(t, _mm256_fnmadd_ps(d, t, _mm256_set1_ps(2.0f)));
    __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(0.5f * LPV_GELU_G9), t, _mm256_set1_ps(0.5f * LPV_GELU_G8));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G7));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G6));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G5));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G4));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G3));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G2));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G1));
    e = _mm256_fmadd_ps(e, t, _mm256_set1_ps(0.5f * LPV_GELU_G0));
    /* exp(-x²/2), x² = hi + lo: a = -hi/2 (exact) reduced, -lo/2 added to the reduced argument; a >= -78.2, so
     * 2^n is a normal float made from its exponent bits */
    __m256 hi = _mm256_mul_ps(xc, xc), lo = _mm256_fmsub_ps(xc, xc, hi);
    __m256 n, r = lpv__exp_reduce8(_mm256_mul_ps(hi, _mm256_set1_ps(-0.5f)), &n);
    r = _mm256_fnmadd_ps(lo, _mm256_set1_ps(0.5f), r);
    __m256 q = _mm256_mul_ps(_mm256_mul_ps(lpv__exp_poly8(r), lpv__pow2n8(n)), e);
    __m256 far = _mm256_cmp_ps(x, _mm256_set1_ps(-LPV_GELU_XMAX), _CMP_LT_OQ); /* gelu = -0 there */
    q = _mm256_andnot_ps(far, q);
    __m256 g = _mm256_fnmadd_ps(ax, q, _mm256_max_ps(_mm256_setzero_ps(), x));
    return _mm256_or_ps(g, _mm256_and_ps(far, sign));
}

/* The exp form out of line, for lpv__gelu8's rare vectors: inlined into every register tile (bsr_avx2.c runs
 * GELU on 12 accumulators) it would be copied 12 times for 1 vector in 15. */
__attribute__((noinline, unused)) static LPV_TARGET_AVX2 __m256 lpv__gelu8_far(__m256 x) { return lpv__gelu8_exp(x); }

/* GELU for |x| < 4 without exp, as lpv__gelu16 does below 6 but with the one-register permute AVX2 has:
   Φ(-|x|) from 8 degree-7 pieces of width 1/2 in u = 4|x| - (2i + 1) in [-1, 1), i = floor(2|x|), each
   coefficient picked per lane by vpermps (fit to relative error 1e-7 with float coefficients, 2.2e-7 after
   float Horner). A vector with any |x| >= 4 or NaN takes the exp form. On the real DeiT-Tiny and ViT-Tiny,
   6-7 % of fc1's 8-token vectors hold such a value (5 images, every block); the form takes 0.27-0.28 ns a value
   against the exp form's 0.70-0.73 on AMD Zen 5 (one thread, values in [-4, 4): build/tests/bench_gelu). */
static const float LPV_GELU8_PW0[8] __attribute__((aligned(32))) = {4.012936652e-01f, 2.266273499e-01f, 1.056497768e-01f, 4.005915672e-02f, 1.222447306e-02f, 2.979763318e-03f, 5.770250573e-04f, 8.841728413e-05f};
static const float LPV_GELU8_PW1[8] __attribute__((aligned(32))) = {-9.666702896e-02f, -7.528436184e-02f, -4.566227272e-02f, -2.156933025e-02f, -7.934913039e-03f, -2.273390768e-03f, -5.072620115e-04f, -8.814891771e-05f};
static const float LPV_GELU8_PW2[8] __attribute__((aligned(32))) = {3.020846751e-03f, 7.057907060e-03f, 7.134730462e-03f, 4.718291108e-03f, 2.231694292e-03f, 7.814784185e-04f, 2.060750267e-04f, 4.131978494e-05f};
static const float LPV_GELU8_PW3[8] __attribute__((aligned(32))) = {9.440116119e-04f, 3.430928045e-04f, -2.675514261e-04f, -4.634003853e-04f, -3.357869864e-04f, -1.554078626e-04f, -5.052813867e-05f, -1.199420149e-05f};
static const float LPV_GELU8_PW4[8] __attribute__((aligned(32))) = {-4.622241249e-05f, -8.959585102e-05f, -5.341926590e-05f, 1.533082013e-06f, 2.397309254e-05f, 1.856899871e-05f, 8.117502148e-06f, 2.380779506e-06f};
static const float LPV_GELU8_PW5[8] __attribute__((aligned(32))) = {-8.262681149e-06f, 1.440582906e-07f, 5.845043233e-06f, 4.205359801e-06f, 4.503638991e-07f, -1.094548225e-06f, -8.450849691e-07f, -3.339991110e-07f};
static const float LPV_GELU8_PW6[8] __attribute__((aligned(32))) = {4.718628190e-07f, 7.328938523e-07f, 1.427725209e-07f, -3.144461402e-07f, -2.413917457e-07f, -2.881804662e-08f, 4.598223313e-08f, 3.230836043e-08f};
static const float LPV_GELU8_PW7[8] __attribute__((aligned(32))) = {4.878233639e-08f, -2.122713916e-08f, -4.841875523e-08f, -9.288465996e-09f, 1.636199443e-08f, 9.278037005e-09f, 7.475065567e-10f, -1.795884663e-09f};

LPV_VINLINE LPV_TARGET_AVX2 __m256 lpv__gelu8(__m256 x) {
    __m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    if (_mm256_movemask_ps(_mm256_cmp_ps(z, _mm256_set1_ps(4.0f), _CMP_NLT_UQ))) return lpv__gelu8_far(x);
    __m256i i = _mm256_cvttps_epi32(_mm256_add_ps(z, z));
    /* exact: 4|x| and 2i + 1 are floats within a factor 16 of each other */
    __m256 u = _mm256_fmsub_ps(z, _mm256_set1_ps(4.0f),
                               _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(2.0f), _mm256_set1_ps(1.0f)));
#define LPV_PW8(k) _mm256_permutevar8x32_ps(_mm256_load_ps(LPV_GELU8_PW##k), i)
    __m256 q = _mm256_fmadd_ps(LPV_PW8(7), u, LPV_PW8(6));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(5));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(4));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(3));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(2));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(1));
    q = _mm256_fmadd_ps(q, u, LPV_PW8(0));
#undef LPV_PW8
    /* max(0, x) - |x|·q, as in lpv__gelu8_exp (±0 keep their sign) */
    return _mm256_fnmadd_ps(z, q, _mm256_max_ps(_mm256_setzero_ps(), x));
}

/* ---------------------------------------------------------------------------
 * AVX-512, 16 lanes. */

/* exp(a) = 2^n · e^r: n = round(a·log2 e), r = a - n·ln 2 in two parts (Cody-Waite). */
LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__exp_reduce16(__m512 a, __m512 *n_out) {
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(LPV_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LPV_EXP_C1), a);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LPV_EXP_C2), r);
    *n_out = n;
    return r;
}

/* e^r for the reduced argument, |r| <= ln 2 / 2 (same polynomial as the scalar and AVX2 versions). */
LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__exp_poly16(__m512 r) {
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(LPV_EXP_Q0), r, _mm512_set1_ps(LPV_EXP_Q1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LPV_EXP_Q2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LPV_EXP_Q3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LPV_EXP_Q4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LPV_EXP_Q5));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return p;
}

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__exp_neg16(__m512 a) {
    a = _mm512_max_ps(a, _mm512_set1_ps(-150.0f)); /* scalef flushes to 0 below */
    __m512 n, r = lpv__exp_reduce16(a, &n);
    __m512 p = lpv__exp_poly16(r);
    __m512 res = _mm512_scalef_ps(p, n);
    /* same cutoff as the scalar and AVX2 versions */
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(LPV_EXP_MIN), _CMP_GE_OQ), res);
}

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__erf_small16(__m512 z) {
    __m512 u = _mm512_mul_ps(z, z);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(LPV_ERF_P6), u, _mm512_set1_ps(LPV_ERF_P5));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(LPV_ERF_P4));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(LPV_ERF_P3));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(LPV_ERF_P2));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(LPV_ERF_P1));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(LPV_ERF_P0M1));
    return _mm512_fmadd_ps(z, p, z);
}

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__erfcx16(__m512 z) {
    __m512 t = _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(_mm512_set1_ps(2.0f), z));
    __m512 e = _mm512_fmadd_ps(_mm512_set1_ps(LPV_ERF_E8), t, _mm512_set1_ps(LPV_ERF_E7));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E6));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E5));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E4));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E3));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E2));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E1));
    return _mm512_fmadd_ps(e, t, _mm512_set1_ps(LPV_ERF_E0));
}

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__erf16(__m512 x) {
    __m512 z = _mm512_abs_ps(x);
    __m512 small = lpv__erf_small16(z);
    __m512 zc = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(LPV_ERF_SPLIT)), _mm512_set1_ps(LPV_ERF_ZMAX));
    __m512 hi = _mm512_mul_ps(zc, zc), lo = _mm512_fmsub_ps(zc, zc, hi);
    __m512 e = _mm512_mul_ps(lpv__exp_neg16(_mm512_sub_ps(_mm512_setzero_ps(), hi)), _mm512_sub_ps(_mm512_set1_ps(1.0f), lo));
    __m512 r = _mm512_fnmadd_ps(e, lpv__erfcx16(zc), _mm512_set1_ps(1.0f));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(z, _mm512_set1_ps(LPV_ERF_SPLIT), _CMP_LT_OQ), small);
    r = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r),
                                            _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN))));
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__gelu16_exp(__m512 x) {
    /* clamp with x second so a NaN propagates through max/min (they return the second operand); at |x| =
     * LPV_GELU_XMAX every intermediate is still a normal float (denormals cost Intel cores a microcode assist
     * each: fc1 twice as slow where outputs sat near 13-14), and past it the tail is flushed below */
    __m512 xc = _mm512_min_ps(_mm512_set1_ps(LPV_GELU_XMAX), _mm512_max_ps(_mm512_set1_ps(-LPV_GELU_XMAX), x));
    /* t = 2/(2+z) = 1/(1 + |x|/(2√2)): 14-bit reciprocal + one Newton step (rel. err ~1e-8) */
    __m512 d = _mm512_fmadd_ps(_mm512_abs_ps(xc), _mm512_set1_ps(0.5f * LPV_SQRT1_2), _mm512_set1_ps(1.0f));
    __m512 t = _mm512_rcp14_ps(d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    /* 0.5·G(t), the 0.5 of Φ(-|x|) = 0.5·erfc folded into the coefficients */
    __m512 e = _mm512_fmadd_ps(_mm512_set1_ps(0.5f * LPV_GELU_G9), t, _mm512_set1_ps(0.5f * LPV_GELU_G8));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G7));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G6));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G5));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G4));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G3));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G2));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G1));
    e = _mm512_fmadd_ps(e, t, _mm512_set1_ps(0.5f * LPV_GELU_G0));
    /* exp(-x²/2) with x² = hi + lo: the reduction takes a = -hi/2 (exact) and the
       rounding part -lo/2 is added to the reduced argument r */
    __m512 hi = _mm512_mul_ps(xc, xc), lo = _mm512_fmsub_ps(xc, xc, hi);
    __m512 a = _mm512_mul_ps(hi, _mm512_set1_ps(-0.5f));
    __m512 n, r = lpv__exp_reduce16(a, &n);
    r = _mm512_fnmadd_ps(lo, _mm512_set1_ps(0.5f), r);
    __m512 p = lpv__exp_poly16(r);
    /* q = Φ(-|x|) >= ~4e-36 here (normal); x·q, signed zero past the clamp (Φ(-12.5) · 12.5 < 1e-34: gelu(x) is
     * x or ±0 there to far below anything the tests or a network see; -inf gives -0) */
    __m512 xq = _mm512_mul_ps(xc, _mm512_mul_ps(_mm512_scalef_ps(p, n), e));
    xq = _mm512_mask_mov_ps(xq, _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(LPV_GELU_XMAX), _CMP_GT_OQ),
                            _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));
    /* x > 0: x - x·q (x, not xc, keeps +inf); otherwise x·q (-inf: -20·0 = -0) */
    return _mm512_mask_sub_ps(xq, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), x, xq);
}


/* GELU for |x| < 6 without exp: Φ(-|x|) from 32 degree-6 pieces in u = 5.25|x| - i,
   i = round(5.25|x|), coefficients picked per lane by a two-table permute (fit to
   relative error 1.2e-7 with float coefficients). A vector with any |x| >= 5.99
   or NaN takes lpv__gelu16_exp. */
static const float LPV_GELU_PW0[32] = {
    5.000000000e-01f, 4.244680107e-01f, 3.516193032e-01f, 2.838545740e-01f, 2.230584174e-01f, 1.704519093e-01f, 1.265489608e-01f, 9.121122211e-02f, 6.377814710e-02f, 4.323813319e-02f, 2.840551361e-02f, 1.807491668e-02f, 1.113548968e-02f, 6.639635656e-03f, 3.830380505e-03f, 2.137366915e-03f, 1.153310644e-03f, 6.016531843e-04f, 3.033834219e-04f, 1.478446211e-04f, 6.961735198e-05f, 3.167124305e-05f, 1.391848127e-05f, 5.908084859e-06f, 2.422052148e-06f, 9.588709418e-07f, 3.665545307e-07f, 1.352956929e-07f, 4.821303534e-08f, 1.658635540e-08f, 5.508288492e-09f, 1.765782076e-09f};
static const float LPV_GELU_PW1[32] = {
    -7.598900795e-02f, -7.462295145e-02f, -7.067036629e-02f, -6.454246491e-02f, -5.684562400e-02f, -4.828273132e-02f, -3.954848647e-02f, -3.124001436e-02f, -2.379774675e-02f, -1.748250984e-02f, -1.238554064e-02f, -8.461930789e-03f, -5.575286690e-03f, -3.542487044e-03f, -2.170664025e-03f, -1.282685669e-03f, -7.309557986e-04f, -4.017032334e-04f, -2.128936903e-04f, -1.088086792e-04f, -5.362997399e-05f, -2.549147212e-05f, -1.168491417e-05f, -5.165346010e-06f, -2.201996267e-06f, -9.052677683e-07f, -3.589060782e-07f, -1.372232958e-07f, -5.059623120e-08f, -1.799085325e-08f, -6.169197597e-09f, -2.040087876e-09f};
static const float LPV_GELU_PW2[32] = {
    1.871441717e-11f, 1.353704371e-03f, 2.564004157e-03f, 3.512514988e-03f, 4.124852363e-03f, 4.379386082e-03f, 4.304597154e-03f, 3.966985736e-03f, 3.453641431e-03f, 2.854287159e-03f, 2.246810123e-03f, 1.688548480e-03f, 1.213667914e-03f, 8.354164893e-04f, 5.512797507e-04f, 3.490301024e-04f, 2.121595171e-04f, 1.238812692e-04f, 6.951630348e-05f, 3.750322139e-05f, 1.945758413e-05f, 9.711034181e-06f, 4.663365416e-06f, 2.155154561e-06f, 9.586915439e-07f, 4.105518485e-07f, 1.692797298e-07f, 6.721128898e-08f, 2.569961488e-08f, 9.464549144e-09f, 3.357374156e-09f, 1.147255180e-09f};
static const float LPV_GELU_PW3[32] = {
    4.594944476e-04f, 4.348630027e-04f, 3.653170133e-04f, 2.628412039e-04f, 1.441985223e-04f, 2.714391121e-05f, -7.320698205e-05f, -1.469251001e-04f, -1.902372169e-04f, -2.049562754e-04f, -1.968294091e-04f, -1.734612306e-04f, -1.424203365e-04f, -1.099220390e-04f, -8.021274698e-05f, -5.555994721e-05f, -3.663282041e-05f, -2.304012560e-05f, -1.384545521e-05f, -7.959554750e-06f, -4.381990493e-06f, -2.312142215e-06f, -1.170080736e-06f, -5.682300639e-07f, -2.649418605e-07f, -1.186519967e-07f, -5.105671619e-08f, -2.111635844e-08f, -8.396366269e-09f, -3.210508970e-09f, -1.180751275e-09f, -4.177598822e-10f};
static const float LPV_GELU_PW4[32] = {
    -2.971896618e-10f, -1.213080668e-05f, -2.213172411e-05f, -2.839188710e-05f, -3.017429299e-05f, -2.771296568e-05f, -2.204563680e-05f, -1.465858895e-05f, -7.079191164e-06f, -5.281711992e-07f, 4.266841643e-06f, 7.096450645e-06f, 8.162776794e-06f, 7.909420674e-06f, 6.852027582e-06f, 5.448507636e-06f, 4.033364803e-06f, 2.803566758e-06f, 1.840123787e-06f, 1.144928660e-06f, 6.772939969e-07f, 3.817143579e-07f, 2.053074013e-07f, 1.055244212e-07f, 5.188613628e-08f, 2.442781266e-08f, 1.101980551e-08f, 4.766404160e-09f, 1.977729980e-09f, 7.875931018e-10f, 3.011403904e-10f, 1.105910571e-10f};
static const float LPV_GELU_PW5[32] = {
    -2.495696890e-06f, -2.274734925e-06f, -1.664552201e-06f, -8.119087056e-07f, 8.963621667e-08f, 8.549941981e-07f, 1.354727715e-06f, 1.541431402e-06f, 1.444366717e-06f, 1.149045147e-06f, 7.616363860e-07f, 3.783291618e-07f, 6.536357233e-08f, -1.469526296e-07f, -2.588065229e-07f, -2.901884386e-07f, -2.686733467e-07f, -2.203904614e-07f, -1.650502099e-07f, -1.146434343e-07f, -7.454486450e-08f, -4.566813416e-08f, -2.647018782e-08f, -1.456147469e-08f, -7.620479359e-09f, -3.800876947e-09f, -1.809436379e-09f, -8.231423876e-10f, -3.581814290e-10f, -1.492047319e-10f, -5.954074039e-11f, -2.277484104e-11f};
static const float LPV_GELU_PW6[32] = {
    9.049578864e-10f, 7.468528196e-08f, 1.284300879e-07f, 1.520500632e-07f, 1.441719633e-07f, 1.092617268e-07f, 5.836913175e-08f, 3.770636248e-09f, -3.687135575e-08f, -6.045821976e-08f, -6.659068674e-08f, -5.967257977e-08f, -4.455373315e-08f, -2.593075443e-08f, -1.063275690e-08f, 3.454647957e-10f, 6.660207497e-09f, 9.120538991e-09f, 9.063024997e-09f, 7.652176670e-09f, 5.638371992e-09f, 3.868024567e-09f, 2.465322613e-09f, 1.472176825e-09f, 8.283113639e-10f, 4.408676757e-10f, 2.226314272e-10f, 1.069080380e-10f, 4.890493566e-11f, 2.134198547e-11f, 8.895382694e-12f, 3.544584114e-12f};

LPV_VINLINE LPV_TARGET_AVX512 __m512 lpv__gelu16(__m512 x) {
    __m512 z = _mm512_abs_ps(x);
    if (_mm512_cmp_ps_mask(z, _mm512_set1_ps(5.99f), _CMP_NLT_UQ)) return lpv__gelu16_exp(x);
    __m512 t = _mm512_mul_ps(z, _mm512_set1_ps(5.25f));
    __m512 c = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 u = _mm512_fmsub_ps(z, _mm512_set1_ps(5.25f), c); /* exact: t - c would carry t's rounding */
    __m512i i = _mm512_cvtps_epi32(c);
#define LPV_PW(k) _mm512_permutex2var_ps(_mm512_loadu_ps(LPV_GELU_PW##k), i, _mm512_loadu_ps(LPV_GELU_PW##k + 16))
    __m512 q = _mm512_fmadd_ps(LPV_PW(6), u, LPV_PW(5));
    q = _mm512_fmadd_ps(q, u, LPV_PW(4));
    q = _mm512_fmadd_ps(q, u, LPV_PW(3));
    q = _mm512_fmadd_ps(q, u, LPV_PW(2));
    q = _mm512_fmadd_ps(q, u, LPV_PW(1));
    q = _mm512_fmadd_ps(q, u, LPV_PW(0));
#undef LPV_PW
    __m512 xq = _mm512_mul_ps(x, q);
    return _mm512_mask_sub_ps(xq, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), x, xq);
}

/* GELU in place on nrows x ncols of Y (row stride ldy), the BSR kernels' epilogue (FP32 and int8). With cmin
 * and cmax (at Y's first column; else NULL) also each column's running min and max of the results, for the
 * int8 quantizer of the next layer: min_ps / max_ps keep the running value (second operand) against a NaN. */
LPV_VINLINE LPV_TARGET_AVX512 void lpv__gelu_rows16(float *Y, int64_t ldy, int nrows, int ncols, float *cmin,
                                                    float *cmax) {
    for (int c = 0; c < ncols; c += 16) {
        __mmask16 m = ncols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (ncols - c)) - 1);
        __m512 lo = cmin ? _mm512_maskz_loadu_ps(m, cmin + c) : _mm512_setzero_ps();
        __m512 hi = cmax ? _mm512_maskz_loadu_ps(m, cmax + c) : lo;
        for (int i = 0; i < nrows; i++) {
            float *y = Y + i * ldy + c;
            __m512 v = lpv__gelu16(_mm512_maskz_loadu_ps(m, y));
            _mm512_mask_storeu_ps(y, m, v);
            lo = _mm512_min_ps(v, lo), hi = _mm512_max_ps(v, hi);
        }
        if (cmin) _mm512_mask_storeu_ps(cmin + c, m, lo), _mm512_mask_storeu_ps(cmax + c, m, hi);
    }
}

/* The same with AVX2 (8 columns a vector). */
LPV_VINLINE LPV_TARGET_AVX2 void lpv__gelu_rows8(float *Y, int64_t ldy, int nrows, int ncols, float *cmin, float *cmax) {
    for (int c = 0; c < ncols; c += 8) {
        const int full = ncols - c >= 8; /* whole vectors without the masked moves */
        __m256i m = lpv__lane_mask8(full ? 8 : ncols - c);
        __m256 lo = cmin ? _mm256_maskload_ps(cmin + c, m) : _mm256_setzero_ps();
        __m256 hi = cmax ? _mm256_maskload_ps(cmax + c, m) : lo;
        for (int i = 0; i < nrows; i++) {
            float *y = Y + i * ldy + c;
            __m256 v = lpv__gelu8(full ? _mm256_loadu_ps(y) : _mm256_maskload_ps(y, m));
            if (full) _mm256_storeu_ps(y, v);
            else _mm256_maskstore_ps(y, m, v);
            lo = _mm256_min_ps(v, lo), hi = _mm256_max_ps(v, hi);
        }
        if (cmin) _mm256_maskstore_ps(cmin + c, m, lo), _mm256_maskstore_ps(cmax + c, m, hi);
    }
}

#endif
