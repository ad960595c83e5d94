/*
 * prune_internal.h — what the pipeline's files (prune.c, prune_opts.c,
 * prune_report.c) share about resolved options. Not installed.
 */
#ifndef LPVIT_PRUNE_INTERNAL_H
#define LPVIT_PRUNE_INTERNAL_H

#include "lpvit/prune.h"
#include "lpvit/reconstruct.h"

/* The criterion needs gradient statistics (every one but l1 and the input-statistics criteria). */
static inline int lpv_prune_needs_stats(const lpv_prune_opts *o) {
    return o->saliency != LPV_SAL_L1 && o->saliency != LPV_SAL_OBS && o->saliency != LPV_SAL_WANDA;
}

/* The criterion or the weight update needs the layers' input statistics. */
static inline int lpv_prune_needs_inputs(const lpv_prune_opts *o) {
    return o->saliency == LPV_SAL_OBS || o->saliency == LPV_SAL_WANDA || o->update != LPV_UPDATE_NONE;
}

/* ---- step checkpoints (prune_step.c) ----
 * What a finished step hands the next one: the pruned layers' refit weights and masks, the model's identity
 * at the step's start, the heads' targets recorded by step 1 (when recorded), and the counters the report
 * sums over steps. Saved in the statistics cache after every step but the last; a run whose chain of keys
 * finds one resumes after it. */
typedef struct {
    lpv_model *m;
    const lpv_layer_ref *refs; /* (nl) the model's linear layers */
    int nl;
    int block_R, block_C;
    uint8_t **masks;           /* (nl) the step's masks, NULL for layers it did not prune; load allocates */
    lpv_head_targets *heads;   /* saved when heads->x is set; load fills it when the file has them */
    char sha_at_start[65];     /* the model's identity when the step began */
    int step, images;          /* the step finished (0-based), the refit's images */
    int revived[LPV_MAX_STEPS];
    double max_damp;
    int retried;
} lpv__step_state;

lpv_status lpv__step_save(const char *path, const char *key, const lpv__step_state *s, lpv_err *err);
/* Restores the weights into s->m's layers and fills the rest. LPV_E_FORMAT (or LPV_E_IO): the file was made
 * for another key, does not match the model or cannot be read, and the model is untouched (the caller runs the
 * step instead); LPV_E_DATA: it failed while copying (the model is half restored: the caller must stop). */
lpv_status lpv__step_load(const char *path, const char *key, lpv__step_state *s, lpv_err *err);

#endif
