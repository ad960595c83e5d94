/*
 * test_blocktune.c — one transformer block alone (grad.h lpv_block_forward_backward)
 * and block-wise reconstruction (blocktune.h) on tiny random models
 * (D 16, 2 heads, MLP 40, 9 patches + cls):
 *   - the block's output equals lpv_forward_block's, from a depth-1 workspace and
 *     an input with a wider stride;
 *   - every parameter's gradient of the block loss equals a central finite
 *     difference of the loss (a few entries per tensor);
 *   - tuning a pruned block whose input is perturbed lowers its output error
 *     against the dense block's, leaves pruned blocks exactly zero and takes
 *     epochs x mini-batches steps; a learning rate that diverges is reverted
 *     to the exact starting weights; bad arguments fail with a message.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/blocktune.h"
#include "lpvit/forward.h"
#include "lpvit/grad.h"
#include "lpvit/model.h"
#include "lpvit/rng.h"
#include "test.h"

static lpv_model *tiny(uint64_t seed) {
    lpv_config c = {0};
    c.dim = 16, c.depth = 2, c.heads = 2, c.mlp = 40, c.patch = 16, c.img = 48, c.chans = 3, c.classes = 10;
    c.n_prefix = 1, c.n_outputs = 1, c.ln_eps = 1e-6f;
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, seed, &err), &err);
    if (!m) return NULL;
    lpv_rng r;
    lpv_rng_seed(&r, seed + 1);
    for (int l = 0; l < c.depth; l++) { /* larger than timm's init: every nonlinearity matters */
        lpv_block *b = &m->blocks[l];
        lpv_linear *ls[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
        for (int k = 0; k < 4; k++) {
            for (int64_t i = 0; i < (int64_t)ls[k]->out * ls[k]->in; i++) ls[k]->w[i] *= 8;
            for (int i = 0; i < ls[k]->out; i++) ls[k]->b[i] = 0.1f * (float)lpv_rng_normal(&r);
        }
        for (int i = 0; i < c.dim; i++)
            b->ln1_w[i] = 1.0f + 0.3f * (float)lpv_rng_normal(&r), b->ln2_b[i] = 0.1f * (float)lpv_rng_normal(&r);
    }
    return m;
}

/* Residual stream (D, ld) of B images: random values in the first B*T columns, padding NaN-free zeros. */
static float *stream(const lpv_config *c, int B, int ld, lpv_rng *r) {
    float *x = calloc((size_t)c->dim * ld, sizeof(float));
    for (int d = 0; d < c->dim; d++)
        for (int k = 0; k < B * c->n_tokens; k++) x[(int64_t)d * ld + k] = (float)lpv_rng_normal(r);
    return x;
}

static void check_forward_and_grads(void) {
    lpv_model *m = tiny(11);
    if (!m) return;
    lpv_err err;
    lpv_config c1 = m->cfg;
    c1.depth = 1;
    int B = 3, T = m->cfg.n_tokens, D = m->cfg.dim, N = B * T, ld = lpv_round16(N) + 16; /* wider than needed */
    lpv_rng r;
    lpv_rng_seed(&r, 5);
    float *x = stream(&m->cfg, B, ld, &r), *y = stream(&m->cfg, B, ld, &r);
    lpv_train_ws ws;
    lpv_grads g;
    CHECK_OK(lpv_train_ws_init(&ws, &c1, B, &err), &err);
    CHECK_OK(lpv_grads_init(&g, &c1, 0, &err), &err);
    /* forward equals the inference engine's block */
    lpv_workspace fw;
    CHECK_OK(lpv_workspace_init(&fw, &m->cfg, B, &err), &err);
    int ldf = lpv_round16(N);
    for (int d = 0; d < D; d++) memcpy(fw.x + (int64_t)d * ldf, x + (int64_t)d * ld, sizeof(float) * (size_t)N);
    lpv_forward_block(m, &fw, 1, B);
    double L0;
    CHECK_OK(lpv_block_forward_backward(m, 1, &ws, x, y, ld, B, &L0, &g.blocks[0], &err), &err);
    double worst = 0, scale = 0;
    for (int d = 0; d < D; d++)
        for (int k = 0; k < N; k++) {
            double a = ws.x_out[(int64_t)d * ldf + k], b = fw.x[(int64_t)d * ldf + k];
            worst = fmax(worst, fabs(a - b)), scale = fmax(scale, fabs(b));
        }
    CHECKF(worst <= 1e-5 * scale, "block output vs lpv_forward_block: max |diff| %g (scale %g)", worst, scale);
    /* gradients against central differences of the loss */
    lpv_block *b = &m->blocks[1];
    lpv_block_grads *bg = &g.blocks[0];
    float *P[12] = {b->qkv.w, b->qkv.b, b->proj.w, b->proj.b, b->fc1.w, b->fc1.b, b->fc2.w, b->fc2.b,
                    b->ln1_w, b->ln1_b, b->ln2_w, b->ln2_b};
    float *G[12] = {bg->qkv.w, bg->qkv.b, bg->proj.w, bg->proj.b, bg->fc1.w, bg->fc1.b, bg->fc2.w, bg->fc2.b,
                    bg->ln1_w, bg->ln1_b, bg->ln2_w, bg->ln2_b};
    int64_t n[12] = {3 * D * D, 3 * D, D * D, D, 40 * D, 40, D * 40, D, D, D, D, D};
    double worst_rel = 0;
    for (int t = 0; t < 12; t++) {
        double gmax = 0;
        for (int64_t i = 0; i < n[t]; i++) gmax = fmax(gmax, fabs(G[t][i]));
        CHECKF(gmax > 0, "tensor %d has an all-zero gradient", t);
        for (int s = 0; s < 4; s++) {
            int64_t i = (int64_t)lpv_rng_below(&r, (uint64_t)n[t]);
            float w0 = P[t][i], h = 1e-2f * fmaxf(1.0f, fabsf(w0));
            double Lp, Lm;
            P[t][i] = w0 + h;
            float hp = P[t][i] - w0;
            CHECK_OK(lpv_block_forward_backward(m, 1, &ws, x, y, ld, B, &Lp, NULL, &err), &err);
            P[t][i] = w0 - h;
            float hm = w0 - P[t][i];
            CHECK_OK(lpv_block_forward_backward(m, 1, &ws, x, y, ld, B, &Lm, NULL, &err), &err);
            P[t][i] = w0;
            double fd = (Lp - Lm) / ((double)hp + hm), rel = fabs(fd - G[t][i]) / fmax(fabs(fd), 0.02 * gmax);
            worst_rel = fmax(worst_rel, rel);
            CHECKF(rel < 2e-2, "tensor %d entry %lld: gradient %g vs finite difference %g", t, (long long)i,
                   (double)G[t][i], fd);
        }
    }
    printf("block gradient vs finite differences: worst relative error %.2e\n", worst_rel);
    /* bad arguments */
    CHECK(lpv_block_forward_backward(m, 2, &ws, x, y, ld, B, NULL, NULL, &err) == LPV_E_ARG);
    CHECK(lpv_block_forward_backward(m, 0, &ws, x, y, N - 1, B, NULL, NULL, &err) == LPV_E_ARG);
    CHECK(lpv_block_forward_backward(m, 0, &ws, x, y, ld, B + 1, NULL, NULL, &err) == LPV_E_ARG);
    CHECK(strstr(err.msg, "batch") != NULL);
    lpv_workspace_free(&fw);
    lpv_grads_free(&g);
    lpv_train_ws_free(&ws);
    free(x), free(y);
    lpv_model_free(m);
}

/* A pruned block fed a perturbed input, tuned towards the dense block's output on the clean input. */
static void check_tune(void) {
    lpv_model *dense = tiny(21), *m = tiny(21);
    if (!dense || !m) return;
    lpv_err err;
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, R = 8, C = 8, l = 0, nch = 2, bsz[2] = {5, 3};
    lpv_rng r;
    lpv_rng_seed(&r, 9);
    float *xs[2], *ys[2];
    lpv_workspace fw;
    CHECK_OK(lpv_workspace_init(&fw, c, 5, &err), &err);
    for (int i = 0; i < nch; i++) {
        int ld = lpv_round16(bsz[i] * T);
        xs[i] = stream(c, bsz[i], ld, &r);
        ys[i] = malloc(sizeof(float) * (size_t)D * ld);
        memcpy(fw.x, xs[i], sizeof(float) * (size_t)D * ld);
        lpv_forward_block(dense, &fw, l, bsz[i]);
        memcpy(ys[i], fw.x, sizeof(float) * (size_t)D * ld);
        for (int d = 0; d < D; d++) /* the pruned model's own stream differs from the dense one */
            for (int k = 0; k < bsz[i] * T; k++) xs[i][(int64_t)d * ld + k] += 0.1f * (float)lpv_rng_normal(&r);
    }
    /* prune every other block of each linear */
    lpv_block *b = &m->blocks[l];
    lpv_linear *ls[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
    uint8_t *mk[4];
    const uint8_t *cmk[4];
    for (int j = 0; j < 4; j++) {
        int nbr = (ls[j]->out + R - 1) / R, nbc = (ls[j]->in + C - 1) / C;
        mk[j] = malloc((size_t)nbr * nbc);
        for (int q = 0; q < nbr * nbc; q++) mk[j][q] = (uint8_t)((q + j) % 2);
        for (int rr = 0; rr < ls[j]->out; rr++)
            for (int cc = 0; cc < ls[j]->in; cc++)
                if (!mk[j][(rr / R) * nbc + cc / C]) ls[j]->w[(int64_t)rr * ls[j]->in + cc] = 0;
        cmk[j] = mk[j];
    }
    lpv_tune_opts o = lpv_tune_defaults();
    o.epochs = 30, o.lr = 3e-3f, o.batch = 2;
    lpv_tuner t;
    CHECK_OK(lpv_tuner_init(&t, c, &o, &err), &err);
    lpv_tune_info info;
    CHECK_OK(lpv_block_tune(&t, m, l, xs, ys, bsz, nch, cmk, R, C, &info, &err), &err);
    printf("block tuning: mse %.4g -> %.4g in %d steps\n", info.mse_before, info.mse_after, info.steps);
    CHECKF(info.mse_after < 0.7 * info.mse_before, "tuning lowered the block error only from %g to %g",
           info.mse_before, info.mse_after);
    CHECK(info.reverted == 0);
    CHECKF(info.steps == 30 * (3 + 2), "steps %d, expected 30 epochs x 5 mini-batches", info.steps);
    int moved_pruned = 0, moved_kept = 0;
    for (int j = 0; j < 4; j++) {
        int nbc = (ls[j]->in + C - 1) / C;
        lpv_linear *dl = j == 0 ? &dense->blocks[l].qkv : j == 1 ? &dense->blocks[l].proj
                       : j == 2 ? &dense->blocks[l].fc1 : &dense->blocks[l].fc2;
        for (int rr = 0; rr < ls[j]->out; rr++)
            for (int cc = 0; cc < ls[j]->in; cc++) {
                int64_t q = (int64_t)rr * ls[j]->in + cc;
                if (!mk[j][(rr / R) * nbc + cc / C]) moved_pruned += ls[j]->w[q] != 0.0f;
                else moved_kept += ls[j]->w[q] != dl->w[q];
            }
    }
    CHECKF(moved_pruned == 0, "%d pruned weights became nonzero", moved_pruned);
    CHECK(moved_kept > 0);
    /* a diverging learning rate: the block goes back to exactly where it started */
    lpv_tuner_free(&t);
    o.lr = 1e3f, o.epochs = 3;
    CHECK_OK(lpv_tuner_init(&t, c, &o, &err), &err);
    float *before = malloc(sizeof(float) * (size_t)b->fc1.out * b->fc1.in);
    memcpy(before, b->fc1.w, sizeof(float) * (size_t)b->fc1.out * b->fc1.in);
    CHECK_OK(lpv_block_tune(&t, m, l, xs, ys, bsz, nch, cmk, R, C, &info, &err), &err);
    CHECK(info.reverted == 1);
    CHECK(memcmp(before, b->fc1.w, sizeof(float) * (size_t)b->fc1.out * b->fc1.in) == 0);
    CHECK(lpv_block_tune(&t, m, 5, xs, ys, bsz, nch, cmk, R, C, &info, &err) == LPV_E_ARG);
    lpv_tuner_free(&t);
    o.batch = 0;
    CHECK(lpv_tuner_init(&t, c, &o, &err) == LPV_E_ARG);
    free(before);
    for (int j = 0; j < 4; j++) free(mk[j]);
    for (int i = 0; i < nch; i++) free(xs[i]), free(ys[i]);
    lpv_workspace_free(&fw);
    lpv_model_free(dense);
    lpv_model_free(m);
}

int main(void) {
    check_forward_and_grads();
    check_tune();
    return test_finish("test_blocktune");
}
