/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors header parser:
 * any byte string must be accepted or rejected with a message, never crash,
 * read out of bounds or leak. Accepted files are also read back in full.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "lpvit/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lpv_st_file f;
    lpv_err err;
    if (lpv_st_parse(&f, data, size, "fuzz", &err) != LPV_OK) return 0;
    for (int i = 0; i < f.n; i++) {
        const lpv_st_tensor *t = &f.t[i];
        if (t->nelem > (1u << 20)) continue;
        if (t->dtype == LPV_DT_F32 || t->dtype == LPV_DT_F16 || t->dtype == LPV_DT_BF16) {
            float *x = malloc(sizeof(float) * (t->nelem + 1));
            lpv_status st = x ? lpv_st_read_f32(&f, t, x, &err) : LPV_OK;
            /* the only refusal of an accepted tensor: a NaN or infinity in it (x is filled before the check) */
            int nonfinite = 0;
            for (uint64_t k = 0; x && st == LPV_E_DATA && k < t->nelem; k++) nonfinite |= !isfinite(x[k]);
            if (st != LPV_OK && !(st == LPV_E_DATA && nonfinite)) abort();
            free(x);
        }
        if (lpv_st_find(&f, t->name) != t) abort();
    }
    for (int i = 0; i < f.n_meta; i++) (void)lpv_st_meta(&f, f.meta[i].key);
    lpv_st_close(&f);
    return 0;
}
