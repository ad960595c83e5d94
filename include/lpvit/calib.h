/*
 * calib.h — the calibration statistics the saliency criteria need, gathered
 * in one pass over a calibration set, and their on-disk cache.
 *
 * For every linear layer of the model (lpv_model_layers order):
 *   g  (out, in)  mean over samples of ∂L_n/∂W   (first moment)
 *   f  (out, in)  mean over samples of (∂L_n/∂W)² (empirical Fisher diagonal), when asked
 *   bf (nbr, nbc) mean over samples of (Σ_block ∂L_n/∂W ⊙ W)² for R x C blocks, when asked:
 *                 w_bᵀ F_bb w_b with the block's full empirical Fisher, off-diagonal terms included
 * for a loss (grad.h): self-ce (the model's own top-1, no labels), mean-sq
 * (LPViT's mean(logits²)), ce (the folder's labels), or kl. The gradient of
 * KL(p_dense ‖ p) vanishes at the dense weights; its curvature is the Fisher
 * information, so `kl` uses labels drawn from p_dense (seeded): the "true
 * Fisher" Monte-Carlo estimate.
 *
 * Cache: a zlib (gzip) stream of a safetensors file holding g (and f) under
 * the timm layer names, with the key (lpv_calib_key) in its metadata. The file name
 * is the key's SHA-256. Loading validates like any input (gzip integrity,
 * safetensors rules, the key, every tensor's shape); a file that fails is
 * ignored with a warning and the statistics are recomputed.
 *
 * Memory: one arena in lpv_calib_stats, freed by lpv_calib_free.
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

typedef struct {
    lpv_loss_kind loss;
    int fisher;        /* also gather the squared per-sample gradients */
    int block_R, block_C; /* > 0: also the per-block second moments mean_n (g_n,b · w_b)² */
    int batch;         /* images per forward/backward pass */
    uint64_t seed;     /* kl: label sampling */
    lpv_skips *skips;  /* optional: unreadable images are counted here (loader.h) */
    const char *label; /* what the progress reports call this pass (NULL: "statistics") */
} lpv_calib_opts;

typedef struct {
    int n;                 /* linear layers */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    float *g[LPV_MAX_LAYERS];
    float *f[LPV_MAX_LAYERS]; /* NULL without fisher */
    float *bf[LPV_MAX_LAYERS];/* (nbr, nbc) per-block second moments, NULL without block_R */
    int block_R, block_C;
    int64_t samples;
    double mean_loss;
    int from_cache;
    char key[1024];        /* the cache key (JSON) */
    lpv_arena arena;
} lpv_calib_stats;

/* The cache key: everything the statistics depend on — lpvit's version and commit, the model's hash, the
 * images' hash (lpv_dataset_files_hash: names, labels, order, sizes and times), loss, Fisher, block shape,
 * batch, seed and preprocessing. A change in any of them misses the cache. */
void lpv_calib_key(char *key, size_t cap, const char *model_sha, const char *images_sha, const lpv_calib_opts *o,
                   const lpv_preproc *pp);
/* Runs forward/backward over the dataset. */
lpv_status lpv_calib_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_calib_opts *o,
                             lpv_calib_stats *s, lpv_err *err);
lpv_status lpv_calib_save(const lpv_calib_stats *s, const char *path, lpv_err *err);
/* LPV_OK and s filled when path holds statistics for exactly this key and model; an error otherwise. */
lpv_status lpv_calib_load(lpv_calib_stats *s, lpv_model *m, const char *path, const char *key,
                          const lpv_calib_opts *o, lpv_err *err);
void lpv_calib_free(lpv_calib_stats *s);

#endif
