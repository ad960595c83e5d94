/*
 * test_util.h — what several tests build the same way (header-only): a
 * random model of a given shape, a tensor read from a safetensors file
 * as F32 (the fixtures), and what the file tests look at in a folder. Needs
 * test.h first.
 */
#ifndef LPVIT_TEST_UTIL_H
#define LPVIT_TEST_UTIL_H

#include <dirent.h>
#include <sys/stat.h>

#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"

/* A random-weight ViT: dim, depth, heads, mlp, square images of side img, 16-pixel patches, 3 channels. */
static inline lpv_model *test_random_model(int dim, int depth, int heads, int mlp, int img, int classes, int distilled,
                                           uint64_t seed) {
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = dim, c.depth = depth, c.heads = heads, c.mlp = mlp, c.patch = 16, c.img = img, c.chans = 3;
    c.classes = classes, c.n_prefix = distilled ? 2 : 1, c.n_outputs = distilled ? 2 : 1;
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, seed, &err), &err);
    return m;
}

/* out (B, classes) <- m's logits for images x (B, 3, S, S). */
static inline void test_logits(lpv_model *m, const float *x, int B, float *out) {
    lpv_workspace ws;
    lpv_err err;
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, B, &err), &err);
    CHECK_OK(lpv_forward(m, &ws, x, B, out, &err), &err);
    lpv_workspace_free(&ws);
}

/* dir/rel loaded as a model (NULL, with a failed check, when it does not load). */
static inline lpv_model *test_load_fixture(const char *dir, const char *rel) {
    char path[1024];
    test_path(path, sizeof path, dir, rel);
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_load(&m, path, NULL, &err), &err);
    return m;
}

/* dir/rel opened as a safetensors file into f (1), or a failed check (0). */
static inline int test_open_st(lpv_st_file *f, const char *dir, const char *rel) {
    char path[1024];
    test_path(path, sizeof path, dir, rel);
    lpv_err err;
    int st = lpv_st_open(f, path, &err);
    CHECK_OK(st, &err);
    return st == LPV_OK;
}

/* A tensor of f as F32 (malloc'd, the caller frees it; n gets its element count), or NULL when absent. */
static inline float *test_read_tensor(const lpv_st_file *f, const char *name, int64_t *n) {
    const lpv_st_tensor *t = lpv_st_find(f, name);
    if (!t) return NULL;
    float *x = malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
    lpv_err err;
    if (lpv_st_read_f32(f, t, x, &err) != LPV_OK) {
        free(x);
        return NULL;
    }
    if (n) *n = (int64_t)t->nelem;
    return x;
}

/* 1 when path names anything, a dangling symlink included. */
static inline int test_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* 1 when the file at path holds exactly the n bytes of data. */
static inline int test_file_is(const char *path, const void *data, size_t n) {
    char *got = NULL;
    size_t len = 0;
    lpv_err err;
    if (lpv_read_file(path, &got, &len, (size_t)1 << 30, &err) != LPV_OK) return 0;
    int same = len == n && (n == 0 || memcmp(got, data, n) == 0);
    free(got);
    return same;
}

/* The same for a string's bytes. */
static inline int test_file_is_str(const char *path, const char *s) { return test_file_is(path, s, strlen(s)); }

/* The number of entries in dir other than "." and ".." (-1 when it cannot be read), their names joined by
 * ' ' into names when names is not NULL (in readdir's order). */
static inline int test_dir_entries(const char *dir, char *names, size_t cap) {
    DIR *d = opendir(dir);
    int n = 0;
    if (names) names[0] = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (names) {
            size_t u = strlen(names);
            snprintf(names + u, cap - u, "%s%s", u ? " " : "", e->d_name);
        }
        n++;
    }
    closedir(d);
    return n;
}

#endif
