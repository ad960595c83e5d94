/*
 * test_prune_algos.c — the pruning math against plain references:
 * block sums and orders of every saliency criterion, LPViT's curve against a
 * literal transcription of its code (dense vectors, step by step), the greedy
 * allocator against exhaustive search on small problems, the uniform and
 * LPViT allocators' targets, cost-table round trips and validation (each
 * precision), measured tables in fp32, bf16 and int8, and the energy proxy's
 * monotonicity.
 */
#include <unistd.h>

#include "lpvit/alloc.h"
#include "lpvit/cost.h"
#include "lpvit/cpu.h"
#include "lpvit/fileio.h"
#include "lpvit/rng.h"
#include "lpvit/saliency.h"
#include "test.h"

static void fill(float *x, int n, lpv_rng *r, float s) {
    for (int i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(r) * s;
}

/* LPViT's tools/pruners.py, transcribed literally on dense vectors (research/lpvit.md §2.5). */
static void lpvit_grid_literal(double *grid, const float *w, const float *g, const int32_t *order, int out, int in,
                               int R, int C) {
    int nbc = (in + C - 1) / C, nb = ((out + R - 1) / R) * nbc, n = out * in;
    double *dw = calloc((size_t)n, sizeof(double)), *dw_prev = calloc((size_t)n, sizeof(double));
    double s2 = 0;
    for (int d = 0; d < LPV_LPVIT_GRID; d++) {
        int keep = (int)((1.0 - d / 100.0) * nb + 1e-9), pruned = nb - keep;
        for (int i = 0; i < n; i++) dw[i] = 0;
        for (int q = 0; q < pruned; q++) {
            int b = order[q], br = b / nbc, bc = b % nbc;
            for (int r = br * R; r < (br + 1) * R && r < out; r++)
                for (int c = bc * C; c < (bc + 1) * C && c < in; c++) dw[r * in + c] = -w[r * in + c];
        }
        double d1 = 0;
        for (int i = 0; i < n; i++) d1 += (dw[i] * g[i]) * (dw[i] * g[i]);
        d1 /= n;
        if (d > 0) { /* S2 += 0.5 (ddw + 2 dw)^T [g (g^T ddw) + 1e-7 1_nz(ddw)] */
            double gddw = 0;
            for (int i = 0; i < n; i++) gddw += g[i] * (dw[i] - dw_prev[i]);
            double acc = 0;
            for (int i = 0; i < n; i++) {
                double ddw = dw[i] - dw_prev[i];
                acc += (ddw + 2 * dw[i]) * (g[i] * gddw + (ddw != 0 ? 1e-7 : 0));
            }
            s2 += 0.5 * acc;
        }
        grid[d] = d1 + s2;
        memcpy(dw_prev, dw, sizeof(double) * (size_t)n);
    }
    free(dw), free(dw_prev);
}

static void test_saliency(lpv_rng *r) {
    int shapes[][4] = {{64, 96, 16, 32}, {40, 64, 32, 32}, {100, 48, 16, 16}};
    for (int s = 0; s < 3; s++) {
        int out = shapes[s][0], in = shapes[s][1], R = shapes[s][2], C = shapes[s][3];
        int n = out * in, nbr = (out + R - 1) / R, nbc = (in + C - 1) / C, nb = nbr * nbc;
        float *w = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n), *f = malloc(sizeof(float) * n);
        float *bf = malloc(sizeof(float) * nb);
        double *bs = malloc(sizeof(double) * nb);
        for (int b = 0; b < nb; b++) bs[b] = lpv_rng_uniform(r);
        fill(w, n, r, 0.1f), fill(g, n, r, 0.01f);
        for (int i = 0; i < n; i++) f[i] = fabsf(g[i]) * 3;
        for (int b = 0; b < nb; b++) bf[b] = (float)lpv_rng_uniform(r);
        lpv_arena a;
        lpv_arena_init(&a, 1 << 16);
        lpv_err err;
        for (int kind = 0; kind < LPV_SAL_COUNT; kind++) {
            lpv_layer_sal sal;
            memset(&sal, 0, sizeof sal);
            lpv_sal_inputs inp = {w, g, f, bf, bs, 2.0};
            lpv_sal_opts so = {0, 0, 1};
            CHECK_OK(lpv_saliency_layer((lpv_saliency_kind)kind, &inp, &so, out, in, R, C, &sal, &a, &err), &err);
            CHECK(sal.nb == nb && sal.elems[nb] == n);
            /* order is a permutation sorted by score */
            int *seen = calloc((size_t)nb, sizeof(int)), okperm = 1, sorted = 1;
            for (int q = 0; q < nb; q++) okperm &= !seen[sal.order[q]]++;
            for (int q = 1; q < nb; q++) sorted &= sal.score[sal.order[q - 1]] <= sal.score[sal.order[q]];
            CHECKF(okperm && sorted, "kind %d order", kind);
            free(seen);
            for (int b = 0; b < nb; b++) {
                int br = b / nbc, bc = b % nbc;
                double el = lpv_block_sum_ref(w, NULL, NULL, out, in, R, C, br, bc, 5) * 0 +
                            (double)(((br + 1) * R < out ? R : out - br * R) * ((bc + 1) * C < in ? C : in - bc * C));
                double want = kind == LPV_SAL_OBS || kind == LPV_SAL_WANDA ? bs[b] / 2.0
                              : kind == LPV_SAL_L1       ? lpv_block_sum_ref(w, NULL, NULL, out, in, R, C, br, bc, 0) / el
                              : kind == LPV_SAL_FISHER ? lpv_block_sum_ref(w, NULL, f, out, in, R, C, br, bc, 2)
                              : kind == LPV_SAL_TAYLOR2
                                  ? 0.5 * bf[b] - lpv_block_sum_ref(w, g, NULL, out, in, R, C, br, bc, 3)
                                  : lpv_block_sum_ref(w, g, NULL, out, in, R, C, br, bc, 1) / el;
                CHECKF(fabs(sal.score[b] - want) <= 1e-5 * (fabs(want) + 1e-6), "kind %d block %d: %g vs %g", kind, b,
                       (double)sal.score[b], want);
            }
            if (kind != LPV_SAL_LPVIT) { /* additive curves: running sums of the scores (L1: of block sums) */
                double c = 0;
                int ok = 1;
                for (int q = 0; q < nb; q++) {
                    int b = sal.order[q], br = b / nbc, bc = b % nbc;
                    c += kind == LPV_SAL_L1 ? lpv_block_sum_ref(w, NULL, NULL, out, in, R, C, br, bc, 0) : sal.score[b];
                    ok &= fabs(sal.curve[q + 1] - c) <= 1e-6 * (fabs(c) + 1e-6);
                }
                CHECKF(ok, "kind %d curve", kind);
            } else {
                double lit[LPV_LPVIT_GRID];
                lpvit_grid_literal(lit, w, g, sal.order, out, in, R, C);
                double e = 0, mx = 0;
                for (int d = 0; d < LPV_LPVIT_GRID; d++) {
                    e = fmax(e, fabs(sal.grid[d] - lit[d]));
                    mx = fmax(mx, fabs(lit[d]));
                }
                CHECKF(e <= 1e-9 + 1e-7 * mx, "lpvit grid differs from the literal transcription: %g (max %g)", e, mx);
                /* the full-resolution curve passes through the grid points */
                for (int d = 0; d < LPV_LPVIT_GRID; d += 10) {
                    int k = nb - (int)((1.0 - d / 100.0) * nb + 1e-9);
                    CHECK(fabs(sal.curve[k] - sal.grid[d]) <= 1e-12 + 1e-9 * fabs(sal.grid[d]) || k == 0);
                }
                /* as released: same curve, magnitude order */
                lpv_layer_sal s2;
                memset(&s2, 0, sizeof s2);
                lpv_sal_opts rel = {1, 0, 1};
                CHECK_OK(lpv_saliency_layer(LPV_SAL_LPVIT, &inp, &rel, out, in, R, C, &s2, &a, &err), &err);
                CHECK(memcmp(s2.grid, sal.grid, sizeof(double) * LPV_LPVIT_GRID) == 0);
                int same = 1;
                for (int b = 0; b < nb; b++) {
                    int br = b / nbc, bc = b % nbc;
                    double el = (double)(((br + 1) * R < out ? R : out - br * R) * ((bc + 1) * C < in ? C : in - bc * C));
                    same &= fabs(s2.score[b] - lpv_block_sum_ref(w, NULL, NULL, out, in, R, C, br, bc, 0) / el) < 1e-6;
                }
                CHECK(same);
            }
        }
        /* missing inputs are errors, not crashes */
        lpv_layer_sal bad;
        memset(&bad, 0, sizeof bad);
        lpv_sal_inputs none = {w, NULL, NULL, NULL, NULL, 0};
        CHECK(lpv_saliency_layer(LPV_SAL_TAYLOR2, &none, NULL, out, in, R, C, &bad, &a, &err) == LPV_E_ARG);
        CHECK(lpv_saliency_layer(LPV_SAL_LPVIT, &none, NULL, out, in, R, C, &bad, &a, &err) == LPV_E_ARG);
        CHECK(lpv_saliency_layer(LPV_SAL_OBS, &none, NULL, out, in, R, C, &bad, &a, &err) == LPV_E_ARG);
        lpv_arena_free(&a);
        free(w), free(g), free(f), free(bf), free(bs);
    }
}

/* ---- allocators on synthetic layers ---- */

typedef struct {
    lpv_layer_sal s;
    double cost[65];
    double curve[65];
    int32_t order[64];
    int64_t elems[65];
    double grid[LPV_LPVIT_GRID];
} synth;

static void make_layer(synth *y, int nb, int tokens, lpv_rng *r, int convex) {
    memset(y, 0, sizeof *y);
    y->s.out = nb * 8, y->s.in = 8, y->s.R = 8, y->s.C = 8, y->s.nbr = nb, y->s.nbc = 1, y->s.nb = nb;
    y->s.tokens = tokens;
    y->s.order = y->order, y->s.curve = y->curve, y->s.elems = y->elems, y->s.grid = y->grid;
    double inc = 0;
    for (int k = 0; k < nb; k++) {
        y->order[k] = k;
        y->elems[k + 1] = (int64_t)(k + 1) * 64;
        inc = convex ? inc + lpv_rng_uniform(r) : lpv_rng_uniform(r);
        y->curve[k + 1] = y->curve[k] + inc;
    }
    for (int k = 0; k <= nb; k++) y->cost[k] = (double)tokens * (double)(nb - k) * 64;
    for (int d = 0; d < LPV_LPVIT_GRID; d++) {
        int k = nb - (int)((1.0 - d / 100.0) * nb + 1e-9);
        y->grid[d] = y->curve[k];
    }
}

/* Exhaustive minimum of Σ curve over allocations keeping <= target MACs (tiny problems). */
static double brute(const synth *y, int n, int *k, int l, double kept, double target, double acc) {
    if (l == n) return kept <= target + 1e-9 ? acc : INFINITY;
    double best = INFINITY;
    for (k[l] = 0; k[l] <= y[l].s.nb - 1; k[l]++) {
        double v = brute(y, n, k, l + 1, kept - lpv_alloc_kept_macs(&y[l].s, 0) + lpv_alloc_kept_macs(&y[l].s, k[l]),
                         target, acc + y[l].curve[k[l]]);
        best = v < best ? v : best;
    }
    return best;
}

static void test_alloc(lpv_rng *r) {
    lpv_err err;
    for (int trial = 0; trial < 20; trial++) {
        int n = 3, nbs[3] = {6, 4, 5};
        synth y[3];
        lpv_alloc_layer L[3];
        double dense = 0;
        for (int i = 0; i < n; i++) {
            make_layer(&y[i], nbs[i], 10, r, 1);
            L[i] = (lpv_alloc_layer){&y[i].s, y[i].cost, nbs[i] - 1};
            dense += lpv_alloc_kept_macs(&y[i].s, 0);
        }
        double target = dense * (0.3 + 0.5 * lpv_rng_uniform(r));
        int k[3], kb[3];
        lpv_alloc_info info;
        CHECK_OK(lpv_alloc_greedy(L, n, target, k, &info, &err), &err);
        double kept = 0, dist = 0;
        for (int i = 0; i < n; i++) {
            kept += lpv_alloc_kept_macs(&y[i].s, k[i]);
            dist += y[i].curve[k[i]];
            CHECK(k[i] <= L[i].kmax);
        }
        CHECK(kept <= target && kept > target - 64 * 10 - 1e-9); /* within one block */
        /* equal block costs + convex curves: greedy is optimal */
        double best = brute(y, n, kb, 0, dense, target, 0);
        CHECKF(fabs(dist - best) < 1e-9, "greedy %g vs optimum %g", dist, best);
        /* uniform: equal fractions up to one block */
        CHECK_OK(lpv_alloc_uniform(L, n, target, k, &info, &err), &err);
        kept = 0;
        for (int i = 0; i < n; i++) kept += lpv_alloc_kept_macs(&y[i].s, k[i]);
        CHECK(kept <= target + 1e-9);
    }
    /* min density: a target below the floor is refused with a message */
    synth y1;
    make_layer(&y1, 10, 5, r, 1);
    lpv_alloc_layer L1 = {&y1.s, y1.cost, 8};
    int k1;
    CHECK(lpv_alloc_greedy(&L1, 1, 0.1 * lpv_alloc_kept_macs(&y1.s, 0), &k1, NULL, &err) == LPV_E_ARG &&
          strstr(err.msg, "density")); /* names the minimum density ("min_density: ..."), not a CLI flag */
    /* LPViT's allocator reaches the target within its tolerance (search or top-up) */
    synth ys[6];
    lpv_alloc_layer Ls[6];
    for (int i = 0; i < 6; i++) {
        make_layer(&ys[i], 40 + 4 * i, 197, r, 1);
        Ls[i] = (lpv_alloc_layer){&ys[i].s, ys[i].cost, ys[i].s.nb - 2};
    }
    for (double t = 0.3; t < 0.95; t += 0.2) {
        int k6[6];
        lpv_alloc_info info;
        lpv_lpvit_opts lo = {4, 0.05, 0.005, 0};
        CHECK_OK(lpv_alloc_lpvit(Ls, 6, t, &lo, k6, &info, &err), &err);
        double kept = 0, dense = 0;
        for (int i = 0; i < 6; i++) kept += lpv_alloc_kept_macs(&ys[i].s, k6[i]), dense += lpv_alloc_kept_macs(&ys[i].s, 0);
        CHECKF(fabs(kept / dense - t) <= 0.005 || (kept / dense <= t && info.lpvit_topup > 0), "lpvit target %g got %g", t,
               kept / dense);
        lo.power = 1;
        CHECK_OK(lpv_alloc_lpvit(Ls, 6, t, &lo, k6, &info, &err), &err);
        CHECK(info.lpvit_beta > 0);
    }
}

/* ---- allocator contracts (alloc.h) on random layer sets ----
 * Layers of random shapes (partial edge blocks included, so blocks differ in size), random block
 * orders, token counts and curves (convex, noisy, concave), kmax = nb - ceil(min_density * nb) as
 * the CLI sets it or (every third set) a different cap per layer. Checked, exactly as alloc.h
 * states them:
 *   every allocator   0 <= k[l] <= kmax[l]                            (min density respected)
 *   greedy, uniform   kept <= target, and within one block of it: undoing the last pruned block
 *                     of some layer goes back above the target; target >= dense prunes nothing;
 *                     a target below the min-density floor is refused (LPV_E_ARG) and the floor
 *                     itself is reached with every layer at kmax
 *   greedy            info.greedy_steps == Σ k
 *   uniform           the same fraction everywhere up to one block: some f has
 *                     k[l] in {floor(f nb), floor(f nb) + 1} for each layer below its kmax
 *   lpvit             |kept/dense - t| <= tol, or topped up (info.lpvit_topup > 0) to at or
 *                     below t within one block; with no top-up, each layer keeps at least
 *                     floor(min_sp nb) blocks ("capped at 1 - min_sp")
 */
typedef struct {
    lpv_layer_sal s;
    double *cost, *curve, *grid;
    int32_t *order;
    int64_t *elems;
} rlayer;

static int grid_k(int d, int nb) { return nb - (int)((1.0 - d / 100.0) * nb + 1e-9); }

static void rlayer_make(rlayer *y, int out, int in, int R, int C, int tokens, int shape, lpv_rng *r) {
    memset(y, 0, sizeof *y);
    lpv_layer_sal *s = &y->s;
    s->kind = (lpv_layer_kind)lpv_rng_below(r, LPV_LK_HEAD + 1);
    s->out = out, s->in = in, s->R = R, s->C = C;
    s->nbr = (out + R - 1) / R, s->nbc = (in + C - 1) / C, s->nb = s->nbr * s->nbc, s->tokens = tokens;
    int nb = s->nb;
    y->cost = malloc(sizeof(double) * (size_t)(nb + 1));
    y->curve = malloc(sizeof(double) * (size_t)(nb + 1));
    y->grid = malloc(sizeof(double) * LPV_LPVIT_GRID);
    y->order = malloc(sizeof(int32_t) * (size_t)nb);
    y->elems = malloc(sizeof(int64_t) * (size_t)(nb + 1));
    int *perm = malloc(sizeof(int) * (size_t)nb);
    for (int b = 0; b < nb; b++) perm[b] = b;
    lpv_rng_shuffle(r, perm, nb);
    y->elems[0] = 0, y->curve[0] = 0;
    double inc = 0;
    for (int q = 0; q < nb; q++) {
        int b = perm[q], br = b / s->nbc, bc = b % s->nbc;
        int rows = (br + 1) * R <= out ? R : out - br * R, cols = (bc + 1) * C <= in ? C : in - bc * C;
        y->order[q] = b;
        y->elems[q + 1] = y->elems[q] + (int64_t)rows * cols;
        double u = lpv_rng_uniform(r);
        inc = shape == 0 ? inc + u : shape == 1 ? u : 1.0 / (q + 1) + 0.01 * u; /* convex, noisy, concave */
        y->curve[q + 1] = y->curve[q] + inc;
    }
    free(perm);
    for (int k = 0; k <= nb; k++) y->cost[k] = (double)tokens * (double)((int64_t)out * in - y->elems[k]);
    for (int d = 0; d < LPV_LPVIT_GRID; d++) y->grid[d] = y->curve[grid_k(d, nb)];
    s->order = y->order, s->curve = y->curve, s->elems = y->elems, s->grid = y->grid;
    snprintf(s->name, sizeof s->name, "synthetic %dx%d/%dx%d", out, in, R, C);
}

static void rlayer_free(rlayer *y) { free(y->cost), free(y->curve), free(y->grid), free(y->order), free(y->elems); }

/* A random set of n layers: shapes, blocks, tokens drawn from rng; kmax from min_density as the CLI
 * sets it, or (hetero) a random kmax per layer between 30 % and 90 % of its blocks, so that some
 * layers hit their cap long before the others. */
static void rset_make(rlayer *y, lpv_alloc_layer *L, int n, double min_density, int hetero, lpv_rng *r) {
    static const int blocks[][2] = {{8, 8}, {16, 16}, {32, 32}, {16, 8}, {4, 32}};
    static const int tokens[] = {197, 196, 50, 1};
    for (int i = 0; i < n; i++) {
        const int *bl = blocks[lpv_rng_below(r, 5)];
        int out = 8 + (int)lpv_rng_below(r, 120), in = 8 + (int)lpv_rng_below(r, 120);
        rlayer_make(&y[i], out, in, bl[0], bl[1], tokens[lpv_rng_below(r, 4)], (int)lpv_rng_below(r, 3), r);
        int nb = y[i].s.nb, min_keep = (int)ceil(min_density * nb - 1e-9);
        if (min_keep < 1) min_keep = 1;
        int kmax = nb - min_keep;
        if (hetero) kmax = (int)(nb * (0.3 + 0.6 * lpv_rng_uniform(r)));
        L[i] = (lpv_alloc_layer){&y[i].s, y[i].cost, kmax};
    }
}

/* MACs pruning block k (1-based) of s saves. */
static double step_macs(const lpv_layer_sal *s, int k) {
    return lpv_alloc_kept_macs(s, k - 1) - lpv_alloc_kept_macs(s, k);
}

static double set_kept(const lpv_alloc_layer *L, int n, const int *k) {
    double t = 0;
    for (int i = 0; i < n; i++) t += lpv_alloc_kept_macs(L[i].sal, k[i]);
    return t;
}

static int ks_in_range(const lpv_alloc_layer *L, int n, const int *k) {
    for (int i = 0; i < n; i++)
        if (k[i] < 0 || k[i] > L[i].kmax) return 0;
    return 1;
}

/* kept <= target and undoing the last block of some pruned layer goes back above the target. */
static int within_one_block(const lpv_alloc_layer *L, int n, const int *k, double kept, double target) {
    if (!(kept <= target * (1 + 1e-12))) return 0;
    for (int i = 0; i < n; i++)
        if (k[i] > 0 && kept + step_macs(L[i].sal, k[i]) > target) return 1;
    return 0;
}

/* Some fraction f has k[l] in {floor(f nb), floor(f nb) + 1} for every layer below its kmax (and
 * floor(f nb) + 1 >= kmax for the layers at it). */
static int equal_fractions(const lpv_alloc_layer *L, int n, const int *k) {
    double lo = 0, hi = INFINITY;
    for (int i = 0; i < n; i++) {
        double nb = L[i].sal->nb;
        lo = fmax(lo, (k[i] - 1) / nb);               /* floor(f nb) >= k - 1 */
        if (k[i] < L[i].kmax) hi = fmin(hi, (k[i] + 1) / nb); /* floor(f nb) <= k */
    }
    return lo < hi;
}

static void test_alloc_contracts(void) {
    lpv_err err;
    int trials = 0, topups = 0, hits = 0, uniform_topups = 0;
    for (int set = 0; set < 12; set++) {
        lpv_rng r;
        lpv_rng_seed(&r, 1000 + (uint64_t)set); /* fixed seeds: every set is reproducible alone */
        int n = 2 + (int)lpv_rng_below(&r, 9);
        double min_density = (double)lpv_rng_below(&r, 4) * 0.05; /* 0, 0.05, 0.1, 0.15 */
        rlayer *y = calloc((size_t)n, sizeof *y);
        lpv_alloc_layer *L = calloc((size_t)n, sizeof *L);
        int *k = calloc((size_t)n, sizeof *k);
        rset_make(y, L, n, min_density, set % 3 == 2, &r);
        double dense = set_kept(L, n, k), floor_macs = 0;
        for (int i = 0; i < n; i++) floor_macs += lpv_alloc_kept_macs(L[i].sal, L[i].kmax);
        double floor_ratio = floor_macs / dense;

        /* reachable targets between the floor and dense, plus the floor itself and dense */
        for (int t = 0; t < 10; t++, trials++) {
            double ratio = t == 0 ? floor_ratio : t == 1 ? 1.0 : floor_ratio + (1 - floor_ratio) * lpv_rng_uniform(&r);
            double target = ratio * dense;
            lpv_alloc_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(lpv_alloc_greedy(L, n, target, k, &info, &err), &err);
            double kept = set_kept(L, n, k);
            int sum = 0;
            for (int i = 0; i < n; i++) sum += k[i];
            CHECKF(ks_in_range(L, n, k), "set %d greedy: some k outside [0, kmax]", set);
            CHECKF(info.greedy_steps == sum, "set %d greedy: %d steps for %d pruned blocks", set, info.greedy_steps, sum);
            if (t == 1) {
                CHECKF(sum == 0, "set %d greedy: target = dense pruned %d blocks", set, sum);
            } else {
                CHECKF(within_one_block(L, n, k, kept, target), "set %d greedy: kept %.10g for target %.10g", set, kept,
                       target);
            }
            if (t == 0) CHECKF(fabs(kept - floor_macs) <= 1e-9 * dense, "set %d greedy: the floor not reached", set);

            memset(&info, 0, sizeof info);
            CHECK_OK(lpv_alloc_uniform(L, n, target, k, &info, &err), &err);
            kept = set_kept(L, n, k);
            sum = 0;
            for (int i = 0; i < n; i++) sum += k[i];
            uniform_topups += info.greedy_steps > 0;
            CHECKF(ks_in_range(L, n, k), "set %d uniform: some k outside [0, kmax]", set);
            CHECKF(equal_fractions(L, n, k), "set %d uniform: fractions differ by more than a block", set);
            if (t == 1) {
                CHECKF(sum == 0, "set %d uniform: target = dense pruned %d blocks", set, sum);
            } else {
                CHECKF(within_one_block(L, n, k, kept, target), "set %d uniform: kept %.10g for target %.10g", set, kept,
                       target);
            }
            if (t == 0) CHECKF(fabs(kept - floor_macs) <= 1e-9 * dense, "set %d uniform: the floor not reached", set);
        }
        /* a target below the min-density floor is refused, by both */
        double below = floor_macs * 0.99 - 1;
        if (below > 0) {
            err.msg[0] = 0;
            CHECKF(lpv_alloc_greedy(L, n, below, k, NULL, &err) == LPV_E_ARG && strstr(err.msg, "density"),
                   "set %d greedy: unreachable target accepted (%s)", set, err.msg);
            err.msg[0] = 0;
            CHECKF(lpv_alloc_uniform(L, n, below, k, NULL, &err) == LPV_E_ARG && strstr(err.msg, "density"),
                   "set %d uniform: unreachable target accepted (%s)", set, err.msg);
        }

        /* lpvit below the floor: refused like greedy and uniform (it once returned LPV_OK at the floor) */
        if (floor_ratio > 0.1) {
            lpv_lpvit_opts lo = {4, min_density, 0.005, 0};
            lpv_alloc_info info;
            memset(&info, 0, sizeof info);
            lpv_status st = lpv_alloc_lpvit(L, n, floor_ratio - 0.1, &lo, k, &info, &err);
            CHECKF(st == LPV_E_ARG && strcmp(err.param, "min_density") == 0,
                   "set %d lpvit: unreachable target %.3g (floor %.3g) accepted", set, floor_ratio - 0.1, floor_ratio);
        }

        /* lpvit: its min_sp is the CLI's min density, tol the CLI's 0.005 */
        for (int t = 0; t < 6; t++, trials++) {
            double lo_r = floor_ratio + 0.02, ratio = lo_r + (0.95 - lo_r) * lpv_rng_uniform(&r);
            if (lo_r >= 0.95) break;
            lpv_lpvit_opts lo = {4, min_density, 0.005, t % 2};
            lpv_alloc_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(lpv_alloc_lpvit(L, n, ratio, &lo, k, &info, &err), &err);
            double kept = set_kept(L, n, k), got = kept / dense;
            CHECKF(ks_in_range(L, n, k), "set %d lpvit: some k outside [0, kmax]", set);
            if (info.lpvit_topup > 0) {
                topups++;
                CHECKF(within_one_block(L, n, k, kept, ratio * dense),
                       "set %d lpvit: topped up (%d blocks) to %.6g for target %.6g", set, info.lpvit_topup, got, ratio);
            } else {
                hits++;
                CHECKF(fabs(got - ratio) <= lo.tol, "set %d lpvit: %.6g for target %.6g (tol %g), no top-up", set, got,
                       ratio, lo.tol);
            }
            if (lo.power) CHECK(info.lpvit_beta > 0);
        }
        for (int i = 0; i < n; i++) rlayer_free(&y[i]);
        free(y), free(L), free(k);
    }

    /* lpvit's per-layer cap: with kmax out of the way (min_keep 1), no layer is pruned past 1 - min_sp
       unless the search missed and it was topped up */
    for (int set = 0; set < 6; set++) {
        lpv_rng r;
        lpv_rng_seed(&r, 2000 + (uint64_t)set);
        int n = 3 + (int)lpv_rng_below(&r, 6);
        rlayer *y = calloc((size_t)n, sizeof *y);
        lpv_alloc_layer *L = calloc((size_t)n, sizeof *L);
        int *k = calloc((size_t)n, sizeof *k);
        rset_make(y, L, n, 0, 0, &r);
        double dense = set_kept(L, n, k);
        for (double ratio = 0.3; ratio <= 0.61; ratio += 0.1) {
            lpv_lpvit_opts lo = {4, 0.2, 0.005, 0}; /* (1 - ratio) / 2 >= 0.2: min_sp is not lowered */
            lpv_alloc_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(lpv_alloc_lpvit(L, n, ratio, &lo, k, &info, &err), &err);
            CHECKF(ks_in_range(L, n, k), "cap set %d: some k outside [0, kmax]", set);
            if (info.lpvit_topup == 0) {
                for (int i = 0; i < n; i++) {
                    int nb = L[i].sal->nb, keep_min = (int)(0.2 * nb + 1e-9);
                    CHECKF(nb - k[i] >= keep_min, "cap set %d layer %d: keeps %d of %d blocks, min_sp 0.2 wants %d", set,
                           i, nb - k[i], nb, keep_min);
                }
                CHECK(fabs(set_kept(L, n, k) / dense - ratio) <= lo.tol);
            }
        }
        for (int i = 0; i < n; i++) rlayer_free(&y[i]);
        free(y), free(L), free(k);
    }

    /* lpvit needs the grid curves */
    {
        lpv_rng r;
        lpv_rng_seed(&r, 3000);
        rlayer y[2];
        lpv_alloc_layer L[2];
        int k[2];
        rset_make(y, L, 2, 0, 0, &r);
        double *g = y[1].s.grid;
        y[1].s.grid = NULL;
        lpv_lpvit_opts lo = {4, 0.05, 0.005, 0};
        CHECK(lpv_alloc_lpvit(L, 2, 0.5, &lo, k, NULL, &err) == LPV_E_ARG);
        y[1].s.grid = g;
        rlayer_free(&y[0]), rlayer_free(&y[1]);
    }
    printf("allocator contracts: %d targets; lpvit %d search hits, %d top-ups; uniform %d with top-up steps\n", trials,
           hits, topups, uniform_topups);
    /* both lpvit outcomes and the uniform top-up must have been exercised for the checks to mean anything */
    CHECK(hits > 0 && topups > 0 && uniform_topups > 0);
}

static void test_cost(void) {
    lpv_energy e = lpv_energy_default();
    double prev = 0;
    for (double d = 0.1; d <= 1.0001; d += 0.1) {
        double v = lpv_layer_energy_pj(&e, 768, 768, 197, 32, 32, d);
        CHECK(v > prev);
        prev = v;
    }
    lpv_time_table t;
    memset(&t, 0, sizeof t);
    lpv_time_curve c = {64, 32, 197, 16, 16, 3, {0.25, 0.5, 1.0}, {1.0, 0.8, 2.0}, 2.1};
    t.curves = &c, t.n = 1, t.threads = 2, t.batch = 1;
    snprintf(t.cpu, sizeof t.cpu, "test");
    char dir[] = "/tmp/lpvit_cost_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/t.json", dir);
    lpv_err err;
    CHECK_OK(lpv_time_table_save(&t, path, &err), &err);
    lpv_time_table u;
    CHECK_OK(lpv_time_table_load(&u, path, &err), &err);
    const lpv_time_curve *f = lpv_time_table_find(&u, 64, 32, 197, 16, 16);
    CHECK(f && f->n == 3 && f->ms[2] == 2.0 && f->dense_ms == 2.1);
    CHECK(u.precision == LPV_PREC_FP32); /* t.precision zero: fp32 */
    CHECK(lpv_time_table_find(&u, 64, 32, 198, 16, 16) == NULL);
    /* monotone envelope: the dip at 0.5 is lifted to 1.0 */
    CHECK(fabs(lpv_time_curve_at(f, 0.5) - 1.0) < 1e-12 && fabs(lpv_time_curve_at(f, 0.75) - 1.5) < 1e-12);
    CHECK(lpv_time_curve_at(f, 0) == 0 && fabs(lpv_time_curve_at(f, 0.125) - 0.5) < 1e-12);
    lpv_time_table_free(&u);
    /* a bf16 table (and an int8 one) comes back as it went out, precision included */
    for (lpv_precision p = LPV_PREC_BF16; p <= LPV_PREC_INT8; p++) {
        t.precision = p;
        CHECK_OK(lpv_time_table_save(&t, path, &err), &err);
        CHECK_OK(lpv_time_table_load(&u, path, &err), &err);
        f = lpv_time_table_find(&u, 64, 32, 197, 16, 16);
        CHECKF(u.precision == p && f && f->n == 3 && f->density[1] == 0.5 && f->ms[1] == 0.8 && f->dense_ms == 2.1,
               "%s table did not round-trip", lpv_precision_name(p));
        lpv_time_table_free(&u);
    }
    const char *bad[] = {"{}", "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4}]}",
                         "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4, \"in\": 4, \"tokens\": 1, "
                         "\"dense_ms\": 1, \"block\": \"8x8\", \"density\": [0.5, 0.4], \"ms\": [1, 1]}]}",
                         "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4, \"in\": 4, \"tokens\": 1, "
                         "\"dense_ms\": 1, \"block\": \"8x8\", \"density\": [0.5], \"ms\": [1]}]}",
                         "not json",
                         "{\"format\": \"lpvit-time-table-v1\", \"precision\": \"fp16\", \"layers\": []}",
                         "{\"format\": \"lpvit-time-table-v1\", \"precision\": 1, \"layers\": []}"};
    for (int i = 0; i < 7; i++) {
        CHECK_OK(lpv_write_file_atomic(path, bad[i], strlen(bad[i]), &err), &err);
        CHECKF(lpv_time_table_load(&u, path, &err) == LPV_E_FORMAT, "bad table %d accepted", i);
    }
    /* bf16 and int8 tables say so; a table without "precision" (written before int8) reads as fp32 */
    const char *p8 = "{\"format\": \"lpvit-time-table-v1\", \"precision\": \"int8\", \"layers\": []}";
    CHECK_OK(lpv_write_file_atomic(path, p8, strlen(p8), &err), &err);
    CHECK(lpv_time_table_load(&u, path, &err) == LPV_OK && u.precision == LPV_PREC_INT8);
    lpv_time_table_free(&u);
    const char *p16 = "{\"format\": \"lpvit-time-table-v1\", \"precision\": \"bf16\", \"layers\": []}";
    CHECK_OK(lpv_write_file_atomic(path, p16, strlen(p16), &err), &err);
    CHECK(lpv_time_table_load(&u, path, &err) == LPV_OK && u.precision == LPV_PREC_BF16);
    lpv_time_table_free(&u);
    const char *p0 = "{\"format\": \"lpvit-time-table-v1\", \"layers\": []}";
    CHECK_OK(lpv_write_file_atomic(path, p0, strlen(p0), &err), &err);
    CHECK(lpv_time_table_load(&u, path, &err) == LPV_OK && u.precision == LPV_PREC_FP32);
    lpv_time_table_free(&u);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    lpv_objective ob;
    CHECK(lpv_objective_parse("speed+power", &ob, &err) == LPV_OK && ob == LPV_OBJ_SPEED_POWER);
    CHECK(lpv_objective_parse("speedy", &ob, &err) == LPV_E_ARG);
    lpv_precision pr;
    CHECK(lpv_precision_parse("bf16", &pr, &err) == LPV_OK && pr == LPV_PREC_BF16);
    CHECK(lpv_precision_parse("fp16", &pr, &err) == LPV_E_ARG && strstr(err.msg, "fp32, bf16 or int8"));
}

/* Measured tables: each precision times its own kernels. FP32's dense time is OpenBLAS's, a separate
   measurement; BF16's and int8's is their own kernel with every block, so it is their d = 1 point, bit for bit.
   BF16 timing refuses an ISA without avx512bf16 (its kernel would silently be the reference one); a CPU
   without it times the reference kernel under --isa ref. */
static void test_cost_measure(void) {
    lpv_err err;
    const lpv_layer_shape sh[2] = {{96, 64, 50}, {96, 64, 50}}; /* the duplicate is timed once */
    const double grid[] = {0.25, 0.5, 1.0};
    lpv_isa best = lpv_isa_best();
    lpv_time_table t[LPV_PREC_COUNT];
    for (lpv_precision p = LPV_PREC_FP32; p < LPV_PREC_COUNT; p++) {
        if (p == LPV_PREC_BF16 && best < LPV_ISA_AVX512BF16) {
            printf("bf16 time table: no avx512bf16 on this cpu, timing the reference kernel\n");
            CHECK_OK(lpv_isa_set(LPV_ISA_REF, &err), &err);
        }
        CHECK_OK(lpv_time_table_measure(&t[p], sh, 2, 32, 32, grid, 3, 1, 3, 11, p, &err), &err);
        CHECK_OK(lpv_isa_set(best, &err), &err);
        const lpv_time_curve *c = lpv_time_table_find(&t[p], 96, 64, 50, 32, 32);
        CHECKF(t[p].precision == p && t[p].n == 1 && c && c->n == 3, "%s table", lpv_precision_name(p));
        if (!c) continue;
        for (int k = 0; k < 3; k++) CHECK(c->density[k] == grid[k] && c->ms[k] > 0 && isfinite(c->ms[k]));
        if (p != LPV_PREC_FP32)
            CHECKF(c->dense_ms == c->ms[2], "%s dense time is not its d = 1 point", lpv_precision_name(p));
        printf("%s: ms at d = 0.25, 0.5, 1: %.4f %.4f %.4f, dense %.4f\n", lpv_precision_name(p), c->ms[0], c->ms[1],
               c->ms[2], c->dense_ms);
    }
    /* the BF16 curve is its own measurement, not the FP32 one relabelled */
    const lpv_time_curve *c32 = &t[LPV_PREC_FP32].curves[0], *c16 = &t[LPV_PREC_BF16].curves[0];
    CHECK(memcmp(c32->ms, c16->ms, sizeof c32->ms) != 0 && c32->dense_ms != c32->ms[2]);
    for (lpv_precision p = LPV_PREC_FP32; p < LPV_PREC_COUNT; p++) lpv_time_table_free(&t[p]);
    if (best >= LPV_ISA_AVX2) {
        lpv_time_table u;
        CHECK_OK(lpv_isa_set(LPV_ISA_AVX2, &err), &err);
        CHECK(lpv_time_table_measure(&u, sh, 1, 32, 32, grid, 3, 1, 1, 11, LPV_PREC_BF16, &err) == LPV_E_UNSUPPORTED &&
              strstr(err.msg, "avx512bf16") && strstr(err.msg, "'avx2'"));
        CHECK_OK(lpv_isa_set(best, &err), &err);
    }
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 7);
    test_saliency(&r);
    test_alloc(&r);
    test_alloc_contracts();
    test_cost();
    test_cost_measure();
    return test_finish("test_prune_algos");
}
