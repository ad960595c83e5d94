/*
 * model.c — architecture inference, key-name tables, weight loading and
 * validation (see include/lpvit/model.h).
 *
 * Loading is three steps: read the architecture off the tensor shapes
 * (infer_config), list every tensor that architecture needs with its exact
 * shape (the plan), then check the file against the plan in both directions
 * (missing / mis-shaped / unexpected) before converting anything into the
 * model's arena.
 */
#include "lpvit/model.h"
#include "engine/model_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/fileio.h"
#include "lpvit/rng.h"
#include "lpvit/safetensors.h"

int lpv_default_heads(int dim) {
    switch (dim) {
    case 192: return 3;
    case 384: return 6;
    case 768: return 12;
    case 1024: return 16;
    }
    return 0;
}

static const char *const NAMES_NAMES[] = {LPV_NAMES_LIST(LPV_ENUM_NAME)};

const char *lpv_names_str(lpv_names n) { return lpv_enum_name(NAMES_NAMES, LPV_NAMES_COUNT, (int)n); }

/* ---------------------------------------------------------------------------
 * Key-name tables: one printf pattern per logical tensor and convention.
 * Block patterns take the block index; HF patterns also take the prefix.
 * ------------------------------------------------------------------------- */

typedef enum {
    G_CLS, G_DIST, G_POS, G_PE_W, G_PE_B, G_NORM_W, G_NORM_B, G_HEAD_W, G_HEAD_B, G_HEADD_W, G_HEADD_B, G_COUNT
} global_id;

typedef enum {
    B_LN1_W, B_LN1_B, B_QKV_W, B_QKV_B, B_Q_W, B_Q_B, B_K_W, B_K_B, B_V_W, B_V_B, B_PROJ_W, B_PROJ_B,
    B_LN2_W, B_LN2_B, B_FC1_W, B_FC1_B, B_FC2_W, B_FC2_B, B_COUNT
} block_id;

static const char *TIMM_G[G_COUNT] = {
    [G_CLS] = "cls_token", [G_DIST] = "dist_token", [G_POS] = "pos_embed",
    [G_PE_W] = "patch_embed.proj.weight", [G_PE_B] = "patch_embed.proj.bias",
    [G_NORM_W] = "norm.weight", [G_NORM_B] = "norm.bias", [G_HEAD_W] = "head.weight", [G_HEAD_B] = "head.bias",
    [G_HEADD_W] = "head_dist.weight", [G_HEADD_B] = "head_dist.bias",
};

static const char *TIMM_B[B_COUNT] = {
    [B_LN1_W] = "blocks.%d.norm1.weight", [B_LN1_B] = "blocks.%d.norm1.bias",
    [B_QKV_W] = "blocks.%d.attn.qkv.weight", [B_QKV_B] = "blocks.%d.attn.qkv.bias",
    [B_PROJ_W] = "blocks.%d.attn.proj.weight", [B_PROJ_B] = "blocks.%d.attn.proj.bias",
    [B_LN2_W] = "blocks.%d.norm2.weight", [B_LN2_B] = "blocks.%d.norm2.bias",
    [B_FC1_W] = "blocks.%d.mlp.fc1.weight", [B_FC1_B] = "blocks.%d.mlp.fc1.bias",
    [B_FC2_W] = "blocks.%d.mlp.fc2.weight", [B_FC2_B] = "blocks.%d.mlp.fc2.bias",
};

/* HF: "%s" is the prefix ("vit" or "deit"); heads have no prefix. */
static const char *HF_G[G_COUNT] = {
    [G_CLS] = "%s.embeddings.cls_token", [G_DIST] = "%s.embeddings.distillation_token",
    [G_POS] = "%s.embeddings.position_embeddings",
    [G_PE_W] = "%s.embeddings.patch_embeddings.projection.weight",
    [G_PE_B] = "%s.embeddings.patch_embeddings.projection.bias",
    [G_NORM_W] = "%s.layernorm.weight", [G_NORM_B] = "%s.layernorm.bias",
    [G_HEAD_W] = "classifier.weight", [G_HEAD_B] = "classifier.bias",
    [G_HEADD_W] = "distillation_classifier.weight", [G_HEADD_B] = "distillation_classifier.bias",
};

static const char *HF_B[B_COUNT] = {
    [B_LN1_W] = "%s.encoder.layer.%d.layernorm_before.weight", [B_LN1_B] = "%s.encoder.layer.%d.layernorm_before.bias",
    [B_Q_W] = "%s.encoder.layer.%d.attention.attention.query.weight",
    [B_Q_B] = "%s.encoder.layer.%d.attention.attention.query.bias",
    [B_K_W] = "%s.encoder.layer.%d.attention.attention.key.weight",
    [B_K_B] = "%s.encoder.layer.%d.attention.attention.key.bias",
    [B_V_W] = "%s.encoder.layer.%d.attention.attention.value.weight",
    [B_V_B] = "%s.encoder.layer.%d.attention.attention.value.bias",
    [B_PROJ_W] = "%s.encoder.layer.%d.attention.output.dense.weight",
    [B_PROJ_B] = "%s.encoder.layer.%d.attention.output.dense.bias",
    [B_LN2_W] = "%s.encoder.layer.%d.layernorm_after.weight", [B_LN2_B] = "%s.encoder.layer.%d.layernorm_after.bias",
    [B_FC1_W] = "%s.encoder.layer.%d.intermediate.dense.weight",
    [B_FC1_B] = "%s.encoder.layer.%d.intermediate.dense.bias",
    [B_FC2_W] = "%s.encoder.layer.%d.output.dense.weight", [B_FC2_B] = "%s.encoder.layer.%d.output.dense.bias",
};

static const char *hf_prefix(lpv_names n) { return n == LPV_NAMES_HF_DEIT ? "deit" : "vit"; }

/* The distilled HF teacher model names its first head cls_classifier. */
static void global_name(char *buf, size_t cap, lpv_names n, int hf_teacher, global_id id) {
    if (n == LPV_NAMES_TIMM) {
        snprintf(buf, cap, "%s", TIMM_G[id]);
    } else if (hf_teacher && (id == G_HEAD_W || id == G_HEAD_B)) {
        snprintf(buf, cap, "%s", id == G_HEAD_W ? "cls_classifier.weight" : "cls_classifier.bias");
    } else {
        snprintf(buf, cap, HF_G[id], hf_prefix(n));
    }
}

static void block_name(char *buf, size_t cap, lpv_names n, block_id id, int layer) {
    const char *pat = n == LPV_NAMES_TIMM ? TIMM_B[id] : HF_B[id];
    LPV_ASSERT(pat != NULL);
    if (n == LPV_NAMES_TIMM) snprintf(buf, cap, pat, layer);
    else snprintf(buf, cap, pat, hf_prefix(n), layer);
}

/* ---------------------------------------------------------------------------
 * Architecture inference
 * ------------------------------------------------------------------------- */

typedef struct {
    const lpv_st_file *f;
    const char *label; /* file name for messages */
    int hf_teacher;    /* HF DeiTForImageClassificationWithTeacher */
} src_ctx;

static const lpv_st_tensor *find_g(const src_ctx *s, lpv_names n, global_id id) {
    char name[LPV_ST_MAX_NAME];
    global_name(name, sizeof name, n, s->hf_teacher, id);
    return lpv_st_find(s->f, name);
}

static lpv_status need_rank(const src_ctx *s, const lpv_st_tensor *t, int ndim, lpv_err *err) {
    if (t->ndim == ndim) return LPV_OK;
    char sb[96];
    return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected rank %d", s->label, t->name,
                    lpv_shape_str(sb, sizeof sb, t->ndim, t->shape), ndim);
}

/* Highest N such that a tensor named with block N exists, + 1. */
static int count_blocks(const lpv_st_file *f, lpv_names n) {
    const char *pat = n == LPV_NAMES_TIMM ? "blocks." : (n == LPV_NAMES_HF_DEIT ? "deit.encoder.layer." : "vit.encoder.layer.");
    size_t pl = strlen(pat);
    int depth = 0;
    for (int i = 0; i < f->n; i++) {
        const char *nm = f->t[i].name;
        if (strncmp(nm, pat, pl) != 0) continue;
        char *end;
        long b = strtol(nm + pl, &end, 10);
        if (end != nm + pl && *end == '.' && b >= 0 && b < 4096 && b + 1 > depth) depth = (int)b + 1;
    }
    return depth;
}

typedef struct {
    int heads;          /* 0 if absent */
    double ln_eps;      /* 0 if absent */
    int has_eps;
    int patch, chans;   /* lpvit.arch only: the patch geometry of a file whose patch weight is BSR */
    char arch[96];      /* lpvit.arch only: the model's recorded name, "" if absent */
} json_config;

static lpv_status read_config_json(const char *path, json_config *jc, lpv_err *err) {
    memset(jc, 0, sizeof *jc);
    char *txt;
    size_t n;
    LPV_TRY(lpv_read_file(path, &txt, &n, 16u << 20, err));
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lpv_fail(err, LPV_E_FORMAT, "'%s' is not a JSON object", path);
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "num_attention_heads");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    lpv_status st = LPV_OK;
    if (h) {
        if (!cJSON_IsNumber(h) || h->valuedouble < 1 || h->valuedouble > 1024 || floor(h->valuedouble) != h->valuedouble)
            st = lpv_fail(err, LPV_E_FORMAT, "'%s': 'num_attention_heads' must be a positive integer", path);
        else jc->heads = (int)h->valuedouble;
    }
    if (e && st == LPV_OK) {
        if (!cJSON_IsNumber(e) || !(e->valuedouble > 0) || e->valuedouble > 1e-1)
            st = lpv_fail(err, LPV_E_FORMAT, "'%s': 'layer_norm_eps' must be a small positive number", path);
        else {
            jc->ln_eps = e->valuedouble;
            jc->has_eps = 1;
        }
    }
    cJSON_Delete(root);
    return st;
}

/* Files lpvit writes record what shapes cannot say (heads, eps) under "lpvit.arch". */
static void arch_from_metadata(const lpv_st_file *f, json_config *jc) {
    const char *meta = lpv_st_meta(f, "lpvit.arch");
    cJSON *root = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "heads");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "ln_eps");
    if (cJSON_IsNumber(h) && h->valuedouble >= 1 && h->valuedouble <= 1024) jc->heads = (int)h->valuedouble;
    if (cJSON_IsNumber(e) && e->valuedouble > 0 && e->valuedouble < 0.1) {
        jc->ln_eps = e->valuedouble;
        jc->has_eps = 1;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "patch"), *c = cJSON_GetObjectItemCaseSensitive(root, "chans");
    if (cJSON_IsNumber(p) && p->valuedouble >= 1 && p->valuedouble <= 1024) jc->patch = (int)p->valuedouble;
    if (cJSON_IsNumber(c) && c->valuedouble >= 1 && c->valuedouble <= 4) jc->chans = (int)c->valuedouble;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "arch");
    if (cJSON_IsString(a) && strlen(a->valuestring) < sizeof jc->arch) snprintf(jc->arch, sizeof jc->arch, "%s", a->valuestring);
    cJSON_Delete(root);
}

static lpv_status detect_names(const lpv_st_file *f, const char *label, lpv_names *out, lpv_err *err) {
    if (lpv_st_find(f, "cls_token")) *out = LPV_NAMES_TIMM;
    else if (lpv_st_find(f, "vit.embeddings.cls_token")) *out = LPV_NAMES_HF_VIT;
    else if (lpv_st_find(f, "deit.embeddings.cls_token")) *out = LPV_NAMES_HF_DEIT;
    else
        return lpv_fail(err, LPV_E_SHAPE,
                        "'%s' is not a DeiT/ViT checkpoint: no 'cls_token' (timm), 'vit.embeddings.cls_token' or "
                        "'deit.embeddings.cls_token' (Hugging Face)",
                        label);
    return LPV_OK;
}

static lpv_status infer_config(src_ctx *s, const json_config *jc, const lpv_model_opts *o, lpv_config *c,
                               lpv_err *err) {
    memset(c, 0, sizeof *c);
    const lpv_st_file *f = s->f;
    LPV_TRY(detect_names(f, s->label, &c->names, err));
    lpv_names n = c->names;
    s->hf_teacher = n == LPV_NAMES_HF_DEIT && lpv_st_find(f, "cls_classifier.weight") != NULL;

    /* Shapes come from tensors a pruned file keeps dense (tokens, biases); the patch
       geometry from the patch weight, or from lpvit.arch metadata when it is stored as BSR. */
    const lpv_st_tensor *cls = find_g(s, n, G_CLS), *pos = find_g(s, n, G_POS), *pe = find_g(s, n, G_PE_W);
    const lpv_st_tensor *head_b = find_g(s, n, G_HEAD_B);
    char nm[LPV_ST_MAX_NAME];
    if (!pos || !head_b || (!pe && !jc->patch)) {
        global_id miss = !pos ? G_POS : !head_b ? G_HEAD_B : G_PE_W;
        global_name(nm, sizeof nm, n, s->hf_teacher, miss);
        return lpv_fail(err, LPV_E_SHAPE, "'%s': missing tensor '%s'", s->label, nm);
    }
    LPV_TRY(need_rank(s, cls, 3, err));
    LPV_TRY(need_rank(s, pos, 3, err));
    LPV_TRY(need_rank(s, head_b, 1, err));
    c->dim = (int)cls->shape[2];
    if (pe) {
        LPV_TRY(need_rank(s, pe, 4, err));
        c->chans = (int)pe->shape[1];
        c->patch = (int)pe->shape[2];
        if (pe->shape[3] != c->patch) c->patch = -1;
    } else {
        c->chans = jc->chans ? jc->chans : 3;
        c->patch = jc->patch;
    }
    if (c->dim < 1 || c->dim > 8192 || c->patch < 1 || c->chans < 1 || c->chans > 4) {
        char sb[96];
        return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected [D, 3, P, P] with square patches",
                        s->label, pe ? pe->name : "patch_embed.proj.weight",
                        pe ? lpv_shape_str(sb, sizeof sb, pe->ndim, pe->shape) : "?");
    }
    int has_dist = find_g(s, n, G_DIST) != NULL;
    c->n_prefix = has_dist ? 2 : 1;
    c->n_tokens = (int)pos->shape[1];
    int npatch = c->n_tokens - c->n_prefix, side = (int)lrint(sqrt((double)(npatch > 0 ? npatch : 0)));
    if (npatch < 1 || side * side != npatch) {
        char sb[96];
        return lpv_fail(err, LPV_E_SHAPE,
                        "'%s': tensor '%s' has shape %s: %d positions minus %d prefix tokens is not a square grid",
                        s->label, pos->name, lpv_shape_str(sb, sizeof sb, pos->ndim, pos->shape), c->n_tokens,
                        c->n_prefix);
    }
    c->img = side * c->patch;
    c->classes = (int)head_b->shape[0];
    /* distilled: a second head (timm head_dist / HF distillation_classifier) averaged with the first */
    c->n_outputs = find_g(s, n, G_HEADD_B) ? 2 : 1;
    if (c->n_outputs == 2 && !has_dist)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': has a distillation head but no distillation token", s->label);
    c->depth = count_blocks(f, n);
    if (c->depth < 1) return lpv_fail(err, LPV_E_SHAPE, "'%s': no transformer blocks found", s->label);
    if (c->depth > LPV_MAX_DEPTH)
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': %d blocks, at most %d supported", s->label, c->depth,
                        LPV_MAX_DEPTH);
    block_name(nm, sizeof nm, n, B_FC1_B, 0);
    const lpv_st_tensor *fc1 = lpv_st_find(f, nm);
    if (!fc1) return lpv_fail(err, LPV_E_SHAPE, "'%s': missing tensor '%s'", s->label, nm);
    LPV_TRY(need_rank(s, fc1, 1, err));
    c->mlp = (int)fc1->shape[0];

    c->heads = o && o->heads ? o->heads : jc->heads ? jc->heads : lpv_default_heads(c->dim);
    if (c->heads <= 0)
        return lpv_fail_hint(err, LPV_E_ARG, "heads",
                             "'%s': cannot tell the number of attention heads for width %d: give them or put "
                             "config.json beside the weights",
                        s->label, c->dim);
    if (c->dim % c->heads)
        return lpv_fail(err, LPV_E_ARG, "'%s': width %d is not divisible by %d heads", s->label, c->dim, c->heads);
    if (o && o->ln_eps > 0) c->ln_eps = o->ln_eps;
    else if (jc->has_eps) c->ln_eps = (float)jc->ln_eps;
    else c->ln_eps = n == LPV_NAMES_TIMM ? 1e-6f : 1e-12f;
    return LPV_OK;
}

/* ---------------------------------------------------------------------------
 * The plan: every tensor the architecture needs, with its shape and where
 * it goes. Part > 0 means "rows [part-1)*D .. part*D) of a fused qkv".
 * ------------------------------------------------------------------------- */

typedef struct {
    char name[LPV_ST_MAX_NAME];
    int ndim;
    int64_t shape[4];
    float *dst;
    lpv_linear *lin; /* set for a linear weight that a pruned file may store as BSR */
} plan_item;

typedef struct {
    plan_item *items;
    int n, cap;
} plan;

static lpv_status plan_add(plan *p, const char *name, float *dst, int ndim, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3, lpv_err *err) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        plan_item *it = realloc(p->items, sizeof *it * (size_t)cap);
        if (!it) return lpv_fail(err, LPV_E_OOM, "out of memory");
        p->items = it;
        p->cap = cap;
    }
    plan_item *it = &p->items[p->n++];
    snprintf(it->name, sizeof it->name, "%s", name);
    it->ndim = ndim;
    it->shape[0] = d0, it->shape[1] = d1, it->shape[2] = d2, it->shape[3] = d3;
    it->dst = dst;
    it->lin = NULL;
    return LPV_OK;
}

static float *alloc_f(lpv_model *m, int64_t n) { return lpv_arena_alloc(&m->arena, (size_t)n * sizeof(float)); }

/* Allocates every weight in the arena, laid out as the forward pass wants them. */
static lpv_status alloc_weights(lpv_model *m, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    int64_t D = c->dim, F = c->mlp, K = (int64_t)c->chans * c->patch * c->patch;
    m->blocks = lpv_arena_alloc(&m->arena, sizeof(lpv_block) * (size_t)c->depth);
    m->cls = alloc_f(m, D);
    m->dist = c->n_prefix == 2 ? alloc_f(m, D) : NULL;
    m->pos = alloc_f(m, (int64_t)c->n_tokens * D);
    m->patch = (lpv_linear){(int)D, (int)K, alloc_f(m, D * K), alloc_f(m, D), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
    m->norm_w = alloc_f(m, D);
    m->norm_b = alloc_f(m, D);
    m->head = (lpv_linear){c->classes, (int)D, alloc_f(m, c->classes * D), alloc_f(m, c->classes), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
    if (c->n_outputs == 2)
        m->head_dist = (lpv_linear){c->classes, (int)D, alloc_f(m, c->classes * D), alloc_f(m, c->classes), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
    if (!m->blocks || !m->cls || !m->pos || !m->patch.w || !m->head.w) goto oom;
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        b->ln1_w = alloc_f(m, D), b->ln1_b = alloc_f(m, D), b->ln2_w = alloc_f(m, D), b->ln2_b = alloc_f(m, D);
        b->qkv = (lpv_linear){(int)(3 * D), (int)D, alloc_f(m, 3 * D * D), alloc_f(m, 3 * D), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
        b->proj = (lpv_linear){(int)D, (int)D, alloc_f(m, D * D), alloc_f(m, D), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
        b->fc1 = (lpv_linear){(int)F, (int)D, alloc_f(m, F * D), alloc_f(m, F), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
        b->fc2 = (lpv_linear){(int)D, (int)F, alloc_f(m, D * F), alloc_f(m, D), NULL, NULL, {0, 0, 0}, NULL, 0, NULL};
        if (!b->ln2_b || !b->qkv.b || !b->proj.b || !b->fc1.b || !b->fc2.b) goto oom;
    }
    return LPV_OK;
oom:
    return lpv_fail(err, LPV_E_OOM, "out of memory allocating weights for '%s'", m->path);
}

static lpv_status build_plan(lpv_model *m, int hf_teacher, plan *p, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    lpv_names n = c->names;
    int64_t D = c->dim, F = c->mlp;
    char nm[LPV_ST_MAX_NAME];
#define G(id, dst, nd, a, b_, c_, d_)                                     \
    do {                                                                  \
        global_name(nm, sizeof nm, n, hf_teacher, id);                    \
        LPV_TRY(plan_add(p, nm, dst, nd, a, b_, c_, d_, err));            \
    } while (0)
#define B(id, l, dst, nd, a, b_)                                          \
    do {                                                                  \
        block_name(nm, sizeof nm, n, id, l);                              \
        LPV_TRY(plan_add(p, nm, dst, nd, a, b_, 0, 0, err));              \
    } while (0)
#define LIN(lin_) (p->items[p->n - 1].lin = (lin_))
    G(G_CLS, m->cls, 3, 1, 1, D, 0);
    if (m->dist) G(G_DIST, m->dist, 3, 1, 1, D, 0);
    G(G_POS, m->pos, 3, 1, c->n_tokens, D, 0);
    G(G_PE_W, m->patch.w, 4, D, c->chans, c->patch, c->patch);
    LIN(&m->patch);
    G(G_PE_B, m->patch.b, 1, D, 0, 0, 0);
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        B(B_LN1_W, l, b->ln1_w, 1, D, 0);
        B(B_LN1_B, l, b->ln1_b, 1, D, 0);
        if (n == LPV_NAMES_TIMM) {
            B(B_QKV_W, l, b->qkv.w, 2, 3 * D, D);
            LIN(&b->qkv);
            B(B_QKV_B, l, b->qkv.b, 1, 3 * D, 0);
        } else { /* HF: q, k, v land in consecutive row ranges of the fused qkv */
            B(B_Q_W, l, b->qkv.w, 2, D, D);
            B(B_K_W, l, b->qkv.w + D * D, 2, D, D);
            B(B_V_W, l, b->qkv.w + 2 * D * D, 2, D, D);
            B(B_Q_B, l, b->qkv.b, 1, D, 0);
            B(B_K_B, l, b->qkv.b + D, 1, D, 0);
            B(B_V_B, l, b->qkv.b + 2 * D, 1, D, 0);
        }
        B(B_PROJ_W, l, b->proj.w, 2, D, D);
        if (n == LPV_NAMES_TIMM) LIN(&b->proj);
        B(B_PROJ_B, l, b->proj.b, 1, D, 0);
        B(B_LN2_W, l, b->ln2_w, 1, D, 0);
        B(B_LN2_B, l, b->ln2_b, 1, D, 0);
        B(B_FC1_W, l, b->fc1.w, 2, F, D);
        if (n == LPV_NAMES_TIMM) LIN(&b->fc1);
        B(B_FC1_B, l, b->fc1.b, 1, F, 0);
        B(B_FC2_W, l, b->fc2.w, 2, D, F);
        if (n == LPV_NAMES_TIMM) LIN(&b->fc2);
        B(B_FC2_B, l, b->fc2.b, 1, D, 0);
    }
    G(G_NORM_W, m->norm_w, 1, D, 0, 0, 0);
    G(G_NORM_B, m->norm_b, 1, D, 0, 0, 0);
    G(G_HEAD_W, m->head.w, 2, c->classes, D, 0, 0);
    if (n == LPV_NAMES_TIMM) LIN(&m->head);
    G(G_HEAD_B, m->head.b, 1, c->classes, 0, 0, 0);
    if (c->n_outputs == 2) {
        G(G_HEADD_W, m->head_dist.w, 2, c->classes, D, 0, 0);
        if (n == LPV_NAMES_TIMM) LIN(&m->head_dist);
        G(G_HEADD_B, m->head_dist.b, 1, c->classes, 0, 0, 0);
    }
#undef G
#undef B
#undef LIN
    /* the patch embedding is a linear only under timm names too */
    if (n != LPV_NAMES_TIMM)
        for (int i = 0; i < p->n; i++) p->items[i].lin = NULL;
    return LPV_OK;
}

/* The three BSR tensors of a pruned linear weight, or NULL when the file has none. */
typedef struct {
    const lpv_st_tensor *values, *cols, *rows;
} bsr_tensors;

static int find_bsr(const lpv_st_file *f, const char *name, bsr_tensors *bt) {
    char nm[LPV_ST_MAX_NAME + 32];
    snprintf(nm, sizeof nm, "%s.bsr_values", name);
    bt->values = lpv_st_find(f, nm);
    snprintf(nm, sizeof nm, "%s.bsr_col_indices", name);
    bt->cols = lpv_st_find(f, nm);
    snprintf(nm, sizeof nm, "%s.bsr_row_ptr", name);
    bt->rows = lpv_st_find(f, nm);
    return bt->values || bt->cols || bt->rows;
}

/* Reads an I32/I64 index tensor into int32 (range-checked). */
static lpv_status read_index(const lpv_st_file *f, const lpv_st_tensor *t, int32_t *dst, lpv_err *err) {
    if (t->ndim != 1) return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' must be 1-D", f->path, t->name);
    int64_t *tmp = malloc(sizeof(int64_t) * (t->nelem + 1));
    if (!tmp) return lpv_fail(err, LPV_E_OOM, "out of memory");
    lpv_status st = lpv_st_read_i64(f, t, tmp, err);
    for (uint64_t i = 0; st == LPV_OK && i < t->nelem; i++) {
        if (tmp[i] < INT32_MIN || tmp[i] > INT32_MAX)
            st = lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' entry %llu out of int32 range", f->path, t->name,
                          (unsigned long long)i);
        else dst[i] = (int32_t)tmp[i];
    }
    free(tmp);
    return st;
}

/* Loads a pruned linear weight stored as <name>.bsr_{values,col_indices,row_ptr}. */
static lpv_status load_bsr_weight(lpv_model *m, const lpv_st_file *f, const plan_item *it, const bsr_tensors *bt,
                                  unsigned char *used, lpv_err *err) {
    const char *label = f->path;
    if (!bt->values || !bt->cols || !bt->rows)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': '%s' needs all of .bsr_values, .bsr_col_indices and .bsr_row_ptr",
                        label, it->name);
    const lpv_st_tensor *v = bt->values;
    char sb[96];
    if (v->ndim != 3)
        return lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected [nnzb, R, C]", label, v->name,
                        lpv_shape_str(sb, sizeof sb, v->ndim, v->shape));
    int q8 = v->dtype == LPV_DT_I8, cb = v->dtype == LPV_DT_U8;
    if (v->dtype != LPV_DT_F32 && v->dtype != LPV_DT_F16 && v->dtype != LPV_DT_BF16 && !q8 && !cb)
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': tensor '%s' has dtype %s, expected F32, F16, BF16, I8 or U8 codes",
                        label, v->name, lpv_dtype_name(v->dtype));
    if (!cb) LPV_TRY(lpv__cb_check_absent(f, it->name, err));
    if (bt->cols->dtype != LPV_DT_I32 && bt->cols->dtype != LPV_DT_I64)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' has dtype %s, expected I32", label, bt->cols->name,
                        lpv_dtype_name(bt->cols->dtype));
    if (bt->rows->dtype != LPV_DT_I32 && bt->rows->dtype != LPV_DT_I64)
        return lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' has dtype %s, expected I32", label, bt->rows->name,
                        lpv_dtype_name(bt->rows->dtype));
    lpv_linear *L = it->lin;
    int pk = cb && lpv__cb_packed(f, it->name); /* 4-bit codes: C = 2 x the last axis */
    uint64_t nvals = pk ? 2 * v->nelem : v->nelem;
    float *vals = malloc(sizeof(float) * (nvals + 1));
    int32_t *cols = malloc(sizeof(int32_t) * (bt->cols->nelem + 1));
    int32_t *rows = malloc(sizeof(int32_t) * (bt->rows->nelem + 1));
    lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
    lpv_status st = (!vals || !cols || !rows || !b) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    if (!st && q8)
        for (uint64_t i = 0; i < v->nelem; i++) vals[i] = (float)((const int8_t *)v->data)[i];
    else if (!st && cb) st = lpv__cb_decode(m, L, f, it->name, v, pk ? 2 * (int)v->shape[2] : 0, vals, used, err);
    else if (!st) st = lpv_st_read_f32(f, v, vals, err);
    if (!st) st = read_index(f, bt->cols, cols, err);
    if (!st) st = read_index(f, bt->rows, rows, err);
    if (!st) {
        char name[LPV_ST_MAX_NAME + 1100];
        snprintf(name, sizeof name, "%s: %s", label, it->name); /* bsr.c quotes it */
        int R = v->shape[1] > 0 && v->shape[1] <= 64 ? (int)v->shape[1] : 0;
        int64_t c = pk ? 2 * v->shape[2] : v->shape[2];
        int C = c > 0 && c <= 64 ? (int)c : 0;
        st = lpv_bsr_from_arrays(b, L->out, L->in, R, C, vals, (int64_t)nvals, cols, (int64_t)bt->cols->nelem,
                                 rows, (int64_t)bt->rows->nelem, &m->arena, name, err);
    }
    free(vals);
    free(cols);
    free(rows);
    if (!st && q8) st = lpv__q8_set_bsr(m, b, (const int8_t *)v->data, f, it->name, used, err);
    if (!st && cb) lpv__cb_scale_bsr(L, b);
    if (st) return st;
    L->bsr = b;
    L->w = NULL; /* the dense weight is never materialized for a pruned layer */
    return LPV_OK;
}

/* Checks the file against the plan (missing, mis-shaped, wrong dtype, unexpected), then converts. */
static lpv_status execute_plan(lpv_model *m, const lpv_st_file *f, const char *label, const plan *p,
                               int allow_extra, lpv_err *err) {
    unsigned char *used = calloc((size_t)f->n + 1, 1);
    if (!used) return lpv_fail(err, LPV_E_OOM, "out of memory");
    unsigned char *sparse = calloc((size_t)p->n + 1, 1);
    if (!sparse) {
        free(used);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    lpv_status st = LPV_OK;
    for (int i = 0; i < p->n && st == LPV_OK; i++) {
        const plan_item *it = &p->items[i];
        const lpv_st_tensor *t = lpv_st_find(f, it->name);
        char want[96], got[96], sb2[96];
        lpv_shape_str(want, sizeof want, it->ndim, it->shape);
        bsr_tensors bt;
        if (it->lin && find_bsr(f, it->name, &bt)) {
            if (t) {
                st = lpv_fail(err, LPV_E_FORMAT, "'%s': '%s' is stored both dense and as BSR", label, it->name);
                break;
            }
            const lpv_st_tensor *three[3] = {bt.values, bt.cols, bt.rows};
            for (int k = 0; k < 3; k++)
                if (three[k]) used[three[k] - f->t] = 1;
            sparse[i] = 1;
            st = load_bsr_weight(m, f, it, &bt, used, err);
            if (!st) st = lpv__q8_load_input(it->lin, f, it->name, lpv_linear_has_int8(it->lin), used, err);
            continue;
        }
        if (!t) {
            st = lpv_fail(err, LPV_E_SHAPE, "'%s': missing tensor '%s' (expected shape %s)", label, it->name, want);
            break;
        }
        used[t - f->t] = 1;
        /* 4-bit codes (codebook.c): two per byte along the last axis */
        int pk = t->dtype == LPV_DT_U8 && it->lin && it->ndim == 2 && lpv__cb_packed(f, it->name);
        int same = t->ndim == it->ndim;
        for (int k = 0; same && k < it->ndim; k++)
            same = t->shape[k] == (pk && k == 1 ? (it->shape[k] + 1) / 2 : it->shape[k]);
        if (!same && pk) {
            int64_t half[2] = {it->shape[0], (it->shape[1] + 1) / 2};
            st = lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected %s (4-bit codes of %s)", label,
                          it->name, lpv_shape_str(got, sizeof got, t->ndim, t->shape),
                          lpv_shape_str(sb2, sizeof sb2, 2, half), want);
            break;
        }
        if (!same) {
            st = lpv_fail(err, LPV_E_SHAPE, "'%s': tensor '%s' has shape %s, expected %s", label, it->name,
                          lpv_shape_str(got, sizeof got, t->ndim, t->shape), want);
            break;
        }
        if (t->dtype == LPV_DT_I8 && it->lin && it->ndim == 2) { /* an int8 linear (model_q8.c) */
            sparse[i] = 1; /* not read as F32 below */
            st = lpv__q8_load_dense(m, it->lin, f, t, used, err);
            if (!st) st = lpv__q8_load_input(it->lin, f, it->name, 1, used, err);
            continue;
        }
        if (t->dtype == LPV_DT_U8 && it->lin && it->ndim == 2) { /* codes of a shared codebook (codebook.c) */
            sparse[i] = 1; /* decoded here, not read as F32 below */
            st = lpv__cb_decode(m, it->lin, f, it->name, t, pk ? it->lin->in : 0, it->dst, used, err);
            if (!st) st = lpv__q8_load_input(it->lin, f, it->name, 0, used, err);
            continue;
        }
        if (it->lin) st = lpv__cb_check_absent(f, it->name, err);
        if (st) break;
        if (t->dtype != LPV_DT_F32 && t->dtype != LPV_DT_F16 && t->dtype != LPV_DT_BF16) {
            st = lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': tensor '%s' has dtype %s, expected F32, F16 or BF16", label,
                          it->name, lpv_dtype_name(t->dtype));
            break;
        }
        if (it->lin) st = lpv__q8_load_input(it->lin, f, it->name, 0, used, err);
    }
    if (st == LPV_OK && !allow_extra)
        for (int i = 0; i < f->n; i++)
            if (!used[i]) {
                st = lpv_fail_hint(err, LPV_E_SHAPE, "allow_extra",
                                   "'%s': unexpected tensor '%s' for this architecture", label, f->t[i].name);
                break;
            }
    free(used);
    for (int i = 0; i < p->n && st == LPV_OK; i++)
        if (!sparse[i]) st = lpv_st_read_f32(f, lpv_st_find(f, p->items[i].name), p->items[i].dst, err);
    free(sparse);
    return st;
}

static void infer_arch_name(lpv_model *m, const lpv_st_file *f, const json_config *jc) {
    const char *meta_arch = lpv_st_meta(f, "arch");
    if (meta_arch && strlen(meta_arch) < sizeof m->arch) {
        snprintf(m->arch, sizeof m->arch, "%s", meta_arch);
        return;
    }
    if (jc->arch[0]) { /* files lpvit wrote (pruned models) keep the source's name inside lpvit.arch */
        snprintf(m->arch, sizeof m->arch, "%s", jc->arch);
        return;
    }
    /* no name in the file: say the architecture, never guess a model (a ViT-Tiny and a DeiT-Tiny have the same) */
    const lpv_config *c = &m->cfg;
    snprintf(m->arch, sizeof m->arch, "vit_d%d_l%d_patch%d_%d%s", c->dim, c->depth, c->patch, c->img,
             c->n_outputs == 2 ? "_distilled" : "");
}

/* Resolves a model path: a .safetensors file, or an HF/timm hub folder. */
static lpv_status resolve_paths(const char *path, char *st_path, size_t cap, char *cfg_path, size_t ccap,
                                lpv_err *err) {
    cfg_path[0] = 0;
    if (lpv_is_dir(path)) {
        snprintf(st_path, cap, "%s/model.safetensors", path);
        if (!lpv_file_exists(st_path))
            return lpv_fail(err, LPV_E_IO, "'%s' is a folder without model.safetensors", path);
        snprintf(cfg_path, ccap, "%s/config.json", path);
        if (!lpv_file_exists(cfg_path)) cfg_path[0] = 0;
        return LPV_OK;
    }
    snprintf(st_path, cap, "%s", path);
    /* a hub layout file (…/model.safetensors) uses the config.json beside it */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "model.safetensors") == 0) {
        snprintf(cfg_path, ccap, "%.*sconfig.json", (int)(base - path), path);
        if (!lpv_file_exists(cfg_path)) cfg_path[0] = 0;
    }
    return LPV_OK;
}

lpv_status lpv_model_load(lpv_model **out, const char *path, const lpv_model_opts *opts, lpv_err *err) {
    *out = NULL;
    char st_path[1024], cfg_path[1024];
    LPV_TRY(resolve_paths(path, st_path, sizeof st_path, cfg_path, sizeof cfg_path, err));
    json_config jc;
    memset(&jc, 0, sizeof jc);
    if (cfg_path[0]) LPV_TRY(read_config_json(cfg_path, &jc, err));

    lpv_st_file f;
    LPV_TRY(lpv_st_open(&f, st_path, err));
    if (!cfg_path[0]) arch_from_metadata(&f, &jc);
    lpv_model *m = calloc(1, sizeof *m);
    plan p = {0};
    lpv_status st;
    if (!m) {
        st = lpv_fail(err, LPV_E_OOM, "out of memory");
        goto fail;
    }
    snprintf(m->path, sizeof m->path, "%s", st_path);
    src_ctx s = {&f, st_path, 0};
    if ((st = infer_config(&s, &jc, opts, &m->cfg, err)) != LPV_OK) goto fail;
    lpv_arena_init(&m->arena, 1 << 20);
    if ((st = alloc_weights(m, err)) != LPV_OK) goto fail;
    if ((st = build_plan(m, s.hf_teacher, &p, err)) != LPV_OK) goto fail;
    if ((st = execute_plan(m, &f, st_path, &p, opts && opts->allow_extra, err)) != LPV_OK) goto fail;
    const lpv_st_tensor *t0 = lpv_st_find(&f, p.items[0].name);
    /* an int8 file: its block linears are I8 whatever the first tensor is */
    snprintf(m->src_dtype, sizeof m->src_dtype, "%s", lpv_model_has_int8(m) ? "F32+I8" : lpv_dtype_name(t0->dtype));
    const char *meta = lpv_st_meta(&f, "lpvit");
    if (meta) m->lpvit_meta = lpv_arena_strdup(&m->arena, meta);
    infer_arch_name(m, &f, &jc);
    free(p.items);
    lpv_st_close(&f);
    *out = m;
    return LPV_OK;
fail:
    free(p.items);
    lpv_st_close(&f);
    if (m) lpv_model_free(m);
    return st;
}

void lpv_model_free(lpv_model *m) {
    if (!m) return;
    lpv_arena_free(&m->arena);
    free(m);
}

const char *lpv_model_hash(lpv_model *m, lpv_err *err) {
    if (!m->sha256[0] && m->path[0] && lpv_sha256_file(m->path, m->sha256, err) != LPV_OK) return NULL;
    return m->sha256;
}

int64_t lpv_model_params(const lpv_model *m) {
    const lpv_config *c = &m->cfg;
    int64_t D = c->dim, F = c->mlp, K = (int64_t)c->chans * c->patch * c->patch;
    int64_t blk = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (F * D + F) + (D * F + D);
    int64_t n = D * c->n_prefix + (int64_t)c->n_tokens * D + D * K + D + c->depth * blk + 2 * D;
    n += (int64_t)c->n_outputs * (c->classes * D + c->classes);
    return n;
}

/* ---------------------------------------------------------------------------
 * Layer table
 * ------------------------------------------------------------------------- */

int lpv_model_layers(lpv_model *m, lpv_layer_ref *out, int cap) {
    const lpv_config *c = &m->cfg;
    int n = 0, npatch = c->n_tokens - c->n_prefix;
#define ADD(kind_, blk, lin_, tok, ...)                                   \
    do {                                                                  \
        if (n < cap) {                                                    \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);       \
            out[n].kind = kind_, out[n].block = blk, out[n].lin = lin_;   \
            out[n].tokens = tok;                                          \
        }                                                                 \
        n++;                                                              \
    } while (0)
    ADD(LPV_LK_PATCH, -1, &m->patch, npatch, "patch_embed.proj");
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        ADD(LPV_LK_QKV, l, &b->qkv, c->n_tokens, "blocks.%d.attn.qkv", l);
        ADD(LPV_LK_PROJ, l, &b->proj, c->n_tokens, "blocks.%d.attn.proj", l);
        ADD(LPV_LK_FC1, l, &b->fc1, c->n_tokens, "blocks.%d.mlp.fc1", l);
        ADD(LPV_LK_FC2, l, &b->fc2, c->n_tokens, "blocks.%d.mlp.fc2", l);
    }
    ADD(LPV_LK_HEAD, -1, &m->head, 1, "head");
    if (c->n_outputs == 2) ADD(LPV_LK_HEAD_DIST, -1, &m->head_dist, 1, "head_dist");
#undef ADD
    return n;
}

lpv_linear *lpv_model_layer(lpv_model *m, const char *name) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n && i < (int)(sizeof refs / sizeof *refs); i++)
        if (strcmp(refs[i].name, name) == 0) return refs[i].lin;
    return NULL;
}

lpv_status lpv_model_sparsify(lpv_model *m, lpv_linear *L, int R, int C, const uint8_t *mask, const char *name,
                              lpv_err *err) {
    const float *W = L->w;
    float *tmp = NULL;
    if (!W) { /* already sparse: re-mask its dense form */
        if (!L->bsr) return lpv_fail(err, LPV_E_ARG, "layer '%s' has no weights", name);
        tmp = malloc(sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (!tmp) return lpv_fail(err, LPV_E_OOM, "out of memory");
        lpv_bsr_to_dense(L->bsr, tmp);
        W = tmp;
    }
    lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
    lpv_status st = b ? lpv_bsr_from_dense(b, W, L->out, L->in, R, C, mask, &m->arena, name, err)
                      : lpv_fail(err, LPV_E_OOM, "out of memory");
    free(tmp);
    if (st) return st;
    L->bsr = b;
    L->w = NULL;
    L->blocked = NULL;
    return LPV_OK;
}

lpv_status lpv_model_pack_bf16(lpv_model *m, int R, int C, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        lpv_layer_kind k = refs[i].kind;
        if (k != LPV_LK_QKV && k != LPV_LK_PROJ && k != LPV_LK_FC1 && k != LPV_LK_FC2) continue;
        if (!L->bsr && !L->blocked) {
            lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
            if (!b) return lpv_fail(err, LPV_E_OOM, "out of memory packing '%s'", refs[i].name);
            LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, R, C, NULL, &m->arena, refs[i].name, err));
            L->blocked = b;
        }
        LPV_TRY(lpv_bsr_pack_bf16(L->bsr ? L->bsr : L->blocked, &m->arena, err));
    }
    return LPV_OK;
}

lpv_status lpv_linear_quantize_int8(lpv_model *m, lpv_linear *L, const float *scale, int R, int C, const char *name,
                                    lpv_err *err) {
    if (!L->bsr && !L->blocked) {
        lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
        if (!b) return lpv_fail(err, LPV_E_OOM, "out of memory quantizing '%s'", name);
        LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, R, C, NULL, &m->arena, name, err));
        L->blocked = b;
    }
    lpv_bsr *b = L->bsr ? L->bsr : L->blocked;
    LPV_TRY(lpv_bsr_set_int8(b, NULL, scale, &m->arena, name, err));
    L->codebook = NULL, L->codebook_k = 0, L->codebook_scale = NULL; /* int8 weights replace the levels */
    if (L->w) lpv_bsr_to_dense(b, L->w); /* the dense copy holds the dequantized weights too */
    if (!(L->qx.scale > 0)) L->qx.per_token = 1;
    return LPV_OK;
}

lpv_status lpv_model_quantize_int8(lpv_model *m, int R, int C, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n; i++)
        if (lpv_layer_kind_is_block(refs[i].kind) && !lpv_linear_has_int8(refs[i].lin))
            LPV_TRY(lpv_linear_quantize_int8(m, refs[i].lin, NULL, R, C, refs[i].name, err));
    return LPV_OK;
}

/* 1 when some linear layer of m satisfies has (its int8 weights, its BF16 pack). */
static int any_linear(const lpv_model *m, int (*has)(const lpv_linear *)) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers((lpv_model *)m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n; i++)
        if (has(refs[i].lin)) return 1;
    return 0;
}

int lpv_model_has_int8(const lpv_model *m) { return any_linear(m, lpv_linear_has_int8); }

void lpv_model_int8_counts(const lpv_model *m, int *layers, int *static_inputs) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers((lpv_model *)m, refs, LPV_MAX_LAYERS);
    *layers = *static_inputs = 0;
    for (int i = 0; i < n; i++)
        if (lpv_linear_has_int8(refs[i].lin)) ++*layers, *static_inputs += !refs[i].lin->qx.per_token;
}
static int linear_has_codebook(const lpv_linear *L) { return L->codebook != NULL; }
int lpv_model_has_codebook(const lpv_model *m) { return any_linear(m, linear_has_codebook); }

int lpv_model_has_bf16(const lpv_model *m) { return any_linear(m, lpv_linear_has_bf16); }

lpv_status lpv_model_pack_dense(lpv_model *m, int R, int C, lpv_err *err) {
    if (lpv_isa_get() == LPV_ISA_REF) return LPV_OK; /* the reference kernel is no faster than BLAS */
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        if (!L->w || L->bsr || L->blocked || refs[i].kind == LPV_LK_HEAD || refs[i].kind == LPV_LK_HEAD_DIST) continue;
        lpv_bsr *b = lpv_arena_alloc(&m->arena, sizeof *b);
        if (!b) return lpv_fail(err, LPV_E_OOM, "out of memory packing '%s'", refs[i].name);
        LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, R, C, NULL, &m->arena, refs[i].name, err));
        L->blocked = b;
    }
    return LPV_OK;
}

lpv_status lpv_model_densify(lpv_model *m, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        if (!L->bsr) continue;
        float *w = lpv_arena_alloc(&m->arena, sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (!w) return lpv_fail(err, LPV_E_OOM, "out of memory densifying '%s'", refs[i].name);
        lpv_bsr_to_dense(L->bsr, w);
        L->w = w;
        L->bsr = NULL;
    }
    return LPV_OK;
}

double lpv_model_linear_density(lpv_model *m) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    double kept = 0, all = 0;
    for (int i = 0; i < n; i++) {
        double sz = (double)refs[i].lin->out * refs[i].lin->in;
        kept += sz * lpv_linear_density(refs[i].lin);
        all += sz;
    }
    return all > 0 ? kept / all : 1.0;
}

/* ---------------------------------------------------------------------------
 * Random weights and saving
 * ------------------------------------------------------------------------- */

static void fill_normal(lpv_rng *r, float *x, int64_t n, float std) {
    for (int64_t i = 0; i < n; i++) x[i] = lpv_rng_trunc_normal(r, std);
}

static void fill_const(float *x, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

lpv_status lpv_model_random(lpv_model **out, const lpv_config *cfg, uint64_t seed, lpv_err *err) {
    *out = NULL;
    const lpv_config *c = cfg;
    if (c->dim < 1 || c->heads < 1 || c->dim % c->heads || c->depth < 1 || c->depth > LPV_MAX_DEPTH || c->mlp < 1 || c->patch < 1 ||
        c->img % c->patch || c->classes < 1 || c->chans < 1 || (c->n_prefix != 1 && c->n_prefix != 2) ||
        (c->n_outputs == 2 && c->n_prefix != 2))
        return lpv_fail(err, LPV_E_ARG, "invalid architecture for random weights");
    lpv_model *m = calloc(1, sizeof *m);
    if (!m) return lpv_fail(err, LPV_E_OOM, "out of memory");
    m->cfg = *cfg;
    int side = c->img / c->patch;
    m->cfg.n_tokens = c->n_prefix + side * side;
    m->cfg.names = LPV_NAMES_TIMM;
    if (!(m->cfg.ln_eps > 0)) m->cfg.ln_eps = 1e-6f;
    lpv_arena_init(&m->arena, 1 << 20);
    lpv_status st = alloc_weights(m, err);
    if (st != LPV_OK) {
        lpv_model_free(m);
        return st;
    }
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    int64_t D = c->dim, F = c->mlp;
    /* timm-like init, with small non-zero biases and LayerNorm affine so every parameter matters */
    fill_normal(&r, m->cls, D, 0.02f);
    if (m->dist) fill_normal(&r, m->dist, D, 0.02f);
    fill_normal(&r, m->pos, (int64_t)m->cfg.n_tokens * D, 0.02f);
    fill_normal(&r, m->patch.w, D * m->patch.in, 0.02f);
    fill_normal(&r, m->patch.b, D, 0.02f);
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        lpv_linear *ls[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
        for (int k = 0; k < 4; k++) {
            fill_normal(&r, ls[k]->w, (int64_t)ls[k]->out * ls[k]->in, 0.02f);
            fill_normal(&r, ls[k]->b, ls[k]->out, 0.02f);
        }
        fill_const(b->ln1_w, D, 1.0f);
        fill_const(b->ln2_w, D, 1.0f);
        fill_normal(&r, b->ln1_b, D, 0.02f);
        fill_normal(&r, b->ln2_b, D, 0.02f);
        (void)F;
    }
    fill_const(m->norm_w, D, 1.0f);
    fill_normal(&r, m->norm_b, D, 0.02f);
    fill_normal(&r, m->head.w, (int64_t)c->classes * D, 0.02f);
    fill_normal(&r, m->head.b, c->classes, 0.02f);
    if (c->n_outputs == 2) {
        fill_normal(&r, m->head_dist.w, (int64_t)c->classes * D, 0.02f);
        fill_normal(&r, m->head_dist.b, c->classes, 0.02f);
    }
    snprintf(m->arch, sizeof m->arch, "random_d%d_l%d_h%d", c->dim, c->depth, c->heads);
    snprintf(m->src_dtype, sizeof m->src_dtype, "F32");
    *out = m;
    return LPV_OK;
}

static void copy_linear(lpv_linear *dst, const lpv_linear *src) {
    memcpy(dst->w, src->w, sizeof(float) * (size_t)src->out * (size_t)src->in);
    memcpy(dst->b, src->b, sizeof(float) * (size_t)src->out);
}

lpv_status lpv_model_clone(lpv_model **out, const lpv_model *src, lpv_err *err) {
    *out = NULL;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers((lpv_model *)src, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++)
        if (!refs[i].lin->w || !refs[i].lin->b)
            return lpv_fail(err, LPV_E_ARG, "'%s': layer '%s' is not dense: densify the model before cloning it",
                            src->path, refs[i].name);
    lpv_model *m = calloc(1, sizeof *m);
    if (!m) return lpv_fail(err, LPV_E_OOM, "out of memory");
    m->cfg = src->cfg;
    m->attention = src->attention;
    memcpy(m->path, src->path, sizeof m->path), memcpy(m->arch, src->arch, sizeof m->arch);
    memcpy(m->src_dtype, src->src_dtype, sizeof m->src_dtype), memcpy(m->sha256, src->sha256, sizeof m->sha256);
    lpv_arena_init(&m->arena, 1 << 20);
    lpv_status st = alloc_weights(m, err);
    if (st != LPV_OK) {
        lpv_model_free(m);
        return st;
    }
    int64_t D = src->cfg.dim;
    memcpy(m->cls, src->cls, sizeof(float) * (size_t)D);
    if (m->dist) memcpy(m->dist, src->dist, sizeof(float) * (size_t)D);
    memcpy(m->pos, src->pos, sizeof(float) * (size_t)(src->cfg.n_tokens * D));
    memcpy(m->norm_w, src->norm_w, sizeof(float) * (size_t)D), memcpy(m->norm_b, src->norm_b, sizeof(float) * (size_t)D);
    for (int l = 0; l < src->cfg.depth; l++) {
        const lpv_block *a = &src->blocks[l];
        lpv_block *b = &m->blocks[l];
        memcpy(b->ln1_w, a->ln1_w, sizeof(float) * (size_t)D), memcpy(b->ln1_b, a->ln1_b, sizeof(float) * (size_t)D);
        memcpy(b->ln2_w, a->ln2_w, sizeof(float) * (size_t)D), memcpy(b->ln2_b, a->ln2_b, sizeof(float) * (size_t)D);
    }
    lpv_layer_ref dst[LPV_MAX_LAYERS];
    lpv_model_layers(m, dst, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) copy_linear(dst[i].lin, refs[i].lin);
    *out = m;
    return LPV_OK;
}

/* Temporary dense copies of BSR weights, freed after the write. */
typedef struct {
    void *bufs[LPV_MAX_LAYERS];
    int n;
} dense_tmp;

/* Adds FP32 data as F32, or as BF16 when bf16. */
static lpv_status add_f32(lpv_st_writer *w, const char *name, int ndim, const int64_t *shape, const float *data, int bf16,
                          lpv_err *err) {
    return bf16 ? lpv_st_writer_add_bf16(w, name, ndim, shape, data, err)
                : lpv_st_writer_add(w, name, LPV_DT_F32, ndim, shape, data, err);
}

/* Adds one linear weight: dense, densified (dense_masked), or as the three BSR arrays. */
static lpv_status add_linear(lpv_st_writer *w, const char *name, const lpv_linear *L, int ndim, const int64_t *shape,
                             int dense_masked, int bf16, dense_tmp *tmp, lpv_err *err) {
    if (!dense_masked && lpv_linear_has_int8(L)) {
        if (tmp->n >= (int)(sizeof tmp->bufs / sizeof *tmp->bufs)) return lpv_fail(err, LPV_E_ARG, "too many layers");
        tmp->bufs[tmp->n] = NULL;
        return lpv__q8_save(w, name, L, ndim, shape, &tmp->bufs[tmp->n++], err);
    }
    if (!dense_masked && L->codebook && (L->bsr || L->w)) {
        if (tmp->n >= (int)(sizeof tmp->bufs / sizeof *tmp->bufs)) return lpv_fail(err, LPV_E_ARG, "too many layers");
        tmp->bufs[tmp->n] = NULL;
        int written = 0;
        LPV_TRY(lpv__cb_save(w, name, L, ndim, shape, &tmp->bufs[tmp->n++], &written, err));
        if (written) return LPV_OK;
    }
    if (!L->bsr) {
        if (!L->w) return lpv_fail(err, LPV_E_UNSUPPORTED, "layer '%s' has no weights to save", name);
        return add_f32(w, name, ndim, shape, L->w, bf16, err);
    }
    const lpv_bsr *b = L->bsr;
    if (dense_masked) {
        if (tmp->n >= (int)(sizeof tmp->bufs / sizeof *tmp->bufs)) return lpv_fail(err, LPV_E_ARG, "too many layers");
        float *d = malloc(sizeof(float) * (size_t)b->rows * (size_t)b->cols);
        if (!d) return lpv_fail(err, LPV_E_OOM, "out of memory densifying '%s'", name);
        tmp->bufs[tmp->n++] = d;
        lpv_bsr_to_dense(b, d);
        return add_f32(w, name, ndim, shape, d, bf16, err);
    }
    char nm[LPV_ST_MAX_NAME + 32];
    snprintf(nm, sizeof nm, "%s.bsr_values", name);
    LPV_TRY(add_f32(w, nm, 3, (int64_t[]){b->nnzb, b->R, b->C}, b->values, bf16, err));
    snprintf(nm, sizeof nm, "%s.bsr_col_indices", name);
    LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){b->nnzb}, b->col_idx, err));
    snprintf(nm, sizeof nm, "%s.bsr_row_ptr", name);
    return lpv_st_writer_add(w, nm, LPV_DT_I32, 1, (int64_t[]){(int64_t)b->nbr + 1}, b->row_ptr, err);
}

lpv_status lpv_model_save(const lpv_model *m, const char *path, const lpv_save_opts *o, lpv_err *err) {
    if (m->path[0] && lpv_same_file(path, m->path))
        return lpv_fail(err, LPV_E_ARG, "refusing to overwrite the input model '%s'", path);
    const lpv_config *c = &m->cfg;
    int64_t D = c->dim;
    int dm = o && o->dense_masked, bf = o && o->bf16;
    if (bf && !dm && (lpv_model_has_int8(m) || lpv_model_has_codebook(m)))
        return lpv_fail(err, LPV_E_ARG, "'%s' has %s layers: BF16 applies to float weights (decode them with dense_masked)",
                        m->path, lpv_model_has_int8(m) ? "int8" : "codebook");
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    dense_tmp tmp;
    tmp.n = 0;
    lpv_status st = LPV_OK;
    char nm[LPV_ST_MAX_NAME];
#define ADDT(name, ptr, nd, ...)                                                                       \
    do {                                                                                               \
        if (st == LPV_OK) st = add_f32(&w, name, nd, (int64_t[]){__VA_ARGS__}, ptr, bf, err);              \
    } while (0)
#define ADDL(name, lin, nd, ...)                                                                       \
    do {                                                                                               \
        if (st == LPV_OK) st = add_linear(&w, name, lin, nd, (int64_t[]){__VA_ARGS__}, dm, bf, &tmp, err); \
    } while (0)
    ADDT("cls_token", m->cls, 3, 1, 1, D);
    if (m->dist) ADDT("dist_token", m->dist, 3, 1, 1, D);
    ADDT("pos_embed", m->pos, 3, 1, c->n_tokens, D);
    ADDL("patch_embed.proj.weight", &m->patch, 4, D, c->chans, c->patch, c->patch);
    ADDT("patch_embed.proj.bias", m->patch.b, 1, D);
    for (int l = 0; l < c->depth && st == LPV_OK; l++) {
        const lpv_block *b = &m->blocks[l];
        const float *ptrs[B_COUNT] = {
            [B_LN1_W] = b->ln1_w, [B_LN1_B] = b->ln1_b, [B_QKV_B] = b->qkv.b, [B_PROJ_B] = b->proj.b,
            [B_LN2_W] = b->ln2_w, [B_LN2_B] = b->ln2_b, [B_FC1_B] = b->fc1.b, [B_FC2_B] = b->fc2.b};
        for (int id = 0; id < B_COUNT && st == LPV_OK; id++) {
            if (!TIMM_B[id]) continue;
            snprintf(nm, sizeof nm, TIMM_B[id], l);
            const lpv_linear *lin = id == B_QKV_W ? &b->qkv : id == B_PROJ_W ? &b->proj : id == B_FC1_W ? &b->fc1
                                                                        : id == B_FC2_W ? &b->fc2 : NULL;
            if (lin) {
                ADDL(nm, lin, 2, lin->out, lin->in);
            } else {
                int64_t len = id == B_QKV_B ? 3 * D : id == B_FC1_B ? c->mlp : D;
                ADDT(nm, ptrs[id], 1, len);
            }
        }
    }
    ADDT("norm.weight", m->norm_w, 1, D);
    ADDT("norm.bias", m->norm_b, 1, D);
    ADDL("head.weight", &m->head, 2, c->classes, D);
    ADDT("head.bias", m->head.b, 1, c->classes);
    if (c->n_outputs == 2) {
        ADDL("head_dist.weight", &m->head_dist, 2, c->classes, D);
        ADDT("head_dist.bias", m->head_dist.b, 1, c->classes);
    }
#undef ADDT
#undef ADDL
    char arch[256];
    snprintf(arch, sizeof arch, "{\"heads\": %d, \"ln_eps\": %.9g, \"patch\": %d, \"chans\": %d, \"arch\": \"%s\"}",
             c->heads, (double)c->ln_eps, c->patch, c->chans, m->arch);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.arch", arch, err);
    if (st == LPV_OK && !dm && lpv_model_has_int8(m)) {
        int n8, per_tensor;
        lpv_model_int8_counts(m, &n8, &per_tensor);
        st = lpv_st_writer_meta(&w, "lpvit.quant",
                                per_tensor ? "{\"weights\": \"int8, symmetric, one scale per output row\", \"inputs\": "
                                             "\"uint8, calibrated per-tensor scale and zero point\"}"
                                           : "{\"weights\": \"int8, symmetric, one scale per output row\", \"inputs\": "
                                             "\"uint8, per token at run time\"}",
                                err);
    }
    if (st == LPV_OK && !dm && lpv_model_has_codebook(m))
        st = lpv_st_writer_meta(&w, "lpvit.quant",
                                "{\"weights\": \"block linears: one codebook of up to 256 levels per layer shared by its "
                                "channels (1-D k-means), one code per weight (uint8; two per byte when the codebook "
                                "has at most 16 levels), times its row's scale (U8 tensors + .weight_codebook + "
                                ".weight_codebook_scale)\", "
                                "\"inputs\": \"float32\"}",
                                err);
    if (st == LPV_OK && !dm && lpv_model_has_codebook(m)) st = lpv__cb_save_meta(&w, err);
    for (int i = 0; o && i < o->n_meta && st == LPV_OK; i++)
        st = lpv_st_writer_meta(&w, o->meta_keys[i], o->meta_values[i], err);
    if (st == LPV_OK) st = lpv_st_write(&w, path, err);
    lpv_st_writer_free(&w);
    for (int i = 0; i < tmp.n; i++) free(tmp.bufs[i]);
    return st;
}
