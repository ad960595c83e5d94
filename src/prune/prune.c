/*
 * prune.c — the pruning pipeline (see include/lpvit/prune.h).
 *
 * lpv_prune runs, on one `run` state that owns every scratch array:
 *   begin      the model dense, its layers, the calibration list chosen and hashed
 *   permute    channels sorted by importance (the model stays the same function)
 *   per step   statistics → saliency → costs → allocation (+ refinement) → masks → update
 *   finish     the masks made BSR, the result's per-layer table
 * Option checks and the "auto" defaults live in prune_opts.c, the report and
 * the file's metadata in prune_report.c.
 */
#include "lpvit/prune.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lpvit/calib.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/log.h"
#include "lpvit/permute.h"
#include "lpvit/recon.h"
#include "lpvit/refine.h"
#include "lpvit/report.h"
#include "prune/prune_internal.h"

/* One prunable layer during a step. */
typedef struct {
    int idx;          /* index into the model's layer refs */
    lpv_layer_sal sal;
    double *cost;     /* (nb + 1) objective cost after k pruned blocks */
    double *time_ms;  /* (nb + 1) or NULL */
    double *energy;   /* (nb + 1) pJ per image */
    int kmax, k;
} player;

typedef struct {
    lpv_model *m;
    const lpv_preproc *pp;
    const lpv_prune_opts *o; /* resolved */
    lpv_prune_result *r;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl;
    lpv_dataset ds, rds, sds; /* the chosen calibration list; the refit's and the statistics' spread subsets (views) */
    lpv_perm perm;
    /* one step's state, rebuilt by each step */
    lpv_calib_stats cs;
    lpv_model_stats ist;
    lpv_arena work;          /* saliency and cost arrays */
    lpv_time_table tt;
    int have_times;          /* tt holds the layers' measured times (speed objectives, or a given table) */
    player *pl;
    int np;
    lpv_alloc_layer *al;
    int *k;
    double refine_factor[LPV_MAX_LAYERS], refine_kl[LPV_MAX_LAYERS];
    /* across steps */
    uint8_t *masks[LPV_MAX_LAYERS], *prev[LPV_MAX_LAYERS];
    lpv_model *dense, *orig; /* the refit's target; the tuning's (the input model, with --steps) */
    lpv_arena tpacks;        /* the target's kernel packs during a refit (pack_target) */
    int tpacked;
    lpv_head_targets heads_tgt;
    /* step checkpoints (prune_step.c) */
    int checkpoints;         /* 1: saved after each step but the last, and looked for before the first */
    char id0[65];            /* the model's identity when step 1 begins (after the channel sort) */
    char settings[2048];     /* every option a step's result depends on, as text for the keys */
} run;

/* ---- layer selection ---- */

static int excluded(const char *name, const char *list) {
    if (!list || strcmp(list, "none") == 0) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        size_t n = strlen(tok);
        if (fnmatch(tok, name, 0) == 0) return 1;
        if (strncmp(name, tok, n) == 0 && (name[n] == '.' || name[n] == 0)) return 1;
        if (strcmp(tok, "head") == 0 && strcmp(name, "head_dist") == 0) return 1; /* both classifier heads */
    }
    return 0;
}

static lpv_status check_exclude_list(const char *list, const lpv_layer_ref *refs, int n, lpv_err *err) {
    if (!list || strcmp(list, "none") == 0) return LPV_OK;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int hit = 0;
        for (int i = 0; i < n && !hit; i++) hit = excluded(refs[i].name, tok);
        if (!hit && strcmp(tok, "head") != 0)
            return lpv_fail_param(err, LPV_E_ARG, "exclude",
                                  "'%s' matches no layer (e.g. patch_embed, head, blocks.0.*, blocks.*.mlp.fc2)", tok);
    }
    return LPV_OK;
}

/* The mask of a layer whose blocks order[0..k) are pruned: (nb) bytes, 1 = kept. */
static uint8_t *mask_of(const lpv_layer_sal *s, int k) {
    uint8_t *mask = malloc((size_t)s->nb);
    if (mask) lpv_mask_from_order(mask, s->nb, s->order, k);
    return mask;
}

/* ---- statistics, with the cache ---- */

static lpv_status get_stats(run *R, const lpv_dataset *ds, int mean, int fisher, int blocks, const char *label,
                            lpv_calib_stats *out, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    const char *msha = lpv_model_hash(R->m, err);
    if (!msha) return LPV_E_IO;
    char images_sha[65];
    lpv_dataset_files_hash(ds, images_sha);
    lpv_calib_opts co = {o->loss, fisher, blocks ? o->block_R : 0, blocks ? o->block_C : 0, o->calib_batch, o->seed,
                         &R->r->skipped, label, !mean};
    char key[1024], path[2048] = "";
    lpv_calib_key(key, sizeof key, msha, images_sha, &co, R->pp);
    if (o->cache_dir) {
        char h[65];
        lpv_sha256_hex(key, strlen(key), h);
        snprintf(path, sizeof path, "%s/calib-%s.lpvc", o->cache_dir, h);
        int hit = 0;
        if (lpv_file_exists(path)) {
            lpv_err e2;
            hit = lpv_calib_load(out, R->m, path, key, &co, &e2) == LPV_OK;
            if (!hit) lpv_warn("ignoring cache: %s", e2.msg);
        }
        if (lpv_dist_size() > 1) { /* under mpirun every rank must take the same path: all load, or all compute */
            int64_t misses = !hit;
            LPV_TRY(lpv_dist_sum_i64(&misses, 1, err));
            if (misses && hit) lpv_calib_free(out), hit = 0;
        }
        if (hit) {
            lpv_info("%s from cache '%s'", label, path);
            snprintf(R->r->cache_file, sizeof R->r->cache_file, "%s", path);
            return LPV_OK;
        }
        if (!lpv_mkdir_p(o->cache_dir)) {
            lpv_warn("cannot create cache folder '%s'", o->cache_dir);
            path[0] = 0;
        }
    }
    LPV_TRY(lpv_calib_collect(R->m, ds, R->pp, &co, out, err));
    snprintf(out->key, sizeof out->key, "%s", key);
    if (path[0] && lpv_dist_rank() == 0) { /* one writer per job */
        lpv_err e2;
        if (lpv_calib_save(out, path, &e2) != LPV_OK) {
            lpv_warn("%s", e2.msg);
            path[0] = 0;
        }
    }
    snprintf(R->r->cache_file, sizeof R->r->cache_file, "%s", path);
    return LPV_OK;
}

/* *v: a view of ds kept to n items spread over it (lpv_dataset_spread); 0 keeps them all. */
static lpv_status spread_view(lpv_dataset *v, const lpv_dataset *ds, int n, lpv_err *err) {
    LPV_TRY(lpv_dataset_view(v, ds, err));
    if (n > 0) lpv_dataset_spread(v, n);
    return LPV_OK;
}

/* ---- channel permutation (permute.h) ---- */

/* Importance of every weight of the pruned layers, in the units of the chosen criterion: the diagonal
   second-order term F·w² for the gradient criteria (taylor2/fisher; block correlations cannot be known
   before the blocks are), |w·g| for lpvit, |w|·‖x_j‖ for obs/wanda, |w| for l1. The gradients come from a
   first calibration pass (cached like the later ones) over a spread subset of the list: a rough importance
   is enough to order channels. */
static lpv_status element_scores(run *R, float **score, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    lpv_calib_stats cs;
    memset(&cs, 0, sizeof cs);
    lpv_model_stats ist;
    memset(&ist, 0, sizeof ist);
    int grad = lpv_prune_needs_stats(o), inputs = o->saliency == LPV_SAL_OBS || o->saliency == LPV_SAL_WANDA;
    lpv_dataset sub;
    LPV_TRY(spread_view(&sub, &R->ds, o->permute_images, err));
    lpv_status st = LPV_OK;
    if (grad) {
        st = get_stats(R, &sub, o->saliency == LPV_SAL_LPVIT, 1, 0, "statistics (channel sort)", &cs, err);
    } else if (inputs) {
        for (int i = 0; i < R->nl; i++) ist.want[i] = !excluded(R->refs[i].name, o->exclude);
        st = lpv_collect_input_stats(R->m, &sub, R->pp, 32, &R->r->skipped, &ist, err);
    }
    lpv_dataset_view_free(&sub);
    for (int i = 0; i < R->nl && st == LPV_OK; i++) {
        if (excluded(R->refs[i].name, o->exclude)) continue;
        const lpv_linear *L = R->refs[i].lin;
        score[i] = malloc(sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (!score[i]) {
            st = lpv_fail(err, LPV_E_OOM, "out of memory");
            break;
        }
        for (int r = 0; r < L->out; r++)
            for (int j = 0; j < L->in; j++) {
                int64_t e = (int64_t)r * L->in + j;
                float w = L->w[e];
                if (grad && o->saliency == LPV_SAL_LPVIT) score[i][e] = fabsf(w * cs.g[i][e]);
                else if (grad) score[i][e] = cs.f[i][e] * w * w;
                else if (inputs) score[i][e] = fabsf(w) * sqrtf(fmaxf(ist.st[i].H[(int64_t)j * L->in + j], 0));
                else score[i][e] = fabsf(w);
            }
    }
    if (grad) lpv_calib_free(&cs);
    if (inputs) lpv_model_stats_free(&ist);
    return st;
}

/* Sorts the model's channels by importance (function-preserving), and gives the permuted model its own
   identity (source hash + permutation digest) so the statistics cache keeps the two apart. */
static lpv_status permute_model(run *R, lpv_err *err) {
    float *score[LPV_MAX_LAYERS] = {0};
    lpv_status st = lpv_perm_init(&R->perm, &R->m->cfg, err);
    if (st == LPV_OK) st = element_scores(R, score, err);
    if (st == LPV_OK) st = lpv_perm_by_importance(R->m, (const float *const *)score, &R->perm, err);
    if (st == LPV_OK) st = lpv_model_permute(R->m, &R->perm, err);
    if (st == LPV_OK) {
        char d[65], key[160];
        lpv_perm_digest(&R->perm, d);
        snprintf(key, sizeof key, "%s+perm:%s", R->m->sha256, d);
        lpv_sha256_hex(key, strlen(key), R->m->sha256);
    }
    for (int i = 0; i < R->nl; i++) free(score[i]);
    return st;
}

/* ---- one step: saliency ---- */

/* obs / wanda: block scores from the layer's input Gram, and the layer's output energy for the curve. */
static lpv_status input_block_scores(run *R, int i, lpv_sal_inputs *in, double **bscore, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    const lpv_linear *L = R->refs[i].lin;
    *bscore = malloc(sizeof(double) * (size_t)lpv_nblocks(L->out, L->in, o->block_R, o->block_C));
    if (!*bscore) return lpv_fail(err, LPV_E_OOM, "out of memory");
    const float *H = R->ist.st[i].H;
    if (o->saliency == LPV_SAL_OBS) {
        lpv_recon_opts ro = lpv_recon_defaults();
        ro.damp = o->damp;
        LPV_TRY(lpv_score_obs(L->w, L->out, L->in, H, o->block_R, o->block_C, &ro, *bscore, NULL, R->refs[i].name, err));
    } else {
        lpv_score_wanda(L->w, L->out, L->in, H, o->block_R, o->block_C, *bscore);
    }
    in->block_scores = *bscore;
    return lpv_output_energy(L->w, L->out, L->in, H, &in->norm, err);
}

/* Whether a step's saliency reads the mean gradient g. The first-order term only means something for a loss
   with its own target (ce with labels, LPViT's mean-sq); for self-ce and kl the target is the dense model's
   output, where the gradient points toward overconfidence, not toward preserving the function. So the
   default taylor2 with self-ce reads only the block moments, and its statistics skip g. */
static int step_reads_mean(const lpv_prune_opts *o) {
    int first_order = o->loss == LPV_LOSS_CE || o->loss == LPV_LOSS_MEAN_SQ;
    return o->saliency != LPV_SAL_TAYLOR2 || first_order;
}

static lpv_status layer_saliency(run *R, int i, player *q, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    memcpy(q->sal.name, R->refs[i].name, sizeof q->sal.name);
    q->idx = i;
    q->sal.kind = R->refs[i].kind;
    q->sal.tokens = R->refs[i].tokens;
    const float *g = lpv_prune_needs_stats(o) && step_reads_mean(o) ? R->cs.g[i] : NULL;
    lpv_sal_inputs in = {R->refs[i].lin->w, g, o->saliency == LPV_SAL_FISHER ? R->cs.f[i] : NULL,
                         o->saliency == LPV_SAL_TAYLOR2 ? R->cs.bf[i] : NULL, NULL, 0};
    double *bscore = NULL;
    lpv_status st = LPV_OK;
    if (o->saliency == LPV_SAL_OBS || o->saliency == LPV_SAL_WANDA) st = input_block_scores(R, i, &in, &bscore, err);
    lpv_sal_opts so = {o->lpvit_as_released, o->lpvit_smooth, 1};
    if (st == LPV_OK)
        st = lpv_saliency_layer(o->saliency, &in, &so, R->refs[i].lin->out, R->refs[i].lin->in, o->block_R,
                                o->block_C, &q->sal, &R->work, err);
    free(bscore);
    if (st) return st;
    int min_keep = (int)ceil(o->min_density * q->sal.nb - 1e-9);
    if (min_keep < 1) min_keep = 1;
    q->kmax = q->sal.nb - min_keep;
    return LPV_OK;
}

static lpv_status step_saliency(run *R, lpv_err *err) {
    R->pl = calloc((size_t)R->nl, sizeof *R->pl);
    R->np = 0;
    if (!R->pl) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int i = 0; i < R->nl; i++) {
        if (excluded(R->refs[i].name, R->o->exclude)) continue;
        LPV_TRY(layer_saliency(R, i, &R->pl[R->np++], err));
    }
    if (R->np == 0) return lpv_fail_param(err, LPV_E_ARG, "exclude", "'%s' leaves no layer to prune", R->o->exclude);
    return LPV_OK;
}

/* ---- one step: costs ---- */

static lpv_status time_table_for(run *R, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    if (o->cost_table) {
        LPV_TRY(lpv_blame(err, lpv_time_table_load(&R->tt, o->cost_table, err), "cost_table"));
        if (R->tt.precision != o->precision)
            return lpv_fail_param(err, LPV_E_ARG, "cost_table",
                                  "'%s' holds %s times but the pruned model will run in %s: measure one with `lpvit "
                                  "bench --calibrate%s%s`",
                                  o->cost_table, lpv_precision_name(R->tt.precision), lpv_precision_name(o->precision),
                                  o->precision != LPV_PREC_FP32 ? " --precision " : "",
                                  o->precision != LPV_PREC_FP32 ? lpv_precision_name(o->precision) : "");
        return LPV_OK;
    }
    lpv_layer_shape shapes[LPV_MAX_LAYERS];
    for (int i = 0; i < R->np; i++) {
        const lpv_layer_ref *ref = &R->refs[R->pl[i].idx];
        shapes[i] = (lpv_layer_shape){ref->lin->out, ref->lin->in, ref->tokens};
    }
    static const double grid[] = {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    lpv_info("measuring %s BSR time per layer shape for the %s objective (a saved time table skips this)",
             lpv_precision_name(o->precision), lpv_objective_name(o->objective));
    return lpv_time_table_measure(&R->tt, shapes, R->np, o->block_R, o->block_C, grid, (int)(sizeof grid / sizeof *grid),
                                  1, 5, (unsigned long long)o->seed, o->precision, err);
}

/* Time and energy of each prunable layer after k pruned blocks, for every k. */
static lpv_status layer_costs(run *R, player *q, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    lpv_layer_sal *s = &q->sal;
    size_t n = sizeof(double) * (size_t)(s->nb + 1);
    q->cost = lpv_arena_alloc(&R->work, n);
    q->energy = lpv_arena_alloc(&R->work, n);
    q->time_ms = R->have_times ? lpv_arena_alloc(&R->work, n) : NULL;
    if (!q->cost || !q->energy || (R->have_times && !q->time_ms)) return lpv_fail(err, LPV_E_OOM, "out of memory");
    const lpv_time_curve *tc = NULL;
    if (R->have_times && !(tc = lpv_time_table_find(&R->tt, s->out, s->in, s->tokens, o->block_R, o->block_C)))
        return lpv_fail_param(err, LPV_E_ARG, "cost_table",
                              "the time table has no entry for layer '%s' (%dx%d, %d tokens, %dx%d blocks)", s->name,
                              s->out, s->in, s->tokens, o->block_R, o->block_C);
    double numel = (double)s->out * s->in;
    for (int k = 0; k <= s->nb; k++) {
        double d = 1.0 - (double)s->elems[k] / numel;
        q->energy[k] = lpv_layer_energy_pj(&o->energy, s->out, s->in, s->tokens, o->block_R, o->block_C, d);
        if (tc) q->time_ms[k] = lpv_time_curve_at(tc, d);
    }
    return LPV_OK;
}

static lpv_status step_costs(run *R, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    R->have_times = 0;
    if (o->objective == LPV_OBJ_SPEED || o->objective == LPV_OBJ_SPEED_POWER || o->cost_table) {
        LPV_TRY(time_table_for(R, err));
        R->have_times = 1;
    }
    double t_dense = 0, e_dense = 0, m_dense = 0;
    for (int i = 0; i < R->np; i++) {
        LPV_TRY(layer_costs(R, &R->pl[i], err));
        t_dense += R->pl[i].time_ms ? R->pl[i].time_ms[0] : 0;
        e_dense += R->pl[i].energy[0];
        m_dense += lpv_alloc_kept_macs(&R->pl[i].sal, 0);
    }
    /* objective cost, normalized by its dense total; a 1e-6 share of FLOPs breaks ties on flat time segments */
    for (int i = 0; i < R->np; i++) {
        player *q = &R->pl[i];
        for (int k = 0; k <= q->sal.nb; k++) {
            double f = lpv_alloc_kept_macs(&q->sal, k) / m_dense, c = f;
            if (o->objective == LPV_OBJ_SPEED) c = q->time_ms[k] / t_dense + 1e-6 * f;
            else if (o->objective == LPV_OBJ_POWER) c = q->energy[k] / e_dense + 1e-6 * f;
            else if (o->objective == LPV_OBJ_SPEED_POWER)
                c = q->time_ms[k] / t_dense + o->lambda_power * q->energy[k] / e_dense + 1e-6 * f;
            q->cost[k] = c;
        }
    }
    return LPV_OK;
}

/* ---- one step: allocation and refinement ---- */

/* The first M images of the list, preprocessed, in x (M, 3, S, S); *got may be below M when some are skipped. */
static lpv_status load_images(run *R, int M, float *x, int *got, lpv_err *err) {
    lpv_loader *L;
    lpv_loader_opts lo = {M, 1, 0, &R->r->skipped};
    LPV_TRY(lpv_loader_open(&L, &R->ds, R->pp, &lo, err));
    lpv_batch b;
    lpv_status st = lpv_loader_next(L, &b, err);
    if (st == LPV_OK) {
        memcpy(x, b.x, sizeof(float) * (size_t)b.n * 3 * (size_t)R->pp->img_size * (size_t)R->pp->img_size);
        *got = b.n;
        st = lpv_loader_verdict(L, "refinement", err);
    }
    lpv_loader_close(L);
    return st;
}

/* KL of pruning one layer alone, with the weight update the final model will get. */
static lpv_status measure_layer(run *R, const player *q, int k, const float *x, int M, const float *dl, float *lg,
                                lpv_workspace *ws, double *kl, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    lpv_linear *L = R->refs[q->idx].lin;
    const lpv_layer_sal *s = &q->sal;
    if (o->update == LPV_UPDATE_NONE)
        return lpv_layer_kl(R->m, L, o->block_R, o->block_C, s->order, k, x, M, dl, lg, ws, kl, err);
    size_t nw = (size_t)L->out * (size_t)L->in;
    float *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * (size_t)L->out);
    uint8_t *mask = mask_of(s, k);
    lpv_status st = (!w || !b || !mask) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    if (!st) {
        memcpy(w, L->w, sizeof(float) * nw);
        if (L->b) memcpy(b, L->b, sizeof(float) * (size_t)L->out);
        else memset(b, 0, sizeof(float) * (size_t)L->out);
        lpv_recon_opts ro = lpv_recon_defaults();
        ro.damp = o->damp;
        st = lpv_reconstruct_layer(w, b, L->out, L->in, o->block_R, o->block_C, mask, &R->ist.st[q->idx], o->update,
                                   &ro, NULL, s->name, err);
    }
    if (!st) {
        float *w0 = L->w, *b0 = L->b;
        L->w = w, L->b = b;
        st = lpv_forward_all(R->m, ws, x, M, lg, err);
        L->w = w0, L->b = b0;
        if (!st) *kl = lpv_mean_kl(dl, lg, M, R->m->cfg.classes);
    }
    free(w), free(b), free(mask);
    return st;
}

/* One round: scale each layer's curve by measured / predicted KL at its allocated point. */
static lpv_status refine_round(run *R, const float *x, int M, const float *dl, float *lg, lpv_workspace *ws,
                               lpv_progress *pr, lpv_err *err) {
    for (int i = 0; i < R->np; i++) {
        player *q = &R->pl[i];
        lpv_layer_sal *s = &q->sal;
        int kk = R->k[i] > 0 ? R->k[i] : (int)ceil(0.1 * s->nb);
        if (kk > q->kmax) kk = q->kmax;
        if (kk < 1) continue;
        double kl, pred = s->curve[kk] - s->curve[0];
        LPV_TRY(measure_layer(R, q, kk, x, M, dl, lg, ws, &kl, err));
        R->refine_kl[i] = kl;
        lpv_progress_update(pr, i + 1, NULL);
        if (!(pred > 0)) continue; /* a curve that predicts a gain cannot be scaled into a loss */
        double f = (kl > 1e-12 ? kl : 1e-12) / pred;
        R->refine_factor[i] = (R->refine_factor[i] > 0 ? R->refine_factor[i] : 1.0) * f;
        for (int j = 0; j <= s->nb; j++) s->curve[j] *= f;
    }
    return LPV_OK;
}

static lpv_status refine_curves(run *R, double target_macs, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    lpv_model *m = R->m;
    int M = o->refine_images < R->ds.n ? o->refine_images : R->ds.n, C = m->cfg.classes, got = 0;
    int64_t per = (int64_t)3 * R->pp->img_size * R->pp->img_size;
    float *x = malloc(sizeof(float) * (size_t)(per * M)), *dl = malloc(sizeof(float) * (size_t)M * C);
    float *lg = malloc(sizeof(float) * (size_t)M * C);
    lpv_workspace ws;
    lpv_status st = (!x || !dl || !lg) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    int ws_ok = 0;
    if (!st) st = load_images(R, M, x, &got, err);
    if (!st && (st = lpv_workspace_init(&ws, &m->cfg, got < 32 ? got : 32, err)) == LPV_OK) ws_ok = 1;
    if (!st) st = lpv_forward_all(m, &ws, x, got, dl, err);
    double t0 = lpv_now();
    for (int round = 0; round < o->refine && st == LPV_OK; round++) {
        lpv_progress pr;
        lpv_progress_begin(&pr, R->np, "refine round %d/%d (%d images)", round + 1, o->refine, got);
        st = refine_round(R, x, got, dl, lg, &ws, &pr, err);
        if (st == LPV_OK) st = lpv_alloc_greedy(R->al, R->np, target_macs, R->k, NULL, err);
        if (st == LPV_OK) lpv_progress_end(&pr);
        R->r->refine_rounds = round + 1;
    }
    R->r->seconds.refine += lpv_now() - t0;
    if (ws_ok) lpv_workspace_free(&ws);
    free(x), free(dl), free(lg);
    return st;
}

static lpv_status step_allocate(run *R, double target, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    R->al = calloc((size_t)R->np + 1, sizeof *R->al);
    R->k = calloc((size_t)R->np + 1, sizeof *R->k);
    if (!R->al || !R->k) return lpv_fail(err, LPV_E_OOM, "out of memory");
    memset(&R->r->alloc, 0, sizeof R->r->alloc);
    double dense_macs = 0;
    for (int i = 0; i < R->np; i++) {
        R->al[i] = (lpv_alloc_layer){&R->pl[i].sal, R->pl[i].cost, R->pl[i].kmax};
        dense_macs += lpv_alloc_kept_macs(&R->pl[i].sal, 0);
    }
    R->r->dense_macs = dense_macs;
    if (o->allocator == LPV_ALLOC_LPVIT) {
        lpv_lpvit_opts lo = {o->lpvit_h, o->min_density, 0.005, o->lpvit_power};
        LPV_TRY(lpv_alloc_lpvit(R->al, R->np, target, &lo, R->k, &R->r->alloc, err));
    } else if (o->allocator == LPV_ALLOC_UNIFORM) {
        LPV_TRY(lpv_alloc_uniform(R->al, R->np, target * dense_macs, R->k, &R->r->alloc, err));
    } else {
        LPV_TRY(lpv_alloc_greedy(R->al, R->np, target * dense_macs, R->k, &R->r->alloc, err));
    }
    /* the result keeps the last step's factors */
    memset(R->refine_factor, 0, sizeof R->refine_factor), memset(R->refine_kl, 0, sizeof R->refine_kl);
    if (o->refine > 0) LPV_TRY(refine_curves(R, target * dense_macs, err));
    return LPV_OK;
}

/* ---- one step: masks and the weight update ---- */

static lpv_status step_masks(run *R, int step, lpv_err *err) {
    R->r->kept_macs = 0;
    /* under mpirun rank 0 decides: the ranks' allocations agree unless their CPUs round differently (or they
       timed their own kernels for the speed objective), and they must prune the same blocks */
    LPV_TRY(lpv_dist_bcast(R->k, sizeof *R->k * (size_t)R->np, 0, err));
    for (int i = 0; i < R->np; i++) {
        player *q = &R->pl[i];
        q->k = R->k[i];
        R->r->kept_macs += lpv_alloc_kept_macs(&q->sal, q->k);
        if (!(R->masks[q->idx] = mask_of(&q->sal, q->k))) return lpv_fail(err, LPV_E_OOM, "out of memory");
        LPV_TRY(lpv_dist_bcast(R->masks[q->idx], (size_t)q->sal.nb, 0, err));
        /* a block an earlier step pruned scores 0 and is pruned again; count any that is not */
        const uint8_t *prev = R->prev[q->idx], *mask = R->masks[q->idx];
        for (int j = 0; prev && j < q->sal.nb; j++) R->r->step_revived[step] += !prev[j] && mask[j];
    }
    return LPV_OK;
}

/* What the refit may keep of the dense model's block inputs (reconstruct.h): a quarter of the physical memory
   (DeiT-B on 2000 images keeps the next stream, proj's and fc1's inputs in 3.6 GB; fc2's would add 4.8). */
static int64_t capture_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size / 4 : 0;
}

/* ---- the refit's target, packed for its passes ---- */

/* mask (nbr, nbc): 1 where block (br, bc) of W (out, in) holds a nonzero. */
static void nonzero_blocks(const float *W, int out, int in, int R, int C, uint8_t *mask) {
    int nbc = (in + C - 1) / C;
    memset(mask, 0, (size_t)((out + R - 1) / R) * (size_t)nbc);
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++)
            if (W[(int64_t)r * in + c] != 0) mask[(r / R) * nbc + c / C] = 1;
}

/* The refit runs its target (the input model, or the step before's pruned one) once per block over every
   image: its block linears run lpvit's own kernels, BSR over the blocks that hold a nonzero (the step before's
   pruned blocks are exact zeros) or the blocked dense pack when all do, instead of OpenBLAS on every zero.
   Same function, another summation order. The packs live in R->tpacks until unpack_target. Only where lpvit's
   kernels beat OpenBLAS (lpv_refit_packs_pay). */
static lpv_status pack_target(run *R, lpv_err *err) {
    if (!R->dense || !lpv_refit_packs_pay()) return LPV_OK;
    lpv_layer_ref dr[LPV_MAX_LAYERS];
    int n = lpv_model_layers(R->dense, dr, LPV_MAX_LAYERS), R_ = R->o->block_R, C = R->o->block_C;
    lpv_arena_init(&R->tpacks, 1 << 20);
    R->tpacked = 1;
    for (int i = 0; i < n; i++) {
        lpv_linear *L = dr[i].lin;
        if (!lpv_layer_kind_is_block(dr[i].kind)) continue;
        LPV_ASSERT(L->w && !L->bsr && !L->blocked); /* the target is load_targets' dense clone, unpacked */
        int64_t nb = lpv_nblocks(L->out, L->in, R_, C), kept = 0;
        uint8_t *mask = lpv_arena_alloc(&R->tpacks, (size_t)nb);
        lpv_bsr *b = lpv_arena_alloc(&R->tpacks, sizeof *b);
        if (!mask || !b) return lpv_fail(err, LPV_E_OOM, "out of memory packing the refit's target");
        nonzero_blocks(L->w, L->out, L->in, R_, C, mask);
        for (int64_t q = 0; q < nb; q++) kept += mask[q];
        LPV_TRY(lpv_bsr_from_dense(b, L->w, L->out, L->in, R_, C, kept < nb ? mask : NULL, &R->tpacks, dr[i].name, err));
        if (kept < nb) L->bsr = b;
        else L->blocked = b;
    }
    return LPV_OK;
}

static void unpack_target(run *R) {
    if (!R->tpacked) return;
    lpv_layer_ref dr[LPV_MAX_LAYERS];
    int n = lpv_model_layers(R->dense, dr, LPV_MAX_LAYERS);
    for (int i = 0; i < n; i++)
        if (lpv_layer_kind_is_block(dr[i].kind)) dr[i].lin->bsr = NULL, dr[i].lin->blocked = NULL;
    lpv_arena_free(&R->tpacks);
    R->tpacked = 0;
}

static lpv_status step_update(run *R, int step, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    int last = step == R->r->n_steps - 1;
    if (o->update == LPV_UPDATE_NONE) {
        if (R->r->n_steps > 1) /* no update: the next step must see this step's zeros */
            for (int i = 0; i < R->np; i++) {
                lpv_linear *L = R->refs[R->pl[i].idx].lin;
                lpv_mask_apply(L->w, L->out, L->in, o->block_R, o->block_C, R->masks[R->pl[i].idx]);
            }
        return LPV_OK;
    }
    /* with steps and no tuning, the heads' refit reads the input model's targets recorded by step 1 */
    int record = o->refit_heads && o->sequential && R->r->n_steps > 1 && o->tune_epochs == 0;
    lpv_reconstruct_opts ro = {.update = (lpv_update_kind)o->update, .sequential = o->sequential,
                               .recon = lpv_recon_defaults(), .tune = lpv_tune_defaults(), .final_target = R->orig,
                               .batch = 16, .skips = &R->r->skipped,
                               .refit_heads = o->refit_heads && o->sequential && last, .head_damp = o->head_damp,
                               .capture_bytes = capture_budget()};
    ro.recon.damp = o->damp;
    char label[48];
    snprintf(label, sizeof label, "refit, step %d/%d", step + 1, R->r->n_steps);
    ro.label = R->r->n_steps > 1 ? label : NULL;
    ro.record_heads = record && step == 0 ? &R->heads_tgt : NULL;
    ro.head_targets = record && last ? &R->heads_tgt : NULL;
    /* only the final step's model is kept: earlier steps' refits just prepare the next statistics (tuning
       every step measured no better: 23.2 vs 22.8 % at 0.5 on 500 images at 1.8x the time towards the step
       before, 26.6 vs 27.0 % at 2.7x towards the input model) */
    ro.tune.epochs = last ? o->tune_epochs : 0;
    ro.tune.lr = (float)o->tune_lr, ro.tune.batch = o->tune_batch, ro.tune.seed = o->seed;
    lpv_reconstruct_info si;
    lpv_reconstruct_info *acc = &R->r->recon;
    ro.no_pack = o->refit_dense;
    lpv_status st = o->sequential && !o->refit_dense ? pack_target(R, err) : LPV_OK;
    if (st == LPV_OK)
        st = lpv_reconstruct(R->m, R->dense, R->masks, o->block_R, o->block_C, &R->ist, &R->rds, R->pp, &ro, &si, err);
    unpack_target(R); /* the next step copies weights into the target, and its packs would be stale */
    if (st) return st;
    if (si.max_damp < acc->max_damp) si.max_damp = acc->max_damp;
    si.retried += acc->retried;
    *acc = si;
    return LPV_OK;
}

/* ---- step checkpoints ---- */

/* Every option a step's outcome depends on (all but the target and the step count, which the key's list of
   step targets carries), the inputs' hashes and this build: two runs with equal text make equal steps. */
static lpv_status step_settings(run *R, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    char table[65] = "none", images[65], recon[65], stats[65];
    if (o->cost_table) LPV_TRY(lpv_sha256_file(o->cost_table, table, err));
    lpv_dataset_files_hash(&R->ds, images);
    lpv_dataset_files_hash(&R->rds, recon);
    lpv_dataset_files_hash(&R->sds, stats);
    const lpv_preproc *pp = R->pp;
    snprintf(R->settings, sizeof R->settings,
             "block %dx%d sal %s alloc %s obj %s lambda %.17g table %s prec %s energy %.17g,%.17g,%.17g refine %d,%d "
             "lpvit %d,%d,%d,%.17g permute %d,%d update %d seq %d damp %.17g heads %d,%.17g tune %d,%.17g,%d "
             "exclude %s min %.17g loss %d calib %d,%d seed %llu recon %s %d stats %s %d pre %d %.6g %s %.6g,%.6g,%.6g "
             "%.6g,%.6g,%.6g refit_dense %d",
             o->block_R, o->block_C, lpv_saliency_name(o->saliency), lpv_allocator_name(o->allocator),
             lpv_objective_name(o->objective), o->lambda_power, table, lpv_precision_name(o->precision),
             o->energy.mac_pj, o->energy.dram_byte_pj, o->energy.cache_byte_pj, o->refine, o->refine_images,
             o->lpvit_as_released, o->lpvit_h, o->lpvit_power, o->lpvit_smooth, o->permute, o->permute_images,
             o->update, o->sequential, o->damp, o->refit_heads, o->head_damp, o->tune_epochs, o->tune_lr,
             o->tune_batch, o->exclude ? o->exclude : "", o->min_density, o->loss, o->calib_size, o->calib_batch,
             (unsigned long long)o->seed, recon, R->r->recon_images, stats, R->r->stats_images, pp->img_size, pp->crop_pct,
             lpv_interp_name(pp->interp), (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2],
             (double)pp->std[0], (double)pp->std[1], (double)pp->std[2], o->refit_dense);
    return LPV_OK;
}

/* The key of step k's checkpoint (JSON, like the statistics' keys: lpvit cache list reads its fields), and the
   file it names. The chain of targets up to k identifies the path the model took. */
static void step_key(const run *R, int k, char *key, size_t cap, char *path, size_t pcap) {
    char targets[LPV_MAX_STEPS * 24] = "", images[65], build[128];
    for (int s = 0; s <= k; s++)
        snprintf(targets + strlen(targets), sizeof targets - strlen(targets), "%s%.17g", s ? "," : "", R->r->step_target[s]);
    lpv_dataset_files_hash(&R->ds, images);
    lpv_cache_build_id(build, sizeof build);
    snprintf(key, cap,
             "{\"format\": \"%s\", \"lpvit\": \"%s\", \"model_sha256\": \"%s\", \"images_sha256\": \"%s\", "
             "\"loss\": \"%s\", \"steps\": \"%s\", \"settings\": \"%s\"}",
             LPV_STEP_FORMAT, build, R->id0, images,
             lpv_prune_needs_stats(R->o) ? lpv_loss_name((lpv_loss_kind)R->o->loss) : "none", targets, R->settings);
    char h[65];
    lpv_sha256_hex(key, strlen(key), h);
    snprintf(path, pcap, "%s/step-%s.lpvc", R->o->cache_dir, h);
}

/* Checkpoints are kept when there is a cache and a step's result is a function of the key: not when the speed
   objectives time the kernels during the run (the times, and so the allocation, vary between runs). */
static int checkpoints_wanted(const lpv_prune_opts *o) {
    int timed = (o->objective == LPV_OBJ_SPEED || o->objective == LPV_OBJ_SPEED_POWER) && !o->cost_table;
    /* under mpirun each rank holds the heads' records of its own images only: a checkpoint would hold rank 0's */
    return o->cache_dir && o->steps > 1 && !timed && lpv_dist_size() == 1;
}

static void step_save(run *R, int step) {
    if (!R->checkpoints || step == R->r->n_steps - 1) return;
    char key[4096], path[2048];
    step_key(R, step, key, sizeof key, path, sizeof path);
    lpv__step_state s = {R->m, R->refs, R->nl, R->o->block_R, R->o->block_C, R->masks, &R->heads_tgt, "", step,
                         R->r->recon_images, {0}, R->r->recon.max_damp, R->r->recon.retried};
    snprintf(s.sha_at_start, sizeof s.sha_at_start, "%s", R->m->sha256);
    memcpy(s.revived, R->r->step_revived, sizeof s.revived);
    lpv_err e;
    if (!lpv_mkdir_p(R->o->cache_dir) || lpv__step_save(path, key, &s, &e) != LPV_OK)
        lpv_warn("step %d/%d not checkpointed: %s", step + 1, R->r->n_steps,
                 lpv_is_dir(R->o->cache_dir) ? e.msg : "cannot create the cache folder");
    else lpv_info("step %d/%d checkpointed in '%s'", step + 1, R->r->n_steps, path);
}

/* The model as the latest checkpointed step left it; *start is the first step still to run. */
static lpv_status step_resume(run *R, int *start, lpv_err *err) {
    *start = 0;
    for (int k = R->r->n_steps - 2; k >= 0 && R->checkpoints; k--) {
        char key[4096], path[2048];
        step_key(R, k, key, sizeof key, path, sizeof path);
        if (!lpv_file_exists(path)) continue;
        lpv__step_state s = {R->m, R->refs, R->nl, R->o->block_R, R->o->block_C, R->masks, &R->heads_tgt, "", 0, 0,
                             {0}, 0, 0};
        lpv_err e;
        lpv_status st = lpv__step_load(path, key, &s, &e);
        if (st == LPV_E_DATA) return lpv_wrap(err, st, "checkpoint '%s' (remove it: lpvit cache clean)", path);
        if (st) {
            lpv_warn("ignoring checkpoint: %s", e.msg);
            continue;
        }
        snprintf(R->m->sha256, sizeof R->m->sha256, "%s", s.sha_at_start);
        memcpy(R->r->step_revived, s.revived, sizeof s.revived);
        R->r->recon.max_damp = s.max_damp, R->r->recon.retried = s.retried;
        for (int i = 0; i <= k; i++) R->r->step_from_cache[i] = 1;
        R->r->steps_resumed = k + 1;
        if (R->dense) { /* the next step refits towards this step's model, as after a step run here */
            lpv_layer_ref dr[LPV_MAX_LAYERS];
            lpv_model_layers(R->dense, dr, LPV_MAX_LAYERS);
            for (int i = 0; i < R->nl; i++)
                if (R->masks[i]) lpv_linear_copy_weights(dr[i].lin, R->refs[i].lin);
        }
        if (k == 0) lpv_info("step 1 of %d from its checkpoint '%s'", R->r->n_steps, path);
        else lpv_info("steps 1-%d of %d from the checkpoint '%s'", k + 1, R->r->n_steps, path);
        *start = k + 1;
        return LPV_OK;
    }
    return LPV_OK;
}

/* ---- the schedule ---- */

/* After a step the model in memory is neither the source file nor the permuted one: it gets the identity of
   its own weights (chained to the previous one), so the statistics cache stays exact. */
static void next_step_identity(run *R, int step) {
    lpv_sha256 h;
    lpv_sha256_init(&h);
    char tag[96];
    snprintf(tag, sizeof tag, "%s+step:%d:", R->m->sha256, step);
    lpv_sha256_update(&h, tag, strlen(tag));
    for (int i = 0; i < R->nl; i++) {
        const lpv_linear *L = R->refs[i].lin;
        lpv_sha256_update(&h, L->w, sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (L->b) lpv_sha256_update(&h, L->b, sizeof(float) * (size_t)L->out);
    }
    lpv_sha256_final_hex(&h, R->m->sha256);
}

/* Drops one step's state (the masks move to prev: the next step counts blocks it revives). */
static void step_reset(run *R) {
    lpv_calib_free(&R->cs), lpv_model_stats_free(&R->ist), lpv_time_table_free(&R->tt);
    memset(&R->cs, 0, sizeof R->cs), memset(&R->ist, 0, sizeof R->ist), memset(&R->tt, 0, sizeof R->tt);
    lpv_arena_free(&R->work), lpv_arena_init(&R->work, 1 << 20);
    free(R->pl), free(R->al), free(R->k);
    R->pl = NULL, R->al = NULL, R->k = NULL, R->np = 0;
    for (int i = 0; i < R->nl; i++) free(R->prev[i]), R->prev[i] = R->masks[i], R->masks[i] = NULL;
}

/* Statistics of the model as it is now: gradients for the criterion, and input statistics where the refit
   needs them (obs / wanda saliency, non-sequential updates, refinement; the sequential refit gathers its own,
   so it needs them only for the patch embedding). */
static lpv_status step_statistics(run *R, int step, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    if (lpv_prune_needs_stats(o)) {
        char label[64];
        snprintf(label, sizeof label, "statistics (step %d/%d)", step + 1, R->r->n_steps);
        LPV_TRY(get_stats(R, &R->sds, step_reads_mean(o), o->saliency == LPV_SAL_FISHER, o->saliency == LPV_SAL_TAYLOR2,
                          R->r->n_steps > 1 ? label : "statistics", &R->cs, err));
        R->r->step_from_cache[step] = R->cs.from_cache;
        R->r->samples_used = R->cs.samples, R->r->mean_loss = R->cs.mean_loss; /* the last step's, as reported */
    }
    if (!lpv_prune_needs_inputs(o)) return LPV_OK;
    int all = !o->sequential || o->saliency == LPV_SAL_OBS || o->saliency == LPV_SAL_WANDA || o->refine > 0, any = 0;
    for (int i = 0; i < R->nl; i++) any |= R->ist.want[i] = !excluded(R->refs[i].name, o->exclude) && (all || i == 0);
    return any ? lpv_collect_input_stats(R->m, &R->rds, R->pp, 32, &R->r->skipped, &R->ist, err) : LPV_OK;
}

static lpv_status run_step(run *R, int step, lpv_err *err) {
    lpv_prune_result *r = R->r;
    double target = r->step_target[step], t = lpv_now();
    if (step > 0) {
        next_step_identity(R, step);
        step_reset(R);
    }
    /* every step announced, the first too: the user sees how many there are before the long statistics pass */
    lpv_info("step %d/%d: target FLOPs %.4f", step + 1, r->n_steps, target);
    LPV_TRY(step_statistics(R, step, err));
    r->seconds.stats += lpv_now() - t, t = lpv_now();
    LPV_TRY(step_saliency(R, err));
    r->seconds.saliency += lpv_now() - t, t = lpv_now();
    LPV_TRY(step_costs(R, err));
    r->seconds.cost += lpv_now() - t, t = lpv_now();
    double refine0 = r->seconds.refine;
    LPV_TRY(step_allocate(R, target, err));
    r->seconds.alloc += lpv_now() - t - (r->seconds.refine - refine0), t = lpv_now();
    LPV_TRY(step_masks(R, step, err));
    LPV_TRY(step_update(R, step, err));
    r->seconds.recon += lpv_now() - t;
    /* the next step refits towards this step's model, not the dense one: each step then repairs only its own
       cut (measured on ViT-Tiny at 0.5, 4 steps: 17.4 % vs 13.0 % top-1 on 500 images) */
    if (R->dense && step < r->n_steps - 1) {
        lpv_layer_ref dr[LPV_MAX_LAYERS];
        lpv_model_layers(R->dense, dr, LPV_MAX_LAYERS);
        for (int i = 0; i < R->np; i++) lpv_linear_copy_weights(dr[R->pl[i].idx].lin, R->refs[R->pl[i].idx].lin);
    }
    step_save(R, step);
    return LPV_OK;
}

/* ---- begin and finish ---- */

/* The model dense and hashed, its layers, and the calibration list chosen and hashed. */
static lpv_status begin(run *R, const lpv_calib_set *calib, lpv_err *err) {
    lpv_model *m = R->m;
    lpv_prune_result *r = R->r;
    double t = lpv_now();
    if (lpv_model_linear_density(m) < 1.0) {
        lpv_info("'%s' is already pruned: pruning its dense form (zeros kept)", m->path);
        LPV_TRY(lpv_model_densify(m, err));
    }
    R->nl = lpv_model_layers(m, R->refs, LPV_MAX_LAYERS);
    LPV_TRY(check_exclude_list(R->o->exclude, R->refs, R->nl, err));
    if (!lpv_model_hash(m, err)) return LPV_E_IO;
    snprintf(r->source_sha256, sizeof r->source_sha256, "%s", m->sha256);
    r->seconds.load = lpv_now() - t, t = lpv_now();
    if (calib->ds) {
        LPV_TRY(lpv_dataset_view(&R->ds, calib->ds, err));
        if (R->o->calib_size < R->ds.n) LPV_TRY(lpv_dataset_sample(&R->ds, R->o->calib_size, R->o->seed, err));
        lpv_dataset_hash(&R->ds, r->calib_list_sha256);
        snprintf(r->calib_dir, sizeof r->calib_dir, "%s", calib->ds->root);
        r->calib_images = R->ds.n;
        lpv_info("calibration: %d images from '%s' (seed %llu, list %.12s)", R->ds.n, calib->ds->root,
                 (unsigned long long)R->o->seed, r->calib_list_sha256);
    } else if (lpv_prune_needs_images(R->o)) {
        return lpv_fail(err, LPV_E_ARG, "these options need calibration images, and none were given");
    }
    /* the refit's images and the gradient statistics' (issue 21: the saliency may converge on fewer images than
     * the refit's least squares needs): each a spread subset when its option asks for fewer */
    LPV_TRY(spread_view(&R->rds, &R->ds, R->o->recon_images, err));
    r->recon_images = R->rds.n;
    LPV_TRY(spread_view(&R->sds, &R->ds, R->o->stats_images, err));
    r->stats_images = R->sds.n;
    r->seconds.list = lpv_now() - t;
    return LPV_OK;
}

/* The steps' targets: evenly spaced FLOPs cuts ending at the target. */
static void schedule(lpv_prune_result *r) {
    const lpv_prune_opts *o = &r->opts;
    r->n_steps = o->steps;
    for (int s = 0; s < r->n_steps; s++)
        r->step_target[s] = s == r->n_steps - 1 ? o->target_flops : 1.0 - (1.0 - o->target_flops) * (s + 1) / r->n_steps;
}

/* The layer table of the result; the masks move into it. */
static lpv_status finish_layers(run *R, lpv_err *err) {
    lpv_prune_result *r = R->r;
    const lpv_prune_opts *o = R->o;
    r->layers = calloc((size_t)R->np + 1, sizeof *r->layers);
    if (!r->layers) return lpv_fail(err, LPV_E_OOM, "out of memory");
    r->n_layers = R->np;
    for (int i = 0; i < R->np; i++) {
        const player *q = &R->pl[i];
        const lpv_layer_sal *s = &q->sal;
        lpv_pruned_layer *e = &r->layers[i];
        int k = q->k;
        snprintf(e->name, sizeof e->name, "%s", s->name);
        e->index = q->idx, e->out = s->out, e->in = s->in, e->tokens = s->tokens;
        e->blocks_total = s->nb, e->blocks_kept = s->nb - k;
        e->density = 1.0 - (double)s->elems[k] / ((double)s->out * s->in);
        e->gmacs_dense = lpv_alloc_kept_macs(s, 0) / 1e9, e->gmacs_kept = lpv_alloc_kept_macs(s, k) / 1e9;
        e->saliency_lost = s->curve[k] - s->curve[0];
        e->energy_pj_dense = q->energy[0], e->energy_pj_kept = q->energy[k];
        e->time_ms_dense = q->time_ms ? q->time_ms[0] : -1, e->time_ms_kept = q->time_ms ? q->time_ms[k] : -1;
        e->curve_scale = R->refine_factor[i] > 0 ? R->refine_factor[i] : 1.0, e->kl_last_probe = R->refine_kl[i];
        e->err_masked = r->recon.err_masked[q->idx], e->err_updated = r->recon.err_updated[q->idx];
        e->mask = R->masks[q->idx], R->masks[q->idx] = NULL;
        LPV_TRY(lpv_model_sparsify(R->m, R->refs[q->idx].lin, o->block_R, o->block_C, e->mask, s->name, err));
    }
    r->achieved_flops = r->kept_macs / r->dense_macs;
    lpv_macs mm = lpv_model_macs(&R->m->cfg);
    r->model_macs_dense = mm.linear_macs + mm.attention_macs;
    r->model_macs_kept = r->model_macs_dense - (r->dense_macs - r->kept_macs);
    r->attention_macs = mm.attention_macs;
    r->linear_density = lpv_model_linear_density(R->m);
    if (fabs(r->achieved_flops - o->target_flops) > 0.005)
        lpv_warn("achieved FLOPs ratio %.4f is %.4f from the target", r->achieved_flops,
                 r->achieved_flops - o->target_flops);
    return LPV_OK;
}

static void run_free(run *R) {
    unpack_target(R);
    lpv_calib_free(&R->cs), lpv_model_stats_free(&R->ist), lpv_time_table_free(&R->tt);
    lpv_arena_free(&R->work);
    free(R->pl), free(R->al), free(R->k);
    for (int i = 0; i < LPV_MAX_LAYERS; i++) free(R->masks[i]), free(R->prev[i]);
    lpv_model_free(R->dense), lpv_model_free(R->orig);
    lpv_head_targets_free(&R->heads_tgt);
    lpv_perm_free(&R->perm);
    lpv_dataset_view_free(&R->rds), lpv_dataset_view_free(&R->sds), lpv_dataset_view_free(&R->ds);
}

/* The refit's target (and the tuning's, with steps): copies of the model as it is before the first step,
   dense and with its channels sorted. */
static lpv_status load_targets(run *R, lpv_err *err) {
    const lpv_prune_opts *o = R->o;
    if (o->update == LPV_UPDATE_NONE || !o->sequential) return LPV_OK;
    LPV_TRY(lpv_model_clone(&R->dense, R->m, err));
    if (o->tune_epochs > 0 && R->r->n_steps > 1) LPV_TRY(lpv_model_clone(&R->orig, R->m, err));
    return LPV_OK;
}

/* A run that will time BF16 kernels needs them on this ISA; said before the statistics, not after them. A given
   table, or an objective without times, needs no BF16 here: pruning for a bf16 machine elsewhere is fine. */
static lpv_status precision_runs_here(const lpv_prune_opts *o, lpv_err *err) {
    int times = (o->objective == LPV_OBJ_SPEED || o->objective == LPV_OBJ_SPEED_POWER) && !o->cost_table;
    lpv_isa isa = lpv_isa_get();
    if (times && o->precision == LPV_PREC_BF16 && isa != LPV_ISA_REF && isa < LPV_ISA_AVX512BF16)
        return lpv_fail_param(err, LPV_E_UNSUPPORTED, "precision",
                              "timing bf16 kernels for the %s objective needs isa avx512bf16, and this run has '%s' "
                              "(cpu best: '%s'); a bf16 cost table measured where bf16 runs needs no timing",
                              lpv_objective_name(o->objective), lpv_isa_name(isa), lpv_isa_name(lpv_isa_best()));
    return LPV_OK;
}

/* Under mpirun each rank recorded the images it could not read in its own shares: every rank gets the union,
   in rank order, as one process would list them (the paths point into the calibration list all ranks hold). */
static lpv_status merge_skips(run *R, lpv_err *err) {
    lpv_skips *s = &R->r->skipped;
    if (lpv_dist_size() == 1) return LPV_OK;
    size_t len = 1;
    for (int i = 0; i < s->n; i++) len += strlen(s->paths[i]) + 1;
    char *mine = malloc(len), *all = NULL, *p = mine;
    if (!mine) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int i = 0; i < s->n; i++) p += sprintf(p, "%s\n", s->paths[i]);
    *p = 0;
    lpv_status st = lpv_dist_gather_text(mine, &all, err);
    free(mine);
    if (st) return st;
    s->n = 0;
    for (char *line = all, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = 0;
        for (int k = 0; k < R->ds.n; k++) /* this rank's copy of the path */
            if (strcmp(R->ds.items[k].path, line) == 0) {
                lpv_skips_add(s, R->ds.items[k].path, NULL);
                break;
            }
    }
    free(all);
    return LPV_OK;
}

lpv_status lpv_prune(lpv_model *m, const lpv_calib_set *calib, const lpv_prune_opts *o, lpv_prune_result *r,
                     lpv_err *err) {
    memset(r, 0, sizeof *r);
    LPV_TRY(lpv_prune_resolve(o, &r->opts, err));
    LPV_TRY(precision_runs_here(&r->opts, err));
    run R;
    memset(&R, 0, sizeof R);
    R.m = m, R.pp = calib->pp, R.o = &r->opts, R.r = r;
    lpv_arena_init(&R.work, 1 << 20);
    schedule(r);
    double t0 = lpv_now(), t;
    lpv_status st = begin(&R, calib, err);
    t = lpv_now();
    if (st == LPV_OK && R.o->permute) st = permute_model(&R, err);
    r->seconds.permute = lpv_now() - t;
    if (st == LPV_OK) st = load_targets(&R, err);
    int start = 0;
    R.checkpoints = checkpoints_wanted(R.o);
    if (st == LPV_OK && R.checkpoints) {
        snprintf(R.id0, sizeof R.id0, "%s", m->sha256);
        st = step_settings(&R, err);
    }
    if (st == LPV_OK) st = step_resume(&R, &start, err);
    for (int step = start; step < r->n_steps && st == LPV_OK; step++) st = run_step(&R, step, err);
    if (st == LPV_OK) st = finish_layers(&R, err);
    if (st == LPV_OK) st = merge_skips(&R, err);
    r->stats_from_cache = r->step_from_cache[0];
    run_free(&R);
    r->seconds.total = lpv_now() - t0; /* begin() counts its load part inside it */
    return st;
}

void lpv_prune_result_free(lpv_prune_result *r) {
    for (int i = 0; i < r->n_layers; i++) free(r->layers[i].mask);
    free(r->layers);
    lpv_skips_free(&r->skipped);
    memset(r, 0, sizeof *r);
}
