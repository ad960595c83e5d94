/*
 * bench_gelu.c — the vector GELU (lpv_vgelu_isa, the BSR kernels' fc1 epilogue) per ISA the CPU has, in ns a
 * value (not a ctest test; built as build/tests/bench_gelu).
 *
 * One thread, 64 K values in [-4, 4) (L2-resident, as a group's rows are when the epilogue runs), reloaded before
 * each trial; the best of --reps trials per ISA.
 *
 *     bench_gelu [--reps 20]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"

enum { N = 65536 };

int main(int argc, char **argv) {
    int reps = 20;
    if (argc == 3 && !strcmp(argv[1], "--reps")) reps = atoi(argv[2]);
    else if (argc != 1 || reps < 1) {
        fprintf(stderr, "usage: bench_gelu [--reps 20]\n");
        return 2;
    }
    if (reps < 1) {
        fprintf(stderr, "bench_gelu: --reps must be >= 1\n");
        return 2;
    }
    static float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = (float)((i * 2654435761u) % 2000) / 250.0f - 4.0f;
    printf("# bench_gelu: cpu '%s', 1 thread, %d values in [-4, 4), best of %d trials\n", lpv_cpu()->brand, N, reps);
    const lpv_isa isas[3] = {LPV_ISA_REF, LPV_ISA_AVX2, LPV_ISA_AVX512};
    for (int k = 0; k < 3; k++) {
        if (!lpv_isa_supported(isas[k])) {
            printf("%-8s skipped: not on this cpu\n", lpv_isa_name(isas[k]));
            continue;
        }
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            memcpy(y, x, sizeof y);
            double t0 = lpv_now();
            lpv_vgelu_isa(y, N, isas[k]);
            double t = lpv_now() - t0;
            best = t < best ? t : best;
        }
        printf("%-8s %.2f ns a value\n", lpv_isa_name(isas[k]), best / N * 1e9);
    }
    return 0;
}
