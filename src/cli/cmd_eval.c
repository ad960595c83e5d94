/*
 * cmd_eval.c — `lpvit eval`: top-1 / top-5 accuracy on an ImageNet folder,
 * the way timm's validate.py reports it (same result keys), plus
 * throughput, the preprocessing used, skipped files and provenance.
 * The counting is the library's (evaluate.h).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/log.h"
#include "lpvit/calib.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/dataset.h"
#include "lpvit/evaluate.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/report.h"

typedef struct {
    cli_model_args ma;
    const char *dir, *synsets, *labels, *json, *isa, *dense_kernel, *precision, *attention;
    int batch, threads, limit, strict, profile, decode_threads, attn8;
} eval_opts;

typedef struct {
    lpv_eval_result res;
    cJSON *skipped_list; /* [{file, reason}] */
    lpv_profile prof;
} eval_result;

static void add_skip(void *ctx, const char *path, const char *reason) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "file", path);
    cJSON_AddStringToObject(f, "reason", reason);
    cJSON_AddItemToArray((cJSON *)ctx, f);
}

/* Under mpirun each rank listed the files it skipped: every rank's list, in rank order (the dataset's order,
   since the shares are contiguous), so the report is the one a single process writes. */
static lpv_status gather_skips(eval_result *r, lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    char *mine = cJSON_PrintUnformatted(r->skipped_list), *all = NULL; /* one line: strings escape newlines */
    if (!mine) return lpv_fail(err, LPV_E_OOM, "out of memory");
    size_t n = strlen(mine);
    char *line = malloc(n + 2);
    if (line) memcpy(line, mine, n), line[n] = '\n', line[n + 1] = 0;
    free(mine);
    lpv_status st = line ? lpv_dist_gather_text(line, &all, err) : lpv_fail(err, LPV_E_OOM, "out of memory");
    free(line);
    if (st) return st;
    cJSON *merged = cJSON_CreateArray();
    for (char *p = all, *nl; merged && p && *p; p = nl + 1) {
        if (!(nl = strchr(p, '\n'))) break;
        *nl = 0;
        cJSON *a = cJSON_Parse(p), *it;
        while (a && (it = cJSON_DetachItemFromArray(a, 0)) != NULL) cJSON_AddItemToArray(merged, it);
        cJSON_Delete(a);
    }
    free(all);
    if (!merged) return lpv_fail(err, LPV_E_OOM, "out of memory");
    cJSON_Delete(r->skipped_list);
    r->skipped_list = merged;
    return LPV_OK;
}

static lpv_status run_eval(const eval_opts *o, const cli_model *cm, const lpv_dataset *ds, eval_result *r,
                           lpv_err *err) {
    lpv_eval_opts eo = lpv_eval_defaults();
    eo.batch = o->batch, eo.decode_threads = o->decode_threads, eo.strict = o->strict;
    eo.profile = o->profile ? &r->prof : NULL;
    eo.on_skip = add_skip, eo.ctx = r->skipped_list;
    LPV_TRY(lpv_evaluate(cm->model, ds, &cm->pp, &eo, &r->res, err));
    return gather_skips(r, err);
}

static cJSON *profile_json(const lpv_profile *p) {
    cJSON *o = cJSON_CreateObject();
    double total = 0;
    for (int i = 0; i < LPV_OP_COUNT; i++) total += p->sec[i];
    for (int i = 0; i < LPV_OP_COUNT; i++) {
        cJSON *e = cJSON_AddObjectToObject(o, lpv_op_name((lpv_op)i));
        cJSON_AddNumberToObject(e, "ms_per_image", p->images ? 1e3 * p->sec[i] / (double)p->images : 0);
        cJSON_AddNumberToObject(e, "share", total > 0 ? p->sec[i] / total : 0);
        cJSON_AddNumberToObject(e, "gflops", p->sec[i] > 0 ? p->flop[i] / p->sec[i] / 1e9 : 0);
    }
    return o;
}

static void print_profile(const lpv_profile *p) {
    double total = 0;
    for (int i = 0; i < LPV_OP_COUNT; i++) total += p->sec[i];
    printf("\nprofile (per image, %lld images)\n  %-12s %10s %7s %9s\n", (long long)p->images, "op", "ms", "share",
           "GFLOP/s");
    for (int i = 0; i < LPV_OP_COUNT; i++)
        printf("  %-12s %10.3f %6.1f%% %9.1f\n", lpv_op_name((lpv_op)i), 1e3 * p->sec[i] / (double)p->images,
               100 * p->sec[i] / total, p->sec[i] > 0 ? p->flop[i] / p->sec[i] / 1e9 : 0.0);
    printf("  %-12s %10.3f\n", "total", 1e3 * total / (double)p->images);
}

static cJSON *report(const eval_opts *o, cli_model *cm, const lpv_dataset *ds, eval_result *r, lpv_err *err) {
    lpv_model *m = cm->model;
    const lpv_preproc *pp = &cm->pp;
    double top1 = 100.0 * (double)r->res.correct1 / (double)r->res.images, top5 = 100.0 * (double)r->res.correct5 / (double)r->res.images;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", m->arch);
    cJSON_AddNumberToObject(j, "top1", round(top1 * 1000) / 1000);
    cJSON_AddNumberToObject(j, "top1_err", round((100 - top1) * 1000) / 1000);
    cJSON_AddNumberToObject(j, "top5", round(top5 * 1000) / 1000);
    cJSON_AddNumberToObject(j, "top5_err", round((100 - top5) * 1000) / 1000);
    cJSON_AddNumberToObject(j, "param_count", round((double)lpv_model_params(m) / 1e4) / 100);
    cJSON_AddItemToObject(j, "sparsity", cli_sparsity_json(m));
    cJSON_AddNumberToObject(j, "img_size", pp->img_size);
    cJSON_AddNumberToObject(j, "crop_pct", pp->crop_pct);
    cJSON_AddStringToObject(j, "interpolation", lpv_interp_name(pp->interp));
    cJSON_AddItemToObject(j, "mean", cJSON_CreateFloatArray(pp->mean, 3));
    cJSON_AddItemToObject(j, "std", cJSON_CreateFloatArray(pp->std, 3));
    cJSON_AddStringToObject(j, "preprocess_source", cm->pp_source);
    int q8 = lpv_model_has_int8(m);
    cJSON_AddStringToObject(j, "precision", q8 ? "int8" : lpv_model_has_bf16(m) ? "bf16" : "fp32");
    if (q8) cJSON_AddStringToObject(j, "int8_kernel", lpv_q8_kernel_name(lpv_q8_kernel_for(lpv_isa_get())));
    int n8, ns;
    lpv_model_int8_counts(m, &n8, &ns);
    if (q8) cJSON_AddNumberToObject(j, "int8_static_inputs", ns);
    cJSON_AddStringToObject(j, "attention", lpv_model_attention_name(m));
    cJSON_AddNumberToObject(j, "images", (double)r->res.images);
    cJSON_AddNumberToObject(j, "correct_top1", (double)r->res.correct1);
    cJSON_AddNumberToObject(j, "correct_top5", (double)r->res.correct5);
    cJSON_AddNumberToObject(j, "skipped", (double)r->res.skipped);
    cJSON_AddItemToObject(j, "skipped_files", r->skipped_list);
    r->skipped_list = NULL;
    cJSON_AddNumberToObject(j, "images_per_sec", (double)r->res.images / r->res.wall);
    cJSON_AddNumberToObject(j, "model_images_per_sec", (double)r->res.images / r->res.compute);
    cJSON_AddNumberToObject(j, "wall_s", r->res.wall);
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON *d = cJSON_AddObjectToObject(j, "dataset");
    cJSON_AddStringToObject(d, "dir", o->dir);
    cJSON_AddStringToObject(d, "layout", o->labels ? "flat+labels" : "imagefolder");
    cJSON_AddNumberToObject(d, "items", ds->n);
    cJSON_AddNumberToObject(d, "classes_present", ds->n_classes);
    char h[65];
    lpv_dataset_hash(ds, h);
    cJSON_AddStringToObject(d, "list_sha256", h);
    cJSON *mf = cJSON_AddObjectToObject(j, "model_file");
    cJSON_AddStringToObject(mf, "path", m->path);
    const char *mh = lpv_model_hash(m, err);
    cJSON_AddStringToObject(mf, "sha256", mh ? mh : "");
    cJSON_AddStringToObject(mf, "names", lpv_names_str(m->cfg.names));
    cJSON_AddStringToObject(mf, "dtype", m->src_dtype);
    if (cm->ref.has_preset && !isnan(cm->ref.preset.ref_top1)) {
        cJSON *ref = cJSON_AddObjectToObject(j, "reference");
        cJSON_AddStringToObject(ref, "preset", cm->ref.preset.key);
        cJSON_AddNumberToObject(ref, "top1_full_val", cm->ref.preset.ref_top1);
    }
    if (o->profile) cJSON_AddItemToObject(j, "profile", profile_json(&r->prof));
    lpv_report_environment(j);
    return j;
}

static void print_table(const eval_opts *o, const cli_model *cm, const lpv_dataset *ds, const eval_result *r) {
    char pps[256];
    cli_preproc_str(&cm->pp, pps, sizeof pps);
    printf("model       %s (%s)\n", cm->model->arch, cm->model->path);
    char sp[256];
    cli_sparsity_line(cm->model, sp, sizeof sp);
    if (sp[0]) printf("pruned      %s\n", sp);
    printf("dataset     %s: %ld images evaluated, %ld skipped, %d classes present\n", o->dir, r->res.images, r->res.skipped,
           ds->n_classes);
    printf("top-1       %.2f %%\n", 100.0 * (double)r->res.correct1 / (double)r->res.images);
    printf("top-5       %.2f %%\n", 100.0 * (double)r->res.correct5 / (double)r->res.images);
    /* the model's rate here is lower than bench's when decoder threads share the CPUs: say so */
    int R = lpv_dist_size(); /* under mpirun: compute is summed over ranks, so its rate is one rank's */
    char ranks[48] = "";
    if (R > 1) snprintf(ranks, sizeof ranks, " x %d mpi ranks", R);
    printf("throughput  %.1f images/s end to end, %.1f images/s in the model%s (batch %d, %d threads%s, with %d image "
           "decoder thread%s beside them on %ld CPUs; lpvit bench times the model alone)\n",
           (double)r->res.images / r->res.wall, (double)r->res.images / r->res.compute, R > 1 ? " per rank" : "",
           o->batch, lpv_threads_get(), ranks, o->decode_threads, o->decode_threads == 1 ? "" : "s",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("preprocess  %s [%s]\n", pps, cm->pp_source);
    int q8 = lpv_model_has_int8(cm->model);
    if (q8 || lpv_model_has_bf16(cm->model))
        printf("precision   %s block linears (qkv, proj, fc1, fc2), attention %s, the rest FP32; kernel %s\n",
               q8 ? "int8" : "bf16", lpv_model_attention_name(cm->model), q8 ? lpv_q8_kernel_name(lpv_q8_kernel_for(lpv_isa_get())) : "avx512bf16");
    int n8, ns;
    lpv_model_int8_counts(cm->model, &n8, &ns);
    if (ns) printf("inputs      %d int8 layers on static grids from the file, the others per token\n", ns);
    if (cm->ref.has_preset && !isnan(cm->ref.preset.ref_top1))
        printf("reference   timm %.2f %% top-1 on the full 50k validation set (%s)\n", cm->ref.preset.ref_top1,
               cm->ref.preset.key);
}

int cmd_eval(int argc, char **argv) {
    eval_opts o;
    memset(&o, 0, sizeof o);
    cli_model_args_init(&o.ma);
    o.batch = 32;
    o.decode_threads = 1;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &o.ma.model, "M", "preset name (deit_b, vit_t, ...), .safetensors file or HF folder", 0, 0, NULL},
        {"--weights", OPT_IN, &o.ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--imagenet-dir", OPT_IN, &o.dir, "DIR", "ImageFolder (DIR/<wnid>/*.JPEG) or, with --labels, a flat folder", 0, 0, NULL},
        {"--labels", OPT_IN, &o.labels, "FILE", "\"file label\" lines for a flat folder (ILSVRC2012_val_labels.txt)", 0, 0, NULL},
        {"--synsets", OPT_IN, &o.synsets, "FILE", "class order, one wnid per line (default models/synset_words.txt)", 0, 0, NULL},
        {"--batch", OPT_INT, &o.batch, "N", "images per forward pass", 1, 4096, NULL},
        {"--limit", OPT_INT, &o.limit, "N", "only the first N images (sorted order) (default: all)", 1, 100000000, NULL},
        CLI_OPTS_PREPROC(o.ma),
        CLI_OPT_HEADS(&o.ma.heads),
        CLI_OPT_ALLOW_EXTRA(&o.ma.allow_extra),
        {"--strict", OPT_FLAG, &o.strict, NULL, "an unreadable image is an error (default: skip and report it)", 0, 0, NULL},
        {"--profile", OPT_FLAG, &o.profile, NULL, "time every op of the forward pass", 0, 0, NULL},
        {"--decode-threads", OPT_INT, &o.decode_threads, "N", "threads decoding images beside the model", 1, 64, NULL},
        {"--json", OPT_OUT, &o.json, "FILE", "write the report as JSON ('-': stdout instead of the table)", 0, 0, NULL},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_ISA(&o.isa),
        CLI_OPT_DENSE_KERNEL(&o.dense_kernel),
        CLI_OPT_PRECISION(&o.precision),
        CLI_OPT_ATTENTION(&o.attention),
        CLI_OPT_INT8_ATTENTION(&o.attn8),
        CLI_OPT_QUIET(&o.ma.quiet),
        {0},
    };
    const cli_spec spec = {
        "lpvit eval --model M [--imagenet-dir] DIR [options]",
        "Top-1/top-5 accuracy on an ImageNet validation folder with timm's eval preprocessing (PIL-exact bicubic "
        "resize to floor(224/crop_pct), center crop 224, normalize). Unreadable images are skipped and listed.",
        opts, 0, 1, 1};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(o.ma.quiet);
    if (!o.ma.model) return cli_usage_error("--model is required");
    if (npos && o.dir) return cli_usage_error("give the folder once: '%s' or --imagenet-dir '%s'", pos[0], o.dir);
    if (npos) o.dir = pos[0]; /* timm's validate.py takes the data folder as its argument too */
    if (!o.dir) return cli_usage_error("--imagenet-dir is required");
    lpv_err err;
    int bf16 = 0;
    lpv_status st = cli_engine(o.threads, o.isa, o.dense_kernel, o.precision, &bf16, &err);
    lpv_attention att = LPV_ATTN_AUTO;
    if (st == LPV_OK) st = cli_attention_mode(o.attention, o.attn8, &att, &err); /* before the model */
    if (st) return cli_fail(&err, st);
    if (!lpv_is_dir(o.dir)) {
        lpv_fail(&err, LPV_E_IO, "--imagenet-dir '%s' is not a directory", o.dir);
        return cli_fail(&err, LPV_E_IO);
    }
    cli_model cm;
    o.ma.needs_pp = 1;
    if ((st = cli_open_model(&o.ma, &cm, &err)) != LPV_OK) return cli_fail(&err, st);
    if ((st = cli_pack(cm.model, bf16, &err)) != LPV_OK) {
        cli_close_model(&cm);
        return cli_fail(&err, st);
    }
    cli_attention(cm.model, att);
    lpv_dataset ds;
    if ((st = cli_open_labelled(o.dir, o.labels, o.synsets, o.limit, cm.model->cfg.classes, &ds, &err)) != LPV_OK) {
        cli_close_model(&cm);
        return cli_fail(&err, st);
    }
    char env[512], pps[256];
    lpv_environment_line(env, sizeof env);
    cli_preproc_str(&cm.pp, pps, sizeof pps);
    lpv_info("%s", env);
    lpv_info("%d images, %d classes; preprocess: %s [%s]", ds.n, ds.n_classes, pps, cm.pp_source);
    eval_result r;
    memset(&r, 0, sizeof r);
    r.skipped_list = cJSON_CreateArray();
    st = run_eval(&o, &cm, &ds, &r, &err);
    if (st == LPV_OK) {
        cJSON *j = report(&o, &cm, &ds, &r, &err);
        int to_stdout = o.json && strcmp(o.json, "-") == 0;
        if (!to_stdout) {
            print_table(&o, &cm, &ds, &r);
            if (o.profile) print_profile(&r.prof);
        }
        if (o.json) st = cli_json_out(j, o.json, &err);
        cJSON_Delete(j);
    }
    cJSON_Delete(r.skipped_list);
    lpv_dataset_free(&ds);
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
