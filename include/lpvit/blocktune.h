/*
 * blocktune.h — block-wise reconstruction by gradient descent (BRECQ's
 * "block reconstruction", applied to pruning): after the layer-wise refit of
 * transformer block l, the kept weights of its four linears, their biases
 * and its two LayerNorms are tuned jointly with Adam so that the pruned
 * block, fed the pruned model's own inputs, reproduces the dense model's
 * block output:
 *     min  Σ_images ‖ block_l(x̃; Ŵ) − y ‖²      y = dense block l on the dense stream
 * over the calibration images cached by the sequential reconstruction. The
 * closed-form refit fits each linear alone through fixed inputs; this fits
 * them together through LayerNorm, attention and GELU. Pruned blocks stay
 * exactly zero (their gradients are dropped). No labels, no logits: the
 * target is the dense block's output, as in layer-wise reconstruction.
 *
 * Learning rate: cosine decay from lr to 0 over all steps of the block.
 * The block's weights are kept as they were when the tuned error on the
 * cached images is not lower than the starting one (info->reverted).
 *
 * Memory: lpv_tuner owns one training workspace for a depth-1 block at
 * `batch` images (grad.h), one block's gradients, Adam's two moments and a
 * snapshot of the block's parameters (DeiT-B: 7.1 M floats each, with the
 * workspace ~0.3 GiB at batch 8; peak prune memory stayed 2.7 GB).
 *
 *     lpv_tuner t; lpv_tuner_init(&t, &m->cfg, &opts, &err);
 *     for each block l: lpv_block_tune(&t, m, l, xs, ys, bsz, n, masks, R, C, &info, &err);
 *     lpv_tuner_free(&t);
 */
#ifndef LPVIT_BLOCKTUNE_H
#define LPVIT_BLOCKTUNE_H

#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/grad.h"
#include "lpvit/model.h"

typedef struct {
    int epochs;    /* passes over the cached images per block; 0 turns tuning off */
    float lr;      /* Adam's peak learning rate */
    int batch;     /* images per Adam step */
    uint64_t seed; /* order of the mini-batches */
} lpv_tune_opts;

/* {0 epochs, lr 3e-4, batch 8, seed 0} */
lpv_tune_opts lpv_tune_defaults(void);

typedef struct {
    double mse_before, mse_after; /* mean squared error per output entry over the cached images */
    int steps;
    int reverted;                 /* 1: tuning did not lower the error, weights left as they were */
} lpv_tune_info;

typedef struct {
    lpv_tune_opts o;
    lpv_config cfg;     /* depth 1 */
    lpv_train_ws ws;
    lpv_grads g;
    int64_t n_par;      /* floats in one block's parameters */
    float *m1, *m2, *snap; /* Adam moments and the pre-tuning snapshot (n_par each) */
    lpv_arena arena;
} lpv_tuner;

lpv_status lpv_tuner_init(lpv_tuner *t, const lpv_config *cfg, const lpv_tune_opts *o, lpv_err *err);
void lpv_tuner_free(lpv_tuner *t);

/*
 * Tunes block l of m in place. n chunks of cached streams: xs[i] the block's inputs and ys[i] its
 * targets, each (D, round16(bsz[i]*T)) feature-major. masks[j] for qkv, proj, fc1, fc2: the layer's
 * R x C block mask (ceil(out/R), ceil(in/C)), nonzero = kept, or NULL (every weight trainable).
 * The layers must hold dense weights with zeros in pruned blocks.
 */
lpv_status lpv_block_tune(lpv_tuner *t, lpv_model *m, int l, float *const *xs, float *const *ys, const int *bsz, int n,
                          const uint8_t *const masks[4], int R, int C, lpv_tune_info *info, lpv_err *err);

#endif
