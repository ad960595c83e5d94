/*
 * codebook.c — per-layer shared codebooks (codebook.h): 1-D k-means, the nearest level, and a model's block
 * linears moved onto their levels. The file side (codes + levels) is in model.c / model_internal.h.
 */
#include "lpvit/codebook.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels/bsr_internal.h"
#include "engine/model_internal.h"
#include "lpvit/linear.h"
#include "lpvit/log.h"

/* The boundary between levels j and j+1: a value above it belongs to j+1 (so a value on it, to j). One
   definition for the k-means and the encoder, so a trained layer encodes to the levels it was trained on. */
static double midpoint(const float *c, int j) { return 0.5 * ((double)c[j] + (double)c[j + 1]); }

int lpv_codebook_nearest(const float *levels, int k, float v) {
    int lo = 0, hi = k - 1; /* the first level whose upper boundary v does not pass */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if ((double)v > midpoint(levels, mid)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int64_t lpv_codebook_encode(const float *levels, int k, const float *x, int64_t n, uint8_t *codes) {
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        int j = lpv_codebook_nearest(levels, k, x[i]);
        codes[i] = (uint8_t)j;
        off += levels[j] != x[i];
    }
    return off;
}

/* A value and its weight, sorted by value. */
typedef struct {
    float x, w;
} wval;

static int cmp_wval(const void *a, const void *b) {
    float x = ((const wval *)a)->x, y = ((const wval *)b)->x;
    return (x > y) - (x < y);
}

/* The sorted (value, weight) pairs (malloc'd; weight 1 when w is NULL) after checking the arguments. */
static lpv_status sorted_copy(const float *x, const float *w, int64_t n, int K, wval **out, lpv_err *err) {
    if (K < 1 || K > LPV_CODEBOOK_MAX)
        return lpv_fail(err, LPV_E_ARG, "codebook: %d levels, expected 1..%d", K, LPV_CODEBOOK_MAX);
    if (n < 1) return lpv_fail(err, LPV_E_ARG, "codebook: no value to fit");
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return lpv_fail(err, LPV_E_ARG, "codebook: value %lld is not finite", (long long)i);
        if (w && !(w[i] >= 0.0f && isfinite(w[i])))
            return lpv_fail(err, LPV_E_ARG, "codebook: weight %lld is %g, expected finite and >= 0", (long long)i,
                            (double)w[i]);
    }
    wval *s = malloc(sizeof(wval) * (size_t)n);
    if (!s) return lpv_fail(err, LPV_E_OOM, "codebook: out of memory for %lld values", (long long)n);
    for (int64_t i = 0; i < n; i++) s[i] = (wval){x[i], w ? w[i] : 1.0f};
    qsort(s, (size_t)n, sizeof *s, cmp_wval);
    *out = s;
    return LPV_OK;
}

/* Starting levels: the values at the K (weighted) quantiles of the sorted s, duplicates dropped. Q: the weights'
   prefix sums (n + 1). Returns their count. */
static int init_levels(const wval *s, const double *Q, int64_t n, int K, float *c) {
    int k = 0;
    int64_t i = 0;
    for (int j = 0; j < K; j++) {
        double t = ((double)j + 0.5) * Q[n] / K; /* the first value whose cumulative weight passes t */
        while (i < n - 1 && Q[i + 1] <= t) i++;
        float v = s[i].x;
        if (k == 0 || v > c[k - 1]) c[k++] = v;
    }
    return k;
}

/* Drops levels equal to the one before (cannot happen after a round, kept as a guard). */
static int dedupe(float *c, int k) {
    int m = 0;
    for (int j = 0; j < k; j++)
        if (m == 0 || c[j] > c[m - 1]) c[m++] = c[j];
    return m;
}

/* First index of the sorted s (n) whose value is above t. */
static int64_t upper_bound(const wval *s, int64_t n, double t) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if ((double)s[mid].x > t) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

lpv_status lpv_kmeans1d_w(const float *x, const float *w, int64_t n, int K, int iters, float *levels, int *k,
                          lpv_err *err) {
    wval *s;
    LPV_TRY(sorted_copy(x, w, n, K, &s, err));
    double *P = malloc(sizeof(double) * (size_t)(n + 1)), *Q = malloc(sizeof(double) * (size_t)(n + 1));
    if (!P || !Q) {
        free(s), free(P), free(Q);
        return lpv_fail(err, LPV_E_OOM, "codebook: out of memory for %lld values", (long long)n);
    }
    P[0] = Q[0] = 0; /* P[i] = Σ w x, Q[i] = Σ w over s[0, i) */
    for (int64_t i = 0; i < n; i++) P[i + 1] = P[i] + (double)s[i].w * s[i].x, Q[i + 1] = Q[i] + s[i].w;
    if (!(Q[n] > 0)) { /* all weights zero: the plain fit */
        for (int64_t i = 0; i < n; i++) P[i + 1] = P[i] + s[i].x, Q[i + 1] = (double)(i + 1);
    }
    int kk = init_levels(s, Q, n, K, levels);
    float next[LPV_CODEBOOK_MAX];
    for (int it = 0; it < iters; it++) {
        int64_t lo = 0;
        for (int j = 0; j < kk; j++) { /* level j owns s[lo, hi): above the boundary below it, up to the next */
            int64_t hi = j + 1 < kk ? upper_bound(s, n, midpoint(levels, j)) : n;
            double q = Q[hi] - Q[lo];
            next[j] = q > 0 ? (float)((P[hi] - P[lo]) / q) : levels[j];
            lo = hi;
        }
        if (memcmp(next, levels, sizeof(float) * (size_t)kk) == 0) break;
        memcpy(levels, next, sizeof(float) * (size_t)kk);
    }
    *k = dedupe(levels, kk);
    free(P), free(Q), free(s);
    return LPV_OK;
}

lpv_status lpv_kmeans1d(const float *x, int64_t n, int K, int iters, float *levels, int *k, lpv_err *err) {
    return lpv_kmeans1d_w(x, NULL, n, K, iters, levels, k, err);
}

lpv_status lpv_kmeans1d_w_ref(const float *x, const float *w, int64_t n, int K, int iters, float *levels, int *k,
                              lpv_err *err) {
    wval *s;
    LPV_TRY(sorted_copy(x, w, n, K, &s, err));
    double *Q = malloc(sizeof(double) * (size_t)(n + 1));
    if (!Q) {
        free(s);
        return lpv_fail(err, LPV_E_OOM, "codebook: out of memory");
    }
    Q[0] = 0;
    int plain = 1;
    for (int64_t i = 0; i < n; i++) Q[i + 1] = Q[i] + s[i].w, plain &= !w;
    if (!(Q[n] > 0)) { /* all weights zero: the plain fit */
        for (int64_t i = 0; i < n; i++) Q[i + 1] = (double)(i + 1);
        plain = 1;
    }
    int kk = init_levels(s, Q, n, K, levels);
    free(s), free(Q);
    double sum[LPV_CODEBOOK_MAX], cnt[LPV_CODEBOOK_MAX];
    float next[LPV_CODEBOOK_MAX];
    for (int it = 0; it < iters; it++) {
        memset(sum, 0, sizeof sum), memset(cnt, 0, sizeof cnt);
        for (int64_t i = 0; i < n; i++) { /* the nearest level by distance, ties to the lower */
            int best = 0;
            for (int j = 1; j < kk; j++)
                if (fabs((double)x[i] - levels[j]) < fabs((double)x[i] - levels[best])) best = j;
            double wi = plain ? 1.0 : w[i];
            sum[best] += wi * x[i], cnt[best] += wi;
        }
        for (int j = 0; j < kk; j++) next[j] = cnt[j] > 0 ? (float)(sum[j] / cnt[j]) : levels[j];
        if (memcmp(next, levels, sizeof(float) * (size_t)kk) == 0) break;
        memcpy(levels, next, sizeof(float) * (size_t)kk);
    }
    *k = dedupe(levels, kk);
    return LPV_OK;
}

lpv_status lpv_kmeans1d_ref(const float *x, int64_t n, int K, int iters, float *levels, int *k, lpv_err *err) {
    return lpv_kmeans1d_w_ref(x, NULL, n, K, iters, levels, k, err);
}

/* ---- a model's block linears ---- */

/* The in-range values of L's weights (dense: all of w; BSR: the kept blocks without their edge padding), as
   pointers into the layer, so they can be read and then overwritten, and each one's output row (row[k]). */
static float **weight_slots(const lpv_linear *L, int64_t *n, int32_t **row) {
    const lpv_bsr *b = L->bsr;
    int64_t cap = b ? (int64_t)b->nnzb * b->R * b->C : (int64_t)L->out * L->in;
    float **p = malloc(sizeof(float *) * (size_t)(cap + 1));
    int32_t *rw = malloc(sizeof(int32_t) * (size_t)(cap + 1));
    if (!p || !rw) {
        free(p), free(rw);
        return NULL;
    }
    int64_t k = 0;
    if (!b) {
        for (int64_t i = 0; i < cap; i++) rw[k] = (int32_t)(i / L->in), p[k++] = L->w + i;
    } else {
        for (int i = 0; i < b->nbr; i++)
            for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++)
                for (int r = 0; r < b->R && i * b->R + r < b->rows; r++)
                    for (int c = 0; c < b->C && b->col_idx[j] * b->C + c < b->cols; c++)
                        rw[k] = i * b->R + r, p[k++] = b->values + (int64_t)j * b->R * b->C + r * b->C + c;
    }
    *n = k, *row = rw;
    return p;
}

lpv_status lpv_codebook_fit_dense(const float *W, int out, int in, int R, int C, const uint8_t *mask, int K,
                                  const float *col_energy, float *levels, int *k, float *scales, lpv_err *err) {
    if (K < 1 || K > LPV_CODEBOOK_MAX)
        return lpv_fail_param(err, LPV_E_ARG, "codebook", "%d levels, expected 1..%d", K, LPV_CODEBOOK_MAX);
    int nbc = mask ? (in + C - 1) / C : 0;
#define KEPT(r, c) (!mask || mask[(int64_t)((r) / R) * nbc + (c) / C])
    int64_t n = 0;
    for (int r = 0; r < out; r++) { /* each row's largest kept |w| (1 for a row with none or only zeros) */
        float m = 0.0f;
        for (int c = 0; c < in; c++)
            if (KEPT(r, c)) m = fmaxf(m, fabsf(W[(int64_t)r * in + c])), n++;
        scales[r] = m > 0.0f ? m : 1.0f;
    }
    float *x = malloc(sizeof(float) * (size_t)(n + 1)), *w = col_energy ? malloc(sizeof(float) * (size_t)(n + 1)) : NULL;
    if (!x || (col_energy && !w)) {
        free(x), free(w);
        return lpv_fail(err, LPV_E_OOM, "out of memory fitting a codebook");
    }
    /* the levels are fitted to w / (max |w| of its row): rows of different ranges share them; an error e on
       w / s moves the output by s·e·x_c, so with energies each value counts s² · E[x_c²] */
    int64_t q = 0;
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++)
            if (KEPT(r, c)) {
                x[q] = W[(int64_t)r * in + c] / scales[r];
                if (w) w[q] = scales[r] * scales[r] * fmaxf(col_energy[c], 0.0f);
                q++;
            }
#undef KEPT
    lpv_status st = lpv_kmeans1d_w(x, w, n, K, 100, levels, k, err);
    free(x), free(w);
    return st;
}

lpv_status lpv_codebook_fit(const lpv_linear *L, int K, const float *col_energy, float *levels, int *k,
                            float *scales, lpv_err *err) {
    if (!L->bsr) return lpv_codebook_fit_dense(L->w, L->out, L->in, 8, 8, NULL, K, col_energy, levels, k, scales, err);
    const lpv_bsr *b = L->bsr;
    float *W = malloc(sizeof(float) * (size_t)L->out * L->in + 1);
    uint8_t *mask = malloc((size_t)b->nbr * b->nbc + 1);
    lpv_status st = (!W || !mask) ? lpv_fail(err, LPV_E_OOM, "out of memory fitting a codebook") : LPV_OK;
    if (st == LPV_OK) {
        lpv_bsr_to_dense(b, W), lpv_bsr_mask(b, mask);
        st = lpv_codebook_fit_dense(W, L->out, L->in, b->R, b->C, mask, K, col_energy, levels, k, scales, err);
    }
    free(W), free(mask);
    return st;
}

lpv_status lpv_linear_set_codebook(lpv_model *m, lpv_linear *L, const float *levels, int k, const float *scales,
                                   const char *name, lpv_err *err) {
    if (lpv_linear_has_int8(L))
        return lpv_fail(err, LPV_E_ARG, "'%s' is int8: a codebook replaces FP32 weights (quantize the FP32 model)", name);
    int64_t n = 0;
    int32_t *row = NULL;
    float **slot = weight_slots(L, &n, &row);
    float *lv = lpv_arena_alloc(&m->arena, sizeof(float) * LPV_CODEBOOK_MAX);
    float *sc = lpv_arena_alloc(&m->arena, sizeof(float) * (size_t)L->out);
    if (!slot || !lv || !sc) {
        free(slot), free(row);
        return lpv_fail(err, LPV_E_OOM, "out of memory quantizing '%s'", name);
    }
    memcpy(lv, levels, sizeof(float) * (size_t)k), memcpy(sc, scales, sizeof(float) * (size_t)L->out);
    for (int64_t i = 0; i < n; i++) *slot[i] = sc[row[i]] * lv[lpv_codebook_nearest(lv, k, *slot[i] / sc[row[i]])];
    L->codebook = lv, L->codebook_k = k, L->codebook_scale = sc;
    if (L->bsr) lpv__bsr_repack(L->bsr); /* the kernel's copy of the values */
    L->blocked = NULL; /* a pack of the old weights (its memory stays in the arena until the model is freed) */
    free(slot), free(row);
    return LPV_OK;
}

static lpv_status quantize_layer(lpv_model *m, const lpv_layer_ref *ref, int K, lpv_err *err) {
    lpv_linear *L = ref->lin;
    if (lpv_linear_has_int8(L))
        return lpv_fail(err, LPV_E_ARG, "'%s' is int8: a codebook replaces FP32 weights (quantize the FP32 model)",
                        ref->name);
    float lv[LPV_CODEBOOK_MAX], *sc = malloc(sizeof(float) * (size_t)L->out);
    int k = 0;
    lpv_status st = sc ? lpv_codebook_fit(L, K, NULL, lv, &k, sc, err) : lpv_fail(err, LPV_E_OOM, "out of memory");
    if (st == LPV_OK) st = lpv_linear_set_codebook(m, L, lv, k, sc, ref->name, err);
    else lpv_wrap(err, st, "'%s'", ref->name);
    free(sc);
    return st;
}

lpv_status lpv_model_quantize_codebook(lpv_model *m, int K, lpv_err *err) {
    if (K < 1 || K > LPV_CODEBOOK_MAX)
        return lpv_fail_param(err, LPV_E_ARG, "codebook", "%d levels, expected 1..%d", K, LPV_CODEBOOK_MAX);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < nl; i++)
        if (lpv_layer_kind_is_block(refs[i].kind)) LPV_TRY(quantize_layer(m, &refs[i], K, err));
    return LPV_OK;
}

void lpv_codebook_pack4(const uint8_t *codes, int64_t rows, int last, uint8_t *packed) {
    int half = (last + 1) / 2;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *c = codes + r * last;
        uint8_t *p = packed + r * half;
        for (int j = 0; j < half; j++) { /* writes byte r·half + j after reading codes r·last + 2j, 2j + 1 */
            uint8_t lo = c[2 * j], hi = 2 * j + 1 < last ? c[2 * j + 1] : 0;
            p[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        }
    }
}

int lpv_codebook_unpack4(const uint8_t *packed, int64_t rows, int last, uint8_t *codes) {
    int half = (last + 1) / 2;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *p = packed + r * half;
        uint8_t *c = codes + r * last;
        for (int j = 0; j < last; j++) c[j] = j & 1 ? p[j / 2] >> 4 : p[j / 2] & 15;
        if ((last & 1) && p[half - 1] >> 4) return -1;
    }
    return 0;
}

/* ---- in files (model_internal.h) ---- */

/* "blocks.0.attn.qkv.weight" -> "blocks.0.attn.qkv.weight_codebook" */
static void codebook_name(char *dst, size_t cap, const char *wname) { snprintf(dst, cap, "%s_codebook", wname); }

lpv_status lpv__cb_save_meta(lpv_st_writer *w, lpv_err *err) { return lpv_st_writer_meta(w, LPV_CODES_META, "4bit", err); }

int lpv__cb_packed(const lpv_st_file *f, const char *wname) {
    const char *meta = lpv_st_meta(f, LPV_CODES_META);
    if (!meta || strcmp(meta, "4bit") != 0) return 0;
    char nm[LPV_ST_MAX_NAME + 32];
    codebook_name(nm, sizeof nm, wname);
    const lpv_st_tensor *t = lpv_st_find(f, nm);
    /* only a well-formed codebook of more than 16 levels means one code per byte; a missing or broken one is
       reported by lpv__cb_decode, which reads the levels before any code */
    return !(t && t->ndim == 1 && t->shape[0] > LPV_CODEBOOK_PACK4_MAX && t->shape[0] <= LPV_CODEBOOK_MAX);
}

lpv_status lpv__cb_check_absent(const lpv_st_file *f, const char *wname, lpv_err *err) {
    char nm[LPV_ST_MAX_NAME + 32];
    codebook_name(nm, sizeof nm, wname);
    if (lpv_st_find(f, nm))
        return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' has a codebook ('%s') but its weight is not uint8 codes", f->path,
                        wname, nm);
    return LPV_OK;
}

/* The levels tensor of wname, checked, into lv (LPV_CODEBOOK_MAX); *k their count. */
static lpv_status read_levels(const lpv_st_file *f, const char *wname, unsigned char *used, float *lv, int *k,
                              lpv_err *err) {
    char nm[LPV_ST_MAX_NAME + 32], sb[96];
    codebook_name(nm, sizeof nm, wname);
    const lpv_st_tensor *t = lpv_st_find(f, nm);
    if (!t) return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' is uint8 codes but '%s' is missing", f->path, wname, nm);
    if (used) used[t - f->t] = 1;
    if (t->ndim != 1 || t->shape[0] < 1 || t->shape[0] > LPV_CODEBOOK_MAX)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected [K] with 1 <= K <= %d", f->path, nm,
                        lpv_shape_str(sb, sizeof sb, t->ndim, t->shape), LPV_CODEBOOK_MAX);
    if (t->dtype != LPV_DT_F32)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' has dtype %s, expected F32", f->path, nm,
                        lpv_dtype_name(t->dtype));
    LPV_TRY(lpv_st_read_f32(f, t, lv, err));
    *k = (int)t->shape[0];
    for (int j = 0; j < *k; j++) {
        if (!isfinite(lv[j]))
            return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' level %d is %g, expected finite", f->path, nm, j, (double)lv[j]);
        if (j > 0 && !(lv[j] > lv[j - 1]))
            return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' levels %d and %d are not increasing (%g, %g)", f->path, nm,
                            j - 1, j, (double)lv[j - 1], (double)lv[j]);
    }
    return LPV_OK;
}

/* The optional per-row scales of wname's codebook, checked, into the model's arena (L->codebook_scale). */
static lpv_status read_scales(lpv_model *m, lpv_linear *L, const lpv_st_file *f, const char *wname, unsigned char *used,
                              lpv_err *err) {
    char nm[LPV_ST_MAX_NAME + 40], sb[96];
    snprintf(nm, sizeof nm, "%s_codebook_scale", wname);
    const lpv_st_tensor *t = lpv_st_find(f, nm);
    L->codebook_scale = NULL;
    if (!t) return LPV_OK;
    if (used) used[t - f->t] = 1;
    if (t->ndim != 1 || t->shape[0] != L->out)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected [%d] (one scale per output row)",
                        f->path, nm, lpv_shape_str(sb, sizeof sb, t->ndim, t->shape), L->out);
    if (t->dtype != LPV_DT_F32)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' has dtype %s, expected F32", f->path, nm,
                        lpv_dtype_name(t->dtype));
    float *sc = lpv_arena_alloc(&m->arena, sizeof(float) * (size_t)L->out);
    if (!sc) return lpv_fail(err, LPV_E_OOM, "out of memory");
    LPV_TRY(lpv_st_read_f32(f, t, sc, err));
    for (int r = 0; r < L->out; r++)
        if (!(isfinite(sc[r]) && sc[r] > 0.0f))
            return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' row %d is %g, expected finite and > 0", f->path, nm, r,
                            (double)sc[r]);
    L->codebook_scale = sc;
    return LPV_OK;
}

void lpv__cb_scale_bsr(const lpv_linear *L, lpv_bsr *b) {
    if (!L->codebook_scale) return;
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++)
            for (int r = 0; r < b->R && i * b->R + r < b->rows; r++) {
                float s = L->codebook_scale[i * b->R + r], *v = b->values + (int64_t)j * b->R * b->C + (int64_t)r * b->C;
                for (int c = 0; c < b->C; c++) v[c] = s * v[c];
            }
    lpv__bsr_repack(b);
}

/* The codes of a 4-bit tensor (rows of `last` codes, (last + 1) / 2 bytes each), unpacked into a malloc'd array. */
static lpv_status unpack_codes(const lpv_st_file *f, const lpv_st_tensor *codes, int last, uint8_t **out, uint64_t *n,
                               lpv_err *err) {
    int64_t half = (last + 1) / 2, rows = half > 0 ? (int64_t)codes->nelem / half : 0;
    if (last < 1 || rows * half != (int64_t)codes->nelem)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': '%s' holds %llu bytes, not rows of %lld (4-bit codes of %d)", f->path,
                        codes->name, (unsigned long long)codes->nelem, (long long)half, last);
    uint8_t *c = malloc((size_t)(rows * last) + 1);
    if (!c) return lpv_fail(err, LPV_E_OOM, "out of memory");
    if (lpv_codebook_unpack4(codes->data, rows, last, c) != 0) {
        free(c);
        return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' has a nonzero padding nibble (4-bit codes of odd length %d)",
                        f->path, codes->name, last);
    }
    *out = c, *n = (uint64_t)(rows * last);
    return LPV_OK;
}

lpv_status lpv__cb_decode(lpv_model *m, lpv_linear *L, const lpv_st_file *f, const char *wname,
                          const lpv_st_tensor *codes, int last, float *dst, unsigned char *used, lpv_err *err) {
    float lv[LPV_CODEBOOK_MAX];
    int k = 0;
    LPV_TRY(read_levels(f, wname, used, lv, &k, err));
    LPV_TRY(read_scales(m, L, f, wname, used, err));
    const uint8_t *c = codes->data;
    uint8_t *unpacked = NULL;
    uint64_t n = codes->nelem;
    if (last) LPV_TRY(unpack_codes(f, codes, last, &unpacked, &n, err));
    if (unpacked) c = unpacked;
    for (uint64_t i = 0; i < n; i++) {
        if (c[i] >= k) {
            lpv_status st = lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' code %d at index %llu, but the codebook has %d levels",
                                     f->path, codes->name, c[i], (unsigned long long)i, k);
            free(unpacked);
            return st;
        }
        dst[i] = lv[c[i]];
    }
    free(unpacked);
    float *keep = lpv_arena_alloc(&m->arena, sizeof(float) * (size_t)k);
    if (!keep) return lpv_fail(err, LPV_E_OOM, "out of memory");
    memcpy(keep, lv, sizeof(float) * (size_t)k);
    L->codebook = keep, L->codebook_k = k;
    if (L->codebook_scale && codes->ndim == 2) /* dense (out, in); BSR values are scaled by lpv__cb_scale_bsr */
        for (uint64_t i = 0; i < n; i++) dst[i] = L->codebook_scale[i / (uint64_t)L->in] * dst[i];
    return LPV_OK;
}

/* codes of v (L's dense (out, in) weights, or its BSR values, which have no edge padding here) on L's levels and
 * row scales; returns how many values are not scale * level exactly (their code is the nearest's). */
static int64_t encode_rows(const lpv_linear *L, const float *v, uint8_t *codes) {
    const lpv_bsr *b = L->bsr;
    int nbr = b ? b->nbr : L->out, R = b ? b->R : 1, C = b ? b->C : L->in;
    int64_t off = 0;
    for (int i = 0; i < nbr; i++) /* dense: one "block" of one row per row */
        for (int32_t j = b ? b->row_ptr[i] : i; j < (b ? b->row_ptr[i + 1] : i + 1); j++)
            for (int r = 0; r < R; r++) {
                float s = L->codebook_scale ? L->codebook_scale[i * R + r] : 1.0f;
                int64_t at = (int64_t)j * R * C + (int64_t)r * C;
                for (int c = 0; c < C; c++) {
                    int q = lpv_codebook_nearest(L->codebook, L->codebook_k, v[at + c] / s);
                    codes[at + c] = (uint8_t)q;
                    off += s * L->codebook[q] != v[at + c];
                }
            }
    return off;
}

lpv_status lpv__cb_save(lpv_st_writer *w, const char *wname, const lpv_linear *L, int ndim, const int64_t *shape,
                        void **tmp, int *written, lpv_err *err) {
    *written = 0;
    const lpv_bsr *b = L->bsr;
    if (b && (b->rows % b->R || b->cols % b->C)) return LPV_OK; /* edge blocks' zero padding has no code */
    const float *v = b ? b->values : L->w;
    int64_t n = b ? (int64_t)b->nnzb * b->R * b->C : (int64_t)L->out * L->in;
    uint8_t *codes = malloc((size_t)n + 1);
    if (!codes) return lpv_fail(err, LPV_E_OOM, "out of memory writing '%s'", wname);
    *tmp = codes;
    /* the weights changed since the codebook was fitted (a later refit or import): FP32 keeps them exact */
    int64_t off = encode_rows(L, v, codes);
    if (off > 0) {
        lpv_warn("'%s': %lld weights are not on its codebook any more: written in FP32", wname, (long long)off);
        return LPV_OK;
    }
    char nm[LPV_ST_MAX_NAME + 32];
    /* at most 16 levels: two codes per byte along the last axis (lpv_model_save marks the file LPV_CODES_META) */
    int last = b ? b->C : L->in, pk = L->codebook_k <= LPV_CODEBOOK_PACK4_MAX;
    if (pk) lpv_codebook_pack4(codes, n / last, last, codes);
    int64_t lastw = pk ? (last + 1) / 2 : last;
    if (b) {
        snprintf(nm, sizeof nm, "%s.bsr_values", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_U8, 3, (int64_t[]){b->nnzb, b->R, lastw}, codes, err));
        snprintf(nm, sizeof nm, "%s.bsr_col_indices", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){b->nnzb}, b->col_idx, err));
        snprintf(nm, sizeof nm, "%s.bsr_row_ptr", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){(int64_t)b->nbr + 1}, b->row_ptr, err));
    } else {
        LPV_ASSERT(ndim == 2);
        LPV_TRY(lpv_st_writer_add(w, wname, LPV_DT_U8, 2, (int64_t[]){shape[0], pk ? lastw : shape[1]}, codes, err));
    }
    codebook_name(nm, sizeof nm, wname);
    LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_F32, 1, (int64_t[]){L->codebook_k}, L->codebook, err));
    if (L->codebook_scale) {
        snprintf(nm, sizeof nm, "%s_codebook_scale", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_F32, 1, (int64_t[]){L->out}, L->codebook_scale, err));
    }
    *written = 1;
    return LPV_OK;
}
