/* cli.c — option parsing, model opening, progress (see src/cli/cli.h). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lpvit/bench.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/ioguard.h"
#include "lpvit/log.h"
#include "lpvit/ops.h"
#include "lpvit/report.h"

/* ---------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------- */

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("lpvit: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    return CLI_USAGE;
}

static void clear_bar(void);

int cli_fail(const lpv_err *err, lpv_status st) {
    clear_bar();
    if (err->param[0]) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", err->param);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_') *c = '-';
        size_t n = strlen(err->param);
        if (strncmp(err->msg, err->param, n) == 0 && strncmp(err->msg + n, ": ", 2) == 0)
            fprintf(stderr, "lpvit: %s%s\n", flag, err->msg + n);
        else fprintf(stderr, "lpvit: %s (see %s)\n", err->msg, flag);
    } else {
        fprintf(stderr, "lpvit: %s\n", err->msg);
    }
    return st == LPV_E_ARG ? EXIT_USAGE : 1;
}

static void print_default(const cli_opt *o) {
    switch (o->type) {
    case OPT_STR:
    case OPT_IN:
    case OPT_OUT:
    case OPT_MODEL:
        if (*(char **)o->dst) printf(" (default %s)", *(char **)o->dst);
        break;
    case OPT_INT:
        printf(" (default %d)", *(int *)o->dst);
        break;
    case OPT_DOUBLE:
        if (!isnan(*(double *)o->dst)) printf(" (default %g)", *(double *)o->dst);
        break;
    default:
        break;
    }
}

static void print_help(const cli_spec *s) {
    printf("usage: %s\n\n", s->usage);
    if (s->description) printf("%s\n\n", s->description);
    printf("options:\n");
    for (const cli_opt *o = s->opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        printf("  %-26s %s", left, o->help);
        if (!strstr(o->help, "(default")) print_default(o);
        printf("\n");
    }
    printf("  %-26s %s\n", "--help", "show this help");
}

static int parse_int(const char *name, const char *v, const cli_opt *o, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < -2147483647L || x > 2147483647L)
        return cli_usage_error("%s: expected an integer, got '%s'", name, v);
    if (o->min < o->max && (x < o->min || x > o->max))
        return cli_usage_error("%s: expected %g..%g, got %ld", name, o->min, o->max, x);
    *out = (int)x;
    return CLI_OK;
}

static int parse_double(const char *name, const char *v, const cli_opt *o, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) return cli_usage_error("%s: expected a number, got '%s'", name, v);
    if (o->min < o->max && (x < o->min || x > o->max))
        return cli_usage_error("%s: expected a value in [%g, %g], got %g", name, o->min, o->max, x);
    *out = x;
    return CLI_OK;
}

static int parse_float3(const char *name, const char *v, float out[3]) {
    const char *p = v;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (errno || end == p || !isfinite(x)) return cli_usage_error("%s: expected three numbers a,b,c, got '%s'", name, v);
        out[i] = (float)x;
        p = end;
        if (i < 2) {
            if (*p != ',') return cli_usage_error("%s: expected three numbers a,b,c, got '%s'", name, v);
            p++;
        }
    }
    if (*p) return cli_usage_error("%s: expected three numbers a,b,c, got '%s'", name, v);
    return CLI_OK;
}

static int set_opt(const cli_opt *o, const char *v) {
    int rc = CLI_OK;
    switch (o->type) {
    case OPT_STR:
    case OPT_IN:
    case OPT_OUT:
    case OPT_MODEL:
        if (!v[0]) return cli_usage_error("%s: empty value", o->name);
        *(const char **)o->dst = v;
        break;
    case OPT_INT: rc = parse_int(o->name, v, o, (int *)o->dst); break;
    case OPT_DOUBLE: rc = parse_double(o->name, v, o, (double *)o->dst); break;
    case OPT_FLOAT3: rc = parse_float3(o->name, v, (float *)o->dst); break;
    default: break;
    }
    if (rc == CLI_OK && o->seen) *o->seen = 1;
    return rc;
}

/* Other spellings users bring from timm and other tools, and the old name of prune's --json. */
static const struct {
    const char *alias, *name;
} ALIASES[] = {
    {"-b", "--batch"}, {"--batch-size", "--batch"}, {"--interpolation", "--interp"}, {"--report", "--json"},
    {"--crop_pct", "--crop-pct"}, {"-j", "--threads"}, {"--workers", "--decode-threads"},
};

/* The option row for name or for its alias, NULL when the command has neither. */
static const cli_opt *find_opt(const cli_spec *spec, const char *name) {
    for (const cli_opt *o = spec->opts; o->name; o++)
        if (strcmp(o->name, name) == 0) return o;
    for (size_t k = 0; k < sizeof ALIASES / sizeof *ALIASES; k++)
        if (strcmp(ALIASES[k].alias, name) == 0) {
            for (const cli_opt *o = spec->opts; o->name; o++)
                if (strcmp(o->name, ALIASES[k].name) == 0) return o;
        }
    return NULL;
}

/* Edit distance between a and b (insertions, deletions, substitutions), capped at 9. */
static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b), d[64];
    if (la > 62 || lb > 62) return 9;
    for (int j = 0; j <= lb; j++) d[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = d[0];
        d[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = d[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (d[j - 1] + 1 < best) best = d[j - 1] + 1;
            diag = up, d[j] = best;
        }
    }
    return d[lb] < 9 ? d[lb] : 9;
}

/* "unknown option '--modle' (did you mean --model?)": the closest of the command's options, when close. */
static int unknown_option(const cli_spec *spec, const char *name) {
    const cli_opt *best = NULL;
    int bd = 9;
    for (const cli_opt *o = spec->opts; o->name; o++) {
        int d = edit_distance(name, o->name);
        /* a prefix counts as close: --target for --target-flops */
        if (strncmp(o->name, name, strlen(name)) == 0 && strlen(name) >= 4) d = d < 2 ? d : 2;
        if (d < bd) bd = d, best = o;
    }
    for (size_t k = 0; k < sizeof ALIASES / sizeof *ALIASES; k++) { /* --batchsize is close to --batch-size */
        const cli_opt *o = find_opt(spec, ALIASES[k].alias);
        int d = edit_distance(name, ALIASES[k].alias);
        if (o && d < bd) bd = d, best = o;
    }
    if (best && bd <= (strlen(name) > 8 ? 3 : 2))
        return cli_usage_error("unknown option '%s' (did you mean %s?)", name, best->name);
    return cli_usage_error("unknown option '%s'", name);
}

static int is_number(const char *s) {
    char *end;
    errno = 0;
    (void)strtod(s, &end);
    return end != s && *end == 0 && !errno;
}

/* The files a command will read and write, checked before it does anything (ioguard.h). */
int cli_guard_paths(const cli_spec *spec, char **pos, int npos, const char *extra_label, const char *const *extra,
                    int n_extra) {
    lpv_ioguard g;
    lpv_ioguard_init(&g);
    for (int i = 0; i < n_extra; i++) lpv_ioguard_output(&g, extra_label, extra[i]);
    lpv_model_ref ref; /* a preset --model's weights file (one --model per command) */
    for (const cli_opt *o = spec->opts; o->name; o++) {
        const char *v = (o->type == OPT_IN || o->type == OPT_OUT || o->type == OPT_MODEL) ? *(char **)o->dst : NULL;
        if (!v) continue;
        if (o->type == OPT_OUT) lpv_ioguard_output(&g, o->name, v);
        else lpv_ioguard_input(&g, o->name, v);
        lpv_err e;
        if (o->type == OPT_MODEL && access(v, F_OK) != 0 && lpv_resolve_model(v, NULL, &ref, &e) == LPV_OK)
            lpv_ioguard_input(&g, o->name, ref.path);
    }
    for (int i = 0; spec->pos_in && i < npos; i++) lpv_ioguard_input(&g, "file", pos[i]);
    lpv_err err;
    lpv_status st = lpv_ioguard_check(&g, &err);
    lpv_ioguard_free(&g);
    return st == LPV_OK ? CLI_OK : cli_fail(&err, st);
}

int cli_parse(int argc, char **argv, const cli_spec *spec, char **pos, int *npos) {
    *npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            print_help(spec);
            return CLI_HELP;
        }
        if (!only_pos && a[0] == '-' && a[1]) {
            char name[64];
            const char *eq = strchr(a, '=');
            size_t nl = eq ? (size_t)(eq - a) : strlen(a);
            if (nl >= sizeof name) return cli_usage_error("unknown option '%.40s...'", a);
            memcpy(name, a, nl);
            name[nl] = 0;
            const cli_opt *o = find_opt(spec, name);
            if (!o) return unknown_option(spec, name);
            if (o->type == OPT_FLAG) {
                if (eq) return cli_usage_error("%s takes no value", name);
                *(int *)o->dst = 1;
                if (o->seen) *o->seen = 1;
                continue;
            }
            const char *v = eq ? eq + 1 : NULL;
            if (!v) {
                if (i + 1 >= argc) return cli_usage_error("%s needs a value%s%s", name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
                v = argv[++i];
            }
            char three[192]; /* timm's --mean 0.5 0.5 0.5: three arguments, read as "0.5,0.5,0.5" */
            if (o->type == OPT_FLOAT3 && !eq && !strchr(v, ',') && i + 2 < argc && is_number(argv[i + 1]) &&
                is_number(argv[i + 2]) && snprintf(three, sizeof three, "%s,%s,%s", v, argv[i + 1], argv[i + 2]) < (int)sizeof three) {
                v = three;
                i += 2;
            }
            int rc = set_opt(o, v);
            if (rc != CLI_OK) return rc;
            continue;
        }
        if (*npos >= spec->max_pos)
            return spec->max_pos ? cli_usage_error("too many arguments ('%s')", a)
                                 : cli_usage_error("unexpected argument '%s'", a);
        pos[(*npos)++] = a;
    }
    if (*npos < spec->min_pos) return cli_usage_error("missing argument (usage: %s)", spec->usage);
    return cli_guard_paths(spec, pos, *npos, NULL, NULL, 0);
}

void cli_cache_dir(char *buf, size_t cap, const char *given) {
    if (given) {
        snprintf(buf, cap, "%s", given);
        return;
    }
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (x && x[0]) snprintf(buf, cap, "%s/lpvit", x);
    else snprintf(buf, cap, "%s/.cache/lpvit", h && h[0] ? h : "/tmp");
}

lpv_status cli_runtime(int threads, const char *isa, lpv_err *err) {
    if (threads < 0 || threads > lpv_threads_max())
        return lpv_fail(err, LPV_E_ARG,
                        "--threads: expected 0..%d (0: all CPUs; OpenBLAS here is built for %d callers at once), got %d",
                        lpv_threads_max(), lpv_threads_max(), threads);
    if (threads > 0) lpv_threads_set(threads);
    else lpv_threads_set(lpv_threads_get());
    if (isa) {
        lpv_isa i;
        LPV_TRY(lpv_isa_parse(isa, &i, err));
        LPV_TRY(lpv_isa_set(i, err));
    }
    return LPV_OK;
}

/* After the ISA: auto depends on it. */
static lpv_status dense_kernel(const char *s, lpv_err *err) {
    if (!s || strcmp(s, "auto") == 0) lpv_dense_kernel_set(lpv_dense_kernel_auto());
    else if (strcmp(s, "blocked") == 0) lpv_dense_kernel_set(LPV_DENSE_BLOCKED);
    else if (strcmp(s, "openblas") == 0 || strcmp(s, "blas") == 0) lpv_dense_kernel_set(LPV_DENSE_BLAS);
    else return lpv_fail(err, LPV_E_ARG, "--dense-kernel: expected auto, blocked or openblas, got '%s'", s);
    return LPV_OK;
}

static lpv_status precision(const char *s, int *bf16, lpv_err *err) {
    *bf16 = CLI_FP32;
    if (!s || strcmp(s, "fp32") == 0) return LPV_OK;
    if (strcmp(s, "int8") == 0) { /* every ISA runs it: AVX-512 VNNI, AVX-VNNI, AVX2 or the reference */
        *bf16 = CLI_INT8;
        return LPV_OK;
    }
    if (strcmp(s, "bf16") != 0) return lpv_fail(err, LPV_E_ARG, "--precision: expected fp32, bf16 or int8, got '%s'", s);
    lpv_isa isa = lpv_isa_get();
    if (isa != LPV_ISA_REF && isa < LPV_ISA_AVX512BF16)
        return lpv_fail(err, LPV_E_UNSUPPORTED,
                        "--precision bf16 needs isa avx512bf16, and this run has '%s' (cpu best: '%s'; --isa ref runs "
                        "the slow reference kernel)",
                        lpv_isa_name(isa), lpv_isa_name(lpv_isa_best()));
    *bf16 = CLI_BF16;
    double r = isa == LPV_ISA_REF ? NAN : lpv_bench_bf16_vs_fp32();
    if (r < 1.1)
        lpv_warn("--precision bf16: on this cpu vdpbf16ps does %.2fx the FP32 FMA work per cycle (measured), so BF16 "
                 "runs slower than fp32 here (Intel Xeons need AMX for fast BF16; lpvit has no AMX kernels yet)",
                 r);
    return LPV_OK;
}

lpv_status cli_engine(int threads, const char *isa, const char *dense, const char *prec, int *bf16, lpv_err *err) {
    *bf16 = 0;
    LPV_TRY(cli_runtime(threads, isa, err));
    LPV_TRY(dense_kernel(dense, err));
    return precision(prec, bf16, err); /* after the ISA: it checks bf16 against it */
}

lpv_status cli_pack(lpv_model *m, int bf16, lpv_err *err) {
    if (!m) return LPV_OK;
    int lowp = bf16 == CLI_INT8 ? LPV_BENCH_INT8 : bf16 == CLI_BF16 ? LPV_BENCH_BF16 : LPV_BENCH_FP32;
    return lpv_model_pack_for(m, lowp, err);
}

lpv_status cli_attention_mode(const char *mode, int int8, lpv_attention *out, lpv_err *err) {
    if (!mode) mode = int8 ? "int8" : "auto";
    if (!strcmp(mode, "auto")) *out = LPV_ATTN_AUTO;
    else if (!strcmp(mode, "fp32")) *out = LPV_ATTN_FP32;
    else if (!strcmp(mode, "int8")) *out = LPV_ATTN_INT8;
    else return lpv_fail(err, LPV_E_ARG, "--attention: expected auto, fp32 or int8, got '%s'", mode);
    if (int8 && *out != LPV_ATTN_INT8) return lpv_fail(err, LPV_E_ARG, "--int8-attention and --attention %s disagree", mode);
    return LPV_OK;
}

void cli_attention(lpv_model *m, lpv_attention a) {
    if (!m) return;
    m->attention = a;
    int hd = m->cfg.dim / m->cfg.heads;
    if (a == LPV_ATTN_INT8 && !lpv_attention_q8_runs(hd))
        lpv_warn("--attention int8: the int8 kernel needs AVX-512 VNNI (--isa avx512 or above, a head size that is a "
                 "multiple of 8) or AVX-VNNI (--isa avxvnni, a multiple of 4) (here %d, isa %s): attention stays FP32",
                 hd, lpv_isa_name(lpv_isa_get()));
}

/* ---------------------------------------------------------------------------
 * Models and preprocessing
 * ------------------------------------------------------------------------- */

void cli_model_args_init(cli_model_args *a) {
    memset(a, 0, sizeof *a);
    a->crop_pct = NAN;
}

void cli_preproc_str(const lpv_preproc *pp, char *buf, size_t cap) {
    snprintf(buf, cap, "resize %d %s, crop %d (crop_pct %g), mean %g,%g,%g, std %g,%g,%g",
             lpv_preproc_scale_size(pp), lpv_interp_name(pp->interp), pp->img_size, pp->crop_pct,
             (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2], (double)pp->std[0], (double)pp->std[1],
             (double)pp->std[2]);
}

cJSON *cli_sparsity_json(lpv_model *m) {
    lpv_sparsity s;
    lpv_model_sparsity(m, &s);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "linears", s.layers);
    cJSON_AddNumberToObject(j, "pruned_linears", s.pruned);
    cJSON_AddNumberToObject(j, "weights_kept", s.weights_kept / s.weights_dense);
    cJSON_AddNumberToObject(j, "flops_kept", s.model_macs_kept / s.model_macs_dense);
    cJSON_AddNumberToObject(j, "gflops_dense", 2e-9 * s.model_macs_dense);
    cJSON_AddNumberToObject(j, "gflops", 2e-9 * s.model_macs_kept);
    return j;
}

void cli_sparsity_line(lpv_model *m, char *buf, size_t cap) {
    lpv_sparsity s;
    lpv_model_sparsity(m, &s);
    if (!s.pruned) {
        snprintf(buf, cap, "%s", "");
        return;
    }
    snprintf(buf, cap, "%d of %d linears block-sparse: %.1f %% of their weights kept, %.1f %% of the FLOPs (%.2f of %.2f GFLOPs per image)",
             s.pruned, s.layers, 100 * s.weights_kept / s.weights_dense, 100 * s.model_macs_kept / s.model_macs_dense,
             2e-9 * s.model_macs_kept, 2e-9 * s.model_macs_dense);
}

/* Reads a JSON file of at most 1 MB; NULL when absent or not JSON. */
static cJSON *read_json(const char *path) {
    char *txt = NULL;
    lpv_err e;
    if (lpv_read_file(path, &txt, NULL, 1 << 20, &e) != LPV_OK) return NULL;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    return j;
}

static int float3(const cJSON *a, float out[3]) {
    if (cJSON_GetArraySize(a) != 3) return 0;
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(v)) return 0;
        out[i] = (float)v->valuedouble;
    }
    return 1;
}

/* The "height" of {"height": H, "width": W} or the "shortest_edge" of {"shortest_edge": S}, or 0. */
static double hf_side(const cJSON *o) {
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "height"), *e = cJSON_GetObjectItemCaseSensitive(o, "shortest_edge");
    return cJSON_IsNumber(h) ? h->valuedouble : cJSON_IsNumber(e) ? e->valuedouble : 0;
}

/* The preprocessing of a file's folder, as the hub ships it: timm's config.json ("pretrained_cfg": mean, std,
 * crop_pct, interpolation), else transformers' preprocessor_config.json (image_mean, image_std, resample,
 * and crop_size / size when it center-crops). For a folder model, its own files. 1 when found. */
static int pp_from_config_beside(lpv_preproc *pp, const char *model_path, char *source, size_t cap) {
    char dir[1024], path[1100];
    if (lpv_is_dir(model_path)) snprintf(dir, sizeof dir, "%s", model_path);
    else lpv_path_folder(model_path, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *j = read_json(path);
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(j, "pretrained_cfg");
    lpv_preproc p = *pp;
    int ok = cJSON_IsObject(pc) && float3(cJSON_GetObjectItemCaseSensitive(pc, "mean"), p.mean) &&
             float3(cJSON_GetObjectItemCaseSensitive(pc, "std"), p.std);
    if (ok) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(pc, "crop_pct"), *in = cJSON_GetObjectItemCaseSensitive(pc, "interpolation");
        lpv_err e;
        if (cJSON_IsNumber(c)) p.crop_pct = c->valuedouble;
        if (cJSON_IsString(in) && lpv_interp_parse(in->valuestring, &p.interp, &e) != LPV_OK) ok = 0;
    }
    cJSON_Delete(j);
    if (!ok) {
        p = *pp;
        snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
        j = read_json(path);
        ok = j && float3(cJSON_GetObjectItemCaseSensitive(j, "image_mean"), p.mean) &&
             float3(cJSON_GetObjectItemCaseSensitive(j, "image_std"), p.std);
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "resample"), *cc = cJSON_GetObjectItemCaseSensitive(j, "do_center_crop");
        if (ok && cJSON_IsNumber(rs)) p.interp = rs->valueint == 2 ? LPV_INTERP_BILINEAR : LPV_INTERP_BICUBIC; /* PIL: 2, 3 */
        double crop = hf_side(cJSON_GetObjectItemCaseSensitive(j, "crop_size")), size = hf_side(cJSON_GetObjectItemCaseSensitive(j, "size"));
        if (ok && cJSON_IsTrue(cc) && crop > 0 && size >= crop) p.crop_pct = crop / size;
        cJSON_Delete(j);
    }
    if (!ok) return 0;
    *pp = p;
    const char *base = strrchr(path, '/') + 1; /* path is "<dir>/<name>" */
    snprintf(source, cap, "%.40s beside the weights", base);
    return 1;
}

/* Preprocessing recorded in lpvit's metadata (prune, quantize, create-model write it). */
static int pp_from_lpvit_meta(lpv_preproc *pp, const char *meta) {
    cJSON *root = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *p = root ? cJSON_GetObjectItemCaseSensitive(root, "preprocess") : NULL;
    int ok = 0;
    if (cJSON_IsObject(p)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, "crop_pct");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(p, "mean"), *s = cJSON_GetObjectItemCaseSensitive(p, "std");
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(p, "interpolation");
        if (cJSON_IsNumber(c) && cJSON_GetArraySize(m) == 3 && cJSON_GetArraySize(s) == 3) {
            pp->crop_pct = c->valuedouble;
            for (int i = 0; i < 3; i++) {
                pp->mean[i] = (float)cJSON_GetArrayItem(m, i)->valuedouble;
                pp->std[i] = (float)cJSON_GetArrayItem(s, i)->valuedouble;
            }
            lpv_interp ip;
            lpv_err e;
            if (cJSON_IsString(in) && lpv_interp_parse(in->valuestring, &ip, &e) == LPV_OK) pp->interp = ip;
            ok = 1;
        }
    }
    cJSON_Delete(root);
    return ok;
}

lpv_status cli_open_model(const cli_model_args *a, cli_model *out, lpv_err *err) {
    memset(out, 0, sizeof *out);
    LPV_TRY(lpv_resolve_model(a->model, a->weights, &out->ref, err));
    lpv_model_opts mo = {a->heads, 0, a->allow_extra};
    double t0 = lpv_now();
    lpv_status ls = lpv_model_load(&out->model, out->ref.path, &mo, err);
    /* a file that does not say its head count gets the preset's (checked against the rest below) */
    if (ls == LPV_E_ARG && !a->heads && out->ref.has_preset) {
        mo.heads = out->ref.preset.heads;
        ls = lpv_model_load(&out->model, out->ref.path, &mo, err);
    }
    if (ls) return ls;
    lpv_model *m = out->model;
    if (out->ref.has_preset) {
        lpv_status st = lpv_preset_check(&out->ref.preset, &m->cfg, out->ref.path, err);
        if (st != LPV_OK) {
            cli_close_model(out);
            return st;
        }
        snprintf(m->arch, sizeof m->arch, "%s", out->ref.preset.timm_name);
    }
    /* preprocessing: pruned-file metadata, then the preset, then DeiT's defaults (with a warning) */
    out->pp = lpv_preproc_default();
    out->pp.img_size = m->cfg.img;
    int guessed = 0;
    if (m->lpvit_meta && pp_from_lpvit_meta(&out->pp, m->lpvit_meta)) {
        snprintf(out->pp_source, sizeof out->pp_source, "recorded in the file");
    } else if (out->ref.has_preset) {
        lpv_preset_preproc(&out->ref.preset, &out->pp);
        snprintf(out->pp_source, sizeof out->pp_source, "preset '%s'", out->ref.preset.key);
    } else if (pp_from_config_beside(&out->pp, out->ref.path, out->pp_source, sizeof out->pp_source)) {
        /* a timm hub snapshot's config.json, or a transformers preprocessor_config.json */
    } else {
        guessed = 1;
        snprintf(out->pp_source, sizeof out->pp_source, "default (DeiT: ImageNet mean/std, crop 0.9)");
    }
    int overridden = 0;
    if (!isnan(a->crop_pct)) out->pp.crop_pct = a->crop_pct, overridden = 1;
    if (a->interp) {
        lpv_status st = lpv_interp_parse(a->interp, &out->pp.interp, err);
        if (st != LPV_OK) {
            cli_close_model(out);
            return st;
        }
        overridden = 1;
    }
    if (a->mean_set) memcpy(out->pp.mean, a->mean, sizeof out->pp.mean), overridden = 1;
    if (a->std_set) memcpy(out->pp.std, a->std, sizeof out->pp.std), overridden = 1;
    if (overridden) {
        size_t n = strlen(out->pp_source);
        snprintf(out->pp_source + n, sizeof out->pp_source - n, " + command-line overrides");
    }
    /* Never guessed: DeiT's mean/std on an augreg ViT costs 36 points of top-1 without a sign in the output. */
    if (guessed && a->needs_pp && !(a->mean_set && a->std_set)) {
        cli_close_model(out);
        return lpv_fail(err, LPV_E_ARG,
                        "preprocessing for '%s' is not known (no lpvit metadata, not a preset's file name): give "
                        "--mean and --std (augreg ViT: 0.5 0.5 0.5 and 0.5 0.5 0.5; DeiT: 0.485 0.456 0.406 and "
                        "0.229 0.224 0.225), or --model PRESET --weights FILE",
                        out->ref.path);
    }
    lpv_status st = lpv_preproc_check(&out->pp, err);
    if (st != LPV_OK) {
        cli_close_model(out);
        return st;
    }
    const lpv_config *c = &m->cfg;
    lpv_info("model '%s' from '%s': %s names, %s, width %d, depth %d, %d heads, %.2fM params (%.2fs)", m->arch,
             out->ref.path, lpv_names_str(c->names), m->src_dtype, c->dim, c->depth, c->heads,
             (double)lpv_model_params(m) / 1e6, lpv_now() - t0);
    return LPV_OK; /* a command that reads no images (bench, infer --input) never uses a guessed pp */
}

void cli_close_model(cli_model *cm) {
    lpv_model_free(cm->model);
    cm->model = NULL;
}

lpv_status cli_parse_block(const char *s, int *R, int *C, lpv_err *err) {
    char *end;
    long r = strtol(s, &end, 10), c = r;
    if (end != s && (*end == 'x' || *end == 'X')) {
        const char *q = end + 1;
        c = strtol(q, &end, 10);
        if (end == q) c = -1;
    }
    int ok = end != s && *end == 0;
    long sides[2] = {r, c};
    for (int i = 0; i < 2 && ok; i++)
        ok = sides[i] == 8 || sides[i] == 16 || sides[i] == 32 || sides[i] == 64;
    if (!ok)
        return lpv_fail(err, LPV_E_ARG, "--block: expected RxC with R, C in {8, 16, 32, 64} (e.g. 32x32), got '%s'", s);
    *R = (int)r;
    *C = (int)c;
    return LPV_OK;
}

/* ---------------------------------------------------------------------------
 * Output: the library's log lines and progress, rendered on stderr
 * ------------------------------------------------------------------------- */

static struct {
    int quiet, tty, bar_shown;
    int rank;        /* > 0: an MPI rank other than 0, whose info and progress rank 0 already shows */
    FILE *real_err;  /* rank > 0: the terminal's stderr (fd 2 then captures what commands print) */
    double last_draw;
    char label[96];  /* the progress the quarter lines belong to */
    int last_quarter;
} g_out;

void cli_warn_blas_core(const char *what) {
    const char *want = lpv_blas_core_wanted(lpv_isa_best(), lpv_cpu()->avx512_bf16, lpv_blas_corename());
    if (want && strcmp(lpv_blas_core_source(), "env") == 0)
        lpv_warn("OPENBLAS_CORETYPE=%s keeps OpenBLAS on its non-AVX-512 kernels on this AVX-512 cpu: %s runs its "
                 "OpenBLAS products at about half speed (unset it, or set OPENBLAS_CORETYPE=%s)",
                 getenv("OPENBLAS_CORETYPE"), what, want);
}

static void clear_bar(void) {
    if (g_out.bar_shown) fputs("\r\033[K", stderr);
    g_out.bar_shown = 0;
}

static void render_log(lpv_log_level level, const char *msg, void *user) {
    (void)user;
    if (g_out.quiet || level == LPV_LOG_DEBUG) return;
    if (g_out.rank > 0) { /* rank 0 tells how the job goes; another rank only what is its own */
        if (level == LPV_LOG_WARN) fprintf(g_out.real_err, "lpvit: rank %d: warning: %s\n", g_out.rank, msg);
        return;
    }
    clear_bar();
    fprintf(stderr, "lpvit: %s%s\n", level == LPV_LOG_WARN ? "warning: " : "", msg);
}

/* "42s", "6 min", "1 h 05 min" */
static void fmt_eta(char *buf, size_t cap, double s) {
    if (s < 0) snprintf(buf, cap, "?");
    else if (s < 90) snprintf(buf, cap, "%.0fs", s);
    else if (s < 5400) snprintf(buf, cap, "%.0f min", s / 60);
    else snprintf(buf, cap, "%d h %02d min", (int)(s / 3600), (int)(s / 60) % 60);
}

static void render_progress(const lpv_progress_event *ev, void *user) {
    (void)user;
    if (g_out.quiet || ev->total <= 0 || g_out.rank > 0) return;
    if (ev->finished) {
        clear_bar();
        fprintf(stderr, "lpvit: %s done: %ld in %.1fs\n", ev->label, ev->done, ev->elapsed_s);
        return;
    }
    char eta[32], label[128];
    fmt_eta(eta, sizeof eta, ev->eta_s);
    /* under mpirun rank 0 counts its own share of the images: say so */
    if (lpv_dist_size() > 1) snprintf(label, sizeof label, "%s (rank 0 of %d)", ev->label, lpv_dist_size());
    else snprintf(label, sizeof label, "%s", ev->label);
    double rate = ev->elapsed_s > 0 ? (double)ev->done / ev->elapsed_s : 0;
    if (g_out.tty) {
        double now = lpv_now();
        if (now - g_out.last_draw < 0.1 && ev->done < ev->total) return;
        g_out.last_draw = now;
        int w = 30, fill = (int)((double)w * (double)ev->done / (double)ev->total);
        fprintf(stderr, "\r%s [", label);
        for (int i = 0; i < w; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
        fprintf(stderr, "] %ld/%ld %.1f/s eta %s %s\033[K", ev->done, ev->total, rate, eta, ev->detail ? ev->detail : "");
        fflush(stderr);
        g_out.bar_shown = 1;
        return;
    }
    /* a log file: a line at each quarter, never a carriage return */
    if (strcmp(g_out.label, ev->label) != 0) {
        snprintf(g_out.label, sizeof g_out.label, "%s", ev->label);
        g_out.last_quarter = 0;
    }
    int quarter = (int)(4 * ev->done / ev->total);
    if (quarter > g_out.last_quarter && ev->done < ev->total) {
        g_out.last_quarter = quarter;
        fprintf(stderr, "lpvit: %s %ld/%ld (%.0fs, eta %s)%s%s\n", label, ev->done, ev->total, ev->elapsed_s, eta,
                ev->detail ? " " : "", ev->detail ? ev->detail : "");
    }
}

void cli_output_init(void) {
    g_out.tty = isatty(2);
    lpv_log_set(render_log, render_progress, NULL);
}

void cli_quiet(int quiet) { g_out.quiet = quiet; }

int cli_codebook_levels(const char *s) {
    if (strncmp(s, "codebook:", 9) != 0) return -1;
    char *end = NULL;
    long k = strtol(s + 9, &end, 10);
    return end != s + 9 && *end == 0 && k >= 1 && k <= 256 ? (int)k : -1;
}

unsigned cli_block_kinds(const char *s) {
    static const struct { const char *name; lpv_layer_kind k; } tab[] = {
        {"qkv", LPV_LK_QKV}, {"proj", LPV_LK_PROJ}, {"fc1", LPV_LK_FC1}, {"fc2", LPV_LK_FC2}};
    unsigned out = 0;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, ",");
        int hit = 0;
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if (strlen(tab[i].name) == n && strncmp(p, tab[i].name, n) == 0) out |= 1u << tab[i].k, hit = 1;
        if (!hit) return 0;
        p += n + (p[n] == ',');
    }
    return out;
}

void cli_dist_begin(void) {
    g_out.rank = lpv_dist_rank();
    if (g_out.rank == 0) return;
    /* rank 0 prints the results and the agreed errors; another rank's stdout goes nowhere and its stderr
       is held until the end, shown only when its failure is its own (see cli_dist_end) */
    int fd = dup(2);
    FILE *hold = tmpfile();
    g_out.real_err = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!g_out.real_err || !hold || !freopen("/dev/null", "w", stdout)) {
        if (hold) fclose(hold);
        g_out.real_err = stderr;
        return;
    }
    fflush(stderr);
    dup2(fileno(hold), 2);
    g_out.tty = 0;
}

int cli_dist_end(int rc) {
    /* a usage error (2) comes from the command line, the same on every rank, before any collective: every
       rank stops the same way and rank 0 says why */
    int agreed = rc == 0 || rc == 2 || lpv_dist_agreed();
    if (g_out.rank > 0 && g_out.real_err && g_out.real_err != stderr) {
        fflush(stderr);
        if (!agreed) { /* its own failure: nobody else has said it */
            char line[2048];
            FILE *held = fdopen(dup(2), "r");
            if (held) {
                rewind(held);
                while (fgets(line, sizeof line, held))
                    fprintf(g_out.real_err, "lpvit: rank %d: %s", g_out.rank,
                            strncmp(line, "lpvit: ", 7) == 0 ? line + 7 : line);
                fclose(held);
            }
        }
        fflush(g_out.real_err);
    }
    if (!agreed && lpv_dist_size() > 1) lpv_dist_abort(rc); /* the others may be waiting for this rank */
    lpv_dist_finalize();
    return rc;
}

lpv_status cli_json_out(const cJSON *root, const char *path, lpv_err *err) {
    if (lpv_dist_rank() > 0) return LPV_OK; /* rank 0 writes the job's report */
    if (strcmp(path, "-") != 0) return lpv_json_write(root, path, err);
    char *txt;
    LPV_TRY(lpv_json_print(root, "stdout", &txt, err));
    fputs(txt, stdout);
    fflush(stdout);
    free(txt);
    return LPV_OK;
}

lpv_status cli_open_labelled(const char *dir, const char *labels, const char *synsets, int limit, int classes,
                             lpv_dataset *ds, lpv_err *err) {
    lpv_synsets syn;
    const char *sp = synsets ? synsets : lpv_synsets_default_path();
    int need_syn = !labels || synsets;
    if (need_syn) LPV_TRY(lpv_synsets_load(&syn, sp, err));
    lpv_status st = labels ? lpv_dataset_flat(ds, dir, labels, need_syn ? &syn : NULL, err)
                           : lpv_dataset_imagefolder(ds, dir, &syn, err);
    if (need_syn) lpv_synsets_free(&syn);
    if (st) return st;
    if (limit > 0) lpv_dataset_limit(ds, limit);
    st = lpv_dataset_check_labels(ds, classes, labels ? labels : sp, err);
    if (st) lpv_dataset_free(ds);
    return st;
}
