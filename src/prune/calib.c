/* calib.c — calibration gradients / Fisher and their zlib cache (see include/lpvit/calib.h). */
#include "lpvit/calib.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/loader.h"
#include "lpvit/log.h"
#include "lpvit/report.h"
#include "lpvit/rng.h"
#include "lpvit/safetensors.h"

#define CALIB_FORMAT "lpvit-calib-v1"

/* The build a cache entry is valid for: version, commit and JPEG decoder (the decoder changes the pixels, so
 * an stb build and a libjpeg build of one commit must not share gradients). */
void lpv_cache_build_id(char *buf, size_t cap) {
    snprintf(buf, cap, "%s %s %s", lpv_version(), lpv_commit(), lpv_image_jpeg_decoder());
}

void lpv_calib_key(char *key, size_t cap, const char *model_sha, const char *images_sha, const lpv_calib_opts *o,
                   const lpv_preproc *pp) {
    char id[96];
    lpv_cache_build_id(id, sizeof id);
    snprintf(key, cap,
             "{\"format\": \"%s\", \"lpvit\": \"%s\", \"model_sha256\": \"%s\", \"images_sha256\": \"%s\", "
             "\"loss\": \"%s\", \"mean\": %d, \"fisher\": %d, \"blocks\": \"%dx%d\", \"batch\": %d, \"seed\": %llu, "
             "\"preprocess\": \"%d %.6g %s %.6g,%.6g,%.6g %.6g,%.6g,%.6g\"}",
             CALIB_FORMAT, id, model_sha, images_sha, lpv_loss_name(o->loss), !o->no_mean, o->fisher,
             o->block_R, o->block_C, o->batch, (unsigned long long)o->seed, pp->img_size, pp->crop_pct,
             lpv_interp_name(pp->interp), (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2],
             (double)pp->std[0], (double)pp->std[1], (double)pp->std[2]);
}

static int64_t n_blocks(const lpv_linear *L, int R, int C) {
    return lpv_nblocks(L->out, L->in, R, C);
}

static lpv_status stats_alloc(lpv_calib_stats *s, lpv_model *m, const lpv_calib_opts *o, lpv_err *err) {
    lpv_arena_init(&s->arena, 1 << 20);
    s->n = lpv_model_layers(m, s->refs, LPV_MAX_LAYERS);
    s->block_R = o->block_R, s->block_C = o->block_C;
    for (int i = 0; i < s->n; i++) {
        const lpv_linear *L = s->refs[i].lin;
        size_t bytes = sizeof(float) * (size_t)L->out * (size_t)L->in;
        s->g[i] = o->no_mean ? NULL : lpv_arena_alloc(&s->arena, bytes);
        s->f[i] = o->fisher ? lpv_arena_alloc(&s->arena, bytes) : NULL;
        s->bf[i] = o->block_R ? lpv_arena_alloc(&s->arena, sizeof(float) * (size_t)n_blocks(L, o->block_R, o->block_C))
                              : NULL;
        if ((!o->no_mean && !s->g[i]) || (o->fisher && !s->f[i]) || (o->block_R && !s->bf[i]))
            return lpv_fail(err, LPV_E_OOM, "out of memory for calibration statistics");
    }
    return LPV_OK;
}

/* A label drawn from softmax(l) (kl's true-Fisher estimate), from a stream seeded by the image's place in the
   whole list: the same label whichever rank or batch the image falls in. */
static int sample_label(const float *l, int C, uint64_t seed, int64_t item) {
    lpv_rng r;
    lpv_rng_seed(&r, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(item + 1)));
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < C; j++) mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < C; j++) s += exp(l[j] - mx);
    double u = lpv_rng_uniform(&r) * s, acc = 0;
    for (int j = 0; j < C; j++) {
        acc += exp(l[j] - mx);
        if (acc >= u) return j;
    }
    return C - 1;
}

/* The loss of one batch: ce checks its labels, kl draws them from the model's own prediction. */
static lpv_status batch_loss(lpv_model *m, lpv_train_ws *ws, const lpv_dataset *ds, int first, const lpv_batch *b,
                             const lpv_calib_opts *o, int *labels, float *logits, lpv_loss *loss, lpv_err *err) {
    *loss = (lpv_loss){o->loss, NULL, NULL};
    if (o->loss == LPV_LOSS_CE) {
        for (int i = 0; i < b->n; i++)
            if (b->labels[i] < 0 || b->labels[i] >= m->cfg.classes) {
                const char *p = ds->items[b->index[i]].path;
                return b->labels[i] < 0 ? lpv_fail_param(err, LPV_E_DATA, "loss", "ce needs labels: '%s' has none", p)
                                        : lpv_fail(err, LPV_E_DATA, "'%s' is class %d, but the model has %d classes", p,
                                                   b->labels[i], m->cfg.classes);
            }
        loss->labels = b->labels;
    } else if (o->loss == LPV_LOSS_KL) { /* forward once to sample labels from the dense prediction */
        lpv_loss fwd = {LPV_LOSS_MEAN_SQ, NULL, NULL}; /* any loss: only the logits are used */
        LPV_TRY(lpv_forward_backward(m, ws, b->x, b->n, &fwd, NULL, logits, NULL, err));
        for (int i = 0; i < b->n; i++)
            labels[i] = sample_label(logits + (int64_t)i * m->cfg.classes, m->cfg.classes, o->seed, first + b->index[i]);
        loss->kind = LPV_LOSS_CE;
        loss->labels = labels;
    }
    return LPV_OK;
}

/* Adds one batch's per-layer sums into s (sums, not means: batch means weighted by the batch's size). */
static void add_batch(lpv_calib_stats *s, const lpv_grads *g, const lpv_calib_opts *o, int n) {
    for (int i = 0; i < s->n; i++) {
        lpv_linear_grad *lg = lpv_grads_linear((lpv_grads *)g, s->refs[i].kind, s->refs[i].block);
        int64_t nw = (int64_t)lg->out * lg->in;
        float *dst = s->g[i];
        if (dst)
            for (int64_t q = 0; q < nw; q++) dst[q] += (float)n * lg->w[q];
        if (o->fisher)
            for (int64_t q = 0; q < nw; q++) s->f[i][q] += lg->sq[q];
        if (o->block_R) {
            int64_t nb = n_blocks(s->refs[i].lin, o->block_R, o->block_C);
            for (int64_t q = 0; q < nb; q++) s->bf[i][q] += lg->bsq[q];
        }
    }
    s->samples += n;
}

/* Forward/backward over this rank's share ds (items [first, ...) of the whole list): sums into s, the loss
   summed into *loss_sum. */
static lpv_status collect_share(lpv_model *m, const lpv_dataset *ds, int first, const lpv_preproc *pp,
                                const lpv_calib_opts *o, lpv_calib_stats *s, double *loss_sum, lpv_err *err) {
    int batch = o->batch < ds->n ? o->batch : ds->n;
    lpv_train_ws ws;
    lpv_grads g;
    LPV_TRY(lpv_train_ws_init(&ws, &m->cfg, batch, err));
    int flags = (o->fisher ? LPV_GRADS_SQ : 0) | (o->no_mean ? LPV_GRADS_NO_MEAN : 0);
    lpv_status st = lpv_grads_init(&g, &m->cfg, flags, err);
    if (st) {
        lpv_train_ws_free(&ws);
        return st;
    }
    if (o->block_R) st = lpv_grads_enable_blocks(&g, o->block_R, o->block_C, err);
    lpv_loader *L = NULL;
    lpv_loader_opts lo = {batch, 1, 0, o->skips};
    int *labels = malloc(sizeof(int) * (size_t)batch);
    float *logits = malloc(sizeof(float) * (size_t)batch * m->cfg.classes);
    if (!st && (!labels || !logits)) st = lpv_fail(err, LPV_E_OOM, "out of memory");
    if (!st) st = lpv_loader_open(&L, ds, pp, &lo, err);
    long done = 0;
    lpv_progress pr;
    const char *what = o->label ? o->label : "statistics";
    lpv_progress_begin(&pr, ds->n, "%s", what);
    while (st == LPV_OK) {
        lpv_batch b;
        if ((st = lpv_loader_next(L, &b, err)) != LPV_OK || b.count == 0) break;
        done += b.count;
        if (b.n == 0) continue;
        lpv_loss loss;
        if ((st = batch_loss(m, &ws, ds, first, &b, o, labels, logits, &loss, err)) != LPV_OK) break;
        lpv_grads_zero(&g);
        float lval = 0;
        if ((st = lpv_forward_backward(m, &ws, b.x, b.n, &loss, &lval, NULL, &g, err)) != LPV_OK) break;
        *loss_sum += (double)lval * b.n;
        add_batch(s, &g, o, b.n);
        lpv_progress_update(&pr, done, "loss %.4f", *loss_sum / (double)s->samples);
    }
    if (st == LPV_OK) st = lpv_loader_verdict(L, what, err);
    if (st == LPV_OK) lpv_progress_end(&pr);
    lpv_loader_close(L);
    free(labels), free(logits);
    lpv_grads_free(&g);
    lpv_train_ws_free(&ws);
    return st;
}

/* Every rank's sums added (dist.h); identical on every rank afterwards. */
static lpv_status sum_ranks(lpv_calib_stats *s, const lpv_calib_opts *o, double *loss_sum, lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    for (int i = 0; i < s->n; i++) {
        int64_t nw = (int64_t)s->refs[i].lin->out * s->refs[i].lin->in;
        if (s->g[i]) LPV_TRY(lpv_dist_sum_f32(s->g[i], nw, err));
        if (o->fisher) LPV_TRY(lpv_dist_sum_f32(s->f[i], nw, err));
        if (o->block_R) LPV_TRY(lpv_dist_sum_f32(s->bf[i], n_blocks(s->refs[i].lin, o->block_R, o->block_C), err));
    }
    int64_t n = s->samples;
    LPV_TRY(lpv_dist_sum_i64(&n, 1, err));
    s->samples = n;
    return lpv_dist_sum_f64(loss_sum, 1, err);
}

lpv_status lpv_calib_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_calib_opts *o,
                             lpv_calib_stats *s, lpv_err *err) {
    memset(s, 0, sizeof *s);
    if (ds->n < 1) return lpv_fail(err, LPV_E_DATA, "calibration set is empty");
    lpv_dataset mine;
    int first = 0;
    double loss_sum = 0;
    lpv_status st = stats_alloc(s, m, o, err);
    int viewed = st == LPV_OK && (st = lpv_dataset_share(&mine, ds, &first, err)) == LPV_OK;
    if (st == LPV_OK && mine.n > 0) st = collect_share(m, &mine, first, pp, o, s, &loss_sum, err);
    if (viewed) lpv_dataset_view_free(&mine);
    st = lpv_dist_agree(st, err); /* every rank gets here, whatever happened to it */
    if (st == LPV_OK) st = sum_ranks(s, o, &loss_sum, err);
    if (st == LPV_OK && s->samples == 0)
        st = lpv_fail(err, LPV_E_DATA, "no calibration image could be read (%d in the list)", ds->n);
    if (st == LPV_OK) {
        float inv = 1.0f / (float)s->samples;
        for (int i = 0; i < s->n; i++) {
            int64_t nw = (int64_t)s->refs[i].lin->out * s->refs[i].lin->in;
            if (s->g[i])
                for (int64_t q = 0; q < nw; q++) s->g[i][q] *= inv;
            if (o->fisher)
                for (int64_t q = 0; q < nw; q++) s->f[i][q] *= inv;
            if (o->block_R)
                for (int64_t q = 0; q < n_blocks(s->refs[i].lin, o->block_R, o->block_C); q++) s->bf[i][q] *= inv;
        }
        s->mean_loss = loss_sum / (double)s->samples;
    } else {
        lpv_calib_free(s);
    }
    return st;
}

/* "calib-" or "step-": the kind of cache file a name is, by its prefix (NULL: neither). */
static const char *cache_prefix(const char *name) {
    return strncmp(name, "calib-", 6) == 0 ? "calib-" : strncmp(name, "step-", 5) == 0 ? "step-" : NULL;
}

/* ---- cache: safetensors, gzip-compressed ---- */

/* Removes the temp files that earlier writers left in the cache folder, by this cache's naming only:
 * "calib-*.lpvc.tmp.<pid>" (lpv_atomic's name, and the gzip temp of older lpvit) and
 * "calib-*.lpvc.raw.<pid>" (the uncompressed temp of older lpvit). Such a file is stale when its
 * writer is gone: no process has that pid (a SIGKILL, a crash, a power cut, an older lpvit). A live
 * pid keeps its file, since another lpvit may be writing that cache file right now; but pids are
 * reused, so a live pid may belong to an unrelated process while the writer is long dead: a file
 * older than a day is stale whatever its pid (a cache write takes seconds). A pid in another pid
 * namespace looks dead from here; deleting a write in flight there only makes that save fail with
 * a warning, since the cache is optional. */
int lpv_calib_cache_clean_temps(const char *dir, int dry_run, int64_t *bytes) {
    int count = 0;
    if (bytes) *bytes = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *x = strstr(e->d_name, ".lpvc.");
        if (!cache_prefix(e->d_name) || !x) continue;
        x += 6;
        if (strncmp(x, "tmp.", 4) != 0 && strncmp(x, "raw.", 4) != 0) continue;
        char *end;
        long pid = strtol(x + 4, &end, 10);
        if (end == x + 4 || *end || pid <= 0) continue;
        char full[1600];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        int dead = kill((pid_t)pid, 0) == -1 && errno == ESRCH;
        if (!dead && now - st.st_mtime <= 24 * 3600) continue;
        if (dry_run || unlink(full) == 0) {
            count++;
            if (bytes) *bytes += st.st_size;
        }
    }
    closedir(d);
    return count;
}

/* The temp cleanup for the folder of the cache file path. */
static void cache_clean_stale(const char *path) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) slash[1] = 0;
    else *slash = 0;
    lpv_calib_cache_clean_temps(dir, 0, NULL);
}

/* lpv_st_write_to's sink: the bytes into a gzip stream (gzwrite takes an unsigned count). */
static int gz_sink(void *ctx, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n) {
        unsigned k = n > (1u << 30) ? 1u << 30 : (unsigned)n;
        if (gzwrite((gzFile)ctx, p, k) != (int)k) return -1;
        p += k, n -= k;
    }
    return 0;
}

lpv_status lpv_calib_save(const lpv_calib_stats *s, const char *path, lpv_err *err) {
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    lpv_status st = LPV_OK;
    for (int i = 0; i < s->n && st == LPV_OK; i++) {
        char nm[96];
        int64_t shape[2] = {s->refs[i].lin->out, s->refs[i].lin->in};
        snprintf(nm, sizeof nm, "g.%s", s->refs[i].name);
        if (s->g[i]) st = lpv_st_writer_add(&w, nm, LPV_DT_F32, 2, shape, s->g[i], err);
        if (st == LPV_OK && s->f[i]) {
            snprintf(nm, sizeof nm, "f.%s", s->refs[i].name);
            st = lpv_st_writer_add(&w, nm, LPV_DT_F32, 2, shape, s->f[i], err);
        }
        if (st == LPV_OK && s->bf[i]) {
            const lpv_linear *L = s->refs[i].lin;
            int64_t bshape[2] = {(L->out + s->block_R - 1) / s->block_R, (L->in + s->block_C - 1) / s->block_C};
            snprintf(nm, sizeof nm, "b.%s", s->refs[i].name);
            st = lpv_st_writer_add(&w, nm, LPV_DT_F32, 2, bshape, s->bf[i], err);
        }
    }
    char num[64];
    snprintf(num, sizeof num, "%lld", (long long)s->samples);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.calib_key", s->key, err);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.samples", num, err);
    snprintf(num, sizeof num, "%.9g", s->mean_loss);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.mean_loss", num, err);
    if (st == LPV_OK) st = lpv_cache_write(&w, path, err);
    lpv_st_writer_free(&w);
    return st;
}

lpv_status lpv_cache_write(const lpv_st_writer *w, const char *path, lpv_err *err) {
    cache_clean_stale(path);
    /* the safetensors bytes gzip straight into an atomic file (fileio.h): no uncompressed copy on
       disk, and the one temp-file mechanism of every output, signal cleanup included */
    lpv_atomic_file af;
    LPV_TRY(lpv_atomic_open(&af, path, err));
    int fd = dup(fileno(af.fp)); /* gzclose closes its own descriptor; af.fp keeps the file for the commit */
    gzFile z = fd >= 0 ? gzdopen(fd, "wb1") : NULL;
    lpv_status st = LPV_OK;
    if (!z) {
        if (fd >= 0) close(fd);
        st = lpv_fail(err, LPV_E_IO, "cannot write cache file '%s': %s", path, strerror(errno));
    } else {
        st = lpv_st_write_to(w, gz_sink, z, path, err);
        if (gzclose(z) != Z_OK && st == LPV_OK) st = lpv_fail(err, LPV_E_IO, "cannot write cache file '%s'", path);
    }
    if (st == LPV_OK) return lpv_atomic_commit(&af, err);
    lpv_atomic_abort(&af);
    return st;
}

/* gunzip path into a malloc'd buffer, at most cap bytes. */
static lpv_status gunzip_file(const char *path, uint8_t **out, size_t *n, size_t cap, lpv_err *err) {
    int fd;
    LPV_TRY(lpv_open_regular(path, &fd, NULL, err)); /* a FIFO named like a cache file must not hang prune */
    gzFile z = gzdopen(fd, "rb");
    if (!z) {
        close(fd);
        return lpv_fail(err, LPV_E_IO, "cannot open '%s'", path);
    }
    size_t size = 0, alloc = 1 << 20;
    uint8_t *buf = malloc(alloc);
    lpv_status st = buf ? LPV_OK : lpv_fail(err, LPV_E_OOM, "out of memory");
    while (st == LPV_OK) {
        if (size == alloc) {
            if (alloc >= cap) {
                st = lpv_fail(err, LPV_E_FORMAT, "'%s' inflates past %zu bytes", path, cap);
                break;
            }
            alloc = alloc * 2 < cap ? alloc * 2 : cap;
            uint8_t *nb = realloc(buf, alloc);
            if (!nb) {
                st = lpv_fail(err, LPV_E_OOM, "out of memory");
                break;
            }
            buf = nb;
        }
        int got = gzread(z, buf + size, (unsigned)(alloc - size > (1u << 30) ? (1u << 30) : alloc - size));
        if (got < 0) {
            int e;
            st = lpv_fail(err, LPV_E_FORMAT, "'%s' is not a valid gzip stream (%s)", path, gzerror(z, &e));
            break;
        }
        if (got == 0) break;
        size += (size_t)got;
    }
    if (gzclose(z) != Z_OK && st == LPV_OK) st = lpv_fail(err, LPV_E_FORMAT, "'%s': gzip stream is corrupt", path);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    *n = size;
    return LPV_OK;
}

lpv_status lpv_cache_read(const char *path, uint8_t **buf, lpv_st_file *f, lpv_err *err) {
    size_t n = 0;
    LPV_TRY(gunzip_file(path, buf, &n, (size_t)16 << 30, err));
    lpv_status st = lpv_st_parse(f, *buf, n, path, err);
    if (st) {
        free(*buf);
        *buf = NULL;
    }
    return st;
}

lpv_status lpv_calib_load(lpv_calib_stats *s, lpv_model *m, const char *path, const char *key,
                          const lpv_calib_opts *o, lpv_err *err) {
    memset(s, 0, sizeof *s);
    uint8_t *buf = NULL;
    lpv_st_file f;
    LPV_TRY(lpv_cache_read(path, &buf, &f, err));
    lpv_status st = LPV_OK;
    const char *k = lpv_st_meta(&f, "lpvit.calib_key"), *ns = lpv_st_meta(&f, "lpvit.samples");
    const char *ml = lpv_st_meta(&f, "lpvit.mean_loss");
    if (!k || strcmp(k, key) != 0) st = lpv_fail(err, LPV_E_FORMAT, "'%s' was made for other inputs", path);
    if (!st && (!ns || atoll(ns) < 1)) st = lpv_fail(err, LPV_E_FORMAT, "'%s' has no sample count", path);
    if (!st) st = stats_alloc(s, m, o, err);
    for (int i = 0; i < s->n && st == LPV_OK; i++) {
        const lpv_linear *L = s->refs[i].lin;
        const char *kinds[3] = {"g", "f", "b"};
        float *dst[3] = {s->g[i], s->f[i], s->bf[i]};
        int64_t rows[3] = {L->out, L->out, o->block_R ? (L->out + o->block_R - 1) / o->block_R : 0};
        int64_t cols[3] = {L->in, L->in, o->block_C ? (L->in + o->block_C - 1) / o->block_C : 0};
        for (int which = 0; which < 3 && st == LPV_OK; which++) {
            if (!dst[which]) continue;
            char nm[96];
            snprintf(nm, sizeof nm, "%s.%s", kinds[which], s->refs[i].name);
            const lpv_st_tensor *t = lpv_st_find(&f, nm);
            if (!t || t->dtype != LPV_DT_F32 || t->ndim != 2 || t->shape[0] != rows[which] || t->shape[1] != cols[which])
                st = lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' missing or not F32 [%lld, %lld]", path, nm,
                              (long long)rows[which], (long long)cols[which]);
            else st = lpv_st_read_f32(&f, t, dst[which], err);
        }
    }
    if (!st) {
        s->samples = atoll(ns);
        s->mean_loss = ml ? atof(ml) : NAN;
        s->from_cache = 1;
        snprintf(s->key, sizeof s->key, "%s", key);
    }
    lpv_st_close(&f);
    free(buf);
    if (st) lpv_calib_free(s);
    return st;
}

void lpv_calib_free(lpv_calib_stats *s) {
    lpv_arena_free(&s->arena);
    s->n = 0;
}

/* ---- the cache folder: list and clean (lpvit cache) ---- */

int lpv_calib_cache_name(const char *name) {
    const char *pre = cache_prefix(name);
    size_t p = pre ? strlen(pre) : 0;
    if (!pre || strlen(name) != p + 64 + 5 || strcmp(name + p + 64, ".lpvc") != 0) return 0;
    for (size_t i = p; i < p + 64; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return 0;
    return 1;
}

/* Exactly n bytes of the stream, or an error naming what broke: a damaged stream or a short file. */
static lpv_status gz_read_exact(gzFile z, void *buf, size_t n, const char *path, const char *what, lpv_err *err) {
    size_t got = 0;
    while (got < n) {
        unsigned k = n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got);
        int r = gzread(z, (uint8_t *)buf + got, k);
        int e = Z_OK;
        const char *msg = gzerror(z, &e);
        if (r < 0 || (r == 0 && e != Z_OK))
            return lpv_fail(err, LPV_E_FORMAT, "'%s' is not a valid gzip stream (%s)", path, msg);
        if (r == 0)
            return lpv_fail(err, LPV_E_FORMAT, "'%s' ends inside its %s (%zu of %zu bytes)", path, what, got, n);
        got += (size_t)r;
    }
    return LPV_OK;
}

/* A string member of a JSON object into dst ("" when absent or not a string). */
static void json_str(const cJSON *obj, const char *name, char *dst, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* The key's fields and the sample count from the header's __metadata__, by the safetensors rules that
 * matter here: one JSON object, __metadata__ an object of strings. */
static lpv_status entry_from_header(lpv_calib_entry *e, const char *text, size_t len, const char *path,
                                    lpv_err *err) {
    cJSON *h = cJSON_ParseWithLength(text, len);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    lpv_status st = LPV_OK;
    if (!cJSON_IsObject(h)) st = lpv_fail(err, LPV_E_FORMAT, "'%s': header is not a JSON object", path);
    else if (!cJSON_IsObject(meta)) st = lpv_fail(err, LPV_E_FORMAT, "'%s': header has no __metadata__", path);
    for (const cJSON *c = st ? NULL : meta->child; c && !st; c = c->next)
        if (!cJSON_IsString(c)) st = lpv_fail(err, LPV_E_FORMAT, "'%s': metadata '%s' is not a string", path, c->string);
    const cJSON *k = st ? NULL : cJSON_GetObjectItemCaseSensitive(meta, "lpvit.calib_key");
    const cJSON *ns = st ? NULL : cJSON_GetObjectItemCaseSensitive(meta, "lpvit.samples");
    const cJSON *ml = st ? NULL : cJSON_GetObjectItemCaseSensitive(meta, "lpvit.mean_loss");
    char *end = NULL;
    if (!st && (!k || strlen(k->valuestring) >= sizeof e->key))
        st = lpv_fail(err, LPV_E_FORMAT, "'%s' has no calibration key (lpvit.calib_key)", path);
    if (!st && ns) e->samples = strtoll(ns->valuestring, &end, 10);
    if (!st && (!ns || end == ns->valuestring || *end || e->samples < 1))
        st = lpv_fail(err, LPV_E_FORMAT, "'%s' has no sample count", path);
    if (!st) {
        snprintf(e->key, sizeof e->key, "%s", k->valuestring);
        e->mean_loss = ml ? atof(ml->valuestring) : NAN;
        cJSON *kj = cJSON_Parse(e->key); /* a key that is not JSON leaves the fields empty: stale below */
        json_str(kj, "format", e->format, sizeof e->format);
        json_str(kj, "lpvit", e->lpvit, sizeof e->lpvit);
        json_str(kj, "model_sha256", e->model_sha, sizeof e->model_sha);
        json_str(kj, "images_sha256", e->images_sha, sizeof e->images_sha);
        json_str(kj, "loss", e->loss, sizeof e->loss);
        cJSON_Delete(kj);
    }
    cJSON_Delete(h);
    return st;
}

/* The safetensors header of a gzipped cache file: gunzips the 8-byte length, checks it against the
 * safetensors cap before allocating, then gunzips just the header. */
static lpv_status read_header(lpv_calib_entry *e, const char *path, lpv_err *err) {
    int fd;
    LPV_TRY(lpv_open_regular(path, &fd, NULL, err));
    struct stat sb;
    if (fstat(fd, &sb) == 0) e->bytes = sb.st_size, e->mtime = sb.st_mtime;
    gzFile z = gzdopen(fd, "rb");
    if (!z) {
        close(fd);
        return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    }
    lpv_status st = LPV_OK;
    if (gzdirect(z)) st = lpv_fail(err, LPV_E_FORMAT, "'%s' is not gzip-compressed", path);
    uint8_t len8[8];
    uint64_t len = 0;
    if (!st) st = gz_read_exact(z, len8, 8, path, "header length", err);
    for (int i = 7; i >= 0 && !st; i--) len = len << 8 | len8[i];
    if (!st && (len < 2 || len > LPV_ST_MAX_HEADER))
        st = lpv_fail(err, LPV_E_FORMAT, "'%s': header length %llu out of range (2..%llu)", path,
                      (unsigned long long)len, LPV_ST_MAX_HEADER);
    char *text = st ? NULL : malloc((size_t)len);
    if (!st && !text) st = lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    if (!st) st = gz_read_exact(z, text, (size_t)len, path, "header", err);
    if (!st) st = entry_from_header(e, text, (size_t)len, path, err);
    free(text);
    gzclose(z); /* closes fd; the rest of the stream is not read, so its check value is not either */
    return st;
}

/* Stale: this build can never load it (calib.h). */
static int entry_stale(const lpv_calib_entry *e) {
    if (e->status == LPV_E_FORMAT) return 1;
    if (e->status != LPV_OK) return 0;
    char here[96], sha[65], name[96];
    const char *pre = cache_prefix(e->name);
    lpv_cache_build_id(here, sizeof here);
    lpv_sha256_hex(e->key, strlen(e->key), sha);
    snprintf(name, sizeof name, "%s%s.lpvc", pre ? pre : "", sha);
    const char *want = pre && strcmp(pre, "step-") == 0 ? LPV_STEP_FORMAT : CALIB_FORMAT;
    return strcmp(e->format, want) != 0 || strcmp(e->lpvit, here) != 0 || strcmp(e->name, name) != 0;
}

void lpv_calib_cache_entry(const char *dir, const char *name, lpv_calib_entry *e) {
    memset(e, 0, sizeof *e);
    e->mean_loss = NAN;
    snprintf(e->name, sizeof e->name, "%s", name);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat sb;
    if (lstat(path, &sb) == 0) e->bytes = sb.st_size, e->mtime = sb.st_mtime;
    lpv_err err;
    e->status = read_header(e, path, &err);
    if (e->status) {
        snprintf(e->problem, sizeof e->problem, "%s", err.msg);
        e->key[0] = e->format[0] = e->lpvit[0] = e->model_sha[0] = e->images_sha[0] = e->loss[0] = 0;
        e->samples = 0;
    }
    e->stale = entry_stale(e);
}

static int entry_cmp(const void *a, const void *b) {
    const lpv_calib_entry *x = a, *y = b;
    if (x->mtime != y->mtime) return x->mtime < y->mtime ? -1 : 1;
    return strcmp(x->name, y->name);
}

lpv_status lpv_calib_cache_scan(const char *dir, lpv_calib_entry **out, int *n, lpv_err *err) {
    *out = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lpv_fail(err, LPV_E_IO, "cannot list cache folder '%s': %s", dir, strerror(errno));
    lpv_calib_entry *v = NULL;
    int cnt = 0, cap = 0;
    lpv_status st = LPV_OK;
    struct dirent *de;
    while (!st && (de = readdir(d))) {
        char path[1200];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        /* only regular files of the cache's naming: never a link, a folder or anyone else's file */
        if (!lpv_calib_cache_name(de->d_name) || lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            lpv_calib_entry *nv = realloc(v, sizeof *v * (size_t)cap);
            if (!nv) {
                st = lpv_fail(err, LPV_E_OOM, "out of memory listing '%s'", dir);
                break;
            }
            v = nv;
        }
        lpv_calib_cache_entry(dir, de->d_name, &v[cnt++]);
    }
    closedir(d);
    if (st) {
        free(v);
        return st;
    }
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, entry_cmp);
    *out = v, *n = cnt;
    return LPV_OK;
}

int lpv_calib_cache_selected(const lpv_calib_entry *e, const lpv_calib_select *sel, int64_t now) {
    if (sel->all) return 1;
    if (sel->stale && e->stale) return 1;
    return sel->older_than_seconds >= 0 && (double)(now - e->mtime) > sel->older_than_seconds;
}

lpv_status lpv_calib_cache_remove(const char *dir, const lpv_calib_entry *e, lpv_err *err) {
    if (!lpv_calib_cache_name(e->name)) /* the one guard that no caller can skip */
        return lpv_fail(err, LPV_E_ARG, "'%s' is not a cache file", e->name);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, e->name);
    if (unlink(path) != 0 && errno != ENOENT)
        return lpv_fail(err, LPV_E_IO, "cannot remove '%s': %s", path, strerror(errno));
    return LPV_OK;
}
