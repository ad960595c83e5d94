/* blocktune.c — block-wise reconstruction with Adam (see include/lpvit/blocktune.h). */
#include "lpvit/blocktune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/cpu.h"
#include "lpvit/rng.h"

lpv_tune_opts lpv_tune_defaults(void) { return (lpv_tune_opts){0, 3e-4f, 8, 0}; }

/* One trainable tensor of a block: parameter, its gradient, and for a masked linear weight the
   R x C block mask that decides which entries may move. */
typedef struct {
    float *p, *g;
    int64_t n;
    int in;                /* linear weights: columns (n / in rows) */
    const uint8_t *mask;   /* (ceil(out/R), ceil(in/C)) or NULL */
} tparam;

static int block_params(lpv_model *m, int l, lpv_block_grads *bg, const uint8_t *const masks[4], tparam *ps) {
    lpv_block *b = &m->blocks[l];
    int D = m->cfg.dim, n = 0;
    lpv_linear *lin[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
    lpv_linear_grad *lg[4] = {&bg->qkv, &bg->proj, &bg->fc1, &bg->fc2};
    for (int j = 0; j < 4; j++) {
        ps[n++] = (tparam){lin[j]->w, lg[j]->w, (int64_t)lin[j]->out * lin[j]->in, lin[j]->in, masks[j]};
        if (lin[j]->b) ps[n++] = (tparam){lin[j]->b, lg[j]->b, lin[j]->out, 0, NULL};
    }
    ps[n++] = (tparam){b->ln1_w, bg->ln1_w, D, 0, NULL};
    ps[n++] = (tparam){b->ln1_b, bg->ln1_b, D, 0, NULL};
    ps[n++] = (tparam){b->ln2_w, bg->ln2_w, D, 0, NULL};
    ps[n++] = (tparam){b->ln2_b, bg->ln2_b, D, 0, NULL};
    return n;
}

lpv_status lpv_tuner_init(lpv_tuner *t, const lpv_config *cfg, const lpv_tune_opts *o, lpv_err *err) {
    memset(t, 0, sizeof *t);
    if (o->epochs < 0 || o->batch < 1 || !(o->lr > 0) || !isfinite(o->lr))
        return lpv_fail(err, LPV_E_ARG, "block tuning: epochs %d, batch %d, lr %g out of range", o->epochs, o->batch,
                        (double)o->lr);
    t->o = *o;
    t->cfg = *cfg;
    t->cfg.depth = 1;
    int64_t D = cfg->dim, F = cfg->mlp;
    t->n_par = 3 * D * D + 3 * D + D * D + D + F * D + F + D * F + D + 4 * D;
    lpv_status s = lpv_train_ws_init(&t->ws, &t->cfg, o->batch, err);
    if (s) return s;
    if ((s = lpv_grads_init(&t->g, &t->cfg, 0, err)) != LPV_OK) {
        lpv_train_ws_free(&t->ws);
        return s;
    }
    lpv_arena_init(&t->arena, 1 << 20);
    t->m1 = lpv_arena_alloc(&t->arena, sizeof(float) * (size_t)t->n_par);
    t->m2 = lpv_arena_alloc(&t->arena, sizeof(float) * (size_t)t->n_par);
    t->snap = lpv_arena_alloc(&t->arena, sizeof(float) * (size_t)t->n_par);
    if (!t->m1 || !t->m2 || !t->snap) {
        lpv_tuner_free(t);
        return lpv_fail(err, LPV_E_OOM, "out of memory for block tuning (%.0f MiB)",
                        3.0 * (double)t->n_par * sizeof(float) / (1 << 20));
    }
    return LPV_OK;
}

void lpv_tuner_free(lpv_tuner *t) {
    lpv_grads_free(&t->g);
    lpv_train_ws_free(&t->ws);
    lpv_arena_free(&t->arena);
    memset(t, 0, sizeof *t);
}

/* Copies every trainable tensor into (dir 0) or out of (dir 1) the flat snapshot. */
static void snapshot(tparam *ps, int np, float *snap, int restore) {
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        if (restore) memcpy(ps[i].p, snap + off, sizeof(float) * (size_t)ps[i].n);
        else memcpy(snap + off, ps[i].p, sizeof(float) * (size_t)ps[i].n);
        off += ps[i].n;
    }
}

/* One Adam step (bias-corrected, step k >= 1) on every kept entry. */
static void adam_step(tparam *ps, int np, float *m1, float *m2, int k, float lr, int R, int C) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float c1 = 1.0f - powf(b1, (float)k), c2 = 1.0f - powf(b2, (float)k);
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        tparam *p = &ps[i];
        int nbc = p->in ? lpv_ceil_div(p->in, C) : 0; /* C is 0 when nothing is masked */
#pragma omp parallel for num_threads(lpv_threads_get()) schedule(static)
        for (int64_t q = 0; q < p->n; q++) {
            if (p->mask) {
                int64_t r = q / p->in, c = q % p->in;
                if (!p->mask[(r / R) * nbc + c / C]) continue;
            }
            float g = p->g[q], *a = m1 + off + q, *v = m2 + off + q;
            *a = b1 * *a + (1.0f - b1) * g;
            *v = b2 * *v + (1.0f - b2) * g * g;
            p->p[q] -= lr * (*a / c1) / (sqrtf(*v / c2) + eps);
        }
        off += p->n;
    }
}

typedef struct {
    int chunk, first, count; /* images [first, first + count) of a cached chunk */
} unit;

/* Mean squared error of block l over every cached image (forward only). */
static lpv_status block_mse(lpv_tuner *t, const lpv_model *m, int l, float *const *xs, float *const *ys, const int *bsz,
                            const unit *u, int nu, double *out, lpv_err *err) {
    int T = m->cfg.n_tokens;
    double sum = 0;
    int64_t cols = 0;
    for (int i = 0; i < nu; i++) {
        int ld = lpv_round16(bsz[u[i].chunk] * T);
        int64_t off = (int64_t)u[i].first * T;
        double e;
        LPV_TRY(lpv_block_forward_backward(m, l, &t->ws, xs[u[i].chunk] + off, ys[u[i].chunk] + off, ld, u[i].count, &e,
                                           NULL, err));
        sum += e * u[i].count * T, cols += (int64_t)u[i].count * T;
    }
    *out = cols ? sum / (double)cols : 0;
    return LPV_OK;
}

lpv_status lpv_block_tune(lpv_tuner *t, lpv_model *m, int l, float *const *xs, float *const *ys, const int *bsz, int n,
                          const uint8_t *const masks[4], int R, int C, lpv_tune_info *info, lpv_err *err) {
    memset(info, 0, sizeof *info);
    if (t->o.epochs == 0 || n == 0) return LPV_OK;
    if (l < 0 || l >= m->cfg.depth) return lpv_fail(err, LPV_E_ARG, "block %d outside 0..%d", l, m->cfg.depth - 1);
    if (m->cfg.dim != t->cfg.dim || m->cfg.mlp != t->cfg.mlp || m->cfg.n_tokens != t->cfg.n_tokens)
        return lpv_fail(err, LPV_E_ARG, "block tuner was sized for another block shape");
    if (R < 1 || C < 1) return lpv_fail(err, LPV_E_ARG, "block shape %dx%d", R, C);
    int nu = 0;
    for (int i = 0; i < n; i++) nu += (bsz[i] + t->o.batch - 1) / t->o.batch;
    unit *u = malloc(sizeof(unit) * (size_t)nu);
    int *order = malloc(sizeof(int) * (size_t)nu);
    if (!u || !order) {
        free(u), free(order);
        return lpv_fail(err, LPV_E_OOM, "out of memory for block tuning");
    }
    nu = 0;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < bsz[i]; f += t->o.batch)
            u[nu++] = (unit){i, f, bsz[i] - f < t->o.batch ? bsz[i] - f : t->o.batch};
    lpv_block_grads *bg = &t->g.blocks[0];
    tparam ps[12];
    int np = block_params(m, l, bg, masks, ps);
    int64_t total = 0;
    for (int i = 0; i < np; i++) total += ps[i].n;
    LPV_ASSERT(total <= t->n_par);
    snapshot(ps, np, t->snap, 0);
    memset(t->m1, 0, sizeof(float) * (size_t)total);
    memset(t->m2, 0, sizeof(float) * (size_t)total);
    lpv_rng r;
    lpv_rng_seed(&r, t->o.seed * 1000003u + (uint64_t)l);
    int T = m->cfg.n_tokens, steps = t->o.epochs * nu, k = 0;
    lpv_status st = block_mse(t, m, l, xs, ys, bsz, u, nu, &info->mse_before, err);
    for (int e = 0; e < t->o.epochs && st == LPV_OK; e++) {
        for (int i = 0; i < nu; i++) order[i] = i;
        lpv_rng_shuffle(&r, order, nu);
        for (int i = 0; i < nu && st == LPV_OK; i++) {
            const unit *v = &u[order[i]];
            int ld = lpv_round16(bsz[v->chunk] * T);
            int64_t off = (int64_t)v->first * T;
            lpv_grads_zero(&t->g);
            st = lpv_block_forward_backward(m, l, &t->ws, xs[v->chunk] + off, ys[v->chunk] + off, ld, v->count, NULL, bg,
                                            err);
            if (st) break;
            k++;
            float lr = t->o.lr * 0.5f * (1.0f + cosf(3.14159265f * (float)(k - 1) / (float)steps));
            adam_step(ps, np, t->m1, t->m2, k, lr, R, C);
        }
    }
    info->steps = k;
    if (st == LPV_OK) st = block_mse(t, m, l, xs, ys, bsz, u, nu, &info->mse_after, err);
    if (st == LPV_OK && !(info->mse_after < info->mse_before)) {
        snapshot(ps, np, t->snap, 1);
        info->reverted = 1;
        info->mse_after = info->mse_before;
    }
    free(u), free(order);
    return st;
}
