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

lpv_gptq_opts lpv_gptq_defaults(void) { return (lpv_gptq_opts){0, 1, 1, 1, lpv_recon_defaults()}; }

static int block_linear(lpv_layer_kind k) {
    return k == LPV_LK_QKV || k == LPV_LK_PROJ || k == LPV_LK_FC1 || k == LPV_LK_FC2;
}

void lpv_gptq_want(lpv_model *m, lpv_model_stats *s) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++) s->want[i] = block_linear(refs[i].kind);
}

/* ‖(W − V) X‖² / ‖W X‖² under H (D: (out, in) scratch). */
static lpv_status rel_err(const float *W, const float *V, int out, int in, const float *H, float *D, double *e,
                          lpv_err *err) {
    double num, den;
    size_t n = (size_t)out * in;
    for (size_t i = 0; i < n; i++) D[i] = W[i] - V[i];
    LPV_TRY(lpv_output_energy(D, out, in, H, &num, err));
    LPV_TRY(lpv_output_energy(W, out, in, H, &den, err));
    *e = den > 0 ? num / den : 0;
    return LPV_OK;
}

/* The int8 grid's row scales: max |w| / 127 (1 for an all-zero row), as lpv_bsr_set_int8 rounds them. */
static void int8_scales(const float *W, int out, int in, float *s) {
    for (int r = 0; r < out; r++) {
        float mx = 0.0f;
        for (int c = 0; c < in; c++) mx = fmaxf(mx, fabsf(W[(int64_t)r * in + c]));
        s[r] = mx > 0.0f ? mx / 127.0f : 1.0f;
    }
}

typedef struct {
    float *W, *V, *D, *scale; /* (out, in) the layer's FP32 weights, the quantized ones, scratch; (out) */
    float *diag;              /* (in) H's diagonal */
    uint8_t *mask;            /* (nbr, nbc) of a BSR layer, else NULL */
    int32_t *order;           /* (in) */
    double *mean;             /* (in) E[x] */
} layer_buf;

static void buf_free(layer_buf *b) {
    free(b->W), free(b->V), free(b->D), free(b->scale), free(b->mask), free(b->order), free(b->mean), free(b->diag);
    memset(b, 0, sizeof *b);
}

static lpv_status buf_init(layer_buf *b, const lpv_linear *L, lpv_err *err) {
    size_t n = (size_t)L->out * L->in;
    memset(b, 0, sizeof *b);
    b->W = malloc(sizeof(float) * n), b->V = malloc(sizeof(float) * n), b->D = malloc(sizeof(float) * n);
    b->scale = malloc(sizeof(float) * (size_t)L->out), b->order = malloc(sizeof(int32_t) * (size_t)L->in);
    b->mean = malloc(sizeof(double) * (size_t)L->in), b->diag = malloc(sizeof(float) * (size_t)L->in);
    if (L->bsr) b->mask = malloc((size_t)L->bsr->nbr * L->bsr->nbc);
    if (!b->W || !b->V || !b->D || !b->scale || !b->order || !b->mean || !b->diag || (L->bsr && !b->mask)) {
        buf_free(b);
        return lpv_fail(err, LPV_E_OOM, "out of memory quantizing a %d x %d layer", L->out, L->in);
    }
    if (L->bsr) lpv_bsr_to_dense(L->bsr, b->W), lpv_bsr_mask(L->bsr, b->mask);
    else memcpy(b->W, L->w, sizeof(float) * n);
    return LPV_OK;
}

static lpv_status quantize_layer(lpv_model *m, const lpv_layer_ref *ref, const lpv_layer_stats *st,
                                 const lpv_gptq_opts *o, double *e_rtn, double *e_gptq, double *damp, lpv_err *err) {
    lpv_linear *L = ref->lin;
    int out = L->out, in = L->in, R = L->bsr ? L->bsr->R : 32, C = L->bsr ? L->bsr->C : 32;
    layer_buf b;
    LPV_TRY(buf_init(&b, L, err));
    float levels[LPV_CODEBOOK_MAX];
    int k = 0;
    lpv_qgrid g = {o->codebook ? LPV_QGRID_LEVELS : LPV_QGRID_INT, b.scale, 127, levels, 0};
    lpv_status s = LPV_OK;
    if (o->codebook && o->weighted_fit) /* the levels weigh each weight by its input's energy H_jj */
        for (int j = 0; j < in; j++) b.diag[j] = st->H[(int64_t)j * in + j];
    if (o->codebook) s = lpv_codebook_fit(L, o->codebook, o->weighted_fit ? b.diag : NULL, levels, &k, b.scale, err);
    else int8_scales(b.W, out, in, b.scale);
    g.k = k;
    /* round to nearest on the same grid: the baseline the report sets the sweep against */
    for (int64_t i = 0; s == LPV_OK && i < (int64_t)out * in; i++)
        b.V[i] = b.W[i] != 0.0f ? lpv_qgrid_round(&g, (int)(i / in), b.W[i]) : 0.0f;
    if (s == LPV_OK) s = rel_err(b.W, b.V, out, in, st->H, b.D, e_rtn, err);
    if (s == LPV_OK) {
        memcpy(b.V, b.W, sizeof(float) * (size_t)out * in);
        if (o->act_order) lpv_quant_act_order(st->H, in, b.order);
        lpv_recon_info ri = {0};
        s = lpv_recon_quant(b.V, out, in, R, C, b.mask, st->H, &g, o->act_order ? b.order : NULL, &o->recon, &ri,
                            ref->name, err);
        *damp = ri.damp;
    }
    if (s == LPV_OK) s = rel_err(b.W, b.V, out, in, st->H, b.D, e_gptq, err);
    /* one model on every rank, whatever their CPUs' rounding (dist.h) */
    if (s == LPV_OK && lpv_dist_size() > 1) s = lpv_dist_bcast(b.V, sizeof(float) * (size_t)out * in, 0, err);
    if (s == LPV_OK && o->bias && L->b) {
        lpv_stats_mean(st, b.mean, NULL);
        lpv_recon_bias(L->b, b.W, b.V, out, in, b.mean, NULL);
        if (lpv_dist_size() > 1) s = lpv_dist_bcast(L->b, sizeof(float) * (size_t)out, 0, err);
    }
    if (s == LPV_OK) {
        lpv_linear_set_weights(L, b.V);
        s = o->codebook ? lpv_linear_set_codebook(m, L, levels, k, b.scale, ref->name, err)
                        : lpv_linear_quantize_int8(m, L, b.scale, 32, 32, ref->name, err);
    }
    buf_free(&b);
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
        if (!block_linear(refs[i].kind)) continue;
        if (lpv_linear_has_int8(refs[i].lin))
            return lpv_fail(err, LPV_E_ARG, "'%s' is int8 already: quantize the FP32 model", refs[i].name);
        if (i >= s->n || !s->want[i] || !s->st[i].H || s->st[i].in != refs[i].lin->in)
            return lpv_fail(err, LPV_E_ARG, "'%s': no input statistics to quantize it with", refs[i].name);
    }
    lpv_progress bar;
    lpv_progress_begin(&bar, n, "quantize");
    lpv_status st = LPV_OK;
    for (int i = 0; i < n && st == LPV_OK; i++) {
        if (block_linear(refs[i].kind)) {
            double damp = 0;
            st = quantize_layer(m, &refs[i], &s->st[i], o, &info->err_rtn[i], &info->err_gptq[i], &damp, err);
            if (damp > info->max_damp) info->max_damp = damp;
            info->layers++;
        }
        lpv_progress_update(&bar, i + 1, "%s", refs[i].name);
    }
    lpv_progress_end(&bar);
    info->seconds = lpv_now() - t0;
    return st;
}
