/*
 * bench_gelu.c — the vector GELU (lpv_vgelu_isa, the BSR kernels' fc1 epilogue) per ISA the CPU has, in ns a
 * value (not a ctest test; built as build/tests/bench_gelu).
 *
 * One thread, 64 K values (L2-resident, as a group's rows are when the epilogue runs), reloaded before each trial;
 * the best of --reps trials per ISA, in two spreads: [-4, 4) (where the vector forms need no exp: AVX2 below 4,
 * AVX-512 below 6; most of a real model's fc1 outputs, vmath.h) and [-8, 8) (half the values past 4: nearly every
 * vector takes the exp form, the worst case).
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
    static float x[2][N], y[N];
    for (int i = 0; i < N; i++) {
        x[0][i] = (float)((i * 2654435761u) % 2000) / 250.0f - 4.0f;
        x[1][i] = 2.0f * x[0][i];
    }
    printf("# bench_gelu: cpu '%s', 1 thread, %d values, best of %d trials, ns a value\n", lpv_cpu()->brand, N, reps);
    printf("%-8s %9s %9s\n", "isa", "[-4, 4)", "[-8, 8)");
    const lpv_isa isas[3] = {LPV_ISA_REF, LPV_ISA_AVX2, LPV_ISA_AVX512};
    for (int k = 0; k < 3; k++) {
        if (!lpv_isa_supported(isas[k])) {
            printf("%-8s skipped: not on this cpu\n", lpv_isa_name(isas[k]));
            continue;
        }
        printf("%-8s", lpv_isa_name(isas[k]));
        for (int s = 0; s < 2; s++) {
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                memcpy(y, x[s], sizeof y);
                double t0 = lpv_now();
                lpv_vgelu_isa(y, N, isas[k]);
                double t = lpv_now() - t0;
                best = t < best ? t : best;
            }
            printf(" %9.2f", best / N * 1e9);
        }
        printf("\n");
    }
    return 0;
}
