/*
 * evaluate.c — accuracy of a model over a dataset (evaluate.h): the loader
 * feeds batches, lpv_forward scores them, and each label's rank among the
 * logits counts towards top-1 and top-5.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "lpvit/evaluate.h"
#include "lpvit/loader.h"
#include "lpvit/log.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"

lpv_eval_opts lpv_eval_defaults(void) {
    lpv_eval_opts o = {0};
    o.batch = 32;
    o.decode_threads = 1;
    return o;
}

double lpv_eval_top1(const lpv_eval_result *r) { return r->images ? 100.0 * (double)r->correct1 / (double)r->images : 0; }
double lpv_eval_top5(const lpv_eval_result *r) { return r->images ? 100.0 * (double)r->correct5 / (double)r->images : 0; }

/* Rank of the label among the logits: 0 = top-1 (ties go to the lower index, as torch.topk). */
static int label_rank(const float *l, int C, int label) {
    int rank = 0;
    float v = l[label];
    for (int j = 0; j < C; j++) rank += l[j] > v || (l[j] == v && j < label);
    return rank;
}

static int argmax(const float *l, int C) {
    int best = 0;
    for (int j = 1; j < C; j++)
        if (l[j] > l[best]) best = j;
    return best;
}

/* Scores one batch's logits (n, C) against its labels; ds is this rank's share, which starts at item `first`
   of the whole list (pred is indexed by the whole list). */
static lpv_status score(const lpv_dataset *ds, int first, const lpv_batch *b, const float *logits, int C,
                        const lpv_eval_opts *o, lpv_eval_result *r, lpv_err *err) {
    for (int i = 0; i < b->n; i++) {
        const float *l = logits + (int64_t)i * C;
        for (int j = 0; j < C; j++)
            if (!isfinite(l[j])) return lpv_fail(err, LPV_E_DATA, "non-finite logit for '%s'", ds->items[b->index[i]].path);
        int rank = label_rank(l, C, b->labels[i]);
        r->correct1 += rank == 0;
        r->correct5 += rank < 5;
        if (o->pred) o->pred[first + b->index[i]] = argmax(l, C);
    }
    r->images += b->n;
    return LPV_OK;
}

static void note_skips(const lpv_batch *b, int first, const lpv_eval_opts *o, lpv_eval_result *r) {
    for (int k = 0; k < b->n_failed; k++) {
        lpv_warn("skipped: %s", b->failed[k].reason);
        if (o->on_skip) o->on_skip(o->ctx, b->failed[k].path, b->failed[k].reason);
        if (o->pred) o->pred[first + b->failed[k].index] = -1;
    }
    r->skipped += b->n_failed;
}

static lpv_status run(const lpv_model *m, const lpv_dataset *ds, int first, lpv_loader *L, lpv_workspace *ws,
                      float *logits, const lpv_eval_opts *o, lpv_eval_result *r, lpv_err *err) {
    int C = m->cfg.classes;
    lpv_progress pg;
    lpv_progress_begin(&pg, ds->n, "%s", o->label ? o->label : "eval");
    lpv_status st = LPV_OK;
    long done = 0;
    for (;;) {
        lpv_batch b;
        if ((st = lpv_loader_next(L, &b, err)) != LPV_OK || b.count == 0) break;
        note_skips(&b, first, o, r);
        if (b.n > 0) {
            double tc = lpv_now();
            if ((st = lpv_forward(m, ws, b.x, b.n, logits, err)) != LPV_OK) break;
            r->compute += lpv_now() - tc;
            if ((st = score(ds, first, &b, logits, C, o, r, err)) != LPV_OK) break;
        }
        done += b.count;
        lpv_progress_update(&pg, done, "top-1 %.2f%%", lpv_eval_top1(r));
    }
    lpv_progress_end(&pg);
    return st;
}

/* This rank's share of the list (all of it with one rank), items [first, first + ds->n) of the whole. */
static lpv_status evaluate_share(const lpv_model *m, const lpv_dataset *ds, int first, const lpv_preproc *pp,
                                 const lpv_eval_opts *o, lpv_eval_result *r, lpv_err *err) {
    int batch = o->batch < 1 ? 1 : o->batch < ds->n ? o->batch : ds->n;
    lpv_workspace ws;
    LPV_TRY(lpv_workspace_init_for(&ws, m, batch, err));
    ws.profile = o->profile;
    float *logits = malloc(sizeof(float) * (size_t)batch * (size_t)m->cfg.classes);
    lpv_loader *L = NULL;
    lpv_loader_opts lo = {batch, o->decode_threads, o->strict, NULL};
    lpv_status st = logits ? lpv_loader_open(&L, ds, pp, &lo, err) : lpv_fail(err, LPV_E_OOM, "out of memory");
    if (st == LPV_OK) st = run(m, ds, first, L, &ws, logits, o, r, err);
    lpv_loader_close(L);
    free(logits);
    lpv_workspace_free(&ws);
    return st;
}

/* Every rank's counts summed (dist.h), the predictions gathered, the wall time the slowest rank's. */
static lpv_status reduce_ranks(const lpv_dataset *ds, int first, int n, const lpv_eval_opts *o, lpv_eval_result *r,
                               lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    int64_t c[4] = {r->images, r->correct1, r->correct5, r->skipped};
    double t[1] = {r->compute};
    LPV_TRY(lpv_dist_sum_i64(c, 4, err));
    LPV_TRY(lpv_dist_sum_f64(t, 1, err));
    r->images = (long)c[0], r->correct1 = (long)c[1], r->correct5 = (long)c[2], r->skipped = (long)c[3];
    r->compute = t[0];
    r->wall = lpv_dist_max_f64(r->wall);
    if (!o->pred) return LPV_OK;
    for (int i = 0; i < ds->n; i++)
        if (i < first || i >= first + n) o->pred[i] = INT_MIN; /* another rank's slot */
    return lpv_dist_max_i32(o->pred, ds->n, err);
}

lpv_status lpv_evaluate(const lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_eval_opts *o,
                        lpv_eval_result *r, lpv_err *err) {
    *r = (lpv_eval_result){0};
    if (ds->n <= 0) return lpv_fail(err, LPV_E_DATA, "the dataset has no image");
    lpv_dataset mine;
    int first = 0;
    double t0 = lpv_now();
    lpv_status st = lpv_dataset_share(&mine, ds, &first, err);
    if (st == LPV_OK && mine.n > 0) st = evaluate_share(m, &mine, first, pp, o, r, err);
    r->wall = lpv_now() - t0;
    st = lpv_dist_agree(st, err); /* every rank reaches this point, whatever happened to it */
    if (st == LPV_OK) st = reduce_ranks(ds, first, mine.n, o, r, err);
    lpv_dataset_view_free(&mine);
    if (st == LPV_OK && r->images == 0)
        st = lpv_fail(err, LPV_E_DATA, "no image of '%s' could be read (%ld skipped)", ds->root[0] ? ds->root : "the list",
                      r->skipped);
    return st;
}
