/*
 * error.h — status codes and the error message buffer every lpvit call fills.
 *
 * Functions that can fail on bad input return an lpv_status and, on failure,
 * write one lowercase line into a caller-owned lpv_err (what failed first, the
 * subject in single quotes, expected vs got). Nothing is allocated; the caller
 * owns the buffer. Programmer bugs use LPV_ASSERT, which aborts with file:line.
 *
 * When the fault is one of the caller's parameters (an option of
 * lpv_prune_opts, a model's head count, ...), lpv_fail_param names it: the
 * message starts with "<param>: " and err->param holds the name, so a front
 * end can say it in its own words (the CLI prints "--min-density: ..." for
 * "min_density: ..."). lpv_fail_hint names a parameter that would fix a
 * fault without being wrong itself (the CLI adds "(see --heads)"). The
 * library itself never names a CLI flag.
 *
 *     lpv_err err;
 *     if (lpv_st_open(&f, path, &err) != LPV_OK) { fprintf(stderr, "lpvit: %s\n", err.msg); ... }
 */
#ifndef LPVIT_ERROR_H
#define LPVIT_ERROR_H

#include <stdio.h>
#include <stdlib.h>

typedef enum {
    LPV_OK = 0,
    LPV_E_IO,          /* cannot open/read/write a file */
    LPV_E_FORMAT,      /* malformed file contents */
    LPV_E_SHAPE,       /* tensor missing, unexpected or of the wrong shape */
    LPV_E_UNSUPPORTED, /* valid but not something lpvit handles (dtype, arch) */
    LPV_E_ARG,         /* bad argument / option value */
    LPV_E_OOM,         /* allocation failed */
    LPV_E_DATA,        /* input data unusable (empty dir, undecodable image) */
} lpv_status;

typedef struct {
    char msg[1024];
    char param[32]; /* the parameter at fault ("min_density"), or "" */
} lpv_err;

/* Fills err->msg (printf-style) and returns st, so callers can `return lpv_fail(...)`. */
lpv_status lpv_fail(lpv_err *err, lpv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same, for a fault in parameter `param`: msg becomes "<param>: <formatted>". */
lpv_status lpv_fail_param(lpv_err *err, lpv_status st, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A fault that parameter `param` would fix (it is not itself wrong): msg as lpv_fail, err->param set. */
lpv_status lpv_fail_hint(lpv_err *err, lpv_status st, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Names `param` as the one that would fix the failure already in err (keeps msg and st). */
lpv_status lpv_blame(lpv_err *err, lpv_status st, const char *param);

/* Prepends "context: " to an existing message (keeps the status). */
lpv_status lpv_wrap(lpv_err *err, lpv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *lpv_status_str(lpv_status st);

#define LPV_ASSERT(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "lpvit: internal error: %s:%d: assertion '%s' failed\n", \
                    __FILE__, __LINE__, #cond);                                       \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* Propagate a non-OK status from an expression. */
#define LPV_TRY(expr)                     \
    do {                                  \
        lpv_status lpv__st = (expr);      \
        if (lpv__st != LPV_OK) return lpv__st; \
    } while (0)

#endif
