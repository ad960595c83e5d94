/*
 * peak.c — register-only FMA loops that measure this machine's arithmetic peak per ISA (lpv_bench_peak):
 * 12 independent accumulator chains, so 2 FMA pipes of latency 4 stay full with room to spare; no memory
 * traffic in the loop. Each returns a value built from every accumulator so none of the work can be dropped.
 * FLOPs per step: AVX2 12 x 8 lanes x 2, AVX-512 12 x 16 x 2, AVX512-BF16 12 x 16 lanes x 2 pairs x 2; int8 ops
 * (a multiply-add is 2) per step of the VNNI loop: 12 x 16 lanes x 4 bytes x 2; of the AVX-VNNI loop 12 x 8 x 4
 * x 2; of the AVX2 int8 loop, which runs the AVX2 int8 kernel's step (vpmaddubsw, vpmaddwd by ones, vpaddd:
 * 4 products a lane), 12 x 8 x 4 x 2.
 */
#include <stdint.h>

#include "bsr_internal.h"
#include "vmath.h"

/* distinct starting values: identical chains would be merged into one by the compiler */
#define ACC12(T, set) \
    T a0 = set(1.0f), a1 = set(1.1f), a2 = set(1.2f), a3 = set(1.3f), a4 = set(1.4f), a5 = set(1.5f), a6 = set(1.6f), \
      a7 = set(1.7f), a8 = set(1.8f), a9 = set(1.9f), a10 = set(2.0f), a11 = set(2.1f)
#define STEP12(op) \
    a0 = op(a0), a1 = op(a1), a2 = op(a2), a3 = op(a3), a4 = op(a4), a5 = op(a5), a6 = op(a6), a7 = op(a7), \
    a8 = op(a8), a9 = op(a9), a10 = op(a10), a11 = op(a11)
#define SUM12(add) add(add(add(add(a0, a1), add(a2, a3)), add(add(a4, a5), add(a6, a7))), add(add(a8, a9), add(a10, a11)))

LPV_TARGET_AVX2 float lpv__peak_avx2(int64_t steps, float m, float c) {
    __m256 vm = _mm256_set1_ps(m), vc = _mm256_set1_ps(c);
    ACC12(__m256, _mm256_set1_ps);
#define OP(a) _mm256_fmadd_ps(a, vm, vc)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    __m256 r = SUM12(_mm256_add_ps);
    return _mm256_cvtss_f32(r);
}

LPV_TARGET_AVX512 float lpv__peak_avx512(int64_t steps, float m, float c) {
    __m512 vm = _mm512_set1_ps(m), vc = _mm512_set1_ps(c);
    ACC12(__m512, _mm512_set1_ps);
#define OP(a) _mm512_fmadd_ps(a, vm, vc)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    __m512 r = SUM12(_mm512_add_ps);
    return _mm512_reduce_add_ps(r);
}

LPV_TARGET_AVX512BF16 float lpv__peak_avx512bf16(int64_t steps, float m, float c) {
    __m512bh vm = _mm512_cvtne2ps_pbh(_mm512_set1_ps(m), _mm512_set1_ps(m));
    __m512bh vc = _mm512_cvtne2ps_pbh(_mm512_set1_ps(c), _mm512_set1_ps(c));
    ACC12(__m512, _mm512_set1_ps);
#define OP(a) _mm512_dpbf16_ps(a, vm, vc)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    __m512 r = SUM12(_mm512_add_ps);
    return _mm512_reduce_add_ps(r);
}

/* The int32 lanes of r summed in float (an int reduction would be C int arithmetic). */
LPV_VINLINE LPV_TARGET_AVX2 float hsum_epi32_8(__m256i r) {
    __m256 f = _mm256_cvtepi32_ps(r);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

/* The AVX2 int8 kernel's step (lpv__dot4_u7: 32 multiply-adds) on loop-invariant x and w. */
LPV_TARGET_AVX2 float lpv__peak_maddubs(int64_t steps, float m, float c) {
    /* x is 0 at run time (m < 2; the compiler cannot know it): the sums never move, so no lane wraps */
    __m256i x = _mm256_set1_epi8((char)(m > 2 ? 1 : 0)), w = _mm256_set1_epi8((char)(c > 0 ? 3 : 5));
#define SETI(v) _mm256_set1_epi32((int)((v)*10))
    ACC12(__m256i, SETI);
#undef SETI
#define OP(a) lpv__dot4_u7(a, x, w)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    return hsum_epi32_8(SUM12(_mm256_add_epi32));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma"))) float lpv__peak_vnni(int64_t steps,
                                                                                                         float m,
                                                                                                         float c) {
    /* the unsigned operand is 0 at run time (m < 2; the compiler cannot know it): the sums never move, so no lane
     * wraps, and vpdpbusd's rate does not depend on the data */
    __m512i vm = _mm512_set1_epi8((char)(m > 2 ? 1 : 0)), vc = _mm512_set1_epi8((char)(c > 0 ? 2 : 1));
#define SETI(v) _mm512_set1_epi32((int)((v)*10))
    ACC12(__m512i, SETI);
#undef SETI
#define OP(a) _mm512_dpbusd_epi32(a, vm, vc)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    __m512i r = SUM12(_mm512_add_epi32);
    return _mm512_reduce_add_ps(_mm512_cvtepi32_ps(r)); /* in float: the int reduction is C int arithmetic */
}

/* As lpv__peak_vnni with the VEX form on ymm (AVX-VNNI). */
__attribute__((target("avx2,fma,avxvnni"))) float lpv__peak_avxvnni(int64_t steps, float m, float c) {
    __m256i vm = _mm256_set1_epi8((char)(m > 2 ? 1 : 0)), vc = _mm256_set1_epi8((char)(c > 0 ? 2 : 1));
#define SETI(v) _mm256_set1_epi32((int)((v)*10))
    ACC12(__m256i, SETI);
#undef SETI
#define OP(a) _mm256_dpbusd_avx_epi32(a, vm, vc)
    for (int64_t s = 0; s < steps; s++) STEP12(OP);
#undef OP
    return hsum_epi32_8(SUM12(_mm256_add_epi32));
}
