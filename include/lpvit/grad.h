/*
 * grad.h — gradients of a calibration loss with respect to every parameter of
 * a DeiT/ViT (model.h): one forward pass that saves what backward needs, then
 * the backward pass through heads, final norm, blocks, tokens and the patch
 * embedding (llm.c's train_gpt2.c structure on feature-major activations;
 * the backward kernels are in grad_ops.h).
 *
 * Memory ownership:
 *   lpv_grads     owns one arena with a gradient buffer for every parameter
 *                 (same shapes and memory order as the model's: pos (T, D),
 *                 patch weight (D, C*p*p) = timm's (D, C, p, p), linear
 *                 weights (out, in)) and, when made with LPV_GRADS_SQ, one
 *                 weight-sized "squared per-sample gradient" buffer per
 *                 prunable linear (patch embed, qkv, proj, fc1, fc2, head(s)).
 *   lpv_train_ws  owns one arena with every saved activation and all backward
 *                 scratch for up to max_batch images; lpv_forward_backward
 *                 allocates nothing. Memory (floats, ld = round16(B*T)):
 *                   per block  (8D + F) * ld                  x, x_mid, ln1, ln2, qkv, att, fc1 pre-GELU
 *                            + B * heads * T * T              attention probabilities
 *                   plus       (3D + 2F) * ld + (C*p*p + D) * round16(B*patches) + max weight size
 *                 DeiT-Tiny batch 8: 256 MiB; DeiT-B batch 8: 935 MiB (ws->bytes has the
 *                 exact figure). Gradients: 1 × parameters (DeiT-B 331 MiB), 2 × with
 *                 LPV_GRADS_SQ (660 MiB).
 *   Weights are borrowed from the model; dense weights (lpv_linear.w) are
 *   required (a BSR-only layer is rejected).
 *
 * What is accumulated. A call on a batch of B images computes the batch loss
 * L = (1/B) Σ_n L_n, with L_n sample n's own term (see lpv_loss_kind), and
 *   g->param += ∂L/∂param            for every parameter (batch mean; under LPV_GRADS_NO_MEAN not the
 *                                    weights of linears whose per-sample moments are kept)
 *   g->lin.sq += Σ_n (∂L_n/∂W)²       per prunable linear weight, when enabled
 *   g->batches += 1, g->samples += B
 * so after K calls with equal batch sizes, the mean gradient over all samples
 * is g->param / g->batches and the empirical Fisher diagonal is
 * g->lin.sq / g->samples. (With unequal batch sizes g->param / g->batches is
 * a mean of batch means.) lpv_grads_zero resets gradients, squares and counters.
 * The per-sample gradient of a linear weight is B · dY_n X_nᵀ over sample n's
 * own tokens (B small GEMMs instead of one); it costs nothing when disabled.
 *
 * Results on 1 or 2 threads agree up to float rounding; any depth, width,
 * token count, distilled or not (prefix tokens without a head get gradients
 * through attention only, as in HF's DeiT), batch 1..max_batch. The forward
 * pass is recomputed here (its GELU is grad_ops.h's, within 2e-7 of exact), so
 * its logits equal lpv_forward's up to float rounding. One workspace serves
 * one call at a time; the model is only read.
 *
 * Speed (2 threads, AMD EPYC Zen 4, batch 8, forward + backward): DeiT-Tiny
 * ~50 ms/image, DeiT-B ~0.58 s/image (about 3.1 × inference; 2000 images in
 * ~20 min); the squared accumulators add 2-5 %. tests/bench/test_grad_bench.c measures.
 *
 *     lpv_train_ws ws; lpv_grads g; lpv_err err;
 *     lpv_train_ws_init(&ws, &m->cfg, 8, &err);
 *     lpv_grads_init(&g, &m->cfg, LPV_GRADS_SQ, &err);
 *     lpv_loss loss = {.kind = LPV_LOSS_CE, .labels = labels};
 *     for (each batch) lpv_forward_backward(m, &ws, images, B, &loss, &l, NULL, &g, &err);
 *     ... g.blocks[3].fc1.w / g.batches, g.blocks[3].fc1.sq / g.samples ...
 *     lpv_grads_free(&g); lpv_train_ws_free(&ws);
 */
#ifndef LPVIT_GRAD_H
#define LPVIT_GRAD_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/error.h"
#include "lpvit/model.h"
#include "lpvit/names.h"

/* ---- losses ---- */

#define LPV_LOSS_LIST(X) \
    X(LPV_LOSS_CE, "ce") X(LPV_LOSS_MEAN_SQ, "mean-sq") X(LPV_LOSS_SELF_CE, "self-ce") X(LPV_LOSS_KL, "kl")
typedef enum {
    /* LPV_LOSS_CE       L_n = cross-entropy(logits_n, labels[n])
     * LPV_LOSS_MEAN_SQ  L_n = mean over classes of logits_n²; L = mean(logits²) (LPViT's baseline)
     * LPV_LOSS_SELF_CE  L_n = cross-entropy(logits_n, argmax logits_n) (argmax not differentiated)
     * LPV_LOSS_KL       L_n = KL(softmax(target_n) ‖ softmax(logits_n)) */
    LPV_LOSS_LIST(LPV_ENUM_VALUE)
    LPV_LOSS_COUNT
} lpv_loss_kind;

typedef struct {
    lpv_loss_kind kind;
    const int *labels;          /* (B) class indices in [0, classes): LPV_LOSS_CE */
    const float *target_logits; /* (B, classes): LPV_LOSS_KL */
} lpv_loss;

/* "ce", "mean-sq", "self-ce", "kl". */
const char *lpv_loss_name(lpv_loss_kind k);
lpv_status lpv_loss_parse(const char *s, lpv_loss_kind *out, lpv_err *err);

/* ---- gradient buffers ---- */

enum {
    LPV_GRADS_SQ = 1,     /* also keep Σ_n (∂L_n/∂W)² per prunable linear weight */
    LPV_GRADS_NO_MEAN = 2 /* a linear whose per-sample moments are kept (sq or bsq) leaves w at zero: for callers
                             that read only the moments (the sum costs a pass over the weight per image) */
};

typedef struct {
    int out, in;
    float *w;  /* (out, in) */
    float *b;  /* (out) */
    float *sq; /* (out, in) Σ_n (∂L_n/∂W)², NULL unless LPV_GRADS_SQ */
    float *bsq;/* (nbr, nbc) Σ_n (Σ_block ∂L_n/∂W ⊙ W)², NULL unless lpv_grads_enable_blocks */
    int no_mean; /* LPV_GRADS_NO_MEAN: w is not summed when sq or bsq is */
} lpv_linear_grad;

typedef struct {
    float *ln1_w, *ln1_b; /* (D) */
    lpv_linear_grad qkv;  /* (3D, D) */
    lpv_linear_grad proj; /* (D, D) */
    float *ln2_w, *ln2_b; /* (D) */
    lpv_linear_grad fc1;  /* (F, D) */
    lpv_linear_grad fc2;  /* (D, F) */
} lpv_block_grads;

typedef struct {
    lpv_config cfg;
    int flags;
    float *cls;               /* (D) */
    float *dist;              /* (D) or NULL */
    float *pos;               /* (T, D) */
    lpv_linear_grad patch;    /* (D, C*p*p) */
    lpv_block_grads *blocks;  /* (depth) */
    float *norm_w, *norm_b;   /* (D) */
    lpv_linear_grad head;     /* (classes, D) */
    lpv_linear_grad head_dist;/* (classes, D); w == NULL unless n_outputs == 2 */
    int64_t batches, samples; /* calls and images accumulated since the last zero */
    int block_R, block_C;     /* lpv_grads_enable_blocks, else 0 */
    float *all;               /* every gradient float, contiguous (n_all) */
    int64_t n_all;
    float *all_sq;            /* every squared accumulator, contiguous (n_sq), or NULL */
    int64_t n_sq;
    lpv_arena arena;
} lpv_grads;

lpv_status lpv_grads_init(lpv_grads *g, const lpv_config *cfg, int flags, lpv_err *err);
/* Also accumulate, per prunable linear and per R x C block of its weight, Σ_n (Σ_block G_n ⊙ W)²:
 * the empirical-Fisher quadratic form of zeroing the block with its within-block correlations
 * (w_bᵀ F_bb w_b = mean_n (g_n,b · w_b)²). Needs the weights at backward time (the model's). */
lpv_status lpv_grads_enable_blocks(lpv_grads *g, int R, int C, lpv_err *err);
void lpv_grads_zero(lpv_grads *g);
void lpv_grads_free(lpv_grads *g);

/* The gradient of one linear layer of lpv_model_layers (by kind and block), or NULL. */
lpv_linear_grad *lpv_grads_linear(lpv_grads *g, lpv_layer_kind kind, int block);

/* One parameter's gradient under its timm name and shape (e.g. "blocks.0.attn.qkv.weight" (576, 192),
   "pos_embed" (1, 197, 192), "patch_embed.proj.weight" (192, 3, 16, 16)). */
typedef struct {
    char name[64];
    float *data; /* into the lpv_grads arena */
    int ndim;
    int64_t shape[4];
    int64_t n;
} lpv_grad_tensor;

/* Fills up to cap entries in timm state_dict order; returns how many parameters there are. */
int lpv_grads_list(lpv_grads *g, lpv_grad_tensor *out, int cap);

/* ---- training workspace (saved activations, llm.c's ActivationTensors) ---- */

typedef struct {
    float *x;          /* (D, ld) residual stream entering the block */
    float *ln1;        /* (D, ld) */
    float *ln1_mean, *ln1_rstd; /* (ld) */
    float *qkv;        /* (3D, ld) */
    float *probs;      /* (B*heads, T, T) softmax rows, query i in row i */
    float *att;        /* (D, ld) attention output (input of proj) */
    float *x_mid;      /* (D, ld) residual after the attention branch */
    float *ln2;        /* (D, ld) */
    float *ln2_mean, *ln2_rstd; /* (ld) */
    float *h;          /* (F, ld) fc1 output before GELU */
} lpv_train_layer;

typedef struct {
    lpv_config cfg;
    int max_batch;
    int threads;       /* lpv_threads_get() at init: scratch is per thread */
    int ld_max, ldp_max, ldh_max;
    int64_t tmp_floats;
    float *patches;    /* (C*p*p, ldp) */
    lpv_train_layer *layers; /* (depth) */
    float *x_out;      /* (D, ld) residual after the last block */
    float *hx, *hxn;   /* (D, ldh) head tokens (column k*B + b = token k of image b) and their LayerNorm */
    float *h_mean, *h_rstd; /* (ldh) */
    float *lt;         /* (classes, ldh) head outputs */
    float *logits;     /* (B, classes) */
    float *dlogits;    /* (B, classes) ∂L/∂logits */
    float *losses;     /* (B) per-sample loss L_n of the last call */
    /* backward scratch */
    float *dres;       /* (D, ld) gradient of the residual stream */
    float *dd;         /* (D, ld) gradient of a LayerNorm / attention output */
    float *dbig;       /* (max(3D, F), ld) gradient of qkv or fc1 output */
    float *gbuf;       /* (F, ld) GELU output (recomputed in backward) */
    float *dpe;        /* (D, ldp) gradient of the patch embeddings */
    float *dhx, *dhxn, *dlt; /* (D, ldh), (D, ldh), (classes, ldh) */
    float *att_scratch;/* per thread lpv_attention_backward_scratch(T) */
    float *tmp;        /* per-sample weight gradient and a row per thread: max(out*in) + threads * max(in) floats */
    size_t bytes;      /* total reserved */
    lpv_arena arena;
} lpv_train_ws;

lpv_status lpv_train_ws_init(lpv_train_ws *ws, const lpv_config *cfg, int max_batch, lpv_err *err);
void lpv_train_ws_free(lpv_train_ws *ws);

/*
 * images (B, C, S, S) → loss and gradients. Writes the batch-mean loss to *loss_out (optional),
 * the logits (B, classes) to logits_out (optional), the per-sample losses to ws->losses, and
 * accumulates into g as described above. g == NULL: forward and loss only. The logits equal
 * lpv_forward's up to float rounding.
 */
lpv_status lpv_forward_backward(const lpv_model *m, lpv_train_ws *ws, const float *images, int B, const lpv_loss *loss,
                                float *loss_out, float *logits_out, lpv_grads *g, lpv_err *err);

/*
 * Block l of m alone, for block-wise reconstruction. x (D, ldx), ldx >= B*T: the block's input for
 * B images (feature-major, image b in columns [b*T, (b+1)*T)); target (D, ldx): the output it
 * should give. Computes x' = block_l(x) (left in ws->x_out, stride round16(B*T)), the loss
 *     L = Σ (x' - target)² / (B·T·D)            over the valid columns, into *loss_out (optional),
 * and, when bg != NULL, accumulates ∂L/∂(block l's parameters) into bg (no per-sample squares).
 * Only ws->layers[0] is used: a workspace made for a config of depth 1 and the same width, heads,
 * MLP width and token count serves every block (and g's blocks[0] can be bg).
 */
lpv_status lpv_block_forward_backward(const lpv_model *m, int l, lpv_train_ws *ws, const float *x, const float *target,
                                      int ldx, int B, double *loss_out, lpv_block_grads *bg, lpv_err *err);

#endif
