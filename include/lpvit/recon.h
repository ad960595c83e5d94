/*
 * recon.h — layer-wise reconstruction math for one linear layer
 *     Y (out, n) = W (out, in) · X (in, n) + b
 * on calibration inputs: the input statistics, per-block pruning scores, and
 * the weight updates that repair a layer after a FIXED R×C block mask has
 * been chosen (research/lpvit.md §5).
 *
 * Activations are feature-major as in linear.h: X is (in, n) row-major with
 * row stride ld >= n (rows = input features, columns = tokens). A block mask
 * is (nbr, nbc) = (ceil(out / R), ceil(in / C)) bytes, nonzero = keep; R, C in
 * {8, 16, 32, 64}; edge blocks may be partial.
 *
 * Statistics (lpv_layer_stats):
 *   H   (in, in)  Σ x xᵀ over the inputs the layer sees. lpv_stats_accumulate
 *                 updates ONLY the upper triangle (row-major, H[i·in + j] with
 *                 j >= i; the lower triangle stays 0). Every function here that
 *                 takes an H reads only its upper triangle, so a full
 *                 symmetric matrix works as well; lpv_stats_symmetrize mirrors
 *                 it for other users.
 *   sum (in)      Σ x, in double.
 *   amax (in)     max |x| per feature over the inputs (what SmoothQuant's
 *                 factors read, smooth.h); of x̃ in cross mode.
 *   G   (in, in)  cross statistics Σ x x̃ᵀ, full (cross mode only).
 * Sequential ("cross") mode: the layer of the pruned model sees x̃ while the
 * dense model's layer saw x for the same token. lpv_stats_accumulate_cross
 * then gathers H = Σ x̃ x̃ᵀ, sum = Σ x̃, G = Σ x x̃ᵀ and sum_dense = Σ x.
 *
 * Damping: δ = damp · mean(diag H) (damp = 0.01 by default, SparseGPT's; when
 * the diagonal is all zero or negative, δ = damp). A factorization that
 * fails is retried with max(damp, 0.001) × 10^a on retry a = 1..`retries`;
 * lpv_recon_info says what was used, and a failure after the last retry is
 * an error naming the layer (and the block row for lsq).
 *
 * Scores, one per block (nbr, nbc) in double, row-major:
 *   obs    ΔL(b) = ½ Σ_{r ∈ rows(b)} w_{r,Cb} ([Hd⁻¹]_{Cb,Cb})⁻¹ w_{r,Cb}ᵀ,
 *          Hd = H + δI: the minimum over the other weights of those rows of
 *          ½ [‖(W − Ŵ) X‖² + δ‖W − Ŵ‖²] when the block is removed (OBS/OBC).
 *   wanda  Σ_b |w_ij| · ‖x_j‖₂ with ‖x_j‖₂ = sqrt(H_jj).
 *   lpv_output_energy(W, H) = tr(W H Wᵀ) = ‖W X‖² (normalizes layers' curves;
 *   with W − Ŵ it is the layer's output error ‖(W − Ŵ) X‖²).
 *
 * Updates, W (out, in) in place; on entry W is the DENSE weight (the pruned
 * blocks' values define the target W X), on return pruned blocks are exactly 0:
 *   lsq   exact least squares per block row (its rows share the kept column
 *         set K):  Ŵ_{r,K} = argmin ‖W_r X − Ŵ_{r,K} X̃_K‖² + δ‖Ŵ_{r,K} − W_{r,K}‖²
 *                          = (W_r G_{:,K} + δ W_{r,K}) (H̃_KK + δI)⁻¹,
 *         G = Σ x x̃ᵀ (G == NULL: plain case, G = H̃ = H). The ridge pulls toward
 *         the dense weights, so a fully kept block row is left unchanged and
 *         the result is the exact OBS optimum under Hd (what lpv_score_obs
 *         scores and what lpv_recon_obs reaches when a row's pruned columns
 *         come first). opts.ridge_zero = 1 gives the plain ridge
 *         W_r G_{:,K} (H̃_KK + δI)⁻¹ instead. A block row with no kept block
 *         becomes 0. One Cholesky of |K|×|K| per block row, block rows split
 *         over lpv_threads_get() OpenMP threads.
 *   obs   SparseGPT's column sweep (arXiv 2301.00774, Alg. 1) for the fixed
 *         mask: U = upper Cholesky factor of Hd⁻¹ (Hd⁻¹ = Uᵀ U); columns left
 *         to right, each pruned w_ij gives e = w_ij / U_jj, w_{i,j+1:} −= e·U_{j,j+1:},
 *         w_ij = 0 (lazy batches of 128 columns, rows split over threads).
 *   bias  b ← b + W mean(x) − Ŵ mean(x̃) (mean_xt == NULL: x̃ = x), i.e.
 *         b + (W − Ŵ) mean(x): the mean output error becomes 0. Needs the
 *         dense W, so keep a copy before lsq / obs.
 *
 * Every optimized routine has a plain `_ref` next to it (double precision,
 * single thread, no lazy batching) that tests compare against.
 *
 * Memory: lpv_stats_init mallocs H, sum (and G, sum_dense) — 4·in² bytes each
 * matrix — and lpv_stats_free releases them. The scores and updates malloc
 * their scratch once per call (an in×in copy of H, plus per thread a
 * |K|max² matrix for lsq or a rows×128 panel for obs) and free it before
 * returning; nothing is allocated inside their loops. Outputs are caller-owned.
 *
 *     lpv_layer_stats s; lpv_stats_init(&s, in, 0, &err);
 *     for each batch: lpv_stats_accumulate(&s, X, ld, T);
 *     lpv_recon_opts o = lpv_recon_defaults();
 *     memcpy(W0, W, ...);  lpv_recon_lsq(W, out, in, 32, 32, mask, s.H, NULL, &o, &info, name, &err);
 *     lpv_stats_mean(&s, mean, NULL); lpv_recon_bias(b, W0, W, out, in, mean, NULL);
 *     lpv_stats_free(&s);
 */
#ifndef LPVIT_RECON_H
#define LPVIT_RECON_H

#include <stdint.h>

#include "lpvit/codebook.h"
#include "lpvit/error.h"

#define LPV_RECON_DAMP 0.01
#define LPV_RECON_RETRIES 3

typedef struct {
    int in;
    float *H;          /* (in, in) Σ x̃ x̃ᵀ, upper triangle (j >= i) accumulated */
    double *sum;       /* (in) Σ x̃ */
    float *amax;       /* (in) max |x̃| per feature */
    int64_t n;         /* columns (tokens) accumulated */
    float *G;          /* (in, in) Σ x x̃ᵀ, full; cross mode only, else NULL */
    double *sum_dense; /* (in) Σ x of the dense model; cross mode only, else NULL */
    /* projected cross mode instead of G: P = W G = Σ (W x) x̃ᵀ for the target's weights W (out, in). The lsq
       refit reads G only as W G, and for out < in (fc2: 768 x 3072) P costs W x plus (W x) x̃ᵀ, 4 · out · in
       flops a token against G's 2 · in². NULL otherwise. */
    float *P;          /* (out, in) */
    int out;
} lpv_layer_stats;

typedef struct {
    double damp;     /* δ = damp · mean(diag H), >= 0 */
    int retries;     /* failed factorizations retry with max(damp, 0.001) · 10^a, a = 1..retries, <= 12 */
    int ridge_zero;  /* lsq: ridge toward 0 instead of toward the dense weights */
} lpv_recon_opts;

typedef struct {
    double damp;     /* largest damp actually used (> opts.damp after a retry) */
    double delta;    /* the δ that went with it */
    int retried;     /* factorizations that needed more damping */
} lpv_recon_info;

/* {LPV_RECON_DAMP, LPV_RECON_RETRIES, 0} */
lpv_recon_opts lpv_recon_defaults(void);

/* ---- statistics ---- */

/* Zeroed statistics for `in` features; cross != 0 also allocates G and sum_dense. */
lpv_status lpv_stats_init(lpv_layer_stats *s, int in, int cross, lpv_err *err);
/* Zeroed projected cross statistics (P (out, in) and sum_dense instead of G). */
lpv_status lpv_stats_init_projected(lpv_layer_stats *s, int in, int out, lpv_err *err);
void lpv_stats_free(lpv_layer_stats *s);
/* Under mpirun (dist.h), collective: every rank's H, sum, n (and G or P, sum_dense) added, amax the ranks' maximum,
 * identical on all ranks afterwards; with one rank a no-op. */
lpv_status lpv_stats_sum_ranks(lpv_layer_stats *s, lpv_err *err);
/* H += X Xᵀ (upper triangle, ssyrk; row bands over the threads), sum += Σ x,
 * amax = max(amax, |x|), n += ncols. X (in, ncols) with row stride ld >= ncols. */
void lpv_stats_accumulate(lpv_layer_stats *s, const float *X, int ld, int ncols);
void lpv_stats_accumulate_ref(lpv_layer_stats *s, const float *X, int ld, int ncols);
/* The same with every column counted w >= 1 times: H += w X Xᵀ, sum += w Σ x, n += w · ncols.
 * scratch: in · ncols floats. */
void lpv_stats_accumulate_weighted(lpv_layer_stats *s, const float *X, int ld, int ncols, int w, float *scratch);
/* Cross mode: X (in, ncols) dense-model inputs, Xt (in, ncols) the pruned
 * model's inputs for the same tokens: H += X̃ X̃ᵀ, G += X X̃ᵀ (sgemm),
 * sum += Σ x̃, sum_dense += Σ x. */
void lpv_stats_accumulate_cross(lpv_layer_stats *s, const float *X, int ldx, const float *Xt, int ldxt, int ncols);
void lpv_stats_accumulate_cross_ref(lpv_layer_stats *s, const float *X, int ldx, const float *Xt, int ldxt,
                                    int ncols);
/* Projected cross mode: the same with P += (W X) X̃ᵀ in place of G. W (out, in) row-major, the same weights for
 * every call; scratch: out · ncols floats. */
void lpv_stats_accumulate_projected(lpv_layer_stats *s, const float *W, const float *X, int ldx, const float *Xt,
                                    int ldxt, int ncols, float *scratch);
/* What the dense side contributes to that, computed ahead (so only W X and Σ x need keeping, not X):
 * Y (out, ncols) with row stride ldy = W X; xsum (in), when not NULL, = Σ_t x per feature. */
void lpv_stats_project(const float *W, int out, int in, const float *X, int ldx, int ncols, float *Y, int ldy,
                       double *xsum);
/* lpv_stats_accumulate_projected from lpv_stats_project's Y and xsum: the same bits. */
void lpv_stats_accumulate_projected_y(lpv_layer_stats *s, const float *Y, int ldy, const double *xsum,
                                      const float *Xt, int ldxt, int ncols);
/* mean (in) = sum / n; mean_dense (in) = sum_dense / n when non-NULL (cross mode). */
void lpv_stats_mean(const lpv_layer_stats *s, double *mean, double *mean_dense);
/* Copies H's upper triangle onto its lower triangle. */
void lpv_stats_symmetrize(float *H, int in);
/* Hd (in, in) = full symmetric copy of H's upper triangle + δI; returns
 * δ = damp · mean(diag H) (damp when the diagonal is all zero). */
double lpv_damp_copy(const float *H, int in, double damp, float *Hd);

/* ---- scores (nbr, nbc) ---- */

lpv_status lpv_score_obs(const float *W, int out, int in, const float *H, int R, int C, const lpv_recon_opts *o,
                         double *score, lpv_recon_info *info, const char *name, lpv_err *err);
lpv_status lpv_score_obs_ref(const float *W, int out, int in, const float *H, int R, int C, const lpv_recon_opts *o,
                             double *score, lpv_recon_info *info, const char *name, lpv_err *err);
void lpv_score_wanda(const float *W, int out, int in, const float *H, int R, int C, double *score);
void lpv_score_wanda_ref(const float *W, int out, int in, const float *H, int R, int C, double *score);
/* *energy = tr(W H Wᵀ); fails only on out-of-memory. */
/* Fails (LPV_E_DATA) when W or H holds a non-finite value, rather than let NaN reach an allocator. */
lpv_status lpv_output_energy(const float *W, int out, int in, const float *H, double *energy, lpv_err *err);
double lpv_output_energy_ref(const float *W, int out, int in, const float *H);

/* ---- updates for a fixed mask ---- */

/* Zeroes W's pruned blocks (the masked-only baseline). */
void lpv_mask_apply(float *W, int out, int in, int R, int C, const uint8_t *mask);
/* mask (nb) <- 1 everywhere but the blocks order[0..k), the first k in pruning order (saliency.h): 0. */
void lpv_mask_from_order(uint8_t *mask, int nb, const int32_t *order, int k);
/* b (out) += W_dense mean_x − W_new mean_xt (mean_xt NULL: mean_x); mean_* (in). */
void lpv_recon_bias(float *b, const float *W_dense, const float *W_new, int out, int in, const double *mean_x,
                    const double *mean_xt);
/* ---- quantization with error feedback (GPTQ / OBQ, arXiv 2210.17323) ----
 *
 * A grid says which values row r of a quantized weight may take: scale[r] · v, with v
 *   LPV_QGRID_INT     an integer in -qmax..qmax (symmetric int8: qmax = 127), w / scale[r] rounded half to even
 *                     and clamped: what lpv_bsr_set_int8 computes for the same scale;
 *   LPV_QGRID_LEVELS  one of levels[0..k) (strictly increasing; a shared codebook), the nearest to w / scale[r]
 *                     (ties to the lower, lpv_codebook_nearest).
 * lpv_recon_quant puts every kept weight of W on the grid and every pruned one (mask; NULL = all kept) to 0,
 * column by column in `order` (a permutation of 0..in-1; NULL = 0, 1, ...), and spreads each column's rounding
 * error over the columns still to come so that ‖(W − Ŵ) X‖² stays small: the obs sweep above with "round"
 * in place of "prune" (GPTQ; with a mask, SparseGPT's joint pruning and quantization). order = the columns by
 * decreasing H_jj is GPTQ's act-order. On return W holds scale[r] · v exactly (float product) or 0. */
typedef enum { LPV_QGRID_INT = 0, LPV_QGRID_LEVELS = 1 } lpv_qgrid_kind;
typedef struct {
    lpv_qgrid_kind kind;
    const float *scale;  /* (out) finite and > 0 */
    int qmax;            /* INT */
    const float *levels; /* LEVELS: (k) */
    int k;
} lpv_qgrid;

/* The grid value nearest to w on row `row`. */
float lpv_qgrid_round(const lpv_qgrid *g, int row, float w);
/* order (in) <- the columns by decreasing H_jj (ties: lower index first): GPTQ's act-order. */
void lpv_quant_act_order(const float *H, int in, int32_t *order);
lpv_status lpv_recon_quant(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                           const lpv_qgrid *g, const int32_t *order, const lpv_recon_opts *o, lpv_recon_info *info,
                           const char *name, lpv_err *err);
/* The same sweep in double, one row at a time, no lazy batches. */
lpv_status lpv_recon_quant_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                               const lpv_qgrid *g, const int32_t *order, const lpv_recon_opts *o,
                               lpv_recon_info *info, const char *name, lpv_err *err);

/* ---- one layer onto a grid: GPTQ (lpv_recon_quant on round to nearest's grid) ---- */

typedef struct lpv_gptq_opts {
    int codebook;        /* 0: int8, one scale per output row; K in 1..256: a codebook of K levels per layer */
    int act_order;       /* 1: columns by decreasing H_jj (GPTQ's act-order), 0: in index order */
    int bias;            /* 1: bias correction b += (W − Ŵ) E[x] */
    int weighted_fit;    /* codebook: 1 fits the levels weighing each weight by scale² · H_jj (lpv_codebook_fit) */
    lpv_recon_opts recon;/* damping of H (recon.h) */
} lpv_gptq_opts;

/* {int8, act_order 1, bias 1, weighted_fit 1, lpv_recon_defaults()} */
lpv_gptq_opts lpv_gptq_defaults(void);

/* The grid one layer was put on, so that the engine stores it on exactly that grid. */
typedef struct lpv_gptq_grid {
    int codebook_k;                    /* 0: int8 (scale per row, integers -127..127); else the levels' count */
    float levels[LPV_CODEBOOK_MAX];
    float *scale;                      /* (out) malloc'd: int8 max |w| / 127, or the codebook's row scales */
} lpv_gptq_grid;
void lpv_gptq_grid_free(lpv_gptq_grid *g);

typedef struct {
    double err_rtn, err_gptq; /* ‖(W − Ŵ) X‖² / ‖W X‖² under H: round to nearest on the grid, and the sweep */
    double damp;              /* the damping its factorization needed */
} lpv_gptq_layer_info;

/* One dense layer W (out, in), mask (R x C blocks, NULL: all kept): its grid from W (int8 rows; or o->codebook
 * levels from lpv_codebook_fit_dense, weighed by H's diagonal when o->weighted_fit) into *grid (its scale
 * malloc'd; freed first), then lpv_recon_quant under H (upper triangle) in act-order when o->act_order; W holds
 * grid values (0 in pruned blocks) on return. b (out) += (W_before − W) mean when o->bias and b, mean (in) given. */
lpv_status lpv_gptq_layer(float *W, float *b, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                          const double *mean, const lpv_gptq_opts *o, lpv_gptq_grid *grid, lpv_gptq_layer_info *li,
                          const char *name, lpv_err *err);

/* H is H̃ (upper triangle read), G (in, in) full or NULL (then G = H). o NULL = defaults; info may be NULL. */
lpv_status lpv_recon_lsq(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H, const float *G,
                         const lpv_recon_opts *o, lpv_recon_info *info, const char *name, lpv_err *err);
/* The same from P = W G (out, in) for the W given (lpv_stats_accumulate_projected's, with these weights). */
lpv_status lpv_recon_lsq_projected(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                                   const float *P, const lpv_recon_opts *o, lpv_recon_info *info, const char *name,
                                   lpv_err *err);
lpv_status lpv_recon_lsq_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                             const float *G, const lpv_recon_opts *o, lpv_recon_info *info, const char *name,
                             lpv_err *err);
lpv_status lpv_recon_obs(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                         const lpv_recon_opts *o, lpv_recon_info *info, const char *name, lpv_err *err);
lpv_status lpv_recon_obs_ref(float *W, int out, int in, int R, int C, const uint8_t *mask, const float *H,
                             const lpv_recon_opts *o, lpv_recon_info *info, const char *name, lpv_err *err);

#endif
