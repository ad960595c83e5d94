/*
 * bsr_q8.c — int8 weights for an lpv_bsr (rounding, the kernels' packs) and the activation
 * quantizer that feeds the int8 kernels (see the int8 part of include/lpvit/bsr.h; the product's
 * walk and reference are in bsr.c, the vector kernels in kernels/bsr_q8_*.c).
 *
 * Quantizing activations is two steps for every ISA, on the kernel's grid of N = lpv_q8_levels levels
 * (255; 127 for the AVX2 kernel):
 *   1. per column t: xa[t] = scale, xc[t] = scale · zp (per tensor: the given pair, mapped onto N levels;
 *      per token: from the column's range, found by a min/max pass);
 *   2. u = clamp(rint(clamp(x · (1 / xa[t]), ±512)) + rint(xc[t] / xa[t]), 0, N)
 * so the vector quantizers only redo step 2's arithmetic (one correctly rounded multiply, one
 * round-to-nearest-even, integer clamps: no FMA to contract, the reference's bytes on every ISA).
 */
#include "lpvit/bsr.h"

#include <math.h>
#include <string.h>

#include "engine/kernels/bsr_internal.h"

lpv_q8_kernel lpv_q8_kernel_for(lpv_isa isa) {
    if (isa >= LPV_ISA_AVX512 && lpv_cpu()->avx512_vnni) return LPV_Q8_VNNI;
    if (isa >= LPV_ISA_AVXVNNI && lpv_cpu()->avx_vnni) return LPV_Q8_AVXVNNI;
    if (isa >= LPV_ISA_AVX2) return LPV_Q8_AVX2;
    return LPV_Q8_REF;
}

int lpv_q8_levels(lpv_q8_kernel k) { return k == LPV_Q8_AVX2 ? 127 : 255; }

const char *lpv_q8_kernel_name(lpv_q8_kernel k) {
    return k == LPV_Q8_VNNI ? "avx512vnni" : k == LPV_Q8_AVXVNNI ? "avxvnni" : k == LPV_Q8_AVX2 ? "avx2" : "ref";
}

/* Per-row scales of W->values (max |w| / 127) into scale unless `given`, q by round-half-even. */
static void round_rows(const lpv_bsr *W, int8_t *q, float *scale, int given) {
    int R = W->R, C = W->C;
    for (int r = 0; r < W->rows && !given; r++) scale[r] = 0.0f;
    for (int i = 0; i < W->nbr; i++)
        for (int32_t j = W->row_ptr[i]; j < W->row_ptr[i + 1]; j++)
            for (int rr = 0; rr < R && i * R + rr < W->rows && !given; rr++) {
                const float *v = W->values + (int64_t)j * R * C + (int64_t)rr * C;
                for (int c = 0; c < C; c++)
                    if (fabsf(v[c]) > scale[i * R + rr]) scale[i * R + rr] = fabsf(v[c]);
            }
    for (int r = 0; r < W->rows && !given; r++) scale[r] = scale[r] > 0.0f ? scale[r] / 127.0f : 1.0f;
    for (int i = 0; i < W->nbr; i++)
        for (int32_t j = W->row_ptr[i]; j < W->row_ptr[i + 1]; j++)
            for (int rr = 0; rr < R; rr++) {
                const float *v = W->values + (int64_t)j * R * C + (int64_t)rr * C;
                int8_t *o = q + (int64_t)j * R * C + (int64_t)rr * C;
                float s = i * R + rr < W->rows ? scale[i * R + rr] : 1.0f;
                for (int c = 0; c < C; c++) {
                    float u = nearbyintf(v[c] / s);
                    o[c] = (int8_t)(u > 127.0f ? 127 : u < -127.0f ? -127 : (int)u);
                }
            }
}

/* packed_q8 from qvalues, in packed's block order (bsr.c): per block row, per 8-row slice, per block,
 * k-quads [C/4][8]. */
static void pack_q(lpv_bsr *W) {
    int R = W->R, C = W->C, gpb = R / 8;
    for (int i = 0; i < W->nbr; i++) {
        int32_t rp = W->row_ptr[i], nb = W->row_ptr[i + 1] - rp;
        for (int s = 0; s < gpb; s++)
            for (int32_t j = 0; j < nb; j++) {
                const int8_t *src = W->qvalues + (int64_t)(rp + j) * R * C + (int64_t)s * 8 * C;
                int64_t off = (int64_t)rp * R * C + ((int64_t)s * nb + j) * 8 * C; /* elements, as packed */
                uint32_t *d8 = W->packed_q8 + off / 4;
                for (int p = 0; p < C / 4; p++)
                    for (int r = 0; r < 8; r++) {
                        const int8_t *q = src + r * C + 4 * p;
                        d8[p * 8 + r] = (uint32_t)(uint8_t)q[0] | (uint32_t)(uint8_t)q[1] << 8 |
                                        (uint32_t)(uint8_t)q[2] << 16 | (uint32_t)(uint8_t)q[3] << 24;
                    }
            }
    }
}

lpv_status lpv_bsr_set_int8(lpv_bsr *W, const int8_t *q, const float *scale, lpv_arena *arena, const char *name,
                            lpv_err *err) {
    const char *n = name && *name ? name : "weight";
    if (scale)
        for (int r = 0; r < W->rows; r++)
            if (!(scale[r] > 0.0f) || !isfinite(scale[r]))
                return lpv_fail(err, LPV_E_FORMAT, "'%s': weight scale of row %d is %g, expected finite and > 0", n, r,
                                (double)scale[r]);
    if (!arena) {
        LPV_ASSERT(W->owns_arena);
        arena = &W->own;
    }
    int64_t nval = W->nnzb * W->R * W->C;
    int rows8 = 8 * W->ngroups;
    if (!W->qvalues) {
        W->qvalues = lpv_arena_alloc(arena, (size_t)nval + 64);
        W->qscale = lpv_arena_alloc(arena, sizeof(float) * (size_t)rows8);
        W->qsum = lpv_arena_alloc(arena, sizeof(float) * (size_t)rows8);
        W->packed_q8 = lpv_arena_alloc(arena, (size_t)nval + 64);
        if (!W->qvalues || !W->qscale || !W->qsum || !W->packed_q8) {
            W->qvalues = NULL, W->qscale = W->qsum = NULL, W->packed_q8 = NULL;
            return lpv_fail(err, LPV_E_OOM, "'%s': cannot allocate the int8 weights (%lld values)", n, (long long)nval);
        }
    }
    if (q) {
        memcpy(W->qvalues, q, (size_t)nval);
        memcpy(W->qscale, scale, sizeof(float) * (size_t)W->rows);
    } else {
        if (scale) memcpy(W->qscale, scale, sizeof(float) * (size_t)W->rows);
        round_rows(W, W->qvalues, W->qscale, scale != NULL);
    }
    /* rows past the matrix's edge: zero weights, scale 0 (their outputs are never stored) */
    for (int r = W->rows; r < rows8; r++) W->qscale[r] = 0.0f;
    int R = W->R, C = W->C;
    memset(W->qsum, 0, sizeof(float) * (size_t)rows8);
    for (int i = 0; i < W->nbr; i++)
        for (int32_t j = W->row_ptr[i]; j < W->row_ptr[i + 1]; j++) {
            int nc = W->cols - W->col_idx[j] * C < C ? W->cols - W->col_idx[j] * C : C;
            for (int rr = 0; rr < R; rr++) {
                int r = i * R + rr;
                int8_t *qv = W->qvalues + (int64_t)j * R * C + (int64_t)rr * C;
                float *v = W->values + (int64_t)j * R * C + (int64_t)rr * C;
                int32_t sum = 0;
                for (int c = 0; c < C; c++) {
                    if (r >= W->rows || c >= nc) qv[c] = 0; /* outside the dense matrix, as values */
                    sum += qv[c];
                    v[c] = r < W->rows ? (float)qv[c] * W->qscale[r] : 0.0f;
                }
                if (r < rows8) W->qsum[r] += (float)sum;
            }
        }
    pack_q(W);
    lpv__bsr_repack(W); /* the FP32 (and BF16) kernels then run the dequantized weights */
    return LPV_OK;
}

/* ---------------------------------------------------------------------------
 * Activations. */

/* lo[t] = min(0, min_r X[r][t]), hi[t] = max(0, max_r X[r][t]) for columns [0, n), on int8 kernel k's vector pass
 * (the same values on every kernel). */
static void minmax(float *lo, float *hi, const float *X, int ld, int K, int n, lpv_q8_kernel k) {
    if (k == LPV_Q8_VNNI) {
        lpv__q8_minmax_avx512(lo, hi, X, ld, K, n);
        return;
    }
    if (k == LPV_Q8_AVX2 || k == LPV_Q8_AVXVNNI) {
        lpv__q8_minmax_avx2(lo, hi, X, ld, K, n);
        return;
    }
    for (int t = 0; t < n; t++) lo[t] = 0.0f, hi[t] = 0.0f; /* the range always holds 0 */
    for (int r = 0; r < K; r++) {
        const float *x = X + (int64_t)r * ld;
        for (int t = 0; t < n; t++) {
            lo[t] = x[t] < lo[t] ? x[t] : lo[t]; /* a NaN never replaces the running value */
            hi[t] = x[t] > hi[t] ? x[t] : hi[t];
        }
    }
}

void lpv_q8_column_range(float *lo, float *hi, const float *X, int ld, int K, int T) {
    LPV_ASSERT(T >= 1 && ld >= T && K >= 1);
    minmax(lo, hi, X, ld, K, lpv_round16(T) <= ld ? lpv_round16(T) : T, lpv_q8_kernel_for(lpv_isa_get()));
}

/* Step 1 for columns [0, n) of X (already offset to the block's first column). Per token, a vector min/max
 * pass (minmax) leaves each column's min in xa and max in xc first. */
static void column_params(float *xa, float *xc, const float *X, int ld, int K, int n, const lpv_qact *q,
                          lpv_q8_kernel k, int levels, const float *lo, const float *hi) {
    const float top = (float)levels;
    if (!q->per_token) { /* a 255-level grid onto `top` levels: the same range, coarser steps */
        float s = top < 255.0f ? q->scale * (255.0f / top) : q->scale;
        float zp = top < 255.0f ? nearbyintf((float)q->zp * (top / 255.0f)) : (float)q->zp;
        zp = zp > top ? top : zp < 0.0f ? 0.0f : zp;
        for (int t = 0; t < n; t++) xa[t] = s, xc[t] = s * zp;
        return;
    }
    if (lo) /* the range is given (the producer recorded it) */
        for (int t = 0; t < n; t++) xa[t] = lo[t], xc[t] = hi[t];
    else minmax(xa, xc, X, ld, K, n, k);
    for (int t = 0; t < n; t++) {
        float a = xa[t], b = xc[t]; /* the column's min and max */
        float s = b > a && isfinite(b - a) ? (b - a) / top : 1.0f;
        float zp = nearbyintf(-a / s);
        zp = zp > top ? top : zp < 0.0f ? 0.0f : zp;
        xa[t] = s, xc[t] = s * zp;
    }
}

/* Step 2, scalar: every quad row of X4, columns [0, n) (pointers at the block's first column). */
static void quantize_ref(uint32_t *X4, const float *xa, const float *xc, const float *X, int ld, int K, int n, int top) {
    for (int p = 0; p < (K + 3) / 4; p++) {
        uint32_t *o = X4 + (int64_t)p * ld;
        for (int t = 0; t < n; t++) {
            float inv = 1.0f / xa[t];
            int zp = (int)nearbyintf(xc[t] / xa[t]);
            uint32_t word = 0;
            for (int j = 0; j < 4 && 4 * p + j < K; j++) {
                float v = X[(int64_t)(4 * p + j) * ld + t] * inv;
                v = fmaxf(v, -512.0f), v = fminf(v, 512.0f); /* NaN -> -512 (so u = 0) */
                int u = (int)nearbyintf(v) + zp;
                u = u < 0 ? 0 : u > top ? top : u;
                word |= (uint32_t)u << (8 * j);
            }
            o[t] = word;
        }
    }
}

#define QSUB 2048

/* Each thread takes one contiguous range of columns and streams its part of every row twice (min/max, then
 * quantize): narrow column blocks would touch a new page per row (measured 2x slower at K = 3072). */
static void quantize(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T, const lpv_qact *q,
                     lpv_isa isa, int levels, const float *lo, const float *hi) {
    LPV_ASSERT(isa <= lpv_isa_best() && T >= 1 && ld >= T && K >= 1);
    int n = lpv_round16(T) <= ld ? lpv_round16(T) : T, np = (K + 3) / 4, nt = lpv_team_size();
    int bw = lpv_round16((n + nt - 1) / nt), nb = (n + bw - 1) / bw;
    lpv_q8_kernel k = lpv_q8_kernel_for(isa);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int b = 0; b < nb; b++) {
        int t0 = b * bw, nc = n - t0 < bw ? n - t0 : bw;
        column_params(xa + t0, xc + t0, X + t0, ld, K, nc, q, k, levels, lo ? lo + t0 : NULL, hi ? hi + t0 : NULL);
        if (k == LPV_Q8_REF) {
            quantize_ref(X4 + t0, xa + t0, xc + t0, X + t0, ld, K, nc, levels);
            continue;
        }
        /* sub-blocks of QSUB columns: their 1 / scale and zero point once (two divisions), then every quad row;
         * wide enough that a quad row's segment spans pages (256 columns ran 2x slower at K = 3072) */
        for (int s0 = t0; s0 < t0 + nc; s0 += QSUB) {
            int ns = t0 + nc - s0 < QSUB ? t0 + nc - s0 : QSUB;
            float inv[QSUB], zp[QSUB];
            for (int t = 0; t < ns; t++) inv[t] = 1.0f / xa[s0 + t], zp[t] = nearbyintf(xc[s0 + t] / xa[s0 + t]);
            for (int p = 0; p < np; p++) {
                int nk = K - 4 * p < 4 ? K - 4 * p : 4;
                uint32_t *o = X4 + (int64_t)p * ld + s0;
                const float *x = X + (int64_t)(4 * p) * ld + s0;
                if (k == LPV_Q8_VNNI) lpv__q8_quantize_avx512(o, inv, zp, x, ld, nk, ns, levels);
                else lpv__q8_quantize_avx2(o, inv, zp, x, ld, nk, ns, levels);
            }
        }
    }
}

void lpv_q8_quantize_x_isa(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                           const lpv_qact *q, lpv_isa isa) {
    quantize(X4, xa, xc, X, ld, K, T, q, isa, lpv_q8_levels(lpv_q8_kernel_for(isa)), NULL, NULL);
}

void lpv__q8_quantize_levels(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                             const lpv_qact *q, lpv_isa isa, int levels) {
    LPV_ASSERT(levels == 127 || levels == 255);
    quantize(X4, xa, xc, X, ld, K, T, q, isa, levels, NULL, NULL);
}

void lpv_q8_quantize_x_range(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T,
                             const float *lo, const float *hi) {
    static const lpv_qact per_token = {1, 0.0f, 0};
    lpv_isa isa = lpv_isa_get();
    quantize(X4, xa, xc, X, ld, K, T, &per_token, isa, lpv_q8_levels(lpv_q8_kernel_for(isa)), lo, hi);
}

void lpv_q8_quantize_x(uint32_t *X4, float *xa, float *xc, const float *X, int ld, int K, int T, const lpv_qact *q) {
    lpv_q8_quantize_x_isa(X4, xa, xc, X, ld, K, T, q, lpv_isa_get());
}
