/*
 * permute.h — function-preserving channel permutations of a ViT, chosen so
 * that important weights share blocks before block pruning.
 *
 * A ViT's output does not change when, consistently across all tensors,
 *   resid  the D residual-stream channels are permuted (cls/dist token, pos
 *          embedding, patch-embed rows, every LayerNorm, the input columns of
 *          qkv/fc1/heads and the output rows of proj/fc2),
 *   mlp    the F hidden units of one block's MLP are permuted (fc1 rows and
 *          bias, fc2 columns),
 *   qk     the head_dim channels of one head's queries and keys are permuted
 *          together (q·k is a sum over them),
 *   v      the head_dim channels of one head's values are permuted with the
 *          matching proj input columns.
 * Block pruning, however, sees a different matrix: with channels sorted by
 * importance, unimportant weights gather in the same R x C blocks and a block
 * budget then removes less of what matters. lpv_perm_by_importance sorts every
 * group by its total element importance (e.g. Fisher-weighted w², or |w|),
 * most important first; lpv_model_permute applies a permutation in place.
 *
 * Memory: lpv_perm owns its index arrays (lpv_perm_free). The model must be
 * dense (no bsr / blocked copies): prune permutes before it packs anything.
 */
#ifndef LPVIT_PERMUTE_H
#define LPVIT_PERMUTE_H

#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/model.h"

typedef struct {
    int dim, depth, heads, head_dim, mlp;
    int32_t *resid; /* (D) new channel i is old channel resid[i] */
    int32_t *mlp_p; /* (depth, F) */
    int32_t *qk;    /* (depth, heads, head_dim) */
    int32_t *v;     /* (depth, heads, head_dim) */
} lpv_perm;

lpv_status lpv_perm_init(lpv_perm *p, const lpv_config *c, lpv_err *err);
void lpv_perm_identity(lpv_perm *p);
void lpv_perm_free(lpv_perm *p);
/* 1 when every array is a permutation of its range. */
int lpv_perm_valid(const lpv_perm *p);
/* 1 when every array is the identity. */
int lpv_perm_is_identity(const lpv_perm *p);
/* SHA-256 (hex) of the index arrays: identifies a permuted model in cache keys. */
void lpv_perm_digest(const lpv_perm *p, char out[65]);

/*
 * Chooses p from element importances: score[i] (out, in) for layer i of
 * lpv_model_layers' order, non-negative, NULL for a layer that is not pruned
 * (it then does not vote). Each group's channels are sorted by the sum of the
 * scores of every weight that reads or writes them, largest first (ties keep
 * the original order, so equal scores give the identity).
 */
lpv_status lpv_perm_by_importance(lpv_model *m, const float *const *score, lpv_perm *p, lpv_err *err);

/* Applies p to every weight of the dense model m, in place. m->sha256 (the source file's hash)
 * is left as it is: a caller that keys anything on the weights must add the digest. */
lpv_status lpv_model_permute(lpv_model *m, const lpv_perm *p, lpv_err *err);

#endif
