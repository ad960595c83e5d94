/*
 * test_image_decode.c — image decoding: what PIL's Image.open(f).convert('RGB') gives, or a clean error.
 *
 * Small JPEGs and PNGs written by PIL 9.4 (embedded below) or built here at run time: baseline, progressive,
 * grey, CMYK and YCCK JPEG, PNG colour types at 8 and 16 bits. With libjpeg-turbo (lpv_image_jpeg_decoder())
 * the JPEG pixels must be PIL's exactly (an FNV-1a hash of all bytes, and a few pixels); with the stb_image
 * fallback within 3 levels. Then the hostile inputs, which must fail with a message naming the file or decode
 * to a sane image, never crash (the ASan build runs this too): every truncation of each JPEG (PIL refuses all
 * of them, so must we with libjpeg), a few thousand random byte mutations, absurd declared sizes
 * (65000x65000 and friends, refused before anything image-sized is allocated), and a dataset holding such
 * files, whose loader skips and counts them.
 */
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "lpvit/dataset.h"
#include "lpvit/fileio.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
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

/* 1 when this build decodes JPEG with libjpeg-turbo, whose pixels are PIL's exactly. */
static int exact_jpeg(void) { return strcmp(lpv_image_jpeg_decoder(), "stb_image") != 0; }

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint32_t rng_state = 2024;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* ---- files ---- */

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

/* rgb_jpg's pattern saved progressive (PIL 9.4, quality 90, progressive=True): same coefficients, so
 * libjpeg gives the very same pixels. */
static const char prog_jpg[] =
    "\xff\xd8\xff\xe0\x00\x10\x4a\x46\x49\x46\x00\x01\x01\x00\x00\x01\x00\x01\x00"
    "\x00\xff\xdb\x00\x43\x00\x03\x02\x02\x03\x02\x02\x03\x03\x03\x03\x04\x03\x03"
    "\x04\x05\x08\x05\x05\x04\x04\x05\x0a\x07\x07\x06\x08\x0c\x0a\x0c\x0c\x0b\x0a"
    "\x0b\x0b\x0d\x0e\x12\x10\x0d\x0e\x11\x0e\x0b\x0b\x10\x16\x10\x11\x13\x14\x15"
    "\x15\x15\x0c\x0f\x17\x18\x16\x14\x18\x12\x14\x15\x14\xff\xdb\x00\x43\x01\x03"
    "\x04\x04\x05\x04\x05\x09\x05\x05\x09\x14\x0d\x0b\x0d\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14\x14"
    "\x14\x14\x14\x14\x14\x14\xff\xc2\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00"
    "\x02\x11\x01\x03\x11\x01\xff\xc4\x00\x15\x00\x01\x01\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x06\x07\xff\xc4\x00\x15\x01\x01\x01\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x04\xff\xda\x00\x0c\x03"
    "\x01\x00\x02\x10\x03\x10\x00\x00\x01\x9a\x2a\x62\xa6\xa3\xff\xc4\x00\x16\x10"
    "\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x05"
    "\xff\xda\x00\x08\x01\x01\x00\x01\x05\x02\x5e\x60\xb4\xc1\x79\x82\xf3\x0f\xff"
    "\xc4\x00\x18\x11\x00\x02\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x05\x06\x21\x32\xff\xda\x00\x08\x01\x03\x01\x01\x3f\x01\x8c\x3b\xcd"
    "\x9f\xff\xc4\x00\x18\x11\x00\x02\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x05\x06\x22\x31\xff\xda\x00\x08\x01\x02\x01\x01\x3f\x01\x7d"
    "\x2a\xdb\x1f\xff\xc4\x00\x15\x10\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x31\xff\xda\x00\x08\x01\x01\x00\x06\x3f\x02\x88\x88"
    "\xff\xc4\x00\x15\x10\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x31\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x21\x91\x02\x44\x8f\xff"
    "\xda\x00\x0c\x03\x01\x00\x02\x00\x03\x00\x00\x00\x10\x97\xff\xc4\x00\x15\x11"
    "\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xa1\xff"
    "\xda\x00\x08\x01\x03\x01\x01\x3f\x10\x9a\xff\xc4\x00\x15\x11\x01\x01\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf1\xff\xda\x00\x08\x01"
    "\x02\x01\x01\x3f\x10\xbc\xff\xc4\x00\x15\x10\x01\x01\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf1\xff\xda\x00\x08\x01\x01\x00\x01\x3f"
    "\x10\x9e\x8e\x9a\x9a\xff\xd9"
    ;

/* A 16x16 grey JPEG (PIL 9.4, quality 90) of 8 (x + y). */
static const char grey_jpg[] =
    "\xff\xd8\xff\xe0\x00\x10\x4a\x46\x49\x46\x00\x01\x01\x00\x00\x01\x00\x01\x00"
    "\x00\xff\xdb\x00\x43\x00\x03\x02\x02\x03\x02\x02\x03\x03\x03\x03\x04\x03\x03"
    "\x04\x05\x08\x05\x05\x04\x04\x05\x0a\x07\x07\x06\x08\x0c\x0a\x0c\x0c\x0b\x0a"
    "\x0b\x0b\x0d\x0e\x12\x10\x0d\x0e\x11\x0e\x0b\x0b\x10\x16\x10\x11\x13\x14\x15"
    "\x15\x15\x0c\x0f\x17\x18\x16\x14\x18\x12\x14\x15\x14\xff\xc0\x00\x0b\x08\x00"
    "\x10\x00\x10\x01\x01\x11\x00\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01"
    "\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"
    "\x0a\x0b\xff\xc4\x00\xb5\x10\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04"
    "\x00\x00\x01\x7d\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61"
    "\x07\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0\x24\x33"
    "\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28\x29\x2a\x34\x35\x36"
    "\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49\x4a\x53\x54\x55\x56\x57\x58\x59"
    "\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x83\x84"
    "\x85\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5"
    "\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5\xc6"
    "\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2\xe3\xe4\xe5\xe6"
    "\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xff\xda\x00\x08\x01"
    "\x01\x00\x00\x3f\x00\xf8\xff\x00\xe1\xb7\xc3\x6f\xf5\x5f\xba\xf4\xed\x5f\x55"
    "\xfc\x36\xf8\x6d\xfe\xab\xf7\x5e\x9d\xa8\xf8\x6d\xf0\xdb\xfd\x57\xee\xbd\x3b"
    "\x57\xd5\x5f\x0d\xbe\x1b\x7f\xaa\xfd\xd7\xa7\x6a\xff\xd9"
    ;

typedef struct {
    const char *name;
    const char *data;
    size_t n;
    int w, h;
    uint64_t fnv;                                       /* of PIL's convert('RGB') bytes */
    struct { int x, y; uint8_t rgb[3]; } px[4];        /* PIL's values at a few pixels */
} jpeg_case;

/* cmyk_jpg with its Adobe transform flag set to 2: the same bytes read as YCCK. */
static char ycck_jpg[sizeof cmyk_jpg];

static const jpeg_case *jpeg_cases(int *n) {
    static jpeg_case c[] = {
        {"rgb.jpg", rgb_jpg, sizeof rgb_jpg - 1, 16, 16, 0xa7216fecec821f75ull,
         {{0, 0, {0, 3, 242}}, {15, 0, {232, 5, 136}}, {15, 15, {241, 237, 28}}, {5, 8, {80, 128, 148}}}},
        {"progressive.jpg", prog_jpg, sizeof prog_jpg - 1, 16, 16, 0xa7216fecec821f75ull,
         {{0, 0, {0, 3, 242}}, {15, 0, {232, 5, 136}}, {15, 15, {241, 237, 28}}, {5, 8, {80, 128, 148}}}},
        {"grey.jpg", grey_jpg, sizeof grey_jpg - 1, 16, 16, 0x3e2c3250f2ddd857ull,
         {{0, 0, {0, 0, 0}}, {15, 0, {120, 120, 120}}, {15, 15, {240, 240, 240}}, {5, 8, {104, 104, 104}}}},
        /* C = 30 x, M = 30 y, Y = 60, K = 40 in PIL's (inverted, Adobe) convention */
        {"cmyk.jpg", cmyk_jpg, sizeof cmyk_jpg - 1, 8, 8, 0x2867a047790edc7dull,
         {{0, 0, {215, 215, 164}}, {7, 0, {38, 215, 164}}, {7, 7, {38, 38, 164}}, {5, 3, {89, 139, 164}}}},
        {"ycck.jpg", ycck_jpg, sizeof cmyk_jpg - 1, 8, 8, 0xc20ff4a06ec15bfcull,
         {{0, 0, {0, 78, 0}}, {7, 3, {98, 215, 121}}, {0, 0, {0, 78, 0}}, {7, 3, {98, 215, 121}}}},
    };
    memcpy(ycck_jpg, cmyk_jpg, sizeof cmyk_jpg);
    ycck_jpg[17] = 2; /* SOI, then FF EE, length, "Adobe", version, flags0, flags1, transform: byte 17 */
    *n = (int)(sizeof c / sizeof *c);
    return c;
}

/* ---- well-formed files ---- */

static void check_jpeg_case(const jpeg_case *t) {
    lpv_image im;
    lpv_err err;
    CHECK_OK(lpv_image_load_mem(t->data, t->n, t->name, &im, &err), &err);
    if (!im.rgb) return;
    CHECKF(im.w == t->w && im.h == t->h, "%s: %dx%d", t->name, im.w, im.h);
    int tol = exact_jpeg() ? 0 : 3;
    for (int i = 0; i < 4; i++) {
        const uint8_t *p = im.rgb + (t->px[i].y * im.w + t->px[i].x) * 3;
        int d = 0;
        for (int c = 0; c < 3; c++) d = abs(p[c] - t->px[i].rgb[c]) > d ? abs(p[c] - t->px[i].rgb[c]) : d;
        CHECKF(d <= tol, "%s: pixel (%d,%d) = %d %d %d, PIL %d %d %d", t->name, t->px[i].x, t->px[i].y, p[0], p[1],
               p[2], t->px[i].rgb[0], t->px[i].rgb[1], t->px[i].rgb[2]);
    }
    if (exact_jpeg())
        CHECKF(fnv1a(im.rgb, (size_t)im.w * im.h * 3) == t->fnv, "%s: pixels are not PIL's (hash %016llx)", t->name,
               (unsigned long long)fnv1a(im.rgb, (size_t)im.w * im.h * 3));
    lpv_image_free(&im);
}

static void test_jpeg_kinds(void) {
    int n;
    const jpeg_case *c = jpeg_cases(&n);
    printf("JPEG decoder: %s\n", lpv_image_jpeg_decoder());
    for (int i = 0; i < n; i++) {
        /* stb reads YCCK with other rounding, far from PIL's on this odd file: exact builds only */
        if (!exact_jpeg() && strcmp(c[i].name, "ycck.jpg") == 0) continue;
        check_jpeg_case(&c[i]);
    }
}

static void write_mem(void *ctx, void *data, int size) {
    struct { uint8_t buf[4096]; int n; } *m = ctx;
    if (m->n + size <= (int)sizeof m->buf) memcpy(m->buf + m->n, data, (size_t)size);
    m->n += size;
}

/* PNG colour types decode as PIL's convert('RGB'): grey replicated, alpha dropped. */
static void test_png_modes(void) {
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

/* Appends a PNG chunk (length, type, data, CRC) at *p. */
static void png_chunk(uint8_t **p, const char *type, const uint8_t *data, uint32_t n) {
    uint8_t *q = *p;
    for (int i = 0; i < 4; i++) q[i] = (uint8_t)(n >> (24 - 8 * i));
    memcpy(q + 4, type, 4);
    if (n) memcpy(q + 8, data, n);
    uLong crc = crc32(crc32(0, Z_NULL, 0), q + 4, n + 4);
    for (int i = 0; i < 4; i++) q[8 + n + i] = (uint8_t)(crc >> (24 - 8 * i));
    *p = q + 12 + n;
}

/* A w x h PNG of 16-bit samples (colour type ct with nc channels; big-endian v[i]) into out; its length. */
static size_t png16(uint8_t *out, int w, int h, int ct, int nc, const uint16_t *v) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {0}, raw[2048], z[4096];
    memcpy(out, sig, 8);
    uint8_t *p = out + 8;
    ihdr[3] = (uint8_t)w, ihdr[7] = (uint8_t)h, ihdr[8] = 16, ihdr[9] = (uint8_t)ct;
    png_chunk(&p, "IHDR", ihdr, 13);
    size_t k = 0;
    for (int y = 0; y < h; y++) {
        raw[k++] = 0; /* filter: none */
        for (int i = 0; i < w * nc; i++) {
            uint16_t s = v[y * w * nc + i];
            raw[k++] = (uint8_t)(s >> 8), raw[k++] = (uint8_t)s;
        }
    }
    uLongf zn = sizeof z;
    CHECK(compress(z, &zn, raw, k) == Z_OK);
    png_chunk(&p, "IDAT", z, (uint32_t)zn);
    png_chunk(&p, "IEND", NULL, 0);
    return (size_t)(p - out);
}

/* 16-bit PNGs: each sample becomes its high byte, as in PIL for RGB, RGBA and LA. (PIL opens 16-bit grey as
 * mode I, whose convert('RGB') saturates at 255: a near-white image; lpvit keeps the high byte there too.) */
static void test_png16(void) {
    static const struct { int ct, nc; } kinds[] = {{0, 1}, {2, 3}, {4, 2}, {6, 4}};
    uint16_t v[5 * 3 * 4];
    for (int i = 0; i < 5 * 3 * 4; i++) v[i] = (uint16_t)(i * 1111 + 7);
    for (int k = 0; k < 4; k++) {
        uint8_t file[8192];
        int nc = kinds[k].nc;
        size_t n = png16(file, 5, 3, kinds[k].ct, nc, v);
        lpv_image im;
        lpv_err err;
        CHECK_OK(lpv_image_load_mem(file, n, "sixteen.png", &im, &err), &err);
        if (!im.rgb) continue;
        CHECK(im.w == 5 && im.h == 3);
        int bad = 0;
        for (int i = 0; i < 15; i++)
            for (int c = 0; c < 3; c++) bad += im.rgb[3 * i + c] != v[i * nc + (nc >= 3 ? c : 0)] >> 8;
        CHECKF(bad == 0, "16-bit png, colour type %d: %d values are not the high byte", kinds[k].ct, bad);
        lpv_image_free(&im);
    }
}

/* ---- hostile files ---- */

static void expect_decode_error(const void *buf, size_t n, const char *needle) {
    lpv_image im;
    lpv_err err = {0};
    lpv_status st = lpv_image_load_mem(buf, n, "bad.img", &im, &err);
    CHECKF(st == LPV_E_DATA, "%s: status %d", needle, st);
    CHECKF(strstr(err.msg, "'bad.img'") && strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
    CHECK(im.rgb == NULL);
    if (st == LPV_OK) lpv_image_free(&im);
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

static void test_errors(void) {
    expect_decode_error("", 0, "empty file");
    expect_decode_error("hello, world", 12, "cannot decode image");
    expect_decode_error(cmyk_jpg, 200, "cannot decode image"); /* truncated JPEG */
    uint8_t b[64];
    expect_decode_error(b, png_header(b, 40000, 10), "40000x10");
    expect_decode_error(b, png_header(b, 18000, 16000), "18000x16000"); /* > 2^28 pixels */
    /* an IDAT chunk claiming 1 GB in a file of a hundred bytes (stb would first grow a buffer to 2 GB) */
    uint8_t png[256];
    uint16_t v[12] = {0};
    size_t n = png16(png, 2, 2, 2, 3, v);
    for (size_t i = 8; i + 8 <= n; i++)
        if (memcmp(png + i + 4, "IDAT", 4) == 0) {
            png[i] = 0x40, png[i + 1] = png[i + 2] = png[i + 3] = 0;
            break;
        }
    expect_decode_error(png, n, "runs past the end");
    lpv_image im;
    lpv_err err;
    CHECK(lpv_image_load("/nonexistent/x.jpg", &im, &err) == LPV_E_IO && strstr(err.msg, "'/nonexistent/x.jpg'"));
}

/* Decodes buf and checks the outcome is sane: LPV_OK with a w x h image of plausible size, or LPV_E_DATA with a
 * message naming the file. Returns the status. */
static lpv_status decode_any(const void *buf, size_t n, int max_side) {
    lpv_image im;
    lpv_err err = {0};
    lpv_status st = lpv_image_load_mem(buf, n, "hostile.jpg", &im, &err);
    if (st == LPV_OK) {
        CHECKF(im.rgb && im.w >= 1 && im.h >= 1 && im.w <= max_side && im.h <= max_side, "decoded %dx%d", im.w, im.h);
        /* touch every byte: a short buffer shows under ASan */
        unsigned sum = 0;
        for (size_t i = 0; i < (size_t)im.w * im.h * 3; i++) sum += im.rgb[i];
        (void)sum;
        lpv_image_free(&im);
    } else {
        CHECKF(st == LPV_E_DATA && strstr(err.msg, "'hostile.jpg'"), "status %d, message '%s'", st, err.msg);
    }
    return st;
}

/* Every truncation of every JPEG fails (PIL refuses them all: "image file is truncated"); with stb, which
 * makes up what is missing, it decodes or fails, never crashes. */
static void test_truncated(void) {
    int nc;
    const jpeg_case *c = jpeg_cases(&nc);
    for (int k = 0; k < nc; k++) {
        int decoded = 0;
        for (size_t n = 0; n < c[k].n; n++) decoded += decode_any(c[k].data, n, 64) == LPV_OK;
        if (exact_jpeg()) CHECKF(decoded == 0, "%s: %d truncations decode, PIL refuses all", c[k].name, decoded);
    }
    lpv_image im;
    lpv_err err;
    CHECK(lpv_image_load_mem(rgb_jpg, sizeof rgb_jpg - 3, "cut.jpg", &im, &err) == LPV_E_DATA);
    if (exact_jpeg()) CHECKF(strstr(err.msg, "truncated"), "message '%s'", err.msg);
}

/* Random mutations of each JPEG: a few bytes overwritten, or a run of them. */
static void test_corrupt(void) {
    int nc;
    const jpeg_case *c = jpeg_cases(&nc);
    uint8_t buf[1024];
    int ok = 0, fail = 0;
    for (int k = 0; k < nc; k++)
        for (int trial = 0; trial < 600; trial++) {
            size_t n = c[k].n;
            memcpy(buf, c[k].data, n);
            int edits = 1 + (int)(rnd() % 4);
            for (int e = 0; e < edits; e++) {
                size_t at = 2 + rnd() % (n - 2); /* keep the SOI, so the JPEG decoder gets it */
                if (rnd() % 4 == 0) {
                    size_t len = 1 + rnd() % 16;
                    for (size_t i = at; i < at + len && i < n; i++) buf[i] = (uint8_t)rnd();
                } else {
                    buf[at] = (uint8_t)rnd();
                }
            }
            /* a mutated header may declare up to 65535 a side: refused by the size limit or by the data */
            if (decode_any(buf, n, 65535) == LPV_OK) ok++;
            else fail++;
        }
    printf("corrupt JPEGs: %d decoded, %d refused\n", ok, fail);
    CHECK(ok > 0 && fail > 0);
}

/* The frame header's height and width (SOF0 or SOF2) patched into a copy of src. */
static size_t with_size(uint8_t *dst, const char *src, size_t n, unsigned w, unsigned h) {
    memcpy(dst, src, n);
    for (size_t i = 2; i + 9 < n; i++)
        if (dst[i] == 0xFF && (dst[i + 1] == 0xC0 || dst[i + 1] == 0xC2)) {
            dst[i + 5] = (uint8_t)(h >> 8), dst[i + 6] = (uint8_t)h;
            dst[i + 7] = (uint8_t)(w >> 8), dst[i + 8] = (uint8_t)w;
            return n;
        }
    CHECKF(0, "no frame header");
    return n;
}

/* Absurd declared sizes fail on the header, before anything image-sized is allocated. */
static void test_huge(void) {
    static const struct { unsigned w, h; const char *msg; } sizes[] = {
        {65000, 65000, "65000x65000"}, {40000, 16, "40000x16"}, {16, 40000, "16x40000"}, {20000, 20000, "20000x20000"}};
    uint8_t buf[1024];
    for (int i = 0; i < 4; i++) {
        expect_decode_error(buf, with_size(buf, rgb_jpg, sizeof rgb_jpg - 1, sizes[i].w, sizes[i].h), sizes[i].msg);
        expect_decode_error(buf, with_size(buf, prog_jpg, sizeof prog_jpg - 1, sizes[i].w, sizes[i].h), sizes[i].msg);
    }
    /* height 0 (a DNL-marker JPEG, which neither libjpeg nor stb supports) */
    expect_decode_error(buf, with_size(buf, rgb_jpg, sizeof rgb_jpg - 1, 16, 0), "cannot decode image");
}

/* ---- a dataset holding such files: the loader skips and counts them ---- */

static void write_file(const char *dir, const char *name, const void *data, size_t n, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", dir, name);
    lpv_err err;
    CHECK_OK(lpv_write_file_atomic(path, data, n, &err), &err);
}

static void test_dataset_skips(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/image_decode.XXXXXX", LPVIT_BINARY_DIR);
    CHECK(mkdtemp(dir) != NULL);
    uint8_t huge[1024], png[8192];
    uint16_t v[4 * 4 * 3];
    for (int i = 0; i < 48; i++) v[i] = (uint16_t)(i * 1300);
    struct { const char *name; const void *data; size_t n; int bad; } files[] = {
        {"a-rgb.jpg", rgb_jpg, sizeof rgb_jpg - 1, 0},
        {"b-truncated.jpg", rgb_jpg, 400, 1},
        {"c-progressive.jpg", prog_jpg, sizeof prog_jpg - 1, 0},
        {"d-huge.jpg", huge, with_size(huge, rgb_jpg, sizeof rgb_jpg - 1, 65000, 65000), 1},
        {"e-grey.jpg", grey_jpg, sizeof grey_jpg - 1, 0},
        {"f-cmyk.jpg", cmyk_jpg, sizeof cmyk_jpg - 1, 0},
        {"g-sixteen.png", png, png16(png, 4, 4, 2, 3, v), 0},
        {"h-garbage.jpg", "\xff\xd8\xff garbage", 12, 1},
    };
    enum { N = sizeof files / sizeof *files };
    char paths[N][1024];
    const char *pp[N];
    int want_bad = 0;
    for (int i = 0; i < N; i++) {
        write_file(dir, files[i].name, files[i].data, files[i].n, paths[i], sizeof paths[i]);
        pp[i] = paths[i];
        want_bad += files[i].bad;
    }
    lpv_dataset ds;
    lpv_err err;
    CHECK_OK(lpv_dataset_paths(&ds, pp, N, &err), &err);
    lpv_preproc pre = lpv_preproc_default();
    pre.img_size = 8;
    lpv_skips skips = {0};
    lpv_loader_opts o = {3, 2, 0, &skips};
    lpv_loader *L = NULL;
    CHECK_OK(lpv_loader_open(&L, &ds, &pre, &o, &err), &err);
    int images = 0, failed = 0;
    lpv_batch b;
    while (L && lpv_loader_next(L, &b, &err) == LPV_OK && b.count > 0) {
        images += b.n;
        failed += b.n_failed;
        for (int i = 0; i < b.n_failed; i++)
            CHECKF(files[b.failed[i].index].bad, "'%s' failed: %s", b.failed[i].path, b.failed[i].reason);
    }
    CHECKF(images == N - want_bad && failed == want_bad && skips.n == want_bad, "%d decoded, %d failed, %d skipped",
           images, failed, skips.n);
    lpv_loader_close(L);
    lpv_skips_free(&skips);
    lpv_dataset_free(&ds);
    for (int i = 0; i < N; i++) unlink(paths[i]);
    rmdir(dir);
}

int main(void) {
    test_jpeg_kinds();
    test_png_modes();
    test_png16();
    test_errors();
    test_truncated();
    test_corrupt();
    test_huge();
    test_dataset_skips();
    return test_finish("test_image_decode");
}
