/*
 * test_kernels.h — what the kernel tests (test_bsr, test_q8) share (header-only): running their cases again on
 * the other instantiation of a kernel whose variant the blocking profile picks. Needs test.h and
 * engine/kernels/bsr_internal.h first.
 */
#ifndef LPVIT_TEST_KERNELS_H
#define LPVIT_TEST_KERNELS_H

/* Runs cases() with the test's ISA list (isas, *n) reduced to `isa` and the AVX-512 tiles' other prefetch
 * instantiation (lpv__bsr_tuning.avx512_pf), then restores both. Returns the instantiation it ran. */
static inline int test_other_prefetch(lpv_isa *isas, int *n, lpv_isa isa, void (*cases)(void)) {
    lpv__bsr_tuning saved = lpv__bsr_tune;
    lpv_isa keep = isas[0];
    int keep_n = *n;
    isas[0] = isa, *n = 1;
    lpv__bsr_tune.avx512_pf = saved.avx512_pf == LPV_PF_NEXT_W ? LPV_PF_NEXT_X : LPV_PF_NEXT_W;
    cases();
    int ran = lpv__bsr_tune.avx512_pf;
    lpv__bsr_tune = saved;
    isas[0] = keep, *n = keep_n;
    return ran;
}

static inline const char *test_prefetch_name(int pf) { return pf == LPV_PF_NEXT_W ? "weights" : "x"; }

#endif
