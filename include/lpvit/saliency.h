/*
 * saliency.h — how much each weight block of a linear layer matters, and the
 * per-layer distortion curve the allocators trade against cost.
 *
 * For a layer cut into R x C blocks (nb of them), a criterion gives
 *   order[nb]      the blocks in pruning order, least important first
 *   curve[nb + 1]  estimated loss increase after pruning order[0..k), curve[0] = 0
 *   score[nb]      the per-block number the order sorts by (for reports)
 * Criteria (research/lpvit.md §2, §5):
 *   l1       mean |w| per block; curve = running sum of block L1 norms (magnitude baseline)
 *   fisher   ½ Σ_block F w², F = empirical Fisher diagonal (mean of squared per-sample grads)
 *   taylor2  ½ w_bᵀ F_bb w_b − g_b · w_b: the second-order Taylor loss change of zeroing the
 *            block, with the block's full empirical Fisher F_bb = mean_n g_n,b g_n,bᵀ (so
 *            w_bᵀ F_bb w_b = mean_n (g_n,b · w_b)², correlations inside the block included) and g
 *            the mean gradient; curves are in loss units, so layers compare directly. g may be
 *            NULL: for a loss whose target is the dense model's own output it carries no signal.
 *   lpvit    LPViT's code, faithfully: order by mean |w·g|; curve on its 101-point grid of
 *            pruned fractions, D1 = mean((Δw⊙g)²) + S2 (its rank-1 "Fisher" term with the
 *            over-counting increment), optional EMA smoothing; linear between grid points.
 *            With as_released, the order is block-mean |w| (what LPViT's saved masks use).
 * Memory: arrays come from the caller's arena.
 */
#ifndef LPVIT_SALIENCY_H
#define LPVIT_SALIENCY_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/error.h"
#include "lpvit/model.h"
#include "lpvit/names.h"

#define LPV_SALIENCY_LIST(X)                                                                              \
    X(LPV_SAL_L1, "l1") X(LPV_SAL_FISHER, "fisher") X(LPV_SAL_TAYLOR2, "taylor2") X(LPV_SAL_LPVIT, "lpvit")   \
    X(LPV_SAL_OBS, "obs") X(LPV_SAL_WANDA, "wanda")
typedef enum { LPV_SALIENCY_LIST(LPV_ENUM_VALUE) LPV_SAL_COUNT } lpv_saliency_kind;

const char *lpv_saliency_name(lpv_saliency_kind k);
lpv_status lpv_saliency_parse(const char *s, lpv_saliency_kind *out, lpv_err *err);

#define LPV_LPVIT_GRID 101

typedef struct {
    char name[64];          /* timm module name */
    lpv_layer_kind kind;
    int out, in, R, C;
    int nbr, nbc, nb;       /* block rows, block columns, blocks */
    int tokens;             /* columns multiplied per image */
    int32_t *order;         /* (nb) */
    double *curve;          /* (nb + 1) */
    float *score;           /* (nb) */
    int64_t *elems;         /* (nb + 1) weights removed after pruning order[0..k) (partial edge blocks are smaller) */
    double *grid;           /* (LPV_LPVIT_GRID) lpvit only: the curve on LPViT's grid, else NULL */
} lpv_layer_sal;

typedef struct {
    const float *w; /* (out, in) dense weight */
    const float *g; /* (out, in) mean gradient (taylor2, lpvit) or NULL */
    const float *f; /* (out, in) Fisher diagonal (fisher) or NULL */
    const float *bf;/* (nbr, nbc) block second moments mean_n (g_n,b · w_b)² (taylor2) or NULL */
    const double *block_scores; /* (nbr, nbc) obs / wanda scores */
    double norm;                /* obs / wanda: ‖W X‖², divides the curve */
} lpv_sal_inputs;

typedef struct {
    int as_released;     /* lpvit: order blocks by mean |w| like LPViT's saved masks */
    double smooth;       /* lpvit: EMA weight of LPViT's --smooth_curve, 0 = off */
    int second_order;    /* lpvit: add the S2 term (LPViT --second_order) */
} lpv_sal_opts;

/* Fills s (name/kind/tokens set by the caller beforehand) for one layer. */
lpv_status lpv_saliency_layer(lpv_saliency_kind kind, const lpv_sal_inputs *in, const lpv_sal_opts *o, int out,
                              int in_features, int R, int C, lpv_layer_sal *s, lpv_arena *a, lpv_err *err);

/* Naive reference of the block sums used above: sum over block (br, bc) of f(w, g, F) (tests). */
double lpv_block_sum_ref(const float *x, const float *y, const float *z, int out, int in, int R, int C, int br, int bc,
                         int what);

#endif
