/*
 * test_attn_q8_golden.c — lpvit's int8 attention (--int8-attention: lpv_attention_fm_q8 and its plain-loop
 * reference) computes what an independent PyTorch version of the same rules computes
 * (scripts/q8_reference.py attention; its output is committed as tests/golden/q8_attention.ref.safetensors):
 * 2 images of 37 tokens, width 128, 2 heads of 64, on a qkv both sides build exactly (dyadic rationals with
 * outlier features, also stored in the file and checked equal here), each int8 kernel the CPU has (AVX-512
 * VNNI, AVX-VNNI), 1 and 2 threads.
 * The int8 codes and their integer sums are the same on both sides; exp (float32 in PyTorch, lpvit's own
 * polynomial in the kernel, expf in the reference) and the order of a few FP32 products are not, so a
 * probability 255 e at a rounding midpoint may go the other way: bounds as in test_attn_q8, in units of
 * max |v|: every output <= 3/255, mean <= 1e-5. FP32 attention is checked to sit farther away (> 1e-3), so
 * the test can tell int8 from FP32.
 */
#include "lpvit/cpu.h"
#include "lpvit/ops.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

#define B 2
#define T 37
#define D 128
#define H 2
#define LD 80 /* round16(B T) */

/* qkv[f][t] of scripts/q8_reference.py attention_input, feature-major (3 D, LD), padding columns 0. */
static void attention_input(float *x) {
    for (int f = 0; f < 3 * D; f++)
        for (int t = 0; t < LD; t++)
            x[f * LD + t] = t < B * T ? (float)((37 * f + 101 * t) % 199 - 99) / 64.0f * (f % 13 == 0 ? 4.0f : 1.0f) : 0.0f;
}

/* max and mean of |got - want| / vmax over the B T columns; want (D, B T) dense. */
static void errs(const float *got, const float *want, double vmax, double *mx, double *mean) {
    double e = 0, s = 0;
    for (int d = 0; d < D; d++)
        for (int t = 0; t < B * T; t++) {
            double v = fabs((double)got[d * LD + t] - want[d * B * T + t]) / vmax;
            if (isnan(v)) v = INFINITY;
            e = v > e ? v : e, s += v;
        }
    *mx = e, *mean = s / (D * B * T);
}

int main(void) {
    lpv_st_file ref;
    test_open_st(&ref, LPVIT_SOURCE_DIR, "tests/golden/q8_attention.ref.safetensors");
    int64_t nq = 0, no = 0;
    float *qkv_ref = test_read_tensor(&ref, "qkv", &nq), *want = test_read_tensor(&ref, "out", &no);
    CHECKF(qkv_ref && nq == 3 * D * B * T && want && no == D * B * T, "reference tensors missing or of the wrong size");
    if (!qkv_ref || !want) return test_finish("test_attn_q8_golden");
    static float qkv[3 * D * LD], out[D * LD];
    attention_input(qkv);
    int same_input = 1;
    for (int f = 0; f < 3 * D; f++)
        for (int t = 0; t < B * T; t++) same_input &= qkv[f * LD + t] == qkv_ref[f * B * T + t];
    CHECKF(same_input, "the committed qkv is not the one this test builds");
    double vmax = 0;
    for (int f = 2 * D; f < 3 * D; f++)
        for (int t = 0; t < B * T; t++) vmax = fmax(vmax, fabs(qkv[f * LD + t]));
    double mx, mean;
    lpv_attention_fm_ref(out, qkv, LD, B, T, D, H);
    errs(out, want, vmax, &mx, &mean);
    printf("fp32 attention vs the int8 reference: max %.3g mean %.3g of max |v|\n", mx, mean);
    CHECKF(mx > 1e-3, "FP32 attention is only %.3g from the int8 reference: the test could not tell them apart", mx);
    lpv_attention_fm_q8_ref(out, qkv, LD, B, T, D, H);
    errs(out, want, vmax, &mx, &mean);
    printf("lpvit's int8 reference vs PyTorch: max %.3g mean %.3g\n", mx, mean);
    CHECKF(mx <= 3.0 / 255 && mean <= 1e-5, "int8 reference vs PyTorch: max %.3g mean %.3g", mx, mean);
    /* each int8 attention kernel the CPU has, under the ISA level that runs it */
    const lpv_isa levels[2] = {LPV_ISA_AVX512, LPV_ISA_AVXVNNI};
    lpv_isa keep = lpv_isa_get();
    for (int li = 0; li < 2; li++) {
        if (!lpv_isa_supported(levels[li]) || lpv_isa_set(levels[li], NULL) != LPV_OK || !lpv_attention_q8_runs(D / H)) {
            printf("SKIP the int8 attention kernel of isa %s: not on this cpu\n", lpv_isa_name(levels[li]));
            continue;
        }
        float *scr = malloc(sizeof(float) * (size_t)lpv_attention_scratch(T, D / H) * 2);
        for (int nt = 1; nt <= 2; nt++) {
            lpv_threads_set(nt);
            lpv_attention_fm_q8(out, qkv, LD, B, T, D, H, scr);
            errs(out, want, vmax, &mx, &mean);
            printf("int8 kernel of isa %s (%d threads) vs PyTorch: max %.3g mean %.3g\n", lpv_isa_name(levels[li]), nt, mx,
                   mean);
            CHECKF(mx <= 3.0 / 255 && mean <= 1e-5, "int8 kernel of isa %s vs PyTorch (%d threads): max %.3g mean %.3g",
                   lpv_isa_name(levels[li]), nt, mx, mean);
        }
        free(scr);
    }
    lpv_isa_set(keep, NULL);
    free(qkv_ref), free(want);
    lpv_st_close(&ref);
    return test_finish("test_attn_q8_golden");
}
