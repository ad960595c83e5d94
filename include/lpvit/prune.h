/*
 * prune.h — the pruning pipeline as one library call: LPViT-style
 * post-training block pruning of a model in memory to a FLOPs target.
 *
 *   calibration images ─► channel sort (function-preserving, permute.h) ─►
 *   per step of the schedule:
 *     statistics (gradients / Fisher, cached on disk, calib.h) ─► saliency per
 *     block and a distortion curve per layer (saliency.h) ─► cost per layer
 *     (FLOPs, measured time, energy: cost.h) ─► blocks per layer (alloc.h) ─►
 *     masks ─► weight update (least-squares refit, sequential: reconstruct.h)
 *   ─► pruned layers stored as BSR (model.h)
 *
 * The FLOPs target counts the prunable linear layers only: tokens x kept
 * weights per image (patch embedding over its patches, heads over one
 * token). Attention matmuls, LayerNorm and GELU are not prunable; the result
 * gives whole-model MACs with and without them.
 *
 * Every knob is in lpv_prune_opts with its default in lpv_prune_defaults();
 * fields marked "auto" (-1, or 0 for steps) are resolved from the others the
 * way the README's measurements chose, and lpv_prune_resolve says what they
 * became. Errors name the option at fault with lpv_fail_param (error.h).
 *
 *     lpv_prune_opts o = lpv_prune_defaults();
 *     o.target_flops = 0.5;
 *     lpv_prune_result r; lpv_err err;
 *     lpv_calib_set calib = {&dataset, &preproc};
 *     if (lpv_prune(model, &calib, &o, &r, &err)) die(err.msg);
 *     lpv_prune_save(model, &r, "pruned.safetensors", &err);   // BSR safetensors + metadata
 *     cJSON *report = lpv_prune_report(model, &r);             // the JSON `lpvit prune --report` writes
 *     lpv_prune_result_free(&r);
 *
 * Memory: lpv_prune changes the model in place (channels sorted, pruned
 * layers refit and turned into BSR in the model's arena) and fills a result
 * that owns its arrays (lpv_prune_result_free). Scratch is freed before
 * return, on success and on failure. Logs and progress go through log.h.
 */
#ifndef LPVIT_PRUNE_H
#define LPVIT_PRUNE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "lpvit/alloc.h"
#include "lpvit/cost.h"
#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/grad.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
#include "lpvit/model.h"
#include "lpvit/names.h"
#include "lpvit/reconstruct.h"
#include "lpvit/saliency.h"

#define LPV_MAX_STEPS 16

#define LPV_ALLOCATOR_LIST(X) X(LPV_ALLOC_GREEDY, "greedy") X(LPV_ALLOC_UNIFORM, "uniform") X(LPV_ALLOC_LPVIT, "lpvit")
typedef enum { LPV_ALLOC_AUTO = -1, LPV_ALLOCATOR_LIST(LPV_ENUM_VALUE) LPV_ALLOC_COUNT } lpv_allocator;

const char *lpv_allocator_name(lpv_allocator a);
lpv_status lpv_allocator_parse(const char *s, lpv_allocator *out, lpv_err *err);

typedef struct {
    /* what to reach */
    double target_flops;        /* keep this fraction of the prunable layers' FLOPs, in (0, 1]; required */
    int block_R, block_C;       /* block shape: rows (outputs) x columns (inputs), each 8, 16, 32 or 64 */
    const char *exclude;        /* layers never pruned: names or globs, comma-separated, or "none" */
    double min_density;         /* every pruned layer keeps at least this fraction of its blocks, [0, 1) */
    /* which blocks */
    lpv_saliency_kind saliency; /* taylor2 */
    int loss;                   /* lpv_loss_kind of the statistics; -1 auto: self-ce (lpvit: mean-sq) */
    int calib_size;             /* images used, a seeded choice from the calibration set (all when larger) */
    int calib_batch;            /* images per forward/backward pass */
    uint64_t seed;              /* calibration choice, label sampling, tuning order */
    const char *cache_dir;      /* statistics cache folder, created when missing; NULL: no cache */
    /* how many per layer */
    lpv_allocator allocator;    /* auto: lpvit for the lpvit saliency, uniform for l1, else greedy */
    lpv_objective objective;    /* what a pruned block buys */
    double lambda_power;        /* speed+power: weight of energy against time, >= 0 */
    const char *cost_table;     /* measured BSR times (lpv_time_table_save); NULL: measured now when needed */
    lpv_precision precision;    /* what the pruned model will run at (fp32 default): the speed objectives time
                                   that precision's kernels, a given cost table must be of that precision, and
                                   the file's metadata records it. The weights written stay FP32 (the CLI's
                                   --quant int8 quantizes them afterwards) */
    lpv_energy energy;          /* energy proxy constants (cost.h) */
    int refine;                 /* rounds of scaling curves by measured KL; -1 auto (2 for greedy gradient
                                   criteria without a weight update, else 0) */
    int refine_images;          /* images the refinement measures KL on */
    /* LPViT's own allocator and curves (saliency lpvit) */
    int lpvit_as_released, lpvit_h, lpvit_power;
    double lpvit_smooth;
    /* repairs */
    int permute;                /* sort channels by importance first; -1 auto: yes except for l1 and lpvit */
    int permute_images;         /* images (spread over the list) whose statistics order the channels */
    int update;                 /* lpv_update_kind after masking; -1 auto: lsq for taylor2, else none */
    int sequential;             /* refit on the pruned model's own inputs; -1 auto: yes with lsq / obs */
    int steps;                  /* prune in steps towards the target; 0 auto: one per 0.125 of FLOPs removed
                                   with a sequential refit, else 1 */
    int recon_images;           /* images for the refit's statistics; 0: all */
    int stats_images;           /* images (spread over the list) for the saliency's gradient statistics; 0: all */
    double damp;                /* Hessian damping, a fraction of its mean diagonal, (0, 10) */
    int refit_heads;            /* with a sequential refit, also refit the classifier heads */
    double head_damp;           /* the heads' damping (> 0) */
    int tune_epochs;            /* block-wise tuning in the final step (0: off; needs a sequential refit) */
    double tune_lr;             /* > 0 */
    int tune_batch;
    int refit_dense;            /* 1: the refit multiplies the zeros (OpenBLAS on every pass) instead of running its
                                   target and its refit layers as BSR; a check of those packs, the same masks */
} lpv_prune_opts;

/* Every default, as `lpvit prune` uses them (target_flops NaN: the caller must set it). */
lpv_prune_opts lpv_prune_defaults(void);

/* Checks every option and fills in the auto ones (out may be o). */
lpv_status lpv_prune_resolve(const lpv_prune_opts *o, lpv_prune_opts *out, lpv_err *err);

/* 1 when the resolved options need calibration images (statistics, input statistics or refinement). */
int lpv_prune_needs_images(const lpv_prune_opts *resolved);

/* The calibration images and how the model wants them preprocessed (both borrowed). */
typedef struct {
    const lpv_dataset *ds; /* may be NULL when lpv_prune_needs_images is 0 */
    const lpv_preproc *pp;
} lpv_calib_set;

/* One prunable layer as pruned. */
typedef struct {
    char name[64];        /* timm module name */
    int index;            /* in lpv_model_layers order */
    int out, in, tokens;
    int blocks_total, blocks_kept;
    double density;       /* kept weights / all (partial edge blocks count their real size) */
    double gmacs_dense, gmacs_kept;
    double saliency_lost; /* the criterion's predicted loss increase */
    double energy_pj_dense, energy_pj_kept; /* energy proxy per image (cost.h) */
    double time_ms_dense, time_ms_kept; /* from the time table; < 0 without one */
    double curve_scale, kl_last_probe;  /* refinement (1 and 0 without it) */
    double err_masked, err_updated;     /* non-sequential refit: relative output error */
    uint8_t *mask;        /* (ceil(out/R), ceil(in/C)), 1 = kept */
} lpv_pruned_layer;

typedef struct {
    lpv_prune_opts opts;  /* resolved; strings are borrowed from the caller's options */
    char source_sha256[65];   /* the model file's, before anything changed */
    /* calibration */
    int calib_images;         /* after the seeded choice */
    char calib_dir[1024], calib_list_sha256[65];
    int64_t samples_used;     /* images the last step's statistics pass read */
    double mean_loss;         /* of the last step's statistics pass */
    int stats_from_cache;     /* of the source model's statistics (step 1) */
    char cache_file[2048];    /* the last step's cache file, "" when not cached */
    lpv_skips skipped;        /* unreadable images, over every pass */
    /* the schedule */
    int n_steps;
    double step_target[LPV_MAX_STEPS];
    int step_from_cache[LPV_MAX_STEPS], step_revived[LPV_MAX_STEPS];
    int steps_resumed;        /* steps restored from their checkpoints in the cache instead of run */
    /* layers and totals */
    int n_layers;
    lpv_pruned_layer *layers; /* (n_layers) */
    double dense_macs, kept_macs, achieved_flops; /* prunable layers, per image */
    double model_macs_dense, model_macs_kept, attention_macs;
    double linear_density;    /* kept weights of all linear layers / their dense count, after pruning */
    lpv_alloc_info alloc;
    int refine_rounds;
    lpv_reconstruct_info recon;
    int recon_images;
    int stats_images;     /* images the gradient statistics ran on */
    /* wall seconds per phase (load and write are the caller's: it may fill them for the report) */
    struct {
        double load, list, permute, stats, saliency, cost, alloc, refine, recon, write, total;
    } seconds;
} lpv_prune_result;

/*
 * Prunes m in place to o->target_flops with the calibration images in calib.
 * A model that is already pruned is pruned again from its dense form (zeros kept).
 * On failure the model may be half-changed: reload it.
 */
lpv_status lpv_prune(lpv_model *m, const lpv_calib_set *calib, const lpv_prune_opts *o, lpv_prune_result *r,
                     lpv_err *err);
void lpv_prune_result_free(lpv_prune_result *r);

/* Writes the pruned model (BSR safetensors) with lpvit's metadata: the source model, preprocessing, settings,
 * calibration list and achieved FLOPs, so lpvit eval / bench use it as it was meant. */
lpv_status lpv_prune_save(const lpv_model *m, const lpv_prune_result *r, const lpv_preproc *pp, const char *path,
                          lpv_err *err);

/* The report as JSON (caller frees with cJSON_Delete): settings, steps, calibration, totals, one entry per
 * layer, allocator, reconstruction, refinement, wall times and the environment (report.h). */
cJSON *lpv_prune_report(const lpv_model *m, const lpv_prune_result *r, const lpv_preproc *pp, const char *out_path);

#endif
