/*
 * test_ops.c — every optimized op equals its plain reference (LayerNorm over
 * features, row softmax, attention, patchify) for each ISA the CPU has, on
 * odd sizes, with 1 and 2 threads.
 */
#include "lpvit/cpu.h"
#include "lpvit/ops.h"
#include "lpvit/rng.h"
#include "test.h"

static void fill(float *x, int64_t n, lpv_rng *r, float scale, float offset) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(r) * scale + offset;
}

static void test_layernorm(lpv_rng *r) {
    int Ds[] = {1, 7, 192, 768}, Ts[] = {1, 15, 16, 63, 64, 65, 197, 394};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 8; b++) {
            int D = Ds[a], T = Ts[b], ld = (T + 15) & ~15;
            float *x = malloc(sizeof(float) * (size_t)D * ld), *y = malloc(sizeof(float) * (size_t)D * ld);
            float *ref = malloc(sizeof(float) * (size_t)D * ld), *w = malloc(sizeof(float) * D), *bb = malloc(sizeof(float) * D);
            fill(x, (int64_t)D * ld, r, 3.0f, 5.0f); /* offset mean: a one-pass variance would lose digits */
            fill(w, D, r, 1, 1);
            fill(bb, D, r, 1, 0);
            lpv_layernorm_fm_ref(ref, x, w, bb, D, T, ld, 1e-6f);
            for (int isa = 0; isa <= (int)lpv_isa_best(); isa++) {
                if (!lpv_isa_supported((lpv_isa)isa)) continue;
                lpv_isa_set((lpv_isa)isa, NULL);
                lpv_layernorm_fm(y, x, w, bb, D, T, ld, 1e-6f);
                double e = 0;
                for (int d = 0; d < D; d++)
                    for (int t = 0; t < T; t++) {
                        double v = fabs(y[(int64_t)d * ld + t] - ref[(int64_t)d * ld + t]);
                        e = v > e ? v : e;
                    }
                CHECKF(e < 2e-5 || D == 1, "layernorm isa %d D %d T %d: max err %g", isa, D, T, e);
                /* in place */
                float *xc = malloc(sizeof(float) * (size_t)D * ld);
                memcpy(xc, x, sizeof(float) * (size_t)D * ld);
                lpv_layernorm_fm(xc, xc, w, bb, D, T, ld, 1e-6f);
                CHECK(memcmp(xc, y, sizeof(float) * (size_t)T) == 0);
                /* with the output's range recorded (the int8 quantizer's input): the same y, and per column
                 * exactly min(0, min y) and max(0, max y); padding columns 0 */
                float *lo = malloc(sizeof(float) * ld), *hi = malloc(sizeof(float) * ld);
                for (int t = 0; t < ld; t++) lo[t] = hi[t] = NAN;
                lpv_layernorm_fm_range(xc, x, w, bb, D, T, ld, 1e-6f, lo, hi);
                CHECK(memcmp(xc, y, sizeof(float) * (size_t)T) == 0);
                int bad = 0;
                for (int t = 0; t < ld; t++) {
                    float mn = 0, z = 0;
                    for (int d = 0; d < D && t < T; d++) {
                        float v = y[(int64_t)d * ld + t];
                        mn = v < mn ? v : mn, z = v > z ? v : z;
                    }
                    bad += lo[t] != mn || hi[t] != z;
                }
                CHECKF(bad == 0, "layernorm range isa %d D %d T %d: %d columns wrong", isa, D, T, bad);
                free(lo), free(hi);
                free(xc);
            }
            lpv_isa_set(lpv_isa_best(), NULL);
            free(x), free(y), free(ref), free(w), free(bb);
        }
}

static void test_softmax(lpv_rng *r) {
    int lens[] = {1, 5, 16, 17, 197, 198, 1000};
    for (size_t a = 0; a < 7; a++) {
        int len = lens[a], n = 9, ld = len + 3;
        float *x = malloc(sizeof(float) * (size_t)n * ld), *y = malloc(sizeof(float) * (size_t)n * ld);
        fill(x, (int64_t)n * ld, r, 6.0f, 0);
        x[2] = -INFINITY; /* masked score */
        x[ld] = 80.0f;     /* large: exp must not overflow */
        memcpy(y, x, sizeof(float) * (size_t)n * ld);
        lpv_softmax_rows_ref(x, n, len, ld);
        for (int isa = 0; isa <= (int)lpv_isa_best(); isa++) {
            if (!lpv_isa_supported((lpv_isa)isa)) continue;
            float *z = malloc(sizeof(float) * (size_t)n * ld);
            memcpy(z, y, sizeof(float) * (size_t)n * ld);
            lpv_isa_set((lpv_isa)isa, NULL);
            lpv_softmax_rows(z, n, len, ld);
            double e = 0, sum_err = 0;
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < len; j++) {
                    double v = fabs(z[(int64_t)i * ld + j] - x[(int64_t)i * ld + j]) / (x[(int64_t)i * ld + j] + 1e-30);
                    if (x[(int64_t)i * ld + j] > 1e-30 && v > e) e = v;
                    s += z[(int64_t)i * ld + j];
                }
                sum_err = fabs(s - 1) > sum_err ? fabs(s - 1) : sum_err;
                CHECK(z[(int64_t)i * ld + len] == y[(int64_t)i * ld + len] || len + 1 > ld); /* padding untouched */
            }
            CHECKF(e < 1e-5 && sum_err < 1e-5, "softmax isa %d len %d: rel err %g, sum err %g", isa, len, e, sum_err);
            free(z);
        }
        lpv_isa_set(lpv_isa_best(), NULL);
        free(x), free(y);
    }
}

/* Fused AVX-512 kernel (hd % 8 == 0) and the OpenBLAS path against the double reference:
   query tiles of 1 and 2 vectors, partial key blocks, T = 1, and a garbage-filled
   output so a missed column shows. */
static void test_attention(lpv_rng *r) {
    struct { int B, T, D, H; } cases[] = {{1, 5, 8, 2},   {3, 17, 24, 3}, {2, 197, 64, 1}, {2, 50, 96, 6},
                                          {2, 197, 128, 2}, {1, 1, 16, 2}, {3, 49, 16, 1},  {2, 33, 64, 4},
                                          {1, 64, 24, 1},   {2, 9, 40, 5}, {2, 30, 12, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c].B, T = cases[c].T, D = cases[c].D, H = cases[c].H, ld = (B * T + 15) & ~15;
        float *qkv = malloc(sizeof(float) * 3 * (size_t)D * ld), *o = malloc(sizeof(float) * (size_t)D * ld);
        float *ref = calloc((size_t)D * ld, sizeof(float));
        fill(qkv, 3 * (int64_t)D * ld, r, 1.5f, 0);
        lpv_attention_fm_ref(ref, qkv, ld, B, T, D, H);
        for (int isa = 0; isa <= (int)lpv_isa_best(); isa++)
            for (int th = 1; th <= 2 && lpv_isa_supported((lpv_isa)isa); th++) {
                lpv_isa_set((lpv_isa)isa, NULL);
                lpv_threads_set(th);
                for (int64_t i = 0; i < (int64_t)D * ld; i++) o[i] = NAN;
                float *scratch = malloc(sizeof(float) * (size_t)lpv_attention_scratch(T, D / H) * th);
                lpv_attention_fm(o, qkv, ld, B, T, D, H, scratch);
                double e = 0;
                for (int d = 0; d < D; d++)
                    for (int t = 0; t < B * T; t++) {
                        double v = fabs(o[(int64_t)d * ld + t] - ref[(int64_t)d * ld + t]);
                        e = v > e || isnan(v) ? v : e;
                    }
                CHECKF(e < 1e-5, "attention isa %d B%d T%d D%d H%d threads %d: max err %g", isa, B, T, D, H, th, e);
                /* padding columns are not written */
                for (int d = 0; d < D && B * T < ld; d++) CHECK(isnan(o[(int64_t)d * ld + B * T]));
                free(scratch);
            }
        lpv_isa_set(lpv_isa_best(), NULL);
        free(qkv), free(o), free(ref);
    }
}

static void test_patchify(void) {
    int B = 2, C = 3, S = 32, p = 16, G = 2, ld = 16;
    float img[2 * 3 * 32 * 32], out[3 * 16 * 16 * 16];
    for (int i = 0; i < B * C * S * S; i++) img[i] = (float)i;
    lpv_patchify(out, ld, img, B, C, S, p);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int ky = 0; ky < p; ky++)
                for (int kx = 0; kx < p; kx++)
                    for (int gy = 0; gy < G; gy++)
                        for (int gx = 0; gx < G; gx++) {
                            float want = img[((b * C + c) * S + gy * p + ky) * S + gx * p + kx];
                            float got = out[((c * p + ky) * p + kx) * ld + b * G * G + gy * G + gx];
                            if (got != want) {
                                CHECKF(0, "patchify b%d c%d ky%d kx%d gy%d gx%d", b, c, ky, kx, gy, gx);
                                return;
                            }
                        }
    CHECK(1);
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 42);
    test_layernorm(&r);
    test_softmax(&r);
    test_attention(&r);
    test_patchify();
    return test_finish("test_ops");
}
