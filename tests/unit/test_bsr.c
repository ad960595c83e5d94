/*
 * test_bsr.c — BSR format and kernels: every kernel (ref, AVX2, AVX-512; an
 * ISA the CPU lacks is skipped) on 1 and 2 threads equals a double-precision
 * dense product with the masked weight, for all 16 block shapes (partial row
 * and column blocks), T in {1, 7, 197, 200, 394}, densities 0, 1 and between,
 * every epilogue, forced K-chunking/panels, ld < round16(T) tails and NaN in
 * the padding columns; the builders reject every malformed array with a
 * message; vectorized erf/GELU agree with double erf/erfc.
 *
 * Error measure, per output element: |got - want| / (S + |want|), where S is
 * the magnitude of the terms summed (Σ|w·x| + |bias| + |Y before|) — the
 * scale float rounding is proportional to — required <= 1e-5; plus the
 * normwise ||got - want|| / ||want|| <= 1e-5.
 */
#include <stdint.h>

#include "engine/kernels/bsr_internal.h"
#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/linear.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_kernels.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static float rng_f(void) { return (float)(2.0 * rng_unif() - 1.0); }

static lpv_isa isas[3];
static int n_isas;

static double gelu_d(double v) { return 0.5 * v * erfc(-v * 0.70710678118654752440); }

typedef struct {
    int rows, cols, R, C, T, epi;
    double density;
    int ldx, ldy; /* 0: round16(T) */
    int nan_pad;  /* fill X padding columns with NaN */
} kcase;

static double worst_bf16;
static int have_bf16; /* the CPU runs the avx512bf16 kernel */

static double bf16r(float x) { return lpv_bf16_to_f32(lpv_bf16_from_f32(x)); }

/* The BF16 product of the same case against its double reference on BF16-rounded operands, for the
   reference and (when the CPU has it) the avx512bf16 kernel, 1 and 2 threads; the worst element error
   relative to Σ|w x| (+ |bias|, |y0|). */
static double run_bf16(const kcase *kc, lpv_bsr *b, const float *Wm, const float *bias, const float *X, const float *Y0,
                       float *Y, int ldx, int ldy, int yrows) {
    int rows = kc->rows, cols = kc->cols, T = kc->T, np = (cols + 1) / 2;
    lpv_err err;
    CHECK_OK(lpv_bsr_pack_bf16(b, NULL, &err), &err);
    uint32_t *X2 = malloc(sizeof(uint32_t) * (size_t)np * ldx);
    lpv_bf16_pack_x(X2, X, ldx, cols, T);
    int acc = (kc->epi & LPV_EPI_ACC) != 0, hasb = (kc->epi & LPV_EPI_BIAS) != 0, gelu = (kc->epi & LPV_EPI_GELU) != 0;
    double *want = malloc(sizeof(double) * rows * T), *scale = malloc(sizeof(double) * rows * T);
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            double s = 0, sa = 0;
            for (int c = 0; c < cols; c++) {
                double pr = bf16r(Wm[r * cols + c]) * bf16r(X[(int64_t)c * ldx + t]);
                s += pr, sa += fabs(pr);
            }
            if (hasb) s += bias[r], sa += fabs(bias[r]);
            if (gelu) s = gelu_d(s);
            if (acc) s += Y0[(int64_t)r * ldy + t], sa += fabs(Y0[(int64_t)r * ldy + t]);
            want[r * T + t] = s, scale[r * T + t] = sa;
        }
    double worst = 0;
    lpv_isa list[2] = {LPV_ISA_REF, LPV_ISA_AVX512BF16};
    for (int ii = 0; ii < 1 + have_bf16; ii++)
        for (int nt = 1; nt <= 2; nt++) {
            memcpy(Y, Y0, sizeof(float) * yrows * ldy);
            lpv_bsr_matmul_bf16_isa(b, bias, X2, ldx, Y, ldy, T, kc->epi, list[ii], nt);
            double emax = 0;
            int bad_guard = 0, T16 = lpv_round16(T);
            for (int r = 0; r < yrows; r++)
                for (int t = 0; t < ldy; t++) {
                    float got = Y[(int64_t)r * ldy + t];
                    if (r < rows && t < T) {
                        double s = want[r * T + t];
                        double rel = fabs((double)got - s) / (scale[r * T + t] + fabs(s) + 1e-30);
                        if (!(rel <= emax)) emax = rel;
                    } else if (r >= rows || t >= (T16 <= ldx && T16 <= ldy ? T16 : T)) {
                        bad_guard += got != Y0[(int64_t)r * ldy + t];
                    }
                }
            CHECKF(emax <= 1e-5 && bad_guard == 0, "bf16 %s nt=%d: %dx%d block %dx%d T=%d d=%.2f epi=%d: elem err %.3g, "
                   "%d writes outside the output", lpv_isa_name(list[ii]), nt, rows, cols, kc->R, kc->C, T, kc->density,
                   kc->epi, emax, bad_guard);
            if (!(emax <= worst)) worst = emax;
        }
    free(X2), free(want), free(scale);
    return worst;
}

/* Rounding to BF16: nearest, ties to even, NaN stays NaN; the vector packing equals the scalar one bit
   for bit, odd K gets a zero high half, padding columns are packed when the stride has them. */
static void test_bf16_pack(void) {
    struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* a tie goes to even */
        {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80},
        {0xbf818000u, 0xbf82}, {0x7f7fffffu, 0x7f80}, /* the largest float rounds to Inf, as RNE says */
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, {0x00000001u, 0x0000}, {0x00008000u, 0x0000},
        {0x00018000u, 0x0002}, {0x7f800001u, 0x7fc0}, {0xffffffffu, 0xffff}, {0x7fc00000u, 0x7fc0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float x;
        memcpy(&x, &cases[i].in, 4);
        uint16_t h = lpv_bf16_from_f32(x);
        CHECKF(h == cases[i].out, "bf16(0x%08x) = 0x%04x, expected 0x%04x", cases[i].in, h, cases[i].out);
    }
    const int K = 13, T = 21, ld = 32, np = (K + 1) / 2;
    float *X = malloc(sizeof(float) * K * ld);
    for (int i = 0; i < K * ld; i++) {
        uint32_t bits = (uint32_t)rng_u64();
        if (i % 7 == 0) bits = (bits & 0xffff0000u) | 0x8000u; /* ties */
        if (i % 53 == 0) bits = 0x7f800001u;                   /* a signalling NaN */
        memcpy(&X[i], &bits, 4);
    }
    uint32_t *a = malloc(sizeof(uint32_t) * np * ld), *b = malloc(sizeof(uint32_t) * np * ld);
    memset(a, 0xee, sizeof(uint32_t) * np * ld), memset(b, 0xee, sizeof(uint32_t) * np * ld);
    lpv_isa keep = lpv_isa_get();
    lpv_isa_set(LPV_ISA_REF, NULL);
    lpv_bf16_pack_x(a, X, ld, K, T);
    lpv_isa_set(keep, NULL);
    lpv_bf16_pack_x(b, X, ld, K, T);
    int scalar_ok = 1;
    for (int p = 0; p < np; p++)
        for (int t = 0; t < ld; t++) {
            uint32_t want = t < lpv_round16(T)
                                ? (uint32_t)lpv_bf16_from_f32(X[2 * p * ld + t]) |
                                      (2 * p + 1 < K ? (uint32_t)lpv_bf16_from_f32(X[(2 * p + 1) * ld + t]) << 16 : 0u)
                                : 0xeeeeeeeeu; /* beyond round16(T): untouched */
            scalar_ok &= a[p * ld + t] == want;
        }
    CHECK(scalar_ok);
    CHECKF(memcmp(a, b, sizeof(uint32_t) * np * ld) == 0, "the %s packing differs from the scalar one",
           lpv_isa_name(keep));
    free(X), free(a), free(b);
}

/* Runs one case on every ISA and thread count; returns the worst element error. */
static double run_case(const kcase *kc) {
    int rows = kc->rows, cols = kc->cols, T = kc->T, R = kc->R, C = kc->C;
    int ldx = kc->ldx ? kc->ldx : lpv_round16(T), ldy = kc->ldy ? kc->ldy : lpv_round16(T) + 16;
    int nbr = (rows + R - 1) / R, nbc = (cols + C - 1) / C;
    float *W = malloc(sizeof(float) * rows * cols);
    uint8_t *mask = malloc((size_t)nbr * nbc);
    float *bias = malloc(sizeof(float) * rows);
    float *X = malloc(sizeof(float) * cols * ldx);
    int yrows = rows + 2; /* 2 guard rows */
    float *Y0 = malloc(sizeof(float) * yrows * ldy), *Y = malloc(sizeof(float) * yrows * ldy);
    double *want = malloc(sizeof(double) * rows * T), *scale = malloc(sizeof(double) * rows * T);
    float *Wm = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++) W[i] = rng_f();
    for (int i = 0; i < nbr * nbc; i++)
        mask[i] = kc->density >= 1 ? 1 : kc->density <= 0 ? 0 : rng_unif() < kc->density;
    for (int i = 0; i < rows; i++) bias[i] = rng_f();
    for (int k = 0; k < cols; k++)
        for (int t = 0; t < ldx; t++) X[(int64_t)k * ldx + t] = t < T ? rng_f() : (kc->nan_pad ? NAN : rng_f());
    for (int i = 0; i < yrows * ldy; i++) Y0[i] = (i / ldy < rows && i % ldy < T) ? rng_f() : 12345.0f;

    lpv_bsr b;
    lpv_err err;
    CHECK_OK(lpv_bsr_from_dense(&b, W, rows, cols, R, C, mask, NULL, "case", &err), &err);
    lpv_bsr_to_dense(&b, Wm);
    /* the masked dense weight, by hand */
    int mism = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) mism += Wm[r * cols + c] != (mask[(r / R) * nbc + c / C] ? W[r * cols + c] : 0.0f);
    CHECKF(mism == 0, "to_dense differs from the masked weight in %d entries", mism);

    int acc = (kc->epi & LPV_EPI_ACC) != 0, hasb = (kc->epi & LPV_EPI_BIAS) != 0, gelu = (kc->epi & LPV_EPI_GELU) != 0;
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            double s = 0, sa = 0;
            for (int c = 0; c < cols; c++) {
                double p = (double)Wm[r * cols + c] * X[(int64_t)c * ldx + t];
                s += p;
                sa += fabs(p);
            }
            if (hasb) {
                s += bias[r];
                sa += fabs(bias[r]);
            }
            if (gelu) s = gelu_d(s);
            if (acc) {
                s += Y0[(int64_t)r * ldy + t];
                sa += fabs(Y0[(int64_t)r * ldy + t]);
            }
            want[r * T + t] = s;
            scale[r * T + t] = sa;
        }

    double worst = 0;
    int T16 = lpv_round16(T);
    for (int ii = 0; ii < n_isas; ii++)
        for (int nt = 1; nt <= 2; nt++) {
            memcpy(Y, Y0, sizeof(float) * yrows * ldy);
            lpv_bsr_matmul_isa(&b, bias, X, ldx, Y, ldy, T, kc->epi, isas[ii], nt);
            double emax = 0, num = 0, den = 0;
            int bad_guard = 0;
            for (int r = 0; r < yrows; r++)
                for (int t = 0; t < ldy; t++) {
                    float got = Y[(int64_t)r * ldy + t];
                    if (r < rows && t < T) {
                        double w = want[r * T + t], e = fabs((double)got - w);
                        double rel = e / (scale[r * T + t] + fabs(w) + 1e-30);
                        if (!(rel <= emax)) emax = rel; /* NaN sticks */
                        num += e * e;
                        den += w * w;
                    } else if (r >= rows || t >= (T16 <= ldx && T16 <= ldy ? T16 : T)) {
                        bad_guard += got != Y0[(int64_t)r * ldy + t];
                    }
                }
            double normwise = den > 0 ? sqrt(num / den) : sqrt(num);
            CHECKF(emax <= 1e-5 && normwise <= 1e-5 && bad_guard == 0,
                   "%s nt=%d: %dx%d block %dx%d T=%d ld=%d/%d d=%.2f epi=%d: elem err %.3g, normwise %.3g, "
                   "%d writes outside the output",
                   lpv_isa_name(isas[ii]), nt, rows, cols, R, C, T, ldx, ldy, kc->density, kc->epi, emax, normwise,
                   bad_guard);
            if (!(emax <= worst)) worst = emax;
        }
    double wb = run_bf16(kc, &b, Wm, bias, X, Y0, Y, ldx, ldy, yrows);
    if (!(wb <= worst_bf16)) worst_bf16 = wb;
    lpv_bsr_free(&b);
    free(W);
    free(mask);
    free(bias);
    free(X);
    free(Y0);
    free(Y);
    free(want);
    free(scale);
    free(Wm);
    return worst;
}

static const int EPIS[] = {LPV_EPI_NONE,
                           LPV_EPI_BIAS,
                           LPV_EPI_BIAS | LPV_EPI_GELU,
                           LPV_EPI_BIAS | LPV_EPI_ACC,
                           LPV_EPI_ACC,
                           LPV_EPI_GELU};
#define NEPI (int)(sizeof EPIS / sizeof *EPIS)

static void test_kernels(void) {
    static const int dims[4] = {8, 16, 32, 64};
    static const int Ts[5] = {1, 7, 197, 394, 200};
    static const double dens[4] = {0.0, 1.0, 0.35, 0.7};
    double worst = 0;
    int idx = 0;
    for (int ri = 0; ri < 4; ri++)
        for (int ci = 0; ci < 4; ci++)
            for (int ti = 0; ti < 5; ti++, idx++) {
                kcase kc = {0};
                kc.R = dims[ri];
                kc.C = dims[ci];
                kc.T = Ts[ti];
                /* partial row and column blocks, rows not a multiple of 8 */
                kc.rows = kc.R * (1 + idx % 3) + 13;
                kc.cols = kc.C * (1 + (idx / 3) % 3) + 7;
                kc.density = dens[idx % 4];
                kc.epi = EPIS[idx % NEPI];
                kc.nan_pad = idx % 2;
                double e = run_case(&kc);
                if (e > worst) worst = e;
            }
    /* every epilogue on the two DeiT block shapes, exact multiples */
    for (int e = 0; e < NEPI; e++) {
        kcase kc = {.rows = 192, .cols = 384, .R = 32, .C = 32, .T = 197, .epi = EPIS[e], .density = 0.5};
        double w = run_case(&kc);
        if (w > worst) worst = w;
        kc.R = kc.C = 16;
        kc.T = 200;
        kc.density = 0.3;
        w = run_case(&kc);
        if (w > worst) worst = w;
    }
    /* the classifier head: 1000 rows (partial last block row at R = 32, 64), one token */
    for (int R = 32; R <= 64; R *= 2) {
        kcase kc = {.rows = 1000, .cols = 384, .R = R, .C = 32, .T = 1, .epi = LPV_EPI_BIAS, .density = 0.5};
        run_case(&kc);
        kc.T = 7;
        run_case(&kc);
    }
    /* ld not a multiple of 16 and smaller than round16(T): masked tails */
    {
        kcase kc = {.rows = 72, .cols = 100, .R = 16, .C = 32, .T = 197, .ldx = 197, .ldy = 201,
                    .epi = LPV_EPI_BIAS | LPV_EPI_GELU, .density = 0.6};
        run_case(&kc);
        kc.T = kc.ldx = kc.ldy = 7;
        kc.epi = LPV_EPI_BIAS | LPV_EPI_ACC;
        run_case(&kc);
        kc.T = kc.ldx = 35;
        kc.ldy = 48;
        run_case(&kc);
    }
    printf("kernels: worst element error %.3g (fp32), %.3g (bf16 against its own reference)\n", worst, worst_bf16);
}

static void chunking_cases(void);

/* Tiny panel/chunk budgets force the K-chunked path (first / middle / last
 * chunk, rows with empty chunks) and several token panels per thread; for the
 * x_in_l1 walk (AVX2) also one- and two-vector panels, one-granule chunks and
 * row blocks of one and of three groups. */
static void test_chunking(void) {
    lpv__bsr_tuning saved = lpv__bsr_tune;
    for (int v = 0; v < 3; v++) {
        lpv__bsr_tune.l2_bytes = 16 << 10;
        lpv__bsr_tune.kept_cols = 64;
        lpv__bsr_tune.l1_w_bytes = 0;
        lpv__bsr_tune.l1_x_bytes = v == 0 ? 1 : 2 * 64 * 2 * LPV_BSR_KGRAN;
        lpv__bsr_tune.l2_w_bytes = v == 1 ? 1 : 3 * 8 * 4 * LPV_BSR_KGRAN;
        lpv__bsr_tune.l1_panel_vec = v + 1;
        chunking_cases();
    }
    lpv__bsr_tune = saved;
}

/* Each CPU's blocking profile plans DeiT-sized products its own way (panels, K chunks, groups streaming X over
 * all tokens): every kernel still equals the reference under each. Shapes just past each profile's budgets:
 * K = 768 at d = 0.5 (panels; zen streams), d = 0.1 (intel streams too), K = 3072 (K chunks). */
static void test_profiles(void) {
    lpv__bsr_tuning saved = lpv__bsr_tune;
    for (int b = 0; b < LPV_BLOCKING_COUNT; b++) {
        lpv__bsr_tune = *lpv__bsr_tuning_of((lpv_blocking)b);
        kcase kc = {.rows = 64, .cols = 768, .R = 32, .C = 32, .T = 1576, .epi = LPV_EPI_BIAS | LPV_EPI_GELU,
                    .density = 0.5};
        run_case(&kc);
        kc.density = 0.1;
        run_case(&kc);
        kc = (kcase){.rows = 16, .cols = 3072, .R = 16, .C = 16, .T = 400, .epi = LPV_EPI_BIAS | LPV_EPI_ACC,
                     .density = 0.5};
        run_case(&kc);
    }
    lpv__bsr_tune = saved;
    /* the profile this process chose is one of the tables */
    CHECK(memcmp(&saved, lpv__bsr_tuning_of(lpv_blocking_get()), sizeof saved) == 0);
    printf("blocking profiles: %s runs here; zen and intel plans both equal the reference\n",
           lpv_blocking_name(lpv_blocking_get()));
}

static void chunking_cases(void) {
    for (int e = 0; e < NEPI; e++) {
        kcase kc = {.rows = 100, .cols = 900, .R = 32, .C = 64, .T = 200, .epi = EPIS[e], .density = 0.25};
        run_case(&kc);
        kc.R = 8;
        kc.C = 16;
        kc.T = 394;
        kc.density = 1.0;
        kc.nan_pad = 1;
        run_case(&kc);
        kc.T = 197;
        kc.ldx = 197;
        kc.ldy = 199;
        kc.density = 0.5;
        run_case(&kc);
    }
}

/* ---- builders ---- */

static void expect_bad(lpv_status st, const lpv_err *err, const char *needle, const char *what) {
    CHECKF(st != LPV_OK, "%s: accepted", what);
    CHECKF(strstr(err->msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err->msg, needle);
    CHECKF(strstr(err->msg, "'blocks.1.fc1.weight'") != NULL, "%s: message '%s' lacks the tensor name", what, err->msg);
    CHECKF(strchr(err->msg, '\n') == NULL, "%s: multi-line message", what);
}

static void test_builders(void) {
    /* 20 x 40 with 8x16 blocks: nbr = 3, nbc = 3 (partial in both directions) */
    enum { ROWS = 20, COLS = 40, R = 8, C = 16, NBR = 3, NBC = 3 };
    float W[ROWS * COLS], back[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) W[i] = (float)(i + 1);
    uint8_t mask[NBR * NBC] = {1, 0, 1, 0, 0, 0, 1, 1, 1}, mback[NBR * NBC];
    lpv_bsr b, b2;
    lpv_err err = {0};
    const char *name = "blocks.1.fc1.weight";
    CHECK_OK(lpv_bsr_from_dense(&b, W, ROWS, COLS, R, C, mask, NULL, name, &err), &err);
    CHECK(b.nbr == NBR && b.nbc == NBC && b.nnzb == 5);
    CHECK(b.row_ptr[0] == 0 && b.row_ptr[1] == 2 && b.row_ptr[2] == 2 && b.row_ptr[3] == 5);
    CHECK(b.col_idx[0] == 0 && b.col_idx[1] == 2 && b.col_idx[2] == 0 && b.col_idx[4] == 2);
    CHECK(fabs(lpv_bsr_density(&b) - 5.0 / 9.0) < 1e-12);
    /* partial block (row 2, col 2): zero-padded beyond the edge */
    const float *last = b.values + 4 * R * C;
    CHECK(last[0] == W[16 * COLS + 32] && last[7] == W[16 * COLS + 39] && last[8] == 0.0f && last[4 * C] == 0.0f);
    lpv_bsr_mask(&b, mback);
    CHECK(memcmp(mask, mback, sizeof mask) == 0);
    lpv_bsr_to_dense(&b, back);
    int bad = 0;
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) bad += back[r * COLS + c] != (mask[(r / R) * NBC + c / C] ? W[r * COLS + c] : 0.0f);
    CHECK(bad == 0);

    /* round trip through the file arrays into a caller-owned arena; junk in
     * the padding of a partial block is dropped */
    int64_t nv = b.nnzb * R * C;
    float *vals = malloc(sizeof(float) * nv);
    memcpy(vals, b.values, sizeof(float) * nv);
    vals[4 * R * C + 8] = 99.0f;
    int32_t rp[NBR + 1], ci[5];
    memcpy(rp, b.row_ptr, sizeof rp);
    memcpy(ci, b.col_idx, sizeof ci);
    lpv_arena arena;
    lpv_arena_init(&arena, 1 << 16);
    CHECK_OK(lpv_bsr_from_arrays(&b2, ROWS, COLS, R, C, vals, nv, ci, 5, rp, NBR + 1, &arena, name, &err), &err);
    CHECK(!b2.owns_arena);
    float back2[ROWS * COLS];
    lpv_bsr_to_dense(&b2, back2);
    CHECK(memcmp(back, back2, sizeof back) == 0);
    CHECK(b2.values[4 * R * C + 8] == 0.0f);
    lpv_bsr_free(&b2);
    lpv_arena_free(&arena);

    /* empty matrix (density 0) from arrays */
    int32_t rp0[NBR + 1] = {0, 0, 0, 0};
    CHECK_OK(lpv_bsr_from_arrays(&b2, ROWS, COLS, R, C, NULL, 0, NULL, 0, rp0, NBR + 1, NULL, name, &err), &err);
    CHECK(b2.nnzb == 0);
    lpv_bsr_free(&b2);

    /* every validation failure: an error with a message, never a crash */
#define FROM(rp_, nrp_, ci_, nci_, nv_) lpv_bsr_from_arrays(&b2, ROWS, COLS, R, C, vals, nv_, ci_, nci_, rp_, nrp_, NULL, name, &err)
    int32_t r1[] = {1, 2, 2, 5};
    expect_bad(FROM(r1, 4, ci, 5, nv), &err, "row_ptr[0] is 1", "row_ptr[0] != 0");
    int32_t r2[] = {0, 3, 2, 5};
    expect_bad(FROM(r2, 4, ci, 5, nv), &err, "row_ptr decreases at block row 1", "non-monotone row_ptr");
    int32_t r3[] = {0, 2, 2, 4};
    expect_bad(FROM(r3, 4, ci, 5, nv), &err, "row_ptr[3] is 4, expected nnzb = 5", "row_ptr end != nnzb");
    expect_bad(FROM(rp, 3, ci, 5, nv), &err, "row_ptr has 3 entries, expected nbr + 1 = 4", "row_ptr count");
    int32_t r4[] = {0, 4, 4, 5};
    expect_bad(FROM(r4, 4, ci, 5, nv), &err, "block row 0 has 4 blocks, expected at most nbc = 3", "row too long");
    int32_t c1[] = {0, 3, 0, 1, 2};
    expect_bad(FROM(rp, 4, c1, 5, nv), &err, "col_idx[1] (block row 0) is 3, expected in [0, 3)", "column too big");
    int32_t c2[] = {0, 2, -1, 1, 2};
    expect_bad(FROM(rp, 4, c2, 5, nv), &err, "col_idx[2] (block row 2) is -1", "negative column");
    int32_t c3[] = {2, 0, 0, 1, 2};
    expect_bad(FROM(rp, 4, c3, 5, nv), &err, "not strictly increasing in block row 0", "unsorted columns");
    int32_t c4[] = {0, 2, 0, 0, 2};
    expect_bad(FROM(rp, 4, c4, 5, nv), &err, "not strictly increasing in block row 2: 0 after 0", "duplicate column");
    expect_bad(FROM(rp, 4, ci, 5, nv - 1), &err, "values has 639 floats, expected nnzb x R x C", "values count");
    expect_bad(FROM(rp, 4, ci, 10, nv), &err, "expected at most nbr x nbc = 9", "col count too big");
    expect_bad(FROM(rp, 4, ci, 4, nv), &err, "row_ptr[3] is 5, expected nnzb = 4", "col count too small");
    expect_bad(lpv_bsr_from_arrays(&b2, ROWS, COLS, 12, C, vals, nv, ci, 5, rp, 4, NULL, name, &err), &err,
               "block 12x16 not supported", "block shape");
    expect_bad(lpv_bsr_from_arrays(&b2, 0, COLS, R, C, vals, nv, ci, 5, rp, 4, NULL, name, &err), &err,
               "dense shape [0, 40]", "empty shape");
    expect_bad(lpv_bsr_from_dense(&b2, W, ROWS, COLS, 8, 128, NULL, NULL, name, &err), &err, "block 8x128", "dense block");
    expect_bad(FROM(rp, 4, NULL, 5, nv), &err, "missing array", "NULL col_idx");
#undef FROM
    free(vals);
    lpv_bsr_free(&b);
}

/* ---- vmath ---- */

static void test_vmath(void) {
    enum { N = 400001 };
    float *x = malloc(sizeof(float) * (N + 64)), *y = malloc(sizeof(float) * (N + 64));
    for (int i = 0; i < N; i++) x[i] = -10.0f + 20.0f * (float)i / (float)(N - 1);
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 1e-45f, 1e30f, -1e30f,
                                    0.999999f, 1.0f, 1.000001f, -1.0f, 12.0f, -12.0f, 13.0f, 20.0f, -20.0f, -25.0f};
    int ns = (int)(sizeof special / sizeof *special);
    for (int ii = 0; ii < n_isas; ii++) {
        lpv_isa isa = isas[ii];
        lpv_verf_isa(y, x, N, isa);
        double emax = 0;
        for (int i = 0; i < N; i++) {
            double e = fabs(y[i] - erf((double)x[i]));
            if (!(e <= emax)) emax = e;
        }
        CHECKF(emax <= 1e-7, "%s erf: max abs error %.3g on [-10, 10]", lpv_isa_name(isa), emax);
        float sy[32];
        lpv_verf_isa(sy, special, ns, isa);
        for (int i = 0; i < ns; i++) {
            float s = special[i];
            if (isnan(s)) CHECKF(isnan(sy[i]), "%s erf(nan) = %g", lpv_isa_name(isa), sy[i]);
            else if (s == 0) CHECKF(sy[i] == 0 && signbit(sy[i]) == signbit(s), "%s erf(%g) = %g", lpv_isa_name(isa), s, sy[i]);
            else CHECKF(fabs(sy[i] - erf((double)s)) <= 1e-7, "%s erf(%g) = %.9g", lpv_isa_name(isa), s, sy[i]);
        }
        /* GELU: relative error where the value is representable, absolute below */
        memcpy(y, x, sizeof(float) * N);
        lpv_vgelu_isa(y, N, isa);
        double rmax = 0, amax = 0;
        for (int i = 0; i < N; i++) {
            double g = gelu_d(x[i]), e = fabs(y[i] - g);
            if (fabs(g) > 1e-30) {
                if (!(e / fabs(g) <= rmax)) rmax = e / fabs(g);
            }
            if (!(e <= amax)) amax = e;
        }
        CHECKF(rmax <= 1e-6 && amax <= 1e-6, "%s gelu: max rel error %.3g, abs %.3g", lpv_isa_name(isa), rmax, amax);
        /* the same values scattered, so vectors mix |x| < 6 (AVX-512: exp-free pieces) with the tails */
        for (int i = 0; i < N; i++) y[i] = x[(int)(((int64_t)i * 7919) % N)];
        lpv_vgelu_isa(y, N, isa);
        rmax = 0;
        for (int i = 0; i < N; i++) {
            double g = gelu_d(x[(int)(((int64_t)i * 7919) % N)]), e = fabs(y[i] - g);
            if (!(e <= 1e-6 * fabs(g) + 1e-37)) rmax = e > rmax || isnan(e) ? e : rmax;
        }
        CHECKF(rmax == 0, "%s gelu scattered: error %.3g beyond 1e-6 relative", lpv_isa_name(isa), rmax);
        /* the far tails of the vector GELUs: x itself past 12.5, a signed zero below -12.5 (|gelu| < 3.2e-35
         * there), within 1e-6 relative or 1e-34 absolute of the exact value from 8 on, and never a subnormal
         * result (each one costs an Intel core a microcode assist: before the clamp, x in [-14.4, -13.2] gave
         * subnormals) */
        if (isa != LPV_ISA_REF) {
            enum { NT = 2001 };
            float tx[2 * NT], ty[2 * NT];
            for (int i = 0; i < NT; i++) tx[2 * i] = 8.0f + 22.0f * (float)i / (NT - 1), tx[2 * i + 1] = -tx[2 * i];
            memcpy(ty, tx, sizeof tx);
            lpv_vgelu_isa(ty, 2 * NT, isa);
            int bad = 0;
            for (int i = 0; i < 2 * NT; i++) {
                double g = gelu_d(tx[i]);
                int ok = fpclassify(ty[i]) != FP_SUBNORMAL && fabs(ty[i] - g) <= 1e-6 * fabs(g) + 1e-34;
                if (fabsf(tx[i]) > 12.5f) ok &= tx[i] > 0 ? ty[i] == tx[i] : ty[i] == 0 && signbit(ty[i]);
                if (!ok && bad++ < 3) printf("  %s gelu(%.9g) = %.9g, want %.9g\n", lpv_isa_name(isa), tx[i], ty[i], g);
            }
            CHECKF(bad == 0, "%s gelu tails: %d values wrong or subnormal in [-30, -8] and [8, 30]", lpv_isa_name(isa), bad);
        }
        memcpy(sy, special, sizeof(float) * ns);
        lpv_vgelu_isa(sy, ns, isa);
        for (int i = 0; i < ns; i++) {
            float s = special[i];
            if (isnan(s)) CHECKF(isnan(sy[i]), "%s gelu(nan) = %g", lpv_isa_name(isa), sy[i]);
            else if (s == INFINITY) CHECK(sy[i] == INFINITY);
            else if (s == -INFINITY) CHECKF(sy[i] == 0, "%s gelu(-inf) = %g", lpv_isa_name(isa), sy[i]);
            else {
                double g = gelu_d(s);
                CHECKF(fabs(sy[i] - g) <= 1e-6 * fabs(g) + 1e-37, "%s gelu(%g) = %.9g, want %.9g", lpv_isa_name(isa), s,
                       sy[i], g);
            }
        }
        /* tails: every length 0..40 at an odd offset matches the scalar version and leaves neighbours alone */
        for (int n = 0; n <= 40; n++) {
            float buf[48], ref[48];
            for (int i = 0; i < 48; i++) buf[i] = ref[i] = rng_f() * 6.0f;
            lpv_vgelu_isa(buf + 3, n, isa);
            lpv_vgelu_isa(ref + 3, n, LPV_ISA_REF);
            int bad = 0;
            for (int i = 0; i < 48; i++) {
                double tol = (i >= 3 && i < 3 + n) ? 1e-6 * fabs(ref[i]) + 1e-12 : 0;
                bad += !(fabs(buf[i] - ref[i]) <= tol);
            }
            CHECKF(bad == 0, "%s vgelu n=%d: %d mismatches", lpv_isa_name(isa), n, bad);
        }
    }
    free(x);
    free(y);
}

/* The AVX2 FP32 kernel has two register tiles, 2 x 6 (the zen profile) and 4 x 3 (intel): the cases above ran
 * the one this CPU's profile picks, here every kernel and chunking case runs on the other. */
static void test_avx2_tiles(void) {
    if (lpv_isa_best() < LPV_ISA_AVX2) return;
    lpv__bsr_tuning saved = lpv__bsr_tune;
    lpv_isa keep[3];
    int keep_n = n_isas;
    memcpy(keep, isas, sizeof keep);
    int keep_bf16 = have_bf16;
    isas[0] = LPV_ISA_AVX2, n_isas = 1, have_bf16 = 0; /* the BF16 kernel ran above */
    lpv__bsr_tune.avx2_rows = saved.avx2_rows == 4 ? 2 : 4;
    test_kernels();
    test_chunking();
    printf("avx2 tiles: the %d-row tile too equals the reference (this cpu's profile runs %d rows)\n",
           lpv__bsr_tune.avx2_rows, saved.avx2_rows);
    lpv__bsr_tune = saved;
    memcpy(isas, keep, sizeof keep), n_isas = keep_n, have_bf16 = keep_bf16;
}

/* The AVX-512 FP32 and BF16 tiles come in two prefetch instantiations (lpv__bsr_tuning.avx512_pf: the next tile's
 * X on zen and intel, the next group's weights on zen5): the cases above ran this CPU's, here the other. */
static void kernel_cases(void) {
    test_kernels();
    test_chunking();
}

static void test_avx512_prefetch(void) {
    if (lpv_isa_best() < LPV_ISA_AVX512) {
        printf("SKIP avx512 prefetch variants: not supported by this cpu\n");
        return;
    }
    int ran = test_other_prefetch(isas, &n_isas, LPV_ISA_AVX512, kernel_cases);
    printf("avx512 tiles: the %s-prefetch instantiation too equals the reference%s (this cpu's profile: %s)\n",
           test_prefetch_name(ran), have_bf16 ? ", fp32 and bf16" : "", test_prefetch_name(lpv__bsr_tune.avx512_pf));
}

int main(void) {
    isas[n_isas++] = LPV_ISA_REF;
    if (lpv_isa_best() >= LPV_ISA_AVX2) isas[n_isas++] = LPV_ISA_AVX2;
    else printf("SKIP avx2: not supported by this cpu\n");
    if (lpv_isa_best() >= LPV_ISA_AVX512) isas[n_isas++] = LPV_ISA_AVX512;
    else printf("SKIP avx512: not supported by this cpu\n");
    have_bf16 = lpv_isa_best() >= LPV_ISA_AVX512BF16;
    if (!have_bf16) printf("SKIP avx512bf16 kernel: not supported by this cpu (the bf16 reference still runs)\n");
    test_bf16_pack();
    test_vmath();
    test_builders();
    test_kernels();
    test_chunking();
    test_profiles();
    test_avx2_tiles();
    test_avx512_prefetch();
    return test_finish("test_bsr");
}
