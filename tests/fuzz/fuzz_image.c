/*
 * fuzz_image.c — libFuzzer target for the image decoders (libjpeg-turbo or stb_image for JPEG, stb_image for
 * PNG) and the eval transform behind them: any byte string must decode to a sane image or fail with
 * LPV_E_DATA and a message, never crash, read out of bounds or leak. Decoded images are read in full and
 * preprocessed (resize + crop to 16x16).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lpv_image im;
    lpv_err err;
    err.msg[0] = 0;
    lpv_status st = lpv_image_load_mem(data, size, "fuzz", &im, &err);
    if (st != LPV_OK) {
        if (st != LPV_E_DATA || !strstr(err.msg, "'fuzz'") || im.rgb) abort();
        return 0;
    }
    if (!im.rgb || im.w < 1 || im.h < 1 || (int64_t)im.w * im.h > LPV_IMAGE_MAX_PIXELS) abort();
    static volatile unsigned sink; /* every byte is read: a short buffer shows under ASan */
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)im.w * im.h * 3; i++) sum += im.rgb[i];
    sink = sum;
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = 16;
    float x[3 * 16 * 16];
    if (lpv_preprocess(&im, &pp, x, NULL, &err) != LPV_OK) abort();
    lpv_image_free(&im);
    return 0;
}
