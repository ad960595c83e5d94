/*
 * test_recon.c — layer-wise reconstruction math (include/lpvit/recon.h) on
 * random layers with correlated Gaussian inputs X = A Z + μ:
 *   statistics (ssyrk / sgemm bands) == plain double loops;
 *   OBS block score == its reference == brute force (remove the block,
 *   re-optimize the rest of its rows under the damped H), ≥ 0, ½ w (H+δ) w
 *   for a diagonal H; Wanda and tr(W H Wᵀ) == references;
 *   lsq == closed form solved independently from the explicit X (double,
 *   LAPACK dposv) and beats the masked-only error; sequential lsq (G, H̃) ==
 *   its closed form from X and X̃; obs == its plain reference, zeros exactly
 *   where pruned, beats masked-only, and equals lsq when every row's pruned
 *   columns come first; bias correction zeroes the mean output error;
 *   damping retries and error messages.
 * LPVIT_BENCH=1 also times the DeiT-B fc1/fc2 shapes (printed, not asserted).
 */
#include <cblas.h>
#include <stdint.h>

#include "lpvit/cpu.h"
#include "lpvit/recon.h"
#include "lpvit/rng.h"
#include "test.h"

void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb,
            int *info, size_t uplo_len);

/* ------------------------------------------------------------------ helpers */

typedef struct {
    int out, in, n, ld, R, C;
    float *X;  /* (in, ld) dense-model inputs, NaN in the padding columns */
    float *W;  /* (out, in) */
    float *b;  /* (out) */
} layer;

static void gen_inputs(float *X, int in, int n, int ld, lpv_rng *r, const float *base, float noise) {
    /* X = A Z + μ with A = 0.5 I + N(0, 1/in): correlated features, a few of them 8x louder */
    float *A = malloc(sizeof(float) * in * in), *Z = malloc(sizeof(float) * in * n);
    for (int i = 0; i < in * in; i++) A[i] = (float)(lpv_rng_normal(r) / sqrt(in));
    for (int i = 0; i < in; i++) A[i * in + i] += 0.5f;
    for (int i = 0; i < in * n; i++) Z[i] = (float)lpv_rng_normal(r);
    for (int i = 0; i < in; i++) {
        float mu = (float)lpv_rng_normal(r) * 0.3f, s = (i % 17 == 3) ? 8.0f : 1.0f;
        for (int t = 0; t < ld; t++) {
            if (t >= n) {
                X[i * ld + t] = NAN;
                continue;
            }
            double v = 0;
            for (int k = 0; k < in; k++) v += (double)A[i * in + k] * Z[k * n + t];
            X[i * ld + t] = base ? base[i * ld + t] + noise * (float)v : s * (float)v + mu;
        }
    }
    free(A), free(Z);
}

static layer make_layer(int out, int in, int n, int R, int C, lpv_rng *r) {
    layer L = {out, in, n, (n + 15) & ~15, R, C, NULL, NULL, NULL};
    L.X = malloc(sizeof(float) * in * L.ld);
    L.W = malloc(sizeof(float) * out * in);
    L.b = malloc(sizeof(float) * out);
    gen_inputs(L.X, in, n, L.ld, r, NULL, 0);
    for (int i = 0; i < out * in; i++) L.W[i] = (float)lpv_rng_normal(r) * 0.1f;
    for (int i = 0; i < out; i++) L.b[i] = (float)lpv_rng_normal(r) * 0.1f;
    return L;
}

static void free_layer(layer *L) { free(L->X), free(L->W), free(L->b); }

static int nbr_of(const layer *L) { return (L->out + L->R - 1) / L->R; }
static int nbc_of(const layer *L) { return (L->in + L->C - 1) / L->C; }

/* ~50% random mask; block row 0 fully kept, the last block row fully pruned (when nbr >= 3). */
static uint8_t *random_mask(const layer *L, lpv_rng *r) {
    int nbr = nbr_of(L), nbc = nbc_of(L);
    uint8_t *m = malloc((size_t)nbr * nbc);
    for (int i = 0; i < nbr * nbc; i++) m[i] = lpv_rng_uniform(r) < 0.5;
    if (nbr >= 3)
        for (int bc = 0; bc < nbc; bc++) m[bc] = 1, m[(nbr - 1) * nbc + bc] = 0;
    return m;
}

static int is_kept(const layer *L, const uint8_t *m, int i, int j) { return m[(i / L->R) * nbc_of(L) + j / L->C]; }

/* ‖W X − V X̃‖² (+ δ ‖V − W‖² when delta > 0), X̃ = Xt or X. */
static double out_err(const layer *L, const float *W, const float *V, const float *Xt, double delta) {
    const float *Xv = Xt ? Xt : L->X;
    double e = 0;
    for (int i = 0; i < L->out; i++)
        for (int t = 0; t < L->n; t++) {
            double y = 0, z = 0;
            for (int j = 0; j < L->in; j++) {
                y += (double)W[i * L->in + j] * L->X[j * L->ld + t];
                z += (double)V[i * L->in + j] * Xv[j * L->ld + t];
            }
            e += (y - z) * (y - z);
        }
    if (delta > 0)
        for (int i = 0; i < L->out * L->in; i++) e += delta * ((double)V[i] - W[i]) * ((double)V[i] - W[i]);
    return e;
}

/* δ = damp · mean_j Σ_t x̃_jt², in double from the explicit inputs. */
static double delta_of(const layer *L, const float *Xt, double damp) {
    const float *Xv = Xt ? Xt : L->X;
    double s = 0;
    for (int j = 0; j < L->in; j++)
        for (int t = 0; t < L->n; t++) s += (double)Xv[j * L->ld + t] * Xv[j * L->ld + t];
    return damp * s / L->in;
}

/* Independent closed form: per block row, min ‖W_r X − V_K X̃_K‖² + δ‖V_K − W_K‖²
 * (ridge_zero: + δ‖V_K‖²), normal equations from the explicit X, X̃ in double, dposv. */
static void closed_form(const layer *L, const uint8_t *mask, const float *Xt, double delta, int ridge_zero,
                        float *V) {
    const float *Xv = Xt ? Xt : L->X;
    int in = L->in, n = L->n, ld = L->ld;
    int *K = malloc(sizeof(int) * in);
    double *A = malloc(sizeof(double) * in * in), *B = malloc(sizeof(double) * L->R * in);
    double *Y = malloc(sizeof(double) * n);
    for (int br = 0; br < nbr_of(L); br++) {
        int r0 = br * L->R, nr = L->out - r0 < L->R ? L->out - r0 : L->R, k = 0;
        for (int j = 0; j < in; j++)
            if (mask[br * nbc_of(L) + j / L->C]) K[k++] = j;
        for (int p = 0; p < k; p++)
            for (int q = 0; q < k; q++) {
                double s = 0;
                for (int t = 0; t < n; t++) s += (double)Xv[K[p] * ld + t] * Xv[K[q] * ld + t];
                A[p * k + q] = s + (p == q ? delta : 0);
            }
        for (int i = 0; i < nr; i++) {
            const float *w = L->W + (r0 + i) * in;
            for (int t = 0; t < n; t++) {
                double y = 0;
                for (int j = 0; j < in; j++) y += (double)w[j] * L->X[j * ld + t];
                Y[t] = y;
            }
            for (int p = 0; p < k; p++) {
                double s = 0;
                for (int t = 0; t < n; t++) s += (double)Xv[K[p] * ld + t] * Y[t];
                B[i * k + p] = s + (ridge_zero ? 0 : delta * w[K[p]]);
            }
        }
        int info = 0;
        if (k > 0) dposv_("L", &k, &nr, A, &k, B, &k, &info, 1);
        CHECK(info == 0);
        for (int i = 0; i < nr; i++) {
            float *v = V + (r0 + i) * in;
            for (int j = 0; j < in; j++) v[j] = 0;
            for (int p = 0; p < k; p++) v[K[p]] = (float)B[i * k + p];
        }
    }
    free(K), free(A), free(B), free(Y);
}

static double rel_diff(const float *a, const float *b, int n) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
    return sqrt(d / (s + 1e-30));
}

static double rel_diff_d(const double *a, const double *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        double r = fabs(a[i] - b[i]) / (fabs(b[i]) + 1e-12);
        if (r > m) m = r;
    }
    return m;
}

static int pruned_exactly_zero(const layer *L, const float *V, const uint8_t *mask) {
    for (int i = 0; i < L->out; i++)
        for (int j = 0; j < L->in; j++)
            if (!is_kept(L, mask, i, j) && V[i * L->in + j] != 0.0f) return 0;
    return 1;
}

static float *copy_f(const float *x, int n) {
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static void stats_of(lpv_layer_stats *s, const layer *L) {
    lpv_err err;
    CHECK_OK(lpv_stats_init(s, L->in, 0, &err), &err);
    /* two batches, to exercise accumulation */
    int h = L->n / 2;
    lpv_stats_accumulate(s, L->X, L->ld, h);
    lpv_stats_accumulate(s, L->X + h, L->ld, L->n - h);
}

/* ------------------------------------------------------------------- tests */

static void test_stats(lpv_rng *r) {
    int ins[] = {96, 300}; /* 300 >= 256: the banded, threaded path */
    for (int c = 0; c < 2; c++) {
        int in = ins[c], n = 500, ld = 512;
        layer L = make_layer(8, in, n, 8, 8, r);
        float *Xt = malloc(sizeof(float) * in * ld);
        gen_inputs(Xt, in, n, ld, r, L.X, 0.3f);
        lpv_layer_stats a, b;
        lpv_err err;
        CHECK_OK(lpv_stats_init(&a, in, 1, &err), &err);
        CHECK_OK(lpv_stats_init(&b, in, 1, &err), &err);
        lpv_stats_accumulate(&a, L.X, ld, 200);
        lpv_stats_accumulate(&a, L.X + 200, ld, n - 200);
        lpv_stats_accumulate_ref(&b, L.X, ld, n);
        double mh = 0, lower = 0, ms = 0;
        for (int i = 0; i < in; i++) {
            for (int j = 0; j < in; j++) {
                double x = a.H[i * in + j], y = b.H[i * in + j];
                /* relative to the Cauchy-Schwarz scale sqrt(H_ii H_jj) */
                if (j >= i) mh = fmax(mh, fabs(x - y) / sqrt((double)b.H[i * in + i] * b.H[j * in + j]));
                else lower = fmax(lower, fabs(x));
            }
            ms = fmax(ms, fabs(a.sum[i] - b.sum[i]) / (fabs(b.sum[i]) + 1.0));
        }
        CHECKF(mh < 1e-5 && ms < 1e-9 && a.n == n && b.n == n, "in %d: H %.3g sum %.3g", in, mh, ms);
        CHECKF(lower == 0, "in %d: ssyrk touched the lower triangle", in);
        /* amax: exact (a maximum has no rounding), and the maximum over the raw columns */
        float am = 0;
        for (int t = 0; t < n; t++) am = fmaxf(am, fabsf(L.X[3 * ld + t]));
        CHECK(memcmp(a.amax, b.amax, sizeof(float) * in) == 0 && a.amax[3] == am && am > 0);

        /* cross statistics */
        lpv_stats_free(&a), lpv_stats_free(&b);
        CHECK_OK(lpv_stats_init(&a, in, 1, &err), &err);
        CHECK_OK(lpv_stats_init(&b, in, 1, &err), &err);
        lpv_stats_accumulate_cross(&a, L.X, ld, Xt, ld, 300);
        lpv_stats_accumulate_cross(&a, L.X + 300, ld, Xt + 300, ld, n - 300);
        lpv_stats_accumulate_cross_ref(&b, L.X, ld, Xt, ld, n);
        double mg = 0, *nx = malloc(sizeof(double) * in);
        mh = ms = 0;
        for (int i = 0; i < in; i++) {
            nx[i] = 0;
            for (int t = 0; t < n; t++) nx[i] += (double)L.X[i * ld + t] * L.X[i * ld + t];
        }
        for (int i = 0; i < in; i++) {
            for (int j = 0; j < in; j++) {
                /* relative to the Cauchy-Schwarz scales ‖x_i‖ ‖x̃_j‖ and ‖x̃_i‖ ‖x̃_j‖ */
                mg = fmax(mg, fabs((double)a.G[i * in + j] - b.G[i * in + j]) / sqrt(nx[i] * b.H[j * in + j]));
                if (j >= i)
                    mh = fmax(mh, fabs((double)a.H[i * in + j] - b.H[i * in + j]) /
                                      sqrt((double)b.H[i * in + i] * b.H[j * in + j]));
            }
            ms = fmax(ms, fabs(a.sum[i] - b.sum[i]) + fabs(a.sum_dense[i] - b.sum_dense[i]));
        }
        free(nx);
        /* G against its definition with the explicit inputs */
        double gdef = 0;
        for (int t = 0; t < n; t++) gdef += (double)L.X[5 * ld + t] * Xt[7 * ld + t];
        CHECKF(mg < 1e-5 && mh < 1e-5 && ms < 1e-6, "in %d: cross G %.3g H %.3g sums %.3g", in, mg, mh, ms);
        CHECK(fabs(a.G[5 * in + 7] - gdef) < 1e-3 * (fabs(gdef) + 1));
        float amt = 0; /* cross mode: amax of the pruned model's inputs x̃ */
        for (int t = 0; t < n; t++) amt = fmaxf(amt, fabsf(Xt[3 * ld + t]));
        CHECK(memcmp(a.amax, b.amax, sizeof(float) * in) == 0 && a.amax[3] == amt);
        double *m1 = malloc(sizeof(double) * in), *m2 = malloc(sizeof(double) * in);
        lpv_stats_mean(&a, m1, m2);
        double e1 = 0, e2 = 0;
        for (int t = 0; t < n; t++) e1 += Xt[3 * ld + t], e2 += L.X[3 * ld + t];
        CHECK(fabs(m1[3] - e1 / n) < 1e-9 && fabs(m2[3] - e2 / n) < 1e-9);

        /* damping helper and symmetrize */
        float *Hd = malloc(sizeof(float) * in * in);
        double delta = lpv_damp_copy(a.H, in, 0.01, Hd), md = 0;
        for (int i = 0; i < in; i++) md += a.H[i * in + i];
        CHECK(fabs(delta - 0.01 * md / in) < 1e-6 * delta);
        int sym = 1;
        for (int i = 0; i < in; i++)
            for (int j = 0; j < in; j++) {
                float want = i == j ? a.H[i * in + i] + (float)delta : a.H[(i < j ? i : j) * in + (i < j ? j : i)];
                sym &= Hd[i * in + j] == want;
            }
        CHECK(sym);
        lpv_stats_symmetrize(a.H, in);
        CHECK(a.H[9 * in + 2] == a.H[2 * in + 9]);
        free(Hd), free(m1), free(m2), free(Xt);
        lpv_stats_free(&a), lpv_stats_free(&b);
        free_layer(&L);
    }
}

/* ½ min over the other weights of rows(br) of (w − v)ᵀ Hd (w − v) with v_{Cb} = 0, Hd = H + δI (double, dposv). */
static double brute_block(const layer *L, const float *H, double delta, int br, int bc) {
    int in = L->in, c0 = bc * L->C, c1 = c0 + L->C < in ? c0 + L->C : in, k = in - (c1 - c0);
    double *A = malloc(sizeof(double) * in * in), *B = malloc(sizeof(double) * in), *d = malloc(sizeof(double) * in);
    int *K = malloc(sizeof(int) * in), kk = 0;
#define HD(i, j) ((double)H[((i) < (j) ? (i) : (j)) * in + ((i) < (j) ? (j) : (i))] + ((i) == (j) ? delta : 0))
    for (int j = 0; j < in; j++)
        if (j < c0 || j >= c1) K[kk++] = j;
    double total = 0;
    for (int i = br * L->R; i < (br + 1) * L->R && i < L->out; i++) {
        const float *w = L->W + i * in;
        for (int p = 0; p < k; p++) {
            for (int q = 0; q < k; q++) A[p * k + q] = HD(K[p], K[q]);
            double s = 0;
            for (int c = c0; c < c1; c++) s += HD(K[p], c) * w[c];
            B[p] = s;
        }
        int one = 1, info = 0;
        dposv_("L", &k, &one, A, &k, B, &k, &info, 1);
        CHECK(info == 0);
        for (int j = 0; j < in; j++) d[j] = 0;
        for (int c = c0; c < c1; c++) d[c] = w[c];
        for (int p = 0; p < k; p++) d[K[p]] = -B[p];
        double q = 0;
        for (int a = 0; a < in; a++)
            for (int b = 0; b < in; b++) q += d[a] * HD(a, b) * d[b];
        total += 0.5 * q;
    }
#undef HD
    free(A), free(B), free(d), free(K);
    return total;
}

static void test_scores(lpv_rng *r) {
    int shapes[][4] = {{48, 96, 16, 32}, {50, 100, 16, 32}, {40, 72, 8, 16}, {20, 70, 64, 8}};
    for (int s = 0; s < 4; s++) {
        layer L = make_layer(shapes[s][0], shapes[s][1], 500, shapes[s][2], shapes[s][3], r);
        int nbr = nbr_of(&L), nbc = nbc_of(&L), nb = nbr * nbc;
        lpv_layer_stats st;
        stats_of(&st, &L);
        lpv_err err;
        lpv_recon_opts o = lpv_recon_defaults();
        lpv_recon_info info, info2;
        double *sc = malloc(sizeof(double) * nb), *sr = malloc(sizeof(double) * nb);
        CHECK_OK(lpv_score_obs(L.W, L.out, L.in, st.H, L.R, L.C, &o, sc, &info, "t.obs", &err), &err);
        CHECK_OK(lpv_score_obs_ref(L.W, L.out, L.in, st.H, L.R, L.C, &o, sr, &info2, "t.obs", &err), &err);
        CHECKF(rel_diff_d(sc, sr, nb) < 1e-3, "shape %d: obs vs ref %.3g", s, rel_diff_d(sc, sr, nb));
        CHECK(info.damp == o.damp && info.retried == 0);
        CHECK(fabs(info.delta - delta_of(&L, NULL, o.damp)) < 1e-4 * info.delta);
        int nonneg = 1;
        double worst = 0;
        for (int b = 0; b < nb; b++) {
            nonneg &= sc[b] >= 0;
            double bf = brute_block(&L, st.H, info2.delta, b / nbc, b % nbc);
            worst = fmax(worst, fabs(sc[b] - bf) / bf);
        }
        CHECKF(worst < 1e-3, "shape %d: obs score vs brute force: %.3g", s, worst);
        CHECK(nonneg);
        /* the score is ½ the (ridge) objective of the exact update that removes only that block */
        for (int b = 0; b < nb; b += nb / 3 + 1) {
            uint8_t *m = malloc(nb);
            memset(m, 1, nb);
            m[b] = 0;
            float *V = copy_f(L.W, L.out * L.in);
            CHECK_OK(lpv_recon_lsq(V, L.out, L.in, L.R, L.C, m, st.H, NULL, &o, NULL, "t", &err), &err);
            double f = 0.5 * out_err(&L, L.W, V, NULL, info2.delta);
            CHECKF(fabs(f - sc[b]) < 2e-3 * sc[b], "shape %d block %d: lsq objective %.6g vs score %.6g", s, b, f, sc[b]);
            free(V), free(m);
        }
        /* Wanda */
        lpv_score_wanda(L.W, L.out, L.in, st.H, L.R, L.C, sc);
        lpv_score_wanda_ref(L.W, L.out, L.in, st.H, L.R, L.C, sr);
        CHECK(rel_diff_d(sc, sr, nb) < 1e-12);
        double w0 = 0;
        for (int j = 0; j < L.C && j < L.in; j++) {
            double nx = 0;
            for (int t = 0; t < L.n; t++) nx += (double)L.X[j * L.ld + t] * L.X[j * L.ld + t];
            for (int i = 0; i < L.R && i < L.out; i++) w0 += fabs(L.W[i * L.in + j]) * sqrt(nx);
        }
        CHECK(fabs(sc[0] - w0) < 1e-4 * w0);
        /* output energy */
        double e, eref = lpv_output_energy_ref(L.W, L.out, L.in, st.H), zero = 0;
        float *Z = calloc(L.out * L.in, sizeof(float));
        double edef = out_err(&L, L.W, Z, NULL, 0);
        CHECK_OK(lpv_output_energy(L.W, L.out, L.in, st.H, &e, &err), &err);
        CHECKF(fabs(e - eref) < 1e-5 * eref && fabs(e - edef) < 1e-4 * edef, "energy %.8g ref %.8g def %.8g", e, eref,
               edef);
        CHECK_OK(lpv_output_energy(Z, L.out, L.in, st.H, &zero, &err), &err);
        CHECK(zero == 0);
        free(Z), free(sc), free(sr);
        lpv_stats_free(&st);
        free_layer(&L);
    }

    /* diagonal H: ΔL = ½ Σ w² (h + δ) */
    int out = 24, in = 40, R = 8, C = 8, nbc = 5, nb = 15;
    float *H = calloc(in * in, sizeof(float)), *W = malloc(sizeof(float) * out * in);
    for (int j = 0; j < in; j++) H[j * in + j] = (float)(1 + 10 * lpv_rng_uniform(r));
    for (int i = 0; i < out * in; i++) W[i] = (float)lpv_rng_normal(r);
    double sc[15];
    lpv_err err;
    lpv_recon_info info;
    lpv_recon_opts o = lpv_recon_defaults();
    CHECK_OK(lpv_score_obs(W, out, in, H, R, C, &o, sc, &info, "diag", &err), &err);
    double worst = 0;
    for (int b = 0; b < nb; b++) {
        double s = 0;
        for (int i = (b / nbc) * R; i < (b / nbc + 1) * R; i++)
            for (int j = (b % nbc) * C; j < (b % nbc + 1) * C; j++)
                s += 0.5 * (double)W[i * in + j] * W[i * in + j] * (H[j * in + j] + info.delta);
        worst = fmax(worst, fabs(sc[b] - s) / s);
    }
    CHECKF(worst < 1e-5, "diagonal H: %.3g", worst);
    free(H), free(W);
}

static void test_lsq(lpv_rng *r) {
    int shapes[][4] = {{48, 96, 16, 32}, {50, 100, 16, 32}, {48, 96, 8, 16}, {70, 130, 32, 8}};
    for (int s = 0; s < 4; s++) {
        layer L = make_layer(shapes[s][0], shapes[s][1], 500, shapes[s][2], shapes[s][3], r);
        int n = L.out * L.in;
        uint8_t *mask = random_mask(&L, r);
        lpv_layer_stats st;
        stats_of(&st, &L);
        lpv_err err;
        lpv_recon_opts o = lpv_recon_defaults();
        lpv_recon_info info;
        float *V = copy_f(L.W, n), *Vr = copy_f(L.W, n), *M = copy_f(L.W, n), *cf = malloc(sizeof(float) * n);
        CHECK_OK(lpv_recon_lsq(V, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, &info, "t.lsq", &err), &err);
        CHECK_OK(lpv_recon_lsq_ref(Vr, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t.lsq", &err), &err);
        lpv_mask_apply(M, L.out, L.in, L.R, L.C, mask);
        closed_form(&L, mask, NULL, delta_of(&L, NULL, o.damp), 0, cf);
        double e_lsq = out_err(&L, L.W, V, NULL, 0), e_mask = out_err(&L, L.W, M, NULL, 0);
        double e_cf = out_err(&L, L.W, cf, NULL, 0);
        printf("lsq %dx%d %dx%d: masked-only error %.4g, lsq %.4g (closed form %.4g), |V - cf|/|cf| %.2g, vs ref %.2g\n",
               L.out, L.in, L.R, L.C, e_mask, e_lsq, e_cf, rel_diff(V, cf, n), rel_diff(V, Vr, n));
        CHECKF(e_lsq < 0.9 * e_mask, "shape %d: lsq %.4g vs masked %.4g", s, e_lsq, e_mask);
        CHECKF(rel_diff(V, cf, n) < 2e-4, "shape %d: lsq vs closed form %.3g", s, rel_diff(V, cf, n));
        CHECKF(fabs(e_lsq - e_cf) < 1e-4 * e_cf, "shape %d: errors %.6g vs %.6g", s, e_lsq, e_cf);
        CHECKF(rel_diff(V, Vr, n) < 2e-4, "shape %d: lsq vs ref %.3g", s, rel_diff(V, Vr, n));
        CHECK(pruned_exactly_zero(&L, V, mask) && pruned_exactly_zero(&L, Vr, mask));
        /* block row 0 is fully kept: unchanged (toward-W ridge); the last is fully pruned: zero */
        CHECK(memcmp(V, L.W, sizeof(float) * L.R * L.in) == 0);
        /* the ridge-to-zero variant matches its own closed form */
        lpv_recon_opts oz = o;
        oz.ridge_zero = 1;
        memcpy(V, L.W, sizeof(float) * n);
        memcpy(Vr, L.W, sizeof(float) * n);
        CHECK_OK(lpv_recon_lsq(V, L.out, L.in, L.R, L.C, mask, st.H, NULL, &oz, NULL, "t", &err), &err);
        CHECK_OK(lpv_recon_lsq_ref(Vr, L.out, L.in, L.R, L.C, mask, st.H, NULL, &oz, NULL, "t", &err), &err);
        closed_form(&L, mask, NULL, delta_of(&L, NULL, o.damp), 1, cf);
        CHECKF(rel_diff(V, cf, n) < 2e-4 && rel_diff(V, Vr, n) < 2e-4, "shape %d: ridge_zero %.3g %.3g", s,
               rel_diff(V, cf, n), rel_diff(V, Vr, n));
        /* 1 thread and 2 threads give the same bits */
        memcpy(V, L.W, sizeof(float) * n);
        memcpy(Vr, L.W, sizeof(float) * n);
        int nt = lpv_threads_get();
        lpv_threads_set(1);
        CHECK_OK(lpv_recon_lsq(V, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t", &err), &err);
        lpv_threads_set(2);
        CHECK_OK(lpv_recon_lsq(Vr, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t", &err), &err);
        lpv_threads_set(nt);
        CHECK(memcmp(V, Vr, sizeof(float) * n) == 0);

        /* bias correction: the mean output error over the tokens becomes ~0 */
        float *b2 = copy_f(L.b, L.out);
        double *mean = malloc(sizeof(double) * L.in), worst = 0, before = 0;
        lpv_stats_mean(&st, mean, NULL);
        lpv_recon_bias(b2, L.W, V, L.out, L.in, mean, NULL);
        for (int i = 0; i < L.out; i++) {
            double m0 = 0, m1 = 0;
            for (int t = 0; t < L.n; t++) {
                double y = L.b[i], z = b2[i];
                for (int j = 0; j < L.in; j++) {
                    y += (double)L.W[i * L.in + j] * L.X[j * L.ld + t];
                    z += (double)V[i * L.in + j] * L.X[j * L.ld + t];
                }
                m0 += (y - z + (b2[i] - L.b[i])) / L.n; /* error before the bias update */
                m1 += (y - z) / L.n;
            }
            before = fmax(before, fabs(m0)), worst = fmax(worst, fabs(m1));
        }
        printf("bias: largest |mean output error| %.3g before, %.3g after\n", before, worst);
        CHECKF(worst < 1e-4 && before > 1e-3, "bias: %.3g before %.3g", worst, before);
        free(b2), free(mean);
        free(V), free(Vr), free(M), free(cf), free(mask);
        lpv_stats_free(&st);
        free_layer(&L);
    }
}

static void test_sequential(lpv_rng *r) {
    int shapes[][4] = {{48, 96, 16, 32}, {50, 100, 16, 16}};
    for (int s = 0; s < 2; s++) {
        layer L = make_layer(shapes[s][0], shapes[s][1], 500, shapes[s][2], shapes[s][3], r);
        int n = L.out * L.in;
        float *Xt = malloc(sizeof(float) * L.in * L.ld);
        gen_inputs(Xt, L.in, L.n, L.ld, r, L.X, 0.2f); /* the pruned model's inputs: X plus correlated drift */
        uint8_t *mask = random_mask(&L, r);
        lpv_layer_stats st;
        lpv_err err;
        CHECK_OK(lpv_stats_init(&st, L.in, 1, &err), &err);
        lpv_stats_accumulate_cross(&st, L.X, L.ld, Xt, L.ld, L.n);
        lpv_recon_opts o = lpv_recon_defaults();
        float *V = copy_f(L.W, n), *Vr = copy_f(L.W, n), *P = copy_f(L.W, n), *M = copy_f(L.W, n);
        float *cf = malloc(sizeof(float) * n);
        CHECK_OK(lpv_recon_lsq(V, L.out, L.in, L.R, L.C, mask, st.H, st.G, &o, NULL, "t.seq", &err), &err);
        CHECK_OK(lpv_recon_lsq_ref(Vr, L.out, L.in, L.R, L.C, mask, st.H, st.G, &o, NULL, "t.seq", &err), &err);
        double delta = delta_of(&L, Xt, o.damp);
        closed_form(&L, mask, Xt, delta, 0, cf);
        CHECKF(rel_diff(V, cf, n) < 2e-4 && rel_diff(V, Vr, n) < 2e-4, "seq shape %d: vs closed form %.3g, ref %.3g",
               s, rel_diff(V, cf, n), rel_diff(V, Vr, n));
        CHECK(pruned_exactly_zero(&L, V, mask));
        /* projected statistics (P = W G, two chunks, threaded bands): H and the sums as the cross ones', bit for
           bit; P against W G in double; the refit from P the refit from G */
        {
            lpv_layer_stats ps;
            float *scratch = malloc(sizeof(float) * (size_t)L.out * L.n), *Vp = copy_f(L.W, n);
            CHECK_OK(lpv_stats_init_projected(&ps, L.in, L.out, &err), &err);
            CHECK(ps.P && !ps.G && ps.sum_dense && ps.out == L.out);
            lpv_stats_accumulate_projected(&ps, L.W, L.X, L.ld, Xt, L.ld, 200, scratch);
            lpv_stats_accumulate_projected(&ps, L.W, L.X + 200, L.ld, Xt + 200, L.ld, L.n - 200, scratch);
            lpv_layer_stats cs2;
            CHECK_OK(lpv_stats_init(&cs2, L.in, 1, &err), &err);
            lpv_stats_accumulate_cross(&cs2, L.X, L.ld, Xt, L.ld, 200);
            lpv_stats_accumulate_cross(&cs2, L.X + 200, L.ld, Xt + 200, L.ld, L.n - 200);
            CHECK(ps.n == L.n && memcmp(ps.H, cs2.H, sizeof(float) * (size_t)L.in * L.in) == 0 &&
                  memcmp(ps.sum, cs2.sum, sizeof(double) * L.in) == 0 &&
                  memcmp(ps.sum_dense, cs2.sum_dense, sizeof(double) * L.in) == 0 &&
                  memcmp(ps.amax, cs2.amax, sizeof(float) * L.in) == 0);
            double pe = 0, pm = 0;
            for (int i = 0; i < L.out; i++)
                for (int j = 0; j < L.in; j++) {
                    double wg = 0;
                    for (int k = 0; k < L.in; k++) wg += (double)L.W[i * L.in + k] * cs2.G[k * L.in + j];
                    pe = fmax(pe, fabs(wg - ps.P[i * L.in + j])), pm = fmax(pm, fabs(wg));
                }
            CHECKF(pe <= 1e-5 * pm, "projected P vs W G: %.3g of %.3g", pe, pm);
            CHECK_OK(lpv_recon_lsq_projected(Vp, L.out, L.in, L.R, L.C, mask, ps.H, ps.P, &o, NULL, "t.proj", &err),
                     &err);
            CHECKF(rel_diff(Vp, V, n) < 1e-4 && rel_diff(Vp, cf, n) < 2e-4, "projected lsq: vs G %.3g, closed form %.3g",
                   rel_diff(Vp, V, n), rel_diff(Vp, cf, n));
            CHECK(pruned_exactly_zero(&L, Vp, mask));
            lpv_stats_free(&ps), lpv_stats_free(&cs2);
            free(scratch), free(Vp);
        }
        /* it is the optimum of its objective: no worse than plain lsq (fit on X̃ alone) or masked-only */
        CHECK_OK(lpv_recon_lsq(P, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t.plain", &err), &err);
        lpv_mask_apply(M, L.out, L.in, L.R, L.C, mask);
        double fs = out_err(&L, L.W, V, Xt, delta), fp = out_err(&L, L.W, P, Xt, delta),
               fm = out_err(&L, L.W, M, Xt, delta);
        printf("sequential %dx%d: ‖WX − ŴX̃‖² (+ridge) masked %.4g, plain lsq %.4g, sequential %.4g\n", L.out, L.in, fm,
               fp, fs);
        CHECKF(fs <= fp * (1 + 1e-5) && fs < fm, "seq %.6g plain %.6g masked %.6g", fs, fp, fm);
        /* sequential bias: b + W mean(x) − Ŵ mean(x̃) zeroes the mean of W x + b − (Ŵ x̃ + b') */
        double *mx = malloc(sizeof(double) * L.in), *mt = malloc(sizeof(double) * L.in), worst = 0;
        lpv_stats_mean(&st, mt, mx);
        float *b2 = copy_f(L.b, L.out);
        lpv_recon_bias(b2, L.W, V, L.out, L.in, mx, mt);
        for (int i = 0; i < L.out; i++) {
            double m = 0;
            for (int t = 0; t < L.n; t++) {
                double y = L.b[i], z = b2[i];
                for (int j = 0; j < L.in; j++) {
                    y += (double)L.W[i * L.in + j] * L.X[j * L.ld + t];
                    z += (double)V[i * L.in + j] * Xt[j * L.ld + t];
                }
                m += (y - z) / L.n;
            }
            worst = fmax(worst, fabs(m));
        }
        CHECKF(worst < 1e-4, "sequential bias: %.3g", worst);
        free(mx), free(mt), free(b2);
        free(V), free(Vr), free(P), free(M), free(cf), free(mask), free(Xt);
        lpv_stats_free(&st);
        free_layer(&L);
    }
}

static void test_obs(lpv_rng *r) {
    int shapes[][4] = {{48, 96, 16, 32}, {50, 300, 16, 32}, {40, 200, 8, 16}, {33, 150, 64, 64}};
    for (int s = 0; s < 4; s++) {
        layer L = make_layer(shapes[s][0], shapes[s][1], 500, shapes[s][2], shapes[s][3], r);
        int n = L.out * L.in, nbr = nbr_of(&L), nbc = nbc_of(&L);
        uint8_t *mask = random_mask(&L, r);
        lpv_layer_stats st;
        stats_of(&st, &L);
        lpv_err err;
        lpv_recon_opts o = lpv_recon_defaults();
        lpv_recon_info info;
        float *V = copy_f(L.W, n), *Vr = copy_f(L.W, n), *M = copy_f(L.W, n), *Q = copy_f(L.W, n);
        CHECK_OK(lpv_recon_obs(V, L.out, L.in, L.R, L.C, mask, st.H, &o, &info, "t.obs", &err), &err);
        CHECK_OK(lpv_recon_obs_ref(Vr, L.out, L.in, L.R, L.C, mask, st.H, &o, NULL, "t.obs", &err), &err);
        CHECK_OK(lpv_recon_lsq(Q, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t.obs", &err), &err);
        lpv_mask_apply(M, L.out, L.in, L.R, L.C, mask);
        double e_obs = out_err(&L, L.W, V, NULL, 0), e_mask = out_err(&L, L.W, M, NULL, 0),
               e_lsq = out_err(&L, L.W, Q, NULL, 0);
        printf("obs %dx%d %dx%d: masked-only %.4g, obs %.4g, lsq %.4g; obs vs ref %.2g\n", L.out, L.in, L.R, L.C,
               e_mask, e_obs, e_lsq, rel_diff(V, Vr, n));
        CHECKF(rel_diff(V, Vr, n) < 1e-3, "shape %d: obs vs ref %.3g", s, rel_diff(V, Vr, n));
        CHECK(pruned_exactly_zero(&L, V, mask));
        int kept_nonzero = 1;
        for (int i = 0; i < L.out; i++)
            for (int j = 0; j < L.in; j++) kept_nonzero &= !is_kept(&L, mask, i, j) || V[i * L.in + j] != 0;
        CHECK(kept_nonzero);
        CHECKF(e_obs <= e_mask && e_lsq <= e_obs * (1 + 1e-4), "shape %d: obs %.4g masked %.4g lsq %.4g", s, e_obs,
               e_mask, e_lsq);
        /* every row's pruned columns first: SparseGPT's sweep is exact OBS, i.e. equals lsq */
        for (int br = 0; br < nbr; br++) {
            int p = (int)lpv_rng_below(r, nbc + 1);
            for (int bc = 0; bc < nbc; bc++) mask[br * nbc + bc] = bc >= p;
        }
        memcpy(V, L.W, sizeof(float) * n), memcpy(Q, L.W, sizeof(float) * n);
        CHECK_OK(lpv_recon_obs(V, L.out, L.in, L.R, L.C, mask, st.H, &o, NULL, "t", &err), &err);
        CHECK_OK(lpv_recon_lsq(Q, L.out, L.in, L.R, L.C, mask, st.H, NULL, &o, NULL, "t", &err), &err);
        printf("  prefix mask: obs vs lsq %.2g\n", rel_diff(V, Q, n));
        CHECKF(rel_diff(V, Q, n) < 1e-3, "shape %d: prefix-mask obs vs lsq %.3g", s, rel_diff(V, Q, n));
        /* pruned columns LAST: the sweep never updates the kept (earlier) columns: obs == masked-only */
        for (int br = 0; br < nbr; br++) {
            int p = (int)lpv_rng_below(r, nbc + 1);
            for (int bc = 0; bc < nbc; bc++) mask[br * nbc + bc] = bc < p;
        }
        memcpy(V, L.W, sizeof(float) * n), memcpy(M, L.W, sizeof(float) * n);
        CHECK_OK(lpv_recon_obs(V, L.out, L.in, L.R, L.C, mask, st.H, &o, NULL, "t", &err), &err);
        lpv_mask_apply(M, L.out, L.in, L.R, L.C, mask);
        CHECK(memcmp(V, M, sizeof(float) * n) == 0);
        free(V), free(Vr), free(M), free(Q), free(mask);
        lpv_stats_free(&st);
        free_layer(&L);
    }
}

/* ---- quantization sweep (GPTQ) ---- */

/* Row scales of the int8 grid, max |w| / 127. */
static void int8_scales(const layer *L, float *sc) {
    for (int i = 0; i < L->out; i++) {
        float m = 0;
        for (int j = 0; j < L->in; j++) m = fmaxf(m, fabsf(L->W[i * L->in + j]));
        sc[i] = m > 0 ? m / 127.0f : 1.0f;
    }
}

/* Every kept weight of V is on g's grid (the grid point lpv_qgrid_round returns for it), every pruned one 0. */
static int on_grid(const layer *L, const float *V, const uint8_t *mask, const lpv_qgrid *g) {
    for (int i = 0; i < L->out; i++)
        for (int j = 0; j < L->in; j++) {
            float v = V[i * L->in + j];
            if (mask && !is_kept(L, mask, i, j) ? v != 0.0f : lpv_qgrid_round(g, i, v) != v) return 0;
        }
    return 1;
}

static void test_quant(lpv_rng *r) {
    int shapes[][4] = {{48, 96, 16, 32}, {50, 300, 16, 32}, {33, 150, 64, 64}};
    float levels[12];
    for (int k = 0; k < 12; k++) levels[k] = -1.0f + 2.0f * k / 11 + (k % 3) * 0.03f; /* uneven, increasing */
    for (int s = 0; s < 3; s++) {
        layer L = make_layer(shapes[s][0], shapes[s][1], 500, shapes[s][2], shapes[s][3], r);
        int n = L.out * L.in;
        uint8_t *mask = random_mask(&L, r);
        lpv_layer_stats st;
        stats_of(&st, &L);
        lpv_err err;
        lpv_recon_opts o = lpv_recon_defaults();
        float *sc = malloc(sizeof(float) * L.out), *lsc = malloc(sizeof(float) * L.out);
        int32_t *ord = malloc(sizeof(int32_t) * L.in);
        int8_scales(&L, sc);
        for (int i = 0; i < L.out; i++) lsc[i] = sc[i] * 127.0f; /* codebook rows: scaled by their max |w| */
        lpv_quant_act_order(st.H, L.in, ord);
        for (int j = 1; j < L.in; j++) CHECK(st.H[ord[j - 1] * L.in + ord[j - 1]] >= st.H[ord[j] * L.in + ord[j]]);
        lpv_qgrid grids[2] = {{LPV_QGRID_INT, sc, 127, NULL, 0}, {LPV_QGRID_LEVELS, lsc, 0, levels, 12}};
        for (int gk = 0; gk < 2; gk++)
            for (int variant = 0; variant < 3; variant++) { /* index order, act order, act order + mask */
                const lpv_qgrid *g = &grids[gk];
                const int32_t *order = variant ? ord : NULL;
                const uint8_t *mk = variant == 2 ? mask : NULL;
                float *V = copy_f(L.W, n), *Vr = copy_f(L.W, n), *N = copy_f(L.W, n);
                CHECK_OK(lpv_recon_quant(V, L.out, L.in, L.R, L.C, mk, st.H, g, order, &o, NULL, "t.q", &err), &err);
                CHECK_OK(lpv_recon_quant_ref(Vr, L.out, L.in, L.R, L.C, mk, st.H, g, order, &o, NULL, "t.q", &err),
                         &err);
                for (int i = 0; i < n; i++) /* round to nearest, pruned blocks to 0 */
                    N[i] = mk && !is_kept(&L, mk, i / L.in, i % L.in) ? 0.0f : lpv_qgrid_round(g, i / L.in, L.W[i]);
                double e_q = out_err(&L, L.W, V, NULL, 0), e_r = out_err(&L, L.W, Vr, NULL, 0),
                       e_n = out_err(&L, L.W, N, NULL, 0);
                int same = 0;
                for (int i = 0; i < n; i++) same += V[i] == Vr[i];
                printf("quant %dx%d %s v%d: nearest %.4g, sweep %.4g, reference %.4g; %.2f%% equal to the reference\n",
                       L.out, L.in, gk ? "levels" : "int8", variant, e_n, e_q, e_r, 100.0 * same / n);
                CHECK(on_grid(&L, V, mk, g) && on_grid(&L, Vr, mk, g));
                /* float vs double sweeps round a rare weight that sits at a grid midpoint differently, and the
                   row's later columns follow it; the errors they reach must still agree */
                CHECKF(same >= 0.9 * n, "shape %d grid %d v%d: only %d of %d weights equal", s, gk, variant, same, n);
                CHECKF(fabs(e_q - e_r) <= 0.02 * e_r, "shape %d grid %d v%d: sweep %.5g vs reference %.5g", s, gk,
                       variant, e_q, e_r);
                /* with a mask, the pruning error dominates both; the sweep still repairs part of it */
                CHECKF(e_q < (mk ? 1.0 : 0.9) * e_n, "shape %d grid %d v%d: sweep %.5g not below nearest %.5g", s, gk,
                       variant, e_q, e_n);
                free(V), free(Vr), free(N);
            }
        /* uncorrelated inputs (diagonal H): no error can be compensated, the sweep IS round to nearest */
        float *Hd = calloc((size_t)L.in * L.in, sizeof(float));
        for (int j = 0; j < L.in; j++) Hd[j * L.in + j] = 1.0f + (float)(j % 7);
        float *V = copy_f(L.W, n);
        CHECK_OK(lpv_recon_quant(V, L.out, L.in, L.R, L.C, NULL, Hd, &grids[0], ord, &o, NULL, "t", &err), &err);
        int exact = 1;
        for (int i = 0; i < n; i++) exact &= V[i] == lpv_qgrid_round(&grids[0], i / L.in, L.W[i]);
        CHECK(exact);
        /* refusals: a zero or NaN scale, an order that is not a permutation */
        float keep = sc[1];
        sc[1] = 0.0f;
        CHECK(lpv_recon_quant(V, L.out, L.in, L.R, L.C, NULL, st.H, &grids[0], NULL, &o, NULL, "t", &err) == LPV_E_ARG);
        CHECK(strstr(err.msg, "row 1") != NULL);
        sc[1] = NAN;
        CHECK(lpv_recon_quant_ref(V, L.out, L.in, L.R, L.C, NULL, st.H, &grids[0], NULL, &o, NULL, "t", &err) ==
              LPV_E_ARG);
        sc[1] = keep;
        int32_t o0 = ord[0];
        ord[0] = ord[1];
        CHECK(lpv_recon_quant(V, L.out, L.in, L.R, L.C, NULL, st.H, &grids[0], ord, &o, NULL, "t", &err) == LPV_E_ARG);
        CHECK(strstr(err.msg, "permutation") != NULL);
        ord[0] = o0;
        free(Hd), free(V), free(sc), free(lsc), free(ord), free(mask);
        lpv_stats_free(&st);
        free_layer(&L);
    }
}

/* Weighted statistics == the plain ones over the columns repeated w times. */
static void test_weighted(lpv_rng *r) {
    layer L = make_layer(8, 40, 30, 8, 8, r);
    int w = 5;
    lpv_layer_stats a, b;
    lpv_err err;
    CHECK_OK(lpv_stats_init(&a, L.in, 0, &err), &err);
    CHECK_OK(lpv_stats_init(&b, L.in, 0, &err), &err);
    float *scratch = malloc(sizeof(float) * L.in * L.n);
    lpv_stats_accumulate_weighted(&a, L.X, L.ld, L.n, w, scratch);
    for (int k = 0; k < w; k++) lpv_stats_accumulate_ref(&b, L.X, L.ld, L.n);
    double e = 0, m = 0;
    for (int i = 0; i < L.in; i++)
        for (int j = i; j < L.in; j++)
            e = fmax(e, fabs(a.H[i * L.in + j] - b.H[i * L.in + j])), m = fmax(m, fabs(b.H[i * L.in + j]));
    CHECKF(e <= 1e-5 * m, "weighted H: %g of %g", e, m);
    CHECK(a.n == b.n && a.n == (int64_t)w * L.n);
    CHECK(rel_diff_d(a.sum, b.sum, L.in) < 1e-9);
    CHECK(memcmp(a.amax, b.amax, sizeof(float) * L.in) == 0); /* the weight does not scale a maximum */
    free(scratch);
    lpv_stats_free(&a), lpv_stats_free(&b);
    free_layer(&L);
}

static void test_errors(lpv_rng *r) {
    int out = 16, in = 32;
    float *H = calloc(in * in, sizeof(float)), *W = malloc(sizeof(float) * out * in);
    for (int i = 0; i < out * in; i++) W[i] = (float)lpv_rng_normal(r);
    uint8_t mask[8] = {1, 0, 1, 0, 0, 1, 1, 1};
    double sc[8];
    lpv_err err;
    lpv_recon_info info;
    lpv_recon_opts o = lpv_recon_defaults();
    /* rank-deficient H (feature 5 never active) with no damping: retried with 0.01, then fine */
    for (int j = 0; j < in; j++) H[j * in + j] = j == 5 ? 0 : 2;
    o.damp = 0;
    CHECK_OK(lpv_score_obs(W, out, in, H, 8, 8, &o, sc, &info, "l", &err), &err);
    CHECK(info.retried == 1 && info.damp == 0.01);
    float *V = copy_f(W, out * in);
    CHECK_OK(lpv_recon_obs(V, out, in, 8, 8, mask, H, &o, &info, "l", &err), &err);
    CHECK(info.retried == 1 && info.damp == 0.01);
    CHECK_OK(lpv_recon_lsq(V, out, in, 8, 8, mask, H, NULL, &o, &info, "l", &err), &err);
    CHECKF(info.retried >= 1 && info.damp == 0.01, "retried %d damp %g", info.retried, info.damp);
    /* negative definite H fails after the retries, naming the layer and block row */
    for (int j = 0; j < in; j++) H[j * in + j] = -1000;
    o = lpv_recon_defaults();
    CHECK(lpv_recon_lsq(V, out, in, 8, 8, mask, H, NULL, &o, NULL, "blocks.3.mlp.fc2", &err) == LPV_E_DATA);
    CHECKF(strstr(err.msg, "blocks.3.mlp.fc2") && strstr(err.msg, "block row"), "%s", err.msg);
    printf("error: %s\n", err.msg);
    CHECK(lpv_recon_obs(V, out, in, 8, 8, mask, H, &o, NULL, "x", &err) == LPV_E_DATA);
    printf("error: %s\n", err.msg);
    CHECK(lpv_score_obs(W, out, in, H, 8, 8, &o, sc, NULL, "x", &err) == LPV_E_DATA);
    CHECK(lpv_recon_lsq_ref(V, out, in, 8, 8, mask, H, NULL, &o, NULL, "x", &err) == LPV_E_DATA);
    CHECK(lpv_recon_obs_ref(V, out, in, 8, 8, mask, H, &o, NULL, "x", &err) == LPV_E_DATA);
    /* non-finite statistics, bad block shape, bad damping */
    H[3 * in + 7] = NAN;
    CHECK(lpv_recon_lsq(V, out, in, 8, 8, mask, H, NULL, &o, NULL, "x", &err) == LPV_E_DATA);
    CHECK(strstr(err.msg, "non-finite") != NULL);
    H[3 * in + 7] = 0;
    CHECK(lpv_recon_obs(V, out, in, 12, 8, mask, H, &o, NULL, "x", &err) == LPV_E_ARG);
    o.damp = -1;
    CHECK(lpv_score_obs(W, out, in, H, 8, 8, &o, sc, NULL, "x", &err) == LPV_E_ARG);
    printf("error: %s\n", err.msg);
    free(H), free(W), free(V);
}

/* ------------------------------------------------------------------- bench */

static void bench_shape(int out, int in, lpv_rng *r) {
    const int R = 32, C = 32, m = 4096;
    int nbr = (out + R - 1) / R, nbc = (in + C - 1) / C;
    /* synthetic SPD H = X Xᵀ / m from m correlated columns with outlier features */
    float *X = malloc(sizeof(float) * (size_t)in * m), *W = malloc(sizeof(float) * (size_t)out * in);
    for (size_t i = 0; i < (size_t)in * m; i++) X[i] = (float)lpv_rng_normal(r);
    for (int i = 0; i < in; i++)
        for (int t = 0; t < m; t++) X[(size_t)i * m + t] = X[(size_t)i * m + t] * (i % 97 == 0 ? 20.f : 1.f) +
                                                          0.5f * X[(size_t)((i + 1) % in) * m + t];
    for (size_t i = 0; i < (size_t)out * in; i++) W[i] = (float)lpv_rng_normal(r) * 0.02f;
    lpv_layer_stats st;
    lpv_err err;
    CHECK_OK(lpv_stats_init(&st, in, 0, &err), &err);
    double t0 = lpv_now();
    lpv_stats_accumulate(&st, X, m, m);
    double t_acc = lpv_now() - t0;
    uint8_t *mask = malloc((size_t)nbr * nbc);
    for (int i = 0; i < nbr * nbc; i++) mask[i] = lpv_rng_uniform(r) < 0.5;
    float *V = malloc(sizeof(float) * (size_t)out * in);
    double *sc = malloc(sizeof(double) * nbr * nbc), e;
    lpv_recon_opts o = lpv_recon_defaults();
    lpv_recon_info info;

    t0 = lpv_now();
    CHECK_OK(lpv_score_obs(W, out, in, st.H, R, C, &o, sc, &info, "bench", &err), &err);
    double t_sc = lpv_now() - t0;
    t0 = lpv_now();
    lpv_score_wanda(W, out, in, st.H, R, C, sc);
    double t_wa = lpv_now() - t0;
    t0 = lpv_now();
    CHECK_OK(lpv_output_energy(W, out, in, st.H, &e, &err), &err);
    double t_en = lpv_now() - t0;
    memcpy(V, W, sizeof(float) * (size_t)out * in);
    t0 = lpv_now();
    CHECK_OK(lpv_recon_lsq(V, out, in, R, C, mask, st.H, NULL, &o, &info, "bench", &err), &err);
    double t_lsq = lpv_now() - t0;
    memcpy(V, W, sizeof(float) * (size_t)out * in);
    t0 = lpv_now();
    CHECK_OK(lpv_recon_obs(V, out, in, R, C, mask, st.H, &o, &info, "bench", &err), &err);
    double t_obs = lpv_now() - t0;
    double flops = (double)in * in * m; /* ssyrk: in²·m multiply-adds over the upper triangle x 2 flops / 2 */
    printf("bench %4d x %4d (32x32, d = 0.5, %d threads): stats %d cols %.3f s (%.0f GFLOP/s, 394k cols ~ %.1f s), "
           "obs score %.3f s, wanda %.4f s, energy %.3f s, lsq %.3f s, obs update %.3f s\n",
           out, in, lpv_threads_get(), m, t_acc, flops / t_acc * 1e-9, t_acc * 2000.0 * 197 / m, t_sc, t_wa, t_en,
           t_lsq, t_obs);
    /* float / threaded / lazy-batched against the double references at full size */
    float *Vr = malloc(sizeof(float) * (size_t)out * in), *D = malloc(sizeof(float) * (size_t)out * in);
    double e_f[2], e_r[2], dv[2], t_ref[2];
    for (int which = 0; which < 2; which++) {
        memcpy(V, W, sizeof(float) * (size_t)out * in), memcpy(Vr, W, sizeof(float) * (size_t)out * in);
        double t1 = lpv_now();
        if (which == 0) {
            CHECK_OK(lpv_recon_lsq(V, out, in, R, C, mask, st.H, NULL, &o, NULL, "bench", &err), &err);
            t1 = lpv_now();
            CHECK_OK(lpv_recon_lsq_ref(Vr, out, in, R, C, mask, st.H, NULL, &o, NULL, "bench", &err), &err);
        } else {
            CHECK_OK(lpv_recon_obs(V, out, in, R, C, mask, st.H, &o, NULL, "bench", &err), &err);
            t1 = lpv_now();
            CHECK_OK(lpv_recon_obs_ref(Vr, out, in, R, C, mask, st.H, &o, NULL, "bench", &err), &err);
        }
        t_ref[which] = lpv_now() - t1;
        for (size_t i = 0; i < (size_t)out * in; i++) D[i] = W[i] - V[i];
        CHECK_OK(lpv_output_energy(D, out, in, st.H, &e_f[which], &err), &err);
        for (size_t i = 0; i < (size_t)out * in; i++) D[i] = W[i] - Vr[i];
        CHECK_OK(lpv_output_energy(D, out, in, st.H, &e_r[which], &err), &err);
        dv[which] = rel_diff(V, Vr, out * in);
    }
    lpv_mask_apply(memcpy(D, W, sizeof(float) * (size_t)out * in), out, in, R, C, mask);
    for (size_t i = 0; i < (size_t)out * in; i++) D[i] = W[i] - D[i];
    double e_mask;
    CHECK_OK(lpv_output_energy(D, out, in, st.H, &e_mask, &err), &err);
    printf("  accuracy vs double refs: lsq |V - ref|/|ref| %.2g, error %.6g vs %.6g (ref %.1f s); obs %.2g, error "
           "%.6g vs %.6g (ref %.1f s); masked-only error %.6g; energy %.6g\n",
           dv[0], e_f[0], e_r[0], t_ref[0], dv[1], e_f[1], e_r[1], t_ref[1], e_mask, e);
    free(Vr), free(D);
    free(X), free(W), free(V), free(sc), free(mask);
    lpv_stats_free(&st);
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 20260501);
    test_stats(&r);
    test_scores(&r);
    test_lsq(&r);
    test_sequential(&r);
    test_obs(&r);
    test_errors(&r);
    test_quant(&r);
    test_weighted(&r);
    const char *bench = getenv("LPVIT_BENCH");
    if (bench && atoi(bench) > 0) {
        lpv_threads_set(2);
        bench_shape(768, 3072, &r);  /* DeiT-B fc2 */
        bench_shape(3072, 768, &r);  /* DeiT-B fc1 */
        bench_shape(2304, 768, &r);  /* qkv */
        bench_shape(768, 768, &r);   /* attn proj */
    }
    return test_finish("test_recon");
}
