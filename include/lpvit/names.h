/*
 * names.h — enum <-> name tables generated from one list per enum, so an
 * enum, its names and its parser cannot drift apart (X-macros).
 *
 * A header lists the values once:
 *     #define LPV_UPDATE_LIST(X) X(LPV_UPDATE_NONE, "none") X(LPV_UPDATE_BIAS, "bias") ...
 *     typedef enum { LPV_UPDATE_LIST(LPV_ENUM_VALUE) LPV_UPDATE_COUNT } lpv_update_kind;
 * and its .c file defines the name and parse functions from the same list:
 *     LPV_ENUM_FUNCS(lpv_update_kind, lpv_update_name, lpv_update_parse, LPV_UPDATE_LIST, LPV_UPDATE_COUNT, "update")
 * Tables are static; nothing to free.
 */
#ifndef LPVIT_NAMES_H
#define LPVIT_NAMES_H

#include "lpvit/error.h"

#define LPV_ENUM_VALUE(id, name) id,
#define LPV_ENUM_NAME(id, name) name,

/* names[value], or "?" when value is outside [0, n). */
const char *lpv_enum_name(const char *const *names, int n, int value);

/* Index of s in names. Otherwise LPV_E_ARG, naming `param`: "<param>: expected a, b or c, got 's'". */
lpv_status lpv_enum_parse(const char *const *names, int n, const char *param, const char *s, int *out, lpv_err *err);

/* Defines `const char *name_fn(type)` and `lpv_status parse_fn(const char *, type *, lpv_err *)` for the
 * enum LIST enumerates; parse errors name `param`. */
#define LPV_ENUM_FUNCS(type, name_fn, parse_fn, LIST, count, param)                           \
    static const char *const name_fn##_table[] = {LIST(LPV_ENUM_NAME)};                       \
    const char *name_fn(type v) { return lpv_enum_name(name_fn##_table, count, (int)v); }     \
    lpv_status parse_fn(const char *s, type *out, lpv_err *err) {                             \
        int v;                                                                                \
        LPV_TRY(lpv_enum_parse(name_fn##_table, count, param, s, &v, err));                   \
        *out = (type)v;                                                                       \
        return LPV_OK;                                                                        \
    }

#endif
