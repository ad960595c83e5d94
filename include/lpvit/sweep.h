/*
 * sweep.h — the accuracy / speed trade-off of one model in one run: prune it
 * to each FLOPs target, evaluate every point on a validation set and time it
 * against the dense model, then say which points are Pareto-optimal.
 *
 *   dense model ─► eval, bench ───────────────────────────────┐
 *   for each target, largest first:                             ├─► points ─► table (markdown), JSON, SVG plots
 *     clone ─► lpv_prune (statistics from the shared cache) ─► [save] ─► eval ─► bench vs dense (interleaved)
 *
 * The targets share the calibration statistics through lpv_prune's cache:
 * the dense model's statistics (and the channel sort's) are computed for the
 * first target and read back for the others; a target whose first steps are
 * another's (0.8 runs 0.9 then 0.8; 0.7 runs 0.9, 0.8, 0.7) resumes from that
 * run's step checkpoints instead of redoing them. So the cache must be on
 * (opts.prune.cache_dir). Speedups are end to end, dense median over pruned
 * median of one interleaved measurement (bench.h).
 *
 *     lpv_sweep_opts o = lpv_sweep_defaults();
 *     o.targets = (double[]){0.9, 0.8, 0.7}, o.n_targets = 3;
 *     o.prune.cache_dir = "/tmp/lpvit-cache";
 *     lpv_sweep_result r;
 *     if (lpv_sweep(model, &calib, &val, &o, &r, &err)) die(err.msg);
 *     lpv_sweep_markdown(stdout, model, &r);
 *     lpv_sweep_result_free(&r);
 *
 * Memory: the source model is not changed (each point prunes a clone, freed
 * before the next); the result owns its arrays and reports.
 */
#ifndef LPVIT_SWEEP_H
#define LPVIT_SWEEP_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "lpvit/bench.h"
#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/model.h"
#include "lpvit/prune.h"

#define LPV_SWEEP_MAX_TARGETS 16

typedef struct {
    const double *targets;  /* FLOPs fractions in (0, 1), distinct; run from the largest */
    int n_targets;
    lpv_prune_opts prune;   /* every pruning knob (target_flops is set per point); precision says how the
                               pruned points run: fp32, bf16 (AVX512-BF16) or int8 (quantized after pruning) */
    int eval_batch, decode_threads;
    int bench_batch, bench_warmup, bench_reps;
    uint64_t bench_seed;
    const char *save_dir;   /* NULL: pruned models are not written; else <dir>/pruned-<target>.safetensors */
} lpv_sweep_opts;

typedef struct {
    char kind[8];             /* "dense" or "pruned" */
    lpv_precision precision;  /* what it ran at */
    double target;            /* FLOPs target; 1 for dense */
    double flops_kept;        /* of the prunable layers */
    double model_flops_kept;  /* of the whole model, attention included */
    double weights_kept;      /* of all linear layers */
    double top1, top5;        /* % */
    long images, skipped;
    lpv_timing time;          /* forward pass of bench_batch images */
    lpv_timing dense_time;    /* the dense FP32 model's, interleaved with this point's */
    double speedup;           /* dense_time / time, medians */
    double others_cpu;        /* CPUs other processes used while this point was timed (NAN: unknown) */
    double seconds_prune, seconds_eval, seconds_bench;
    int stat_steps, stat_cached; /* statistics passes of the prune; how many came from the cache */
    int steps_resumed;        /* steps restored from an earlier run's checkpoints (prune.h) */
    int pareto;               /* no other point has both higher top-1 and higher speedup */
    char attention[8];        /* what ran its attention in the evaluation (lpv_model_attention_name) */
    char model_file[1100];    /* "" when not saved */
    double *density;          /* (n_layers) kept weights per prunable layer; NULL for dense */
    cJSON *prune_report;      /* lpv_prune_report of this point; NULL for dense */
} lpv_sweep_point;

typedef struct {
    int n_points;
    lpv_sweep_point *points;  /* dense FP32 first, dense at the precision if not FP32, then targets, largest first */
    int n_layers;
    char (*layer_names)[64];  /* (n_layers) the prunable layers, lpv_model_layers order */
    int threads, bench_batch;
    char val_dir[1024], val_sha256[65]; /* the validation list's folder and hash (dataset.h) */
    int val_items;
    double seconds_total;
} lpv_sweep_result;

/* eval batch 32, one decoder thread, bench batch 1, 2 warm-up + 10 timed passes, the prune defaults. */
lpv_sweep_opts lpv_sweep_defaults(void);

/* calib->pp preprocesses the validation images too. */
lpv_status lpv_sweep(const lpv_model *src, const lpv_calib_set *calib, const lpv_dataset *val,
                     const lpv_sweep_opts *o, lpv_sweep_result *r, lpv_err *err);
void lpv_sweep_result_free(lpv_sweep_result *r);

/* The Pareto table (and per-layer densities) as markdown. */
void lpv_sweep_markdown(FILE *fp, const lpv_model *src, const lpv_sweep_result *r);
/* Everything as JSON: points, per-layer densities, each point's prune report, the environment. */
cJSON *lpv_sweep_json(const lpv_model *src, const lpv_sweep_result *r);
/* top-1 against measured speedup, and density per layer per target (SVG, plot.h). */
lpv_status lpv_sweep_plots(const lpv_model *src, const lpv_sweep_result *r, const char *pareto_svg,
                           const char *density_svg, lpv_err *err);

#endif
