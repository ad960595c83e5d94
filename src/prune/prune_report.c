/*
 * prune_report.c — what a pruning run leaves behind: the pruned file's
 * metadata (lpv_prune_save) and the JSON report (lpv_prune_report), both
 * built from an lpv_prune_result (see include/lpvit/prune.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/report.h"
#include "prune/prune_internal.h"

static cJSON *settings_json(const lpv_prune_opts *o) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "target_flops", o->target_flops);
    char blk[16];
    snprintf(blk, sizeof blk, "%dx%d", o->block_R, o->block_C);
    cJSON_AddStringToObject(s, "block", blk);
    cJSON_AddStringToObject(s, "saliency", lpv_saliency_name(o->saliency));
    cJSON_AddStringToObject(s, "allocator", lpv_allocator_name(o->allocator));
    cJSON_AddStringToObject(s, "objective", lpv_objective_name(o->objective));
    cJSON_AddNumberToObject(s, "lambda_power", o->lambda_power);
    cJSON_AddStringToObject(s, "precision", lpv_precision_name(o->precision)); /* what the model was pruned to run at */
    cJSON_AddStringToObject(s, "loss", lpv_prune_needs_stats(o) ? lpv_loss_name((lpv_loss_kind)o->loss) : "none");
    cJSON_AddStringToObject(s, "update", lpv_update_name((lpv_update_kind)o->update));
    cJSON_AddBoolToObject(s, "sequential", o->sequential);
    cJSON_AddNumberToObject(s, "steps", o->steps);
    cJSON_AddNumberToObject(s, "tune_epochs", o->tune_epochs);
    cJSON_AddBoolToObject(s, "refit_heads", o->refit_heads);
    if (o->refit_heads) cJSON_AddNumberToObject(s, "head_damp", o->head_damp);
    cJSON_AddStringToObject(s, "permute", o->permute ? "sort" : "none");
    if (o->permute) cJSON_AddNumberToObject(s, "permute_images", o->permute_images);
    cJSON_AddStringToObject(s, "exclude", o->exclude);
    cJSON_AddNumberToObject(s, "min_density", o->min_density);
    cJSON_AddNumberToObject(s, "calib_size", o->calib_size);
    cJSON_AddNumberToObject(s, "seed", (double)o->seed);
    if (o->saliency == LPV_SAL_LPVIT) {
        cJSON_AddBoolToObject(s, "lpvit_as_released", o->lpvit_as_released);
        cJSON_AddNumberToObject(s, "lpvit_smooth", o->lpvit_smooth);
        cJSON_AddNumberToObject(s, "lpvit_h", o->lpvit_h);
        cJSON_AddBoolToObject(s, "lpvit_power", o->lpvit_power);
    }
    return s;
}

lpv_status lpv_prune_save(const lpv_model *m, const lpv_prune_result *r, const lpv_preproc *pp, const char *path,
                          lpv_err *err) {
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "lpvit-bsr-v1");
    cJSON *src = cJSON_AddObjectToObject(meta, "source_model");
    cJSON_AddStringToObject(src, "path", m->path);
    cJSON_AddStringToObject(src, "sha256", r->source_sha256);
    cJSON_AddStringToObject(src, "arch", m->arch);
    cJSON_AddItemToObject(meta, "preprocess", lpv_preproc_json(pp));
    cJSON_AddItemToObject(meta, "pruning", settings_json(&r->opts));
    cJSON_AddStringToObject(meta, "calib_list_sha256", r->calib_list_sha256);
    cJSON_AddNumberToObject(meta, "achieved_flops_ratio", r->achieved_flops);
    cJSON_AddStringToObject(meta, "lpvit_commit", lpv_commit());
    char *meta_txt = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!meta_txt) return lpv_fail(err, LPV_E_OOM, "out of memory writing '%s'", path);
    lpv_save_opts sv = {0, 1, {"lpvit"}, {meta_txt}, 0};
    lpv_status st = lpv_model_save(m, path, &sv, err);
    free(meta_txt);
    return st;
}

static void add_calibration(cJSON *root, const lpv_prune_result *r) {
    cJSON *cal = cJSON_AddObjectToObject(root, "calibration");
    cJSON_AddStringToObject(cal, "dir", r->calib_dir);
    cJSON_AddNumberToObject(cal, "images", r->calib_images);
    cJSON_AddStringToObject(cal, "list_sha256", r->calib_list_sha256);
    cJSON_AddNumberToObject(cal, "stats_images", r->stats_images);
    cJSON_AddNumberToObject(cal, "samples_used", (double)r->samples_used);
    if (lpv_prune_needs_stats(&r->opts)) cJSON_AddNumberToObject(cal, "mean_loss", r->mean_loss);
    cJSON_AddBoolToObject(cal, "from_cache", r->stats_from_cache); /* the source model's statistics */
    cJSON_AddStringToObject(cal, "cache_file", r->cache_file);
    cJSON_AddNumberToObject(cal, "images_skipped", r->skipped.n);
    cJSON *sk = cJSON_AddArrayToObject(cal, "skipped_files");
    for (int i = 0; i < r->skipped.n; i++) cJSON_AddItemToArray(sk, cJSON_CreateString(r->skipped.paths[i]));
}

static cJSON *layer_json(const lpv_pruned_layer *e) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "layer", e->name);
    cJSON_AddItemToObject(j, "shape", cJSON_CreateIntArray((int[]){e->out, e->in}, 2));
    cJSON_AddNumberToObject(j, "tokens", e->tokens);
    cJSON_AddNumberToObject(j, "blocks_total", e->blocks_total);
    cJSON_AddNumberToObject(j, "blocks_kept", e->blocks_kept);
    cJSON_AddNumberToObject(j, "density", e->density);
    cJSON_AddNumberToObject(j, "gmacs_dense", e->gmacs_dense);
    cJSON_AddNumberToObject(j, "gmacs_kept", e->gmacs_kept);
    cJSON_AddNumberToObject(j, "saliency_lost", e->saliency_lost);
    cJSON_AddNumberToObject(j, "energy_uj_dense", e->energy_pj_dense / 1e6);
    cJSON_AddNumberToObject(j, "energy_uj_kept", e->energy_pj_kept / 1e6);
    if (e->time_ms_dense >= 0) {
        cJSON_AddNumberToObject(j, "time_ms_dense_bsr", e->time_ms_dense);
        cJSON_AddNumberToObject(j, "time_ms_kept", e->time_ms_kept);
    }
    return j;
}

/* totals and the per-layer table */
static void add_layers(cJSON *root, const lpv_prune_result *r) {
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cJSON_AddStringToObject(tot, "flops_counted", "multiply-adds of the prunable linear layers per image: tokens x kept weights");
    cJSON_AddNumberToObject(tot, "prunable_gmacs_dense", r->dense_macs / 1e9);
    cJSON_AddNumberToObject(tot, "prunable_gmacs_kept", r->kept_macs / 1e9);
    cJSON_AddNumberToObject(tot, "achieved_flops_ratio", r->achieved_flops);
    cJSON_AddNumberToObject(tot, "target_flops_ratio", r->opts.target_flops);
    cJSON_AddNumberToObject(tot, "model_gmacs_dense", r->model_macs_dense / 1e9);
    cJSON_AddNumberToObject(tot, "model_gmacs_kept", r->model_macs_kept / 1e9);
    cJSON_AddNumberToObject(tot, "attention_gmacs_unprunable", r->attention_macs / 1e9);
    cJSON_AddNumberToObject(tot, "linear_weight_density", r->linear_density);
    double e0 = 0, e1 = 0, t0 = 0, t1 = 0, lost = 0;
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int i = 0; i < r->n_layers; i++) {
        const lpv_pruned_layer *e = &r->layers[i];
        cJSON_AddItemToArray(layers, layer_json(e));
        if (e->time_ms_dense >= 0) t0 += e->time_ms_dense, t1 += e->time_ms_kept;
        e0 += e->energy_pj_dense, e1 += e->energy_pj_kept, lost += e->saliency_lost;
    }
    cJSON_AddNumberToObject(tot, "saliency_lost", lost);
    cJSON_AddNumberToObject(tot, "energy_ratio_pruned_layers", e1 / e0);
    if (t0 > 0) cJSON_AddNumberToObject(tot, "predicted_speedup_pruned_layers", t0 / t1);
}

static void add_tuning(cJSON *ru, const lpv_prune_result *r) {
    const lpv_reconstruct_info *ri = &r->recon;
    cJSON *tj = cJSON_AddObjectToObject(ru, "block_tuning");
    cJSON_AddNumberToObject(tj, "epochs", r->opts.tune_epochs);
    cJSON_AddNumberToObject(tj, "lr", r->opts.tune_lr);
    cJSON_AddNumberToObject(tj, "batch", r->opts.tune_batch);
    cJSON_AddNumberToObject(tj, "seconds", ri->tune_seconds); /* final step only */
    cJSON_AddNumberToObject(tj, "blocks_reverted", ri->tune_reverted);
    cJSON *be = cJSON_AddArrayToObject(tj, "relative_output_error");
    for (int l = 0; l < ri->tuned_blocks && l < LPV_MAX_DEPTH; l++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "block", l);
        cJSON_AddNumberToObject(e, "refit", ri->tune_before[l]);
        cJSON_AddNumberToObject(e, "tuned", ri->tune_after[l]);
        cJSON_AddItemToArray(be, e);
    }
}

static void add_reconstruction(cJSON *root, const lpv_prune_result *r) {
    const lpv_prune_opts *o = &r->opts;
    const lpv_reconstruct_info *ri = &r->recon;
    cJSON *ru = cJSON_AddObjectToObject(root, "reconstruction");
    cJSON_AddStringToObject(ru, "update", lpv_update_name((lpv_update_kind)o->update));
    cJSON_AddBoolToObject(ru, "sequential", o->sequential);
    cJSON_AddNumberToObject(ru, "images", r->recon_images);
    cJSON_AddNumberToObject(ru, "damp", o->damp);
    cJSON_AddNumberToObject(ru, "max_damp_used", ri->max_damp);
    cJSON_AddNumberToObject(ru, "factorizations_retried", ri->retried);
    cJSON_AddNumberToObject(ru, "seconds", r->seconds.recon);
    if (o->sequential) { /* the dense block inputs kept for one dense pass per block (0: a pass per layer) */
        cJSON_AddNumberToObject(ru, "capture_bytes", (double)ri->capture_bytes);
        /* the pruned model's passes on BSR packs, or on OpenBLAS over every weight (--refit-dense, tuning) */
        cJSON_AddBoolToObject(ru, "packed_passes", ri->packed);
    }
    if (!o->sequential) {
        cJSON *le = cJSON_AddArrayToObject(ru, "relative_output_error");
        for (int i = 0; i < r->n_layers; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "layer", r->layers[i].name);
            cJSON_AddNumberToObject(e, "masked_only", r->layers[i].err_masked);
            cJSON_AddNumberToObject(e, "updated", r->layers[i].err_updated);
            cJSON_AddItemToArray(le, e);
        }
    }
    if (ri->heads_refit) {
        cJSON *hj = cJSON_AddObjectToObject(ru, "heads");
        cJSON_AddNumberToObject(hj, "refit", ri->heads_refit);
        cJSON_AddNumberToObject(hj, "damp", o->head_damp);
        cJSON_AddNumberToObject(hj, "logit_error_before", ri->logit_err_before);
        cJSON_AddNumberToObject(hj, "logit_error_after", ri->logit_err_after);
    }
    if (o->tune_epochs > 0) add_tuning(ru, r); /* only with a sequential refit (checked with the options) */
}

static void add_refine(cJSON *root, const lpv_prune_result *r) {
    cJSON *rf = cJSON_AddObjectToObject(root, "refine");
    cJSON_AddNumberToObject(rf, "rounds", r->refine_rounds);
    cJSON_AddNumberToObject(rf, "images", r->opts.refine_images);
    cJSON_AddNumberToObject(rf, "seconds", r->seconds.refine);
    cJSON *fa = cJSON_AddArrayToObject(rf, "layers");
    for (int i = 0; i < r->n_layers; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "layer", r->layers[i].name);
        cJSON_AddNumberToObject(e, "curve_scale", r->layers[i].curve_scale);
        cJSON_AddNumberToObject(e, "kl_last_probe", r->layers[i].kl_last_probe);
        cJSON_AddItemToArray(fa, e);
    }
}

static void add_times(cJSON *root, const lpv_prune_result *r) {
    cJSON *ph = cJSON_AddObjectToObject(root, "wall_s");
    cJSON_AddNumberToObject(ph, "load", r->seconds.load);
    cJSON_AddNumberToObject(ph, "calibration_list", r->seconds.list);
    cJSON_AddNumberToObject(ph, "permutation", r->seconds.permute);
    cJSON_AddNumberToObject(ph, "statistics", r->seconds.stats);
    cJSON_AddNumberToObject(ph, "saliency", r->seconds.saliency);
    cJSON_AddNumberToObject(ph, "cost_model", r->seconds.cost);
    cJSON_AddNumberToObject(ph, "allocation", r->seconds.alloc);
    cJSON_AddNumberToObject(ph, "refine", r->seconds.refine);
    cJSON_AddNumberToObject(ph, "reconstruction", r->seconds.recon);
    cJSON_AddNumberToObject(ph, "write", r->seconds.write);
    cJSON_AddNumberToObject(ph, "total", r->seconds.total);
}

cJSON *lpv_prune_report(const lpv_model *m, const lpv_prune_result *r, const lpv_preproc *pp, const char *out_path) {
    const lpv_prune_opts *o = &r->opts;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", m->arch);
    cJSON_AddStringToObject(root, "model_path", m->path);
    cJSON_AddStringToObject(root, "model_sha256", r->source_sha256);
    cJSON_AddStringToObject(root, "out", out_path ? out_path : "");
    cJSON_AddItemToObject(root, "settings", settings_json(o));
    cJSON *sj = cJSON_AddArrayToObject(root, "steps");
    for (int i = 0; i < r->n_steps; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "target_flops", r->step_target[i]);
        cJSON_AddBoolToObject(e, "statistics_from_cache", r->step_from_cache[i]);
        cJSON_AddNumberToObject(e, "blocks_revived", r->step_revived[i]);
        cJSON_AddBoolToObject(e, "resumed", i < r->steps_resumed); /* restored from its checkpoint, not run */
        cJSON_AddItemToArray(sj, e);
    }
    cJSON_AddItemToObject(root, "preprocess", lpv_preproc_json(pp));
    add_calibration(root, r);
    add_layers(root, r);
    cJSON *al = cJSON_AddObjectToObject(root, "allocator");
    cJSON_AddNumberToObject(al, "greedy_steps", r->alloc.greedy_steps);
    if (o->allocator == LPV_ALLOC_LPVIT) {
        cJSON_AddNumberToObject(al, "log2_slope", r->alloc.lpvit_slope);
        cJSON_AddNumberToObject(al, "search_probes", r->alloc.lpvit_iterations);
        cJSON_AddNumberToObject(al, "topup_blocks", r->alloc.lpvit_topup);
        cJSON_AddNumberToObject(al, "beta", r->alloc.lpvit_beta);
    }
    if (o->update != LPV_UPDATE_NONE) add_reconstruction(root, r);
    if (r->refine_rounds) add_refine(root, r);
    add_times(root, r);
    lpv_report_environment(root);
    return root;
}
