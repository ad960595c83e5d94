/*
 * prune_opts.c — the pipeline's options: defaults, checks, and the "auto"
 * choices (see include/lpvit/prune.h). Each auto default is what the
 * measurements in docs/pruning.md chose.
 */
#include <math.h>
#include <string.h>

#include "lpvit/blocktune.h"
#include "lpvit/recon.h"
#include "prune/prune_internal.h"

LPV_ENUM_FUNCS(lpv_allocator, lpv_allocator_name, lpv_allocator_parse, LPV_ALLOCATOR_LIST, LPV_ALLOC_COUNT, "allocator")

lpv_prune_opts lpv_prune_defaults(void) {
    lpv_prune_opts o;
    memset(&o, 0, sizeof o);
    o.target_flops = NAN;
    o.block_R = 32, o.block_C = 32;
    o.exclude = "patch_embed,head";
    o.min_density = 0.05;
    o.saliency = LPV_SAL_TAYLOR2;
    o.loss = -1;
    o.calib_size = 2000, o.calib_batch = 8;
    o.allocator = LPV_ALLOC_AUTO;
    o.objective = LPV_OBJ_FLOPS;
    o.energy = lpv_energy_default();
    o.refine = -1, o.refine_images = 32;
    o.lpvit_h = 4, o.lpvit_smooth = 0.5;
    o.permute = -1, o.permute_images = 256;
    o.update = -1, o.sequential = -1;
    o.damp = LPV_RECON_DAMP;
    o.refit_heads = 1, o.head_damp = LPV_HEAD_DAMP;
    o.tune_lr = (double)lpv_tune_defaults().lr, o.tune_batch = lpv_tune_defaults().batch;
    return o;
}

static int block_side_ok(int s) { return s == 8 || s == 16 || s == 32 || s == 64; }

/* The ranges of the numeric options. */
static lpv_status check_ranges(const lpv_prune_opts *o, lpv_err *err) {
    if (!(o->target_flops > 0 && o->target_flops <= 1))
        return lpv_fail_param(err, LPV_E_ARG, "target_flops", "expected a ratio in (0, 1], got %g", o->target_flops);
    if (!(o->min_density >= 0 && o->min_density < 1))
        return lpv_fail_param(err, LPV_E_ARG, "min_density", "expected [0, 1), got %g", o->min_density);
    if (!block_side_ok(o->block_R) || !block_side_ok(o->block_C))
        return lpv_fail_param(err, LPV_E_ARG, "block", "expected R x C with R, C in {8, 16, 32, 64}, got %dx%d",
                              o->block_R, o->block_C);
    if (!(o->damp > 0 && o->damp < 10)) return lpv_fail_param(err, LPV_E_ARG, "damp", "expected (0, 10), got %g", o->damp);
    if (!(o->lambda_power >= 0))
        return lpv_fail_param(err, LPV_E_ARG, "lambda_power", "expected >= 0, got %g", o->lambda_power);
    if (o->calib_size < 1) return lpv_fail_param(err, LPV_E_ARG, "calib_size", "expected >= 1, got %d", o->calib_size);
    if (o->calib_batch < 1) return lpv_fail_param(err, LPV_E_ARG, "calib_batch", "expected >= 1, got %d", o->calib_batch);
    if (!(o->tune_lr > 0)) return lpv_fail_param(err, LPV_E_ARG, "tune_lr", "must be above 0, got %g", o->tune_lr);
    if (!(o->head_damp > 0)) return lpv_fail_param(err, LPV_E_ARG, "head_damp", "must be above 0, got %g", o->head_damp);
    if (o->steps < 0 || o->steps > LPV_MAX_STEPS)
        return lpv_fail_param(err, LPV_E_ARG, "steps", "expected 0 (auto) .. %d, got %d", LPV_MAX_STEPS, o->steps);
    if (o->tune_epochs < 0 || o->tune_batch < 1 || o->refine_images < 1 || o->permute_images < 1 || o->recon_images < 0 ||
        o->stats_images < 0)
        return lpv_fail(err, LPV_E_ARG, "negative or zero counts among tune_epochs, tune_batch, refine_images, "
                                        "permute_images, recon_images, stats_images");
    if ((unsigned)o->saliency >= LPV_SAL_COUNT || (unsigned)o->objective >= LPV_OBJ_COUNT)
        return lpv_fail(err, LPV_E_ARG, "saliency or objective out of range");
    if ((unsigned)o->precision >= LPV_PREC_COUNT)
        return lpv_fail_param(err, LPV_E_ARG, "precision", "out of range (%d)", (int)o->precision);
    return LPV_OK;
}

/* The criterion decides the allocator, the loss and the channel sort unless they are given. */
static lpv_status resolve_criterion(lpv_prune_opts *p, lpv_err *err) {
    lpv_saliency_kind s = p->saliency;
    if (p->allocator == LPV_ALLOC_AUTO)
        p->allocator = s == LPV_SAL_LPVIT ? LPV_ALLOC_LPVIT : s == LPV_SAL_L1 ? LPV_ALLOC_UNIFORM : LPV_ALLOC_GREEDY;
    if ((unsigned)p->allocator >= LPV_ALLOC_COUNT)
        return lpv_fail_param(err, LPV_E_ARG, "allocator", "out of range (%d)", (int)p->allocator);
    if (p->allocator == LPV_ALLOC_LPVIT && s != LPV_SAL_LPVIT)
        return lpv_fail_param(err, LPV_E_ARG, "allocator", "lpvit works on LPViT's curves: it needs the lpvit saliency");
    if (p->allocator != LPV_ALLOC_GREEDY && p->objective != LPV_OBJ_FLOPS)
        return lpv_fail_param(err, LPV_E_ARG, "objective",
                              "%s needs the greedy allocator (the lpvit allocator has LPViT's own power term)",
                              lpv_objective_name(p->objective));
    if (p->loss < 0) p->loss = s == LPV_SAL_LPVIT ? LPV_LOSS_MEAN_SQ : LPV_LOSS_SELF_CE;
    if (p->loss >= LPV_LOSS_COUNT) return lpv_fail_param(err, LPV_E_ARG, "loss", "out of range (%d)", p->loss);
    if (p->permute < 0) p->permute = !(s == LPV_SAL_L1 || s == LPV_SAL_LPVIT);
    p->permute = p->permute != 0;
    return LPV_OK;
}

/* taylor2, the default criterion, runs the whole corrected pipeline unless told otherwise: channels sorted,
   masks, then a sequential least-squares refit in steps; the baselines (l1, lpvit) and the other criteria
   keep plain masks by default. */
static lpv_status resolve_update(lpv_prune_opts *p, lpv_err *err) {
    if (p->update < 0) p->update = p->saliency == LPV_SAL_TAYLOR2 ? LPV_UPDATE_LSQ : LPV_UPDATE_NONE;
    if (p->update >= LPV_UPDATE_COUNT) return lpv_fail_param(err, LPV_E_ARG, "update", "out of range (%d)", p->update);
    int refits = p->update == LPV_UPDATE_LSQ || p->update == LPV_UPDATE_OBS;
    if (p->sequential > 0 && !refits)
        return lpv_fail_param(err, LPV_E_ARG, "sequential", "refits weights: it needs the lsq or obs update");
    if (p->sequential < 0) p->sequential = refits;
    p->sequential = p->sequential != 0;
    /* removing FLOPs a step at a time pays off only when each step's cut is repaired (sequential refit)
       before the next is chosen: one step per 0.125 of FLOPs removed */
    if (p->steps == 0) {
        int n = p->update == LPV_UPDATE_NONE || !p->sequential ? 1 : (int)ceil((1.0 - p->target_flops) / 0.125 - 1e-9);
        p->steps = n < 1 ? 1 : n > LPV_MAX_STEPS ? LPV_MAX_STEPS : n;
    }
    if (p->tune_epochs > 0 && !(p->sequential && p->update != LPV_UPDATE_NONE))
        return lpv_fail_param(err, LPV_E_ARG, "tune_epochs", "needs a sequential refit (the lsq or obs update)");
    /* the heads need the pruned model's own final features, which only the sequential pass has */
    p->refit_heads = p->refit_heads && p->sequential && p->update != LPV_UPDATE_NONE;
    return LPV_OK;
}

/* Measured-KL refinement helps the greedy gradient criteria when no update repairs the cut. */
static lpv_status resolve_refine(lpv_prune_opts *p, lpv_err *err) {
    lpv_saliency_kind s = p->saliency;
    int gradient = s == LPV_SAL_TAYLOR2 || s == LPV_SAL_FISHER || s == LPV_SAL_OBS || s == LPV_SAL_WANDA;
    if (p->refine < 0) p->refine = gradient && p->allocator == LPV_ALLOC_GREEDY && p->update == LPV_UPDATE_NONE ? 2 : 0;
    if (p->refine > 0 && p->allocator != LPV_ALLOC_GREEDY)
        return lpv_fail_param(err, LPV_E_ARG, "refine", "needs the greedy allocator");
    return LPV_OK;
}

lpv_status lpv_prune_resolve(const lpv_prune_opts *o, lpv_prune_opts *out, lpv_err *err) {
    lpv_prune_opts p = *o;
    LPV_TRY(check_ranges(&p, err));
    LPV_TRY(resolve_criterion(&p, err));
    LPV_TRY(resolve_update(&p, err));
    LPV_TRY(resolve_refine(&p, err));
    *out = p;
    return LPV_OK;
}

int lpv_prune_needs_images(const lpv_prune_opts *p) {
    return lpv_prune_needs_stats(p) || lpv_prune_needs_inputs(p) || p->refine > 0;
}
