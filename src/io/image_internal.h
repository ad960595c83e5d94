/*
 * image_internal.h — what image.c shares with image_jpeg.c, the libjpeg-turbo decoder (built only when
 * CMake found libjpeg: LPVIT_HAVE_LIBJPEG). Not installed.
 */
#ifndef LPVIT_IMAGE_INTERNAL_H
#define LPVIT_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "lpvit/image.h"

/* 1 when a w x h image is over LPV_IMAGE_MAX_SIDE or LPV_IMAGE_MAX_PIXELS. */
int lpv__image_too_large(int64_t w, int64_t h);
/* The error for such an image (LPV_E_DATA, naming label and the size). */
lpv_status lpv__image_size_error(const char *label, int64_t w, int64_t h, lpv_err *err);

/* Decodes the JPEG in buf[0, n) (n <= INT_MAX) into img as PIL's Image.open(f).convert('RGB') does. */
lpv_status lpv__jpeg_decode(const uint8_t *buf, size_t n, const char *label, lpv_image *img, lpv_err *err);
/* The library's name and version, e.g. "libjpeg-turbo 2.1.5". */
const char *lpv__jpeg_version(void);

#endif
