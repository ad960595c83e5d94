/* reconstruct.c — model-level layer-wise reconstruction (see include/lpvit/reconstruct.h). */
#include "lpvit/reconstruct.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/forward.h"
#include "lpvit/loader.h"
#include "lpvit/log.h"

LPV_ENUM_FUNCS(lpv_update_kind, lpv_update_name, lpv_update_parse, LPV_UPDATE_LIST, LPV_UPDATE_COUNT, "update")

/* ---- statistics of the dense model ---- */

/* The tap's context: the statistics, and for the prefix tokens' weight each layer's tokens per image and two
   (max in, images per pass x prefix tokens) scratch arrays. */
typedef struct {
    lpv_model_stats *s;
    int T, npre, tokens[LPV_MAX_LAYERS];
    float *cols, *scaled;
} stats_ctx;

static void stats_tap(void *ctx, int layer, const float *X, int ld, int ncols) {
    stats_ctx *c = ctx;
    lpv_model_stats *s = c->s;
    if (layer >= s->n || !s->want[layer]) return;
    lpv_stats_accumulate(&s->st[layer], X, ld, ncols);
    if (s->prefix_weight <= 1 || c->tokens[layer] != c->T || ncols % c->T) return;
    /* the prefix columns again, w - 1 more times: column b·T + p is image b's prefix token p */
    int B = ncols / c->T, np = B * c->npre, in = s->st[layer].in;
    for (int i = 0; i < in; i++)
        for (int b = 0; b < B; b++)
            for (int p = 0; p < c->npre; p++)
                c->cols[(int64_t)i * np + b * c->npre + p] = X[(int64_t)i * ld + (int64_t)b * c->T + p];
    lpv_stats_accumulate_weighted(&s->st[layer], c->cols, np, np, s->prefix_weight - 1, c->scaled);
}

void lpv_model_stats_free(lpv_model_stats *s) {
    for (int i = 0; i < s->n; i++)
        if (s->want[i]) lpv_stats_free(&s->st[i]);
}

/* The forward passes over this rank's share (the whole list with one rank), tap called on every linear input. */
static lpv_status tap_pass_share(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch,
                                 lpv_skips *skips, lpv_tap_fn tap, void *ctx, const char *what, int64_t *images,
                                 lpv_err *err) {
    int b = batch < ds->n ? batch : ds->n;
    lpv_workspace ws;
    LPV_TRY(lpv_workspace_init(&ws, &m->cfg, b, err));
    ws.tap = tap, ws.tap_ctx = ctx;
    float *logits = malloc(sizeof(float) * (size_t)b * m->cfg.classes);
    lpv_loader *L = NULL;
    lpv_loader_opts lo = {b, 1, 0, skips};
    lpv_status st = logits ? lpv_loader_open(&L, ds, pp, &lo, err) : lpv_fail(err, LPV_E_OOM, "out of memory");
    lpv_progress pr;
    lpv_progress_begin(&pr, ds->n, what);
    long done = 0;
    while (st == LPV_OK) {
        lpv_batch bt;
        if ((st = lpv_loader_next(L, &bt, err)) != LPV_OK || bt.count == 0) break;
        done += bt.count;
        if (bt.n == 0) continue;
        if ((st = lpv_forward(m, &ws, bt.x, bt.n, logits, err)) != LPV_OK) break;
        *images += bt.n;
        lpv_progress_update(&pr, done, NULL);
    }
    if (st == LPV_OK) st = lpv_loader_verdict(L, what, err);
    if (st == LPV_OK) lpv_progress_end(&pr);
    lpv_loader_close(L);
    free(logits);
    lpv_workspace_free(&ws);
    return st;
}

lpv_status lpv_tap_pass(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch, lpv_skips *skips,
                        lpv_tap_fn tap, void *ctx, const char *what, int64_t *images, lpv_err *err) {
    *images = 0;
    lpv_dataset mine;
    int first;
    lpv_status st = lpv_dataset_share(&mine, ds, &first, err);
    int viewed = st == LPV_OK;
    if (st == LPV_OK && mine.n > 0) st = tap_pass_share(m, &mine, pp, batch, skips, tap, ctx, what, images, err);
    if (viewed) lpv_dataset_view_free(&mine);
    return lpv_dist_agree(st, err); /* every rank gets here, whatever happened to it */
}

/* The statistics' tap over this rank's share. */
static lpv_status input_stats_share(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch,
                                    lpv_skips *skips, lpv_model_stats *s, lpv_err *err) {
    int b = batch < ds->n ? batch : ds->n;
    stats_ctx c = {s, m->cfg.n_tokens, m->cfg.n_prefix, {0}, NULL, NULL};
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS), in_max = 1;
    for (int i = 0; i < nl; i++) {
        c.tokens[i] = refs[i].tokens;
        if (refs[i].lin->in > in_max) in_max = refs[i].lin->in;
    }
    if (s->prefix_weight > 1) {
        size_t n = (size_t)in_max * b * c.npre + 1;
        c.cols = malloc(sizeof(float) * n), c.scaled = malloc(sizeof(float) * n);
        if (!c.cols || !c.scaled) {
            free(c.cols), free(c.scaled);
            return lpv_fail(err, LPV_E_OOM, "out of memory");
        }
    }
    lpv_status st = lpv_tap_pass(m, ds, pp, batch, skips, stats_tap, &c, "input statistics", &s->images, err);
    free(c.cols), free(c.scaled);
    return st;
}

/* Every rank's sums added (dist.h). */
static lpv_status input_stats_sum_ranks(lpv_model_stats *s, lpv_err *err) {
    for (int i = 0; i < s->n; i++)
        if (s->want[i]) LPV_TRY(lpv_stats_sum_ranks(&s->st[i], err));
    int64_t n = s->images;
    LPV_TRY(lpv_dist_sum_i64(&n, 1, err));
    s->images = (int)n;
    return LPV_OK;
}

lpv_status lpv_collect_input_stats(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch,
                                   lpv_skips *skips, lpv_model_stats *s, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    s->n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    s->images = 0;
    for (int i = 0; i < s->n; i++) {
        memset(&s->st[i], 0, sizeof s->st[i]);
        if (!s->want[i]) continue;
        lpv_status st = lpv_stats_init(&s->st[i], refs[i].lin->in, 0, err);
        if (st) {
            s->want[i] = 0;
            lpv_model_stats_free(s);
            return st;
        }
    }
    lpv_status st = input_stats_share(m, ds, pp, batch, skips, s, err); /* collective */
    if (st == LPV_OK) st = input_stats_sum_ranks(s, err);
    if (st) lpv_model_stats_free(s);
    return st;
}

/* ---- one layer ---- */

/* Rank 0's weights of L on every rank (dist.h). The ranks refit from the same sums, so they agree unless their
   CPUs round differently; they must hold one model all the same. */
static lpv_status bcast_linear(lpv_linear *L, lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    LPV_TRY(lpv_dist_bcast(L->w, sizeof(float) * (size_t)L->out * (size_t)L->in, 0, err));
    return L->b ? lpv_dist_bcast(L->b, sizeof(float) * (size_t)L->out, 0, err) : LPV_OK;
}

lpv_status lpv_reconstruct_layer(float *W, float *b, int out, int in, int R, int C, const uint8_t *mask,
                                 const lpv_layer_stats *st, lpv_update_kind u, const lpv_recon_opts *o,
                                 lpv_recon_info *info, const char *name, lpv_err *err) {
    if (u == LPV_UPDATE_NONE) {
        lpv_mask_apply(W, out, in, R, C, mask);
        return LPV_OK;
    }
    size_t nw = (size_t)out * (size_t)in;
    float *W0 = malloc(sizeof(float) * nw);
    double *mx = malloc(sizeof(double) * (size_t)in), *mxt = malloc(sizeof(double) * (size_t)in);
    lpv_status s = (!W0 || !mx || !mxt) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    if (!s) {
        memcpy(W0, W, sizeof(float) * nw);
        if (u == LPV_UPDATE_LSQ && st->P) /* P was accumulated with these weights (W G: the refit's target) */
            s = lpv_recon_lsq_projected(W, out, in, R, C, mask, st->H, st->P, o, info, name, err);
        else if (u == LPV_UPDATE_LSQ) s = lpv_recon_lsq(W, out, in, R, C, mask, st->H, st->G, o, info, name, err);
        else if (u == LPV_UPDATE_OBS) s = lpv_recon_obs(W, out, in, R, C, mask, st->H, o, info, name, err);
        else lpv_mask_apply(W, out, in, R, C, mask);
    }
    if (!s && b) { /* the mean output error to zero: b += W0 E[x] - W E[x~] */
        if (st->sum_dense) {
            lpv_stats_mean(st, mxt, mx);
            lpv_recon_bias(b, W0, W, out, in, mx, mxt);
        } else {
            lpv_stats_mean(st, mx, NULL);
            lpv_recon_bias(b, W0, W, out, in, mx, NULL);
        }
    }
    free(W0), free(mx), free(mxt);
    return s;
}

static void note(lpv_reconstruct_info *ri, const lpv_recon_info *r) {
    if (r->damp > ri->max_damp) ri->max_damp = r->damp;
    ri->retried += r->retried;
}

/* ---- non-sequential: every layer from the dense statistics ---- */

static lpv_status reconstruct_independent(lpv_model *m, uint8_t *const *masks, int R, int C, const lpv_model_stats *stats,
                                          const lpv_reconstruct_opts *o, lpv_reconstruct_info *ri, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        if (!masks[i]) continue;
        lpv_linear *L = refs[i].lin;
        if (o->update != LPV_UPDATE_NONE && (!stats || !stats->want[i]))
            return lpv_fail(err, LPV_E_ARG, "no input statistics for layer '%s'", refs[i].name);
        const lpv_layer_stats *st = o->update != LPV_UPDATE_NONE ? &stats->st[i] : NULL;
        float *W0 = NULL;
        double e0 = 0;
        lpv_status s = LPV_OK;
        if (st) { /* relative output error before and after, for the report */
            W0 = malloc(sizeof(float) * (size_t)L->out * L->in);
            if (!W0) return lpv_fail(err, LPV_E_OOM, "out of memory");
            memcpy(W0, L->w, sizeof(float) * (size_t)L->out * L->in);
            s = lpv_output_energy(W0, L->out, L->in, st->H, &e0, err);
        }
        lpv_recon_info info = {0, 0, 0};
        if (!s)
            s = lpv_reconstruct_layer(L->w, L->b, L->out, L->in, R, C, masks[i], st, o->update, &o->recon, &info,
                                      refs[i].name, err);
        note(ri, &info);
        if (!s && W0) {
            int64_t nw = (int64_t)L->out * L->in;
            float *d = malloc(sizeof(float) * (size_t)nw);
            double eu = 0, em = 0;
            if (d) {
                for (int64_t q = 0; q < nw; q++) d[q] = W0[q] - L->w[q];
                s = lpv_output_energy(d, L->out, L->in, st->H, &eu, err);
                memcpy(d, W0, sizeof(float) * (size_t)nw);
                lpv_mask_apply(d, L->out, L->in, R, C, masks[i]);
                for (int64_t q = 0; q < nw; q++) d[q] = W0[q] - d[q];
                if (!s) s = lpv_output_energy(d, L->out, L->in, st->H, &em, err);
                free(d);
                ri->err_masked[i] = e0 > 0 ? em / e0 : 0;
                ri->err_updated[i] = e0 > 0 ? eu / e0 : 0;
            }
        }
        free(W0);
        if ((s = lpv_dist_agree(s, err)) != LPV_OK || (s = bcast_linear(L, err)) != LPV_OK) return s;
    }
    return LPV_OK;
}

/* ---- sequential: block by block on cached residual streams ---- */

typedef struct {
    int first, count;      /* layers [first, first + count) are captured / accumulated */
    int slot0;             /* buffer of layer `first`: its position in its block (fc2's input is the widest) */
    float *buf[4];         /* dense mode: copies of those layers' inputs */
    int ld[4], ncols[4];
    lpv_model_stats *cross;/* cross mode: accumulate G (or P), H~ against buf */
    const float *pw;       /* projected statistics (P = W G): the target layer's weights W (out, in) */
    float *pscratch;       /* and W X: (out, ld) */
    const double *xsum;    /* NULL, or buf holds the layer's W X already and this its Σ x (kept, fc2) */
    int capture;           /* 1: copy into buf (dense pass), 0: accumulate cross stats (pruned pass) */
    const int *active;     /* per model layer: masked (needs statistics) */
    const int *in;         /* per model layer: input features */
    int64_t rows[4];       /* floats per buffer row capacity check */
} seq_tap_ctx;

static void seq_tap(void *ctx, int layer, const float *X, int ld, int ncols) {
    seq_tap_ctx *c = ctx;
    int j = layer - c->first;
    if (j < 0 || j >= c->count || !c->active[layer]) return;
    j += c->slot0;
    if (c->capture) { /* only the valid columns: X may be a view into a wider buffer */
        int in = c->in[layer];
        for (int r = 0; r < in; r++) memcpy(c->buf[j] + (int64_t)r * ld, X + (int64_t)r * ld, sizeof(float) * (size_t)ncols);
        c->ld[j] = ld, c->ncols[j] = ncols;
    } else {
        lpv_layer_stats *st = &c->cross->st[layer];
        if (st->P && c->xsum) lpv_stats_accumulate_projected_y(st, c->buf[j], c->ld[j], c->xsum, X, ld, ncols);
        else if (st->P) lpv_stats_accumulate_projected(st, c->pw, c->buf[j], c->ld[j], X, ld, ncols, c->pscratch);
        else lpv_stats_accumulate_cross(st, c->buf[j], c->ld[j], X, ld, ncols);
    }
}

typedef struct {
    int n;        /* chunks */
    int *bsz;     /* images per chunk */
    float **xd, **xp; /* (D, round16(bsz*T)) residual streams: dense, pruned */
    float **xt;       /* the final target's stream (tuning, heads) when it is not the dense one (else NULL) */
} stream_cache;

static void cache_free(stream_cache *c) {
    for (int i = 0; i < c->n; i++) free(c->xd[i]), free(c->xp[i]), free(c->xt ? c->xt[i] : NULL);
    free(c->xd), free(c->xp), free(c->xt), free(c->bsz);
    memset(c, 0, sizeof *c);
}

/* Moves every cached chunk of one stream (cache->xd or cache->xp) through block l of m. */
static void advance_streams(const lpv_model *m, lpv_workspace *ws, int l, const stream_cache *c, float **xs, int D,
                            int T) {
    for (int i = 0; i < c->n; i++) {
        size_t bytes = sizeof(float) * (size_t)D * (size_t)lpv_round16(c->bsz[i] * T);
        memcpy(ws->x, xs[i], bytes);
        lpv_forward_block(m, ws, l, c->bsz[i]);
        memcpy(xs[i], ws->x, bytes);
    }
}

/* Refits layer i of the sequential pass from its accumulated statistics, then frees them. */
static lpv_status update_layer(lpv_layer_ref *refs, int i, const uint8_t *mask, int R, int C, lpv_model_stats *cs,
                               lpv_update_kind u, const lpv_recon_opts *ro, lpv_reconstruct_info *ri, lpv_err *err) {
    lpv_linear *L = refs[i].lin;
    lpv_recon_info info = {0, 0, 0};
    lpv_status s = lpv_reconstruct_layer(L->w, L->b, L->out, L->in, R, C, mask, &cs->st[i], u, ro, &info, refs[i].name,
                                         err);
    note(ri, &info);
    lpv_stats_free(&cs->st[i]);
    cs->want[i] = 0;
    s = lpv_dist_agree(s, err);
    return s ? s : bcast_linear(L, err);
}

/* The final logits' squared error of m (run from the pruned stream) against tgt's (from its stream ys), over
   the target logits' mean square, summed over ranks: what the heads' refit lowers; the target's logits come
   from ht when it is given. la, lb: (b, classes) scratch. */
static lpv_status logit_error(const lpv_model *m, const lpv_model *tgt, const lpv_head_targets *ht,
                              lpv_workspace *ws, const stream_cache *c, float *const *ys, float *la, float *lb,
                              double *out, lpv_err *err) {
    const lpv_config *cfg = &m->cfg;
    double se = 0, ss = 0;
    for (int i = 0, off = 0; i < c->n; off += c->bsz[i], i++) {
        int bs = c->bsz[i];
        size_t bytes = sizeof(float) * (size_t)cfg->dim * (size_t)lpv_round16(bs * cfg->n_tokens);
        if (ht) { /* recorded earlier */
            memcpy(la, ht->logits + (int64_t)off * cfg->classes, sizeof(float) * (size_t)bs * cfg->classes);
        } else {
            memcpy(ws->x, ys[i], bytes);
            lpv_forward_end(tgt, ws, bs, la);
        }
        memcpy(ws->x, c->xp[i], bytes);
        lpv_forward_end(m, ws, bs, lb);
        for (int64_t k = 0; k < (int64_t)bs * cfg->classes; k++) {
            double d = (double)lb[k] - la[k];
            se += d * d, ss += (double)la[k] * la[k];
        }
    }
    double sums[2] = {se, ss};
    LPV_TRY(lpv_dist_sum_f64(sums, 2, err));
    *out = sums[1] > 0 ? sums[0] / sums[1] : 0;
    return LPV_OK;
}

void lpv_head_targets_free(lpv_head_targets *h) {
    if (!h) return;
    free(h->x), free(h->w), free(h->b), free(h->logits);
    memset(h, 0, sizeof *h);
}

static lpv_status head_targets_alloc(lpv_head_targets *h, const lpv_config *cfg, int images, lpv_err *err) {
    lpv_head_targets_free(h);
    h->images = images, h->outputs = cfg->n_outputs, h->dim = cfg->dim, h->classes = cfg->classes;
    size_t no = (size_t)h->outputs, D = (size_t)h->dim, K = (size_t)h->classes, n = (size_t)images;
    h->x = malloc(sizeof(float) * no * D * n);
    h->w = malloc(sizeof(float) * no * K * D);
    h->b = malloc(sizeof(float) * no * K);
    h->logits = malloc(sizeof(float) * n * K);
    if (h->x && h->w && h->b && h->logits) return LPV_OK;
    lpv_head_targets_free(h);
    return lpv_fail(err, LPV_E_OOM, "out of memory recording the heads' targets of %d images", images);
}

/* Recording tap: head k's input columns (one per image) go to image `off` onward of h->x. */
typedef struct {
    lpv_head_targets *h;
    int h0, off;
} record_ctx;

static void record_tap(void *ctx, int layer, const float *X, int ld, int ncols) {
    record_ctx *r = ctx;
    int k = layer - r->h0;
    if (k < 0 || k >= r->h->outputs) return;
    for (int d = 0; d < r->h->dim; d++)
        memcpy(r->h->x + ((int64_t)k * r->h->dim + d) * r->h->images + r->off, X + (int64_t)d * ld,
               sizeof(float) * (size_t)ncols);
}

/* Runs the heads of tgt on its final stream ys and keeps what a later heads' refit needs. */
static void record_heads(const lpv_model *tgt, lpv_workspace *ws, const stream_cache *c, float *const *ys, int h0,
                         lpv_head_targets *h) {
    const lpv_config *cfg = &tgt->cfg;
    const lpv_linear *hd[2] = {&tgt->head, &tgt->head_dist};
    for (int k = 0; k < h->outputs; k++) {
        memcpy(h->w + (int64_t)k * h->classes * h->dim, hd[k]->w, sizeof(float) * (size_t)h->classes * h->dim);
        if (hd[k]->b) memcpy(h->b + (int64_t)k * h->classes, hd[k]->b, sizeof(float) * (size_t)h->classes);
        else memset(h->b + (int64_t)k * h->classes, 0, sizeof(float) * (size_t)h->classes);
    }
    record_ctx rc = {h, h0, 0};
    for (int i = 0; i < c->n; rc.off += c->bsz[i], i++) {
        memcpy(ws->x, ys[i], sizeof(float) * (size_t)cfg->dim * (size_t)lpv_round16(c->bsz[i] * cfg->n_tokens));
        ws->tap = record_tap, ws->tap_ctx = &rc;
        lpv_forward_end(tgt, ws, c->bsz[i], h->logits + (int64_t)rc.off * h->classes);
        ws->tap = NULL;
    }
}

static lpv_status check_head_targets(const lpv_head_targets *h, const lpv_config *cfg, int images, lpv_err *err) {
    if (h->images != images || h->outputs != cfg->n_outputs || h->dim != cfg->dim || h->classes != cfg->classes)
        return lpv_fail(err, LPV_E_ARG,
                        "recorded head targets are for %d images, %d heads, width %d, %d classes; expected %d, %d, %d, "
                        "%d",
                        h->images, h->outputs, h->dim, h->classes, images, cfg->n_outputs, cfg->dim, cfg->classes);
    return LPV_OK;
}

/* Mean square of the final target's block output (chunks y), over the valid columns. */
static double target_mean_square(const stream_cache *c, float *const *y, int D, int T) {
    double s = 0;
    int64_t cnt = 0;
    for (int i = 0; i < c->n; i++) {
        int N = c->bsz[i] * T, ld = lpv_round16(N);
        for (int d = 0; d < D; d++)
            for (int k = 0; k < N; k++) s += (double)y[i][(int64_t)d * ld + k] * y[i][(int64_t)d * ld + k];
        cnt += (int64_t)N * D;
    }
    return cnt ? s / (double)cnt : 0;
}

/* Block-wise tuning of block l: inputs are the pruned stream, targets the target's stream after block l. */
static lpv_status tune_block(lpv_tuner *t, lpv_model *m, int l, const stream_cache *c, uint8_t *const *masks, int R,
                             int C, lpv_reconstruct_info *ri, lpv_err *err) {
    const uint8_t *bm[4];
    for (int j = 0; j < 4; j++) bm[j] = masks[lpv_block_layer0(l) + j];
    lpv_tune_info ti;
    double t0 = lpv_now();
    float **y = c->xt ? c->xt : c->xd;
    LPV_TRY(lpv_block_tune(t, m, l, c->xp, y, c->bsz, c->n, bm, R, C, &ti, err));
    double ms = target_mean_square(c, y, m->cfg.dim, m->cfg.n_tokens);
    ri->tune_before[l] = ms > 0 ? ti.mse_before / ms : 0;
    ri->tune_after[l] = ms > 0 ? ti.mse_after / ms : 0;
    ri->tuned_blocks++;
    ri->tune_reverted += ti.reverted;
    ri->tune_seconds += lpv_now() - t0;
    return LPV_OK;
}

/* A model whose blocks run on m's cached streams (the refit's or the tuning's target, `what`): the same
   width, depth, MLP width, heads and tokens, and every masked layer dense and of m's shape. */
static lpv_status check_twin(lpv_model *m, const lpv_model *other, uint8_t *const *masks, const char *what,
                             lpv_err *err) {
    const lpv_config *a = &m->cfg, *c = &other->cfg;
    lpv_layer_ref refs[LPV_MAX_LAYERS], orefs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    if (a->dim != c->dim || a->depth != c->depth || a->mlp != c->mlp || a->heads != c->heads ||
        a->n_tokens != c->n_tokens || lpv_model_layers((lpv_model *)other, orefs, LPV_MAX_LAYERS) != n)
        return lpv_fail(err, LPV_E_ARG, "sequential reconstruction: %s has another layout", what);
    for (int i = 0; i < n; i++)
        if (masks[i] && (!orefs[i].lin->w || orefs[i].lin->out != refs[i].lin->out || orefs[i].lin->in != refs[i].lin->in ||
                         !orefs[i].lin->b != !refs[i].lin->b))
            return lpv_fail(err, LPV_E_ARG, "sequential reconstruction: layer '%s' differs in %s", refs[i].name, what);
    return LPV_OK;
}

/* A dense layer input kept for one chunk (the one-pass capture): (in, ld), ncols valid columns. For a layer
   with projected statistics (fc2) what its refit needs of it instead: x = W x (out, ld) and xsum = Σ x (in). */
typedef struct {
    float *x;
    double *xsum;
    int ld, ncols;
} kept;

/* One sequential pass: its inputs, and the scratch it owns (seq_free). */
typedef struct {
    lpv_model *m;
    const lpv_model *dense, *tt;    /* the refit's target; the tuning's / heads' final target, or NULL */
    const lpv_head_targets *ht;     /* recorded head targets the heads' refit uses, or NULL */
    uint8_t *const *masks;
    int R, C, n, h0, b, tuning, heads_active;
    const lpv_reconstruct_opts *o;
    lpv_reconstruct_info *ri;
    lpv_layer_ref refs[LPV_MAX_LAYERS], drefs[LPV_MAX_LAYERS], trefs[LPV_MAX_LAYERS];
    uint8_t *mk[LPV_MAX_LAYERS];    /* the masks as the refit sees them: a head to refit keeps every block */
    int refit[LPV_MAX_LAYERS], active[LPV_MAX_LAYERS], in_of[LPV_MAX_LAYERS];
    uint8_t *full;                  /* an all-kept mask for the heads refit without one */
    lpv_workspace ws;
    int ws_ok, tuner_ok;
    lpv_tuner tuner;
    stream_cache cache;
    seq_tap_ctx tc;
    lpv_model_stats cs;             /* the layer being refit: its pruned-input and cross statistics */
    /* one dense pass per block (o->capture_bytes): the dense inputs of the block's layers kept for every chunk
       (keep[j][c], NULL slots recomputed per layer) and the dense stream's next value (next[c], NULL: advanced
       after the block as before) */
    kept *keep[4];                  /* (slot) NULL, or (chunk) the slot's dense input per chunk */
    float **next;
    /* the pruned model's state where its last pass of the block stopped, per chunk (pruned_pass), or NULL:
       every pass runs the block from its start */
    float **pst;
    lpv_resume pst_at;              /* what pst holds (forward.h's resume points; NONE: nothing yet) */
    int keep_y;                     /* fc2 kept as W x and Σ x (its statistics are projected) */
    float *logits, *logits2;        /* (b, classes) each: the heads' pass, the logits' error before/after */
    /* the block's refit layers in BSR form (seq_pack) while its pruned passes run: they skip the pruned blocks
       instead of multiplying their zeros. One block's packs at a time, in their own arena. */
    int packing;
    lpv_arena packs;
    lpv_linear *packed[4];          /* the block's layers this pass set L->bsr on, by slot */
} seq_run;

static void free_chunks(float **a, int n) {
    for (int c = 0; a && c < n; c++) free(a[c]);
    free(a);
}

/* Drops the block's packs: its layers run dense again (the prune goes on with L->w alone). */
static void seq_unpack(seq_run *S) {
    for (int j = 0; j < 4; j++)
        if (S->packed[j]) S->packed[j]->bsr = NULL, S->packed[j] = NULL;
    lpv_arena_free(&S->packs);
    lpv_arena_init(&S->packs, 1 << 20);
}

int lpv_refit_packs_pay(void) {
    return lpv_isa_get() != LPV_ISA_REF && lpv_dense_kernel_auto() == LPV_DENSE_BLOCKED;
}

/* Layer i (slot j of block l) is refit: its later pruned passes run its kept blocks only. Not where the packs do
   not pay (lpv_refit_packs_pay), and not with block tuning (its gradients need the dense form). */
static lpv_status seq_pack(seq_run *S, int l, int i, lpv_err *err) {
    lpv_linear *L = S->refs[i].lin;
    int j = i - lpv_block_layer0(l);
    if (!S->packing || l >= S->m->cfg.depth || !S->mk[i] || L->bsr) return LPV_OK;
    lpv_bsr *b = lpv_arena_alloc(&S->packs, sizeof *b);
    if (!b) return lpv_fail(err, LPV_E_OOM, "out of memory packing '%s'", S->refs[i].name);
    LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, S->R, S->C, S->mk[i], &S->packs, S->refs[i].name, err));
    L->bsr = b, S->packed[j] = L;
    return LPV_OK;
}

static void seq_free(seq_run *S) {
    seq_unpack(S); /* after an error a block may still be packed */
    lpv_arena_free(&S->packs);
    for (int i = 0; i < S->n; i++)
        if (S->cs.want[i]) lpv_stats_free(&S->cs.st[i]);
    for (int j = 0; j < 4; j++) {
        for (int c = 0; S->keep[j] && c < S->cache.n; c++) free(S->keep[j][c].x), free(S->keep[j][c].xsum);
        free(S->keep[j]);
    }
    free_chunks(S->next, S->cache.n);
    free_chunks(S->pst, S->cache.n);
    cache_free(&S->cache);
    for (int j = 0; j < 4; j++) free(S->tc.buf[j]);
    free(S->logits), free(S->logits2), free(S->full), free(S->tc.pscratch);
    if (S->ws_ok) lpv_workspace_free(&S->ws);
    if (S->tuner_ok) lpv_tuner_free(&S->tuner);
}

/* Which layers the pass refits and with which mask; the twin models and head records checked. */
static lpv_status seq_masks(seq_run *S, int images, lpv_err *err) {
    const lpv_reconstruct_opts *o = S->o;
    size_t full_n = 0;
    for (int i = 0; i < S->n; i++) {
        S->mk[i] = S->masks[i];
        S->refit[i] = o->refit_heads && i >= S->h0 && !S->masks[i];
        if (S->refit[i]) {
            size_t nb = (size_t)lpv_nblocks(S->refs[i].lin->out, S->refs[i].lin->in, S->R, S->C);
            if (nb > full_n) full_n = nb;
        }
        S->heads_active |= i >= S->h0 && (S->masks[i] || S->refit[i]);
    }
    if (full_n && !(S->full = malloc(full_n))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    if (S->full) memset(S->full, 1, full_n);
    for (int i = 0; i < S->n; i++) {
        if (S->refit[i]) S->mk[i] = S->full;
        S->active[i] = S->mk[i] != NULL, S->in_of[i] = S->refs[i].lin->in;
    }
    const lpv_config *cfg = &S->m->cfg;
    LPV_TRY(check_twin(S->m, S->dense, S->mk, "the dense model", err));
    if (S->tt) LPV_TRY(check_twin(S->m, S->tt, S->mk, "the final target model", err));
    if (S->ht) LPV_TRY(check_head_targets(S->ht, cfg, images, err));
    if (o->record_heads) LPV_TRY(head_targets_alloc(o->record_heads, cfg, images, err));
    lpv_model_layers((lpv_model *)S->dense, S->drefs, LPV_MAX_LAYERS);
    if (S->tt) lpv_model_layers((lpv_model *)S->tt, S->trefs, LPV_MAX_LAYERS);
    return LPV_OK;
}

/* The patch embedding sees the same patches in both models: its dense statistics are exact. */
static lpv_status seq_patch(seq_run *S, const lpv_model_stats *stats, lpv_err *err) {
    if (!S->masks[0]) return LPV_OK;
    lpv_model *m = S->m;
    if (!stats || !stats->want[0]) return lpv_fail(err, LPV_E_ARG, "no input statistics for 'patch_embed.proj'");
    lpv_recon_info info = {0, 0, 0};
    lpv_status st = lpv_reconstruct_layer(m->patch.w, m->patch.b, m->patch.out, m->patch.in, S->R, S->C, S->masks[0],
                                          &stats->st[0], S->o->update, &S->o->recon, &info, "patch_embed.proj", err);
    note(S->ri, &info);
    st = lpv_dist_agree(st, err);
    return st ? st : bcast_linear(&m->patch, err);
}

/* Whether layer i's refit statistics are projected (recon.h: P = W G instead of G, for out < in: fc2), i.e. the
   lsq refit of a block linear whose target weights are at hand. Heads keep G (the recorded ones have no pass). */
static int projected(const seq_run *S, int i) {
    const lpv_linear *L = S->refs[i].lin;
    return i > 0 && i < S->h0 && L->out < L->in && S->o->update == LPV_UPDATE_LSQ && !S->refit[i] &&
           S->drefs[i].lin->w != NULL;
}

/* The workspace, the tuner, the capture buffers and the logits' scratch. */
static lpv_status seq_alloc(seq_run *S, int nch, lpv_err *err) {
    const lpv_config *cfg = &S->m->cfg;
    int64_t D = cfg->dim, F = cfg->mlp, ldmax = lpv_round16(S->b * cfg->n_tokens);
    LPV_TRY(lpv_workspace_init(&S->ws, cfg, S->b, err));
    S->ws_ok = 1;
    if (S->tuning) {
        LPV_TRY(lpv_tuner_init(&S->tuner, cfg, &S->o->tune, err));
        S->tuner_ok = 1;
    }
    stream_cache *c = &S->cache;
    c->bsz = calloc((size_t)nch, sizeof(int));
    c->xd = calloc((size_t)nch, sizeof(float *)), c->xp = calloc((size_t)nch, sizeof(float *));
    if (S->tt) c->xt = calloc((size_t)nch, sizeof(float *));
    S->tc.active = S->active, S->tc.in = S->in_of;
    int64_t rows_of[4] = {D, D, D, F};
    for (int j = 0; j < 4; j++) {
        S->tc.rows[j] = rows_of[j] > D ? rows_of[j] : D;
        S->tc.buf[j] = malloc(sizeof(float) * (size_t)S->tc.rows[j] * (size_t)ldmax);
    }
    S->logits = malloc(sizeof(float) * (size_t)S->b * cfg->classes);
    S->logits2 = malloc(sizeof(float) * (size_t)S->b * cfg->classes);
    int ok = c->bsz && c->xd && c->xp && (!S->tt || c->xt) && S->logits && S->logits2;
    for (int j = 0; j < 4; j++) ok &= S->tc.buf[j] != NULL;
    int64_t pout = 0; /* the projected statistics' scratch: the widest output they are used for */
    for (int i = 0; i < S->h0; i++)
        if (S->active[i] && projected(S, i) && S->refs[i].lin->out > pout) pout = S->refs[i].lin->out;
    if (pout && !(S->tc.pscratch = malloc(sizeof(float) * (size_t)(pout * ldmax)))) ok = 0;
    return ok ? LPV_OK : lpv_fail(err, LPV_E_OOM, "out of memory for the sequential reconstruction");
}

/* Every chunk of calibration images embedded in each model: the residual streams entering block 0. */
static lpv_status seq_cache_streams(seq_run *S, const lpv_dataset *ds, const lpv_preproc *pp, lpv_err *err) {
    const lpv_config *cfg = &S->m->cfg;
    int D = cfg->dim, T = cfg->n_tokens;
    stream_cache *c = &S->cache;
    lpv_loader *Ld = NULL;
    lpv_loader_opts lo = {S->b, 1, 0, S->o->skips};
    lpv_status st = lpv_loader_open(&Ld, ds, pp, &lo, err);
    const lpv_model *models[3] = {S->dense, S->m, S->tt};
    while (st == LPV_OK) {
        lpv_batch bt;
        if ((st = lpv_loader_next(Ld, &bt, err)) != LPV_OK || bt.count == 0) break;
        if (bt.n == 0) continue;
        int k = c->n, bs = bt.n;
        size_t bytes = sizeof(float) * (size_t)D * (size_t)lpv_round16(bs * T);
        c->xd[k] = malloc(bytes), c->xp[k] = malloc(bytes), c->bsz[k] = bs;
        if (S->tt) c->xt[k] = malloc(bytes);
        c->n++;
        if (!c->xd[k] || !c->xp[k] || (S->tt && !c->xt[k])) {
            st = lpv_fail_hint(err, LPV_E_OOM, "recon_images", "out of memory caching %d images' residual streams",
                               ds->n);
            break;
        }
        float *dst[3] = {c->xd[k], c->xp[k], S->tt ? c->xt[k] : NULL};
        for (int q = 0; q < 3 && st == LPV_OK; q++) {
            if (!models[q]) continue;
            if ((st = lpv_forward_begin(models[q], &S->ws, bt.x, bs, err)) == LPV_OK) memcpy(dst[q], S->ws.x, bytes);
        }
    }
    if (st == LPV_OK) st = lpv_loader_verdict(Ld, "refit", err);
    lpv_loader_close(Ld);
    return st;
}

/* n chunks of `floats` each into *a. */
static lpv_status alloc_chunks(float ***a, int64_t n, int64_t floats, lpv_err *err) {
    if (!(*a = calloc((size_t)n, sizeof(float *)))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int64_t c = 0; c < n; c++)
        if (!((*a)[c] = malloc(sizeof(float) * (size_t)floats))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    return LPV_OK;
}

/* The one-pass capture's buffers (o->capture_bytes), in the order that saves the most per byte while they
   fit: the dense stream's next value (D per token: the block's advance pass), the pruned model's state between
   its passes (D: its advance and per-layer passes then run each part of the block once, pruned_pass), proj's
   and fc1's inputs (D each: their per-layer passes run most of the block), fc2's (three quarters of the block;
   mlp per token, or with projected statistics only W x: D, and Σ x per chunk). qkv's input is LN1's output,
   cheap to recompute. A slot no block refits is not kept. */
static lpv_status seq_alloc_keep(seq_run *S, lpv_err *err) {
    const lpv_config *cfg = &S->m->cfg;
    int64_t D = cfg->dim, F = cfg->mlp, ld = lpv_round16(S->b * cfg->n_tokens), n = S->cache.n;
    int64_t used = 0;
    enum { NEXT = -1, PSTATE = -2 };
    const int slot[5] = {NEXT, PSTATE, 1, 2, 3};
    for (int k = 0; k < 5; k++) {
        int j = slot[k], wanted = j == NEXT;
        for (int l = 0; j != NEXT && l < cfg->depth; l++)
            for (int q = 1; q < 4; q++) /* the pruned state serves proj's, fc1's and fc2's passes */
                wanted |= (j == PSTATE || j == q) && S->active[lpv_block_layer0(l) + q];
        if (!wanted) continue;
        int ky = j == 3 && S->keep_y, rows = j == 3 && !ky ? (int)F : (int)D;
        int64_t bytes = (int64_t)sizeof(float) * rows * ld * n + (ky ? (int64_t)sizeof(double) * F * n : 0);
        if (used + bytes > S->o->capture_bytes) break;
        used += bytes;
        if (j == NEXT) {
            LPV_TRY(alloc_chunks(&S->next, n, D * ld, err));
        } else if (j == PSTATE) {
            LPV_TRY(alloc_chunks(&S->pst, n, D * ld, err));
        } else {
            if (!(S->keep[j] = calloc((size_t)n, sizeof(kept)))) return lpv_fail(err, LPV_E_OOM, "out of memory");
            for (int64_t c = 0; c < n; c++)
                if (!(S->keep[j][c].x = malloc(sizeof(float) * (size_t)(rows * ld))) ||
                    (ky && !(S->keep[j][c].xsum = malloc(sizeof(double) * (size_t)F))))
                    return lpv_fail(err, LPV_E_OOM, "out of memory");
        }
    }
    S->ri->capture_bytes = used;
    return LPV_OK;
}

typedef struct {
    seq_run *S;
    int first, chunk;
} keep_ctx;

/* The one-pass capture's tap: a refit layer's input, into its slot's buffer for this chunk. */
static void keep_tap(void *ctx, int layer, const float *X, int ld, int ncols) {
    keep_ctx *k = ctx;
    int j = layer - k->first;
    if (j < 1 || j > 3 || !k->S->keep[j] || !k->S->active[layer]) return;
    kept *dst = &k->S->keep[j][k->chunk];
    dst->ld = ld, dst->ncols = ncols;
    if (dst->xsum) { /* fc2 with projected statistics: what they need of its input */
        const lpv_linear *L = k->S->drefs[layer].lin;
        lpv_stats_project(L->w, L->out, L->in, X, ld, ncols, dst->x, ld, dst->xsum);
        return;
    }
    for (int r = 0; r < k->S->in_of[layer]; r++)
        memcpy(dst->x + (int64_t)r * ld, X + (int64_t)r * ld, sizeof(float) * (size_t)ncols);
}

/* One dense pass of block l over every chunk: the kept layers' inputs, and the stream's next value. */
static void seq_dense_pass(seq_run *S, int l) {
    int any = S->next != NULL;
    for (int j = 1; j < 4; j++) any |= S->keep[j] && S->active[lpv_block_layer0(l) + j];
    if (!any) return;
    const lpv_config *cfg = &S->m->cfg;
    lpv_workspace *ws = &S->ws;
    keep_ctx kc = {S, lpv_block_layer0(l), 0};
    ws->tap = keep_tap, ws->tap_ctx = &kc;
    for (int c = 0; c < S->cache.n; c++) {
        size_t bytes = sizeof(float) * (size_t)cfg->dim * (size_t)lpv_round16(S->cache.bsz[c] * cfg->n_tokens);
        kc.chunk = c;
        memcpy(ws->x, S->cache.xd[c], bytes);
        lpv_forward_block(S->dense, ws, l, S->cache.bsz[c]);
        if (S->next) memcpy(S->next[c], ws->x, bytes);
    }
    ws->tap = NULL;
}

/* The pruned model's pass of block l over chunk c (bs images), up to the tap of the block's linear j (ws->tap_stop;
   j = 4: the whole block, the stream moves on into ws->x). With S->pst it goes on from where the block's last
   pass stopped instead of from the block's input: proj's pass runs qkv and attention and keeps attention's
   output, fc1's runs proj and keeps the stream after it, fc2's runs LayerNorm 2 and fc1 from there, and so does
   the advance, with fc2: about 1.3 block passes per block instead of 3.3. The same operations on the same
   values, so the same bits. The state holds as long as the layers before the stop keep their weights (the refit
   goes forward; tuning rewrites the block: the caller drops the state). Returns what S->pst[c] now holds. */
static lpv_resume pruned_pass(seq_run *S, int l, int j, int c, int bs) {
    const lpv_config *cfg = &S->m->cfg;
    lpv_workspace *ws = &S->ws;
    size_t bytes = sizeof(float) * (size_t)cfg->dim * (size_t)lpv_round16(bs * cfg->n_tokens);
    float *st = S->pst ? S->pst[c] : NULL;
    lpv_resume at = st && j >= 2 ? S->pst_at : LPV_RESUME_NONE;
    memcpy(ws->x, at == LPV_RESUME_MLP ? st : S->cache.xp[c], bytes);
    if (at == LPV_RESUME_PROJ) memcpy(ws->xn, st, bytes);
    ws->resume = at;
    lpv_forward_block(S->m, ws, l, bs);
    if (!st || j == 0 || j == 4) return at;
    if (j == 1) {
        memcpy(st, ws->xn, bytes); /* stopped at proj's tap: xn is attention's output, x the block's input */
        return LPV_RESUME_PROJ;
    }
    if (at != LPV_RESUME_MLP) memcpy(st, ws->x, bytes); /* at fc1's or fc2's tap: x is after attention */
    return LPV_RESUME_MLP;
}

/* Layer i of block l (l == depth: the heads), over this rank's cached images: one capture pass of the target
   on its stream, one accumulating pass of the pruned model on its own, into S->cs.st[i]. */
static void seq_accumulate(seq_run *S, int l, int i, int first) {
    const lpv_config *cfg = &S->m->cfg;
    int D = cfg->dim, T = cfg->n_tokens, heads = l == cfg->depth;
    /* the heads' target: the final target when there is one (its logits are what the user gets) */
    const lpv_model *src = heads && S->tt ? S->tt : S->dense;
    float **sx = heads && S->tt ? S->cache.xt : S->cache.xd;
    const lpv_head_targets *ht = S->ht;
    lpv_workspace *ws = &S->ws;
    seq_tap_ctx *tc = &S->tc;
    tc->first = i, tc->count = 1, tc->slot0 = i - first, tc->cross = &S->cs;
    int j = i - first;
    kept *k = !heads ? S->keep[j] : NULL; /* the dense pass already ran: no capture pass */
    float *scratch = tc->buf[j];
    ws->tap = seq_tap, ws->tap_ctx = tc;
    ws->tap_stop = i; /* nothing after this layer's input is needed: ~2x fewer block passes */
    lpv_resume now = S->pst_at;
    for (int c = 0, off = 0; c < S->cache.n; off += S->cache.bsz[c], c++) {
        int bs = S->cache.bsz[c];
        size_t bytes = sizeof(float) * (size_t)D * (size_t)lpv_round16(bs * T);
        tc->capture = 1;
        tc->xsum = NULL;
        if (k) {
            tc->buf[j] = k[c].x, tc->ld[j] = k[c].ld, tc->ncols[j] = k[c].ncols, tc->xsum = k[c].xsum;
        } else if (heads && ht) { /* the head's recorded inputs stand for the capture pass */
            for (int d = 0; d < D; d++)
                memcpy(tc->buf[j] + (int64_t)d * bs, ht->x + ((int64_t)j * D + d) * ht->images + off,
                       sizeof(float) * (size_t)bs);
            tc->ld[j] = bs, tc->ncols[j] = bs;
        } else {
            memcpy(ws->x, sx[c], bytes);
            if (!heads) lpv_forward_block(src, ws, l, bs);
            else lpv_forward_end(src, ws, bs, S->logits);
        }
        tc->capture = 0;
        if (!heads) {
            now = pruned_pass(S, l, j, c, bs);
        } else {
            memcpy(ws->x, S->cache.xp[c], bytes);
            lpv_forward_end(S->m, ws, bs, S->logits);
        }
    }
    S->pst_at = now;
    ws->tap = NULL, ws->tap_stop = -1;
    tc->buf[j] = scratch, tc->xsum = NULL;
}

/* Layer i of block l: its statistics over every rank's images, then its refit from them. */
static lpv_status seq_refit_layer(seq_run *S, int l, int i, int first, lpv_err *err) {
    int D = S->m->cfg.dim, heads = l == S->m->cfg.depth;
    lpv_layer_ref *srefs = heads && S->tt ? S->trefs : S->drefs;
    const lpv_head_targets *ht = S->ht;
    const lpv_linear *L = S->refs[i].lin;
    int proj = projected(S, i);
    lpv_status st = proj ? lpv_stats_init_projected(&S->cs.st[i], L->in, L->out, err) : lpv_stats_init(&S->cs.st[i], L->in, 1, err);
    S->tc.pw = proj ? srefs[i].lin->w : NULL;
    if (st == LPV_OK) {
        S->cs.want[i] = 1;
        seq_accumulate(S, l, i, first);
    }
    st = lpv_dist_agree(st, err); /* every rank gets here, whatever happened to it */
    if (st == LPV_OK) st = lpv_stats_sum_ranks(&S->cs.st[i], err);
    if (st) return st;
    /* the target is the dense layer applied to the dense inputs: start from its weights (the closed-form
       refit does not depend on where it starts, but reads its target from them), which matters when m was
       already pruned and refit once (prune --steps) */
    if (heads && ht) {
        lpv_linear *hl = S->refs[i].lin;
        memcpy(hl->w, ht->w + (int64_t)(i - S->h0) * ht->classes * D, sizeof(float) * (size_t)ht->classes * D);
        if (hl->b) memcpy(hl->b, ht->b + (int64_t)(i - S->h0) * ht->classes, sizeof(float) * (size_t)ht->classes);
    } else {
        lpv_linear_copy_weights(S->refs[i].lin, srefs[i].lin);
    }
    /* a head sees one token per image, not T: its damping is its own (see reconstruct.h) */
    lpv_recon_opts ro = S->o->recon;
    if (i >= S->h0 && S->o->head_damp > 0) ro.damp = S->o->head_damp;
    lpv_update_kind u = S->refit[i] ? LPV_UPDATE_LSQ : S->o->update;
    LPV_TRY(update_layer(S->refs, i, S->mk[i], S->R, S->C, &S->cs, u, &ro, S->ri, err));
    S->ri->heads_refit += S->refit[i];
    return seq_pack(S, l, i, err);
}

/* Block l (l == depth: the heads), one sublayer at a time, in order: each is fitted on the inputs that the
   sublayers refit before it produce, so the upstream error is corrected once, not by every sublayer of the
   block again. Then the streams move on to the next block. */
static lpv_status seq_block(seq_run *S, int l, lpv_err *err) {
    const lpv_config *cfg = &S->m->cfg;
    int first = lpv_block_layer0(l), count = l < cfg->depth ? 4 : cfg->n_outputs, heads = l == cfg->depth;
    const lpv_model *src = heads && S->tt ? S->tt : S->dense;
    float **sx = heads && S->tt ? S->cache.xt : S->cache.xd;
    if (heads && S->o->record_heads) record_heads(S->dense, &S->ws, &S->cache, S->cache.xd, S->h0, S->o->record_heads);
    if (heads && S->heads_active)
        LPV_TRY(logit_error(S->m, src, S->ht, &S->ws, &S->cache, sx, S->logits, S->logits2, &S->ri->logit_err_before,
                            err));
    if (!heads) seq_dense_pass(S, l);
    S->pst_at = LPV_RESUME_NONE; /* the pruned state is per block */
    for (int i = first; i < first + count; i++)
        if (S->active[i]) LPV_TRY(seq_refit_layer(S, l, i, first, err));
    if (heads) {
        if (S->heads_active)
            LPV_TRY(logit_error(S->m, src, S->ht, &S->ws, &S->cache, sx, S->logits, S->logits2,
                                &S->ri->logit_err_after, err));
        return LPV_OK;
    }
    int D = cfg->dim, T = cfg->n_tokens;
    if (S->next) { /* the dense pass computed the next stream: the two swap */
        float **t = S->cache.xd;
        S->cache.xd = S->next, S->next = t;
    } else {
        advance_streams(S->dense, &S->ws, l, &S->cache, S->cache.xd, D, T); /* the dense stream moves on */
    }
    if (S->tt) advance_streams(S->tt, &S->ws, l, &S->cache, S->cache.xt, D, T);
    if (S->tuning) {
        LPV_TRY(tune_block(&S->tuner, S->m, l, &S->cache, S->masks, S->R, S->C, S->ri, err)); /* xt or xd */
        S->pst_at = LPV_RESUME_NONE; /* the tuned block's weights are not those the state was computed with */
    }
    for (int c = 0; c < S->cache.n; c++) { /* the pruned stream through the repaired block */
        pruned_pass(S, l, 4, c, S->cache.bsz[c]);
        memcpy(S->cache.xp[c], S->ws.x, sizeof(float) * (size_t)D * (size_t)lpv_round16(S->cache.bsz[c] * T));
    }
    seq_unpack(S); /* the block never runs again in this refit */
    return LPV_OK;
}

static lpv_status reconstruct_sequential(lpv_model *m, const lpv_model *dense, uint8_t *const *masks, int R, int C,
                                         const lpv_model_stats *stats, const lpv_dataset *ds, const lpv_preproc *pp,
                                         const lpv_reconstruct_opts *o, lpv_reconstruct_info *ri, lpv_err *err) {
    seq_run *S = calloc(1, sizeof *S);
    if (!S) return lpv_fail(err, LPV_E_OOM, "out of memory");
    const lpv_config *cfg = &m->cfg;
    /* under mpirun each rank caches and runs its own share of the images; the statistics are summed */
    lpv_dataset mine;
    int first;
    lpv_status st = lpv_dataset_share(&mine, ds, &first, err);
    if (st == LPV_OK && mine.n == 0)
        st = lpv_fail_hint(err, LPV_E_ARG, "recon_images", "%d refit images for %d mpi ranks: each rank needs one",
                           ds->n, lpv_dist_size());
    if (st) {
        free(S);
        lpv_dataset_view_free(&mine);
        return lpv_dist_agree(st, err);
    }
    ds = &mine;
    S->m = m, S->dense = dense, S->masks = masks, S->R = R, S->C = C, S->o = o, S->ri = ri;
    S->b = o->batch < ds->n ? o->batch : ds->n;
    S->tuning = o->tune.epochs > 0;
    S->packing = ri->packed = !S->tuning && !o->no_pack && lpv_refit_packs_pay();
    lpv_arena_init(&S->packs, 1 << 20);
    S->ht = o->refit_heads ? o->head_targets : NULL;
    if ((S->tuning || (o->refit_heads && !S->ht)) && o->final_target && o->final_target != dense) S->tt = o->final_target;
    S->n = lpv_model_layers(m, S->refs, LPV_MAX_LAYERS), S->h0 = lpv_block_layer0(cfg->depth);
    S->cs.n = S->n;
    /* every rank reaches each lpv_dist_agree, whatever happened to it: none waits forever in a collective */
    st = lpv_dist_agree(seq_masks(S, ds->n, err), err);
    if (st == LPV_OK) st = seq_patch(S, stats, err); /* before the pruned stream is cached: it starts there */
    if (st == LPV_OK) {
        st = seq_alloc(S, (ds->n + S->b - 1) / S->b, err);
        if (st == LPV_OK) st = seq_cache_streams(S, ds, pp, err);
        S->keep_y = cfg->depth > 0 && projected(S, lpv_block_layer0(0) + 3); /* every block's fc2 is alike */
        if (st == LPV_OK) st = seq_alloc_keep(S, err);
        st = lpv_dist_agree(st, err);
    }
    lpv_progress pr;
    lpv_progress_begin(&pr, cfg->depth + 1, "%s (blocks%s)", o->label ? o->label : "refit",
                       o->refit_heads ? " and heads" : "");
    for (int l = 0; l <= cfg->depth && st == LPV_OK; l++) {
        st = seq_block(S, l, err);
        if (st == LPV_OK) lpv_progress_update(&pr, l + 1, NULL);
    }
    if (st == LPV_OK) lpv_progress_end(&pr);
    seq_free(S);
    free(S);
    lpv_dataset_view_free(&mine);
    return st;
}

lpv_status lpv_reconstruct(lpv_model *m, const lpv_model *dense, uint8_t *const *masks, int R, int C,
                           const lpv_model_stats *stats, const lpv_dataset *ds, const lpv_preproc *pp,
                           const lpv_reconstruct_opts *o, lpv_reconstruct_info *info, lpv_err *err) {
    memset(info, 0, sizeof *info);
    double t0 = lpv_now();
    lpv_status st;
    if (o->sequential && o->update != LPV_UPDATE_NONE) {
        if (!dense || !ds) return lpv_fail(err, LPV_E_ARG, "sequential reconstruction needs the dense model and images");
        /* SGD over a rank's own images would tune another model on each rank */
        if (o->tune.epochs > 0 && lpv_dist_size() > 1)
            return lpv_fail(err, LPV_E_UNSUPPORTED, "block tuning does not run across mpi ranks yet: run it in one process");
        st = reconstruct_sequential(m, dense, masks, R, C, stats, ds, pp, o, info, err);
    } else {
        st = reconstruct_independent(m, masks, R, C, stats, o, info, err);
    }
    info->seconds = lpv_now() - t0;
    return st;
}
