/*
 * linear.c — dense and block-sparse linear layers with fused epilogues
 * (see include/lpvit/linear.h).
 *
 * Dense: the output rows are split over the threads; each thread calls
 * single-threaded OpenBLAS sgemm on its slice and applies the epilogue while
 * the slice is still in cache.
 */
#include "lpvit/linear.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/error.h"

static float gelu1(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

void lpv_gelu_inplace(float *x, int64_t n) { lpv_vgelu(x, n); }

/* Applies bias / GELU to rows [r0, r1) of Y (T valid columns). ACC is handled by the GEMM. */
static void epilogue_rows(float *Y, int ldy, int T, int r0, int r1, const float *b, int epi) {
    int Tp = lpv_round16(T);
    if (Tp > ldy) Tp = T;
    for (int r = r0; r < r1; r++) {
        float *y = Y + (int64_t)r * ldy;
        if ((epi & LPV_EPI_BIAS) && b) {
            float bv = b[r];
            for (int t = 0; t < Tp; t++) y[t] += bv;
        }
        if (epi & LPV_EPI_GELU) lpv_vgelu(y, Tp);
    }
}

/* Splits `n` rows over the team, multiples of `align` rows per thread. */
static void thread_rows(int n, int align, int *r0, int *r1) {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int chunks = (n + align - 1) / align;
    int c0 = (int)((int64_t)chunks * id / nt), c1 = (int)((int64_t)chunks * (id + 1) / nt);
    *r0 = c0 * align < n ? c0 * align : n;
    *r1 = c1 * align < n ? c1 * align : n;
}

void lpv_linear_forward_dense(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi) {
    LPV_ASSERT(L->w && !((epi & LPV_EPI_GELU) && (epi & LPV_EPI_ACC)));
    int N = lpv_round16(T) <= ldx && lpv_round16(T) <= ldy ? lpv_round16(T) : T;
    float beta = (epi & LPV_EPI_ACC) ? 1.0f : 0.0f;
    int nt = lpv_threads_get();
    if (omp_in_parallel()) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        int r0, r1;
        thread_rows(L->out, 16, &r0, &r1);
        if (r1 > r0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, N, L->in, 1.0f, L->w + (int64_t)r0 * L->in,
                        L->in, X, ldx, beta, Y + (int64_t)r0 * ldy, ldy);
            epilogue_rows(Y, ldy, T, r0, r1, L->b, epi);
        }
    }
}

void lpv_linear_forward_ref(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi) {
    LPV_ASSERT(L->w);
    for (int r = 0; r < L->out; r++) {
        const float *w = L->w + (int64_t)r * L->in;
        for (int t = 0; t < T; t++) {
            double acc = 0;
            for (int k = 0; k < L->in; k++) acc += (double)w[k] * X[(int64_t)k * ldx + t];
            float v = (float)acc;
            if ((epi & LPV_EPI_BIAS) && L->b) v += L->b[r];
            if (epi & LPV_EPI_GELU) v = gelu1(v);
            if (epi & LPV_EPI_ACC) Y[(int64_t)r * ldy + t] += v;
            else Y[(int64_t)r * ldy + t] = v;
        }
    }
}

void lpv_linear_forward(const lpv_linear *L, const float *X, int ldx, float *Y, int ldy, int T, int epi) {
    if (L->bsr) lpv_bsr_matmul(L->bsr, L->b, X, ldx, Y, ldy, T, epi);
    else if (L->blocked) lpv_bsr_matmul(L->blocked, L->b, X, ldx, Y, ldy, T, epi);
    else lpv_linear_forward_dense(L, X, ldx, Y, ldy, T, epi);
}

static const lpv_bsr *bf16_weights(const lpv_linear *L) {
    const lpv_bsr *b = L->bsr ? L->bsr : L->blocked;
    return b && b->packed_bf16 ? b : NULL;
}

int lpv_linear_has_bf16(const lpv_linear *L) { return bf16_weights(L) != NULL; }

void lpv_linear_set_weights(lpv_linear *L, const float *W) {
    LPV_ASSERT(!lpv_linear_has_int8(L));
    if (L->w) memcpy(L->w, W, sizeof(float) * (size_t)L->out * (size_t)L->in);
    if (L->bsr) lpv_bsr_set_dense_values(L->bsr, W);
    L->blocked = NULL; /* a pack of the old weights (its memory stays in the model's arena) */
}


void lpv_linear_forward_bf16(const lpv_linear *L, const uint32_t *X2, int ldx, float *Y, int ldy, int T, int epi) {
    const lpv_bsr *b = bf16_weights(L);
    LPV_ASSERT(b);
    lpv_bsr_matmul_bf16(b, L->b, X2, ldx, Y, ldy, T, epi);
}

const lpv_bsr *lpv_linear_int8_weights(const lpv_linear *L) {
    const lpv_bsr *b = L->bsr ? L->bsr : L->blocked;
    return b && b->packed_q8 ? b : NULL;
}

int lpv_linear_has_int8(const lpv_linear *L) { return lpv_linear_int8_weights(L) != NULL; }

void lpv_linear_forward_q8(const lpv_linear *L, const float *X, int ldx, uint32_t *X4, float *xa, float *xc, float *Y,
                           int ldy, int T, int epi) {
    const lpv_bsr *b = lpv_linear_int8_weights(L);
    LPV_ASSERT(b);
    lpv_q8_quantize_x(X4, xa, xc, X, ldx, L->in, T, &L->qx);
    lpv_bsr_matmul_q8(b, L->b, X4, xa, xc, ldx, Y, ldy, T, epi);
}

void lpv_linear_forward_pick(const lpv_linear *L, const float *X, uint32_t *X2, int ldx, float *Y, int ldy, int T,
                             int epi) {
    if (X2 && lpv_linear_has_bf16(L)) {
        lpv_bf16_pack_x(X2, X, ldx, L->in, T);
        lpv_linear_forward_bf16(L, X2, ldx, Y, ldy, T, epi);
    } else {
        lpv_linear_forward(L, X, ldx, Y, ldy, T, epi);
    }
}

void lpv_linear_copy_weights(lpv_linear *dst, const lpv_linear *src) {
    LPV_ASSERT(dst->w && src->w && dst->out == src->out && dst->in == src->in && (!dst->b || src->b));
    memcpy(dst->w, src->w, sizeof(float) * (size_t)dst->out * (size_t)dst->in);
    if (dst->b) memcpy(dst->b, src->b, sizeof(float) * (size_t)dst->out);
}

double lpv_linear_density(const lpv_linear *L) { return L->bsr ? lpv_bsr_density(L->bsr) : 1.0; }
