/*
 * test_safetensors.c — the reader rejects every malformed file with a message
 * naming the broken rule (handcrafted vectors, after the Rust crate's tests
 * and llama.cpp's test-gguf), accepts the valid edge cases, converts F16/BF16,
 * and the writer round-trips.
 */
#include <stdint.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "lpvit/safetensors.h"
#include "test.h"

static uint8_t buf[1 << 16];

/* 8-byte length + header + data into buf; returns the total size. */
static size_t mk(const char *header, size_t hlen, const void *data, size_t dlen) {
    uint64_t n = hlen;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (dlen) memcpy(buf + 8 + hlen, data, dlen);
    return 8 + hlen + dlen;
}

static size_t mks(const char *header, size_t dlen) {
    static uint8_t zeros[4096];
    return mk(header, strlen(header), zeros, dlen);
}

/* Expects rejection with a message containing `needle`. */
static void expect_bad(size_t n, const char *needle, const char *what) {
    lpv_st_file f;
    lpv_err err = {0};
    lpv_status st = lpv_st_parse(&f, buf, n, "x.safetensors", &err);
    CHECKF(st != LPV_OK, "%s: accepted", what);
    CHECKF(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
    CHECKF(strstr(err.msg, "x.safetensors") != NULL, "%s: message '%s' lacks the file name", what, err.msg);
    CHECKF(strchr(err.msg, '\n') == NULL, "%s: multi-line message", what);
}

static void expect_good(size_t n, int ntensors, const char *what) {
    lpv_st_file f;
    lpv_err err = {0};
    lpv_status st = lpv_st_parse(&f, buf, n, "x.safetensors", &err);
    CHECKF(st == LPV_OK, "%s: rejected: %s", what, err.msg);
    if (st == LPV_OK) {
        CHECKF(f.n == ntensors, "%s: %d tensors, expected %d", what, f.n, ntensors);
        lpv_st_close(&f);
    }
}

static void test_corrupt(void) {
    expect_bad(0, "too small", "empty file");
    expect_bad(5, "too small", "5 bytes");
    /* header length 60 ('<') with nothing after it */
    memcpy(buf, "<\0\0\0\0\0\0\0", 8);
    expect_bad(8, "runs past end", "header length past EOF");
    /* huge header length */
    uint64_t huge = 200000000ull;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(huge >> (8 * i));
    expect_bad(64, "exceeds limit", "huge header");
    for (int i = 0; i < 8; i++) buf[i] = 0xff;
    expect_bad(64, "exceeds limit", "u64 max header");
    /* non UTF-8 */
    const char nonutf[] = "{\"a\xff\": 1}";
    expect_bad(mk(nonutf, sizeof nonutf - 1, NULL, 0), "UTF-8", "invalid utf-8");
    /* not JSON */
    expect_bad(mks("\x01\x02{", 0), "JSON", "binary garbage");
    expect_bad(mks("{\"a\": ", 0), "JSON", "truncated JSON");
    expect_bad(mks("[1, 2]", 0), "JSON object", "array header");
    expect_bad(mks("{} {}", 0), "trailing", "two objects");
    /* wrong size for dtype/shape */
    expect_bad(mks("{\"t\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4), "needs 16", "invalid info");
    /* element count overflow */
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,18446744073709551614],\"data_offsets\":[0,16]}}", 16),
               "not a non-negative integer", "overflow shape");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", 16),
               "overflows", "overflow product");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "shape entry 0", "negative dim");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4), "shape entry 0", "fractional dim");
    /* trailing bytes (polyglot) and missing bytes */
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16 + 34), "trailing bytes", "polyglot");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 14), "truncated", "truncated data");
    /* JSON attack: every tensor claims the same bytes */
    char hdr[4096];
    size_t k = (size_t)snprintf(hdr, sizeof hdr, "{");
    for (int i = 0; i < 10; i++)
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}",
                              i ? "," : "", i);
    snprintf(hdr + k, sizeof hdr - k, "}");
    expect_bad(mks(hdr, 16), "not contiguous", "json attack");
    /* overlap and gap */
    expect_bad(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "not contiguous", "overlap");
    expect_bad(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20), "not contiguous", "gap");
    expect_bad(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "expected begin 0", "not at 0");
    expect_bad(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8), "end before begin", "reversed");
    /* dtypes */
    expect_bad(mks("{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "unknown dtype 'F33'", "unknown dtype");
    expect_bad(mks("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4), "unsupported dtype", "fp8");
    expect_bad(mks("{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "'dtype'", "numeric dtype");
    /* missing fields */
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), "'shape'", "no shape");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), "data_offsets", "no offsets");
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4), "data_offsets", "3 offsets");
    expect_bad(mks("{\"t\":5}", 0), "not a JSON object", "entry not object");
    /* duplicates (cJSON keeps both) */
    expect_bad(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "duplicate tensor name 'a'", "dup");
    /* metadata must be string -> string */
    expect_bad(mks("{\"__metadata__\":{\"k\":1}}", 0), "not a string", "metadata number");
    expect_bad(mks("{\"__metadata__\":[\"k\"]}", 0), "__metadata__", "metadata array");
    /* rank limit */
    expect_bad(mks("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4), "rank 9", "rank");
}

static void test_valid(void) {
    expect_good(mks("{}      ", 0), 0, "empty object with padding");
    expect_good(mks(" \t\n{}\r \t\n", 0), 0, "whitespace around");
    expect_good(mks("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[0,0],\"data_offsets\":[0,0]}}", 0), 2, "zero-sized");
    expect_good(mks("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"__metadata__\":{\"format\":\"pt\"}}", 4), 1, "scalar + metadata");
    /* out-of-order entries whose offsets still tile the buffer */
    expect_good(mks("{\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                    "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]},"
                    "\"m\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 16), 3, "unordered");
}

static void test_convert(void) {
    /* F16: 1.0, -2.0, 65504, smallest subnormal, inf ; BF16: 1.0, -3.5 */
    uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
    uint16_t bf16[2] = {0x3f80, 0xc060};
    uint8_t data[14];
    memcpy(data, f16, 10);
    memcpy(data + 10, bf16, 4);
    const char *h = "{\"h\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[10,14]}}";
    size_t n = mk(h, strlen(h), data, 14);
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_parse(&f, buf, n, "conv", &err), &err);
    float out[5];
    /* the inf converts, and the reader then refuses the tensor, naming it and the index */
    CHECK(lpv_st_read_f32(&f, lpv_st_find(&f, "h"), out, &err) == LPV_E_DATA);
    CHECKF(strstr(err.msg, "tensor 'h' has a non-finite value (inf) at index 4"), "%s", err.msg);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f);
    CHECK(fabsf(out[3] - 5.960464477539063e-08f) < 1e-12f);
    CHECK(isinf(out[4]) && isinf(lpv_f16_to_f32(0x7c00)) && isnan(lpv_f16_to_f32(0x7e00)));
    CHECK_OK(lpv_st_read_f32(&f, lpv_st_find(&f, "b"), out, &err), &err);
    CHECK(out[0] == 1.0f && out[1] == -3.5f);
    lpv_st_close(&f);
    /* f32 -> f16 -> f32 round trip on exactly representable values, and rounding */
    float vals[] = {0.f, 1.f, -0.5f, 1024.f, 6.103515625e-05f, 3.0517578125e-05f};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) CHECK(lpv_f16_to_f32(lpv_f32_to_f16(vals[i])) == vals[i]);
    CHECK(lpv_f16_to_f32(lpv_f32_to_f16(1.0f + 1.0f / 4096)) == 1.0f); /* ties to even */
    CHECK(isinf(lpv_f16_to_f32(lpv_f32_to_f16(1e6f))));
}

static void test_writer_roundtrip(void) {
    char dir[] = "/tmp/lpvit_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    int32_t idx[3] = {7, -8, 9};
    int64_t big[2] = {1ll << 40, -1};
    uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
    lpv_st_writer w;
    lpv_err err;
    lpv_st_writer_init(&w);
    CHECK_OK(lpv_st_writer_add(&w, "a", LPV_DT_F32, 2, (int64_t[]){2, 3}, a, &err), &err);
    CHECK_OK(lpv_st_writer_add(&w, "idx", LPV_DT_I32, 1, (int64_t[]){3}, idx, &err), &err);
    CHECK_OK(lpv_st_writer_add(&w, "big", LPV_DT_I64, 1, (int64_t[]){2}, big, &err), &err);
    CHECK_OK(lpv_st_writer_add(&w, "half", LPV_DT_F16, 1, (int64_t[]){3}, h, &err), &err);
    CHECK(lpv_st_writer_add(&w, "a", LPV_DT_F32, 1, (int64_t[]){1}, a, &err) != LPV_OK);
    CHECK_OK(lpv_st_writer_meta(&w, "lpvit", "{\"x\":1}", &err), &err);
    CHECK_OK(lpv_st_write(&w, path, &err), &err);
    lpv_st_writer_free(&w);

    lpv_st_file f;
    CHECK_OK(lpv_st_open(&f, path, &err), &err);
    CHECK(f.n == 4);
    CHECK((8 + f.header_len) % 8 == 0);
    const lpv_st_tensor *t = lpv_st_find(&f, "a");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == LPV_DT_F32);
    float back[6];
    if (t) CHECK_OK(lpv_st_read_f32(&f, t, back, &err), &err);
    CHECK(memcmp(back, a, sizeof a) == 0);
    /* every tensor naturally aligned in the file */
    for (int i = 0; i < f.n; i++) CHECK((8 + f.header_len + f.t[i].begin) % lpv_dtype_size(f.t[i].dtype) == 0);
    int64_t ib[3];
    CHECK_OK(lpv_st_read_i64(&f, lpv_st_find(&f, "idx"), ib, &err), &err);
    CHECK(ib[0] == 7 && ib[1] == -8 && ib[2] == 9);
    CHECK_OK(lpv_st_read_i64(&f, lpv_st_find(&f, "big"), ib, &err), &err);
    CHECK(ib[0] == (1ll << 40) && ib[1] == -1);
    CHECK(lpv_st_read_f32(&f, lpv_st_find(&f, "idx"), back, &err) == LPV_E_UNSUPPORTED);
    CHECK(lpv_st_meta(&f, "lpvit") && strcmp(lpv_st_meta(&f, "lpvit"), "{\"x\":1}") == 0);
    CHECK(lpv_st_find(&f, "nope") == NULL);
    lpv_st_close(&f);

    /* truncated copy on disk is rejected, and opening a directory or a missing file fails cleanly */
    char *raw;
    size_t n;
    CHECK_OK(lpv_read_file(path, &raw, &n, 1 << 20, &err), &err);
    char tpath[300];
    snprintf(tpath, sizeof tpath, "%s/trunc.safetensors", dir);
    CHECK_OK(lpv_write_file_atomic(tpath, raw, n - 3, &err), &err);
    CHECK(lpv_st_open(&f, tpath, &err) == LPV_E_FORMAT && strstr(err.msg, "truncated"));
    free(raw);
    CHECK(lpv_st_open(&f, dir, &err) == LPV_E_IO);
    CHECK(lpv_st_open(&f, "/nonexistent/x.safetensors", &err) == LPV_E_IO && strstr(err.msg, "cannot open"));
    /* the atomic writer leaves no temp file behind */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
    CHECK(system(cmd) != 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_sha256(void) {
    char hex[65];
    lpv_sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    lpv_sha256_hex("", 0, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    lpv_sha256_hex(m, strlen(m), hex);
    CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
}

int main(void) {
    test_corrupt();
    test_valid();
    test_convert();
    test_writer_roundtrip();
    test_sha256();
    return test_finish("test_safetensors");
}
