/*
 * bench.c — interleaved dense/sparse timing (see include/lpvit/bench.h).
 *
 * Interleaving matters on a shared 2-core machine: load that comes and goes
 * hits both variants alike, so their ratio stays meaningful even when the
 * absolute times wander. Medians, not means, for the same reason.
 */
#include "lpvit/bench.h"

#define LPV_MAX_THREADS_PROBE 1024

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "engine/kernels/bsr_internal.h"
#include "lpvit/cpu.h"
#include "lpvit/report.h"
#include "lpvit/rng.h"

lpv_timing lpv_timing_of(double *sec, int n) {
    lpv_timing t = {NAN, NAN, NAN, n, NAN, NAN};
    if (n <= 0) return t;
    t.median_ms = 1e3 * lpv_median(sec, n); /* sorts */
    t.min_ms = 1e3 * sec[0];
    t.max_ms = 1e3 * sec[n - 1];
    return t;
}

static void fill_normal(float *x, int64_t n, uint64_t seed) {
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(&r);
}

static void peak_trial(lpv_isa isa, int threads, int64_t steps, double *rate);

static lpv_isa g_probe_isa = LPV_ISA_REF;
static int g_probe_threads = 1;

void lpv_bench_set_clock_probe(lpv_isa isa, int threads) {
    g_probe_isa = !lpv_isa_supported(isa) ? LPV_ISA_REF : isa;
    g_probe_threads = threads < 1 ? 1 : threads;
}

/* One probe (GFLOP/s of the whole team), or NAN when the probe is off. ~1 ms: 400k steps of 12 FMAs. */
static double clock_probe(void) {
    if (g_probe_isa == LPV_ISA_REF) return NAN;
    double rate[LPV_MAX_THREADS_PROBE], sum = 0;
    int nt = g_probe_threads < LPV_MAX_THREADS_PROBE ? g_probe_threads : LPV_MAX_THREADS_PROBE;
    peak_trial(g_probe_isa, nt, 400000, rate);
    for (int i = 0; i < nt; i++) sum += rate[i];
    return sum;
}

/* The median of n probes (sorted in place), NAN when there are none. */
static double probe_median(double *p, int n) {
    if (n <= 0 || isnan(p[0])) return NAN;
    return lpv_median(p, n);
}

static void *aligned_buf(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, bytes ? bytes : 64) == 0 ? p : NULL;
}

lpv_status lpv_bench_linear_pair(const lpv_linear *a, const lpv_linear *b, int T, int epi, int lowp, int warmup,
                                 int reps, uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_err *err) {
    const lpv_linear *ref = a ? a : b;
    if (!ref || reps < 1 || T < 1) return lpv_fail(err, LPV_E_ARG, "bench: nothing to time");
    int ld = lpv_round16(T);
    /* 64-byte aligned like the workspace's arena, the low-precision inputs too: a malloc'd X (16 mod 64) splits every
     * vector load in two (the int8 products ran 10-20 % slower on a malloc'd X4) */
    float *X = aligned_buf(sizeof(float) * (size_t)ref->in * ld), *Y = aligned_buf(sizeof(float) * (size_t)ref->out * ld);
    double *sa = malloc(sizeof(double) * (size_t)reps), *sb = malloc(sizeof(double) * (size_t)reps);
    double *pk = malloc(sizeof(double) * (size_t)reps);
    double *qa = malloc(sizeof(double) * (size_t)reps), *qb = malloc(sizeof(double) * (size_t)reps);
    int prec = lowp & ~(LPV_BENCH_Q8_RANGE_IN | LPV_BENCH_Q8_RANGE_OUT), qn[2] = {0, 0};
    int bf16 = prec == LPV_BENCH_BF16, q8 = prec == LPV_BENCH_INT8;
    int rin = q8 && (lowp & LPV_BENCH_Q8_RANGE_IN), rout = q8 && (lowp & LPV_BENCH_Q8_RANGE_OUT);
    uint32_t *X2 = bf16 ? aligned_buf(sizeof(uint32_t) * (size_t)((ref->in + 1) / 2) * ld) : NULL;
    uint32_t *X4 = q8 ? aligned_buf(sizeof(uint32_t) * (size_t)((ref->in + 3) / 4) * ld) : NULL;
    float *xa = q8 ? aligned_buf(sizeof(float) * (size_t)ld) : NULL, *xc = q8 ? aligned_buf(sizeof(float) * (size_t)ld) : NULL;
    /* rin: X's per-token range (lo | hi), as the producer would have recorded it; rout: the product's scratch */
    float *rng_in = rin ? aligned_buf(sizeof(float) * 2 * (size_t)ld) : NULL;
    float *rng_out = rout ? aligned_buf(sizeof(float) * 2 * (size_t)ld * (size_t)lpv_threads_get()) : NULL;
    if (!X || !Y || !sa || !sb || !pk || !qa || !qb || (bf16 && !X2) || (q8 && (!X4 || !xa || !xc)) || (rin && !rng_in) ||
        (rout && !rng_out)) {
        free(X), free(Y), free(sa), free(sb), free(pk), free(qa), free(qb), free(X2), free(X4), free(xa), free(xc);
        free(rng_in), free(rng_out);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    fill_normal(X, (int64_t)ref->in * ld, seed);
    if (rin) lpv_q8_column_range(rng_in, rng_in + ld, X, ld, ref->in, T);
    memset(Y, 0, sizeof(float) * (size_t)ref->out * ld);
    for (int r = -warmup; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            const lpv_linear *L = k ? b : a;
            if (!L) continue;
            double t0 = lpv_now(), tq = NAN;
            if (q8 && lpv_linear_has_int8(L)) { /* the forward pass's run_linear, its two steps timed apart */
                if (rin && L->qx.per_token) lpv_q8_quantize_x_range(X4, xa, xc, X, ld, L->in, T, rng_in, rng_in + ld);
                else lpv_q8_quantize_x(X4, xa, xc, X, ld, L->in, T, &L->qx);
                tq = lpv_now();
                const lpv_bsr *W = lpv_linear_int8_weights(L);
                if (rout && (epi & LPV_EPI_GELU)) lpv_bsr_matmul_q8_range(W, L->b, X4, xa, xc, ld, Y, ld, T, epi, rng_out);
                else lpv_bsr_matmul_q8(W, L->b, X4, xa, xc, ld, Y, ld, T, epi);
            } else lpv_linear_forward_pick(L, X, X2, ld, Y, ld, T, epi);
            double t1 = lpv_now();
            if (r >= 0) (k ? sb : sa)[r] = t1 - t0;
            if (r >= 0 && !isnan(tq)) (k ? qb : qa)[qn[k]++] = t1 - tq;
        }
        if (r >= 0) pk[r] = clock_probe();
    }
    double peak = probe_median(pk, reps);
    if (a) *ta = lpv_timing_of(sa, reps), ta->peak_gflops = peak, ta->product_ms = qn[0] ? 1e3 * lpv_median(qa, qn[0]) : NAN;
    if (b) *tb = lpv_timing_of(sb, reps), tb->peak_gflops = peak, tb->product_ms = qn[1] ? 1e3 * lpv_median(qb, qn[1]) : NAN;
    free(X), free(Y), free(sa), free(sb), free(pk), free(qa), free(qb), free(X2), free(X4), free(xa), free(xc);
    free(rng_in), free(rng_out);
    return LPV_OK;
}

lpv_status lpv_model_pack_for(lpv_model *m, int lowp, lpv_err *err) {
    if (lpv_dense_kernel_get() == LPV_DENSE_BLOCKED) LPV_TRY(lpv_model_pack_dense(m, 32, 32, err));
    if (lowp == LPV_BENCH_INT8) return lpv_model_quantize_int8(m, 32, 32, err);
    return lowp == LPV_BENCH_BF16 ? lpv_model_pack_bf16(m, 32, 32, err) : LPV_OK;
}

/* A workspace for B images at one precision (LPV_BENCH_*). */
static lpv_status bench_ws(lpv_workspace *ws, const lpv_config *c, int B, int lowp, lpv_err *err) {
    LPV_TRY(lpv_workspace_init(ws, c, B, err));
    lpv_status st = lowp == LPV_BENCH_BF16 ? lpv_workspace_use_bf16(ws, err)
                    : lowp == LPV_BENCH_INT8 ? lpv_workspace_use_int8(ws, err) : LPV_OK;
    if (st) lpv_workspace_free(ws);
    return st;
}

/* a and b alternate on the same images, each in its own workspace and precision. */
static lpv_status time_pair(const lpv_model *a, int lowa, const lpv_model *b, int lowb, int B, int warmup, int reps,
                            uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_profile *pa, lpv_profile *pb,
                            lpv_err *err) {
    const lpv_model *ref = a ? a : b;
    if (!ref || reps < 1) return lpv_fail(err, LPV_E_ARG, "bench: nothing to time");
    const lpv_config *c = &ref->cfg;
    int64_t per = (int64_t)c->chans * c->img * c->img;
    float *x = malloc(sizeof(float) * (size_t)(per * B)), *logits = malloc(sizeof(float) * (size_t)B * c->classes);
    double *sa = malloc(sizeof(double) * (size_t)reps), *sb = malloc(sizeof(double) * (size_t)reps);
    double *pk = malloc(sizeof(double) * (size_t)reps);
    lpv_workspace ws[2];
    int nws = 0;
    lpv_status st = (!x || !logits || !sa || !sb || !pk) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    for (int k = 0; k < 2 && st == LPV_OK; k++)
        if ((st = bench_ws(&ws[k], c, B, k ? lowb : lowa, err)) == LPV_OK) {
            const lpv_model *mk = k ? b : a;
            ws[k].attn_int8 = mk && (k ? lowb : lowa) == LPV_BENCH_INT8 && lpv_attention_int8_for(mk, 1); /* int8 runs only */
            ws[k].attn_fp32 = mk && mk->attention == LPV_ATTN_FP32;
            nws++;
        }
    if (st == LPV_OK) fill_normal(x, per * B, seed);
    for (int r = -warmup; r < reps && st == LPV_OK; r++) {
        for (int k = 0; k < 2 && st == LPV_OK; k++) {
            const lpv_model *m = k ? b : a;
            if (!m) continue;
            ws[k].profile = r >= 0 ? (k ? pb : pa) : NULL;
            double t0 = lpv_now();
            st = lpv_forward(m, &ws[k], x, B, logits, err);
            double dt = lpv_now() - t0;
            if (r >= 0) (k ? sb : sa)[r] = dt;
        }
        if (r >= 0) pk[r] = clock_probe();
    }
    if (st == LPV_OK) {
        double peak = probe_median(pk, reps);
        if (a) *ta = lpv_timing_of(sa, reps), ta->peak_gflops = peak;
        if (b) *tb = lpv_timing_of(sb, reps), tb->peak_gflops = peak;
    }
    for (int k = 0; k < nws; k++) lpv_workspace_free(&ws[k]);
    free(x), free(logits), free(sa), free(sb), free(pk);
    return st;
}

lpv_status lpv_bench_forward_pair(const lpv_model *a, const lpv_model *b, int B, int lowp, int warmup, int reps,
                                  uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_profile *pa, lpv_profile *pb,
                                  lpv_err *err) {
    return time_pair(a, lowp, b, lowp, B, warmup, reps, seed, ta, tb, pa, pb, err);
}

lpv_status lpv_bench_forward_vs_fp32(const lpv_model *dense, const lpv_model *b, int B, int lowp, int warmup,
                                     int reps, uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_err *err) {
    return time_pair(dense, LPV_BENCH_FP32, b, lowp, B, warmup, reps, seed, ta, tb, NULL, NULL, err);
}

/* One trial: every thread runs `steps` x 12 FMA instructions at once and records its own GFLOP/s in rate[]. */
/* isa PEAK_VNNI / PEAK_MADDUBS: the int8 VNNI / AVX2 loop (int8 ops per second) */
#define PEAK_VNNI LPV_ISA_COUNT
#define PEAK_MADDUBS (LPV_ISA_COUNT + 1)
#define PEAK_AVXVNNI (LPV_ISA_COUNT + 2)
static void peak_trial(lpv_isa isa, int threads, int64_t steps, double *rate) {
    if (isa == LPV_ISA_AVXVNNI) isa = LPV_ISA_AVX2; /* its FMAs are avx2's */
    /* each FP32 level has its own loop below (the last one avx512bf16's) */
    LPV_ASSERT((int)isa >= PEAK_VNNI || ((isa == LPV_ISA_AVX2 || isa == LPV_ISA_AVX512 || isa == LPV_ISA_AVX512BF16) &&
                                         lpv_isa_supported(isa)));
    double flop = ((int)isa == PEAK_VNNI       ? 12.0 * 16 * 4 * 2
                   : (int)isa == PEAK_AVXVNNI ? 12.0 * 8 * 4 * 2
                   : (int)isa == PEAK_MADDUBS ? 12.0 * 8 * 4 * 2
                   : isa == LPV_ISA_AVX2   ? 12.0 * 8 * 2
                   : isa == LPV_ISA_AVX512 ? 12.0 * 16 * 2
                                           : 12.0 * 16 * 4) *
                  steps;
    volatile float sink = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
        double t0 = lpv_now();
        float r = (int)isa == PEAK_VNNI   ? lpv__peak_vnni(steps, 0.999999f, 1e-6f)
                  : (int)isa == PEAK_AVXVNNI ? lpv__peak_avxvnni(steps, 0.999999f, 1e-6f)
                  : (int)isa == PEAK_MADDUBS ? lpv__peak_maddubs(steps, 0.999999f, 1e-6f)
                  : isa == LPV_ISA_AVX2   ? lpv__peak_avx2(steps, 0.999999f, 1e-6f)
                  : isa == LPV_ISA_AVX512 ? lpv__peak_avx512(steps, 0.999999f, 1e-6f)
                                          : lpv__peak_avx512bf16(steps, 0.999999f, 1e-6f);
        rate[omp_get_thread_num()] = flop / (lpv_now() - t0) / 1e9;
        sink += r; /* racy on purpose: only keeps the loops alive */
    }
    (void)sink;
}

static lpv_status peak_of(lpv_isa isa, lpv_isa unit, int threads, lpv_peak *out, lpv_err *err);

lpv_status lpv_bench_peak(lpv_isa isa, int threads, lpv_peak *out, lpv_err *err) {
    if (!lpv_isa_supported(isa))
        return lpv_fail_param(err, LPV_E_UNSUPPORTED, "isa", "'%s' is not available on this cpu (best: %s)",
                              lpv_isa_name(isa), lpv_isa_name(lpv_isa_best()));
    return peak_of(isa, isa, threads, out, err);
}

lpv_status lpv_bench_peak_int8(int threads, lpv_peak *out, lpv_err *err) {
    lpv_q8_kernel k = lpv_q8_kernel_for(lpv_isa_get());
    if (k == LPV_Q8_VNNI) return peak_of(LPV_ISA_AVX512, (lpv_isa)PEAK_VNNI, threads, out, err);
    if (k == LPV_Q8_AVXVNNI) return peak_of(LPV_ISA_AVXVNNI, (lpv_isa)PEAK_AVXVNNI, threads, out, err);
    if (k == LPV_Q8_AVX2) return peak_of(LPV_ISA_AVX2, (lpv_isa)PEAK_MADDUBS, threads, out, err);
    *out = (lpv_peak){lpv_isa_get(), threads < 1 ? 1 : threads, NAN, NAN};
    return LPV_OK;
}

/* The peak of one unit (an ISA's FMA loop, PEAK_VNNI, PEAK_AVXVNNI or PEAK_MADDUBS), reported as isa. */
static lpv_status peak_of(lpv_isa isa, lpv_isa unit, int threads, lpv_peak *out, lpv_err *err) {
    if (threads < 1) threads = 1;
    *out = (lpv_peak){isa, threads, NAN, NAN};
    if (isa == LPV_ISA_REF) return LPV_OK;
    double *rate = calloc((size_t)threads, sizeof(double)), *best = calloc((size_t)threads, sizeof(double));
    if (!rate || !best) {
        free(rate), free(best);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    /* ~3 ms per trial at 118 GFLOP/s a thread, all threads at once (the rate with every core busy). Each
     * thread's best over at least 20 trials, summed: a neighbour's load or a descheduled thread only ever
     * lowers a trial, and on a shared 2-vCPU box such a spell can outlast many trials of the whole team, so
     * trials go on (up to 200, ~0.6 s) while one thread's best is still 10 % below another's. */
    int64_t steps = 2000000;
    peak_trial(unit, threads, steps, rate); /* wakes the threads and the clock up */
    for (int t = 0; t < 200; t++) {
        peak_trial(unit, threads, steps, rate);
        double lo = INFINITY, hi = 0;
        for (int i = 0; i < threads; i++) {
            best[i] = rate[i] > best[i] ? rate[i] : best[i];
            lo = best[i] < lo ? best[i] : lo, hi = best[i] > hi ? best[i] : hi;
        }
        if (t >= 19 && lo >= 0.9 * hi) break;
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) sum += best[i];
    free(rate), free(best);
    out->gflops = sum;
    out->per_thread = sum / threads;
    return LPV_OK;
}

double lpv_bench_bf16_vs_fp32(void) {
    if (lpv_isa_best() < LPV_ISA_AVX512BF16) return NAN;
    /* one thread, best of 7 trials of ~0.5-2 ms each: ~10 ms, stable because nothing leaves the registers */
    double best[2] = {0, 0}, rate;
    for (int t = 0; t < 8; t++)
        for (int k = 0; k < 2; k++) {
            peak_trial(k ? LPV_ISA_AVX512BF16 : LPV_ISA_AVX512, 1, 40000, &rate);
            if (t > 0 && rate > best[k]) best[k] = rate; /* trial 0 wakes the clock up */
        }
    return best[0] > 0 ? best[1] / best[0] : NAN;
}

lpv_status lpv_prune_random(lpv_model *m, double d, int R, int C, int which, uint64_t seed, lpv_err *err) {
    if (!(d > 0 && d <= 1)) return lpv_fail_param(err, LPV_E_ARG, "density", "expected a value in (0, 1], got %g", d);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        lpv_layer_kind k = refs[i].kind;
        int sel = k == LPV_LK_PATCH ? LPV_SEL_PATCH : (k == LPV_LK_HEAD || k == LPV_LK_HEAD_DIST) ? LPV_SEL_HEADS
                                                                                                   : LPV_SEL_BLOCKS;
        if (!(which & sel)) continue;
        lpv_linear *L = refs[i].lin;
        int nbr = lpv_ceil_div(L->out, R), nbc = lpv_ceil_div(L->in, C), nb = nbr * nbc;
        int keep = (int)lround(d * nb);
        if (keep < 1) keep = 1;
        int *idx = malloc(sizeof(int) * (size_t)nb);
        uint8_t *mask = calloc((size_t)nb, 1);
        if (!idx || !mask) {
            free(idx), free(mask);
            return lpv_fail(err, LPV_E_OOM, "out of memory");
        }
        for (int q = 0; q < nb; q++) idx[q] = q;
        lpv_rng_shuffle(&r, idx, nb);
        for (int q = 0; q < keep; q++) mask[idx[q]] = 1;
        lpv_status st = lpv_model_sparsify(m, L, R, C, mask, refs[i].name, err);
        free(idx), free(mask);
        if (st) return st;
    }
    return LPV_OK;
}
