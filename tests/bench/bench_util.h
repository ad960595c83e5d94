/*
 * bench_util.h — what the hand-run benchmarks (bench_bsr_kernel, bench_q8_kernel, bench_attention) share,
 * header-only: comma-separated number lists from the command line ("1,8", "1,0.5"), a xorshift generator with
 * the state in the caller, qsort's comparison of doubles, and 64-byte aligned buffers.
 */
#ifndef LPVIT_BENCH_UTIL_H
#define LPVIT_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* xorshift64: the next value of the state *s (non-zero). */
static inline uint64_t bench_rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [-1, 1). */
static inline float bench_rndf(uint64_t *s) { return (float)((double)(bench_rnd(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

/* Activations as the engine holds them: 64-byte aligned, like every arena allocation. glibc's malloc returns
 * large blocks 16 bytes past a page, so a zmm load of every row then splits a cache line: the int8 VNNI-512
 * product ran at 72 % of its peak on such buffers and at 92 % on aligned ones. Free with free(). */
static inline void *bench_alloc(size_t n) { return aligned_alloc(64, (n + 63) / 64 * 64); }

static inline int bench_cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Up to max integers of "a,b,c" into out; returns how many. */
static inline int bench_list_i(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

/* The same for numbers. */
static inline int bench_list_d(const char *s, double *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atof(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

#endif
