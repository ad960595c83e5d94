/*
 * bench_attention.c — FP32 against BF16 attention in one process (not a ctest test; built as
 * build/tests/bench_attention).
 *
 *   op       lpv_attention_fm and lpv_attention_fm_bf16 on the same random q, k, v (N(0, 1.5²)),
 *            the model's T, dim and heads at each batch; interleaved samples (fp32, bf16, fp32, ...),
 *            each running the op `inner` times (a sample ~20 ms).
 *   forward  (--forward) the whole BF16 forward pass of a random-weight preset (linears packed 32x32
 *            and in BF16, as lpvit bench --precision bf16 runs them) with ws.attn_fp32 = 1 and 0,
 *            interleaved the same way.
 *   sweep    (--sweep) the op alone at batch 1 over T = 1 .. 394 and hd 32 / 64 (4 heads): where BF16 pays.
 *   --int8   the op (and the sweep) FP32 against lpv_attention_fm_q8 instead of BF16 (the int8 precision's
 *            attention: AVX-512 VNNI, or AVX-VNNI under --isa avxvnni); not with --forward.
 * Reports ms per image (median, and min-max over the samples) and the BF16 speedup as the median of the
 * per-sample ratios fp32 / bf16 (min-max), with the load average before and after: on a shared machine
 * only ratios from one run mean much.
 *
 *     bench_attention [--model vit_t,deit_s,deit_b] [--batch 1,8] [--threads 2] [--reps 11] [--forward] [--sweep]
 *                     [--cpu-time] [--int8] [--isa avx512|avxvnni|...]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/ops.h"
#include "lpvit/registry.h"
#include "lpvit/rng.h"

#define MAXL 16

/* --cpu-time: the process's CPU seconds instead of wall seconds. With --threads 1 that is the one thread's
 * compute time, which a busy neighbour on the other core barely moves. */
static int use_cpu_time;
/* --int8: the second variant is the int8 attention, not the BF16 one. */
static int use_int8;

static double now(void) {
    if (!use_cpu_time) return lpv_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double vmin(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

static double vmax(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

static void loadavg(char *buf, size_t cap) {
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = 0;
    if (f && fgets(buf, (int)cap, f)) buf[strcspn(buf, "\n")] = 0;
    if (f) fclose(f);
}

/* Per-image ms of both variants (a: fp32, b: bf16 or int8) and the per-sample ratios a / b. */
typedef struct {
    double a[64], b[64], r[64];
    int n;
} samples;

static void report(const char *name, int batch, samples *s) {
    double ra[64], rb[64];
    memcpy(ra, s->a, sizeof ra), memcpy(rb, s->b, sizeof rb);
    printf("| %s | %d | %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) | %.2fx (%.2f-%.2f) |\n", name, batch, median(ra, s->n),
           vmin(s->a, s->n), vmax(s->a, s->n), median(rb, s->n), vmin(s->b, s->n), vmax(s->b, s->n),
           median(s->r, s->n), vmin(s->r, s->n), vmax(s->r, s->n));
    fflush(stdout);
}

/* The attention op alone, B images of T tokens, D = heads * hd; times reported x depth (a model's layers). */
static void bench_op(const char *name, int B, int T, int D, int heads, int depth, int reps) {
    int ld = (B * T + 15) & ~15;
    int64_t n = (int64_t)D * ld;
    float *qkv = bench_alloc(sizeof(float) * 3 * (size_t)n), *out = bench_alloc(sizeof(float) * (size_t)n);
    float *scratch = bench_alloc(sizeof(float) * (size_t)lpv_attention_scratch(T, D / heads) * lpv_threads_get());
    lpv_rng r;
    lpv_rng_seed(&r, 1);
    for (int64_t i = 0; i < 3 * n; i++) qkv[i] = 1.5f * (float)lpv_rng_normal(&r);
    double t0 = now();
    lpv_attention_fm(out, qkv, ld, B, T, D, heads, scratch);
    double one = now() - t0;
    int inner = one > 20e-3 ? 1 : (int)(20e-3 / (one > 1e-6 ? one : 1e-6)) + 1;
    samples s = {.n = reps};
    for (int i = -2; i < reps; i++)
        for (int k = 0; k < 2; k++) {
            t0 = now();
            for (int j = 0; j < inner; j++)
                (!k ? lpv_attention_fm : use_int8 ? lpv_attention_fm_q8 : lpv_attention_fm_bf16)(out, qkv, ld, B, T, D,
                                                                                                 heads, scratch);
            double ms = 1e3 * (now() - t0) / inner / B * depth;
            if (i >= 0) (k ? s.b : s.a)[i] = ms;
        }
    for (int i = 0; i < reps; i++) s.r[i] = s.a[i] / s.b[i];
    report(name, B, &s);
    free(qkv), free(out), free(scratch);
}

/* The BF16 forward pass of a random-weight preset, attention FP32 against BF16. */
static int bench_forward(const char *name, int B, int reps) {
    lpv_preset p;
    lpv_config c;
    lpv_err err;
    lpv_model *m = NULL;
    if (lpv_registry_find(name, &p, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    lpv_preset_config(&p, &c);
    if (lpv_model_random(&m, &c, 0, &err) || lpv_model_pack_dense(m, 32, 32, &err) ||
        lpv_model_pack_bf16(m, 32, 32, &err))
        return fprintf(stderr, "%s\n", err.msg), lpv_model_free(m), 1;
    int64_t per = (int64_t)c.chans * c.img * c.img;
    float *x = malloc(sizeof(float) * (size_t)(per * B)), *logits = malloc(sizeof(float) * (size_t)B * c.classes);
    lpv_rng r;
    lpv_rng_seed(&r, 2);
    for (int64_t i = 0; i < per * B; i++) x[i] = (float)lpv_rng_normal(&r);
    lpv_workspace ws;
    if (lpv_workspace_init(&ws, &c, B, &err) || lpv_workspace_use_bf16(&ws, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    samples s = {.n = reps};
    for (int i = -1; i < reps; i++)
        for (int k = 0; k < 2; k++) {
            ws.attn_fp32 = !k;
            double t0 = now();
            if (lpv_forward(m, &ws, x, B, logits, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
            double ms = 1e3 * (now() - t0) / B;
            if (i >= 0) (k ? s.b : s.a)[i] = ms;
        }
    for (int i = 0; i < reps; i++) s.r[i] = s.a[i] / s.b[i];
    char label[64];
    snprintf(label, sizeof label, "%s forward", name);
    report(label, B, &s);
    lpv_workspace_free(&ws);
    lpv_model_free(m);
    free(x), free(logits);
    return 0;
}

int main(int argc, char **argv) {
    lpv_blas_reexec(argc, argv);
    char models_arg[256] = "vit_t,deit_s,deit_b";
    int batches[MAXL] = {1, 8}, nb = 2, threads = 2, reps = 11, forward = 0, sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) snprintf(models_arg, sizeof models_arg, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) nb = bench_list_i(argv[++i], batches, MAXL);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--forward")) forward = 1;
        else if (!strcmp(argv[i], "--sweep")) sweep = 1;
        else if (!strcmp(argv[i], "--cpu-time")) use_cpu_time = 1;
        else if (!strcmp(argv[i], "--int8")) use_int8 = 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            lpv_isa isa;
            lpv_err err;
            if (lpv_isa_parse(argv[++i], &isa, &err) || lpv_isa_set(isa, &err)) return fprintf(stderr, "%s\n", err.msg), 2;
        } else {
            fprintf(stderr, "usage: bench_attention [--model vit_t,deit_s,deit_b] [--batch 1,8] [--threads 2] "
                            "[--reps 11] [--forward] [--sweep] [--cpu-time] [--int8] [--isa NAME]\n");
            return 2;
        }
    }
    if (use_int8 && forward) return fprintf(stderr, "bench_attention: --int8 times the op only, not --forward\n"), 2;
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    lpv_threads_set(threads);
    if (use_int8 && !lpv_attention_q8_runs(64)) {
        printf("no int8 attention at isa %s (it needs AVX-512 VNNI or AVX-VNNI): it is the FP32 one here\n",
               lpv_isa_name(lpv_isa_get()));
        return 0;
    }
    if (!use_int8 && lpv_isa_get() < LPV_ISA_AVX512BF16) {
        printf("no avx512_bf16 at isa %s: BF16 attention is the FP32 one here\n", lpv_isa_name(lpv_isa_get()));
        return 0;
    }
    char load[128];
    loadavg(load, sizeof load);
    printf("cpu %s, %d threads, %d samples, %s time; loadavg before: %s\n\n", lpv_cpu()->brand, threads, reps,
           use_cpu_time ? "cpu" : "wall", load);
    const char *lowp = use_int8 ? "int8" : "BF16";
    printf("| what | batch | FP32 attention ms/img | %s attention ms/img | %s speedup |\n|---|---|---|---|---|\n", lowp, lowp);
    char *save = NULL;
    for (char *name = strtok_r(models_arg, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        lpv_preset p;
        lpv_err err;
        if (lpv_registry_find(name, &p, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        int T = (p.img / p.patch) * (p.img / p.patch) + 1 + (p.distilled ? 1 : 0);
        for (int b = 0; b < nb; b++) {
            char label[64];
            snprintf(label, sizeof label, "%s op x %d layers (T %d, hd %d, %d heads)", name, p.depth, T,
                     p.dim / p.heads, p.heads);
            bench_op(label, batches[b], T, p.dim, p.heads, p.depth, reps);
            if (forward && bench_forward(name, batches[b], reps)) return 1;
        }
    }
    int Ts[] = {1, 9, 17, 33, 50, 100, 197, 394}, hds[] = {32, 64};
    for (int h = 0; sweep && h < 2; h++)
        for (int t = 0; t < 8; t++) {
            char label[64];
            snprintf(label, sizeof label, "op T %d, hd %d, 4 heads, 1 layer", Ts[t], hds[h]);
            bench_op(label, 1, Ts[t], 4 * hds[h], 4, 1, reps);
        }
    loadavg(load, sizeof load);
    printf("\nloadavg after: %s\n", load);
    return 0;
}
