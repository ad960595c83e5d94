/*
 * alloc.h — choosing how many blocks each layer gives up so that the kept
 * FLOPs of the prunable layers meet a target, trading distortion (saliency
 * curves) against a hardware cost (cost.h).
 *
 * Input per layer: its saliency (order + curve over pruned-block counts), a
 * cost array cost[k] (objective cost after pruning k blocks, non-increasing),
 * the MACs each pruned weight saves (tokens), and the most blocks it may lose
 * (nb - min_keep). Output: k[l], blocks pruned per layer; the masks keep
 * order[k..nb).
 *
 *   greedy  repeatedly prunes the next block of the layer whose next step has
 *           the smallest Δdistortion / Δcost, until kept MACs <= target. With
 *           single-block steps the target is met to within one block.
 *   uniform the same fraction of blocks from every layer (LPViT's "Uniform" baseline,
 *           and the usual partner of magnitude ranking: global magnitude would
 *           compare weights of differently scaled layers); binary search on the
 *           fraction, then single blocks, each from the layer furthest behind
 *           the common fraction, to meet the target.
 *   lpvit   LPViT's equal-slope search (research/lpvit.md §2.8): per layer a
 *           5-point stencil derivative of the curve on its 101-point grid of
 *           pruned fractions, each layer at the grid point whose slope is
 *           closest to 2^s, capped at 1 - min_sp; s searched in [-100, 100]
 *           until the FLOPs ratio is within tol. LPViT binary-searches s, which
 *           assumes the ratio falls monotonically with s; the closest-slope rule
 *           is not monotone on non-convex curves, so s is scanned on a 0.05 grid
 *           instead. LPViT's fractions are on a 1% grid, so when no s lands
 *           within tol the allocation just above the target is topped up one
 *           block at a time by Δcurve/ΔFLOPs (reported). As LPViT's code does,
 *           min_sp is lowered to (1 - target) / 2 when that is smaller. A
 *           target below what the layers' kmax allow fails (LPV_E_ARG).
 *           Optional LPViT power term: curves += β·P, P = pruned fraction ×
 *           blocks × int(in/16) (224/16 for the patch embedding, as its code
 *           does), β = mean max D' / mean max P' (derivatives with h = 10).
 * No allocation is kept; scratch is freed before returning.
 */
#ifndef LPVIT_ALLOC_H
#define LPVIT_ALLOC_H

#include "lpvit/error.h"
#include "lpvit/saliency.h"

typedef struct {
    const lpv_layer_sal *sal;
    const double *cost; /* (nb + 1) objective cost after k pruned blocks */
    int kmax;           /* at most this many blocks pruned (nb - min_keep) */
} lpv_alloc_layer;

typedef struct {
    int greedy_steps;      /* blocks pruned by greedy steps */
    double lpvit_slope;    /* log2 of the matched slope (lpvit) */
    int lpvit_iterations;  /* binary-search probes (lpvit) */
    int lpvit_topup;       /* blocks added after the search to reach the target (lpvit) */
    double lpvit_beta;     /* power-term weight actually used (lpvit) */
} lpv_alloc_info;

/* Kept MACs per image of a layer after pruning k blocks (tokens × kept weights). */
double lpv_alloc_kept_macs(const lpv_layer_sal *s, int k);

lpv_status lpv_alloc_greedy(const lpv_alloc_layer *L, int n, double target_kept_macs, int *k, lpv_alloc_info *info,
                            lpv_err *err);

lpv_status lpv_alloc_uniform(const lpv_alloc_layer *L, int n, double target_kept_macs, int *k, lpv_alloc_info *info,
                             lpv_err *err);

typedef struct {
    int h;             /* stencil half-width (LPViT --h, default 4) */
    double min_sp;     /* LPViT min_sp: per-layer kept fraction floor */
    double tol;        /* |achieved - target| FLOPs ratio tolerance of the search */
    int power;         /* add LPViT's power term with auto β */
} lpv_lpvit_opts;

lpv_status lpv_alloc_lpvit(const lpv_alloc_layer *L, int n, double target_ratio, const lpv_lpvit_opts *o, int *k,
                           lpv_alloc_info *info, lpv_err *err);

#endif
