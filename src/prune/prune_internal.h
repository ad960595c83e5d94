/*
 * prune_internal.h — what the pipeline's files (prune.c, prune_opts.c,
 * prune_report.c) share about resolved options. Not installed.
 */
#ifndef LPVIT_PRUNE_INTERNAL_H
#define LPVIT_PRUNE_INTERNAL_H

#include "lpvit/prune.h"

/* The criterion needs gradient statistics (every one but l1 and the input-statistics criteria). */
static inline int lpv_prune_needs_stats(const lpv_prune_opts *o) {
    return o->saliency != LPV_SAL_L1 && o->saliency != LPV_SAL_OBS && o->saliency != LPV_SAL_WANDA;
}

/* The criterion or the weight update needs the layers' input statistics. */
static inline int lpv_prune_needs_inputs(const lpv_prune_opts *o) {
    return o->saliency == LPV_SAL_OBS || o->saliency == LPV_SAL_WANDA || o->update != LPV_UPDATE_NONE;
}

#endif
