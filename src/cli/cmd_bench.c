/*
 * cmd_bench.c — `lpvit bench`: dense vs block-sparse speed measured in one
 * run, same threads, interleaved, medians after warm-up: a per-layer table
 * (shape, density, dense ms, sparse ms, speedup), end-to-end latency and
 * images/s, and where the time goes per op.
 *
 * Sparse model: a pruned file (--pruned), or random blocks at --density
 * with --block for a synthetic sweep. Dense model: --model (a file, a
 * preset, or a preset with --random-weights), else the pruned file densified.
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
#include "lpvit/bench.h"
#include "lpvit/bsr.h"
#include "lpvit/cost.h"
#include "lpvit/cpu.h"
#include "lpvit/report.h"

typedef struct {
    cli_model_args ma;
    const char *pruned, *block, *json, *isa, *out, *dense_kernel, *precision;
    double density;
    int random_weights, batch, threads, reps, warmup, seed, no_layers, include_patch, include_heads, calibrate, peak;
    int attn8;             /* --int8-attention: --attention int8 */
    const char *attention; /* --attention: auto (int8 in the int8 runs where a kernel runs), fp32, int8 */
} bench_opts;

typedef struct {
    lpv_model *dense, *sparse;
    char dense_desc[1200], sparse_desc[1200];
    lpv_peak peak; /* of the FP32 kernels' ISA, on the bench's threads */
    lpv_peak peak_lowp; /* --precision bf16 on avx512bf16: the vdpbf16ps loop's; int8: vpdpbusd's (VNNI) or
                           vpdpbusd ymm (AVX-VNNI) or vpmaddubsw + vpmaddwd + vpaddd (AVX2); else NAN */
} bench_models;

static lpv_status load_plain(const char *path, int heads, int allow_extra, lpv_model **m, lpv_err *err) {
    lpv_model_opts mo = {heads, 0, allow_extra};
    return lpv_model_load(m, path, &mo, err);
}

/* The dense model: random weights at a preset's shape, a file/preset, or NULL (use the pruned file). */
static lpv_status open_dense(const bench_opts *o, bench_models *bm, lpv_err *err) {
    if (!o->ma.model) return LPV_OK;
    if (o->random_weights) {
        lpv_preset p;
        LPV_TRY(lpv_registry_find(o->ma.model, &p, err));
        lpv_config c;
        lpv_preset_config(&p, &c);
        LPV_TRY(lpv_model_random(&bm->dense, &c, (uint64_t)o->seed, err));
        snprintf(bm->dense->arch, sizeof bm->dense->arch, "%s", p.timm_name);
        snprintf(bm->dense_desc, sizeof bm->dense_desc, "%s (random weights, seed %d)", p.timm_name, o->seed);
        return LPV_OK;
    }
    lpv_model_ref ref;
    LPV_TRY(lpv_resolve_model(o->ma.model, o->ma.weights, &ref, err));
    LPV_TRY(load_plain(ref.path, o->ma.heads ? o->ma.heads : ref.has_preset ? ref.preset.heads : 0, o->ma.allow_extra, &bm->dense, err));
    if (ref.has_preset) {
        lpv_status st = lpv_preset_check(&ref.preset, &bm->dense->cfg, ref.path, err);
        if (st) return st;
        /* the preset names it: vit_tiny and deit_tiny have the same shapes, so the file's guess can't */
        snprintf(bm->dense->arch, sizeof bm->dense->arch, "%s", ref.preset.timm_name);
    }
    snprintf(bm->dense_desc, sizeof bm->dense_desc, "%s (%s)", bm->dense->arch, ref.path);
    /* a pruned file passed as --model is timed dense too */
    return lpv_model_densify(bm->dense, err);
}

static int same_arch(const lpv_config *a, const lpv_config *b) {
    return a->dim == b->dim && a->depth == b->depth && a->mlp == b->mlp && a->n_tokens == b->n_tokens &&
           a->classes == b->classes && a->n_outputs == b->n_outputs;
}

static lpv_status open_sparse(const bench_opts *o, bench_models *bm, lpv_err *err) {
    if (o->pruned) {
        LPV_TRY(load_plain(o->pruned, o->ma.heads, o->ma.allow_extra, &bm->sparse, err));
        snprintf(bm->sparse_desc, sizeof bm->sparse_desc, "pruned file %s (%.1f%% of linear weights kept)", o->pruned,
                 100 * lpv_model_linear_density(bm->sparse));
        if (!bm->dense) {
            LPV_TRY(load_plain(o->pruned, o->ma.heads, o->ma.allow_extra, &bm->dense, err));
            LPV_TRY(lpv_model_densify(bm->dense, err));
            snprintf(bm->dense_desc, sizeof bm->dense_desc, "%s densified (zeros in pruned blocks)", o->pruned);
        } else if (!same_arch(&bm->dense->cfg, &bm->sparse->cfg)) {
            return lpv_fail(err, LPV_E_SHAPE, "--pruned '%s' does not have the architecture of --model '%s'", o->pruned,
                            o->ma.model);
        }
        return LPV_OK;
    }
    if (o->density > 0) {
        int R, C;
        LPV_TRY(cli_parse_block(o->block ? o->block : "32x32", &R, &C, err));
        lpv_model_ref ref;
        if (o->random_weights) {
            lpv_preset p;
            LPV_TRY(lpv_registry_find(o->ma.model, &p, err));
            lpv_config c;
            lpv_preset_config(&p, &c);
            LPV_TRY(lpv_model_random(&bm->sparse, &c, (uint64_t)o->seed, err));
        } else {
            LPV_TRY(lpv_resolve_model(o->ma.model, o->ma.weights, &ref, err));
            LPV_TRY(load_plain(ref.path, bm->dense->cfg.heads, o->ma.allow_extra, &bm->sparse, err));
            LPV_TRY(lpv_model_densify(bm->sparse, err));
        }
        int which = LPV_SEL_BLOCKS | (o->include_patch ? LPV_SEL_PATCH : 0) | (o->include_heads ? LPV_SEL_HEADS : 0);
        LPV_TRY(lpv_prune_random(bm->sparse, o->density, R, C, which, (uint64_t)o->seed + 1, err));
        snprintf(bm->sparse_desc, sizeof bm->sparse_desc, "random %dx%d blocks at density %.3g on the %s", R, C,
                 o->density, which == LPV_SEL_BLOCKS ? "block linears" : "block linears + patch/heads");
    }
    return LPV_OK;
}

/* --calibrate: the cost table `lpvit prune --objective speed` reads, timing the kernels of `prec` (--precision). */
static int run_calibrate(const bench_opts *o, bench_models *bm, lpv_precision prec) {
    lpv_err err;
    int R, C;
    lpv_status st = cli_parse_block(o->block ? o->block : "32x32", &R, &C, &err);
    if (st) return cli_fail(&err, st);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(bm->dense, refs, LPV_MAX_LAYERS), ns = 0;
    lpv_layer_shape shapes[LPV_MAX_LAYERS];
    for (int i = 0; i < n; i++) shapes[ns++] = (lpv_layer_shape){refs[i].lin->out, refs[i].lin->in, refs[i].tokens};
    static const double grid[] = {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    lpv_time_table t;
    st = lpv_time_table_measure(&t, shapes, ns, R, C, grid, (int)(sizeof grid / sizeof *grid), o->batch, o->reps,
                                (unsigned long long)o->seed, prec, &err);
    if (!st) st = lpv_time_table_save(&t, o->out, &err);
    if (!st)
        lpv_info("wrote '%s': %s times, %d layer shapes x %d densities, %dx%d blocks, batch %d, %d threads", o->out,
                 lpv_precision_name(prec), t.n, (int)(sizeof grid / sizeof *grid), R, C, o->batch, lpv_threads_get());
    lpv_time_table_free(&t);
    return st ? cli_fail(&err, st) : 0;
}

static cJSON *timing_json(const lpv_timing *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "median_ms", t->median_ms);
    cJSON_AddNumberToObject(o, "min_ms", t->min_ms);
    cJSON_AddNumberToObject(o, "max_ms", t->max_ms);
    cJSON_AddNumberToObject(o, "reps", t->reps);
    return o;
}

/* What other processes took while we timed: in the JSON always, and a warning past a quarter of a CPU. */
static void busy_note(cJSON *j, double others, int human) {
    if (isnan(others)) return;
    cJSON_AddNumberToObject(j, "other_processes_cpus", others);
    if (others > 0.25)
        lpv_warn("other processes kept %.1f of the %ld CPUs busy while lpvit timed: times and speedups are not "
                 "reliable (see the min-max spread); rerun on a quiet machine",
                 others, sysconf(_SC_NPROCESSORS_ONLN));
    else if (human)
        printf("\nquiet    other processes used %.2f CPUs while timing\n", others);
}

/* The peak again after the timings: a VM's clock can move by a third with its neighbours' load (seen on a
 * 2-vCPU Xeon: the same binary 120 or 170 ms per image in two minutes), which no CPU-time count shows, and every
 * "% of peak" above assumes the clock of the first measurement. In the JSON always; a warning past 10 %. */
static cJSON *peak_json(const lpv_peak *p);

static void clock_note(cJSON *j, const lpv_peak *before, int human) {
    if (!isfinite(before->gflops)) return;
    lpv_peak after;
    lpv_err err;
    if (lpv_bench_peak(before->isa, before->threads, &after, &err) != LPV_OK || !isfinite(after.gflops)) return;
    cJSON_AddItemToObject(j, "peak_after", peak_json(&after));
    double r = after.gflops / before->gflops;
    if (r < 0.9 || r > 1.1)
        lpv_warn("the FMA peak moved from %.0f to %.0f GFLOP/s during the run (the clock changed: a busy host): "
                 "times and %% of peak are not comparable across runs; rerun, or compare ratios within one run",
                 before->gflops, after.gflops);
    else if (human)
        printf("clock    peak %.1f GFLOP/s after the timings (%.0f before)\n", after.gflops, before->gflops);
}

/* One end-to-end timing of a batch: the JSON entry, and the start of its table row (no newline). */
static cJSON *e2e_json(const lpv_timing *t, int batch) {
    cJSON *j = timing_json(t);
    cJSON_AddNumberToObject(j, "ms_per_image", t->median_ms / batch);
    cJSON_AddNumberToObject(j, "images_per_sec", 1e3 * batch / t->median_ms);
    return j;
}

/* The median, and the fastest and slowest rep, per image: a spread as wide as the gap between two rows says
 * the machine was busy. */
#define E2E_HEADER "  %-8s %10s %10s %16s %10s"
static void e2e_row(const char *name, const lpv_timing *t, int batch) {
    char range[40];
    snprintf(range, sizeof range, "%.2f-%.2f", t->min_ms / batch, t->max_ms / batch);
    printf("  %-8s %10.2f %10.2f %16s %10.1f", name, t->median_ms, t->median_ms / batch, range, 1e3 * batch / t->median_ms);
}

static void print_profile_pair(const lpv_profile *a, const lpv_profile *b) {
    printf("\nwhere the time goes (ms per image)\n  %-12s %9s %9s\n", "op", "dense", b ? "sparse" : "");
    double ta = 0, tb = 0;
    for (int i = 0; i < LPV_OP_COUNT; i++) {
        double da = 1e3 * a->sec[i] / (double)a->images, db = b ? 1e3 * b->sec[i] / (double)b->images : 0;
        ta += da, tb += db;
        if (b) printf("  %-12s %9.3f %9.3f\n", lpv_op_name((lpv_op)i), da, db);
        else printf("  %-12s %9.3f\n", lpv_op_name((lpv_op)i), da);
    }
    if (b) printf("  %-12s %9.3f %9.3f\n", "total", ta, tb);
    else printf("  %-12s %9.3f\n", "total", ta);
}

static cJSON *profile_json(const lpv_profile *p) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < LPV_OP_COUNT; i++)
        cJSON_AddNumberToObject(o, lpv_op_name((lpv_op)i), p->images ? 1e3 * p->sec[i] / (double)p->images : 0);
    return o;
}

static const char *lowp_name(int lowp) { return lowp == LPV_BENCH_INT8 ? "int8" : "bf16"; }

/* The same models end to end with the block linears in BF16 or int8 (lowp), beside the FP32 times just
 * measured. */
static lpv_status bench_lowp(const bench_opts *o, const bench_models *bm, int lowp, const lpv_timing *fp32_dense,
                             cJSON *e, int human, lpv_err *err) {
    lpv_timing td, ts;
    lpv_profile pd, ps;
    memset(&pd, 0, sizeof pd), memset(&ps, 0, sizeof ps);
    LPV_TRY(lpv_bench_forward_pair(bm->dense, bm->sparse, o->batch, lowp, o->warmup, o->reps, (uint64_t)o->seed, &td,
                                   &ts, &pd, bm->sparse ? &ps : NULL, err));
    const char *nm = lowp_name(lowp);
    char key[32];
    cJSON *b = cJSON_AddObjectToObject(e, nm);
    cJSON *d = e2e_json(&td, o->batch);
    cJSON_AddNumberToObject(d, "speedup_vs_fp32_dense", fp32_dense->median_ms / td.median_ms);
    cJSON_AddItemToObject(d, "profile_ms_per_image", profile_json(&pd));
    cJSON_AddItemToObject(b, "dense", d);
    if (bm->sparse) {
        cJSON *s = e2e_json(&ts, o->batch);
        cJSON_AddNumberToObject(s, "speedup_vs_fp32_dense", fp32_dense->median_ms / ts.median_ms);
        snprintf(key, sizeof key, "speedup_vs_%s_dense", nm);
        cJSON_AddNumberToObject(s, key, td.median_ms / ts.median_ms);
        cJSON_AddItemToObject(s, "profile_ms_per_image", profile_json(&ps));
        cJSON_AddItemToObject(b, "sparse", s);
    }
    if (human) {
        printf("\nend to end in %s (block linears; attention %s; batch %d, median of %d)\n" E2E_HEADER " %14s\n",
               lowp == LPV_BENCH_INT8 ? "int8" : "BF16", lpv_model_attention_name(bm->dense), o->batch, o->reps, "", "ms/batch",
               "ms/image", "min-max ms/img", "images/s", "vs fp32 dense");
        e2e_row("dense", &td, o->batch);
        printf(" %13.2fx\n", fp32_dense->median_ms / td.median_ms);
        if (bm->sparse) {
            e2e_row("sparse", &ts, o->batch);
            printf(" %13.2fx\n", fp32_dense->median_ms / ts.median_ms);
        }
        print_profile_pair(&pd, bm->sparse ? &ps : NULL);
    }
    return LPV_OK;
}

static double gflops(double flop, const lpv_timing *t) { return flop / (t->median_ms * 1e6); }
static void rate_json(cJSON *e, const char *key, double g, const lpv_peak *pk);
static lpv_peak at_clock(const lpv_peak *unit, const lpv_peak *fp32, const lpv_timing *t);

/* Per-layer columns of the BF16 or int8 times (lowp), after the FP32 ones. flop_d, flop_s: the dense and the kept
 * work; pk_lowp the BF16 or VNNI unit's peak (NAN: none), pk the FP32 one the clock probe follows. */
static void layer_lowp(int lowp, const lpv_timing *td, const lpv_timing *ts, const lpv_timing *fp32_dense, int has_sparse,
                       int human, cJSON *e, double flop_d, double flop_s, const lpv_peak *pk_lowp, const lpv_peak *pk) {
    char key[48];
    snprintf(key, sizeof key, "dense_%s", lowp_name(lowp));
    cJSON_AddItemToObject(e, key, timing_json(td));
    snprintf(key, sizeof key, "sparse_%s", lowp_name(lowp));
    if (has_sparse) cJSON_AddItemToObject(e, key, timing_json(ts));
    snprintf(key, sizeof key, "%s_dense_speedup_vs_fp32_dense", lowp_name(lowp));
    cJSON_AddNumberToObject(e, key, fp32_dense->median_ms / td->median_ms);
    if (has_sparse) {
        snprintf(key, sizeof key, "%s_sparse_speedup_vs_fp32_dense", lowp_name(lowp));
        cJSON_AddNumberToObject(e, key, fp32_dense->median_ms / ts->median_ms);
    }
    /* int8: the product alone beside the whole (the input's quantization is the same work at any density; the
     * forward pass's profile counts it as an op of its own) */
    int prod = lowp == LPV_BENCH_INT8 && isfinite(td->product_ms) && td->product_ms > 0;
    int prod_s = prod && has_sparse && isfinite(ts->product_ms) && ts->product_ms > 0;
    if (prod) {
        cJSON_AddNumberToObject(e, "dense_int8_product_ms", td->product_ms);
        if (prod_s) cJSON_AddNumberToObject(e, "sparse_int8_product_ms", ts->product_ms);
        if (has_sparse) cJSON_AddNumberToObject(e, "int8_sparse_speedup_vs_int8_dense", td->median_ms / ts->median_ms);
        if (prod_s) cJSON_AddNumberToObject(e, "int8_sparse_product_speedup_vs_int8_dense", td->product_ms / ts->product_ms);
    }
    lpv_peak pl = at_clock(pk_lowp, pk, td);
    double gd = gflops(flop_d, td), gs = has_sparse ? gflops(flop_s, ts) : NAN;
    if (isfinite(pl.gflops)) {
        snprintf(key, sizeof key, "dense_%s", lowp_name(lowp));
        rate_json(e, key, gd, &pl);
        snprintf(key, sizeof key, "sparse_%s", lowp_name(lowp));
        if (has_sparse) rate_json(e, key, gs, &pl);
    }
    if (human) {
        printf(" %9.3f", td->median_ms);
        if (has_sparse) printf(" %9.3f", ts->median_ms);
        printf(" %9.2fx", fp32_dense->median_ms / td->median_ms);
        if (lowp == LPV_BENCH_INT8 && has_sparse) {
            if (prod_s) printf(" %6.2fx %6.2fx", td->median_ms / ts->median_ms, td->product_ms / ts->product_ms);
            else printf(" %6.2fx %7s", td->median_ms / ts->median_ms, "-");
        }
        if (isfinite(pl.gflops)) {
            printf(" %5.0f%%", 100 * gd / pl.gflops);
            if (has_sparse) printf(" %5.0f%%", 100 * gs / pl.gflops);
        }
    }
}

/* The JSON keys <key>_gflops and, with a measured peak, <key>_pct_peak. */
static void rate_json(cJSON *e, const char *key, double g, const lpv_peak *pk) {
    char k[64];
    snprintf(k, sizeof k, "%s_gflops", key);
    cJSON_AddNumberToObject(e, k, g);
    if (isfinite(pk->gflops)) {
        snprintf(k, sizeof k, "%s_pct_peak", key);
        cJSON_AddNumberToObject(e, k, 100 * g / pk->gflops);
    }
}

/* A unit's peak at the clock a timing ran at: scaled by the clock probe's median (lpv_bench_set_clock_probe, an
 * FP32 loop) over the FP32 peak measured at the start, one clock moving every unit; the FP32 peak itself becomes
 * the probe (the ratio is exactly 1). Unscaled when the probe did not run. */
static lpv_peak at_clock(const lpv_peak *unit, const lpv_peak *fp32, const lpv_timing *t) {
    lpv_peak p = *unit;
    if (isfinite(p.gflops) && isfinite(t->peak_gflops) && isfinite(fp32->gflops) && fp32->gflops > 0)
        p.gflops = t->peak_gflops * (unit->gflops / fp32->gflops), p.per_thread = p.gflops / p.threads;
    return p;
}

/* The table's GF/s and %pk columns; the share stays blank without a peak (isa ref). */
static void rate_cols(double g, const lpv_peak *pk) {
    if (isfinite(pk->gflops)) printf(" %7.1f %4.0f%%", g, 100 * g / pk->gflops);
    else printf(" %7.1f %5s", g, "-");
}

static cJSON *peak_json(const lpv_peak *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "isa", lpv_isa_name(p->isa));
    cJSON_AddNumberToObject(o, "threads", p->threads);
    if (isfinite(p->gflops)) {
        cJSON_AddNumberToObject(o, "gflops", p->gflops);
        cJSON_AddNumberToObject(o, "gflops_per_thread", p->per_thread);
    }
    return o;
}

/* The int8 units' peaks after the FP32 ones: each int8 kernel the CPU has (AVX2's vpmaddubsw loop, AVX-VNNI's and
 * AVX-512 VNNI's vpdpbusd), under the ISA level that runs it, into arr as {"kernel", "threads", "gops", ...}. */
static lpv_status int8_peaks(cJSON *arr, int human, lpv_err *err) {
    static const lpv_isa levels[3] = {LPV_ISA_AVX2, LPV_ISA_AVXVNNI, LPV_ISA_AVX512};
    lpv_isa keep = lpv_isa_get();
    lpv_q8_kernel seen[3];
    int nseen = 0;
    lpv_status st = LPV_OK;
    for (int i = 0; i < 3 && st == LPV_OK; i++) {
        if (!lpv_isa_supported(levels[i]) || lpv_isa_set(levels[i], err) != LPV_OK) continue;
        lpv_q8_kernel k = lpv_q8_kernel_for(levels[i]);
        int dup = 0;
        for (int s = 0; s < nseen; s++) dup |= seen[s] == k;
        if (dup || k == LPV_Q8_REF) continue; /* avx512 without avx512_vnni runs the AVX2 kernel */
        seen[nseen++] = k;
        lpv_peak p;
        if ((st = lpv_bench_peak_int8(lpv_threads_get(), &p, err)) != LPV_OK) break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "kernel", lpv_q8_kernel_name(k));
        cJSON_AddStringToObject(o, "isa", lpv_isa_name(levels[i]));
        cJSON_AddNumberToObject(o, "threads", p.threads);
        cJSON_AddNumberToObject(o, "gops", p.gflops);
        cJSON_AddNumberToObject(o, "gops_per_thread", p.per_thread);
        cJSON_AddItemToArray(arr, o);
        if (human) printf("  %-12s %10.1f %12.1f\n", lpv_q8_kernel_name(k), p.gflops, p.per_thread);
    }
    lpv_isa_set(keep, NULL);
    return st;
}

/* --peak: every vector ISA the CPU has, FMA throughput on the bench's threads, then the int8 units'. */
static int run_peak(const bench_opts *o) {
    lpv_err err;
    int human = !(o->json && strcmp(o->json, "-") == 0);
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "peaks");
    if (human)
        printf("arithmetic peak (register-only FMA loops, %d threads, best of 20+ trials a thread)\n  %-12s %10s %12s\n",
               lpv_threads_get(), "isa", "GFLOP/s", "per thread");
    lpv_status st = LPV_OK;
    for (int i = LPV_ISA_AVX2; i <= (int)lpv_isa_best() && st == LPV_OK; i++) {
        lpv_peak p;
        if (i == LPV_ISA_AVXVNNI || !lpv_isa_supported((lpv_isa)i)) continue; /* avxvnni's FMAs are avx2's */
        if ((st = lpv_bench_peak((lpv_isa)i, lpv_threads_get(), &p, &err)) != LPV_OK) break;
        cJSON_AddItemToArray(arr, peak_json(&p));
        if (human) printf("  %-12s %10.1f %12.1f\n", lpv_isa_name(p.isa), p.gflops, p.per_thread);
    }
    if (st == LPV_OK && lpv_isa_best() < LPV_ISA_AVX2 && human) printf("  (no AVX2: only the reference kernels run)\n");
    if (st == LPV_OK && lpv_isa_best() >= LPV_ISA_AVX2) {
        if (human)
            printf("int8 units (the int8 kernels' own loops; a multiply-add is 2 ops)\n  %-12s %10s %12s\n", "kernel",
                   "GOP/s", "per thread");
        st = int8_peaks(cJSON_AddArrayToObject(j, "int8_peaks"), human, &err);
    }
    lpv_report_environment(j);
    if (st == LPV_OK && o->json) st = cli_json_out(j, o->json, &err);
    cJSON_Delete(j);
    return st ? cli_fail(&err, st) : 0;
}

/* int8 only: how the forward pass feeds layer i its per-token range (block_forward in forward.c): LayerNorm
 * records it for qkv and fc1, fc1's GELU product for fc2 when fc1 runs int8 (and then records it, the
 * RANGE_OUT); proj's quantizer finds its own. */
static int q8_ranges(const lpv_layer_ref *r, int n, int i, int lowp) {
    if (lowp != LPV_BENCH_INT8) return 0;
    int next_fc2 = i + 1 < n && r[i + 1].kind == LPV_LK_FC2 && lpv_linear_has_int8(r[i + 1].lin) &&
                   r[i + 1].lin->qx.per_token;
    int prev_fc1 = i > 0 && r[i - 1].kind == LPV_LK_FC1 && lpv_linear_has_int8(r[i - 1].lin);
    switch (r[i].kind) {
    case LPV_LK_QKV: return LPV_BENCH_Q8_RANGE_IN;
    case LPV_LK_FC1: return LPV_BENCH_Q8_RANGE_IN | (next_fc2 ? LPV_BENCH_Q8_RANGE_OUT : 0);
    case LPV_LK_FC2: return prev_fc1 ? LPV_BENCH_Q8_RANGE_IN : 0;
    default: return 0;
    }
}

static lpv_status bench_layers(const bench_opts *o, bench_models *bm, int lowp, cJSON *arr, int human, lpv_err *err) {
    lpv_layer_ref rd[LPV_MAX_LAYERS], rs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(bm->dense, rd, LPV_MAX_LAYERS);
    if (bm->sparse) lpv_model_layers(bm->sparse, rs, LPV_MAX_LAYERS);
    if (human) {
        printf("\nper layer (batch %d, median of %d, ms per batch; GF/s of the kept work, %% of the %s peak at the "
               "row's clock)\n"
               "  %-24s %-11s %7s %9s %9s %8s %7s %5s %7s %5s",
               o->batch, o->reps, lpv_isa_name(bm->peak.isa), "layer", "shape", "density", "dense", "sparse", "speedup",
               "dGF/s", "%pk", "sGF/s", "%pk");
        if (lowp == LPV_BENCH_BF16)
            printf(" %9s%s %10s%s%s", "dense16", bm->sparse ? "  sparse16" : "", "16 vs 32",
                   isfinite(bm->peak_lowp.gflops) ? "  %pk16" : "", isfinite(bm->peak_lowp.gflops) && bm->sparse ? "  %pk16" : "");
        if (lowp == LPV_BENCH_INT8)
            printf(" %9s%s %10s%s%s%s", "dense8", bm->sparse ? "   sparse8" : "", "8 vs 32",
                   bm->sparse ? "  sp8/d8    prod" : "", isfinite(bm->peak_lowp.gflops) ? "   %pk8" : "",
                   isfinite(bm->peak_lowp.gflops) && bm->sparse ? "   %pk8" : "");
        printf("\n");
    }
    double sum_d = 0, sum_s = 0;
    lpv_progress pg; /* the table shows the progress when it is printed */
    if (!human) lpv_progress_begin(&pg, n, "layers");
    for (int i = 0; i < n; i++) {
        const lpv_linear *ld = rd[i].lin, *ls = bm->sparse ? rs[i].lin : NULL;
        int T = rd[i].tokens * o->batch;
        int epi = rd[i].kind == LPV_LK_FC1 ? (LPV_EPI_BIAS | LPV_EPI_GELU) : LPV_EPI_BIAS;
        lpv_timing td, ts = {NAN, NAN, NAN, 0, NAN, NAN};
        LPV_TRY(lpv_bench_linear_pair(ld, ls, T, epi, 0, o->warmup, o->reps, (uint64_t)o->seed + (uint64_t)i, &td, &ts,
                                      err));
        lpv_timing td16, ts16 = {NAN, NAN, NAN, 0, NAN, NAN};
        int in_lowp = lowp == LPV_BENCH_BF16 ? lpv_linear_has_bf16(ld) : lowp == LPV_BENCH_INT8 && lpv_linear_has_int8(ld);
        if (in_lowp)
            LPV_TRY(lpv_bench_linear_pair(ld, ls, T, epi, lowp | q8_ranges(rd, n, i, lowp), o->warmup, o->reps,
                                          (uint64_t)o->seed + (uint64_t)i, &td16, &ts16, err));
        double dens = ls ? lpv_linear_density(ls) : 1.0;
        sum_d += td.median_ms;
        if (ls) sum_s += ts.median_ms;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", ld->out, ld->in);
        double flop_d = 2.0 * ld->out * ld->in * T, flop_s = flop_d * dens;
        double gd = gflops(flop_d, &td), gs = ls ? gflops(flop_s, &ts) : NAN;
        lpv_peak pkl = at_clock(&bm->peak, &bm->peak, &td);
        if (human) {
            if (ls)
                printf("  %-24s %-11s %7.3f %9.3f %9.3f %7.2fx", rd[i].name, shape, dens, td.median_ms, ts.median_ms,
                       td.median_ms / ts.median_ms);
            else printf("  %-24s %-11s %7s %9.3f %9s %8s", rd[i].name, shape, "-", td.median_ms, "", "");
            rate_cols(gd, &pkl);
            if (ls) rate_cols(gs, &pkl);
            else printf(" %7s %5s", "", "");
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "layer", rd[i].name);
        cJSON_AddNumberToObject(e, "out", ld->out);
        cJSON_AddNumberToObject(e, "in", ld->in);
        cJSON_AddNumberToObject(e, "tokens", T);
        cJSON_AddNumberToObject(e, "density", dens);
        if (ls && ls->bsr) {
            char blk[16];
            snprintf(blk, sizeof blk, "%dx%d", ls->bsr->R, ls->bsr->C);
            cJSON_AddStringToObject(e, "block", blk);
        }
        cJSON_AddItemToObject(e, "dense", timing_json(&td));
        rate_json(e, "dense", gd, &pkl);
        if (isfinite(td.peak_gflops)) cJSON_AddNumberToObject(e, "peak_at_clock_gflops", td.peak_gflops);
        if (ls) {
            cJSON_AddItemToObject(e, "sparse", timing_json(&ts));
            cJSON_AddNumberToObject(e, "speedup", td.median_ms / ts.median_ms);
            rate_json(e, "sparse", gs, &pkl);
        }
        if (in_lowp) layer_lowp(lowp, &td16, &ts16, &td, ls != NULL, human, e, flop_d, flop_s, &bm->peak_lowp, &bm->peak);
        if (human) printf("\n");
        cJSON_AddItemToArray(arr, e);
        if (!human) lpv_progress_update(&pg, i + 1, NULL);
    }
    if (!human) lpv_progress_end(&pg);
    if (human && bm->sparse)
        printf("  %-24s %-11s %7s %9.3f %9.3f %7.2fx\n", "all linear layers", "", "", sum_d, sum_s, sum_d / sum_s);
    if (human && bm->sparse && lowp == LPV_BENCH_INT8)
        printf("  int8 times include quantizing the layer's input as the forward pass does (qkv, fc1, fc2: range from "
               "the op before); sp8/d8: int8 sparse vs int8 dense, prod: their products alone\n");
    return LPV_OK;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o;
    memset(&o, 0, sizeof o);
    cli_model_args_init(&o.ma);
    o.batch = 1, o.reps = 10, o.warmup = 2;
    const cli_opt opts[] = {
        {"--model", OPT_MODEL, &o.ma.model, "M", "dense model: preset, .safetensors or HF folder", 0, 0, NULL},
        {"--weights", OPT_IN, &o.ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--random-weights", OPT_FLAG, &o.random_weights, NULL, "random weights at the preset's shape (no file needed)", 0, 0, NULL},
        {"--pruned", OPT_IN, &o.pruned, "P", "pruned (BSR) model to compare against", 0, 0, NULL},
        {"--density", OPT_DOUBLE, &o.density, "d", "synthetic: keep a random fraction d of blocks (default: none, dense only or --pruned)", 1e-6, 1, NULL},
        {"--block", OPT_STR, &o.block, "RxC", "synthetic block shape (default 32x32)", 0, 0, NULL},
        {"--include-patch", OPT_FLAG, &o.include_patch, NULL, "synthetic: also prune the patch embedding", 0, 0, NULL},
        {"--include-heads", OPT_FLAG, &o.include_heads, NULL, "synthetic: also prune the classifier head(s)", 0, 0, NULL},
        {"--peak", OPT_FLAG, &o.peak, NULL, "only measure this CPU's FMA peak per ISA (GFLOP/s on --threads); no model needed", 0, 0, NULL},
        {"--calibrate", OPT_FLAG, &o.calibrate, NULL, "write a cost table (BSR time per layer shape and density, in --precision's kernels) to --out", 0, 0, NULL},
        {"--out", OPT_OUT, &o.out, "FILE", "--calibrate: the table (JSON) for lpvit prune --cost-table", 0, 0, NULL},
        {"--batch", OPT_INT, &o.batch, "N", "images per forward pass", 1, 1024, NULL},
        {"--reps", OPT_INT, &o.reps, "K", "timed repetitions (median reported)", 1, 100000, NULL},
        {"--warmup", OPT_INT, &o.warmup, "W", "untimed repetitions first", 0, 1000, NULL},
        {"--no-layers", OPT_FLAG, &o.no_layers, NULL, "skip the per-layer table", 0, 0, NULL},
        {"--seed", OPT_INT, &o.seed, "S", "seed for random inputs, weights and masks", 0, 2147483647, NULL},
        CLI_OPT_HEADS(&o.ma.heads),
        CLI_OPT_ALLOW_EXTRA(&o.ma.allow_extra),
        {"--json", OPT_OUT, &o.json, "FILE", "write the report as JSON ('-': stdout instead of the tables)", 0, 0, NULL},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_ISA(&o.isa),
        CLI_OPT_DENSE_KERNEL(&o.dense_kernel),
        {"--precision", OPT_STR, &o.precision, "P", "fp32; bf16 or int8: also time both models per layer and end to end with their block linears in BF16 (needs AVX512-BF16) or int8, beside FP32; with --calibrate, the kernels the table times (for lpvit prune --precision)", 0, 0, NULL},
        CLI_OPT_ATTENTION(&o.attention),
        CLI_OPT_INT8_ATTENTION(&o.attn8),
        CLI_OPT_QUIET(&o.ma.quiet),
        {0},
    };
    const cli_spec spec = {
        "lpvit bench (--model M [--random-weights] | --pruned P) [--pruned P | --density d --block RxC] [options]",
        "Times dense against block-sparse in one run: every linear layer alone, then whole forward passes, "
        "interleaved, same threads, medians of --reps after --warmup. Reports CPU, ISA, threads and OpenBLAS core.",
        opts, 0, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(o.ma.quiet);
    if (o.peak && (o.ma.model || o.pruned || o.calibrate))
        return cli_usage_error("--peak runs alone: no --model, --pruned or --calibrate");
    if (!o.peak && !o.ma.model && !o.pruned) return cli_usage_error("give --model or --pruned (or --peak)");
    if (o.random_weights && !o.ma.model) return cli_usage_error("--random-weights needs --model PRESET");
    if (o.pruned && o.density > 0) return cli_usage_error("--pruned and --density are alternatives");
    if (o.block && !(o.density > 0) && !o.calibrate) return cli_usage_error("--block goes with --density or --calibrate");
    if (o.calibrate && (!o.out || !o.ma.model)) return cli_usage_error("--calibrate needs --model and --out");
    lpv_err err;
    int prec = 0;
    lpv_status st = cli_engine(o.threads, o.isa, o.dense_kernel, o.precision, &prec, &err);
    lpv_attention att = LPV_ATTN_AUTO;
    if (st == LPV_OK) st = cli_attention_mode(o.attention, o.attn8, &att, &err);
    if (st == LPV_OK && att == LPV_ATTN_INT8 && prec != CLI_INT8)
        st = lpv_fail(&err, LPV_E_ARG, "--attention int8 goes with --precision int8");
    if (st) return cli_fail(&err, st);
    if (o.peak) return run_peak(&o);
    bench_models bm;
    memset(&bm, 0, sizeof bm);
    if (o.calibrate) {
        if ((st = open_dense(&o, &bm, &err)) != LPV_OK) return cli_fail(&err, st);
        lpv_precision tp = prec == CLI_BF16 ? LPV_PREC_BF16 : prec == CLI_INT8 ? LPV_PREC_INT8 : LPV_PREC_FP32;
        int rc2 = run_calibrate(&o, &bm, tp);
        lpv_model_free(bm.dense);
        return rc2;
    }
    if ((st = open_dense(&o, &bm, &err)) == LPV_OK) st = open_sparse(&o, &bm, &err);
    /* both sides get the fastest dense path for their dense layers: the baseline is not a straw man */
    if (st == LPV_OK) st = cli_pack(bm.dense, prec, &err);
    if (st == LPV_OK) st = cli_pack(bm.sparse, prec, &err);
    if (st == LPV_OK) cli_attention(bm.dense, att), cli_attention(bm.sparse, att);
    if (st) {
        lpv_model_free(bm.dense), lpv_model_free(bm.sparse);
        return cli_fail(&err, st);
    }
    if (st == LPV_OK) st = lpv_bench_peak(lpv_isa_fp32(lpv_isa_get()), lpv_threads_get(), &bm.peak, &err);
    if (st == LPV_OK && isfinite(bm.peak.gflops)) lpv_bench_set_clock_probe(bm.peak.isa, bm.peak.threads);
    bm.peak_lowp = (lpv_peak){LPV_ISA_AVX512BF16, lpv_threads_get(), NAN, NAN};
    if (st == LPV_OK && prec == CLI_BF16 && lpv_isa_get() >= LPV_ISA_AVX512BF16)
        st = lpv_bench_peak(LPV_ISA_AVX512BF16, lpv_threads_get(), &bm.peak_lowp, &err);
    if (st == LPV_OK && prec == CLI_INT8) st = lpv_bench_peak_int8(lpv_threads_get(), &bm.peak_lowp, &err);
    if (st) {
        lpv_model_free(bm.dense), lpv_model_free(bm.sparse);
        return cli_fail(&err, st);
    }
    int human = !(o.json && strcmp(o.json, "-") == 0);
    char env[512];
    lpv_environment_line(env, sizeof env);
    lpv_info("%s", env);
    if (human) {
        printf("dense    %s\n", bm.dense_desc);
        if (bm.sparse) {
            char sp[256];
            cli_sparsity_line(bm.sparse, sp, sizeof sp);
            printf("sparse   %s\n%s%s%s", bm.sparse_desc, sp[0] ? "         " : "", sp, sp[0] ? "\n" : "");
        }
        printf("setup    batch %d, %d threads, isa %s, dense kernel %s, blocking %s, openblas core %s, %d reps after %d "
               "warm-up\n",
               o.batch, lpv_threads_get(), lpv_isa_name(lpv_isa_get()), lpv_dense_kernel_name(lpv_dense_kernel_get()),
               lpv_blocking_name(lpv_blocking_get()), lpv_blas_corename(), o.reps, o.warmup);
        if (isfinite(bm.peak.gflops))
            printf("peak     %.1f GFLOP/s measured (%s FMA loops, %d threads; lpvit bench --peak)\n", bm.peak.gflops,
                   lpv_isa_name(bm.peak.isa), bm.peak.threads);
        if (isfinite(bm.peak_lowp.gflops) && prec == CLI_BF16)
            printf("peak16   %.1f GFLOP/s measured (vdpbf16ps loops, %d threads): %.2fx the FP32 peak\n", bm.peak_lowp.gflops,
                   bm.peak_lowp.threads, bm.peak_lowp.gflops / bm.peak.gflops);
        if (isfinite(bm.peak_lowp.gflops) && prec == CLI_INT8)
            printf("peak8    %.1f GOP/s measured (%s loops, %d threads; a multiply-add is 2 ops): %.2fx the FP32 peak\n",
                   bm.peak_lowp.gflops, bm.peak_lowp.isa == LPV_ISA_AVX2 ? "vpmaddubsw + vpmaddwd + vpaddd" : bm.peak_lowp.isa == LPV_ISA_AVXVNNI ? "vpdpbusd ymm" : "vpdpbusd",
                   bm.peak_lowp.threads, bm.peak_lowp.gflops / bm.peak.gflops);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "dense", bm.dense_desc);
    if (prec == CLI_INT8) cJSON_AddStringToObject(j, "int8_attention", lpv_model_attention_name(bm.dense));
    if (bm.sparse) cJSON_AddStringToObject(j, "sparse", bm.sparse_desc);
    if (bm.sparse) cJSON_AddItemToObject(j, "sparsity", cli_sparsity_json(bm.sparse));
    cJSON_AddNumberToObject(j, "batch", o.batch);
    cJSON_AddNumberToObject(j, "reps", o.reps);
    cJSON_AddNumberToObject(j, "warmup", o.warmup);
    cJSON_AddNumberToObject(j, "seed", o.seed);
    cJSON_AddItemToObject(j, "peak", peak_json(&bm.peak));
    if (isfinite(bm.peak_lowp.gflops))
        cJSON_AddItemToObject(j, prec == CLI_INT8 ? "peak_int8" : "peak_bf16", peak_json(&bm.peak_lowp));
    if (bm.sparse) cJSON_AddNumberToObject(j, "linear_density", lpv_model_linear_density(bm.sparse));
    lpv_cpu_snap snap0, snap1;
    lpv_cpu_snap_take(&snap0);
    if (!o.no_layers) st = bench_layers(&o, &bm, prec, cJSON_AddArrayToObject(j, "layers"), human, &err);
    lpv_timing td, ts;
    lpv_profile pd, ps;
    memset(&pd, 0, sizeof pd), memset(&ps, 0, sizeof ps);
    if (st == LPV_OK)
        st = lpv_bench_forward_pair(bm.dense, bm.sparse, o.batch, 0, o.warmup, o.reps, (uint64_t)o.seed, &td, &ts, &pd,
                                    bm.sparse ? &ps : NULL, &err);
    if (st == LPV_OK) {
        cJSON *e = cJSON_AddObjectToObject(j, "end_to_end");
        cJSON *d = e2e_json(&td, o.batch);
        lpv_macs mc = lpv_model_macs(&bm.dense->cfg);
        double g_e2e = gflops(2.0 * (mc.linear_macs + mc.attention_macs) * o.batch, &td);
        lpv_peak pke = at_clock(&bm.peak, &bm.peak, &td);
        rate_json(d, "model", g_e2e, &pke);
        if (isfinite(td.peak_gflops)) cJSON_AddNumberToObject(d, "peak_at_clock_gflops", td.peak_gflops);
        cJSON_AddItemToObject(d, "profile_ms_per_image", profile_json(&pd));
        cJSON_AddItemToObject(e, "dense", d);
        if (bm.sparse) {
            cJSON *s = e2e_json(&ts, o.batch);
            cJSON_AddItemToObject(s, "profile_ms_per_image", profile_json(&ps));
            cJSON_AddItemToObject(e, "sparse", s);
            cJSON_AddNumberToObject(e, "speedup", td.median_ms / ts.median_ms);
        }
        if (human) {
            printf("\nend to end (batch %d, median of %d)\n" E2E_HEADER "\n", o.batch, o.reps, "", "ms/batch", "ms/image",
                   "min-max ms/img", "images/s");
            e2e_row("dense", &td, o.batch);
            if (isfinite(pke.gflops)) printf("   %.1f GFLOP/s, %.0f%% of peak", g_e2e, 100 * g_e2e / pke.gflops);
            printf("\n");
            if (bm.sparse) {
                e2e_row("sparse", &ts, o.batch);
                printf("\n");
                printf("  speedup  %.2fx\n", td.median_ms / ts.median_ms);
            }
            print_profile_pair(&pd, bm.sparse ? &ps : NULL);
        }
        if (prec) st = bench_lowp(&o, &bm, prec, &td, e, human, &err);
        lpv_cpu_snap_take(&snap1);
        busy_note(j, lpv_cpu_others(&snap0, &snap1), human);
        if (st == LPV_OK) clock_note(j, &bm.peak, human);
        lpv_report_environment(j);
        if (o.json) st = cli_json_out(j, o.json, &err);
    }
    cJSON_Delete(j);
    lpv_model_free(bm.dense);
    lpv_model_free(bm.sparse);
    return st ? cli_fail(&err, st) : 0;
}
