/*
 * test_smooth.c — SmoothQuant (include/lpvit/smooth.h) on a random 3-block model and the committed mini
 * ImageFolder:
 *   the factors' formula, its zero and clamp cases;
 *   the smoothed FP32 model computes the same logits, dense and block sparse (its blocks kept as they were);
 *   the statistics rescaled in place equal those collected again on the smoothed model;
 *   outlier channels planted into every smoothed input (an exact rescaling of the FP32 model, as LayerNorm
 *   and v produce them in real ViTs) make per-token int8 lose accuracy, and smoothing gives it back: the int8
 *   logits' KL to FP32 falls, and the inputs' spread (largest channel over the median one) with it;
 *   refusals: alpha outside [0, 1], an int8 model, missing statistics.
 */
#include <math.h>

#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/linear.h"
#include "lpvit/quantize.h"
#include "lpvit/refine.h"
#include "lpvit/smooth.h"
#include "test.h"
#include "test_util.h"

static void collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, lpv_model_stats *s) {
    lpv_err err;
    memset(s, 0, sizeof *s);
    lpv_gptq_want(m, s);
    CHECK_OK(lpv_collect_input_stats(m, ds, pp, 5, NULL, s, &err), &err);
}

static void test_factors(void) {
    float amax[5] = {4, 0, 9, 1e12f, 1}, wmax[5] = {1, 2, 0, 1e-12f, 0.25f}, s[5];
    lpv_smooth_factors(amax, wmax, 5, 0.5, s);
    CHECK(fabsf(s[0] - 2.0f) < 1e-6f && s[1] == 1 && s[2] == 1 && s[3] == 1.0f / LPV_SMOOTH_MIN);
    CHECK(fabsf(s[4] - 2.0f) < 1e-6f); /* sqrt(1) / sqrt(0.25) */
    lpv_smooth_factors(amax, wmax, 5, 1.0, s);
    CHECK(s[0] == 4 && s[4] == 1);
    lpv_smooth_factors(amax, wmax, 5, 0.0, s);
    CHECK(s[0] == 1 && s[4] == 4);
}

/* Channel j of every block's qkv, fc1 and proj input made k times larger, the consuming columns k times
   smaller: the same FP32 function, with outlier channels. */
static void plant_outliers(lpv_model *m, const int *ch, int nch, float k) {
    int D = m->cfg.dim;
    for (int l = 0; l < m->cfg.depth; l++) {
        lpv_block *B = &m->blocks[l];
        for (int c = 0; c < nch; c++) {
            int j = ch[c];
            B->ln1_w[j] *= k, B->ln1_b[j] *= k, B->ln2_w[j] *= k, B->ln2_b[j] *= k;
            for (int r = 0; r < 3 * D; r++) B->qkv.w[(size_t)r * D + j] /= k;
            for (int r = 0; r < m->cfg.mlp; r++) B->fc1.w[(size_t)r * D + j] /= k;
            for (int r = 0; r < D; r++) B->proj.w[(size_t)r * D + j] /= k;
            for (int c2 = 0; c2 < D; c2++) B->qkv.w[(size_t)(2 * D + j) * D + c2] *= k;
            B->qkv.b[2 * D + j] *= k;
        }
    }
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i])), mx = fmax(mx, fabs((double)a[i]));
    return mx > 0 ? e / mx : e;
}

/* Same logits, the stats rescaled as collecting them again gives. */
static void test_equivalent(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M,
                            const char *what) {
    lpv_err err;
    lpv_model_stats s, again;
    collect(m, ds, pp, &s);
    float *l0 = malloc(sizeof(float) * M * 1000), *l1 = malloc(sizeof(float) * M * 1000);
    test_logits(m, x, M, l0);
    lpv_layer_ref r[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, r, LPV_MAX_LAYERS);
    int64_t nnzb[LPV_MAX_LAYERS] = {0};
    for (int i = 0; i < nl; i++) nnzb[i] = r[i].lin->bsr ? r[i].lin->bsr->nnzb : -1;
    lpv_smooth_opts o = lpv_smooth_defaults();
    lpv_smooth_info info;
    CHECK_OK(lpv_model_smooth(m, &s, &o, &info, &err), &err);
    CHECK(info.layers == 3 * m->cfg.depth);
    test_logits(m, x, M, l1);
    double d = max_rel_diff(l0, l1, (size_t)M * 1000);
    printf("%s: smoothed FP32 logits, max |diff| / max |logit| = %.3g\n", what, d);
    CHECKF(d < 2e-5, "%s: smoothing changed the FP32 logits by %.3g", what, d);
    int same_blocks = 1;
    for (int i = 0; i < nl; i++) same_blocks &= nnzb[i] == (r[i].lin->bsr ? r[i].lin->bsr->nnzb : -1);
    CHECK(same_blocks);
    collect(m, ds, pp, &again);
    double eh = 0, ea = 0, es = 0;
    for (int i = 0; i < nl; i++) {
        if (!s.want[i]) continue;
        int n = s.st[i].in;
        CHECK(again.st[i].n == s.st[i].n);
        float *H0 = again.st[i].H, *H1 = s.st[i].H;
        double hm = 0, he = 0;
        for (int k = 0; k < n * n; k++) hm = fmax(hm, fabs(H0[k])), he = fmax(he, fabs(H0[k] - H1[k]));
        eh = fmax(eh, he / hm);
        for (int j = 0; j < n; j++) {
            ea = fmax(ea, fabs(again.st[i].amax[j] - s.st[i].amax[j]) / fmax(again.st[i].amax[j], 1e-30));
            es = fmax(es, fabs(again.st[i].sum[j] - s.st[i].sum[j]) / (fabs(again.st[i].sum[j]) + 1e-3 * s.st[i].n));
        }
    }
    printf("%s: rescaled statistics against collected again: H %.3g, amax %.3g, sum %.3g\n", what, eh, ea, es);
    CHECK(eh < 1e-4 && ea < 1e-4 && es < 1e-4);
    free(l0), free(l1);
    lpv_model_stats_free(&s), lpv_model_stats_free(&again);
}

/* KL of per-token int8 (round to nearest) logits to p's FP32 logits, after smoothing with alpha (0: none). */
static double int8_kl(const lpv_model *p, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M,
                      double alpha, double *spread) {
    lpv_err err;
    lpv_model *q = test_clone(p);
    float *l0 = malloc(sizeof(float) * M * 1000), *l1 = malloc(sizeof(float) * M * 1000);
    test_logits(q, x, M, l0);
    *spread = 0;
    if (alpha > 0) {
        lpv_model_stats s;
        collect(q, ds, pp, &s);
        lpv_smooth_opts o = lpv_smooth_defaults();
        o.alpha = alpha;
        lpv_smooth_info info;
        CHECK_OK(lpv_model_smooth(q, &s, &o, &info, &err), &err);
        for (int i = 0; i < LPV_MAX_LAYERS; i++)
            if (info.spread_before[i] > 0) {
                CHECK(info.spread_after[i] <= info.spread_before[i]);
                *spread = fmax(*spread, info.spread_after[i] / info.spread_before[i]);
            }
        lpv_model_stats_free(&s);
    }
    CHECK_OK(lpv_model_quantize_int8(q, 32, 32, &err), &err);
    test_logits(q, x, M, l1);
    double kl = lpv_mean_kl(l0, l1, M, 1000);
    free(l0), free(l1);
    lpv_model_free(q);
    return kl;
}

static void test_outliers(const lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M) {
    lpv_model *p = test_clone(m);
    const int ch[2] = {5, 40};
    plant_outliers(p, ch, 2, 60.0f);
    double sp, sp5, sp8;
    double k_plain = int8_kl(m, ds, pp, x, M, 0, &sp), k_out = int8_kl(p, ds, pp, x, M, 0, &sp);
    double k_s5 = int8_kl(p, ds, pp, x, M, 0.5, &sp5), k_s8 = int8_kl(p, ds, pp, x, M, 0.8, &sp8);
    printf("int8 KL to FP32: plain model %.3g, with outliers %.3g, smoothed 0.5 %.3g, 0.8 %.3g "
           "(spread after/before at most %.2f, %.2f)\n", k_plain, k_out, k_s5, k_s8, sp5, sp8);
    CHECKF(k_out > 3 * k_plain, "planted outliers should hurt per-token int8: %.3g vs %.3g", k_out, k_plain);
    CHECKF(k_s5 < 0.5 * k_out && k_s8 < 0.5 * k_out, "smoothing should undo it: %.3g, %.3g vs %.3g", k_s5, k_s8, k_out);
    CHECK(sp5 < 0.5 && sp8 < sp5);
    lpv_model_free(p);
}

static void test_refusals(const lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp) {
    lpv_err err;
    lpv_model *p = test_clone(m);
    lpv_model_stats s;
    collect(p, ds, pp, &s);
    lpv_smooth_opts o = lpv_smooth_defaults();
    o.alpha = 1.5;
    CHECK(lpv_model_smooth(p, &s, &o, NULL, &err) == LPV_E_ARG && strstr(err.msg, "alpha"));
    o.alpha = NAN;
    CHECK(lpv_model_smooth(p, &s, &o, NULL, &err) == LPV_E_ARG);
    o.alpha = 0.5;
    s.want[2] = 0; /* block 0's proj */
    CHECK(lpv_model_smooth(p, &s, &o, NULL, &err) == LPV_E_ARG && strstr(err.msg, "blocks.0.attn.proj"));
    o.proj = 0; /* not needed when proj is left alone */
    CHECK_OK(lpv_model_smooth(p, &s, &o, NULL, &err), &err);
    s.want[2] = 1;
    CHECK_OK(lpv_model_quantize_int8(p, 32, 32, &err), &err);
    CHECK(lpv_model_smooth(p, &s, &o, NULL, &err) == LPV_E_ARG && strstr(err.msg, "int8 already"));
    lpv_model_stats_free(&s);
    lpv_model_free(p);
}

int main(void) {
    lpv_threads_set(2);
    test_mini t;
    test_mini_open(&t, 48);
    lpv_model *m = test_random_model(64, 3, 2, 128, 48, 1000, 0, 33);
    test_factors();
    lpv_model *d = test_clone(m), *b = test_clone(m);
    test_equivalent(d, &t.ds, &t.pp, t.x, t.n, "dense");
    test_sparsify_pattern(b, 16, 7);
    test_equivalent(b, &t.ds, &t.pp, t.x, t.n, "bsr 16x16");
    test_outliers(m, &t.ds, &t.pp, t.x, t.n);
    test_refusals(m, &t.ds, &t.pp);
    lpv_model_free(d), lpv_model_free(b), lpv_model_free(m);
    test_mini_close(&t);
    return test_finish("test_smooth");
}
