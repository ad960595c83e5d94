/*
 * model_masks.c — one model's block structure applied to another model's weights (model.h):
 * the way back from a fine-tune that held the masks of a pruned file fixed (lpvit import).
 *
 * The masks always come from the pruned model's BSR layers, never from where the other model
 * happens to hold zeros: a fine-tuned weight that is zero by chance inside a kept block stays a
 * kept weight. Everything is checked before anything changes, so a refused model is left as it
 * was loaded (but for its BSR layers, densified first).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/model.h"

/* One differing field of the two configs, as "width 64 vs 192", or 0 when they agree. */
static int config_diff(const lpv_config *a, const lpv_config *b, char *buf, size_t cap) {
    const struct {
        const char *what;
        int x, y;
    } f[] = {
        {"width", a->dim, b->dim},           {"depth", a->depth, b->depth},
        {"mlp width", a->mlp, b->mlp},       {"attention heads", a->heads, b->heads},
        {"patch", a->patch, b->patch},       {"input side", a->img, b->img},
        {"input channels", a->chans, b->chans}, {"classes", a->classes, b->classes},
        {"prefix tokens", a->n_prefix, b->n_prefix}, {"classifier heads", a->n_outputs, b->n_outputs},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (f[i].x != f[i].y) {
            snprintf(buf, cap, "%s %d vs %d", f[i].what, f[i].x, f[i].y);
            return 1;
        }
    /* the epsilon is no weight, but the forward pass uses it: a file that says another one is another model */
    if (fabsf(a->ln_eps - b->ln_eps) > 1e-6f * fmaxf(a->ln_eps, b->ln_eps)) {
        snprintf(buf, cap, "layernorm eps %g vs %g", (double)a->ln_eps, (double)b->ln_eps);
        return 1;
    }
    return 0;
}

lpv_status lpv_model_check_same_arch(const lpv_model *m, const lpv_model *ref, lpv_err *err) {
    char what[96];
    if (config_diff(&m->cfg, &ref->cfg, what, sizeof what))
        return lpv_fail(err, LPV_E_SHAPE, "'%s' is not the architecture of '%s': %s", m->path, ref->path, what);
    return LPV_OK;
}

/* Counts the blocks of W (rows, cols) that the mask prunes and that hold a nonzero weight; *maxabs gets the
 * largest |w| among them. Partial edge blocks count their real part only. */
static int64_t nonzero_pruned_blocks(const float *W, int rows, int cols, int R, int C, const uint8_t *mask,
                                     float *maxabs) {
    int nbr = (rows + R - 1) / R, nbc = (cols + C - 1) / C;
    int64_t n = 0;
    *maxabs = 0;
    for (int bi = 0; bi < nbr; bi++)
        for (int bj = 0; bj < nbc; bj++) {
            if (mask[(int64_t)bi * nbc + bj]) continue;
            float mx = 0;
            for (int r = bi * R; r < rows && r < (bi + 1) * R; r++)
                for (int c = bj * C; c < cols && c < (bj + 1) * C; c++) mx = fmaxf(mx, fabsf(W[(int64_t)r * cols + c]));
            if (mx > 0) n++, *maxabs = fmaxf(*maxabs, mx);
        }
    return n;
}

/* The mask (nbr, nbc) of a BSR layer, malloc'd. */
static uint8_t *layer_mask(const lpv_bsr *b) {
    uint8_t *mask = malloc((size_t)b->nbr * (size_t)b->nbc + 1);
    if (mask) lpv_bsr_mask(b, mask);
    return mask;
}

/* Refuses m when any layer has a nonzero weight in a block `masks` prunes, naming the first such layer, how many
 * of its pruned blocks are not zero, and how many other layers have some. */
static lpv_status check_zeros(const lpv_model *m, const char *masks_path, const lpv_layer_ref *mr, const lpv_layer_ref *pr,
                              int n, lpv_err *err) {
    int bad_layers = 0, first = -1;
    int64_t first_n = 0, first_pruned = 0;
    float first_max = 0;
    for (int i = 0; i < n; i++) {
        const lpv_bsr *b = pr[i].lin->bsr;
        if (!b) continue;
        uint8_t *mask = layer_mask(b);
        if (!mask) return lpv_fail(err, LPV_E_OOM, "out of memory");
        float mx;
        int64_t nz = nonzero_pruned_blocks(mr[i].lin->w, b->rows, b->cols, b->R, b->C, mask, &mx);
        free(mask);
        if (!nz) continue;
        if (first < 0) first = i, first_n = nz, first_pruned = (int64_t)b->nbr * b->nbc - b->nnzb, first_max = mx;
        bad_layers++;
    }
    if (first < 0) return LPV_OK;
    char more[64] = "";
    if (bad_layers > 1) snprintf(more, sizeof more, "; %d more layer%s too", bad_layers - 1, bad_layers > 2 ? "s" : "");
    return lpv_fail(err, LPV_E_DATA,
                    "'%s': layer '%s' has %lld of its %lld pruned blocks not exactly zero (largest |w| %.3g)%s: "
                    "its weights were not trained with the masks of '%s' held fixed",
                    m->path, mr[first].name, (long long)first_n, (long long)first_pruned, (double)first_max, more,
                    masks_path);
}

lpv_status lpv_model_apply_masks(lpv_model *m, const lpv_model *masks, lpv_err *err) {
    LPV_TRY(lpv_model_check_same_arch(m, masks, err));
    if (lpv_model_has_int8(m))
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s' has int8 weights: give its FP32 weights", m->path);
    LPV_TRY(lpv_model_densify(m, err)); /* a BSR layer of m is checked like a dense one */
    lpv_layer_ref mr[LPV_MAX_LAYERS], pr[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, mr, LPV_MAX_LAYERS);
    int np = lpv_model_layers((lpv_model *)masks, pr, LPV_MAX_LAYERS);
    LPV_ASSERT(n == np); /* same config, same layer table */
    int sparse = 0;
    for (int i = 0; i < n; i++) sparse += pr[i].lin->bsr != NULL;
    if (!sparse) return lpv_fail(err, LPV_E_DATA, "'%s' has no block-sparse layer: masks come from a pruned model", masks->path);
    LPV_TRY(check_zeros(m, masks->path, mr, pr, n, err));
    for (int i = 0; i < n; i++) {
        const lpv_bsr *b = pr[i].lin->bsr;
        if (!b) continue;
        uint8_t *mask = layer_mask(b);
        if (!mask) return lpv_fail(err, LPV_E_OOM, "out of memory");
        lpv_status st = lpv_model_sparsify(m, mr[i].lin, b->R, b->C, mask, mr[i].name, err);
        free(mask);
        LPV_TRY(st);
    }
    return LPV_OK;
}
