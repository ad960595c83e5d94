/*
 * refine.h — checking saliency curves against the model itself.
 *
 * A second-order curve predicts the loss change of pruning a layer's blocks;
 * for the softmax-attention projections (q, k) that prediction is far too
 * small once whole blocks go (the quadratic model of a very nonlinear map).
 * lpv_layer_kl measures the real thing: the mean KL(p_dense ‖ p_pruned) over a
 * few calibration images when one layer alone loses a given set of blocks.
 * The pruner scales each layer's curve by measured / predicted at its
 * allocated point and allocates again (--refine).
 *
 * The model is modified in place while measuring and restored before return.
 */
#ifndef LPVIT_REFINE_H
#define LPVIT_REFINE_H

#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"

/* Mean over the M images of KL(softmax(dense) ‖ softmax(logits)). */
double lpv_mean_kl(const float *dense_logits, const float *logits, int M, int C);

/* KL when layer L (dense weight) loses the blocks order[0..k) of an R x C grid; images (M, C, S, S) in
 * batches of ws->max_batch; dense_logits (M, classes); scratch logits (M, classes). */
lpv_status lpv_layer_kl(lpv_model *m, lpv_linear *L, int R, int C, const int32_t *order, int k, const float *images,
                        int M, const float *dense_logits, float *logits, lpv_workspace *ws, double *kl, lpv_err *err);

/* Runs the model over M images in batches (logits (M, classes)). */
lpv_status lpv_forward_all(const lpv_model *m, lpv_workspace *ws, const float *images, int M, float *logits,
                           lpv_err *err);

#endif
