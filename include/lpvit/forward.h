/*
 * forward.h — batched inference of a DeiT/ViT (model.h) on preprocessed
 * images, computing exactly what timm computes.
 *
 * A workspace holds every activation for up to max_batch images in one arena,
 * sized once by lpv_workspace_init; lpv_forward allocates nothing. Images are
 * (B, C, S, S) floats (already normalized), logits (B, classes). Activations
 * are feature-major (linear.h): x (D, ld) with image b's tokens in columns
 * [b*T, (b+1)*T), ld = round16(B*T).
 *
 * With ws->profile set, each op's wall time and FLOPs are accumulated there
 * (--profile): the per-op breakdown of where time goes.
 *
 *     lpv_workspace ws;
 *     lpv_workspace_init(&ws, &m->cfg, 16, &err);
 *     lpv_forward(m, &ws, images, 16, logits, &err);
 *     lpv_workspace_free(&ws);
 */
#ifndef LPVIT_FORWARD_H
#define LPVIT_FORWARD_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/error.h"
#include "lpvit/model.h"

typedef enum {
    LPV_OP_PATCH, LPV_OP_LN, LPV_OP_QKV, LPV_OP_ATTN, LPV_OP_PROJ, LPV_OP_FC1, LPV_OP_FC2, LPV_OP_HEAD,
    LPV_OP_QUANT /* quantizing the int8 linears' inputs */, LPV_OP_OTHER, LPV_OP_COUNT
} lpv_op;

typedef struct {
    double sec[LPV_OP_COUNT];  /* wall seconds */
    double flop[LPV_OP_COUNT]; /* useful FLOPs (2 per multiply-add; BSR counts kept blocks) */
    int64_t images;
    int64_t calls;
} lpv_profile;

const char *lpv_op_name(lpv_op op);

/* Resume points of a block (lpv_workspace.resume). What the workspace must hold:
 *   LPV_RESUME_PROJ  x: the block's input, xn: attention's output (what a block stopped at proj's tap leaves);
 *                    proj runs first, its tap is not called again
 *   LPV_RESUME_MLP   x: the stream after attention's residual add (what a block stopped at fc1's or fc2's tap
 *                    leaves); LayerNorm 2 runs first, then fc1's tap */
typedef enum { LPV_RESUME_NONE = 0, LPV_RESUME_PROJ = 1, LPV_RESUME_MLP = 2 } lpv_resume;

typedef struct {
    lpv_config cfg;
    int max_batch;
    int ld_max;      /* round16(max_batch * T) */
    int ldp_max;     /* round16(max_batch * patches) */
    float *x;        /* (D, ld) residual stream */
    float *xn;       /* (D, ld) LayerNorm output, reused for attention output */
    float *big;      /* (max(3D, F), ld) qkv, then MLP hidden */
    float *patches;  /* (C*p*p, ldp) */
    float *pe;       /* (D, ldp) patch embeddings */
    float *hx;       /* (D, n_outputs * round16(max_batch)) tokens the heads read */
    float *lt;       /* (classes, n_outputs * round16(max_batch)) head outputs, feature-major */
    float *scratch;  /* attention scores, per thread */
    int scratch_threads;
    uint32_t *xbf;   /* (max(D, F) / 2, ld) a linear input as BF16 pairs, or NULL: BF16 off (lpv_workspace_use_bf16) */
    uint32_t *xq;    /* ((max(D, F) + 3) / 4, ld) a linear input as int8 quads, or NULL: int8 off (lpv_workspace_use_int8) */
    float *xqa, *xqc;/* (ld) its per-column scale and scale x zero point */
    float *xqr;      /* (threads, 2, ld) the int8 fc1's record of its output's range, which fc2's quantizer uses */
    int q8_unfused;  /* 1: fc2's quantizer finds the range itself (tests compare the two; same bytes) */
    int attn_fp32;   /* 1: attention stays FP32 with BF16 on (tests and benchmarks compare the two) */
    int attn_int8;   /* 1: attention's products in int8 (lpv_attention_fm_q8; FP32 where it cannot run);
                        set from the model's attention by lpv_workspace_init_for (lpv_attention_int8_for) */
    lpv_profile *profile; /* optional, caller-owned */
    /* optional: called with the input of every linear layer just before it runs;
       layer = index in lpv_model_layers order, X (in, ld) with ncols valid columns */
    void (*tap)(void *ctx, int layer, const float *X, int ld, int ncols);
    void *tap_ctx;
    /* >= 0: lpv_forward_block returns right after tapping this layer, skipping the rest of the
       block (ws->x is then NOT the block's output); -1 (the default): run whole blocks */
    int tap_stop;
    /* where the next lpv_forward_block starts (then back to LPV_RESUME_NONE): the state a stopped block left,
       put back by the caller, lets it go on without running the block's start again (the sequential refit
       runs the pruned model one linear further per pass) */
    lpv_resume resume;
    lpv_arena arena;
} lpv_workspace;

lpv_status lpv_workspace_init(lpv_workspace *ws, const lpv_config *cfg, int max_batch, lpv_err *err);
void lpv_workspace_free(lpv_workspace *ws);
/* Turns BF16 on for this workspace: every linear that has a BF16 pack (lpv_model_pack_bf16) then runs in
 * BF16 (its input converted into ws->xbf first); the others stay FP32. Attention's two products run in BF16
 * too (lpv_attention_fm_bf16, ops.h: on ISA avx512bf16) unless attn_fp32; all other ops stay FP32. */
lpv_status lpv_workspace_use_bf16(lpv_workspace *ws, lpv_err *err);
/* Turns int8 on: every linear with int8 weights (lpv_model_quantize_int8) runs in int8 (its input quantized
 * into ws->xq first); int8 layers go before BF16 ones when a model has both. */
lpv_status lpv_workspace_use_int8(lpv_workspace *ws, lpv_err *err);
/* lpv_workspace_init for m's architecture, with BF16 / int8 on when m has BF16 packs / int8 weights, and
 * attention as m->attention says (attn_int8 = lpv_attention_int8_for(m, has int8 weights), attn_fp32 when
 * LPV_ATTN_FP32). */
lpv_status lpv_workspace_init_for(lpv_workspace *ws, const lpv_model *m, int max_batch, lpv_err *err);
/* 1 when m's attention runs in int8 in a workspace whose block linears run in int8 (int8_linears) or not:
 * LPV_ATTN_INT8 always, LPV_ATTN_AUTO with int8 linears where lpv_attention_q8_runs(head size). */
int lpv_attention_int8_for(const lpv_model *m, int int8_linears);
/* What runs m's attention in a workspace made for it now (lpv_workspace_init_for): "int8", "bf16" or "fp32"
 * (the reports' "attention"). */
const char *lpv_model_attention_name(const lpv_model *m);

/* images (B, C, S, S) → logits (B, classes). B <= ws->max_batch. */
lpv_status lpv_forward(const lpv_model *m, lpv_workspace *ws, const float *images, int B, float *logits,
                       lpv_err *err);

/* The same pass in pieces, for callers that work block by block (layer-wise reconstruction):
 * begin fills ws->x (D, round16(B*T)) with the embedded tokens, block runs block l on ws->x in
 * place, end applies the final norm and heads. ws->x may be saved and restored between calls. */
lpv_status lpv_forward_begin(const lpv_model *m, lpv_workspace *ws, const float *images, int B, lpv_err *err);
void lpv_forward_block(const lpv_model *m, lpv_workspace *ws, int l, int B);
void lpv_forward_end(const lpv_model *m, lpv_workspace *ws, int B, float *logits);

/* The residual stream's first value, shared by the forward and the backward pass (grad.h):
 * x (D, ld) <- each image's tokens [cls | dist | patch embeddings] + pos, image b at columns
 * [b T, (b + 1) T); pe (D, ldp) holds the patch embeddings, image b's G² at [b G², (b + 1) G²). */
void lpv_embed_tokens(const lpv_model *m, float *x, int ld, const float *pe, int ldp, int B);

/* Multiply-adds of one image's forward pass: linear layers (dense shapes), and attention matmuls. */
typedef struct {
    double linear_macs;    /* patch embed + blocks + heads, dense */
    double attention_macs; /* q k^T and p v */
} lpv_macs;
lpv_macs lpv_model_macs(const lpv_config *cfg);

/* What pruning left of a model, per image: weights and multiply-adds of its linears (a layer's kept
 * fraction is its kept blocks / all blocks), and of the whole forward pass with attention's matmuls. */
typedef struct {
    int layers, pruned;                     /* linear layers, and those stored as BSR */
    double weights_dense, weights_kept;     /* all linear layers */
    double linear_macs_dense, linear_macs_kept;
    double model_macs_dense, model_macs_kept; /* + q k^T and p v */
} lpv_sparsity;
void lpv_model_sparsity(lpv_model *m, lpv_sparsity *s);

#endif
