/*
 * cmd_create_model.c — `lpvit create-model`: a DeiT/ViT with random weights
 * (seeded, timm names), at a preset's shape or any width/depth. Used by the
 * demo, the end-to-end tests and the speed benchmarks of DeiT-S/B shapes.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/log.h"
#include "lpvit/model.h"
#include "lpvit/registry.h"
#include "lpvit/report.h"

int cmd_create_model(int argc, char **argv) {
    const char *preset = NULL, *out = NULL;
    int dim = 0, depth = 0, heads = 0, mlp = 0, classes = 1000, img = 224, patch = 16, distilled = 0, seed = 0, quiet = 0;
    int classes_set = 0, img_set = 0, patch_set = 0;
    const cli_opt opts[] = {
        {"--preset", OPT_STR, &preset, "NAME", "take the architecture of a preset (deit_t, deit_b, ...)", 0, 0, NULL},
        {"--dim", OPT_INT, &dim, "D", "embedding width (default: the preset's)", 1, 8192, NULL},
        {"--depth", OPT_INT, &depth, "L", "number of blocks (default: the preset's)", 1, 256, NULL},
        {"--heads", OPT_INT, &heads, "H", "attention heads, dividing D (default: the preset's, else by width: 192->3, 384->6, 768->12)", 1, 1024, NULL},
        {"--mlp", OPT_INT, &mlp, "F", "MLP hidden width (default 4D)", 1, 65536, NULL},
        {"--classes", OPT_INT, &classes, "C", "classifier outputs (overrides the preset)", 1, 100000, &classes_set},
        {"--img", OPT_INT, &img, "S", "input side (overrides the preset)", 16, 4096, &img_set},
        {"--patch", OPT_INT, &patch, "P", "patch side (overrides the preset)", 1, 256, &patch_set},
        {"--distilled", OPT_FLAG, &distilled, NULL, "add a distillation token and head", 0, 0, NULL},
        {"--seed", OPT_INT, &seed, "S", "random seed", 0, 2147483647, NULL},
        {"--out", OPT_OUT, &out, "FILE", "output .safetensors (required)", 0, 0, NULL},
        CLI_OPT_QUIET(&quiet),
        {0},
    };
    const cli_spec spec = {"lpvit create-model [--preset NAME] [--dim D --depth L --heads H] --out FILE",
                           "Writes a DeiT/ViT with random weights in timm's format.", opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(quiet);
    if (!out) return cli_usage_error("--out is required");
    lpv_err err;
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.chans = 3, c.classes = classes, c.img = img, c.patch = patch;
    lpv_preset ps;
    if (preset) {
        lpv_status st = lpv_registry_find(preset, &ps, &err);
        if (st) return cli_fail(&err, st);
        c.dim = ps.dim, c.depth = ps.depth, c.heads = ps.heads, c.mlp = ps.mlp, c.classes = ps.classes;
        c.img = ps.img, c.patch = ps.patch, distilled |= ps.distilled;
    }
    /* every flag given wins over the preset, as --dim and --depth do */
    if (classes_set) c.classes = classes;
    if (img_set) c.img = img;
    if (patch_set) c.patch = patch;
    if (dim) c.dim = dim;
    if (depth) c.depth = depth;
    if (heads) c.heads = heads;
    if (mlp) c.mlp = mlp;
    if (!c.dim || !c.depth) return cli_usage_error("give --preset or --dim and --depth");
    if (!c.heads) c.heads = lpv_default_heads(c.dim);
    if (!c.heads) return cli_usage_error("--heads is required for width %d", c.dim);
    if (c.dim % c.heads) return cli_usage_error("--dim %d is not divisible by --heads %d", c.dim, c.heads);
    if (c.img % c.patch) return cli_usage_error("--img %d is not a multiple of --patch %d", c.img, c.patch);
    if (!c.mlp) c.mlp = 4 * c.dim;
    c.n_prefix = distilled ? 2 : 1;
    c.n_outputs = distilled ? 2 : 1;
    c.ln_eps = 1e-6f;
    lpv_model *m;
    lpv_status st = lpv_model_random(&m, &c, (uint64_t)seed, &err);
    if (st) return cli_fail(&err, st);
    char meta[128];
    snprintf(meta, sizeof meta, "{\"random_seed\": %d}", seed);
    /* the preprocessing eval should use, recorded as prune records it: the preset's, else DeiT's */
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = c.img;
    if (preset) lpv_preset_preproc(&ps, &pp);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "lpvit-random-v1");
    cJSON_AddItemToObject(j, "preprocess", lpv_preproc_json(&pp));
    char *lmeta = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    lpv_save_opts so = {0, 2, {"lpvit.random", "lpvit"}, {meta, lmeta ? lmeta : "{}"}, 0};
    st = lpv_model_save(m, out, &so, &err);
    free(lmeta);
    if (!st)
        lpv_info("wrote '%s': random weights (seed %d), width %d, depth %d, %d heads, %.2fM params", out, seed, c.dim,
                 c.depth, c.heads, (double)lpv_model_params(m) / 1e6);
    lpv_model_free(m);
    return st ? cli_fail(&err, st) : 0;
}
