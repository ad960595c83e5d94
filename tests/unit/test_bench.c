/*
 * test_bench.c — the peak measurement (lpv_bench_peak and the register-only loops of peak.c): every
 * accumulator chain contributes to the result (a loop the compiler merged into one chain would report 12x its
 * real rate, as a first version did), each ISA the CPU has reports a finite positive rate on 1 and 2 threads,
 * the reference ISA reports none, and an ISA the CPU lacks is refused. No timing is asserted.
 */
#include <math.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/kernels/bsr_internal.h"
#include "lpvit/bench.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/report.h"
#include "test.h"
#include "test_util.h"

/* What a loop of `steps` returns: lane 0 of the sum of the 12 chains a_i <- a_i * m + c, a_i(0) = 1.0, 1.1, ..., 2.1. */
static double expect_sum(int steps, float m, float c, int bf16) {
    static const float start[12] = {1.0f, 1.1f, 1.2f, 1.3f, 1.4f, 1.5f, 1.6f, 1.7f, 1.8f, 1.9f, 2.0f, 2.1f};
    double s = 0;
    for (int i = 0; i < 12; i++) {
        float a = start[i];
        for (int k = 0; k < steps; k++) a = bf16 ? a + 2 * m * c : fmaf(a, m, c);
        s += a;
    }
    return s;
}

static void test_loops(void) {
    float m = 0.5f, c = 0.25f; /* exact in BF16: the products and sums below round nowhere */
    for (int steps = 0; steps <= 3; steps++) {
        double want = expect_sum(steps, m, c, 0);
        if (lpv_isa_best() >= LPV_ISA_AVX2) {
            double got = lpv__peak_avx2(steps, m, c);
            CHECKF(fabs(got - want) <= 1e-5 * fabs(want), "avx2 loop, %d steps: %.7g, want %.7g", steps, got, want);
        }
        if (lpv_isa_best() >= LPV_ISA_AVX512) {
            double got = lpv__peak_avx512(steps, m, c) / 16; /* summed over the 16 lanes */
            CHECKF(fabs(got - want) <= 1e-5 * fabs(want), "avx512 loop, %d steps: %.7g, want %.7g", steps, got, want);
        }
        if (lpv_isa_best() >= LPV_ISA_AVX512BF16) {
            /* vdpbf16ps adds m*c for both halves of a pair: a += 2 m c */
            double wb = expect_sum(steps, m, c, 1), got = lpv__peak_avx512bf16(steps, m, c) / 16;
            CHECKF(fabs(got - wb) <= 1e-5 * fabs(wb), "avx512bf16 loop, %d steps: %.7g, want %.7g", steps, got, wb);
        }
    }
}

static void test_peak(void) {
    lpv_err err;
    lpv_peak p;
    CHECK_OK(lpv_bench_peak(LPV_ISA_REF, 2, &p, &err), &err);
    CHECK(isnan(p.gflops) && p.threads == 2);
    for (int isa = LPV_ISA_AVX2; isa <= (int)LPV_ISA_AVX512BF16; isa++) {
        if (!lpv_isa_supported((lpv_isa)isa)) {
            printf("SKIP %s peak: not supported by this cpu\n", lpv_isa_name((lpv_isa)isa));
            CHECK(lpv_bench_peak((lpv_isa)isa, 1, &p, &err) == LPV_E_UNSUPPORTED);
            CHECK(strstr(err.msg, "not available on this cpu") != NULL);
            continue;
        }
        for (int t = 1; t <= 2; t++) {
            CHECK_OK(lpv_bench_peak((lpv_isa)isa, t, &p, &err), &err);
            CHECKF(isfinite(p.gflops) && p.gflops > 0 && p.threads == t && fabs(p.per_thread * t - p.gflops) < 1e-6 * p.gflops,
                   "%s peak on %d threads: %g GFLOP/s (%g a thread)", lpv_isa_name((lpv_isa)isa), t, p.gflops, p.per_thread);
        }
    }
}

/* lpv_cpu_others sees another process's CPU time and not ours: a child spins 0.4 s of its own CPU time while
 * we wait, then we spin 0.3 s of ours. CPU time, not wall time, so a loaded machine (ctest runs other tests
 * beside this one) only stretches the test. */
static double spin_cpu(double seconds) {
    struct timespec t;
    volatile double x = 0;
    do {
        for (int i = 0; i < 100000; i++) x += 1e-9 * i;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    } while ((double)t.tv_sec + 1e-9 * (double)t.tv_nsec < seconds);
    return x;
}

static void test_cpu_others(void) {
    lpv_cpu_snap a, b;
    lpv_cpu_snap_take(&a);
    if (!a.ok) {
        printf("skip cpu_others: /proc/stat unreadable\n");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        spin_cpu(0.4); /* a fresh process: its thread CPU clock starts near 0 */
        _exit(0);
    }
    CHECK(pid > 0);
    int status = 0;
    waitpid(pid, &status, 0);
    lpv_cpu_snap_take(&b);
    double child_s = lpv_cpu_others(&a, &b) * (b.wall - a.wall);
    CHECKF(child_s > 0.35, "a child's 0.4 s of CPU counted as %.2f s of others'", child_s);
    lpv_cpu_snap_take(&a);
    struct timespec t0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    spin_cpu((double)t0.tv_sec + 1e-9 * (double)t0.tv_nsec + 0.3);
    lpv_cpu_snap_take(&b);
    double ours = lpv_cpu_others(&a, &b);
    CHECKF(b.self_cpu - a.self_cpu > 0.28 && ours >= 0, "our 0.3 s spin: %.2f s of our CPU seen, others %.2f",
           b.self_cpu - a.self_cpu, ours);
    printf("cpu_others: a child's 0.4 s seen as %.2f s; others while we spun %.2f CPUs\n", child_s, ours);
}

/* The re-exec's choice: every AVX-512 level gets an AVX-512 OpenBLAS core (8095ae3 made it skip avx512bf16 CPUs,
 * so Zen 4 and Xeons ran OpenBLAS's AVX2 or SSE3 kernels), nothing below AVX-512 or already on one changes. */
static int core_is(lpv_isa best, int bf16, const char *core, const char *want) {
    const char *got = lpv_blas_core_wanted(best, bf16, core);
    return want ? got && strcmp(got, want) == 0 : got == NULL;
}

static void test_blas_core(void) {
    CHECK(core_is(LPV_ISA_AVX512BF16, 1, "Prescott", "Cooperlake"));
    CHECK(core_is(LPV_ISA_AVX512BF16, 1, "Zen", "Cooperlake"));
    CHECK(core_is(LPV_ISA_AVX512, 0, "Haswell", "SkylakeX"));
    CHECK(core_is(LPV_ISA_AVX512, 0, NULL, "SkylakeX"));
    CHECK(core_is(LPV_ISA_AVX512BF16, 1, "SapphireRapids", NULL));
    CHECK(core_is(LPV_ISA_AVX512, 0, "SkylakeX", NULL));
    CHECK(core_is(LPV_ISA_AVX2, 0, "Haswell", NULL));
    CHECK(core_is(LPV_ISA_REF, 0, "Prescott", NULL));
}

/* The BF16/FP32 rate check behind --precision bf16's warning: a plausible ratio where the CPU has AVX512-BF16. */
static void test_bf16_rate(void) {
    double r = lpv_bench_bf16_vs_fp32();
    if (lpv_isa_best() < LPV_ISA_AVX512BF16) {
        CHECK(isnan(r));
        printf("SKIP bf16 rate: no avx512_bf16 on this cpu\n");
        return;
    }
    CHECKF(r > 0.2 && r < 4, "vdpbf16ps / FP32 FMA rate %g", r);
    printf("bf16 rate: vdpbf16ps does %.2fx the FP32 FMA work per cycle here\n", r);
}

/* The clock probe: off, a timing carries no peak; on (a vector ISA), every timing of the pair and of the forward
 * passes carries the median probe, within a wide band of the one-off peak (a busy host halves either one: seen
 * 92 against 178 GFLOP/s while CI ran beside it); what it catches is a wrong unit or a probe that never ran. */
static void test_clock_probe(void) {
    lpv_model *m = test_random_model(64, 1, 2, 128, 32, 10, 0, 3);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_err err;
    lpv_timing ta, tb;
    lpv_bench_set_clock_probe(LPV_ISA_REF, 1);
    CHECK_OK(lpv_bench_linear_pair(refs[1].lin, NULL, 40, LPV_EPI_BIAS, LPV_BENCH_FP32, 0, 3, 1, &ta, &tb, &err), &err);
    CHECK(isnan(ta.peak_gflops));
    lpv_isa isa = lpv_isa_fp32(lpv_isa_best());
    if (isa == LPV_ISA_REF) {
        printf("SKIP clock probe: no vector ISA on this cpu\n");
        lpv_model_free(m);
        return;
    }
    lpv_peak pk;
    CHECK_OK(lpv_bench_peak(isa, 1, &pk, &err), &err);
    lpv_bench_set_clock_probe(isa, 1);
    CHECK_OK(lpv_bench_linear_pair(refs[1].lin, refs[2].lin, 40, LPV_EPI_BIAS, LPV_BENCH_FP32, 0, 5, 1, &ta, &tb, &err),
             &err);
    CHECKF(ta.peak_gflops > 0.2 * pk.gflops && ta.peak_gflops < 5 * pk.gflops && ta.peak_gflops == tb.peak_gflops,
           "probe %g and %g against the peak %g", ta.peak_gflops, tb.peak_gflops, pk.gflops);
    CHECK_OK(lpv_bench_forward_pair(m, NULL, 2, LPV_BENCH_FP32, 0, 3, 1, &ta, NULL, NULL, NULL, &err), &err);
    CHECKF(ta.peak_gflops > 0.2 * pk.gflops && ta.peak_gflops < 5 * pk.gflops, "forward probe %g against %g",
           ta.peak_gflops, pk.gflops);
    printf("clock probe: %.1f GFLOP/s (one-off peak %.1f, 1 thread, %s)\n", ta.peak_gflops, pk.gflops, lpv_isa_name(isa));
    if (lpv_isa_supported(LPV_ISA_AVXVNNI)) { /* avxvnni's FMAs are avx2's: its probe runs the avx2 loop */
        CHECK_OK(lpv_bench_peak(LPV_ISA_AVX2, 1, &pk, &err), &err);
        lpv_bench_set_clock_probe(LPV_ISA_AVXVNNI, 1);
        CHECK_OK(lpv_bench_linear_pair(refs[1].lin, NULL, 40, LPV_EPI_BIAS, LPV_BENCH_FP32, 0, 3, 1, &ta, &tb, &err), &err);
        CHECKF(ta.peak_gflops > 0.2 * pk.gflops && ta.peak_gflops < 5 * pk.gflops, "avxvnni probe %g against the avx2 peak %g",
               ta.peak_gflops, pk.gflops);
    } else printf("SKIP avxvnni clock probe: no AVX-VNNI here\n");
    lpv_bench_set_clock_probe(LPV_ISA_REF, 1);
    lpv_model_free(m);
}

/* The int8 unit's peak: int8 ops where the int8 kernel is VNNI's or AVX-VNNI's (up to 4x the FP32 peak: a vpdpbusd
 * does 4x an FMA's multiply-adds) or AVX2's (up to 2x: vpmaddubsw + vpmaddwd + vpaddd do 32 multiply-adds on the two
 * multiply pipes two FMAs use for 16); wide bands, the host may move either. NAN under the reference kernel. Every
 * int8 kernel the CPU has. */
static void test_peak_int8(void) {
    const lpv_isa isas[] = {LPV_ISA_REF, LPV_ISA_AVX2, LPV_ISA_AVXVNNI, LPV_ISA_AVX512};
    lpv_isa keep = lpv_isa_get();
    lpv_err err;
    for (int i = 0; i < 4; i++) {
        if (!lpv_isa_supported(isas[i])) {
            printf("SKIP int8 peak at %s: not on this cpu\n", lpv_isa_name(isas[i]));
            continue;
        }
        CHECK_OK(lpv_isa_set(isas[i], &err), &err);
        lpv_q8_kernel k = lpv_q8_kernel_for(isas[i]);
        lpv_peak p8, p32;
        CHECK_OK(lpv_bench_peak_int8(1, &p8, &err), &err);
        if (k == LPV_Q8_REF) {
            CHECK(isnan(p8.gflops));
            continue;
        }
        lpv_isa fp = k == LPV_Q8_VNNI ? LPV_ISA_AVX512 : LPV_ISA_AVX2;
        CHECK(p8.isa == (k == LPV_Q8_AVXVNNI ? LPV_ISA_AVXVNNI : fp));
        CHECK_OK(lpv_bench_peak(fp, 1, &p32, &err), &err);
        int dp = k == LPV_Q8_VNNI || k == LPV_Q8_AVXVNNI; /* vpdpbusd: 4x the FMA's multiply-adds a lane */
        double lo = dp ? 1.0 : 0.5, hi = dp ? 16 : 8;
        CHECKF(p8.gflops > lo * p32.gflops && p8.gflops < hi * p32.gflops, "%s int8 %g GOP/s against fp32 %g GFLOP/s",
               lpv_q8_kernel_name(k), p8.gflops, p32.gflops);
        printf("%s int8 peak: %.1f GOP/s a thread, %.2fx the %s FP32 FMA peak\n", lpv_q8_kernel_name(k), p8.gflops,
               p8.gflops / p32.gflops, lpv_isa_name(fp));
    }
    CHECK_OK(lpv_isa_set(keep, &err), &err);
}

/* An int8 layer's product is timed apart from its input's quantization: each round's product lies inside the
 * round, so its median lies under the whole's (order statistics are monotone); FP32 layers have none. */
static void test_int8_product_time(void) {
    lpv_model *m = test_random_model(64, 1, 2, 128, 32, 10, 0, 3);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_err err;
    lpv_timing ta, tb;
    CHECK_OK(lpv_bench_linear_pair(refs[1].lin, NULL, 40, LPV_EPI_BIAS, LPV_BENCH_INT8, 0, 3, 1, &ta, &tb, &err), &err);
    CHECK(isnan(ta.product_ms)); /* no int8 weights yet: the FP32 kernel ran */
    CHECK_OK(lpv_model_quantize_int8(m, 32, 32, &err), &err);
    for (int i = 0; i < n; i++) {
        if (!lpv_linear_has_int8(refs[i].lin)) continue;
        CHECK_OK(lpv_bench_linear_pair(refs[i].lin, refs[i].lin, 40, LPV_EPI_BIAS, LPV_BENCH_INT8, 0, 5, 1, &ta, &tb, &err),
                 &err);
        CHECKF(ta.product_ms > 0 && ta.product_ms <= ta.median_ms && tb.product_ms > 0 && tb.product_ms <= tb.median_ms,
               "%s: product %g of %g ms, %g of %g", refs[i].name, ta.product_ms, ta.median_ms, tb.product_ms, tb.median_ms);
        /* the forward pass's feeding (cmd_bench's flags): the range given, and fc1 recording its output's */
        int fc1 = refs[i].kind == LPV_LK_FC1, epi = fc1 ? LPV_EPI_BIAS | LPV_EPI_GELU : LPV_EPI_BIAS;
        int flags = LPV_BENCH_Q8_RANGE_IN | (fc1 ? LPV_BENCH_Q8_RANGE_OUT : 0);
        CHECK_OK(lpv_bench_linear_pair(refs[i].lin, refs[i].lin, 40, epi, LPV_BENCH_INT8 | flags, 0, 3, 1, &ta, &tb, &err),
                 &err);
        CHECKF(ta.product_ms > 0 && ta.product_ms <= ta.median_ms && isfinite(tb.median_ms), "%s with ranges: %g of %g ms",
               refs[i].name, ta.product_ms, ta.median_ms);
        CHECK_OK(lpv_bench_linear_pair(refs[i].lin, NULL, 40, LPV_EPI_BIAS, LPV_BENCH_FP32, 0, 3, 1, &ta, &tb, &err), &err);
        CHECK(isnan(ta.product_ms));
    }
    lpv_model_free(m);
}

int main(void) {
    test_int8_product_time();
    test_clock_probe();
    test_peak_int8();
    test_blas_core();
    test_bf16_rate();
    test_loops();
    test_peak();
    test_cpu_others();
    return test_finish("test_bench");
}
