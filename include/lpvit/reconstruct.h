/*
 * reconstruct.h — layer-wise reconstruction of a whole pruned model
 * (recon.h does the math for one layer).
 *
 * Input statistics: one forward pass of the dense model over calibration
 * images, with a tap on every selected linear layer's input, gives each
 * layer's H = Σ x xᵀ and Σ x (lpv_collect_input_stats).
 *
 * Updates for fixed block masks (lpv_reconstruct):
 *   non-sequential  each layer repaired from the dense model's statistics
 *                   alone (lsq or obs, then bias correction).
 *   sequential      SparseGPT/OBC style, block by block: the residual stream
 *                   entering block l is cached for every calibration image,
 *                   for the dense model and for the model pruned so far; one
 *                   pass of block l over both gives, per linear, the pruned
 *                   model's input statistics H̃ and the cross statistics
 *                   G = Σ x x̃ᵀ, so each layer is refit to reproduce the DENSE
 *                   model's output from the PRUNED model's inputs (errors of
 *                   earlier layers are corrected, not compounded); then block l
 *                   of the pruned model is re-run with its new weights to give
 *                   the next block's input. Pruned heads are done the same way.
 *                   refit_heads: the classifier heads the masks leave dense are
 *                   refit too (least squares over all their columns), so the
 *                   pruned model's final features map to the target's logits;
 *                   heads see one token per image, so their damping is
 *                   head_damp (stronger than the blocks': fewer samples).
 *                   Cost: about three forward passes over the images; memory:
 *                   2 × D × tokens × images floats for the cached streams.
 *                   With tune.epochs > 0, each block is then tuned as a whole
 *                   (blocktune.h) on the same cached streams before the pruned
 *                   stream moves on: input = the pruned stream, target = the
 *                   dense stream after the block.
 *                   final_target, when given: the tuning and the heads match
 *                   that model's outputs instead of `dense`'s (prune --steps:
 *                   the input model, while each step's refit targets the step
 *                   before); its stream is cached too (memory +50 %).
 *                   Without tuning, the heads alone need far less of that
 *                   model: record_heads / head_targets keep its heads' inputs
 *                   and logits from an earlier pass (lpv_head_targets).
 * The model is modified in place: its pruned layers' dense weights are
 * replaced by the updated ones (zeros in pruned blocks); the caller converts
 * them to BSR afterwards. Statistics own their matrices (lpv_model_stats_free).
 */
#ifndef LPVIT_RECONSTRUCT_H
#define LPVIT_RECONSTRUCT_H

#include <stdint.h>

#include "lpvit/blocktune.h"
#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
#include "lpvit/model.h"
#include "lpvit/names.h"
#include "lpvit/recon.h"

/* The heads' damping: with one token per image a head's refit has ~T times fewer samples than a block's
 * layers. Measured on ViT-Tiny at 0.5 / 32x32 (1000 val): damp 0.01 overfits (256 images: 32.9 -> 17.8 %),
 * 10 keeps the gain from 128 to 1000 images (36.1 - 38.0 %), 100 gives part of it back (34.3 %). */
#define LPV_HEAD_DAMP 10.0

#define LPV_UPDATE_LIST(X) \
    X(LPV_UPDATE_NONE, "none") X(LPV_UPDATE_BIAS, "bias") X(LPV_UPDATE_LSQ, "lsq") X(LPV_UPDATE_OBS, "obs")
typedef enum { LPV_UPDATE_LIST(LPV_ENUM_VALUE) LPV_UPDATE_COUNT } lpv_update_kind;

const char *lpv_update_name(lpv_update_kind u);
lpv_status lpv_update_parse(const char *s, lpv_update_kind *out, lpv_err *err);

typedef struct {
    int n;                                  /* model layers (lpv_model_layers order) */
    int want[LPV_MAX_LAYERS];               /* statistics gathered for this layer */
    lpv_layer_stats st[LPV_MAX_LAYERS];
    int64_t images;
    /* lpv_collect_input_stats: each prefix token (cls, dist) of a block linear's input counts this many times
       (0 or 1: once, like every patch token). The logits read only the cls token, whose features differ from
       the patches'; with plain token averages a fit may move its error into directions only the cls token
       uses (GPTQ on ViT-Tiny, 16 levels: 77.0 % top-1 plain, 81.0 % with the cls token weighted as all the
       patches together, docs/benchmarks.md). */
    int prefix_weight;
} lpv_model_stats;

/* H and Σx for every layer with want[i] set, over the dataset's images (batch images per pass). Under mpirun
 * (dist.h), collective: each rank passes its share, every rank gets the sums over all. */
lpv_status lpv_collect_input_stats(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch,
                                   lpv_skips *skips, lpv_model_stats *s, lpv_err *err);
/* The pass under it: m's forward over this rank's share of ds (batch images at a time, a progress bar named
 * what), tap(ctx, layer, X, ld, ncols) on every linear input; *images = the images this rank ran. Collective
 * (one rank's failure is every rank's); reducing what the tap gathered is the caller's. */
typedef void (*lpv_tap_fn)(void *ctx, int layer, const float *X, int ld, int ncols);
lpv_status lpv_tap_pass(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, int batch, lpv_skips *skips,
                        lpv_tap_fn tap, void *ctx, const char *what, int64_t *images, lpv_err *err);
void lpv_model_stats_free(lpv_model_stats *s);

/* What the heads' refit needs of its target model, recorded by one sequential pass (the final-norm
 * tokens each head reads, the heads' weights and the logits of that pass's `dense` model, per image) so
 * that a later pass over the same images in the same order can refit the heads towards that model
 * without holding it and running it again (prune --steps without tuning: step 1's `dense` is the input
 * model, which the final step's heads must match). Owns its arrays: lpv_head_targets_free.
 * Memory: outputs × (dim × images + classes × dim) + images × classes floats (DeiT-B, 2000 images: 17 MiB). */
typedef struct {
    int images, outputs, dim, classes;
    float *x;      /* (outputs, dim, images): head k's input for image i at x[(k * dim + d) * images + i] */
    float *w, *b;  /* (outputs, classes, dim), (outputs, classes): the heads' weights and biases */
    float *logits; /* (images, classes): the model's output (the heads' mean when there are two) */
} lpv_head_targets;

void lpv_head_targets_free(lpv_head_targets *h);

typedef struct {
    lpv_update_kind update;
    int sequential;
    lpv_recon_opts recon;
    lpv_tune_opts tune;  /* sequential only: block-wise tuning after each block's refit (tune.epochs 0: off) */
    const lpv_model *final_target; /* whose outputs the tuning and the heads match (NULL: `dense`, the refit's target) */
    int batch;
    lpv_skips *skips;   /* optional: unreadable images are counted here (loader.h) */
    int refit_heads;    /* sequential only: also refit the heads no mask prunes (lsq, all columns kept) */
    double head_damp;   /* damping of every head's refit, a fraction of its mean diagonal (0: recon.damp) */
    lpv_head_targets *record_heads;       /* sequential: filled with `dense`'s head targets (NULL: not recorded) */
    const lpv_head_targets *head_targets; /* sequential: the heads' refit matches these, recorded over the same
                                             images, instead of final_target or `dense` (NULL: not used) */
    const char *label;  /* sequential: the progress label ("refit, step 2/4"; NULL: "refit") */
    /* sequential: memory the dense model's block inputs may take to be kept for every image, so that one
       dense pass per block serves all its layers instead of a pass per layer (0: a pass per layer). The same
       weights either way, bit for bit; lpv_prune gives a quarter of the physical memory. */
    int64_t capture_bytes;
    /* sequential: 1 runs the pruned model's passes dense, multiplying its pruned blocks' zeros. By default each
       refit layer is packed as BSR for the rest of its block's passes (not with block tuning, nor where
       lpv_refit_packs_pay says no); the packs are gone when lpv_reconstruct returns. Weights within float
       rounding of each other. */
    int no_pack;
} lpv_reconstruct_opts;

/* Whether the refit's passes run faster on lpvit's packed kernels than on OpenBLAS over the dense weights: not
   under the reference ISA, and not where OpenBLAS's AVX2 sgemm beats lpvit's AVX2 kernel (lpv_dense_kernel_auto,
   cpu.h), since a pass at density 0.5-0.9 on a kernel at half OpenBLAS's rate would be slower. */
int lpv_refit_packs_pay(void);

typedef struct {
    double seconds;
    double max_damp;          /* largest damping any factorization needed */
    int retried;              /* factorizations that needed more damping */
    double err_masked[LPV_MAX_LAYERS], err_updated[LPV_MAX_LAYERS]; /* relative output error ‖ΔW X‖² / ‖W X‖² (non-seq) */
    /* block tuning (sequential, tune.epochs > 0): per block, the output's mean squared error against the
       dense block before and after tuning, normalized by the dense output's mean square */
    int tuned_blocks, tune_reverted;
    double tune_seconds;
    double tune_before[LPV_MAX_DEPTH], tune_after[LPV_MAX_DEPTH];
    /* heads (sequential, when any head was refit): the logits' squared error against the target's on the
       calibration images, normalized by the target logits' mean square, before and after the heads' refit */
    int heads_refit;
    double logit_err_before, logit_err_after;
    int64_t capture_bytes; /* sequential: what the one-pass capture kept (0: a pass per layer) */
    int packed;               /* sequential: the pruned model's passes ran its refit layers as BSR (no_pack) */
} lpv_reconstruct_info;

/* One layer, fixed mask: W (out, in) dense on entry, repaired on return; b updated when bias != NULL. */
lpv_status lpv_reconstruct_layer(float *W, float *b, int out, int in, int R, int C, const uint8_t *mask,
                                 const lpv_layer_stats *st, lpv_update_kind u, const lpv_recon_opts *o,
                                 lpv_recon_info *info, const char *name, lpv_err *err);

/*
 * Applies masks (per layer in model order; NULL = layer not pruned) with the chosen update.
 * stats: the dense model's statistics (needed for non-sequential lsq/obs/bias).
 * Sequential mode re-reads the images (ds, pp) and needs `dense`, an untouched copy of the model.
 * Under mpirun (dist.h), collective: each rank caches its share of ds, each layer is refit from the sums
 * over all ranks and rank 0's weights are broadcast; every rank needs at least one image, and block tuning
 * is refused (LPV_E_UNSUPPORTED).
 */
lpv_status lpv_reconstruct(lpv_model *m, const lpv_model *dense, uint8_t *const *masks, int R, int C,
                           const lpv_model_stats *stats, const lpv_dataset *ds, const lpv_preproc *pp,
                           const lpv_reconstruct_opts *o, lpv_reconstruct_info *info, lpv_err *err);

#endif
