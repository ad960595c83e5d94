/*
 * log.h — how the library tells its caller what it is doing: log lines and
 * progress with an ETA, delivered to callbacks the caller installs. The
 * library never writes to stdout or stderr itself and never names a CLI flag;
 * the CLI installs renderers (a redrawn bar on a terminal, a line per quarter
 * in a log file) and decides what --quiet hides.
 *
 * One process-wide pair of callbacks, set before work starts (like the ISA
 * and the thread count in cpu.h); with none installed everything is dropped.
 * Callbacks run on the thread that reports, never inside a parallel region.
 * Messages are one line, lowercase, without the "lpvit: " prefix or a
 * newline; the text passed to a callback lives only for the call.
 *
 *     static void my_log(lpv_log_level lv, const char *msg, void *u) { fprintf(stderr, "%s\n", msg); }
 *     lpv_log_set(my_log, NULL, NULL);
 *
 * Progress: a phase opens a tracker, updates it as work is done, and closes
 * it; the tracker computes the rate and the ETA and forwards each update.
 * Trackers live on the caller's stack; nothing is allocated.
 *
 *     lpv_progress p;
 *     lpv_progress_begin(&p, "statistics", n_images);
 *     for (...) lpv_progress_update(&p, done, "loss %.4f", loss);
 *     lpv_progress_end(&p);
 */
#ifndef LPVIT_LOG_H
#define LPVIT_LOG_H

typedef enum { LPV_LOG_DEBUG = 0, LPV_LOG_INFO, LPV_LOG_WARN } lpv_log_level;

typedef void (*lpv_log_fn)(lpv_log_level level, const char *msg, void *user);

typedef struct {
    const char *label;  /* what is being counted: "statistics (step 2/3)" */
    long done, total;   /* units done so far of total (images, blocks, ...) */
    double elapsed_s;   /* since lpv_progress_begin */
    double eta_s;       /* estimated seconds left; < 0 before the first unit is done */
    const char *detail; /* e.g. "loss 2.3104", or NULL */
    int finished;       /* 1 on the call made by lpv_progress_end */
} lpv_progress_event;

typedef void (*lpv_progress_fn)(const lpv_progress_event *ev, void *user);

/* Installs the callbacks (either may be NULL: that kind is dropped); user is passed back to both. */
void lpv_log_set(lpv_log_fn log, lpv_progress_fn progress, void *user);

/* Formats one line and hands it to the log callback. */
void lpv_log(lpv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define lpv_info(...) lpv_log(LPV_LOG_INFO, __VA_ARGS__)
#define lpv_warn(...) lpv_log(LPV_LOG_WARN, __VA_ARGS__)

typedef struct {
    char label[96];
    long total, done;
    double t0;
} lpv_progress;

/* label is printf-style. */
void lpv_progress_begin(lpv_progress *p, long total, const char *label_fmt, ...) __attribute__((format(printf, 3, 4)));
/* done units of total; detail (printf-style, may be NULL) says how it goes. */
void lpv_progress_update(lpv_progress *p, long done, const char *detail_fmt, ...) __attribute__((format(printf, 3, 4)));
void lpv_progress_end(lpv_progress *p);

#endif
