/*
 * cmd_prune.c — `lpvit prune`: LPViT-style post-training block pruning.
 *
 *   calibration set ─► gradients / Fisher (cached) ─► per-block saliency and
 *   per-layer curves ─► cost model (FLOPs, measured time, energy) ─► allocator
 *   ─► block masks ─► BSR safetensors + JSON report
 *
 * The FLOPs target counts the prunable linear layers only: tokens x kept
 * weights per image, patch embedding over 196 patches, heads over 1 token.
 * Attention matmuls, LayerNorm and GELU are not prunable; the report gives
 * whole-model MACs with and without them.
 */
#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/alloc.h"
#include "lpvit/bsr.h"
#include "lpvit/calib.h"
#include "lpvit/cost.h"
#include "lpvit/cpu.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/loader.h"
#include "lpvit/permute.h"
#include "lpvit/reconstruct.h"
#include "lpvit/refine.h"
#include "lpvit/report.h"
#include "lpvit/saliency.h"

typedef struct {
    cli_model_args ma;
    const char *calib_dir, *synsets, *block, *saliency, *allocator, *objective, *exclude, *loss, *out, *report;
    const char *cost_table, *cache_dir, *isa;
    double target, lambda_power, min_density, e_mac, e_dram, e_cache, lpvit_smooth;
    int calib_size, calib_batch, seed, threads, no_cache, lpvit_as_released, lpvit_h, lpvit_power;
    int refine, refine_images, recon_images, permute_images, sequential, no_sequential, steps;
    const char *update, *permute;
    double damp, tune_lr, head_damp;
    int tune_epochs, tune_batch, no_refit_heads;
} prune_opts;

enum { ALLOC_GREEDY, ALLOC_LPVIT, ALLOC_UNIFORM };
static const char *ALLOC_NAMES[] = {"greedy", "lpvit", "uniform"};

#define LPV_MAX_STEPS 16 /* --steps */

typedef struct {
    lpv_saliency_kind sal;
    int allocator;
    lpv_objective obj;
    lpv_loss_kind loss;
    int need_stats, need_fisher, need_blocks, need_inputs;
    lpv_update_kind update;
    int permute;    /* sort channels by importance before choosing blocks (permute.h) */
    int sequential; /* refit on the pruned model's own inputs (reconstruct.h) */
    int R, C;
} prune_plan;

typedef struct {
    double load, list, permute, stats, saliency, cost, alloc, write;
} phase_times;

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

static lpv_status check_exclude_list(const char *list, lpv_layer_ref *refs, int n, lpv_err *err) {
    if (!list || strcmp(list, "none") == 0) return LPV_OK;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int hit = 0;
        for (int i = 0; i < n && !hit; i++) hit = excluded(refs[i].name, tok);
        if (!hit && strcmp(tok, "head") != 0)
            return lpv_fail(err, LPV_E_ARG, "--exclude: '%s' matches no layer (e.g. patch_embed, head, blocks.0.*, blocks.*.mlp.fc2)", tok);
    }
    return LPV_OK;
}

/* ---- options → plan ---- */

static lpv_status make_plan(const prune_opts *o, prune_plan *p, lpv_err *err) {
    memset(p, 0, sizeof *p);
    if (!(o->target > 0 && o->target <= 1))
        return lpv_fail(err, LPV_E_ARG, "--target-flops: expected a ratio in (0, 1], got %g", o->target);
    if (!(o->min_density >= 0 && o->min_density < 1))
        return lpv_fail(err, LPV_E_ARG, "--min-density: expected [0, 1), got %g", o->min_density);
    LPV_TRY(cli_parse_block(o->block, &p->R, &p->C, err));
    LPV_TRY(lpv_saliency_parse(o->saliency, &p->sal, err));
    const char *alloc = o->allocator ? o->allocator
                                     : p->sal == LPV_SAL_LPVIT ? "lpvit" : p->sal == LPV_SAL_L1 ? "uniform" : "greedy";
    if (strcmp(alloc, "greedy") == 0) p->allocator = ALLOC_GREEDY;
    else if (strcmp(alloc, "lpvit") == 0) p->allocator = ALLOC_LPVIT;
    else if (strcmp(alloc, "uniform") == 0) p->allocator = ALLOC_UNIFORM;
    else return lpv_fail(err, LPV_E_ARG, "--allocator: expected greedy, uniform or lpvit, got '%s'", alloc);
    if (p->allocator == ALLOC_LPVIT && p->sal != LPV_SAL_LPVIT)
        return lpv_fail(err, LPV_E_ARG, "--allocator lpvit works on LPViT's curves: use it with --saliency lpvit");
    LPV_TRY(lpv_objective_parse(o->objective, &p->obj, err));
    if (p->allocator != ALLOC_GREEDY && p->obj != LPV_OBJ_FLOPS)
        return lpv_fail(err, LPV_E_ARG, "--objective %s needs --allocator greedy (LPViT's own power term: --lpvit-power)",
                        o->objective);
    const char *loss = o->loss ? o->loss : p->sal == LPV_SAL_LPVIT ? "mean-sq" : "self-ce";
    LPV_TRY(lpv_loss_parse(loss, &p->loss, err));
    p->need_stats = p->sal != LPV_SAL_L1 && p->sal != LPV_SAL_OBS && p->sal != LPV_SAL_WANDA;
    p->need_fisher = p->sal == LPV_SAL_FISHER;
    p->need_blocks = p->sal == LPV_SAL_TAYLOR2;
    /* taylor2, the default criterion, runs the whole corrected pipeline unless told otherwise:
       channels sorted, masks, then a sequential least-squares refit (README "Pruning" measures each
       step); the baselines (l1, lpvit) and the other criteria keep plain masks by default */
    const char *upd = o->update ? o->update : p->sal == LPV_SAL_TAYLOR2 ? "lsq" : "none";
    LPV_TRY(lpv_update_parse(upd, &p->update, err));
    p->need_inputs = p->sal == LPV_SAL_OBS || p->sal == LPV_SAL_WANDA || p->update != LPV_UPDATE_NONE;
    if (o->sequential && (p->update == LPV_UPDATE_NONE || p->update == LPV_UPDATE_BIAS))
        return lpv_fail(err, LPV_E_ARG, "--sequential refits weights: use it with --update lsq or obs");
    if (o->sequential && o->no_sequential)
        return lpv_fail(err, LPV_E_ARG, "--sequential and --no-sequential contradict each other");
    p->sequential = o->sequential || (!o->no_sequential && (p->update == LPV_UPDATE_LSQ || p->update == LPV_UPDATE_OBS));
    if (!(o->damp > 0 && o->damp < 10)) return lpv_fail(err, LPV_E_ARG, "--damp: expected (0, 10), got %g", o->damp);
    if (o->lambda_power < 0) return lpv_fail(err, LPV_E_ARG, "--lambda-power: expected >= 0, got %g", o->lambda_power);
    if (o->calib_size < 1) return lpv_fail(err, LPV_E_ARG, "--calib-size: expected >= 1");
    const char *perm = o->permute ? o->permute : p->sal == LPV_SAL_L1 || p->sal == LPV_SAL_LPVIT ? "none" : "sort";
    if (strcmp(perm, "sort") == 0) p->permute = 1;
    else if (strcmp(perm, "none") != 0)
        return lpv_fail(err, LPV_E_ARG, "--permute: expected sort or none, got '%s'", perm);
    return LPV_OK;
}

/* Steps of the schedule when --steps is not given: removing FLOPs a step at a time pays off
   only when each step's cut is repaired (sequential refit) before the next is chosen
   (README "Pruning accuracy": one step per 0.125 of FLOPs removed). */
static int default_steps(const prune_opts *o, const prune_plan *p) {
    if (p->update == LPV_UPDATE_NONE || !p->sequential) return 1;
    int n = (int)ceil((1.0 - o->target) / 0.125 - 1e-9);
    return n < 1 ? 1 : n > LPV_MAX_STEPS ? LPV_MAX_STEPS : n;
}

static void default_cache_dir(char *buf, size_t cap, const char *given) {
    if (given) {
        snprintf(buf, cap, "%s", given);
        return;
    }
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (x && x[0]) snprintf(buf, cap, "%s/lpvit", x);
    else snprintf(buf, cap, "%s/.cache/lpvit", h && h[0] ? h : "/tmp");
}

static int mkdir_p(const char *dir) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    return mkdir(tmp, 0755) == 0 || lpv_is_dir(tmp);
}

/* ---- statistics, with the cache ---- */

static lpv_status get_stats(const prune_opts *o, const prune_plan *p, cli_model *cm, const lpv_dataset *ds,
                            const char *list_sha, lpv_calib_stats *st_out, char *cache_path, size_t cap, lpv_err *err) {
    const char *msha = lpv_model_hash(cm->model, err);
    if (!msha) return LPV_E_IO;
    lpv_calib_opts co = {p->loss, p->need_fisher, p->need_blocks ? p->R : 0, p->need_blocks ? p->C : 0,
                         o->calib_batch, (uint64_t)o->seed, o->ma.quiet};
    char key[1024];
    lpv_calib_key(key, sizeof key, msha, list_sha, &co, &cm->pp);
    cache_path[0] = 0;
    if (!o->no_cache) {
        char dir[1024];
        default_cache_dir(dir, sizeof dir, o->cache_dir);
        char h[65];
        lpv_sha256_hex(key, strlen(key), h);
        snprintf(cache_path, cap, "%s/calib-%s.lpvc", dir, h);
        if (lpv_file_exists(cache_path)) {
            lpv_err e2;
            if (lpv_calib_load(st_out, cm->model, cache_path, key, &co, &e2) == LPV_OK) {
                if (!o->ma.quiet) fprintf(stderr, "lpvit: calibration statistics from cache '%s'\n", cache_path);
                return LPV_OK;
            }
            if (!o->ma.quiet) fprintf(stderr, "lpvit: warning: ignoring cache: %s\n", e2.msg);
        }
        if (!mkdir_p(dir)) {
            if (!o->ma.quiet) fprintf(stderr, "lpvit: warning: cannot create cache folder '%s'\n", dir);
            cache_path[0] = 0;
        }
    }
    LPV_TRY(lpv_calib_collect(cm->model, ds, &cm->pp, &co, st_out, err));
    snprintf(st_out->key, sizeof st_out->key, "%s", key);
    if (cache_path[0]) {
        lpv_err e2;
        if (lpv_calib_save(st_out, cache_path, &e2) != LPV_OK) {
            if (!o->ma.quiet) fprintf(stderr, "lpvit: warning: %s\n", e2.msg);
            cache_path[0] = 0;
        }
    }
    return LPV_OK;
}

/* ---- channel permutation (permute.h) ---- */

/* view <- ds with an item list of its own: n items spread over ds's (all when n <= 0 or
   n >= ds->n). It shares ds's strings: free only view->items. */
static lpv_status spread_view(lpv_dataset *view, const lpv_dataset *ds, int n, lpv_err *err) {
    *view = *ds;
    view->items = malloc(sizeof *view->items * (size_t)(ds->n > 0 ? ds->n : 1));
    if (!view->items) return lpv_fail(err, LPV_E_OOM, "out of memory");
    memcpy(view->items, ds->items, sizeof *view->items * (size_t)ds->n);
    if (n > 0) lpv_dataset_spread(view, n);
    return LPV_OK;
}

/* Importance of every weight of the pruned layers, in the units of the chosen criterion: the
   diagonal second-order term F·w² for the gradient criteria (taylor2/fisher; block correlations
   cannot be known before the blocks are), |w·g| for lpvit, |w|·‖x_j‖ for obs/wanda, |w| for l1.
   The gradients come from a first calibration pass (cached like the second). */
static lpv_status element_scores(const prune_opts *o, const prune_plan *p, cli_model *cm, lpv_layer_ref *refs, int nl,
                                 const lpv_dataset *ds, float **score, lpv_err *err) {
    lpv_model *m = cm->model;
    lpv_calib_stats cs;
    memset(&cs, 0, sizeof cs);
    lpv_model_stats ist;
    memset(&ist, 0, sizeof ist);
    lpv_status st = LPV_OK;
    int grad = p->need_stats, inputs = p->sal == LPV_SAL_OBS || p->sal == LPV_SAL_WANDA;
    /* a rough importance is enough to order channels: a spread subset of the calibration list */
    lpv_dataset sub;
    LPV_TRY(spread_view(&sub, ds, o->permute_images, err));
    char sub_sha[65];
    lpv_dataset_hash(&sub, sub_sha);
    if (grad) {
        prune_plan p1 = *p;
        p1.need_fisher = 1, p1.need_blocks = 0;
        char path[2048];
        st = get_stats(o, &p1, cm, &sub, sub_sha, &cs, path, sizeof path, err);
    } else if (inputs) {
        for (int i = 0; i < nl; i++) ist.want[i] = !excluded(refs[i].name, o->exclude);
        st = lpv_collect_input_stats(m, &sub, &cm->pp, 32, o->ma.quiet, &ist, err);
    }
    free(sub.items); /* sub shares everything else with ds */
    for (int i = 0; i < nl && st == LPV_OK; i++) {
        if (excluded(refs[i].name, o->exclude)) continue;
        const lpv_linear *L = refs[i].lin;
        score[i] = malloc(sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (!score[i]) {
            st = lpv_fail(err, LPV_E_OOM, "out of memory");
            break;
        }
        for (int r = 0; r < L->out; r++)
            for (int j = 0; j < L->in; j++) {
                int64_t e = (int64_t)r * L->in + j;
                float w = L->w[e];
                if (grad && p->sal == LPV_SAL_LPVIT) score[i][e] = fabsf(w * cs.g[i][e]);
                else if (grad) score[i][e] = cs.f[i][e] * w * w;
                else if (inputs) score[i][e] = fabsf(w) * sqrtf(fmaxf(ist.st[i].H[(int64_t)j * L->in + j], 0));
                else score[i][e] = fabsf(w);
            }
    }
    if (grad) lpv_calib_free(&cs);
    if (inputs) lpv_model_stats_free(&ist);
    return st;
}

/* Sorts the model's channels by importance (function-preserving), and gives the permuted model its
   own identity (source hash + permutation digest) so the statistics cache keeps the two apart. */
static lpv_status permute_model(const prune_opts *o, const prune_plan *p, cli_model *cm, lpv_layer_ref *refs, int nl,
                                const lpv_dataset *ds, lpv_perm *perm, lpv_err *err) {
    lpv_model *m = cm->model;
    float *score[LPV_MAX_LAYERS] = {0};
    lpv_status st = lpv_perm_init(perm, &m->cfg, err);
    if (st == LPV_OK) st = element_scores(o, p, cm, refs, nl, ds, score, err);
    if (st == LPV_OK) st = lpv_perm_by_importance(m, (const float *const *)score, perm, err);
    if (st == LPV_OK) st = lpv_model_permute(m, perm, err);
    if (st == LPV_OK) {
        char d[65], key[160];
        lpv_perm_digest(perm, d);
        snprintf(key, sizeof key, "%s+perm:%s", m->sha256, d);
        lpv_sha256_hex(key, strlen(key), m->sha256);
    }
    for (int i = 0; i < nl; i++) free(score[i]);
    return st;
}

/* ---- cost ---- */

typedef struct {
    int idx;                 /* index into the model's layer refs */
    lpv_layer_sal sal;
    double *cost;            /* (nb + 1) */
    double *time_ms;         /* (nb + 1) or NULL */
    double *energy;          /* (nb + 1) pJ per image */
    int kmax, k;
} player;

static lpv_status time_table_for(const prune_opts *o, const prune_plan *p, player *pl, int n, lpv_layer_ref *refs,
                                 lpv_time_table *tt, lpv_err *err) {
    if (o->cost_table) return lpv_time_table_load(tt, o->cost_table, err);
    /* measure now, and keep the table in the cache folder for the next run */
    lpv_layer_shape shapes[LPV_MAX_LAYERS];
    for (int i = 0; i < n; i++)
        shapes[i] = (lpv_layer_shape){refs[pl[i].idx].lin->out, refs[pl[i].idx].lin->in, refs[pl[i].idx].tokens};
    static const double grid[] = {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    if (!o->ma.quiet)
        fprintf(stderr, "lpvit: measuring BSR time per layer shape for --objective %s (save it with lpvit bench "
                        "--calibrate and pass --cost-table to skip this)\n", o->objective);
    return lpv_time_table_measure(tt, shapes, n, p->R, p->C, grid, (int)(sizeof grid / sizeof *grid), 1, 5,
                                  (unsigned long long)o->seed, o->ma.quiet, err);
}

static lpv_status build_costs(const prune_opts *o, const prune_plan *p, player *pl, int n, lpv_layer_ref *refs,
                              lpv_arena *a, lpv_time_table *tt, int *have_tt, lpv_err *err) {
    lpv_energy e = lpv_energy_default();
    if (o->e_mac > 0) e.mac_pj = o->e_mac;
    if (o->e_dram > 0) e.dram_byte_pj = o->e_dram;
    if (o->e_cache > 0) e.cache_byte_pj = o->e_cache;
    *have_tt = 0;
    if (p->obj == LPV_OBJ_SPEED || p->obj == LPV_OBJ_SPEED_POWER || o->cost_table) {
        LPV_TRY(time_table_for(o, p, pl, n, refs, tt, err));
        *have_tt = 1;
    }
    double t_dense = 0, e_dense = 0, m_dense = 0;
    for (int i = 0; i < n; i++) {
        lpv_layer_sal *s = &pl[i].sal;
        int nb = s->nb;
        pl[i].cost = lpv_arena_alloc(a, sizeof(double) * (size_t)(nb + 1));
        pl[i].energy = lpv_arena_alloc(a, sizeof(double) * (size_t)(nb + 1));
        pl[i].time_ms = *have_tt ? lpv_arena_alloc(a, sizeof(double) * (size_t)(nb + 1)) : NULL;
        if (!pl[i].cost || !pl[i].energy || (*have_tt && !pl[i].time_ms)) return lpv_fail(err, LPV_E_OOM, "out of memory");
        const lpv_time_curve *tc = NULL;
        if (*have_tt) {
            tc = lpv_time_table_find(tt, s->out, s->in, s->tokens, p->R, p->C);
            if (!tc)
                return lpv_fail(err, LPV_E_ARG, "time table has no entry for layer '%s' (%dx%d, %d tokens, %dx%d blocks)",
                                s->name, s->out, s->in, s->tokens, p->R, p->C);
        }
        double numel = (double)s->out * s->in;
        for (int k = 0; k <= nb; k++) {
            double d = 1.0 - (double)s->elems[k] / numel;
            pl[i].energy[k] = lpv_layer_energy_pj(&e, s->out, s->in, s->tokens, p->R, p->C, d);
            if (tc) pl[i].time_ms[k] = lpv_time_curve_at(tc, d);
        }
        t_dense += tc ? pl[i].time_ms[0] : 0;
        e_dense += pl[i].energy[0];
        m_dense += lpv_alloc_kept_macs(s, 0);
    }
    /* objective cost, normalized by its dense total; a 1e-6 share of FLOPs breaks ties on flat time segments */
    for (int i = 0; i < n; i++)
        for (int k = 0; k <= pl[i].sal.nb; k++) {
            double f = lpv_alloc_kept_macs(&pl[i].sal, k) / m_dense, c = f;
            if (p->obj == LPV_OBJ_SPEED) c = pl[i].time_ms[k] / t_dense + 1e-6 * f;
            else if (p->obj == LPV_OBJ_POWER) c = pl[i].energy[k] / e_dense + 1e-6 * f;
            else if (p->obj == LPV_OBJ_SPEED_POWER)
                c = pl[i].time_ms[k] / t_dense + o->lambda_power * pl[i].energy[k] / e_dense + 1e-6 * f;
            pl[i].cost[k] = c;
        }
    return LPV_OK;
}

/* ---- refinement: scale each layer's curve by measured / predicted KL at its allocated point ---- */

static lpv_status load_images(const lpv_dataset *ds, const lpv_preproc *pp, int M, float *x, int *got, lpv_err *err) {
    lpv_loader *L;
    lpv_loader_opts lo = {M, 1, 0};
    LPV_TRY(lpv_loader_open(&L, ds, pp, &lo, err));
    lpv_batch b;
    lpv_status st = lpv_loader_next(L, &b, err);
    if (st == LPV_OK) {
        memcpy(x, b.x, sizeof(float) * (size_t)b.n * 3 * (size_t)pp->img_size * (size_t)pp->img_size);
        *got = b.n;
    }
    lpv_loader_close(L);
    return st;
}

typedef struct {
    int rounds;
    double kl_measured[LPV_MAX_LAYERS], factor[LPV_MAX_LAYERS];
    double seconds;
} refine_info;

/* KL of pruning one layer alone, with the weight update the final model will get. */
static lpv_status measure_layer(lpv_model *m, lpv_linear *L, const lpv_layer_sal *s, int k, const prune_plan *p,
                                const lpv_layer_stats *st, const lpv_recon_opts *ro, const float *x, int M,
                                const float *dl, float *lg, lpv_workspace *ws, double *kl, lpv_err *err) {
    if (p->update == LPV_UPDATE_NONE) return lpv_layer_kl(m, L, p->R, p->C, s->order, k, x, M, dl, lg, ws, kl, err);
    size_t nw = (size_t)L->out * (size_t)L->in;
    float *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * (size_t)L->out);
    uint8_t *mask = malloc((size_t)s->nb);
    lpv_status r = (!w || !b || !mask) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    if (!r) {
        memcpy(w, L->w, sizeof(float) * nw);
        if (L->b) memcpy(b, L->b, sizeof(float) * (size_t)L->out);
        else memset(b, 0, sizeof(float) * (size_t)L->out);
        memset(mask, 1, (size_t)s->nb);
        for (int q = 0; q < k; q++) mask[s->order[q]] = 0;
        r = lpv_reconstruct_layer(w, b, L->out, L->in, p->R, p->C, mask, st, p->update, ro, NULL, s->name, err);
    }
    if (!r) {
        float *w0 = L->w, *b0 = L->b;
        L->w = w, L->b = b;
        r = lpv_forward_all(m, ws, x, M, lg, err);
        L->w = w0, L->b = b0;
        if (!r) *kl = lpv_mean_kl(dl, lg, M, m->cfg.classes);
    }
    free(w), free(b), free(mask);
    return r;
}

static lpv_status refine_curves(const prune_opts *o, const prune_plan *p, cli_model *cm, lpv_layer_ref *refs, player *pl,
                                int np, lpv_alloc_layer *al, int *k, double target_macs, const lpv_dataset *ds,
                                const lpv_model_stats *ist, refine_info *ri, lpv_err *err) {
    lpv_model *m = cm->model;
    int M = o->refine_images < ds->n ? o->refine_images : ds->n;
    int64_t per = (int64_t)3 * cm->pp.img_size * cm->pp.img_size;
    int C = m->cfg.classes, got = 0;
    float *x = malloc(sizeof(float) * (size_t)(per * M)), *dl = malloc(sizeof(float) * (size_t)M * C);
    float *lg = malloc(sizeof(float) * (size_t)M * C);
    lpv_workspace ws;
    lpv_status st = (!x || !dl || !lg) ? lpv_fail(err, LPV_E_OOM, "out of memory") : LPV_OK;
    int ws_ok = 0;
    if (!st) st = load_images(ds, &cm->pp, M, x, &got, err);
    if (!st && (st = lpv_workspace_init(&ws, &m->cfg, got < 32 ? got : 32, err)) == LPV_OK) ws_ok = 1;
    if (!st) st = lpv_forward_all(m, &ws, x, got, dl, err);
    double t0 = lpv_now();
    for (int r = 0; r < o->refine && st == LPV_OK; r++) {
        for (int i = 0; i < np && st == LPV_OK; i++) {
            lpv_layer_sal *s = &pl[i].sal;
            int kk = k[i] > 0 ? k[i] : (int)ceil(0.1 * s->nb);
            if (kk > pl[i].kmax) kk = pl[i].kmax;
            if (kk < 1) continue;
            double kl, pred = s->curve[kk] - s->curve[0];
            lpv_recon_opts ro = lpv_recon_defaults();
            ro.damp = o->damp;
            st = measure_layer(m, refs[pl[i].idx].lin, s, kk, p, p->need_inputs ? &ist->st[pl[i].idx] : NULL, &ro, x,
                               got, dl, lg, &ws, &kl, err);
            if (st) break;
            ri->kl_measured[i] = kl;
            if (!(pred > 0)) continue; /* a curve that predicts a gain cannot be scaled into a loss */
            double f = (kl > 1e-12 ? kl : 1e-12) / pred;
            ri->factor[i] = (ri->factor[i] > 0 ? ri->factor[i] : 1.0) * f;
            for (int q = 0; q <= s->nb; q++) s->curve[q] *= f;
            if (!o->ma.quiet && isatty(2))
                fprintf(stderr, "\rlpvit: refine round %d/%d: layer %d/%d\033[K", r + 1, o->refine, i + 1, np);
        }
        if (st) break;
        st = lpv_alloc_greedy(al, np, target_macs, k, NULL, err);
        ri->rounds = r + 1;
        if (!o->ma.quiet)
            fprintf(stderr, "%slpvit: refine round %d/%d done (%.1fs, %d images)\n", isatty(2) ? "\r\033[K" : "", r + 1,
                    o->refine, lpv_now() - t0, got);
    }
    ri->seconds = lpv_now() - t0;
    if (ws_ok) lpv_workspace_free(&ws);
    free(x), free(dl), free(lg);
    return st;
}

/* A fresh dense copy of m's file, permuted like m (perm NULL: not permuted). */
static lpv_status load_dense_copy(const lpv_model *m, const lpv_perm *perm, lpv_model **out, lpv_err *err) {
    lpv_model_opts mo = {m->cfg.heads, m->cfg.ln_eps, 0};
    LPV_TRY(lpv_model_load(out, m->path, &mo, err));
    lpv_status st = lpv_model_densify(*out, err);
    if (!st && perm) st = lpv_model_permute(*out, perm, err);
    return st; /* on failure *out is still the caller's to free */
}

/* ---- report ---- */

/* The heads are refit with every sequential refit unless --no-refit-heads (they need the pruned model's
   own final features, which only the sequential pass has). */
static int refits_heads(const prune_opts *o, const prune_plan *p) {
    return !o->no_refit_heads && p->sequential && p->update != LPV_UPDATE_NONE;
}

static cJSON *settings_json(const prune_opts *o, const prune_plan *p) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "target_flops", o->target);
    char blk[16];
    snprintf(blk, sizeof blk, "%dx%d", p->R, p->C);
    cJSON_AddStringToObject(s, "block", blk);
    cJSON_AddStringToObject(s, "saliency", lpv_saliency_name(p->sal));
    cJSON_AddStringToObject(s, "allocator", ALLOC_NAMES[p->allocator]);
    cJSON_AddStringToObject(s, "objective", lpv_objective_name(p->obj));
    cJSON_AddNumberToObject(s, "lambda_power", o->lambda_power);
    cJSON_AddStringToObject(s, "loss", p->need_stats ? lpv_loss_name(p->loss) : "none");
    cJSON_AddStringToObject(s, "update", lpv_update_name(p->update));
    cJSON_AddBoolToObject(s, "sequential", p->sequential);
    cJSON_AddNumberToObject(s, "steps", o->steps);
    cJSON_AddNumberToObject(s, "tune_epochs", o->tune_epochs);
    cJSON_AddBoolToObject(s, "refit_heads", refits_heads(o, p));
    if (refits_heads(o, p)) cJSON_AddNumberToObject(s, "head_damp", o->head_damp);
    cJSON_AddStringToObject(s, "permute", p->permute ? "sort" : "none");
    if (p->permute) cJSON_AddNumberToObject(s, "permute_images", o->permute_images);
    cJSON_AddStringToObject(s, "exclude", o->exclude);
    cJSON_AddNumberToObject(s, "min_density", o->min_density);
    cJSON_AddNumberToObject(s, "calib_size", o->calib_size);
    cJSON_AddNumberToObject(s, "seed", o->seed);
    if (p->sal == LPV_SAL_LPVIT) {
        cJSON_AddBoolToObject(s, "lpvit_as_released", o->lpvit_as_released);
        cJSON_AddNumberToObject(s, "lpvit_smooth", o->lpvit_smooth);
        cJSON_AddNumberToObject(s, "lpvit_h", o->lpvit_h);
        cJSON_AddBoolToObject(s, "lpvit_power", o->lpvit_power);
    }
    return s;
}

static cJSON *preprocess_json(const lpv_preproc *pp) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "img_size", pp->img_size);
    cJSON_AddNumberToObject(j, "crop_pct", pp->crop_pct);
    cJSON_AddStringToObject(j, "interpolation", lpv_interp_name(pp->interp));
    cJSON_AddItemToObject(j, "mean", cJSON_CreateFloatArray(pp->mean, 3));
    cJSON_AddItemToObject(j, "std", cJSON_CreateFloatArray(pp->std, 3));
    return j;
}

/* After a step the model in memory is neither the source file nor the permuted one: it gets the
   identity of its own weights (chained to the previous one), so the statistics cache stays exact. */
static void next_step_identity(lpv_model *m, lpv_layer_ref *refs, int nl, int step) {
    lpv_sha256 h;
    lpv_sha256_init(&h);
    char tag[96];
    snprintf(tag, sizeof tag, "%s+step:%d:", m->sha256, step);
    lpv_sha256_update(&h, tag, strlen(tag));
    for (int i = 0; i < nl; i++) {
        const lpv_linear *L = refs[i].lin;
        lpv_sha256_update(&h, L->w, sizeof(float) * (size_t)L->out * (size_t)L->in);
        if (L->b) lpv_sha256_update(&h, L->b, sizeof(float) * (size_t)L->out);
    }
    lpv_sha256_final_hex(&h, m->sha256);
}

int cmd_prune(int argc, char **argv) {
    prune_opts o;
    memset(&o, 0, sizeof o);
    cli_model_args_init(&o.ma);
    o.calib_size = 2000, o.calib_batch = 8, o.target = NAN, o.min_density = 0.05, o.lpvit_smooth = 0.5, o.lpvit_h = 4;
    o.block = "32x32", o.saliency = "taylor2", o.objective = "flops", o.exclude = "patch_embed,head";
    o.refine = -1, o.refine_images = 32, o.permute_images = 256, o.damp = LPV_RECON_DAMP, o.head_damp = LPV_HEAD_DAMP;
    o.tune_lr = lpv_tune_defaults().lr, o.tune_batch = lpv_tune_defaults().batch;
    const cli_opt opts[] = {
        {"--model", OPT_STR, &o.ma.model, "M", "preset (deit_b, vit_t, ...), .safetensors or HF folder", 0, 0, NULL},
        {"--weights", OPT_STR, &o.ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--calib-dir", OPT_STR, &o.calib_dir, "DIR", "calibration ImageFolder (DIR/<wnid>/*.JPEG)", 0, 0, NULL},
        {"--calib-size", OPT_INT, &o.calib_size, "N", "calibration images (seeded choice, sorted)", 1, 10000000, NULL},
        {"--calib-batch", OPT_INT, &o.calib_batch, "N", "images per forward/backward pass", 1, 1024, NULL},
        {"--synsets", OPT_STR, &o.synsets, "FILE", "class order for the calibration folder", 0, 0, NULL},
        {"--target-flops", OPT_DOUBLE, &o.target, "r", "keep this fraction of the prunable layers' FLOPs (required)", 0, 0, NULL},
        {"--block", OPT_STR, &o.block, "RxC", "block shape, R output rows x C input columns, each of 8/16/32/64", 0, 0, NULL},
        {"--saliency", OPT_STR, &o.saliency, "S", "taylor2, fisher, lpvit, l1, obs (block OBS on the input Gram) or wanda", 0, 0, NULL},
        {"--allocator", OPT_STR, &o.allocator, "A", "greedy, uniform or lpvit (default: lpvit for lpvit, uniform for l1, else greedy)", 0, 0, NULL},
        {"--objective", OPT_STR, &o.objective, "O", "what a pruned block buys: flops, speed, power, speed+power", 0, 0, NULL},
        {"--lambda-power", OPT_DOUBLE, &o.lambda_power, "x", "weight of energy against time for speed+power", 0, 0, NULL},
        {"--cost-table", OPT_STR, &o.cost_table, "FILE", "measured BSR times (lpvit bench --calibrate)", 0, 0, NULL},
        {"--energy-mac", OPT_DOUBLE, &o.e_mac, "pJ", "energy per multiply-add (default 4.6)", 0, 0, NULL},
        {"--energy-dram-byte", OPT_DOUBLE, &o.e_dram, "pJ", "energy per weight byte from DRAM (default 160)", 0, 0, NULL},
        {"--energy-cache-byte", OPT_DOUBLE, &o.e_cache, "pJ", "energy per activation byte from cache (default 1.25)", 0, 0, NULL},
        {"--exclude", OPT_STR, &o.exclude, "LIST", "layers never pruned: names or globs, comma-separated, or none", 0, 0, NULL},
        {"--min-density", OPT_DOUBLE, &o.min_density, "d", "every pruned layer keeps at least this fraction of blocks", 0, 0, NULL},
        {"--loss", OPT_STR, &o.loss, "L", "calibration loss: self-ce, kl, ce, mean-sq (default self-ce; lpvit: mean-sq)", 0, 0, NULL},
        {"--lpvit-as-released", OPT_FLAG, &o.lpvit_as_released, NULL, "lpvit: final masks by block magnitude, like LPViT's released code", 0, 0, NULL},
        {"--lpvit-smooth", OPT_DOUBLE, &o.lpvit_smooth, "w", "lpvit: EMA weight of curve smoothing (0 = off)", 0, 0.999, NULL},
        {"--lpvit-h", OPT_INT, &o.lpvit_h, "H", "lpvit: stencil half-width of the slope", 1, 50, NULL},
        {"--lpvit-power", OPT_FLAG, &o.lpvit_power, NULL, "lpvit: add LPViT's power term (auto beta)", 0, 0, NULL},
        {"--refine", OPT_INT, &o.refine, "N", "rounds of scaling each layer's curve by its measured KL (default 2 for greedy criteria without a weight update, else 0)", 0, 20, NULL},
        {"--refine-images", OPT_INT, &o.refine_images, "M", "calibration images the refinement measures KL on", 1, 100000, NULL},
        {"--update", OPT_STR, &o.update, "U", "weight update after masking: none, bias, lsq (exact least squares), obs (SparseGPT); default lsq for taylor2, else none", 0, 0, NULL},
        {"--permute", OPT_STR, &o.permute, "P", "sort: order channels by importance first, so blocks group what matters (same function), or none; default sort except for the l1/lpvit baselines", 0, 0, NULL},
        {"--permute-images", OPT_INT, &o.permute_images, "N", "calibration images (spread over the list) whose gradients order the channels", 1, 10000000, NULL},
        {"--sequential", OPT_FLAG, &o.sequential, NULL, "refit block by block on the pruned model's own inputs (lsq/obs; the default with them)", 0, 0, NULL},
        {"--no-sequential", OPT_FLAG, &o.no_sequential, NULL, "refit each layer from the dense model's statistics alone", 0, 0, NULL},
        {"--steps", OPT_INT, &o.steps, "N", "prune in N steps towards the target, each refit before the next (default: one per 0.125 of FLOPs removed with a sequential refit, else 1)", 0, LPV_MAX_STEPS, NULL},
        {"--tune-epochs", OPT_INT, &o.tune_epochs, "E", "block-wise reconstruction in the final step: after each block's sequential refit, E passes of Adam fitting its kept weights to the dense block's outputs (0 = off)", 0, 1000, NULL},
        {"--tune-lr", OPT_DOUBLE, &o.tune_lr, "x", "block tuning: Adam's peak learning rate, cosine decay", 0, 1, NULL},
        {"--tune-batch", OPT_INT, &o.tune_batch, "N", "block tuning: images per Adam step", 1, 256, NULL},
        {"--recon-images", OPT_INT, &o.recon_images, "N", "calibration images for input statistics (default: all)", 1, 10000000, NULL},
        {"--damp", OPT_DOUBLE, &o.damp, "x", "Hessian damping, a fraction of its mean diagonal", 0, 0, NULL},
        {"--no-refit-heads", OPT_FLAG, &o.no_refit_heads, NULL, "keep the classifier heads as they are (by default a sequential refit also refits them, least squares towards the input model's logits)", 0, 0, NULL},
        {"--head-damp", OPT_DOUBLE, &o.head_damp, "x", "damping of the heads' refit, a fraction of its mean diagonal (one token per image: stronger than --damp)", 0, 0, NULL},
        {"--seed", OPT_INT, &o.seed, "S", "seed for calibration choice and sampling", 0, 2147483647, NULL},
        {"--cache-dir", OPT_STR, &o.cache_dir, "DIR", "calibration statistics cache (default ~/.cache/lpvit)", 0, 0, NULL},
        {"--no-cache", OPT_FLAG, &o.no_cache, NULL, "always recompute calibration statistics", 0, 0, NULL},
        {"--out", OPT_STR, &o.out, "FILE", "pruned model (BSR safetensors; required)", 0, 0, NULL},
        {"--report", OPT_STR, &o.report, "FILE", "JSON report ('-' for stdout instead of the table)", 0, 0, NULL},
        {"--heads", OPT_INT, &o.ma.heads, "H", "attention heads when the file does not say", 1, 1024, NULL},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_ISA(&o.isa),
        CLI_OPT_QUIET(&o.ma.quiet),
        {0},
    };
    const cli_spec spec = {
        "lpvit prune --model M --calib-dir DIR --target-flops r --out FILE [options]",
        "Post-training block pruning: gradients on a calibration set, block saliency (second-order Taylor by "
        "default), a per-layer block budget from a hardware-aware allocator, and a block-sparse model lpvit's "
        "engine runs (lpvit eval / lpvit bench --pruned).",
        opts, 0, 0};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    if (!o.ma.model) return cli_usage_error("--model is required");
    if (isnan(o.target)) return cli_usage_error("--target-flops is required");
    if (!o.out) return cli_usage_error("--out is required");
    lpv_err err;
    prune_plan p;
    lpv_status st = make_plan(&o, &p, &err);
    if (st) return cli_fail(&err, st);
    if (o.refine < 0)
        o.refine = (p.sal == LPV_SAL_TAYLOR2 || p.sal == LPV_SAL_FISHER || p.sal == LPV_SAL_OBS || p.sal == LPV_SAL_WANDA) &&
                           p.allocator == ALLOC_GREEDY && p.update == LPV_UPDATE_NONE
                       ? 2
                       : 0;
    if (o.steps == 0) o.steps = default_steps(&o, &p);
    if (!(o.tune_lr > 0)) return cli_usage_error("--tune-lr must be above 0, got %g", o.tune_lr);
    if (!(o.head_damp > 0)) return cli_usage_error("--head-damp must be above 0, got %g", o.head_damp);
    if (o.tune_epochs > 0 && !(p.sequential && p.update != LPV_UPDATE_NONE))
        return cli_usage_error("--tune-epochs needs a sequential refit (--update lsq or obs, not --no-sequential)");
    if (o.refine > 0 && p.allocator != ALLOC_GREEDY) return cli_usage_error("--refine needs --allocator greedy");
    if ((p.need_stats || p.need_inputs || o.refine > 0) && !o.calib_dir)
        return cli_usage_error("--calib-dir is required for --saliency %s%s", o.saliency, o.refine ? " and --refine" : "");
    if ((st = cli_runtime(o.threads, o.isa, &err)) != LPV_OK) return cli_fail(&err, st);
    phase_times pt;
    memset(&pt, 0, sizeof pt);
    double t_start = lpv_now(), t = t_start;

    /* 1. model */
    cli_model cm;
    if ((st = cli_open_model(&o.ma, &cm, &err)) != LPV_OK) return cli_fail(&err, st);
    lpv_model *m = cm.model;
    if (lpv_same_file(o.out, m->path)) {
        cli_close_model(&cm);
        lpv_fail(&err, LPV_E_ARG, "--out '%s' is the input model", o.out);
        return cli_fail(&err, LPV_E_ARG);
    }
    if (lpv_model_linear_density(m) < 1.0) {
        if (!o.ma.quiet) fprintf(stderr, "lpvit: '%s' is already pruned: pruning its dense form (zeros kept)\n", m->path);
        if ((st = lpv_model_densify(m, &err)) != LPV_OK) goto fail_model;
    }
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    if ((st = check_exclude_list(o.exclude, refs, nl, &err)) != LPV_OK) goto fail_model;
    char model_sha[65]; /* the source file's: the model in memory may be permuted below */
    if (!lpv_model_hash(m, &err)) {
        st = LPV_E_IO;
        goto fail_model;
    }
    snprintf(model_sha, sizeof model_sha, "%s", m->sha256);
    pt.load = lpv_now() - t, t = lpv_now();

    /* 2. calibration list */
    lpv_dataset ds;
    memset(&ds, 0, sizeof ds);
    char list_sha[65] = "";
    if (o.calib_dir) {
        if (!lpv_is_dir(o.calib_dir)) {
            st = lpv_fail(&err, LPV_E_IO, "--calib-dir '%s' is not a directory", o.calib_dir);
            goto fail_model;
        }
        lpv_synsets syn;
        if ((st = lpv_synsets_load(&syn, o.synsets ? o.synsets : lpv_synsets_default_path(), &err)) != LPV_OK)
            goto fail_model;
        st = lpv_dataset_imagefolder(&ds, o.calib_dir, &syn, &err);
        lpv_synsets_free(&syn);
        if (st) goto fail_model;
        if (o.calib_size < ds.n && (st = lpv_dataset_sample(&ds, o.calib_size, (uint64_t)o.seed, &err)) != LPV_OK)
            goto fail_ds;
        lpv_dataset_hash(&ds, list_sha);
        if (!o.ma.quiet)
            fprintf(stderr, "lpvit: calibration: %d images from '%s' (seed %d, list %.12s)\n", ds.n, o.calib_dir, o.seed,
                    list_sha);
    }
    pt.list = lpv_now() - t, t = lpv_now();

    /* 2b. channels sorted by importance (the model stays the same function) */
    lpv_perm perm;
    memset(&perm, 0, sizeof perm);
    if (p.permute && (st = permute_model(&o, &p, &cm, refs, nl, &ds, &perm, &err)) != LPV_OK) goto fail_perm;
    pt.permute = lpv_now() - t, t = lpv_now();

    /* 3-7 run once per step of the schedule (--steps): each step prunes a little more of the model
       the previous step left (its zeroed blocks score 0, so they stay pruned), re-measuring the
       statistics on it and refitting towards that model, so no refit has to repair a large cut
       at once */
    int nsteps = o.steps, refit_heads = refits_heads(&o, &p);
    lpv_calib_stats cs;
    lpv_model_stats ist;
    lpv_arena work;
    lpv_time_table tt;
    lpv_alloc_info info;
    refine_info ri;
    lpv_reconstruct_info rinfo;
    memset(&cs, 0, sizeof cs), memset(&ist, 0, sizeof ist), memset(&tt, 0, sizeof tt);
    memset(&info, 0, sizeof info), memset(&ri, 0, sizeof ri), memset(&rinfo, 0, sizeof rinfo);
    lpv_arena_init(&work, 1 << 20);
    char cache_path[2048] = "";
    player *pl = NULL;
    lpv_alloc_layer *al = NULL;
    int *k = NULL, np = 0, have_tt = 0;
    double dense_macs = 0, kept_macs = 0, t_recon = 0, sched[LPV_MAX_STEPS];
    int cached[LPV_MAX_STEPS] = {0}, ncached = 0;
    uint8_t *masks[LPV_MAX_LAYERS], *prev[LPV_MAX_LAYERS];
    memset(masks, 0, sizeof masks), memset(prev, 0, sizeof prev);
    int revived[LPV_MAX_STEPS] = {0};
    /* the refit's images: a spread subset when --recon-images is smaller (the statistics keep the whole list) */
    lpv_dataset rds;
    st = spread_view(&rds, &ds, o.recon_images, &err);
    lpv_model *dense = NULL, *orig = NULL;
    /* with --steps, each step's refit targets the step before (it repairs its own cut); the final tuning
       and the heads' refit target the model the user gave, so the steps' approximations do not add up
       (measured at 0.5 / 32x32, 500 val: 27.0 % vs 22.8 % tuning towards the step before). The tuning
       needs that model whole; the heads alone need only what step 1 (whose target it is) records */
    lpv_head_targets heads_tgt;
    memset(&heads_tgt, 0, sizeof heads_tgt);
    int record_heads = refit_heads && nsteps > 1 && o.tune_epochs == 0;
    if (st == LPV_OK && p.update != LPV_UPDATE_NONE && p.sequential) { /* a copy: the refit's target */
        st = load_dense_copy(m, p.permute ? &perm : NULL, &dense, &err);
        if (!st && o.tune_epochs > 0 && nsteps > 1) st = load_dense_copy(m, p.permute ? &perm : NULL, &orig, &err);
    }
    for (int step = 0; step < nsteps && st == LPV_OK; step++) {
        double target = sched[step] = step == nsteps - 1 ? o.target : 1.0 - (1.0 - o.target) * (step + 1) / nsteps;
        if (step > 0) {
            next_step_identity(m, refs, nl, step);
            lpv_calib_free(&cs), lpv_model_stats_free(&ist), lpv_time_table_free(&tt);
            memset(&cs, 0, sizeof cs), memset(&ist, 0, sizeof ist), memset(&tt, 0, sizeof tt);
            lpv_arena_free(&work), lpv_arena_init(&work, 1 << 20);
            free(pl), free(al), free(k);
            for (int i = 0; i < nl; i++) free(prev[i]), prev[i] = masks[i], masks[i] = NULL;
            if (!o.ma.quiet) fprintf(stderr, "lpvit: step %d/%d: target FLOPs %.4f\n", step + 1, nsteps, target);
        }
        t = lpv_now();
        /* 3. statistics */
        if (p.need_stats && (st = get_stats(&o, &p, &cm, &ds, list_sha, &cs, cache_path, sizeof cache_path, &err)) != LPV_OK)
            break;
        ncached += cached[step] = cs.from_cache;
        /* 3b. input statistics of the model as it is (obs / wanda saliency, non-sequential updates);
           the sequential refit gathers its own, so it needs them only for the patch embedding */
        if (p.need_inputs) {
            int all = !p.sequential || p.sal == LPV_SAL_OBS || p.sal == LPV_SAL_WANDA || o.refine > 0, any = 0;
            for (int i = 0; i < nl; i++) any |= ist.want[i] = !excluded(refs[i].name, o.exclude) && (all || i == 0);
            if (any) st = lpv_collect_input_stats(m, &rds, &cm.pp, 32, o.ma.quiet, &ist, &err);
        }
        pt.stats += lpv_now() - t, t = lpv_now();
        if (st) break;

        /* 4. saliency per prunable layer */
        pl = calloc((size_t)nl, sizeof *pl);
        np = 0;
        if (!pl) st = lpv_fail(&err, LPV_E_OOM, "out of memory");
        lpv_sal_opts so = {o.lpvit_as_released, o.lpvit_smooth, 1};
        for (int i = 0; i < nl && st == LPV_OK; i++) {
            if (excluded(refs[i].name, o.exclude)) continue;
            player *q = &pl[np++];
            q->idx = i;
            memcpy(q->sal.name, refs[i].name, sizeof q->sal.name);
            q->sal.kind = refs[i].kind;
            q->sal.tokens = refs[i].tokens;
            /* the first-order term only means something for a loss with its own target (ce with labels,
               LPViT's mean-sq); for self-ce and kl the target is the dense model's output, where the
               gradient points toward overconfidence, not toward preserving the function */
            int first_order = p.loss == LPV_LOSS_CE || p.loss == LPV_LOSS_MEAN_SQ;
            const float *g = p.need_stats && (p.sal != LPV_SAL_TAYLOR2 || first_order) ? cs.g[i] : NULL;
            lpv_sal_inputs in = {refs[i].lin->w, g, p.need_fisher ? cs.f[i] : NULL, p.need_blocks ? cs.bf[i] : NULL,
                                 NULL, 0};
            double *bscore = NULL;
            if (p.sal == LPV_SAL_OBS || p.sal == LPV_SAL_WANDA) {
                const lpv_linear *Lw = refs[i].lin;
                int nbb = ((Lw->out + p.R - 1) / p.R) * ((Lw->in + p.C - 1) / p.C);
                bscore = malloc(sizeof(double) * (size_t)nbb);
                if (!bscore) {
                    st = lpv_fail(&err, LPV_E_OOM, "out of memory");
                    break;
                }
                if (p.sal == LPV_SAL_OBS) {
                    lpv_recon_opts ro = lpv_recon_defaults();
                    ro.damp = o.damp;
                    st = lpv_score_obs(Lw->w, Lw->out, Lw->in, ist.st[i].H, p.R, p.C, &ro, bscore, NULL, refs[i].name,
                                       &err);
                } else {
                    lpv_score_wanda(Lw->w, Lw->out, Lw->in, ist.st[i].H, p.R, p.C, bscore);
                }
                if (!st) st = lpv_output_energy(Lw->w, Lw->out, Lw->in, ist.st[i].H, &in.norm, &err);
                in.block_scores = bscore;
            }
            if (st) {
                free(bscore);
                break;
            }
            st = lpv_saliency_layer(p.sal, &in, &so, refs[i].lin->out, refs[i].lin->in, p.R, p.C, &q->sal, &work, &err);
            free(bscore);
            int min_keep = (int)ceil(o.min_density * q->sal.nb - 1e-9);
            if (min_keep < 1) min_keep = 1;
            q->kmax = q->sal.nb - min_keep;
        }
        if (st == LPV_OK && np == 0) st = lpv_fail(&err, LPV_E_ARG, "--exclude '%s' leaves no layer to prune", o.exclude);
        pt.saliency += lpv_now() - t, t = lpv_now();

        /* 5. costs */
        if (st == LPV_OK) st = build_costs(&o, &p, pl, np, refs, &work, &tt, &have_tt, &err);
        pt.cost += lpv_now() - t, t = lpv_now();

        /* 6. allocation */
        al = calloc((size_t)np + 1, sizeof *al);
        k = calloc((size_t)np + 1, sizeof *k);
        if (st == LPV_OK && (!al || !k)) st = lpv_fail(&err, LPV_E_OOM, "out of memory");
        memset(&info, 0, sizeof info);
        dense_macs = 0;
        for (int i = 0; i < np && st == LPV_OK; i++) {
            al[i] = (lpv_alloc_layer){&pl[i].sal, pl[i].cost, pl[i].kmax};
            dense_macs += lpv_alloc_kept_macs(&pl[i].sal, 0);
        }
        if (st == LPV_OK) {
            if (p.allocator == ALLOC_LPVIT) {
                lpv_lpvit_opts lo = {o.lpvit_h, o.min_density, 0.005, o.lpvit_power};
                st = lpv_alloc_lpvit(al, np, target, &lo, k, &info, &err);
            } else if (p.allocator == ALLOC_UNIFORM) {
                st = lpv_alloc_uniform(al, np, target * dense_macs, k, &info, &err);
            } else {
                st = lpv_alloc_greedy(al, np, target * dense_macs, k, &info, &err);
            }
        }
        double refine_before = ri.seconds; /* the report keeps the last step's factors, the time of all */
        memset(&ri, 0, sizeof ri);
        if (st == LPV_OK && o.refine > 0)
            st = refine_curves(&o, &p, &cm, refs, pl, np, al, k, target * dense_macs, &ds, &ist, &ri, &err);
        ri.seconds += refine_before;
        pt.alloc += lpv_now() - t, t = lpv_now();

        /* 7. masks → weight updates (the model keeps dense arrays with zeros until it is written) */
        kept_macs = 0;
        for (int i = 0; i < np && st == LPV_OK; i++) {
            lpv_layer_sal *s = &pl[i].sal;
            pl[i].k = k[i];
            kept_macs += lpv_alloc_kept_macs(s, k[i]);
            uint8_t *mask = malloc((size_t)s->nb);
            if (!mask) {
                st = lpv_fail(&err, LPV_E_OOM, "out of memory");
                break;
            }
            memset(mask, 1, (size_t)s->nb);
            for (int q = 0; q < k[i]; q++) mask[s->order[q]] = 0;
            masks[pl[i].idx] = mask;
            /* a block an earlier step pruned scores 0 and is pruned again; count any that is not */
            for (int q = 0; prev[pl[i].idx] && q < s->nb; q++) revived[step] += !prev[pl[i].idx][q] && mask[q];
        }
        if (st == LPV_OK && p.update != LPV_UPDATE_NONE) {
            lpv_reconstruct_opts ro = {p.update, p.sequential, lpv_recon_defaults(), lpv_tune_defaults(), orig, 16, o.ma.quiet,
                                       refit_heads && step == nsteps - 1, o.head_damp,
                                       NULL, NULL};
            ro.recon.damp = o.damp;
            ro.record_heads = record_heads && step == 0 ? &heads_tgt : NULL;
            ro.head_targets = record_heads && step == nsteps - 1 ? &heads_tgt : NULL;
            /* only the final step's model is kept: earlier steps' refits just prepare the next statistics
               (tuning every step measured no better: 23.2 vs 22.8 % at 0.5 on 500 images at 1.8x the time
               towards the step before, 26.6 vs 27.0 % at 2.7x towards the input model) */
            ro.tune.epochs = step == nsteps - 1 ? o.tune_epochs : 0;
            ro.tune.lr = (float)o.tune_lr, ro.tune.batch = o.tune_batch, ro.tune.seed = (uint64_t)o.seed;
            lpv_reconstruct_info si;
            st = lpv_reconstruct(m, dense, masks, p.R, p.C, &ist, &rds, &cm.pp, &ro, &si, &err);
            if (si.max_damp > rinfo.max_damp) rinfo.max_damp = si.max_damp;
            si.retried += rinfo.retried, si.max_damp = rinfo.max_damp;
            rinfo = si;
        } else if (st == LPV_OK && nsteps > 1) { /* no update: the next step must see this step's zeros */
            for (int i = 0; i < np; i++) {
                lpv_linear *L = refs[pl[i].idx].lin;
                lpv_mask_apply(L->w, L->out, L->in, p.R, p.C, masks[pl[i].idx]);
            }
        }
        t_recon += lpv_now() - t;
        /* the next step refits towards this step's model, not the dense one: each step then repairs
           only its own cut (measured on ViT-Tiny at 0.5, 4 steps: 17.4 % vs 13.0 % top-1 on 500 images) */
        if (st == LPV_OK && dense && step < nsteps - 1) {
            lpv_layer_ref dr[LPV_MAX_LAYERS];
            lpv_model_layers(dense, dr, LPV_MAX_LAYERS);
            for (int i = 0; i < np; i++) lpv_linear_copy_weights(dr[pl[i].idx].lin, refs[pl[i].idx].lin);
        }
    }
    lpv_model_free(dense), lpv_model_free(orig);
    lpv_head_targets_free(&heads_tgt);
    for (int i = 0; i < nl; i++) free(prev[i]);
    free(rds.items); /* rds shares everything else with ds; rds.n stays for the report */
    t = lpv_now();
    for (int i = 0; i < np && st == LPV_OK; i++) {
        lpv_layer_sal *s = &pl[i].sal;
        st = lpv_model_sparsify(m, refs[pl[i].idx].lin, p.R, p.C, masks[pl[i].idx], s->name, &err);
    }
    for (int i = 0; i < nl; i++) free(masks[i]);
    double achieved = kept_macs / dense_macs;
    if (st == LPV_OK && fabs(achieved - o.target) > 0.005 && !o.ma.quiet)
        fprintf(stderr, "lpvit: warning: achieved FLOPs ratio %.4f is %.4f from the target\n", achieved,
                achieved - o.target);
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "lpvit-bsr-v1");
    cJSON *src = cJSON_AddObjectToObject(meta, "source_model");
    cJSON_AddStringToObject(src, "path", m->path);
    cJSON_AddStringToObject(src, "sha256", model_sha);
    cJSON_AddStringToObject(src, "arch", m->arch);
    cJSON_AddItemToObject(meta, "preprocess", preprocess_json(&cm.pp));
    cJSON_AddItemToObject(meta, "pruning", settings_json(&o, &p));
    cJSON_AddStringToObject(meta, "calib_list_sha256", list_sha);
    cJSON_AddNumberToObject(meta, "achieved_flops_ratio", achieved);
    cJSON_AddStringToObject(meta, "lpvit_commit", lpv_commit());
    char *meta_txt = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (st == LPV_OK) {
        lpv_save_opts sv = {0, 1, {"lpvit"}, {meta_txt}};
        st = lpv_model_save(m, o.out, &sv, &err);
    }
    free(meta_txt);
    pt.write = lpv_now() - t;

    /* 8. report */
    if (st == LPV_OK) {
        lpv_macs mm = lpv_model_macs(&m->cfg);
        double whole_dense = mm.linear_macs + mm.attention_macs;
        double whole_kept = whole_dense - (dense_macs - kept_macs);
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "model", m->arch);
        cJSON_AddStringToObject(r, "model_path", m->path);
        cJSON_AddStringToObject(r, "model_sha256", model_sha);
        cJSON_AddStringToObject(r, "out", o.out);
        cJSON_AddItemToObject(r, "settings", settings_json(&o, &p));
        cJSON *sj = cJSON_AddArrayToObject(r, "steps");
        for (int i = 0; i < nsteps; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "target_flops", sched[i]);
            cJSON_AddBoolToObject(e, "statistics_from_cache", cached[i]);
            cJSON_AddNumberToObject(e, "blocks_revived", revived[i]);
            cJSON_AddItemToArray(sj, e);
        }
        cJSON_AddItemToObject(r, "preprocess", preprocess_json(&cm.pp));
        cJSON *cal = cJSON_AddObjectToObject(r, "calibration");
        cJSON_AddStringToObject(cal, "dir", o.calib_dir ? o.calib_dir : "");
        cJSON_AddNumberToObject(cal, "images", ds.n);
        cJSON_AddStringToObject(cal, "list_sha256", list_sha);
        cJSON_AddNumberToObject(cal, "samples_used", (double)cs.samples);
        if (p.need_stats) cJSON_AddNumberToObject(cal, "mean_loss", cs.mean_loss);
        cJSON_AddBoolToObject(cal, "from_cache", cached[0]); /* the source model's statistics */
        cJSON_AddStringToObject(cal, "cache_file", cache_path);
        cJSON *tot = cJSON_AddObjectToObject(r, "totals");
        cJSON_AddStringToObject(tot, "flops_counted",
                                "multiply-adds of the prunable linear layers per image: tokens x kept weights");
        cJSON_AddNumberToObject(tot, "prunable_gmacs_dense", dense_macs / 1e9);
        cJSON_AddNumberToObject(tot, "prunable_gmacs_kept", kept_macs / 1e9);
        cJSON_AddNumberToObject(tot, "achieved_flops_ratio", achieved);
        cJSON_AddNumberToObject(tot, "target_flops_ratio", o.target);
        cJSON_AddNumberToObject(tot, "model_gmacs_dense", whole_dense / 1e9);
        cJSON_AddNumberToObject(tot, "model_gmacs_kept", whole_kept / 1e9);
        cJSON_AddNumberToObject(tot, "attention_gmacs_unprunable", mm.attention_macs / 1e9);
        cJSON_AddNumberToObject(tot, "linear_weight_density", lpv_model_linear_density(m));
        double e0 = 0, e1 = 0, t0 = 0, t1 = 0, sal_lost = 0;
        cJSON *layers = cJSON_AddArrayToObject(r, "layers");
        int human = !(o.report && strcmp(o.report, "-") == 0);
        if (human)
            printf("%-22s %-10s %13s %8s %12s\n", "layer", "shape", "blocks kept", "density", "saliency lost");
        for (int i = 0; i < np; i++) {
            lpv_layer_sal *s = &pl[i].sal;
            int kk = pl[i].k;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "layer", s->name);
            cJSON_AddItemToObject(e, "shape", cJSON_CreateIntArray((int[]){s->out, s->in}, 2));
            cJSON_AddNumberToObject(e, "tokens", s->tokens);
            cJSON_AddNumberToObject(e, "blocks_total", s->nb);
            cJSON_AddNumberToObject(e, "blocks_kept", s->nb - kk);
            cJSON_AddNumberToObject(e, "density", 1.0 - (double)s->elems[kk] / ((double)s->out * s->in));
            cJSON_AddNumberToObject(e, "gmacs_dense", lpv_alloc_kept_macs(s, 0) / 1e9);
            cJSON_AddNumberToObject(e, "gmacs_kept", lpv_alloc_kept_macs(s, kk) / 1e9);
            cJSON_AddNumberToObject(e, "saliency_lost", s->curve[kk] - s->curve[0]);
            cJSON_AddNumberToObject(e, "energy_uj_dense", pl[i].energy[0] / 1e6);
            cJSON_AddNumberToObject(e, "energy_uj_kept", pl[i].energy[kk] / 1e6);
            if (pl[i].time_ms) {
                cJSON_AddNumberToObject(e, "time_ms_dense_bsr", pl[i].time_ms[0]);
                cJSON_AddNumberToObject(e, "time_ms_kept", pl[i].time_ms[kk]);
                t0 += pl[i].time_ms[0], t1 += pl[i].time_ms[kk];
            }
            e0 += pl[i].energy[0], e1 += pl[i].energy[kk], sal_lost += s->curve[kk] - s->curve[0];
            cJSON_AddItemToArray(layers, e);
            if (human) {
                char shape[32], kb[32];
                snprintf(shape, sizeof shape, "%dx%d", s->out, s->in);
                snprintf(kb, sizeof kb, "%d/%d", s->nb - kk, s->nb);
                printf("%-22s %-10s %13s %8.3f %12.4g\n", s->name, shape, kb,
                       1.0 - (double)s->elems[kk] / ((double)s->out * s->in), s->curve[kk] - s->curve[0]);
            }
        }
        cJSON_AddNumberToObject(tot, "saliency_lost", sal_lost);
        cJSON_AddNumberToObject(tot, "energy_ratio_pruned_layers", e1 / e0);
        if (t0 > 0) cJSON_AddNumberToObject(tot, "predicted_speedup_pruned_layers", t0 / t1);
        cJSON *al_j = cJSON_AddObjectToObject(r, "allocator");
        cJSON_AddNumberToObject(al_j, "greedy_steps", info.greedy_steps);
        if (p.allocator == ALLOC_LPVIT) {
            cJSON_AddNumberToObject(al_j, "log2_slope", info.lpvit_slope);
            cJSON_AddNumberToObject(al_j, "search_probes", info.lpvit_iterations);
            cJSON_AddNumberToObject(al_j, "topup_blocks", info.lpvit_topup);
            cJSON_AddNumberToObject(al_j, "beta", info.lpvit_beta);
        }
        if (p.update != LPV_UPDATE_NONE) {
            cJSON *ru = cJSON_AddObjectToObject(r, "reconstruction");
            cJSON_AddStringToObject(ru, "update", lpv_update_name(p.update));
            cJSON_AddBoolToObject(ru, "sequential", p.sequential);
            cJSON_AddNumberToObject(ru, "images", rds.n);
            cJSON_AddNumberToObject(ru, "damp", o.damp);
            cJSON_AddNumberToObject(ru, "max_damp_used", rinfo.max_damp);
            cJSON_AddNumberToObject(ru, "factorizations_retried", rinfo.retried);
            cJSON_AddNumberToObject(ru, "seconds", t_recon);
            if (!p.sequential) {
                cJSON *le = cJSON_AddArrayToObject(ru, "relative_output_error");
                for (int i = 0; i < np; i++) {
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "layer", pl[i].sal.name);
                    cJSON_AddNumberToObject(e, "masked_only", rinfo.err_masked[pl[i].idx]);
                    cJSON_AddNumberToObject(e, "updated", rinfo.err_updated[pl[i].idx]);
                    cJSON_AddItemToArray(le, e);
                }
            }
            if (rinfo.heads_refit) {
                cJSON *hj = cJSON_AddObjectToObject(ru, "heads");
                cJSON_AddNumberToObject(hj, "refit", rinfo.heads_refit);
                cJSON_AddNumberToObject(hj, "damp", o.head_damp);
                cJSON_AddNumberToObject(hj, "logit_error_before", rinfo.logit_err_before);
                cJSON_AddNumberToObject(hj, "logit_error_after", rinfo.logit_err_after);
            }
            if (o.tune_epochs > 0) { /* only with a sequential refit (checked with the flags) */
                cJSON *tj = cJSON_AddObjectToObject(ru, "block_tuning");
                cJSON_AddNumberToObject(tj, "epochs", o.tune_epochs);
                cJSON_AddNumberToObject(tj, "lr", o.tune_lr);
                cJSON_AddNumberToObject(tj, "batch", o.tune_batch);
                cJSON_AddNumberToObject(tj, "seconds", rinfo.tune_seconds); /* final step only */
                cJSON_AddNumberToObject(tj, "blocks_reverted", rinfo.tune_reverted);
                cJSON *be = cJSON_AddArrayToObject(tj, "relative_output_error");
                for (int l = 0; l < rinfo.tuned_blocks && l < LPV_MAX_DEPTH; l++) {
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddNumberToObject(e, "block", l);
                    cJSON_AddNumberToObject(e, "refit", rinfo.tune_before[l]);
                    cJSON_AddNumberToObject(e, "tuned", rinfo.tune_after[l]);
                    cJSON_AddItemToArray(be, e);
                }
            }
        }
        if (ri.rounds) {
            cJSON *rf = cJSON_AddObjectToObject(r, "refine");
            cJSON_AddNumberToObject(rf, "rounds", ri.rounds);
            cJSON_AddNumberToObject(rf, "images", o.refine_images);
            cJSON_AddNumberToObject(rf, "seconds", ri.seconds);
            cJSON *fa = cJSON_AddArrayToObject(rf, "layers");
            for (int i = 0; i < np; i++) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "layer", pl[i].sal.name);
                cJSON_AddNumberToObject(e, "curve_scale", ri.factor[i] > 0 ? ri.factor[i] : 1.0);
                cJSON_AddNumberToObject(e, "kl_last_probe", ri.kl_measured[i]);
                cJSON_AddItemToArray(fa, e);
            }
        }
        cJSON *ph = cJSON_AddObjectToObject(r, "wall_s");
        cJSON_AddNumberToObject(ph, "load", pt.load);
        cJSON_AddNumberToObject(ph, "calibration_list", pt.list);
        cJSON_AddNumberToObject(ph, "permutation", pt.permute);
        cJSON_AddNumberToObject(ph, "statistics", pt.stats);
        cJSON_AddNumberToObject(ph, "saliency", pt.saliency);
        cJSON_AddNumberToObject(ph, "cost_model", pt.cost);
        cJSON_AddNumberToObject(ph, "allocation", pt.alloc - ri.seconds);
        cJSON_AddNumberToObject(ph, "refine", ri.seconds);
        cJSON_AddNumberToObject(ph, "reconstruction", t_recon);
        cJSON_AddNumberToObject(ph, "write", pt.write);
        cJSON_AddNumberToObject(ph, "total", lpv_now() - t_start);
        lpv_report_environment(r);
        if (human) {
            printf("\nprunable FLOPs  %.4f kept (target %.4f): %.3f of %.3f GMACs per image, %s %dx%d, %s + %s\n",
                   achieved, o.target, kept_macs / 1e9, dense_macs / 1e9, "blocks", p.R, p.C, lpv_saliency_name(p.sal),
                   ALLOC_NAMES[p.allocator]);
            printf("whole model     %.3f -> %.3f GMACs (attention %.3f GMACs is not prunable)\n", whole_dense / 1e9,
                   whole_kept / 1e9, mm.attention_macs / 1e9);
            printf("energy proxy    %.3f of the dense pruned layers%s\n", e1 / e0, "");
            if (t0 > 0) printf("predicted       %.2fx faster pruned layers (time table)\n", t0 / t1);
            if (rinfo.heads_refit)
                printf("heads refit     logits' relative error on the calibration images %.4f -> %.4f\n",
                       rinfo.logit_err_before, rinfo.logit_err_after);
            printf("wall time       %.1fs (channel sort %.1fs, statistics %.1fs%s, saliency %.2fs, cost %.2fs, allocation %.2fs, "
                   "refine %.1fs, update %.1fs, write %.2fs)\n",
                   lpv_now() - t_start, pt.permute, pt.stats, ncached == nsteps ? " from cache" : ncached ? " partly cached" : "", pt.saliency, pt.cost,
                   pt.alloc - ri.seconds, ri.seconds, t_recon, pt.write);
            printf("wrote           %s\n", o.out);
        }
        if (o.report) st = lpv_json_write(r, o.report, &err);
        cJSON_Delete(r);
    }
    free(al), free(k), free(pl);
    lpv_time_table_free(&tt);
    lpv_arena_free(&work);
    lpv_calib_free(&cs);
    lpv_model_stats_free(&ist);
fail_perm:
    lpv_perm_free(&perm);
fail_ds:
    lpv_dataset_free(&ds);
fail_model:
    cli_close_model(&cm);
    return st ? cli_fail(&err, st) : 0;
}
