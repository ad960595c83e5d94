/*
 * model.h — DeiT/ViT architecture, weight loading (timm and Hugging Face key
 * names), and the table of linear layers the pruner and the benchmarks walk.
 *
 * lpv_model_load reads a .safetensors file (timm names) or a Hugging Face
 * folder (config.json + model.safetensors, `vit.` or `deit.` prefix), infers
 * the architecture from tensor shapes (width from cls_token, depth from the
 * highest block index, tokens from pos_embed, patch from the patch
 * embedding), takes heads from config.json, the caller, or the known widths
 * (192→3, 384→6, 768→12), and checks that every expected tensor is present
 * with its exact shape and that nothing unexpected is there. HF's separate
 * query/key/value are concatenated into timm's fused qkv (rows q|k|v).
 * All weights are converted to F32 into one arena owned by the model;
 * lpv_model_free releases everything. Layer names in reports and in files
 * lpvit writes are timm's, whatever the source convention.
 *
 *     lpv_model *m; lpv_err err;
 *     if (lpv_model_load(&m, "deit_tiny.safetensors", NULL, &err)) die(err.msg);
 *     ... lpv_forward(m, ws, images, B, logits, &err) (forward.h) ...
 *     lpv_model_free(m);
 */
#ifndef LPVIT_MODEL_H
#define LPVIT_MODEL_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/error.h"
#include "lpvit/linear.h"
#include "lpvit/names.h"

#define LPV_MAX_DEPTH 256
#define LPV_MAX_LAYERS (4 * LPV_MAX_DEPTH + 3) /* linear layers: patch, 4 per block, 2 heads */

#define LPV_NAMES_LIST(X) X(LPV_NAMES_TIMM, "timm") X(LPV_NAMES_HF_VIT, "hf-vit") X(LPV_NAMES_HF_DEIT, "hf-deit")
typedef enum { LPV_NAMES_LIST(LPV_ENUM_VALUE) LPV_NAMES_COUNT } lpv_names;

typedef struct {
    int dim;         /* D: embedding width */
    int depth;       /* number of transformer blocks */
    int heads;       /* attention heads (D % heads == 0) */
    int mlp;         /* hidden width of the MLP (4D for DeiT) */
    int patch;       /* patch side (16) */
    int img;         /* input side (224) */
    int chans;       /* input channels (3) */
    int classes;     /* classifier outputs */
    int n_prefix;    /* tokens before the patches: 1 (cls) or 2 (cls, dist) */
    int n_tokens;    /* n_prefix + (img/patch)^2 */
    int n_outputs;   /* 1: head(token 0); 2: (head(token 0) + head_dist(token 1)) / 2 */
    float ln_eps;    /* LayerNorm epsilon: timm 1e-6, HF config (1e-12) */
    lpv_names names; /* key-name convention of the source file */
} lpv_config;

typedef struct {
    float *ln1_w, *ln1_b; /* (D) */
    lpv_linear qkv;       /* (3D, D), rows q | k | v, heads split inside each */
    lpv_linear proj;      /* (D, D) */
    float *ln2_w, *ln2_b; /* (D) */
    lpv_linear fc1;       /* (F, D) */
    lpv_linear fc2;       /* (D, F) */
} lpv_block;

/* Attention's two products: AUTO (0, the default) as the block linears run: int8 when they are int8 and an
 * int8 attention kernel runs here (lpv_attention_q8_runs), BF16 when they are BF16 and its kernel runs, else
 * FP32; FP32 always; INT8 whatever the linears (FP32 where no int8 kernel runs). */
typedef enum { LPV_ATTN_AUTO = 0, LPV_ATTN_FP32, LPV_ATTN_INT8 } lpv_attention;

typedef struct lpv_model {
    lpv_config cfg;
    float *cls;          /* (D) */
    float *dist;         /* (D) or NULL */
    float *pos;          /* (T, D) */
    lpv_linear patch;    /* (D, C*p*p): the conv as a GEMM over flattened patches (c, ky, kx) */
    lpv_block *blocks;   /* (depth) */
    float *norm_w, *norm_b;
    lpv_linear head;     /* (classes, D) */
    lpv_linear head_dist;/* (classes, D); w == NULL unless n_outputs == 2 */
    lpv_arena arena;     /* owns every weight */
    char path[1024];     /* the safetensors file weights came from */
    char arch[96];       /* timm architecture name when known (metadata or inferred) */
    char src_dtype[8];   /* dtype of the source weights */
    char sha256[65];     /* of the weights file; "" until lpv_model_hash */
    char *lpvit_meta;    /* __metadata__["lpvit"] of a pruned file (arena), or NULL */
    lpv_attention attention; /* how workspaces made for it (lpv_workspace_init_for, the bench) run attention's two
                                products (lpv_attention_int8_for, forward.h); a run-time choice, not saved */
} lpv_model;

typedef struct {
    int heads;        /* 0: from config.json or the width table */
    float ln_eps;     /* 0: from config.json, else 1e-6 */
    int allow_extra;  /* ignore tensors the architecture does not use */
} lpv_model_opts;

lpv_status lpv_model_load(lpv_model **out, const char *path, const lpv_model_opts *opts, lpv_err *err);
/* Random weights (timm-style init, seeded) for a given config; names = timm. */
lpv_status lpv_model_random(lpv_model **out, const lpv_config *cfg, uint64_t seed, lpv_err *err);
void lpv_model_free(lpv_model *m);
/* A copy of a dense model's weights (no BSR or packed layers; it must be dense) in an arena of its own, with
 * its config, path, arch and hash. Free it with lpv_model_free. */
lpv_status lpv_model_clone(lpv_model **out, const lpv_model *src, lpv_err *err);
/* SHA-256 of the weights file, computed once. */
const char *lpv_model_hash(lpv_model *m, lpv_err *err);
typedef struct {
    int dense_masked;            /* write pruned layers as dense weights with zero blocks */
    int n_meta;                  /* extra __metadata__ entries */
    const char *meta_keys[4];
    const char *meta_values[4];
    int bf16;                    /* every float tensor as BF16 (nearest, ties to even): half the file */
} lpv_save_opts;

/* Writes the model with timm names (F32, or BF16 with o->bf16) atomically. Pruned layers go out as
 * <name>.bsr_values / .bsr_col_indices / .bsr_row_ptr unless dense_masked.
 * "lpvit.arch" metadata records heads and eps. Refuses to overwrite the source file, and refuses bf16 for a
 * model with int8 or codebook layers unless dense_masked (they would have to be decoded first). */
lpv_status lpv_model_save(const lpv_model *m, const char *path, const lpv_save_opts *o, lpv_err *err);
/* Replaces a layer's weight by its block-sparse form: blocks R x C, mask (ceil(out/R), ceil(in/C)),
 * nonzero = keep. The BSR arrays live in the model's arena; the dense weight is dropped (w = NULL). */
lpv_status lpv_model_sparsify(lpv_model *m, lpv_linear *L, int R, int C, const uint8_t *mask, const char *name,
                              lpv_err *err);
/* The dense engine's fast path: copies every dense linear layer's weight (except the
 * classifier heads, too small to matter) into the BSR kernel's layout with all R x C blocks
 * kept, so lpv_linear_forward runs lpvit's own AVX-512/AVX2 kernel instead of OpenBLAS
 * (measured 1.05-1.15x faster on DeiT shapes, see docs/benchmarks.md). Costs 2x the weights' memory
 * in the model arena. Call it after the last change to the weights (prune/reconstruct
 * never call it). Nothing to do under --isa ref. */
lpv_status lpv_model_pack_dense(lpv_model *m, int R, int C, lpv_err *err);
/* The BF16 engine's weights: every block linear (qkv, proj, fc1, fc2) gets a BF16 pack of its BSR weights, or
 * of a blocked copy of its dense weights (R x C blocks, all kept), in the model arena (half the FP32 size
 * more). The patch embedding and the heads stay FP32, as the BF16 accuracy measurements had them.
 * A workspace runs them with lpv_workspace_use_bf16 (forward.h). Call it after the last change to the weights. */
lpv_status lpv_model_pack_bf16(lpv_model *m, int R, int C, lpv_err *err);
/* The int8 engine's weights: every block linear (qkv, proj, fc1, fc2) gets int8 weights (symmetric, one scale
 * per output row, round to nearest) in its BSR form or in a blocked copy of its dense weights (R x C blocks, all
 * kept); its FP32 values become the dequantized ones. Inputs are quantized per token at run time unless a
 * layer's qx already holds a per-tensor scale (a quantized file's). Patch embedding, heads, LayerNorm,
 * softmax and GELU stay FP32; attention's products follow m->attention (int8 by default where a kernel runs
 * them, forward.h lpv_attention_int8_for). Layers that already have int8 weights are left as they are. */
lpv_status lpv_model_quantize_int8(lpv_model *m, int R, int C, lpv_err *err);
/* One layer of it: int8 weights for L (its BSR form, or a blocked R x C copy of its dense weights), rounded with
 * the given per-row scales (out; NULL: max |w| / 127 per row). */
lpv_status lpv_linear_quantize_int8(lpv_model *m, lpv_linear *L, const float *scale, int R, int C, const char *name,
                                    lpv_err *err);
/* 1 when some layer has int8 weights. */
int lpv_model_has_int8(const lpv_model *m);
/* *layers = the layers with int8 weights; *static_inputs = those of them whose inputs use a static grid (a file's
 * input_scale) rather than per-token ranges. */
void lpv_model_int8_counts(const lpv_model *m, int *layers, int *static_inputs);
/* 1 when some layer's weights are on a shared codebook (codebook.h: saved as uint8 codes). */
int lpv_model_has_codebook(const lpv_model *m);
/* 1 when some layer has a BF16 pack. */
int lpv_model_has_bf16(const lpv_model *m);
/* Turns every BSR layer back into a dense weight with zeros in pruned blocks (for dense baselines). */
lpv_status lpv_model_densify(lpv_model *m, lpv_err *err);
/* LPV_OK when m has ref's architecture (width, depth, mlp, heads, patch, input, classes, tokens, LayerNorm eps);
 * else one line naming the first difference ("width 64 vs 192"). */
lpv_status lpv_model_check_same_arch(const lpv_model *m, const lpv_model *ref, lpv_err *err);
/* The way back from a fine-tune that held a pruned model's masks fixed (lpvit import): every layer that is
 * block-sparse in `masks` becomes block-sparse in m, with the same block shape and the same blocks kept, and
 * m's own weights as values. The masks are masks' BSR structure, never m's zeros. Refused, with m's weights
 * unchanged (its BSR layers densified), when the architectures differ (lpv_model_check_same_arch), when m has
 * int8 weights, when masks has no block-sparse layer, or when any weight of m inside a block that masks prunes
 * is not exactly zero: the message names the first such layer and how many of its pruned blocks are not. */
lpv_status lpv_model_apply_masks(lpv_model *m, const lpv_model *masks, lpv_err *err);
/* Kept weights of all linear layers / their dense count (1.0 for a dense model). */
double lpv_model_linear_density(lpv_model *m);


/* Total parameter count (dense shapes). */
int64_t lpv_model_params(const lpv_model *m);

/* ---- the linear layers, in timm module order ---- */

typedef enum { LPV_LK_PATCH, LPV_LK_QKV, LPV_LK_PROJ, LPV_LK_FC1, LPV_LK_FC2, LPV_LK_HEAD, LPV_LK_HEAD_DIST } lpv_layer_kind;

/* 1 for the four linears of a block (qkv, proj, fc1, fc2): the layers int8, BF16 and the codebooks quantize. */
static inline int lpv_layer_kind_is_block(lpv_layer_kind k) {
    return k == LPV_LK_QKV || k == LPV_LK_PROJ || k == LPV_LK_FC1 || k == LPV_LK_FC2;
}

typedef struct {
    char name[64];        /* timm module name, e.g. "blocks.3.attn.qkv" */
    lpv_layer_kind kind;
    int block;            /* block index or -1 */
    lpv_linear *lin;
    int tokens;           /* columns this layer multiplies per image (T, 196, or 1) */
} lpv_layer_ref;

/* Fills up to cap refs; returns the number of linear layers. */
int lpv_model_layers(lpv_model *m, lpv_layer_ref *out, int cap);
/* Index in lpv_model_layers order of block l's first linear (qkv; then proj, fc1, fc2); l = depth gives the
   first head. The patch embedding is 0. */
static inline int lpv_block_layer0(int l) { return 1 + 4 * l; }
/* Finds a layer by its timm module name. */
lpv_linear *lpv_model_layer(lpv_model *m, const char *name);

/* Heads for a known width (192→3, 384→6, 768→12), 0 if unknown. */
int lpv_default_heads(int dim);
const char *lpv_names_str(lpv_names n);

#endif
