/*
 * saliency.c — block scores and distortion curves (see include/lpvit/saliency.h).
 *
 * Every criterion reduces the (out, in) weight to one number per R x C block,
 * sorts the blocks by it, and turns the sorted list into a curve. For the
 * additive criteria (l1, fisher, taylor2) the curve is a running sum. LPViT's
 * curve is not additive: its first-order term is a mean over the layer of
 * (Δw ⊙ g)² and its second-order term is built step by step on a 101-point
 * grid of pruned fractions, exactly as tools/pruners.py does.
 */
#include "lpvit/saliency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

LPV_ENUM_FUNCS(lpv_saliency_kind, lpv_saliency_name, lpv_saliency_parse, LPV_SALIENCY_LIST, LPV_SAL_COUNT, "saliency")

/* what: 0 |x|, 1 |x·y|, 2 ½ z x², 3 x·y, 4 (x·y)², 5 x */
static double elem(int what, float x, float y, float z) {
    switch (what) {
    case 0: return fabsf(x);
    case 1: return fabs((double)x * y);
    case 2: return 0.5 * (double)z * x * x;
    case 3: return (double)x * y;
    case 4: return ((double)x * y) * ((double)x * y);
    default: return x;
    }
}

double lpv_block_sum_ref(const float *x, const float *y, const float *z, int out, int in, int R, int C, int br, int bc,
                         int what) {
    double s = 0;
    for (int r = br * R; r < (br + 1) * R && r < out; r++)
        for (int c = bc * C; c < (bc + 1) * C && c < in; c++) {
            int64_t i = (int64_t)r * in + c;
            s += elem(what, x[i], y ? y[i] : 0, z ? z[i] : 0);
        }
    return s;
}

/* sums[b] += over block b of elem(what, x, y, z), one pass over the weight in memory order. */
static void block_sums(double *sums, const float *x, const float *y, const float *z, int out, int in, int R, int C,
                       int nbc, int what) {
    for (int r = 0; r < out; r++) {
        const float *xr = x + (int64_t)r * in, *yr = y ? y + (int64_t)r * in : NULL, *zr = z ? z + (int64_t)r * in : NULL;
        double *sb = sums + (int64_t)(r / R) * nbc;
        for (int bc = 0; bc < nbc; bc++) {
            double s = 0;
            int c1 = (bc + 1) * C < in ? (bc + 1) * C : in;
            for (int c = bc * C; c < c1; c++) s += elem(what, xr[c], yr ? yr[c] : 0, zr ? zr[c] : 0);
            sb[bc] += s;
        }
    }
}

static int64_t block_elems(int out, int in, int R, int C, int nbc, int b) {
    int br = b / nbc, bc = b % nbc;
    int rows = (br + 1) * R < out ? R : out - br * R, cols = (bc + 1) * C < in ? C : in - bc * C;
    return (int64_t)rows * cols;
}

/* Sort key for qsort: ascending score, ties by block index (deterministic). */
static const float *g_sort_score;
static int cmp_block(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_sort_score[i], y = g_sort_score[j];
    if (x < y) return -1;
    if (x > y) return 1;
    return (i > j) - (i < j);
}

static void sort_blocks(int32_t *order, const float *score, int nb) {
    for (int i = 0; i < nb; i++) order[i] = i;
    g_sort_score = score; /* single-threaded use only */
    qsort(order, (size_t)nb, sizeof *order, cmp_block);
}

/* ---- LPViT's curve on its grid (tools/pruners.py gen_rd_curves_block_approx) ---- */

/* Pruned block count at grid point d: LPViT keeps int((1 - a) * n) blocks, a = d / 100. */
static int lpvit_pruned_at(int d, int nb) {
    int keep = (int)((1.0 - d / 100.0) * nb + 1e-9);
    return nb - keep;
}

/*
 * D(a_d) = D1 + S2 with Δw_d = −w on the first k_d blocks of `order`:
 *   D1 = mean over all entries of (Δw ⊙ g)²
 *   S2 += ½ (ΔΔw + 2Δw_d)ᵀ g gᵀ ΔΔw  (the code's increment; it over-counts (gᵀΔΔw)² per step)
 * where ΔΔw = Δw_d − Δw_{d−1}. With dot = gᵀΔΔw and tot = gᵀΔw_d this is ½ (dot + 2 tot) dot.
 * LPViT's damping multiplies (ΔΔw + 2Δw_d) by 1e-7 on the newly pruned entries (instead of
 * 1e-7·ΔΔw), i.e. adds ½·1e-7·(−3 Σ_new w); kept for faithfulness, it is negligible.
 */
static void lpvit_grid(double *grid, const double *wg2, const double *wg, const double *wsum, const int32_t *order,
                       int nb, int64_t numel, int second_order, double smooth) {
    double d1 = 0, tot = 0, s2 = 0;
    int k = 0;
    for (int d = 0; d < LPV_LPVIT_GRID; d++) {
        int kd = lpvit_pruned_at(d, nb);
        double dot = 0, wnew = 0;
        for (; k < kd; k++) {
            int b = order[k];
            d1 += wg2[b];
            dot -= wg[b]; /* Δw = −w on the block: gᵀΔΔw = −Σ g w */
            wnew += wsum[b];
        }
        tot += dot;
        if (second_order && d > 0) s2 += 0.5 * (dot + 2 * tot) * dot + 0.5 * 1e-7 * (-3.0 * wnew);
        grid[d] = d1 / (double)numel + s2;
    }
    if (smooth > 0) { /* de-biased EMA over the grid (tools/algo.py smooth) */
        double ema = 0;
        for (int d = 0; d < LPV_LPVIT_GRID; d++) {
            ema = smooth * ema + (1 - smooth) * grid[d];
            grid[d] = ema / (1 - pow(smooth, d + 1));
        }
    }
}

/* Full-resolution curve: linear between the grid points that bracket each k. */
static void lpvit_curve_from_grid(double *curve, const double *grid, int nb) {
    int prev_k = 0;
    double prev_v = grid[0];
    curve[0] = 0;
    for (int d = 1; d < LPV_LPVIT_GRID; d++) {
        int kd = lpvit_pruned_at(d, nb);
        for (int k = prev_k + 1; k <= kd; k++)
            curve[k] = prev_v + (grid[d] - prev_v) * (double)(k - prev_k) / (double)(kd - prev_k);
        if (kd > prev_k) prev_k = kd, prev_v = grid[d];
    }
    for (int k = prev_k + 1; k <= nb; k++) curve[k] = prev_v;
    curve[0] = grid[0];
}

lpv_status lpv_saliency_layer(lpv_saliency_kind kind, const lpv_sal_inputs *in, const lpv_sal_opts *o, int out,
                              int in_features, int R, int C, lpv_layer_sal *s, lpv_arena *a, lpv_err *err) {
    int nbr = lpv_ceil_div(out, R), nbc = lpv_ceil_div(in_features, C), nb = nbr * nbc;
    if (kind == LPV_SAL_LPVIT && !in->g)
        return lpv_fail(err, LPV_E_ARG, "saliency '%s' needs gradients", lpv_saliency_name(kind));
    if (kind == LPV_SAL_FISHER && !in->f)
        return lpv_fail(err, LPV_E_ARG, "saliency 'fisher' needs the Fisher diagonal");
    if (kind == LPV_SAL_TAYLOR2 && !in->bf)
        return lpv_fail(err, LPV_E_ARG, "saliency 'taylor2' needs per-block second moments");
    if ((kind == LPV_SAL_OBS || kind == LPV_SAL_WANDA) && (!in->block_scores || !(in->norm > 0)))
        return lpv_fail(err, LPV_E_ARG, "saliency '%s' needs block scores and the output energy", lpv_saliency_name(kind));
    s->out = out, s->in = in_features, s->R = R, s->C = C, s->nbr = nbr, s->nbc = nbc, s->nb = nb;
    s->order = lpv_arena_alloc(a, sizeof(int32_t) * (size_t)nb);
    s->curve = lpv_arena_alloc(a, sizeof(double) * (size_t)(nb + 1));
    s->score = lpv_arena_alloc(a, sizeof(float) * (size_t)nb);
    s->elems = lpv_arena_alloc(a, sizeof(int64_t) * (size_t)(nb + 1));
    s->grid = NULL;
    double *t1 = calloc((size_t)nb, sizeof(double)), *t2 = calloc((size_t)nb, sizeof(double));
    int64_t *belem = malloc(sizeof(int64_t) * (size_t)nb);
    if (!s->order || !s->curve || !s->score || !s->elems || !t1 || !t2 || !belem) {
        free(t1), free(t2), free(belem);
        return lpv_fail(err, LPV_E_OOM, "out of memory scoring '%s'", s->name);
    }
    for (int b = 0; b < nb; b++) belem[b] = block_elems(out, in_features, R, C, nbc, b);
    /* per-block terms: t1 = the curve increment, score = the sort key */
    switch (kind) {
    case LPV_SAL_L1:
        block_sums(t1, in->w, NULL, NULL, out, in_features, R, C, nbc, 0);
        for (int b = 0; b < nb; b++) s->score[b] = (float)(t1[b] / (double)belem[b]);
        break;
    case LPV_SAL_FISHER:
        block_sums(t1, in->w, NULL, in->f, out, in_features, R, C, nbc, 2);
        for (int b = 0; b < nb; b++) s->score[b] = (float)t1[b];
        break;
    case LPV_SAL_TAYLOR2: /* g == NULL: no first-order term */
        if (in->g) block_sums(t2, in->w, in->g, NULL, out, in_features, R, C, nbc, 3);
        for (int b = 0; b < nb; b++) t1[b] = 0.5 * (double)in->bf[b] - t2[b], s->score[b] = (float)t1[b];
        break;
    case LPV_SAL_OBS:
    case LPV_SAL_WANDA:
        for (int b = 0; b < nb; b++) t1[b] = in->block_scores[b] / in->norm, s->score[b] = (float)t1[b];
        break;
    case LPV_SAL_LPVIT: /* curves and the search rank by block-mean |w·g| */
        block_sums(t1, in->w, in->g, NULL, out, in_features, R, C, nbc, 1);
        for (int b = 0; b < nb; b++) s->score[b] = (float)(t1[b] / (double)belem[b]);
        break;
    default:
        free(t1), free(t2), free(belem);
        return lpv_fail(err, LPV_E_ARG, "unknown saliency");
    }
    sort_blocks(s->order, s->score, nb);
    if (kind == LPV_SAL_LPVIT) {
        /* the curve always uses the Taylor ranking's w·g terms, as LPViT's curve generation does */
        memset(t1, 0, sizeof(double) * (size_t)nb);
        memset(t2, 0, sizeof(double) * (size_t)nb);
        block_sums(t1, in->w, in->g, NULL, out, in_features, R, C, nbc, 4);
        block_sums(t2, in->w, in->g, NULL, out, in_features, R, C, nbc, 3);
        double *t3 = calloc((size_t)nb, sizeof(double));
        s->grid = lpv_arena_alloc(a, sizeof(double) * LPV_LPVIT_GRID);
        if (!s->grid || !t3) {
            free(t1), free(t2), free(t3), free(belem);
            return lpv_fail(err, LPV_E_OOM, "out of memory");
        }
        block_sums(t3, in->w, NULL, NULL, out, in_features, R, C, nbc, 5);
        lpvit_grid(s->grid, t1, t2, t3, s->order, nb, (int64_t)out * in_features, o ? o->second_order : 1,
                   o ? o->smooth : 0);
        free(t3);
        lpvit_curve_from_grid(s->curve, s->grid, nb);
        if (o && o->as_released) { /* but LPViT's saved masks keep the largest block-mean |W| (rank/ranking bug) */
            memset(t1, 0, sizeof(double) * (size_t)nb);
            block_sums(t1, in->w, NULL, NULL, out, in_features, R, C, nbc, 0);
            for (int b = 0; b < nb; b++) s->score[b] = (float)(t1[b] / (double)belem[b]);
            sort_blocks(s->order, s->score, nb);
        }
    } else {
        s->curve[0] = 0;
        for (int k = 0; k < nb; k++) s->curve[k + 1] = s->curve[k] + t1[s->order[k]];
    }
    s->elems[0] = 0;
    for (int k = 0; k < nb; k++) s->elems[k + 1] = s->elems[k] + belem[s->order[k]];
    free(t1), free(t2), free(belem);
    return LPV_OK;
}
