/*
 * prune_step.c — checkpoints of lpv_prune's steps (prune_internal.h): one
 * gzip-compressed safetensors file in the statistics cache per finished
 * step, so a run that was interrupted, or a sweep whose targets share their
 * first steps, starts after the last step it finds instead of redoing it.
 *
 * Tensors: "w.<layer>" (out, in) F32 and "b.<layer>" (out) for every layer
 * the step pruned, "mask.<layer>" (row blocks, column blocks) U8, and
 * "heads.x|w|b|logits" when the heads' targets were recorded. Metadata:
 * lpvit.calib_key (the key), lpvit.samples (refit images), lpvit.step (JSON:
 * step, identity at its start, the report's counters).
 */
#include <stdlib.h>
#include <string.h>

#include "lpvit/calib.h"
#include "lpvit/safetensors.h"
#include "prune/prune_internal.h"

static lpv_status add_f32(lpv_st_writer *w, const char *pre, const char *name, int ndim, const int64_t *shape,
                          const float *data, lpv_err *err) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", pre, name);
    return lpv_st_writer_add(w, nm, LPV_DT_F32, ndim, shape, data, err);
}

static lpv_status add_layers(lpv_st_writer *w, const lpv__step_state *s, lpv_err *err) {
    for (int i = 0; i < s->nl; i++) {
        if (!s->masks[i]) continue;
        const lpv_linear *L = s->refs[i].lin;
        int64_t ws[2] = {L->out, L->in}, ms[2] = {(L->out + s->block_R - 1) / s->block_R,
                                                     (L->in + s->block_C - 1) / s->block_C};
        char nm[160];
        snprintf(nm, sizeof nm, "mask.%s", s->refs[i].name);
        LPV_TRY(add_f32(w, "w.", s->refs[i].name, 2, ws, L->w, err));
        if (L->b) LPV_TRY(add_f32(w, "b.", s->refs[i].name, 1, ws, L->b, err));
        LPV_TRY(lpv_st_writer_add(w, nm, LPV_DT_U8, 2, ms, s->masks[i], err));
    }
    return LPV_OK;
}

static lpv_status add_heads(lpv_st_writer *w, const lpv_head_targets *h, lpv_err *err) {
    if (!h || !h->x) return LPV_OK;
    int64_t xs[3] = {h->outputs, h->dim, h->images}, ws[3] = {h->outputs, h->classes, h->dim};
    int64_t bs[2] = {h->outputs, h->classes}, ls[2] = {h->images, h->classes};
    LPV_TRY(add_f32(w, "heads.", "x", 3, xs, h->x, err));
    LPV_TRY(add_f32(w, "heads.", "w", 3, ws, h->w, err));
    LPV_TRY(add_f32(w, "heads.", "b", 2, bs, h->b, err));
    return add_f32(w, "heads.", "logits", 2, ls, h->logits, err);
}

static char *state_json(const lpv__step_state *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", s->step);
    cJSON_AddStringToObject(j, "sha_at_start", s->sha_at_start);
    cJSON_AddItemToObject(j, "revived", cJSON_CreateIntArray(s->revived, s->step + 1));
    cJSON_AddNumberToObject(j, "max_damp", s->max_damp);
    cJSON_AddNumberToObject(j, "retried", s->retried);
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return txt;
}

lpv_status lpv__step_save(const char *path, const char *key, const lpv__step_state *s, lpv_err *err) {
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    char *state = state_json(s), num[32];
    snprintf(num, sizeof num, "%d", s->images > 0 ? s->images : 1);
    lpv_status st = state ? LPV_OK : lpv_fail(err, LPV_E_OOM, "out of memory");
    if (st == LPV_OK) st = add_layers(&w, s, err);
    if (st == LPV_OK) st = add_heads(&w, s->heads, err);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.calib_key", key, err);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.samples", num, err);
    if (st == LPV_OK) st = lpv_st_writer_meta(&w, "lpvit.step", state, err);
    if (st == LPV_OK) st = lpv_cache_write(&w, path, err);
    free(state);
    lpv_st_writer_free(&w);
    return st;
}

/* A tensor of exactly this dtype and shape, or a format error naming it. */
static const lpv_st_tensor *want(const lpv_st_file *f, const char *pre, const char *name, lpv_dtype dt, int ndim,
                                 const int64_t *shape, lpv_status *st, lpv_err *err) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", pre, name);
    const lpv_st_tensor *t = lpv_st_find(f, nm);
    int ok = t && t->dtype == dt && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        *st = lpv_fail(err, LPV_E_FORMAT, "'%s': tensor '%s' missing or of another shape", f->path, nm);
        return NULL;
    }
    return t;
}

/* The layers a file holds are the ones the step pruned. Pass 0 checks every tensor, pass 1 copies, so a file
 * that does not fit leaves the model untouched. */
static lpv_status load_layers(const lpv_st_file *f, lpv__step_state *s, int pass, lpv_err *err) {
    lpv_status st = LPV_OK;
    for (int i = 0; i < s->nl && st == LPV_OK; i++) {
        char nm[160];
        snprintf(nm, sizeof nm, "mask.%s", s->refs[i].name);
        if (!lpv_st_find(f, nm)) continue;
        lpv_linear *L = s->refs[i].lin;
        int64_t ws[2] = {L->out, L->in}, ms[2] = {(L->out + s->block_R - 1) / s->block_R,
                                                     (L->in + s->block_C - 1) / s->block_C};
        const lpv_st_tensor *tm = want(f, "mask.", s->refs[i].name, LPV_DT_U8, 2, ms, &st, err);
        const lpv_st_tensor *tw = tm ? want(f, "w.", s->refs[i].name, LPV_DT_F32, 2, ws, &st, err) : NULL;
        const lpv_st_tensor *tb = tw && L->b ? want(f, "b.", s->refs[i].name, LPV_DT_F32, 1, ws, &st, err) : NULL;
        if (st || pass == 0) continue;
        if (!(s->masks[i] = malloc((size_t)(ms[0] * ms[1])))) return lpv_fail(err, LPV_E_OOM, "out of memory");
        memcpy(s->masks[i], tm->data, (size_t)(ms[0] * ms[1]));
        st = lpv_st_read_f32(f, tw, L->w, err);
        if (st == LPV_OK && tb) st = lpv_st_read_f32(f, tb, L->b, err);
        if (st) st = lpv_wrap(err, LPV_E_DATA, "the model is half restored");
    }
    return st;
}

static lpv_status load_heads(const lpv_st_file *f, lpv_head_targets *h, lpv_err *err) {
    const lpv_st_tensor *tx = lpv_st_find(f, "heads.x");
    if (!tx || !h) return LPV_OK;
    if (tx->ndim != 3) return lpv_fail(err, LPV_E_FORMAT, "'%s': heads.x is not 3-D", f->path);
    lpv_head_targets_free(h);
    h->outputs = (int)tx->shape[0], h->dim = (int)tx->shape[1], h->images = (int)tx->shape[2];
    const lpv_st_tensor *tl = lpv_st_find(f, "heads.logits");
    h->classes = tl && tl->ndim == 2 ? (int)tl->shape[1] : 0;
    int64_t xs[3] = {h->outputs, h->dim, h->images}, ws[3] = {h->outputs, h->classes, h->dim};
    int64_t bs[2] = {h->outputs, h->classes}, ls[2] = {h->images, h->classes};
    size_t no = (size_t)h->outputs, D = (size_t)h->dim, K = (size_t)h->classes, n = (size_t)h->images;
    h->x = malloc(sizeof(float) * no * D * n), h->w = malloc(sizeof(float) * no * K * D);
    h->b = malloc(sizeof(float) * no * K), h->logits = malloc(sizeof(float) * n * K);
    if (!h->x || !h->w || !h->b || !h->logits) return lpv_fail(err, LPV_E_OOM, "out of memory");
    lpv_status st = LPV_OK;
    const lpv_st_tensor *tw = want(f, "heads.", "w", LPV_DT_F32, 3, ws, &st, err);
    const lpv_st_tensor *tb = tw ? want(f, "heads.", "b", LPV_DT_F32, 2, bs, &st, err) : NULL;
    tl = tb ? want(f, "heads.", "logits", LPV_DT_F32, 2, ls, &st, err) : NULL;
    if (!tl || !want(f, "heads.", "x", LPV_DT_F32, 3, xs, &st, err)) return st;
    LPV_TRY(lpv_st_read_f32(f, tx, h->x, err));
    LPV_TRY(lpv_st_read_f32(f, tw, h->w, err));
    LPV_TRY(lpv_st_read_f32(f, tb, h->b, err));
    return lpv_st_read_f32(f, tl, h->logits, err);
}

static lpv_status parse_state(const lpv_st_file *f, lpv__step_state *s, lpv_err *err) {
    cJSON *j = cJSON_Parse(lpv_st_meta(f, "lpvit.step") ? lpv_st_meta(f, "lpvit.step") : "");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step"), *sha = cJSON_GetObjectItemCaseSensitive(j, "sha_at_start");
    const cJSON *rev = cJSON_GetObjectItemCaseSensitive(j, "revived");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "max_damp"), *rt = cJSON_GetObjectItemCaseSensitive(j, "retried");
    lpv_status st = LPV_OK;
    if (!cJSON_IsNumber(step) || step->valueint < 0 || step->valueint >= LPV_MAX_STEPS || !cJSON_IsString(sha) ||
        strlen(sha->valuestring) != 64 || !cJSON_IsArray(rev) || cJSON_GetArraySize(rev) != step->valueint + 1 ||
        !cJSON_IsNumber(md) || !cJSON_IsNumber(rt))
        st = lpv_fail(err, LPV_E_FORMAT, "'%s': lpvit.step metadata is missing or malformed", f->path);
    if (st == LPV_OK) {
        s->step = step->valueint;
        snprintf(s->sha_at_start, sizeof s->sha_at_start, "%s", sha->valuestring);
        for (int k = 0; k <= s->step; k++) s->revived[k] = cJSON_GetArrayItem(rev, k)->valueint;
        s->max_damp = md->valuedouble, s->retried = rt->valueint;
        const char *ns = lpv_st_meta(f, "lpvit.samples");
        s->images = ns ? atoi(ns) : 0;
    }
    cJSON_Delete(j);
    return st;
}

lpv_status lpv__step_load(const char *path, const char *key, lpv__step_state *s, lpv_err *err) {
    uint8_t *buf = NULL;
    lpv_st_file f;
    LPV_TRY(lpv_cache_read(path, &buf, &f, err));
    const char *k = lpv_st_meta(&f, "lpvit.calib_key");
    lpv_status st = k && strcmp(k, key) == 0 ? LPV_OK : lpv_fail(err, LPV_E_FORMAT, "'%s' was made for other inputs", path);
    if (st == LPV_OK) st = parse_state(&f, s, err);
    if (st == LPV_OK) st = load_layers(&f, s, 0, err);
    if (st == LPV_OK) st = load_heads(&f, s->heads, err);
    if (st == LPV_OK) st = load_layers(&f, s, 1, err);
    lpv_st_close(&f);
    free(buf);
    if (st)
        for (int i = 0; i < s->nl; i++) free(s->masks[i]), s->masks[i] = NULL;
    return st;
}
