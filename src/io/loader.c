/* loader.c — prefetching batch loader (see include/lpvit/loader.h).
 *
 * Scheme: items are claimed one at a time, in order, by the decoder threads
 * under one mutex. Item j belongs to batch j / B, which lives in slot
 * (j / B) % 2. A thread may claim an item only when its batch's slot is free,
 * i.e. batch < released + 2, where `released` counts batches the caller has
 * handed back (by asking for the next one). Each slot counts its unfinished
 * items; the caller waits until the batch it wants has none left. Images are
 * written straight into their position in the slot, and holes left by
 * failed images are closed up by the caller's thread before returning.
 */
#include "lpvit/loader.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "lpvit/log.h"

#define MAX_BATCH 65536
#define MAX_THREADS 64

typedef struct {
    int batch;                /* batch being filled or held; -1 before the first */
    int remaining;            /* items of that batch not finished yet */
    float *x;                 /* (B, 3, S, S) */
    int *labels, *index;      /* (B) */
    unsigned char *ok;        /* (B) per position: image loaded */
    lpv_err *why;             /* (B) per position: the error when not */
    lpv_load_failure *failed; /* (B) the failures handed to the caller */
} slot;

typedef struct {
    struct lpv_loader *L;
    pthread_t tid;
    lpv_resize_scratch scratch;
    uint8_t *file; /* the current file's bytes, reused */
    size_t cap_file;
} worker;

struct lpv_loader {
    const lpv_dataset *ds;
    lpv_preproc pp;
    int B, n_items, n_batches, strict;
    lpv_skips *skips;
    int n_loaded, n_failed; /* over the batches returned so far (caller's thread only) */
    char first_failure[512];
    size_t per; /* floats per image: 3 S S */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;  /* a slot was released, or stop */
    pthread_cond_t cv_ready; /* a batch was finished */
    /* all below are guarded by mu */
    int next_item; /* next item to claim */
    int released;  /* batches the caller has handed back */
    int consumed;  /* batches returned to the caller */
    int held;      /* the caller holds batch consumed - 1 */
    int stop;
    slot slot[2];
    int n_workers; /* threads started */
    worker *w;
};

/* ------------------------------------------------------------------------- */
/* one image, on a decoder thread */

/* Reads a whole file into the worker's buffer (no allocation once it is large enough). */
static lpv_status read_into(worker *w, const char *path, size_t *n, lpv_err *err) {
    char ebuf[128];
    int fd;
    size_t size, got = 0;
    LPV_TRY(lpv_open_regular(path, &fd, &size, err));
    lpv_status st = LPV_OK;
    if (size > LPV_IMAGE_MAX_FILE) {
        st = lpv_fail(err, LPV_E_DATA, "'%s' is %zu bytes, more than the %zu allowed", path, size, LPV_IMAGE_MAX_FILE);
        size = 0;
    }
    if (st == LPV_OK && size + 1 > w->cap_file) {
        free(w->file);
        w->file = malloc(size + 1);
        w->cap_file = w->file ? size + 1 : 0;
        if (!w->file) st = lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    }
    while (st == LPV_OK && got < size) {
        ssize_t r = read(fd, w->file + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) st = lpv_fail(err, LPV_E_IO, "cannot read '%s': %s", path, strerror_r(errno, ebuf, sizeof ebuf));
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    *n = got; /* a file that shrank while read is decoded as it is */
    return st;
}

/* File -> pixels -> (3, S, S) floats at out; any failure leaves out unspecified. */
static lpv_status load_one(worker *w, const lpv_item *it, float *out, lpv_err *err) {
    size_t n = 0;
    LPV_TRY(read_into(w, it->path, &n, err));
    lpv_image im;
    LPV_TRY(lpv_image_load_mem(w->file, n, it->path, &im, err));
    lpv_status st = lpv_preprocess(&im, &w->L->pp, out, &w->scratch, err);
    lpv_image_free(&im);
    return st;
}

/* Claims items in order until there are none or the loader stops. The
 * decode runs without the lock; the slot pointer and position stay valid
 * because a slot is not reopened until the caller releases its batch. */
static void *worker_main(void *arg) {
    worker *w = arg;
    struct lpv_loader *L = w->L;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        /* wait until the next item's slot is free */
        while (!L->stop && L->next_item < L->n_items && L->next_item / L->B >= L->released + 2)
            pthread_cond_wait(&L->cv_work, &L->mu);
        if (L->stop || L->next_item >= L->n_items) break;
        int j = L->next_item++, b = j / L->B, pos = j - b * L->B;
        slot *s = &L->slot[b % 2];
        if (pos == 0) { /* first item of a batch: (re)open its slot */
            s->batch = b;
            s->remaining = L->n_items - j < L->B ? L->n_items - j : L->B;
        }
        pthread_mutex_unlock(&L->mu);
        lpv_err e;
        lpv_status st = load_one(w, &L->ds->items[j], s->x + (size_t)pos * L->per, &e);
        pthread_mutex_lock(&L->mu);
        s->ok[pos] = st == LPV_OK;
        if (st != LPV_OK) s->why[pos] = e;
        if (--s->remaining == 0) pthread_cond_broadcast(&L->cv_ready);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* caller side */

/* The two batch buffers, allocated once: (B, 3, S, S) floats each. */
static lpv_status slots_alloc(struct lpv_loader *L, lpv_err *err) {
    for (int i = 0; i < 2; i++) {
        slot *s = &L->slot[i];
        s->batch = -1;
        void *x = NULL;
        if (posix_memalign(&x, 64, (size_t)L->B * L->per * sizeof(float)) != 0) x = NULL;
        s->x = x;
        s->labels = malloc((size_t)L->B * sizeof(int));
        s->index = malloc((size_t)L->B * sizeof(int));
        s->ok = malloc((size_t)L->B);
        s->why = malloc((size_t)L->B * sizeof(lpv_err));
        s->failed = malloc((size_t)L->B * sizeof(lpv_load_failure));
        if (!s->x || !s->labels || !s->index || !s->ok || !s->why || !s->failed)
            return lpv_fail(err, LPV_E_OOM, "out of memory for two batches of %d images of %dx%d", L->B,
                            L->pp.img_size, L->pp.img_size);
    }
    return LPV_OK;
}

static void slots_free(struct lpv_loader *L) {
    for (int i = 0; i < 2; i++) {
        slot *s = &L->slot[i];
        free(s->x);
        free(s->labels);
        free(s->index);
        free(s->ok);
        free(s->why);
        free(s->failed);
    }
}

lpv_status lpv_loader_open(lpv_loader **out, const lpv_dataset *ds, const lpv_preproc *pp,
                           const lpv_loader_opts *opts, lpv_err *err) {
    *out = NULL;
    LPV_TRY(lpv_preproc_check(pp, err));
    int threads = opts->threads ? opts->threads : 1;
    if (opts->batch < 1 || opts->batch > MAX_BATCH)
        return lpv_fail(err, LPV_E_ARG, "batch size %d is out of range, expected 1..%d", opts->batch, MAX_BATCH);
    if (threads < 1 || threads > MAX_THREADS)
        return lpv_fail(err, LPV_E_ARG, "decoder threads %d is out of range, expected 1..%d", threads, MAX_THREADS);
    struct lpv_loader *L = calloc(1, sizeof *L);
    if (!L) return lpv_fail(err, LPV_E_OOM, "out of memory opening the loader");
    L->ds = ds;
    L->pp = *pp;
    L->B = opts->batch;
    L->strict = opts->strict;
    L->skips = opts->skips;
    L->n_items = ds->n;
    L->n_batches = (ds->n + L->B - 1) / L->B;
    L->per = (size_t)3 * pp->img_size * pp->img_size;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_work, NULL);
    pthread_cond_init(&L->cv_ready, NULL);
    lpv_status st = slots_alloc(L, err);
    if (st == LPV_OK && !(L->w = calloc((size_t)threads, sizeof *L->w)))
        st = lpv_fail(err, LPV_E_OOM, "out of memory opening the loader");
    for (int i = 0; st == LPV_OK && i < threads; i++) {
        L->w[i].L = L;
        int rc = pthread_create(&L->w[i].tid, NULL, worker_main, &L->w[i]);
        if (rc != 0) st = lpv_fail(err, LPV_E_OOM, "cannot start decoder thread %d: %s", i, strerror(rc));
        else L->n_workers++;
    }
    if (st != LPV_OK) {
        lpv_loader_close(L);
        return st;
    }
    *out = L;
    return LPV_OK;
}

int lpv_skips_add(lpv_skips *s, const char *path, const char *reason) {
    for (int i = 0; i < s->n; i++) /* a linear scan: skips are rare */
        if (strcmp(s->paths[i], path) == 0) return 0;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        const char **p = realloc(s->paths, sizeof *p * (size_t)cap);
        if (!p) return 0; /* counting is best effort; the pass itself goes on */
        s->paths = p, s->cap = cap;
    }
    if (!s->n && reason) snprintf(s->first_reason, sizeof s->first_reason, "%s", reason);
    s->paths[s->n++] = path;
    return 1;
}

/* Records a failure, and logs it, the first time its file is seen. */
static void skips_add(lpv_skips *s, const lpv_load_failure *f) {
    if (lpv_skips_add(s, f->path, f->reason)) lpv_warn("image skipped: %s", f->reason);
}

void lpv_skips_free(lpv_skips *s) {
    free(s->paths);
    memset(s, 0, sizeof *s);
}

lpv_status lpv_loader_verdict(const lpv_loader *L, const char *what, lpv_err *err) {
    if (L->n_loaded == 0 && L->n_items > 0)
        return lpv_fail(err, LPV_E_DATA, "%s: none of the %d images could be read (first: %s)", what, L->n_items,
                        L->first_failure);
    if (2 * L->n_failed > L->n_items)
        return lpv_fail(err, LPV_E_DATA, "%s: %d of %d images could not be read (first: %s)", what, L->n_failed,
                        L->n_items, L->first_failure);
    return LPV_OK;
}

/* Closes up the holes of failed images and fills b from slot s (batch bi).
 * Runs on the caller's thread while the workers fill the other slot; the
 * copies only happen when something failed. */
static lpv_status batch_finish(struct lpv_loader *L, slot *s, int bi, lpv_batch *b, lpv_err *err) {
    int first = bi * L->B, count = L->n_items - first < L->B ? L->n_items - first : L->B;
    int n = 0, nf = 0;
    for (int pos = 0; pos < count; pos++) {
        const lpv_item *it = &L->ds->items[first + pos];
        if (!s->ok[pos]) {
            s->failed[nf++] = (lpv_load_failure){first + pos, it->path, s->why[pos].msg};
            continue;
        }
        if (n != pos) memcpy(s->x + (size_t)n * L->per, s->x + (size_t)pos * L->per, L->per * sizeof(float));
        s->labels[n] = it->label;
        s->index[n] = first + pos;
        n++;
    }
    *b = (lpv_batch){n, s->x, s->labels, s->index, first, count, nf, s->failed};
    if (nf > 0 && !L->n_failed) snprintf(L->first_failure, sizeof L->first_failure, "%s", s->failed[0].reason);
    L->n_loaded += n, L->n_failed += nf;
    for (int i = 0; i < nf && L->skips; i++) skips_add(L->skips, &s->failed[i]);
    if (L->strict && nf > 0) return lpv_fail(err, LPV_E_DATA, "%s", s->failed[0].reason);
    return LPV_OK;
}

lpv_status lpv_loader_next(lpv_loader *L, lpv_batch *b, lpv_err *err) {
    memset(b, 0, sizeof *b);
    pthread_mutex_lock(&L->mu);
    if (L->held) { /* the caller is done with the previous batch: its slot may refill */
        L->held = 0;
        L->released++;
        pthread_cond_broadcast(&L->cv_work);
    }
    if (L->consumed >= L->n_batches) {
        pthread_mutex_unlock(&L->mu);
        return LPV_OK;
    }
    int bi = L->consumed;
    slot *s = &L->slot[bi % 2];
    while (!(s->batch == bi && s->remaining == 0)) pthread_cond_wait(&L->cv_ready, &L->mu);
    L->consumed++;
    L->held = 1;
    pthread_mutex_unlock(&L->mu);
    return batch_finish(L, s, bi, b, err);
}

/* Workers check `stop` before every claim, so each finishes at most the
 * image it is decoding; nothing waits on the caller, so close cannot hang. */
void lpv_loader_close(lpv_loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->cv_work);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->n_workers; i++) pthread_join(L->w[i].tid, NULL);
    if (L->w) {
        for (int i = 0; i < L->n_workers; i++) {
            lpv_resize_scratch_free(&L->w[i].scratch);
            free(L->w[i].file);
        }
        free(L->w);
    }
    slots_free(L);
    pthread_cond_destroy(&L->cv_work);
    pthread_cond_destroy(&L->cv_ready);
    pthread_mutex_destroy(&L->mu);
    free(L);
}
