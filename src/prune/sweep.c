/*
 * sweep.c — prune, evaluate and time a model at several FLOPs targets
 * (sweep.h), then mark the Pareto front and write the table, JSON and plots.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/evaluate.h"
#include "lpvit/forward.h"
#include "lpvit/log.h"
#include "lpvit/plot.h"
#include "lpvit/report.h"
#include "lpvit/sweep.h"

lpv_sweep_opts lpv_sweep_defaults(void) {
    lpv_sweep_opts o;
    memset(&o, 0, sizeof o);
    o.prune = lpv_prune_defaults();
    o.eval_batch = 32, o.decode_threads = 1;
    o.bench_batch = 1, o.bench_warmup = 2, o.bench_reps = 10, o.bench_seed = 1;
    return o;
}

static lpv_status check_opts(const lpv_sweep_opts *o, lpv_err *err) {
    if (o->n_targets < 1 || o->n_targets > LPV_SWEEP_MAX_TARGETS)
        return lpv_fail_param(err, LPV_E_ARG, "targets", "expected 1 to %d targets, got %d", LPV_SWEEP_MAX_TARGETS,
                              o->n_targets);
    for (int i = 0; i < o->n_targets; i++) {
        if (!(o->targets[i] > 0 && o->targets[i] < 1))
            return lpv_fail_param(err, LPV_E_ARG, "targets", "expected FLOPs fractions in (0, 1), got %g", o->targets[i]);
        for (int j = 0; j < i; j++)
            if (o->targets[j] == o->targets[i])
                return lpv_fail_param(err, LPV_E_ARG, "targets", "%g is given twice", o->targets[i]);
    }
    if (!o->prune.cache_dir)
        return lpv_fail(err, LPV_E_ARG, "a sweep shares its statistics between targets through the cache: it needs a "
                        "cache folder");
    if (o->eval_batch < 1 || o->bench_batch < 1 || o->bench_reps < 1 || o->bench_warmup < 0)
        return lpv_fail(err, LPV_E_ARG, "sweep: batches and repetitions must be positive");
    return LPV_OK;
}

static int lowp_of(lpv_precision p) {
    return p == LPV_PREC_BF16 ? LPV_BENCH_BF16 : p == LPV_PREC_INT8 ? LPV_BENCH_INT8 : LPV_BENCH_FP32;
}

static lpv_status eval_point(lpv_model *m, const lpv_dataset *val, const lpv_preproc *pp, const lpv_sweep_opts *o,
                             const char *label, lpv_sweep_point *pt, lpv_err *err) {
    lpv_eval_opts eo = lpv_eval_defaults();
    eo.batch = o->eval_batch, eo.decode_threads = o->decode_threads, eo.label = label;
    lpv_eval_result er;
    snprintf(pt->attention, sizeof pt->attention, "%s", lpv_model_attention_name(m));
    double t = lpv_now();
    LPV_TRY(lpv_evaluate(m, val, pp, &eo, &er, err));
    pt->seconds_eval = lpv_now() - t;
    pt->top1 = lpv_eval_top1(&er), pt->top5 = lpv_eval_top5(&er);
    pt->images = er.images, pt->skipped = er.skipped;
    lpv_sparsity s;
    lpv_model_sparsity(m, &s);
    pt->model_flops_kept = s.model_macs_kept / s.model_macs_dense;
    pt->weights_kept = s.weights_kept / s.weights_dense;
    return LPV_OK;
}

/* Times the point's model interleaved with the dense one (m NULL: the dense model alone). */
static lpv_status bench_point(const lpv_model *dense, const lpv_model *m, const lpv_sweep_opts *o, lpv_sweep_point *pt,
                              lpv_err *err) {
    lpv_cpu_snap s0, s1;
    lpv_cpu_snap_take(&s0);
    double t = lpv_now();
    lpv_timing td, tm;
    LPV_TRY(lpv_bench_forward_vs_fp32(dense, m, o->bench_batch, lowp_of(pt->precision), o->bench_warmup,
                                      o->bench_reps, o->bench_seed, &td, m ? &tm : NULL, err));
    lpv_cpu_snap_take(&s1);
    pt->seconds_bench = lpv_now() - t;
    pt->others_cpu = lpv_cpu_others(&s0, &s1);
    pt->dense_time = td, pt->time = m ? tm : td;
    pt->speedup = td.median_ms / pt->time.median_ms;
    if (pt->others_cpu > 0.25)
        lpv_warn("other processes kept %.1f CPUs busy while the %s point was timed: its speedup is not reliable",
                 pt->others_cpu, pt->kind);
    return LPV_OK;
}

/* The layers' names and each point's density come from the prune result. */
static lpv_status record_layers(const lpv_prune_result *pr, lpv_sweep_result *r, lpv_sweep_point *pt, lpv_err *err) {
    if (!r->layer_names) {
        r->n_layers = pr->n_layers;
        r->layer_names = calloc((size_t)pr->n_layers, sizeof *r->layer_names);
        if (!r->layer_names) return lpv_fail(err, LPV_E_OOM, "out of memory");
        for (int i = 0; i < pr->n_layers; i++) snprintf(r->layer_names[i], 64, "%s", pr->layers[i].name);
    }
    if (pr->n_layers != r->n_layers) return lpv_fail(err, LPV_E_DATA, "sweep: the targets pruned different layers");
    pt->density = malloc(sizeof(double) * (size_t)pr->n_layers);
    if (!pt->density) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int i = 0; i < pr->n_layers; i++) pt->density[i] = pr->layers[i].density;
    return LPV_OK;
}

static lpv_status prune_point(lpv_model *m, const lpv_calib_set *calib, const lpv_sweep_opts *o, double target,
                              lpv_sweep_result *r, lpv_sweep_point *pt, lpv_err *err) {
    lpv_prune_opts po = o->prune;
    po.target_flops = target;
    lpv_prune_result pr;
    double t = lpv_now();
    LPV_TRY(lpv_prune(m, calib, &po, &pr, err));
    lpv_status st = LPV_OK;
    if (o->prune.precision == LPV_PREC_INT8) st = lpv_model_quantize_int8(m, 32, 32, err);
    pt->seconds_prune = lpv_now() - t;
    pt->flops_kept = pr.achieved_flops;
    pt->stat_steps = pr.n_steps;
    for (int s = 0; s < pr.n_steps; s++) pt->stat_cached += pr.step_from_cache[s];
    pt->steps_resumed = pr.steps_resumed;
    if (st == LPV_OK) st = record_layers(&pr, r, pt, err);
    if (st == LPV_OK && o->save_dir) {
        snprintf(pt->model_file, sizeof pt->model_file, "%s/pruned-%g.safetensors", o->save_dir, target);
        st = lpv_prune_save(m, &pr, calib->pp, pt->model_file, err);
    }
    if (st == LPV_OK) {
        pt->prune_report = lpv_prune_report(m, &pr, calib->pp, pt->model_file[0] ? pt->model_file : NULL);
        cJSON_AddStringToObject(pt->prune_report, "quantization",
                                o->prune.precision == LPV_PREC_INT8 ? "int8" : "none");
    }
    lpv_prune_result_free(&pr);
    return st;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static void mark_pareto(lpv_sweep_result *r) {
    for (int i = 0; i < r->n_points; i++) {
        lpv_sweep_point *p = &r->points[i];
        p->pareto = 1;
        for (int j = 0; j < r->n_points && p->pareto; j++) {
            const lpv_sweep_point *q = &r->points[j];
            if (j != i && q->top1 >= p->top1 && q->speedup >= p->speedup && (q->top1 > p->top1 || q->speedup > p->speedup))
                p->pareto = 0;
        }
    }
}

/* One point: a clone of the source, pruned (or not), packed, evaluated and timed against the dense model. */
static lpv_status run_point(const lpv_model *src, const lpv_model *dense, const lpv_calib_set *calib,
                            const lpv_dataset *val, const lpv_sweep_opts *o, double target, lpv_sweep_result *r,
                            lpv_sweep_point *pt, lpv_err *err) {
    lpv_model *m;
    LPV_TRY(lpv_model_clone(&m, src, err));
    lpv_status st = LPV_OK;
    if (target < 1) st = prune_point(m, calib, o, target, r, pt, err);
    /* an int8 point was quantized right after pruning, before it was saved: only its dense layers are left */
    int lowp = target < 1 && o->prune.precision == LPV_PREC_INT8 ? LPV_BENCH_FP32 : lowp_of(pt->precision);
    if (st == LPV_OK) st = lpv_model_pack_for(m, lowp, err);
    char label[64];
    snprintf(label, sizeof label, "eval %s %s", pt->kind, lpv_precision_name(pt->precision));
    if (target < 1) snprintf(label, sizeof label, "eval %g", target);
    if (st == LPV_OK) st = eval_point(m, val, calib->pp, o, label, pt, err);
    if (st == LPV_OK) st = bench_point(dense, m, o, pt, err);
    lpv_model_free(m);
    return st;
}

static lpv_status sweep_points(const lpv_model *src, const lpv_calib_set *calib, const lpv_dataset *val,
                               const lpv_sweep_opts *o, lpv_sweep_result *r, lpv_err *err) {
    double t[LPV_SWEEP_MAX_TARGETS];
    memcpy(t, o->targets, sizeof(double) * (size_t)o->n_targets);
    qsort(t, (size_t)o->n_targets, sizeof *t, cmp_desc); /* the largest first: its steps prefix the smaller ones' */
    lpv_precision prec = o->prune.precision;
    lpv_model *dense;
    LPV_TRY(lpv_model_clone(&dense, src, err));
    /* the FP32 reference runs FP32 attention whatever the points run (bench's FP32 runs do the same) */
    dense->attention = src->attention == LPV_ATTN_INT8 ? LPV_ATTN_AUTO : src->attention;
    lpv_status st = lpv_model_pack_for(dense, LPV_BENCH_FP32, err);
    /* the reference: dense FP32, timed alone */
    lpv_sweep_point *pt = &r->points[r->n_points++];
    snprintf(pt->kind, sizeof pt->kind, "dense");
    pt->precision = LPV_PREC_FP32, pt->target = 1, pt->flops_kept = 1;
    lpv_info("sweep: dense model");
    if (st == LPV_OK) st = eval_point(dense, val, calib->pp, o, "eval dense", pt, err);
    if (st == LPV_OK) st = bench_point(dense, NULL, o, pt, err);
    if (st == LPV_OK && prec != LPV_PREC_FP32) { /* how much the precision alone buys */
        pt = &r->points[r->n_points++];
        snprintf(pt->kind, sizeof pt->kind, "dense");
        pt->precision = prec, pt->target = 1, pt->flops_kept = 1;
        lpv_info("sweep: dense model in %s", lpv_precision_name(prec));
        st = run_point(src, dense, calib, val, o, 1, r, pt, err);
    }
    for (int i = 0; i < o->n_targets && st == LPV_OK; i++) {
        pt = &r->points[r->n_points++];
        snprintf(pt->kind, sizeof pt->kind, "pruned");
        pt->precision = prec, pt->target = t[i];
        lpv_info("sweep: point %d/%d, target FLOPs %g", i + 1, o->n_targets, t[i]);
        st = run_point(src, dense, calib, val, o, t[i], r, pt, err);
        if (st == LPV_OK)
            lpv_info("sweep: target %g: top-1 %.2f%%, %.2fx the dense model (statistics of %d of %d steps from the "
                     "cache, %d step%s resumed from checkpoints)", t[i], pt->top1, pt->speedup, pt->stat_cached,
                     pt->stat_steps, pt->steps_resumed, pt->steps_resumed == 1 ? "" : "s");
    }
    lpv_model_free(dense);
    return st;
}

lpv_status lpv_sweep(const lpv_model *src, const lpv_calib_set *calib, const lpv_dataset *val,
                     const lpv_sweep_opts *o, lpv_sweep_result *r, lpv_err *err) {
    memset(r, 0, sizeof *r);
    LPV_TRY(check_opts(o, err));
    double t0 = lpv_now();
    r->points = calloc((size_t)o->n_targets + 2, sizeof *r->points);
    if (!r->points) return lpv_fail(err, LPV_E_OOM, "out of memory");
    r->threads = lpv_threads_get(), r->bench_batch = o->bench_batch;
    snprintf(r->val_dir, sizeof r->val_dir, "%s", val->root);
    lpv_dataset_hash(val, r->val_sha256);
    r->val_items = val->n;
    lpv_status st = sweep_points(src, calib, val, o, r, err);
    if (st) {
        lpv_sweep_result_free(r);
        return st;
    }
    mark_pareto(r);
    r->seconds_total = lpv_now() - t0;
    return LPV_OK;
}

void lpv_sweep_result_free(lpv_sweep_result *r) {
    for (int i = 0; r->points && i < r->n_points; i++) {
        free(r->points[i].density);
        cJSON_Delete(r->points[i].prune_report);
    }
    free(r->points);
    free(r->layer_names);
    memset(r, 0, sizeof *r);
}
