/*
 * test_grad_golden.c — lpv_forward_backward computes what PyTorch autograd
 * computes through timm: on the 2-layer random DeiT-Tiny fixtures (plain and
 * distilled), the mean cross-entropy of the 4 reference images with labels
 * [1, 7, 42, 999] and the gradient of every parameter (grad.<timm name> in
 * the .ref.safetensors) match, per tensor, to
 *     max|got - want| / max|want| <= GRAD_REL_TOL = 1e-5   (max abs error printed too)
 * and the loss to a relative 1e-6, on 1 and 2 threads and for every kernel
 * ISA this CPU runs (lpv_isa_set: ref, avx2, avx512; the ones it cannot run
 * are printed as skipped). Measured on an AMD EPYC (Zen 4, all three ISAs),
 * release and ASan builds: worst gradient error 1.7e-6 relative (avx2,
 * blocks.0.attn.qkv.weight of the distilled fixture; ref 1.6e-6, avx512
 * 1.5e-6), worst max abs 1.5e-6 (cls_token / pos_embed / proj.bias), so the
 * bound has ~6x margin while a 1e-4-relative slip (e.g. a truncated constant
 * in the GELU derivative) fails it; the old bound of 1e-3 let that through.
 * Also, with the per-sample squared accumulators on:
 * a batch of 4 equals Σ over 4 separate B=1 runs of grad², and two batches of
 * 2 accumulate to (2 × the gradient, the same squares) of one batch of 4.
 * The HF fixtures (no gradients stored) check the training forward's logits.
 */
#include "lpvit/cpu.h"
#include "lpvit/grad.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

/* max|a-b| / max|b| and max|a-b|. */
static double rel_max(const float *a, const float *b, int64_t n, double *abs_out) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
        s = fmax(s, fabs((double)b[i]));
    }
    if (abs_out) *abs_out = e;
    return e / (s > 0 ? s : 1e-30);
}

#define MAXT 64
#define PER_IMG (3 * 224 * 224)
#define GRAD_REL_TOL 1e-5 /* measured worst 1.7e-6, see above */
#define LOSS_REL_TOL 1e-6 /* measured: equal to timm's to the 7 printed digits */

/* The ISA the current pass runs on (for messages), and the worst errors seen per ISA. */
static const char *isa_now = "";
static double worst_rel_all, worst_abs_all;

static void check_fixture(const char *shared, const char *model_rel, const char *ref_rel) {
    lpv_err err;
    lpv_model *m = test_load_fixture(shared, model_rel);
    if (!m) return;
    lpv_st_file ref;
    test_open_st(&ref, shared, ref_rel);
    int64_t nin = 0;
    float *input = test_read_tensor(&ref, "input", &nin), *want_loss = test_read_tensor(&ref, "loss", NULL);
    const lpv_st_tensor *lt = lpv_st_find(&ref, "labels");
    int64_t labels64[4] = {0};
    CHECK(input && want_loss && nin == 4 * PER_IMG && lt && lt->nelem == 4);
    if (!input || !want_loss || !lt || lt->nelem != 4) goto out;
    CHECK_OK(lpv_st_read_i64(&ref, lt, labels64, &err), &err);
    int labels[4];
    for (int i = 0; i < 4; i++) labels[i] = (int)labels64[i];
    lpv_loss ls = {.kind = LPV_LOSS_CE, .labels = labels};
    const lpv_config *c = &m->cfg;

    lpv_train_ws ws;
    CHECK_OK(lpv_train_ws_init(&ws, c, 4, &err), &err);
    for (int threads = 2; threads >= 1; threads--) {
        lpv_threads_set(threads);
        lpv_grads g;
        CHECK_OK(lpv_grads_init(&g, c, 0, &err), &err);
        float loss = 0;
        CHECK_OK(lpv_forward_backward(m, &ws, input, 4, &ls, &loss, NULL, &g, &err), &err);
        double lrel = fabs((double)loss - want_loss[0]) / fabs((double)want_loss[0]);
        printf("[%s] %s threads=%d: loss %.7f (timm %.7f, rel %.2g)\n", isa_now, model_rel, threads, (double)loss,
               (double)want_loss[0], lrel);
        CHECKF(lrel <= LOSS_REL_TOL, "[%s] %s: loss %.7g vs %.7g", isa_now, model_rel, (double)loss,
               (double)want_loss[0]);
        lpv_grad_tensor gt[MAXT];
        int n = lpv_grads_list(&g, gt, MAXT);
        double worst = 0, worst_abs = 0;
        CHECKF(n > 0 && n <= MAXT, "%s: %d gradients (at most %d listed)", model_rel, n, MAXT);
        for (int k = 0; k < n && k < MAXT; k++) {
            char name[80];
            snprintf(name, sizeof name, "grad.%.63s", gt[k].name);
            const lpv_st_tensor *t = lpv_st_find(&ref, name);
            CHECKF(t != NULL, "%s: reference has no '%s'", ref_rel, name);
            if (!t) continue;
            int same = t->ndim == gt[k].ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == gt[k].shape[d];
            CHECKF(same, "%s: '%s' shape differs", ref_rel, name);
            if (!same) continue;
            float *want = test_read_tensor(&ref, name, NULL);
            CHECKF(want != NULL, "%s: cannot read '%s'", ref_rel, name);
            if (!want) continue;
            double ab, rel = rel_max(gt[k].data, want, gt[k].n, &ab);
            double wmax = 0;
            for (int64_t i = 0; i < gt[k].n; i++) wmax = fmax(wmax, fabs((double)want[i]));
            if (threads == 2) printf("  %-32s max abs %.3g  rel %.3g  (max |want| %.3g)\n", gt[k].name, ab, rel, wmax);
            /* a zero reference would make the relative bound vacuous */
            CHECKF(wmax > 0, "%s: reference gradient '%s' is all zero", ref_rel, name);
            CHECKF(rel <= GRAD_REL_TOL, "[%s] %s threads=%d: gradient of '%s' rel error %.3g (max abs %.3g) > %g",
                   isa_now, model_rel, threads, gt[k].name, rel, ab, GRAD_REL_TOL);
            if (rel > worst) worst = rel;
            if (ab > worst_abs) worst_abs = ab;
            free(want);
        }
        int want_n = 0;
        for (int i = 0; i < ref.n; i++) want_n += strncmp(ref.t[i].name, "grad.", 5) == 0;
        CHECKF(n == want_n, "%s: %d gradients, reference has %d", model_rel, n, want_n);
        printf("[%s] %s threads=%d: %d gradients, worst rel error %.3g, worst max abs %.3g (bound rel %g)\n", isa_now,
               model_rel, threads, n, worst, worst_abs, GRAD_REL_TOL);
        worst_rel_all = fmax(worst_rel_all, worst);
        worst_abs_all = fmax(worst_abs_all, worst_abs);
        lpv_grads_free(&g);
    }

    /* per-sample squares: batch of 4 == Σ of 4 single-image runs of grad² */
    lpv_threads_set(2);
    lpv_grads g4, g22, g1;
    CHECK_OK(lpv_grads_init(&g4, c, LPV_GRADS_SQ, &err), &err);
    CHECK_OK(lpv_grads_init(&g22, c, LPV_GRADS_SQ, &err), &err);
    CHECK_OK(lpv_grads_init(&g1, c, 0, &err), &err);
    CHECK_OK(lpv_forward_backward(m, &ws, input, 4, &ls, NULL, NULL, &g4, &err), &err);
    float *sq = calloc((size_t)g4.n_sq, sizeof(float)), *mean = calloc((size_t)g4.n_all, sizeof(float));
    for (int n = 0; n < 4; n++) {
        lpv_grads_zero(&g1);
        lpv_loss l1 = {.kind = LPV_LOSS_CE, .labels = labels + n};
        CHECK_OK(lpv_forward_backward(m, &ws, input + (int64_t)n * PER_IMG, 1, &l1, NULL, NULL, &g1, &err), &err);
        for (int64_t i = 0; i < g1.n_all; i++) mean[i] += g1.all[i] / 4.0f;
        /* the squared accumulators are laid out in layer order; walk the layers */
        lpv_layer_ref refs[MAXT];
        int nl = lpv_model_layers(m, refs, MAXT);
        for (int k = 0; k < nl; k++) {
            lpv_linear_grad *a = lpv_grads_linear(&g1, refs[k].kind, refs[k].block);
            lpv_linear_grad *b = lpv_grads_linear(&g4, refs[k].kind, refs[k].block);
            float *dst = sq + (b->sq - g4.all_sq);
            for (int64_t i = 0; i < (int64_t)a->out * a->in; i++) dst[i] += a->w[i] * a->w[i];
        }
    }
    double ab, rq = rel_max(g4.all_sq, sq, g4.n_sq, &ab), rm = rel_max(g4.all, mean, g4.n_all, NULL);
    double sqmax = 0;
    for (int64_t i = 0; i < g4.n_sq; i++) sqmax = fmax(sqmax, (double)g4.all_sq[i]);
    CHECKF(sqmax > 0 && isfinite(sqmax), "%s: the per-sample squares are all zero (max %g)", model_rel, sqmax);
    printf("[%s] %s: per-sample squares B=4 vs 4 x B=1: rel %.3g (abs %.3g, max square %.3g); batch grad vs mean of "
           "B=1: rel %.3g\n", isa_now, model_rel, rq, ab, sqmax, rm);
    CHECKF(rq <= 1e-4 && rm <= 1e-4, "%s: per-sample squares rel %.3g, batch mean rel %.3g", model_rel, rq, rm);
    /* two batches of 2 == one batch of 4: Σ of batch means = 2 × mean, same squares */
    lpv_loss l2 = ls;
    CHECK_OK(lpv_forward_backward(m, &ws, input, 2, &ls, NULL, NULL, &g22, &err), &err);
    l2.labels = labels + 2;
    CHECK_OK(lpv_forward_backward(m, &ws, input + 2 * PER_IMG, 2, &l2, NULL, NULL, &g22, &err), &err);
    for (int64_t i = 0; i < g22.n_all; i++) g22.all[i] *= 0.5f;
    double ra = rel_max(g22.all, g4.all, g4.n_all, NULL), raq = rel_max(g22.all_sq, g4.all_sq, g4.n_sq, NULL);
    printf("[%s] %s: 2 + 2 accumulated vs 4: grad rel %.3g, squares rel %.3g\n", isa_now, model_rel, ra, raq);
    CHECKF(ra <= 1e-4 && raq <= 1e-4, "%s: 2+2 vs 4: grad %.3g sq %.3g", model_rel, ra, raq);
    CHECK(g22.batches == 2 && g22.samples == 4 && g4.batches == 1 && g4.samples == 4);
    free(sq), free(mean);
    lpv_grads_free(&g4), lpv_grads_free(&g22), lpv_grads_free(&g1);
    lpv_train_ws_free(&ws);
out:
    free(input), free(want_loss);
    lpv_st_close(&ref);
    lpv_model_free(m);
}

/* HF layouts: the training forward reproduces transformers' logits. */
static void check_hf_logits(const char *shared, const char *model_rel, const char *ref_rel) {
    lpv_err err;
    lpv_model *m = test_load_fixture(shared, model_rel);
    if (!m) return;
    lpv_st_file ref;
    test_open_st(&ref, shared, ref_rel);
    int64_t nlog = 0;
    float *input = test_read_tensor(&ref, "input", NULL), *want = test_read_tensor(&ref, "logits", &nlog);
    CHECK(input && want && nlog == 4000);
    if (input && want && nlog == 4000) {
        lpv_train_ws ws;
        lpv_grads g;
        CHECK_OK(lpv_train_ws_init(&ws, &m->cfg, 4, &err), &err);
        CHECK_OK(lpv_grads_init(&g, &m->cfg, LPV_GRADS_SQ, &err), &err);
        float *got = malloc(sizeof(float) * 4000), loss;
        lpv_loss ls = {.kind = LPV_LOSS_SELF_CE};
        CHECK_OK(lpv_forward_backward(m, &ws, input, 4, &ls, &loss, got, &g, &err), &err);
        test_diff d = test_compare(got, want, 4000, 1e-3);
        double gs = 0;
        for (int64_t i = 0; i < g.n_all; i++) gs = fmax(gs, fabs(g.all[i]));
        printf("[%s] %s: logits max abs %.3g, self-ce loss %.5f, max |grad| %.3g\n", isa_now, model_rel, d.max_abs,
               (double)loss, gs);
        CHECKF(d.max_abs <= 1e-5, "[%s] %s: training forward logits max abs error %.3g", isa_now, model_rel, d.max_abs);
        CHECK(isfinite(loss) && gs > 0 && isfinite(gs));
        free(got);
        lpv_grads_free(&g);
        lpv_train_ws_free(&ws);
    }
    free(input), free(want);
    lpv_st_close(&ref);
    lpv_model_free(m);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) return TEST_SKIP;
    /* every kernel ISA the CPU runs (the training forward's softmax and LayerNorm dispatch on it) */
    const lpv_isa isas[] = {LPV_ISA_REF, LPV_ISA_AVX2, LPV_ISA_AVX512};
    const lpv_isa best = lpv_isa_best();
    char ran[64] = "", skipped[256] = "";
    char summary[3][160];
    int nsum = 0;
    for (int i = 0; i < 3; i++) {
        lpv_err err;
        if (lpv_isa_set(isas[i], &err) != LPV_OK) {
            size_t u = strlen(skipped);
            snprintf(skipped + u, sizeof skipped - u, "%s%s (%.60s)", u ? ", " : "", lpv_isa_name(isas[i]), err.msg);
            continue;
        }
        isa_now = lpv_isa_name(isas[i]);
        size_t u = strlen(ran);
        snprintf(ran + u, sizeof ran - u, "%s%s", u ? ", " : "", isa_now);
        worst_rel_all = worst_abs_all = 0;
        check_fixture(shared, "fixtures/timm_deit_tiny_d2.safetensors", "fixtures/timm_deit_tiny_d2.ref.safetensors");
        check_fixture(shared, "fixtures/timm_deit_tiny_distilled_d2.safetensors",
                      "fixtures/timm_deit_tiny_distilled_d2.ref.safetensors");
        check_hf_logits(shared, "fixtures/hf_deit_tiny_d2", "fixtures/hf_deit_tiny_d2/ref.safetensors");
        check_hf_logits(shared, "fixtures/hf_deit_tiny_distilled_d2",
                        "fixtures/hf_deit_tiny_distilled_d2/ref.safetensors");
        snprintf(summary[nsum++], sizeof summary[0], "  isa %-7s worst gradient rel error %.3g, max abs %.3g", isa_now,
                 worst_rel_all, worst_abs_all);
    }
    lpv_err err;
    CHECK_OK(lpv_isa_set(best, &err), &err);
    printf("gradient errors per ISA (bound: rel %g):\n", GRAD_REL_TOL);
    for (int i = 0; i < nsum; i++) printf("%s\n", summary[i]);
    printf("ISAs run: %s; skipped: %s\n", ran, skipped[0] ? skipped : "none (this CPU runs them all)");
    CHECK(nsum >= 1); /* ref always runs */
    return test_finish("test_grad_golden");
}
