/*
 * test_attn_q8.c — int8 attention (lpv_attention_fm_q8, an option of --precision int8):
 *   - the fused AVX-512 VNNI and AVX-VNNI kernels agree with the plain-loop reference (the same int8 codes and
 *     integer sums; they differ only in exp and the order of FP32 products, so a probability at a rounding
 *     midpoint of 255 e may go the other way) on ViT-Tiny's shape (T 197, hd 64), DeiT's distilled T 198, hd 32,
 *     12 (AVX-VNNI only: hd % 4) and 8, odd T (1, 5, 17, 33), padded ld, 1 and 2 threads;
 *   - int8 attention stays within FP32_TOL of FP32 attention (the double reference);
 *   - where lpv_attention_q8_runs is 0 (hd, the AVX2 int8 kernel, no VNNI) it is lpv_attention_fm bit for bit.
 * Errors are |out - want| / max |v| (outputs are convex mixtures of v's rows).
 * The forward pass: a workspace of a model with attn_int8 (lpv_workspace_init_for) runs it: logits within a
 * few percent of FP32 attention's, and other bits where VNNI runs (the same bits where it cannot).
 * A kernel the CPU lacks prints SKIP and why; the reference and the fallback still run.
 */
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/layout.h"
#include "lpvit/model.h"
#include "lpvit/ops.h"
#include "lpvit/rng.h"
#include "test.h"
#include "test_util.h"

/* A flipped probability moves its query's outputs by 1/255 of a probability step times |v8| · sv / sum:
 * at most 1/255 of max |v| per flip. Every output <= 3/255 (several flips in one row), mean <= 1e-5 (a lost
 * key or wrong scale moves it by far more), and flips are rare. */
#define KERNEL_MAX_TOL (3.0 / 255)
#define KERNEL_MEAN_TOL 1e-5
#define KERNEL_FLIP_SHARE 0.02
/* int8 vs FP32: q, k, v at 1/254 of their range and p at 1/510: measured up to ~1.5e-2 of max |v| here. */
#define FP32_TOL 4e-2

typedef struct {
    int B, T, D, H, pad;
    float amp;
} att_case;

static void fill(float *x, int64_t n, lpv_rng *r, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)lpv_rng_normal(r) * scale;
}

/* max, mean and the share above 1e-5 of |a - b| over the valid columns, in units of vmax; NaN is infinite. */
static void errs(const float *a, const float *b, int D, int N, int ld, double vmax, double *mx, double *mean,
                 double *share) {
    double e = 0, s = 0;
    int64_t big = 0;
    for (int d = 0; d < D; d++)
        for (int t = 0; t < N; t++) {
            double v = fabs((double)a[(int64_t)d * ld + t] - b[(int64_t)d * ld + t]) / vmax;
            if (isnan(v)) v = INFINITY;
            e = v > e ? v : e, s += v, big += v > 1e-5;
        }
    *mx = e, *mean = s / ((double)D * N), *share = (double)big / ((double)D * N);
}

static void run_case(const att_case *c, lpv_rng *r, int vnni) {
    int N = c->B * c->T, ld = lpv_round16(N) + c->pad, hd = c->D / c->H;
    int64_t n_qkv = (int64_t)3 * c->D * ld, n_out = (int64_t)c->D * ld;
    float *qkv = malloc(sizeof(float) * n_qkv), *ok = malloc(sizeof(float) * n_out);
    float *oref = malloc(sizeof(float) * n_out), *o32 = malloc(sizeof(float) * n_out);
    float *ofp = malloc(sizeof(float) * n_out);
    float *scr = malloc(sizeof(float) * (size_t)lpv_attention_scratch(c->T, hd) * 2);
    fill(qkv, n_qkv, r, c->amp);
    for (int i = 0; i < n_out; i++) ok[i] = oref[i] = o32[i] = ofp[i] = -7.0f; /* padding must stay */
    double vmax = 0;
    for (int d = 2 * c->D; d < 3 * c->D; d++)
        for (int t = 0; t < N; t++) vmax = fmax(vmax, fabs(qkv[(int64_t)d * ld + t]));
    lpv_attention_fm_q8_ref(oref, qkv, ld, c->B, c->T, c->D, c->H);
    lpv_attention_fm_ref(o32, qkv, ld, c->B, c->T, c->D, c->H);
    double mx, mean, share;
    errs(oref, o32, c->D, N, ld, vmax, &mx, &mean, &share);
    CHECKF(mx <= FP32_TOL, "T %d hd %d: int8 reference vs FP32 %.3g of max |v|", c->T, hd, mx);
    for (int threads = 1; threads <= 2; threads++) {
        lpv_threads_set(threads);
        lpv_attention_fm_q8(ok, qkv, ld, c->B, c->T, c->D, c->H, scr);
        if (lpv_attention_q8_runs(hd)) {
            double m2, mean2, share2;
            errs(ok, oref, c->D, N, ld, vmax, &m2, &mean2, &share2);
            if (threads == 2)
                printf("q8 T %3d hd %2d: kernel vs reference max %.2g mean %.2g flips %.3f%%; vs FP32 max %.3g mean %.2g\n",
                       c->T, hd, m2, mean2, 100 * share2, mx, mean);
            CHECKF(m2 <= KERNEL_MAX_TOL && mean2 <= KERNEL_MEAN_TOL && share2 <= KERNEL_FLIP_SHARE,
                   "T %d hd %d threads %d: kernel vs reference max %.3g mean %.3g share %.3g", c->T, hd, threads, m2,
                   mean2, share2);
        } else {
            lpv_attention_fm(ofp, qkv, ld, c->B, c->T, c->D, c->H, scr);
            CHECKF(memcmp(ok, ofp, sizeof(float) * n_out) == 0, "T %d hd %d: fallback is not FP32 attention", c->T, hd);
        }
        int pad_ok = 1; /* columns past B T untouched */
        for (int d = 0; d < c->D; d++)
            for (int t = N; t < ld; t++) pad_ok &= ok[(int64_t)d * ld + t] == -7.0f;
        CHECK(pad_ok);
    }
    (void)vnni;
    free(qkv), free(ok), free(oref), free(o32), free(ofp), free(scr);
}

static void test_forward(int vnni) {
    lpv_model *m = test_random_model(64, 2, 2, 128, 32, 10, 0, 7); /* hd 32, T 5 */
    float x[2 * 3 * 32 * 32], a[20], b[20];
    for (int i = 0; i < 2 * 3 * 32 * 32; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    lpv_err err;
    lpv_workspace ws;
    for (int k = 0; k < 2; k++) {
        m->attention = k ? LPV_ATTN_INT8 : LPV_ATTN_FP32;
        CHECK_OK(lpv_workspace_init_for(&ws, m, 2, &err), &err);
        CHECK(ws.attn_int8 == k);
        CHECK_OK(lpv_forward(m, &ws, x, 2, k ? b : a, &err), &err);
        lpv_workspace_free(&ws);
    }
    double d = 0, mx = 0;
    for (int i = 0; i < 20; i++) d = fmax(d, fabs((double)a[i] - b[i])), mx = fmax(mx, fabs((double)a[i]));
    printf("forward with int8 attention: logits within %.3g of FP32 attention's (max %.3g)\n", d, mx);
    CHECKF(d <= 0.05 * mx, "int8 attention moved the logits by %g of %g", d, mx);
    CHECK(vnni ? d > 0 : d == 0);
    /* the default (LPV_ATTN_AUTO) follows the linears: FP32 with FP32 ones, int8 with int8 ones where the
     * kernel runs; LPV_ATTN_FP32 keeps FP32 with int8 linears */
    m->attention = LPV_ATTN_AUTO;
    CHECK_OK(lpv_workspace_init_for(&ws, m, 2, &err), &err);
    CHECK(ws.attn_int8 == 0 && ws.attn_fp32 == 0);
    lpv_workspace_free(&ws);
    CHECK_OK(lpv_model_quantize_int8(m, 32, 32, &err), &err);
    CHECK_OK(lpv_workspace_init_for(&ws, m, 2, &err), &err);
    CHECK(ws.attn_int8 == lpv_attention_q8_runs(32) && lpv_attention_int8_for(m, 1) == ws.attn_int8);
    lpv_workspace_free(&ws);
    m->attention = LPV_ATTN_FP32;
    CHECK_OK(lpv_workspace_init_for(&ws, m, 2, &err), &err);
    CHECK(ws.attn_int8 == 0 && ws.attn_fp32 == 1 && lpv_attention_int8_for(m, 1) == 0);
    lpv_workspace_free(&ws);
    lpv_model_free(m);
}

int main(void) {
    lpv_rng r;
    lpv_rng_seed(&r, 88);
    const att_case cases[] = {
        {2, 197, 192, 3, 0, 1.2f}, {1, 198, 192, 6, 5, 1.5f}, {3, 17, 64, 8, 0, 1.0f},
        {2, 33, 128, 2, 3, 2.0f},  {4, 5, 64, 2, 0, 1.0f},    {2, 1, 64, 1, 0, 1.0f},
        {1, 50, 60, 6, 0, 1.0f},   /* hd 10: FP32 on both */
        {2, 21, 96, 8, 2, 1.0f},   /* hd 12: AVX-VNNI (hd % 4) runs it, AVX-512 VNNI (hd % 8) falls back */
    };
    lpv_err err;
    lpv_isa keep = lpv_isa_get();
    /* each int8 attention kernel the CPU has, under the ISA level that picks it */
    const struct {
        lpv_isa isa;
        int have;
        const char *name;
    } kernels[2] = {{LPV_ISA_AVX512, lpv_isa_supported(LPV_ISA_AVX512) && lpv_cpu()->avx512_vnni, "avx-512 vnni"},
                    {LPV_ISA_AVXVNNI, lpv_isa_supported(LPV_ISA_AVXVNNI), "avx-vnni"}};
    for (int k = 0; k < 2; k++) {
        if (!kernels[k].have) {
            printf("SKIP the %s int8 attention kernel: not on this cpu (the fallback is checked)\n", kernels[k].name);
            continue;
        }
        CHECK_OK(lpv_isa_set(kernels[k].isa, &err), &err);
        CHECK(lpv_attention_q8_runs(64) && lpv_attention_q8_runs(12) == (kernels[k].isa == LPV_ISA_AVXVNNI));
        printf("int8 attention kernel: %s\n", kernels[k].name);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i], &r, 1);
        test_forward(1);
    }
    CHECK_OK(lpv_isa_set(keep, &err), &err);
    /* with the AVX2 int8 kernel (127 levels, no int8 attention) it is FP32 attention, bit for bit */
    if (lpv_isa_best() >= LPV_ISA_AVX2) {
        CHECK_OK(lpv_isa_set(LPV_ISA_AVX2, &err), &err);
        CHECK(!lpv_attention_q8_runs(64));
        att_case c = {2, 17, 128, 2, 0, 1.0f};
        run_case(&c, &r, 0);
        CHECK_OK(lpv_isa_set(keep, &err), &err);
    }
    return test_finish("test_attn_q8");
}
