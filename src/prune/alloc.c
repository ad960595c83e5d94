/* alloc.c — greedy and LPViT equal-slope allocators (see include/lpvit/alloc.h). */
#include "lpvit/alloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double lpv_alloc_kept_macs(const lpv_layer_sal *s, int k) {
    int64_t all = (int64_t)s->out * s->in;
    return (double)s->tokens * (double)(all - s->elems[k]);
}

static double total_kept(const lpv_alloc_layer *L, int n, const int *k) {
    double t = 0;
    for (int i = 0; i < n; i++) t += lpv_alloc_kept_macs(L[i].sal, k[i]);
    return t;
}

/* ---- greedy: a binary min-heap of layers keyed by the ratio of their next step ---- */

typedef struct {
    double key;
    int layer;
} heap_item;

static int heap_less(const heap_item *a, const heap_item *b) {
    return a->key < b->key || (a->key == b->key && a->layer < b->layer);
}

static void heap_push(heap_item *h, int *n, heap_item x) {
    int i = (*n)++;
    h[i] = x;
    while (i > 0 && heap_less(&h[i], &h[(i - 1) / 2])) {
        heap_item t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static heap_item heap_pop(heap_item *h, int *n) {
    heap_item top = h[0];
    h[0] = h[--(*n)];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && heap_less(&h[l], &h[m])) m = l;
        if (r < *n && heap_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

/* Δdistortion / Δcost of pruning block k of layer L; a step that saves no cost goes last. */
static double step_ratio(const lpv_alloc_layer *L, int k) {
    double dd = L->sal->curve[k + 1] - L->sal->curve[k];
    double dc = L->cost[k] - L->cost[k + 1];
    if (!(dc > 0)) return dd <= 0 ? 1e300 * 0.5 : 1e300;
    return dd / dc;
}

lpv_status lpv_alloc_greedy(const lpv_alloc_layer *L, int n, double target_kept_macs, int *k, lpv_alloc_info *info,
                            lpv_err *err) {
    heap_item *h = malloc(sizeof *h * ((size_t)n + 1));
    if (!h) return lpv_fail(err, LPV_E_OOM, "out of memory");
    int hn = 0;
    double kept = 0, floor_macs = 0;
    for (int i = 0; i < n; i++) {
        k[i] = 0;
        kept += lpv_alloc_kept_macs(L[i].sal, 0);
        floor_macs += lpv_alloc_kept_macs(L[i].sal, L[i].kmax);
        if (L[i].kmax > 0) heap_push(h, &hn, (heap_item){step_ratio(&L[i], 0), i});
    }
    if (target_kept_macs < floor_macs * (1 - 1e-12)) {
        free(h);
        return lpv_fail_param(err, LPV_E_ARG, "min_density",
                              "the target keeps %.4g of the prunable FLOPs but the per-layer minimum density allows no "
                              "less than %.4g (lower it)",
                        target_kept_macs / kept, floor_macs / kept);
    }
    int steps = 0;
    while (kept > target_kept_macs && hn > 0) {
        heap_item it = heap_pop(h, &hn);
        int l = it.layer;
        kept -= lpv_alloc_kept_macs(L[l].sal, k[l]) - lpv_alloc_kept_macs(L[l].sal, k[l] + 1);
        k[l]++;
        steps++;
        if (k[l] < L[l].kmax) heap_push(h, &hn, (heap_item){step_ratio(&L[l], k[l]), l});
    }
    free(h);
    if (info) info->greedy_steps = steps;
    return LPV_OK;
}

/* ---- uniform: one pruned fraction for every layer ---- */

static double uniform_kept(const lpv_alloc_layer *L, int n, double frac, int *k) {
    double kept = 0;
    for (int i = 0; i < n; i++) {
        int kk = (int)floor(frac * L[i].sal->nb);
        k[i] = kk < L[i].kmax ? kk : L[i].kmax;
        kept += lpv_alloc_kept_macs(L[i].sal, k[i]);
    }
    return kept;
}

lpv_status lpv_alloc_uniform(const lpv_alloc_layer *L, int n, double target_kept_macs, int *k, lpv_alloc_info *info,
                             lpv_err *err) {
    double lo = 0, hi = 1;
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi);
        if (uniform_kept(L, n, mid, k) > target_kept_macs) lo = mid;
        else hi = mid;
    }
    double kept = uniform_kept(L, n, lo, k);
    /* the last blocks one at a time, spread over layers in turn, so no layer gets ahead */
    int steps = 0, progress = 1;
    while (kept > target_kept_macs && progress) {
        progress = 0;
        for (int i = 0; i < n && kept > target_kept_macs; i++) {
            /* the layer furthest behind the common fraction goes next */
            int best = -1;
            double bf = INFINITY;
            for (int j = 0; j < n; j++) {
                if (k[j] >= L[j].kmax) continue;
                double f = (double)k[j] / L[j].sal->nb;
                if (f < bf) bf = f, best = j;
            }
            if (best < 0) break;
            kept -= lpv_alloc_kept_macs(L[best].sal, k[best]) - lpv_alloc_kept_macs(L[best].sal, k[best] + 1);
            k[best]++;
            steps++;
            progress = 1;
        }
    }
    if (kept > target_kept_macs * (1 + 1e-9))
        return lpv_fail_param(err, LPV_E_ARG, "min_density", "the target is below what it allows (lower it)");
    if (info) info->greedy_steps = steps;
    return LPV_OK;
}

/* ---- LPViT: equal-slope search on the 101-point grid ---- */

static int grid_pruned(int d, int nb) { return nb - (int)((1.0 - d / 100.0) * nb + 1e-9); }

/* tools/algo.py derivative_approx: 5-point stencil with half-width h_i = min(h, i, 100 - i). */
static void stencil(double *dy, const double *y, int h) {
    const int N = LPV_LPVIT_GRID;
    for (int i = 0; i < N; i++) {
        int hi = h < i ? h : i;
        hi = hi < N - 1 - i ? hi : N - 1 - i;
        double dx = 0.01;
        if (hi >= 2) {
            int q = hi / 2;
            dy[i] = (-y[i + hi] + 8 * y[i + q] - 8 * y[i - q] + y[i - hi]) / (6 * hi * dx);
        } else if (hi == 1) {
            dy[i] = (y[i + 1] - y[i - 1]) / (2 * dx);
        } else if (i == 0) {
            dy[i] = (y[1] - y[0]) / dx;
        } else {
            dy[i] = (y[i] - y[i - 1]) / dx;
        }
    }
}

/* Pruned-fraction grid index of each layer for slope 2^s (pareto_condition). */
static void pareto(int *idx, double *const *dy, int n, double s, int max_idx) {
    double lam = pow(2.0, s);
    for (int l = 0; l < n; l++) {
        int best = 0;
        double bd = INFINITY;
        for (int i = 0; i < LPV_LPVIT_GRID; i++) {
            double d = fabs(dy[l][i] - lam);
            if (d < bd) bd = d, best = i;
        }
        idx[l] = best < max_idx ? best : max_idx;
    }
}

static double ratio_at(const lpv_alloc_layer *L, int n, const int *idx, int *k, double dense) {
    for (int l = 0; l < n; l++) {
        int kk = grid_pruned(idx[l], L[l].sal->nb);
        k[l] = kk < L[l].kmax ? kk : L[l].kmax;
    }
    return total_kept(L, n, k) / dense;
}

lpv_status lpv_alloc_lpvit(const lpv_alloc_layer *L, int n, double target_ratio, const lpv_lpvit_opts *o, int *k,
                           lpv_alloc_info *info, lpv_err *err) {
    const int N = LPV_LPVIT_GRID;
    double **dy = calloc((size_t)n, sizeof *dy), *y = malloc(sizeof(double) * N), *pw = malloc(sizeof(double) * N);
    double *dp = malloc(sizeof(double) * N);
    int *idx = malloc(sizeof(int) * (size_t)n), *kb = malloc(sizeof(int) * (size_t)n);
    lpv_status st = (!dy || !y || !pw || !dp || !idx || !kb) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    for (int l = 0; l < n && !st; l++) {
        if (!L[l].sal->grid) st = lpv_fail_param(err, LPV_E_ARG, "allocator", "lpvit needs the lpvit saliency's curves");
        else if (!(dy[l] = malloc(sizeof(double) * N))) st = lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    double beta = 0;
    if (!st && o->power) { /* β = mean over layers of max D' / mean of max P' (h = 10), tools/pruners.py */
        double md = 0, mp = 0;
        for (int l = 0; l < n; l++) {
            const lpv_layer_sal *s = L[l].sal;
            int in16 = (s->kind == LPV_LK_PATCH ? 224 : s->in) / 16;
            for (int i = 0; i < N; i++) pw[i] = (i / 100.0) * s->nb * in16;
            stencil(y, s->grid, 10);
            stencil(dp, pw, 10);
            double a = -INFINITY, b = -INFINITY;
            for (int i = 0; i < N; i++) a = y[i] > a ? y[i] : a, b = dp[i] > b ? dp[i] : b;
            md += a, mp += b;
        }
        beta = mp > 0 ? md / mp : 0;
    }
    for (int l = 0; l < n && !st; l++) {
        const lpv_layer_sal *s = L[l].sal;
        int in16 = (s->kind == LPV_LK_PATCH ? 224 : s->in) / 16;
        for (int i = 0; i < N; i++) y[i] = s->grid[i] + beta * (i / 100.0) * s->nb * in16;
        stencil(dy[l], y, o->h);
    }
    if (!st) {
        double dense = 0;
        for (int l = 0; l < n; l++) dense += lpv_alloc_kept_macs(L[l].sal, 0);
        double min_sp = o->min_sp < (1 - target_ratio) / 2 ? o->min_sp : (1 - target_ratio) / 2;
        int max_idx = (int)floor((1 - min_sp) * 100 + 1e-9);
        /* LPViT binary-searches s assuming the kept ratio falls as s grows; with non-convex (noisy or
           smoothed) curves the closest-slope rule is not monotone, so scan s in [-100, 100] instead
           (each probe is cheap) and keep the smallest ratio still above the target, or an exact hit */
        double best_above = -100, best_ratio = INFINITY, r = 1;
        int it = 0, hit = 0;
        for (double sl = -100; sl <= 100 && !hit; sl += 0.05, it++) {
            pareto(idx, dy, n, sl, max_idx);
            r = ratio_at(L, n, idx, k, dense);
            if (fabs(r - target_ratio) <= o->tol) hit = 1, best_above = sl;
            else if (r > target_ratio && r < best_ratio) best_ratio = r, best_above = sl;
        }
        double lo = best_above, hi = best_above;
        if (info) info->lpvit_iterations = it, info->lpvit_beta = beta;
        int topup = 0;
        if (!hit) {
            /* grid too coarse: take the last allocation above the target and finish greedily */
            pareto(idx, dy, n, best_above, max_idx);
            r = ratio_at(L, n, idx, k, dense);
            memcpy(kb, k, sizeof(int) * (size_t)n);
            {
                double target = target_ratio * dense;
                double kept = total_kept(L, n, kb);
                while (kept > target) {
                    int bl = -1;
                    double br = INFINITY;
                    for (int l = 0; l < n; l++) {
                        if (kb[l] >= L[l].kmax) continue;
                        double dd = L[l].sal->curve[kb[l] + 1] - L[l].sal->curve[kb[l]];
                        double dm = lpv_alloc_kept_macs(L[l].sal, kb[l]) - lpv_alloc_kept_macs(L[l].sal, kb[l] + 1);
                        double q = dm > 0 ? dd / dm : INFINITY;
                        if (q < br) br = q, bl = l;
                    }
                    if (bl < 0) { /* every layer at its floor and still above the target */
                        int *kmax = kb;
                        for (int l = 0; l < n; l++) kmax[l] = L[l].kmax;
                        st = lpv_fail_param(err, LPV_E_ARG, "min_density",
                                            "the target keeps %.4g of the prunable FLOPs but the per-layer minimum "
                                            "density allows no less than %.4g (lower it)",
                                            target_ratio, total_kept(L, n, kmax) / dense);
                        break;
                    }
                    kept -= lpv_alloc_kept_macs(L[bl].sal, kb[bl]) - lpv_alloc_kept_macs(L[bl].sal, kb[bl] + 1);
                    kb[bl]++;
                    topup++;
                }
                memcpy(k, kb, sizeof(int) * (size_t)n);
            }
        }
        if (info) info->lpvit_slope = 0.5 * (lo + hi), info->lpvit_topup = topup;
    }
    for (int l = 0; dy && l < n; l++) free(dy[l]);
    free(dy), free(y), free(pw), free(dp), free(idx), free(kb);
    return st;
}
