/* image.c — decoding, Pillow-exact resampling, timm eval transform (see include/lpvit/image.h). */
#include "lpvit/image.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

#include "io/image_internal.h"
#include "lpvit/fileio.h"

/* ------------------------------------------------------------------------- */
/* decoding */

/* stb's last error on this thread (thread-local in stb_image >= 2.24). */
static const char *stb_reason(void) {
    const char *r = stbi_failure_reason();
    return r ? r : "unknown error";
}

lpv_status lpv_image_load(const char *path, lpv_image *img, lpv_err *err) {
    img->w = img->h = 0;
    img->rgb = NULL;
    char *buf = NULL;
    size_t n = 0;
    LPV_TRY(lpv_read_file(path, &buf, &n, LPV_IMAGE_MAX_FILE, err));
    lpv_status st = lpv_image_load_mem(buf, n, path, img, err);
    free(buf);
    return st;
}

/* Width and height from a PNG's IHDR, or 0. stb refuses a PNG too large for its own limit while probing
 * and then reports the last format it tried ("unknown image type"); reading the header here lets a huge
 * PNG be called what it is. */
static int png_size(const uint8_t *b, size_t n, int64_t *w, int64_t *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 24 || memcmp(b, sig, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
    *w = (int64_t)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    *h = (int64_t)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
    return 1;
}

/* 1 when every IDAT chunk of the PNG b[0, n) lies inside it. stb grows its compressed-data buffer to the
 * length an IDAT chunk claims before reading it (doubling from 4 KB), so a 300-byte file claiming a 1 GB
 * chunk costs a 2 GB allocation before stb finds the data missing; refused here, stb fails it anyway. */
static int png_idat_fits(const uint8_t *b, size_t n) {
    size_t off = 8;
    while (off + 8 <= n) {
        uint32_t len = (uint32_t)b[off] << 24 | (uint32_t)b[off + 1] << 16 | (uint32_t)b[off + 2] << 8 | b[off + 3];
        if (memcmp(b + off + 4, "IDAT", 4) == 0 && len > n - off - 8) return 0;
        if (memcmp(b + off + 4, "IEND", 4) == 0 || len > n - off - 8) return 1; /* the rest is stb's to judge */
        off += 12 + (size_t)len;
    }
    return 1;
}

int lpv__image_too_large(int64_t w, int64_t h) {
    return w > LPV_IMAGE_MAX_SIDE || h > LPV_IMAGE_MAX_SIDE || w * h > LPV_IMAGE_MAX_PIXELS;
}

lpv_status lpv__image_size_error(const char *label, int64_t w, int64_t h, lpv_err *err) {
    return lpv_fail(err, LPV_E_DATA, "image '%s' is %lldx%lld, expected at most %d px a side and %d pixels", label,
                    (long long)w, (long long)h, LPV_IMAGE_MAX_SIDE, LPV_IMAGE_MAX_PIXELS);
}

#ifdef LPVIT_HAVE_LIBJPEG
/* PIL's test for a JPEG (JpegImagePlugin._accept): SOI followed by a marker. */
static int is_jpeg(const uint8_t *b, size_t n) { return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

const char *lpv_image_jpeg_decoder(void) { return lpv__jpeg_version(); }
#else
const char *lpv_image_jpeg_decoder(void) { return "stb_image"; }
#endif

/* The format comes from the bytes (not the name), as in PIL: JPEG goes to libjpeg-turbo when the build has
 * it, everything else (and JPEG without it) to stb. Either decoder's pixels are handed over as they are. */
lpv_status lpv_image_load_mem(const void *buf, size_t n, const char *label, lpv_image *img,
                              lpv_err *err) {
    img->w = img->h = 0;
    img->rgb = NULL;
    if (n == 0) return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': empty file", label);
    if (n > INT_MAX)
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': %zu bytes, more than %d", label,
                        n, INT_MAX);
#ifdef LPVIT_HAVE_LIBJPEG
    if (is_jpeg(buf, n)) return lpv__jpeg_decode(buf, n, label, img, err);
#endif
    /* Header first, so an absurd size is refused before stb allocates it. */
    int w = 0, h = 0, comp = 0;
    int64_t pw, ph;
    if (png_size(buf, n, &pw, &ph) && lpv__image_too_large(pw, ph)) return lpv__image_size_error(label, pw, ph, err);
    if (png_size(buf, n, &pw, &ph) && !png_idat_fits(buf, n))
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': PNG data runs past the end of the file (truncated?)",
                        label);
    if (!stbi_info_from_memory(buf, (int)n, &w, &h, &comp))
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': %s", label, stb_reason());
    if (w < 1 || h < 1 || lpv__image_too_large(w, h)) return lpv__image_size_error(label, w, h, err);
    int w2 = 0, h2 = 0;
    /* 3 channels: grey is replicated, alpha dropped, CMYK converted by stb. */
    uint8_t *rgb = stbi_load_from_memory(buf, (int)n, &w2, &h2, &comp, 3);
    if (!rgb)
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': %s", label, stb_reason());
    if (w2 != w || h2 != h) {
        stbi_image_free(rgb);
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': header says %dx%d, got %dx%d",
                        label, w, h, w2, h2);
    }
    img->w = w;
    img->h = h;
    img->rgb = rgb;
    return LPV_OK;
}

void lpv_image_free(lpv_image *img) {
    free(img->rgb); /* stb allocates with malloc too (stb_impl.c does not override STBI_MALLOC) */
    img->rgb = NULL;
    img->w = img->h = 0;
}

/* ------------------------------------------------------------------------- */
/* resampling: Pillow's ImagingResample for 8-bit RGB */

/* Pillow's PRECISION_BITS = 32 - 8 - 2: 8 bits of pixel, 2 of headroom for
 * coefficients that sum above 1 or dip below 0. */
#define PREC 22
#define MAX_OUT (1 << 30)

/* Cubic convolution with a = -0.5 (Keys), as Pillow evaluates it. */
static double filter_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double filter_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_eval(lpv_interp interp, double x) {
    return interp == LPV_INTERP_BILINEAR ? filter_bilinear(x) : filter_bicubic(x);
}

static double filter_support(lpv_interp interp) { return interp == LPV_INTERP_BILINEAR ? 1.0 : 2.0; }

LPV_ENUM_FUNCS(lpv_interp, lpv_interp_name, lpv_interp_parse, LPV_INTERP_LIST, LPV_INTERP_COUNT, "interp")

/* Makes *p hold at least `bytes` (contents are not kept). Scratch buffers
 * only ever grow, so a run over many images settles after the largest one. */
static int grow(void *pp, size_t *cap, size_t bytes) {
    void **p = pp;
    if (bytes <= *cap && *p) return 1;
    free(*p);
    *p = malloc(bytes ? bytes : 1);
    *cap = *p ? bytes : 0;
    return *p != NULL;
}

void lpv_resize_scratch_free(lpv_resize_scratch *s) {
    free(s->hc.bounds);
    free(s->hc.k);
    free(s->vc.bounds);
    free(s->vc.k);
    free(s->dk);
    free(s->tmp);
    free(s->acc);
    free(s->crop);
    memset(s, 0, sizeof *s);
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for outputs [lo, hi) of
 * an in -> out resize along one axis. Output xx is centred at (xx + 0.5) *
 * in/out in input coordinates; when shrinking, the filter is stretched by
 * in/out so every input pixel contributes (antialiasing). Weights are
 * normalised to sum 1 in double, then rounded half away from zero to 22-bit
 * fixed point. Cached: same key, same table. */
static lpv_status coeffs(lpv_resize_coeffs *c, lpv_resize_scratch *s, int in, int out, int lo,
                         int hi, lpv_interp interp, lpv_err *err) {
    if (c->k && c->in == in && c->out == out && c->lo == lo && c->hi == hi && c->interp == (int)interp)
        return LPV_OK;
    double scale = (double)(float)in / out; /* Pillow's box is float */
    double fscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support(interp) * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    size_t n = (size_t)(hi - lo);
    c->in = -1; /* invalid until filled */
    if (!grow(&c->bounds, &c->cap_bounds, n * 2 * sizeof(int)) ||
        !grow(&c->k, &c->cap_k, n * (size_t)ksize * sizeof(int32_t)) ||
        !grow(&s->dk, &s->cap_dk, (size_t)ksize * sizeof(double)))
        return lpv_fail(err, LPV_E_OOM, "out of memory for %dx%d resize coefficients", in, out);
    double ss = 1.0 / fscale;
    for (int xx = lo; xx < hi; xx++) {
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        int cnt = xmax - xmin;
        double ww = 0.0;
        for (int x = 0; x < cnt; x++) {
            s->dk[x] = filter_eval(interp, (x + xmin - center + 0.5) * ss);
            ww += s->dk[x];
        }
        int32_t *k = c->k + (size_t)(xx - lo) * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = 0.0;
            if (x < cnt) v = ww != 0.0 ? s->dk[x] / ww : s->dk[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PREC) : 0.5 + v * (1 << PREC));
        }
        c->bounds[2 * (xx - lo)] = xmin;
        c->bounds[2 * (xx - lo) + 1] = cnt;
    }
    c->in = in;
    c->out = out;
    c->lo = lo;
    c->hi = hi;
    c->interp = (int)interp;
    c->ksize = ksize;
    return LPV_OK;
}

/* Round a 22-bit fixed-point sum to a pixel, clamping to [0, 255]. */
static inline uint8_t clip8(int32_t v) {
    v >>= PREC; /* arithmetic shift, as in Pillow */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass: rows [r0, r1) of src (h, w, 3) -> dst (r1 - r0, hi - lo, 3). */
static void pass_h(const uint8_t *src, int w, int r0, int r1, const lpv_resize_coeffs *c,
                   uint8_t *dst) {
    int n = c->hi - c->lo;
    for (int y = r0; y < r1; y++) {
        const uint8_t *row = src + (size_t)y * w * 3;
        uint8_t *o = dst + (size_t)(y - r0) * n * 3;
        for (int i = 0; i < n; i++) {
            const uint8_t *p = row + (size_t)c->bounds[2 * i] * 3;
            const int32_t *k = c->k + (size_t)i * c->ksize;
            int cnt = c->bounds[2 * i + 1];
            int32_t s0 = 1 << (PREC - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < cnt; x++) {
                s0 += p[3 * x + 0] * k[x];
                s1 += p[3 * x + 1] * k[x];
                s2 += p[3 * x + 2] * k[x];
            }
            o[3 * i + 0] = clip8(s0);
            o[3 * i + 1] = clip8(s1);
            o[3 * i + 2] = clip8(s2);
        }
    }
}

/* Vertical pass: src rows are input rows r0.. (row stride `stride` bytes),
 * nb bytes per row are used; output rows [lo, hi) go to dst (stride dstride).
 * Integer sums do not depend on order, so rows are accumulated whole. */
static void pass_v(const uint8_t *src, size_t stride, int r0, int nb, const lpv_resize_coeffs *c,
                   int32_t *acc, uint8_t *dst, size_t dstride) {
    for (int i = 0; i < c->hi - c->lo; i++) {
        const int32_t *k = c->k + (size_t)i * c->ksize;
        int ymin = c->bounds[2 * i] - r0, cnt = c->bounds[2 * i + 1];
        for (int x = 0; x < nb; x++) acc[x] = 1 << (PREC - 1);
        for (int y = 0; y < cnt; y++) {
            const uint8_t *row = src + (size_t)(ymin + y) * stride;
            int32_t ky = k[y];
            for (int x = 0; x < nb; x++) acc[x] += row[x] * ky;
        }
        uint8_t *o = dst + (size_t)i * dstride;
        for (int x = 0; x < nb; x++) o[x] = clip8(acc[x]);
    }
}

/* Sizes stay far below INT_MAX so that index arithmetic in int cannot
 * overflow; the output size itself is never allocated (only the window). */
static lpv_status resize_check(int w, int h, int ow, int oh, int cw, int ch, lpv_err *err) {
    if (w < 1 || h < 1 || (int64_t)w * h > LPV_IMAGE_MAX_PIXELS || w > MAX_OUT || h > MAX_OUT)
        return lpv_fail(err, LPV_E_ARG, "cannot resize a %dx%d image", w, h);
    if (ow < 1 || oh < 1 || ow > MAX_OUT || oh > MAX_OUT)
        return lpv_fail(err, LPV_E_ARG, "cannot resize %dx%d to %dx%d", w, h, ow, oh);
    if (cw < 1 || ch < 1 || (int64_t)cw * ch > LPV_IMAGE_MAX_PIXELS)
        return lpv_fail(err, LPV_E_ARG, "resize window %dx%d is out of range", cw, ch);
    return LPV_OK;
}

/* The work of lpv_resize_window once the window is known to overlap the
 * image: [ox0, ox1) x [oy0, oy1) in output coordinates, written at dst. */
static lpv_status resize_part(const uint8_t *src, int w, int h, int ow, int oh, int ox0, int ox1,
                              int oy0, int oy1, uint8_t *dst, size_t dstride, lpv_interp interp,
                              lpv_resize_scratch *s, lpv_err *err) {
    int need_h = ow != w, need_v = oh != h; /* Pillow skips a pass whose size is unchanged */
    int nb = (ox1 - ox0) * 3;
    /* Input rows the vertical pass reads (all of them are produced by the horizontal pass). */
    int r0 = oy0, r1 = oy1;
    if (need_v) {
        LPV_TRY(coeffs(&s->vc, s, h, oh, oy0, oy1, interp, err));
        r0 = h, r1 = 0;
        for (int i = 0; i < oy1 - oy0; i++) {
            int a = s->vc.bounds[2 * i], b = a + s->vc.bounds[2 * i + 1];
            if (a < r0) r0 = a;
            if (b > r1) r1 = b;
        }
        if (r1 <= r0) r0 = r1 = 0;
    }
    const uint8_t *hs = src + (size_t)ox0 * 3; /* rows of the horizontal result */
    size_t hstride = (size_t)w * 3;
    int hrow0 = 0;
    /* Horizontal pass into tmp, only the window's columns and the rows the
     * vertical pass will read; without it, read the source directly. */
    if (need_h) {
        LPV_TRY(coeffs(&s->hc, s, w, ow, ox0, ox1, interp, err));
        if (!grow(&s->tmp, &s->cap_tmp, (size_t)(r1 - r0) * nb + 1))
            return lpv_fail(err, LPV_E_OOM, "out of memory resizing %dx%d to %dx%d", w, h, ow, oh);
        pass_h(src, w, r0, r1, &s->hc, s->tmp);
        hs = s->tmp, hstride = (size_t)nb, hrow0 = r0;
    }
    if (need_v) {
        if (!grow(&s->acc, &s->cap_acc, (size_t)nb * sizeof(int32_t)))
            return lpv_fail(err, LPV_E_OOM, "out of memory resizing %dx%d to %dx%d", w, h, ow, oh);
        pass_v(hs, hstride, hrow0, nb, &s->vc, s->acc, dst, dstride);
    } else {
        for (int y = oy0; y < oy1; y++)
            memcpy(dst + (size_t)(y - oy0) * dstride, hs + (size_t)(y - hrow0) * hstride, (size_t)nb);
    }
    return LPV_OK;
}

lpv_status lpv_resize_window(const uint8_t *src, int w, int h, int ow, int oh, int x0, int y0,
                             int cw, int ch, uint8_t *dst, lpv_interp interp,
                             lpv_resize_scratch *s, lpv_err *err) {
    LPV_TRY(resize_check(w, h, ow, oh, cw, ch, err));
    if (interp != LPV_INTERP_BICUBIC && interp != LPV_INTERP_BILINEAR)
        return lpv_fail(err, LPV_E_ARG, "unknown interpolation %d", (int)interp);
    /* the part of the window inside the resized image */
    int64_t ox0 = x0 > 0 ? x0 : 0, oy0 = y0 > 0 ? y0 : 0;
    int64_t ox1 = (int64_t)x0 + cw < ow ? (int64_t)x0 + cw : ow;
    int64_t oy1 = (int64_t)y0 + ch < oh ? (int64_t)y0 + ch : oh;
    if (ox0 != x0 || oy0 != y0 || ox1 != (int64_t)x0 + cw || oy1 != (int64_t)y0 + ch)
        memset(dst, 0, (size_t)cw * ch * 3);
    if (ox0 >= ox1 || oy0 >= oy1) return LPV_OK;
    lpv_resize_scratch local = {0};
    lpv_resize_scratch *sc = s ? s : &local;
    uint8_t *d = dst + ((size_t)(oy0 - y0) * cw + (size_t)(ox0 - x0)) * 3;
    lpv_status st = resize_part(src, w, h, ow, oh, (int)ox0, (int)ox1, (int)oy0, (int)oy1, d,
                                (size_t)cw * 3, interp, sc, err);
    if (!s) lpv_resize_scratch_free(&local);
    return st;
}

lpv_status lpv_resize(const uint8_t *src, int w, int h, uint8_t *dst, int ow, int oh,
                      lpv_interp interp, lpv_resize_scratch *s, lpv_err *err) {
    return lpv_resize_window(src, w, h, ow, oh, 0, 0, ow, oh, dst, interp, s, err);
}

/* ------------------------------------------------------------------------- */
/* eval transform */

lpv_preproc lpv_preproc_default(void) {
    lpv_preproc pp = {224, 0.9, LPV_INTERP_BICUBIC, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    return pp;
}

int lpv_preproc_scale_size(const lpv_preproc *pp) {
    return (int)floor((double)pp->img_size / pp->crop_pct);
}

lpv_status lpv_preproc_check(const lpv_preproc *pp, lpv_err *err) {
    if (pp->img_size < 1 || pp->img_size > 8192)
        return lpv_fail(err, LPV_E_ARG, "image size %d is out of range, expected 1..8192", pp->img_size);
    if (!(pp->crop_pct > 0.0) || !isfinite(pp->crop_pct))
        return lpv_fail(err, LPV_E_ARG, "crop_pct %g is out of range, expected > 0", pp->crop_pct);
    double scale = floor((double)pp->img_size / pp->crop_pct);
    if (scale < 1 || scale > 16384)
        return lpv_fail(err, LPV_E_ARG, "resize size %.0f (image size %d / crop_pct %g) is out of range",
                        scale, pp->img_size, pp->crop_pct);
    if (pp->interp != LPV_INTERP_BICUBIC && pp->interp != LPV_INTERP_BILINEAR)
        return lpv_fail(err, LPV_E_ARG, "unknown interpolation %d", (int)pp->interp);
    for (int c = 0; c < 3; c++)
        if (!isfinite(pp->mean[c]) || !isfinite(pp->std[c]) || pp->std[c] == 0.0f)
            return lpv_fail(err, LPV_E_ARG, "mean/std of channel %d is %g/%g, expected finite, std != 0",
                            c, pp->mean[c], pp->std[c]);
    return LPV_OK;
}

void lpv_resize_shorter(int w, int h, int size, int *ow, int *oh) {
    int s = w <= h ? w : h, l = w <= h ? h : w;
    if (s == size) {
        *ow = w, *oh = h;
        return;
    }
    /* Python's int(size * long / short): exact product, one rounded division, truncation */
    int nl = (int)((double)((int64_t)size * l) / (double)s);
    if (w <= h) *ow = size, *oh = nl;
    else *ow = nl, *oh = size;
}

int lpv_center_offset(int in, int crop) {
    if (crop > in) return -((crop - in) / 2); /* torchvision pads (crop - in) // 2 first */
    int d = in - crop, k = d / 2;
    if (d % 2 == 0) return k;
    return k % 2 == 0 ? k : k + 1; /* k + 0.5 rounds half to even */
}

/* Resize and crop happen in one windowed resize: the crop of a Pillow
 * resize equals the resize computed only at the crop's pixels, because each
 * output pixel depends only on its own coefficients. */
lpv_status lpv_preprocess(const lpv_image *img, const lpv_preproc *pp, float *out,
                          lpv_resize_scratch *s, lpv_err *err) {
    LPV_TRY(lpv_preproc_check(pp, err));
    if (!img->rgb || img->w < 1 || img->h < 1)
        return lpv_fail(err, LPV_E_DATA, "cannot preprocess an empty %dx%d image", img->w, img->h);
    int S = pp->img_size, rw, rh;
    lpv_resize_shorter(img->w, img->h, lpv_preproc_scale_size(pp), &rw, &rh);
    int x0 = lpv_center_offset(rw, S), y0 = lpv_center_offset(rh, S);
    lpv_resize_scratch local = {0};
    lpv_resize_scratch *sc = s ? s : &local;
    lpv_status st = LPV_OK;
    if (!grow(&sc->crop, &sc->cap_crop, (size_t)S * S * 3))
        st = lpv_fail(err, LPV_E_OOM, "out of memory for a %dx%d crop", S, S);
    if (st == LPV_OK)
        st = lpv_resize_window(img->rgb, img->w, img->h, rw, rh, x0, y0, S, S, sc->crop, pp->interp,
                               sc, err);
    if (st == LPV_OK) {
        /* ToTensor + Normalize in float32 as torch does: (v / 255 - mean) / std */
        float lut[3][256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];
        size_t plane = (size_t)S * S;
        const uint8_t *p = sc->crop;
        for (size_t i = 0; i < plane; i++) {
            out[i] = lut[0][p[3 * i + 0]];
            out[plane + i] = lut[1][p[3 * i + 1]];
            out[2 * plane + i] = lut[2][p[3 * i + 2]];
        }
    }
    if (!s) lpv_resize_scratch_free(&local);
    return st;
}
