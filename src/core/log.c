/* log.c — the log and progress callbacks (see include/lpvit/log.h). */
#include "lpvit/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lpvit/cpu.h"

static lpv_log_fn g_log;
static lpv_progress_fn g_progress;
static void *g_user;

void lpv_log_set(lpv_log_fn log, lpv_progress_fn progress, void *user) {
    g_log = log, g_progress = progress, g_user = user;
}

void lpv_log(lpv_log_level level, const char *fmt, ...) {
    if (!g_log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_log(level, msg, g_user);
}

static void emit(const lpv_progress *p, const char *detail, int finished) {
    double el = lpv_now() - p->t0;
    lpv_progress_event ev = {p->label, p->done, p->total, el, -1, detail, finished};
    if (finished) ev.eta_s = 0;
    else if (p->done > 0) ev.eta_s = el / (double)p->done * (double)(p->total - p->done);
    g_progress(&ev, g_user);
}

void lpv_progress_begin(lpv_progress *p, long total, const char *label_fmt, ...) {
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, label_fmt);
    vsnprintf(p->label, sizeof p->label, label_fmt, ap);
    va_end(ap);
    p->total = total;
    p->t0 = lpv_now();
}

void lpv_progress_update(lpv_progress *p, long done, const char *detail_fmt, ...) {
    p->done = done;
    if (!g_progress) return;
    char detail[256];
    if (detail_fmt) {
        va_list ap;
        va_start(ap, detail_fmt);
        vsnprintf(detail, sizeof detail, detail_fmt, ap);
        va_end(ap);
    }
    emit(p, detail_fmt ? detail : NULL, 0);
}

void lpv_progress_end(lpv_progress *p) {
    if (g_progress) emit(p, NULL, 1);
}
