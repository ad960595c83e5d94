/*
 * test_evaluate.c — lpv_evaluate counts top-1 / top-5 as the forward pass
 * ranks the labels, fills per-image predictions, and skips and reports an
 * unreadable image.
 *
 * A random 2-layer model scores tests/data/imagenet-mini one image at a time
 * (the reference); the labels are then rewritten so that even items are the
 * model's top-1 class and odd items its third, which fixes what top-1 and
 * top-5 must be. One item points at a missing file.
 */
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/dataset.h"
#include "lpvit/evaluate.h"
#include "lpvit/forward.h"
#include "lpvit/loader.h"
#include "test.h"

/* Class at rank k of the logits (k < 8). */
static int class_at_rank(const float *l, int C, int k) {
    int taken[8];
    for (int r = 0; r <= k; r++) {
        int best = -1;
        for (int j = 0; j < C; j++) {
            int used = 0;
            for (int q = 0; q < r; q++) used |= taken[q] == j;
            if (!used && (best < 0 || l[j] > l[best])) best = j;
        }
        taken[r] = best;
    }
    return taken[k];
}

static int skips_seen;
static void on_skip(void *ctx, const char *path, const char *reason) {
    (void)ctx;
    skips_seen++;
    CHECKF(strstr(path, "missing.JPEG") != NULL && strstr(reason, "missing.JPEG") != NULL, "skip %s: %s", path, reason);
}

int main(void) {
    lpv_threads_set(2);
    lpv_err err;
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 32, c.depth = 2, c.heads = 2, c.mlp = 64, c.patch = 16, c.img = 32, c.chans = 3, c.classes = 1000;
    c.n_prefix = 1, c.n_outputs = 1;
    lpv_model *m;
    CHECK_OK(lpv_model_random(&m, &c, 5, &err), &err);
    lpv_synsets syn;
    CHECK_OK(lpv_synsets_load(&syn, LPVIT_SOURCE_DIR "/models/synset_words.txt", &err), &err);
    lpv_dataset ds;
    CHECK_OK(lpv_dataset_imagefolder(&ds, LPVIT_SOURCE_DIR "/tests/data/imagenet-mini", &syn, &err), &err);
    lpv_synsets_free(&syn);
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = 32;
    int n = ds.n;
    CHECK(n >= 4);

    /* reference: every image alone through lpv_forward */
    lpv_loader *L;
    lpv_loader_opts lo = {n, 1, 1, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &lo, &err), &err);
    lpv_batch b;
    CHECK_OK(lpv_loader_next(L, &b, &err), &err);
    CHECK(b.n == n);
    lpv_workspace ws;
    CHECK_OK(lpv_workspace_init_for(&ws, m, 1, &err), &err);
    float *logits = malloc(sizeof(float) * c.classes);
    int *top1 = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) {
        CHECK_OK(lpv_forward(m, &ws, b.x + (size_t)i * 3 * 32 * 32, 1, logits, &err), &err);
        top1[i] = class_at_rank(logits, c.classes, 0);
        ds.items[i].label = i % 2 == 0 ? top1[i] : class_at_rank(logits, c.classes, 2);
    }
    lpv_loader_close(L);
    lpv_workspace_free(&ws);

    /* batches of 3 with a ragged end, predictions per item */
    int *pred = malloc(sizeof(int) * n);
    lpv_eval_opts o = lpv_eval_defaults();
    o.batch = 3, o.pred = pred;
    lpv_eval_result r;
    CHECK_OK(lpv_evaluate(m, &ds, &pp, &o, &r, &err), &err);
    CHECKF(r.images == n && r.skipped == 0, "images %ld skipped %ld", r.images, r.skipped);
    CHECKF(r.correct1 == (n + 1) / 2, "top-1 %ld of %d, want %d", r.correct1, n, (n + 1) / 2);
    CHECKF(r.correct5 == n, "top-5 %ld of %d", r.correct5, n);
    for (int i = 0; i < n; i++) CHECKF(pred[i] == top1[i], "item %d: pred %d, forward alone %d", i, pred[i], top1[i]);
    CHECK(lpv_eval_top1(&r) == 100.0 * (double)((n + 1) / 2) / n);

    /* a missing file: skipped, reported once, predicted -1; the others still count */
    const char *keep = ds.items[1].path;
    ds.items[1].path = LPVIT_SOURCE_DIR "/tests/data/missing.JPEG";
    o.on_skip = on_skip;
    CHECK_OK(lpv_evaluate(m, &ds, &pp, &o, &r, &err), &err);
    CHECKF(r.images == n - 1 && r.skipped == 1 && skips_seen == 1, "images %ld skipped %ld seen %d", r.images, r.skipped,
           skips_seen);
    CHECK(pred[1] == -1 && pred[0] == top1[0]);
    CHECK(r.correct1 == (n + 1) / 2 && r.correct5 == n - 1);
    /* strict: the same file fails the run and is named */
    o.strict = 1;
    CHECK(lpv_evaluate(m, &ds, &pp, &o, &r, &err) == LPV_E_DATA && strstr(err.msg, "missing.JPEG") != NULL);
    ds.items[1].path = keep;

    free(pred), free(top1), free(logits);
    lpv_dataset_free(&ds);
    lpv_model_free(m);
    return test_finish("test_evaluate");
}
