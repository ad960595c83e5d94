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

#endif
