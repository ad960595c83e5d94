/*
 * prune_flags.c — the flags `lpvit prune` and `lpvit sweep` share (prune_flags.h).
 */
#include <assert.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "lpvit/log.h"
#include "prune_flags.h"

void prune_flags_init(prune_flags *f) {
    memset(f, 0, sizeof *f);
    cli_model_args_init(&f->ma);
    f->p = lpv_prune_defaults();
    f->block = "32x32", f->saliency = "taylor2", f->objective = "flops";
}

static int copy_rows(cli_opt *rows, const cli_opt *src, size_t bytes) {
    int n = (int)(bytes / sizeof *src);
    assert(n <= PRUNE_ROWS_MAX);
    memcpy(rows, src, bytes);
    return n;
}

int prune_rows_input(prune_flags *f, cli_opt *rows) {
    const cli_opt r[] = {
        {"--model", OPT_MODEL, &f->ma.model, "M", "preset (deit_b, vit_t, ...), .safetensors or HF folder", 0, 0, NULL},
        {"--weights", OPT_IN, &f->ma.weights, "FILE", "weights for a preset --model", 0, 0, NULL},
        {"--calib-dir", OPT_IN, &f->calib_dir, "DIR", "calibration images: any folder, flat or nested (labels, i.e. an ImageNet DIR/<wnid>/*.JPEG, only for --loss ce)", 0, 0, NULL},
        {"--calib-size", OPT_INT, &f->p.calib_size, "N", "calibration images (seeded choice, sorted)", 1, 10000000, NULL},
        {"--calib-batch", OPT_INT, &f->p.calib_batch, "N", "images per forward/backward pass", 1, 1024, NULL},
        {"--synsets", OPT_IN, &f->synsets, "FILE", "class order for the calibration folder", 0, 0, NULL},
    };
    return copy_rows(rows, r, sizeof r);
}

int prune_rows_method(prune_flags *f, cli_opt *rows) {
    const cli_opt r[] = {
        {"--block", OPT_STR, &f->block, "RxC", "block shape, R output rows x C input columns, each of 8/16/32/64", 0, 0, NULL},
        {"--saliency", OPT_STR, &f->saliency, "S", "taylor2, fisher, lpvit, l1, obs (block OBS on the input Gram) or wanda", 0, 0, NULL},
        {"--allocator", OPT_STR, &f->allocator, "A", "greedy, uniform or lpvit (default: lpvit for lpvit, uniform for l1, else greedy)", 0, 0, NULL},
        {"--objective", OPT_STR, &f->objective, "O", "what a pruned block buys: flops, speed, power, speed+power", 0, 0, NULL},
        {"--lambda-power", OPT_DOUBLE, &f->p.lambda_power, "x", "weight of energy against time for speed+power", 0, 0, NULL},
        {"--cost-table", OPT_IN, &f->p.cost_table, "FILE", "measured BSR times (lpvit bench --calibrate)", 0, 0, NULL},
        {"--energy-mac", OPT_DOUBLE, &f->e_mac, "pJ", "energy per multiply-add (default 4.6)", 0, 0, NULL},
        {"--energy-dram-byte", OPT_DOUBLE, &f->e_dram, "pJ", "energy per weight byte from DRAM (default 160)", 0, 0, NULL},
        {"--energy-cache-byte", OPT_DOUBLE, &f->e_cache, "pJ", "energy per activation byte from cache (default 1.25)", 0, 0, NULL},
        {"--exclude", OPT_STR, &f->p.exclude, "LIST", "layers never pruned: names or globs, comma-separated, or none", 0, 0, NULL},
        {"--min-density", OPT_DOUBLE, &f->p.min_density, "d", "every pruned layer keeps at least this fraction of blocks", 0, 0, NULL},
        {"--loss", OPT_STR, &f->loss, "L", "calibration loss: self-ce, kl, ce, mean-sq (default self-ce; lpvit: mean-sq)", 0, 0, NULL},
        {"--lpvit-as-released", OPT_FLAG, &f->p.lpvit_as_released, NULL, "lpvit: final masks by block magnitude, like LPViT's released code", 0, 0, NULL},
        {"--lpvit-smooth", OPT_DOUBLE, &f->p.lpvit_smooth, "w", "lpvit: EMA weight of curve smoothing (0 = off)", 0, 0.999, NULL},
        {"--lpvit-h", OPT_INT, &f->p.lpvit_h, "H", "lpvit: stencil half-width of the slope", 1, 50, NULL},
        {"--lpvit-power", OPT_FLAG, &f->p.lpvit_power, NULL, "lpvit: add LPViT's power term (auto beta)", 0, 0, NULL},
        {"--refine", OPT_INT, &f->p.refine, "N", "rounds of scaling each layer's curve by its measured KL (default 2 for greedy criteria without a weight update, else 0)", 0, 20, NULL},
        {"--refine-images", OPT_INT, &f->p.refine_images, "M", "calibration images the refinement measures KL on", 1, 100000, NULL},
        {"--update", OPT_STR, &f->update, "U", "weight update after masking: none, bias, lsq (exact least squares), obs (SparseGPT); default lsq for taylor2, else none", 0, 0, NULL},
        {"--permute", OPT_STR, &f->permute, "P", "sort: order channels by importance first, so blocks group what matters (same function), or none; default sort except for the l1/lpvit baselines", 0, 0, NULL},
        {"--permute-images", OPT_INT, &f->p.permute_images, "N", "calibration images (spread over the list) whose gradients order the channels", 1, 10000000, NULL},
        {"--sequential", OPT_FLAG, &f->sequential, NULL, "refit block by block on the pruned model's own inputs (lsq/obs; the default with them)", 0, 0, NULL},
        {"--no-sequential", OPT_FLAG, &f->no_sequential, NULL, "refit each layer from the dense model's statistics alone", 0, 0, NULL},
        {"--steps", OPT_INT, &f->p.steps, "N", "prune in N steps towards the target, each refit before the next (default: one per 0.125 of FLOPs removed with a sequential refit, else 1)", 0, LPV_MAX_STEPS, NULL},
        {"--tune-epochs", OPT_INT, &f->p.tune_epochs, "E", "block-wise reconstruction in the final step: after each block's sequential refit, E passes of Adam fitting its kept weights to the dense block's outputs (0 = off)", 0, 1000, NULL},
        {"--tune-lr", OPT_DOUBLE, &f->p.tune_lr, "x", "block tuning: Adam's peak learning rate, cosine decay", 0, 1, NULL},
        {"--tune-batch", OPT_INT, &f->p.tune_batch, "N", "block tuning: images per Adam step", 1, 256, NULL},
        {"--recon-images", OPT_INT, &f->p.recon_images, "N", "calibration images for input statistics (default: all)", 1, 10000000, NULL},
        {"--stats-images", OPT_INT, &f->p.stats_images, "N", "calibration images (spread over the list) for the saliency's gradient statistics (default: all)", 1, 10000000, NULL},
        {"--damp", OPT_DOUBLE, &f->p.damp, "x", "Hessian damping, a fraction of its mean diagonal", 0, 0, NULL},
        {"--refit-dense", OPT_FLAG, &f->p.refit_dense, NULL, "run the refit's passes on OpenBLAS over every weight, zeros included, instead of lpvit's packed kernels (a check: the same blocks, weights within float rounding)", 0, 0, NULL},
        {"--no-refit-heads", OPT_FLAG, &f->no_refit_heads, NULL, "keep the classifier heads as they are (by default a sequential refit also refits them, least squares towards the input model's logits)", 0, 0, NULL},
        {"--head-damp", OPT_DOUBLE, &f->p.head_damp, "x", "damping of the heads' refit, a fraction of its mean diagonal (one token per image: stronger than --damp)", 0, 0, NULL},
        {"--seed", OPT_INT, &f->seed, "S", "seed for calibration choice and sampling", 0, 2147483647, NULL},
        {"--cache-dir", OPT_STR, &f->cache_dir, "DIR", "calibration statistics cache (default ~/.cache/lpvit)", 0, 0, NULL},
        {"--precision", OPT_STR, &f->precision, "P", "fp32, bf16 or int8: the precision the pruned model will run at (eval/infer/bench --precision); the speed objectives allocate with its kernels' times, a --cost-table must hold them, and the file records it; the weights stay FP32 (default fp32; int8 with --quant int8)", 0, 0, NULL},
    };
    return copy_rows(rows, r, sizeof r);
}

int prune_rows_runtime(prune_flags *f, cli_opt *rows) {
    const cli_opt r[] = {
        CLI_OPT_HEADS(&f->ma.heads),
        CLI_OPTS_PREPROC(f->ma),
        CLI_OPT_ALLOW_EXTRA(&f->ma.allow_extra),
        CLI_OPT_THREADS(&f->threads),
        CLI_OPT_ISA(&f->isa),
        CLI_OPT_QUIET(&f->ma.quiet),
    };
    return copy_rows(rows, r, sizeof r);
}

/* The string flags, parsed into the library's options ("auto" stays when a flag is absent). */
static lpv_status flags_to_opts(prune_flags *f, lpv_err *err) {
    lpv_prune_opts *p = &f->p;
    LPV_TRY(cli_parse_block(f->block, &p->block_R, &p->block_C, err));
    LPV_TRY(lpv_saliency_parse(f->saliency, &p->saliency, err));
    if (f->allocator) LPV_TRY(lpv_allocator_parse(f->allocator, &p->allocator, err));
    LPV_TRY(lpv_objective_parse(f->objective, &p->objective, err));
    if (f->loss) {
        lpv_loss_kind loss;
        LPV_TRY(lpv_loss_parse(f->loss, &loss, err));
        p->loss = (int)loss;
    }
    if (f->update) {
        lpv_update_kind upd;
        LPV_TRY(lpv_update_parse(f->update, &upd, err));
        p->update = (int)upd;
    }
    if (f->permute && strcmp(f->permute, "sort") != 0 && strcmp(f->permute, "none") != 0)
        return lpv_fail_param(err, LPV_E_ARG, "permute", "expected sort or none, got '%s'", f->permute);
    if (f->permute) p->permute = strcmp(f->permute, "sort") == 0;
    if (f->sequential && f->no_sequential)
        return lpv_fail(err, LPV_E_ARG, "--sequential and --no-sequential contradict each other");
    if (f->sequential || f->no_sequential) p->sequential = f->sequential;
    p->refit_heads = !f->no_refit_heads;
    p->seed = (uint64_t)f->seed;
    if (f->e_mac > 0) p->energy.mac_pj = f->e_mac;
    if (f->e_dram > 0) p->energy.dram_byte_pj = f->e_dram;
    if (f->e_cache > 0) p->energy.cache_byte_pj = f->e_cache;
    if (f->precision) LPV_TRY(lpv_precision_parse(f->precision, &p->precision, err));
    if (f->quant && strcmp(f->quant, "int8") == 0) { /* an int8 file runs in int8: its allocation is for int8 */
        if (f->precision && p->precision != LPV_PREC_INT8)
            return lpv_fail(err, LPV_E_ARG, "--quant int8 writes an int8 model, which runs in int8: --precision %s "
                            "contradicts it", f->precision);
        p->precision = LPV_PREC_INT8;
    }
    return LPV_OK;
}

/* The calibration list. A loss with a target of its own (ce) needs labels: an ImageFolder in the synsets'
 * class order. The others need none: an ImageNet ImageFolder is still read as one (the same list, order and
 * cache key as before), and any other folder, flat or nested, gives its images unlabeled. */
lpv_status prune_open_calib(const prune_flags *f, int needs_labels, lpv_dataset *ds, lpv_err *err) {
    memset(ds, 0, sizeof *ds);
    if (!lpv_is_dir(f->calib_dir)) return lpv_fail(err, LPV_E_IO, "--calib-dir '%s' is not a directory", f->calib_dir);
    lpv_synsets syn;
    lpv_status st = lpv_synsets_load(&syn, f->synsets ? f->synsets : lpv_synsets_default_path(), err);
    if (st == LPV_OK) {
        st = lpv_dataset_imagefolder(ds, f->calib_dir, &syn, err);
        lpv_synsets_free(&syn);
    }
    if (st == LPV_OK || st == LPV_E_OOM) return st;
    if (needs_labels) return lpv_wrap(err, st, "--loss ce needs class labels");
    if (f->synsets) return st; /* the user asked for these classes */
    LPV_TRY(lpv_dataset_unlabeled(ds, f->calib_dir, err));
    lpv_info("calibration: '%s' is not an ImageNet class folder; its %d images are used unlabeled (the loss needs "
             "no labels)", f->calib_dir, ds->n);
    return LPV_OK;
}


int prune_flags_prepare(prune_flags *f, lpv_prune_opts *resolved) {
    lpv_err err;
    lpv_status st = flags_to_opts(f, &err);
    if (st == LPV_OK) st = lpv_prune_resolve(&f->p, resolved, &err);
    if (st) return cli_fail(&err, st);
    if (lpv_prune_needs_images(resolved) && !f->calib_dir)
        return cli_usage_error("--calib-dir is required for --saliency %s%s", f->saliency,
                               resolved->refine ? " and --refine" : "");
    /* the default cache is best effort (a warning when it cannot be written); one the user names must work */
    if (f->cache_dir && !f->no_cache && access(f->cache_dir, F_OK) == 0 && !lpv_is_dir(f->cache_dir))
        return cli_usage_error("--cache-dir '%s' exists and is not a folder", f->cache_dir);
    cli_cache_dir(f->cache_buf, sizeof f->cache_buf, f->cache_dir);
    f->p.cache_dir = resolved->cache_dir = f->no_cache ? NULL : f->cache_buf;
    if (!f->p.cost_table && (resolved->objective == LPV_OBJ_SPEED || resolved->objective == LPV_OBJ_SPEED_POWER))
        lpv_info("tip: save the BSR time table once with lpvit bench --calibrate and pass --cost-table to skip timing");
    if ((st = cli_runtime(f->threads, f->isa, &err)) != LPV_OK) return cli_fail(&err, st);
    return 0;
}
