/*
 * grad.c — loss, forward pass with saved activations, and the backward pass
 * through the whole DeiT/ViT (see include/lpvit/grad.h).
 *
 *   forward (as forward.c, keeping activations in ws->layers):
 *     patches = patchify(images); x = [cls | dist | W_pe patches + b] + pos
 *     per block: x_mid = x + W_proj attn(W_qkv LN1(x) + b) + b
 *                x'    = x_mid + W_fc2 gelu(h) + b,  h = W_fc1 LN2(x_mid) + b
 *     logits = mean over heads k of W_k LN(x[:, token k]) + b_k
 *   backward (reverse order; dres is ∂L/∂x of the residual stream, updated in place):
 *     heads → final LN → scatter into dres at the head tokens
 *     per block: fc2 (dX, GELU', dW) → fc1 → LN2 (dres +=) → proj → attention → qkv → LN1 (dres +=)
 *     tokens: cls/dist/pos sums over images, patch columns → patch-embedding dW
 */
#include "lpvit/grad.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/grad_ops.h"
#include "lpvit/linear.h"
#include "lpvit/ops.h"

static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- losses ---- */

LPV_ENUM_FUNCS(lpv_loss_kind, lpv_loss_name, lpv_loss_parse, LPV_LOSS_LIST, LPV_LOSS_COUNT, "loss")

/* log Σ exp(z) in double. */
static double logsumexp(const float *z, int C) {
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) mx = z[c] > mx ? z[c] : mx;
    for (int c = 0; c < C; c++) s += exp((double)z[c] - mx);
    return mx + log(s);
}

/* Per-sample losses into losses (B) and dlogits (B, C) = ∂(mean_n L_n)/∂logits. */
static void loss_forward_backward(const lpv_loss *ls, const float *logits, int B, int C, float *losses,
                                  float *dlogits) {
    double invB = 1.0 / B;
    for (int n = 0; n < B; n++) {
        const float *z = logits + (int64_t)n * C;
        float *dz = dlogits + (int64_t)n * C;
        double L = 0;
        switch (ls->kind) {
        case LPV_LOSS_MEAN_SQ:
            for (int c = 0; c < C; c++) {
                L += (double)z[c] * z[c];
                dz[c] = (float)(2.0 * z[c] / C * invB);
            }
            L /= C;
            break;
        case LPV_LOSS_CE:
        case LPV_LOSS_SELF_CE: {
            int y = 0;
            if (ls->kind == LPV_LOSS_CE) y = ls->labels[n];
            else
                for (int c = 1; c < C; c++) y = z[c] > z[y] ? c : y;
            double lse = logsumexp(z, C);
            L = lse - z[y];
            for (int c = 0; c < C; c++) dz[c] = (float)((exp((double)z[c] - lse) - (c == y)) * invB);
            break;
        }
        case LPV_LOSS_KL: {
            const float *tz = ls->target_logits + (int64_t)n * C;
            double lse = logsumexp(z, C), tlse = logsumexp(tz, C);
            for (int c = 0; c < C; c++) {
                double lpt = (double)tz[c] - tlse, pt = exp(lpt), lpm = (double)z[c] - lse;
                if (pt > 0) L += pt * (lpt - lpm);
                dz[c] = (float)((exp(lpm) - pt) * invB);
            }
            break;
        }
        default: break;
        }
        losses[n] = (float)L;
    }
}

/* ---- gradient buffers ---- */

typedef struct {
    lpv_grads *g;
    float *next, *next_sq; /* carve pointers (NULL while counting) */
    int64_t n, n_sq;
} carver;

static float *carve(carver *cv, int64_t n) {
    float *p = cv->next ? cv->next + cv->n : NULL;
    cv->n += n;
    return p;
}

static void carve_linear(carver *cv, lpv_linear_grad *lg, int out, int in, int sq) {
    lg->out = out, lg->in = in;
    lg->no_mean = (cv->g->flags & LPV_GRADS_NO_MEAN) != 0;
    lg->w = carve(cv, (int64_t)out * in);
    lg->b = carve(cv, out);
    lg->sq = NULL;
    lg->bsq = NULL;
    if (sq) {
        lg->sq = cv->next_sq ? cv->next_sq + cv->n_sq : NULL;
        cv->n_sq += (int64_t)out * in;
    }
}

/* Lays out every gradient in model order; with cv->next NULL it only counts. */
static void carve_all(carver *cv, const lpv_config *c, int flags) {
    lpv_grads *g = cv->g;
    int D = c->dim, F = c->mlp, K = c->chans * c->patch * c->patch, sq = (flags & LPV_GRADS_SQ) != 0;
    g->cls = carve(cv, D);
    g->dist = c->n_prefix == 2 ? carve(cv, D) : NULL;
    g->pos = carve(cv, (int64_t)c->n_tokens * D);
    carve_linear(cv, &g->patch, D, K, sq);
    for (int l = 0; l < c->depth; l++) {
        lpv_block_grads *b = &g->blocks[l];
        b->ln1_w = carve(cv, D), b->ln1_b = carve(cv, D);
        carve_linear(cv, &b->qkv, 3 * D, D, sq);
        carve_linear(cv, &b->proj, D, D, sq);
        b->ln2_w = carve(cv, D), b->ln2_b = carve(cv, D);
        carve_linear(cv, &b->fc1, F, D, sq);
        carve_linear(cv, &b->fc2, D, F, sq);
    }
    g->norm_w = carve(cv, D), g->norm_b = carve(cv, D);
    carve_linear(cv, &g->head, c->classes, D, sq);
    memset(&g->head_dist, 0, sizeof g->head_dist);
    if (c->n_outputs == 2) carve_linear(cv, &g->head_dist, c->classes, D, sq);
}

static int config_ok(const lpv_config *c) {
    int G = c->patch > 0 ? c->img / c->patch : 0;
    return c->dim >= 1 && c->heads >= 1 && c->dim % c->heads == 0 && c->depth >= 1 && c->mlp >= 1 && G >= 1 &&
           c->chans >= 1 && c->classes >= 1 && (c->n_prefix == 1 || c->n_prefix == 2) &&
           c->n_tokens == c->n_prefix + G * G && c->n_outputs >= 1 && c->n_outputs <= c->n_prefix;
}

lpv_status lpv_grads_init(lpv_grads *g, const lpv_config *cfg, int flags, lpv_err *err) {
    memset(g, 0, sizeof *g);
    if (!config_ok(cfg)) return lpv_fail(err, LPV_E_ARG, "grads: inconsistent architecture");
    g->cfg = *cfg;
    g->flags = flags;
    lpv_arena_init(&g->arena, 1 << 20);
    g->blocks = lpv_arena_alloc(&g->arena, sizeof(lpv_block_grads) * (size_t)cfg->depth);
    if (!g->blocks) goto oom;
    carver cv = {g, NULL, NULL, 0, 0};
    carve_all(&cv, cfg, flags);
    g->n_all = cv.n, g->n_sq = cv.n_sq;
    g->all = lpv_arena_alloc(&g->arena, sizeof(float) * (size_t)g->n_all);
    g->all_sq = g->n_sq ? lpv_arena_alloc(&g->arena, sizeof(float) * (size_t)g->n_sq) : NULL;
    if (!g->all || (g->n_sq && !g->all_sq)) goto oom;
    cv = (carver){g, g->all, g->all_sq, 0, 0};
    carve_all(&cv, cfg, flags);
    LPV_ASSERT(cv.n == g->n_all && cv.n_sq == g->n_sq);
    return LPV_OK;
oom:
    lpv_arena_free(&g->arena);
    return lpv_fail(err, LPV_E_OOM, "out of memory for gradients (%.0f MiB)",
                    (double)(g->n_all + g->n_sq) * sizeof(float) / (1 << 20));
}


static int block_grads(lpv_grads *g, lpv_linear_grad **ls) {
    int n = 0;
    ls[n++] = &g->patch;
    for (int l = 0; l < g->cfg.depth; l++) {
        ls[n++] = &g->blocks[l].qkv, ls[n++] = &g->blocks[l].proj;
        ls[n++] = &g->blocks[l].fc1, ls[n++] = &g->blocks[l].fc2;
    }
    ls[n++] = &g->head;
    if (g->cfg.n_outputs == 2) ls[n++] = &g->head_dist;
    return n;
}

lpv_status lpv_grads_enable_blocks(lpv_grads *g, int R, int C, lpv_err *err) {
    if (R < 1 || C < 1) return lpv_fail(err, LPV_E_ARG, "block shape %dx%d", R, C);
    lpv_linear_grad *ls[LPV_MAX_LAYERS];
    int n = block_grads(g, ls);
    for (int i = 0; i < n; i++) {
        int64_t nb = lpv_nblocks(ls[i]->out, ls[i]->in, R, C);
        ls[i]->bsq = lpv_arena_alloc(&g->arena, sizeof(float) * (size_t)nb);
        if (!ls[i]->bsq) return lpv_fail(err, LPV_E_OOM, "out of memory for block statistics");
    }
    g->block_R = R, g->block_C = C;
    return LPV_OK;
}

void lpv_grads_zero(lpv_grads *g) {
    if (g->all) memset(g->all, 0, sizeof(float) * (size_t)g->n_all);
    if (g->all_sq) memset(g->all_sq, 0, sizeof(float) * (size_t)g->n_sq);
    if (g->block_R) {
        lpv_linear_grad *ls[LPV_MAX_LAYERS];
        int n = block_grads(g, ls);
        for (int i = 0; i < n; i++) {
            int64_t nb = (int64_t)((ls[i]->out + g->block_R - 1) / g->block_R) * ((ls[i]->in + g->block_C - 1) / g->block_C);
            memset(ls[i]->bsq, 0, sizeof(float) * (size_t)nb);
        }
    }
    g->batches = 0, g->samples = 0;
}

void lpv_grads_free(lpv_grads *g) {
    lpv_arena_free(&g->arena);
    memset(g, 0, sizeof *g);
}

lpv_linear_grad *lpv_grads_linear(lpv_grads *g, lpv_layer_kind kind, int block) {
    if (kind == LPV_LK_PATCH) return &g->patch;
    if (kind == LPV_LK_HEAD) return &g->head;
    if (kind == LPV_LK_HEAD_DIST) return g->head_dist.w ? &g->head_dist : NULL;
    if (block < 0 || block >= g->cfg.depth) return NULL;
    lpv_block_grads *b = &g->blocks[block];
    switch (kind) {
    case LPV_LK_QKV: return &b->qkv;
    case LPV_LK_PROJ: return &b->proj;
    case LPV_LK_FC1: return &b->fc1;
    case LPV_LK_FC2: return &b->fc2;
    default: return NULL;
    }
}

int lpv_grads_list(lpv_grads *g, lpv_grad_tensor *out, int cap) {
    const lpv_config *c = &g->cfg;
    int n = 0;
    int64_t D = c->dim;
#define ADD(ptr, nd, s0, s1, s2, s3, ...)                                         \
    do {                                                                          \
        if (n < cap) {                                                            \
            lpv_grad_tensor *t = &out[n];                                         \
            snprintf(t->name, sizeof t->name, __VA_ARGS__);                       \
            t->data = (ptr), t->ndim = (nd);                                      \
            int64_t sh[4] = {(s0), (s1), (s2), (s3)};                             \
            t->n = 1;                                                             \
            for (int k = 0; k < 4; k++) {                                         \
                t->shape[k] = k < (nd) ? sh[k] : 0;                               \
                if (k < (nd)) t->n *= sh[k];                                      \
            }                                                                     \
        }                                                                         \
        n++;                                                                      \
    } while (0)
    ADD(g->cls, 3, 1, 1, D, 0, "cls_token");
    if (g->dist) ADD(g->dist, 3, 1, 1, D, 0, "dist_token");
    ADD(g->pos, 3, 1, c->n_tokens, D, 0, "pos_embed");
    ADD(g->patch.w, 4, D, c->chans, c->patch, c->patch, "patch_embed.proj.weight");
    ADD(g->patch.b, 1, D, 0, 0, 0, "patch_embed.proj.bias");
    for (int l = 0; l < c->depth; l++) {
        lpv_block_grads *b = &g->blocks[l];
        ADD(b->ln1_w, 1, D, 0, 0, 0, "blocks.%d.norm1.weight", l);
        ADD(b->ln1_b, 1, D, 0, 0, 0, "blocks.%d.norm1.bias", l);
        ADD(b->qkv.w, 2, 3 * D, D, 0, 0, "blocks.%d.attn.qkv.weight", l);
        ADD(b->qkv.b, 1, 3 * D, 0, 0, 0, "blocks.%d.attn.qkv.bias", l);
        ADD(b->proj.w, 2, D, D, 0, 0, "blocks.%d.attn.proj.weight", l);
        ADD(b->proj.b, 1, D, 0, 0, 0, "blocks.%d.attn.proj.bias", l);
        ADD(b->ln2_w, 1, D, 0, 0, 0, "blocks.%d.norm2.weight", l);
        ADD(b->ln2_b, 1, D, 0, 0, 0, "blocks.%d.norm2.bias", l);
        ADD(b->fc1.w, 2, c->mlp, D, 0, 0, "blocks.%d.mlp.fc1.weight", l);
        ADD(b->fc1.b, 1, c->mlp, 0, 0, 0, "blocks.%d.mlp.fc1.bias", l);
        ADD(b->fc2.w, 2, D, c->mlp, 0, 0, "blocks.%d.mlp.fc2.weight", l);
        ADD(b->fc2.b, 1, D, 0, 0, 0, "blocks.%d.mlp.fc2.bias", l);
    }
    ADD(g->norm_w, 1, D, 0, 0, 0, "norm.weight");
    ADD(g->norm_b, 1, D, 0, 0, 0, "norm.bias");
    ADD(g->head.w, 2, c->classes, D, 0, 0, "head.weight");
    ADD(g->head.b, 1, c->classes, 0, 0, 0, "head.bias");
    if (c->n_outputs == 2) {
        ADD(g->head_dist.w, 2, c->classes, D, 0, 0, "head_dist.weight");
        ADD(g->head_dist.b, 1, c->classes, 0, 0, 0, "head_dist.bias");
    }
#undef ADD
    return n;
}

/* ---- workspace ---- */

lpv_status lpv_train_ws_init(lpv_train_ws *ws, const lpv_config *cfg, int max_batch, lpv_err *err) {
    memset(ws, 0, sizeof *ws);
    if (max_batch < 1 || max_batch > 4096) return lpv_fail(err, LPV_E_ARG, "batch size %d out of range 1..4096", max_batch);
    if (!config_ok(cfg)) return lpv_fail(err, LPV_E_ARG, "training workspace: inconsistent architecture");
    ws->cfg = *cfg;
    ws->max_batch = max_batch;
    ws->threads = lpv_threads_get();
    int64_t D = cfg->dim, F = cfg->mlp, T = cfg->n_tokens, C = cfg->classes;
    int64_t K = (int64_t)cfg->chans * cfg->patch * cfg->patch, G2 = T - cfg->n_prefix;
    ws->ld_max = lpv_round16(max_batch * (int)T);
    ws->ldp_max = lpv_round16(max_batch * (int)G2);
    ws->ldh_max = lpv_round16(max_batch * cfg->n_outputs);
    int64_t ld = ws->ld_max, ldp = ws->ldp_max, ldh = ws->ldh_max;
    /* the per-sample gradient scratch of the largest linear: qkv, proj, fc1, fc2, patch, head */
    int shape[5][2] = {{3 * cfg->dim, cfg->dim}, {cfg->mlp, cfg->dim}, {cfg->dim, cfg->mlp}, {cfg->dim, (int)K},
                       {cfg->classes, cfg->dim}};
    ws->tmp_floats = 0;
    for (int i = 0; i < 5; i++)
        ws->tmp_floats = max_i64(ws->tmp_floats, lpv_persample_tmp_floats(shape[i][0], shape[i][1], ws->threads));
    lpv_arena *a = &ws->arena;
    lpv_arena_init(a, 1 << 20);
    size_t f = sizeof(float);
#define ALLOC(ptr, n)                                                   \
    do {                                                                \
        (ptr) = lpv_arena_alloc(a, f * (size_t)(n));                    \
        if (!(ptr)) goto oom;                                           \
    } while (0)
    ws->layers = lpv_arena_alloc(a, sizeof(lpv_train_layer) * (size_t)cfg->depth);
    if (!ws->layers) goto oom;
    ALLOC(ws->patches, K * ldp);
    for (int l = 0; l < cfg->depth; l++) {
        lpv_train_layer *L = &ws->layers[l];
        ALLOC(L->x, D * ld);
        ALLOC(L->ln1, D * ld);
        ALLOC(L->ln1_mean, ld);
        ALLOC(L->ln1_rstd, ld);
        ALLOC(L->qkv, 3 * D * ld);
        ALLOC(L->probs, (int64_t)max_batch * cfg->heads * T * T);
        ALLOC(L->att, D * ld);
        ALLOC(L->x_mid, D * ld);
        ALLOC(L->ln2, D * ld);
        ALLOC(L->ln2_mean, ld);
        ALLOC(L->ln2_rstd, ld);
        ALLOC(L->h, F * ld);
    }
    ALLOC(ws->x_out, D * ld);
    ALLOC(ws->hx, D * ldh);
    ALLOC(ws->hxn, D * ldh);
    ALLOC(ws->h_mean, ldh);
    ALLOC(ws->h_rstd, ldh);
    ALLOC(ws->lt, C * ldh);
    ALLOC(ws->logits, (int64_t)max_batch * C);
    ALLOC(ws->dlogits, (int64_t)max_batch * C);
    ALLOC(ws->losses, max_batch);
    ALLOC(ws->dres, D * ld);
    ALLOC(ws->dd, D * ld);
    ALLOC(ws->dbig, max_i64(3 * D, F) * ld);
    ALLOC(ws->gbuf, F * ld);
    ALLOC(ws->dpe, D * ldp);
    ALLOC(ws->dhx, D * ldh);
    ALLOC(ws->dhxn, D * ldh);
    ALLOC(ws->dlt, C * ldh);
    ALLOC(ws->att_scratch, lpv_attention_backward_scratch((int)T) * ws->threads);
    ALLOC(ws->tmp, ws->tmp_floats);
#undef ALLOC
    ws->bytes = a->total;
    return LPV_OK;
oom:;
    double mib = (double)a->total / (1 << 20);
    lpv_arena_free(a);
    return lpv_fail(err, LPV_E_OOM, "out of memory for a training batch of %d (%.0f MiB reserved so far)", max_batch,
                    mib);
}

void lpv_train_ws_free(lpv_train_ws *ws) {
    lpv_arena_free(&ws->arena);
    memset(ws, 0, sizeof *ws);
}

/* ---- forward with saved activations ---- */

/* Y (out, N) = W X + b (acc: Y += ...). Output rows split over the threads. */
static void linear_fwd(float *Y, const float *X, const lpv_linear *L, int N, int ld, int acc) {
#pragma omp parallel num_threads(lpv_team_size())
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int chunks = (L->out + 15) / 16;
        int r0 = (int)((int64_t)chunks * id / nt) * 16, r1 = (int)((int64_t)chunks * (id + 1) / nt) * 16;
        if (r1 > L->out) r1 = L->out;
        if (r0 > L->out) r0 = L->out;
        if (r1 > r0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, N, L->in, 1.0f, L->w + (int64_t)r0 * L->in,
                        L->in, X, ld, acc ? 1.0f : 0.0f, Y + (int64_t)r0 * ld, ld);
            if (L->b)
                for (int r = r0; r < r1; r++) {
                    float *y = Y + (int64_t)r * ld, bv = L->b[r];
                    for (int t = 0; t < N; t++) y[t] += bv;
                }
        }
    }
}

static void copy_rows(float *dst, const float *src, int rows, int N, int ld) {
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int r = 0; r < rows; r++) memcpy(dst + (int64_t)r * ld, src + (int64_t)r * ld, sizeof(float) * (size_t)N);
}

/* One block on the saved input L->x (D, ld): keeps what block_bwd needs in L, writes x' to x_next. */
static void block_fwd(const lpv_config *c, const lpv_block *blk, lpv_train_ws *ws, lpv_train_layer *L, float *x_next,
                      int B) {
    int D = c->dim, T = c->n_tokens, F = c->mlp, N = B * T, ld = lpv_round16(N);
    lpv_layernorm_forward_fm(L->ln1, L->ln1_mean, L->ln1_rstd, L->x, blk->ln1_w, blk->ln1_b, D, N, ld, c->ln_eps);
    linear_fwd(L->qkv, L->ln1, &blk->qkv, N, ld, 0);
    lpv_attention_forward_fm(L->att, L->probs, L->qkv, ld, B, T, D, c->heads);
    copy_rows(L->x_mid, L->x, D, N, ld);
    linear_fwd(L->x_mid, L->att, &blk->proj, N, ld, 1);
    lpv_layernorm_forward_fm(L->ln2, L->ln2_mean, L->ln2_rstd, L->x_mid, blk->ln2_w, blk->ln2_b, D, N, ld, c->ln_eps);
    linear_fwd(L->h, L->ln2, &blk->fc1, N, ld, 0);
    lpv_gelu_forward_fm(ws->gbuf, L->h, F, N, ld);
    copy_rows(x_next, L->x_mid, D, N, ld);
    linear_fwd(x_next, ws->gbuf, &blk->fc2, N, ld, 1);
}

static void forward_saved(const lpv_model *m, lpv_train_ws *ws, const float *images, int B) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, G = c->img / c->patch, G2 = G * G;
    int N = B * T, ld = lpv_round16(N), Np = B * G2, ldp = lpv_round16(Np);
    int no = c->n_outputs, Nh = no * B, ldh = lpv_round16(Nh), C = c->classes;
    lpv_patchify(ws->patches, ldp, images, B, c->chans, c->img, c->patch);
    float *x0 = ws->layers[0].x;
    /* patch embeddings straight into their token columns: one GEMM per image */
    float *pe = ws->dpe; /* (D, ldp) borrowed as forward scratch */
    linear_fwd(pe, ws->patches, &m->patch, Np, ldp, 0);
    lpv_embed_tokens(m, x0, ld, pe, ldp, B);
    for (int l = 0; l < c->depth; l++)
        block_fwd(c, &m->blocks[l], ws, &ws->layers[l], l + 1 < c->depth ? ws->layers[l + 1].x : ws->x_out, B);
    /* head tokens: column k*B + b of hx is token k of image b */
    for (int d = 0; d < D; d++)
        for (int k = 0; k < no; k++)
            for (int b = 0; b < B; b++)
                ws->hx[(int64_t)d * ldh + k * B + b] = ws->x_out[(int64_t)d * ld + (int64_t)b * T + k];
    lpv_layernorm_forward_fm(ws->hxn, ws->h_mean, ws->h_rstd, ws->hx, m->norm_w, m->norm_b, D, Nh, ldh, c->ln_eps);
    linear_fwd(ws->lt, ws->hxn, &m->head, B, ldh, 0);
    if (no == 2) linear_fwd(ws->lt + B, ws->hxn + B, &m->head_dist, B, ldh, 0);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < C; j++) {
            const float *r = ws->lt + (int64_t)j * ldh;
            ws->logits[(int64_t)b * C + j] = no == 2 ? 0.5f * (r[b] + r[B + b]) : r[b];
        }
}

/* ---- backward ---- */

/* dW (+ per-sample squares when enabled), db and optionally dX of one linear. */
static void linear_bwd(lpv_train_ws *ws, lpv_linear_grad *lg, float *dX, const float *dY, const float *X,
                       const lpv_linear *L, int N, int ld, int S, int cols, int dx_acc, int R, int C) {
    if (dX) lpv_linear_backward(dX, NULL, NULL, dY, X, L->w, L->out, L->in, N, ld, dx_acc);
    float *dW = lg->no_mean ? NULL : lg->w; /* only with per-sample moments: the plain path below always sums */
    if (lg->bsq)
        lpv_linear_backward_persample_blocks(dW, lg->b, lg->sq, lg->bsq, L->w, R, C, ws->tmp, dY, X, L->out, L->in,
                                             S, cols, ld, (float)S);
    else if (lg->sq)
        lpv_linear_backward_persample(dW, lg->b, lg->sq, ws->tmp, dY, X, L->out, L->in, S, cols, ld, (float)S);
    else
        lpv_linear_backward(NULL, lg->w, lg->b, dY, X, NULL, L->out, L->in, N, ld, 0);
}

/* ws->dres holds ∂L/∂x' on entry and ∂L/∂x on exit; the block's parameter gradients accumulate in bg. */
static void block_bwd(const lpv_config *c, const lpv_block *blk, lpv_block_grads *bg, lpv_train_ws *ws,
                      lpv_train_layer *L, int B, int R, int C) {
    int D = c->dim, T = c->n_tokens, F = c->mlp, N = B * T, ld = lpv_round16(N);
    /* MLP: x' = x_mid + fc2(gelu(h)) */
    lpv_linear_backward(ws->dbig, NULL, NULL, ws->dres, NULL, blk->fc2.w, D, F, N, ld, 0);
    lpv_gelu_backward_fm(ws->dbig, ws->gbuf, L->h, F, N, ld);
    linear_bwd(ws, &bg->fc2, NULL, ws->dres, ws->gbuf, &blk->fc2, N, ld, B, T, 0, R, C);
    linear_bwd(ws, &bg->fc1, ws->dd, ws->dbig, L->ln2, &blk->fc1, N, ld, B, T, 0, R, C);
    lpv_layernorm_backward_fm(ws->dres, bg->ln2_w, bg->ln2_b, ws->dd, L->x_mid, L->ln2_mean, L->ln2_rstd, blk->ln2_w,
                              D, N, ld);
    /* attention: x_mid = x + proj(attn(qkv(LN1(x)))) */
    linear_bwd(ws, &bg->proj, ws->dd, ws->dres, L->att, &blk->proj, N, ld, B, T, 0, R, C);
    lpv_attention_backward_fm(ws->dbig, ws->dd, L->qkv, L->probs, ld, B, T, D, c->heads, ws->att_scratch);
    linear_bwd(ws, &bg->qkv, ws->dd, ws->dbig, L->ln1, &blk->qkv, N, ld, B, T, 0, R, C);
    lpv_layernorm_backward_fm(ws->dres, bg->ln1_w, bg->ln1_b, ws->dd, L->x, L->ln1_mean, L->ln1_rstd, blk->ln1_w, D,
                              N, ld);
}

static void backward(const lpv_model *m, lpv_train_ws *ws, int B, lpv_grads *g) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, P = c->n_prefix, G = c->img / c->patch, G2 = G * G;
    int N = B * T, ld = lpv_round16(N), Np = B * G2, ldp = lpv_round16(Np);
    int no = c->n_outputs, Nh = no * B, ldh = lpv_round16(Nh), C = c->classes;

    /* heads: logits = (1/no) Σ_k lt_k */
    float inv_no = 1.0f / (float)no;
    for (int j = 0; j < C; j++)
        for (int k = 0; k < no; k++)
            for (int b = 0; b < B; b++) ws->dlt[(int64_t)j * ldh + k * B + b] = ws->dlogits[(int64_t)b * C + j] * inv_no;
    linear_bwd(ws, &g->head, ws->dhxn, ws->dlt, ws->hxn, &m->head, B, ldh, B, 1, 0, g->block_R, g->block_C);
    if (no == 2) linear_bwd(ws, &g->head_dist, ws->dhxn + B, ws->dlt + B, ws->hxn + B, &m->head_dist, B, ldh, B, 1, 0, g->block_R, g->block_C);
    for (int d = 0; d < D; d++) memset(ws->dhx + (int64_t)d * ldh, 0, sizeof(float) * (size_t)Nh);
    lpv_layernorm_backward_fm(ws->dhx, g->norm_w, g->norm_b, ws->dhxn, ws->hx, ws->h_mean, ws->h_rstd, m->norm_w, D,
                              Nh, ldh);
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int d = 0; d < D; d++) {
        float *r = ws->dres + (int64_t)d * ld;
        memset(r, 0, sizeof(float) * (size_t)N);
        for (int k = 0; k < no; k++)
            for (int b = 0; b < B; b++) r[(int64_t)b * T + k] = ws->dhx[(int64_t)d * ldh + k * B + b];
    }

    for (int l = c->depth - 1; l >= 0; l--) block_bwd(c, &m->blocks[l], &g->blocks[l], ws, &ws->layers[l], B, g->block_R, g->block_C);
    /* tokens: x0[:, b*T + t] = token_t + pos[t] */
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int d = 0; d < D; d++) {
        const float *r = ws->dres + (int64_t)d * ld;
        float *pr = ws->dpe + (int64_t)d * ldp;
        for (int t = 0; t < T; t++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += r[(int64_t)b * T + t];
            g->pos[(int64_t)t * D + d] += s;
        }
        for (int b = 0; b < B; b++) {
            g->cls[d] += r[(int64_t)b * T];
            if (P == 2) g->dist[d] += r[(int64_t)b * T + 1];
            memcpy(pr + (int64_t)b * G2, r + (int64_t)b * T + P, sizeof(float) * (size_t)G2);
        }
    }
    linear_bwd(ws, &g->patch, NULL, ws->dpe, ws->patches, &m->patch, Np, ldp, B, G2, 0, g->block_R, g->block_C);
}

/* ---- entry point ---- */

static lpv_status check_dense(const lpv_linear *L, const char *name, lpv_err *err) {
    if (!L->w) return lpv_fail(err, LPV_E_UNSUPPORTED, "layer '%s' has no dense weight; gradients need one", name);
    return LPV_OK;
}

/* The batch fits the workspace and its per-thread scratch covers today's thread count. */
static lpv_status check_ws(const lpv_train_ws *ws, int B, lpv_err *err) {
    if (B < 1 || B > ws->max_batch)
        return lpv_fail(err, LPV_E_ARG, "batch of %d images exceeds the training workspace's %d", B, ws->max_batch);
    if (ws->threads < lpv_threads_get())
        return lpv_fail(err, LPV_E_ARG, "training workspace made for %d threads, now %d", ws->threads, lpv_threads_get());
    return LPV_OK;
}

static lpv_status check_block_dense(const lpv_block *b, int l, lpv_err *err) {
    if (!b->qkv.w || !b->proj.w || !b->fc1.w || !b->fc2.w)
        return lpv_fail(err, LPV_E_UNSUPPORTED, "a linear layer of 'blocks.%d' has no dense weight; gradients need one", l);
    return LPV_OK;
}

static int same_arch(const lpv_config *a, const lpv_config *b) {
    return a->dim == b->dim && a->depth == b->depth && a->heads == b->heads && a->mlp == b->mlp &&
           a->patch == b->patch && a->img == b->img && a->chans == b->chans && a->classes == b->classes &&
           a->n_prefix == b->n_prefix && a->n_tokens == b->n_tokens && a->n_outputs == b->n_outputs;
}

lpv_status lpv_forward_backward(const lpv_model *m, lpv_train_ws *ws, const float *images, int B, const lpv_loss *loss,
                                float *loss_out, float *logits_out, lpv_grads *g, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    LPV_TRY(check_ws(ws, B, err));
    if (!same_arch(&ws->cfg, c)) return lpv_fail(err, LPV_E_ARG, "training workspace was sized for another architecture");
    if (g && !same_arch(&g->cfg, c)) return lpv_fail(err, LPV_E_ARG, "gradients were sized for another architecture");
    if (!images || !loss) return lpv_fail(err, LPV_E_ARG, "missing images or loss");
    if ((unsigned)loss->kind >= LPV_LOSS_COUNT) return lpv_fail(err, LPV_E_ARG, "unknown loss kind %d", (int)loss->kind);
    if (loss->kind == LPV_LOSS_CE) {
        if (!loss->labels) return lpv_fail(err, LPV_E_ARG, "loss 'ce' needs labels");
        for (int n = 0; n < B; n++)
            if (loss->labels[n] < 0 || loss->labels[n] >= c->classes)
                return lpv_fail(err, LPV_E_ARG, "label %d of image %d is outside 0..%d", loss->labels[n], n,
                                c->classes - 1);
    }
    if (loss->kind == LPV_LOSS_KL && !loss->target_logits)
        return lpv_fail(err, LPV_E_ARG, "loss 'kl' needs target logits");
    LPV_TRY(check_dense(&m->patch, "patch_embed.proj", err));
    LPV_TRY(check_dense(&m->head, "head", err));
    if (c->n_outputs == 2) LPV_TRY(check_dense(&m->head_dist, "head_dist", err));
    for (int l = 0; l < c->depth; l++) LPV_TRY(check_block_dense(&m->blocks[l], l, err));

    forward_saved(m, ws, images, B);
    loss_forward_backward(loss, ws->logits, B, c->classes, ws->losses, ws->dlogits);
    double L = 0;
    for (int n = 0; n < B; n++) L += ws->losses[n];
    if (loss_out) *loss_out = (float)(L / B);
    if (logits_out) memcpy(logits_out, ws->logits, sizeof(float) * (size_t)B * c->classes);
    if (g) {
        backward(m, ws, B, g);
        g->batches += 1;
        g->samples += B;
    }
    return LPV_OK;
}

/* ---- one block alone (block-wise reconstruction) ---- */

static int same_block_shape(const lpv_config *a, const lpv_config *b) {
    return a->dim == b->dim && a->heads == b->heads && a->mlp == b->mlp && a->n_tokens == b->n_tokens;
}

lpv_status lpv_block_forward_backward(const lpv_model *m, int l, lpv_train_ws *ws, const float *x, const float *target,
                                      int ldx, int B, double *loss_out, lpv_block_grads *bg, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    if (l < 0 || l >= c->depth) return lpv_fail(err, LPV_E_ARG, "block %d outside 0..%d", l, c->depth - 1);
    LPV_TRY(check_ws(ws, B, err));
    if (!same_block_shape(&ws->cfg, c)) return lpv_fail(err, LPV_E_ARG, "training workspace was sized for another block shape");
    const lpv_block *blk = &m->blocks[l];
    LPV_TRY(check_block_dense(blk, l, err));
    if (!x || !target) return lpv_fail(err, LPV_E_ARG, "missing block input or target");
    int D = c->dim, N = B * c->n_tokens, ld = lpv_round16(N);
    if (ldx < N) return lpv_fail(err, LPV_E_ARG, "block input stride %d is below its %d columns", ldx, N);
    lpv_train_layer *L = &ws->layers[0];
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int d = 0; d < D; d++) memcpy(L->x + (int64_t)d * ld, x + (int64_t)d * ldx, sizeof(float) * (size_t)N);
    block_fwd(c, blk, ws, L, ws->x_out, B);
    /* L = mean over the valid entries of (x' - target)²; ∂L/∂x' = 2 (x' - target) / (N D) */
    double sum = 0, scale = 2.0 / ((double)N * D);
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static) reduction(+ : sum)
    for (int d = 0; d < D; d++) {
        const float *y = ws->x_out + (int64_t)d * ld, *t = target + (int64_t)d * ldx;
        float *dr = ws->dres + (int64_t)d * ld;
        for (int k = 0; k < N; k++) {
            float e = y[k] - t[k];
            sum += (double)e * e;
            dr[k] = (float)(scale * e);
        }
    }
    if (loss_out) *loss_out = sum / ((double)N * D);
    if (bg) block_bwd(c, blk, bg, ws, L, B, 0, 0);
    return LPV_OK;
}
