/*
 * calib.h — the calibration statistics the saliency criteria need, gathered
 * in one pass over a calibration set, and their on-disk cache.
 *
 * For every linear layer of the model (lpv_model_layers order):
 *   g  (out, in)  mean over samples of ∂L_n/∂W   (first moment), unless no_mean
 *   f  (out, in)  mean over samples of (∂L_n/∂W)² (empirical Fisher diagonal), when asked
 *   bf (nbr, nbc) mean over samples of (Σ_block ∂L_n/∂W ⊙ W)² for R x C blocks, when asked:
 *                 w_bᵀ F_bb w_b with the block's full empirical Fisher, off-diagonal terms included
 * for a loss (grad.h): self-ce (the model's own top-1, no labels), mean-sq
 * (LPViT's mean(logits²)), ce (the folder's labels), or kl. The gradient of
 * KL(p_dense ‖ p) vanishes at the dense weights; its curvature is the Fisher
 * information, so `kl` uses labels drawn from p_dense (seeded): the "true
 * Fisher" Monte-Carlo estimate.
 *
 * Cache: a zlib (gzip) stream of a safetensors file holding what was gathered (g, f, bf) under
 * the timm layer names, with the key (lpv_calib_key) in its metadata. The file name
 * is the key's SHA-256. Loading validates like any input (gzip integrity,
 * safetensors rules, the key, every tensor's shape); a file that fails is
 * ignored with a warning and the statistics are recomputed.
 *
 * Memory: one arena in lpv_calib_stats, freed by lpv_calib_free.
 *
 * The cache folder (what `lpvit cache` lists and cleans): a cache file is named "calib-<64 hex>.lpvc", the
 * SHA-256 of its key; nothing else in the folder is ever opened or removed. lpv_calib_cache_scan reads only
 * each file's safetensors header (gunzipping its first bytes), so it sees a wrong or damaged header but not
 * damaged tensor data (lpv_calib_load finds that and recomputes). An entry is stale when this build can never
 * load it: its key names another lpvit version, commit or JPEG decoder, or another cache format, or its name
 * is not its key's hash, or its header cannot be parsed (LPV_E_FORMAT). The key holds the commit, so every
 * rebuild at another commit strands the entries of the one before.
 */
#ifndef LPVIT_CALIB_H
#define LPVIT_CALIB_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/grad.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"

typedef struct {
    lpv_loss_kind loss;
    int fisher;        /* also gather the squared per-sample gradients */
    int block_R, block_C; /* > 0: also the per-block second moments mean_n (g_n,b · w_b)² */
    int batch;         /* images per forward/backward pass */
    uint64_t seed;     /* kl: label sampling */
    lpv_skips *skips;  /* optional: unreadable images are counted here (loader.h) */
    const char *label; /* what the progress reports call this pass (NULL: "statistics") */
    int no_mean;       /* leave g out (NULL): the caller reads only f or bf; summing g costs a pass over
                          every weight per image */
} lpv_calib_opts;

typedef struct {
    int n;                 /* linear layers */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    float *g[LPV_MAX_LAYERS]; /* NULL with no_mean */
    float *f[LPV_MAX_LAYERS]; /* NULL without fisher */
    float *bf[LPV_MAX_LAYERS];/* (nbr, nbc) per-block second moments, NULL without block_R */
    int block_R, block_C;
    int64_t samples;
    double mean_loss;
    int from_cache;
    char key[1024];        /* the cache key (JSON) */
    lpv_arena arena;
} lpv_calib_stats;

/* The cache key: everything the statistics depend on — lpvit's version, commit and JPEG decoder (it decides
 * the pixels), the model's hash, the images' hash (lpv_dataset_files_hash: names, labels, order, sizes and
 * times), loss, Fisher, block shape, batch, seed and preprocessing. A change in any of them misses the cache. */
void lpv_calib_key(char *key, size_t cap, const char *model_sha, const char *images_sha, const lpv_calib_opts *o,
                   const lpv_preproc *pp);
/* Runs forward/backward over the dataset. Under mpirun (dist.h), collective: each rank runs its share and
 * every rank gets the whole list's statistics (kl's sampled labels depend on the image, not on the rank). */
lpv_status lpv_calib_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_calib_opts *o,
                             lpv_calib_stats *s, lpv_err *err);
lpv_status lpv_calib_save(const lpv_calib_stats *s, const char *path, lpv_err *err);
/* LPV_OK and s filled when path holds statistics for exactly this key and model; an error otherwise. */
lpv_status lpv_calib_load(lpv_calib_stats *s, lpv_model *m, const char *path, const char *key,
                          const lpv_calib_opts *o, lpv_err *err);
void lpv_calib_free(lpv_calib_stats *s);

/* ---- the cache folder ---- */
typedef struct {
    char name[96];         /* "calib-<sha>.lpvc" */
    int64_t bytes;         /* size on disk */
    int64_t mtime;         /* last modification, seconds since the epoch */
    lpv_status status;     /* LPV_OK: the header was read; else problem says why */
    char problem[1024];    /* lpv_err msg */
    int stale;             /* this build can never load it (see above) */
    char key[1024];        /* lpvit.calib_key, "" when unreadable */
    int64_t samples;       /* lpvit.samples */
    double mean_loss;      /* lpvit.mean_loss, NAN when absent */
    /* from the key (JSON), "" when absent */
    char format[32], lpvit[96], model_sha[72], images_sha[72], loss[24];
} lpv_calib_entry;

/* The cache holds two kinds of file, both gzip-compressed safetensors whose metadata has lpvit.calib_key (a
 * JSON key whose sha256 names the file) and lpvit.samples: statistics ("calib-<sha>.lpvc", made here) and
 * the pruning steps' checkpoints ("step-<sha>.lpvc", key format LPV_STEP_FORMAT, made by lpv_prune so an
 * interrupted or repeated run resumes after its last finished step). */
#define LPV_STEP_FORMAT "lpvit-step-v1"

/* The build a cache file is for, the key's "lpvit" field: version, commit and JPEG decoder (the decoder
 * changes the pixels, so the statistics). A file of another build is stale. */
void lpv_cache_build_id(char *buf, size_t cap);

/* Writes w gzip-compressed to path, atomically (and removes temps that dead writers left beside it). */
lpv_status lpv_cache_write(const lpv_st_writer *w, const char *path, lpv_err *err);
/* Reads a cache file back: *buf (malloc'd, the caller frees it after lpv_st_close) holds the inflated bytes
 * that f parses. */
lpv_status lpv_cache_read(const char *path, uint8_t **buf, lpv_st_file *f, lpv_err *err);

/* 1 when name is a cache file's: "calib-" or "step-", 64 lowercase hex, ".lpvc". */
int lpv_calib_cache_name(const char *name);
/* Reads the header of the cache file dir/name into e (name, size, time, key fields); a file that cannot be
 * read fills e->status and e->problem instead of failing. */
void lpv_calib_cache_entry(const char *dir, const char *name, lpv_calib_entry *e);
/* Every cache file of dir (lpv_calib_cache_name), oldest first: *out (malloc'd, the caller frees it; NULL
 * when none) and *n. Fails only when dir cannot be listed. */
lpv_status lpv_calib_cache_scan(const char *dir, lpv_calib_entry **out, int *n, lpv_err *err);

typedef struct {
    int all;                   /* every cache file */
    double older_than_seconds; /* >= 0: those not modified for this long (< 0: not a criterion) */
    int stale;                 /* the stale ones */
} lpv_calib_select;
/* 1 when e is chosen by sel at time now (seconds since the epoch). */
int lpv_calib_cache_selected(const lpv_calib_entry *e, const lpv_calib_select *sel, int64_t now);
/* Removes dir/e->name; one already gone is not an error (another lpvit may clean at the same time). */
lpv_status lpv_calib_cache_remove(const char *dir, const lpv_calib_entry *e, lpv_err *err);
/* The temp files earlier writers left in dir, by the cache's naming ("calib-*.lpvc.tmp.<pid>",
 * ".raw.<pid>"): removed when their writer's pid is gone or they are older than a day (a live writer's
 * stays). Returns how many; *bytes (optional) their size. dry_run: count only. lpv_calib_save runs it. */
int lpv_calib_cache_clean_temps(const char *dir, int dry_run, int64_t *bytes);

#endif
