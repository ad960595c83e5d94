/* rng.c — xoshiro256** seeded by splitmix64 (see include/lpvit/rng.h). */
#include "lpvit/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void lpv_rng_seed(lpv_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t lpv_rng_u64(lpv_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double lpv_rng_uniform(lpv_rng *r) { return (double)(lpv_rng_u64(r) >> 11) * 0x1.0p-53; }

uint64_t lpv_rng_below(lpv_rng *r, uint64_t n) {
    if (n == 0) return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = lpv_rng_u64(r);
    while (x >= lim);
    return x % n;
}

double lpv_rng_normal(lpv_rng *r) {
    double u1 = lpv_rng_uniform(r), u2 = lpv_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

float lpv_rng_trunc_normal(lpv_rng *r, float std) {
    double x;
    do x = lpv_rng_normal(r);
    while (x < -2.0 || x > 2.0);
    return (float)(x * std);
}

void lpv_rng_shuffle(lpv_rng *r, int *v, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)lpv_rng_below(r, (uint64_t)i + 1);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
