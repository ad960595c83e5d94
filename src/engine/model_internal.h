/*
 * model_internal.h — what model.c's loader and writer use from model_q8.c (int8 linears in files; the
 * tensor names are described there). Not installed.
 */
#ifndef LPVIT_MODEL_INTERNAL_H
#define LPVIT_MODEL_INTERNAL_H

#include "lpvit/linear.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"

/* Marks in `used` (indexed like f->t) every tensor it reads. wname: the linear's weight name ("...weight"). */
/* b's int8 weights: q in the order of b->values, scales from wname's .weight_scale. */
lpv_status lpv__q8_set_bsr(lpv_model *m, lpv_bsr *b, const int8_t *q, const lpv_st_file *f, const char *wname,
                           unsigned char *used, lpv_err *err);
/* A dense I8 weight tensor w: L->blocked gets the int8 weights, L->w their dequantized values. */
lpv_status lpv__q8_load_dense(lpv_model *m, lpv_linear *L, const lpv_st_file *f, const lpv_st_tensor *w,
                              unsigned char *used, lpv_err *err);
/* L->qx from the input scale / zero point (per token when absent); for a layer that is not int8, fails when
 * any scale tensor is present. */
lpv_status lpv__q8_load_input(lpv_linear *L, const lpv_st_file *f, const char *wname, int is_int8, unsigned char *used,
                              lpv_err *err);
/* Adds L's int8 tensors under wname; a dense layer's int8 matrix is malloc'd into *tmp (free it after the write). */
lpv_status lpv__q8_save(lpv_st_writer *w, const char *wname, const lpv_linear *L, int ndim, const int64_t *shape,
                        void **tmp, lpv_err *err);

/* codebook.c. A U8 weight tensor `codes` (dense or BSR values) of wname: its levels from wname's .weight_codebook,
 * checked (1..256 finite, strictly increasing; every code below their count), decoded into dst (codes->nelem)
 * and kept in L->codebook (m's arena); the optional per-row scales (.weight_codebook_scale, [out], finite > 0)
 * go to L->codebook_scale and multiply a dense layer's rows here (a BSR layer's: lpv__cb_scale_bsr). */
lpv_status lpv__cb_decode(lpv_model *m, lpv_linear *L, const lpv_st_file *f, const char *wname,
                          const lpv_st_tensor *codes, int last, float *dst, unsigned char *used, lpv_err *err);
/* 1 when wname's codes are 4-bit (two per byte along the last axis, low nibble first): the file says it packs
 * (metadata LPV_CODES_META = "4bit") and wname's codebook tensor does not hold 17..256 levels (a missing or
 * broken one counts as packed: lpv__cb_decode reports it). lpv__cb_decode then takes `last`, the unpacked length
 * of that axis (0: one code per byte). */
int lpv__cb_packed(const lpv_st_file *f, const char *wname);
/* The file-level mark of 4-bit codes (LPV_CODES_META = "4bit"), for a model with a codebook layer. */
lpv_status lpv__cb_save_meta(lpv_st_writer *w, lpv_err *err);
/* A BSR layer decoded from codes: multiplies each row of b's values by L->codebook_scale (when the file had them)
 * and repacks b. */
void lpv__cb_scale_bsr(const lpv_linear *L, struct lpv_bsr *b);
/* Fails when wname has a .weight_codebook but its weight is not U8 codes. */
lpv_status lpv__cb_check_absent(const lpv_st_file *f, const char *wname, lpv_err *err);
/* Adds L's codes (the shape of its FP32 tensor: (out, in) dense, (nnzb, R, C) BSR values) and levels under
 * wname when every weight is one of L's levels (*written = 1); else writes nothing (*written = 0: the caller
 * writes FP32). The codes are malloc'd into *tmp (free it after the write). */
lpv_status lpv__cb_save(lpv_st_writer *w, const char *wname, const lpv_linear *L, int ndim, const int64_t *shape,
                        void **tmp, int *written, lpv_err *err);

#endif
