/*
 * test.h — tiny test harness shared by the tests (header-only).
 *
 * CHECK(cond) records a failure with file:line and keeps going; a test's main
 * returns test_finish(), which is non-zero when anything failed, so ctest sees
 * every numeric mismatch, and also non-zero when no check ran at all (a test
 * whose loops or fixtures silently came up empty). A test that needs ../shared
 * and cannot find it returns TEST_SKIP (77) after printing why, before
 * test_finish.
 */
#ifndef LPVIT_TEST_H
#define LPVIT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TEST_SKIP 77

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                             \
    do {                                                                        \
        test_checks++;                                                          \
        if (!(cond)) {                                                          \
            test_failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                       \
    } while (0)

#define CHECKF(cond, ...)                                                       \
    do {                                                                        \
        test_checks++;                                                          \
        if (!(cond)) {                                                          \
            test_failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Expects LPV_OK; prints the error message otherwise. */
#define CHECK_OK(expr, errp)                                                    \
    do {                                                                        \
        int test__st = (int)(expr);                                             \
        test_checks++;                                                          \
        if (test__st != 0) {                                                    \
            test_failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__,   \
                    #expr, test__st, (errp)->msg);                              \
        }                                                                       \
    } while (0)

static inline int test_finish(const char *name) {
    if (test_checks == 0) { /* a test that checked nothing proves nothing: fail it (skips return TEST_SKIP first) */
        fprintf(stderr, "%s: FAILED: no check ran\n", name);
        return 1;
    }
    if (test_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, test_failures, test_checks);
        return 1;
    }
    printf("%s: %d checks passed\n", name, test_checks);
    return 0;
}

/* Largest |a-b| and largest |a-b| / (|b| + floor) over n values. */
typedef struct {
    double max_abs, max_rel;
    size_t at;
} test_diff;

static inline test_diff test_compare(const float *a, const float *b, size_t n, double rel_floor) {
    test_diff d = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        double r = e / (fabs((double)b[i]) + rel_floor);
        if (!(e <= d.max_abs)) { d.max_abs = e; d.at = i; }
        if (r > d.max_rel) d.max_rel = r;
    }
    return d;
}

/* ../shared (or $LPVIT_SHARED): returns NULL and prints why when absent. */
static inline const char *test_shared_dir(void) {
    const char *env = getenv("LPVIT_SHARED");
    static const char *cands[] = {LPVIT_SOURCE_DIR "/../shared", NULL};
    struct stat st;
    if (env && stat(env, &st) == 0 && S_ISDIR(st.st_mode)) return env;
    for (int i = 0; cands[i]; i++)
        if (stat(cands[i], &st) == 0 && S_ISDIR(st.st_mode)) return cands[i];
    printf("SKIP: shared data not found (looked at $LPVIT_SHARED and %s/../shared)\n", LPVIT_SOURCE_DIR);
    return NULL;
}

static inline void test_path(char *buf, size_t cap, const char *dir, const char *rel) {
    snprintf(buf, cap, "%s/%s", dir, rel);
}

#endif
