/*
 * test_jpeg_pil.c — decoded pixels byte-identical to PIL's Image.open(f).convert('RGB').
 *
 * scripts/pil_pixels.py (Debian's python3-pil) writes PIL's pixels of: the five fixture images, 20 images of
 * imagenet-val-1000 and 5 of imagenet-calib-1000 (all baseline RGB JPEGs) from the data folder ($LPVIT_DATA,
 * else ../shared/data; optional), and variants that PIL re-encodes from fixtures/img0.JPEG and one
 * calibration image (progressive, grey, CMYK and YCCK, 4:4:4 and 4:2:2, odd sizes, EXIF rotation, corrupt
 * scan data, truncated, no end marker; PNG modes). Each must decode to exactly PIL's bytes, and
 * what PIL refuses must fail here too. A mismatch prints how many bytes differ and the largest difference.
 *
 * Skips (status 77, saying why) without ../shared, without a python3 that imports PIL, and in a build whose
 * JPEG decoder is stb_image (-DLPVIT_JPEG=stb, or no libjpeg-turbo found), which cannot match PIL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "lpvit/fileio.h"
#include "lpvit/image.h"
#include "test.h"

/* Appends ' ' and a followed by b, shell-quoted as one '...' word, to cmd; 0 when that holds a quote or cmd
 * is full. */
static int add_word(char *cmd, size_t cap, const char *a, const char *b) {
    size_t n = strlen(cmd);
    if (strchr(a, '\'') || strchr(b, '\'')) return 0;
    return snprintf(cmd + n, cap - n, " '%s%s'", a, b) < (int)(cap - n);
}

/* The data folder: $LPVIT_DATA, else shared/data; NULL when it is not there. */
static const char *data_dir(const char *shared, char *buf, size_t cap) {
    const char *env = getenv("LPVIT_DATA");
    if (env && *env) snprintf(buf, cap, "%s", env);
    else snprintf(buf, cap, "%s/data", shared);
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : NULL;
}

/* Runs pil_pixels.py into out; 0 ok, TEST_SKIP when no python3 imports PIL, else a failure status. */
static int run_pil(const char *shared, const char *data, const char *out) {
    static const char *fixtures[] = {"img0.JPEG", "img1.png", "img2.JPEG", "img3.png", "img4.JPEG"};
    /* bash, for scripts/lib.sh, whose lpv_python finds a python3 that imports PIL (Debian's imports only under
     * /usr/bin/python3); the paths arrive as its arguments */
    char cmd[8192], fix[1100];
    snprintf(cmd, sizeof cmd,
             "bash -c 'cd \"$1\" && . scripts/lib.sh && py=$(lpv_python PIL) || exit %d; shift; "
             "exec \"$py\" scripts/pil_pixels.py \"$@\"' pil_pixels",
             TEST_SKIP);
    int ok = add_word(cmd, sizeof cmd, LPVIT_SOURCE_DIR, "") && add_word(cmd, sizeof cmd, out, "");
    snprintf(fix, sizeof fix, "%s/fixtures/", shared);
    for (int i = 0; i < 5; i++) ok = ok && add_word(cmd, sizeof cmd, fix, fixtures[i]);
    ok = ok && add_word(cmd, sizeof cmd, "--variants", "") && add_word(cmd, sizeof cmd, fix, "img0.JPEG");
    if (data) {
        ok = ok && add_word(cmd, sizeof cmd, "--pick", "") && add_word(cmd, sizeof cmd, "20", "") &&
             add_word(cmd, sizeof cmd, data, "/imagenet-val-1000");
        ok = ok && add_word(cmd, sizeof cmd, "--pick", "") && add_word(cmd, sizeof cmd, "5", "") &&
             add_word(cmd, sizeof cmd, data, "/imagenet-calib-1000");
        ok = ok && add_word(cmd, sizeof cmd, "--variants", "") &&
             add_word(cmd, sizeof cmd, data, "/imagenet-calib-1000/n01440764/n01440764_tench.JPEG");
    }
    CHECKF(ok, "paths with quotes or too long: %s", cmd);
    if (!ok) return 1;
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return 1;
    return WEXITSTATUS(rc);
}

/* Compares lpvit's decode of path with PIL's pixels in ref (w x h RGB). */
static void compare(const char *path, int w, int h, const char *mode, const char *ref_path, int *n_same) {
    lpv_image im;
    lpv_err err;
    lpv_status st = lpv_image_load(path, &im, &err);
    CHECKF(st == LPV_OK, "%s (PIL mode %s): PIL decodes it, lpvit fails: %s", path, mode, err.msg);
    if (st != LPV_OK) return;
    char *ref = NULL;
    size_t n = 0;
    CHECK_OK(lpv_read_file(ref_path, &ref, &n, (size_t)1 << 30, &err), &err);
    CHECKF(im.w == w && im.h == h && n == (size_t)w * h * 3, "%s: lpvit %dx%d, PIL %dx%d (%zu bytes)", path, im.w,
           im.h, w, h, n);
    if (ref && im.w == w && im.h == h && n == (size_t)w * h * 3) {
        size_t bad = 0;
        int maxd = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs(im.rgb[i] - (uint8_t)ref[i]);
            bad += d != 0;
            if (d > maxd) maxd = d;
        }
        CHECKF(bad == 0, "%s (PIL mode %s, %dx%d): %zu of %zu bytes differ from PIL's, max abs diff %d", path, mode,
               w, h, bad, n, maxd);
        *n_same += bad == 0;
    }
    free(ref);
    lpv_image_free(&im);
}

/* Reads out/index.txt ("NNN ok W H MODE PATH" or "NNN error - - - PATH MESSAGE", tab-separated) and checks
 * every line; returns the number of lines. */
static int check_index(const char *out) {
    char ipath[1200], line[4096];
    snprintf(ipath, sizeof ipath, "%s/index.txt", out);
    FILE *f = fopen(ipath, "r");
    CHECKF(f != NULL, "cannot open %s", ipath);
    if (!f) return 0;
    int lines = 0, same = 0, refused = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *field[7] = {0};
        int nf = 0;
        for (char *p = line; nf < 7 && p; nf++) {
            field[nf] = p;
            p = strchr(p, '\t');
            if (p) *p++ = 0;
        }
        CHECKF(nf >= 6, "bad index line '%s'", line);
        if (nf < 6) continue;
        lines++;
        if (strcmp(field[1], "ok") == 0) {
            char ref[8192];
            snprintf(ref, sizeof ref, "%s/%s.rgb", out, field[0]);
            compare(field[5], atoi(field[2]), atoi(field[3]), field[4], ref, &same);
        } else {
            lpv_image im;
            lpv_err err;
            lpv_status st = lpv_image_load(field[5], &im, &err);
            CHECKF(st == LPV_E_DATA, "%s: PIL refuses it (%s), lpvit gives status %d", field[5],
                   nf > 6 ? field[6] : "?", st);
            if (st == LPV_OK) lpv_image_free(&im);
            else printf("refused like PIL: %s\n  PIL:   %s\n  lpvit: %s\n", field[5], nf > 6 ? field[6] : "?", err.msg);
            refused += st == LPV_E_DATA;
        }
    }
    fclose(f);
    printf("%d images: %d byte-identical to PIL's, %d refused as PIL refuses them\n", lines, same, refused);
    return lines;
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) return TEST_SKIP;
    if (strcmp(lpv_image_jpeg_decoder(), "stb_image") == 0) {
        printf("SKIP: this build decodes JPEG with stb_image, which cannot match PIL (needs libjpeg62-turbo-dev)\n");
        return TEST_SKIP;
    }
    printf("JPEG decoder: %s\n", lpv_image_jpeg_decoder());
    char out[1024];
    snprintf(out, sizeof out, "%s/tests/pil_pixels.XXXXXX", LPVIT_BINARY_DIR);
    if (!mkdtemp(out)) {
        fprintf(stderr, "cannot create %s\n", out);
        return 1;
    }
    char dbuf[1024];
    const char *data = data_dir(shared, dbuf, sizeof dbuf);
    if (!data) printf("no data folder ($LPVIT_DATA, %s/data): the fixtures and their variants only\n", shared);
    int rc = run_pil(shared, data, out);
    if (rc == TEST_SKIP) {
        printf("SKIP: no python3 that imports PIL (Debian: python3-pil)\n");
    } else {
        CHECKF(rc == 0, "scripts/pil_pixels.py failed with status %d", rc);
        if (rc == 0) {
            int n = check_index(out), want = data ? 50 : 25;
            CHECKF(n >= want, "index.txt lists %d images, expected at least %d", n, want);
        }
    }
    int res = rc == TEST_SKIP ? TEST_SKIP : test_finish("test_jpeg_pil");
    /* the reference pixels are kept for a look when something failed */
    char cmd[1200] = "rm -rf";
    if (res != 1 && add_word(cmd, sizeof cmd, out, "")) {
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", out);
    } else if (res == 1) {
        fprintf(stderr, "PIL's pixels are in %s\n", out);
    }
    return res;
}
