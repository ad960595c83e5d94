/* refine.c — measured per-layer distortion (see include/lpvit/refine.h). */
#include "lpvit/refine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double lpv_mean_kl(const float *dense_logits, const float *logits, int M, int C) {
    double total = 0;
    for (int i = 0; i < M; i++) {
        const float *p = dense_logits + (int64_t)i * C, *q = logits + (int64_t)i * C;
        double mp = -INFINITY, mq = -INFINITY, sp = 0, sq = 0;
        for (int j = 0; j < C; j++) mp = p[j] > mp ? p[j] : mp, mq = q[j] > mq ? q[j] : mq;
        for (int j = 0; j < C; j++) sp += exp(p[j] - mp), sq += exp(q[j] - mq);
        double lsp = log(sp) + mp, lsq = log(sq) + mq, kl = 0;
        for (int j = 0; j < C; j++) {
            double lp = p[j] - lsp, lq = q[j] - lsq;
            kl += exp(lp) * (lp - lq);
        }
        total += kl > 0 ? kl : 0;
    }
    return total / M;
}

lpv_status lpv_forward_all(const lpv_model *m, lpv_workspace *ws, const float *images, int M, float *logits,
                           lpv_err *err) {
    int64_t per = (int64_t)m->cfg.chans * m->cfg.img * m->cfg.img;
    for (int i = 0; i < M; i += ws->max_batch) {
        int b = M - i < ws->max_batch ? M - i : ws->max_batch;
        LPV_TRY(lpv_forward(m, ws, images + i * per, b, logits + (int64_t)i * m->cfg.classes, err));
    }
    return LPV_OK;
}

lpv_status lpv_layer_kl(lpv_model *m, lpv_linear *L, int R, int C, const int32_t *order, int k, const float *images,
                        int M, const float *dense_logits, float *logits, lpv_workspace *ws, double *kl, lpv_err *err) {
    if (!L->w || L->bsr) return lpv_fail(err, LPV_E_ARG, "lpv_layer_kl needs a dense layer");
    int nbc = lpv_ceil_div(L->in, C);
    /* zero the blocks, remembering them */
    int64_t saved_n = 0;
    for (int q = 0; q < k; q++) {
        int br = order[q] / nbc, bc = order[q] % nbc;
        int rows = (br + 1) * R < L->out ? R : L->out - br * R, cols = (bc + 1) * C < L->in ? C : L->in - bc * C;
        saved_n += (int64_t)rows * cols;
    }
    float *saved = malloc(sizeof(float) * (size_t)(saved_n + 1));
    if (!saved) return lpv_fail(err, LPV_E_OOM, "out of memory");
    int64_t at = 0;
    for (int q = 0; q < k; q++) {
        int br = order[q] / nbc, bc = order[q] % nbc;
        for (int r = br * R; r < (br + 1) * R && r < L->out; r++)
            for (int c = bc * C; c < (bc + 1) * C && c < L->in; c++) {
                saved[at++] = L->w[(int64_t)r * L->in + c];
                L->w[(int64_t)r * L->in + c] = 0;
            }
    }
    lpv_status st = lpv_forward_all(m, ws, images, M, logits, err);
    at = 0;
    for (int q = 0; q < k; q++) { /* restore in the same order */
        int br = order[q] / nbc, bc = order[q] % nbc;
        for (int r = br * R; r < (br + 1) * R && r < L->out; r++)
            for (int c = bc * C; c < (bc + 1) * C && c < L->in; c++) L->w[(int64_t)r * L->in + c] = saved[at++];
    }
    free(saved);
    if (st == LPV_OK) *kl = lpv_mean_kl(dense_logits, logits, M, m->cfg.classes);
    return st;
}
