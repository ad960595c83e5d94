/*
 * test_prune.c — the pipeline as a library call (prune.h) on the 2-layer
 * DeiT-Tiny fixture model (../shared/fixtures; the same architecture with
 * random weights when ../shared is absent) and the committed mini ImageFolder:
 *   - options: defaults, the "auto" choices, and errors naming the option;
 *   - lpv_prune: the FLOPs target met, masks equal to the BSR layers, excluded
 *     layers left dense, the same result twice, the file written and read back;
 *   - one unreadable image is skipped and counted, and gives the same model as
 *     the folder without it; a folder of mostly unreadable images fails;
 *   - the statistics cache: hit on a rerun, missed when the seed or the block
 *     shape changes;
 *   - the power objective ranks blocks by energy: the energy kept is no more
 *     than the FLOPs objective keeps at the same target;
 *   - precision: a bf16 run allocates with a bf16 cost table's curves and
 *     records bf16 in the file; fp32 / int8 tables are refused naming the
 *     file and both precisions; timing bf16 on an ISA without it is refused
 *     before any work;
 *   - progress reaches the installed callback with an ETA, and nothing else is
 *     needed to run (no CLI).
 */
#include <unistd.h>

#include "lpvit/calib.h"
#include "lpvit/cpu.h"
#include "lpvit/fileio.h"
#include "lpvit/forward.h"
#include "lpvit/log.h"
#include "lpvit/prune.h"
#include "lpvit/report.h"
#include "test.h"

static char g_fixture[1024];

static lpv_model *load_model(void) {
    lpv_model *m = NULL;
    lpv_err err;
    if (g_fixture[0]) {
        lpv_model_opts mo = {3, 0, 0};
        CHECK_OK(lpv_model_load(&m, g_fixture, &mo, &err), &err);
        return m;
    }
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 192, c.depth = 2, c.heads = 3, c.mlp = 768, c.patch = 16, c.img = 224, c.chans = 3, c.classes = 1000;
    c.n_prefix = 1, c.n_outputs = 1;
    CHECK_OK(lpv_model_random(&m, &c, 5, &err), &err);
    return m;
}

static lpv_preproc preproc_of(const lpv_model *m) {
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = m->cfg.img;
    return pp;
}

static void open_folder(lpv_dataset *ds, const char *dir) {
    lpv_synsets syn;
    lpv_err err;
    CHECK_OK(lpv_synsets_load(&syn, lpv_synsets_default_path(), &err), &err);
    CHECK_OK(lpv_dataset_imagefolder(ds, dir, &syn, &err), &err);
    lpv_synsets_free(&syn);
}

/* The options every run here shares: 16x16 blocks (the fixture is 192 wide), all 12 images; the default
   pipeline (channel sort, sequential refit, heads) in two steps. */
static lpv_prune_opts small_opts(double target) {
    lpv_prune_opts o = lpv_prune_defaults();
    o.target_flops = target;
    o.block_R = o.block_C = 16;
    o.calib_batch = 4;
    return o;
}

typedef struct {
    lpv_model *m;
    lpv_prune_result r;
    lpv_status st;
    lpv_err err;
} run_out;

static run_out prune_on(const lpv_dataset *ds, const lpv_prune_opts *o) {
    run_out out;
    memset(&out, 0, sizeof out);
    out.m = load_model();
    lpv_preproc pp = preproc_of(out.m);
    lpv_calib_set calib = {ds, &pp};
    out.st = lpv_prune(out.m, &calib, o, &out.r, &out.err);
    return out;
}

static void run_free(run_out *o) {
    lpv_prune_result_free(&o->r);
    lpv_model_free(o->m);
}

/* Largest relative difference between two runs' pruned weights and biases: 0 when bit for bit the same;
   -1 when they pruned other blocks. */
static double model_diff(const run_out *a, const run_out *b) {
    if (a->r.n_layers != b->r.n_layers) return -1;
    lpv_layer_ref ra[LPV_MAX_LAYERS], rb[LPV_MAX_LAYERS];
    int n = lpv_model_layers(a->m, ra, LPV_MAX_LAYERS);
    lpv_model_layers(b->m, rb, LPV_MAX_LAYERS);
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        const lpv_linear *x = ra[i].lin, *y = rb[i].lin;
        if (!x->bsr != !y->bsr) return -1;
        const float *xv = x->bsr ? x->bsr->values : x->w, *yv = y->bsr ? y->bsr->values : y->w;
        int64_t nv = x->bsr ? x->bsr->nnzb * x->bsr->R * x->bsr->C : (int64_t)x->out * x->in;
        if (x->bsr && (x->bsr->nnzb != y->bsr->nnzb ||
                       memcmp(x->bsr->col_idx, y->bsr->col_idx, sizeof(int32_t) * (size_t)x->bsr->nnzb) != 0))
            return -1;
        for (int64_t q = 0; q < nv; q++) num = fmax(num, fabs(xv[q] - yv[q])), den = fmax(den, fabs(yv[q]));
        for (int q = 0; q < x->out; q++) num = fmax(num, fabs(x->b[q] - y->b[q]));
    }
    return den > 0 ? num / den : num;
}

static void test_options(void) {
    lpv_err err;
    lpv_prune_opts d = lpv_prune_defaults(), r;
    CHECK(isnan(d.target_flops) && d.block_R == 32 && d.block_C == 32 && d.saliency == LPV_SAL_TAYLOR2);
    CHECK(lpv_prune_resolve(&d, &r, &err) == LPV_E_ARG && strcmp(err.param, "target_flops") == 0);
    /* taylor2: greedy, self-ce, lsq refit, sequential, channels sorted, one step per 0.125 of FLOPs removed */
    d.target_flops = 0.5;
    CHECK_OK(lpv_prune_resolve(&d, &r, &err), &err);
    CHECK(r.precision == LPV_PREC_FP32 && r.allocator == LPV_ALLOC_GREEDY && r.loss == LPV_LOSS_SELF_CE &&
          r.update == LPV_UPDATE_LSQ && r.sequential == 1 && r.permute == 1 && r.steps == 4 && r.refine == 0 &&
          r.refit_heads == 1 && lpv_prune_needs_images(&r));
    /* the baselines keep plain masks in one step */
    lpv_prune_opts l1 = d;
    l1.saliency = LPV_SAL_L1;
    CHECK_OK(lpv_prune_resolve(&l1, &r, &err), &err);
    CHECK(r.allocator == LPV_ALLOC_UNIFORM && r.update == LPV_UPDATE_NONE && r.sequential == 0 && r.permute == 0 &&
          r.steps == 1 && r.refit_heads == 0 && !lpv_prune_needs_images(&r));
    lpv_prune_opts lp = d;
    lp.saliency = LPV_SAL_LPVIT;
    CHECK_OK(lpv_prune_resolve(&lp, &r, &err), &err);
    CHECK(r.allocator == LPV_ALLOC_LPVIT && r.loss == LPV_LOSS_MEAN_SQ && r.permute == 0);
    lpv_prune_opts fi = d;
    fi.saliency = LPV_SAL_FISHER;
    CHECK_OK(lpv_prune_resolve(&fi, &r, &err), &err);
    CHECK(r.refine == 2 && r.update == LPV_UPDATE_NONE); /* measured KL repairs the curves when nothing else does */
    /* every error names the option at fault */
    struct {
        const char *param;
        lpv_prune_opts o;
    } bad[9];
    for (int i = 0; i < 9; i++) bad[i].o = d;
    bad[0].param = "min_density", bad[0].o.min_density = 1;
    bad[1].param = "block", bad[1].o.block_C = 24;
    bad[2].param = "sequential", bad[2].o.sequential = 1, bad[2].o.update = LPV_UPDATE_NONE;
    bad[3].param = "allocator", bad[3].o.allocator = LPV_ALLOC_LPVIT;
    bad[4].param = "objective", bad[4].o.objective = LPV_OBJ_POWER, bad[4].o.allocator = LPV_ALLOC_UNIFORM;
    bad[5].param = "tune_epochs", bad[5].o.tune_epochs = 2, bad[5].o.update = LPV_UPDATE_BIAS;
    bad[6].param = "refine", bad[6].o.refine = 1, bad[6].o.saliency = LPV_SAL_L1;
    bad[7].param = "damp", bad[7].o.damp = 0;
    bad[8].param = "precision", bad[8].o.precision = LPV_PREC_COUNT;
    for (int i = 0; i < 9; i++) {
        lpv_status st = lpv_prune_resolve(&bad[i].o, &r, &err);
        CHECKF(st == LPV_E_ARG && strcmp(err.param, bad[i].param) == 0 && !strstr(err.msg, "--"),
               "%s: status %d, param '%s', msg '%s'", bad[i].param, (int)st, err.param, err.msg);
    }
}

/* A prune, checked against the model it left behind. */
static void check_result(const run_out *o, const lpv_dataset *ds, double target) {
    const lpv_prune_result *r = &o->r;
    CHECK_OK(o->st, &o->err);
    if (o->st) return;
    int depth = o->m->cfg.depth;
    CHECKF(r->n_layers == 4 * depth, "%d layers pruned", r->n_layers); /* patch_embed and head excluded */
    CHECKF(fabs(r->achieved_flops - target) <= 0.005, "achieved %.4f for %.4f", r->achieved_flops, target);
    CHECK(r->n_steps == 2 && r->step_target[1] == target && r->step_target[0] > r->step_target[1]);
    CHECK(r->calib_images == ds->n && r->samples_used == ds->n && r->recon.heads_refit > 0);
    CHECK(!o->m->patch.bsr && !o->m->head.bsr);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    lpv_model_layers(o->m, refs, LPV_MAX_LAYERS);
    double kept = 0;
    for (int i = 0; i < r->n_layers; i++) {
        const lpv_pruned_layer *e = &r->layers[i];
        const lpv_bsr *b = refs[e->index].lin->bsr;
        CHECKF(b && strcmp(refs[e->index].name, e->name) == 0, "layer %s", e->name);
        if (!b) continue;
        uint8_t *mask = malloc((size_t)e->blocks_total);
        lpv_bsr_mask(b, mask);
        int ones = 0;
        for (int q = 0; q < e->blocks_total; q++) ones += e->mask[q] != 0;
        CHECKF(memcmp(mask, e->mask, (size_t)e->blocks_total) == 0 && ones == e->blocks_kept && b->nnzb == ones,
               "%s: the model's blocks are not the result's mask", e->name);
        CHECK(ones >= (int)ceil(0.05 * e->blocks_total - 1e-9)); /* min density */
        kept += e->gmacs_kept;
        free(mask);
    }
    CHECK(fabs(kept * 1e9 - r->kept_macs) <= 1e-6 * r->kept_macs);
    /* the pruned model still runs */
    lpv_workspace ws;
    lpv_err err;
    float *x = calloc((size_t)3 * 224 * 224, sizeof(float)), logits[1000];
    CHECK_OK(lpv_workspace_init(&ws, &o->m->cfg, 1, &err), &err);
    CHECK_OK(lpv_forward(o->m, &ws, x, 1, logits, &err), &err);
    int finite = 1;
    for (int j = 0; j < 1000; j++) finite &= isfinite(logits[j]) != 0;
    CHECK(finite);
    lpv_workspace_free(&ws);
    free(x);
}

/* The file and the report say what the result says. */
static void test_save_report(const run_out *o, const char *tmp) {
    lpv_err err;
    char path[512];
    snprintf(path, sizeof path, "%s/pruned.safetensors", tmp);
    lpv_preproc pp = preproc_of(o->m);
    CHECK_OK(lpv_prune_save(o->m, &o->r, &pp, path, &err), &err);
    lpv_model *back = NULL;
    CHECK_OK(lpv_model_load(&back, path, NULL, &err), &err);
    if (back) {
        CHECK(back->lpvit_meta && strstr(back->lpvit_meta, "\"achieved_flops_ratio\""));
        CHECK(fabs(lpv_model_linear_density(back) - o->r.linear_density) < 1e-12);
        lpv_model_free(back);
    }
    cJSON *rep = lpv_prune_report(o->m, &o->r, &pp, path);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(rep, "layers");
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(rep, "settings");
    const cJSON *sal = cJSON_GetObjectItemCaseSensitive(set, "saliency");
    CHECK(cJSON_GetArraySize(layers) == o->r.n_layers && cJSON_IsString(sal) && strcmp(sal->valuestring, "taylor2") == 0);
    char *txt;
    CHECK_OK(lpv_json_print(rep, "test", &txt, &err), &err); /* every number finite */
    free(txt);
    cJSON_Delete(rep);
}

/* ---- progress and log capture ---- */

static struct {
    int events, finished, eta_ok, bad, warnings;
    char last_warning[512];
} g_seen;

static void on_log(lpv_log_level lv, const char *msg, void *u) {
    (void)u;
    if (lv == LPV_LOG_WARN) {
        g_seen.warnings++;
        snprintf(g_seen.last_warning, sizeof g_seen.last_warning, "%s", msg);
    }
}

static void on_progress(const lpv_progress_event *ev, void *u) {
    (void)u;
    g_seen.events++;
    g_seen.finished += ev->finished;
    g_seen.bad += ev->done > ev->total || ev->done < 0 || !ev->label[0];
    g_seen.eta_ok += !ev->finished && ev->done > 0 && ev->eta_s >= 0;
}

/* A copy of the mini folder with `broken` unreadable files added at the end of its last class, after every
   readable image: the batches of readable images stay those of the clean folder. */
static void folder_with_broken(const char *tmp, const char *name, int broken, char *dir, size_t cap) {
    char cmd[2048];
    snprintf(dir, cap, "%s/%s", tmp, name);
    snprintf(cmd, sizeof cmd, "cp -r '%s/tests/data/imagenet-mini' '%s'", LPVIT_SOURCE_DIR, dir);
    CHECK(system(cmd) == 0);
    for (int i = 0; i < broken; i++) {
        snprintf(cmd, sizeof cmd, "%s/n15075141/zz_broken%d.JPEG", dir, i);
        CHECK_OK(lpv_write_file_atomic(cmd, "not a jpeg", 10, &(lpv_err){0}), &(lpv_err){0});
    }
}

static void test_skips(const lpv_dataset *clean, const run_out *ref, const char *tmp) {
    char dir[1024];
    folder_with_broken(tmp, "one-broken", 1, dir, sizeof dir);
    lpv_dataset ds;
    open_folder(&ds, dir);
    CHECK(ds.n == clean->n + 1);
    memset(&g_seen, 0, sizeof g_seen);
    lpv_prune_opts o = small_opts(0.75);
    run_out got = prune_on(&ds, &o);
    CHECK_OK(got.st, &got.err);
    CHECKF(got.r.skipped.n == 1 && strstr(got.r.skipped.paths[0], "zz_broken0.JPEG"), "%d skipped", got.r.skipped.n);
    CHECK(g_seen.warnings >= 1 && strstr(g_seen.last_warning, "broken0.JPEG"));
    /* every pass skipped the same image, so the result is the clean folder's, bit for bit */
    double d = got.st == LPV_OK ? model_diff(&got, ref) : -1;
    CHECKF(d == 0, "the pruned model differs from the clean folder's (%g)", d);
    run_free(&got);
    lpv_dataset_free(&ds);
    /* more unreadable files than images: a wrong folder, not bad luck */
    folder_with_broken(tmp, "mostly-broken", 20, dir, sizeof dir);
    open_folder(&ds, dir);
    got = prune_on(&ds, &o);
    CHECKF(got.st == LPV_E_DATA && strstr(got.err.msg, "could not be read"), "%d: %s", (int)got.st, got.err.msg);
    run_free(&got);
    lpv_dataset_free(&ds);
}

/* a wrote the cache, b read it; a change of seed or block shape must miss it (plain masks, one step: only
   the statistics matter here). */
static void test_cache(const lpv_dataset *ds, const run_out *a, const run_out *b, const char *cache) {
    CHECK(a->st == LPV_OK && !a->r.stats_from_cache && lpv_file_exists(a->r.cache_file));
    CHECK(b->st == LPV_OK && b->r.stats_from_cache && strcmp(a->r.cache_file, b->r.cache_file) == 0);
    lpv_prune_opts o = small_opts(0.75);
    o.cache_dir = cache, o.update = LPV_UPDATE_NONE, o.refine = 0;
    run_out hit = prune_on(ds, &o);
    lpv_prune_opts seed = o, block = o;
    seed.seed = 7;
    block.block_R = 32;
    run_out c = prune_on(ds, &seed), d = prune_on(ds, &block);
    CHECK(hit.st == LPV_OK && hit.r.stats_from_cache); /* the same inputs as a's first step */
    CHECK(c.st == LPV_OK && !c.r.stats_from_cache);
    CHECK(d.st == LPV_OK && !d.r.stats_from_cache);
    /* statistics on half the images: their own cache entry, the refit still on all */
    lpv_prune_opts half = o;
    half.stats_images = ds->n / 2;
    run_out h = prune_on(ds, &half);
    CHECK_OK(h.st, &h.err);
    CHECKF(!h.r.stats_from_cache && h.r.stats_images == ds->n / 2 && h.r.samples_used == ds->n / 2 &&
               h.r.recon_images == ds->n && strcmp(h.r.cache_file, a->r.cache_file) != 0,
           "stats_images %d: %d statistics images, %lld samples, %d refit images, from cache %d", half.stats_images,
           h.r.stats_images, (long long)h.r.samples_used, h.r.recon_images, h.r.stats_from_cache);
    CHECK(hit.r.stats_images == ds->n);
    run_free(&hit), run_free(&c), run_free(&d), run_free(&h);
}

/* Step checkpoints: the second run of the same options resumed after step 1 (a ran it and saved it) and came
   out bit for bit as the first, and as a run with no cache at all; a damaged checkpoint is ignored with a
   warning and the step runs again, to the same model; lpvit cache lists the checkpoint as a fresh file. */
/* The refit's passes on lpvit's kernels (its target packed, BSR where the step before pruned; each refit layer
   packed for its block's later passes) against the same refit multiplying every zero with OpenBLAS: the same
   blocks kept, weights within float rounding amplified by the least squares. */
static void test_refit_packs(const lpv_dataset *ds, const run_out *a) {
    lpv_prune_opts o = small_opts(0.75);
    o.refit_dense = 1;
    run_out d = prune_on(ds, &o);
    CHECK_OK(d.st, &d.err);
    double diff = model_diff(a, &d);
    printf("refit on BSR packs vs dense passes: largest weight difference %.3g of the largest weight\n", diff);
    /* 8.4e-4 on AVX-512 after two steps of least squares; a wrong pack (a stale weight, a dropped block) is O(1) */
    CHECKF(diff >= 0 && diff < 5e-3, "refit packs: masks differ or weights moved by %g", diff);
    CHECK(lpv_refit_packs_pay() ? diff > 0 : diff == 0); /* the packs ran (another summation order) or not */
    CHECK(a->r.recon.packed == lpv_refit_packs_pay() && !d.r.recon.packed); /* and the report says which */
    run_free(&d);
}

static void test_checkpoints(const lpv_dataset *ds, const run_out *a, const run_out *b, const char *cache) {
    CHECKF(a->r.steps_resumed == 0 && b->r.steps_resumed == 1, "resumed %d then %d steps", a->r.steps_resumed,
           b->r.steps_resumed);
    lpv_prune_opts o = small_opts(0.75);
    run_out fresh = prune_on(ds, &o); /* no cache */
    CHECK(fresh.st == LPV_OK && fresh.r.steps_resumed == 0 && model_diff(a, &fresh) == 0);
    lpv_calib_entry *v = NULL;
    int n = 0, steps = 0;
    lpv_err err;
    CHECK_OK(lpv_calib_cache_scan(cache, &v, &n, &err), &err);
    char step_file[1200] = "";
    for (int i = 0; i < n; i++)
        if (strncmp(v[i].name, "step-", 5) == 0) {
            steps++;
            CHECKF(!v[i].stale && v[i].status == LPV_OK && strcmp(v[i].format, LPV_STEP_FORMAT) == 0,
                   "%s: stale %d status %d format '%s'", v[i].name, v[i].stale, (int)v[i].status, v[i].format);
            snprintf(step_file, sizeof step_file, "%s/%s", cache, v[i].name);
        }
    free(v);
    CHECKF(steps == 1, "%d step checkpoints in the cache, want 1 (step 1 of 2)", steps);
    if (!step_file[0]) {
        run_free(&fresh);
        return;
    }
    /* damaged: half the file */
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(lpv_read_file(step_file, &buf, &len, (size_t)1 << 30, &err), &err);
    CHECK_OK(lpv_write_file_atomic(step_file, buf, len / 2, &err), &err);
    o.cache_dir = cache;
    int warned = g_seen.warnings;
    run_out again = prune_on(ds, &o);
    CHECK(again.st == LPV_OK && again.r.steps_resumed == 0 && g_seen.warnings > warned);
    CHECK(model_diff(a, &again) == 0);
    free(buf);
    run_free(&again), run_free(&fresh);
}

static double energy_ratio(const lpv_prune_result *r) {
    double e0 = 0, e1 = 0;
    for (int i = 0; i < r->n_layers; i++) e0 += r->layers[i].energy_pj_dense, e1 += r->layers[i].energy_pj_kept;
    return e1 / e0;
}

/* The power objective ranks blocks by distortion per energy saved instead of per FLOP: with the head (one
   token per image, where weight traffic dominates the energy) prunable, it keeps less energy. */
static void test_power(const lpv_dataset *ds) {
    lpv_prune_opts o = small_opts(0.6);
    o.update = LPV_UPDATE_NONE, o.refine = 0, o.exclude = "patch_embed";
    run_out f = prune_on(ds, &o);
    o.objective = LPV_OBJ_POWER;
    run_out p = prune_on(ds, &o);
    CHECK_OK(f.st, &f.err);
    CHECK_OK(p.st, &p.err);
    if (!f.st && !p.st) {
        double ef = energy_ratio(&f.r), ep = energy_ratio(&p.r);
        printf("energy kept at FLOPs 0.6: flops objective %.4f, power objective %.4f\n", ef, ep);
        CHECKF(ep < ef, "power objective kept %.4f of the energy, flops objective %.4f", ep, ef);
        CHECK(fabs(p.r.achieved_flops - 0.6) <= 0.005 && p.r.opts.objective == LPV_OBJ_POWER);
    }
    run_free(&f), run_free(&p);
}

/* A cost table of `prec` for every linear layer of the model: times that scale with the layer's size, and a
   precision-specific slope, so each precision's curve at d = 1 is a different number. */
static void write_table(const char *path, lpv_precision prec, int R, int C) {
    lpv_model *m = load_model();
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_time_curve cv[LPV_MAX_LAYERS];
    double f = prec == LPV_PREC_BF16 ? 0.5 : prec == LPV_PREC_INT8 ? 0.25 : 1.0;
    for (int i = 0; i < n; i++) {
        double s = (double)refs[i].lin->out * refs[i].lin->in / 1e5;
        cv[i] = (lpv_time_curve){refs[i].lin->out, refs[i].lin->in, refs[i].tokens, R, C, 2, {0.5, 1.0},
                                 {0.6 * s * f, s * f}, s * f};
    }
    lpv_time_table t;
    memset(&t, 0, sizeof t);
    t.curves = cv, t.n = n, t.precision = prec, t.threads = 2, t.batch = 1;
    lpv_err err;
    CHECK_OK(lpv_time_table_save(&t, path, &err), &err);
    lpv_model_free(m);
}

/* --precision bf16 in the library: the speed objective allocates with a bf16 table's curves, and refuses the
   other precisions' tables with the file, what it holds and what the run needs. */
static void test_precision(const lpv_dataset *ds, const char *tmp) {
    char t32[512], t16[512], t8[512], cache[512];
    snprintf(t32, sizeof t32, "%s/t32.json", tmp), snprintf(t16, sizeof t16, "%s/t16.json", tmp);
    snprintf(t8, sizeof t8, "%s/t8.json", tmp), snprintf(cache, sizeof cache, "%s/cache_prec", tmp);
    write_table(t32, LPV_PREC_FP32, 16, 16), write_table(t16, LPV_PREC_BF16, 16, 16);
    write_table(t8, LPV_PREC_INT8, 16, 16);
    lpv_prune_opts o = small_opts(0.7);
    o.update = LPV_UPDATE_NONE, o.refine = 0, o.objective = LPV_OBJ_SPEED, o.precision = LPV_PREC_BF16;
    o.cache_dir = cache;
    const char *other[2] = {t32, t8}, *held[2] = {"fp32", "int8"};
    for (int i = 0; i < 2; i++) {
        o.cost_table = other[i];
        run_out x = prune_on(ds, &o);
        char want[96];
        snprintf(want, sizeof want, "holds %s times but the pruned model will run in bf16", held[i]);
        CHECKF(x.st == LPV_E_ARG && strcmp(x.err.param, "cost_table") == 0 && strstr(x.err.msg, other[i]) &&
                   strstr(x.err.msg, want) && strstr(x.err.msg, "--precision bf16") && !strchr(x.err.msg, '\n'),
               "%s table with precision bf16: status %d, '%s'", held[i], (int)x.st, x.err.msg);
        run_free(&x);
    }
    o.cost_table = t16;
    run_out b = prune_on(ds, &o);
    CHECK_OK(b.st, &b.err);
    lpv_time_table tt;
    lpv_err err;
    CHECK_OK(lpv_time_table_load(&tt, t16, &err), &err);
    if (b.st == LPV_OK) {
        CHECK(b.r.opts.precision == LPV_PREC_BF16 && fabs(b.r.achieved_flops - 0.7) <= 0.005);
        for (int i = 0; i < b.r.n_layers; i++) { /* every layer's cost is the bf16 table's time, not another one */
            const lpv_pruned_layer *e = &b.r.layers[i];
            const lpv_time_curve *c = lpv_time_table_find(&tt, e->out, e->in, e->tokens, 16, 16);
            CHECKF(c && fabs(e->time_ms_dense - lpv_time_curve_at(c, 1.0)) <= 1e-12 * c->dense_ms &&
                       fabs(e->time_ms_kept - lpv_time_curve_at(c, e->density)) <= 0.02 * c->dense_ms,
                   "%s: time %g, the bf16 table says %g", e->name, e->time_ms_dense, c ? lpv_time_curve_at(c, 1.0) : -1);
        }
        /* the file says which precision it was pruned for: the weights alone cannot */
        char path[512];
        snprintf(path, sizeof path, "%s/bf16.safetensors", tmp);
        lpv_preproc pp = preproc_of(b.m);
        CHECK_OK(lpv_prune_save(b.m, &b.r, &pp, path, &err), &err);
        lpv_model *back = NULL;
        CHECK_OK(lpv_model_load(&back, path, NULL, &err), &err);
        CHECK(back && back->lpvit_meta && strstr(back->lpvit_meta, "\"precision\":\"bf16\""));
        lpv_model_free(back);
    }
    lpv_time_table_free(&tt);
    run_free(&b);
    /* timing bf16 kernels on an ISA without them is refused before the statistics (a given table needs none) */
    lpv_isa best = lpv_isa_best();
    if (best >= LPV_ISA_AVX2) {
        CHECK_OK(lpv_isa_set(LPV_ISA_AVX2, &err), &err);
        o.cost_table = NULL;
        run_out u = prune_on(ds, &o);
        CHECKF(u.st == LPV_E_UNSUPPORTED && strcmp(u.err.param, "precision") == 0 && strstr(u.err.msg, "avx512bf16") &&
                   u.r.seconds.stats == 0,
               "bf16 timing under avx2: status %d, '%s'", (int)u.st, u.err.msg);
        run_free(&u);
        o.cost_table = t16; /* a bf16 table measured elsewhere: fine on any ISA */
        run_out g = prune_on(ds, &o);
        CHECK_OK(g.st, &g.err);
        run_free(&g);
        CHECK_OK(lpv_isa_set(best, &err), &err);
    }
}

int main(void) {
    lpv_threads_set(2);
    const char *shared = test_shared_dir();
    if (shared) snprintf(g_fixture, sizeof g_fixture, "%s/fixtures/timm_deit_tiny_d2.safetensors", shared);
    if (shared && !lpv_file_exists(g_fixture)) g_fixture[0] = 0;
    printf("model: %s\n", g_fixture[0] ? g_fixture : "random 2-layer DeiT-Tiny (no ../shared)");
    lpv_log_set(on_log, on_progress, NULL);
    char tmp[] = "/tmp/lpvit_prune_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    test_options();
    lpv_dataset ds;
    open_folder(&ds, LPVIT_SOURCE_DIR "/tests/data/imagenet-mini");
    memset(&g_seen, 0, sizeof g_seen);
    char cache[512];
    snprintf(cache, sizeof cache, "%s/cache", tmp);
    lpv_prune_opts o = small_opts(0.75);
    o.cache_dir = cache;
    run_out a = prune_on(&ds, &o), b = prune_on(&ds, &o);
    check_result(&a, &ds, 0.75);
    CHECK(g_seen.events > 0 && g_seen.finished > 0 && g_seen.eta_ok > 0 && g_seen.bad == 0);
    CHECK(b.st == LPV_OK && model_diff(&a, &b) == 0); /* statistics from the cache give the same model */
    if (a.st == LPV_OK) {
        test_save_report(&a, tmp);
        test_skips(&ds, &a, tmp);
        test_cache(&ds, &a, &b, cache);
        test_checkpoints(&ds, &a, &b, cache);
        test_refit_packs(&ds, &a);
    }
    test_power(&ds);
    test_precision(&ds, tmp);
    /* an exclude list that names no layer is refused before any work */
    lpv_prune_opts ex = small_opts(0.75);
    ex.exclude = "blocks.9.*";
    run_out e = prune_on(&ds, &ex);
    CHECK(e.st == LPV_E_ARG && strcmp(e.err.param, "exclude") == 0);
    run_free(&e);
    run_free(&a), run_free(&b);
    lpv_dataset_free(&ds);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0);
    lpv_log_set(NULL, NULL, NULL);
    return test_finish("test_prune");
}
