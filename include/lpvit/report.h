/*
 * report.h — what every lpvit report records so a number can be reproduced
 * (lpvit version and commit, build, compiler, CPU, ISA, threads, OpenBLAS
 * core, load average, time), and the JSON writer the commands share.
 *
 * Reports are cJSON trees owned by the caller. lpv_json_write refuses a tree
 * holding NaN or Inf (cJSON would silently print null), and writes the file
 * atomically (temp + rename). "-" writes to stdout.
 */
#ifndef LPVIT_REPORT_H
#define LPVIT_REPORT_H

#include <cjson/cJSON.h>

#include "lpvit/error.h"

/* Adds an "environment" object: lpvit, commit, build, compiler, cpu, isa, threads, blas, loadavg, time. */
void lpv_report_environment(cJSON *obj);
/* The same facts as one human line for stderr logs. */
void lpv_environment_line(char *buf, size_t cap);

/* Writes JSON (pretty) to path or "-" (stdout). Fails naming the first non-finite number's key. */
lpv_status lpv_json_write(const cJSON *root, const char *path, lpv_err *err);

/* Median and min of n doubles (array is sorted in place). */
double lpv_median(double *v, int n);

const char *lpv_version(void);
const char *lpv_commit(void);

#endif
