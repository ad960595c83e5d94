/*
 * evaluate.c — accuracy of a model over a dataset (evaluate.h): the loader
 * feeds batches, lpv_forward scores them, and each label's rank among the
 * logits counts towards top-1 and top-5.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "lpvit/evaluate.h"
#include "lpvit/loader.h"
#include "lpvit/log.h"
#include "lpvit/cpu.h"

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

/* Scores one batch's logits (n, C) against its labels. */
static lpv_status score(const lpv_dataset *ds, const lpv_batch *b, const float *logits, int C, const lpv_eval_opts *o,
                        lpv_eval_result *r, lpv_err *err) {
    for (int i = 0; i < b->n; i++) {
        const float *l = logits + (int64_t)i * C;
        for (int j = 0; j < C; j++)
            if (!isfinite(l[j])) return lpv_fail(err, LPV_E_DATA, "non-finite logit for '%s'", ds->items[b->index[i]].path);
        int rank = label_rank(l, C, b->labels[i]);
        r->correct1 += rank == 0;
        r->correct5 += rank < 5;
        if (o->pred) o->pred[b->index[i]] = argmax(l, C);
    }
    r->images += b->n;
    return LPV_OK;
}

static void note_skips(const lpv_batch *b, const lpv_eval_opts *o, lpv_eval_result *r) {
    for (int k = 0; k < b->n_failed; k++) {
        lpv_warn("skipped: %s", b->failed[k].reason);
        if (o->on_skip) o->on_skip(o->ctx, b->failed[k].path, b->failed[k].reason);
        if (o->pred) o->pred[b->failed[k].index] = -1;
    }
    r->skipped += b->n_failed;
}

static lpv_status run(const lpv_model *m, const lpv_dataset *ds, lpv_loader *L, lpv_workspace *ws, float *logits,
                      const lpv_eval_opts *o, lpv_eval_result *r, lpv_err *err) {
    int C = m->cfg.classes;
    lpv_progress pg;
    lpv_progress_begin(&pg, ds->n, "%s", o->label ? o->label : "eval");
    lpv_status st = LPV_OK;
    long done = 0;
    for (;;) {
        lpv_batch b;
        if ((st = lpv_loader_next(L, &b, err)) != LPV_OK || b.count == 0) break;
        note_skips(&b, o, r);
        if (b.n > 0) {
            double tc = lpv_now();
            if ((st = lpv_forward(m, ws, b.x, b.n, logits, err)) != LPV_OK) break;
            r->compute += lpv_now() - tc;
            if ((st = score(ds, &b, logits, C, o, r, err)) != LPV_OK) break;
        }
        done += b.count;
        lpv_progress_update(&pg, done, "top-1 %.2f%%", lpv_eval_top1(r));
    }
    lpv_progress_end(&pg);
    return st;
}

lpv_status lpv_evaluate(const lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_eval_opts *o,
                        lpv_eval_result *r, lpv_err *err) {
    *r = (lpv_eval_result){0};
    if (ds->n <= 0) return lpv_fail(err, LPV_E_DATA, "the dataset has no image");
    int batch = o->batch < 1 ? 1 : o->batch < ds->n ? o->batch : ds->n;
    lpv_workspace ws;
    LPV_TRY(lpv_workspace_init_for(&ws, m, batch, err));
    ws.profile = o->profile;
    float *logits = malloc(sizeof(float) * (size_t)batch * (size_t)m->cfg.classes);
    lpv_loader *L = NULL;
    lpv_loader_opts lo = {batch, o->decode_threads, o->strict, NULL};
    lpv_status st = logits ? lpv_loader_open(&L, ds, pp, &lo, err) : lpv_fail(err, LPV_E_OOM, "out of memory");
    double t0 = lpv_now();
    if (st == LPV_OK) st = run(m, ds, L, &ws, logits, o, r, err);
    r->wall = lpv_now() - t0;
    lpv_loader_close(L);
    free(logits);
    lpv_workspace_free(&ws);
    if (st == LPV_OK && r->images == 0)
        st = lpv_fail(err, LPV_E_DATA, "no image of '%s' could be read (%ld skipped)", ds->root[0] ? ds->root : "the list",
                      r->skipped);
    return st;
}
