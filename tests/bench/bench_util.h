/*
 * bench_util.h — what the hand-run benchmarks (bench_bsr_kernel, bench_attention) share, header-only:
 * comma-separated number lists from the command line ("1,8", "1,0.5").
 */
#ifndef LPVIT_BENCH_UTIL_H
#define LPVIT_BENCH_UTIL_H

#include <stdlib.h>
#include <string.h>

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
