/*
 * evaluate.h — top-1 / top-5 accuracy of a model on a labelled dataset,
 * counted as timm's validate.py counts it (ties in the logits go to the lower
 * class index, as torch.topk). The loader's threads decode and preprocess the
 * next batch while the model runs on the current one; unreadable images are
 * skipped and reported (or fail the run with strict).
 *
 *     lpv_eval_opts o = lpv_eval_defaults();
 *     lpv_eval_result r;
 *     if (lpv_evaluate(m, &ds, &pp, &o, &r, &err)) die(err.msg);
 *     printf("top-1 %.2f\n", lpv_eval_top1(&r));
 *
 * Under mpirun (dist.h) lpv_evaluate is collective: each rank runs its share
 * of the list and every rank gets the whole list's counts and predictions;
 * on_skip is called on the rank that met the image, wall is the slowest
 * rank's, compute the ranks' sum.
 *
 * Memory: the workspace, logits and loader are allocated once per call and
 * freed before it returns; the caller owns the model, the dataset and the
 * optional pred array.
 */
#ifndef LPVIT_EVALUATE_H
#define LPVIT_EVALUATE_H

#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/forward.h"
#include "lpvit/image.h"
#include "lpvit/model.h"

typedef struct {
    int batch;             /* images per forward pass (clipped to the dataset) */
    int decode_threads;    /* threads decoding images beside the model */
    int strict;            /* an unreadable image fails the run instead of being skipped */
    lpv_profile *profile;  /* optional: per-op times accumulate here */
    int *pred;             /* optional, (ds->n): each item's top-1 class, -1 when it was skipped */
    /* optional: called once per skipped image, in dataset order (path and reason live until it returns) */
    void (*on_skip)(void *ctx, const char *path, const char *reason);
    void *ctx;
    const char *label;     /* progress label (NULL: "eval") */
} lpv_eval_opts;

typedef struct {
    long images, correct1, correct5, skipped;
    double wall, compute;  /* seconds: the whole pass, and inside lpv_forward */
} lpv_eval_result;

/* batch 32, one decoder thread, skip unreadable images. */
lpv_eval_opts lpv_eval_defaults(void);

/* Runs m over every image of ds, preprocessed by pp. Fails (LPV_E_DATA) on a non-finite logit, which names
 * the image, and when no image could be read. */
lpv_status lpv_evaluate(const lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_eval_opts *o,
                        lpv_eval_result *r, lpv_err *err);

/* Percentages (0 when no image was evaluated). */
double lpv_eval_top1(const lpv_eval_result *r);
double lpv_eval_top5(const lpv_eval_result *r);

#endif
