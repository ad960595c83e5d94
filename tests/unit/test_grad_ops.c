/*
 * test_grad_ops.c — the training kernels (grad_ops.h) equal their plain
 * double-precision references: LayerNorm forward (vs ops.h's reference) and
 * backward, GELU backward, attention forward (vs ops.h's reference) and
 * backward, linear backward and the per-sample squared gradients; on 1 and 2
 * threads, token counts that are not multiples of 16 or of the 64-column
 * LayerNorm band, and an ld with extra padding. Padding columns hold NaN and
 * must neither leak into results nor be written.
 *
 * Error measure per tensor: max|got - want| / max|want| (float kernels vs
 * double references), required <= 2e-5.
 */
#include <stdint.h>

#include "lpvit/cpu.h"
#include "lpvit/grad_ops.h"
#include "lpvit/linear.h"
#include "lpvit/ops.h"
#include "test.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_f(void) { return (float)(2.0 * (double)(rng_u64() >> 11) / 9007199254740992.0 - 1.0); }

/* (rows, ld) matrix: N random columns scaled by s (+ offset), NaN padding. */
static float *mat(int rows, int N, int ld, float s, float off) {
    float *x = malloc(sizeof(float) * (size_t)rows * ld);
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < ld; t++) x[(int64_t)r * ld + t] = t < N ? off + s * rng_f() : NAN;
    return x;
}
static float *dup(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

/* max|a-b| / max|b| over the N valid columns of rows; padding of a must still be NaN. */
static double rel_err(const float *a, const float *b, int rows, int N, int ld, int *pad_ok) {
    double e = 0, s = 0;
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < ld; t++) {
            int64_t i = (int64_t)r * ld + t;
            if (t >= N) {
                if (pad_ok && !isnan(a[i])) *pad_ok = 0;
                continue;
            }
            double d = fabs((double)a[i] - b[i]);
            if (!(d <= e)) e = d;
            if (fabs(b[i]) > s) s = fabs(b[i]);
        }
    return e / (s > 0 ? s : 1e-30);
}

#define TOL 2e-5

static void test_layernorm(int D, int N, int ld) {
    float *x = mat(D, N, ld, 2.0f, 0.5f), *w = mat(1, D, D, 1.0f, 1.0f), *b = mat(1, D, D, 0.5f, 0.0f);
    float *y = mat(D, N, ld, 0, 0), *yr = mat(D, N, ld, 0, 0), *mean = malloc(sizeof(float) * N),
          *rstd = malloc(sizeof(float) * N);
    lpv_layernorm_forward_fm(y, mean, rstd, x, w, b, D, N, ld, 1e-6f);
    lpv_layernorm_fm_ref(yr, x, w, b, D, N, ld, 1e-6f);
    int pad = 1;
    double e = rel_err(y, yr, D, N, ld, &pad);
    CHECKF(e <= TOL && pad, "layernorm forward D=%d N=%d: rel %.3g pad %d", D, N, e, pad);
    float *dy = mat(D, N, ld, 1.0f, 0.0f), *dx = mat(D, N, ld, 0.3f, 0.0f), *dx2 = dup(dx, (size_t)D * ld);
    float *dw = mat(1, D, D, 0.3f, 0), *db = mat(1, D, D, 0.3f, 0), *dw2 = dup(dw, D), *db2 = dup(db, D);
    lpv_layernorm_backward_fm(dx, dw, db, dy, x, mean, rstd, w, D, N, ld);
    lpv_layernorm_backward_fm_ref(dx2, dw2, db2, dy, x, w, D, N, ld, 1e-6f);
    pad = 1;
    double ex = rel_err(dx, dx2, D, N, ld, &pad), ew = rel_err(dw, dw2, 1, D, D, NULL),
           eb = rel_err(db, db2, 1, D, D, NULL);
    CHECKF(ex <= TOL && ew <= TOL && eb <= TOL && pad, "layernorm backward D=%d N=%d: dx %.3g dw %.3g db %.3g pad %d",
           D, N, ex, ew, eb, pad);
    free(x), free(w), free(b), free(y), free(yr), free(mean), free(rstd), free(dy), free(dx), free(dx2), free(dw);
    free(db), free(dw2), free(db2);
}

static void test_gelu(int rows, int N, int ld) {
    float *x = mat(rows, N, ld, 6.0f, 0.0f), *dy = mat(rows, N, ld, 1.0f, 0.0f);
    float *dx = dup(dy, (size_t)rows * ld), *dx2 = dup(dy, (size_t)rows * ld);
    float *y = mat(rows, N, ld, 0, 0), *y2 = mat(rows, N, ld, 0, 0);
    lpv_gelu_backward_fm(dx, y, x, rows, N, ld);
    lpv_gelu_backward_fm_ref(dx2, y2, x, rows, N, ld);
    int pad = 1;
    double e = rel_err(dx, dx2, rows, N, ld, &pad), ey = rel_err(y, y2, rows, N, ld, &pad);
    CHECKF(e <= TOL && ey <= TOL && pad, "gelu backward: dx %.3g y %.3g pad %d", e, ey, pad);
    free(x), free(dy), free(dx), free(dx2), free(y), free(y2);
}

/* Pointwise over a sweep of [-30, 30] (every 1e-4 in [-10, 10]) and special values: gelu'(x) to absolute
   error <= 5e-7, gelu(x) to <= 5e-7·max(1, |x|), against double erfc. */
static void test_gelu_sweep(void) {
    int n = 0, cap = 260000;
    float *x = malloc(sizeof(float) * cap);
    for (int i = -100000; i <= 100000; i++) x[n++] = i * 1e-4f;
    for (int i = -3000; i <= 3000; i++) x[n++] = i * 0.01f;
    x[n++] = 0.0f, x[n++] = -0.0f, x[n++] = 1e-30f, x[n++] = -1e-30f, x[n++] = 1e30f, x[n++] = -1e30f;
    float *dx = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) dx[i] = 1.0f;
    lpv_gelu_backward_fm(dx, y, x, 1, n, n);
    lpv_gelu_forward_fm(y2, x, 1, n, n);
    double ed = 0, ey = 0, ef = 0;
    float at_d = 0, at_y = 0;
    for (int i = 0; i < n; i++) {
        double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0));
        double want = cdf + (fabs(v) < 40 ? v * exp(-0.5 * v * v) / sqrt(2 * M_PI) : 0), wy = v * cdf;
        double e1 = fabs(dx[i] - want), e2 = fabs(y[i] - wy) / fmax(1, fabs(v));
        if (!(e1 <= ed)) ed = e1, at_d = x[i];
        if (!(e2 <= ey)) ey = e2, at_y = x[i];
        if (y2[i] != y[i] && !(isnan(y2[i]) && isnan(y[i]))) ef = 1;
    }
    printf("gelu sweep: derivative abs err %.3g (at %g), gelu rel err %.3g (at %g)\n", ed, (double)at_d, ey,
           (double)at_y);
    CHECKF(ed <= 5e-7 && ey <= 5e-7, "gelu sweep: derivative %.3g at %g, value %.3g at %g", ed, (double)at_d, ey,
           (double)at_y);
    CHECKF(ef == 0, "lpv_gelu_forward_fm differs from the backward's recomputed gelu");
    float nan_in = NAN, d1 = 1.0f, yy;
    lpv_gelu_backward_fm(&d1, &yy, &nan_in, 1, 1, 1);
    CHECK(isnan(d1) && isnan(yy));
    free(x), free(dx), free(y), free(y2);
}

static void test_attention(int B, int T, int D, int heads, int extra_ld) {
    int N = B * T, ld = lpv_round16(N) + extra_ld;
    float *qkv = mat(3 * D, N, ld, 1.5f, 0.0f), *out = mat(D, N, ld, 0, 0), *out2 = mat(D, N, ld, 0, 0);
    float *probs = malloc(sizeof(float) * (size_t)B * heads * T * T);
    lpv_attention_forward_fm(out, probs, qkv, ld, B, T, D, heads);
    lpv_attention_fm_ref(out2, qkv, ld, B, T, D, heads);
    int pad = 1;
    double e = rel_err(out, out2, D, N, ld, &pad);
    CHECKF(e <= TOL && pad, "attention forward B=%d T=%d D=%d h=%d: rel %.3g pad %d", B, T, D, heads, e, pad);
    double worst_sum = 0;
    for (int64_t r = 0; r < (int64_t)B * heads * T; r++) {
        double s = 0;
        for (int j = 0; j < T; j++) s += probs[r * T + j];
        if (fabs(s - 1) > worst_sum) worst_sum = fabs(s - 1);
    }
    CHECKF(worst_sum <= 1e-5, "attention probabilities rows sum to 1 +- %.3g", worst_sum);
    float *dout = mat(D, N, ld, 1.0f, 0.0f), *dqkv = mat(3 * D, N, ld, 0, 0), *dqkv2 = mat(3 * D, N, ld, 0, 0);
    float *scratch = malloc(sizeof(float) * (size_t)lpv_attention_backward_scratch(T) * lpv_threads_get());
    lpv_attention_backward_fm(dqkv, dout, qkv, probs, ld, B, T, D, heads, scratch);
    lpv_attention_backward_fm_ref(dqkv2, dout, qkv, ld, B, T, D, heads);
    for (int part = 0; part < 3; part++) {
        pad = 1;
        int64_t off = (int64_t)part * D * ld;
        e = rel_err(dqkv + off, dqkv2 + off, D, N, ld, &pad);
        CHECKF(e <= TOL && pad, "attention backward d%c B=%d T=%d D=%d h=%d: rel %.3g pad %d", "qkv"[part], B, T, D,
               heads, e, pad);
    }
    free(qkv), free(out), free(out2), free(probs), free(dout), free(dqkv), free(dqkv2), free(scratch);
}

static void test_linear(int out, int in, int S, int cols, int extra_ld) {
    int N = S * cols, ld = lpv_round16(N) + extra_ld;
    float *X = mat(in, N, ld, 1.0f, 0.0f), *dY = mat(out, N, ld, 1.0f, 0.0f), *W = mat(out, in, in, 1.0f, 0.0f);
    for (int acc = 0; acc <= 1; acc++) {
        float *dX = mat(in, N, ld, 0.5f, 0), *dX2 = dup(dX, (size_t)in * ld);
        float *dW = mat(out, in, in, 0.5f, 0), *dW2 = dup(dW, (size_t)out * in);
        float *db = mat(1, out, out, 0.5f, 0), *db2 = dup(db, out);
        lpv_linear_backward(dX, dW, db, dY, X, W, out, in, N, ld, acc);
        lpv_linear_backward_ref(dX2, dW2, db2, dY, X, W, out, in, N, ld, acc);
        int pad = 1;
        double ex = rel_err(dX, dX2, in, N, ld, &pad), ew = rel_err(dW, dW2, out, in, in, NULL),
               eb = rel_err(db, db2, 1, out, out, NULL);
        CHECKF(ex <= TOL && ew <= TOL && eb <= TOL && pad,
               "linear backward %dx%d N=%d acc=%d: dX %.3g dW %.3g db %.3g pad %d", out, in, N, acc, ex, ew, eb, pad);
        free(dX), free(dX2), free(dW), free(dW2), free(db), free(db2);
    }
    /* per sample: dW += Σ G_s, sq += Σ (scale G_s)², db += row sums */
    float scale = (float)S;
    float *dW = mat(out, in, in, 0.5f, 0), *sq = mat(out, in, in, 0.5f, 1.0f), *db = mat(1, out, out, 0.5f, 0);
    float *dW2 = dup(dW, (size_t)out * in), *sq2 = dup(sq, (size_t)out * in), *db2 = dup(db, out);
    float *tmp = malloc(sizeof(float) * (size_t)out * in), *gs = malloc(sizeof(float) * (size_t)out * in);
    lpv_linear_backward_persample(dW, db, sq, tmp, dY, X, out, in, S, cols, ld, scale);
    lpv_linear_backward_ref(NULL, NULL, db2, dY, X, W, out, in, N, ld, 0);
    for (int s = 0; s < S; s++) {
        memset(gs, 0, sizeof(float) * (size_t)out * in);
        lpv_linear_backward_ref(NULL, gs, NULL, dY + (int64_t)s * cols, X + (int64_t)s * cols, W, out, in, cols, ld, 0);
        for (int64_t i = 0; i < (int64_t)out * in; i++) {
            dW2[i] += gs[i];
            sq2[i] += (scale * gs[i]) * (scale * gs[i]);
        }
    }
    double ew = rel_err(dW, dW2, out, in, in, NULL), eq = rel_err(sq, sq2, out, in, in, NULL),
           eb = rel_err(db, db2, 1, out, out, NULL);
    CHECKF(ew <= TOL && eq <= TOL && eb <= TOL, "linear per-sample %dx%d S=%d cols=%d: dW %.3g sq %.3g db %.3g", out,
           in, S, cols, ew, eq, eb);
    free(X), free(dY), free(W), free(dW), free(sq), free(db), free(dW2), free(sq2), free(db2), free(tmp), free(gs);
}

/* Per-sample block moments against a double-precision reference: bsq[b] += (scale Σ_b G_s ⊙ W)², with and
   without the gradient sum (dW NULL), blocks cut by the edges (out, in not multiples of R, C). */
static void test_persample_blocks(int out, int in, int S, int cols, int R, int C) {
    int N = S * cols, ld = lpv_round16(N), nbr = (out + R - 1) / R, nbc = (in + C - 1) / C;
    float *X = mat(in, N, ld, 1.0f, 0.0f), *dY = mat(out, N, ld, 1.0f, 0.0f), *W = mat(out, in, in, 1.0f, 0.0f);
    float scale = (float)S, *tmp = malloc(sizeof(float) * (size_t)lpv_persample_tmp_floats(out, in, lpv_threads_get()));
    float *gs = malloc(sizeof(float) * (size_t)out * in), *bref = calloc((size_t)nbr * nbc, sizeof(float));
    for (int s = 0; s < S; s++) {
        memset(gs, 0, sizeof(float) * (size_t)out * in);
        lpv_linear_backward_ref(NULL, gs, NULL, dY + (int64_t)s * cols, X + (int64_t)s * cols, W, out, in, cols, ld, 0);
        for (int br = 0; br < nbr; br++)
            for (int bc = 0; bc < nbc; bc++) {
                double dot = 0;
                for (int r = br * R; r < (br + 1) * R && r < out; r++)
                    for (int c = bc * C; c < (bc + 1) * C && c < in; c++)
                        dot += (double)gs[(int64_t)r * in + c] * W[(int64_t)r * in + c];
                bref[br * nbc + bc] += (float)((double)scale * scale * dot * dot);
            }
    }
    float *dW = mat(out, in, in, 0.5f, 0), *dW2 = dup(dW, (size_t)out * in);
    lpv_linear_backward_ref(NULL, dW2, NULL, dY, X, W, out, in, N, ld, 0);
    for (int with_dw = 0; with_dw <= 1; with_dw++) {
        float *bsq = calloc((size_t)nbr * nbc, sizeof(float)), *db = calloc((size_t)out, sizeof(float));
        float *dw = with_dw ? dup(dW, (size_t)out * in) : NULL;
        lpv_linear_backward_persample_blocks(dw, db, NULL, bsq, W, R, C, tmp, dY, X, out, in, S, cols, ld, scale);
        double eb = rel_err(bsq, bref, nbr, nbc, nbc, NULL), ew = dw ? rel_err(dw, dW2, out, in, in, NULL) : 0;
        CHECKF(eb <= TOL && ew <= TOL, "per-sample blocks %dx%d S=%d cols=%d %dx%d dW %d: bsq %.3g dW %.3g", out, in, S,
               cols, R, C, with_dw, eb, ew);
        free(bsq), free(db), free(dw);
    }
    free(X), free(dY), free(W), free(tmp), free(gs), free(bref), free(dW), free(dW2);
}

int main(void) {
    for (int threads = 1; threads <= 2; threads++) {
        lpv_threads_set(threads);
        test_layernorm(16, 1, 16);
        test_layernorm(24, 70, 96);
        test_layernorm(192, 394, 400);
        test_gelu(37, 101, 128);
        test_gelu(5, 1, 16);
        test_gelu_sweep();
        test_attention(1, 1, 8, 1, 0);
        test_attention(2, 13, 24, 3, 16);
        test_attention(3, 50, 32, 2, 0);
        test_attention(1, 197, 64, 1, 0);
        test_linear(37, 23, 3, 11, 0);
        test_linear(48, 64, 2, 50, 16);
        test_linear(10, 16, 4, 1, 0);
        test_linear(70, 33, 1, 5, 0);
        test_persample_blocks(64, 96, 3, 17, 32, 32);
        test_persample_blocks(70, 45, 2, 9, 16, 16);
        test_persample_blocks(40, 24, 4, 5, 8, 16);
    }
    return test_finish("test_grad_ops");
}
