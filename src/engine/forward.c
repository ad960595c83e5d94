/*
 * forward.c — the DeiT/ViT forward pass (see include/lpvit/forward.h).
 *
 *   patches = patchify(images)                          (C*p*p, B*G*G)
 *   x       = [cls | dist | W_pe patches + b] + pos     (D, B*T)
 *   per block:
 *     x += W_proj attn(W_qkv LN1(x) + b) + b
 *     x += W_fc2 gelu(W_fc1 LN2(x) + b) + b
 *   logits  = mean over heads of W_head LN(x[:, token k]) + b
 */
#include "lpvit/forward.h"

#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/ops.h"

const char *lpv_op_name(lpv_op op) {
    static const char *names[LPV_OP_COUNT] = {"patch_embed", "layernorm", "qkv", "attention", "proj",
                                              "fc1+gelu",    "fc2",       "head", "quantize", "other"};
    return op < LPV_OP_COUNT ? names[op] : "?";
}

static int max_i(int a, int b) { return a > b ? a : b; }

lpv_status lpv_workspace_init(lpv_workspace *ws, const lpv_config *cfg, int max_batch, lpv_err *err) {
    memset(ws, 0, sizeof *ws);
    ws->tap_stop = -1;
    if (max_batch < 1 || max_batch > 4096) return lpv_fail(err, LPV_E_ARG, "batch size %d out of range 1..4096", max_batch);
    int G = cfg->patch > 0 ? cfg->img / cfg->patch : 0;
    if (cfg->dim < 1 || cfg->heads < 1 || cfg->dim % cfg->heads || G < 1 || cfg->n_tokens != cfg->n_prefix + G * G ||
        cfg->mlp < 1 || cfg->classes < 1 || cfg->n_outputs < 1 || cfg->n_outputs > cfg->n_prefix)
        return lpv_fail(err, LPV_E_ARG, "workspace: inconsistent architecture (tokens %d, prefix %d, grid %d)",
                        cfg->n_tokens, cfg->n_prefix, G);
    ws->cfg = *cfg;
    ws->max_batch = max_batch;
    int T = cfg->n_tokens, D = cfg->dim;
    int K = cfg->chans * cfg->patch * cfg->patch;
    ws->ld_max = lpv_round16(max_batch * T);
    ws->ldp_max = lpv_round16(max_batch * G * G);
    int nh = cfg->n_outputs * lpv_round16(max_batch);
    ws->scratch_threads = lpv_threads_get();
    lpv_arena_init(&ws->arena, 1 << 20);
    size_t f = sizeof(float);
    ws->x = lpv_arena_alloc(&ws->arena, f * (size_t)D * ws->ld_max);
    ws->xn = lpv_arena_alloc(&ws->arena, f * (size_t)D * ws->ld_max);
    ws->big = lpv_arena_alloc(&ws->arena, f * (size_t)max_i(3 * D, cfg->mlp) * ws->ld_max);
    ws->patches = lpv_arena_alloc(&ws->arena, f * (size_t)K * ws->ldp_max);
    ws->pe = lpv_arena_alloc(&ws->arena, f * (size_t)D * ws->ldp_max);
    ws->hx = lpv_arena_alloc(&ws->arena, f * (size_t)D * nh);
    ws->lt = lpv_arena_alloc(&ws->arena, f * (size_t)cfg->classes * nh);
    ws->scratch = lpv_arena_alloc(&ws->arena, f * (size_t)lpv_attention_scratch(T, D / cfg->heads) * ws->scratch_threads);
    if (!ws->x || !ws->xn || !ws->big || !ws->patches || !ws->pe || !ws->hx || !ws->lt || !ws->scratch) {
        lpv_arena_free(&ws->arena);
        return lpv_fail(err, LPV_E_OOM, "out of memory for a batch of %d (%.0f MiB of activations)", max_batch,
                        (double)ws->arena.total / (1 << 20));
    }
    return LPV_OK;
}

void lpv_workspace_free(lpv_workspace *ws) { lpv_arena_free(&ws->arena); }

lpv_status lpv_workspace_init_for(lpv_workspace *ws, const lpv_model *m, int max_batch, lpv_err *err) {
    LPV_TRY(lpv_workspace_init(ws, &m->cfg, max_batch, err));
    lpv_status st = lpv_model_has_bf16(m) ? lpv_workspace_use_bf16(ws, err) : LPV_OK;
    if (st == LPV_OK && lpv_model_has_int8(m)) st = lpv_workspace_use_int8(ws, err);
    ws->attn_int8 = lpv_attention_int8_for(m, lpv_model_has_int8(m));
    ws->attn_fp32 = m->attention == LPV_ATTN_FP32;
    if (st) lpv_workspace_free(ws);
    return st;
}

int lpv_attention_int8_for(const lpv_model *m, int int8_linears) {
    if (m->attention == LPV_ATTN_INT8) return 1;
    return m->attention == LPV_ATTN_AUTO && int8_linears && lpv_attention_q8_runs(m->cfg.dim / m->cfg.heads);
}

const char *lpv_model_attention_name(const lpv_model *m) {
    int hd = m->cfg.dim / m->cfg.heads, q8 = lpv_model_has_int8(m);
    if (lpv_attention_int8_for(m, q8) && lpv_attention_q8_runs(hd)) return "int8";
    if (m->attention == LPV_ATTN_FP32) return "fp32";
    return lpv_model_has_bf16(m) && !q8 && lpv_attention_bf16_runs(m->cfg.n_tokens, hd) ? "bf16" : "fp32";
}

lpv_status lpv_workspace_use_bf16(lpv_workspace *ws, lpv_err *err) {
    if (ws->xbf) return LPV_OK;
    int rows = max_i(ws->cfg.dim, ws->cfg.mlp);
    ws->xbf = lpv_arena_alloc(&ws->arena, sizeof(uint32_t) * (size_t)((rows + 1) / 2) * (size_t)ws->ld_max);
    if (!ws->xbf) return lpv_fail(err, LPV_E_OOM, "out of memory for the BF16 activations");
    return LPV_OK;
}

lpv_status lpv_workspace_use_int8(lpv_workspace *ws, lpv_err *err) {
    if (ws->xq) return LPV_OK;
    int rows = max_i(ws->cfg.dim, ws->cfg.mlp);
    ws->xq = lpv_arena_alloc(&ws->arena, sizeof(uint32_t) * (size_t)((rows + 3) / 4) * (size_t)ws->ld_max);
    ws->xqa = lpv_arena_alloc(&ws->arena, sizeof(float) * (size_t)ws->ld_max);
    ws->xqc = lpv_arena_alloc(&ws->arena, sizeof(float) * (size_t)ws->ld_max);
    ws->xqr = lpv_arena_alloc(&ws->arena, sizeof(float) * 2 * (size_t)ws->ld_max * (size_t)ws->scratch_threads);
    if (!ws->xq || !ws->xqa || !ws->xqc || !ws->xqr) return lpv_fail(err, LPV_E_OOM, "out of memory for the int8 activations");
    return LPV_OK;
}

/* ---- profiling ---- */

typedef struct {
    lpv_profile *p;
    double t;
} op_timer;

static void op_start(op_timer *tm, lpv_profile *p) {
    tm->p = p;
    tm->t = p ? lpv_now() : 0.0;
}

static void op_stop(op_timer *tm, lpv_op op, double flop) {
    if (!tm->p) return;
    double now = lpv_now();
    tm->p->sec[op] += now - tm->t;
    tm->p->flop[op] += flop;
    tm->t = now;
}

static double linear_flop(const lpv_linear *L, int T) {
    return 2.0 * L->out * L->in * T * lpv_linear_density(L);
}

/* ---- the pass ---- */

void lpv_embed_tokens(const lpv_model *m, float *x, int ld, const float *pe, int ldp, int B) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, P = c->n_prefix, G2 = (c->img / c->patch) * (c->img / c->patch);
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
    for (int d = 0; d < D; d++) {
        float *xr = x + (int64_t)d * ld;
        const float *pr = pe + (int64_t)d * ldp;
        for (int b = 0; b < B; b++) {
            float *xb = xr + (int64_t)b * T;
            xb[0] = m->cls[d];
            if (P == 2) xb[1] = m->dist[d];
            memcpy(xb + P, pr + (int64_t)b * G2, sizeof(float) * (size_t)G2);
            for (int t = 0; t < T; t++) xb[t] += m->pos[(int64_t)t * D + d];
        }
    }
}

/* 1 when the caller asked to stop the block here (ws->tap_stop) */
static int tap(lpv_workspace *ws, int layer, const float *X, int ld, int ncols) {
    if (ws->tap) ws->tap(ws->tap_ctx, layer, X, ld, ncols);
    return layer == ws->tap_stop;
}

static int runs_int8(const lpv_linear *L, const lpv_workspace *ws) { return ws->xq && lpv_linear_has_int8(L); }

/* One block linear: int8 when it has int8 weights and the workspace int8 scratch (the input's quantization
 * timed apart, as LPV_OP_QUANT), else BF16 or FP32. int8 only: range_in, X's per-token range recorded by the
 * product that wrote it (the quantizer then skips its min/max pass); range_out: record Y's (GELU products). */
static void run_linear(const lpv_linear *L, const float *X, lpv_workspace *ws, int ld, float *Y, int N, int epi,
                       op_timer *tm, const float *range_in, float *range_out) {
    if (runs_int8(L, ws)) {
        if (range_in) lpv_q8_quantize_x_range(ws->xq, ws->xqa, ws->xqc, X, ld, L->in, N, range_in, range_in + ld);
        else lpv_q8_quantize_x(ws->xq, ws->xqa, ws->xqc, X, ld, L->in, N, &L->qx);
        op_stop(tm, LPV_OP_QUANT, 0);
        const lpv_bsr *W = lpv_linear_int8_weights(L);
        if (range_out) lpv_bsr_matmul_q8_range(W, L->b, ws->xq, ws->xqa, ws->xqc, ld, Y, ld, N, epi, range_out);
        else lpv_bsr_matmul_q8(W, L->b, ws->xq, ws->xqa, ws->xqc, ld, Y, ld, N, epi);
    } else {
        lpv_linear_forward_pick(L, X, ws->xbf, ld, Y, ld, N, epi);
    }
}

/* 1 when L runs in int8 with per-token inputs whose range the op producing them may record (ws->xqr). */
static int takes_range(const lpv_linear *L, const lpv_workspace *ws) {
    return runs_int8(L, ws) && L->qx.per_token && !ws->q8_unfused;
}

static void block_forward(const lpv_block *blk, const lpv_config *c, lpv_workspace *ws, int B, int ld, int l,
                          op_timer *tm) {
    int D = c->dim, N = B * c->n_tokens, L0 = lpv_block_layer0(l);
    /* int8 layers with per-token inputs: the op writing each input records its per-token range on the way
     * (LayerNorm for qkv and fc1, fc1's GELU epilogue for fc2), so the quantizer reads the input once */
    float *lo = ws->xqr, *hi = ws->xqr ? ws->xqr + ld : NULL;
    int r_qkv = takes_range(&blk->qkv, ws), r_fc1 = takes_range(&blk->fc1, ws);
    int r_fc2 = takes_range(&blk->fc2, ws) && runs_int8(&blk->fc1, ws);
    /* a resumed block enters at its resume point's label, with the state the caller put back (forward.h) */
    lpv_resume from = ws->resume;
    ws->resume = LPV_RESUME_NONE;
    if (from == LPV_RESUME_PROJ) goto proj;
    if (from == LPV_RESUME_MLP) goto mlp;
    lpv_layernorm_fm_range(ws->xn, ws->x, blk->ln1_w, blk->ln1_b, D, N, ld, c->ln_eps, r_qkv ? lo : NULL, hi);
    op_stop(tm, LPV_OP_LN, 8.0 * D * N);
    if (tap(ws, L0, ws->xn, ld, N)) return;
    run_linear(&blk->qkv, ws->xn, ws, ld, ws->big, N, LPV_EPI_BIAS, tm, r_qkv ? lo : NULL, NULL);
    op_stop(tm, LPV_OP_QKV, linear_flop(&blk->qkv, N));
    if (ws->attn_int8) lpv_attention_fm_q8(ws->xn, ws->big, ld, B, c->n_tokens, D, c->heads, ws->scratch);
    else if (ws->xbf && !ws->attn_fp32) lpv_attention_fm_bf16(ws->xn, ws->big, ld, B, c->n_tokens, D, c->heads, ws->scratch);
    else lpv_attention_fm(ws->xn, ws->big, ld, B, c->n_tokens, D, c->heads, ws->scratch);
    op_stop(tm, LPV_OP_ATTN, 4.0 * (double)c->n_tokens * c->n_tokens * D * B);
    if (tap(ws, L0 + 1, ws->xn, ld, N)) return;
proj:
    run_linear(&blk->proj, ws->xn, ws, ld, ws->x, N, LPV_EPI_BIAS | LPV_EPI_ACC, tm, NULL, NULL);
    op_stop(tm, LPV_OP_PROJ, linear_flop(&blk->proj, N));
mlp:
    lpv_layernorm_fm_range(ws->xn, ws->x, blk->ln2_w, blk->ln2_b, D, N, ld, c->ln_eps, r_fc1 ? lo : NULL, hi);
    op_stop(tm, LPV_OP_LN, 8.0 * D * N);
    if (tap(ws, L0 + 2, ws->xn, ld, N)) return;
    /* fc1's quantizer reads the range before fc1's product overwrites the buffer with its own output's */
    run_linear(&blk->fc1, ws->xn, ws, ld, ws->big, N, LPV_EPI_BIAS | LPV_EPI_GELU, tm, r_fc1 ? lo : NULL,
               r_fc2 ? ws->xqr : NULL);
    op_stop(tm, LPV_OP_FC1, linear_flop(&blk->fc1, N));
    if (tap(ws, L0 + 3, ws->big, ld, N)) return;
    run_linear(&blk->fc2, ws->big, ws, ld, ws->x, N, LPV_EPI_BIAS | LPV_EPI_ACC, tm, r_fc2 ? lo : NULL, NULL);
    op_stop(tm, LPV_OP_FC2, linear_flop(&blk->fc2, N));
}

/* Final norm on the tokens the heads read, then the head(s), averaged. */
static void heads_forward(const lpv_model *m, lpv_workspace *ws, int B, int ld, float *logits) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, no = c->n_outputs, C = c->classes;
    int Bp = lpv_round16(B), ldh = no * Bp;
    /* hx columns: token 0 of every image in [0, B), token 1 in [Bp, Bp + B); padding keeps
       each group's round16 columns inside the row */
    for (int d = 0; d < D; d++)
        for (int k = 0; k < no; k++)
            for (int b = 0; b < B; b++)
                ws->hx[(int64_t)d * ldh + k * Bp + b] = ws->x[(int64_t)d * ld + (int64_t)b * T + k];
    lpv_layernorm_fm(ws->hx, ws->hx, m->norm_w, m->norm_b, D, ldh, ldh, c->ln_eps);
    int Lh = lpv_block_layer0(c->depth);
    tap(ws, Lh, ws->hx, ldh, B);
    lpv_linear_forward(&m->head, ws->hx, ldh, ws->lt, ldh, B, LPV_EPI_BIAS);
    if (no == 2) {
        tap(ws, Lh + 1, ws->hx + Bp, ldh, B);
        lpv_linear_forward(&m->head_dist, ws->hx + Bp, ldh, ws->lt + Bp, ldh, B, LPV_EPI_BIAS);
    }
    for (int b = 0; b < B; b++)
        for (int j = 0; j < C; j++) {
            const float *r = ws->lt + (int64_t)j * ldh;
            logits[(int64_t)b * C + j] = no == 2 ? 0.5f * (r[b] + r[Bp + b]) : r[b];
        }
}

static lpv_status check_ws(const lpv_model *m, lpv_workspace *ws, int B, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    if (B < 1 || B > ws->max_batch)
        return lpv_fail(err, LPV_E_ARG, "batch of %d images exceeds the workspace's %d", B, ws->max_batch);
    if (ws->cfg.dim != c->dim || ws->cfg.n_tokens != c->n_tokens || ws->cfg.mlp != c->mlp ||
        ws->cfg.classes != c->classes || ws->cfg.n_outputs != c->n_outputs)
        return lpv_fail(err, LPV_E_ARG, "workspace was sized for another architecture");
    if (ws->scratch_threads < lpv_threads_get())
        return lpv_fail(err, LPV_E_ARG, "workspace made for %d threads, now %d", ws->scratch_threads, lpv_threads_get());
    return LPV_OK;
}

lpv_status lpv_forward_begin(const lpv_model *m, lpv_workspace *ws, const float *images, int B, lpv_err *err) {
    LPV_TRY(check_ws(m, ws, B, err));
    const lpv_config *c = &m->cfg;
    int G = c->img / c->patch, ld = lpv_round16(B * c->n_tokens), ldp = lpv_round16(B * G * G);
    op_timer tm;
    op_start(&tm, ws->profile);
    lpv_patchify(ws->patches, ldp, images, B, c->chans, c->img, c->patch);
    tap(ws, 0, ws->patches, ldp, B * G * G);
    lpv_linear_forward(&m->patch, ws->patches, ldp, ws->pe, ldp, B * G * G, LPV_EPI_BIAS);
    op_stop(&tm, LPV_OP_PATCH, linear_flop(&m->patch, B * G * G));
    lpv_embed_tokens(m, ws->x, ld, ws->pe, ldp, B);
    op_stop(&tm, LPV_OP_OTHER, 0);
    return LPV_OK;
}

void lpv_forward_block(const lpv_model *m, lpv_workspace *ws, int l, int B) {
    op_timer tm;
    op_start(&tm, ws->profile);
    block_forward(&m->blocks[l], &m->cfg, ws, B, lpv_round16(B * m->cfg.n_tokens), l, &tm);
}

void lpv_forward_end(const lpv_model *m, lpv_workspace *ws, int B, float *logits) {
    op_timer tm;
    op_start(&tm, ws->profile);
    heads_forward(m, ws, B, lpv_round16(B * m->cfg.n_tokens), logits);
    op_stop(&tm, LPV_OP_HEAD, linear_flop(&m->head, B) * m->cfg.n_outputs);
}

lpv_status lpv_forward(const lpv_model *m, lpv_workspace *ws, const float *images, int B, float *logits,
                       lpv_err *err) {
    LPV_TRY(lpv_forward_begin(m, ws, images, B, err));
    for (int l = 0; l < m->cfg.depth; l++) lpv_forward_block(m, ws, l, B);
    lpv_forward_end(m, ws, B, logits);
    if (ws->profile) {
        ws->profile->images += B;
        ws->profile->calls++;
    }
    return LPV_OK;
}

lpv_macs lpv_model_macs(const lpv_config *c) {
    double D = c->dim, F = c->mlp, T = c->n_tokens, G = c->img / c->patch;
    double K = (double)c->chans * c->patch * c->patch;
    lpv_macs r;
    r.linear_macs = G * G * D * K + c->depth * T * (3 * D * D + D * D + 2 * D * F) + c->n_outputs * c->classes * D;
    r.attention_macs = c->depth * 2.0 * T * T * D;
    return r;
}

void lpv_model_sparsity(lpv_model *m, lpv_sparsity *s) {
    memset(s, 0, sizeof *s);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    s->layers = lpv_model_layers(m, refs, (int)(sizeof refs / sizeof *refs));
    for (int i = 0; i < s->layers; i++) {
        double sz = (double)refs[i].lin->out * refs[i].lin->in, d = lpv_linear_density(refs[i].lin);
        s->pruned += refs[i].lin->bsr != NULL;
        s->weights_dense += sz, s->weights_kept += sz * d;
        s->linear_macs_dense += sz * refs[i].tokens, s->linear_macs_kept += sz * d * refs[i].tokens;
    }
    double att = lpv_model_macs(&m->cfg).attention_macs;
    s->model_macs_dense = s->linear_macs_dense + att;
    s->model_macs_kept = s->linear_macs_kept + att;
}
