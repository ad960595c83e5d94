/*
 * image_jpeg.c — JPEG decoding with libjpeg-turbo, set up the way Pillow's JpegDecode.c sets it up, so that
 * the pixels are those of PIL's Image.open(f).convert('RGB') bit for bit: the same library (Debian's PIL
 * links libjpeg62-turbo), the same decoder settings, and PIL's own conversions after it.
 *
 *   PIL (JpegImagePlugin, JpegDecode.c, Convert.c)    here
 *   mode from the frame's component count: 1 L,       1 -> JCS_GRAYSCALE, 3 -> JCS_RGB, 4 -> JCS_CMYK;
 *     3 RGB, 4 CMYK; other counts refused              other counts refused
 *   jpeg_color_space left to libjpeg (JFIF/Adobe)     the same
 *   dct_method JDCT_ISLOW, fancy upsampling on,       set explicitly (they are libjpeg's defaults too)
 *     no scale (draft() is never called by timm)
 *   CMYK read as "CMYK;I": every byte inverted        cmyk_row: invert, then PIL's cmyk2rgb
 *     (Adobe polarity assumed), convert('RGB') =
 *     cmyk2rgb: nk = 255 - k, v = nk - v * nk / 255
 *   L -> RGB replicates the grey value                grey_row
 *   warnings (corrupt data) ignored                   the same, except the end of the data arriving
 *   running out of data: "image file is truncated"      before the last row: an error
 *   jpeg_finish_decompress after the last row: an     the same
 *     error there fails, running out of data there
 *     does not
 *
 * libjpeg reports errors through error_exit, which must not return: it longjmps back to run(), which
 * turns the library's message into an lpv_err. Nothing here prints or exits.
 */
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h uses FILE and size_t without including them */
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "io/image_internal.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char *lpv__jpeg_version(void) {
#ifdef LIBJPEG_TURBO_VERSION
    return "libjpeg-turbo " STR(LIBJPEG_TURBO_VERSION);
#else
    return "libjpeg " STR(JPEG_LIB_VERSION);
#endif
}

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us a pointer to it */
    jmp_buf jump;
} jpeg_err_mgr;

/* Everything the decode touches lives here, outside the function that calls setjmp, so that it keeps its
 * values after a longjmp (C11 7.13.2.1: a changed non-volatile local of that function would not). */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err_mgr jerr;
    const char *label;
    uint8_t *rgb; /* (h, w, 3) result */
    uint8_t *row; /* one decoded row of a grey or CMYK image */
    int rows_done; /* every row decoded: the end of the data is no longer an error */
} jpeg_job;

static void on_error(j_common_ptr cinfo) {
    jpeg_err_mgr *e = (jpeg_err_mgr *)cinfo->err;
    longjmp(e->jump, 1);
}

/* Warnings are corrupt-data notices libjpeg recovers from; PIL ignores them, so do we. Running out of data
 * before the last row is the exception: libjpeg's memory source then invents an end marker and grey
 * pixels, where PIL stops with "image file is truncated". */
static void on_message(j_common_ptr cinfo, int level) {
    const jpeg_job *j = cinfo->client_data;
    if (level >= 0) return; /* trace messages */
    if (cinfo->err->msg_code == JWRN_JPEG_EOF && !j->rows_done) on_error(cinfo);
    cinfo->err->num_warnings++;
}

static void on_output(j_common_ptr cinfo) { (void)cinfo; /* never print */ }

/* PIL's L -> RGB: the grey value in all three channels. */
static void grey_row(const uint8_t *in, uint8_t *out, int w) {
    for (int x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
}

/* PIL's (a * b) / 255 rounded, in integers: MULDIV255 of ImagingUtils.h. */
static inline int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* PIL's "CMYK;I" unpack (each byte inverted) followed by its cmyk2rgb. The inversion makes nk = 255 - k
 * libjpeg's own k byte, and each channel nk - (255 - c) * nk / 255. */
static void cmyk_row(const uint8_t *in, uint8_t *out, int w) {
    for (int x = 0; x < w; x++, in += 4) {
        int nk = in[3];
        for (int c = 0; c < 3; c++) {
            int v = nk - muldiv255(255 - in[c], nk);
            out[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* The decode proper; libjpeg's errors longjmp out of it to run(). */
static lpv_status decode(jpeg_job *j, const uint8_t *buf, size_t n, lpv_err *err) {
    struct jpeg_decompress_struct *c = &j->cinfo;
    jpeg_create_decompress(c);
    jpeg_mem_src(c, buf, (unsigned long)n);
    jpeg_read_header(c, TRUE); /* TRUE: a tables-only stream is an error, not an image */
    int nc = c->num_components;
    if (nc != 1 && nc != 3 && nc != 4)
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': JPEG with %d components, expected 1, 3 or 4",
                        j->label, nc);
    /* before jpeg_start_decompress, which allocates whole-image buffers for progressive files */
    if (c->image_width < 1 || c->image_height < 1 || lpv__image_too_large(c->image_width, c->image_height))
        return lpv__image_size_error(j->label, c->image_width, c->image_height, err);
    c->out_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    c->dct_method = JDCT_ISLOW;
    c->do_fancy_upsampling = TRUE;
    c->scale_num = c->scale_denom = 1;
    jpeg_start_decompress(c);
    int w = (int)c->output_width, h = (int)c->output_height;
    if (c->output_width != c->image_width || c->output_height != c->image_height || c->output_components != nc)
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': header says %ux%u with %d components, decoder gives "
                        "%dx%d with %d", j->label, c->image_width, c->image_height, nc, w, h, c->output_components);
    j->rgb = malloc((size_t)w * h * 3);
    j->row = nc == 3 ? NULL : malloc((size_t)w * nc);
    if (!j->rgb || (nc != 3 && !j->row))
        return lpv_fail(err, LPV_E_OOM, "out of memory decoding %dx%d image '%s'", w, h, j->label);
    while (c->output_scanline < c->output_height) {
        uint8_t *dst = j->rgb + (size_t)c->output_scanline * w * 3;
        JSAMPROW r = nc == 3 ? dst : j->row;
        if (jpeg_read_scanlines(c, &r, 1) != 1) /* the memory source never suspends; be sure anyway */
            return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': no data for row %u", j->label,
                            c->output_scanline);
        if (nc == 1) grey_row(j->row, dst, w);
        if (nc == 4) cmyk_row(j->row, dst, w);
    }
    j->rows_done = 1;
    jpeg_finish_decompress(c); /* reads up to the end marker, as PIL does: a bad marker there still fails */
    return LPV_OK;
}

/* decode() under the error handler: libjpeg's errors come back here through on_error's longjmp. */
static lpv_status run(jpeg_job *j, const uint8_t *buf, size_t n, lpv_err *err) {
    if (setjmp(j->jerr.jump)) {
        char msg[JMSG_LENGTH_MAX];
        (*j->jerr.pub.format_message)((j_common_ptr)&j->cinfo, msg);
        if (j->jerr.pub.msg_code == JWRN_JPEG_EOF)
            return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': file is truncated (%s)", j->label, msg);
        return lpv_fail(err, LPV_E_DATA, "cannot decode image '%s': %s", j->label, msg);
    }
    return decode(j, buf, n, err);
}

lpv_status lpv__jpeg_decode(const uint8_t *buf, size_t n, const char *label, lpv_image *img, lpv_err *err) {
    img->w = img->h = 0;
    img->rgb = NULL;
    jpeg_job *j = calloc(1, sizeof *j); /* ~1 KB of libjpeg state, and no locals for longjmp to clobber */
    if (!j) return lpv_fail(err, LPV_E_OOM, "out of memory decoding image '%s'", label);
    j->label = label;
    j->cinfo.client_data = j; /* on_message reads rows_done */
    j->cinfo.err = jpeg_std_error(&j->jerr.pub);
    j->jerr.pub.error_exit = on_error;
    j->jerr.pub.emit_message = on_message;
    j->jerr.pub.output_message = on_output;
    lpv_status st = run(j, buf, n, err);
    if (st == LPV_OK) {
        img->w = (int)j->cinfo.output_width;
        img->h = (int)j->cinfo.output_height;
        img->rgb = j->rgb;
    } else {
        free(j->rgb);
    }
    jpeg_destroy_decompress(&j->cinfo); /* also after a failed create: it frees what exists */
    free(j->row);
    free(j);
    return st;
}
