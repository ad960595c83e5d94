/*
 * cmd_quantize.c — `lpvit quantize`: write a model's block linears (qkv, proj, fc1, fc2; dense or pruned)
 * as int8 weights with one scale per output row, their inputs quantized per token at run time (or on static
 * grids calibrated on images, --act-scales; SmoothQuant first with --smooth); or, with
 * --codebook K, each layer's weights on K levels its channels share (codebook.h). eval, infer and bench run
 * the file; `lpvit export --dense-masked` turns it back into FP32 weights timm loads.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/codebook.h"
#include "lpvit/dataset.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/log.h"
#include "lpvit/model.h"
#include "lpvit/quantize.h"
#include "lpvit/report.h"
#include "lpvit/smooth.h"

/* The "lpvit" metadata of the output: the source's when it has one (a pruned file), else where the weights came
 * from and the preprocessing they need, so eval needs no flags for the quantized file either. */
static char *quant_meta(lpv_model *m, const lpv_preproc *pp, int K) {
    if (m->lpvit_meta) return strdup(m->lpvit_meta);
    lpv_err e;
    const char *sha = lpv_model_hash(m, &e);
    cJSON *j = cJSON_CreateObject(), *src = cJSON_AddObjectToObject(j, "source_model");
    cJSON_AddStringToObject(j, "format", K ? "lpvit-codebook-v2" : "lpvit-int8-v1");
    cJSON_AddStringToObject(src, "path", m->path);
    cJSON_AddStringToObject(src, "sha256", sha ? sha : "");
    cJSON_AddStringToObject(src, "arch", m->arch);
    cJSON_AddItemToObject(j, "preprocess", lpv_preproc_json(pp));
    cJSON_AddStringToObject(j, "lpvit_commit", lpv_commit());
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return txt;
}

/* The calibration list (any folder, labels unused), seeded choice of n, sorted. */
static lpv_status open_calib(lpv_dataset *ds, const char *dir, int n, int seed, lpv_err *err) {
    if (!lpv_is_dir(dir)) return lpv_fail(err, LPV_E_IO, "--calib-dir '%s' is not a directory", dir);
    LPV_TRY(lpv_dataset_unlabeled(ds, dir, err));
    lpv_status st = n < ds->n ? lpv_dataset_sample(ds, n, (uint64_t)seed, err) : LPV_OK;
    if (st) lpv_dataset_free(ds);
    return st;
}

/* Median over the smoothed inputs of spread_before / spread_after. */
static void smooth_medians(const lpv_smooth_info *si, double *before, double *after) {
    double a[LPV_MAX_LAYERS], b[LPV_MAX_LAYERS];
    int k = 0;
    for (int i = 0; i < LPV_MAX_LAYERS; i++)
        if (si->spread_before[i] > 0) a[k] = si->spread_before[i], b[k++] = si->spread_after[i];
    *before = k ? lpv_median(a, k) : 0, *after = k ? lpv_median(b, k) : 0;
}

/* Median over the layers with a static grid of their input MSE on it / on the min-max grid. */
static double act_median_ratio(const lpv_quant_calib_info *ci) {
    double r[LPV_MAX_LAYERS];
    int k = 0;
    for (int i = 0; i < LPV_MAX_LAYERS; i++)
        if (ci->act[i].scale > 0 && ci->act_mse_minmax[i] > 0) r[k++] = ci->act_mse[i] / ci->act_mse_minmax[i];
    return k ? lpv_median(r, k) : 0;
}

static void print_text(const lpv_quant_calib_opts *c, const lpv_quant_calib_info *ci, double ma, double mb) {
    if (c->act != LPV_ACT_TOKEN)
        printf("inputs          %d block linears with a static grid (%s; the others per token): input MSE / "
               "min-max grid's, median %.3g\n", ci->act_layers, lpv_act_mode_name(c->act), act_median_ratio(ci));
    if (c->smooth.alpha > 0) {
        double sb, sa;
        smooth_medians(&ci->smooth, &sb, &sa);
        printf("smoothed        %d inputs (qkv, proj, fc1) with alpha %.2f: largest channel / median channel, "
               "median over inputs %.1f -> %.1f\n", ci->smooth.layers, c->smooth.alpha, sb, sa);
    }
    if (!c->gptq_rounding) {
        printf("quantized       the block linears, rounded to nearest\n");
        return;
    }
    printf("quantized       %d block linears with error feedback (GPTQ, %s order) in %.1f s\n", ci->gptq.layers,
           c->gptq.act_order ? "act" : "index", ci->gptq.seconds);
    printf("output error    median over layers, |(W - Wq) X|^2 / |W X|^2: round to nearest %.3g, gptq %.3g "
           "(%.2fx lower)\n", ma, mb, mb > 0 ? ma / mb : 0);
}

static void smooth_json(cJSON *root, const lpv_quant_calib_opts *c, const lpv_smooth_info *si,
                        const lpv_layer_ref *refs, int n) {
    cJSON *sm = cJSON_AddObjectToObject(root, "smoothing");
    cJSON_AddNumberToObject(sm, "alpha", c->smooth.alpha);
    if (c->smooth.alpha <= 0) return;
    double sb, sa;
    smooth_medians(si, &sb, &sa);
    cJSON_AddNumberToObject(sm, "median_spread_before", sb);
    cJSON_AddNumberToObject(sm, "median_spread_after", sa);
    cJSON *ls = cJSON_AddArrayToObject(sm, "layers");
    for (int i = 0; i < n; i++) {
        if (!(si->spread_before[i] > 0)) continue;
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", refs[i].name);
        cJSON_AddNumberToObject(l, "spread_before", si->spread_before[i]);
        cJSON_AddNumberToObject(l, "spread_after", si->spread_after[i]);
        cJSON_AddNumberToObject(l, "factor_min", si->smin[i]);
        cJSON_AddNumberToObject(l, "factor_max", si->smax[i]);
        cJSON_AddItemToArray(ls, l);
    }
}

static void act_json(cJSON *root, const lpv_quant_calib_opts *c, const lpv_quant_calib_info *ci,
                     const lpv_layer_ref *refs, int n) {
    cJSON *a = cJSON_AddObjectToObject(root, "inputs");
    cJSON_AddStringToObject(a, "scales", lpv_act_mode_name(c->act));
    if (c->act == LPV_ACT_TOKEN) return;
    cJSON_AddNumberToObject(a, "median_mse_over_minmax", act_median_ratio(ci));
    cJSON *ls = cJSON_AddArrayToObject(a, "layers");
    for (int i = 0; i < n; i++) {
        if (!(ci->act[i].scale > 0)) continue;
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", refs[i].name);
        cJSON_AddNumberToObject(l, "scale", ci->act[i].scale);
        cJSON_AddNumberToObject(l, "zero_point", ci->act[i].zp);
        cJSON_AddNumberToObject(l, "lo", -ci->act[i].scale * ci->act[i].zp);
        cJSON_AddNumberToObject(l, "hi", ci->act[i].scale * (255 - ci->act[i].zp));
        cJSON_AddNumberToObject(l, "mse", ci->act_mse[i]);
        cJSON_AddNumberToObject(l, "mse_minmax", ci->act_mse_minmax[i]);
        cJSON_AddItemToArray(ls, l);
    }
}

static void gptq_json(cJSON *root, const lpv_quant_calib_opts *c, const lpv_gptq_info *gi, const lpv_layer_ref *refs,
                      int n, double ma, double mb) {
    const lpv_gptq_opts *o = &c->gptq;
    cJSON *q = cJSON_AddObjectToObject(root, "gptq");
    cJSON_AddStringToObject(q, "grid", o->codebook ? "codebook" : "int8");
    if (o->codebook) cJSON_AddNumberToObject(q, "levels", o->codebook);
    if (o->codebook) cJSON_AddStringToObject(q, "fit", o->weighted_fit ? "energy" : "plain");
    cJSON_AddStringToObject(q, "order", o->act_order ? "act" : "index");
    cJSON_AddNumberToObject(q, "cls_weight", c->prefix_weight);
    cJSON_AddNumberToObject(q, "damp", o->recon.damp);
    cJSON_AddNumberToObject(q, "max_damp", gi->max_damp);
    cJSON_AddBoolToObject(q, "bias_correction", o->bias);
    cJSON_AddNumberToObject(q, "seconds", gi->seconds);
    cJSON_AddNumberToObject(q, "median_err_rtn", ma);
    cJSON_AddNumberToObject(q, "median_err_gptq", mb);
    cJSON *ls = cJSON_AddArrayToObject(q, "layers");
    for (int i = 0; i < n; i++) {
        if (!lpv_layer_kind_is_block(refs[i].kind)) continue;
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", refs[i].name);
        cJSON_AddNumberToObject(l, "err_rtn", gi->err_rtn[i]);
        cJSON_AddNumberToObject(l, "err_gptq", gi->err_gptq[i]);
        cJSON_AddItemToArray(ls, l);
    }
}

/* What the calibrated run did: a summary on stdout, or the JSON report (calibration list, smoothing, the
 * sweep's per-layer output errors). */
static lpv_status print_calibrated(const lpv_model *m, const lpv_quant_calib_opts *c, const lpv_quant_calib_info *ci,
                                   const lpv_dataset *ds, const char *dir, int seed, int json,
                                   lpv_err *err) {
    const lpv_gptq_info *gi = &ci->gptq;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers((lpv_model *)m, refs, LPV_MAX_LAYERS), k = 0;
    double a[LPV_MAX_LAYERS], b[LPV_MAX_LAYERS];
    for (int i = 0; i < n; i++)
        if (lpv_layer_kind_is_block(refs[i].kind)) a[k] = gi->err_rtn[i], b[k++] = gi->err_gptq[i];
    double ma = k && c->gptq_rounding ? lpv_median(a, k) : 0, mb = k && c->gptq_rounding ? lpv_median(b, k) : 0;
    if (!json) {
        print_text(c, ci, ma, mb);
        return LPV_OK;
    }
    cJSON *root = cJSON_CreateObject(), *cal = cJSON_AddObjectToObject(root, "calibration");
    char h[65];
    lpv_dataset_hash(ds, h);
    cJSON_AddStringToObject(cal, "dir", dir);
    cJSON_AddNumberToObject(cal, "images", (double)ci->images); /* over every rank under mpirun */
    cJSON_AddNumberToObject(cal, "skipped", (double)(ds->n - ci->images));
    cJSON_AddNumberToObject(cal, "seed", seed);
    cJSON_AddStringToObject(cal, "list_sha256", h);
    cJSON_AddStringToObject(root, "rounding", c->gptq_rounding ? "gptq" : "nearest");
    smooth_json(root, c, &ci->smooth, refs, n);
    act_json(root, c, ci, refs, n);
    if (c->gptq_rounding) gptq_json(root, c, gi, refs, n, ma, mb);
    lpv_report_environment(root);
    char *txt = NULL;
    lpv_status st = lpv_json_print(root, "stdout", &txt, err);
    if (st == LPV_OK) fputs(txt, stdout);
    free(txt);
    cJSON_Delete(root);
    return st;
}

int cmd_quantize(int argc, char **argv) {
    cli_model_args ma;
    cli_model_args_init(&ma);
    const char *out = NULL, *calib_dir = NULL, *order = "act", *rounding = "gptq", *act = "token",
               *act_layers = "qkv,proj,fc1";
    int K = 0, calib_size = 256, seed = 0, no_bias = 0, json = 0, cls_weight = 0, threads = 0, plain_fit = 0;
    const char *isa = NULL;
    double damp = LPV_RECON_DAMP, alpha = 0;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &ma.model, "M", "model to quantize: preset, .safetensors (dense or pruned) or HF folder", 0, 0, NULL},
        {"--weights", OPT_IN, &ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--out", OPT_OUT, &out, "FILE", "output .safetensors (required; never the input)", 0, 0, NULL},
        {"--codebook", OPT_INT, &K, "K", "instead of int8: each block linear's weights on K levels shared by its channels, times a scale per row (1-D k-means on w / the row's max |w|), stored as uint8 codes + the K levels + the row scales and decoded to FP32 when loaded (K <= 256)", 1, 256, NULL},
        {"--calib-dir", OPT_IN, &calib_dir, "DIR", "calibration images (any folder): round with error feedback (GPTQ) under each layer's input statistics instead of to nearest", 0, 0, NULL},
        {"--calib-size", OPT_INT, &calib_size, "N", "calibration images (seeded choice, sorted; default 256)", 1, 10000000, NULL},
        {"--seed", OPT_INT, &seed, "S", "seed for the calibration choice", 0, 2147483647, NULL},
        {"--rounding", OPT_STR, &rounding, "R", "with --calib-dir: gptq (default) or nearest (the grid's nearest point, as without --calib-dir; to measure what GPTQ or --smooth adds)", 0, 0, NULL},
        {"--smooth", OPT_DOUBLE, &alpha, "A", "with --calib-dir: SmoothQuant with strength A in (0, 1]: each channel of qkv's, proj's and fc1's inputs divided by max|x|^A / max|w|^(1-A), folded into LayerNorm and v, its weight column multiplied by it; the FP32 model is unchanged, the int8 inputs flatter (default 0: off)", 0, 1, NULL},
        {"--act-scales", OPT_STR, &act, "M", "with --calib-dir: the int8 inputs' grids: token (each token's own range at run time, default), or one static scale and zero point per layer input from the calibration images: mse (the range whose grid quantizes them with the least squared error, tails clipped where that pays) or minmax (every value covered: the naive baseline)", 0, 0, NULL},
        {"--act-layers", OPT_STR, &act_layers, "LIST", "with a static --act-scales: which block linears get one (comma list of qkv, proj, fc1, fc2; the others stay per token): by default not fc2, whose input (GELU's output) has a long tail one static grid serves badly (ViT-Tiny: 82.1 % top-1 with fc2 per token, 81.3 with all four static)", 0, 0, NULL},
        {"--gptq-order", OPT_STR, &order, "O", "with --calib-dir: act (columns by decreasing input energy, default) or index", 0, 0, NULL},
        {"--gptq-damp", OPT_DOUBLE, &damp, "F", "with --calib-dir: damping of each layer's H, a fraction of its mean diagonal (default 0.01)", 0, 10, NULL},
        {"--gptq-cls-weight", OPT_INT, &cls_weight, "W", "with --calib-dir: each image's cls (and dist) token counts W times in the statistics (default: the patch count, so the token the logits read weighs as much as all patches; 1: like any token)", 1, 1000000, NULL},
        {"--plain-fit", OPT_FLAG, &plain_fit, NULL, "with --calib-dir and --codebook: fit the levels to the weights alone (default: each weight weighs its row scale^2 x its input's energy H_jj)", 0, 0, NULL},
        {"--no-bias-correction", OPT_FLAG, &no_bias, NULL, "with --calib-dir: leave the biases as they are (default: b += (W - Wq) E[x])", 0, 0, NULL},
        {"--json", OPT_FLAG, &json, NULL, "with --calib-dir: the per-layer output errors as JSON on stdout", 0, 0, NULL},
        {"--crop-pct", OPT_DOUBLE, &ma.crop_pct, "F", "preprocessing to record: override the preset's crop_pct", 0.05, 4, NULL},
        {"--interp", OPT_STR, &ma.interp, "I", "preprocessing to record: bicubic or bilinear", 0, 0, NULL},
        {"--mean", OPT_FLOAT3, ma.mean, "a,b,c", "preprocessing to record: normalization mean", 0, 0, &ma.mean_set},
        {"--std", OPT_FLOAT3, ma.std, "a,b,c", "preprocessing to record: normalization std", 0, 0, &ma.std_set},
        CLI_OPT_HEADS(&ma.heads),
        CLI_OPT_ALLOW_EXTRA(&ma.allow_extra),
        CLI_OPT_THREADS(&threads),
        CLI_OPT_ISA(&isa),
        CLI_OPT_QUIET(&ma.quiet),
        {0},
    };
    const cli_spec spec = {"lpvit quantize --model M --out FILE",
                           "Writes the model with its block linears in int8 (W8A8): weights symmetric with one scale per "
                           "output row (I8 tensors + .weight_scale), inputs uint8 with each token's own scale and zero "
                           "point, found at run time (no calibration needed; --act-scales mse with --calib-dir: one "
                           "static grid per layer input instead). The patch embedding, heads, LayerNorm, "
                           "softmax and GELU stay FP32; eval/infer/bench run attention's two products in int8 where "
                           "the CPU has VNNI (--attention). Pruned layers stay block sparse. The file records the "
                           "preprocessing, so eval/infer/bench run it with no flags. --codebook K writes codes of a "
                           "per-layer codebook instead (a smaller file that runs in FP32).",
                           opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(ma.quiet);
    if (!ma.model) return cli_usage_error("--model is required");
    if (!out) return cli_usage_error("--out is required");
    if (!calib_dir && alpha > 0)
        return cli_usage_error("--smooth needs --calib-dir (the inputs' channel maxima come from its images)");
    if (strcmp(order, "act") != 0 && strcmp(order, "index") != 0)
        return cli_usage_error("--gptq-order: expected act or index, got '%s'", order);
    if (strcmp(rounding, "gptq") != 0 && strcmp(rounding, "nearest") != 0)
        return cli_usage_error("--rounding: expected gptq or nearest, got '%s'", rounding);
    lpv_err err;
    lpv_act_mode am;
    unsigned kinds;
    if (lpv_act_mode_parse(act, &am, &err)) return cli_usage_error("--act-scales: %s", err.msg);
    if (am != LPV_ACT_TOKEN && !calib_dir) return cli_usage_error("--act-scales %s needs --calib-dir", act);
    if (am != LPV_ACT_TOKEN && K) return cli_usage_error("--act-scales %s is for int8 (a codebook runs in FP32)", act);
    if (!(kinds = cli_block_kinds(act_layers))) return cli_usage_error("--act-layers: expected a comma list of qkv, proj, fc1, fc2, got '%s'", act_layers);
    lpv_status st = cli_runtime(threads, isa, &err);
    if (st) return cli_fail(&err, st);
    cli_model cm;
    ma.needs_pp = 1;
    st = cli_open_model(&ma, &cm, &err);
    if (st) return cli_fail(&err, st);
    lpv_model *m = cm.model;
    lpv_quant_calib_opts c = lpv_quant_calib_defaults();
    lpv_quant_calib_info ci;
    c.gptq.codebook = K, c.gptq.bias = !no_bias, c.gptq.recon.damp = damp, c.gptq.weighted_fit = !plain_fit;
    c.prefix_weight = cls_weight, c.smooth.alpha = alpha, c.act = am, c.act_kinds = kinds;
    lpv_dataset ds = {0};
    lpv_skips sk = {0};
    if (calib_dir) {
        cli_warn_blas_core("quantize --calib-dir");
        c.gptq.act_order = strcmp(order, "act") == 0;
        c.gptq_rounding = strcmp(rounding, "gptq") == 0;
        if (lpv_model_has_int8(m))
            st = lpv_fail(&err, LPV_E_ARG, "'%s' is int8 already: --calib-dir quantizes an FP32 model", m->path);
        else if ((st = open_calib(&ds, calib_dir, calib_size, seed, &err)) == LPV_OK)
            st = lpv_model_quantize_calibrated(m, &ds, &cm.pp, &c, &ci, &sk, &err);
    } else {
        if (lpv_model_has_int8(m) && !K) lpv_warn("'%s' is already int8: its int8 weights are written as they are", m->path);
        st = K ? lpv_model_quantize_codebook(m, K, &err) : lpv_model_quantize_int8(m, 32, 32, &err);
    }
    char *meta = st ? NULL : quant_meta(m, &cm.pp, K);
    if (!st && !meta) st = lpv_fail(&err, LPV_E_OOM, "out of memory");
    const char *keys[2] = {"lpvit.quantized_from", "lpvit"};
    const char *vals[2] = {m->path, meta};
    lpv_save_opts so = {0, 2, {keys[0], keys[1]}, {vals[0], vals[1]}, 0};
    if (!st && lpv_dist_rank() == 0) st = lpv_model_save(m, out, &so, &err); /* one writer under mpirun */
    st = lpv_dist_agree(st, &err);
    if (!st && K)
        lpv_info("wrote '%s' (block linears on %d levels per layer; %.1f%% of linear weights kept)", out, K,
                 100 * lpv_model_linear_density(m));
    else if (!st)
        lpv_info("wrote '%s' (block linears int8, inputs %s; %.1f%% of linear weights kept)", out,
                 c.act == LPV_ACT_TOKEN ? "per token" : "on static grids", 100 * lpv_model_linear_density(m));
    if (!st && calib_dir) st = print_calibrated(m, &c, &ci, &ds, calib_dir, seed, json, &err);
    free(meta);
    lpv_skips_free(&sk);
    if (calib_dir) lpv_dataset_free(&ds);
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
