/*
 * smooth.h — SmoothQuant: moving the outliers of the block linears' inputs into their weights before int8.
 *
 * A few channels of a ViT's LayerNorm outputs (qkv's and fc1's inputs) and of its attention output (proj's input)
 * are 10-100x larger than the rest. Quantized per token, one such channel sets every token's range and the
 * others get a few levels. With a per-channel factor s_j (Xiao et al. 2023, SmoothQuant):
 *
 *     s_j = amax_j^α / wmax_j^(1−α)       amax_j = max |x_j| over the calibration inputs,
 *                                          wmax_j = max_i |W_ij| (the consuming linear's column j),
 *
 * the input becomes x_j / s_j and column j of W becomes W_:j · s_j: the same product, flatter inputs, and the
 * weights (quantized per output row) absorb the range. The division costs nothing at run time, it is folded
 * into what produces the input:
 *   qkv   LayerNorm 1's gamma and beta divided by s;
 *   fc1   LayerNorm 2's gamma and beta divided by s;
 *   proj  the v rows of qkv (weights and bias) divided by s: each attention output channel is a convex
 *         combination of the same channel of v, so it scales with it.
 * fc2's input is GELU's output, which commutes with no scale: it is left alone. The FP32 model computes the
 * same function before and after (to float rounding), so the file format does not change and the exported
 * weights load in timm as any others.
 *
 * The statistics the quantizer needs afterwards are of the smoothed inputs: lpv_model_smooth rescales them in
 * place (H_ij / (s_i s_j), Σx_j / s_j, amax_j / s_j) instead of a second pass over the images.
 * Memory: one (out, in) weight copy per layer at a time, freed before the next.
 */
#ifndef LPVIT_SMOOTH_H
#define LPVIT_SMOOTH_H

#include "lpvit/error.h"
#include "lpvit/model.h"
#include "lpvit/reconstruct.h"

#define LPV_SMOOTH_MIN 1e-5f /* factors are clamped to [LPV_SMOOTH_MIN, 1 / LPV_SMOOTH_MIN] */

typedef struct {
    double alpha; /* migration strength in [0, 1]: 1 moves all of each channel's range into the weights
                     (s = amax), 0 all of the weights' into the inputs (s = 1 / wmax); SmoothQuant's default 0.5 */
    int qkv, fc1, proj; /* which inputs to smooth (1 each by default) */
} lpv_smooth_opts;

typedef struct {
    int layers;                                  /* inputs smoothed */
    /* per layer (lpv_model_layers order; 0 for layers not smoothed): the input's largest channel max over
       its median channel max, before and after */
    double spread_before[LPV_MAX_LAYERS], spread_after[LPV_MAX_LAYERS];
    float smin[LPV_MAX_LAYERS], smax[LPV_MAX_LAYERS]; /* the factors' range */
} lpv_smooth_info;

/* {0.5, 1, 1, 1} */
lpv_smooth_opts lpv_smooth_defaults(void);

/* s (in) from the input's amax (in) and the weights' column maxima wmax (in). A channel that never fires
 * (amax 0) or whose column is all zero (wmax 0, e.g. pruned) gets 1; the others are clamped as above. */
void lpv_smooth_factors(const float *amax, const float *wmax, int in, double alpha, float *s);

/* Smooths m (FP32, dense or BSR, no int8 layer) in place and rescales s's statistics of the smoothed layers to
 * match. s must hold the statistics of qkv, proj and fc1 of every block (lpv_gptq_want sets them all), collected
 * on m as it is now. */
lpv_status lpv_model_smooth(lpv_model *m, lpv_model_stats *s, const lpv_smooth_opts *o, lpv_smooth_info *info,
                            lpv_err *err);

#endif
