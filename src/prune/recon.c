/*
 * recon.c — layer-wise reconstruction: statistics, OBS / Wanda block scores
 * and fixed-mask weight updates (see include/lpvit/recon.h).
 *
 * Layouts. Everything is row-major; LAPACK is column-major, and a row-major
 * array seen by LAPACK is its transpose. For a symmetric matrix that changes
 * nothing except which triangle is which: LAPACK's 'L' (column-major lower)
 * is our row-major upper triangle. So
 *   spotrf('L') on Hd  -> row-major upper holds U with Hd = Uᵀ U
 *   spotri('L')        -> row-major upper holds Hd⁻¹
 *   spotrf('L') again  -> row-major upper holds U with Hd⁻¹ = Uᵀ U (SparseGPT's U)
 * and a row-major (nrhs, k) right-hand side is LAPACK's (k, nrhs) with ldb = k.
 *
 * Threads: lpv_threads_get() OpenMP threads, OpenBLAS single-threaded inside
 * each (cpu.h); inside an enclosing parallel region everything runs on 1.
 */
#include "lpvit/recon.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/codebook.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/layout.h"

/* LAPACK (OpenBLAS). The trailing size_t is gfortran's hidden length of the
 * CHARACTER argument; OpenBLAS's own C versions ignore it. */
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
void spotri_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
void spotrs_(const char *uplo, const int *n, const int *nrhs, const float *a, const int *lda, float *b,
             const int *ldb, int *info, size_t uplo_len);
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda, double *b,
             const int *ldb, int *info, size_t uplo_len);
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb,
            int *info, size_t uplo_len);

#define OBS_BATCH 128 /* SparseGPT's lazy-batch width */

static int imin(int a, int b) { return a < b ? a : b; }
static const char *nm(const char *name) { return name ? name : "layer"; }

static int s_potrf(float *a, int n) {
    int info = 0;
    spotrf_("L", &n, a, &n, &info, 1);
    return info;
}
static int s_potri(float *a, int n) {
    int info = 0;
    spotri_("L", &n, a, &n, &info, 1);
    return info;
}
static int d_potrf(double *a, int n) {
    int info = 0;
    dpotrf_("L", &n, a, &n, &info, 1);
    return info;
}
static int d_potri(double *a, int n) {
    int info = 0;
    dpotri_("L", &n, a, &n, &info, 1);
    return info;
}

lpv_recon_opts lpv_recon_defaults(void) {
    lpv_recon_opts o = {LPV_RECON_DAMP, LPV_RECON_RETRIES, 0};
    return o;
}

static lpv_status check_layer(int out, int in, int R, int C, const lpv_recon_opts *o, const char *name,
                              lpv_err *err) {
    if (out < 1 || in < 1)
        return lpv_fail(err, LPV_E_SHAPE, "recon '%s': expected a non-empty weight, got %d x %d", nm(name), out, in);
    int okR = R == 8 || R == 16 || R == 32 || R == 64, okC = C == 8 || C == 16 || C == 32 || C == 64;
    if (!okR || !okC)
        return lpv_fail(err, LPV_E_ARG, "recon '%s': block must be R x C with R, C in {8, 16, 32, 64}, got %dx%d",
                        nm(name), R, C);
    if (!(o->damp >= 0) || !isfinite(o->damp))
        return lpv_fail(err, LPV_E_ARG, "recon '%s': damping must be finite and >= 0, got %g", nm(name), o->damp);
    if (o->retries < 0 || o->retries > 12)
        return lpv_fail(err, LPV_E_ARG, "recon '%s': retries must be in [0, 12], got %d", nm(name), o->retries);
    return LPV_OK;
}

/* Damping of attempt a: damp, then max(damp, 0.001) · 10^a (so damp = 0 retries too). */
static double damp_at(const lpv_recon_opts *o, int attempt) {
    if (attempt == 0) return o->damp;
    return (o->damp > 1e-3 ? o->damp : 1e-3) * pow(10.0, attempt);
}

/* mean(diag H), or 1 when the diagonal is all zero (so δ = damp). */
static double diag_base(const float *H, int in) {
    double s = 0;
    for (int i = 0; i < in; i++) s += H[(int64_t)i * in + i];
    s /= in;
    return s > 0 ? s : 1.0;
}

/* dst (in, in) = full symmetric matrix from src's upper triangle, in 64x64
 * tiles. Returns 0 when src's upper triangle holds a NaN or infinity. */
static int sym_copy(float *dst, const float *src, int in) {
    const int T = 64;
    int finite = 1;
    for (int i0 = 0; i0 < in; i0 += T)
        for (int j0 = i0; j0 < in; j0 += T) {
            int i1 = imin(i0 + T, in), j1 = imin(j0 + T, in);
            for (int i = i0; i < i1; i++)
                for (int j = (j0 > i ? j0 : i); j < j1; j++) {
                    float v = src[(int64_t)i * in + j];
                    finite &= isfinite(v);
                    dst[(int64_t)i * in + j] = v;
                    dst[(int64_t)j * in + i] = v;
                }
        }
    return finite;
}

static int upper_finite(const float *H, int in) {
    int finite = 1;
    for (int i = 0; i < in; i++)
        for (int j = i; j < in; j++) finite &= isfinite(H[(int64_t)i * in + j]);
    return finite;
}

static void info_set(lpv_recon_info *info, double damp, double delta, int retried) {
    if (!info) return;
    info->damp = damp;
    info->delta = delta;
    info->retried = retried;
}

/* ---------------------------------------------------------------- statistics */

lpv_status lpv_stats_init(lpv_layer_stats *s, int in, int cross, lpv_err *err) {
    memset(s, 0, sizeof *s);
    if (in < 1) return lpv_fail(err, LPV_E_ARG, "stats: expected at least 1 input feature, got %d", in);
    size_t nn = (size_t)in * (size_t)in;
    s->in = in;
    s->H = calloc(nn, sizeof(float));
    s->sum = calloc((size_t)in, sizeof(double));
    s->amax = calloc((size_t)in, sizeof(float));
    if (cross) {
        s->G = calloc(nn, sizeof(float));
        s->sum_dense = calloc((size_t)in, sizeof(double));
    }
    if (!s->H || !s->sum || !s->amax || (cross && (!s->G || !s->sum_dense))) {
        lpv_stats_free(s);
        return lpv_fail(err, LPV_E_OOM, "stats: out of memory for %d x %d statistics", in, in);
    }
    return LPV_OK;
}

lpv_status lpv_stats_init_projected(lpv_layer_stats *s, int in, int out, lpv_err *err) {
    LPV_TRY(lpv_stats_init(s, in, 0, err));
    if (out < 1) {
        lpv_stats_free(s);
        return lpv_fail(err, LPV_E_ARG, "stats: expected at least 1 output, got %d", out);
    }
    s->out = out;
    s->P = calloc((size_t)out * (size_t)in, sizeof(float));
    s->sum_dense = calloc((size_t)in, sizeof(double));
    if (!s->P || !s->sum_dense) {
        lpv_stats_free(s);
        return lpv_fail(err, LPV_E_OOM, "stats: out of memory for %d x %d statistics", out, in);
    }
    return LPV_OK;
}

void lpv_stats_free(lpv_layer_stats *s) {
    free(s->H), free(s->sum), free(s->amax), free(s->G), free(s->sum_dense), free(s->P);
    memset(s, 0, sizeof *s);
}

lpv_status lpv_stats_sum_ranks(lpv_layer_stats *s, lpv_err *err) {
    if (lpv_dist_size() == 1) return LPV_OK;
    int64_t nn = (int64_t)s->in * s->in;
    LPV_TRY(lpv_dist_sum_f32(s->H, nn, err));
    LPV_TRY(lpv_dist_sum_f64(s->sum, s->in, err));
    LPV_TRY(lpv_dist_sum_i64(&s->n, 1, err));
    LPV_TRY(lpv_dist_max_f32(s->amax, s->in, err));
    if (s->G) LPV_TRY(lpv_dist_sum_f32(s->G, nn, err));
    if (s->P) LPV_TRY(lpv_dist_sum_f32(s->P, (int64_t)s->out * s->in, err));
    if (s->sum_dense) LPV_TRY(lpv_dist_sum_f64(s->sum_dense, s->in, err));
    return LPV_OK;
}

/* Row k of `nb` bands that split the upper triangle of an n x n matrix into
 * equal areas (row r holds n - r entries), rounded to 16. */
static int band_edge(int n, int nb, int k) {
    if (k <= 0) return 0;
    if (k >= nb) return n;
    double r = n * (1.0 - sqrt(1.0 - (double)k / nb));
    int e = ((int)r + 8) & ~15;
    return e < n ? e : n;
}

/* H (upper) += X Xᵀ, X (n, ncols) stride ld, in triangle-balanced row bands, one per thread: every band
   is a call that packs its operands again, so fewer and larger calls run faster (the Xeon, 2 threads, 3152
   columns: n = 768 at 266 GFLOP/s with 2 bands against 205 with 8, n = 3072 315 against 279). */
static void syrk_bands(float *H, int n, const float *X, int ld, int ncols) {
    int nt = lpv_team_size();
    int nb = (nt > 1 && n >= 256) ? nt : 1;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int k = 0; k < nb; k++) {
        int r0 = band_edge(n, nb, k), r1 = band_edge(n, nb, k + 1);
        if (r1 <= r0) continue;
        const float *Xa = X + (int64_t)r0 * ld;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, r1 - r0, ncols, 1.0f, Xa, ld, 1.0f,
                    H + (int64_t)r0 * n + r0, n);
        if (r1 < n)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, n - r1, ncols, 1.0f, Xa, ld,
                        X + (int64_t)r1 * ld, ld, 1.0f, H + (int64_t)r0 * n + r1, n);
    }
}

static void row_sums(double *sum, const float *X, int n, int ld, int ncols) {
    for (int i = 0; i < n; i++) {
        const float *x = X + (int64_t)i * ld;
        double acc = 0;
        for (int t = 0; t < ncols; t++) acc += x[t];
        sum[i] += acc;
    }
}

/* amax (n) = max(amax, max_t |X[i, t]|). A compare, not fmaxf: GCC calls libm's fmaxf per element (its NaN
   rule has no one-instruction form), and both skip a NaN x alike (amax starts finite). */
static void row_amax(float *amax, const float *X, int n, int ld, int ncols) {
    for (int i = 0; i < n; i++) {
        const float *x = X + (int64_t)i * ld;
        float m = amax[i];
        for (int t = 0; t < ncols; t++) {
            float a = fabsf(x[t]);
            m = a > m ? a : m;
        }
        amax[i] = m;
    }
}

void lpv_stats_accumulate(lpv_layer_stats *s, const float *X, int ld, int ncols) {
    LPV_ASSERT(s && s->H && ncols >= 0 && ld >= ncols);
    if (ncols == 0) return;
    syrk_bands(s->H, s->in, X, ld, ncols);
    row_sums(s->sum, X, s->in, ld, ncols);
    row_amax(s->amax, X, s->in, ld, ncols);
    s->n += ncols;
}

void lpv_stats_accumulate_weighted(lpv_layer_stats *s, const float *X, int ld, int ncols, int w, float *scratch) {
    LPV_ASSERT(s && s->H && ncols >= 0 && ld >= ncols && w >= 1);
    if (ncols == 0) return;
    float r = sqrtf((float)w);
    for (int i = 0; i < s->in; i++)
        for (int t = 0; t < ncols; t++) scratch[(int64_t)i * ncols + t] = r * X[(int64_t)i * ld + t];
    syrk_bands(s->H, s->in, scratch, ncols, ncols); /* (√w X)(√w X)ᵀ = w X Xᵀ */
    for (int i = 0; i < s->in; i++) {
        const float *x = X + (int64_t)i * ld;
        double acc = 0;
        for (int t = 0; t < ncols; t++) acc += x[t];
        s->sum[i] += w * acc;
    }
    row_amax(s->amax, X, s->in, ld, ncols);
    s->n += (int64_t)w * ncols;
}

void lpv_stats_accumulate_ref(lpv_layer_stats *s, const float *X, int ld, int ncols) {
    LPV_ASSERT(s && s->H && ncols >= 0 && ld >= ncols);
    int n = s->in;
    for (int i = 0; i < n; i++) {
        const float *xi = X + (int64_t)i * ld;
        for (int j = i; j < n; j++) {
            const float *xj = X + (int64_t)j * ld;
            double acc = 0;
            for (int t = 0; t < ncols; t++) acc += (double)xi[t] * xj[t];
            s->H[(int64_t)i * n + j] += (float)acc;
        }
        double acc = 0;
        for (int t = 0; t < ncols; t++) acc += xi[t], s->amax[i] = fmaxf(s->amax[i], fabsf(xi[t]));
        s->sum[i] += acc;
    }
    s->n += ncols;
}

/* C (M, N) = A op(B) + beta C in nb bands of rows over the team, one single-threaded sgemm each: A (M, K)
 * row-major, op(B) = B (K, N), or Bᵀ with B (N, K) when tb is CblasTrans. A given nb gives the same bits. */
static void sgemm_row_bands(int nb, CBLAS_TRANSPOSE tb, int M, int N, int K, const float *A, int lda, const float *B,
                            int ldb, float beta, float *C, int ldc) {
#pragma omp parallel for num_threads(lpv_team_size()) schedule(dynamic, 1)
    for (int k = 0; k < nb; k++) {
        int r0 = (int)((int64_t)M * k / nb), r1 = (int)((int64_t)M * (k + 1) / nb);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, r1 - r0, N, K, 1.0f, A + (int64_t)r0 * lda, lda, B, ldb, beta,
                        C + (int64_t)r0 * ldc, ldc);
    }
}

void lpv_stats_accumulate_cross(lpv_layer_stats *s, const float *X, int ldx, const float *Xt, int ldxt, int ncols) {
    LPV_ASSERT(s && s->H && s->G && ncols >= 0 && ldx >= ncols && ldxt >= ncols);
    if (ncols == 0) return;
    int n = s->in, nt = lpv_team_size();
    syrk_bands(s->H, n, Xt, ldxt, ncols);
    sgemm_row_bands((nt > 1 && n >= 256) ? nt : 1, CblasTrans, n, n, ncols, X, ldx, Xt, ldxt, 1.0f, s->G, n);
    row_sums(s->sum, Xt, n, ldxt, ncols);
    row_sums(s->sum_dense, X, n, ldx, ncols);
    row_amax(s->amax, Xt, n, ldxt, ncols);
    s->n += ncols;
}

/* The row bands of the projected statistics' products: one count for lpv_stats_project and
 * lpv_stats_accumulate_projected_y whoever calls them, so W x is the same bits kept or computed on the fly. */
static int proj_bands(int out) {
    int nt = lpv_team_size();
    return (nt > 1 && out >= 64) ? nt : 1;
}

void lpv_stats_project(const float *W, int out, int in, const float *X, int ldx, int ncols, float *Y, int ldy,
                       double *xsum) {
    LPV_ASSERT(out >= 1 && in >= 1 && ncols >= 0 && ldx >= ncols && ldy >= ncols);
    if (xsum) {
        memset(xsum, 0, sizeof(double) * (size_t)in);
        row_sums(xsum, X, in, ldx, ncols);
    }
    if (ncols == 0) return;
    sgemm_row_bands(proj_bands(out), CblasNoTrans, out, ncols, in, W, in, X, ldx, 0.0f, Y, ldy);
}

void lpv_stats_accumulate_projected_y(lpv_layer_stats *s, const float *Y, int ldy, const double *xsum,
                                      const float *Xt, int ldxt, int ncols) {
    LPV_ASSERT(s && s->H && s->P && s->sum_dense && ncols >= 0 && ldy >= ncols && ldxt >= ncols);
    if (xsum) /* row_sums adds each row's chunk sum once: adding the chunk's sums gives the same bits */
        for (int i = 0; i < s->in; i++) s->sum_dense[i] += xsum[i];
    if (ncols == 0) return;
    int n = s->in, out = s->out;
    syrk_bands(s->H, n, Xt, ldxt, ncols);
    sgemm_row_bands(proj_bands(out), CblasTrans, out, n, ncols, Y, ldy, Xt, ldxt, 1.0f, s->P, n); /* P += Y X̃ᵀ */
    row_sums(s->sum, Xt, n, ldxt, ncols);
    row_amax(s->amax, Xt, n, ldxt, ncols);
    s->n += ncols;
}

void lpv_stats_accumulate_projected(lpv_layer_stats *s, const float *W, const float *X, int ldx, const float *Xt,
                                    int ldxt, int ncols, float *scratch) {
    LPV_ASSERT(s && s->P && ncols >= 0 && ldx >= ncols && ldxt >= ncols);
    if (ncols == 0) return;
    lpv_stats_project(W, s->out, s->in, X, ldx, ncols, scratch, ncols, NULL);
    row_sums(s->sum_dense, X, s->in, ldx, ncols);
    lpv_stats_accumulate_projected_y(s, scratch, ncols, NULL, Xt, ldxt, ncols);
}

void lpv_stats_accumulate_cross_ref(lpv_layer_stats *s, const float *X, int ldx, const float *Xt, int ldxt,
                                    int ncols) {
    LPV_ASSERT(s && s->H && s->G && ncols >= 0 && ldx >= ncols && ldxt >= ncols);
    int n = s->in;
    for (int i = 0; i < n; i++) {
        const float *xi = X + (int64_t)i * ldx, *ti = Xt + (int64_t)i * ldxt;
        for (int j = 0; j < n; j++) {
            const float *tj = Xt + (int64_t)j * ldxt;
            double g = 0, h = 0;
            for (int t = 0; t < ncols; t++) g += (double)xi[t] * tj[t], h += (double)ti[t] * tj[t];
            s->G[(int64_t)i * n + j] += (float)g;
            if (j >= i) s->H[(int64_t)i * n + j] += (float)h;
        }
        double a = 0, b = 0;
        for (int t = 0; t < ncols; t++) a += ti[t], b += xi[t], s->amax[i] = fmaxf(s->amax[i], fabsf(ti[t]));
        s->sum[i] += a;
        s->sum_dense[i] += b;
    }
    s->n += ncols;
}

void lpv_stats_mean(const lpv_layer_stats *s, double *mean, double *mean_dense) {
    double inv = s->n > 0 ? 1.0 / (double)s->n : 0;
    for (int i = 0; i < s->in; i++) mean[i] = s->sum[i] * inv;
    if (mean_dense) {
        LPV_ASSERT(s->sum_dense);
        for (int i = 0; i < s->in; i++) mean_dense[i] = s->sum_dense[i] * inv;
    }
}

void lpv_stats_symmetrize(float *H, int in) {
    for (int i = 0; i < in; i++)
        for (int j = i + 1; j < in; j++) H[(int64_t)j * in + i] = H[(int64_t)i * in + j];
}

double lpv_damp_copy(const float *H, int in, double damp, float *Hd) {
    double delta = damp * diag_base(H, in);
    sym_copy(Hd, H, in);
    for (int i = 0; i < in; i++) Hd[(int64_t)i * in + i] += (float)delta;
    return delta;
}

/* ------------------------------------------------------- damped factorizations */

/* Hd = H + δI, factored and (want >= 1) inverted, (want == 2) and the inverse
 * factored again, retrying with damp × 10 when a step fails. On return the
 * row-major upper triangle of Hd holds U (want 0: Hd = UᵀU), Hd⁻¹ (want 1) or
 * U with Hd⁻¹ = UᵀU (want 2). */
static lpv_status factor_chain(float *Hd, const float *H, int in, int want, const lpv_recon_opts *o, double *damp_used,
                               double *delta_used, int *retried, const char *name, lpv_err *err) {
    double base = diag_base(H, in);
    int info = 0, step = 0;
    for (int a = 0; a <= o->retries; a++) {
        double damp = damp_at(o, a), delta = damp * base;
        sym_copy(Hd, H, in);
        for (int i = 0; i < in; i++) Hd[(int64_t)i * in + i] += (float)delta;
        step = 0;
        if ((info = s_potrf(Hd, in)) == 0 && want >= 1) {
            step = 1;
            if ((info = s_potri(Hd, in)) == 0 && want >= 2) {
                step = 2;
                info = s_potrf(Hd, in);
            }
        }
        if (info == 0) {
            *damp_used = damp, *delta_used = delta, *retried = a;
            return LPV_OK;
        }
    }
    static const char *what[] = {"cholesky of H + δI", "inverse of H + δI", "cholesky of (H + δI)⁻¹"};
    return lpv_fail(err, LPV_E_DATA,
                    "recon '%s': %s (%d x %d) failed at pivot %d even with damp %g (δ = %g, %d retries)", nm(name),
                    what[step], in, in, info, damp_at(o, o->retries), damp_at(o, o->retries) * base, o->retries);
}

/* The same in double (references). */
static lpv_status factor_chain_d(double *Hd, const float *H, int in, int want, const lpv_recon_opts *o,
                                 double *damp_used, double *delta_used, int *retried, const char *name, lpv_err *err) {
    double base = diag_base(H, in);
    int info = 0;
    for (int a = 0; a <= o->retries; a++) {
        double damp = damp_at(o, a), delta = damp * base;
        for (int i = 0; i < in; i++)
            for (int j = 0; j < in; j++) {
                int lo = i < j ? i : j, hi = i < j ? j : i;
                Hd[(int64_t)i * in + j] = (double)H[(int64_t)lo * in + hi] + (i == j ? delta : 0);
            }
        if ((info = d_potrf(Hd, in)) == 0 && want >= 1)
            if ((info = d_potri(Hd, in)) == 0 && want >= 2) info = d_potrf(Hd, in);
        if (info == 0) {
            *damp_used = damp, *delta_used = delta, *retried = a;
            return LPV_OK;
        }
    }
    return lpv_fail(err, LPV_E_DATA, "recon '%s': factorization of H + δI (%d x %d) failed at pivot %d even with damp %g",
                    nm(name), in, in, info, damp_at(o, o->retries));
}

static lpv_status prologue(int out, int in, int R, int C, const float *H, const lpv_recon_opts *o_, lpv_recon_opts *o,
                           const char *name, lpv_err *err) {
    *o = o_ ? *o_ : lpv_recon_defaults();
    LPV_TRY(check_layer(out, in, R, C, o, name, err));
    if (!upper_finite(H, in)) return lpv_fail(err, LPV_E_DATA, "recon '%s': H has non-finite entries", nm(name));
    return LPV_OK;
}

/* -------------------------------------------------------------------- scores */

lpv_status lpv_score_obs(const float *W, int out, int in, const float *H, int R, int C, const lpv_recon_opts *o_,
                         double *score, lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbr = lpv_ceil_div(out, R), nbc = lpv_ceil_div(in, C), nt = lpv_team_size();
    float *Hi = malloc(sizeof(float) * (size_t)in * in);
    double *scr = malloc(sizeof(double) * (size_t)nt * ((size_t)C * C + (size_t)out * C));
    if (!Hi || !scr) {
        free(Hi), free(scr);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the obs score", nm(name));
    }
    double damp = o.damp, delta = 0, base = diag_base(H, in);
    int retried = 0, bad_bc = -1, bad_info = 0;
    lpv_status st = LPV_OK;
    /* The C x C sub-blocks of Hd⁻¹ are SPD in exact arithmetic; a float Hd⁻¹
     * so ill-conditioned that one is not numerically is retried with more damping. */
    for (int a = 0; a <= o.retries; a++) {
        lpv_recon_opts oa = o;
        oa.damp = damp_at(&o, a), oa.retries = 0;
        int r0;
        if ((st = factor_chain(Hi, H, in, 1, &oa, &damp, &delta, &r0, name, err)) != LPV_OK) {
            if (a < o.retries) continue;
            free(Hi), free(scr);
            return st;
        }
        retried = a, bad_bc = -1;
#pragma omp parallel num_threads(nt)
        {
            double *M = scr + (size_t)omp_get_thread_num() * ((size_t)C * C + (size_t)out * C), *B = M + (size_t)C * C;
#pragma omp for schedule(dynamic, 1)
            for (int bc = 0; bc < nbc; bc++) {
                int c0 = bc * C, cw = imin(C, in - c0), inf = 0;
                for (int p = 0; p < cw; p++)
                    for (int q = 0; q < cw; q++)
                        M[p * cw + q] = Hi[(int64_t)(c0 + (p < q ? p : q)) * in + c0 + (p < q ? q : p)];
                if ((inf = d_potrf(M, cw)) == 0) {
                    for (int i = 0; i < out; i++)
                        for (int p = 0; p < cw; p++) B[(int64_t)i * cw + p] = W[(int64_t)i * in + c0 + p];
                    dpotrs_("L", &cw, &out, M, &cw, B, &cw, &inf, 1); /* B (out, cw) = W_{:,Cb} M⁻¹ */
                }
                if (inf) {
#pragma omp critical(lpv_recon_obs_fail)
                    bad_bc = bc, bad_info = inf;
                    continue;
                }
                for (int br = 0; br < nbr; br++) {
                    double s = 0;
                    for (int i = br * R; i < imin(out, (br + 1) * R); i++)
                        for (int p = 0; p < cw; p++) s += (double)W[(int64_t)i * in + c0 + p] * B[(int64_t)i * cw + p];
                    score[(int64_t)br * nbc + bc] = 0.5 * s;
                }
            }
        }
        if (bad_bc < 0) break;
    }
    free(Hi), free(scr);
    if (bad_bc >= 0)
        return lpv_fail(err, LPV_E_DATA,
                        "recon '%s': block column %d: [(H + δI)⁻¹]_CC not positive definite (pivot %d) even with damp "
                        "%g (δ = %g)",
                        nm(name), bad_bc, bad_info, damp, damp * base);
    info_set(info, damp, delta, retried);
    return LPV_OK;
}

lpv_status lpv_score_obs_ref(const float *W, int out, int in, const float *H, int R, int C, const lpv_recon_opts *o_,
                             double *score, lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbr = lpv_ceil_div(out, R), nbc = lpv_ceil_div(in, C);
    double *Hi = malloc(sizeof(double) * (size_t)in * in), *M = malloc(sizeof(double) * (size_t)C * C);
    if (!Hi || !M) {
        free(Hi), free(M);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the obs score", nm(name));
    }
    double damp, delta;
    int retried;
    lpv_status st = factor_chain_d(Hi, H, in, 1, &o, &damp, &delta, &retried, name, err);
    for (int bc = 0; st == LPV_OK && bc < nbc; bc++) {
        int c0 = bc * C, cw = imin(C, in - c0);
        for (int p = 0; p < cw; p++)
            for (int q = 0; q < cw; q++)
                M[p * cw + q] = Hi[(int64_t)(c0 + (p < q ? p : q)) * in + c0 + (p < q ? q : p)];
        if (d_potrf(M, cw) || d_potri(M, cw)) { /* M⁻¹, upper (row-major) triangle */
            st = lpv_fail(err, LPV_E_DATA, "recon '%s': block column %d: [(H + δI)⁻¹]_CC is singular", nm(name), bc);
            break;
        }
        for (int br = 0; br < nbr; br++) {
            double s = 0;
            for (int i = br * R; i < imin(out, (br + 1) * R); i++) {
                const float *w = W + (int64_t)i * in + c0;
                for (int p = 0; p < cw; p++)
                    for (int q = 0; q < cw; q++) s += (double)w[p] * M[p < q ? p * cw + q : q * cw + p] * w[q];
            }
            score[(int64_t)br * nbc + bc] = 0.5 * s;
        }
    }
    free(Hi), free(M);
    if (st == LPV_OK) info_set(info, damp, delta, retried);
    return st;
}

void lpv_score_wanda(const float *W, int out, int in, const float *H, int R, int C, double *score) {
    int nbc = lpv_ceil_div(in, C), nbr = lpv_ceil_div(out, R);
    double *nrm = malloc(sizeof(double) * (size_t)in);
    LPV_ASSERT(nrm);
    for (int j = 0; j < in; j++) {
        double h = H[(int64_t)j * in + j];
        nrm[j] = h > 0 ? sqrt(h) : 0;
    }
    memset(score, 0, sizeof(double) * (size_t)nbr * nbc);
    for (int i = 0; i < out; i++) {
        const float *w = W + (int64_t)i * in;
        double *sb = score + (int64_t)(i / R) * nbc;
        for (int bc = 0; bc < nbc; bc++) {
            double s = 0;
            for (int j = bc * C; j < imin(in, (bc + 1) * C); j++) s += fabs((double)w[j]) * nrm[j];
            sb[bc] += s;
        }
    }
    free(nrm);
}

void lpv_score_wanda_ref(const float *W, int out, int in, const float *H, int R, int C, double *score) {
    int nbc = lpv_ceil_div(in, C), nbr = lpv_ceil_div(out, R);
    for (int br = 0; br < nbr; br++)
        for (int bc = 0; bc < nbc; bc++) {
            double s = 0;
            for (int i = br * R; i < (br + 1) * R && i < out; i++)
                for (int j = bc * C; j < (bc + 1) * C && j < in; j++) {
                    double h = H[(int64_t)j * in + j];
                    s += fabs((double)W[(int64_t)i * in + j]) * (h > 0 ? sqrt(h) : 0);
                }
            score[(int64_t)br * nbc + bc] = s;
        }
}

lpv_status lpv_output_energy(const float *W, int out, int in, const float *H, double *energy, lpv_err *err) {
    const int RB = 64;
    int nchunks = (out + RB - 1) / RB, nt = lpv_team_size();
    float *T = malloc(sizeof(float) * (size_t)nt * RB * in);
    double *part = malloc(sizeof(double) * (size_t)nchunks);
    if (!T || !part) {
        free(T), free(part);
        return lpv_fail(err, LPV_E_OOM, "energy: out of memory for a %d x %d scratch", RB, in);
    }
#pragma omp parallel num_threads(nt)
    {
        float *Tt = T + (size_t)omp_get_thread_num() * RB * in;
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < nchunks; c++) {
            int r0 = c * RB, m = imin(RB, out - r0);
            /* Tt (m, in) = W_chunk · H, H symmetric from its upper triangle */
            cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, m, in, 1.0f, H, in, W + (int64_t)r0 * in, in, 0.0f, Tt,
                        in);
            double s = 0;
            for (int64_t k = 0; k < (int64_t)m * in; k++) s += (double)Tt[k] * W[(int64_t)r0 * in + k];
            part[c] = s;
        }
    }
    double e = 0;
    for (int c = 0; c < nchunks; c++) e += part[c];
    *energy = e;
    free(T), free(part);
    if (!isfinite(e)) return lpv_fail(err, LPV_E_DATA, "energy: the layer's weights or input statistics are not finite");
    return LPV_OK;
}

double lpv_output_energy_ref(const float *W, int out, int in, const float *H) {
    double e = 0;
    for (int r = 0; r < out; r++) {
        const float *w = W + (int64_t)r * in;
        for (int i = 0; i < in; i++) {
            double acc = 0;
            for (int j = 0; j < in; j++) acc += (double)H[(int64_t)(i < j ? i : j) * in + (i < j ? j : i)] * w[j];
            e += acc * w[i];
        }
    }
    return e;
}

/* ------------------------------------------------------------------- updates */

void lpv_mask_apply(float *W, int out, int in, int R, int C, const uint8_t *mask) {
    int nbc = lpv_ceil_div(in, C);
    for (int i = 0; i < out; i++)
        for (int bc = 0; bc < nbc; bc++)
            if (!mask[(int64_t)(i / R) * nbc + bc])
                memset(W + (int64_t)i * in + bc * C, 0, sizeof(float) * (size_t)imin(C, in - bc * C));
}

void lpv_recon_bias(float *b, const float *W_dense, const float *W_new, int out, int in, const double *mean_x,
                    const double *mean_xt) {
    if (!mean_xt) mean_xt = mean_x;
    for (int i = 0; i < out; i++) {
        const float *w = W_dense + (int64_t)i * in, *v = W_new + (int64_t)i * in;
        double d = 0;
        for (int j = 0; j < in; j++) d += (double)w[j] * mean_x[j] - (double)v[j] * mean_xt[j];
        b[i] += (float)d;
    }
}

/* Runs of kept columns of block row br, merged when adjacent: run r covers
 * columns [run[2r], run[2r] + run[2r+1]). Returns the run count; *k = |K|. */
static int kept_runs(const uint8_t *mask, int br, int nbc, int in, int C, int *run, int *k) {
    int nr = 0, kk = 0;
    for (int bc = 0; bc < nbc; bc++) {
        if (!mask[(int64_t)br * nbc + bc]) continue;
        int c0 = bc * C, len = imin(C, in - c0);
        if (nr > 0 && run[2 * nr - 2] + run[2 * nr - 1] == c0)
            run[2 * nr - 1] += len;
        else
            run[2 * nr] = c0, run[2 * nr + 1] = len, nr++;
        kk += len;
    }
    *k = kk;
    return nr;
}

typedef struct {
    int br, info, k;
    double damp;
} lsq_fail;

/* One block row of lpv_recon_lsq; A (k, k) and Bt (R, k) are the thread's
 * scratch. Gm: G (in, in), or with projected P = W G (out, in). Returns 0, or the spotrf/spotrs info after
 * the last retry. */
static int lsq_block_row(float *W, int out, int in, int R, const float *Hf, const float *Gm, int plain, int projected,
                         const lpv_recon_opts *o, double base, int br, const int *run, int nrun, int k, float *A,
                         float *Bt, double *damp_used, int *retried) {
    int r0 = br * R, nr = imin(R, out - r0), info = 0;
    *damp_used = o->damp, *retried = 0;
    if (k == 0) {
        memset(W + (int64_t)r0 * in, 0, sizeof(float) * (size_t)nr * in);
        return 0;
    }
    if (plain && !o->ridge_zero && k == in) return 0; /* nothing pruned: the optimum is W itself */
    /* Bt (nr, k) = W_r G_{:,K} */
    for (int q = 0, off = 0; q < nrun && projected; off += run[2 * q + 1], q++)
        for (int i = 0; i < nr; i++)
            memcpy(Bt + (int64_t)i * k + off, Gm + (int64_t)(r0 + i) * in + run[2 * q], sizeof(float) * (size_t)run[2 * q + 1]);
    for (int q = 0, off = 0; q < nrun && !projected; off += run[2 * q + 1], q++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, run[2 * q + 1], in, 1.0f, W + (int64_t)r0 * in,
                    in, Gm + run[2 * q], in, 0.0f, Bt + off, k);
    double delta = 0;
    for (int a = 0; a <= o->retries; a++) {
        double damp = damp_at(o, a);
        delta = damp * base;
        /* A = H_KK + δI */
        for (int p = 0, offp = 0; p < nrun; offp += run[2 * p + 1], p++)
            for (int u = 0; u < run[2 * p + 1]; u++) {
                const float *hrow = Hf + (int64_t)(run[2 * p] + u) * in;
                float *arow = A + (int64_t)(offp + u) * k;
                for (int q = 0, offq = 0; q < nrun; offq += run[2 * q + 1], q++)
                    memcpy(arow + offq, hrow + run[2 * q], sizeof(float) * (size_t)run[2 * q + 1]);
                arow[offp + u] += (float)delta;
            }
        *damp_used = damp, *retried = a;
        if ((info = s_potrf(A, k)) == 0) break;
    }
    if (info) return info;
    if (!o->ridge_zero)
        for (int i = 0; i < nr; i++)
            for (int q = 0, off = 0; q < nrun; off += run[2 * q + 1], q++)
                for (int u = 0; u < run[2 * q + 1]; u++)
                    Bt[(int64_t)i * k + off + u] += (float)(delta * W[(int64_t)(r0 + i) * in + run[2 * q] + u]);
    spotrs_("L", &k, &nr, A, &k, Bt, &k, &info, 1);
    if (info) return info;
    for (int i = 0; i < nr; i++) {
        float *w = W + (int64_t)(r0 + i) * in;
        memset(w, 0, sizeof(float) * (size_t)in);
        for (int q = 0, off = 0; q < nrun; off += run[2 * q + 1], q++)
            memcpy(w + run[2 * q], Bt + (int64_t)i * k + off, sizeof(float) * (size_t)run[2 * q + 1]);
    }
    return 0;
}

/* Sort key (|K| descending, then block row): biggest systems first balance dynamic scheduling. */
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static lpv_status lsq(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H, const float *G,
                      int projected, const lpv_recon_opts *o_, lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbr = lpv_ceil_div(out, R), nbc = lpv_ceil_div(in, C), nt = lpv_team_size();
    float *Hf = malloc(sizeof(float) * (size_t)in * in);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)nbr);
    int *runs = malloc(sizeof(int) * (size_t)nt * 2 * nbc);
    if (!Hf || !order || !runs) {
        free(Hf), free(order), free(runs);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the lsq update", nm(name));
    }
    sym_copy(Hf, H, in);
    double base = diag_base(H, in);
    int kmax = 0;
    for (int br = 0; br < nbr; br++) {
        int k;
        kept_runs(mask, br, nbc, in, C, runs, &k);
        if (k > kmax && !(G == NULL && !o.ridge_zero && k == in)) kmax = k; /* fully kept rows are skipped */
        order[br] = ((int64_t)(in - k) << 32) | br;
    }
    qsort(order, (size_t)nbr, sizeof *order, cmp_i64);
    lsq_fail fail = {-1, 0, 0, 0};
    int oom = 0, failed = 0, retried = 0;
    double damp_max = o.damp;
    const float *Gm = G ? G : Hf;
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), *run = runs + (size_t)tid * 2 * nbc;
        float *A = malloc(sizeof(float) * ((size_t)kmax * kmax + (size_t)R * kmax + 1));
        float *Bt = A ? A + (size_t)kmax * kmax : NULL;
        if (!A) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < nbr; q++) {
            int stop, stop2;
#pragma omp atomic read
            stop = oom;
#pragma omp atomic read
            stop2 = failed;
            if (!A || stop || stop2) continue;
            int br = (int)(order[q] & 0xffffffff), k, nrun = kept_runs(mask, br, nbc, in, C, run, &k), rt;
            double damp;
            int inf = lsq_block_row(W, out, in, R, Hf, Gm, G == NULL, projected, &o, base, br, run, nrun, k, A, Bt,
                                    &damp, &rt);
#pragma omp critical(lpv_recon_lsq)
            {
                if (inf && fail.br < 0) {
                    fail.br = br, fail.info = inf, fail.k = k, fail.damp = damp;
#pragma omp atomic write
                    failed = 1;
                }
                if (damp > damp_max) damp_max = damp;
                retried += rt > 0;
            }
        }
        free(A);
    }
    free(Hf), free(order), free(runs);
    if (oom) return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for %d x %d lsq scratch", nm(name), kmax, kmax);
    if (fail.br >= 0)
        return lpv_fail(err, LPV_E_DATA,
                        "recon '%s': block row %d: cholesky of H_KK + δI (|K| = %d) failed at pivot %d even with damp "
                        "%g (δ = %g)",
                        nm(name), fail.br, fail.k, fail.info, fail.damp, fail.damp * base);
    info_set(info, damp_max, damp_max * base, retried);
    return LPV_OK;
}

lpv_status lpv_recon_lsq(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H, const float *G,
                         const lpv_recon_opts *o, lpv_recon_info *info, const char *name, lpv_err *err) {
    return lsq(W, out, in, R, C, mask, H, G, 0, o, info, name, err);
}

lpv_status lpv_recon_lsq_projected(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                                   const float *P, const lpv_recon_opts *o, lpv_recon_info *info, const char *name,
                                   lpv_err *err) {
    LPV_ASSERT(P);
    return lsq(W, out, in, R, C, mask, H, P, 1, o, info, name, err);
}

lpv_status lpv_recon_lsq_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                             const float *G, const lpv_recon_opts *o_, lpv_recon_info *info, const char *name,
                             lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbr = lpv_ceil_div(out, R), nbc = lpv_ceil_div(in, C);
    double *A = malloc(sizeof(double) * (size_t)in * in), *B = malloc(sizeof(double) * (size_t)R * in);
    int *K = malloc(sizeof(int) * (size_t)in);
    if (!A || !B || !K) {
        free(A), free(B), free(K);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the lsq reference", nm(name));
    }
#define HU(i, j) ((double)H[(int64_t)((i) < (j) ? (i) : (j)) * in + ((i) < (j) ? (j) : (i))])
    double base = diag_base(H, in), damp_max = o.damp;
    int retried = 0;
    lpv_status st = LPV_OK;
    for (int br = 0; br < nbr && st == LPV_OK; br++) {
        int r0 = br * R, nr = imin(R, out - r0), k = 0;
        for (int j = 0; j < in; j++)
            if (mask[(int64_t)br * nbc + j / C]) K[k++] = j;
        int inf = 1;
        double damp = o.damp, delta = 0;
        for (int a = 0; a <= o.retries && inf; a++) {
            damp = damp_at(&o, a), delta = damp * base;
            for (int i = 0; i < nr; i++) { /* B (k, nr) column-major = row-major (nr, k): W_r G_{:,K} (+ δ W_{r,K}) */
                const float *w = W + (int64_t)(r0 + i) * in;
                double *b = B + (int64_t)i * k;
                for (int p = 0; p < k; p++) b[p] = o.ridge_zero ? 0 : delta * w[K[p]];
                for (int j = 0; j < in; j++)
                    for (int p = 0; p < k; p++) b[p] += (double)w[j] * (G ? G[(int64_t)j * in + K[p]] : HU(j, K[p]));
            }
            for (int p = 0; p < k; p++)
                for (int q = 0; q < k; q++) A[(int64_t)p * k + q] = HU(K[p], K[q]) + (p == q ? delta : 0);
            inf = 0;
            if (k > 0) dposv_("L", &k, &nr, A, &k, B, &k, &inf, 1);
            retried += a > 0 && !inf;
        }
        if (damp > damp_max) damp_max = damp;
        if (inf) {
            st = lpv_fail(err, LPV_E_DATA,
                          "recon '%s': block row %d: H_KK + δI (|K| = %d) not positive definite even with damp %g",
                          nm(name), br, k, damp);
            break;
        }
        for (int i = 0; i < nr; i++) {
            float *w = W + (int64_t)(r0 + i) * in;
            for (int j = 0; j < in; j++) w[j] = 0;
            for (int p = 0; p < k; p++) w[K[p]] = (float)B[(int64_t)i * k + p];
        }
    }
#undef HU
    free(A), free(B), free(K);
    if (st == LPV_OK) info_set(info, damp_max, damp_max * base, retried);
    return st;
}

lpv_status lpv_recon_obs(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                         const lpv_recon_opts *o_, lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbc = lpv_ceil_div(in, C), nt = lpv_team_size();
    if (nt > out) nt = out;
    float *U = malloc(sizeof(float) * (size_t)in * in);
    float *E = malloc(sizeof(float) * (size_t)nt * ((out + nt - 1) / nt) * OBS_BATCH);
    if (!U || !E) {
        free(U), free(E);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the obs update", nm(name));
    }
    double damp, delta;
    int retried;
    lpv_status st = factor_chain(U, H, in, 2, &o, &damp, &delta, &retried, name, err);
    if (st != LPV_OK) {
        free(U), free(E);
        return st;
    }
    /* Rows are independent for a fixed mask: each thread sweeps its own rows. */
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), per = (out + nt - 1) / nt;
        int i0 = imin(out, tid * per), i1 = imin(out, i0 + per);
        float *Et = E + (size_t)tid * per * OBS_BATCH;
        for (int j0 = 0; j0 < in && i1 > i0; j0 += OBS_BATCH) {
            int j1 = imin(in, j0 + OBS_BATCH), any = 0;
            for (int i = i0; i < i1; i++) { /* rows are independent: sweep row by row inside the batch */
                float *w = W + (int64_t)i * in, *e = Et + (int64_t)(i - i0) * OBS_BATCH;
                const uint8_t *mrow = mask + (int64_t)(i / R) * nbc;
                for (int j = j0; j < j1; j++) {
                    e[j - j0] = 0;
                    if (mrow[j / C]) continue;
                    const float *u = U + (int64_t)j * in;
                    float ej = w[j] / u[j];
                    for (int c = j + 1; c < j1; c++) w[c] -= ej * u[c];
                    w[j] = 0;
                    e[j - j0] = ej;
                    any = 1;
                }
            }
            /* W[i0:i1, j1:] -= E (rows, bw) · U[j0:j1, j1:] */
            if (any && j1 < in)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, in - j1, j1 - j0, -1.0f, Et, OBS_BATCH,
                            U + (int64_t)j0 * in + j1, in, 1.0f, W + (int64_t)i0 * in + j1, in);
        }
    }
    free(U), free(E);
    info_set(info, damp, delta, retried);
    return LPV_OK;
}

lpv_status lpv_recon_obs_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                             const lpv_recon_opts *o_, lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(prologue(out, in, R, C, H, o_, &o, name, err));
    int nbc = lpv_ceil_div(in, C);
    double *U = malloc(sizeof(double) * (size_t)in * in), *w = malloc(sizeof(double) * (size_t)in);
    if (!U || !w) {
        free(U), free(w);
        return lpv_fail(err, LPV_E_OOM, "recon '%s': out of memory for the obs reference", nm(name));
    }
    double damp, delta;
    int retried;
    lpv_status st = factor_chain_d(U, H, in, 2, &o, &damp, &delta, &retried, name, err);
    for (int i = 0; i < out && st == LPV_OK; i++) {
        float *wf = W + (int64_t)i * in;
        for (int j = 0; j < in; j++) w[j] = wf[j];
        for (int j = 0; j < in; j++) {
            if (mask[(int64_t)(i / R) * nbc + j / C]) continue;
            double e = w[j] / U[(int64_t)j * in + j];
            for (int c = j + 1; c < in; c++) w[c] -= e * U[(int64_t)j * in + c];
            w[j] = 0;
        }
        for (int j = 0; j < in; j++) wf[j] = (float)w[j];
    }
    free(U), free(w);
    if (st == LPV_OK) info_set(info, damp, delta, retried);
    return st;
}

/* ------------------------------------------------- quantization (GPTQ sweep) */

float lpv_qgrid_round(const lpv_qgrid *g, int row, float w) {
    float s = g->scale[row];
    if (g->kind == LPV_QGRID_LEVELS) return s * g->levels[lpv_codebook_nearest(g->levels, g->k, w / s)];
    float u = nearbyintf(w / s), q = (float)g->qmax;
    return s * (u > q ? q : u < -q ? -q : u);
}

static int cmp_diag_desc(const void *a, const void *b) {
    const double *x = a, *y = b; /* (H_jj, j) pairs */
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

void lpv_quant_act_order(const float *H, int in, int32_t *order) {
    double *p = malloc(sizeof(double) * 2 * (size_t)in);
    if (!p) { /* no memory for the sort: the natural order is still a valid one */
        for (int j = 0; j < in; j++) order[j] = j;
        return;
    }
    for (int j = 0; j < in; j++) p[2 * j] = H[(int64_t)j * in + j], p[2 * j + 1] = j;
    qsort(p, (size_t)in, 2 * sizeof(double), cmp_diag_desc);
    for (int j = 0; j < in; j++) order[j] = (int32_t)p[2 * j + 1];
    free(p);
}

static lpv_status quant_prologue(int out, int in, int R, int C, const float *H, const lpv_qgrid *g,
                                 const int32_t *order, const lpv_recon_opts *o_, lpv_recon_opts *o, const char *name,
                                 lpv_err *err) {
    LPV_TRY(prologue(out, in, R, C, H, o_, o, name, err));
    if (g->kind == LPV_QGRID_INT ? g->qmax < 1 : (g->k < 1 || !g->levels))
        return lpv_fail(err, LPV_E_ARG, "quant '%s': empty grid", nm(name));
    for (int r = 0; r < out; r++)
        if (!(g->scale[r] > 0.0f) || !isfinite(g->scale[r]))
            return lpv_fail(err, LPV_E_ARG, "quant '%s': scale of row %d is %g, expected finite and > 0", nm(name), r,
                            (double)g->scale[r]);
    if (order) { /* a permutation, or the sweep would skip columns */
        uint8_t *seen = calloc((size_t)in, 1);
        if (!seen) return lpv_fail(err, LPV_E_OOM, "out of memory");
        int ok = 1;
        for (int j = 0; j < in && ok; j++) ok = order[j] >= 0 && order[j] < in && !seen[order[j]]++;
        free(seen);
        if (!ok) return lpv_fail(err, LPV_E_ARG, "quant '%s': column order is not a permutation of 0..%d", nm(name), in - 1);
    }
    return LPV_OK;
}

/* Hp (in, in), upper triangle: H with rows and columns in `order` (H's upper triangle read). */
static void permute_sym(float *Hp, const float *H, int in, const int32_t *order) {
    for (int a = 0; a < in; a++)
        for (int b = a; b < in; b++) {
            int i = order[a], j = order[b], lo = i < j ? i : j, hi = i < j ? j : i;
            Hp[(int64_t)a * in + b] = H[(int64_t)lo * in + hi];
        }
}

lpv_status lpv_recon_quant(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                           const lpv_qgrid *g, const int32_t *order, const lpv_recon_opts *o_, lpv_recon_info *info,
                           const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(quant_prologue(out, in, R, C, H, g, order, o_, &o, name, err));
    int nbc = lpv_ceil_div(in, C), nt = lpv_team_size();
    if (nt > out) nt = out;
    size_t nw = (size_t)out * in;
    float *U = malloc(sizeof(float) * (size_t)in * in);
    float *E = malloc(sizeof(float) * (size_t)nt * ((out + nt - 1) / nt) * OBS_BATCH);
    float *Hp = order ? malloc(sizeof(float) * (size_t)in * in) : NULL, *Wp = order ? malloc(sizeof(float) * nw) : W;
    if (!U || !E || (order && (!Hp || !Wp))) {
        free(U), free(E), free(Hp);
        if (order) free(Wp);
        return lpv_fail(err, LPV_E_OOM, "quant '%s': out of memory for the sweep", nm(name));
    }
    if (order) { /* sweep the permuted problem: column j of Wp is column order[j] of W */
        permute_sym(Hp, H, in, order);
        for (int i = 0; i < out; i++)
            for (int j = 0; j < in; j++) Wp[(int64_t)i * in + j] = W[(int64_t)i * in + order[j]];
    }
    double damp, delta;
    int retried;
    lpv_status st = factor_chain(U, order ? Hp : H, in, 2, &o, &damp, &delta, &retried, name, err);
    free(Hp);
    if (st == LPV_OK) {
#pragma omp parallel num_threads(nt)
        {
            int tid = omp_get_thread_num(), per = (out + nt - 1) / nt;
            int i0 = imin(out, tid * per), i1 = imin(out, i0 + per);
            float *Et = E + (size_t)tid * per * OBS_BATCH;
            for (int j0 = 0; j0 < in && i1 > i0; j0 += OBS_BATCH) {
                int j1 = imin(in, j0 + OBS_BATCH);
                for (int i = i0; i < i1; i++) {
                    float *w = Wp + (int64_t)i * in, *e = Et + (int64_t)(i - i0) * OBS_BATCH;
                    const uint8_t *mrow = mask ? mask + (int64_t)(i / R) * nbc : NULL;
                    for (int j = j0; j < j1; j++) {
                        int col = order ? order[j] : j;
                        float q = !mrow || mrow[col / C] ? lpv_qgrid_round(g, i, w[j]) : 0.0f;
                        const float *u = U + (int64_t)j * in;
                        float ej = (w[j] - q) / u[j];
                        for (int c = j + 1; c < j1; c++) w[c] -= ej * u[c];
                        w[j] = q;
                        e[j - j0] = ej;
                    }
                }
                /* Wp[i0:i1, j1:] -= E (rows, bw) · U[j0:j1, j1:] */
                if (j1 < in)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, in - j1, j1 - j0, -1.0f, Et,
                                OBS_BATCH, U + (int64_t)j0 * in + j1, in, 1.0f, Wp + (int64_t)i0 * in + j1, in);
            }
        }
        if (order)
            for (int i = 0; i < out; i++)
                for (int j = 0; j < in; j++) W[(int64_t)i * in + order[j]] = Wp[(int64_t)i * in + j];
        info_set(info, damp, delta, retried);
    }
    free(U), free(E);
    if (order) free(Wp);
    return st;
}

lpv_status lpv_recon_quant_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                               const lpv_qgrid *g, const int32_t *order, const lpv_recon_opts *o_,
                               lpv_recon_info *info, const char *name, lpv_err *err) {
    lpv_recon_opts o;
    LPV_TRY(quant_prologue(out, in, R, C, H, g, order, o_, &o, name, err));
    int nbc = lpv_ceil_div(in, C);
    double *U = malloc(sizeof(double) * (size_t)in * in), *w = malloc(sizeof(double) * (size_t)in);
    float *Hp = malloc(sizeof(float) * (size_t)in * in);
    int32_t *ord = malloc(sizeof(int32_t) * (size_t)in);
    if (!U || !w || !Hp || !ord) {
        free(U), free(w), free(Hp), free(ord);
        return lpv_fail(err, LPV_E_OOM, "quant '%s': out of memory for the reference", nm(name));
    }
    for (int j = 0; j < in; j++) ord[j] = order ? order[j] : j;
    permute_sym(Hp, H, in, ord);
    double damp, delta;
    int retried;
    lpv_status st = factor_chain_d(U, Hp, in, 2, &o, &damp, &delta, &retried, name, err);
    for (int i = 0; i < out && st == LPV_OK; i++) {
        float *wf = W + (int64_t)i * in;
        for (int j = 0; j < in; j++) w[j] = wf[ord[j]];
        for (int j = 0; j < in; j++) {
            int kept = !mask || mask[(int64_t)(i / R) * nbc + ord[j] / C];
            float q = kept ? lpv_qgrid_round(g, i, (float)w[j]) : 0.0f;
            double e = (w[j] - q) / U[(int64_t)j * in + j];
            for (int c = j + 1; c < in; c++) w[c] -= e * U[(int64_t)j * in + c];
            w[j] = q;
        }
        for (int j = 0; j < in; j++) wf[ord[j]] = (float)w[j];
    }
    free(U), free(w), free(Hp), free(ord);
    if (st == LPV_OK) info_set(info, damp, delta, retried);
    return st;
}

/* ---------------------------------------------------- one layer by GPTQ */

lpv_gptq_opts lpv_gptq_defaults(void) { return (lpv_gptq_opts){0, 1, 1, 1, lpv_recon_defaults()}; }

/* ‖(W − V) X‖² / ‖W X‖² under H (D: (out, in) scratch). */
static lpv_status rel_err(const float *W, const float *V, int out, int in, const float *H, float *D, double *e,
                          lpv_err *err) {
    double num, den;
    size_t n = (size_t)out * in;
    for (size_t i = 0; i < n; i++) D[i] = W[i] - V[i];
    LPV_TRY(lpv_output_energy(D, out, in, H, &num, err));
    LPV_TRY(lpv_output_energy(W, out, in, H, &den, err));
    *e = den > 0 ? num / den : 0;
    return LPV_OK;
}

/* The int8 grid's row scales: max |w| / 127 (1 for an all-zero row), as lpv_bsr_set_int8 rounds them. */
static void int8_scales(const float *W, int out, int in, float *s) {
    for (int r = 0; r < out; r++) {
        float mx = 0.0f;
        for (int c = 0; c < in; c++) mx = fmaxf(mx, fabsf(W[(int64_t)r * in + c]));
        s[r] = mx > 0.0f ? mx / 127.0f : 1.0f;
    }
}

void lpv_gptq_grid_free(lpv_gptq_grid *g) {
    free(g->scale);
    memset(g, 0, sizeof *g);
}

lpv_status lpv_gptq_layer(float *W, float *b, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                          const double *mean, const lpv_gptq_opts *o, lpv_gptq_grid *grid, lpv_gptq_layer_info *li,
                          const char *name, lpv_err *err) {
    size_t n = (size_t)out * in;
    lpv_gptq_grid_free(grid);
    float *W0 = malloc(sizeof(float) * n), *D = malloc(sizeof(float) * n), *diag = malloc(sizeof(float) * (size_t)in);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)in);
    grid->scale = malloc(sizeof(float) * (size_t)out);
    lpv_status s = (!W0 || !D || !diag || !order || !grid->scale)
                       ? lpv_fail(err, LPV_E_OOM, "out of memory quantizing '%s' (%d x %d)", name, out, in) : LPV_OK;
    if (s == LPV_OK) memcpy(W0, W, sizeof(float) * n);
    /* the grid: round to nearest's (int8 rows, or the codebook fitted to the kept weights, each weighed by the
       output error its rounding causes: scale² · H_jj) */
    lpv_qgrid g = {o->codebook ? LPV_QGRID_LEVELS : LPV_QGRID_INT, grid->scale, 127, grid->levels, 0};
    for (int j = 0; s == LPV_OK && j < in; j++) diag[j] = H[(int64_t)j * in + j];
    if (s == LPV_OK && o->codebook)
        s = lpv_codebook_fit_dense(W0, out, in, R, C, mask, o->codebook, o->weighted_fit ? diag : NULL, grid->levels,
                                   &grid->codebook_k, grid->scale, err);
    else if (s == LPV_OK)
        int8_scales(W0, out, in, grid->scale);
    g.k = grid->codebook_k;
    /* round to nearest on the same grid: the baseline the report sets the sweep against */
    int nbc = (in + C - 1) / C;
    for (size_t i = 0; s == LPV_OK && i < n; i++) {
        int r = (int)(i / in), c = (int)(i % in);
        int kept = !mask || mask[(int64_t)(r / R) * nbc + c / C];
        D[i] = kept ? lpv_qgrid_round(&g, r, W0[i]) : 0.0f;
    }
    if (s == LPV_OK) s = rel_err(W0, D, out, in, H, D, &li->err_rtn, err);
    if (s == LPV_OK) {
        if (o->act_order) lpv_quant_act_order(H, in, order);
        lpv_recon_info ri = {0};
        s = lpv_recon_quant(W, out, in, R, C, mask, H, &g, o->act_order ? order : NULL, &o->recon, &ri, name, err);
        li->damp = ri.damp;
    }
    if (s == LPV_OK) s = rel_err(W0, W, out, in, H, D, &li->err_gptq, err);
    if (s == LPV_OK && o->bias && b && mean) lpv_recon_bias(b, W0, W, out, in, mean, NULL);
    free(W0), free(D), free(diag), free(order);
    if (s) lpv_gptq_grid_free(grid);
    return s;
}

void lpv_mask_from_order(uint8_t *mask, int nb, const int32_t *order, int k) {
    memset(mask, 1, (size_t)nb);
    for (int q = 0; q < k; q++) mask[order[q]] = 0;
}
