/*
 * test_q8_golden.c — lpvit's int8 linears compute what an independent PyTorch fake quantization of the same
 * rules computes (scripts/q8_reference.py linears; its output is committed as
 * tests/golden/q8_linears.ref.safetensors, and q8_linears_l127.ref.safetensors for the AVX2 kernel's 127-level
 * input grid): every block linear of the 2-layer random DeiT-Tiny fixture,
 * quantized by lpv_model_quantize_int8 (weights per row, round half to even; inputs per token), on 8 tokens
 * of an input both sides build exactly (dyadic rationals with outlier channels), with every int8 kernel the
 * CPU has and 1 and 2 threads. Tolerance 1e-5 of the output's scale (the int32 sums are exact; only the
 * FP32 epilogue's rounding differs), against ~1e-2 between these outputs and the FP32 linear's.
 *
 * Why per linear and not whole-model logits: rounding to a uint8 grid is discontinuous, so one FP32 ulp of
 * difference upstream (LayerNorm, attention, both legitimately computed differently) moves an activation
 * by a whole step now and then, and a model amplifies it (measured: lpvit vs the PyTorch reference,
 * whole-model logits differ by 0.6 of the int8-vs-FP32 distance on the fixture and on the real ViT-Tiny,
 * with identical argmax; scripts/q8_reference.py logits reproduces that).
 */
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/linear.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

#define NTOK 8

/* x[t][k] of scripts/q8_reference.py linear_input, feature-major (in, ld). */
static void linear_input(float *X, int in, int ld) {
    for (int k = 0; k < in; k++)
        for (int t = 0; t < ld; t++)
            X[(int64_t)k * ld + t] = t < NTOK ? (float)((37 * k + 101 * t) % 199 - 99) / 64.0f * (k % 17 == 0 ? 8.0f : 1.0f) : 0.0f;
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) return TEST_SKIP;
    lpv_model *m = test_load_fixture(shared, "fixtures/timm_deit_tiny_d2.safetensors");
    if (!m) return test_finish("test_q8_golden");
    lpv_st_file ref255, ref127;
    test_open_st(&ref255, LPVIT_SOURCE_DIR, "tests/golden/q8_linears.ref.safetensors");
    test_open_st(&ref127, LPVIT_SOURCE_DIR, "tests/golden/q8_linears_l127.ref.safetensors");
    lpv_err err;
    /* the FP32 outputs first, to show how far int8 moves them */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    int ld = 16, checked = 0;
    float *X = malloc(sizeof(float) * 3072 * ld), *Y = malloc(sizeof(float) * 3072 * ld);
    float *Y32 = malloc(sizeof(float) * 3072 * ld * LPV_MAX_LAYERS);
    uint32_t *X4 = malloc(sizeof(uint32_t) * 768 * ld);
    float *xa = malloc(sizeof(float) * ld), *xc = malloc(sizeof(float) * ld);
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        if (refs[i].kind == LPV_LK_PATCH || refs[i].kind == LPV_LK_HEAD) continue;
        linear_input(X, L->in, ld);
        lpv_linear_forward_ref(L, X, ld, Y32 + (int64_t)i * 3072 * ld, ld, NTOK, LPV_EPI_BIAS);
    }
    CHECK_OK(lpv_model_quantize_int8(m, 32, 32, &err), &err);
    lpv_isa isas[4] = {LPV_ISA_REF, LPV_ISA_AVX2, LPV_ISA_AVXVNNI, LPV_ISA_AVX512};
    for (int ii = 0; ii < 4; ii++) {
        if (!lpv_isa_supported(isas[ii])) {
            printf("skipped: --isa %s (not on this cpu)\n", lpv_isa_name(isas[ii]));
            continue;
        }
        CHECK_OK(lpv_isa_set(isas[ii], &err), &err);
        for (int nt = 1; nt <= 2; nt++) {
            lpv_threads_set(nt);
            for (int i = 0; i < n; i++) {
                lpv_linear *L = refs[i].lin;
                if (refs[i].kind == LPV_LK_PATCH || refs[i].kind == LPV_LK_HEAD) continue;
                const char *name = refs[i].name;
                int64_t nw = 0;
                lpv_st_file *ref = lpv_q8_levels(lpv_q8_kernel_for(isas[ii])) == 127 ? &ref127 : &ref255;
                float *want = test_read_tensor(ref, name, &nw);
                CHECKF(want && nw == (int64_t)NTOK * L->out, "reference lacks '%s' (%d x %d)", name, NTOK, L->out);
                if (!want) continue;
                linear_input(X, L->in, ld);
                CHECK(lpv_linear_has_int8(L));
                lpv_linear_forward_q8(L, X, ld, X4, xa, xc, Y, ld, NTOK, LPV_EPI_BIAS);
                double worst = 0, far = 0, scale = 0;
                for (int r = 0; r < L->out; r++)
                    for (int t = 0; t < NTOK; t++) scale = fmax(scale, fabs(want[t * L->out + r]));
                for (int r = 0; r < L->out; r++)
                    for (int t = 0; t < NTOK; t++) {
                        double w = want[t * L->out + r];
                        worst = fmax(worst, fabs(Y[(int64_t)r * ld + t] - w) / scale);
                        far = fmax(far, fabs(Y32[(int64_t)i * 3072 * ld + (int64_t)r * ld + t] - w) / scale);
                    }
                if (nt == 1)
                    printf("%-22s %-10s int8 vs reference %.2g, fp32 vs reference %.2g (of the output's max |y| %.3g)\n",
                           name, lpv_q8_kernel_name(lpv_q8_kernel_for(isas[ii])), worst, far, scale);
                CHECKF(worst <= 1e-5, "%s (%s, %d threads): int8 output %.3g of its scale from the reference", name,
                       lpv_isa_name(isas[ii]), nt, worst);
                CHECKF(far > 1e-3, "%s: FP32 is only %.3g from the int8 reference: the test could not tell them apart",
                       name, far);
                checked++;
                free(want);
            }
        }
    }
    CHECK(checked >= 8);
    free(X), free(Y), free(Y32), free(X4), free(xa), free(xc);
    lpv_st_close(&ref255);
    lpv_st_close(&ref127);
    lpv_model_free(m);
    return test_finish("test_q8_golden");
}
