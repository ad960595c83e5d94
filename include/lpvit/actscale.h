/*
 * actscale.h — calibrated per-tensor input scales for the int8 block linears (static W8A8).
 *
 * By default an int8 layer quantizes its input per token at run time (bsr.h, lpv_qact). A static grid is one
 * (scale, zero point) per linear input, fixed from calibration images: no range to find at run time, and the
 * file says exactly what the layer computes. Modes:
 *   minmax  the range of every value seen (always including 0): the naive baseline;
 *   mse     the range [a·lo, b·hi] (a, b on a grid of LPV_ACT_GRID steps in (0, 1]) whose uint8 grid gives the
 *           smallest squared error over the calibration inputs, evaluated on their histogram: long tails get
 *           clipped when the levels they cost the bulk outweigh the clipping error.
 * A histogram of LPV_ACT_BINS bins per layer covers [−bound, bound]; the bound starts at 2^−10 and doubles
 * (two bins merged into one) whenever a value falls outside, so one pass suffices and every rank's bounds
 * are powers of two that align (under mpirun the histograms are summed after bringing them to the largest).
 * Statistics are taken on the FP32 model (after smoothing, before its weights are rounded), one pass.
 * Memory: LPV_ACT_BINS doubles per wanted layer, owned by lpv_act_stats (lpv_act_stats_free).
 */
#ifndef LPVIT_ACTSCALE_H
#define LPVIT_ACTSCALE_H

#include <stdint.h>

#include "lpvit/bsr.h"
#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
#include "lpvit/model.h"
#include "lpvit/names.h"

#define LPV_ACT_BINS 16384
#define LPV_ACT_GRID 50

#define LPV_ACT_LIST(X) X(LPV_ACT_TOKEN, "token") X(LPV_ACT_MINMAX, "minmax") X(LPV_ACT_MSE, "mse")
typedef enum { LPV_ACT_LIST(LPV_ENUM_VALUE) LPV_ACT_COUNT } lpv_act_mode;
const char *lpv_act_mode_name(lpv_act_mode a);
lpv_status lpv_act_mode_parse(const char *s, lpv_act_mode *out, lpv_err *err);

typedef struct {
    int n;                              /* model layers (lpv_model_layers order) */
    int want[LPV_MAX_LAYERS];           /* set by the caller: layers whose inputs to record */
    float lo[LPV_MAX_LAYERS], hi[LPV_MAX_LAYERS]; /* smallest and largest input value seen, 0 included */
    float bound[LPV_MAX_LAYERS];        /* the histogram covers [−bound, bound] */
    double *hist[LPV_MAX_LAYERS];       /* (LPV_ACT_BINS) */
    int64_t images, values[LPV_MAX_LAYERS];
} lpv_act_stats;

/* One pass of m (FP32) over ds: s->want[i] layers' input histograms and ranges. Collective under mpirun. */
lpv_status lpv_act_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch, lpv_skips *skips,
                           lpv_act_stats *s, lpv_err *err);
void lpv_act_stats_free(lpv_act_stats *s);
/* Adds X (in, ncols; row stride ld) to layer i's histogram and range (what the forward tap does). */
void lpv_act_accumulate(lpv_act_stats *s, int i, const float *X, int ld, int in, int ncols);

/* The 255-level uint8 grid of a range (lo <= 0 <= hi), as the per-token quantizer of the 255-level kernels makes it:
 * scale (hi − lo) / 255 (1 when hi == lo), zero point round(−lo / scale) in [0, 255]. Static grids are chosen and
 * stored on 255 levels; the AVX2 kernel (127 levels, lpv_q8_levels) runs them as the same range, steps twice as wide. */
lpv_qact lpv_act_grid(float lo, float hi);
/* Squared error of quantizing layer i's recorded inputs on grid q (histogram bin centres), per value. */
double lpv_act_mse(const lpv_act_stats *s, int i, lpv_qact q);
/* Layer i's grid by mode (LPV_ACT_MINMAX or LPV_ACT_MSE). */
lpv_qact lpv_act_choose(const lpv_act_stats *s, int i, lpv_act_mode mode);

#endif
