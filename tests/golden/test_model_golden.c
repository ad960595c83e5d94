/*
 * test_model_golden.c — lpvit's forward pass computes what timm and
 * transformers compute: logits of the 2-layer random DeiT-Tiny fixtures
 * (timm and HF names, plain and distilled) match the reference logits made by
 * timm 1.0 / transformers 5 to max abs error <= 1e-4, with 1 and 2 threads
 * and with batches split differently: through OpenBLAS, then through lpvit's
 * blocked kernels on every FP32 kernel ISA this CPU runs (ref, avx2, avx512;
 * the others are printed as skipped).
 */
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

static void check_fixture(const char *shared, const char *model_rel, const char *ref_rel, int expect_outputs,
                          int expect_prefix, float expect_eps) {
    lpv_err err;
    lpv_model *m = test_load_fixture(shared, model_rel);
    if (!m) return;
    CHECK(m->cfg.dim == 192 && m->cfg.depth == 2 && m->cfg.heads == 3 && m->cfg.mlp == 768);
    CHECKF(m->cfg.n_outputs == expect_outputs && m->cfg.n_prefix == expect_prefix, "%s: outputs %d prefix %d",
           model_rel, m->cfg.n_outputs, m->cfg.n_prefix);
    CHECKF(m->cfg.ln_eps == expect_eps, "%s: eps %g", model_rel, (double)m->cfg.ln_eps);
    lpv_st_file ref;
    test_open_st(&ref, shared, ref_rel);
    int64_t nin = 0, nlog = 0;
    float *input = test_read_tensor(&ref, "input", &nin), *want = test_read_tensor(&ref, "logits", &nlog);
    CHECK(input && want && nlog == 4 * 1000);
    if (!input || !want) goto out;
    float *got = calloc((size_t)nlog, sizeof(float));
    int per_img = 3 * 224 * 224;
    /* OpenBLAS first, then lpvit's blocked kernel on the same dense weights (what eval runs), per ISA */
    static const lpv_isa isas[] = {LPV_ISA_AVX512, LPV_ISA_AVX2, LPV_ISA_REF};
    lpv_isa keep = lpv_isa_get();
    for (int pass = 0; pass < 8; pass++) {
        int threads = 1 + (pass & 1), blocked = pass >= 2;
        lpv_isa isa = blocked ? isas[(pass - 2) / 2] : keep;
        if (!lpv_isa_supported(isa)) {
            if (pass & 1) printf("SKIP %s: the blocked kernel of isa %s (not on this cpu)\n", model_rel, lpv_isa_name(isa));
            continue;
        }
        CHECK_OK(lpv_isa_set(isa, &err), &err);
        lpv_threads_set(threads);
        if (blocked) CHECK_OK(lpv_model_pack_dense(m, 32, 32, &err), &err);
        CHECK(!blocked || lpv_isa_get() == LPV_ISA_REF || m->blocks[0].fc1.blocked != NULL);
        /* whole batch at once, then as 3 + 1 (different column layout) */
        for (int split = 4; split >= 3; split--) {
            lpv_workspace ws;
            CHECK_OK(lpv_workspace_init(&ws, &m->cfg, 4, &err), &err);
            CHECK_OK(lpv_forward(m, &ws, input, split, got, &err), &err);
            if (split < 4)
                CHECK_OK(lpv_forward(m, &ws, input + (int64_t)split * per_img, 4 - split, got + split * 1000, &err), &err);
            test_diff d = test_compare(got, want, (size_t)nlog, 1e-3);
            printf("%-45s threads=%d split=%d %-8s %-6s max_abs=%.3g max_rel=%.3g\n", model_rel, threads, split,
                   blocked ? "blocked" : "openblas", lpv_isa_name(isa), d.max_abs, d.max_rel);
            CHECKF(d.max_abs <= 1e-4, "%s (%s, isa %s): logits max abs error %.3g > 1e-4 (at %zu: %g vs %g)", model_rel,
                   blocked ? "blocked" : "openblas", lpv_isa_name(isa), d.max_abs, d.at, (double)got[d.at],
                   (double)want[d.at]);
            lpv_workspace_free(&ws);
        }
    }
    lpv_isa_set(keep, NULL);
    free(got);
out:
    free(input);
    free(want);
    lpv_st_close(&ref);
    lpv_model_free(m);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) return TEST_SKIP;
    check_fixture(shared, "fixtures/timm_deit_tiny_d2.safetensors", "fixtures/timm_deit_tiny_d2.ref.safetensors", 1, 1,
                  1e-6f);
    check_fixture(shared, "fixtures/timm_deit_tiny_distilled_d2.safetensors",
                  "fixtures/timm_deit_tiny_distilled_d2.ref.safetensors", 2, 2, 1e-6f);
    check_fixture(shared, "fixtures/hf_deit_tiny_d2", "fixtures/hf_deit_tiny_d2/ref.safetensors", 1, 2, 1e-12f);
    check_fixture(shared, "fixtures/hf_deit_tiny_distilled_d2", "fixtures/hf_deit_tiny_distilled_d2/ref.safetensors", 2,
                  2, 1e-12f);
    return test_finish("test_model_golden");
}
