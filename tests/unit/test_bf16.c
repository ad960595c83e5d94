/*
 * test_bf16.c — the BF16 engine on whole models (the kernel itself is checked
 * in test_bsr.c): lpv_model_pack_bf16 packs the four block linears and
 * nothing else; a workspace without BF16 gives the FP32 logits bit for bit;
 * with BF16 the avx512bf16 kernel agrees with the reference kernel up to the
 * order of the FP32 sums (attention kept FP32, ws.attn_fp32, as the reference
 * ISA runs it), and both stay close to FP32 (BF16 keeps 8 bits), BF16
 * attention included where it runs (17 tokens; test_attn_bf16 checks that
 * kernel alone); dense and block-pruned models alike. Prints which ISA it
 * skipped.
 */
#include "lpvit/bench.h"
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/ops.h"
#include "test.h"
#include "test_util.h"

#define B 3

static void logits_with(lpv_model *m, const float *x, int bf16, lpv_isa isa, int attn_fp32, float *out) {
    lpv_err err;
    lpv_isa keep = lpv_isa_get();
    CHECK_OK(lpv_isa_set(isa, &err), &err);
    lpv_workspace ws;
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, B, &err), &err);
    if (bf16) CHECK_OK(lpv_workspace_use_bf16(&ws, &err), &err);
    ws.attn_fp32 = attn_fp32;
    CHECK_OK(lpv_forward(m, &ws, x, B, out, &err), &err);
    lpv_workspace_free(&ws);
    lpv_isa_set(keep, NULL);
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, int n) {
    double e = 0, m = 0;
    for (int i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
    return m > 0 ? e / m : e;
}

static void check_model(lpv_model *m, const char *what, int have_bf16) {
    lpv_err err;
    int n = B * m->cfg.classes;
    float *x = malloc(sizeof(float) * (size_t)B * 3 * m->cfg.img * m->cfg.img);
    for (int i = 0; i < B * 3 * m->cfg.img * m->cfg.img; i++) x[i] = (float)sin(0.37 * i);
    float *fp32 = malloc(sizeof(float) * n), *again = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n),
          *fast = malloc(sizeof(float) * n);
    CHECK_OK(lpv_model_pack_dense(m, 32, 32, &err), &err); /* as the CLI does: FP32 runs the blocked kernel */
    logits_with(m, x, 0, lpv_isa_best(), 0, fp32);
    CHECK(!lpv_model_has_bf16(m));
    CHECK_OK(lpv_model_pack_bf16(m, 32, 32, &err), &err);
    CHECK(lpv_model_has_bf16(m));
    /* the four block linears, not the patch embedding or the heads */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS), packed = 0;
    for (int i = 0; i < nl; i++) {
        int want = refs[i].kind == LPV_LK_QKV || refs[i].kind == LPV_LK_PROJ || refs[i].kind == LPV_LK_FC1 ||
                   refs[i].kind == LPV_LK_FC2;
        packed += lpv_linear_has_bf16(refs[i].lin);
        CHECKF(lpv_linear_has_bf16(refs[i].lin) == want, "%s: %s packed %d", what, refs[i].name,
               lpv_linear_has_bf16(refs[i].lin));
    }
    CHECK(packed == 4 * m->cfg.depth);
    /* packing changes nothing for a workspace without BF16 */
    logits_with(m, x, 0, lpv_isa_best(), 0, again);
    CHECKF(memcmp(again, fp32, sizeof(float) * n) == 0, "%s: FP32 logits changed by the BF16 pack", what);
    logits_with(m, x, 1, LPV_ISA_REF, 0, ref);
    double d_ref = rel_diff(ref, fp32, n);
    printf("%s: bf16 (reference kernel) vs fp32: max rel %.3g\n", what, d_ref);
    CHECKF(d_ref > 0 && d_ref < 3e-2, "%s: bf16 vs fp32 %.3g", what, d_ref); /* it ran, and it is close */
    if (have_bf16) {
        logits_with(m, x, 1, LPV_ISA_AVX512BF16, 1, fast);
        double d = rel_diff(fast, ref, n);
        printf("%s: bf16 avx512bf16 (fp32 attention) vs reference kernel: max rel %.3g\n", what, d);
        CHECKF(d < 1e-4, "%s: avx512bf16 vs reference %.3g", what, d);
        /* and with BF16 attention, as the inference commands run it (from 16 tokens on) */
        if (lpv_attention_bf16_runs(m->cfg.n_tokens, m->cfg.dim / m->cfg.heads)) {
            float *lin = malloc(sizeof(float) * n);
            memcpy(lin, fast, sizeof(float) * n);
            logits_with(m, x, 1, LPV_ISA_AVX512BF16, 0, fast);
            CHECKF(memcmp(lin, fast, sizeof(float) * n) != 0, "%s: bf16 attention did not run", what);
            double da = rel_diff(fast, fp32, n);
            printf("%s: bf16 avx512bf16 (bf16 attention) vs fp32: max rel %.3g (vs fp32 attention %.3g)\n", what, da,
                   rel_diff(fast, lin, n));
            CHECKF(da > 0 && da < 3e-2, "%s: bf16 attention vs fp32 %.3g", what, da);
            free(lin);
        }
    }
    free(x), free(fp32), free(again), free(ref), free(fast);
}

int main(void) {
    lpv_threads_set(2);
    int have_bf16 = lpv_isa_best() >= LPV_ISA_AVX512BF16;
    if (!have_bf16) printf("SKIP avx512bf16: not on this cpu (the reference kernel still runs)\n");
    lpv_model *dense = test_random_model(64, 2, 2, 128, 32, 40, 0, 7);
    if (dense) check_model(dense, "dense", have_bf16);
    lpv_model *pruned = test_random_model(64, 2, 2, 128, 32, 40, 1, 8);
    lpv_err err;
    if (pruned) CHECK_OK(lpv_prune_random(pruned, 0.5, 16, 16, LPV_SEL_BLOCKS, 3, &err), &err);
    if (pruned) check_model(pruned, "pruned 0.5, distilled", have_bf16);
    lpv_model *tokens17 = test_random_model(64, 2, 2, 128, 64, 40, 0, 9); /* 64 px: 17 tokens, BF16 attention */
    if (tokens17) check_model(tokens17, "dense, 17 tokens", have_bf16);
    lpv_model_free(dense), lpv_model_free(pruned), lpv_model_free(tokens17);
    return test_finish("test_bf16");
}
