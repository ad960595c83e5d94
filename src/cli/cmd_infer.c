/*
 * cmd_infer.c — `lpvit infer`: logits for a tensor of preprocessed images
 * (--input X.safetensors --out Y.safetensors), or the top-5 classes of image
 * files given as arguments.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/log.h"
#include "lpvit/cpu.h"
#include "lpvit/dataset.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/report.h"
#include "lpvit/safetensors.h"

#define MAX_IMAGES 4096

/* Runs the model over n images (n, C, S, S) in batches into logits (n, classes). */
static lpv_status run_batches(const lpv_model *m, const float *x, int n, int batch, float *logits, lpv_err *err) {
    lpv_workspace ws;
    int b = n < batch ? n : batch;
    LPV_TRY(lpv_workspace_init_for(&ws, m, b, err));
    int64_t per = (int64_t)m->cfg.chans * m->cfg.img * m->cfg.img;
    lpv_status st = LPV_OK;
    for (int i = 0; i < n && st == LPV_OK; i += b) {
        int k = n - i < b ? n - i : b;
        st = lpv_forward(m, &ws, x + (int64_t)i * per, k, logits + (int64_t)i * m->cfg.classes, err);
    }
    lpv_workspace_free(&ws);
    return st;
}

static lpv_status infer_tensor(const cli_model *cm, const char *in, const char *out, int batch, lpv_err *err) {
    const lpv_config *c = &cm->model->cfg;
    lpv_st_file f;
    LPV_TRY(lpv_st_open(&f, in, err));
    lpv_status st = LPV_OK;
    const lpv_st_tensor *t = lpv_st_find(&f, "input");
    char sb[128];
    if (!t) st = lpv_fail(err, LPV_E_SHAPE, "'%s': no tensor named 'input'", in);
    else if (t->ndim != 4 || t->shape[0] < 1 || t->shape[0] > 1 << 20 || t->shape[1] != c->chans ||
             t->shape[2] != c->img || t->shape[3] != c->img)
        st = lpv_fail(err, LPV_E_SHAPE, "'%s': tensor 'input' has shape %s, expected [N, %d, %d, %d]", in,
                      lpv_shape_str(sb, sizeof sb, t->ndim, t->shape), c->chans, c->img, c->img);
    if (st) {
        lpv_st_close(&f);
        return st;
    }
    int n = (int)t->shape[0];
    float *x = malloc(sizeof(float) * t->nelem), *logits = malloc(sizeof(float) * (size_t)n * c->classes);
    if (!x || !logits) st = lpv_fail(err, LPV_E_OOM, "out of memory for %d images", n);
    if (!st) st = lpv_st_read_f32(&f, t, x, err);
    lpv_st_close(&f);
    if (!st) st = run_batches(cm->model, x, n, batch, logits, err);
    for (int64_t i = 0; !st && i < (int64_t)n * c->classes; i++)
        if (!isfinite(logits[i])) st = lpv_fail(err, LPV_E_DATA, "non-finite logit for image %lld", (long long)(i / c->classes));
    if (!st) {
        lpv_st_writer w;
        lpv_st_writer_init(&w);
        st = lpv_st_writer_add(&w, "logits", LPV_DT_F32, 2, (int64_t[]){n, c->classes}, logits, err);
        char meta[256];
        snprintf(meta, sizeof meta, "{\"model\": \"%s\", \"lpvit\": \"%s\"}", cm->model->arch, lpv_commit());
        if (!st) st = lpv_st_writer_meta(&w, "lpvit.infer", meta, err);
        if (!st) st = lpv_st_write(&w, out, err);
        lpv_st_writer_free(&w);
    }
    free(x);
    free(logits);
    return st;
}

static void top5(const float *l, int C, int idx[5]) {
    for (int k = 0; k < 5; k++) idx[k] = -1;
    for (int j = 0; j < C; j++) {
        int k = 5;
        while (k > 0 && (idx[k - 1] < 0 || l[j] > l[idx[k - 1]])) k--;
        if (k >= 5) continue;
        for (int q = 4; q > k; q--) idx[q] = idx[q - 1];
        idx[k] = j;
    }
}

static lpv_status infer_images(const cli_model *cm, char **paths, int n, int batch, const char *synsets_path,
                               const char *json, lpv_err *err) {
    const lpv_config *c = &cm->model->cfg;
    lpv_synsets syn;
    int have_syn = 0;
    if (c->classes == 1000 || synsets_path) {
        LPV_TRY(lpv_synsets_load(&syn, synsets_path ? synsets_path : lpv_synsets_default_path(), err));
        have_syn = 1;
        if (syn.n != c->classes) {
            int ns = syn.n; /* read before the free clears it */
            lpv_synsets_free(&syn);
            return lpv_fail_hint(err, LPV_E_DATA, "synsets", "'%s' has %d classes, but the model has %d",
                                 synsets_path ? synsets_path : lpv_synsets_default_path(), ns, c->classes);
        }
    }
    int64_t per = (int64_t)c->chans * c->img * c->img;
    float *x = malloc(sizeof(float) * (size_t)per * (size_t)n), *logits = malloc(sizeof(float) * (size_t)n * c->classes);
    lpv_status st = (!x || !logits) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    lpv_resize_scratch rs = {0};
    for (int i = 0; i < n && !st; i++) {
        lpv_image im;
        st = lpv_image_load(paths[i], &im, err);
        if (!st) {
            st = lpv_preprocess(&im, &cm->pp, x + (int64_t)i * per, &rs, err);
            lpv_image_free(&im);
        }
    }
    lpv_resize_scratch_free(&rs);
    if (!st) st = run_batches(cm->model, x, n, batch, logits, err);
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "images");
    for (int i = 0; i < n && !st; i++) {
        const float *l = logits + (int64_t)i * c->classes;
        /* softmax for probabilities */
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < c->classes; j++) mx = l[j] > mx ? l[j] : mx;
        for (int j = 0; j < c->classes; j++) s += exp(l[j] - mx);
        int idx[5];
        top5(l, c->classes, idx);
        if (!json) printf("%s\n", paths[i]);
        cJSON *o = cJSON_CreateObject(), *tops = cJSON_AddArrayToObject(o, "top5");
        cJSON_AddStringToObject(o, "file", paths[i]);
        for (int k = 0; k < 5 && k < c->classes; k++) {
            double p = exp(l[idx[k]] - mx) / s;
            const char *name = have_syn ? (syn.name[idx[k]][0] ? syn.name[idx[k]] : syn.wnid[idx[k]]) : "";
            if (!json) printf("  %5.1f%%  %4d  %s\n", 100 * p, idx[k], name);
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "class", idx[k]);
            if (have_syn) cJSON_AddStringToObject(t, "wnid", syn.wnid[idx[k]]);
            cJSON_AddStringToObject(t, "name", name);
            cJSON_AddNumberToObject(t, "prob", p);
            cJSON_AddNumberToObject(t, "logit", l[idx[k]]);
            cJSON_AddItemToArray(tops, t);
        }
        cJSON_AddItemToArray(arr, o);
    }
    if (!st && json) {
        cJSON_AddStringToObject(root, "model", cm->model->arch);
        lpv_report_environment(root);
        st = cli_json_out(root, json, err);
    }
    cJSON_Delete(root);
    if (have_syn) lpv_synsets_free(&syn);
    free(x);
    free(logits);
    return st;
}

int cmd_infer(int argc, char **argv) {
    cli_model_args ma;
    cli_model_args_init(&ma);
    const char *input = NULL, *out = NULL, *isa = NULL, *synsets = NULL, *json = NULL, *dense_kernel = NULL;
    const char *precision = NULL, *attention = NULL;
    int threads = 0, batch = 16, bf16 = 0, attn8 = 0;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &ma.model, "M", "preset name, .safetensors file or Hugging Face folder", 0, 0, NULL},
        {"--weights", OPT_IN, &ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--input", OPT_IN, &input, "X", "safetensors with tensor 'input' (N, 3, S, S), already normalized", 0, 0, NULL},
        {"--out", OPT_OUT, &out, "Y", "write tensor 'logits' (N, classes) here (with --input)", 0, 0, NULL},
        {"--batch", OPT_INT, &batch, "N", "images per forward pass", 1, 4096, NULL},
        {"--synsets", OPT_IN, &synsets, "FILE", "class names (default models/synset_words.txt)", 0, 0, NULL},
        CLI_OPTS_PREPROC(ma),
        CLI_OPT_HEADS(&ma.heads),
        CLI_OPT_ALLOW_EXTRA(&ma.allow_extra),
        {"--json", OPT_OUT, &json, "FILE", "image mode: write the top-5 as JSON ('-' for stdout)", 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        CLI_OPT_ISA(&isa),
        CLI_OPT_DENSE_KERNEL(&dense_kernel),
        CLI_OPT_PRECISION(&precision),
        CLI_OPT_ATTENTION(&attention),
        CLI_OPT_INT8_ATTENTION(&attn8),
        CLI_OPT_QUIET(&ma.quiet),
        {0},
    };
    const cli_spec spec = {"lpvit infer --model M (--input X.safetensors --out Y.safetensors | IMAGE...)",
                           "Runs the model on a tensor of preprocessed images and writes the logits, or on image files "
                           "(preprocessed like eval) and prints their top-5 classes.",
                           opts, 0, MAX_IMAGES, 1};
    char *pos[MAX_IMAGES];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(ma.quiet);
    if (!ma.model) return cli_usage_error("--model is required");
    if (!!input != !!out) return cli_usage_error("--input and --out go together");
    if (input && npos) return cli_usage_error("give --input or image files, not both");
    if (!input && !npos) return cli_usage_error("nothing to do: give --input X --out Y, or image files");
    lpv_err err;
    lpv_status st = cli_engine(threads, isa, dense_kernel, precision, &bf16, &err);
    lpv_attention att = LPV_ATTN_AUTO;
    if (st == LPV_OK) st = cli_attention_mode(attention, attn8, &att, &err); /* before the model */
    if (st) return cli_fail(&err, st);
    cli_model cm;
    ma.needs_pp = !input;
    if ((st = cli_open_model(&ma, &cm, &err)) != LPV_OK) return cli_fail(&err, st);
    if ((st = cli_pack(cm.model, bf16, &err)) == LPV_OK) {
        cli_attention(cm.model, att);
        st = input ? infer_tensor(&cm, input, out, batch, &err) : infer_images(&cm, pos, npos, batch, synsets, json, &err);
    }
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
