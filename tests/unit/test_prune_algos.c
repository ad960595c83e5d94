/*
 * test_prune_algos.c — the pruning math against plain references:
 * block sums and orders of every saliency criterion, LPViT's curve against a
 * literal transcription of its code (dense vectors, step by step), the greedy
 * allocator against exhaustive search on small problems, the uniform and
 * LPViT allocators' targets, cost-table round trips and validation, and the
 * energy proxy's monotonicity.
 */
#include <unistd.h>

#include "lpvit/alloc.h"
#include "lpvit/cost.h"
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
          strstr(err.msg, "--min-density"));
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
    CHECK(lpv_time_table_find(&u, 64, 32, 198, 16, 16) == NULL);
    /* monotone envelope: the dip at 0.5 is lifted to 1.0 */
    CHECK(fabs(lpv_time_curve_at(f, 0.5) - 1.0) < 1e-12 && fabs(lpv_time_curve_at(f, 0.75) - 1.5) < 1e-12);
    CHECK(lpv_time_curve_at(f, 0) == 0 && fabs(lpv_time_curve_at(f, 0.125) - 0.5) < 1e-12);
    lpv_time_table_free(&u);
    const char *bad[] = {"{}", "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4}]}",
                         "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4, \"in\": 4, \"tokens\": 1, "
                         "\"dense_ms\": 1, \"block\": \"8x8\", \"density\": [0.5, 0.4], \"ms\": [1, 1]}]}",
                         "{\"format\": \"lpvit-time-table-v1\", \"layers\": [{\"out\": 4, \"in\": 4, \"tokens\": 1, "
                         "\"dense_ms\": 1, \"block\": \"8x8\", \"density\": [0.5], \"ms\": [1]}]}",
                         "not json"};
    for (int i = 0; i < 5; i++) {
        CHECK_OK(lpv_write_file_atomic(path, bad[i], strlen(bad[i]), &err), &err);
        CHECKF(lpv_time_table_load(&u, path, &err) == LPV_E_FORMAT, "bad table %d accepted", i);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    lpv_objective ob;
    CHECK(lpv_objective_parse("speed+power", &ob, &err) == LPV_OK && ob == LPV_OBJ_SPEED_POWER);
    CHECK(lpv_objective_parse("speedy", &ob, &err) == LPV_E_ARG);
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 7);
    test_saliency(&r);
    test_alloc(&r);
    test_cost();
    return test_finish("test_prune_algos");
}
