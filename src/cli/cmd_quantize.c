/*
 * cmd_quantize.c — `lpvit quantize`: write a model's block linears (qkv, proj, fc1, fc2; dense or pruned)
 * as int8 weights with one scale per output row, their inputs quantized per token at run time; or, with
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
#include "lpvit/log.h"
#include "lpvit/model.h"
#include "lpvit/report.h"

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

int cmd_quantize(int argc, char **argv) {
    cli_model_args ma;
    cli_model_args_init(&ma);
    const char *out = NULL;
    int K = 0;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &ma.model, "M", "model to quantize: preset, .safetensors (dense or pruned) or HF folder", 0, 0, NULL},
        {"--weights", OPT_IN, &ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--out", OPT_OUT, &out, "FILE", "output .safetensors (required; never the input)", 0, 0, NULL},
        {"--codebook", OPT_INT, &K, "K", "instead of int8: each block linear's weights on K levels shared by its channels, times a scale per row (1-D k-means on w / the row's max |w|), stored as uint8 codes + the K levels + the row scales and decoded to FP32 when loaded (K <= 256)", 1, 256, NULL},
        {"--crop-pct", OPT_DOUBLE, &ma.crop_pct, "F", "preprocessing to record: override the preset's crop_pct", 0.05, 4, NULL},
        {"--interp", OPT_STR, &ma.interp, "I", "preprocessing to record: bicubic or bilinear", 0, 0, NULL},
        {"--mean", OPT_FLOAT3, ma.mean, "a,b,c", "preprocessing to record: normalization mean", 0, 0, &ma.mean_set},
        {"--std", OPT_FLOAT3, ma.std, "a,b,c", "preprocessing to record: normalization std", 0, 0, &ma.std_set},
        CLI_OPT_HEADS(&ma.heads),
        CLI_OPT_ALLOW_EXTRA(&ma.allow_extra),
        CLI_OPT_QUIET(&ma.quiet),
        {0},
    };
    const cli_spec spec = {"lpvit quantize --model M --out FILE",
                           "Writes the model with its block linears in int8 (W8A8): weights symmetric with one scale per "
                           "output row (I8 tensors + .weight_scale), inputs uint8 with each token's own scale and zero "
                           "point, found at run time (no calibration needed). The patch embedding, heads, LayerNorm, "
                           "attention and GELU stay FP32. Pruned layers stay block sparse. The file records the "
                           "preprocessing, so eval/infer/bench run it with no flags. --codebook K writes codes of a "
                           "per-layer codebook instead (a smaller file that runs in FP32).",
                           opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(ma.quiet);
    if (!ma.model) return cli_usage_error("--model is required");
    if (!out) return cli_usage_error("--out is required");
    lpv_err err;
    cli_model cm;
    ma.needs_pp = 1;
    lpv_status st = cli_open_model(&ma, &cm, &err);
    if (st) return cli_fail(&err, st);
    lpv_model *m = cm.model;
    if (lpv_model_has_int8(m) && !K) lpv_warn("'%s' is already int8: its int8 weights are written as they are", m->path);
    st = K ? lpv_model_quantize_codebook(m, K, &err) : lpv_model_quantize_int8(m, 32, 32, &err);
    char *meta = st ? NULL : quant_meta(m, &cm.pp, K);
    if (!st && !meta) st = lpv_fail(&err, LPV_E_OOM, "out of memory");
    const char *keys[2] = {"lpvit.quantized_from", "lpvit"};
    const char *vals[2] = {m->path, meta};
    lpv_save_opts so = {0, 2, {keys[0], keys[1]}, {vals[0], vals[1]}, 0};
    if (!st) st = lpv_model_save(m, out, &so, &err);
    if (!st && K)
        lpv_info("wrote '%s' (block linears on %d levels per layer; %.1f%% of linear weights kept)", out, K,
                 100 * lpv_model_linear_density(m));
    else if (!st)
        lpv_info("wrote '%s' (block linears int8, inputs per token; %.1f%% of linear weights kept)", out,
                 100 * lpv_model_linear_density(m));
    free(meta);
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
