/*
 * test_actscale.c — static input grids for int8 linears (include/lpvit/actscale.h):
 *   the histogram that doubles its bound as values grow equals one made at the final bound from the start;
 *   lpv_act_grid is the per-token quantizer's rule (bsr.h) for the same range, byte for byte;
 *   lpv_act_mse against the squared error of quantizing the raw values themselves;
 *   mse: a long tail gets clipped and the error is below the min-max grid's (never above it);
 *   on a whole model (lpv_model_quantize_calibrated): the layers asked for get a static grid, the others stay
 *   per token, the grids survive a save and reload with the same logits, and a codebook is refused.
 */
#include <math.h>
#include <unistd.h>

#include "lpvit/actscale.h"
#include "lpvit/cpu.h"
#include "lpvit/linear.h"
#include "lpvit/quantize.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

static lpv_act_stats *one_layer(void) {
    lpv_act_stats *s = calloc(1, sizeof *s);
    s->n = 1, s->want[0] = 1, s->bound[0] = 1.0f / 1024;
    s->hist[0] = calloc(LPV_ACT_BINS, sizeof(double));
    return s;
}

static void free_layer(lpv_act_stats *s) {
    lpv_act_stats_free(s);
    free(s);
}

/* Values on a dyadic grid (exact in float at every bound): growing the bound in steps == the final bound. */
static void test_widen(lpv_rng *r) {
    lpv_act_stats *a = one_layer(), *b = one_layer();
    float wf = 2.0f * 64 / LPV_ACT_BINS; /* the bin width once the bound reaches 64 */
    float x[3][100];
    for (int p = 0; p < 3; p++)
        for (int t = 0; t < 100; t++) {
            float mag = p == 0 ? 0.001f : p == 1 ? 1.0f : 40.0f; /* pass by pass the values grow */
            int k = (int)((lpv_rng_uniform(r) * 2 - 1) * mag / wf);
            x[p][t] = ((float)k + 0.25f) * wf;
        }
    for (int p = 0; p < 3; p++) lpv_act_accumulate(a, 0, x[p], 100, 1, 100);
    b->bound[0] = 64;
    for (int p = 0; p < 3; p++) lpv_act_accumulate(b, 0, x[p], 100, 1, 100);
    CHECKF(a->bound[0] == 64 && b->bound[0] == 64, "bounds %g, %g", a->bound[0], b->bound[0]);
    CHECK(memcmp(a->hist[0], b->hist[0], sizeof(double) * LPV_ACT_BINS) == 0);
    CHECK(a->values[0] == 300 && a->lo[0] == b->lo[0] && a->hi[0] == b->hi[0] && a->lo[0] < 0 && a->hi[0] > 20);
    free_layer(a), free_layer(b);
}

/* lpv_act_grid == the quantizer's per-token parameters for a token whose values span [lo, hi]. */
static void test_grid_rule(void) {
    const float ranges[][2] = {{-1.5f, 2.25f}, {0, 3}, {-0.17f, 219}, {-4, 0}, {0, 0}, {-1e-3f, 7e-4f}};
    int K = 8, ok = 1;
    for (size_t c = 0; c < sizeof ranges / sizeof ranges[0]; c++) {
        float X[8 * 16] = {0};
        X[0] = ranges[c][0], X[16] = ranges[c][1]; /* column 0; the quantizer reads 16 columns */
        uint32_t X4[2 * 16];
        float xa[16], xc[16];
        lpv_qact pt = {1, 0, 0};
        lpv_q8_quantize_x_isa(X4, xa, xc, X, 16, K, 1, &pt, LPV_ISA_REF);
        lpv_qact g = lpv_act_grid(ranges[c][0], ranges[c][1]);
        ok &= g.per_token == 0 && g.scale == xa[0] && g.scale * (float)g.zp == xc[0];
    }
    CHECK(ok);
}

/* Squared error of the grid over raw values, per value. */
static double raw_mse(const float *x, int n, lpv_qact q) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        float u = nearbyintf(x[i] / q.scale) + q.zp;
        u = u < 0 ? 0 : u > 255 ? 255 : u;
        double d = (u - q.zp) * q.scale - x[i];
        e += d * d;
    }
    return e / n;
}

static void test_mse(lpv_rng *r) {
    /* GELU-like (a floor at -0.17) with two far outliers among 4M values, as a fc2 input over many images has
       them: clipping them costs less than the levels they take from everything else (each costs
       (50 - hi)^2 / n; the step's rounding error (range / 255)^2 / 12 falls from 3e-3 to 1e-4 per value) */
    int n = 4 << 20;
    float *x = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) x[i] = fmaxf((float)lpv_rng_normal(r), -0.17f);
    x[12345] = 50, x[999999] = 48;
    lpv_act_stats *s = one_layer();
    lpv_act_accumulate(s, 0, x, n, 1, n);
    lpv_qact mm = lpv_act_choose(s, 0, LPV_ACT_MINMAX), ms = lpv_act_choose(s, 0, LPV_ACT_MSE);
    double e_mm = lpv_act_mse(s, 0, mm), e_ms = lpv_act_mse(s, 0, ms);
    double r_mm = raw_mse(x, n, mm), r_ms = raw_mse(x, n, ms);
    float hi_ms = ms.scale * (255 - ms.zp);
    printf("tail: min-max grid to %.1f, mse %.3g (raw %.3g); mse grid to %.2f, mse %.3g (raw %.3g)\n",
           mm.scale * (255 - mm.zp), e_mm, r_mm, hi_ms, e_ms, r_ms);
    CHECK(fabsf(mm.scale * (255 - mm.zp) - 50) < 0.2f && hi_ms < 25);
    CHECKF(e_ms < 0.5 * e_mm && r_ms < 0.5 * r_mm, "mse grid error %.3g, min-max %.3g", e_ms, e_mm);
    CHECKF(fabs(e_mm - r_mm) < 0.25 * r_mm && fabs(e_ms - r_ms) < 0.25 * r_ms, "histogram %.3g/%.3g, raw %.3g/%.3g",
           e_mm, e_ms, r_mm, r_ms);
    /* without a tail, the full range may well be best: never worse than min-max */
    for (int i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(r);
    lpv_act_stats *t = one_layer();
    lpv_act_accumulate(t, 0, x, n, 1, n);
    CHECK(lpv_act_mse(t, 0, lpv_act_choose(t, 0, LPV_ACT_MSE)) <= lpv_act_mse(t, 0, lpv_act_choose(t, 0, LPV_ACT_MINMAX)));
    free(x);
    free_layer(s), free_layer(t);
}

static void test_model(void) {
    lpv_threads_set(2);
    test_mini t;
    test_mini_open(&t, 48);
    lpv_model *m = test_random_model(64, 2, 2, 128, 48, 1000, 0, 7);
    lpv_err err;
    lpv_quant_calib_opts o = lpv_quant_calib_defaults();
    o.act = LPV_ACT_MSE, o.act_kinds = (1u << LPV_LK_QKV) | (1u << LPV_LK_FC1) | (1u << LPV_LK_FC2);
    o.batch = 5;
    lpv_quant_calib_info info;
    CHECK_OK(lpv_model_quantize_calibrated(m, &t.ds, &t.pp, &o, &info, NULL, &err), &err);
    lpv_layer_ref r[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, r, LPV_MAX_LAYERS), ok = 1;
    for (int i = 0; i < nl; i++) {
        if (!lpv_layer_kind_is_block(r[i].kind)) continue;
        int want_static = r[i].kind != LPV_LK_PROJ;
        ok &= lpv_linear_has_int8(r[i].lin) && r[i].lin->qx.per_token == !want_static;
        if (want_static) ok &= r[i].lin->qx.scale > 0 && info.act_mse[i] <= info.act_mse_minmax[i] && info.act_mse[i] > 0;
    }
    CHECK(ok && info.act_layers == 6);
    char path[] = "/tmp/lpvit-test-act-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    CHECK_OK(lpv_model_save(m, path, NULL, &err), &err);
    lpv_model *back;
    CHECK_OK(lpv_model_load(&back, path, NULL, &err), &err);
    lpv_layer_ref rb[LPV_MAX_LAYERS];
    lpv_model_layers(back, rb, LPV_MAX_LAYERS);
    int same = 1;
    for (int i = 0; i < nl; i++)
        same &= r[i].lin->qx.per_token == rb[i].lin->qx.per_token && r[i].lin->qx.scale == rb[i].lin->qx.scale &&
                r[i].lin->qx.zp == rb[i].lin->qx.zp;
    CHECK(same);
    float *la = malloc(sizeof(float) * t.n * 1000), *lb = malloc(sizeof(float) * t.n * 1000);
    lpv_workspace wa, wb;
    CHECK_OK(lpv_workspace_init_for(&wa, m, t.n, &err), &err);
    CHECK_OK(lpv_workspace_init_for(&wb, back, t.n, &err), &err);
    CHECK_OK(lpv_forward(m, &wa, t.x, t.n, la, &err), &err);
    CHECK_OK(lpv_forward(back, &wb, t.x, t.n, lb, &err), &err);
    CHECK(memcmp(la, lb, sizeof(float) * t.n * 1000) == 0);
    lpv_workspace_free(&wa), lpv_workspace_free(&wb);
    unlink(path);
    /* refusals: a codebook with a static grid, an int8 model */
    lpv_model *c = test_random_model(64, 2, 2, 128, 48, 1000, 0, 7);
    o.gptq.codebook = 8;
    CHECK(lpv_model_quantize_calibrated(c, &t.ds, &t.pp, &o, NULL, NULL, &err) == LPV_E_ARG && strstr(err.msg, "codebook"));
    CHECK(lpv_model_quantize_calibrated(m, &t.ds, &t.pp, &o, NULL, NULL, &err) == LPV_E_ARG && strstr(err.msg, "int8 already"));
    free(la), free(lb);
    lpv_model_free(m), lpv_model_free(back), lpv_model_free(c);
    test_mini_close(&t);
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 11);
    test_widen(&r);
    test_grid_rule();
    test_mse(&r);
    test_model();
    return test_finish("test_actscale");
}
