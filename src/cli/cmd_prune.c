/*
 * cmd_prune.c — `lpvit prune`: flags in, lpv_prune() (include/lpvit/prune.h)
 * on the model and the calibration folder, the pruned model and the report
 * out, and a per-layer table on stdout.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "prune_flags.h"
#include "lpvit/codebook.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/log.h"
#include "lpvit/prune.h"
#include "lpvit/quantize.h"
#include "lpvit/report.h"

static void print_table(const lpv_prune_result *r, const char *out) {
    const lpv_prune_opts *o = &r->opts;
    printf("%-22s %-10s %13s %8s %12s\n", "layer", "shape", "blocks kept", "density", "saliency lost");
    double e0 = 0, e1 = 0, t0 = 0, t1 = 0;
    for (int i = 0; i < r->n_layers; i++) {
        const lpv_pruned_layer *e = &r->layers[i];
        char shape[32], kb[32];
        snprintf(shape, sizeof shape, "%dx%d", e->out, e->in);
        snprintf(kb, sizeof kb, "%d/%d", e->blocks_kept, e->blocks_total);
        printf("%-22s %-10s %13s %8.3f %12.4g\n", e->name, shape, kb, e->density, e->saliency_lost);
        e0 += e->energy_pj_dense, e1 += e->energy_pj_kept;
        if (e->time_ms_dense >= 0) t0 += e->time_ms_dense, t1 += e->time_ms_kept;
    }
    printf("\nprunable FLOPs  %.4f kept (target %.4f): %.3f of %.3f GMACs per image, blocks %dx%d, %s + %s\n",
           r->achieved_flops, o->target_flops, r->kept_macs / 1e9, r->dense_macs / 1e9, o->block_R, o->block_C,
           lpv_saliency_name(o->saliency), lpv_allocator_name(o->allocator));
    printf("whole model     %.3f -> %.3f GMACs (attention %.3f GMACs is not prunable)\n", r->model_macs_dense / 1e9,
           r->model_macs_kept / 1e9, r->attention_macs / 1e9);
    printf("energy proxy    %.3f of the dense pruned layers\n", e1 / e0);
    if (t0 > 0) printf("predicted       %.2fx faster pruned layers (time table)\n", t0 / t1);
    if (r->recon.heads_refit)
        printf("heads refit     logits' relative error on the calibration images %.4f -> %.4f\n",
               r->recon.logit_err_before, r->recon.logit_err_after);
    if (r->skipped.n)
        printf("calibration     %d image%s skipped, unreadable (first: %s)\n", r->skipped.n, r->skipped.n == 1 ? "" : "s",
               r->skipped.first_reason);
    int cached = 0;
    for (int s = 0; s < r->n_steps; s++) cached += r->step_from_cache[s];
    printf("wall time       %.1fs (channel sort %.1fs, statistics %.1fs%s, saliency %.2fs, cost %.2fs, allocation %.2fs, "
           "refine %.1fs, update %.1fs, write %.2fs)\n",
           r->seconds.total, r->seconds.permute, r->seconds.stats,
           cached == r->n_steps ? " from cache" : cached ? " partly cached" : "", r->seconds.saliency, r->seconds.cost,
           r->seconds.alloc, r->seconds.refine, r->seconds.recon, r->seconds.write);
    if (r->steps_resumed)
        printf("resumed         steps 1-%d of %d from their checkpoints in the cache\n", r->steps_resumed, r->n_steps);
    if (o->precision != LPV_PREC_FP32)
        printf("precision       allocated for %s kernels: run it with --precision %s (eval, infer, bench)\n",
               lpv_precision_name(o->precision), lpv_precision_name(o->precision));
    printf("wrote           %s\n", out);
}

/* prune's own flags beside the shared ones (prune_flags.h) */
typedef struct {
    prune_flags pf;
    const char *out, *report;
    int codebook; /* --quant codebook:K: K, else 0 */
    const char *rounding; /* --quant-rounding: gptq or nearest */
    int quant_images;     /* --quant-images */
    double smooth;        /* --quant-smooth: SmoothQuant's alpha, 0 off */
    lpv_act_mode act;     /* --quant-act */
    unsigned act_kinds;   /* --quant-act-layers */
} prune_cmd;

/* --quant on the pruned model: GPTQ (and --quant-smooth) under its input statistics over quant_images of the
 * calibration images the prune chose (its seeded sample of --calib-size), spread over them; or round to nearest
 * (no calibration folder, or --quant-rounding nearest without smoothing). */
static lpv_status quantize_pruned(prune_cmd *c, lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp,
                                  lpv_quant_calib_opts *qo, lpv_quant_calib_info *qi, lpv_err *err) {
    prune_flags *f = &c->pf;
    int K = c->codebook;
    *qo = lpv_quant_calib_defaults();
    qo->gptq.codebook = K, qo->gptq_rounding = f->calib_dir && strcmp(c->rounding, "gptq") == 0;
    qo->smooth.alpha = c->smooth, qo->act = c->act, qo->act_kinds = c->act_kinds;
    if (!qo->gptq_rounding && !(c->smooth > 0) && c->act == LPV_ACT_TOKEN)
        return K ? lpv_model_quantize_codebook(m, K, err) : lpv_model_quantize_int8(m, 32, 32, err);
    lpv_dataset v;
    LPV_TRY(lpv_dataset_view(&v, ds, err));
    lpv_status st = f->p.calib_size < v.n ? lpv_dataset_sample(&v, f->p.calib_size, f->p.seed, err) : LPV_OK;
    if (st == LPV_OK) lpv_dataset_spread(&v, c->quant_images);
    lpv_skips sk = {0};
    if (st == LPV_OK) st = lpv_model_quantize_calibrated(m, &v, pp, qo, qi, &sk, err);
    lpv_skips_free(&sk);
    lpv_dataset_view_free(&v);
    return st;
}

/* The report's "quantization" entry. */
static void quant_report(cJSON *rep, lpv_model *m, const prune_cmd *c, const lpv_quant_calib_opts *qo,
                         const lpv_quant_calib_info *qi) {
    cJSON_AddStringToObject(rep, "quantization", c->pf.quant ? c->pf.quant : "none");
    if (!c->pf.quant) return;
    cJSON_AddNumberToObject(rep, "quantization_smooth_alpha", qo->smooth.alpha);
    cJSON_AddStringToObject(rep, "quantization_inputs", lpv_act_mode_name(qo->act));
    cJSON *al = cJSON_AddArrayToObject(rep, "quantization_static_inputs");
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < nl && qo->act != LPV_ACT_TOKEN; i++)
        if (qi->act[i].scale > 0) cJSON_AddItemToArray(al, cJSON_CreateString(refs[i].name));
    cJSON *q = cJSON_AddObjectToObject(rep, "quantization_rounding");
    cJSON_AddStringToObject(q, "method", qo->gptq_rounding ? "gptq" : "nearest");
    if (!qo->gptq_rounding) return;
    const lpv_gptq_info *gi = &qi->gptq;
    cJSON_AddNumberToObject(q, "images", c->quant_images);
    cJSON_AddNumberToObject(q, "seconds", gi->seconds);
    double a = 0, b = 0;
    for (int i = 0; i < LPV_MAX_LAYERS; i++) a += gi->err_rtn[i], b += gi->err_gptq[i];
    cJSON_AddNumberToObject(q, "mean_err_nearest", gi->layers ? a / gi->layers : 0);
    cJSON_AddNumberToObject(q, "mean_err_gptq", gi->layers ? b / gi->layers : 0);
}

/* Prunes, writes the model and the report; prints the table unless the report goes to stdout. */
static lpv_status run_prune(prune_cmd *c, cli_model *cm, const lpv_dataset *ds, double t_start, double open_s,
                            double list_s, lpv_err *err) {
    prune_flags *f = &c->pf;
    lpv_model *m = cm->model;
    lpv_calib_set calib = {f->calib_dir ? ds : NULL, &cm->pp};
    lpv_prune_result r;
    lpv_status st = lpv_prune(m, &calib, &f->p, &r, err);
    r.seconds.load += open_s, r.seconds.list += list_s; /* opening the model and listing the folder: the CLI's part */
    double t = lpv_now();
    int K = c->codebook;
    lpv_quant_calib_opts qo = lpv_quant_calib_defaults();
    lpv_quant_calib_info qi;
    memset(&qi, 0, sizeof qi);
    qo.gptq_rounding = 0;
    if (st == LPV_OK && f->quant) st = quantize_pruned(c, m, ds, &cm->pp, &qo, &qi, err); /* the pruned model */
    if (st == LPV_OK && lpv_dist_rank() == 0) st = lpv_prune_save(m, &r, &cm->pp, c->out, err); /* one writer */
    st = lpv_dist_agree(st, err); /* under mpirun every rank learns how it went */
    r.seconds.write = lpv_now() - t;
    r.seconds.total = lpv_now() - t_start;
    if (st == LPV_OK) {
        if (!(c->report && strcmp(c->report, "-") == 0)) {
            print_table(&r, c->out);
            const char *how = qo.gptq_rounding ? (qo.smooth.alpha > 0 ? "smoothed, rounded by gptq" : "rounded by gptq")
                                               : (qo.smooth.alpha > 0 ? "smoothed, rounded to nearest" : "rounded to nearest");
            if (f->quant && !K)
                printf("quantized       int8 block linears (weights per output row, %s; inputs %s)\n", how,
                       qo.act == LPV_ACT_TOKEN ? "per token" : qi.act_layers == 4 * m->cfg.depth ? "on static grids"
                                                                                             : "partly on static grids");
            if (K) printf("quantized       block linears on a codebook of %d levels per layer (uint8 codes, %s)\n", K, how);
        }
        if (c->report) {
            cJSON *rep = lpv_prune_report(m, &r, &cm->pp, c->out);
            quant_report(rep, m, c, &qo, &qi);
            st = cli_json_out(rep, c->report, err);
            cJSON_Delete(rep);
        }
    }
    lpv_prune_result_free(&r);
    return st;
}

int cmd_prune(int argc, char **argv) {
    prune_cmd c;
    memset(&c, 0, sizeof c);
    prune_flags *f = &c.pf;
    prune_flags_init(f);
    c.rounding = "gptq", c.quant_images = 256;
    const char *act = "token", *act_layers = "qkv,proj,fc1";
    cli_opt opts[3 * PRUNE_ROWS_MAX + 12];
    int n = prune_rows_input(f, opts);
    opts[n++] = (cli_opt){"--target-flops", OPT_DOUBLE, &f->p.target_flops, "r", "keep this fraction of the prunable layers' FLOPs (required)", 0, 0, NULL};
    n += prune_rows_method(f, opts + n);
    opts[n++] = (cli_opt){"--no-cache", OPT_FLAG, &f->no_cache, NULL, "always recompute calibration statistics", 0, 0, NULL};
    opts[n++] = (cli_opt){"--out", OPT_OUT, &c.out, "FILE", "pruned model (BSR safetensors; required)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--json", OPT_OUT, &c.report, "FILE", "write the report as JSON ('-': stdout instead of the table; --report is the same)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--quant-rounding", OPT_STR, &c.rounding, "R", "with --quant: gptq (default with a calibration folder: each layer's rounding errors compensated under its input statistics, as lpvit quantize --calib-dir) or nearest", 0, 0, NULL};
    opts[n++] = (cli_opt){"--quant-smooth", OPT_DOUBLE, &c.smooth, "A", "with --quant int8: SmoothQuant with strength A in (0, 1] before rounding (as lpvit quantize --smooth; needs a calibration folder; default 0: off)", 0, 1, NULL};
    opts[n++] = (cli_opt){"--quant-act", OPT_STR, &act, "M", "with --quant int8: the inputs' grids, token (per token at run time, default), mse or minmax (one static scale per layer input from the calibration images; as lpvit quantize --act-scales)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--quant-act-layers", OPT_STR, &act_layers, "LIST", "with a static --quant-act: which block linears (comma list of qkv, proj, fc1, fc2; the others per token; default qkv,proj,fc1, as lpvit quantize --act-layers)", 0, 0, NULL};
    opts[n++] = (cli_opt){"--quant-images", OPT_INT, &c.quant_images, "N", "with --quant and gptq: calibration images (spread over the prune's) for the input statistics (default 256)", 1, 10000000, NULL};
    opts[n++] = (cli_opt){"--quant", OPT_STR, &f->quant, "Q", "int8: write the pruned model's block linears in int8 (as lpvit quantize does); implies --precision int8. codebook:K: each block linear's kept weights on K <= 256 levels shared by its channels (uint8 codes, decoded to FP32 when loaded)", 0, 0, NULL};
    n += prune_rows_runtime(f, opts + n);
    opts[n] = (cli_opt){0};
    const cli_spec spec = {
        "lpvit prune --model M --calib-dir DIR --target-flops r --out FILE [options]",
        "Post-training block pruning: gradients on a calibration set, block saliency (second-order Taylor by "
        "default), a per-layer block budget from a hardware-aware allocator, and a block-sparse model lpvit's "
        "engine runs (lpvit eval / lpvit bench --pruned).",
        opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(f->ma.quiet);
    if (!f->ma.model) return cli_usage_error("--model is required");
    if (isnan(f->p.target_flops)) return cli_usage_error("--target-flops is required");
    if (!c.out) return cli_usage_error("--out is required");
    if (f->quant && strcmp(f->quant, "int8") != 0 && (c.codebook = cli_codebook_levels(f->quant)) <= 0)
        return cli_usage_error("--quant: expected int8 or codebook:K with K in 1..256, got '%s'", f->quant);
    if (strcmp(c.rounding, "gptq") != 0 && strcmp(c.rounding, "nearest") != 0)
        return cli_usage_error("--quant-rounding: expected gptq or nearest, got '%s'", c.rounding);
    if (c.smooth > 0 && (!f->quant || !f->calib_dir))
        return cli_usage_error("--quant-smooth needs --quant and --calib-dir");
    lpv_err perr;
    if (lpv_act_mode_parse(act, &c.act, &perr)) return cli_usage_error("--quant-act: %s", perr.msg);
    if (c.act != LPV_ACT_TOKEN && (!f->quant || c.codebook || !f->calib_dir))
        return cli_usage_error("--quant-act %s needs --quant int8 and --calib-dir", act);
    if (!(c.act_kinds = cli_block_kinds(act_layers)))
        return cli_usage_error("--quant-act-layers: expected a comma list of qkv, proj, fc1, fc2, got '%s'", act_layers);
    lpv_prune_opts resolved;
    if ((rc = prune_flags_prepare(f, &resolved)) != 0) return rc;
    /* prune's dense products (gradients, Gram matrices) are OpenBLAS calls, and the report's environment says
     * so; only the refit's forward passes run lpvit's packs, where lpv_dense_kernel_auto says they win */
    lpv_dense_kernel_set(LPV_DENSE_BLAS);
    cli_warn_blas_core("prune");
    double t_start = lpv_now();
    cli_model cm;
    lpv_err err;
    lpv_status st;
    f->ma.needs_pp = 1;
    if ((st = cli_open_model(&f->ma, &cm, &err)) != LPV_OK) return cli_fail(&err, st);
    double open_s = lpv_now() - t_start, t = lpv_now();
    lpv_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (f->calib_dir) st = prune_open_calib(f, resolved.loss == LPV_LOSS_CE, &ds, &err);
    if (st == LPV_OK) st = run_prune(&c, &cm, &ds, t_start, open_s, lpv_now() - t, &err);
    lpv_dataset_free(&ds);
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
