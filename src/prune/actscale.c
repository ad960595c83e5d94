/*
 * actscale.c — calibrated per-tensor input grids for int8 linears (see include/lpvit/actscale.h).
 */
#include "lpvit/actscale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/reconstruct.h"

LPV_ENUM_FUNCS(lpv_act_mode, lpv_act_mode_name, lpv_act_mode_parse, LPV_ACT_LIST, LPV_ACT_COUNT, "act-scales")

#define BOUND0 (1.0f / 1024.0f)

/* Doubles the histogram's bound: old bins 2j and 2j + 1 become new bin NB/4 + j, exactly (bin edges align).
 * In place: the lower half's targets lie at or above their sources, so it runs downwards; the upper half's lie
 * below theirs, so it runs upwards; the two halves touch disjoint ranges. */
static void widen(double *h, float *bound) {
    int nb = LPV_ACT_BINS, q = nb / 4;
    for (int j = q - 1; j >= 0; j--) h[q + j] = h[2 * j] + h[2 * j + 1];
    for (int j = q; j < 2 * q; j++) h[q + j] = h[2 * j] + h[2 * j + 1];
    for (int k = 0; k < q; k++) h[k] = 0, h[3 * q + k] = 0;
    *bound *= 2;
}

void lpv_act_accumulate(lpv_act_stats *s, int i, const float *X, int ld, int in, int ncols) {
    float lo = s->lo[i], hi = s->hi[i];
    for (int r = 0; r < in; r++) {
        const float *x = X + (int64_t)r * ld;
        for (int t = 0; t < ncols; t++)
            if (isfinite(x[t])) lo = fminf(lo, x[t]), hi = fmaxf(hi, x[t]);
    }
    s->lo[i] = lo, s->hi[i] = hi;
    if (s->bound[i] == 0) s->bound[i] = BOUND0;
    while (fmaxf(-lo, hi) > s->bound[i]) widen(s->hist[i], &s->bound[i]);
    double *h = s->hist[i];
    float B = s->bound[i], inv = (float)LPV_ACT_BINS / (2 * B);
    for (int r = 0; r < in; r++) {
        const float *x = X + (int64_t)r * ld;
        for (int t = 0; t < ncols; t++) {
            if (!isfinite(x[t])) continue;
            int k = (int)((x[t] + B) * inv);
            h[k < 0 ? 0 : k >= LPV_ACT_BINS ? LPV_ACT_BINS - 1 : k] += 1;
        }
    }
    s->values[i] += (int64_t)in * ncols;
}

typedef struct {
    lpv_act_stats *s;
    int in[LPV_MAX_LAYERS];
} act_ctx;

static void act_tap(void *ctx, int layer, const float *X, int ld, int ncols) {
    act_ctx *c = ctx;
    if (layer < c->s->n && c->s->want[layer]) lpv_act_accumulate(c->s, layer, X, ld, c->in[layer], ncols);
}

void lpv_act_stats_free(lpv_act_stats *s) {
    for (int i = 0; i < LPV_MAX_LAYERS; i++) free(s->hist[i]), s->hist[i] = NULL;
}

/* Every rank's histograms at the largest bound, then summed; ranges and counts reduced. */
static lpv_status reduce_ranks(lpv_act_stats *s, lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    for (int i = 0; i < s->n; i++) {
        if (!s->want[i]) continue;
        float b = s->bound[i], nlo = -s->lo[i];
        LPV_TRY(lpv_dist_max_f32(&b, 1, err));
        while (s->bound[i] < b) widen(s->hist[i], &s->bound[i]);
        LPV_TRY(lpv_dist_sum_f64(s->hist[i], LPV_ACT_BINS, err));
        LPV_TRY(lpv_dist_max_f32(&nlo, 1, err));
        LPV_TRY(lpv_dist_max_f32(&s->hi[i], 1, err));
        s->lo[i] = -nlo;
        LPV_TRY(lpv_dist_sum_i64(&s->values[i], 1, err));
    }
    return lpv_dist_sum_i64(&s->images, 1, err);
}

lpv_status lpv_act_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch, lpv_skips *skips,
                           lpv_act_stats *s, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    act_ctx c = {s, {0}};
    s->n = lpv_model_layers(m, refs, LPV_MAX_LAYERS), s->images = 0;
    lpv_status st = LPV_OK;
    for (int i = 0; i < s->n && st == LPV_OK; i++) {
        s->lo[i] = s->hi[i] = 0, s->bound[i] = BOUND0, s->values[i] = 0, c.in[i] = refs[i].lin->in;
        if (s->want[i] && !(s->hist[i] = calloc(LPV_ACT_BINS, sizeof(double))))
            st = lpv_fail(err, LPV_E_OOM, "out of memory for input histograms");
    }
    if (st == LPV_OK) st = lpv_tap_pass(m, ds, pp, batch, skips, act_tap, &c, "input ranges", &s->images, err);
    if (st == LPV_OK) st = reduce_ranks(s, err);
    if (st) lpv_act_stats_free(s);
    return st;
}

lpv_qact lpv_act_grid(float lo, float hi) {
    lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
    float sc = hi > lo && isfinite(hi - lo) ? (hi - lo) / 255.0f : 1.0f;
    float zp = nearbyintf(-lo / sc);
    zp = zp > 255.0f ? 255.0f : zp < 0.0f ? 0.0f : zp;
    return (lpv_qact){0, sc, (int)zp};
}

/* Σ h (dequant(quant(c)) − c)² over the nonzero bins (centres c, counts h), per value. */
static double grid_err(const float *c, const double *h, int n, double total, lpv_qact q) {
    double e = 0, inv = 1.0 / q.scale;
    for (int k = 0; k < n; k++) {
        double u = nearbyint(c[k] * inv) + q.zp;
        u = u < 0 ? 0 : u > 255 ? 255 : u;
        double d = (u - q.zp) * q.scale - c[k];
        e += h[k] * d * d;
    }
    return total > 0 ? e / total : 0;
}

/* The nonzero bins of layer i: centres and counts (malloc'd), their number, and the total count. */
static int nonzero_bins(const lpv_act_stats *s, int i, float **c, double **h, double *total) {
    const double *hist = s->hist[i];
    int n = 0;
    *total = 0;
    for (int k = 0; k < LPV_ACT_BINS; k++) n += hist[k] > 0;
    *c = malloc(sizeof(float) * (size_t)(n + 1)), *h = malloc(sizeof(double) * (size_t)(n + 1));
    if (!*c || !*h) return -1;
    float B = s->bound[i], w = 2 * B / LPV_ACT_BINS;
    n = 0;
    for (int k = 0; k < LPV_ACT_BINS; k++)
        if (hist[k] > 0) (*c)[n] = -B + (k + 0.5f) * w, (*h)[n++] = hist[k], *total += hist[k];
    return n;
}

double lpv_act_mse(const lpv_act_stats *s, int i, lpv_qact q) {
    float *c;
    double *h, total;
    int n = nonzero_bins(s, i, &c, &h, &total);
    double e = n >= 0 ? grid_err(c, h, n, total, q) : NAN;
    free(c), free(h);
    return e;
}

lpv_qact lpv_act_choose(const lpv_act_stats *s, int i, lpv_act_mode mode) {
    lpv_qact best = lpv_act_grid(s->lo[i], s->hi[i]);
    if (mode != LPV_ACT_MSE) return best;
    float *c;
    double *h, total;
    int n = nonzero_bins(s, i, &c, &h, &total);
    if (n > 0) {
        int G = LPV_ACT_GRID, na = s->lo[i] < 0 ? G : 1;
        double err[LPV_ACT_GRID * LPV_ACT_GRID];
#pragma omp parallel for num_threads(lpv_team_size()) schedule(dynamic, 1)
        for (int a = 0; a < na; a++)
            for (int b = 0; b < G; b++) /* lo · (G − a) / G, hi · (G − b) / G: from the full range down */
                err[a * G + b] = grid_err(c, h, n, total,
                                          lpv_act_grid(s->lo[i] * (G - a) / G, s->hi[i] * (G - b) / G));
        int k = 0;
        for (int j = 1; j < na * G; j++)
            if (err[j] < err[k]) k = j;
        best = lpv_act_grid(s->lo[i] * (G - k / G) / G, s->hi[i] * (G - k % G) / G);
    }
    free(c), free(h);
    return best;
}
