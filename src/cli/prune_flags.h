/*
 * prune_flags.h — the pruning flags `lpvit prune` and `lpvit sweep` share:
 * their option rows, their translation into lpv_prune_opts, the cache folder,
 * and opening the calibration folder. One table, so the two commands cannot
 * drift apart in spelling, ranges or defaults.
 */
#ifndef LPVIT_CLI_PRUNE_FLAGS_H
#define LPVIT_CLI_PRUNE_FLAGS_H

#include "cli.h"
#include "lpvit/dataset.h"
#include "lpvit/prune.h"

/* What the flags give before they become lpv_prune_opts: strings, and flags whose absence means "auto". */
typedef struct {
    cli_model_args ma;
    lpv_prune_opts p;
    const char *calib_dir, *synsets, *block, *saliency, *allocator, *objective, *loss, *update, *permute;
    const char *cache_dir, *isa, *quant, *precision;
    double e_mac, e_dram, e_cache;
    int seed, threads, no_cache, sequential, no_sequential, no_refit_heads;
    char cache_buf[1024]; /* the resolved cache folder p.cache_dir points to */
} prune_flags;

void prune_flags_init(prune_flags *f);

/* The shared rows, in three groups for the help's order; each writes its rows to `rows` and returns how many
 * (at most PRUNE_ROWS_MAX). input: --model .. --synsets; method: --block .. --cache-dir; runtime: --heads,
 * preprocessing, --allow-extra, --threads, --isa, --quiet. */
enum { PRUNE_ROWS_MAX = 40 };
int prune_rows_input(prune_flags *f, cli_opt *rows);
int prune_rows_method(prune_flags *f, cli_opt *rows);
int prune_rows_runtime(prune_flags *f, cli_opt *rows);

/* After parsing: the options resolved into *resolved (f->p keeps the "auto" ones), --calib-dir required when
 * needed, the cache folder settled, --threads/--isa applied. Returns 0, or the exit code after printing
 * one line. `cmd` names the command in messages. */
int prune_flags_prepare(prune_flags *f, lpv_prune_opts *resolved);

/* The calibration list (labels only when the loss needs them: --loss ce). */
lpv_status prune_open_calib(const prune_flags *f, int needs_labels, lpv_dataset *ds, lpv_err *err);

#endif
