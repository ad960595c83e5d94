/*
 * quantize.h — quantizing a model's block linears (qkv, proj, fc1, fc2) with error feedback: each layer's
 * weights are put on their grid (int8 with one scale per output row, or a codebook shared by the layer's
 * channels, codebook.h) by GPTQ's column sweep (recon.h, lpv_recon_quant) under the layer's input statistics
 * H = Σ x xᵀ, so each rounding error is compensated by the weights not yet rounded instead of being left
 * where it falls (round to nearest, what lpv_model_quantize_int8 / lpv_model_quantize_codebook do).
 *
 * The grids are the round-to-nearest ones: int8 scales max |w| / 127 per row, codebook levels and row scales
 * from lpv_codebook_fit on the FP32 weights (by default weighing each weight by its row scale² × its input's
 * energy H_jj: ViT-Tiny on 8 levels 75.5 % top-1 against 72.1 % unweighted); only which grid point each weight
 * takes changes. A pruned layer's pruned blocks stay 0 and its kept blocks absorb the errors (the sweep never
 * moves a weight into a pruned block). With bias correction the mean output error over the calibration inputs
 * becomes 0: b += (W − Ŵ) E[x]. One layer's part is recon.h's lpv_gptq_layer.
 *
 * Statistics: the FP32 model's inputs of every block linear (reconstruct.h, lpv_collect_input_stats with
 * want[] set for the block linears; lpv_gptq_want sets it), one pass; the caller owns them. (Quantizing inside
 * the pruning's final sequential refit instead, each layer on the refit's statistics of the pruned and already
 * quantized layers before it, was tried on ViT-Tiny pruned to 0.8 and kept less: 67.4 against 68.6 % top-1 on
 * 16 levels, 53.9 against 56.5 on 8; docs/benchmarks.md#codebook.)
 * Memory: per layer, two (out, in) weight copies and the sweep's in² scratch, freed before the next layer.
 */
#ifndef LPVIT_QUANTIZE_H
#define LPVIT_QUANTIZE_H

#include "lpvit/error.h"
#include "lpvit/model.h"
#include "lpvit/actscale.h"
#include "lpvit/recon.h"
#include "lpvit/reconstruct.h"
#include "lpvit/smooth.h"

typedef struct {
    int layers;                                 /* layers quantized */
    double seconds;
    double max_damp;                            /* the largest damping a factorization needed */
    /* per layer (model order), relative output error ‖(W − Ŵ) X‖² / ‖W X‖² over the statistics' inputs:
       round to nearest on the same grid, and the sweep's (0 for layers that are not block linears) */
    double err_rtn[LPV_MAX_LAYERS], err_gptq[LPV_MAX_LAYERS];
} lpv_gptq_info;

/* s->want[i] = 1 for the block linears of m (the layers lpv_model_quantize_gptq needs statistics of), and
 * s->prefix_weight = m's patch count: each image's cls (and dist) token counts as much as all its patches. */
void lpv_gptq_want(lpv_model *m, lpv_model_stats *s);

/* Quantizes every block linear of m (FP32, dense or BSR) as described above. Layers already int8 or without
 * statistics are refused (LPV_E_ARG), so call it on an FP32 model with lpv_gptq_want's statistics.
 * Under mpirun every rank computes the same weights from the same summed statistics. */
lpv_status lpv_model_quantize_gptq(lpv_model *m, const lpv_model_stats *s, const lpv_gptq_opts *o,
                                   lpv_gptq_info *info, lpv_err *err);

/* The whole calibrated quantization, as `lpvit quantize --calib-dir` and `lpvit prune --quant` run it: the input
 * statistics of every block linear over ds (prefix tokens weighted prefix_weight times, 0: lpv_gptq_want's
 * default, returned), SmoothQuant when smooth.alpha > 0 (smooth.h; the statistics rescaled, not collected
 * again), with act != LPV_ACT_TOKEN one more FP32 pass for the static input grids (actscale.h) of the layers
 * whose kind is in act_kinds (bit 1 << lpv_layer_kind), then GPTQ's sweep (gptq_rounding) or round to nearest
 * on the same grid. Int8 only for the static grids (a codebook runs in FP32). Collective under mpirun. */
typedef struct {
    lpv_gptq_opts gptq;       /* gptq.codebook: K levels, 0 int8 */
    int gptq_rounding;        /* 0: round to nearest */
    lpv_smooth_opts smooth;   /* smooth.alpha 0: no smoothing */
    int prefix_weight;
    int batch;                /* images per statistics pass (0: 32) */
    lpv_act_mode act;         /* the inputs' grids: per token at run time (default), or static minmax / mse */
    unsigned act_kinds;       /* with a static act: which block linears get one (default LPV_ACT_KINDS_DEFAULT) */
} lpv_quant_calib_opts;

/* qkv, proj and fc1: fc2's input (GELU's output) has a long tail one static grid serves badly (ViT-Tiny on
   val-1000: 82.1 % top-1 with fc2 per token, 81.3 % with all four static; FP32 82.1) */
#define LPV_ACT_KINDS_DEFAULT ((1u << LPV_LK_QKV) | (1u << LPV_LK_PROJ) | (1u << LPV_LK_FC1))
#define LPV_ACT_KINDS_ALL (LPV_ACT_KINDS_DEFAULT | (1u << LPV_LK_FC2))

typedef struct {
    int64_t images;           /* images the statistics saw */
    double stats_seconds;
    lpv_gptq_info gptq;       /* zero unless gptq_rounding */
    lpv_smooth_info smooth;   /* zero unless smooth.alpha > 0 */
    int act_layers;           /* layers given a static input grid */
    /* per layer: the grid, and the squared error per value of quantizing its calibration inputs on it and
       on the min-max grid (the baseline) */
    lpv_qact act[LPV_MAX_LAYERS];
    double act_mse[LPV_MAX_LAYERS], act_mse_minmax[LPV_MAX_LAYERS];
} lpv_quant_calib_info;

/* {lpv_gptq_defaults(), 1, lpv_smooth_defaults() with alpha 0, 0, 32, LPV_ACT_TOKEN, LPV_ACT_KINDS_DEFAULT} */
lpv_quant_calib_opts lpv_quant_calib_defaults(void);
lpv_status lpv_model_quantize_calibrated(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp,
                                         lpv_quant_calib_opts *o, lpv_quant_calib_info *info, lpv_skips *skips,
                                         lpv_err *err);

#endif
