/*
 * safetensors.h — strict safetensors reader and atomic writer.
 *
 * Reader: lpv_st_open maps a file read-only and validates every rule of the
 * format before any tensor is touched (research/style.md §3): header length
 * cap (100 MB), UTF-8, one JSON object, known dtype, shape x dtype size ==
 * byte span, contiguous non-overlapping offsets starting at 0, the file ends
 * at the last tensor, no duplicate names, overflow-checked arithmetic,
 * __metadata__ values are strings. Errors name the file and the broken rule.
 * The lpv_st_file owns the mapping and the tensor table; tensor data pointers
 * point into the mapping and die with lpv_st_close. F32/F16/BF16 tensors are
 * converted to F32 with lpv_st_read_f32 (into a caller-owned buffer).
 *
 *     lpv_st_file f; lpv_err err;
 *     if (lpv_st_open(&f, "model.safetensors", &err)) die(err.msg);
 *     const lpv_st_tensor *t = lpv_st_find(&f, "head.weight");
 *     lpv_st_read_f32(&f, t, dst, &err);
 *     lpv_st_close(&f);
 *
 * Writer: collects tensors by reference (the caller keeps the data alive until
 * lpv_st_write returns), sorts them (alignment, then name), pads the header
 * with spaces to 8 bytes, and writes through lpv_atomic_open (fileio.h): the
 * target appears whole at the end or not at all. lpv_st_write_to streams the
 * same bytes into a caller's sink instead (the calibration cache gzips them).
 */
#ifndef LPVIT_SAFETENSORS_H
#define LPVIT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "lpvit/error.h"

#define LPV_ST_MAX_HEADER 100000000ull
#define LPV_ST_MAX_RANK 8
#define LPV_ST_MAX_NAME 512

typedef enum {
    LPV_DT_BOOL, LPV_DT_U8, LPV_DT_I8, LPV_DT_I16, LPV_DT_U16, LPV_DT_F16, LPV_DT_BF16,
    LPV_DT_I32, LPV_DT_U32, LPV_DT_F32, LPV_DT_F64, LPV_DT_I64, LPV_DT_U64,
    LPV_DT_COUNT
} lpv_dtype;

const char *lpv_dtype_name(lpv_dtype dt);
size_t lpv_dtype_size(lpv_dtype dt);

typedef struct {
    const char *name;
    lpv_dtype dtype;
    int ndim;
    int64_t shape[LPV_ST_MAX_RANK];
    uint64_t nelem;
    uint64_t begin, end;  /* offsets into the data section */
    const uint8_t *data;  /* points into the mapping; may be unaligned */
} lpv_st_tensor;

typedef struct {
    char *key, *value;
} lpv_st_meta_kv;

typedef struct {
    char path[1024];
    const uint8_t *buf; /* whole file */
    size_t size;
    int mapped;         /* buf is an mmap (else malloc'd or borrowed) */
    int owned;
    uint64_t header_len;
    int n;              /* tensors, sorted by name */
    lpv_st_tensor *t;
    int n_meta;
    lpv_st_meta_kv *meta;
    char *strings;      /* storage for names/metadata */
} lpv_st_file;

lpv_status lpv_st_open(lpv_st_file *f, const char *path, lpv_err *err);
/* Parses an in-memory buffer (borrowed; must outlive f). label names it in errors. */
lpv_status lpv_st_parse(lpv_st_file *f, const uint8_t *buf, size_t size, const char *label,
                        lpv_err *err);
void lpv_st_close(lpv_st_file *f);

const lpv_st_tensor *lpv_st_find(const lpv_st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *lpv_st_meta(const lpv_st_file *f, const char *key);
/* Converts an F32/F16/BF16 tensor to F32 into dst (t->nelem floats). A NaN or infinity in it is LPV_E_DATA
 * naming the file, the tensor and the index: weights that would poison every logit stop at load. */
lpv_status lpv_st_read_f32(const lpv_st_file *f, const lpv_st_tensor *t, float *dst, lpv_err *err);
/* Copies an I32 or I64 tensor into dst as int64 (range checked by caller). */
lpv_status lpv_st_read_i64(const lpv_st_file *f, const lpv_st_tensor *t, int64_t *dst, lpv_err *err);
/* Formats a shape as "[a, b, c]" into buf. */
const char *lpv_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

float lpv_f16_to_f32(uint16_t h);
uint16_t lpv_f32_to_f16(float f);
float lpv_bf16_to_f32(uint16_t h);
/* x rounded to BF16: nearest, ties to even; a NaN stays a (quiet) NaN, never rounds into an Inf. */
uint16_t lpv_bf16_from_f32(float x);

/* ---- writer ---- */
typedef struct {
    const char *name;
    lpv_dtype dtype;
    int ndim;
    int64_t shape[LPV_ST_MAX_RANK];
    const void *data; /* borrowed */
    int from_f32;     /* dtype BF16, data FP32: rounded (nearest, ties to even) as it is written */
} lpv_st_wtensor;

typedef struct {
    int n, cap;
    lpv_st_wtensor *t;
    int n_meta, cap_meta;
    lpv_st_meta_kv *meta;
} lpv_st_writer;

void lpv_st_writer_init(lpv_st_writer *w);
lpv_status lpv_st_writer_add(lpv_st_writer *w, const char *name, lpv_dtype dtype, int ndim,
                             const int64_t *shape, const void *data, lpv_err *err);
/* Adds FP32 data (borrowed) to be written as a BF16 tensor, each value rounded by lpv_bf16_from_f32. */
lpv_status lpv_st_writer_add_bf16(lpv_st_writer *w, const char *name, int ndim, const int64_t *shape,
                                  const float *data, lpv_err *err);
lpv_status lpv_st_writer_meta(lpv_st_writer *w, const char *key, const char *value, lpv_err *err);
/* Writes atomically (lpv_atomic_open: temp file + rename); never overwrites `path` with a partial file. */
lpv_status lpv_st_write(const lpv_st_writer *w, const char *path, lpv_err *err);
/* The file's bytes, in order, to sink (which returns 0 when it took all n bytes); `name` only names
 * the destination in error messages. */
typedef int (*lpv_st_sink)(void *ctx, const void *data, size_t n);
lpv_status lpv_st_write_to(const lpv_st_writer *w, lpv_st_sink sink, void *ctx, const char *name, lpv_err *err);
void lpv_st_writer_free(lpv_st_writer *w);

#endif
