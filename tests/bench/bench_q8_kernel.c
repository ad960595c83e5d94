/*
 * bench_q8_kernel.c — every int8 BSR kernel this CPU has beside the FP32 kernels, on the DeiT-B linear shapes
 * (not a ctest test; built as build/tests/bench_q8_kernel).
 *
 * Problem, feature-major as in the engine: Y (out, T) = W (out, in) · X (in, T), no epilogue, BxB blocks (--block, 32), a
 * uniformly random block mask keeping round(d · nblocks) blocks. The int8 kernels get X quantized once, on their
 * own grid, outside the timing (lpvit bench times the quantizer too): what is timed is the product alone.
 * Rows: FP32 avx2, FP32 avx512, int8 avx2 (vpmaddubsw, 127-level inputs), int8 avxvnni (vpdpbusd ymm), int8
 * avx512vnni; an ISA the CPU lacks is skipped and said so. Timing: 2 warm-up rounds, then --reps rounds, each
 * running every kernel 3 times in turn (interleaved, so a clock change hits all alike); medians in ms per
 * product, then the sums over the four layers and the ratios that matter (int8 vs FP32 of the same vector width,
 * density 0.5 vs 1 per kernel).
 *
 * --contiguous keeps the same number of blocks per row, all in one run of adjacent block columns (two where
 * it wraps past the last column), each row's run starting where the row before's ended (so all of X is read,
 * as with a random mask) instead of a random mask: the gap between the two is what the kernels pay for
 * walking scattered blocks.
 *
 *     bench_q8_kernel [--T 1576] [--threads 2] [--reps 9] [--density 1,0.5] [--block 32] [--contiguous]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"

enum { NK = 5, MAXD = 8, MAXR = 64 };
static const char *KNAME[NK] = {"fp32 avx2", "fp32 avx512", "int8 avx2", "int8 avxvnni", "int8 avx512vnni"};
static const lpv_isa KISA[NK] = {LPV_ISA_AVX2, LPV_ISA_AVX512, LPV_ISA_AVX2, LPV_ISA_AVXVNNI, LPV_ISA_AVX512};
static const int KQ8[NK] = {0, 0, 1, 1, 1};

static uint64_t rs = 88172645463325252ull; /* bench_rnd's state */

/* A kernel runs here when the CPU has its ISA and, for int8, the ISA picks that kernel. */
static int runs(int k) {
    if (!lpv_isa_supported(KISA[k])) return 0;
    if (!KQ8[k]) return 1;
    lpv_q8_kernel want = k == 2 ? LPV_Q8_AVX2 : k == 3 ? LPV_Q8_AVXVNNI : LPV_Q8_VNNI;
    return lpv_q8_kernel_for(KISA[k]) == want;
}

int main(int argc, char **argv) {
    int T = 1576, nt = 2, reps = 9, nd = 2, contiguous = 0, B = 32;
    double dens[MAXD] = {1.0, 0.5};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v && !strcmp(a, "--T")) T = atoi(v), i++;
        else if (v && !strcmp(a, "--threads")) nt = atoi(v), i++;
        else if (v && !strcmp(a, "--reps")) reps = atoi(v), i++;
        else if (v && !strcmp(a, "--density")) nd = bench_list_d(v, dens, MAXD), i++;
        else if (v && !strcmp(a, "--block")) B = atoi(v), i++;
        else if (!strcmp(a, "--contiguous")) contiguous = 1;
        else {
            fprintf(stderr, "usage: bench_q8_kernel [--T 1576] [--threads 2] [--reps 9] [--density 1,0.5] [--block 32] [--contiguous]\n");
            return 2;
        }
    }
    if (T < 1 || nt < 1 || reps < 1 || reps > MAXR || nd < 1 || (B != 8 && B != 16 && B != 32 && B != 64)) {
        fprintf(stderr, "bench_q8_kernel: T, threads >= 1, reps in 1..%d, at least one density, block 8, 16, 32 or 64\n", MAXR);
        return 2;
    }
    static const struct {
        const char *name;
        int out, in;
    } L[4] = {{"qkv", 2304, 768}, {"proj", 768, 768}, {"fc1", 3072, 768}, {"fc2", 768, 3072}};
    lpv_threads_set(nt);
    printf("# bench_q8_kernel: cpu '%s', T %d, %d threads, %dx%d blocks (%s), median of %d interleaved rounds (ms)\n",
           lpv_cpu()->brand, T, nt, B, B, contiguous ? "one run per row" : "random", reps);
    for (int k = 0; k < NK; k++)
        if (!runs(k)) printf("# skipped: %s (not on this cpu)\n", KNAME[k]);
    printf("\n| layer | d |");
    for (int k = 0; k < NK; k++)
        if (runs(k)) printf(" %s |", KNAME[k]);
    printf("\n|---|---|");
    for (int k = 0; k < NK; k++)
        if (runs(k)) printf("---|");
    printf("\n");
    static double sum[MAXD][NK];
    for (int l = 0; l < 4; l++) {
        int O = L[l].out, I = L[l].in, ld = lpv_round16(T), nq = (I + 3) / 4;
        float *W = malloc(sizeof(float) * O * I), *X = bench_alloc(sizeof(float) * (size_t)I * ld);
        float *Y = bench_alloc(sizeof(float) * (size_t)O * ld), *xa = bench_alloc(sizeof(float) * ld), *xc = bench_alloc(sizeof(float) * ld);
        uint32_t *X4 = bench_alloc(sizeof(uint32_t) * (size_t)nq * ld);
        for (int64_t i = 0; i < (int64_t)O * I; i++) W[i] = 0.05f * bench_rndf(&rs);
        for (int64_t i = 0; i < (int64_t)I * ld; i++) X[i] = bench_rndf(&rs);
        for (int di = 0; di < nd; di++) {
            int nbl = (O / B) * (I / B), keep = (int)(dens[di] * nbl + 0.5);
            uint8_t *mask = calloc((size_t)nbl, 1);
            int *perm = malloc(sizeof(int) * nbl);
            for (int i = 0; i < nbl; i++) perm[i] = i;
            for (int i = nbl - 1; i > 0; i--) {
                int j = (int)(bench_rnd(&rs) % (uint64_t)(i + 1)), t = perm[i];
                perm[i] = perm[j], perm[j] = t;
            }
            for (int i = 0; i < keep; i++) mask[perm[i]] = 1;
            if (contiguous) { /* the same count per row (rounded) in adjacent block columns, each row's run
                                 * starting where the row before ended, so that all of X is read as with a random mask */
                int nbc = I / B, per = (int)(dens[di] * nbc + 0.5);
                for (int i = 0; i < nbl; i++) mask[i] = (i % nbc - (i / nbc) * per % nbc + nbc) % nbc < per;
            }
            lpv_bsr b;
            lpv_err err;
            if (lpv_bsr_from_dense(&b, W, O, I, B, B, mask, NULL, L[l].name, &err) ||
                lpv_bsr_set_int8(&b, NULL, NULL, NULL, L[l].name, &err)) {
                fprintf(stderr, "bench_q8_kernel: %s\n", err.msg);
                return 1;
            }
            static double s[NK][MAXR];
            for (int r = -2; r < reps; r++)
                for (int k = 0; k < NK; k++) {
                    if (!runs(k)) continue;
                    if (KQ8[k]) { /* on the kernel's own grid, untimed */
                        lpv_qact pt = {1, 0.0f, 0};
                        lpv_q8_quantize_x_isa(X4, xa, xc, X, ld, I, T, &pt, KISA[k]);
                    }
                    double t0 = lpv_now();
                    for (int in = 0; in < 3; in++) {
                        if (KQ8[k]) lpv_bsr_matmul_q8_isa(&b, NULL, X4, xa, xc, ld, Y, ld, T, LPV_EPI_NONE, KISA[k], nt);
                        else lpv_bsr_matmul_isa(&b, NULL, X, ld, Y, ld, T, LPV_EPI_NONE, KISA[k], nt);
                    }
                    if (r >= 0) s[k][r] = (lpv_now() - t0) / 3 * 1e3;
                }
            printf("| %s %dx%d | %.2f |", L[l].name, O, I, dens[di]);
            for (int k = 0; k < NK; k++) {
                if (!runs(k)) continue;
                qsort(s[k], (size_t)reps, sizeof(double), bench_cmp_d);
                printf(" %.3f |", s[k][reps / 2]);
                sum[di][k] += s[k][reps / 2];
            }
            printf("\n");
            fflush(stdout);
            lpv_bsr_free(&b);
            free(mask), free(perm);
        }
        free(W), free(X), free(Y), free(xa), free(xc), free(X4);
    }
    for (int di = 0; di < nd; di++) {
        printf("| sum of the four | %.2f |", dens[di]);
        for (int k = 0; k < NK; k++)
            if (runs(k)) printf(" %.3f |", sum[di][k]);
        printf("\n");
    }
    printf("\n");
    for (int di = 0; di < nd; di++) {
        if (runs(2)) printf("d %.2f: int8 avx2 %.2fx fp32 avx2\n", dens[di], sum[di][0] / sum[di][2]);
        if (runs(3)) printf("d %.2f: int8 avxvnni %.2fx fp32 avx2\n", dens[di], sum[di][0] / sum[di][3]);
        if (runs(4)) printf("d %.2f: int8 avx512vnni %.2fx fp32 avx512\n", dens[di], sum[di][1] / sum[di][4]);
    }
    for (int di = 1; di < nd; di++)
        for (int k = 2; k < NK; k++)
            if (runs(k)) printf("%s: d %.2f runs %.2fx d %.2f\n", KNAME[k], dens[di], sum[0][k] / sum[di][k], dens[0]);
    return 0;
}
