/*
 * smooth.c — SmoothQuant's per-channel factors folded into LayerNorm, v and the block linears
 * (see include/lpvit/smooth.h).
 */
#include "lpvit/smooth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/dist.h"
#include "lpvit/linear.h"
#include "lpvit/report.h"

lpv_smooth_opts lpv_smooth_defaults(void) {
    lpv_smooth_opts o = {0.5, 1, 1, 1};
    return o;
}

void lpv_smooth_factors(const float *amax, const float *wmax, int in, double alpha, float *s) {
    for (int j = 0; j < in; j++) {
        if (!(amax[j] > 0) || !(wmax[j] > 0)) {
            s[j] = 1.0f;
            continue;
        }
        double f = pow(amax[j], alpha) / pow(wmax[j], 1.0 - alpha);
        s[j] = (float)fmin(fmax(f, LPV_SMOOTH_MIN), 1.0 / LPV_SMOOTH_MIN);
    }
}

/* The layer's weights (out, in) as a dense malloc'd copy (pruned blocks 0), or NULL when out of memory. */
static float *dense_copy(const lpv_linear *L) {
    float *W = malloc(sizeof(float) * (size_t)L->out * (size_t)L->in);
    if (!W) return NULL;
    if (L->bsr) lpv_bsr_to_dense(L->bsr, W);
    else memcpy(W, L->w, sizeof(float) * (size_t)L->out * (size_t)L->in);
    return W;
}

static void column_max(const float *W, int out, int in, float *wmax) {
    for (int j = 0; j < in; j++) wmax[j] = 0;
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) wmax[j] = fmaxf(wmax[j], fabsf(W[(size_t)i * in + j]));
}

/* max_j a_j / median_j a_j: how far the largest channel stands out */
static double spread(const float *a, const float *s, int n, double *scratch) {
    double mx = 0;
    for (int j = 0; j < n; j++) scratch[j] = s ? a[j] / s[j] : a[j], mx = fmax(mx, scratch[j]);
    double med = lpv_median(scratch, n);
    return med > 0 ? mx / med : 0;
}

/* The statistics of x / s from those of x. */
static void rescale_stats(lpv_layer_stats *st, const float *s) {
    int n = st->in;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            st->H[(size_t)i * n + j] /= s[i] * s[j];
            if (st->G) st->G[(size_t)i * n + j] /= s[i] * s[j];
        }
        st->sum[i] /= s[i];
        if (st->sum_dense) st->sum_dense[i] /= s[i];
        st->amax[i] /= s[i];
    }
}

/* Factors for layer k's input from its statistics and weights, the same on every rank (rank 0's). */
static lpv_status layer_factors(const lpv_layer_ref *ref, const lpv_layer_stats *st, double alpha, float *s,
                                lpv_err *err) {
    const lpv_linear *L = ref->lin;
    float *W = dense_copy(L), *wmax = malloc(sizeof(float) * (size_t)L->in);
    lpv_status r = (!W || !wmax) ? lpv_fail(err, LPV_E_OOM, "out of memory smoothing '%s'", ref->name) : LPV_OK;
    if (r == LPV_OK) {
        column_max(W, L->out, L->in, wmax);
        lpv_smooth_factors(st->amax, wmax, L->in, alpha, s);
        if (lpv_dist_size() > 1) r = lpv_dist_bcast(s, sizeof(float) * (size_t)L->in, 0, err);
    }
    free(W), free(wmax);
    return r;
}

/* W_:j *= cs_j for every column (cs may be NULL), and rows r0.. of W and b divided by rs (rs may be NULL). */
static lpv_status scale_layer(lpv_linear *L, const float *cs, int r0, const float *rs, int nr, const char *name,
                              lpv_err *err) {
    float *W = dense_copy(L);
    if (!W) return lpv_fail(err, LPV_E_OOM, "out of memory smoothing '%s'", name);
    int in = L->in;
    if (cs)
        for (int i = 0; i < L->out; i++)
            for (int j = 0; j < in; j++) W[(size_t)i * in + j] *= cs[j];
    for (int r = 0; rs && r < nr; r++) {
        for (int j = 0; j < in; j++) W[(size_t)(r0 + r) * in + j] /= rs[r];
        if (L->b) L->b[r0 + r] /= rs[r];
    }
    lpv_linear_set_weights(L, W);
    free(W);
    return LPV_OK;
}

static lpv_status check(const lpv_model_stats *s, const lpv_layer_ref *refs, int n, const lpv_smooth_opts *o,
                        lpv_err *err) {
    if (!(o->alpha >= 0 && o->alpha <= 1))
        return lpv_fail_param(err, LPV_E_ARG, "smooth", "alpha %g, expected a number in [0, 1]", o->alpha);
    for (int i = 0; i < n; i++) {
        lpv_layer_kind k = refs[i].kind;
        if (!lpv_layer_kind_is_block(k)) continue;
        if (lpv_linear_has_int8(refs[i].lin))
            return lpv_fail(err, LPV_E_ARG, "'%s' is int8 already: smooth the FP32 model", refs[i].name);
        int need = (k == LPV_LK_QKV && o->qkv) || (k == LPV_LK_FC1 && o->fc1) || (k == LPV_LK_PROJ && o->proj);
        if (need && (i >= s->n || !s->want[i] || !s->st[i].amax || s->st[i].in != refs[i].lin->in))
            return lpv_fail(err, LPV_E_ARG, "'%s': no input statistics to smooth it with", refs[i].name);
    }
    return LPV_OK;
}

/* One block: factors of its smoothed inputs from the unchanged weights, then the folds. */
static lpv_status smooth_block(lpv_model *m, int l, lpv_model_stats *s, const lpv_layer_ref *refs,
                               const lpv_smooth_opts *o, lpv_smooth_info *info, float *sq, float *sp, float *sf,
                               double *scratch, lpv_err *err) {
    lpv_block *B = &m->blocks[l];
    int D = m->cfg.dim, i0 = lpv_block_layer0(l), iq = i0, ip = i0 + 1, i1 = i0 + 2;
    const float *fq = o->qkv ? sq : NULL, *fp = o->proj ? sp : NULL, *ff = o->fc1 ? sf : NULL;
    if (fq) LPV_TRY(layer_factors(&refs[iq], &s->st[iq], o->alpha, sq, err));
    if (fp) LPV_TRY(layer_factors(&refs[ip], &s->st[ip], o->alpha, sp, err));
    if (ff) LPV_TRY(layer_factors(&refs[i1], &s->st[i1], o->alpha, sf, err));
    const int idx[3] = {iq, ip, i1};
    const float *fac[3] = {fq, fp, ff};
    for (int k = 0; k < 3; k++) {
        if (!fac[k]) continue;
        int i = idx[k];
        const float *f = fac[k];
        info->spread_before[i] = spread(s->st[i].amax, NULL, D, scratch);
        info->spread_after[i] = spread(s->st[i].amax, f, D, scratch);
        info->smin[i] = info->smax[i] = f[0];
        for (int j = 0; j < D; j++) info->smin[i] = fminf(info->smin[i], f[j]), info->smax[i] = fmaxf(info->smax[i], f[j]);
        rescale_stats(&s->st[i], f);
        info->layers++;
    }
    for (int j = 0; fq && j < D; j++) B->ln1_w[j] /= fq[j], B->ln1_b[j] /= fq[j];
    for (int j = 0; ff && j < D; j++) B->ln2_w[j] /= ff[j], B->ln2_b[j] /= ff[j];
    if (fq || fp) LPV_TRY(scale_layer(&B->qkv, fq, 2 * D, fp, D, refs[iq].name, err));
    if (fp) LPV_TRY(scale_layer(&B->proj, fp, 0, NULL, 0, refs[ip].name, err));
    if (ff) LPV_TRY(scale_layer(&B->fc1, ff, 0, NULL, 0, refs[i1].name, err));
    return LPV_OK;
}

lpv_status lpv_model_smooth(lpv_model *m, lpv_model_stats *s, const lpv_smooth_opts *o, lpv_smooth_info *info,
                            lpv_err *err) {
    lpv_smooth_opts d = lpv_smooth_defaults();
    if (!o) o = &d;
    lpv_smooth_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    LPV_TRY(check(s, refs, n, o, err));
    int D = m->cfg.dim;
    float *f = malloc(sizeof(float) * 3 * (size_t)D);
    double *scratch = malloc(sizeof(double) * (size_t)D);
    lpv_status st = (!f || !scratch) ? lpv_fail(err, LPV_E_OOM, "out of memory smoothing") : LPV_OK;
    for (int l = 0; l < m->cfg.depth && st == LPV_OK; l++)
        st = smooth_block(m, l, s, refs, o, info, f, f + D, f + 2 * D, scratch, err);
    free(f), free(scratch);
    return st;
}
