/* cost.c — FLOPs, measured time tables and the energy proxy (see include/lpvit/cost.h). */
#include "lpvit/cost.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bench.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/fileio.h"
#include "lpvit/log.h"
#include "lpvit/report.h"
#include "lpvit/rng.h"

LPV_ENUM_FUNCS(lpv_objective, lpv_objective_name, lpv_objective_parse, LPV_OBJECTIVE_LIST, LPV_OBJ_COUNT, "objective")
LPV_ENUM_FUNCS(lpv_precision, lpv_precision_name, lpv_precision_parse, LPV_PRECISION_LIST, LPV_PREC_COUNT, "precision")

lpv_energy lpv_energy_default(void) {
    lpv_energy e = {4.6, 160.0, 1.25};
    return e;
}

double lpv_layer_energy_pj(const lpv_energy *e, int out, int in, int tokens, int R, int C, double d) {
    double w = (double)out * in * d;
    double nbr = ceil((double)out / R), blocks = w / ((double)R * C);
    double weight_bytes = 4.0 * w + 4.0 * blocks + 4.0 * (nbr + 1);
    double act_bytes = 4.0 * (double)tokens * (in + out);
    return e->mac_pj * (double)tokens * w + e->dram_byte_pj * weight_bytes + e->cache_byte_pj * act_bytes;
}

/* ---- measured time ---- */

/* Gives the BSR weights the form `prec` runs (bf16: a BF16 pack; int8: int8 weights), in their own arena. */
static lpv_status lowp_weights(lpv_bsr *b, lpv_precision prec, lpv_err *err) {
    if (prec == LPV_PREC_BF16) return lpv_bsr_pack_bf16(b, NULL, err);
    if (prec == LPV_PREC_INT8) return lpv_bsr_set_int8(b, NULL, NULL, NULL, "calibration", err);
    return LPV_OK;
}

static lpv_status time_shape(lpv_time_curve *c, const lpv_layer_shape *s, int R, int C, const double *dens, int nd,
                             int batch, int reps, unsigned long long seed, lpv_precision prec, lpv_err *err) {
    memset(c, 0, sizeof *c);
    c->out = s->out, c->in = s->in, c->tokens = s->tokens * batch, c->R = R, c->C = C, c->n = nd;
    int64_t nw = (int64_t)s->out * s->in;
    lpv_linear dense = {.out = s->out, .in = s->in, .w = malloc(sizeof(float) * (size_t)nw),
                        .b = malloc(sizeof(float) * (size_t)s->out)};
    if (!dense.w || !dense.b) {
        free(dense.w), free(dense.b);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    for (int64_t i = 0; i < nw; i++) dense.w[i] = (float)lpv_rng_normal(&r) * 0.02f;
    for (int i = 0; i < s->out; i++) dense.b[i] = 0.01f;
    int nbr = lpv_ceil_div(s->out, R), nbc = lpv_ceil_div(s->in, C), nb = nbr * nbc;
    int *idx = malloc(sizeof(int) * (size_t)nb);
    uint8_t *mask = malloc((size_t)nb);
    lpv_status st = (!idx || !mask) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    int lowp = prec == LPV_PREC_BF16 ? LPV_BENCH_BF16 : prec == LPV_PREC_INT8 ? LPV_BENCH_INT8 : LPV_BENCH_FP32;
    for (int k = 0; k < nd && st == LPV_OK; k++) {
        c->density[k] = dens[k];
        int keep = (int)lround(dens[k] * nb);
        if (keep < 1) keep = 1;
        for (int q = 0; q < nb; q++) idx[q] = q;
        lpv_rng_shuffle(&r, idx, nb);
        memset(mask, 0, (size_t)nb);
        for (int q = 0; q < keep; q++) mask[idx[q]] = 1;
        lpv_bsr b;
        if ((st = lpv_bsr_from_dense(&b, dense.w, s->out, s->in, R, C, mask, NULL, "calibration", err)) != LPV_OK) break;
        if ((st = lowp_weights(&b, prec, err)) != LPV_OK) {
            lpv_bsr_free(&b);
            break;
        }
        lpv_linear sp = {.out = s->out, .in = s->in, .b = dense.b, .bsr = &b,
                         .qx = {1, 0, 0}}; /* int8: inputs per token, as lpvit runs */
        lpv_timing td, ts;
        /* FP32's dense time is OpenBLAS's; BF16 and int8 run a dense layer as that kernel with every block
           (lpv_model_pack_bf16 / _quantize_int8 on a blocked copy), which is their d = 1 point */
        const lpv_linear *d1 = k == nd - 1 && prec == LPV_PREC_FP32 ? &dense : NULL;
        st = lpv_bench_linear_pair(d1, &sp, c->tokens, LPV_EPI_BIAS, lowp, 2, reps, seed + (unsigned)k, &td, &ts, err);
        if (st == LPV_OK) {
            c->ms[k] = ts.median_ms;
            if (k == nd - 1) c->dense_ms = d1 ? td.median_ms : ts.median_ms;
        }
        lpv_bsr_free(&b);
    }
    free(idx), free(mask), free(dense.w), free(dense.b);
    return st;
}

lpv_status lpv_time_table_measure(lpv_time_table *t, const lpv_layer_shape *shapes, int n, int R, int C,
                                  const double *densities, int nd, int batch, int reps, unsigned long long seed,
                                  lpv_precision prec, lpv_err *err) {
    memset(t, 0, sizeof *t);
    if (nd < 1 || nd > LPV_TT_MAX || densities[nd - 1] != 1.0)
        return lpv_fail(err, LPV_E_ARG, "time table: 1..%d densities ending at 1.0", LPV_TT_MAX);
    if ((unsigned)prec >= LPV_PREC_COUNT)
        return lpv_fail(err, LPV_E_ARG, "time table: precision out of range (%d)", (int)prec);
    /* BF16 elsewhere silently runs the reference kernel: its times would mislead the allocator */
    lpv_isa isa = lpv_isa_get();
    if (prec == LPV_PREC_BF16 && isa != LPV_ISA_REF && isa < LPV_ISA_AVX512BF16)
        return lpv_fail(err, LPV_E_UNSUPPORTED, "time table: bf16 times need isa avx512bf16, and this run has '%s' "
                        "(cpu best: '%s')", lpv_isa_name(isa), lpv_isa_name(lpv_isa_best()));
    t->curves = calloc((size_t)n + 1, sizeof *t->curves);
    if (!t->curves) return lpv_fail(err, LPV_E_OOM, "out of memory");
    snprintf(t->cpu, sizeof t->cpu, "%s", lpv_cpu()->brand);
    snprintf(t->isa, sizeof t->isa, "%s", lpv_isa_name(lpv_isa_get()));
    snprintf(t->blas_core, sizeof t->blas_core, "%s", lpv_blas_corename());
    snprintf(t->commit, sizeof t->commit, "%s", lpv_commit());
    t->precision = prec;
    t->threads = lpv_threads_get(), t->batch = batch, t->reps = reps;
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int j = 0; j < t->n; j++)
            dup |= t->curves[j].out == shapes[i].out && t->curves[j].in == shapes[i].in &&
                   t->curves[j].tokens == shapes[i].tokens * batch;
        if (dup) continue;
        lpv_info("timing %dx%d over %d tokens at %d densities (%dx%d blocks, %s)", shapes[i].out, shapes[i].in,
                 shapes[i].tokens * batch, nd, R, C, lpv_precision_name(prec));
        LPV_TRY(time_shape(&t->curves[t->n], &shapes[i], R, C, densities, nd, batch, reps, seed + (unsigned)i, prec,
                           err));
        t->n++;
    }
    return LPV_OK;
}

lpv_status lpv_time_table_save(const lpv_time_table *t, const char *path, lpv_err *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "lpvit-time-table-v1");
    cJSON_AddStringToObject(root, "cpu", t->cpu);
    cJSON_AddStringToObject(root, "isa", t->isa);
    cJSON_AddStringToObject(root, "openblas_core", t->blas_core);
    cJSON_AddStringToObject(root, "commit", t->commit);
    cJSON_AddStringToObject(root, "precision", lpv_precision_name(t->precision));
    cJSON_AddNumberToObject(root, "threads", t->threads);
    cJSON_AddNumberToObject(root, "batch", t->batch);
    cJSON_AddNumberToObject(root, "reps", t->reps);
    cJSON *arr = cJSON_AddArrayToObject(root, "layers");
    for (int i = 0; i < t->n; i++) {
        const lpv_time_curve *c = &t->curves[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "out", c->out);
        cJSON_AddNumberToObject(o, "in", c->in);
        cJSON_AddNumberToObject(o, "tokens", c->tokens);
        char blk[16];
        snprintf(blk, sizeof blk, "%dx%d", c->R, c->C);
        cJSON_AddStringToObject(o, "block", blk);
        cJSON_AddItemToObject(o, "density", cJSON_CreateDoubleArray(c->density, c->n));
        cJSON_AddItemToObject(o, "ms", cJSON_CreateDoubleArray(c->ms, c->n));
        cJSON_AddNumberToObject(o, "dense_ms", c->dense_ms);
        cJSON_AddItemToArray(arr, o);
    }
    lpv_status st = lpv_json_write(root, path, err);
    cJSON_Delete(root);
    return st;
}

static int read_num(const cJSON *o, const char *k, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) return 0;
    *out = v->valuedouble;
    return 1;
}

lpv_status lpv_time_table_load(lpv_time_table *t, const char *path, lpv_err *err) {
    memset(t, 0, sizeof *t);
    char *txt;
    size_t n;
    LPV_TRY(lpv_read_file(path, &txt, &n, 16u << 20, err));
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "layers");
    lpv_status st = LPV_OK;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "lpvit-time-table-v1") != 0 || !cJSON_IsArray(arr)) {
        st = lpv_fail(err, LPV_E_FORMAT, "'%s' is not an lpvit time table", path);
        goto out;
    }
    int m = cJSON_GetArraySize(arr);
    t->curves = calloc((size_t)m + 1, sizeof *t->curves);
    if (!t->curves) {
        st = lpv_fail(err, LPV_E_OOM, "out of memory");
        goto out;
    }
    double v;
    if (read_num(root, "threads", 1, 4096, &v)) t->threads = (int)v;
    if (read_num(root, "batch", 1, 1e6, &v)) t->batch = (int)v;
    const cJSON *s;
    if (cJSON_IsString(s = cJSON_GetObjectItemCaseSensitive(root, "cpu"))) snprintf(t->cpu, sizeof t->cpu, "%s", s->valuestring);
    if (cJSON_IsString(s = cJSON_GetObjectItemCaseSensitive(root, "isa"))) snprintf(t->isa, sizeof t->isa, "%s", s->valuestring);
    t->precision = LPV_PREC_FP32; /* tables written before int8 and bf16 have no "precision" */
    if ((s = cJSON_GetObjectItemCaseSensitive(root, "precision")) != NULL) {
        lpv_err e2;
        if (!cJSON_IsString(s) || lpv_precision_parse(s->valuestring, &t->precision, &e2) != LPV_OK) {
            st = lpv_fail(err, LPV_E_FORMAT, "'%s': precision must be \"fp32\", \"bf16\" or \"int8\"", path);
            goto out;
        }
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) {
        lpv_time_curve *c = &t->curves[t->n];
        double out, in, tok, dms;
        const cJSON *blk = cJSON_GetObjectItemCaseSensitive(o, "block");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "density"), *ms = cJSON_GetObjectItemCaseSensitive(o, "ms");
        int R = 0, C = 0;
        int ok = read_num(o, "out", 1, 1e6, &out) && read_num(o, "in", 1, 1e6, &in) &&
                 read_num(o, "tokens", 1, 1e9, &tok) && read_num(o, "dense_ms", 1e-9, 1e9, &dms) &&
                 cJSON_IsString(blk) && sscanf(blk->valuestring, "%dx%d", &R, &C) == 2 && R > 0 && C > 0 &&
                 cJSON_IsArray(d) && cJSON_IsArray(ms) && cJSON_GetArraySize(d) == cJSON_GetArraySize(ms) &&
                 cJSON_GetArraySize(d) >= 1 && cJSON_GetArraySize(d) <= LPV_TT_MAX;
        if (ok) {
            c->out = (int)out, c->in = (int)in, c->tokens = (int)tok, c->R = R, c->C = C, c->dense_ms = dms;
            c->n = cJSON_GetArraySize(d);
            for (int i = 0; i < c->n && ok; i++) {
                const cJSON *x = cJSON_GetArrayItem(d, i), *y = cJSON_GetArrayItem(ms, i);
                ok = cJSON_IsNumber(x) && cJSON_IsNumber(y) && x->valuedouble > 0 && x->valuedouble <= 1 &&
                     (i == 0 || x->valuedouble > c->density[i - 1]) && y->valuedouble > 0 && isfinite(y->valuedouble);
                if (ok) c->density[i] = x->valuedouble, c->ms[i] = y->valuedouble;
            }
            ok = ok && c->density[c->n - 1] == 1.0;
        }
        if (!ok) {
            st = lpv_fail(err, LPV_E_FORMAT, "'%s': layer entry %d is malformed (shape, block, ascending densities "
                          "ending at 1, positive times)", path, t->n);
            break;
        }
        t->n++;
    }
out:
    cJSON_Delete(root);
    if (st) lpv_time_table_free(t);
    return st;
}

void lpv_time_table_free(lpv_time_table *t) {
    free(t->curves);
    t->curves = NULL;
    t->n = 0;
}

const lpv_time_curve *lpv_time_table_find(const lpv_time_table *t, int out, int in, int tokens, int R, int C) {
    for (int i = 0; i < t->n; i++) {
        const lpv_time_curve *c = &t->curves[i];
        if (c->out == out && c->in == in && c->tokens == tokens && c->R == R && c->C == C) return c;
    }
    return NULL;
}

double lpv_time_curve_at(const lpv_time_curve *c, double d) {
    if (d <= 0) return 0;
    /* monotone envelope: the time at density x is the largest measured time at or below x */
    double prev_d = 0, prev_t = 0, run = 0;
    for (int i = 0; i < c->n; i++) {
        double ti = c->ms[i] > run ? c->ms[i] : run;
        if (d <= c->density[i]) return prev_t + (ti - prev_t) * (d - prev_d) / (c->density[i] - prev_d);
        prev_d = c->density[i], prev_t = ti, run = ti;
    }
    return prev_t;
}
