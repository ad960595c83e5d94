/*
 * test_quantize.c — GPTQ quantization of a whole model (include/lpvit/quantize.h) on a random 3-block model
 * and the committed mini ImageFolder:
 *   the cls token's weight in the input statistics: H and n grow by exactly (w − 1) × the cls columns' share
 *   (a double reference tapped from the forward pass), the patch embedding's statistics do not move;
 *   int8: the grid is round to nearest's (same per-row scales), every layer's output error is below round to
 *   nearest's, the logits move less from the FP32 model's, and bias correction zeroes the mean output error;
 *   codebook: every weight on its layer's levels, saved as codes and reloaded with the same logits;
 *   a pruned (BSR) model keeps its blocks exactly; refusals name the layer.
 */
#include <math.h>
#include <unistd.h>

#include "lpvit/codebook.h"
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/linear.h"
#include "lpvit/quantize.h"
#include "lpvit/refine.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

/* Σ over images of the cls column's outer product, for one layer, in double. */
typedef struct {
    int layer, in, T;
    double *H;
} cls_tap;

static void tap_cls(void *ctx, int layer, const float *X, int ld, int ncols) {
    cls_tap *c = ctx;
    if (layer != c->layer) return;
    for (int t = 0; t < ncols; t += c->T)
        for (int i = 0; i < c->in; i++)
            for (int j = 0; j < c->in; j++) c->H[i * c->in + j] += (double)X[(int64_t)i * ld + t] * X[(int64_t)j * ld + t];
}

static void collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int w, lpv_model_stats *s) {
    lpv_err err;
    memset(s, 0, sizeof *s);
    lpv_gptq_want(m, s);
    s->want[0] = 1; /* the patch embedding too: no prefix tokens there */
    s->prefix_weight = w;
    CHECK_OK(lpv_collect_input_stats(m, ds, pp, 5, NULL, s, &err), &err);
}

static void test_prefix_weight(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M) {
    lpv_model_stats a, b;
    collect(m, ds, pp, 0, &a);
    collect(m, ds, pp, 7, &b);
    int T = m->cfg.n_tokens, in = 128, L = 4; /* block 0's fc2 */
    cls_tap c = {L, in, T, calloc((size_t)in * in, sizeof(double))};
    lpv_workspace ws;
    lpv_err err;
    float *lg = malloc(sizeof(float) * (size_t)M * 1000);
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, M, &err), &err);
    ws.tap = tap_cls, ws.tap_ctx = &c;
    CHECK_OK(lpv_forward_all(m, &ws, x, M, lg, &err), &err);
    lpv_workspace_free(&ws);
    CHECK(a.images == M && b.images == M && a.st[L].in == in);
    CHECK(b.st[L].n == a.st[L].n + 6LL * M && a.st[L].n == (int64_t)M * T);
    double e = 0, mx = 0;
    for (int i = 0; i < in; i++)
        for (int j = i; j < in; j++) {
            double want = a.st[L].H[i * in + j] + 6 * c.H[i * in + j];
            e = fmax(e, fabs(b.st[L].H[i * in + j] - want)), mx = fmax(mx, fabs(want));
        }
    CHECKF(e <= 1e-4 * mx, "cls-weighted H: %g of %g", e, mx);
    CHECK(a.st[0].n == b.st[0].n && memcmp(a.st[0].H, b.st[0].H, sizeof(float) * a.st[0].in * a.st[0].in) == 0);
    free(c.H), free(lg);
    lpv_model_stats_free(&a), lpv_model_stats_free(&b);
}

/* mean over the outputs of |E[(W - V) x]| relative to E|W x|, from the layer's statistics */
static double mean_out_err(const float *W, const float *V, const float *bw, const float *bv, int out, int in,
                           const lpv_layer_stats *st) {
    double *mu = malloc(sizeof(double) * in), e = 0, s = 0;
    lpv_stats_mean(st, mu, NULL);
    for (int r = 0; r < out; r++) {
        double y = bw[r], z = bv[r];
        for (int j = 0; j < in; j++) y += W[(int64_t)r * in + j] * mu[j], z += V[(int64_t)r * in + j] * mu[j];
        e += fabs(y - z), s += fabs(y);
    }
    free(mu);
    return e / s;
}

static void test_int8(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M) {
    lpv_err err;
    lpv_model_stats s;
    collect(m, ds, pp, 0, &s);
    lpv_model *g = test_clone(m), *n = test_clone(m), *nb = test_clone(m);
    lpv_gptq_opts o = lpv_gptq_defaults(), ob = o;
    ob.bias = 0;
    lpv_gptq_info info, infob;
    CHECK_OK(lpv_model_quantize_gptq(g, &s, &o, &info, &err), &err);
    CHECK_OK(lpv_model_quantize_gptq(nb, &s, &ob, &infob, &err), &err);
    CHECK_OK(lpv_model_quantize_int8(n, 32, 32, &err), &err);
    CHECK(info.layers == 12 && info.seconds >= 0);
    lpv_layer_ref rg[LPV_MAX_LAYERS], rn[LPV_MAX_LAYERS], rm[LPV_MAX_LAYERS], rb[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(g, rg, LPV_MAX_LAYERS);
    lpv_model_layers(n, rn, LPV_MAX_LAYERS), lpv_model_layers(m, rm, LPV_MAX_LAYERS), lpv_model_layers(nb, rb, LPV_MAX_LAYERS);
    int q = 0, same_scales = 1, lower = 1, bias_ok = 1, weights_same = 1;
    for (int i = 0; i < nl; i++) {
        if (!lpv_linear_has_int8(rg[i].lin)) {
            CHECK(info.err_rtn[i] == 0 && info.err_gptq[i] == 0);
            continue;
        }
        q++;
        const lpv_bsr *bg = lpv_linear_int8_weights(rg[i].lin), *bn = lpv_linear_int8_weights(rn[i].lin);
        same_scales &= memcmp(bg->qscale, bn->qscale, sizeof(float) * bg->rows) == 0;
        lower &= info.err_gptq[i] < info.err_rtn[i] && info.err_rtn[i] > 0;
        printf("  %-22s output error: nearest %.3g, gptq %.3g\n", rg[i].name, info.err_rtn[i], info.err_gptq[i]);
        /* bias correction: the same weights, and the mean output error over the calibration inputs ~0 */
        int out = rg[i].lin->out, in = rg[i].lin->in;
        weights_same &= memcmp(rg[i].lin->w, rb[i].lin->w, sizeof(float) * out * in) == 0;
        double e_b = mean_out_err(rm[i].lin->w, rg[i].lin->w, rm[i].lin->b, rg[i].lin->b, out, in, &s.st[i]);
        double e_nb = mean_out_err(rm[i].lin->w, rb[i].lin->w, rm[i].lin->b, rb[i].lin->b, out, in, &s.st[i]);
        bias_ok &= e_b < 1e-4 && e_b < e_nb;
    }
    CHECK(q == 12 && same_scales && lower && weights_same && bias_ok);
    /* the logits move less from the FP32 model's than round to nearest's */
    float *l0 = malloc(sizeof(float) * M * 1000), *lg = malloc(sizeof(float) * M * 1000),
          *ln = malloc(sizeof(float) * M * 1000);
    test_logits(m, x, M, l0), test_logits(g, x, M, lg), test_logits(n, x, M, ln);
    double kg = lpv_mean_kl(l0, lg, M, 1000), kn = lpv_mean_kl(l0, ln, M, 1000);
    printf("int8: KL to FP32, nearest %.3g, gptq %.3g\n", kn, kg);
    CHECKF(kg < kn, "gptq KL %.3g not below nearest %.3g", kg, kn);
    /* refusals: an int8 model, a layer without statistics */
    CHECK(lpv_model_quantize_gptq(g, &s, &o, NULL, &err) == LPV_E_ARG && strstr(err.msg, "int8 already"));
    lpv_model *z = test_clone(m);
    s.want[6] = 0;
    CHECK(lpv_model_quantize_gptq(z, &s, &o, NULL, &err) == LPV_E_ARG && strstr(err.msg, "no input statistics"));
    s.want[6] = 1;
    free(l0), free(lg), free(ln);
    lpv_model_free(g), lpv_model_free(n), lpv_model_free(nb), lpv_model_free(z);
    lpv_model_stats_free(&s);
}

/* A copy of m with the block linears pruned to masks (16 x 16 blocks; NULL: dense). */
static lpv_model *pruned(const lpv_model *m, uint8_t *const *masks) {
    lpv_model *p = test_clone(m);
    lpv_layer_ref r[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(p, r, LPV_MAX_LAYERS);
    lpv_err err;
    for (int i = 0; i < nl; i++)
        if (masks[i]) CHECK_OK(lpv_model_sparsify(p, r[i].lin, 16, 16, masks[i], r[i].name, &err), &err);
    return p;
}

/* Codebook on a pruned model: blocks kept exactly, every weight scale · level, codes on disk, same logits after
 * the reload. */
static void test_codebook_bsr(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const float *x, int M) {
    lpv_err err;
    lpv_layer_ref r[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, r, LPV_MAX_LAYERS);
    lpv_rng rng;
    lpv_rng_seed(&rng, 5);
    uint8_t *masks[LPV_MAX_LAYERS] = {0};
    for (int i = 1; i < nl - 1; i++) { /* every block linear, 16 x 16 blocks, about half kept */
        int nb = ((r[i].lin->out + 15) / 16) * ((r[i].lin->in + 15) / 16);
        masks[i] = malloc(nb);
        for (int k = 0; k < nb; k++) masks[i][k] = lpv_rng_uniform(&rng) < 0.5 || k == 0;
    }
    lpv_model *p = pruned(m, masks), *g = pruned(m, masks), *n = pruned(m, masks);
    int64_t nnzb[LPV_MAX_LAYERS] = {0};
    lpv_model_layers(p, r, LPV_MAX_LAYERS);
    for (int i = 1; i < nl - 1; i++) nnzb[i] = r[i].lin->bsr->nnzb;
    lpv_model_stats s;
    collect(p, ds, pp, 0, &s);
    lpv_gptq_opts o = lpv_gptq_defaults();
    o.codebook = 8;
    lpv_gptq_info info;
    CHECK_OK(lpv_model_quantize_gptq(g, &s, &o, &info, &err), &err);
    CHECK_OK(lpv_model_quantize_codebook(n, 8, &err), &err);
    lpv_model_layers(g, r, LPV_MAX_LAYERS);
    int ok = 1, lower = 1;
    for (int i = 1; i < nl - 1; i++) {
        const lpv_linear *L = r[i].lin;
        ok &= L->bsr && L->bsr->nnzb == nnzb[i] && L->codebook && L->codebook_k == 8 && L->codebook_scale;
        const lpv_bsr *B = L->bsr;
        for (int br = 0; br < B->nbr && ok; br++)
            for (int32_t j = B->row_ptr[br]; j < B->row_ptr[br + 1]; j++)
                for (int rr = 0; rr < B->R; rr++)
                    for (int c = 0; c < B->C; c++) {
                        float sc = L->codebook_scale[br * B->R + rr], v = B->values[((int64_t)j * B->R + rr) * B->C + c];
                        ok &= sc * L->codebook[lpv_codebook_nearest(L->codebook, 8, v / sc)] == v;
                    }
        if (info.err_gptq[i] >= info.err_rtn[i]) lower = 0;
    }
    CHECK(ok && lower);
    char path[] = "/tmp/lpvit-test-gptq-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path); /* lpv_model_save creates it */
    CHECK_OK(lpv_model_save(g, path, NULL, &err), &err);
    lpv_model *back;
    CHECK_OK(lpv_model_load(&back, path, NULL, &err), &err);
    CHECK(lpv_model_has_codebook(back));
    float *la = malloc(sizeof(float) * M * 1000), *lb = malloc(sizeof(float) * M * 1000),
          *l0 = malloc(sizeof(float) * M * 1000), *ln = malloc(sizeof(float) * M * 1000);
    test_logits(g, x, M, la), test_logits(back, x, M, lb), test_logits(p, x, M, l0), test_logits(n, x, M, ln);
    CHECK(memcmp(la, lb, sizeof(float) * M * 1000) == 0);
    double kg = lpv_mean_kl(l0, la, M, 1000), kn = lpv_mean_kl(l0, ln, M, 1000);
    printf("codebook 8, pruned: KL to FP32, nearest %.3g, gptq %.3g\n", kn, kg);
    CHECKF(kg < kn, "gptq KL %.3g not below nearest %.3g", kg, kn);
    unlink(path);
    free(la), free(lb), free(l0), free(ln);
    lpv_model_free(back), lpv_model_free(g), lpv_model_free(n), lpv_model_free(p);
    for (int i = 0; i < nl; i++) free(masks[i]);
    lpv_model_stats_free(&s);
}

int main(void) {
    lpv_threads_set(2);
    test_mini t;
    test_mini_open(&t, 48);
    lpv_model *m = test_random_model(64, 3, 2, 128, 48, 1000, 0, 33);
    test_prefix_weight(m, &t.ds, &t.pp, t.x, t.n);
    test_int8(m, &t.ds, &t.pp, t.x, t.n);
    test_codebook_bsr(m, &t.ds, &t.pp, t.x, t.n);
    lpv_model_free(m);
    test_mini_close(&t);
    return test_finish("test_quantize");
}
