/* permute.c — function-preserving channel permutations (see include/lpvit/permute.h). */
#include "lpvit/permute.h"

#include <stdlib.h>
#include <string.h>

#include "lpvit/fileio.h"

lpv_status lpv_perm_init(lpv_perm *p, const lpv_config *c, lpv_err *err) {
    memset(p, 0, sizeof *p);
    p->dim = c->dim, p->depth = c->depth, p->heads = c->heads, p->mlp = c->mlp;
    p->head_dim = c->dim / c->heads;
    p->resid = malloc(sizeof(int32_t) * (size_t)c->dim);
    p->mlp_p = malloc(sizeof(int32_t) * (size_t)c->depth * (size_t)c->mlp);
    p->qk = malloc(sizeof(int32_t) * (size_t)c->depth * (size_t)c->dim);
    p->v = malloc(sizeof(int32_t) * (size_t)c->depth * (size_t)c->dim);
    if (!p->resid || !p->mlp_p || !p->qk || !p->v) {
        lpv_perm_free(p);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    lpv_perm_identity(p);
    return LPV_OK;
}

void lpv_perm_free(lpv_perm *p) {
    free(p->resid), free(p->mlp_p), free(p->qk), free(p->v);
    p->resid = p->mlp_p = p->qk = p->v = NULL;
}

static void iota_groups(int32_t *a, int groups, int n) {
    for (int g = 0; g < groups; g++)
        for (int i = 0; i < n; i++) a[(int64_t)g * n + i] = i;
}

void lpv_perm_identity(lpv_perm *p) {
    iota_groups(p->resid, 1, p->dim);
    iota_groups(p->mlp_p, p->depth, p->mlp);
    iota_groups(p->qk, p->depth * p->heads, p->head_dim);
    iota_groups(p->v, p->depth * p->heads, p->head_dim);
}

static int groups_valid(const int32_t *a, int groups, int n) {
    char *seen = calloc((size_t)n, 1);
    if (!seen) return 0;
    int ok = 1;
    for (int g = 0; g < groups && ok; g++) {
        memset(seen, 0, (size_t)n);
        for (int i = 0; i < n && ok; i++) {
            int32_t j = a[(int64_t)g * n + i];
            ok = j >= 0 && j < n && !seen[j];
            if (ok) seen[j] = 1;
        }
    }
    free(seen);
    return ok;
}

int lpv_perm_valid(const lpv_perm *p) {
    return groups_valid(p->resid, 1, p->dim) && groups_valid(p->mlp_p, p->depth, p->mlp) &&
           groups_valid(p->qk, p->depth * p->heads, p->head_dim) && groups_valid(p->v, p->depth * p->heads, p->head_dim);
}

static int groups_identity(const int32_t *a, int groups, int n) {
    for (int64_t i = 0; i < (int64_t)groups * n; i++)
        if (a[i] != i % n) return 0;
    return 1;
}

int lpv_perm_is_identity(const lpv_perm *p) {
    return groups_identity(p->resid, 1, p->dim) && groups_identity(p->mlp_p, p->depth, p->mlp) &&
           groups_identity(p->qk, p->depth * p->heads, p->head_dim) &&
           groups_identity(p->v, p->depth * p->heads, p->head_dim);
}

void lpv_perm_digest(const lpv_perm *p, char out[65]) {
    lpv_sha256 s;
    lpv_sha256_init(&s);
    lpv_sha256_update(&s, p->resid, sizeof(int32_t) * (size_t)p->dim);
    lpv_sha256_update(&s, p->mlp_p, sizeof(int32_t) * (size_t)p->depth * (size_t)p->mlp);
    lpv_sha256_update(&s, p->qk, sizeof(int32_t) * (size_t)p->depth * (size_t)p->dim);
    lpv_sha256_update(&s, p->v, sizeof(int32_t) * (size_t)p->depth * (size_t)p->dim);
    lpv_sha256_final_hex(&s, out);
}

/* ---- choosing: sort each group by importance ---- */

/* adds the row sums of S[r0 .. r0+n) (out, in) to acc[0..n) */
static void add_rows(double *acc, const float *S, int in, int r0, int n) {
    for (int r = 0; r < n; r++) {
        const float *row = S + (int64_t)(r0 + r) * in;
        double s = 0;
        for (int j = 0; j < in; j++) s += row[j];
        acc[r] += s;
    }
}

/* adds the column sums of S[:, c0 .. c0+n) to acc[0..n) */
static void add_cols(double *acc, const float *S, int out, int in, int c0, int n) {
    for (int r = 0; r < out; r++) {
        const float *row = S + (int64_t)r * in + c0;
        for (int j = 0; j < n; j++) acc[j] += row[j];
    }
}

static const double *sort_key;
static int by_key_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_key[i] != sort_key[j]) return sort_key[i] > sort_key[j] ? -1 : 1;
    return (i > j) - (i < j); /* stable: ties keep the original order */
}

/* perm = channels 0..n-1 ordered by key, largest first */
static void sort_desc(int32_t *perm, const double *key, int n) {
    for (int i = 0; i < n; i++) perm[i] = i;
    sort_key = key;
    qsort(perm, (size_t)n, sizeof *perm, by_key_desc);
    sort_key = NULL;
}

lpv_status lpv_perm_by_importance(lpv_model *m, const float *const *score, lpv_perm *p, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, F = c->mlp, hd = D / c->heads;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    double *acc = malloc(sizeof(double) * (size_t)(F > D ? F : D));
    double *res = calloc((size_t)D, sizeof(double));
    if (!acc || !res) {
        free(acc), free(res);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    lpv_perm_identity(p);
    /* residual channels: every pruned layer that reads them (columns) or writes them (rows) */
    for (int i = 0; i < nl; i++) {
        const float *S = score[i];
        if (!S) continue;
        const lpv_linear *L = refs[i].lin;
        lpv_layer_kind k = refs[i].kind;
        if (k == LPV_LK_QKV || k == LPV_LK_FC1 || k == LPV_LK_HEAD || k == LPV_LK_HEAD_DIST)
            add_cols(res, S, L->out, L->in, 0, D); /* reads the stream (through a LayerNorm) */
        if (k == LPV_LK_PATCH || k == LPV_LK_PROJ || k == LPV_LK_FC2)
            add_rows(res, S, L->in, 0, D); /* writes it (proj's columns are head channels, not the stream) */
    }
    sort_desc(p->resid, res, D);
    for (int i = 0; i < nl; i++) {
        const float *S = score[i];
        int l = refs[i].block;
        if (l < 0) continue;
        /* a block's MLP hidden units: fc1 rows + fc2 columns */
        if (refs[i].kind == LPV_LK_FC1) {
            const float *S2 = score[i + 1]; /* fc2 follows fc1 in the layer table */
            memset(acc, 0, sizeof(double) * (size_t)F);
            if (S) add_rows(acc, S, D, 0, F);
            if (S2) add_cols(acc, S2, D, F, 0, F);
            sort_desc(p->mlp_p + (int64_t)l * F, acc, F);
        }
        /* a head's q/k channels together, its v channels with proj's input columns */
        if (refs[i].kind == LPV_LK_QKV) {
            const float *Sp = score[i + 1]; /* proj follows qkv */
            for (int h = 0; h < c->heads; h++) {
                int32_t *qk = p->qk + ((int64_t)l * c->heads + h) * hd, *v = p->v + ((int64_t)l * c->heads + h) * hd;
                memset(acc, 0, sizeof(double) * (size_t)hd);
                if (S) add_rows(acc, S, D, h * hd, hd), add_rows(acc, S, D, D + h * hd, hd);
                sort_desc(qk, acc, hd);
                memset(acc, 0, sizeof(double) * (size_t)hd);
                if (S) add_rows(acc, S, D, 2 * D + h * hd, hd);
                if (Sp) add_cols(acc, Sp, D, D, h * hd, hd);
                sort_desc(v, acc, hd);
            }
        }
    }
    free(acc), free(res);
    return LPV_OK;
}

/* ---- applying ---- */

/* rows r0 + i ← rows r0 + perm[i], i < n, of a (rows, cols) matrix; tmp holds n·cols floats */
static void permute_rows(float *A, int cols, int r0, const int32_t *perm, int n, float *tmp) {
    if (!A) return;
    for (int i = 0; i < n; i++)
        memcpy(tmp + (int64_t)i * cols, A + (int64_t)(r0 + perm[i]) * cols, sizeof(float) * (size_t)cols);
    memcpy(A + (int64_t)r0 * cols, tmp, sizeof(float) * (size_t)n * (size_t)cols);
}

/* columns c0 + j ← columns c0 + perm[j], j < n, of every row of a (rows, cols) matrix; tmp holds n floats */
static void permute_cols(float *A, int rows, int cols, int c0, const int32_t *perm, int n, float *tmp) {
    if (!A) return;
    for (int r = 0; r < rows; r++) {
        float *row = A + (int64_t)r * cols + c0;
        for (int j = 0; j < n; j++) tmp[j] = row[perm[j]];
        memcpy(row, tmp, sizeof(float) * (size_t)n);
    }
}

static int dense_only(const lpv_linear *L) { return !L->w || (!L->bsr && !L->blocked); }

lpv_status lpv_model_permute(lpv_model *m, const lpv_perm *p, lpv_err *err) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, F = c->mlp, hd = D / c->heads, K = c->chans * c->patch * c->patch;
    if (p->dim != D || p->depth != c->depth || p->heads != c->heads || p->mlp != F)
        return lpv_fail(err, LPV_E_ARG, "permutation shape (D %d, depth %d, heads %d, mlp %d) does not fit the model "
                                        "(D %d, depth %d, heads %d, mlp %d)",
                        p->dim, p->depth, p->heads, p->mlp, D, c->depth, c->heads, F);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < nl; i++)
        if (!refs[i].lin->w || !dense_only(refs[i].lin))
            return lpv_fail(err, LPV_E_ARG, "layer '%s' is not a plain dense weight: cannot permute it", refs[i].name);
    int64_t need = (int64_t)F * D > (int64_t)D * K ? (int64_t)F * D : (int64_t)D * K; /* fc1 rows / patch rows */
    float *tmp = malloc(sizeof(float) * (size_t)need);
    if (!tmp) return lpv_fail(err, LPV_E_OOM, "out of memory");
    const int32_t *rp = p->resid;
    /* residual channels: vectors are (1, D) rows' columns */
    permute_cols(m->cls, 1, D, 0, rp, D, tmp);
    permute_cols(m->dist, 1, D, 0, rp, D, tmp);
    permute_cols(m->pos, c->n_tokens, D, 0, rp, D, tmp);
    permute_rows(m->patch.w, K, 0, rp, D, tmp);
    permute_cols(m->patch.b, 1, D, 0, rp, D, tmp);
    permute_cols(m->norm_w, 1, D, 0, rp, D, tmp), permute_cols(m->norm_b, 1, D, 0, rp, D, tmp);
    permute_cols(m->head.w, c->classes, D, 0, rp, D, tmp);
    if (m->head_dist.w) permute_cols(m->head_dist.w, c->classes, D, 0, rp, D, tmp);
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        permute_cols(b->ln1_w, 1, D, 0, rp, D, tmp), permute_cols(b->ln1_b, 1, D, 0, rp, D, tmp);
        permute_cols(b->ln2_w, 1, D, 0, rp, D, tmp), permute_cols(b->ln2_b, 1, D, 0, rp, D, tmp);
        permute_cols(b->qkv.w, 3 * D, D, 0, rp, D, tmp);
        permute_rows(b->proj.w, D, 0, rp, D, tmp);
        permute_cols(b->proj.b, 1, D, 0, rp, D, tmp);
        permute_cols(b->fc1.w, F, D, 0, rp, D, tmp);
        permute_rows(b->fc2.w, F, 0, rp, D, tmp);
        permute_cols(b->fc2.b, 1, D, 0, rp, D, tmp);
        /* MLP hidden units */
        const int32_t *mp = p->mlp_p + (int64_t)l * F;
        permute_rows(b->fc1.w, D, 0, mp, F, tmp);
        permute_cols(b->fc1.b, 1, F, 0, mp, F, tmp);
        permute_cols(b->fc2.w, D, F, 0, mp, F, tmp);
        /* per head: q and k rows with one permutation, v rows and proj columns with another */
        for (int h = 0; h < c->heads; h++) {
            const int32_t *qk = p->qk + ((int64_t)l * c->heads + h) * hd, *v = p->v + ((int64_t)l * c->heads + h) * hd;
            for (int part = 0; part < 2; part++) {
                permute_rows(b->qkv.w, D, part * D + h * hd, qk, hd, tmp);
                permute_cols(b->qkv.b ? b->qkv.b + part * D + h * hd : NULL, 1, hd, 0, qk, hd, tmp);
            }
            permute_rows(b->qkv.w, D, 2 * D + h * hd, v, hd, tmp);
            permute_cols(b->qkv.b ? b->qkv.b + 2 * D + h * hd : NULL, 1, hd, 0, v, hd, tmp);
            permute_cols(b->proj.w, D, D, h * hd, v, hd, tmp);
        }
    }
    free(tmp);
    return LPV_OK;
}
