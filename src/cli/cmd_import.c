/*
 * cmd_import.c — `lpvit import`: the way back from a fine-tune in PyTorch. A dense file whose pruned blocks
 * are still exactly zero (scripts/finetune_masked.py writes one) is packed into the BSR structure of the
 * pruned file its masks came from, so lpvit's engine runs it block-sparse again. The masks are the pruned
 * file's BSR layers (lpv_model_apply_masks), never the zeros of the fine-tuned weights. The output keeps the
 * pruned file's metadata and adds where the masks and the weights came from and the fine-tune's settings.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/log.h"
#include "lpvit/model.h"
#include "lpvit/report.h"

/* {"path": ..., "sha256": ...} of a model's file. */
static cJSON *file_json(lpv_model *m) {
    lpv_err e;
    const char *sha = lpv_model_hash(m, &e);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", m->path);
    cJSON_AddStringToObject(j, "sha256", sha ? sha : "");
    return j;
}

/* The object under `key` in a model's "lpvit" metadata (a detached copy), or NULL. */
static cJSON *meta_item(const lpv_model *m, const char *key) {
    cJSON *root = m->lpvit_meta ? cJSON_Parse(m->lpvit_meta) : NULL;
    cJSON *it = cJSON_DetachItemFromObjectCaseSensitive(root, key);
    cJSON_Delete(root);
    return it;
}

/* Says so when the fine-tune recorded masks from another file than the ones given (the zero check still
 * decides: masks whose pruned blocks are a subset of the fine-tune's pass it). */
static void check_recorded_masks(const cJSON *ft, lpv_model *p) {
    const cJSON *mf = cJSON_GetObjectItemCaseSensitive(ft, "masks_from");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(mf, "sha256");
    lpv_err e;
    const char *want = lpv_model_hash(p, &e);
    if (cJSON_IsString(sha) && want && strcmp(sha->valuestring, want) != 0)
        lpv_warn("the fine-tune recorded masks from another file (sha256 %.12s, not %.12s of '%s')", sha->valuestring,
                 want, p->path);
}

/* The output's "lpvit" metadata: the pruned file's (format, source model, preprocessing, pruning settings),
 * plus masks_from and weights_from (path, sha256), the fine-tune's settings when the weights file has them
 * (null otherwise) and the commit that imported. */
static char *import_meta(lpv_model *m, lpv_model *p) {
    cJSON *root = p->lpvit_meta ? cJSON_Parse(p->lpvit_meta) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "format", "lpvit-bsr-v1");
    }
    const char *keys[] = {"masks_from", "weights_from", "finetune", "import_commit"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) cJSON_DeleteItemFromObjectCaseSensitive(root, keys[i]);
    cJSON_AddItemToObject(root, "masks_from", file_json(p));
    cJSON_AddItemToObject(root, "weights_from", file_json(m));
    cJSON *ft = meta_item(m, "finetune");
    if (ft) check_recorded_masks(ft, p);
    cJSON_AddItemToObject(root, "finetune", ft ? ft : cJSON_CreateNull());
    cJSON_AddStringToObject(root, "import_commit", lpv_commit());
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return txt;
}

/* The fine-tuned model; a file that does not say its head count gets the masks model's (a plain timm state
 * dict saved by other code does not), which the architecture check then compares like every other field. */
static lpv_status load_weights(const char *path, const lpv_model *p, int heads, int allow_extra, lpv_model **m,
                               lpv_err *err) {
    lpv_model_opts mo = {heads, 0, allow_extra};
    lpv_status st = lpv_model_load(m, path, &mo, err);
    if (st == LPV_E_ARG && !heads && strcmp(err->param, "heads") == 0) {
        mo.heads = p->cfg.heads;
        st = lpv_model_load(m, path, &mo, err);
        if (!st) lpv_info("'%s' does not say its attention heads: %d, as in '%s'", path, mo.heads, p->path);
    }
    return st;
}

int cmd_import(int argc, char **argv) {
    const char *model = NULL, *masks = NULL, *out = NULL;
    int heads = 0, allow_extra = 0, quiet = 0;
    const cli_opt opts[] = {
        {"--model", OPT_IN, &model, "FT", "fine-tuned dense weights with zeros in the pruned blocks (.safetensors, timm names)", 0, 0, NULL},
        {"--masks-from", OPT_IN, &masks, "P", "the pruned BSR file whose masks the fine-tune held fixed", 0, 0, NULL},
        {"--out", OPT_OUT, &out, "FILE", "output .safetensors (required; never an input)", 0, 0, NULL},
        CLI_OPT_HEADS(&heads),
        CLI_OPT_ALLOW_EXTRA(&allow_extra),
        CLI_OPT_QUIET(&quiet),
        {0},
    };
    const cli_spec spec = {"lpvit import --model FT --masks-from P --out FILE",
                           "Packs fine-tuned dense weights back into the BSR structure of the pruned file P: every "
                           "layer P prunes becomes block-sparse again with exactly P's blocks kept (the masks are "
                           "P's, never guessed from zeros). Refuses a file with a nonzero weight in a pruned block "
                           "or another architecture than P's. The output keeps P's metadata (preprocessing, "
                           "pruning settings) and records both input files (path, sha256) and the fine-tune's "
                           "settings. scripts/finetune_masked.py fine-tunes with the masks held fixed.",
                           opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(quiet);
    if (!model) return cli_usage_error("--model is required");
    if (!masks) return cli_usage_error("--masks-from is required");
    if (!out) return cli_usage_error("--out is required");
    lpv_err err;
    lpv_model *p = NULL, *m = NULL;
    lpv_model_opts po = {0, 0, allow_extra};
    char *meta = NULL;
    lpv_status st = lpv_model_load(&p, masks, &po, &err);
    if (!st) st = load_weights(model, p, heads, allow_extra, &m, &err);
    if (!st) st = lpv_model_apply_masks(m, p, &err);
    if (!st && !(meta = import_meta(m, p))) st = lpv_fail(&err, LPV_E_OOM, "out of memory");
    lpv_save_opts so = {0, 1, {"lpvit"}, {meta}, 0};
    if (!st) st = lpv_model_save(m, out, &so, &err);
    if (!st) {
        if (lpv_model_has_int8(p)) lpv_warn("'%s' is int8: the imported weights are FP32 (lpvit quantize makes them int8)", masks);
        lpv_info("wrote '%s' (%.1f%% of linear weights kept, the blocks of '%s')", out, 100 * lpv_model_linear_density(m),
                 masks);
    }
    free(meta);
    lpv_model_free(m);
    lpv_model_free(p);
    return st ? cli_fail(&err, st) : 0;
}
