/*
 * test_attn_bf16.c — BF16 attention (lpv_attention_fm_bf16, the attention of --precision bf16):
 *   - the fused avx512bf16 kernel (called per (image, head) as lpv_attention_fm_bf16 calls it) agrees
 *     with the plain-loop reference (BF16-rounded q, k, v and probabilities, FP32 sums) within the
 *     KERNEL_ bounds on ViT-Tiny's shape (T 197, hd 64, 3 heads), DeiT's distilled T 198, hd 32, hd 24
 *     and 8 (multiples of 8, not of 32), odd T (1, 9, 17, 33, 50), padded ld;
 *   - BF16 attention stays within FP32_TOL of FP32 attention (the double reference);
 *   - lpv_attention_fm_bf16 with 1 and 2 threads is that kernel bit for bit where lpv_attention_bf16_runs
 *     (hd % 8 == 0, T >= 16), and lpv_attention_fm bit for bit elsewhere (hd 6, hd 20, T < 16, and every
 *     ISA below avx512bf16); every column written, the padding columns not.
 * Errors are |out - want| / max |v| over the case (outputs are convex mixtures of v's rows).
 * Without avx512_bf16 the kernel checks print SKIP and why; the reference and the fallback still run.
 */
#include <string.h>

#include "engine/kernels/ops_internal.h"
#include "lpvit/cpu.h"
#include "lpvit/ops.h"
#include "lpvit/rng.h"
#include "test.h"

/* Kernel vs reference. They differ in the order of the FP32 sums and in exp (a few ulp, ~1e-7 relative),
 * and so, rarely, in a probability whose BF16 rounding then goes the other way: one BF16 step, at most
 * 2^-7 of it, moves its query's outputs by <= 2^-7 p |v|. Hence three bounds, in units of max |v|:
 *   every output    <= 2^-7 + 1e-5   (all probabilities flipped at once; catches NaN, a wrong pair, a lost tile)
 *   mean            <= 1e-6          (measured <= 1e-7: a lost key, an unrounded or truncated operand moves it
 *                                     by 1e-5 or more)
 *   share > 1e-5    <= 1 %           (flips are rare: measured 0.13 % of ViT-Tiny's outputs, 0 below T 197) */
#define KERNEL_MAX_TOL (1.0 / 128 + 1e-5)
#define KERNEL_MEAN_TOL 1e-6
#define KERNEL_FLIP_SHARE 0.01
/* BF16 vs FP32: q, k, v and the probabilities each carry a relative 2^-9 rounding; scores of std ~2 to ~9
 * turn that into at most ~1.6e-2 of max |v| here (measured 2.2e-3 to 1.6e-2). */
#define FP32_TOL 3e-2

typedef struct {
    int B, T, D, H, pad; /* pad: extra columns past round16(B T) */
    float amp;           /* q, k, v ~ N(0, amp²): scores of std amp² */
} att_case;

static void fill(float *x, int64_t n, lpv_rng *r, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(r) * scale;
}

/* max |a - b| over the B T valid columns of D rows, NaN counting as infinite. */
static double max_err(const float *a, const float *b, int D, int N, int ld) {
    double e = 0;
    for (int d = 0; d < D; d++)
        for (int t = 0; t < N; t++) {
            double v = fabs((double)a[(int64_t)d * ld + t] - b[(int64_t)d * ld + t]);
            e = v > e || isnan(v) ? (isnan(v) ? INFINITY : v) : e;
        }
    return e;
}

static int same_bits(const float *a, const float *b, int D, int N, int ld) {
    for (int d = 0; d < D; d++)
        if (memcmp(a + (int64_t)d * ld, b + (int64_t)d * ld, sizeof(float) * (size_t)N)) return 0;
    return 1;
}

/* out <- lpv_attention_fm_bf16 (bf16 = 1) or lpv_attention_fm on isa with th threads, NaN first. */
static void run(float *out, const float *qkv, const att_case *c, int ld, lpv_isa isa, int th, int bf16) {
    lpv_isa_set(isa, NULL);
    lpv_threads_set(th);
    for (int64_t i = 0; i < (int64_t)c->D * ld; i++) out[i] = NAN;
    float *scratch = malloc(sizeof(float) * (size_t)lpv_attention_scratch(c->T, c->D / c->H) * th);
    if (bf16) lpv_attention_fm_bf16(out, qkv, ld, c->B, c->T, c->D, c->H, scratch);
    else lpv_attention_fm(out, qkv, ld, c->B, c->T, c->D, c->H, scratch);
    free(scratch);
}

/* out <- the avx512bf16 kernel on every (image, head) in order, one thread, NaN first. */
static void run_kernel(float *out, const float *qkv, const att_case *c, int ld) {
    int hd = c->D / c->H, n = c->B * c->H;
    for (int64_t i = 0; i < (int64_t)c->D * ld; i++) out[i] = NAN;
    float *scratch = malloc(sizeof(float) * (size_t)lpv__attention_scratch_avx512bf16(c->T, hd));
    for (int i = 0; i < n; i++)
        lpv__attention_head_avx512bf16(out, qkv, ld, i / c->H, i % c->H, c->T, c->D, hd, scratch,
                                       i + 1 < n ? (i + 1) / c->H : -1, i + 1 < n ? (i + 1) % c->H : 0);
    free(scratch);
}

static void check_case(const att_case *c, lpv_rng *r, int have_bf16) {
    int N = c->B * c->T, ld = ((N + 15) & ~15) + c->pad, hd = c->D / c->H;
    size_t n = (size_t)c->D * ld;
    float *qkv = malloc(sizeof(float) * 3 * n), *fp32 = calloc(n, sizeof(float)), *ref = calloc(n, sizeof(float));
    float *out = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
    fill(qkv, 3 * (int64_t)n, r, c->amp);
    double vmax = 0;
    for (int64_t i = 2 * (int64_t)n; i < 3 * (int64_t)n; i++) vmax = fmax(vmax, fabs(qkv[i]));
    lpv_attention_fm_ref(fp32, qkv, ld, c->B, c->T, c->D, c->H);
    lpv_attention_fm_bf16_ref(ref, qkv, ld, c->B, c->T, c->D, c->H);
    char what[96];
    snprintf(what, sizeof what, "B%d T%d D%d H%d (hd %d) amp %g ld %d", c->B, c->T, c->D, c->H, hd, (double)c->amp, ld);
    double e_ref = max_err(ref, fp32, c->D, N, ld) / vmax;
    printf("%s: bf16 reference vs fp32 %.3g\n", what, e_ref);
    CHECKF(e_ref < FP32_TOL, "%s: bf16 reference vs fp32 %.3g", what, e_ref);
    /* below avx512bf16: FP32 attention, as before */
    for (int isa = 0; isa <= (int)lpv_isa_best() && isa < (int)LPV_ISA_AVX512BF16; isa++) {
        if (!lpv_isa_supported((lpv_isa)isa)) continue;
        run(want, qkv, c, ld, (lpv_isa)isa, 2, 0);
        run(out, qkv, c, ld, (lpv_isa)isa, 2, 1);
        CHECKF(same_bits(out, want, c->D, N, ld), "%s isa %s: bf16 attention is not the fp32 one", what,
               lpv_isa_name((lpv_isa)isa));
    }
    if (have_bf16 && hd % 8 == 0) { /* the kernel itself, whether or not the dispatch picks it */
        float *kern = malloc(sizeof(float) * n);
        run_kernel(kern, qkv, c, ld);
        double e = 0, mean = 0, e32 = max_err(kern, fp32, c->D, N, ld) / vmax;
        int big = 0;
        for (int d = 0; d < c->D; d++)
            for (int t = 0; t < N; t++) {
                double v = fabs((double)kern[(int64_t)d * ld + t] - ref[(int64_t)d * ld + t]) / vmax;
                v = isnan(v) ? INFINITY : v;
                e = fmax(e, v), mean += v, big += v > 1e-5;
            }
        mean /= (double)c->D * N;
        printf("%s: kernel vs bf16 reference max %.3g mean %.3g, %d of %d > 1e-5; vs fp32 %.3g\n", what, e, mean,
               big, c->D * N, e32);
        CHECKF(e < KERNEL_MAX_TOL && mean < KERNEL_MEAN_TOL && big <= KERNEL_FLIP_SHARE * c->D * N,
               "%s: kernel vs bf16 reference max %.3g mean %.3g, %d > 1e-5", what, e, mean, big);
        CHECKF(e32 < FP32_TOL, "%s: kernel vs fp32 %.3g", what, e32);
        for (int th = 1; th <= 2; th++) { /* the dispatch: the kernel or FP32, bit for bit */
            lpv_isa_set(LPV_ISA_AVX512BF16, NULL);
            int runs = lpv_attention_bf16_runs(c->T, hd);
            CHECKF(runs == (c->T >= 16), "%s: bf16 runs %d", what, runs);
            run(out, qkv, c, ld, LPV_ISA_AVX512BF16, th, 1);
            if (!runs) run(want, qkv, c, ld, LPV_ISA_AVX512BF16, th, 0);
            CHECKF(same_bits(out, runs ? kern : want, c->D, N, ld), "%s threads %d: lpv_attention_fm_bf16 is not the %s",
                   what, th, runs ? "kernel" : "fp32 attention");
            for (int d = 0; d < c->D; d++) /* the padding columns are not written */
                for (int t = N; t < ld; t++) CHECKF(isnan(out[(int64_t)d * ld + t]), "%s: column %d written", what, t);
        }
        free(kern);
    } else if (have_bf16) { /* hd % 8 != 0: FP32 */
        lpv_isa_set(LPV_ISA_AVX512BF16, NULL);
        CHECKF(!lpv_attention_bf16_runs(c->T, hd), "%s: bf16 runs", what);
        run(want, qkv, c, ld, LPV_ISA_AVX512BF16, 2, 0);
        run(out, qkv, c, ld, LPV_ISA_AVX512BF16, 2, 1);
        CHECKF(same_bits(out, want, c->D, N, ld), "%s: the fallback is not the fp32 attention", what);
    }
    lpv_isa_set(lpv_isa_best(), NULL);
    free(qkv), free(fp32), free(ref), free(out), free(want);
}

int main(void) {
    int have_bf16 = lpv_isa_best() >= LPV_ISA_AVX512BF16;
    if (!have_bf16)
        printf("SKIP avx512bf16 kernel: this cpu has no avx512_bf16 (best isa %s); the reference and the fp32 "
               "fallback still run\n", lpv_isa_name(lpv_isa_best()));
    att_case cases[] = {
        {2, 197, 192, 3, 0, 1.5f}, /* ViT-Tiny / DeiT-Tiny: hd 64, 3 heads */
        {1, 198, 192, 3, 16, 1.5f}, /* DeiT distilled: 198 tokens */
        {1, 197, 64, 2, 0, 3.0f},  /* hd 32, peaked softmax (scores std 9) */
        {2, 50, 128, 2, 5, 1.5f},  {3, 1, 128, 2, 0, 1.5f}, {2, 17, 64, 2, 0, 1.5f},  {1, 17, 128, 2, 3, 3.0f},
        {1, 33, 48, 2, 0, 1.5f},   /* hd 24: a multiple of 8, not of 32 */
        {2, 9, 40, 5, 0, 1.5f},    /* hd 8, T 9 (FP32 in the dispatch) */
        {2, 16, 40, 5, 1, 1.5f},   /* hd 8, T 16: the first T the dispatch runs BF16 */
        {2, 30, 12, 2, 0, 1.5f},   /* hd 6: FP32 fallback */
        {1, 17, 40, 2, 0, 1.5f},   /* hd 20: FP32 fallback */
    };
    lpv_rng r;
    lpv_rng_seed(&r, 26);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], &r, have_bf16);
    return test_finish("test_attn_bf16");
}
