/*
 * bsr_internal.h — what src/engine/bsr.c hands the ISA kernels (src/engine/kernels/bsr_avx2.c,
 * src/engine/kernels/bsr_avx512.c): one thread's share of a product and the blocking plan.
 * Not installed; the benchmark includes it to try other blockings.
 *
 * Units: an 8-row "group" g covers output rows [8g, 8g + 8) (R is a multiple
 * of 8, so a group never straddles block rows: block row g / (R/8), slice
 * g % (R/8)); a "vector" v covers token columns [16v, 16v + 16).
 */
#ifndef LPVIT_BSR_INTERNAL_H
#define LPVIT_BSR_INTERNAL_H

#include <stdint.h>

#include "lpvit/bsr.h"

typedef struct {
    int g0, g1;        /* groups [g0, g1) */
    int v0, v1;        /* vectors [v0, v1) */
    int nvec_full;     /* vectors below this are 16 wide (padding columns allowed) */
    int tail;          /* columns of vector nvec_full when it is partial (0: none) */
    int panel_vec;     /* token panel, in vectors: X (chunk × panel) should stay in L2 */
    int chunk_gran;    /* K chunk, in LPV_BSR_KGRAN granules (>= ngran: one chunk) */
} lpv__bsr_plan;

/* Blocking knobs (bytes of X a panel may hold; kept columns per chunk). */
typedef struct {
    int64_t l2_bytes;  /* X (chunk × panel) budget */
    int64_t l1_w_bytes;/* no panels/chunks while a group's kept weights (8 rows × cols·d) fit this */
    int kept_cols;     /* target kept input columns per K chunk (chunk ≈ kept_cols / density) */
    int alpha;         /* fixed cost of an 8-row group, in k-steps, for the thread split */
} lpv__bsr_tuning;

extern lpv__bsr_tuning lpv__bsr_tune;

void lpv__bsr_part_avx512(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int epi,
                          const lpv__bsr_plan *p);
void lpv__bsr_part_avx2(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int epi,
                        const lpv__bsr_plan *p);
void lpv__vgelu_avx512(float *x, int64_t n);
void lpv__vgelu_avx2(float *x, int64_t n);
void lpv__verf_avx512(float *y, const float *x, int64_t n);
void lpv__verf_avx2(float *y, const float *x, int64_t n);

#endif
