/*
 * test_image.c — decoding, the Pillow-exact resampler and the timm eval
 * transform.
 *
 * Unit part (always runs): hand-derived resize results (checked against
 * Pillow 9.4 when written), identity and constant images, windows equal
 * crops of the full resize, torchvision's size and crop-offset rules,
 * decode of grey/alpha/CMYK inputs and clean failures on bad files.
 * Golden part (needs ../shared): lpv_preprocess on the five fixture images
 * against timm's output in fixtures/preprocess.ref.safetensors.
 */
#include <stdint.h>

#include "lpvit/image.h"
#include "lpvit/safetensors.h"
#include "test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

static uint32_t rng_state = 12345;
static uint8_t rnd8(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (uint8_t)(rng_state >> 24);
}

/* Resizes a 1-row grey image given as bytes; returns the first channel of the result. */
static void resize_row(const uint8_t *v, int w, int ow, lpv_interp it, uint8_t *out) {
    uint8_t src[64 * 3], dst[64 * 3];
    for (int i = 0; i < w; i++) src[3 * i] = src[3 * i + 1] = src[3 * i + 2] = v[i];
    lpv_err err;
    CHECK_OK(lpv_resize(src, w, 1, dst, ow, 1, it, NULL, &err), &err);
    for (int i = 0; i < ow; i++) out[i] = dst[3 * i];
}

/* Small cases worked out by hand from Pillow's algorithm (and confirmed with it). */
static void test_hand_cases(void) {
    uint8_t out[8];
    /* 2 -> 1 bicubic: two weights of 0.5 each, so the rounded-half-up mean */
    resize_row((const uint8_t[]){10, 13}, 2, 1, LPV_INTERP_BICUBIC, out);
    CHECKF(out[0] == 12, "got %d", out[0]);
    resize_row((const uint8_t[]){10, 11}, 2, 1, LPV_INTERP_BICUBIC, out);
    CHECKF(out[0] == 11, "got %d", out[0]);
    /* 4 -> 2 bilinear: triangle stretched x2, weights 3/7 3/7 1/7 at the edges */
    resize_row((const uint8_t[]){0, 70, 140, 210}, 4, 2, LPV_INTERP_BILINEAR, out);
    CHECKF(out[0] == 50 && out[1] == 160, "got %d %d", out[0], out[1]);
    /* 2 -> 4 bicubic upscale overshoots: -22.5 clips to 0, 52.8 -> 53 */
    resize_row((const uint8_t[]){0, 255}, 2, 4, LPV_INTERP_BICUBIC, out);
    CHECKF(out[0] == 0 && out[1] == 53 && out[2] == 202 && out[3] == 255, "got %d %d %d %d", out[0],
           out[1], out[2], out[3]);
    /* same along y (vertical pass alone) */
    uint8_t col[2 * 3] = {0, 0, 0, 255, 255, 255}, dst[4 * 3];
    lpv_err err;
    CHECK_OK(lpv_resize(col, 1, 2, dst, 1, 4, LPV_INTERP_BICUBIC, NULL, &err), &err);
    CHECKF(dst[0] == 0 && dst[3] == 53 && dst[6] == 202 && dst[9] == 255, "got %d %d %d %d", dst[0],
           dst[3], dst[6], dst[9]);
}

static void test_identity_and_constant(void) {
    lpv_resize_scratch s = {0};
    lpv_err err;
    int w = 37, h = 23;
    uint8_t *src = malloc((size_t)w * h * 3), *dst = malloc(600 * 600 * 3);
    for (int i = 0; i < w * h * 3; i++) src[i] = rnd8();
    CHECK_OK(lpv_resize(src, w, h, dst, w, h, LPV_INTERP_BICUBIC, &s, &err), &err);
    CHECK(memcmp(src, dst, (size_t)w * h * 3) == 0);
    /* a constant image stays constant whatever the sizes (weights sum to one) */
    static const int sizes[][2] = {{1, 1}, {5, 3}, {37, 23}, {100, 7}, {248, 331}, {513, 2}};
    for (int it = 0; it < 2; it++)
        for (int k = 0; k < 6; k++) {
            for (int i = 0; i < w * h; i++) src[3 * i] = 0, src[3 * i + 1] = 17, src[3 * i + 2] = 255;
            int ow = sizes[k][0], oh = sizes[k][1], bad = 0;
            CHECK_OK(lpv_resize(src, w, h, dst, ow, oh, (lpv_interp)it, &s, &err), &err);
            for (int i = 0; i < ow * oh; i++)
                bad += dst[3 * i] != 0 || dst[3 * i + 1] != 17 || dst[3 * i + 2] != 255;
            CHECKF(bad == 0, "%s %dx%d: %d pixels changed", lpv_interp_name((lpv_interp)it), ow, oh, bad);
        }
    free(src);
    free(dst);
    lpv_resize_scratch_free(&s);
}

/* A window equals the same pixels of the full resize; outside is 0. */
static void test_window(void) {
    lpv_resize_scratch s = {0};
    lpv_err err;
    int w = 61, h = 45, ow = 83, oh = 29;
    uint8_t *src = malloc((size_t)w * h * 3), *full = malloc((size_t)ow * oh * 3), *win = malloc(200 * 200 * 3);
    for (int i = 0; i < w * h * 3; i++) src[i] = rnd8();
    CHECK_OK(lpv_resize(src, w, h, full, ow, oh, LPV_INTERP_BICUBIC, NULL, &err), &err);
    static const int wins[][4] = {{0, 0, 83, 29}, {10, 3, 20, 20}, {-5, -2, 100, 40}, {70, 20, 30, 30},
                                  {90, 0, 5, 5}, {0, 28, 83, 1}};
    for (int k = 0; k < 6; k++) {
        int x0 = wins[k][0], y0 = wins[k][1], cw = wins[k][2], ch = wins[k][3], bad = 0;
        memset(win, 0xAB, (size_t)cw * ch * 3);
        CHECK_OK(lpv_resize_window(src, w, h, ow, oh, x0, y0, cw, ch, win, LPV_INTERP_BICUBIC, &s, &err), &err);
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++)
                for (int c = 0; c < 3; c++) {
                    int fx = x0 + x, fy = y0 + y;
                    int e = fx >= 0 && fy >= 0 && fx < ow && fy < oh ? full[(fy * ow + fx) * 3 + c] : 0;
                    bad += win[(y * cw + x) * 3 + c] != e;
                }
        CHECKF(bad == 0, "window %d: %d bytes differ", k, bad);
    }
    free(src);
    free(full);
    free(win);
    lpv_resize_scratch_free(&s);
}

static void test_geometry(void) {
    int ow, oh;
    lpv_resize_shorter(500, 375, 248, &ow, &oh);
    CHECKF(ow == 330 && oh == 248, "%dx%d", ow, oh);
    lpv_resize_shorter(333, 500, 248, &ow, &oh); /* 248 * 500 / 333 = 372.37 */
    CHECKF(ow == 248 && oh == 372, "%dx%d", ow, oh);
    lpv_resize_shorter(248, 300, 248, &ow, &oh); /* already there: no resize */
    CHECKF(ow == 248 && oh == 300, "%dx%d", ow, oh);
    lpv_resize_shorter(227, 227, 248, &ow, &oh);
    CHECKF(ow == 248 && oh == 248, "%dx%d", ow, oh);
    /* Python round() is half to even: 16.5 -> 16, 17.5 -> 18, 0.5 -> 0, 1.5 -> 2 */
    CHECK(lpv_center_offset(257, 224) == 16);
    CHECK(lpv_center_offset(259, 224) == 18);
    CHECK(lpv_center_offset(258, 224) == 17);
    CHECK(lpv_center_offset(225, 224) == 0);
    CHECK(lpv_center_offset(227, 224) == 2);
    CHECK(lpv_center_offset(224, 224) == 0);
    /* crop larger than the image: torchvision pads (crop - in) // 2 on the left/top */
    CHECK(lpv_center_offset(200, 224) == -12);
    CHECK(lpv_center_offset(201, 224) == -11);
    /* crop_pct is a double: floor(224 / 0.8) is 280 (a float 0.8 would give 279) */
    lpv_preproc pp = lpv_preproc_default();
    static const double pcts[] = {0.8, 0.875, 0.9, 0.95, 1.0};
    static const int want[] = {280, 256, 248, 235, 224};
    for (int i = 0; i < 5; i++) {
        pp.crop_pct = pcts[i];
        CHECKF(lpv_preproc_scale_size(&pp) == want[i], "crop_pct %g -> %d", pcts[i], lpv_preproc_scale_size(&pp));
    }
    lpv_err err;
    pp.crop_pct = 0;
    CHECK(lpv_preproc_check(&pp, &err) == LPV_E_ARG);
    pp = lpv_preproc_default();
    pp.std[1] = 0;
    CHECK(lpv_preproc_check(&pp, &err) == LPV_E_ARG);
    lpv_interp it;
    CHECK(lpv_interp_parse("bilinear", &it, &err) == LPV_OK && it == LPV_INTERP_BILINEAR);
    CHECK(lpv_interp_parse("nearest", &it, &err) == LPV_E_ARG && strstr(err.msg, "'nearest'"));
}

/* crop_pct > 1: the crop is larger than the resized image and padded with 0 before Normalize. */
static void test_pad(void) {
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = 8;
    pp.crop_pct = 2.0; /* scale size 4: a 4x4 image centred in 8x8, 2 px of padding */
    lpv_image im = {4, 4, malloc(4 * 4 * 3)};
    memset(im.rgb, 255, 4 * 4 * 3);
    float out[3 * 8 * 8];
    lpv_err err;
    CHECK_OK(lpv_preprocess(&im, &pp, out, NULL, &err), &err);
    float pad0 = (0.0f - pp.mean[0]) / pp.std[0], in0 = (1.0f - pp.mean[0]) / pp.std[0];
    CHECK(out[0] == pad0 && out[1 * 8 + 1] == pad0);
    CHECK(out[2 * 8 + 2] == in0 && out[5 * 8 + 5] == in0 && out[6 * 8 + 6] == pad0);
    free(im.rgb);
}

static void write_mem(void *ctx, void *data, int size) {
    struct { uint8_t buf[4096]; int n; } *m = ctx;
    if (m->n + size <= (int)sizeof m->buf) memcpy(m->buf + m->n, data, (size_t)size);
    m->n += size;
}

/* PNG colour types decode as PIL's convert('RGB'): grey replicated, alpha dropped. */
static void test_decode_png_modes(void) {
    struct { uint8_t buf[4096]; int n; } m;
    uint8_t px[4 * 3 * 4];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 5);
    for (int comp = 1; comp <= 4; comp++) {
        m.n = 0;
        CHECK(stbi_write_png_to_func(write_mem, &m, 4, 3, comp, px, 4 * comp));
        lpv_image im;
        lpv_err err;
        CHECK_OK(lpv_image_load_mem(m.buf, (size_t)m.n, "mode.png", &im, &err), &err);
        if (!im.rgb) continue;
        CHECK(im.w == 4 && im.h == 3);
        int bad = 0;
        for (int i = 0; i < 12; i++)
            for (int c = 0; c < 3; c++) {
                int src = comp >= 3 ? px[i * comp + c] : px[i * comp]; /* grey (+alpha): channel 0 */
                bad += im.rgb[3 * i + c] != src;
            }
        CHECKF(bad == 0, "png with %d channels: %d values differ", comp, bad);
        lpv_image_free(&im);
    }
}

/* An Adobe CMYK JPEG (8x8, written by PIL 9.4:
 * Image.fromarray(c, 'CMYK').save(f, 'JPEG', quality=95) with C = 30 x,
 * M = 30 y, Y = 60, K = 40). stb decodes it; PIL's convert('RGB') gives the
 * same pixels for this file. */
static const char cmyk_jpg[] =
    "\xff\xd8\xff\xee\x00\x0e\x41\x64\x6f\x62\x65\x00\x64\x00\x00\x00\x00\x00\xff"
    "\xdb\x00\x43\x00\x02\x01\x01\x01\x01\x01\x02\x01\x01\x01\x02\x02\x02\x02\x02"
    "\x04\x03\x02\x02\x02\x02\x05\x04\x04\x03\x04\x06\x05\x06\x06\x06\x05\x06\x06"
    "\x06\x07\x09\x08\x06\x07\x09\x07\x06\x06\x08\x0b\x08\x09\x0a\x0a\x0a\x0a\x0a"
    "\x06\x08\x0b\x0c\x0b\x0a\x0c\x09\x0a\x0a\x0a\xff\xc0\x00\x14\x08\x00\x08\x00"
    "\x08\x04\x43\x11\x00\x4d\x11\x00\x59\x11\x00\x4b\x11\x00\xff\xc4\x00\x1f\x00"
    "\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02"
    "\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\xff\xc4\x00\xb5\x10\x00\x02\x01\x03\x03"
    "\x02\x04\x03\x05\x05\x04\x04\x00\x00\x01\x7d\x01\x02\x03\x00\x04\x11\x05\x12"
    "\x21\x31\x41\x06\x13\x51\x61\x07\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1"
    "\xc1\x15\x52\xd1\xf0\x24\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26"
    "\x27\x28\x29\x2a\x34\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49\x4a"
    "\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75"
    "\x76\x77\x78\x79\x7a\x83\x84\x85\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96\x97"
    "\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8"
    "\xb9\xba\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9"
    "\xda\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8"
    "\xf9\xfa\xff\xda\x00\x0e\x04\x43\x00\x4d\x00\x59\x00\x4b\x00\x00\x3f\x00\xf5"
    "\x8f\xf8\x38\x8f\xfe\x63\xbf\xf6\xd3\xfa\xd7\xac\x7f\xc4\x44\x7f\xf5\x3c\xff"
    "\x00\xe4\xcf\xff\x00\x5e\xbf\x43\x2b\xf5\x72\xbf\xff\xd9"
    ;

static void test_decode_cmyk(void) {
    lpv_image im;
    lpv_err err;
    CHECK_OK(lpv_image_load_mem(cmyk_jpg, sizeof cmyk_jpg - 1, "cmyk.jpg", &im, &err), &err);
    if (!im.rgb) return;
    CHECK(im.w == 8 && im.h == 8);
    static const struct { int x, y; uint8_t rgb[3]; } want[] = {
        {0, 0, {215, 215, 164}}, {7, 0, {38, 215, 164}}, {0, 7, {215, 38, 164}},
        {7, 7, {38, 38, 164}}, {5, 3, {89, 139, 164}}};
    for (int i = 0; i < 5; i++) {
        const uint8_t *p = im.rgb + (want[i].y * 8 + want[i].x) * 3;
        CHECKF(memcmp(p, want[i].rgb, 3) == 0, "pixel (%d,%d) = %d %d %d", want[i].x, want[i].y, p[0], p[1], p[2]);
    }
    lpv_image_free(&im);
}

/* A 16x16 baseline 4:2:0 JPEG (PIL 9.4, quality 90) of R = 16 x, G = 16 y,
 * B = 255 - 8 (x + y). stb's decode is within a few levels of PIL's. */
static const char rgb_jpg[] =
    "\xff\xd8\xff\xe0\x00\x10\x4a\x46\x49\x46\x00\x01\x01\x00\x00\x01\x00\x01\x00"
    "\x00\xff\xdb\x00\x43\x00\x03\x02\x02\x03\x02\x02\x03\x03\x03\x03\x04\x03\x03"
    "\x04\x05\x08\x05\x05\x04\x04\x05\x0a\x07\x07\x06\x08\x0c\x0a\x0c\x0c\x0b\x0a"
    "\x0b\x0b\x0d\x0e\x12\x10\x0d\x0e\x11\x0e\x0b\x0b\x10\x16\x10\x11\x13\x14\x15"
    "\x15\x15\x0c\x0f\x17\x18\x16\x14\x18\x12\x14\x15\x14\xff\xdb\x00\x43\x01\x03"
    "\x04\x04\x05\x04\x05\x09\x05\x05\x09\x14\x0d\x0b\x0d\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00"
    "\x02\x11\x01\x03\x11\x01\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01"
    "\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"
    "\x0b\xff\xc4\x00\xb5\x10\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04\x00"
    "\x00\x01\x7d\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07"
    "\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0\x24\x33\x62"
    "\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28\x29\x2a\x34\x35\x36\x37"
    "\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a"
    "\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x83\x84\x85"
    "\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6"
    "\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5\xc6\xc7"
    "\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2\xe3\xe4\xe5\xe6\xe7"
    "\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xff\xc4\x00\x1f\x01\x00"
    "\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x01\x02\x03"
    "\x04\x05\x06\x07\x08\x09\x0a\x0b\xff\xc4\x00\xb5\x11\x00\x02\x01\x02\x04\x04"
    "\x03\x04\x07\x05\x04\x04\x00\x01\x02\x77\x00\x01\x02\x03\x11\x04\x05\x21\x31"
    "\x06\x12\x41\x51\x07\x61\x71\x13\x22\x32\x81\x08\x14\x42\x91\xa1\xb1\xc1\x09"
    "\x23\x33\x52\xf0\x15\x62\x72\xd1\x0a\x16\x24\x34\xe1\x25\xf1\x17\x18\x19\x1a"
    "\x26\x27\x28\x29\x2a\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49\x4a"
    "\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75"
    "\x76\x77\x78\x79\x7a\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96"
    "\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7"
    "\xb8\xb9\xba\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8"
    "\xd9\xda\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9"
    "\xfa\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00\xf9\xab\xc3\x9f"
    "\x0c\xbe\xe7\xee\xbf\x4a\xf5\x3f\x0d\xfc\x32\xfb\x9f\xba\xfd\x2b\xd8\xbc\x39"
    "\xf0\xcb\xee\xfe\xeb\xf4\xaf\x53\xf0\xe7\xc3\x2f\xbb\xfb\xaf\xd2\xbd\x4e\x3d"
    "\xf1\x57\xe3\xfd\xe7\xe2\x47\x86\x1c\x6f\xfc\x3f\x7f\xb1\xff\xd9"
    ;

static void test_decode_jpeg(void) {
    lpv_image im;
    lpv_err err;
    CHECK_OK(lpv_image_load_mem(rgb_jpg, sizeof rgb_jpg - 1, "rgb.jpg", &im, &err), &err);
    if (!im.rgb) return;
    CHECK(im.w == 16 && im.h == 16);
    /* PIL's convert('RGB') values at a few pixels */
    static const struct { int x, y; uint8_t rgb[3]; } want[] = {
        {0, 0, {0, 3, 242}}, {15, 0, {232, 5, 136}}, {0, 15, {9, 235, 135}},
        {15, 15, {241, 237, 28}}, {5, 8, {80, 128, 148}}};
    for (int i = 0; i < 5; i++) {
        const uint8_t *p = im.rgb + (want[i].y * 16 + want[i].x) * 3;
        int d = 0;
        for (int c = 0; c < 3; c++) d = abs(p[c] - want[i].rgb[c]) > d ? abs(p[c] - want[i].rgb[c]) : d;
        CHECKF(d <= 3, "pixel (%d,%d) = %d %d %d", want[i].x, want[i].y, p[0], p[1], p[2]);
    }
    lpv_image_free(&im);
}

static void expect_decode_error(const void *buf, size_t n, const char *needle) {
    lpv_image im;
    lpv_err err = {0};
    lpv_status st = lpv_image_load_mem(buf, n, "bad.img", &im, &err);
    CHECKF(st == LPV_E_DATA, "%s: status %d", needle, st);
    CHECKF(strstr(err.msg, "'bad.img'") && strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
    CHECK(im.rgb == NULL);
}

/* PNG signature + IHDR of a w x h 8-bit RGB image (stb does not check CRCs). */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h) {
    static const uint8_t sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    memcpy(b, sig, sizeof sig);
    uint8_t *p = b + sizeof sig;
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(w >> (24 - 8 * i)), p[4 + i] = (uint8_t)(h >> (24 - 8 * i));
    p[8] = 8, p[9] = 2, p[10] = 0, p[11] = 0, p[12] = 0;
    memset(p + 13, 0, 4);
    return sizeof sig + 17;
}

static void test_decode_errors(void) {
    expect_decode_error("", 0, "empty file");
    expect_decode_error("hello, world", 12, "cannot decode image");
    expect_decode_error(cmyk_jpg, 200, "cannot decode image"); /* truncated JPEG */
    uint8_t b[64];
    expect_decode_error(b, png_header(b, 40000, 10), "40000x10");
    expect_decode_error(b, png_header(b, 18000, 16000), "18000x16000"); /* > 2^28 pixels */
    lpv_image im;
    lpv_err err;
    CHECK(lpv_image_load("/nonexistent/x.jpg", &im, &err) == LPV_E_IO && strstr(err.msg, "'/nonexistent/x.jpg'"));
}

/* ---- golden: timm's eval transform on the fixture images ---- */

static void test_fixtures(const char *shared) {
    char path[1024];
    test_path(path, sizeof path, shared, "fixtures/preprocess.ref.safetensors");
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_open(&f, path, &err), &err);
    if (!f.buf) return;
    lpv_preproc pp = lpv_preproc_default(); /* the fixture's transform: 248 bicubic, crop 224, ImageNet mean/std */
    lpv_resize_scratch s = {0};
    size_t n = 3 * 224 * 224;
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    static const char *names[] = {"img0.JPEG", "img1.png", "img2.JPEG", "img3.png", "img4.JPEG"};
    for (int i = 0; i < 5; i++) {
        const lpv_st_tensor *t = lpv_st_find(&f, names[i]);
        CHECKF(t && t->nelem == n, "tensor '%s' missing or wrong size", names[i]);
        if (!t || t->nelem != n) continue;
        CHECK_OK(lpv_st_read_f32(&f, t, want, &err), &err);
        char rel[64], ipath[2048];
        snprintf(rel, sizeof rel, "fixtures/%s", names[i]);
        test_path(ipath, sizeof ipath, shared, rel);
        lpv_image im;
        CHECK_OK(lpv_image_load(ipath, &im, &err), &err);
        if (!im.rgb) continue;
        CHECK_OK(lpv_preprocess(&im, &pp, got, &s, &err), &err);
        test_diff d = test_compare(got, want, n, 1.0);
        double mean = 0;
        for (size_t k = 0; k < n; k++) mean += fabs((double)got[k] - want[k]);
        mean /= (double)n;
        int exact = strstr(names[i], ".png") || strcmp(lpv_image_jpeg_decoder(), "stb_image") != 0;
        printf("%-10s %dx%d  max abs err %.6f  mean abs err %.6f\n", names[i], im.w, im.h, d.max_abs, mean);
        if (exact) {
            /* PNG, or JPEG through libjpeg-turbo as in PIL: the pixels are PIL's and the resampler is exact,
             * so is the output */
            CHECKF(d.max_abs <= 0.02, "%s: max abs err %g", names[i], d.max_abs);
        } else {
            /* stb's JPEG decode differs from libjpeg-turbo by up to 3 levels
             * on ~7% of pixels; after resizing that is at most 3 levels
             * (3 / 255 / 0.224 = 0.053) and a mean well under one level. */
            CHECKF(d.max_abs <= 0.06, "%s: max abs err %g", names[i], d.max_abs);
            CHECKF(mean <= 0.005, "%s: mean abs err %g", names[i], mean);
        }
        lpv_image_free(&im);
    }
    free(got);
    free(want);
    lpv_resize_scratch_free(&s);
    lpv_st_close(&f);
}

int main(void) {
    test_hand_cases();
    test_identity_and_constant();
    test_window();
    test_geometry();
    test_pad();
    test_decode_png_modes();
    test_decode_cmyk();
    test_decode_jpeg();
    test_decode_errors();
    const char *shared = test_shared_dir();
    if (shared) test_fixtures(shared);
    int rc = test_finish("test_image");
    return rc ? rc : shared ? 0 : TEST_SKIP;
}
