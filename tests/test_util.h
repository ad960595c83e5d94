/*
 * test_util.h — what several tests build the same way (header-only): a
 * random model of a given shape and a checked copy of one, the committed mini ImageFolder and its images as one
 * batch (test_mini), a tensor read
 * from a safetensors file as F32 (the fixtures), and what the file tests look at in a folder. Needs
 * test.h first.
 */
#ifndef LPVIT_TEST_UTIL_H
#define LPVIT_TEST_UTIL_H

#include <dirent.h>
#include <sys/stat.h>

#include "lpvit/dataset.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/loader.h"
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

/* The committed mini ImageFolder (tests/data/imagenet-mini, the default class list), preprocessed at img px. */
static inline void test_mini_set(lpv_dataset *ds, lpv_synsets *syn, lpv_preproc *pp, int img) {
    lpv_err err;
    CHECK_OK(lpv_synsets_load(syn, LPVIT_SOURCE_DIR "/models/synset_words.txt", &err), &err);
    CHECK_OK(lpv_dataset_imagefolder(ds, LPVIT_SOURCE_DIR "/tests/data/imagenet-mini", syn, &err), &err);
    *pp = lpv_preproc_default();
    pp->img_size = img;
}

/* Every image of ds as one batch (malloc'd (n, 3, S, S), S = pp->img_size); *n their count. */
static inline float *test_all_images(const lpv_dataset *ds, const lpv_preproc *pp, int *n) {
    lpv_err err;
    lpv_loader *L;
    lpv_loader_opts lo = {ds->n, 1, 1, NULL};
    CHECK_OK(lpv_loader_open(&L, ds, pp, &lo, &err), &err);
    lpv_batch b;
    CHECK_OK(lpv_loader_next(L, &b, &err), &err);
    size_t bytes = sizeof(float) * (size_t)b.n * 3 * pp->img_size * pp->img_size;
    float *x = malloc(bytes);
    memcpy(x, b.x, bytes);
    *n = b.n;
    lpv_loader_close(L);
    return x;
}

/* The mini set at img px with all its images as one batch x (n of them): what the model-level tests start from. */
typedef struct {
    lpv_synsets syn;
    lpv_dataset ds;
    lpv_preproc pp;
    float *x;
    int n;
} test_mini;

static inline void test_mini_open(test_mini *t, int img) {
    test_mini_set(&t->ds, &t->syn, &t->pp, img);
    t->x = test_all_images(&t->ds, &t->pp, &t->n);
}

static inline void test_mini_close(test_mini *t) {
    free(t->x);
    lpv_dataset_free(&t->ds);
    lpv_synsets_free(&t->syn);
}

/* A copy of a dense model (lpv_model_clone), checked. */
static inline lpv_model *test_clone(const lpv_model *m) {
    lpv_model *c;
    lpv_err err;
    CHECK_OK(lpv_model_clone(&c, m, &err), &err);
    return c;
}

/* out (B, classes) <- m's logits for images x (B, 3, S, S). */
static inline void test_logits(lpv_model *m, const float *x, int B, float *out) {
    lpv_workspace ws;
    lpv_err err;
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, B, &err), &err);
    CHECK_OK(lpv_forward(m, &ws, x, B, out, &err), &err);
    lpv_workspace_free(&ws);
}

/* Every block linear (not the patch embedding, not the heads) of m made BSR with R x R blocks, block k of
 * layer i kept unless (k * mul + i) % 3 == 0: about two thirds kept, a different pattern per layer and mul. */
static inline void test_sparsify_pattern(lpv_model *m, int R, int mul) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_err err;
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        if (refs[i].kind == LPV_LK_PATCH || refs[i].kind == LPV_LK_HEAD) continue;
        int nb = (L->out / R) * (L->in / R);
        uint8_t *mask = malloc((size_t)nb);
        for (int k = 0; k < nb; k++) mask[k] = (k * mul + i) % 3 != 0;
        CHECK_OK(lpv_model_sparsify(m, L, R, R, mask, refs[i].name, &err), &err);
        free(mask);
    }
}

/* Copies the safetensors file src to dst (metadata kept) with tensor `name` dropped (data NULL) or replaced by
 * (dt, ndim, shape, data), plus, when extra is set, a 1-D tensor `extra` of elen values of type edt. */
static inline void test_st_rewrite(const char *src, const char *dst, const char *name, lpv_dtype dt, int ndim,
                                   const int64_t *shape, const void *data, const char *extra, lpv_dtype edt,
                                   int64_t elen, const void *edata) {
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_open(&f, src, &err), &err);
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    for (int i = 0; i < f.n; i++) {
        const lpv_st_tensor *t = &f.t[i];
        if (name && strcmp(t->name, name) == 0) {
            if (data) CHECK_OK(lpv_st_writer_add(&w, t->name, dt, ndim, shape, data, &err), &err);
        } else CHECK_OK(lpv_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), &err);
    }
    if (extra) CHECK_OK(lpv_st_writer_add(&w, extra, edt, 1, (int64_t[]){elen}, edata, &err), &err);
    for (int i = 0; i < f.n_meta; i++) CHECK_OK(lpv_st_writer_meta(&w, f.meta[i].key, f.meta[i].value, &err), &err);
    CHECK_OK(lpv_st_write(&w, dst, &err), &err);
    lpv_st_writer_free(&w);
    lpv_st_close(&f);
}

/* path must not load as a model, and the error must contain needle (what: the case, for the message). */
static inline void test_expect_load_error(const char *path, const char *needle, const char *what) {
    lpv_model *m = NULL;
    lpv_err err = {0};
    lpv_model_opts o = {2, 0, 0};
    lpv_status st = lpv_model_load(&m, path, &o, &err);
    CHECKF(st != LPV_OK && m == NULL, "%s: loaded", what);
    CHECKF(strstr(err.msg, needle) != NULL, "%s: '%s' lacks '%s'", what, err.msg, needle);
    if (m) lpv_model_free(m);
}

/* Random byte mutations of the valid model file `good` (half in the JSON header, half in the tensors), each
 * written to `bad` and loaded: a load either succeeds, and then a forward pass runs, or fails with a message. */
static inline void test_model_mutations(const char *good, const char *bad, uint64_t seed, int n) {
    FILE *fp = fopen(good, "rb");
    CHECK(fp != NULL);
    if (!fp) return;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *orig = malloc((size_t)size), *buf = malloc((size_t)size);
    CHECK(fread(orig, 1, (size_t)size, fp) == (size_t)size);
    fclose(fp);
    uint64_t hdr = 0;
    memcpy(&hdr, orig, 8);
    int loaded = 0, refused = 0;
    for (int it = 0; it < n; it++) {
        memcpy(buf, orig, (size_t)size);
        int k = 1 + (int)(seed % 4);
        for (int j = 0; j < k; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t pos = (seed >> 33) % 2 ? 8 + (seed >> 20) % (hdr ? hdr : 1) : (seed >> 20) % (uint64_t)size;
            buf[pos] = (unsigned char)(seed >> 12);
        }
        fp = fopen(bad, "wb");
        CHECK(fp && fwrite(buf, 1, (size_t)size, fp) == (size_t)size);
        if (fp) fclose(fp);
        lpv_model *m = NULL;
        lpv_err err = {0};
        lpv_model_opts o = {2, 0, 0};
        if (lpv_model_load(&m, bad, &o, &err) == LPV_OK) {
            int64_t per = (int64_t)3 * m->cfg.img * m->cfg.img;
            float *x = calloc((size_t)per, sizeof(float)), *l = malloc(sizeof(float) * (size_t)m->cfg.classes * 2);
            for (int64_t q = 0; q < per; q++) x[q] = (float)((q * 37) % 101) / 50.0f - 1.0f;
            lpv_workspace ws;
            CHECK_OK(lpv_workspace_init_for(&ws, m, 1, &err), &err);
            CHECK_OK(lpv_forward(m, &ws, x, 1, l, &err), &err);
            lpv_workspace_free(&ws);
            free(x), free(l);
            lpv_model_free(m);
            loaded++;
        } else {
            CHECKF(err.msg[0] != 0, "mutation %d: refused without a message", it);
            refused++;
        }
    }
    printf("mutations of %s: %d loaded, %d refused with a message\n", good, loaded, refused);
    CHECK(loaded + refused == n);
    free(orig), free(buf);
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
