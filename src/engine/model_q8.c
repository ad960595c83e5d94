/*
 * model_q8.c — int8 linears in safetensors files (read by lpv_model_load, written by lpv_model_save).
 *
 * For a linear whose weight tensor is NAME.weight (dense) or NAME.weight.bsr_values (BSR):
 *     NAME.weight / .bsr_values   I8   int8 weights q, same shape as the FP32 tensor they replace
 *     NAME.weight_scale           F32  (out)  w ≈ weight_scale[row] · q, every scale finite and > 0
 *     NAME.input_scale            F32  (1)    per-tensor input quantization: x ≈ s · (u − zp), s > 0
 *     NAME.input_zero_point       I32  (1)    zp in [0, 255]; both or neither
 * No input_scale: the input is quantized per token at run time. Metadata "lpvit.quant" says the same in
 * words. Files without I8 tensors load as before.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"

/* "blocks.0.attn.qkv.weight" -> "blocks.0.attn.qkv" + suffix */
static void sibling(char *dst, size_t cap, const char *wname, const char *suffix) {
    size_t n = strlen(wname);
    if (n > 7 && strcmp(wname + n - 7, ".weight") == 0) n -= 7;
    snprintf(dst, cap, "%.*s%s", (int)n, wname, suffix);
}

static const lpv_st_tensor *find_mark(const lpv_st_file *f, const char *name, unsigned char *used) {
    const lpv_st_tensor *t = lpv_st_find(f, name);
    if (t && used) used[t - f->t] = 1;
    return t;
}

/* The per-row scales of `wname` (rows of them), into a malloc'd array. */
static lpv_status read_scales(const lpv_st_file *f, const char *wname, int rows, unsigned char *used, float **out,
                              lpv_err *err) {
    char nm[LPV_ST_MAX_NAME + 32], sb[96];
    sibling(nm, sizeof nm, wname, ".weight_scale");
    const lpv_st_tensor *t = find_mark(f, nm, used);
    if (!t) return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' is int8 but '%s' is missing", f->path, wname, nm);
    if (t->ndim != 1 || t->shape[0] != rows)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected [%d]", f->path, nm,
                        lpv_shape_str(sb, sizeof sb, t->ndim, t->shape), rows);
    float *s = malloc(sizeof(float) * (size_t)rows + 1);
    if (!s) return lpv_fail(err, LPV_E_OOM, "out of memory");
    lpv_status st = lpv_st_read_f32(f, t, s, err);
    if (st) free(s);
    else *out = s;
    return st;
}

lpv_status lpv__q8_set_bsr(lpv_model *m, lpv_bsr *b, const int8_t *q, const lpv_st_file *f, const char *wname,
                           unsigned char *used, lpv_err *err) {
    float *s = NULL;
    LPV_TRY(read_scales(f, wname, b->rows, used, &s, err));
    char label[LPV_ST_MAX_NAME + 1100];
    snprintf(label, sizeof label, "%s: %s", f->path, wname);
    lpv_status st = lpv_bsr_set_int8(b, q, s, &m->arena, label, err);
    free(s);
    return st;
}

lpv_status lpv__q8_load_dense(lpv_model *m, lpv_linear *L, const lpv_st_file *f, const lpv_st_tensor *w,
                              unsigned char *used, lpv_err *err) {
    /* the kernels run BSR: an all-kept 32 x 32 blocking of the dense int8 matrix, as lpv_model_quantize_int8 */
    const int R = 32, C = 32;
    const int8_t *q = (const int8_t *)w->data;
    lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
    if (!b) return lpv_fail(err, LPV_E_OOM, "out of memory");
    LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, R, C, NULL, &m->arena, w->name, err)); /* L->w: zeros */
    int8_t *qb = calloc((size_t)b->nnzb * R * C + 1, 1);
    if (!qb) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++)
            for (int r = 0; r < R && i * R + r < L->out; r++)
                for (int c = 0; c < C && b->col_idx[j] * C + c < L->in; c++)
                    qb[(int64_t)j * R * C + r * C + c] = q[(int64_t)(i * R + r) * L->in + b->col_idx[j] * C + c];
    lpv_status st = lpv__q8_set_bsr(m, b, qb, f, w->name, used, err);
    free(qb);
    if (st) return st;
    lpv_bsr_to_dense(b, L->w); /* the FP32 weight is the dequantized one */
    L->blocked = b;
    return LPV_OK;
}

lpv_status lpv__q8_load_input(lpv_linear *L, const lpv_st_file *f, const char *wname, int is_int8, unsigned char *used,
                              lpv_err *err) {
    char ns[LPV_ST_MAX_NAME + 32], nz[LPV_ST_MAX_NAME + 32], sw[LPV_ST_MAX_NAME + 32];
    sibling(ns, sizeof ns, wname, ".input_scale");
    sibling(nz, sizeof nz, wname, ".input_zero_point");
    sibling(sw, sizeof sw, wname, ".weight_scale");
    const lpv_st_tensor *ts = find_mark(f, ns, used), *tz = find_mark(f, nz, used);
    if (!is_int8) {
        const lpv_st_tensor *tw = lpv_st_find(f, sw);
        if (ts || tz || tw)
            return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' has quantization scales ('%s') but its weight is not int8",
                            f->path, wname, tw ? tw->name : ts ? ts->name : tz->name);
        return LPV_OK;
    }
    L->qx = (lpv_qact){1, 0.0f, 0};
    if (!ts && !tz) return LPV_OK; /* per token */
    if (!ts || !tz)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' needs both '%s' and '%s' (or neither: per-token inputs)", f->path,
                        wname, ns, nz);
    if (ts->nelem != 1 || tz->nelem != 1)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': '%s' and '%s' must hold one value each", f->path, ns, nz);
    float s;
    int64_t z;
    LPV_TRY(lpv_st_read_f32(f, ts, &s, err));
    if (tz->dtype != LPV_DT_I32 && tz->dtype != LPV_DT_I64)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' has dtype %s, expected I32", f->path, nz,
                        lpv_dtype_name(tz->dtype));
    LPV_TRY(lpv_st_read_i64(f, tz, &z, err));
    if (!(s > 0.0f) || !isfinite(s))
        return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' is %g, expected finite and > 0", f->path, ns, (double)s);
    if (z < 0 || z > 255)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' is %lld, expected 0..255", f->path, nz, (long long)z);
    L->qx = (lpv_qact){0, s, (int)z};
    return LPV_OK;
}

lpv_status lpv__q8_save(lpv_st_writer *w, const char *wname, const lpv_linear *L, int ndim, const int64_t *shape,
                        void **tmp, lpv_err *err) {
    const lpv_bsr *b = lpv_linear_int8_weights(L);
    LPV_ASSERT(b);
    char nm[LPV_ST_MAX_NAME + 32];
    if (L->bsr) {
        snprintf(nm, sizeof nm, "%s.bsr_values", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I8, 3, (int64_t[]){b->nnzb, b->R, b->C}, b->qvalues, err));
        snprintf(nm, sizeof nm, "%s.bsr_col_indices", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){b->nnzb}, b->col_idx, err));
        snprintf(nm, sizeof nm, "%s.bsr_row_ptr", wname);
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){(int64_t)b->nbr + 1}, b->row_ptr, err));
    } else { /* the blocked copy back to the dense (out, in) int8 matrix */
        int8_t *q = calloc((size_t)b->rows * (size_t)b->cols + 1, 1);
        if (!q) return lpv_fail(err, LPV_E_OOM, "out of memory writing '%s'", wname);
        *tmp = q;
        int R = b->R, C = b->C;
        for (int i = 0; i < b->nbr; i++)
            for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++)
                for (int r = 0; r < R && i * R + r < b->rows; r++)
                    for (int c = 0; c < C && b->col_idx[j] * C + c < b->cols; c++)
                        q[(int64_t)(i * R + r) * b->cols + b->col_idx[j] * C + c] = b->qvalues[(int64_t)j * R * C + r * C + c];
        LPV_TRY(lpv_st_writer_add(w, wname, LPV_DT_I8, ndim, shape, q, err));
    }
    sibling(nm, sizeof nm, wname, ".weight_scale");
    LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_F32, 1, (int64_t[]){b->rows}, b->qscale, err));
    if (!L->qx.per_token) {
        sibling(nm, sizeof nm, wname, ".input_scale");
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_F32, 1, (int64_t[]){1}, &L->qx.scale, err));
        sibling(nm, sizeof nm, wname, ".input_zero_point");
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){1}, &L->qx.zp, err));
    }
    return LPV_OK;
}
