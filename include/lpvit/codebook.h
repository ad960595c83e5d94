/*
 * codebook.h — one shared codebook per layer (OPQ's one-shot pruning-quantization idea): every kept weight of
 * a block linear (qkv, proj, fc1, fc2) becomes its row's scale times the nearest of K levels (K <= 256) that all
 * its channels share: the scale is the row's largest |w|, the levels are found by 1-D k-means on the layer's
 * kept weights divided by their row's scale (rows of different ranges then share the levels: on ViT-Tiny,
 * K = 16 keeps 79.7 % top-1 this way against 70.9 % for levels fitted to the raw weights). The file stores one
 * code per weight (a byte; half a byte when K <= 16), the K levels and the row scales; the engine decodes them
 * to FP32 when it loads the file, so the codebook shrinks the file and costs no speed (nor gains any: no LUT
 * kernel yet). Which grid point each weight takes: the nearest here; GPTQ's choice in quantize.h.
 *
 * On disk, for a linear whose weight tensor is NAME.weight (dense) or NAME.weight.bsr_values (BSR):
 *     NAME.weight / .bsr_values   U8   codes, the shape of the FP32 tensor they replace, each < K; for K <= 16 in a
 *                                      file whose metadata has "lpvit.codes": "4bit", two codes per byte (low
 *                                      nibble first) along the last axis, which is then (its length + 1) / 2
 *     NAME.weight_codebook        F32  (K) the levels, finite, strictly increasing, 1 <= K <= 256
 *     NAME.weight_codebook_scale  F32  (out) each row's scale, finite and > 0; absent in files of the first
 *                                      format (levels only: a scale of 1), which still load
 * Metadata "lpvit.quant" says the same in words. Every reader check is in the loader (model.c).
 *
 * Memory: the k-means works in caller-owned buffers plus one malloc'd sorted copy it frees; a model's levels
 * live in its arena (lpv_linear.codebook).
 */
#ifndef LPVIT_CODEBOOK_H
#define LPVIT_CODEBOOK_H

#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/model.h"

#define LPV_CODEBOOK_MAX 256
#define LPV_CODEBOOK_PACK4_MAX 16   /* codebooks of at most this many levels are saved 4 bits per code */
#define LPV_CODES_META "lpvit.codes" /* file metadata: "4bit" when such codebooks' codes are packed */

/* Two 4-bit codes per byte, low nibble first: rows of `last` codes (each < 16) become rows of (last + 1) / 2
 * bytes, the last byte's high nibble 0 when last is odd. packed may be codes itself (it never overtakes). */
void lpv_codebook_pack4(const uint8_t *codes, int64_t rows, int last, uint8_t *packed);
/* The inverse. Returns 0, or -1 when a row's padding nibble is not 0 (codes then holds every row before it). */
int lpv_codebook_unpack4(const uint8_t *packed, int64_t rows, int last, uint8_t *codes);

/* Lloyd's k-means on the n values x (unweighted), from levels at the K quantiles of x, until no level moves
 * or `iters` rounds. Writes the levels, strictly increasing and distinct, to levels (K) and their count to *k
 * (< K when x has fewer distinct values). Sorts a copy of x once, then each round costs O(K log n) (prefix
 * sums between the midpoints). LPV_E_ARG: K outside 1..256, n < 1 or a non-finite value. */
lpv_status lpv_kmeans1d(const float *x, int64_t n, int K, int iters, float *levels, int *k, lpv_err *err);
/* The same rounds by the textbook's O(n K) assignment loop: the reference the fast one is tested against. */
lpv_status lpv_kmeans1d_ref(const float *x, int64_t n, int K, int iters, float *levels, int *k, lpv_err *err);
/* Weighted: each value counts w[i] >= 0 times (w NULL: once; all zero: once each): levels start at the weighted
 * K quantiles and move to their values' weighted means, i.e. minimize Σ w (x − level)². LPV_E_ARG also for a
 * negative or non-finite weight. */
lpv_status lpv_kmeans1d_w(const float *x, const float *w, int64_t n, int K, int iters, float *levels, int *k,
                          lpv_err *err);
lpv_status lpv_kmeans1d_w_ref(const float *x, const float *w, int64_t n, int K, int iters, float *levels, int *k,
                              lpv_err *err);

/* The index of the level nearest to v (levels strictly increasing; ties to the lower one). */
int lpv_codebook_nearest(const float *levels, int k, float v);
/* codes[i] = the index of the level equal to x[i], for n values; returns how many x[i] are no level at all
 * (their code is the nearest's). */
int64_t lpv_codebook_encode(const float *levels, int k, const float *x, int64_t n, uint8_t *codes);

/* The codebook lpv_model_quantize_codebook fits to one layer's weights (dense, or a BSR layer's kept blocks):
 * scales (out) = each row's largest |w| (1 for an all-zero row), levels (K) and *k as lpv_kmeans1d gives them
 * for w / scale. With col_energy (in), e.g. the diagonal of the input statistics Σ x xᵀ, weight (r, c) counts
 * scales[r]² · col_energy[c] times (lpv_kmeans1d_w): the expected squared output error its level error causes.
 * L is not changed. */
lpv_status lpv_codebook_fit(const lpv_linear *L, int K, const float *col_energy, float *levels, int *k,
                            float *scales, lpv_err *err);
/* The same for a dense W (out, in) whose kept weights are those of mask (R x C blocks; NULL: all). */
lpv_status lpv_codebook_fit_dense(const float *W, int out, int in, int R, int C, const uint8_t *mask, int K,
                                  const float *col_energy, float *levels, int *k, float *scales, lpv_err *err);
/* Puts every weight of L (FP32; dense or kept blocks) on scales[row] * levels[the nearest to w / scales[row]] and
 * records the codebook (copied into m's arena), so lpv_model_save writes codes; weights already on it stay as
 * they are. A blocked dense pack is dropped. */
lpv_status lpv_linear_set_codebook(lpv_model *m, lpv_linear *L, const float *levels, int k, const float *scales,
                                   const char *name, lpv_err *err);
/* Replaces every block linear's weights (dense, or the kept blocks of a BSR layer) w by s[row] * (the level
 * nearest to w / s[row]), s[row] = the row's largest |w|, and records levels and scales (lpv_linear.codebook,
 * .codebook_scale) so lpv_model_save writes codes. int8 layers are refused. Call before packing
 * (lpv_model_pack_for): a dense layer's blocked pack is dropped. */
lpv_status lpv_model_quantize_codebook(lpv_model *m, int K, lpv_err *err);

#endif
