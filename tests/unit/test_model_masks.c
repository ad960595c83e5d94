/*
 * test_model_masks.c — lpv_model_apply_masks, the library half of `lpvit import`: a dense model with zeros in
 * the pruned blocks of a pruned model takes exactly that model's block structure (a kept block that is zero
 * by chance stays kept) and keeps its own values; a nonzero weight in a pruned block, another architecture,
 * int8 weights or a dense masks model are refused with one line and the weights left as they were.
 */
#include <unistd.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/model.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

/* 64 wide, 2 blocks, 32 x 32 images, 40 classes (a 40-row head: partial 16-row blocks) */
static lpv_model *tiny(uint64_t seed, int depth, int heads) { return test_random_model(64, depth, heads, 128, 32, 40, 0, seed); }

static char dir[] = "/tmp/lpvit_masks_XXXXXX";

/* The "pruned model": every linear but the patch embedding at ~50 % with random 16 x 16 masks. */
static lpv_model *pruned(uint64_t seed) {
    lpv_model *p = tiny(seed, 2, 2);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(p, refs, LPV_MAX_LAYERS);
    lpv_rng r;
    lpv_rng_seed(&r, seed + 100);
    for (int i = 1; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        int nbr = (L->out + 15) / 16, nbc = (L->in + 15) / 16;
        uint8_t *mask = malloc((size_t)nbr * nbc);
        for (int k = 0; k < nbr * nbc; k++) mask[k] = lpv_rng_uniform(&r) < 0.5;
        lpv_err err;
        CHECK_OK(lpv_model_sparsify(p, L, 16, 16, mask, refs[i].name, &err), &err);
        free(mask);
    }
    return p;
}

/* Zeros the weights of m in the blocks p prunes: what a fine-tune that held p's masks fixed leaves. */
static void zero_pruned(lpv_model *m, lpv_model *p) {
    lpv_layer_ref mr[LPV_MAX_LAYERS], pr[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, mr, LPV_MAX_LAYERS);
    lpv_model_layers(p, pr, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        const lpv_bsr *b = pr[i].lin->bsr;
        if (!b) continue;
        float *ones = malloc(sizeof(float) * (size_t)b->rows * b->cols);
        lpv_bsr ob;
        lpv_err err;
        for (int64_t k = 0; k < (int64_t)b->rows * b->cols; k++) ones[k] = 1;
        uint8_t *mask = malloc((size_t)b->nbr * b->nbc);
        lpv_bsr_mask(b, mask);
        CHECK_OK(lpv_bsr_from_dense(&ob, ones, b->rows, b->cols, b->R, b->C, mask, NULL, "ones", &err), &err);
        lpv_bsr_to_dense(&ob, ones); /* 1 in kept blocks, 0 in pruned ones */
        for (int64_t k = 0; k < (int64_t)b->rows * b->cols; k++) mr[i].lin->w[k] *= ones[k];
        lpv_bsr_free(&ob);
        free(mask), free(ones);
    }
}

/* m's layers have p's block structure exactly, and hold the values of `dense` (m before the import). */
static void check_structure(lpv_model *m, lpv_model *p, lpv_model *dense) {
    lpv_layer_ref mr[LPV_MAX_LAYERS], pr[LPV_MAX_LAYERS], dr[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, mr, LPV_MAX_LAYERS);
    lpv_model_layers(p, pr, LPV_MAX_LAYERS);
    lpv_model_layers(dense, dr, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        const lpv_bsr *a = mr[i].lin->bsr, *b = pr[i].lin->bsr;
        CHECKF(!a == !b, "%s: sparse %d vs %d", mr[i].name, !!a, !!b);
        const float *want = dr[i].lin->w;
        int64_t sz = (int64_t)mr[i].lin->out * mr[i].lin->in;
        if (!a || !b) {
            CHECK(mr[i].lin->w && memcmp(mr[i].lin->w, want, sizeof(float) * (size_t)sz) == 0);
            continue;
        }
        CHECK(a->R == b->R && a->C == b->C && a->nnzb == b->nnzb);
        CHECKF(memcmp(a->row_ptr, b->row_ptr, sizeof(int32_t) * (size_t)(b->nbr + 1)) == 0, "%s row_ptr", mr[i].name);
        CHECKF(a->nnzb == b->nnzb && memcmp(a->col_idx, b->col_idx, sizeof(int32_t) * (size_t)b->nnzb) == 0, "%s cols",
               mr[i].name);
        float *got = malloc(sizeof(float) * (size_t)sz);
        lpv_bsr_to_dense(a, got);
        int64_t diff = 0; /* == and not memcmp: the zeros of a pruned block may be -0 in the fine-tuned weights */
        for (int64_t k = 0; k < sz; k++) diff += got[k] != want[k];
        CHECKF(diff == 0, "%s: %lld values differ", mr[i].name, (long long)diff);
        free(got);
    }
}

static void test_apply(void) {
    lpv_model *p = pruned(1), *m = tiny(2, 2, 2), *want = NULL;
    zero_pruned(m, p);
    /* a kept block of fc1 that the fine-tune left all zero: still a kept block afterwards */
    const lpv_bsr *b = p->blocks[0].fc1.bsr;
    int kr = 0;
    while (b->row_ptr[kr + 1] == b->row_ptr[kr]) kr++;
    int kc = b->col_idx[b->row_ptr[kr]];
    for (int r = 0; r < 16; r++) memset(&m->blocks[0].fc1.w[(int64_t)(kr * 16 + r) * 64 + kc * 16], 0, 16 * sizeof(float));
    lpv_err err;
    CHECK_OK(lpv_model_clone(&want, m, &err), &err);
    CHECK_OK(lpv_model_apply_masks(m, p, &err), &err);
    check_structure(m, p, want);
    CHECK(fabs(lpv_model_linear_density(m) - lpv_model_linear_density(p)) < 1e-12);

    /* through a file: the structure is what the BSR tensors say, and applying it again to a BSR model is a no-op */
    char path[128];
    snprintf(path, sizeof path, "%s/imported.safetensors", dir);
    CHECK_OK(lpv_model_save(m, path, NULL, &err), &err);
    lpv_model *back = NULL;
    CHECK_OK(lpv_model_load(&back, path, NULL, &err), &err);
    if (back) {
        CHECK_OK(lpv_model_apply_masks(back, p, &err), &err);
        check_structure(back, p, want);
        lpv_model_free(back);
    }
    lpv_model_free(want), lpv_model_free(m), lpv_model_free(p);
}

/* Expects apply to fail with a message holding each needle, and m's weights as they were. */
static void expect_refused(lpv_model *m, lpv_model *p, const char *n1, const char *n2) {
    lpv_model *before = NULL;
    lpv_err err = {0};
    int dense = m->blocks[1].fc2.w != NULL;
    if (dense) CHECK_OK(lpv_model_clone(&before, m, &err), &err);
    CHECK(lpv_model_apply_masks(m, p, &err) != LPV_OK);
    CHECKF(strstr(err.msg, n1) && (!n2 || strstr(err.msg, n2)), "'%s' lacks '%s' / '%s'", err.msg, n1, n2 ? n2 : "");
    CHECKF(!strchr(err.msg, '\n'), "more than one line: %s", err.msg);
    if (before) {
        lpv_layer_ref a[LPV_MAX_LAYERS], b[LPV_MAX_LAYERS];
        int n = lpv_model_layers(m, a, LPV_MAX_LAYERS);
        lpv_model_layers(before, b, LPV_MAX_LAYERS);
        for (int i = 0; i < n; i++)
            CHECKF(!a[i].lin->bsr && a[i].lin->w &&
                       memcmp(a[i].lin->w, b[i].lin->w, sizeof(float) * (size_t)a[i].lin->out * a[i].lin->in) == 0,
                   "%s changed by a refused import", a[i].name);
        lpv_model_free(before);
    }
}

static void test_refusals(void) {
    lpv_model *p = pruned(1);
    lpv_err err;

    /* one weight, however small, inside a pruned block of blocks.1.mlp.fc2 */
    lpv_model *m = tiny(2, 2, 2);
    zero_pruned(m, p);
    uint8_t mask[64];
    const lpv_bsr *b = p->blocks[1].fc2.bsr; /* (64, 128): 4 x 8 blocks */
    lpv_bsr_mask(b, mask);
    int k = 0;
    while (mask[k]) k++;
    m->blocks[1].fc2.w[(int64_t)(k / b->nbc * 16 + 3) * 128 + (k % b->nbc) * 16 + 5] = 1e-30f;
    char want[160];
    snprintf(want, sizeof want, "has 1 of its %lld pruned blocks not exactly zero", (long long)(b->nbr * b->nbc - b->nnzb));
    expect_refused(m, p, "layer 'blocks.1.mlp.fc2'", want);
    /* and one in blocks.0.attn.proj too: the first layer is named, the other counted */
    b = p->blocks[0].proj.bsr; /* (64, 64): 4 x 4 blocks */
    lpv_bsr_mask(b, mask);
    for (k = 0; mask[k]; k++) {}
    m->blocks[0].proj.w[(int64_t)(k / b->nbc * 16) * 64 + (k % b->nbc) * 16 + 15] = -2.5f;
    expect_refused(m, p, "layer 'blocks.0.attn.proj' has 1 of its", "(largest |w| 2.5); 1 more layer too");
    lpv_model_free(m);

    /* another architecture: depth, heads, width */
    m = tiny(2, 3, 2);
    expect_refused(m, p, "depth 3 vs 2", "is not the architecture of");
    lpv_model_free(m);
    m = tiny(2, 2, 4);
    expect_refused(m, p, "attention heads 4 vs 2", NULL);
    lpv_model_free(m);
    m = test_random_model(32, 2, 2, 128, 32, 40, 0, 2);
    expect_refused(m, p, "width 32 vs 64", NULL);
    lpv_model_free(m);

    /* masks from a dense model */
    lpv_model *d = tiny(5, 2, 2);
    m = tiny(2, 2, 2);
    expect_refused(m, d, "no block-sparse layer", NULL);
    lpv_model_free(m), lpv_model_free(d);

    /* int8 weights */
    m = tiny(2, 2, 2);
    zero_pruned(m, p);
    CHECK_OK(lpv_model_quantize_int8(m, 16, 16, &err), &err);
    CHECK(lpv_model_apply_masks(m, p, &err) != LPV_OK && strstr(err.msg, "int8"));
    lpv_model_free(m);
    lpv_model_free(p);
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    lpv_threads_set(2);
    test_apply();
    test_refusals();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_model_masks");
}
