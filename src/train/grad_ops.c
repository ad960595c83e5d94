/*
 * grad_ops.c — forward-with-save and backward kernels of the training pass
 * (see include/lpvit/grad_ops.h).
 *
 * LayerNorm backward is two passes: a column-band pass (the reductions over
 * features of each token, kept in registers as in ops.c) for dx, and a row
 * pass for dw/db (each row's reduction over tokens belongs to one thread, so
 * nothing is reduced across threads and 1 or 2 threads give the same sums).
 * Attention backward runs per (image, head) with OpenBLAS and a per-thread
 * (T, T) scratch for dP. Linear backward splits rows of dW (resp. dX) over
 * the threads, each calling single-threaded sgemm on its slice.
 */
#include "lpvit/grad_ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/layout.h"
#include "lpvit/ops.h"


/* Splits n rows over the calling team in multiples of `align`. */
static void team_rows(int n, int align, int *r0, int *r1) {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int chunks = (n + align - 1) / align;
    int c0 = (int)((int64_t)chunks * id / nt), c1 = (int)((int64_t)chunks * (id + 1) / nt);
    *r0 = c0 * align < n ? c0 * align : n;
    *r1 = c1 * align < n ? c1 * align : n;
}

/* Σ x[t] for t < n with 16 partial sums (a float reduction GCC vectorizes without -ffast-math). */
static inline float sum16(const float *x, int n) {
    float acc[16] = {0};
    int t = 0;
    for (; t + 16 <= n; t += 16)
        for (int k = 0; k < 16; k++) acc[k] += x[t + k];
    float s = 0.0f;
    for (; t < n; t++) s += x[t];
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

/* Σ a[t]·b[t], as sum16. */
static inline float dot16(const float *a, const float *b, int n) {
    float acc[16] = {0};
    int t = 0;
    for (; t + 16 <= n; t += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[t + k] * b[t + k];
    float s = 0.0f;
    for (; t < n; t++) s += a[t] * b[t];
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

/* ---- LayerNorm ---- */

#define BAND 64 /* columns per LayerNorm band, as in the forward (ops.c) */

/* dx = rstd · (g - mean_d(g) - x̂ · mean_d(g·x̂)), g = dy·w, for the columns of one band. */
static void ln_backward_band(float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                             const float *w, int D, int t0, int n, int ld) {
    float s1[BAND], s2[BAND], mu[BAND], rs[BAND];
    for (int j = 0; j < n; j++) s1[j] = 0.0f, s2[j] = 0.0f, mu[j] = mean[t0 + j], rs[j] = rstd[t0 + j];
    for (int d = 0; d < D; d++) {
        const float *xr = x + (int64_t)d * ld + t0, *gr = dy + (int64_t)d * ld + t0;
        float wd = w[d];
        for (int j = 0; j < n; j++) {
            float g = gr[j] * wd;
            s1[j] += g;
            s2[j] += g * (xr[j] - mu[j]) * rs[j];
        }
    }
    for (int j = 0; j < n; j++) s1[j] /= (float)D, s2[j] /= (float)D;
    for (int d = 0; d < D; d++) {
        const float *xr = x + (int64_t)d * ld + t0, *gr = dy + (int64_t)d * ld + t0;
        float *dr = dx + (int64_t)d * ld + t0;
        float wd = w[d];
        for (int j = 0; j < n; j++) {
            float xh = (xr[j] - mu[j]) * rs[j];
            dr[j] += rs[j] * (gr[j] * wd - s1[j] - xh * s2[j]);
        }
    }
}

void lpv_layernorm_backward_fm(float *dx, float *dw, float *db, const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *w, int D, int N, int ld) {
    int nbands = (N + BAND - 1) / BAND;
#pragma omp parallel num_threads(lpv_team_size())
    {
#pragma omp for schedule(static) nowait
        for (int i = 0; i < nbands; i++) {
            int t0 = i * BAND, n = N - t0 < BAND ? N - t0 : BAND;
            ln_backward_band(dx, dy, x, mean, rstd, w, D, t0, n, ld);
        }
        if (dw || db) {
#pragma omp for schedule(static)
            for (int d = 0; d < D; d++) {
                const float *xr = x + (int64_t)d * ld, *gr = dy + (int64_t)d * ld;
                float aw[16] = {0}, sw = 0.0f;
                int t = 0;
                for (; t + 16 <= N; t += 16)
                    for (int k = 0; k < 16; k++) aw[k] += gr[t + k] * ((xr[t + k] - mean[t + k]) * rstd[t + k]);
                for (; t < N; t++) sw += gr[t] * ((xr[t] - mean[t]) * rstd[t]);
                for (int k = 0; k < 16; k++) sw += aw[k];
                if (dw) dw[d] += sw;
                if (db) db[d] += sum16(gr, N);
            }
        }
    }
}

void lpv_layernorm_backward_fm_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *w, int D, int N, int ld, float eps) {
    double *xh = malloc(sizeof(double) * (size_t)D);
    if (!xh) return;
    for (int t = 0; t < N; t++) {
        double m, r, s1 = 0, s2 = 0;
        lpv_layernorm_moments_ref(x, D, ld, t, eps, &m, &r);
        for (int d = 0; d < D; d++) {
            xh[d] = (x[(int64_t)d * ld + t] - m) * r;
            double g = (double)dy[(int64_t)d * ld + t] * w[d];
            s1 += g;
            s2 += g * xh[d];
        }
        s1 /= D, s2 /= D;
        for (int d = 0; d < D; d++) {
            double g = (double)dy[(int64_t)d * ld + t];
            dx[(int64_t)d * ld + t] += (float)(r * (g * w[d] - s1 - xh[d] * s2));
            if (dw) dw[d] += (float)(g * xh[d]);
            if (db) db[d] += (float)g;
        }
    }
    free(xh);
}

/* ---- GELU ----
 *
 * Φ(x) and exp(-x²/2) from one exponential, branch-free so GCC vectorizes the
 * loops (no libm calls): the method and coefficients of src/vmath.h (Cephes
 * exp; erf(z) = z·P(z²) for z = |x|/√2 < 1, erfc(z) = exp(-z²)·E(2/(2+z)) above),
 * evaluated without FMA, selects as bit masks. Absolute error of Φ(x) + x·φ(x) <= ~3e-7 (tested
 * against double in test_grad_ops).
 */

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT2PI 0.39894228040143268f

/* c ? a : b as a bit select: GCC will not if-convert float selects under its default
   -ftrapping-math, and a branch keeps the loops scalar. */
static inline float sel(int c, float a, float b) {
    union {
        float f;
        int32_t i;
    } ua = {a}, ub = {b}, r;
    int32_t m = -(int32_t)(c != 0);
    r.i = (ua.i & m) | (ub.i & ~m);
    return r.f;
}

static inline void gelu_parts(float v, float *cdf_out, float *e_out) {
    float z = fabsf(v) * INV_SQRT2, u = z * z;
    /* e = exp(-v²/2) */
    float a = -0.5f * v * v;
    a = sel(a < -87.0f, -87.0f, a);
    const float magic = 12582912.0f; /* 1.5·2^23: adding it rounds to an integer */
    float n = (a * 1.44269504088896341f + magic) - magic;
    float r = a - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union {
        int32_t i;
        float f;
    } sc;
    n = sel(n == n, n, 0.0f); /* NaN x: keep the conversion defined; p carries the NaN */
    sc.i = (int32_t)((uint32_t)((int32_t)n + 127) << 23);
    float e = p * sc.f;
    /* erf(z), z < 1 */
    float q = -8.010244870e-04f + 7.854016490e-05f * u;
    q = q * u + 5.188334205e-03f;
    q = q * u + -2.685381592e-02f;
    q = q * u + 1.128358527e-01f;
    q = q * u + -3.761262584e-01f;
    q = q * u + 1.28379166e-01f;
    float erf_small = z * q + z;
    /* erfc(z), z >= 1 */
    float zc = sel(z > 12.0f, 12.0f, z);
    float t = 2.0f / (2.0f + zc);
    float E = 8.695131827e-02f * t + -2.050571196e-01f;
    E = E * t + 5.323572151e-02f;
    E = E * t + 8.331159871e-02f;
    E = E * t + 1.684866753e-01f;
    E = E * t + 2.498983666e-01f;
    E = E * t + 2.815355727e-01f;
    E = E * t + 2.821460520e-01f;
    E = E * t + -1.897892076e-06f;
    float erfc_big = e * E;
    float cdf_small = sel(v >= 0.0f, 0.5f + 0.5f * erf_small, 0.5f - 0.5f * erf_small);
    float cdf_big = sel(v > 0.0f, 1.0f - 0.5f * erfc_big, 0.5f * erfc_big);
    *cdf_out = sel(z < 1.0f, cdf_small, cdf_big);
    *e_out = e;
}

/* The row loops (GELU here, the per-sample moments below) are compiled for AVX-512, AVX2 and baseline x86-64
   and picked at load time (GCC target_clones; -std=c11 keeps FMA contraction off, so every clone gives the
   same bits). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LPV_NO_CLONES)
#define ROW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ROW_CLONES
#endif

ROW_CLONES static void gelu_forward_row(float *restrict y, const float *restrict x, int n) {
    for (int t = 0; t < n; t++) {
        float cdf, e;
        gelu_parts(x[t], &cdf, &e);
        y[t] = x[t] * cdf;
    }
}

ROW_CLONES static void gelu_backward_row(float *restrict dx, float *restrict y, const float *restrict x, int n) {
    for (int t = 0; t < n; t++) {
        float v = x[t], cdf, e;
        gelu_parts(v, &cdf, &e);
        dx[t] *= cdf + v * e * INV_SQRT2PI;
        y[t] = v * cdf;
    }
}

ROW_CLONES static void gelu_backward_row_noy(float *restrict dx, const float *restrict x, int n) {
    for (int t = 0; t < n; t++) {
        float v = x[t], cdf, e;
        gelu_parts(v, &cdf, &e);
        dx[t] *= cdf + v * e * INV_SQRT2PI;
    }
}

void lpv_gelu_forward_fm(float *y, const float *x, int rows, int N, int ld) {
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int r = 0; r < rows; r++) gelu_forward_row(y + (int64_t)r * ld, x + (int64_t)r * ld, N);
}

void lpv_gelu_backward_fm(float *dx, float *y, const float *x, int rows, int N, int ld) {
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int r = 0; r < rows; r++) {
        if (y) gelu_backward_row(dx + (int64_t)r * ld, y + (int64_t)r * ld, x + (int64_t)r * ld, N);
        else gelu_backward_row_noy(dx + (int64_t)r * ld, x + (int64_t)r * ld, N);
    }
}

void lpv_gelu_backward_fm_ref(float *dx, float *y, const float *x, int rows, int N, int ld) {
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < N; t++) {
            int64_t i = (int64_t)r * ld + t;
            double v = x[i];
            double cdf = 0.5 * erfc(-v / sqrt(2.0)), pdf = exp(-0.5 * v * v) / sqrt(2.0 * M_PI);
            dx[i] = (float)(dx[i] * (cdf + v * pdf));
            if (y) y[i] = (float)(v * cdf);
        }
}

/* ---- attention ---- */

void lpv_attention_forward_fm(float *out, float *probs, const float *qkv, int ld, int B, int T, int D, int heads) {
    int hd = D / heads, n = B * heads;
#pragma omp parallel for num_threads(lpv_team_size()) schedule(dynamic, 1)
    for (int i = 0; i < n; i++)
        lpv_attention_head(out, qkv, ld, i / heads, i % heads, T, D, hd, probs + (int64_t)i * T * T);
}

int64_t lpv_attention_backward_scratch(int T) { return (int64_t)T * T + 64; }

/*
 * One (image, head), with o = v Pᵀ and P = softmax(scale qᵀk):
 *   dv = dO P,  dP = dOᵀ v,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),  dq = scale k dSᵀ,  dk = scale q dS.
 */
static void attention_backward_one(float *dqkv, const float *dout, const float *qkv, const float *P, int ld, int b,
                                   int h, int T, int D, int hd, float *dP) {
    int64_t col = (int64_t)b * T;
    int64_t rq = (int64_t)h * hd, rk = D + rq, rv = 2 * (int64_t)D + rq;
    const float *q = qkv + rq * ld + col, *k = qkv + rk * ld + col, *v = qkv + rv * ld + col;
    const float *dO = dout + rq * ld + col;
    float *dq = dqkv + rq * ld + col, *dk = dqkv + rk * ld + col, *dv = dqkv + rv * ld + col;
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hd, T, T, 1.0f, dO, ld, P, T, 0.0f, dv, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, hd, 1.0f, dO, ld, v, ld, 0.0f, dP, T);
    for (int i = 0; i < T; i++) {
        const float *p = P + (int64_t)i * T;
        float *g = dP + (int64_t)i * T, r = dot16(g, p, T);
        for (int j = 0; j < T; j++) g[j] = p[j] * (g[j] - r);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hd, T, T, scale, k, ld, dP, T, 0.0f, dq, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hd, T, T, scale, q, ld, dP, T, 0.0f, dk, ld);
}

void lpv_attention_backward_fm(float *dqkv, const float *dout, const float *qkv, const float *probs, int ld, int B,
                               int T, int D, int heads, float *scratch) {
    int hd = D / heads, n = B * heads;
    int64_t per = lpv_attention_backward_scratch(T);
#pragma omp parallel num_threads(lpv_team_size())
    {
        float *dP = scratch + per * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n; i++)
            attention_backward_one(dqkv, dout, qkv, probs + (int64_t)i * T * T, ld, i / heads, i % heads, T, D, hd,
                                   dP);
    }
}

void lpv_attention_backward_fm_ref(float *dqkv, const float *dout, const float *qkv, int ld, int B, int T, int D,
                                   int heads) {
    int hd = D / heads;
    double *P = malloc(sizeof(double) * (size_t)T * T), *dS = malloc(sizeof(double) * (size_t)T * T);
    if (!P || !dS) goto out;
    double scale = 1.0 / sqrt((double)hd);
#define Q(d, i) ((double)qkv[(int64_t)(h * hd + (d)) * ld + (int64_t)b * T + (i)])
#define K(d, j) ((double)qkv[(int64_t)(D + h * hd + (d)) * ld + (int64_t)b * T + (j)])
#define V(d, j) ((double)qkv[(int64_t)(2 * D + h * hd + (d)) * ld + (int64_t)b * T + (j)])
#define DO(d, i) ((double)dout[(int64_t)(h * hd + (d)) * ld + (int64_t)b * T + (i)])
#define DQKV(part, d, i) dqkv[(int64_t)((part) * D + h * hd + (d)) * ld + (int64_t)b * T + (i)]
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, s = 0;
                for (int j = 0; j < T; j++) {
                    double acc = 0;
                    for (int d = 0; d < hd; d++) acc += Q(d, i) * K(d, j);
                    P[(int64_t)i * T + j] = acc * scale;
                    if (acc * scale > mx) mx = acc * scale;
                }
                for (int j = 0; j < T; j++) s += (P[(int64_t)i * T + j] = exp(P[(int64_t)i * T + j] - mx));
                for (int j = 0; j < T; j++) P[(int64_t)i * T + j] /= s;
            }
            for (int i = 0; i < T; i++) {
                double r = 0;
                for (int j = 0; j < T; j++) {
                    double dp = 0;
                    for (int d = 0; d < hd; d++) dp += DO(d, i) * V(d, j);
                    dS[(int64_t)i * T + j] = dp;
                    r += dp * P[(int64_t)i * T + j];
                }
                for (int j = 0; j < T; j++) dS[(int64_t)i * T + j] = P[(int64_t)i * T + j] * (dS[(int64_t)i * T + j] - r);
            }
            for (int d = 0; d < hd; d++)
                for (int t = 0; t < T; t++) {
                    double gq = 0, gk = 0, gv = 0;
                    for (int j = 0; j < T; j++) {
                        gq += dS[(int64_t)t * T + j] * K(d, j);
                        gk += dS[(int64_t)j * T + t] * Q(d, j);
                        gv += DO(d, j) * P[(int64_t)j * T + t];
                    }
                    DQKV(0, d, t) = (float)(gq * scale);
                    DQKV(1, d, t) = (float)(gk * scale);
                    DQKV(2, d, t) = (float)gv;
                }
        }
#undef Q
#undef K
#undef V
#undef DO
#undef DQKV
out:
    free(P);
    free(dS);
}

/* ---- linear ---- */

static void bias_rows(float *db, const float *dY, int r0, int r1, int N, int ld) {
    for (int r = r0; r < r1; r++) {
        db[r] += sum16(dY + (int64_t)r * ld, N);
    }
}

void lpv_linear_backward(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W, int out,
                         int in, int N, int ld, int dx_acc) {
    if (N <= 0) return;
#pragma omp parallel num_threads(lpv_team_size())
    {
        int r0, r1;
        if (dW || db) {
            team_rows(out, 16, &r0, &r1);
            if (dW && r1 > r0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, in, N, 1.0f, dY + (int64_t)r0 * ld, ld,
                            X, ld, 1.0f, dW + (int64_t)r0 * in, in);
            if (db) bias_rows(db, dY, r0, r1, N, ld);
        }
        if (dX) {
            team_rows(in, 16, &r0, &r1);
            if (r1 > r0)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, N, out, 1.0f, W + r0, in, dY, ld,
                            dx_acc ? 1.0f : 0.0f, dX + (int64_t)r0 * ld, ld);
        }
    }
}

void lpv_linear_backward_ref(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W,
                             int out, int in, int N, int ld, int dx_acc) {
    for (int o = 0; o < out; o++) {
        double sb = 0;
        for (int t = 0; t < N; t++) sb += dY[(int64_t)o * ld + t];
        if (db) db[o] += (float)sb;
        if (dW)
            for (int i = 0; i < in; i++) {
                double s = 0;
                for (int t = 0; t < N; t++) s += (double)dY[(int64_t)o * ld + t] * X[(int64_t)i * ld + t];
                dW[(int64_t)o * in + i] += (float)s;
            }
    }
    if (dX)
        for (int i = 0; i < in; i++)
            for (int t = 0; t < N; t++) {
                double s = 0;
                for (int o = 0; o < out; o++) s += (double)W[(int64_t)o * in + i] * dY[(int64_t)o * ld + t];
                float *p = &dX[(int64_t)i * ld + t];
                *p = dx_acc ? *p + (float)s : (float)s;
            }
}

void lpv_linear_backward_persample(float *dW, float *db, float *sq, float *tmp, const float *dY, const float *X,
                                   int out, int in, int S, int cols, int ld, float scale) {
    lpv_linear_backward_persample_blocks(dW, db, sq, NULL, NULL, 16, 16, tmp, dY, X, out, in, S, cols, ld, scale);
}

/* One row g of a sample's gradient G_s (in floats) into the accumulators: dw += g, q += s2 g², part += g ⊙ w
   (any of dw, q, part may be NULL). part collects a block row's products column by column; the block sums
   are taken once per block row (block_row_moments), so this loop has no horizontal reduction. */
ROW_CLONES static void moment_row(float *restrict dw, float *restrict q, float *restrict part, const float *restrict g,
                                  const float *restrict w, float s2, int in) {
    if (dw)
        for (int c = 0; c < in; c++) dw[c] += g[c];
    if (q)
        for (int c = 0; c < in; c++) q[c] += s2 * (g[c] * g[c]);
    if (part)
        for (int c = 0; c < in; c++) part[c] += g[c] * w[c];
}

/* bsq[bc] += s2 · (Σ_{c in block bc} part[c])² for one block row; part is zeroed for the next. */
static void block_row_moments(float *bsq, float *part, int in, int C, float s2) {
    for (int c0 = 0, bc = 0; c0 < in; c0 += C, bc++) {
        int c1 = c0 + C < in ? c0 + C : in;
        double dot = 0;
        for (int c = c0; c < c1; c++) dot += part[c];
        bsq[bc] += (float)(s2 * dot * dot);
    }
    memset(part, 0, sizeof(float) * (size_t)in);
}

void lpv_linear_backward_persample_blocks(float *dW, float *db, float *sq, float *bsq, const float *W, int R, int C,
                                          float *tmp, const float *dY, const float *X, int out, int in, int S, int cols,
                                          int ld, float scale) {
    float s2 = scale * scale;
    int nbc = lpv_ceil_div(in, C);
    /* thread slices hold whole block rows, so a block's dot product is never split between threads */
    int align = R > 16 ? R : 16;
#pragma omp parallel num_threads(lpv_team_size())
    {
        int r0, r1;
        team_rows(out, align, &r0, &r1);
        /* this thread's block-row column products, after the out x in gradient in tmp */
        float *part = bsq ? tmp + (int64_t)out * in + (int64_t)omp_get_thread_num() * in : NULL;
        if (part) memset(part, 0, sizeof(float) * (size_t)in);
        if (r1 > r0) {
            float *tm = tmp + (int64_t)r0 * in;
            for (int s = 0; s < S; s++) {
                int64_t c0 = (int64_t)s * cols;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, in, cols, 1.0f,
                            dY + (int64_t)r0 * ld + c0, ld, X + c0, ld, 0.0f, tm, in);
                for (int r = r0; r < r1; r++) {
                    int64_t o = (int64_t)r * in;
                    moment_row(dW ? dW + o : NULL, sq ? sq + o : NULL, part, tmp + o, W ? W + o : NULL, s2, in);
                    if (part && ((r + 1) % R == 0 || r + 1 == r1))
                        block_row_moments(bsq + (int64_t)(r / R) * nbc, part, in, C, s2);
                }
            }
            if (db) bias_rows(db, dY, r0, r1, S * cols, ld);
        }
    }
}

int64_t lpv_persample_tmp_floats(int out, int in, int threads) {
    return (int64_t)out * in + (int64_t)threads * in;
}
