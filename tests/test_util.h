/*
 * test_util.h — what several tests build the same way (header-only): a
 * random model of a given shape, and a tensor read from a safetensors file
 * as F32 (the fixtures). Needs test.h first.
 */
#ifndef LPVIT_TEST_UTIL_H
#define LPVIT_TEST_UTIL_H

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

#endif
