/*
 * rng.h — small deterministic PRNG (splitmix64 seeding xoshiro256**), used
 * wherever lpvit needs reproducible randomness (random weights, sampled
 * calibration sets, synthetic masks). State is a plain struct the caller owns.
 */
#ifndef LPVIT_RNG_H
#define LPVIT_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} lpv_rng;

void lpv_rng_seed(lpv_rng *r, uint64_t seed);
uint64_t lpv_rng_u64(lpv_rng *r);
/* Uniform in [0, 1). */
double lpv_rng_uniform(lpv_rng *r);
/* Uniform integer in [0, n). */
uint64_t lpv_rng_below(lpv_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double lpv_rng_normal(lpv_rng *r);
/* Normal(0, std) truncated to [-2 std, 2 std] (timm's trunc_normal_ default bounds scale). */
float lpv_rng_trunc_normal(lpv_rng *r, float std);
/* Fisher-Yates shuffle of n ints. */
void lpv_rng_shuffle(lpv_rng *r, int *v, int n);

#endif
