/*
 * quantize.c — GPTQ-style quantization of a model's block linears (see include/lpvit/quantize.h).
 */
#include "lpvit/quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/bsr.h"
#include "lpvit/codebook.h"
#include "lpvit/dist.h"
#include "lpvit/linear.h"
#include "lpvit/log.h"
#include "lpvit/cpu.h"


void lpv_gptq_want(lpv_model *m, lpv_model_stats *s) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) s->want[i] = lpv_layer_kind_is_block(refs[i].kind);
    s->prefix_weight = m->cfg.n_tokens - m->cfg.n_prefix; /* the cls token weighs as much as the patches */
}

/* Stores L (FP32 weights already on g, dense or BSR) as the engine's int8 or codebook layer on exactly g. */
static lpv_status store_on_grid(lpv_model *m, lpv_linear *L, const lpv_gptq_grid *g, const char *name, lpv_err *err) {
    return g->codebook_k ? lpv_linear_set_codebook(m, L, g->levels, g->codebook_k, g->scale, name, err)
                         : lpv_linear_quantize_int8(m, L, g->scale, 32, 32, name, err);
}

/* One block linear of the model (dense or BSR): its dense weights through lpv_gptq_layer, then onto the engine's
   int8 or codebook layer with exactly that grid. */
static lpv_status quantize_layer(lpv_model *m, const lpv_layer_ref *ref, const lpv_layer_stats *st,
                                 const lpv_gptq_opts *o, lpv_gptq_layer_info *li, lpv_err *err) {
    lpv_linear *L = ref->lin;
    int out = L->out, in = L->in, R = L->bsr ? L->bsr->R : 32, C = L->bsr ? L->bsr->C : 32;
    size_t n = (size_t)out * in;
    float *W = malloc(sizeof(float) * n);
    double *mean = malloc(sizeof(double) * (size_t)in);
    uint8_t *mask = L->bsr ? malloc((size_t)L->bsr->nbr * L->bsr->nbc) : NULL;
    lpv_gptq_grid g = {0};
    lpv_status s = (!W || !mean || (L->bsr && !mask)) ? lpv_fail(err, LPV_E_OOM, "out of memory quantizing '%s'", ref->name)
                                                      : LPV_OK;
    if (s == LPV_OK) {
        if (L->bsr) lpv_bsr_to_dense(L->bsr, W), lpv_bsr_mask(L->bsr, mask);
        else memcpy(W, L->w, sizeof(float) * n);
        lpv_stats_mean(st, mean, NULL);
        s = lpv_gptq_layer(W, L->b, out, in, R, C, mask, st->H, mean, o, &g, li, ref->name, err);
    }
    /* one model on every rank, whatever their CPUs' rounding (dist.h) */
    if (s == LPV_OK && lpv_dist_size() > 1) s = lpv_dist_bcast(W, sizeof(float) * n, 0, err);
    if (s == LPV_OK && lpv_dist_size() > 1 && L->b) s = lpv_dist_bcast(L->b, sizeof(float) * (size_t)out, 0, err);
    if (s == LPV_OK) {
        lpv_linear_set_weights(L, W);
        s = store_on_grid(m, L, &g, ref->name, err);
    }
    lpv_gptq_grid_free(&g);
    free(W), free(mean), free(mask);
    return s;
}


lpv_status lpv_model_quantize_gptq(lpv_model *m, const lpv_model_stats *s, const lpv_gptq_opts *o,
                                   lpv_gptq_info *info, lpv_err *err) {
    lpv_gptq_opts d = lpv_gptq_defaults();
    if (!o) o = &d;
    if (o->codebook < 0 || o->codebook > LPV_CODEBOOK_MAX)
        return lpv_fail_param(err, LPV_E_ARG, "codebook", "%d levels, expected 0 (int8) or 1..%d", o->codebook,
                              LPV_CODEBOOK_MAX);
    lpv_gptq_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    double t0 = lpv_now();
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        if (!lpv_layer_kind_is_block(refs[i].kind)) continue;
        if (lpv_linear_has_int8(refs[i].lin))
            return lpv_fail(err, LPV_E_ARG, "'%s' is int8 already: quantize the FP32 model", refs[i].name);
        if (i >= s->n || !s->want[i] || !s->st[i].H || s->st[i].in != refs[i].lin->in)
            return lpv_fail(err, LPV_E_ARG, "'%s': no input statistics to quantize it with", refs[i].name);
    }
    lpv_progress bar;
    lpv_progress_begin(&bar, n, "quantize");
    lpv_status st = LPV_OK;
    for (int i = 0; i < n && st == LPV_OK; i++) {
        if (lpv_layer_kind_is_block(refs[i].kind)) {
            lpv_gptq_layer_info li = {0};
            st = quantize_layer(m, &refs[i], &s->st[i], o, &li, err);
            info->err_rtn[i] = li.err_rtn, info->err_gptq[i] = li.err_gptq;
            if (li.damp > info->max_damp) info->max_damp = li.damp;
            info->layers++;
        }
        lpv_progress_update(&bar, i + 1, "%s", refs[i].name);
    }
    lpv_progress_end(&bar);
    info->seconds = lpv_now() - t0;
    return st;
}


/* The static grids' pass over the (smoothed) FP32 model: the block linears of the kinds asked for. */
static lpv_status act_collect(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp, const lpv_quant_calib_opts *o,
                              int batch, lpv_act_stats *as, lpv_err *err) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) as->want[i] = lpv_layer_kind_is_block(refs[i].kind) && (o->act_kinds >> refs[i].kind & 1u);
    double t0 = lpv_now();
    lpv_skips again = {0}; /* the statistics' pass counted the unreadable images already */
    lpv_status st = lpv_act_collect(m, ds, pp, batch, &again, as, err);
    lpv_skips_free(&again);
    LPV_TRY(st);
    lpv_info("input ranges of %lld images in %.1f s", (long long)as->images, lpv_now() - t0);
    return LPV_OK;
}

/* Each wanted int8 layer's input grid by mode, with its error and the min-max grid's. */
static void act_apply(lpv_model *m, const lpv_act_stats *as, lpv_act_mode mode, lpv_quant_calib_info *info) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        if (i >= as->n || !as->want[i] || !lpv_linear_has_int8(refs[i].lin)) continue;
        lpv_qact q = lpv_act_choose(as, i, mode);
        refs[i].lin->qx = q;
        info->act[i] = q, info->act_layers++;
        info->act_mse[i] = lpv_act_mse(as, i, q);
        info->act_mse_minmax[i] = lpv_act_mse(as, i, lpv_act_grid(as->lo[i], as->hi[i]));
    }
}

lpv_quant_calib_opts lpv_quant_calib_defaults(void) {
    lpv_quant_calib_opts o;
    memset(&o, 0, sizeof o);
    o.gptq = lpv_gptq_defaults(), o.gptq_rounding = 1, o.smooth = lpv_smooth_defaults(), o.smooth.alpha = 0;
    o.batch = 32, o.act = LPV_ACT_TOKEN, o.act_kinds = LPV_ACT_KINDS_DEFAULT;
    return o;
}

lpv_status lpv_model_quantize_calibrated(lpv_model *m, const lpv_dataset *ds, const lpv_preproc *pp,
                                         lpv_quant_calib_opts *o, lpv_quant_calib_info *info, lpv_skips *skips,
                                         lpv_err *err) {
    lpv_quant_calib_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    if (lpv_model_has_int8(m))
        return lpv_fail(err, LPV_E_ARG, "'%s' is int8 already: calibrated quantization takes an FP32 model", m->path);
    int act = o->act != LPV_ACT_TOKEN;
    if (act && o->gptq.codebook)
        return lpv_fail_param(err, LPV_E_ARG, "act", "static input grids are for int8; a codebook runs in FP32");
    lpv_model_stats s;
    memset(&s, 0, sizeof s);
    lpv_gptq_want(m, &s);
    if (o->prefix_weight) s.prefix_weight = o->prefix_weight;
    else o->prefix_weight = s.prefix_weight;
    int batch = o->batch > 0 ? o->batch : 32;
    double t0 = lpv_now();
    LPV_TRY(lpv_collect_input_stats(m, ds, pp, batch, skips, &s, err)); /* frees on failure */
    info->images = s.images, info->stats_seconds = lpv_now() - t0;
    lpv_info("input statistics of %lld images in %.1f s", (long long)s.images, info->stats_seconds);
    lpv_status st = o->smooth.alpha > 0 ? lpv_model_smooth(m, &s, &o->smooth, &info->smooth, err) : LPV_OK;
    lpv_act_stats as;
    memset(&as, 0, sizeof as);
    if (st == LPV_OK && act) st = act_collect(m, ds, pp, o, batch, &as, err);
    if (st == LPV_OK && o->gptq_rounding) st = lpv_model_quantize_gptq(m, &s, &o->gptq, &info->gptq, err);
    else if (st == LPV_OK)
        st = o->gptq.codebook ? lpv_model_quantize_codebook(m, o->gptq.codebook, err) : lpv_model_quantize_int8(m, 32, 32, err);
    if (st == LPV_OK && act) act_apply(m, &as, o->act, info);
    lpv_act_stats_free(&as);
    lpv_model_stats_free(&s);
    return st;
}
