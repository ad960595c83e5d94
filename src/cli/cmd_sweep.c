/*
 * cmd_sweep.c — `lpvit sweep`: the model pruned to several FLOPs targets in
 * one run, each point evaluated and timed against the dense model, written
 * as a Pareto table (markdown + JSON), two SVG plots and the pruned models
 * (the library's lpv_sweep, include/lpvit/sweep.h, does the work).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/fileio.h"
#include "lpvit/ioguard.h"
#include "lpvit/log.h"
#include "lpvit/sweep.h"
#include "prune_flags.h"

typedef struct {
    prune_flags pf;
    const char *targets, *val_dir, *labels, *out_dir, *json, *dense_kernel, *attention;
    lpv_attention att; /* --attention, checked */
    int limit, no_models, eval_batch, bench_batch, reps, decode_threads;
    double t[LPV_SWEEP_MAX_TARGETS];
    int n_t;
    char paths[4][1200];                              /* sweep.md, sweep.json, pareto.svg, density.svg */
    char model_paths[LPV_SWEEP_MAX_TARGETS][1200];
} sweep_cmd;

enum { OUT_MD, OUT_JSON, OUT_PARETO, OUT_DENSITY };
static const char *const out_names[] = {"sweep.md", "sweep.json", "pareto.svg", "density.svg"};

/* "0.9,0.8,0.7" → c->t */
static int parse_targets(sweep_cmd *c) {
    const char *s = c->targets;
    c->n_t = 0;
    while (*s) {
        if (c->n_t == LPV_SWEEP_MAX_TARGETS)
            return cli_usage_error("--targets: at most %d targets", LPV_SWEEP_MAX_TARGETS);
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno || (*end && *end != ',') || !(v > 0 && v < 1))
            return cli_usage_error("--targets: expected FLOPs fractions in (0, 1) separated by commas, got '%s'",
                                   c->targets);
        for (int i = 0; i < c->n_t; i++)
            if (c->t[i] == v) return cli_usage_error("--targets: %g is given twice", v);
        c->t[c->n_t++] = v;
        s = *end ? end + 1 : end;
    }
    return c->n_t ? 0 : cli_usage_error("--targets: expected at least one FLOPs fraction");
}

/* 1 when dir is folder or inside it (both existing). */
static int inside(const char *dir, const char *folder) {
    char a[PATH_MAX], b[PATH_MAX];
    if (!folder || !realpath(dir, a) || !realpath(folder, b)) return 0;
    return strcmp(a, b) == 0 || lpv_path_inside(a, b);
}

/* Creates --out-dir and checks every file the sweep will write there against the inputs. */
static int prepare_out_dir(sweep_cmd *c, const cli_spec *spec, char **pos, int npos) {
    int existed = lpv_is_dir(c->out_dir);
    if (!existed && access(c->out_dir, F_OK) == 0)
        return cli_usage_error("--out-dir '%s' exists and is not a folder", c->out_dir);
    if (!existed && !lpv_mkdir_p(c->out_dir)) {
        fprintf(stderr, "lpvit: --out-dir '%s': cannot create it: %s\n", c->out_dir, strerror(errno));
        return CLI_FAIL;
    }
    const char *ins[] = {c->pf.calib_dir, c->val_dir};
    for (int i = 0; i < 2; i++)
        if (inside(c->out_dir, ins[i])) {
            if (!existed) rmdir(c->out_dir);
            return cli_usage_error("--out-dir '%s' is inside the input folder '%s': write the results elsewhere",
                                   c->out_dir, ins[i]);
        }
    const char *outs[4 + LPV_SWEEP_MAX_TARGETS];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(c->paths[i], sizeof c->paths[i], "%s/%s", c->out_dir, out_names[i]);
        outs[n++] = c->paths[i];
    }
    for (int i = 0; i < c->n_t && !c->no_models; i++) {
        snprintf(c->model_paths[i], sizeof c->model_paths[i], "%s/pruned-%g.safetensors", c->out_dir, c->t[i]);
        outs[n++] = c->model_paths[i];
    }
    int rc = cli_guard_paths(spec, pos, npos, "--out-dir", outs, n);
    if (rc && !existed) rmdir(c->out_dir);
    return rc;
}

static lpv_status write_outputs(sweep_cmd *c, const lpv_model *m, const lpv_sweep_result *r, lpv_err *err) {
    lpv_atomic_file af;
    LPV_TRY(lpv_atomic_open(&af, c->paths[OUT_MD], err));
    lpv_sweep_markdown(af.fp, m, r);
    LPV_TRY(lpv_atomic_commit(&af, err));
    cJSON *j = lpv_sweep_json(m, r);
    lpv_status st = cli_json_out(j, c->paths[OUT_JSON], err);
    if (st == LPV_OK && c->json) st = cli_json_out(j, c->json, err);
    cJSON_Delete(j);
    if (st == LPV_OK) st = lpv_sweep_plots(m, r, c->paths[OUT_PARETO], c->paths[OUT_DENSITY], err);
    return st;
}

static lpv_status run_sweep(sweep_cmd *c, const lpv_prune_opts *resolved, lpv_err *err) {
    prune_flags *f = &c->pf;
    cli_model cm;
    f->ma.needs_pp = 1;
    LPV_TRY(cli_open_model(&f->ma, &cm, err));
    cli_attention(cm.model, c->att); /* every point's clone runs it */
    lpv_dataset cal, val;
    memset(&cal, 0, sizeof cal), memset(&val, 0, sizeof val);
    lpv_status st = LPV_OK;
    if (f->calib_dir) st = prune_open_calib(f, resolved->loss == LPV_LOSS_CE, &cal, err);
    if (st == LPV_OK) st = cli_open_labelled(c->val_dir, c->labels, f->synsets, c->limit, cm.model->cfg.classes, &val, err);
    lpv_sweep_opts o = lpv_sweep_defaults();
    o.targets = c->t, o.n_targets = c->n_t, o.prune = f->p;
    o.eval_batch = c->eval_batch, o.decode_threads = c->decode_threads;
    o.bench_batch = c->bench_batch, o.bench_reps = c->reps;
    o.save_dir = c->no_models ? NULL : c->out_dir;
    lpv_calib_set calib = {f->calib_dir ? &cal : NULL, &cm.pp};
    lpv_sweep_result r;
    if (st == LPV_OK) st = lpv_sweep(cm.model, &calib, &val, &o, &r, err);
    if (st == LPV_OK) {
        st = write_outputs(c, cm.model, &r, err);
        if (st == LPV_OK && !(c->json && strcmp(c->json, "-") == 0)) {
            lpv_sweep_markdown(stdout, cm.model, &r);
            printf("\nwrote %s/{%s, %s, %s, %s}%s\n", c->out_dir, out_names[0], out_names[1], out_names[2],
                   out_names[3], c->no_models ? "" : " and the pruned models");
        }
        lpv_sweep_result_free(&r);
    }
    lpv_dataset_free(&val);
    lpv_dataset_free(&cal);
    cli_close_model(&cm);
    return st;
}

int cmd_sweep(int argc, char **argv) {
    sweep_cmd c;
    memset(&c, 0, sizeof c);
    prune_flags *f = &c.pf;
    prune_flags_init(f);
    c.eval_batch = 32, c.bench_batch = 1, c.reps = 10, c.decode_threads = 1;
    cli_opt opts[3 * PRUNE_ROWS_MAX + 16];
    int n = prune_rows_input(f, opts);
    opts[n++] = (cli_opt){"--targets", OPT_STR, &c.targets, "LIST", "FLOPs fractions to prune to, comma-separated (0.9,0.8,0.7; required)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--imagenet-dir", OPT_IN, &c.val_dir, "DIR", "validation images: ImageFolder (DIR/<wnid>/*.JPEG) or, with --labels, a flat folder (required)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--labels", OPT_IN, &c.labels, "FILE", "\"file label\" lines for a flat validation folder", 0, 0, NULL};
    opts[n++] = (cli_opt){"--limit", OPT_INT, &c.limit, "N", "only the first N validation images (sorted order) (default: all)", 1, 100000000, NULL};
    opts[n++] = (cli_opt){"--out-dir", OPT_STR, &c.out_dir, "DIR", "where sweep.md, sweep.json, pareto.svg, density.svg and pruned-<target>.safetensors go; created when missing (required)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--no-models", OPT_FLAG, &c.no_models, NULL, "do not write the pruned models", 0, 0, NULL};
    opts[n++] = (cli_opt){"--json", OPT_OUT, &c.json, "FILE", "also write the JSON here ('-': stdout instead of the table)", 0, 0, NULL};
    n += prune_rows_method(f, opts + n);
    opts[n++] = (cli_opt){"--batch", OPT_INT, &c.eval_batch, "N", "images per forward pass in evaluation", 1, 4096, NULL};
    opts[n++] = (cli_opt){"--decode-threads", OPT_INT, &c.decode_threads, "N", "threads decoding images beside the model", 1, 64, NULL};
    opts[n++] = (cli_opt){"--bench-batch", OPT_INT, &c.bench_batch, "N", "images per timed forward pass", 1, 1024, NULL};
    opts[n++] = (cli_opt){"--reps", OPT_INT, &c.reps, "N", "timed forward passes per model and point (after 2 warm-up passes)", 1, 100000, NULL};
    n += prune_rows_runtime(f, opts + n);
    opts[n++] = (cli_opt)CLI_OPT_DENSE_KERNEL(&c.dense_kernel);
    opts[n++] = (cli_opt)CLI_OPT_ATTENTION(&c.attention);
    opts[n] = (cli_opt){0};
    const cli_spec spec = {
        "lpvit sweep --model M --calib-dir DIR --imagenet-dir DIR --targets 0.9,0.8,0.7 --out-dir DIR [options]",
        "The accuracy/speed trade-off in one run: the model pruned to each FLOPs target (as lpvit prune, with the "
        "calibration statistics computed once and shared through the cache), each point evaluated and timed against "
        "the dense model, and a Pareto table (markdown, JSON) with plots of top-1 against measured speedup and of "
        "density per layer (SVG).",
        opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(f->ma.quiet);
    if (!f->ma.model) return cli_usage_error("--model is required");
    if (!c.targets) return cli_usage_error("--targets is required (e.g. --targets 0.9,0.8,0.7)");
    if (!c.val_dir) return cli_usage_error("--imagenet-dir is required: the points are evaluated on it");
    if (!c.out_dir) return cli_usage_error("--out-dir is required");
    if ((rc = parse_targets(&c)) != 0) return rc;
    f->p.target_flops = c.t[0]; /* resolved per point; the checks need one */
    lpv_prune_opts resolved;
    if ((rc = prune_flags_prepare(f, &resolved)) != 0) return rc;
    lpv_err err;
    int lowp; /* the points run as eval and bench would run them: the same dense kernel choice and precision check */
    lpv_status st = cli_engine(f->threads, f->isa, c.dense_kernel, f->precision, &lowp, &err);
    if (st == LPV_OK) st = cli_attention_mode(c.attention, 0, &c.att, &err); /* before any work */
    if (st == LPV_OK && c.att == LPV_ATTN_INT8 && lowp != CLI_INT8)
        st = lpv_fail(&err, LPV_E_ARG, "--attention int8 goes with --precision int8 (the FP32 points keep FP32 attention)");
    if (st) return cli_fail(&err, st);
    if (!lpv_is_dir(c.val_dir)) return cli_usage_error("--imagenet-dir '%s' is not a directory", c.val_dir);
    if ((rc = prepare_out_dir(&c, &spec, pos, npos)) != 0) return rc;
    st = run_sweep(&c, &resolved, &err);
    return st ? cli_fail(&err, st) : 0;
}
