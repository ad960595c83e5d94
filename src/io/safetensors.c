/*
 * safetensors.c — strict reader and atomic writer (see include/lpvit/safetensors.h).
 *
 * The reader checks, in order: file >= 8 bytes; header length <= 100 MB and
 * inside the file; header is UTF-8; header is exactly one JSON object (JSON
 * whitespace allowed around it); each entry has a known dtype, a shape of
 * non-negative integers and two data offsets; __metadata__ maps strings to
 * strings; names are unique; element count and byte size do not overflow and
 * equal the offset span; offsets are contiguous from 0 with no gap or overlap;
 * the last tensor ends exactly at the end of the file.
 */
#include "lpvit/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpvit/fileio.h"

static const struct {
    const char *name;
    size_t size;
} DTYPES[LPV_DT_COUNT] = {
    [LPV_DT_BOOL] = {"BOOL", 1}, [LPV_DT_U8] = {"U8", 1},     [LPV_DT_I8] = {"I8", 1},
    [LPV_DT_I16] = {"I16", 2},   [LPV_DT_U16] = {"U16", 2},   [LPV_DT_F16] = {"F16", 2},
    [LPV_DT_BF16] = {"BF16", 2}, [LPV_DT_I32] = {"I32", 4},   [LPV_DT_U32] = {"U32", 4},
    [LPV_DT_F32] = {"F32", 4},   [LPV_DT_F64] = {"F64", 8},   [LPV_DT_I64] = {"I64", 8},
    [LPV_DT_U64] = {"U64", 8},
};

/* Valid safetensors dtypes lpvit does not read: named as unsupported, not unknown. */
static const char *FOREIGN_DTYPES[] = {"C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                                       "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2"};

const char *lpv_dtype_name(lpv_dtype dt) { return dt < LPV_DT_COUNT ? DTYPES[dt].name : "?"; }
size_t lpv_dtype_size(lpv_dtype dt) { return dt < LPV_DT_COUNT ? DTYPES[dt].size : 0; }

const char *lpv_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* ---- dtype conversion ---- */

float lpv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13; /* inf / nan */
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t lpv_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into exp: correct */
    return (uint16_t)(sign | half);
}

float lpv_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t lpv_bf16_from_f32(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if (x != x) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* ---- reader ---- */

static lpv_status bad(lpv_err *err, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static lpv_status bad(lpv_err *err, const char *label, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lpv_fail(err, LPV_E_FORMAT, "'%s': %s", label, msg);
}

/* Returns the byte offset of the first invalid UTF-8 sequence, or -1. */
static long utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
        else return (long)i;
        if (i + len > n) return (long)i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return (long)i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += len;
    }
    return -1;
}

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* JSON number -> uint64 in [0, 2^53], integral. */
static int json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || floor(v) != v) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const lpv_st_tensor *)a)->name, ((const lpv_st_tensor *)b)->name);
}

static int cmp_offset(const void *a, const void *b) {
    const lpv_st_tensor *x = *(const lpv_st_tensor *const *)a, *y = *(const lpv_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static lpv_status parse_entry(lpv_st_tensor *t, const cJSON *e, const char *label, lpv_err *err) {
    if (!cJSON_IsObject(e)) return bad(err, label, "tensor '%s' is not a JSON object", t->name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return bad(err, label, "tensor '%s': missing or invalid field 'dtype'", t->name);
    int found = -1;
    for (int i = 0; i < LPV_DT_COUNT; i++)
        if (strcmp(dt->valuestring, DTYPES[i].name) == 0) found = i;
    if (found < 0) {
        for (size_t i = 0; i < sizeof FOREIGN_DTYPES / sizeof *FOREIGN_DTYPES; i++)
            if (strcmp(dt->valuestring, FOREIGN_DTYPES[i]) == 0)
                return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': unsupported dtype '%s' for tensor '%s'",
                                label, dt->valuestring, t->name);
        return bad(err, label, "unknown dtype '%.32s' for tensor '%s'", dt->valuestring, t->name);
    }
    t->dtype = (lpv_dtype)found;
    if (!cJSON_IsArray(sh)) return bad(err, label, "tensor '%s': missing or invalid field 'shape'", t->name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > LPV_ST_MAX_RANK)
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': tensor '%s' has rank %d, at most %d supported",
                        label, t->name, nd, LPV_ST_MAX_RANK);
    t->ndim = nd;
    uint64_t nelem = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_u64(cJSON_GetArrayItem(sh, i), &d))
            return bad(err, label, "tensor '%s': shape entry %d is not a non-negative integer", t->name, i);
        t->shape[i] = (int64_t)d;
        if (d && nelem > UINT64_MAX / d) overflow = 1;
        nelem *= d;
    }
    uint64_t esize = DTYPES[t->dtype].size;
    if (overflow || (nelem && nelem > UINT64_MAX / esize)) return bad(err, label, "tensor '%s' size overflows", t->name);
    t->nelem = nelem;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_u64(cJSON_GetArrayItem(of, 0), &t->begin) ||
        !json_u64(cJSON_GetArrayItem(of, 1), &t->end))
        return bad(err, label, "tensor '%s': 'data_offsets' must be two non-negative integers", t->name);
    if (t->end < t->begin)
        return bad(err, label, "tensor '%s' data_offsets [%llu, %llu] end before begin", t->name,
                   (unsigned long long)t->begin, (unsigned long long)t->end);
    uint64_t need = nelem * esize;
    if (t->end - t->begin != need) {
        char sb[160];
        return bad(err, label, "tensor '%s' has %llu bytes, dtype %s shape %s needs %llu", t->name,
                   (unsigned long long)(t->end - t->begin), DTYPES[t->dtype].name,
                   lpv_shape_str(sb, sizeof sb, nd, t->shape), (unsigned long long)need);
    }
    return LPV_OK;
}

static lpv_status parse_metadata(lpv_st_file *f, const cJSON *m, char **sp, const char *label, lpv_err *err) {
    if (!cJSON_IsObject(m)) return bad(err, label, "'__metadata__' is not an object of strings");
    int n = 0;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c)) return bad(err, label, "'__metadata__' value for '%s' is not a string", c->string);
        n++;
    }
    f->meta = calloc((size_t)n + 1, sizeof *f->meta);
    if (!f->meta) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (const cJSON *c = m->child; c; c = c->next) {
        for (int i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta[i].key, c->string) == 0)
                return bad(err, label, "duplicate '__metadata__' key '%s'", c->string);
        size_t kl = strlen(c->string) + 1, vl = strlen(c->valuestring) + 1;
        f->meta[f->n_meta].key = memcpy(*sp, c->string, kl);
        *sp += kl;
        f->meta[f->n_meta].value = memcpy(*sp, c->valuestring, vl);
        *sp += vl;
        f->n_meta++;
    }
    return LPV_OK;
}

static lpv_status parse_header(lpv_st_file *f, const char *label, lpv_err *err) {
    if (f->size < 8) return bad(err, label, "file is %zu bytes, too small for a safetensors header", f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->buf[i];
    if (n > LPV_ST_MAX_HEADER)
        return bad(err, label, "header length %llu exceeds limit %llu", (unsigned long long)n, LPV_ST_MAX_HEADER);
    if (n > f->size - 8)
        return bad(err, label, "header length %llu runs past end of file (%zu bytes)", (unsigned long long)n, f->size);
    f->header_len = n;
    const uint8_t *h = f->buf + 8;
    long at = utf8_invalid_at(h, n);
    if (at >= 0) return bad(err, label, "header is not valid UTF-8 at byte %ld", at);
    size_t i = 0;
    while (i < n && is_ws(h[i])) i++;
    if (i == n || h[i] != '{') return bad(err, label, "header is not a JSON object (must start with '{')");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, n, &end, 0);
    if (!root) {
        long pos = end ? (long)(end - (const char *)h) : -1;
        return bad(err, label, "header is not valid JSON near byte %ld", pos);
    }
    lpv_status st = LPV_OK;
    for (const char *p = end; p < (const char *)h + n; p++)
        if (!is_ws((uint8_t)*p)) {
            st = bad(err, label, "header has trailing bytes after the JSON object at byte %ld", (long)(p - (const char *)h));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        st = bad(err, label, "header is not a JSON object");
        goto out;
    }
    int count = 0;
    size_t strbytes = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        strbytes += strlen(c->string) + 1;
        if (strcmp(c->string, "__metadata__") == 0) {
            for (const cJSON *m = c->child; m; m = m->next)
                strbytes += (m->string ? strlen(m->string) : 0) + 1 + (cJSON_IsString(m) ? strlen(m->valuestring) : 0) + 1;
            continue;
        }
        count++;
    }
    f->strings = malloc(strbytes + 1);
    f->t = calloc((size_t)count + 1, sizeof *f->t);
    if (!f->strings || !f->t) {
        st = lpv_fail(err, LPV_E_OOM, "out of memory parsing '%s'", label);
        goto out;
    }
    char *sp = f->strings;
    int seen_meta = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (seen_meta++) {
                st = bad(err, label, "duplicate '__metadata__' entry");
                goto out;
            }
            if ((st = parse_metadata(f, c, &sp, label, err)) != LPV_OK) goto out;
            continue;
        }
        size_t len = strlen(c->string);
        if (len == 0 || len >= LPV_ST_MAX_NAME) {
            st = bad(err, label, "tensor name of %zu bytes (must be 1..%d)", len, LPV_ST_MAX_NAME - 1);
            goto out;
        }
        for (size_t k = 0; k < len; k++)
            if ((uint8_t)c->string[k] < 0x20) {
                st = bad(err, label, "tensor name contains a control character");
                goto out;
            }
        lpv_st_tensor *t = &f->t[f->n++];
        t->name = memcpy(sp, c->string, len + 1);
        sp += len + 1;
        if ((st = parse_entry(t, c, label, err)) != LPV_OK) goto out;
    }
    /* duplicates: cJSON keeps both, the format forbids them */
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_name);
    for (int k = 1; k < f->n; k++)
        if (strcmp(f->t[k - 1].name, f->t[k].name) == 0) {
            st = bad(err, label, "duplicate tensor name '%s'", f->t[k].name);
            goto out;
        }
    /* contiguity: sorted by offset, each begins where the previous ended */
    lpv_st_tensor **ord = malloc(sizeof *ord * ((size_t)f->n + 1));
    if (!ord) {
        st = lpv_fail(err, LPV_E_OOM, "out of memory");
        goto out;
    }
    for (int k = 0; k < f->n; k++) ord[k] = &f->t[k];
    qsort(ord, (size_t)f->n, sizeof *ord, cmp_offset);
    uint64_t expect = 0;
    for (int k = 0; k < f->n; k++) {
        if (ord[k]->begin != expect) {
            st = bad(err, label, "tensor '%s' data_offsets [%llu, %llu] not contiguous (expected begin %llu)",
                     ord[k]->name, (unsigned long long)ord[k]->begin, (unsigned long long)ord[k]->end,
                     (unsigned long long)expect);
            free(ord);
            goto out;
        }
        expect = ord[k]->end;
    }
    free(ord);
    uint64_t data_size = (uint64_t)f->size - 8 - n;
    if (expect != data_size) {
        st = bad(err, label, "data section is %llu bytes but tensors cover %llu%s", (unsigned long long)data_size,
                 (unsigned long long)expect, expect > data_size ? " (file truncated)" : " (trailing bytes)");
        goto out;
    }
    for (int k = 0; k < f->n; k++) f->t[k].data = f->buf + 8 + n + f->t[k].begin;
out:
    cJSON_Delete(root);
    return st;
}

lpv_status lpv_st_parse(lpv_st_file *f, const uint8_t *buf, size_t size, const char *label, lpv_err *err) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", label);
    f->buf = buf;
    f->size = size;
    lpv_status st = parse_header(f, f->path, err);
    if (st != LPV_OK) lpv_st_close(f);
    return st;
}

lpv_status lpv_st_open(lpv_st_file *f, const char *path, lpv_err *err) {
    memset(f, 0, sizeof *f);
    int fd;
    size_t size;
    LPV_TRY(lpv_open_regular(path, &fd, &size, err));
    const uint8_t *buf = NULL;
    static const uint8_t empty[1];
    if (size > 0) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lpv_fail(err, LPV_E_IO, "cannot map '%s': %s", path, strerror(e));
        }
        buf = m;
    } else {
        buf = empty;
    }
    close(fd);
    lpv_status s = lpv_st_parse(f, buf, size, path, err);
    if (s != LPV_OK) {
        if (size > 0) munmap((void *)buf, size);
        return s;
    }
    f->mapped = size > 0;
    return LPV_OK;
}

void lpv_st_close(lpv_st_file *f) {
    if (f->mapped) munmap((void *)f->buf, f->size);
    free(f->t);
    free(f->meta);
    free(f->strings);
    f->mapped = 0;
    f->t = NULL;
    f->meta = NULL;
    f->strings = NULL;
    f->n = f->n_meta = 0;
}

const lpv_st_tensor *lpv_st_find(const lpv_st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->t[mid].name, name);
        if (c == 0) return &f->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *lpv_st_meta(const lpv_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* Index of the first NaN or infinity in x, or -1. One branch-free pass (the exponent bits all set) that the
 * compiler vectorizes, so checking every weight at load costs a fraction of the copy. */
static int64_t first_nonfinite(const float *x, uint64_t n) {
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (uint64_t i0 = 0; i0 < n; i0 += 4096) {
        uint64_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
        uint32_t bad = 0;
        for (uint64_t i = i0; i < i1; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
        if (bad)
            for (uint64_t i = i0; i < i1; i++)
                if (!isfinite(x[i])) return (int64_t)i;
    }
    return -1;
}

lpv_status lpv_st_read_f32(const lpv_st_file *f, const lpv_st_tensor *t, float *dst, lpv_err *err) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case LPV_DT_F32:
        memcpy(dst, p, t->nelem * 4);
        break;
    case LPV_DT_F16:
        for (uint64_t i = 0; i < t->nelem; i++) dst[i] = lpv_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case LPV_DT_BF16:
        for (uint64_t i = 0; i < t->nelem; i++) dst[i] = lpv_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    default:
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': tensor '%s' has dtype %s, expected F32, F16 or BF16",
                        f->path, t->name, lpv_dtype_name(t->dtype));
    }
    int64_t bad = first_nonfinite(dst, t->nelem);
    if (bad >= 0)
        return lpv_fail(err, LPV_E_DATA, "'%s': tensor '%s' has a non-finite value (%g) at index %lld", f->path,
                        t->name, (double)dst[bad], (long long)bad);
    return LPV_OK;
}

lpv_status lpv_st_read_i64(const lpv_st_file *f, const lpv_st_tensor *t, int64_t *dst, lpv_err *err) {
    const uint8_t *p = t->data;
    if (t->dtype == LPV_DT_I32) {
        for (uint64_t i = 0; i < t->nelem; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = v;
        }
    } else if (t->dtype == LPV_DT_I64) {
        memcpy(dst, p, t->nelem * 8);
    } else {
        return lpv_fail(err, LPV_E_UNSUPPORTED, "'%s': tensor '%s' has dtype %s, expected I32 or I64", f->path,
                        t->name, lpv_dtype_name(t->dtype));
    }
    return LPV_OK;
}

/* ---- writer ---- */

void lpv_st_writer_init(lpv_st_writer *w) { memset(w, 0, sizeof *w); }

lpv_status lpv_st_writer_add(lpv_st_writer *w, const char *name, lpv_dtype dtype, int ndim, const int64_t *shape,
                             const void *data, lpv_err *err) {
    if (ndim < 0 || ndim > LPV_ST_MAX_RANK || dtype >= LPV_DT_COUNT || !name[0] || strlen(name) >= LPV_ST_MAX_NAME)
        return lpv_fail(err, LPV_E_ARG, "cannot add tensor '%s': bad rank, dtype or name", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return lpv_fail(err, LPV_E_ARG, "duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        lpv_st_wtensor *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return lpv_fail(err, LPV_E_OOM, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    lpv_st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return lpv_fail(err, LPV_E_OOM, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lpv_fail(err, LPV_E_ARG, "tensor '%s' has a negative dimension", name);
        t->shape[i] = shape[i];
    }
    t->data = data;
    w->n++;
    return LPV_OK;
}

lpv_status lpv_st_writer_add_bf16(lpv_st_writer *w, const char *name, int ndim, const int64_t *shape,
                                  const float *data, lpv_err *err) {
    LPV_TRY(lpv_st_writer_add(w, name, LPV_DT_BF16, ndim, shape, data, err));
    w->t[w->n - 1].from_f32 = 1;
    return LPV_OK;
}

lpv_status lpv_st_writer_meta(lpv_st_writer *w, const char *key, const char *value, lpv_err *err) {
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            char *v = strdup(value);
            if (!v) return lpv_fail(err, LPV_E_OOM, "out of memory");
            free(w->meta[i].value);
            w->meta[i].value = v;
            return LPV_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int cap = w->cap_meta ? w->cap_meta * 2 : 8;
        lpv_st_meta_kv *m = realloc(w->meta, sizeof *m * (size_t)cap);
        if (!m) return lpv_fail(err, LPV_E_OOM, "out of memory");
        w->meta = m;
        w->cap_meta = cap;
    }
    w->meta[w->n_meta].key = strdup(key);
    w->meta[w->n_meta].value = strdup(value);
    if (!w->meta[w->n_meta].key || !w->meta[w->n_meta].value) return lpv_fail(err, LPV_E_OOM, "out of memory");
    w->n_meta++;
    return LPV_OK;
}

static uint64_t wt_bytes(const lpv_st_wtensor *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n * lpv_dtype_size(t->dtype);
}

static int cmp_write_order(const void *a, const void *b) {
    const lpv_st_wtensor *x = *(const lpv_st_wtensor *const *)a, *y = *(const lpv_st_wtensor *const *)b;
    size_t sx = lpv_dtype_size(x->dtype), sy = lpv_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1; /* descending alignment keeps every tensor aligned */
    return strcmp(x->name, y->name);
}

/* n FP32 values to the sink as BF16, a stack buffer at a time (little-endian, like every tensor here). */
static int sink_bf16(lpv_st_sink sink, void *ctx, const float *x, uint64_t n) {
    uint16_t buf[4096];
    for (uint64_t i = 0; i < n;) {
        size_t k = n - i < 4096 ? (size_t)(n - i) : 4096;
        for (size_t j = 0; j < k; j++) buf[j] = lpv_bf16_from_f32(x[i + j]);
        if (sink(ctx, buf, 2 * k)) return -1;
        i += k;
    }
    return 0;
}

lpv_status lpv_st_write_to(const lpv_st_writer *w, lpv_st_sink sink, void *ctx, const char *name, lpv_err *err) {
    const lpv_st_wtensor **ord = malloc(sizeof *ord * ((size_t)w->n + 1));
    if (!ord) return lpv_fail(err, LPV_E_OOM, "out of memory");
    for (int i = 0; i < w->n; i++) ord[i] = &w->t[i];
    qsort(ord, (size_t)w->n, sizeof *ord, cmp_write_order);
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        free(ord);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    if (w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < w->n_meta; i++) cJSON_AddStringToObject(m, w->meta[i].key, w->meta[i].value);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const lpv_st_wtensor *t = ord[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        if (!e) break;
        cJSON_AddStringToObject(e, "dtype", lpv_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < t->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        uint64_t nb = wt_bytes(t);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) {
        free(ord);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    errno = 0;
    int ok = sink(ctx, hdr, 8) == 0 && sink(ctx, json, jl) == 0 && sink(ctx, "       ", padded - jl) == 0;
    for (int i = 0; ok && i < w->n; i++) {
        uint64_t nb = wt_bytes(ord[i]);
        if (nb && ord[i]->from_f32) ok = sink_bf16(sink, ctx, ord[i]->data, nb / 2) == 0;
        else if (nb) ok = sink(ctx, ord[i]->data, nb) == 0;
    }
    int e = errno;
    free(json);
    free(ord);
    if (!ok) return lpv_fail(err, LPV_E_IO, "cannot write '%s': %s", name, strerror(e ? e : EIO));
    return LPV_OK;
}

static int file_sink(void *ctx, const void *data, size_t n) { return n && fwrite(data, 1, n, ctx) != n ? -1 : 0; }

lpv_status lpv_st_write(const lpv_st_writer *w, const char *path, lpv_err *err) {
    lpv_atomic_file af;
    LPV_TRY(lpv_atomic_open(&af, path, err));
    lpv_status st = lpv_st_write_to(w, file_sink, af.fp, path, err);
    if (st != LPV_OK) {
        lpv_atomic_abort(&af);
        return st;
    }
    return lpv_atomic_commit(&af, err);
}

void lpv_st_writer_free(lpv_st_writer *w) {
    for (int i = 0; i < w->n; i++) free((void *)w->t[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    memset(w, 0, sizeof *w);
}
