/*
 * test_q8.c — the int8 BSR product and the activation quantizer.
 *
 *  - Exactness: with unit scales and no bias, every int8 kernel (ref, AVX2, AVX-VNNI, AVX-512 VNNI; what the
 *    CPU lacks is skipped and said so) on 1 and 2 threads returns Σ q·u bit for bit, against int64 sums
 *    computed here from the dense weights, for all 16 block shapes, partial edge blocks, densities 0..1,
 *    T with and without padding, forced K chunks, and bytes at the extremes of the kernel's grid (q = ±127/-128,
 *    u = 255, or 127 for AVX2, whose vpmaddubsw would saturate beyond).
 *  - Epilogue: real scales, zero points per token, bias, ACC and GELU agree with the reference within
 *    2e-6 of the magnitude of the terms.
 *  - Quantizer: every ISA writes the same quads and scales as the reference on its grid (255 levels, 127 for
 *    AVX2; per tensor, per token, NaN / Inf / huge inputs, odd K); dequantized values are within half a step.
 *  - Weights: lpv_bsr_set_int8 rounds per row, keeps q·scale in values, rejects 0 / NaN / Inf scales.
 */
#include <stdint.h>

#include "engine/kernels/bsr_internal.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/linear.h"
#include "test.h"
#include "test_kernels.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }

static lpv_isa isas[4];
static int n_isas;

static double gelu_d(double v) { return 0.5 * v * erfc(-v * 0.70710678118654752440); }

/* A random BSR with int8 weights q (extremes mixed in), unit scales. Wq: the dense int8 matrix. */
static void make_w(lpv_bsr *b, int8_t *Wq, int rows, int cols, int R, int C, double d, const float *scale) {
    lpv_err err;
    int nbr = (rows + R - 1) / R, nbc = (cols + C - 1) / C;
    uint8_t *mask = malloc((size_t)nbr * nbc);
    for (int i = 0; i < nbr * nbc; i++) mask[i] = rng_unif() < d;
    float *W = calloc((size_t)rows * cols, sizeof(float));
    CHECK_OK(lpv_bsr_from_dense(b, W, rows, cols, R, C, mask, NULL, "case", &err), &err);
    int8_t *q = malloc((size_t)b->nnzb * R * C + 1);
    for (int64_t i = 0; i < b->nnzb * R * C; i++) {
        uint64_t r = rng_u64();
        q[i] = (r & 15) == 0 ? -128 : (r & 15) == 1 ? 127 : (int8_t)(r >> 8);
    }
    float *s = malloc(sizeof(float) * rows);
    for (int r = 0; r < rows; r++) s[r] = scale ? scale[r] : 1.0f;
    CHECK_OK(lpv_bsr_set_int8(b, q, s, NULL, "case", &err), &err);
    /* the dense int8 matrix, from the block arrays (set_int8 zeroed what lies past the edges) */
    memset(Wq, 0, (size_t)rows * cols);
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++)
            for (int r = 0; r < R && i * R + r < rows; r++)
                for (int c = 0; c < C && b->col_idx[j] * C + c < cols; c++)
                    Wq[(int64_t)(i * R + r) * cols + b->col_idx[j] * C + c] = b->qvalues[(int64_t)j * R * C + r * C + c];
    free(mask), free(W), free(q), free(s);
}

static uint8_t ubyte(const uint32_t *X4, int ld, int k, int t) { return (uint8_t)(X4[(int64_t)(k / 4) * ld + t] >> (8 * (k % 4))); }

/* X4 as the ISA's kernel takes it: bytes on its grid (AVX2: 0..127, each byte's top bit cleared), in Xi. */
static const uint32_t *on_grid(uint32_t *Xi, const uint32_t *X4, int64_t n, lpv_isa isa) {
    if (lpv_q8_levels(lpv_q8_kernel_for(isa)) == 255) return X4;
    for (int64_t i = 0; i < n; i++) Xi[i] = X4[i] & 0x7f7f7f7fu;
    return Xi;
}

/* Unit scales, no bias: every kernel's Y == Σ q·u exactly. */
static void exact_case(int rows, int cols, int R, int C, int T, double d) {
    lpv_bsr b;
    int8_t *Wq = malloc((size_t)rows * cols);
    make_w(&b, Wq, rows, cols, R, C, d, NULL);
    int ld = lpv_round16(T), nq = (cols + 3) / 4;
    uint32_t *X4 = malloc(sizeof(uint32_t) * (size_t)nq * ld);
    for (int64_t i = 0; i < (int64_t)nq * ld; i++) {
        uint64_t r = rng_u64();
        X4[i] = (r & 7) == 0 ? 0xffffffffu : (uint32_t)(r >> 16);
    }
    for (int t = 0; t < ld; t++) /* bytes past K are 0 by the format */
        for (int k = cols; k < 4 * nq; k++) X4[(int64_t)(k / 4) * ld + t] &= ~(0xffu << (8 * (k % 4)));
    float *xa = malloc(sizeof(float) * ld), *xc = malloc(sizeof(float) * ld), *Y = malloc(sizeof(float) * rows * ld);
    uint32_t *Xg = malloc(sizeof(uint32_t) * (size_t)nq * ld);
    for (int t = 0; t < ld; t++) xa[t] = 1.0f, xc[t] = 0.0f;
    int bad = 0;
    for (int ii = 0; ii < n_isas; ii++)
        for (int nt = 1; nt <= 2; nt++) {
            const uint32_t *Xi = on_grid(Xg, X4, (int64_t)nq * ld, isas[ii]);
            for (int64_t i = 0; i < (int64_t)rows * ld; i++) Y[i] = -1e30f;
            lpv_bsr_matmul_q8_isa(&b, NULL, Xi, xa, xc, ld, Y, ld, T, 0, isas[ii], nt);
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < T; t++) {
                    int64_t acc = 0;
                    for (int k = 0; k < cols; k++) acc += (int64_t)Wq[(int64_t)r * cols + k] * ubyte(Xi, ld, k, t);
                    if (Y[(int64_t)r * ld + t] != (float)acc && bad++ < 3)
                        fprintf(stderr, "q8 %s nt=%d %dx%d block %dx%d T=%d d=%.2f: Y[%d][%d] = %.1f, expected %lld\n",
                                lpv_q8_kernel_name(lpv_q8_kernel_for(isas[ii])), nt, rows, cols, R, C, T, d, r, t,
                                (double)Y[(int64_t)r * ld + t], (long long)acc);
                }
        }
    CHECKF(bad == 0, "%d int8 sums differ (%dx%d block %dx%d T=%d)", bad, rows, cols, R, C, T);
    lpv_bsr_free(&b);
    free(Wq), free(X4), free(Xg), free(xa), free(xc), free(Y);
}

static void test_exact(void) {
    static const int dims[4] = {8, 16, 32, 64};
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < 4; c++) exact_case(72, 200, dims[a], dims[c], 37, 0.6);
    exact_case(200, 512, 32, 32, 197, 1.0);  /* full density, the kernels' 3-vector tiles */
    exact_case(64, 96, 16, 16, 1, 0.5);      /* one token */
    exact_case(33, 130, 32, 64, 200, 0.0);   /* nothing kept: Y = 0 */
    exact_case(40, 257, 8, 8, 16, 0.3);      /* K not a multiple of 4 */
    /* forced K chunks and panels: the float sum of integer partials stays exact */
    lpv__bsr_tuning saved = lpv__bsr_tune;
    lpv__bsr_tune.l2_bytes = 8 << 10, lpv__bsr_tune.kept_cols = 64, lpv__bsr_tune.l1_w_bytes = 0;
    exact_case(96, 512, 32, 32, 394, 0.7);
    exact_case(48, 768, 16, 32, 100, 0.4);
    /* the AVX2 kernel's x_in_l1 walk: 1-granule chunks, row blocks of one group, 1-, 2- and 3-vector panels */
    for (int v = 0; v < 3; v++) {
        lpv__bsr_tune.q8_l1_x_bytes = v == 0 ? 1 : 2 * 32 * 2 * LPV_BSR_KGRAN;
        lpv__bsr_tune.l2_w_bytes = v == 1 ? 1 : 3 * 8 * 2 * LPV_BSR_KGRAN;
        lpv__bsr_tune.q8_panel_vec = v + 1;
        exact_case(96, 520, 32, 32, 394, 0.7);
        exact_case(40, 257, 8, 16, 37, 0.9);
    }
    lpv__bsr_tune = saved;
}

/* Real scales and zero points, bias, every epilogue: kernels against the reference. */
static void epilogue_case(int rows, int cols, int R, int C, int T, double d, int epi) {
    lpv_bsr b;
    int8_t *Wq = malloc((size_t)rows * cols);
    float *s = malloc(sizeof(float) * rows), *bias = malloc(sizeof(float) * rows);
    for (int r = 0; r < rows; r++) s[r] = (float)(1e-3 * (0.5 + rng_unif())), bias[r] = (float)(rng_unif() - 0.5);
    make_w(&b, Wq, rows, cols, R, C, d, s);
    int ld = lpv_round16(T), nq = (cols + 3) / 4;
    uint32_t *X4 = malloc(sizeof(uint32_t) * (size_t)nq * ld);
    for (int64_t i = 0; i < (int64_t)nq * ld; i++) X4[i] = (uint32_t)rng_u64();
    for (int t = 0; t < ld; t++)
        for (int k = cols; k < 4 * nq; k++) X4[(int64_t)(k / 4) * ld + t] &= ~(0xffu << (8 * (k % 4)));
    float *xa = malloc(sizeof(float) * ld), *xc = malloc(sizeof(float) * ld);
    for (int t = 0; t < ld; t++) {
        xa[t] = (float)(0.01 * (0.5 + rng_unif()));
        xc[t] = xa[t] * (float)(rng_u64() % 256);
    }
    float *Y0 = malloc(sizeof(float) * rows * ld), *Yr = malloc(sizeof(float) * rows * ld), *Y = malloc(sizeof(float) * rows * ld);
    for (int64_t i = 0; i < (int64_t)rows * ld; i++) Y0[i] = (float)(rng_unif() - 0.5);
    memcpy(Yr, Y0, sizeof(float) * rows * ld);
    lpv_bsr_matmul_q8_isa(&b, bias, X4, xa, xc, ld, Yr, ld, T, epi, LPV_ISA_REF, 1);
    /* the reference itself against double: Y = s·(xa·acc − xc·qsum) + b */
    double worst = 0, worst_ref = 0;
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < cols; k++) {
                double q = Wq[(int64_t)r * cols + k];
                acc += q * ubyte(X4, ld, k, t);
                mag += fabs(q) * (ubyte(X4, ld, k, t) + 256.0);
            }
            double qsum = 0;
            for (int k = 0; k < cols; k++) qsum += Wq[(int64_t)r * cols + k];
            double v = s[r] * (xa[t] * acc - (double)xc[t] * qsum) + ((epi & LPV_EPI_BIAS) ? bias[r] : 0.0);
            if (epi & LPV_EPI_ACC) v += Y0[(int64_t)r * ld + t];
            if (epi & LPV_EPI_GELU) v = gelu_d(v);
            double scale = s[r] * xa[t] * mag + 1.0;
            double e = fabs(Yr[(int64_t)r * ld + t] - v) / scale;
            if (e > worst_ref) worst_ref = e;
        }
    CHECKF(worst_ref <= 2e-6, "q8 reference vs double: %.3g (%dx%d T=%d epi=%d)", worst_ref, rows, cols, T, epi);
    uint32_t *Xg = malloc(sizeof(uint32_t) * (size_t)nq * ld);
    for (int ii = 1; ii < n_isas; ii++)
        for (int nt = 1; nt <= 2; nt++) {
            const uint32_t *Xi = on_grid(Xg, X4, (int64_t)nq * ld, isas[ii]);
            memcpy(Yr, Y0, sizeof(float) * rows * ld); /* the reference on the kernel's bytes */
            lpv_bsr_matmul_q8_isa(&b, bias, Xi, xa, xc, ld, Yr, ld, T, epi, LPV_ISA_REF, 1);
            memcpy(Y, Y0, sizeof(float) * rows * ld);
            lpv_bsr_matmul_q8_isa(&b, bias, Xi, xa, xc, ld, Y, ld, T, epi, isas[ii], nt);
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < T; t++) {
                    double mag = 1.0 + fabs(Yr[(int64_t)r * ld + t]) + (epi & LPV_EPI_ACC ? fabs(Y0[(int64_t)r * ld + t]) : 0);
                    double e = fabs((double)Y[(int64_t)r * ld + t] - Yr[(int64_t)r * ld + t]) / mag;
                    if (e > worst) worst = e;
                }
        }
    CHECKF(worst <= 2e-6, "q8 kernels vs reference: %.3g (%dx%d T=%d epi=%d)", worst, rows, cols, T, epi);
    lpv_bsr_free(&b);
    free(Wq), free(s), free(bias), free(X4), free(Xg), free(xa), free(xc), free(Y0), free(Yr), free(Y);
}

static void test_epilogue(void) {
    int epis[4] = {0, LPV_EPI_BIAS, LPV_EPI_BIAS | LPV_EPI_ACC, LPV_EPI_BIAS | LPV_EPI_GELU};
    for (int e = 0; e < 4; e++) {
        epilogue_case(96, 192, 32, 32, 197, 0.5, epis[e]);
        epilogue_case(20, 100, 16, 8, 23, 0.8, epis[e]);
    }
    lpv__bsr_tuning saved = lpv__bsr_tune;
    lpv__bsr_tune.l2_bytes = 8 << 10, lpv__bsr_tune.kept_cols = 64, lpv__bsr_tune.l1_w_bytes = 0;
    epilogue_case(64, 768, 32, 32, 200, 0.6, LPV_EPI_BIAS | LPV_EPI_ACC);
    epilogue_case(64, 768, 32, 32, 200, 0.6, LPV_EPI_BIAS | LPV_EPI_GELU);
    lpv__bsr_tune.q8_l1_x_bytes = 1, lpv__bsr_tune.l2_w_bytes = 1, lpv__bsr_tune.q8_panel_vec = 2;
    epilogue_case(64, 768, 32, 32, 200, 0.6, LPV_EPI_BIAS | LPV_EPI_ACC);
    epilogue_case(64, 768, 32, 32, 200, 0.6, LPV_EPI_BIAS | LPV_EPI_GELU);
    lpv__bsr_tune = saved;
}

/* Every ISA's quantizer writes the reference's bytes and scales; values dequantize to within half a step. */
static void quant_case(int K, int T, int ld, int per_token, int specials) {
    int nq = (K + 3) / 4, n = lpv_round16(T) <= ld ? lpv_round16(T) : T;
    float *X = malloc(sizeof(float) * (size_t)K * ld);
    for (int64_t i = 0; i < (int64_t)K * ld; i++) X[i] = (float)(4.0 * rng_unif() - 1.0);
    if (specials) {
        X[3] = NAN, X[ld + 1] = INFINITY, X[2 * ld + 2] = -1e30f, X[5] = 1e-30f;
    }
    lpv_qact q = {per_token, 0.02f, 37};
    uint32_t *ref = calloc((size_t)nq * ld, 4), *got = calloc((size_t)nq * ld, 4);
    float *xa0 = calloc(ld, 4), *xc0 = calloc(ld, 4), *xa = calloc(ld, 4), *xc = calloc(ld, 4);
    for (int ii = 1; ii < n_isas; ii++) {
        int levels = lpv_q8_levels(lpv_q8_kernel_for(isas[ii]));
        lpv__q8_quantize_levels(ref, xa0, xc0, X, ld, K, T, &q, LPV_ISA_REF, levels);
        memset(got, 0xab, (size_t)nq * ld * 4);
        lpv_q8_quantize_x_isa(got, xa, xc, X, ld, K, T, &q, isas[ii]);
        int bad = 0;
        for (int p = 0; p < nq; p++)
            for (int t = 0; t < n; t++) bad += got[(int64_t)p * ld + t] != ref[(int64_t)p * ld + t];
        for (int t = 0; t < n; t++) bad += memcmp(&xa[t], &xa0[t], 4) != 0 || memcmp(&xc[t], &xc0[t], 4) != 0;
        CHECKF(bad == 0, "quantizer %s: %d words differ (K=%d T=%d per_token=%d)", lpv_isa_name(isas[ii]), bad, K, T, per_token);
    }
    for (int levels = 127; levels <= 255; levels += 128) { /* each grid's reference against x */
    lpv__q8_quantize_levels(ref, xa0, xc0, X, ld, K, T, &q, LPV_ISA_REF, levels);
    if (!specials) {
        double worst = 0;
        for (int k = 0; k < K; k++)
            for (int t = 0; t < T; t++) {
                double zp = nearbyint(xc0[t] / xa0[t]);
                double v = xa0[t] * (ubyte(ref, ld, k, t) - zp), x = X[(int64_t)k * ld + t];
                double e = fabs(v - x) / xa0[t];
                if ((x - xa0[t] * (0 - zp)) >= 0 && (x - xa0[t] * (levels - zp)) <= 0 && e > worst) worst = e;
            }
        CHECKF(worst <= 0.5 + 1e-4, "quantizer (%d levels): %.3g steps from x (K=%d T=%d per_token=%d)", levels, worst, K, T,
               per_token);
        if (per_token) { /* the per-token range always covers the column: nothing clipped */
            int clipped = 0;
            for (int k = 0; k < K; k++)
                for (int t = 0; t < T; t++) {
                    double zp = nearbyint(xc0[t] / xa0[t]);
                    clipped += fabs(xa0[t] * (ubyte(ref, ld, k, t) - zp) - X[(int64_t)k * ld + t]) > 0.5001 * xa0[t];
                }
            CHECKF(clipped == 0, "per-token quantizer clipped %d values", clipped);
        }
    } else {
        CHECKF(ubyte(ref, ld, 0, 3) == (per_token ? ubyte(ref, ld, 0, 3) : 0), "NaN should quantize to 0");
    }
    }
    free(X), free(ref), free(got), free(xa0), free(xc0), free(xa), free(xc);
}

static void test_quantizer(void) {
    for (int pt = 0; pt <= 1; pt++) {
        quant_case(192, 197, 208, pt, 0);
        quant_case(7, 5, 16, pt, 0);    /* K not a multiple of 4 */
        quant_case(64, 30, 30, pt, 0);  /* ld < round16(T): only T columns */
        quant_case(16, 40, 48, pt, 1);  /* NaN, Inf, huge: same bytes on every ISA */
    }
}

static void test_weights(void) {
    lpv_err err;
    float W[4 * 16];
    for (int i = 0; i < 64; i++) W[i] = (float)(rng_unif() - 0.5) * (float)(1 + i / 16);
    W[16] = 0; /* row 1: one exact zero */
    for (int i = 32; i < 48; i++) W[i] = 0; /* row 2: all zero */
    lpv_bsr b;
    CHECK_OK(lpv_bsr_from_dense(&b, W, 4, 16, 8, 8, NULL, NULL, "w", &err), &err);
    CHECK_OK(lpv_bsr_set_int8(&b, NULL, NULL, NULL, "w", &err), &err);
    float D[64];
    lpv_bsr_to_dense(&b, D);
    for (int r = 0; r < 4; r++) {
        float mx = 0;
        for (int c = 0; c < 16; c++) mx = fabsf(W[r * 16 + c]) > mx ? fabsf(W[r * 16 + c]) : mx;
        CHECKF(b.qscale[r] == (mx > 0 ? mx / 127.0f : 1.0f), "row %d scale %g", r, (double)b.qscale[r]);
        int sum = 0;
        for (int c = 0; c < 16; c++) {
            CHECK(fabsf(D[r * 16 + c] - W[r * 16 + c]) <= 0.5f * b.qscale[r] * 1.0001f);
            sum += (int)lrintf(D[r * 16 + c] / b.qscale[r]);
        }
        CHECKF(b.qsum[r] == (float)sum, "row %d qsum %g, expected %d", r, (double)b.qsum[r], sum);
    }
    int8_t q[2 * 64] = {0};
    float bad[4] = {1, 0, 1, 1};
    const float specials[3] = {0.0f, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        bad[1] = specials[i];
        CHECK(lpv_bsr_set_int8(&b, q, bad, NULL, "blocks.0.attn.qkv", &err) == LPV_E_FORMAT);
        CHECK(strstr(err.msg, "blocks.0.attn.qkv") && strstr(err.msg, "row 1"));
    }
    bad[1] = -1.0f;
    CHECK(lpv_bsr_set_int8(&b, q, bad, NULL, "w", &err) == LPV_E_FORMAT);
    lpv_bsr_free(&b);
}

/* The int8 linear is the FP32 product of its dequantized weights and dequantized inputs: lpv_linear_forward_q8
 * (per token and per tensor) against lpv_linear_forward_ref on x' = xa·(u − zp), w' = values. */
static void fake_quant_case(int out, int in, int T, int per_token, int epi) {
    lpv_err err;
    int ld = lpv_round16(T);
    float *W = malloc(sizeof(float) * out * in), *b = malloc(sizeof(float) * out);
    for (int i = 0; i < out * in; i++) W[i] = (float)(rng_unif() - 0.5);
    for (int i = 0; i < out; i++) b[i] = (float)(rng_unif() - 0.5);
    lpv_bsr blk;
    CHECK_OK(lpv_bsr_from_dense(&blk, W, out, in, 32, 32, NULL, NULL, "fq", &err), &err);
    CHECK_OK(lpv_bsr_set_int8(&blk, NULL, NULL, NULL, "fq", &err), &err);
    float *Wd = malloc(sizeof(float) * out * in);
    lpv_bsr_to_dense(&blk, Wd);
    lpv_linear L = {.out = out, .in = in, .b = b, .blocked = &blk, .qx = {per_token, 0.03f, 40}};
    lpv_linear R = {.out = out, .in = in, .w = Wd, .b = b};
    float *X = malloc(sizeof(float) * in * ld), *Xd = malloc(sizeof(float) * in * ld);
    for (int i = 0; i < in * ld; i++) X[i] = (float)(3.0 * rng_unif() - 1.0);
    uint32_t *X4 = malloc(sizeof(uint32_t) * ((in + 3) / 4) * ld);
    float *xa = malloc(sizeof(float) * ld), *xc = malloc(sizeof(float) * ld);
    float *Y = malloc(sizeof(float) * out * ld), *Yr = malloc(sizeof(float) * out * ld);
    for (int i = 0; i < out * ld; i++) Y[i] = Yr[i] = (float)rng_unif();
    lpv_linear_forward_q8(&L, X, ld, X4, xa, xc, Y, ld, T, epi);
    int top = 0, levels = lpv_q8_levels(lpv_q8_kernel_for(lpv_isa_get())); /* the bytes the kernel was given */
    for (int k = 0; k < in; k++)
        for (int t = 0; t < T; t++) top = ubyte(X4, ld, k, t) > top ? ubyte(X4, ld, k, t) : top;
    /* per token each column's range fills the grid; per tensor it lies inside it */
    CHECKF(per_token ? top == levels : top <= levels, "isa %s: input bytes up to %d on a grid of %d levels (per_token %d)",
           lpv_isa_name(lpv_isa_get()), top, levels, per_token);
    for (int k = 0; k < in; k++)
        for (int t = 0; t < ld; t++) Xd[k * ld + t] = xa[t] * (float)((int)ubyte(X4, ld, k, t) - (int)nearbyintf(xc[t] / xa[t]));
    lpv_linear_forward_ref(&R, Xd, ld, Yr, ld, T, epi);
    double worst = 0;
    for (int r = 0; r < out; r++)
        for (int t = 0; t < T; t++) {
            double e = fabs((double)Y[r * ld + t] - Yr[r * ld + t]) / (1.0 + fabs(Yr[r * ld + t]));
            if (e > worst) worst = e;
        }
    CHECKF(worst <= 1e-5, "int8 linear vs fake-quant FP32: %.3g (%dx%d T=%d per_token=%d epi=%d)", worst, out, in, T,
           per_token, epi);
    lpv_bsr_free(&blk);
    free(W), free(b), free(Wd), free(X), free(Xd), free(X4), free(xa), free(xc), free(Y), free(Yr);
}

/* Through lpv_linear_forward_q8 (quantizer, then product) under every ISA: each quantizes onto its own kernel's
 * grid. */
static void test_fake_quant(void) {
    lpv_err err;
    lpv_isa keep = lpv_isa_get();
    for (int ii = 0; ii < n_isas; ii++) {
        CHECK_OK(lpv_isa_set(isas[ii], &err), &err);
        for (int pt = 0; pt <= 1; pt++) {
            fake_quant_case(96, 192, 197, pt, LPV_EPI_BIAS);
            fake_quant_case(64, 256, 50, pt, LPV_EPI_BIAS | LPV_EPI_GELU);
            fake_quant_case(64, 128, 23, pt, LPV_EPI_BIAS | LPV_EPI_ACC);
        }
    }
    CHECK_OK(lpv_isa_set(keep, &err), &err);
}

/* A GELU product that records its output's range: the range is each column's min / max with 0, exactly, and the
 * quantizer given it writes the bytes it would have found by itself. */
static void range_case(int rows, int cols, int T, double d) {
    lpv_bsr b;
    int8_t *Wq = malloc((size_t)rows * cols);
    float *s = malloc(sizeof(float) * rows), *bias = malloc(sizeof(float) * rows);
    for (int r = 0; r < rows; r++) s[r] = (float)(2e-3 * (0.5 + rng_unif())), bias[r] = (float)(rng_unif() - 0.5);
    make_w(&b, Wq, rows, cols, 32, 32, d, s);
    int ld = lpv_round16(T), nq = (cols + 3) / 4, nrq = (rows + 3) / 4;
    uint32_t *X4 = malloc(sizeof(uint32_t) * (size_t)nq * ld), *A = malloc(sizeof(uint32_t) * (size_t)nrq * ld),
             *B = malloc(sizeof(uint32_t) * (size_t)nrq * ld);
    for (int64_t i = 0; i < (int64_t)nq * ld; i++) X4[i] = (uint32_t)rng_u64();
    float *xa = malloc(sizeof(float) * ld), *xc = malloc(sizeof(float) * ld), *Y = malloc(sizeof(float) * rows * ld);
    float *range = malloc(sizeof(float) * 2 * ld * 2), *ya = malloc(sizeof(float) * ld), *yc = malloc(sizeof(float) * ld),
          *yb = malloc(sizeof(float) * ld), *yd = malloc(sizeof(float) * ld);
    for (int t = 0; t < ld; t++) xa[t] = (float)(0.01 * (0.5 + rng_unif())), xc[t] = xa[t] * (float)(rng_u64() % 256);
    uint32_t *Xg = malloc(sizeof(uint32_t) * (size_t)nq * ld);
    for (int ii = 0; ii < n_isas; ii++)
        for (int nt = 1; nt <= 2; nt++) {
            const uint32_t *Xi = on_grid(Xg, X4, (int64_t)nq * ld, isas[ii]);
            lpv_bsr_matmul_q8_range_isa(&b, bias, Xi, xa, xc, ld, Y, ld, T, LPV_EPI_BIAS | LPV_EPI_GELU, range, isas[ii], nt);
            int bad = 0;
            for (int t = 0; t < T; t++) {
                float lo = 0, hi = 0;
                for (int r = 0; r < rows; r++) {
                    float v = Y[(int64_t)r * ld + t];
                    lo = v < lo ? v : lo, hi = v > hi ? v : hi;
                }
                bad += range[t] != lo || range[ld + t] != hi;
            }
            CHECKF(bad == 0, "range %s nt=%d (%dx%d T=%d): %d columns differ", lpv_isa_name(isas[ii]), nt, rows, cols, T, bad);
            lpv_qact pt = {1, 0, 0};
            lpv_isa keep = lpv_isa_get();
            lpv_isa_set(isas[ii], NULL); /* the recorded range on this ISA's grid */
            lpv_q8_quantize_x_isa(A, ya, yc, Y, ld, rows, T, &pt, isas[ii]);
            /* the range found again from Y (yb, yd as scratch): the same as the product recorded */
            lpv_q8_column_range(yb, yd, Y, ld, rows, T);
            int rbad = 0;
            for (int t = 0; t < T; t++) rbad += yb[t] != range[t] || yd[t] != range[ld + t];
            CHECKF(rbad == 0, "lpv_q8_column_range %s nt=%d: %d columns differ", lpv_isa_name(isas[ii]), nt, rbad);
            lpv_q8_quantize_x_range(B, yb, yd, Y, ld, rows, T, range, range + ld);
            lpv_isa_set(keep, NULL);
            for (int p = 0; p < nrq; p++)
                for (int t = 0; t < T; t++) bad += A[(int64_t)p * ld + t] != B[(int64_t)p * ld + t];
            for (int t = 0; t < T; t++) bad += ya[t] != yb[t] || yc[t] != yd[t];
            CHECKF(bad == 0, "quantizing with the recorded range (%s nt=%d): %d words differ", lpv_isa_name(isas[ii]), nt, bad);
        }
    lpv_bsr_free(&b);
    free(Wq), free(s), free(bias), free(X4), free(Xg), free(A), free(B), free(xa), free(xc), free(Y), free(range), free(ya),
        free(yc), free(yb), free(yd);
}

static void test_range(void) {
    range_case(96, 192, 197, 1.0);
    range_case(100, 256, 37, 0.5); /* partial row group, a partial last vector */
    lpv__bsr_tuning saved = lpv__bsr_tune;
    lpv__bsr_tune.l2_bytes = 8 << 10, lpv__bsr_tune.kept_cols = 64, lpv__bsr_tune.l1_w_bytes = 0;
    range_case(64, 768, 200, 0.6); /* K chunks: only the last one applies GELU and records */
    lpv__bsr_tune = saved;
}

/* The VNNI tile comes in two prefetch instantiations (lpv__bsr_tuning.avx512_pf): the cases above ran this CPU
 * profile's, here the other's, bit for bit against the reference too. */
static void exact_cases(void) {
    test_exact();
    test_epilogue();
}

static void test_vnni_prefetch(void) {
    if (!(lpv_isa_best() >= LPV_ISA_AVX512 && lpv_cpu()->avx512_vnni)) return; /* main said it is skipped */
    int ran = test_other_prefetch(isas, &n_isas, LPV_ISA_AVX512, exact_cases);
    printf("avx512 vnni: the %s-prefetch tiles too equal the reference (this cpu's profile: %s)\n",
           test_prefetch_name(ran), test_prefetch_name(lpv__bsr_tune.avx512_pf));
}

int main(void) {
    isas[n_isas++] = LPV_ISA_REF;
    if (lpv_isa_best() >= LPV_ISA_AVX2) isas[n_isas++] = LPV_ISA_AVX2;
    else printf("skipped: the avx2 int8 kernel (this cpu has no avx2)\n");
    if (lpv_isa_supported(LPV_ISA_AVXVNNI)) isas[n_isas++] = LPV_ISA_AVXVNNI;
    else printf("skipped: the avx-vnni int8 kernel (this cpu has no avx_vnni)\n");
    if (lpv_isa_best() >= LPV_ISA_AVX512 && lpv_cpu()->avx512_vnni) isas[n_isas++] = LPV_ISA_AVX512;
    else printf("skipped: the avx512 vnni int8 kernel (this cpu has no avx512_vnni)\n");
    for (int i = 0; i < n_isas; i++) printf("int8 kernel: %s\n", lpv_q8_kernel_name(lpv_q8_kernel_for(isas[i])));
    test_exact();
    test_epilogue();
    test_quantizer();
    test_weights();
    test_fake_quant();
    test_range();
    test_vnni_prefetch();
    return test_finish("test_q8");
}
