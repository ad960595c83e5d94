/*
 * test_dist.c — the parts of dist.h one process can check: shares of a list
 * (contiguous, in rank order, covering every item once, sizes within one,
 * empty shares when there are more ranks than items), the dataset share view
 * (items and their classes), and that without a launcher there is one rank
 * and every collective leaves its buffer and status as they were. What
 * several ranks compute is checked by tests/e2e/mpi_e2e.sh under mpirun.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/dataset.h"
#include "lpvit/dist.h"
#include "test.h"

static void test_shares(void) {
    for (int size = 1; size <= 9; size++)
        for (int64_t n = 0; n <= 40; n++) {
            int64_t next = 0, lo = INT64_MAX, hi = 0;
            for (int r = 0; r < size; r++) {
                int64_t b, e;
                lpv_dist_share(n, r, size, &b, &e);
                CHECKF(b == next && e >= b, "n %lld, %d ranks: rank %d has [%lld, %lld) after %lld", (long long)n,
                       size, r, (long long)b, (long long)e, (long long)next);
                if (e - b < lo) lo = e - b;
                if (e - b > hi) hi = e - b;
                if (r > 0 && e - b > 0) {
                    int64_t pb, pe;
                    lpv_dist_share(n, r - 1, size, &pb, &pe);
                    CHECKF(pe - pb >= e - b, "n %lld: a later rank holds more than an earlier one", (long long)n);
                }
                next = e;
            }
            CHECKF(next == n, "n %lld, %d ranks: the shares cover %lld items", (long long)n, size, (long long)next);
            CHECKF(hi - lo <= 1, "n %lld, %d ranks: shares from %lld to %lld items", (long long)n, size, (long long)lo,
                   (long long)hi);
        }
    int64_t b, e;
    lpv_dist_share(3, 4, 5, &b, &e); /* more ranks than items: the last ones have nothing */
    CHECK(b == 3 && e == 3);
    lpv_dist_share((int64_t)3 << 33, 1, 2, &b, &e); /* beyond int */
    CHECK(b == (int64_t)3 << 32 && e == (int64_t)3 << 33);
}

static void test_one_rank(void) {
    CHECK(lpv_dist_rank() == 0 && lpv_dist_size() == 1);
    CHECK(lpv_dist_built() == (strcmp(lpv_dist_library(), "none") != 0));
    lpv_err err;
    float f[3] = {1.5f, -2, 3};
    double d[2] = {0.25, 7};
    int64_t i[2] = {5, -6};
    int m[3] = {INT_MIN, 4, -1};
    float fm[2] = {0.5f, 9};
    char bytes[4] = "abc";
    CHECK_OK(lpv_dist_sum_f32(f, 3, &err), &err);
    CHECK_OK(lpv_dist_sum_f64(d, 2, &err), &err);
    CHECK_OK(lpv_dist_sum_i64(i, 2, &err), &err);
    CHECK_OK(lpv_dist_max_i32(m, 3, &err), &err);
    CHECK_OK(lpv_dist_max_f32(fm, 2, &err), &err);
    CHECK_OK(lpv_dist_bcast(bytes, 4, 0, &err), &err);
    CHECK(f[0] == 1.5f && f[1] == -2 && f[2] == 3 && d[0] == 0.25 && d[1] == 7 && i[0] == 5 && i[1] == -6);
    CHECK(m[0] == INT_MIN && m[1] == 4 && m[2] == -1 && strcmp(bytes, "abc") == 0 && fm[0] == 0.5f && fm[1] == 9);
    CHECK(lpv_dist_max_f64(2.5) == 2.5);
    char *all = NULL;
    CHECK_OK(lpv_dist_gather_text("a\nbc\n", &all, &err), &err);
    CHECK(all && strcmp(all, "a\nbc\n") == 0);
    free(all);
    CHECK(lpv_dist_agree(LPV_OK, &err) == LPV_OK && !lpv_dist_agreed());
    lpv_fail(&err, LPV_E_DATA, "broken image 'x'");
    CHECK(lpv_dist_agree(LPV_E_DATA, &err) == LPV_E_DATA && lpv_dist_agreed());
    CHECKF(strcmp(err.msg, "broken image 'x'") == 0, "one rank's message changed: %s", err.msg);
}

static void test_dataset_share(void) {
#define MINI LPVIT_SOURCE_DIR "/tests/data/imagenet-mini/"
    const char *paths[] = {MINI "n01440764/img0.JPEG", MINI "n01440764/img1.png", MINI "n01443537/img3.PNG"};
    lpv_dataset ds, v;
    lpv_err err;
    CHECK_OK(lpv_dataset_paths(&ds, paths, 3, &err), &err);
    int first = -1;
    CHECK_OK(lpv_dataset_share(&v, &ds, &first, &err), &err);
    CHECK(first == 0 && v.n == 3 && strcmp(v.items[2].name, ds.items[2].name) == 0);
    lpv_dataset_view_free(&v);
    lpv_dataset_free(&ds);
}

int main(void) {
    test_shares();
    test_one_rank();
    test_dataset_share();
    return test_finish("test_dist");
}
