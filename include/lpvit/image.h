/*
 * image.h — image decoding and the timm/torchvision eval transform,
 * bit-exact with Pillow.
 *
 * Decoding: JPEG and PNG to 8-bit RGB as PIL's Image.open(f).convert('RGB').
 * JPEG goes through libjpeg-turbo when the build found it (the library PIL
 * uses, with PIL's settings: ISLOW DCT, fancy upsampling, grey replicated,
 * CMYK/YCCK read with Adobe's inverted polarity and converted with PIL's
 * cmyk2rgb), and the pixels are then PIL's exactly; a build without it
 * decodes JPEG with stb_image, a few levels off on some pixels.
 * lpv_image_jpeg_decoder() says which. PNG goes through stb_image (grey
 * replicated, alpha dropped, palette expanded, 16-bit reduced to its high
 * byte, as PIL does except for 16-bit grey, which PIL's convert('RGB')
 * saturates at 255). A truncated JPEG is an error, as in PIL. EXIF
 * orientation is ignored, as in PIL/timm. An lpv_image owns its pixels;
 * release them with lpv_image_free.
 *
 * Resampling: lpv_resize reproduces Pillow's Image.resize(size, BICUBIC or
 * BILINEAR) exactly: separable, horizontal pass then vertical, the filter
 * support widened by the downscale factor (antialiasing), coefficients in
 * 22-bit fixed point, each pass rounded to uint8, a pass skipped when its
 * size does not change.
 *
 * Eval transform (timm transforms_imagenet_eval, crop_mode "center"):
 *   Resize(floor(img_size / crop_pct)) on the shorter side -> CenterCrop(img_size)
 *   -> ToTensor (/255) -> Normalize(mean, std), output (3, img_size, img_size).
 * Only the cropped window of the resized image is computed.
 *
 * Scratch: an lpv_resize_scratch holds every buffer the resampler and
 * lpv_preprocess need; it grows when an image needs more and is reused
 * otherwise, so a loop over images allocates nothing after the first few.
 * Zero-initialise it, free it with lpv_resize_scratch_free. One per thread.
 *
 *     lpv_image im; lpv_err err; lpv_resize_scratch s = {0};
 *     lpv_preproc pp = lpv_preproc_default();
 *     if (lpv_image_load("cat.jpg", &im, &err)) die(err.msg);
 *     lpv_preprocess(&im, &pp, x, &s, &err);   // x: (3, 224, 224) floats
 *     lpv_image_free(&im); lpv_resize_scratch_free(&s);
 */
#ifndef LPVIT_IMAGE_H
#define LPVIT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/names.h"

/* Decoded images larger than this are refused before any pixel is allocated. The fuzz build
 * (-DLPVIT_FUZZ=ON) lowers the pixel cap so that every input decodes in milliseconds. */
#define LPV_IMAGE_MAX_SIDE 32768
#ifndef LPV_IMAGE_MAX_PIXELS
#define LPV_IMAGE_MAX_PIXELS (1 << 28)
#endif
/* Image files larger than this are refused before reading. */
#define LPV_IMAGE_MAX_FILE ((size_t)1 << 30)

typedef struct {
    int w, h;
    uint8_t *rgb; /* (h, w, 3), row-major */
} lpv_image;

/* Decodes a JPEG or PNG file; errors name the file. */
lpv_status lpv_image_load(const char *path, lpv_image *img, lpv_err *err);
/* Decodes an in-memory file; `label` names it in errors. */
lpv_status lpv_image_load_mem(const void *buf, size_t n, const char *label, lpv_image *img,
                              lpv_err *err);
void lpv_image_free(lpv_image *img);
/* The JPEG decoder built in: "libjpeg-turbo 2.1.5" (the version built against) or "stb_image". */
const char *lpv_image_jpeg_decoder(void);

/* ---- resampling ---- */
#define LPV_INTERP_LIST(X) X(LPV_INTERP_BICUBIC, "bicubic") X(LPV_INTERP_BILINEAR, "bilinear")
typedef enum { LPV_INTERP_LIST(LPV_ENUM_VALUE) LPV_INTERP_COUNT } lpv_interp;

const char *lpv_interp_name(lpv_interp interp);
lpv_status lpv_interp_parse(const char *s, lpv_interp *out, lpv_err *err);

/* Coefficients for one direction of a resize, cached between calls. */
typedef struct {
    int in, out, lo, hi, interp; /* cache key: outputs [lo, hi) of an in -> out resize */
    int ksize;                   /* coefficients per output */
    int *bounds;                 /* (hi - lo, 2): first input, input count */
    int32_t *k;                  /* (hi - lo, ksize) fixed point, 22 fraction bits */
    size_t cap_bounds, cap_k;
} lpv_resize_coeffs;

typedef struct {
    lpv_resize_coeffs hc, vc; /* horizontal, vertical */
    double *dk;               /* (ksize) one output's float coefficients */
    size_t cap_dk;
    uint8_t *tmp;             /* horizontal pass output */
    size_t cap_tmp;
    int32_t *acc;             /* vertical pass: one output row of sums */
    size_t cap_acc;
    uint8_t *crop;            /* lpv_preprocess: resized + cropped RGB */
    size_t cap_crop;
} lpv_resize_scratch;

void lpv_resize_scratch_free(lpv_resize_scratch *s);

/* Pillow's Image.resize((ow, oh), interp) of src (h, w, 3) into dst (oh, ow, 3).
 * s may be NULL (buffers are then allocated and freed inside). */
lpv_status lpv_resize(const uint8_t *src, int w, int h, uint8_t *dst, int ow, int oh,
                      lpv_interp interp, lpv_resize_scratch *s, lpv_err *err);

/* The window (x0, y0, cw, ch) of that resize, into dst (ch, cw, 3), computing
 * only those pixels. Window pixels outside the (ow, oh) image are 0, which is
 * torchvision's center_crop padding when the crop is larger than the image. */
lpv_status lpv_resize_window(const uint8_t *src, int w, int h, int ow, int oh, int x0, int y0,
                             int cw, int ch, uint8_t *dst, lpv_interp interp,
                             lpv_resize_scratch *s, lpv_err *err);

/* ---- eval transform ---- */
typedef struct {
    int img_size;    /* crop side, e.g. 224 */
    double crop_pct; /* resize shorter side to floor(img_size / crop_pct); double like Python */
    lpv_interp interp;
    float mean[3], std[3]; /* per RGB channel, applied to x / 255 */
} lpv_preproc;

/* DeiT's timm config: 224, crop_pct 0.9, bicubic, ImageNet mean/std. */
lpv_preproc lpv_preproc_default(void);
/* Checks the fields are usable (sizes, crop_pct > 0, std != 0). */
lpv_status lpv_preproc_check(const lpv_preproc *pp, lpv_err *err);
/* floor(img_size / crop_pct): the shorter side after resize. */
int lpv_preproc_scale_size(const lpv_preproc *pp);

/* torchvision's _compute_resized_output_size for an int size: the shorter
 * side becomes `size`, the longer int(size * long / short) (truncated). */
void lpv_resize_shorter(int w, int h, int size, int *ow, int *oh);
/* torchvision center_crop's origin along one axis: int(round((in - crop) / 2))
 * with round half to even; when crop > in, minus the left/top padding. */
int lpv_center_offset(int in, int crop);

/* Eval transform of img into out (3, img_size, img_size), channel-major. */
lpv_status lpv_preprocess(const lpv_image *img, const lpv_preproc *pp, float *out,
                          lpv_resize_scratch *s, lpv_err *err);

#endif
