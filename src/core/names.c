/* names.c — enum <-> name tables (see include/lpvit/names.h). */
#include "lpvit/names.h"

#include <stdio.h>
#include <string.h>

const char *lpv_enum_name(const char *const *names, int n, int value) {
    return value >= 0 && value < n ? names[value] : "?";
}

lpv_status lpv_enum_parse(const char *const *names, int n, const char *param, const char *s, int *out, lpv_err *err) {
    for (int i = 0; i < n; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = i;
            return LPV_OK;
        }
    char list[512] = "";
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    return lpv_fail_param(err, LPV_E_ARG, param, "expected %s, got '%s'", list, s ? s : "");
}
