/*
 * test_image.c — the Pillow-exact resampler and the timm eval transform.
 *
 * Unit part (always runs): hand-derived resize results (checked against
 * Pillow 9.4 when written), identity and constant images, windows equal
 * crops of the full resize, torchvision's size and crop-offset rules
 * (decoding has its own test: tests/unit/test_image_decode.c).
 * Golden part (needs ../shared): lpv_preprocess on the five fixture images
 * against timm's output in fixtures/preprocess.ref.safetensors.
 */
#include <stdint.h>

#include "lpvit/image.h"
#include "lpvit/safetensors.h"
#include "test.h"

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
    const char *shared = test_shared_dir();
    if (shared) test_fixtures(shared);
    int rc = test_finish("test_image");
    return rc ? rc : shared ? 0 : TEST_SKIP;
}
