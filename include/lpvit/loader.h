/*
 * loader.h — batches of preprocessed images, decoded ahead of use by
 * background threads (double buffering).
 *
 * Batch k holds dataset items [k·batch, (k+1)·batch) (the last may be
 * shorter), preprocessed by lpv_preprocess into (n, 3, S, S) floats. Two
 * batch buffers exist: while the caller works on one, the decoder threads
 * fill the other. An image that cannot be read or decoded is left out of x
 * and listed in the batch's failures (path and message), so one bad file
 * does not stop an evaluation; with opts.strict it makes lpv_loader_next
 * fail instead.
 *
 * The skip policy every pass over a calibration set shares (statistics,
 * refit, refinement, ...): an unreadable image is skipped, logged once and
 * counted in an lpv_skips the caller keeps over all its passes (an image
 * that fails in several passes counts once), and a pass fails, with
 * lpv_loader_verdict, only when fewer than half of its images could be read.
 *
 * Ownership: the loader borrows the dataset (keep it alive until close),
 * copies the preproc and owns the batch buffers; a returned batch stays
 * valid until the next lpv_loader_next or lpv_loader_close. Buffers and
 * per-thread scratch are allocated at open and reused (stb_image still
 * allocates while decoding). Close may be called at any point; it waits for
 * each decoder thread to finish the image it is on.
 *
 *     lpv_loader *L; lpv_batch b; lpv_err err;
 *     lpv_loader_opts o = {.batch = 64, .threads = 1};
 *     if (lpv_loader_open(&L, &ds, &pp, &o, &err)) die(err.msg);
 *     while (lpv_loader_next(L, &b, &err) == LPV_OK && b.count > 0)
 *         run(b.x, b.n, b.labels);              // b.n may be < b.count
 *     lpv_loader_close(L);
 */
#ifndef LPVIT_LOADER_H
#define LPVIT_LOADER_H

#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/image.h"

/* Images skipped over one or more passes. Owns only its path array; the
 * paths are borrowed from the dataset's items. Zero-initialize, free with
 * lpv_skips_free. */
typedef struct {
    int n;                  /* distinct images skipped */
    const char **paths;     /* (n) */
    int cap;
    char first_reason[512]; /* the first skip's error, which names the file */
} lpv_skips;

/* Adds path (borrowed) the first time it is seen; reason (may be NULL) becomes first_reason when the list was
 * empty. Returns 1 when it was added (best effort: 0 also when the array cannot grow). */
int lpv_skips_add(lpv_skips *s, const char *path, const char *reason);
void lpv_skips_free(lpv_skips *s);

typedef struct {
    int batch;   /* dataset items per batch, >= 1 */
    int threads; /* decoder threads, 1..64 (0 means 1) */
    int strict;  /* a file that fails to load fails lpv_loader_next */
    lpv_skips *skips; /* optional: failures are added here (and logged) the first time they are seen */
} lpv_loader_opts;

typedef struct {
    int index;          /* dataset item */
    const char *path;
    const char *reason; /* the load error, which names the file */
} lpv_load_failure;

typedef struct {
    int n;              /* images in x */
    float *x;           /* (n, 3, S, S) */
    const int *labels;  /* (n) */
    const int *index;   /* (n) dataset item of each image */
    int first;          /* first dataset item of the batch */
    int count;          /* items covered, n + n_failed; 0 once the dataset is done */
    int n_failed;
    const lpv_load_failure *failed; /* (n_failed) in item order */
} lpv_batch;

typedef struct lpv_loader lpv_loader;

lpv_status lpv_loader_open(lpv_loader **out, const lpv_dataset *ds, const lpv_preproc *pp,
                           const lpv_loader_opts *opts, lpv_err *err);
/* Next batch in dataset order; at the end returns LPV_OK with b->count == 0.
 * Strict mode: LPV_E_DATA with the first failure's message. */
lpv_status lpv_loader_next(lpv_loader *L, lpv_batch *b, lpv_err *err);
/* Once the last batch is read: LPV_E_DATA when no image, or fewer than half of the dataset's, could be
 * read (the message names the first failure); LPV_OK otherwise. `what` names the pass ("statistics"). */
lpv_status lpv_loader_verdict(const lpv_loader *L, const char *what, lpv_err *err);
/* Stops the threads (each finishes its current image) and frees everything. NULL is a no-op. */
void lpv_loader_close(lpv_loader *L);

#endif
