/*
 * cmd_export.c — `lpvit export`: rewrite a (pruned) model as a plain
 * timm-named safetensors that timm loads as it is — every pruned block a
 * block of zeros (--dense-masked) — or re-save it in lpvit's BSR format; --dtype bf16 writes every float
 * tensor in BF16 (half the file; timm and Hugging Face load BF16 safetensors).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/log.h"
#include "lpvit/model.h"

int cmd_export(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *dtype = "f32";
    int dense_masked = 0, heads = 0, allow_extra = 0, quiet = 0;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &model, "P", "model to export (pruned BSR file, or any model lpvit loads)", 0, 0, NULL},
        {"--out", OPT_OUT, &out, "FILE", "output .safetensors (required; never the input)", 0, 0, NULL},
        {"--dense-masked", OPT_FLAG, &dense_masked, NULL, "dense weights with zeros in pruned blocks (timm-loadable); int8 and codebook layers decoded to float", 0, 0, NULL},
        {"--dtype", OPT_STR, &dtype, "T", "f32 or bf16: the float tensors' type (bf16: rounded to nearest, ties to even; half the file) (default f32)", 0, 0, NULL},
        CLI_OPT_HEADS(&heads),
        CLI_OPT_ALLOW_EXTRA(&allow_extra),
        CLI_OPT_QUIET(&quiet),
        {0},
    };
    const cli_spec spec = {"lpvit export --model P --out FILE [--dense-masked] [--dtype f32|bf16]",
                           "Writes the model with timm key names: pruned layers as .bsr_values/.bsr_col_indices/"
                           ".bsr_row_ptr (default), or with --dense-masked as ordinary dense weights with zero blocks, "
                           "so timm's load_state_dict takes the file unchanged.",
                           opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(quiet);
    if (!model) return cli_usage_error("--model is required");
    if (!out) return cli_usage_error("--out is required");
    int bf16 = !strcmp(dtype, "bf16");
    if (!bf16 && strcmp(dtype, "f32") != 0) return cli_usage_error("--dtype: expected f32 or bf16, got '%s'", dtype);
    lpv_err err;
    lpv_model_ref ref;
    lpv_status st = lpv_resolve_model(model, NULL, &ref, &err);
    lpv_model *m = NULL;
    lpv_model_opts mo = {heads, 0, allow_extra};
    if (!st) st = lpv_model_load(&m, ref.path, &mo, &err);
    if (st) return cli_fail(&err, st);
    if (bf16 && !dense_masked && (lpv_model_has_int8(m) || lpv_model_has_codebook(m))) {
        int q8 = lpv_model_has_int8(m);
        lpv_model_free(m);
        return cli_usage_error("--dtype bf16: '%s' has %s weights; add --dense-masked to write them decoded, in BF16", model,
                               q8 ? "int8" : "codebook");
    }
    const char *keys[2] = {"lpvit.exported_from", "lpvit"};
    const char *vals[2] = {m->path, m->lpvit_meta};
    lpv_save_opts so = {dense_masked, m->lpvit_meta ? 2 : 1, {keys[0], keys[1]}, {vals[0], vals[1]}, bf16};
    st = lpv_model_save(m, out, &so, &err);
    if (!st)
        lpv_info("wrote '%s' (%s, %s, %.1f%% of linear weights nonzero)", out,
                 dense_masked ? "dense with zero blocks" : "BSR layers kept sparse", bf16 ? "bf16" : "f32",
                 100 * lpv_model_linear_density(m));
    lpv_model_free(m);
    return st ? cli_fail(&err, st) : 0;
}
