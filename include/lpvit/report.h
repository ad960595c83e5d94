/*
 * report.h — what every lpvit report records so a number can be reproduced
 * (lpvit version and commit, build, compiler, JPEG decoder, CPU, ISA, threads,
 * OpenBLAS core, load average, time), and the JSON writer the commands share.
 *
 * Reports are cJSON trees owned by the caller. lpv_json_write refuses a tree
 * holding NaN or Inf (cJSON would silently print null), and writes the file
 * atomically (temp + rename). Nothing here prints: a front end that wants
 * JSON on stdout prints lpv_json_print's text itself.
 */
#ifndef LPVIT_REPORT_H
#define LPVIT_REPORT_H

#include <cjson/cJSON.h>

#include "lpvit/error.h"
#include "lpvit/image.h"

/* Adds an "environment" object: lpvit, commit, build, compiler, jpeg_decoder, cpu, isa, threads, blas, loadavg,
 * time. */
void lpv_report_environment(cJSON *obj);
/* The same facts as one human line for stderr logs. */
void lpv_environment_line(char *buf, size_t cap);

/* Did other processes take CPU while we timed? Take a snapshot before and after; lpv_cpu_others gives the
 * average number of CPUs kept busy by anything but this process in between (all CPUs' busy time from
 * /proc/stat, steal included, minus this process's user + system time), or NAN where /proc/stat is
 * unreadable. The load average cannot say it: it counts our own threads and lags by a minute. */
typedef struct {
    double wall, self_cpu, busy_cpu; /* seconds */
    int ok;
} lpv_cpu_snap;
void lpv_cpu_snap_take(lpv_cpu_snap *s);
double lpv_cpu_others(const lpv_cpu_snap *before, const lpv_cpu_snap *after);

/* {"img_size", "crop_pct", "interpolation", "mean", "std"}: the "preprocess" object reports and lpvit's file
 * metadata carry (prune, quantize and create-model write it; the CLI reads it back). The caller owns it. */
cJSON *lpv_preproc_json(const lpv_preproc *pp);

/* *out <- pretty JSON text ending in a newline (malloc'd; the caller frees it). Fails naming the first
 * non-finite number's key and `dest` (where the text was going, for the message). */
lpv_status lpv_json_print(const cJSON *root, const char *dest, char **out, lpv_err *err);
/* Writes lpv_json_print's text to the file at path, atomically. */
lpv_status lpv_json_write(const cJSON *root, const char *path, lpv_err *err);

/* Median and min of n doubles (array is sorted in place). */
double lpv_median(double *v, int n);

const char *lpv_version(void);
const char *lpv_commit(void);

#endif
