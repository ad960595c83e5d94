/*
 * bench_decode.c — decode + eval preprocessing speed, one thread (not a ctest test; built as
 * build/tests/bench_decode).
 *
 * The first --limit images of DIR (every image of it and its sub-folders, sorted, as lpvit eval lists an
 * ImageFolder) are read into memory first, so the timing holds no file I/O; then --reps passes over all of
 * them, each image decoded (lpv_image_load_mem) and preprocessed (lpv_preprocess: bicubic resize to 248,
 * crop 224, normalize). Prints images/s per pass, with the decode and preprocess parts, and the median.
 * The JPEG decoder is the build's (lpv_image_jpeg_decoder()): build with -DLPVIT_JPEG=stb to compare.
 *
 *     bench_decode DIR [--limit 200] [--reps 3]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/dataset.h"
#include "lpvit/fileio.h"
#include "lpvit/image.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    char *buf;
    size_t n;
    const char *path;
} file_bytes;

/* One pass: decode + preprocess every file; the decode and preprocess seconds into *dec and *pre. */
static int pass(const file_bytes *f, int n, float *x, lpv_resize_scratch *s, double *dec, double *pre) {
    lpv_preproc pp = lpv_preproc_default();
    lpv_err err;
    *dec = *pre = 0;
    for (int i = 0; i < n; i++) {
        lpv_image im;
        double t0 = lpv_now();
        if (lpv_image_load_mem(f[i].buf, f[i].n, f[i].path, &im, &err) != LPV_OK) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
        double t1 = lpv_now();
        lpv_status st = lpv_preprocess(&im, &pp, x, s, &err);
        *dec += t1 - t0;
        *pre += lpv_now() - t1;
        lpv_image_free(&im);
        if (st != LPV_OK) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int limit = 200, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc) limit = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "usage: bench_decode DIR [--limit 200] [--reps 3]\n");
            return 2;
        }
    }
    if (!dir || limit < 1 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bench_decode DIR [--limit 200] [--reps 3]\n");
        return 2;
    }
    lpv_dataset ds;
    lpv_err err;
    if (lpv_dataset_unlabeled(&ds, dir, &err) != LPV_OK) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    int n = ds.n < limit ? ds.n : limit;
    file_bytes *f = calloc((size_t)n, sizeof *f);
    float *x = malloc(3 * 224 * 224 * sizeof(float));
    int rc = !f || !x;
    size_t bytes = 0;
    for (int i = 0; i < n && !rc; i++) {
        f[i].path = ds.items[i].path;
        if (lpv_read_file(f[i].path, &f[i].buf, &f[i].n, LPV_IMAGE_MAX_FILE, &err) != LPV_OK) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            rc = 1;
        }
        bytes += f[i].n;
    }
    printf("bench_decode: %d images (%.1f MB) of %s, jpeg decoder %s, 1 thread\n", n, (double)bytes / 1e6, dir,
           lpv_image_jpeg_decoder());
    lpv_resize_scratch s = {0};
    double ips[100];
    for (int r = 0; r < reps && !rc; r++) {
        double dec, pre;
        rc = pass(f, n, x, &s, &dec, &pre);
        ips[r] = n / (dec + pre);
        if (!rc)
            printf("pass %d: %7.1f images/s  (decode %.2f ms/image, preprocess %.2f ms/image)\n", r + 1, ips[r],
                   1e3 * dec / n, 1e3 * pre / n);
    }
    if (!rc) printf("median: %.1f images/s decode + preprocess\n", median(ips, reps));
    for (int i = 0; i < n; i++) free(f[i].buf);
    free(f);
    free(x);
    lpv_resize_scratch_free(&s);
    lpv_dataset_free(&ds);
    return rc;
}
