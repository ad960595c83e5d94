/*
 * test_grad_fd.c — lpv_forward_backward on tiny random models (D 16, 2 heads,
 * depth 2, MLP 40, patch 16, 10 classes) against an independent
 * double-precision forward written here:
 *   - logits equal the double forward and lpv_forward (forward.h);
 *   - for every loss kind and every parameter tensor, the analytic gradient
 *     of a few entries (the largest and two random ones) equals a central
 *     finite difference of the double forward (step 1e-3, taken as the exact
 *     float difference of the perturbed weights), to
 *     |g - fd| <= 1e-3 · max(|fd|, 0.01 · max|g over the tensor|);
 *   - per-sample squared accumulators equal Σ over separate B=1 runs of
 *     (grad)², the batch gradient their mean, and accumulation over calls
 *     (2 + 1 images) the sum of the batch means;
 *   - 1 and 2 threads agree; bad arguments fail with a message.
 * Variants: one head (cls), distilled (cls + dist, two heads, 9 patches), and
 * HF DeiT's layout (cls + dist tokens, one head reading token 0).
 */
#include <stdint.h>

#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/grad.h"
#include "lpvit/model.h"
#include "test.h"

static uint64_t rng_state = 0x13198a2e03707344ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) / 9007199254740992.0; }
static float rng_f(void) { return (float)(2.0 * rng_unif() - 1.0); }

/* ---- the model's parameters, in lpv_grads_list order ---- */

#define MAXP 64
static int model_params(lpv_model *m, float **p) {
    const lpv_config *c = &m->cfg;
    int n = 0;
    p[n++] = m->cls;
    if (m->dist) p[n++] = m->dist;
    p[n++] = m->pos;
    p[n++] = m->patch.w, p[n++] = m->patch.b;
    for (int l = 0; l < c->depth; l++) {
        lpv_block *b = &m->blocks[l];
        p[n++] = b->ln1_w, p[n++] = b->ln1_b, p[n++] = b->qkv.w, p[n++] = b->qkv.b, p[n++] = b->proj.w;
        p[n++] = b->proj.b, p[n++] = b->ln2_w, p[n++] = b->ln2_b, p[n++] = b->fc1.w, p[n++] = b->fc1.b;
        p[n++] = b->fc2.w, p[n++] = b->fc2.b;
    }
    p[n++] = m->norm_w, p[n++] = m->norm_b, p[n++] = m->head.w, p[n++] = m->head.b;
    if (c->n_outputs == 2) p[n++] = m->head_dist.w, p[n++] = m->head_dist.b;
    return n;
}

/* ---- double-precision reference forward (token-major) ---- */

static void ln_d(double *y, const double *x, const float *w, const float *b, int D, double eps) {
    double mu = 0, v = 0;
    for (int d = 0; d < D; d++) mu += x[d];
    mu /= D;
    for (int d = 0; d < D; d++) v += (x[d] - mu) * (x[d] - mu);
    double r = 1.0 / sqrt(v / D + eps);
    for (int d = 0; d < D; d++) y[d] = (x[d] - mu) * r * w[d] + b[d];
}

static void lin_d(double *y, const double *x, const lpv_linear *L) {
    for (int o = 0; o < L->out; o++) {
        double s = L->b ? L->b[o] : 0;
        for (int i = 0; i < L->in; i++) s += (double)L->w[(int64_t)o * L->in + i] * x[i];
        y[o] = s;
    }
}

/* logits (B, classes) in double. */
static void forward_d(const lpv_model *m, const float *img, int B, double *logits) {
    const lpv_config *c = &m->cfg;
    int D = c->dim, T = c->n_tokens, P = c->n_prefix, p = c->patch, S = c->img, G = S / p, F = c->mlp;
    int H = c->heads, hd = D / H, K = c->chans * p * p, C = c->classes;
    double *x = malloc(sizeof(double) * T * D), *xn = malloc(sizeof(double) * T * D);
    double *qkv = malloc(sizeof(double) * T * 3 * D), *att = malloc(sizeof(double) * T * D);
    double *h = malloc(sizeof(double) * F), *tmp = malloc(sizeof(double) * (D > K ? D : K) * 4 + F);
    double *s = malloc(sizeof(double) * T), *lg = malloc(sizeof(double) * C);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            double *xt = x + (int64_t)t * D;
            if (t == 0) for (int d = 0; d < D; d++) xt[d] = m->cls[d];
            else if (t == 1 && P == 2) for (int d = 0; d < D; d++) xt[d] = m->dist[d];
            else {
                int g = t - P, gy = g / G, gx = g % G;
                for (int ch = 0; ch < c->chans; ch++)
                    for (int ky = 0; ky < p; ky++)
                        for (int kx = 0; kx < p; kx++)
                            tmp[(ch * p + ky) * p + kx] =
                                img[(((int64_t)b * c->chans + ch) * S + gy * p + ky) * S + gx * p + kx];
                lin_d(xt, tmp, &m->patch);
            }
            for (int d = 0; d < D; d++) xt[d] += m->pos[(int64_t)t * D + d];
        }
        for (int l = 0; l < c->depth; l++) {
            const lpv_block *bl = &m->blocks[l];
            for (int t = 0; t < T; t++) {
                ln_d(xn + (int64_t)t * D, x + (int64_t)t * D, bl->ln1_w, bl->ln1_b, D, c->ln_eps);
                lin_d(qkv + (int64_t)t * 3 * D, xn + (int64_t)t * D, &bl->qkv);
            }
            for (int hh = 0; hh < H; hh++)
                for (int i = 0; i < T; i++) {
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j < T; j++) {
                        double a = 0;
                        for (int d = 0; d < hd; d++) a += qkv[(int64_t)i * 3 * D + hh * hd + d] * qkv[(int64_t)j * 3 * D + D + hh * hd + d];
                        s[j] = a / sqrt((double)hd);
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
                    for (int d = 0; d < hd; d++) {
                        double a = 0;
                        for (int j = 0; j < T; j++) a += s[j] * qkv[(int64_t)j * 3 * D + 2 * D + hh * hd + d];
                        att[(int64_t)i * D + hh * hd + d] = a / sum;
                    }
                }
            for (int t = 0; t < T; t++) {
                lin_d(tmp, att + (int64_t)t * D, &bl->proj);
                for (int d = 0; d < D; d++) x[(int64_t)t * D + d] += tmp[d];
                ln_d(xn, x + (int64_t)t * D, bl->ln2_w, bl->ln2_b, D, c->ln_eps);
                lin_d(h, xn, &bl->fc1);
                for (int f = 0; f < F; f++) h[f] = 0.5 * h[f] * erfc(-h[f] / sqrt(2.0));
                lin_d(tmp, h, &bl->fc2);
                for (int d = 0; d < D; d++) x[(int64_t)t * D + d] += tmp[d];
            }
        }
        for (int j = 0; j < C; j++) logits[(int64_t)b * C + j] = 0;
        for (int k = 0; k < c->n_outputs; k++) {
            ln_d(xn, x + (int64_t)k * D, m->norm_w, m->norm_b, D, c->ln_eps);
            lin_d(lg, xn, k == 0 ? &m->head : &m->head_dist);
            for (int j = 0; j < C; j++) logits[(int64_t)b * C + j] += lg[j] / c->n_outputs;
        }
    }
    free(x), free(xn), free(qkv), free(att), free(h), free(tmp), free(s), free(lg);
}

static double lse_d(const double *z, int C) {
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) mx = z[c] > mx ? z[c] : mx;
    for (int c = 0; c < C; c++) s += exp(z[c] - mx);
    return mx + log(s);
}

/* Batch-mean loss in double; self-ce uses the given fixed targets (argmax is not differentiated). */
static double loss_d(const lpv_loss *ls, const int *self_y, const double *z, int B, int C) {
    double L = 0;
    for (int n = 0; n < B; n++) {
        const double *zn = z + (int64_t)n * C;
        if (ls->kind == LPV_LOSS_MEAN_SQ) {
            for (int c = 0; c < C; c++) L += zn[c] * zn[c] / C;
        } else if (ls->kind == LPV_LOSS_CE || ls->kind == LPV_LOSS_SELF_CE) {
            int y = ls->kind == LPV_LOSS_CE ? ls->labels[n] : self_y[n];
            L += lse_d(zn, C) - zn[y];
        } else {
            double tz[64], lz = lse_d(zn, C);
            for (int c = 0; c < C; c++) tz[c] = ls->target_logits[(int64_t)n * C + c];
            double lt = lse_d(tz, C);
            for (int c = 0; c < C; c++) L += exp(tz[c] - lt) * ((tz[c] - lt) - (zn[c] - lz));
        }
    }
    return L / B;
}

/* ---- fixtures ---- */

static lpv_model *tiny_model(int prefix, int outputs, int img, uint64_t seed) {
    lpv_config c = {0};
    c.dim = 16, c.depth = 2, c.heads = 2, c.mlp = 40, c.patch = 16, c.img = img, c.chans = 3, c.classes = 10;
    c.n_prefix = prefix, c.n_outputs = outputs, c.ln_eps = 1e-6f;
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, seed, &err), &err);
    if (!m) return NULL;
    /* larger weights than timm's init so every nonlinearity is exercised */
    const lpv_config *mc = &m->cfg;
    int64_t D = mc->dim;
    for (int64_t i = 0; i < D; i++) {
        m->cls[i] *= 10;
        if (m->dist) m->dist[i] *= 10;
        m->norm_w[i] = 1.0f + 0.3f * rng_f();
    }
    for (int64_t i = 0; i < mc->n_tokens * D; i++) m->pos[i] *= 10;
    for (int l = 0; l < mc->depth; l++) {
        lpv_block *b = &m->blocks[l];
        lpv_linear *ls[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
        for (int k = 0; k < 4; k++)
            for (int64_t i = 0; i < (int64_t)ls[k]->out * ls[k]->in; i++) ls[k]->w[i] *= 8;
        for (int64_t i = 0; i < D; i++) b->ln1_w[i] = 1.0f + 0.3f * rng_f(), b->ln2_w[i] = 1.0f + 0.3f * rng_f();
    }
    for (int64_t i = 0; i < (int64_t)mc->classes * D; i++) {
        m->head.w[i] *= 20;
        if (m->head_dist.w) m->head_dist.w[i] *= 20;
    }
    return m;
}

static float *random_images(const lpv_config *c, int B) {
    size_t n = (size_t)B * c->chans * c->img * c->img;
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rng_f();
    return x;
}

/* ---- checks ---- */

static double worst_fd[LPV_LOSS_COUNT];

static void check_fd(lpv_model *m, const float *img, int B, const lpv_loss *ls, const char *label) {
    const lpv_config *c = &m->cfg;
    int C = c->classes;
    lpv_err err;
    lpv_train_ws ws;
    lpv_grads g;
    CHECK_OK(lpv_train_ws_init(&ws, c, B, &err), &err);
    CHECK_OK(lpv_grads_init(&g, c, 0, &err), &err);
    float loss = 0, *logits = malloc(sizeof(float) * B * C);
    CHECK_OK(lpv_forward_backward(m, &ws, img, B, ls, &loss, logits, &g, &err), &err);
    double *zd = malloc(sizeof(double) * B * C);
    forward_d(m, img, B, zd);
    int self_y[16];
    for (int n = 0; n < B; n++) {
        int y = 0;
        for (int j = 1; j < C; j++) y = logits[n * C + j] > logits[n * C + y] ? j : y;
        self_y[n] = y;
    }
    /* logits and loss against the double forward */
    double el = 0, sl = 0;
    for (int i = 0; i < B * C; i++) {
        el = fmax(el, fabs(logits[i] - zd[i]));
        sl = fmax(sl, fabs(zd[i]));
    }
    double L0 = loss_d(ls, self_y, zd, B, C);
    CHECKF(el <= 1e-5 * fmax(sl, 1), "%s %s: logits max abs error %.3g (scale %.3g)", label, lpv_loss_name(ls->kind), el,
           sl);
    CHECKF(fabs(loss - L0) <= 1e-5 * fmax(fabs(L0), 1e-3), "%s %s: loss %.9g vs double %.9g", label,
           lpv_loss_name(ls->kind), (double)loss, L0);
    /* gradients against central differences */
    lpv_grad_tensor gt[MAXP];
    float *ps[MAXP];
    int ng = lpv_grads_list(&g, gt, MAXP), np = model_params(m, ps);
    CHECK(ng == np);
    double worst = 0;
    const char *worst_name = "";
    for (int k = 0; k < ng && k < np; k++) {
        int64_t n = gt[k].n, imax = 0;
        double gscale = 0;
        for (int64_t i = 0; i < n; i++)
            if (fabs(gt[k].data[i]) > gscale) gscale = fabs(gt[k].data[i]), imax = i;
        int64_t idx[3] = {imax, (int64_t)(rng_unif() * n), (int64_t)(rng_unif() * n)};
        for (int r = 0; r < 3; r++) {
            float *p = &ps[k][idx[r]], p0 = *p;
            float pp = (float)(p0 + 1e-3), pm = (float)(p0 - 1e-3);
            *p = pp;
            forward_d(m, img, B, zd);
            double Lp = loss_d(ls, self_y, zd, B, C);
            *p = pm;
            forward_d(m, img, B, zd);
            double Lm = loss_d(ls, self_y, zd, B, C);
            *p = p0;
            double fd = (Lp - Lm) / ((double)pp - (double)pm), an = gt[k].data[idx[r]];
            double e = fabs(an - fd) / fmax(fmax(fabs(fd), 0.01 * gscale), 1e-12);
            if (e > worst) worst = e, worst_name = gt[k].name;
            CHECKF(e <= 1e-3, "%s %s: d loss / d %s[%lld]: analytic %.9g vs finite difference %.9g (rel %.3g)", label,
                   lpv_loss_name(ls->kind), gt[k].name, (long long)idx[r], an, fd, e);
        }
    }
    printf("%-12s %-8s loss %.6f  logits err %.2g  worst fd rel err %.2g (%s)\n", label, lpv_loss_name(ls->kind),
           (double)loss, el, worst, worst_name);
    if (worst > worst_fd[ls->kind]) worst_fd[ls->kind] = worst;
    free(logits), free(zd);
    lpv_grads_free(&g);
    lpv_train_ws_free(&ws);
}

/* logits of lpv_forward_backward == lpv_forward. */
static void check_vs_forward(lpv_model *m, const float *img, int B, const char *label) {
    lpv_err err;
    lpv_workspace fw;
    lpv_train_ws ws;
    int C = m->cfg.classes;
    float *a = malloc(sizeof(float) * B * C), *b = malloc(sizeof(float) * B * C);
    CHECK_OK(lpv_workspace_init(&fw, &m->cfg, B, &err), &err);
    CHECK_OK(lpv_train_ws_init(&ws, &m->cfg, B, &err), &err);
    CHECK_OK(lpv_forward(m, &fw, img, B, a, &err), &err);
    lpv_loss ls = {.kind = LPV_LOSS_MEAN_SQ};
    CHECK_OK(lpv_forward_backward(m, &ws, img, B, &ls, NULL, b, NULL, &err), &err);
    test_diff d = test_compare(b, a, (size_t)B * C, 1e-3);
    CHECKF(d.max_abs <= 1e-5, "%s: lpv_forward_backward logits differ from lpv_forward by %.3g", label, d.max_abs);
    free(a), free(b);
    lpv_workspace_free(&fw);
    lpv_train_ws_free(&ws);
}

/* max |a - b| / max |b| over all gradient floats. */
static double grads_rel(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return e / (s > 0 ? s : 1e-30);
}

/* Per-sample squares, batch means, accumulation over calls, and thread counts. */
static void check_persample(lpv_model *m, const float *img, const lpv_loss *ls, const char *label) {
    enum { B = 3 };
    const lpv_config *c = &m->cfg;
    int C = c->classes, per_img = c->chans * c->img * c->img;
    lpv_err err;
    lpv_train_ws ws;
    lpv_grads one[B], all, acc, t1;
    CHECK_OK(lpv_train_ws_init(&ws, c, B, &err), &err);
    CHECK_OK(lpv_grads_init(&all, c, LPV_GRADS_SQ, &err), &err);
    CHECK_OK(lpv_grads_init(&acc, c, LPV_GRADS_SQ, &err), &err);
    CHECK_OK(lpv_grads_init(&t1, c, LPV_GRADS_SQ, &err), &err);
    for (int n = 0; n < B; n++) {
        CHECK_OK(lpv_grads_init(&one[n], c, LPV_GRADS_SQ, &err), &err);
        lpv_loss l1 = *ls;
        if (ls->labels) l1.labels = ls->labels + n;
        if (ls->target_logits) l1.target_logits = ls->target_logits + (int64_t)n * C;
        CHECK_OK(lpv_forward_backward(m, &ws, img + (int64_t)n * per_img, 1, &l1, NULL, NULL, &one[n], &err), &err);
    }
    CHECK_OK(lpv_forward_backward(m, &ws, img, B, ls, NULL, NULL, &all, &err), &err);
    CHECK(all.batches == 1 && all.samples == B);
    /* 2 + 1 */
    lpv_loss l2 = *ls;
    CHECK_OK(lpv_forward_backward(m, &ws, img, 2, ls, NULL, NULL, &acc, &err), &err);
    if (ls->labels) l2.labels = ls->labels + 2;
    if (ls->target_logits) l2.target_logits = ls->target_logits + 2 * C;
    CHECK_OK(lpv_forward_backward(m, &ws, img + 2 * per_img, 1, &l2, NULL, NULL, &acc, &err), &err);
    CHECK(acc.batches == 2 && acc.samples == B);
    int64_t n = all.n_all, nq = all.n_sq;
    float *mean = malloc(sizeof(float) * n), *acc_want = malloc(sizeof(float) * n), *sq = malloc(sizeof(float) * nq);
    for (int64_t i = 0; i < n; i++) {
        mean[i] = (one[0].all[i] + one[1].all[i] + one[2].all[i]) / 3.0f;
        acc_want[i] = (one[0].all[i] + one[1].all[i]) / 2.0f + one[2].all[i];
    }
    for (int64_t i = 0; i < nq; i++)
        sq[i] = one[0].all_sq[i] + one[1].all_sq[i] + one[2].all_sq[i];
    /* with B = 1 the squared accumulator is the gradient squared */
    double e1 = 0;
    for (int k = 0; k < B; k++) {
        lpv_linear_grad *lg = &one[k].blocks[1].fc1;
        for (int64_t i = 0; i < (int64_t)lg->out * lg->in; i++)
            e1 = fmax(e1, fabs(lg->sq[i] - lg->w[i] * lg->w[i]) / fmax(lg->w[i] * lg->w[i], 1e-30));
    }
    double em = grads_rel(all.all, mean, n), eq = grads_rel(all.all_sq, sq, nq);
    double ea = grads_rel(acc.all, acc_want, n), eaq = grads_rel(acc.all_sq, sq, nq);
    printf("%-12s %-8s per-sample: batch grad vs mean of B=1 %.2g, sq vs sum of B=1 squares %.2g, accumulated %.2g / %.2g\n",
           label, lpv_loss_name(ls->kind), em, eq, ea, eaq);
    CHECKF(e1 <= 1e-6, "%s: B=1 squared accumulator != grad^2 (%.3g)", label, e1);
    CHECKF(em <= 1e-5 && eq <= 1e-5, "%s %s: batch of 3 vs 3 single images: grad %.3g sq %.3g", label,
           lpv_loss_name(ls->kind), em, eq);
    CHECKF(ea <= 1e-5 && eaq <= 1e-5, "%s %s: accumulated 2 + 1: grad %.3g sq %.3g", label, lpv_loss_name(ls->kind),
           ea, eaq);
    /* the same batch on one thread */
    lpv_threads_set(1);
    CHECK_OK(lpv_forward_backward(m, &ws, img, B, ls, NULL, NULL, &t1, &err), &err);
    lpv_threads_set(2);
    double et = grads_rel(t1.all, all.all, n), etq = grads_rel(t1.all_sq, all.all_sq, nq);
    CHECKF(et <= 1e-5 && etq <= 1e-5, "%s: 1 vs 2 threads: grad %.3g sq %.3g", label, et, etq);
    /* zeroing */
    lpv_grads_zero(&t1);
    double z = 0;
    for (int64_t i = 0; i < n; i++) z = fmax(z, fabs(t1.all[i]));
    for (int64_t i = 0; i < nq; i++) z = fmax(z, fabs(t1.all_sq[i]));
    CHECK(z == 0 && t1.batches == 0 && t1.samples == 0);
    free(mean), free(acc_want), free(sq);
    for (int k = 0; k < B; k++) lpv_grads_free(&one[k]);
    lpv_grads_free(&all), lpv_grads_free(&acc), lpv_grads_free(&t1);
    lpv_train_ws_free(&ws);
}

static void check_errors(lpv_model *m, const float *img) {
    lpv_err err;
    lpv_train_ws ws;
    lpv_grads g;
    CHECK_OK(lpv_train_ws_init(&ws, &m->cfg, 2, &err), &err);
    CHECK_OK(lpv_grads_init(&g, &m->cfg, 0, &err), &err);
    int bad[2] = {0, 10};
    lpv_loss ls = {.kind = LPV_LOSS_CE, .labels = bad};
    CHECK(lpv_forward_backward(m, &ws, img, 2, &ls, NULL, NULL, &g, &err) == LPV_E_ARG &&
          strstr(err.msg, "label 10 of image 1"));
    ls.labels = NULL;
    CHECK(lpv_forward_backward(m, &ws, img, 2, &ls, NULL, NULL, &g, &err) == LPV_E_ARG && strstr(err.msg, "labels"));
    ls.kind = LPV_LOSS_KL;
    CHECK(lpv_forward_backward(m, &ws, img, 2, &ls, NULL, NULL, &g, &err) == LPV_E_ARG && strstr(err.msg, "target"));
    ls.kind = LPV_LOSS_MEAN_SQ;
    CHECK(lpv_forward_backward(m, &ws, img, 3, &ls, NULL, NULL, &g, &err) == LPV_E_ARG && strstr(err.msg, "exceeds"));
    CHECK(g.batches == 0 && g.samples == 0);
    lpv_loss_kind k;
    CHECK(lpv_loss_parse("kl", &k, &err) == LPV_OK && k == LPV_LOSS_KL);
    CHECK(lpv_loss_parse("mse", &k, &err) == LPV_E_ARG && strcmp(err.param, "loss") == 0 &&
          strcmp(err.msg, "loss: expected ce, mean-sq, self-ce or kl, got 'mse'") == 0);
    lpv_config other = m->cfg;
    other.mlp += 1;
    lpv_train_ws ws2;
    CHECK_OK(lpv_train_ws_init(&ws2, &other, 2, &err), &err);
    CHECK(lpv_forward_backward(m, &ws2, img, 2, &ls, NULL, NULL, &g, &err) == LPV_E_ARG &&
          strstr(err.msg, "another architecture"));
    lpv_train_ws_free(&ws2);
    lpv_grads_free(&g);
    lpv_train_ws_free(&ws);
}

int main(void) {
    lpv_threads_set(2);
    struct {
        const char *label;
        int prefix, outputs, img;
    } variants[] = {{"cls", 1, 1, 32}, {"distilled", 2, 2, 48}, {"hf-deit", 2, 1, 32}};
    for (int v = 0; v < 3; v++) {
        lpv_model *m = tiny_model(variants[v].prefix, variants[v].outputs, variants[v].img, 11 + v);
        if (!m) continue;
        enum { B = 3 };
        float *img = random_images(&m->cfg, B);
        int C = m->cfg.classes, labels[B] = {3, 0, 9};
        float *target = malloc(sizeof(float) * B * C);
        for (int i = 0; i < B * C; i++) target[i] = 2.0f * rng_f();
        check_vs_forward(m, img, B, variants[v].label);
        for (int k = 0; k < LPV_LOSS_COUNT; k++) {
            lpv_loss ls = {.kind = (lpv_loss_kind)k, .labels = labels, .target_logits = target};
            check_fd(m, img, 2, &ls, variants[v].label);
            check_persample(m, img, &ls, variants[v].label);
        }
        if (v == 0) check_errors(m, img);
        free(img), free(target);
        lpv_model_free(m);
    }
    for (int k = 0; k < LPV_LOSS_COUNT; k++)
        printf("worst finite-difference relative error, %s: %.2g\n", lpv_loss_name((lpv_loss_kind)k), worst_fd[k]);
    return test_finish("test_grad_fd");
}
