/* error.c — lpv_err helpers (see include/lpvit/error.h). */
#include "lpvit/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

lpv_status lpv_fail(lpv_err *err, lpv_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->param[0] = 0;
    }
    return st;
}

lpv_status lpv_fail_param(lpv_err *err, lpv_status st, const char *param, const char *fmt, ...) {
    if (err) {
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", param);
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof err->msg) vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
        va_end(ap);
        snprintf(err->param, sizeof err->param, "%s", param);
    }
    return st;
}

lpv_status lpv_fail_hint(lpv_err *err, lpv_status st, const char *param, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        snprintf(err->param, sizeof err->param, "%s", param);
    }
    return st;
}

lpv_status lpv_blame(lpv_err *err, lpv_status st, const char *param) {
    if (err && st != LPV_OK) snprintf(err->param, sizeof err->param, "%s", param);
    return st;
}

lpv_status lpv_wrap(lpv_err *err, lpv_status st, const char *fmt, ...) {
    if (!err) return st;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (n < 0) return st;
    size_t plen = strlen(prefix), mlen = strnlen(err->msg, sizeof err->msg - 1);
    if (plen + 2 + mlen >= sizeof err->msg) mlen = sizeof err->msg - plen - 3;
    memmove(err->msg + plen + 2, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, ": ", 2);
    err->msg[plen + 2 + mlen] = 0;
    return st;
}

const char *lpv_status_str(lpv_status st) {
    switch (st) {
    case LPV_OK: return "ok";
    case LPV_E_IO: return "i/o error";
    case LPV_E_FORMAT: return "format error";
    case LPV_E_SHAPE: return "shape error";
    case LPV_E_UNSUPPORTED: return "unsupported";
    case LPV_E_ARG: return "bad argument";
    case LPV_E_OOM: return "out of memory";
    case LPV_E_DATA: return "bad data";
    }
    return "unknown";
}
