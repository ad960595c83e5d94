/*
 * test_reconstruct.c — model-level reconstruction on a random model and the
 * committed mini ImageFolder: the tapped input statistics equal the inputs
 * each linear really sees; least-squares updates lower every layer's output
 * error below masking alone; and the pruned model's outputs move toward the
 * dense model's: KL(masked) > KL(lsq) and sequential refitting (dense targets
 * from the pruned model's own inputs) is no worse than independent refits;
 * block tuning lowers KL further, and when the refit's target has drifted
 * (prune --steps), tuning towards the dense model undoes the drift.
 */
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/loader.h"
#include "lpvit/reconstruct.h"
#include "lpvit/refine.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

static lpv_model *model(void) {
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 64, c.depth = 3, c.heads = 2, c.mlp = 128, c.patch = 16, c.img = 48, c.chans = 3, c.classes = 1000;
    c.n_prefix = 1, c.n_outputs = 1;
    lpv_model *m;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 21, &err), &err);
    /* larger weights than timm's init so pruning visibly changes the outputs */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++)
        for (int64_t q = 0; q < (int64_t)refs[i].lin->out * refs[i].lin->in; q++) refs[i].lin->w[q] *= 5;
    return m;
}

typedef struct {
    int layer;
    double *H; /* double reference of Σ x xᵀ for one layer */
    int in;
} ref_tap;

static void tap_ref(void *ctx, int layer, const float *X, int ld, int ncols) {
    ref_tap *r = ctx;
    if (layer != r->layer) return;
    for (int i = 0; i < r->in; i++)
        for (int j = 0; j < r->in; j++) {
            double s = 0;
            for (int t = 0; t < ncols; t++) s += (double)X[(int64_t)i * ld + t] * X[(int64_t)j * ld + t];
            r->H[i * r->in + j] += s;
        }
}

static void tap_count(void *ctx, int layer, const float *X, int ld, int ncols) {
    (void)X, (void)ld, (void)ncols;
    ((int *)ctx)[layer]++;
}

/* ws.tap_stop: a block stops right after tapping that layer, before anything writes the stream */
static void test_tap_stop(const lpv_model *m, const float *x, int M) {
    lpv_workspace ws;
    lpv_err err;
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, M, &err), &err);
    CHECK(ws.tap_stop == -1);
    CHECK_OK(lpv_forward_begin(m, &ws, x, M, &err), &err);
    size_t bytes = sizeof(float) * (size_t)m->cfg.dim * (size_t)lpv_round16(M * m->cfg.n_tokens);
    float *x0 = malloc(bytes);
    memcpy(x0, ws.x, bytes);
    int count[LPV_MAX_LAYERS] = {0};
    ws.tap = tap_count, ws.tap_ctx = count, ws.tap_stop = 2; /* block 0's proj input */
    lpv_forward_block(m, &ws, 0, M);
    CHECK(count[1] == 1 && count[2] == 1 && count[3] == 0 && count[4] == 0);
    CHECK(memcmp(x0, ws.x, bytes) == 0); /* proj and fc2 (the only writers of the stream) never ran */
    ws.tap_stop = -1;
    lpv_forward_block(m, &ws, 0, M);
    CHECK(count[3] == 1 && count[4] == 1 && memcmp(x0, ws.x, bytes) != 0);
    free(x0);
    lpv_workspace_free(&ws);
}

/* KL of m against dense on the dataset's images. */
static double kl_of(const lpv_model *m, const float *dense_logits, const float *x, int M) {
    lpv_workspace ws;
    lpv_err err;
    float *lg = malloc(sizeof(float) * (size_t)M * 1000);
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, M, &err), &err);
    CHECK_OK(lpv_forward_all(m, &ws, x, M, lg, &err), &err);
    double kl = lpv_mean_kl(dense_logits, lg, M, 1000);
    lpv_workspace_free(&ws);
    free(lg);
    return kl;
}

int main(void) {
    lpv_threads_set(2);
    lpv_err err;
    lpv_synsets syn;
    lpv_dataset ds;
    lpv_preproc pp;
    test_mini_set(&ds, &syn, &pp, 48);
    lpv_model *m = model(), *dense = model();
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);

    /* statistics: the fc2 input of block 1 against a double reference accumulated by a tap */
    lpv_model_stats s;
    memset(&s, 0, sizeof s);
    for (int i = 1; i < n - 1; i++) s.want[i] = 1;
    CHECK_OK(lpv_collect_input_stats(m, &ds, &pp, 5, NULL, &s, &err), &err);
    CHECK(s.images == ds.n && s.want[8] && s.st[8].in == 128);
    ref_tap rt = {8, calloc(128 * 128, sizeof(double)), 128};
    int M;
    float *x = test_all_images(&ds, &pp, &M), *dl = malloc(sizeof(float) * (size_t)M * 1000);
    lpv_workspace ws;
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, M, &err), &err);
    ws.tap = tap_ref, ws.tap_ctx = &rt;
    CHECK_OK(lpv_forward_all(m, &ws, x, M, dl, &err), &err);
    ws.tap = NULL;
    double e = 0, mx = 0;
    for (int i = 0; i < 128; i++)
        for (int j = i; j < 128; j++) {
            e = fmax(e, fabs(s.st[8].H[i * 128 + j] - rt.H[i * 128 + j]));
            mx = fmax(mx, fabs(rt.H[i * 128 + j]));
        }
    CHECKF(e <= 1e-4 * mx, "tapped H differs: %g of %g", e, mx);
    free(rt.H);
    lpv_workspace_free(&ws);
    test_tap_stop(m, x, M);

    /* random 50% block masks on the block linears */
    int R = 16, C = 16;
    uint8_t *masks[LPV_MAX_LAYERS] = {0};
    lpv_rng r;
    lpv_rng_seed(&r, 3);
    for (int i = 1; i < n - 1; i++) {
        int nb = lpv_nblocks(refs[i].lin->out, refs[i].lin->in, R, C);
        masks[i] = malloc((size_t)nb);
        for (int q = 0; q < nb; q++) masks[i][q] = lpv_rng_uniform(&r) < 0.5;
    }
    /* a non-finite statistic fails the non-sequential refit cleanly: its error path once leaked the copy of
       the dense weights (ASan's leak check, scripts/test.sh, catches a return that skips the free) */
    {
        lpv_model *p = model();
        float keep = s.st[3].H[5];
        s.st[3].H[5] = NAN;
        lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 0, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 0, .head_damp = 0};
        lpv_reconstruct_info info;
        CHECK(lpv_reconstruct(p, dense, masks, R, C, &s, &ds, &pp, &o, &info, &err) == LPV_E_DATA &&
              strstr(err.msg, "not finite"));
        s.st[3].H[5] = keep;
        lpv_model_free(p);
    }
    double kl[5];
    for (int mode = 0; mode < 5; mode++) { /* masked, bias, lsq, lsq sequential, the same + block tuning */
        lpv_model *p = model();
        lpv_reconstruct_opts o = {.update = mode == 0 ? LPV_UPDATE_NONE : mode == 1 ? LPV_UPDATE_BIAS : LPV_UPDATE_LSQ, .sequential = mode >= 3, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 0, .head_damp = 0};
        if (mode == 4) o.tune.epochs = 10, o.tune.batch = 2, o.tune.lr = 1e-3f;
        lpv_reconstruct_info info;
        CHECK_OK(lpv_reconstruct(p, dense, masks, R, C, &s, &ds, &pp, &o, &info, &err), &err);
        if (mode == 4) { /* every block tuned, none ends worse than its refit */
            CHECKF(info.tuned_blocks == p->cfg.depth, "tuned %d of %d blocks", info.tuned_blocks, p->cfg.depth);
            for (int l = 0; l < info.tuned_blocks; l++) {
                CHECKF(info.tune_after[l] <= info.tune_before[l], "block %d: tuned error %g above refit %g", l,
                       info.tune_after[l], info.tune_before[l]);
                printf("block %d: relative error refit %.4g, tuned %.4g\n", l, info.tune_before[l], info.tune_after[l]);
            }
        }
        if (mode == 2)
            for (int i = 1; i < n - 1; i++)
                CHECKF(info.err_updated[i] < info.err_masked[i], "%s: lsq error %g not below masked %g", refs[i].name,
                       info.err_updated[i], info.err_masked[i]);
        /* pruned blocks are exactly zero */
        lpv_layer_ref pr[LPV_MAX_LAYERS];
        lpv_model_layers(p, pr, LPV_MAX_LAYERS);
        int zeros_ok = 1;
        for (int i = 1; i < n - 1; i++) {
            int nbc = (pr[i].lin->in + C - 1) / C;
            for (int rr = 0; rr < pr[i].lin->out; rr++)
                for (int cc = 0; cc < pr[i].lin->in; cc++)
                    if (!masks[i][(rr / R) * nbc + cc / C]) zeros_ok &= pr[i].lin->w[(int64_t)rr * pr[i].lin->in + cc] == 0;
        }
        CHECK(zeros_ok);
        kl[mode] = kl_of(p, dl, x, M);
        printf("mode %d: KL to dense %.5g\n", mode, kl[mode]);
        lpv_model_free(p);
    }
    CHECKF(kl[2] < kl[0], "lsq KL %g not below masked %g", kl[2], kl[0]);
    CHECKF(kl[4] < kl[3], "block tuning KL %g not below the sequential refit's %g", kl[4], kl[3]);
    CHECKF(kl[3] <= kl[2] * 1.05, "sequential KL %g worse than independent %g", kl[3], kl[2]);
    /* the heads the masks leave dense: refit (least squares over all their columns) to the dense logits from
       the pruned model's final features; off, the head is left bit for bit as it was */
    {
        double klh[2];
        for (int v = 0; v < 2; v++) {
            lpv_model *p = model();
            lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = v, .head_damp = 0.01};
            lpv_reconstruct_info info;
            CHECK_OK(lpv_reconstruct(p, dense, masks, R, C, &s, &ds, &pp, &o, &info, &err), &err);
            klh[v] = kl_of(p, dl, x, M);
            CHECK(info.heads_refit == v);
            if (v) {
                printf("heads refit: logits' relative error %.4g -> %.4g\n", info.logit_err_before, info.logit_err_after);
                CHECKF(info.logit_err_after < 0.9 * info.logit_err_before, "head refit: logit error %g, was %g",
                       info.logit_err_after, info.logit_err_before);
            } else {
                CHECK(memcmp(p->head.w, dense->head.w, sizeof(float) * (size_t)p->head.out * p->head.in) == 0);
                CHECK(memcmp(p->head.b, dense->head.b, sizeof(float) * (size_t)p->head.out) == 0);
            }
            lpv_model_free(p);
        }
        printf("sequential lsq: KL to dense %.5g, with the head refit %.5g\n", klh[0], klh[1]);
        CHECKF(klh[1] < klh[0], "head refit: KL %g not below %g", klh[1], klh[0]);
    }
    /* one dense pass per block, and the pruned passes going on from each other (capture_bytes: only the next
       stream, then it and the pruned state, then all of it; then all of it with block tuning, which rewrites a
       block after the state was kept) give the weights of a pass per layer, bit for bit */
    for (int budget = 0; budget < 4; budget++) {
        lpv_model *a = model(), *b2 = model();
        lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(),
                                  .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 1};
        int cap = budget == 3 ? 2 : budget; /* 0: the next stream, 1: + the pruned state, 2: all */
        if (budget == 3) o.tune.epochs = 1;
        lpv_reconstruct_info ia, ib;
        CHECK_OK(lpv_reconstruct(a, dense, masks, R, C, &s, &ds, &pp, &o, &ia, &err), &err);
        int64_t stream = (int64_t)sizeof(float) * a->cfg.dim * lpv_round16(5 * a->cfg.n_tokens) * ((M + 4) / 5);
        o.capture_bytes = cap == 2 ? (int64_t)1 << 40 : (cap + 1) * stream;
        CHECK_OK(lpv_reconstruct(b2, dense, masks, R, C, &s, &ds, &pp, &o, &ib, &err), &err);
        CHECK(budget < 3 || (ia.tuned_blocks > 0 && ib.tuned_blocks == ia.tuned_blocks));
        /* all of it: the next stream, the pruned state, proj's and fc1's inputs, and for fc2 (projected
           statistics) W x and Σ x per chunk instead of its mlp-wide input */
        int64_t all = 5 * stream + (int64_t)sizeof(double) * a->cfg.mlp * ((M + 4) / 5);
        CHECKF(ia.capture_bytes == 0 && ib.capture_bytes == (cap == 2 ? all : (cap + 1) * stream),
               "capture kept %lld bytes (budget %d, one stream %lld)", (long long)ib.capture_bytes, budget, (long long)stream);
        lpv_layer_ref ra[LPV_MAX_LAYERS], rb[LPV_MAX_LAYERS];
        int nn = lpv_model_layers(a, ra, LPV_MAX_LAYERS);
        lpv_model_layers(b2, rb, LPV_MAX_LAYERS);
        for (int i = 0; i < nn; i++) {
            const lpv_linear *la = ra[i].lin, *lb = rb[i].lin;
            CHECKF(memcmp(la->w, lb->w, sizeof(float) * (size_t)la->out * la->in) == 0 &&
                       (!la->b || memcmp(la->b, lb->b, sizeof(float) * (size_t)la->out) == 0),
                   "%s: one dense pass per block (budget %d) changed the refit", ra[i].name, budget);
        }
        lpv_model_free(a), lpv_model_free(b2);
    }
    /* the refit layers packed as BSR for their block's later passes: the weights of dense passes within float
       rounding (another summation order), and no pack left behind */
    {
        lpv_model *a = model(), *b2 = model();
        lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(),
                                  .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 1,
                                  .capture_bytes = (int64_t)1 << 40};
        lpv_reconstruct_info ia, ib;
        CHECK_OK(lpv_reconstruct(a, dense, masks, R, C, &s, &ds, &pp, &o, &ia, &err), &err);
        o.no_pack = 1;
        CHECK_OK(lpv_reconstruct(b2, dense, masks, R, C, &s, &ds, &pp, &o, &ib, &err), &err);
        lpv_layer_ref ra[LPV_MAX_LAYERS], rb[LPV_MAX_LAYERS];
        int nn = lpv_model_layers(a, ra, LPV_MAX_LAYERS), same = 1;
        lpv_model_layers(b2, rb, LPV_MAX_LAYERS);
        double worst = 0;
        for (int i = 0; i < nn; i++) {
            const lpv_linear *la = ra[i].lin, *lb = rb[i].lin;
            double d = 0, w = 0;
            for (int64_t q = 0; q < (int64_t)la->out * la->in; q++)
                d += ((double)la->w[q] - lb->w[q]) * ((double)la->w[q] - lb->w[q]), w += (double)lb->w[q] * lb->w[q];
            worst = fmax(worst, sqrt(d / fmax(w, 1e-30)));
            same &= memcmp(la->w, lb->w, sizeof(float) * (size_t)la->out * la->in) == 0;
            CHECKF(!la->bsr && !lb->bsr, "%s: a refit pack was left on the layer", ra[i].name);
        }
        printf("refit with BSR passes vs dense passes: weights within %.3g (relative Frobenius)\n", worst);
        /* the least squares amplify a float difference in their inputs by their conditioning: 1.1e-4 here */
        CHECKF(worst < 1e-3, "BSR passes moved the refit by %g", worst);
        /* the packed path ran: its summation order differs somewhere (the reference ISA packs nothing) */
        CHECK(lpv_refit_packs_pay() ? !same : same);
        lpv_model_free(a), lpv_model_free(b2);
    }
    /* the sequential refit's target is the dense model's layer on the dense inputs, not what m holds
       (prune --steps refits a model that an earlier step already pruned and refit): with every block
       kept, a model whose weights were all perturbed is brought back to the dense function */
    {
        lpv_model *p = model();
        lpv_layer_ref pr[LPV_MAX_LAYERS];
        lpv_model_layers(p, pr, LPV_MAX_LAYERS);
        for (int i = 1; i < n - 1; i++) {
            int nb = ((refs[i].lin->out + R - 1) / R) * ((refs[i].lin->in + C - 1) / C);
            memset(masks[i], 1, (size_t)nb);
            for (int64_t q = 0; q < (int64_t)pr[i].lin->out * pr[i].lin->in; q++)
                pr[i].lin->w[q] *= 1.0f + 0.5f * (float)(lpv_rng_uniform(&r) - 0.5);
        }
        double kl_perturbed = kl_of(p, dl, x, M);
        lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 0, .head_damp = 0};
        lpv_reconstruct_info info;
        CHECK_OK(lpv_reconstruct(p, dense, masks, R, C, &s, &ds, &pp, &o, &info, &err), &err);
        double kl_refit = kl_of(p, dl, x, M);
        printf("perturbed: KL to dense %.5g, after the sequential refit %.5g\n", kl_perturbed, kl_refit);
        CHECKF(kl_refit < 0.01 * kl_perturbed, "refit of a perturbed model: KL %g, was %g", kl_refit, kl_perturbed);
        lpv_model_free(p);
    }
    /* prune --steps: the refit's target (`dense` here) is the step before, a model that already drifted
       from the user's; the tuning's target is the user's model, so the drift is not locked in */
    {
        lpv_model *prev = model(); /* stands for the previous step: the dense model, perturbed */
        lpv_layer_ref vr[LPV_MAX_LAYERS];
        lpv_model_layers(prev, vr, LPV_MAX_LAYERS);
        for (int i = 1; i < n - 1; i++) {
            int nb = ((refs[i].lin->out + R - 1) / R) * ((refs[i].lin->in + C - 1) / C);
            for (int q = 0; q < nb; q++) masks[i][q] = lpv_rng_uniform(&r) < 0.7;
            for (int64_t q = 0; q < (int64_t)vr[i].lin->out * vr[i].lin->in; q++)
                vr[i].lin->w[q] *= 1.0f + 0.6f * (float)(lpv_rng_uniform(&r) - 0.5);
        }
        double klt[2];
        for (int v = 0; v < 2; v++) {
            lpv_model *p = model();
            lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .final_target = v ? dense : NULL, .batch = 5};
            o.tune.epochs = 10, o.tune.batch = 2, o.tune.lr = 1e-3f;
            lpv_reconstruct_info info;
            CHECK_OK(lpv_reconstruct(p, prev, masks, R, C, &s, &ds, &pp, &o, &info, &err), &err);
            klt[v] = kl_of(p, dl, x, M);
            lpv_model_free(p);
        }
        printf("refit towards a drifted model: KL to dense %.5g tuning towards it, %.5g towards the dense model\n", klt[0],
               klt[1]);
        CHECKF(klt[1] < 0.8 * klt[0], "tuning towards the dense model: KL %g, towards the drifted one %g", klt[1], klt[0]);
        /* the heads, without tuning, follow the final target too */
        for (int v = 0; v < 2; v++) {
            lpv_model *p = model();
            lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .final_target = v ? dense : NULL, .batch = 5, .refit_heads = 1, .head_damp = 0.01};
            lpv_reconstruct_info info;
            CHECK_OK(lpv_reconstruct(p, prev, masks, R, C, &s, &ds, &pp, &o, &info, &err), &err);
            klt[v] = kl_of(p, dl, x, M);
            lpv_model_free(p);
        }
        printf("heads refit towards the drifted model: KL to dense %.5g, towards the dense model %.5g\n", klt[0], klt[1]);
        CHECKF(klt[1] < 0.5 * klt[0], "heads towards the dense model: KL %g, towards the drifted one %g", klt[1], klt[0]);
        /* the same from a record: prune --steps without tuning records the input model's heads (their inputs,
           weights and logits) in step 1, whose target it is, instead of holding that model and running it again
           in the final step; the final model must not change */
        {
            lpv_head_targets rec;
            memset(&rec, 0, sizeof rec);
            lpv_model *q = model(), *pa = model(), *pb = model();
            lpv_reconstruct_opts o1 = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .record_heads = &rec};
            lpv_reconstruct_opts oa = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .final_target = dense, .batch = 5, .refit_heads = 1, .head_damp = 0.01};
            lpv_reconstruct_opts ob = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .batch = 5, .refit_heads = 1, .head_damp = 0.01, .head_targets = &rec};
            lpv_reconstruct_info i1, ia, ib;
            CHECK_OK(lpv_reconstruct(q, dense, masks, R, C, &s, &ds, &pp, &o1, &i1, &err), &err);
            CHECK(rec.images == ds.n && rec.outputs == 1 && rec.dim == dense->cfg.dim && i1.heads_refit == 0);
            CHECK_OK(lpv_reconstruct(pa, prev, masks, R, C, &s, &ds, &pp, &oa, &ia, &err), &err);
            CHECK_OK(lpv_reconstruct(pb, prev, masks, R, C, &s, &ds, &pp, &ob, &ib, &err), &err);
            CHECK(ia.heads_refit == 1 && ib.heads_refit == 1);
            double dmax = 0, wmax = 0;
            for (int64_t q2 = 0; q2 < (int64_t)pa->head.out * pa->head.in; q2++) {
                double d = fabs((double)pa->head.w[q2] - pb->head.w[q2]);
                dmax = d > dmax ? d : dmax, wmax = fabs(pa->head.w[q2]) > wmax ? fabs(pa->head.w[q2]) : wmax;
            }
            for (int q2 = 0; q2 < pa->head.out; q2++) {
                double d = fabs((double)pa->head.b[q2] - pb->head.b[q2]);
                dmax = d > dmax ? d : dmax;
            }
            printf("heads from a record: max |Δ| %.3g (max |w| %.3g), logits' error %.6g -> %.6g vs %.6g -> %.6g\n", dmax,
                   wmax, ib.logit_err_before, ib.logit_err_after, ia.logit_err_before, ia.logit_err_after);
            CHECKF(dmax <= 1e-5 * wmax, "heads from a record differ by %g (max |w| %g)", dmax, wmax);
            CHECK(fabs(ia.logit_err_before - ib.logit_err_before) <= 1e-6 * ia.logit_err_before);
            CHECK(fabs(ia.logit_err_after - ib.logit_err_after) <= 1e-5 * ia.logit_err_after);
            lpv_layer_ref ar[LPV_MAX_LAYERS], br[LPV_MAX_LAYERS];
            lpv_model_layers(pa, ar, LPV_MAX_LAYERS), lpv_model_layers(pb, br, LPV_MAX_LAYERS);
            for (int i = 0; i < n - 1; i++) /* the blocks' refit is the same computation */
                CHECK(memcmp(ar[i].lin->w, br[i].lin->w, sizeof(float) * (size_t)ar[i].lin->out * ar[i].lin->in) == 0);
            /* a record of other images is refused */
            rec.images--;
            lpv_model *c2 = model();
            CHECK(lpv_reconstruct(c2, prev, masks, R, C, &s, &ds, &pp, &ob, &ib, &err) == LPV_E_ARG);
            CHECKF(strstr(err.msg, "recorded head targets") != NULL, "message: %s", err.msg);
            rec.images++;
            lpv_head_targets_free(&rec);
            lpv_model_free(q), lpv_model_free(pa), lpv_model_free(pb), lpv_model_free(c2);
        }
        /* a target of another shape is refused */
        lpv_config c2 = dense->cfg;
        c2.mlp = 64;
        lpv_model *other;
        CHECK_OK(lpv_model_random(&other, &c2, 3, &err), &err);
        lpv_model *p = model();
        lpv_reconstruct_opts o = {.update = LPV_UPDATE_LSQ, .sequential = 1, .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .final_target = other, .batch = 5};
        o.tune.epochs = 1;
        lpv_reconstruct_info info;
        CHECK(lpv_reconstruct(p, prev, masks, R, C, &s, &ds, &pp, &o, &info, &err) == LPV_E_ARG);
        CHECK(strstr(err.msg, "target") != NULL);
        lpv_model_free(p), lpv_model_free(other), lpv_model_free(prev);
    }
    for (int i = 0; i < n; i++) free(masks[i]);
    free(x), free(dl);
    lpv_model_stats_free(&s);
    lpv_model_free(m), lpv_model_free(dense);
    lpv_dataset_free(&ds);
    lpv_synsets_free(&syn);
    return test_finish("test_reconstruct");
}
