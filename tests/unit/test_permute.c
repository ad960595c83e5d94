/*
 * test_permute.c — channel permutations preserve the model's function, and
 * the importance sort puts every group in non-increasing order of its score.
 */
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/permute.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

/* DeiT-like, 64 wide, 2 blocks, 32 x 32 images, 40 classes */
static lpv_model *tiny(uint64_t seed, int distilled) { return test_random_model(64, 2, 2, 128, 32, 40, distilled, seed); }


static void shuffle_groups(int32_t *a, int groups, int n, lpv_rng *r) {
    for (int g = 0; g < groups; g++) {
        int32_t *p = a + (int64_t)g * n;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(lpv_rng_uniform(r) * (i + 1));
            if (j > i) j = i;
            int32_t t = p[i];
            p[i] = p[j], p[j] = t;
        }
    }
}

/* A random permutation of every group leaves the logits unchanged (up to float reassociation). */
static void test_function_preserved(int distilled) {
    lpv_model *m = tiny(7, distilled);
    int B = 2, S = 32, K = m->cfg.classes;
    float *x = malloc(sizeof(float) * (size_t)B * 3 * S * S), a[2 * 40], b[2 * 40];
    lpv_rng r;
    lpv_rng_seed(&r, 3);
    for (int i = 0; i < B * 3 * S * S; i++) x[i] = (float)lpv_rng_normal(&r);
    test_logits(m, x, B, a);

    lpv_perm p;
    lpv_err err;
    CHECK_OK(lpv_perm_init(&p, &m->cfg, &err), &err);
    CHECK(lpv_perm_is_identity(&p) && lpv_perm_valid(&p));
    shuffle_groups(p.resid, 1, p.dim, &r);
    shuffle_groups(p.mlp_p, p.depth, p.mlp, &r);
    shuffle_groups(p.qk, p.depth * p.heads, p.head_dim, &r);
    shuffle_groups(p.v, p.depth * p.heads, p.head_dim, &r);
    CHECK(lpv_perm_valid(&p) && !lpv_perm_is_identity(&p));
    float w0 = m->blocks[0].qkv.w[0];
    CHECK_OK(lpv_model_permute(m, &p, &err), &err);
    CHECK(m->blocks[0].qkv.w[0] != w0); /* the weights did move */
    test_logits(m, x, B, b);
    double maxd = 0, maxa = 0;
    for (int i = 0; i < B * K; i++) {
        maxd = fmax(maxd, fabs(a[i] - b[i]));
        maxa = fmax(maxa, fabs(a[i]));
    }
    CHECKF(maxd <= 1e-5 * fmax(1, maxa), "permuted logits differ by %g (max |logit| %g)", maxd, maxa);

    /* a permutation of only the q/k channels of one head, or only v, also preserves it */
    lpv_perm_identity(&p);
    shuffle_groups(p.qk + p.head_dim, 1, p.head_dim, &r);
    CHECK_OK(lpv_model_permute(m, &p, &err), &err);
    test_logits(m, x, B, a);
    maxd = 0;
    for (int i = 0; i < B * K; i++) maxd = fmax(maxd, fabs(a[i] - b[i]));
    CHECKF(maxd <= 1e-5 * fmax(1, maxa), "q/k-permuted logits differ by %g", maxd);

    /* a duplicated index is not a permutation */
    p.v[0] = p.v[1];
    CHECK(!lpv_perm_valid(&p));
    lpv_perm_free(&p);
    lpv_model_free(m);
    free(x);
}

static double group_rows(const float *S, int in, int r) {
    double s = 0;
    for (int j = 0; j < in; j++) s += S[(int64_t)r * in + j];
    return s;
}

static double group_cols(const float *S, int out, int in, int c) {
    double s = 0;
    for (int i = 0; i < out; i++) s += S[(int64_t)i * in + c];
    return s;
}

/* scores = |w| of the pruned layers: after sorting, recomputing them on the permuted model gives
   non-increasing group sums (the naive definition of each group's score, written out here). */
static void test_importance_sort(void) {
    lpv_model *m = tiny(11, 0);
    int D = m->cfg.dim, F = m->cfg.mlp, H = m->cfg.heads, hd = D / H;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    float *sc[LPV_MAX_LAYERS] = {0};
    const float *csc[LPV_MAX_LAYERS] = {0};
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < nl; i++) {
            if (refs[i].block < 0) continue; /* patch and head do not vote */
            const lpv_linear *L = refs[i].lin;
            if (!sc[i]) sc[i] = malloc(sizeof(float) * (size_t)L->out * L->in);
            for (int64_t e = 0; e < (int64_t)L->out * L->in; e++) sc[i][e] = fabsf(L->w[e]);
            csc[i] = sc[i];
        }
        if (pass == 1) break;
        lpv_perm p;
        lpv_err err;
        CHECK_OK(lpv_perm_init(&p, &m->cfg, &err), &err);
        CHECK_OK(lpv_perm_by_importance(m, csc, &p, &err), &err);
        CHECK(lpv_perm_valid(&p) && !lpv_perm_is_identity(&p));
        CHECK_OK(lpv_model_permute(m, &p, &err), &err);
        lpv_perm_free(&p);
    }
    /* residual channels */
    double prev = INFINITY;
    for (int d = 0; d < D; d++) {
        double s = 0;
        for (int i = 0; i < nl; i++) {
            if (!sc[i]) continue;
            const lpv_linear *L = refs[i].lin;
            if (refs[i].kind == LPV_LK_QKV || refs[i].kind == LPV_LK_FC1) s += group_cols(sc[i], L->out, L->in, d);
            if (refs[i].kind == LPV_LK_PROJ || refs[i].kind == LPV_LK_FC2) s += group_rows(sc[i], L->in, d);
        }
        CHECKF(s <= prev * (1 + 1e-9), "resid channel %d: %g after %g", d, s, prev);
        prev = s;
    }
    for (int l = 0; l < m->cfg.depth; l++) {
        int q = 1 + 4 * l; /* qkv, proj, fc1, fc2 of block l in the layer table */
        prev = INFINITY;
        for (int n = 0; n < F; n++) {
            double s = group_rows(sc[q + 2], D, n) + group_cols(sc[q + 3], D, F, n);
            CHECKF(s <= prev * (1 + 1e-9), "block %d mlp unit %d: %g after %g", l, n, s, prev);
            prev = s;
        }
        for (int h = 0; h < H; h++) {
            double pq = INFINITY, pv = INFINITY;
            for (int j = 0; j < hd; j++) {
                double sq = group_rows(sc[q], D, h * hd + j) + group_rows(sc[q], D, D + h * hd + j);
                double sv = group_rows(sc[q], D, 2 * D + h * hd + j) + group_cols(sc[q + 1], D, D, h * hd + j);
                CHECKF(sq <= pq * (1 + 1e-9), "block %d head %d qk %d", l, h, j);
                CHECKF(sv <= pv * (1 + 1e-9), "block %d head %d v %d", l, h, j);
                pq = sq, pv = sv;
            }
        }
    }
    for (int i = 0; i < nl; i++) free(sc[i]);
    lpv_model_free(m);
}

/* equal scores give the identity; a pruned (BSR) model is refused */
static void test_edges(void) {
    lpv_model *m = tiny(5, 0);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    const float *sc[LPV_MAX_LAYERS] = {0};
    float *ones = malloc(sizeof(float) * 128 * 128);
    for (int e = 0; e < 128 * 128; e++) ones[e] = 1;
    for (int i = 0; i < nl; i++)
        if (refs[i].block >= 0) sc[i] = ones;
    lpv_perm p;
    lpv_err err;
    CHECK_OK(lpv_perm_init(&p, &m->cfg, &err), &err);
    CHECK_OK(lpv_perm_by_importance(m, sc, &p, &err), &err);
    CHECK(lpv_perm_is_identity(&p));
    uint8_t mask[4 * 4];
    memset(mask, 1, sizeof mask);
    CHECK_OK(lpv_model_sparsify(m, &m->blocks[0].proj, 16, 16, mask, "blocks.0.attn.proj", &err), &err);
    CHECK(lpv_model_permute(m, &p, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "blocks.0.attn.proj") != NULL, "message: %s", err.msg);
    lpv_perm_free(&p);
    free(ones);
    lpv_model_free(m);
}

int main(void) {
    lpv_threads_set(2);
    test_function_preserved(0);
    test_function_preserved(1);
    test_importance_sort();
    test_edges();
    return test_finish("test_permute");
}
