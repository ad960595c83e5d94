/* report.c — provenance and JSON output (see include/lpvit/report.h). */
#include "lpvit/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit_commit.h" /* generated at build time */
#include "lpvit/fileio.h"

const char *lpv_version(void) { return LPVIT_VERSION; }
const char *lpv_commit(void) { return LPVIT_GIT_COMMIT; }

static void loadavg(char *buf, size_t cap) {
    buf[0] = 0;
    FILE *fp = fopen("/proc/loadavg", "r");
    if (!fp) return;
    double a, b, c;
    if (fscanf(fp, "%lf %lf %lf", &a, &b, &c) == 3) snprintf(buf, cap, "%.2f %.2f %.2f", a, b, c);
    fclose(fp);
}

void lpv_cpu_snap_take(lpv_cpu_snap *s) {
    memset(s, 0, sizeof *s);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->wall = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s->self_cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                      1e-6 * (double)ru.ru_stime.tv_usec;
    FILE *fp = fopen("/proc/stat", "r");
    if (!fp) return;
    /* "cpu  user nice system idle iowait irq softirq steal ..." in clock ticks */
    unsigned long long v[8];
    if (fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) == 8) {
        long hz = sysconf(_SC_CLK_TCK);
        s->busy_cpu = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)(hz > 0 ? hz : 100);
        s->ok = 1;
    }
    fclose(fp);
}

double lpv_cpu_others(const lpv_cpu_snap *a, const lpv_cpu_snap *b) {
    double wall = b->wall - a->wall;
    if (!a->ok || !b->ok || wall <= 0) return NAN;
    double others = (b->busy_cpu - a->busy_cpu) - (b->self_cpu - a->self_cpu);
    return others > 0 ? others / wall : 0.0; /* tick rounding can make it slightly negative */
}

cJSON *lpv_preproc_json(const lpv_preproc *pp) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "img_size", pp->img_size);
    cJSON_AddNumberToObject(j, "crop_pct", pp->crop_pct);
    cJSON_AddStringToObject(j, "interpolation", lpv_interp_name(pp->interp));
    cJSON_AddItemToObject(j, "mean", cJSON_CreateFloatArray(pp->mean, 3));
    cJSON_AddItemToObject(j, "std", cJSON_CreateFloatArray(pp->std, 3));
    return j;
}

void lpv_report_environment(cJSON *obj) {
    cJSON *e = cJSON_AddObjectToObject(obj, "environment");
    if (!e) return;
    const lpv_cpu_info *c = lpv_cpu();
    char buf[128];
    cJSON_AddStringToObject(e, "lpvit", LPVIT_VERSION);
    cJSON_AddStringToObject(e, "commit", LPVIT_GIT_COMMIT);
    cJSON_AddStringToObject(e, "build", LPVIT_BUILD_TYPE);
    cJSON_AddStringToObject(e, "compiler", LPVIT_C_COMPILER);
    cJSON_AddStringToObject(e, "jpeg_decoder", lpv_image_jpeg_decoder()); /* decides the pixels: see image.h */
    cJSON_AddStringToObject(e, "cpu", c->brand[0] ? c->brand : c->vendor);
    snprintf(buf, sizeof buf, "%d/%d", c->family, c->model);
    cJSON_AddStringToObject(e, "cpu_family_model", buf);
    cJSON_AddNumberToObject(e, "online_cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddStringToObject(e, "isa", lpv_isa_name(lpv_isa_get()));
    char feat[256];
    lpv_cpu_features(feat, sizeof feat);
    cJSON_AddStringToObject(e, "cpu_features", feat);
    cJSON_AddNumberToObject(e, "threads", lpv_threads_get()); /* per rank */
    cJSON_AddNumberToObject(e, "ranks", lpv_dist_size());      /* processes of an mpirun job (dist.h) */
    cJSON_AddStringToObject(e, "mpi", lpv_dist_library());
    cJSON_AddStringToObject(e, "dense_kernel", lpv_dense_kernel_name(lpv_dense_kernel_get()));
    cJSON_AddStringToObject(e, "blocking", lpv_blocking_name(lpv_blocking_get()));
    cJSON_AddStringToObject(e, "openblas_core", lpv_blas_corename());
    cJSON_AddStringToObject(e, "openblas_core_source", lpv_blas_core_source());
    cJSON_AddStringToObject(e, "openblas_config", lpv_blas_config());
    loadavg(buf, sizeof buf);
    cJSON_AddStringToObject(e, "loadavg", buf);
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    cJSON_AddStringToObject(e, "time", buf);
}

void lpv_environment_line(char *buf, size_t cap) {
    const lpv_cpu_info *c = lpv_cpu();
    char la[64];
    loadavg(la, sizeof la);
    char ranks[64] = "";
    if (lpv_dist_size() > 1) snprintf(ranks, sizeof ranks, " x %d mpi ranks", lpv_dist_size());
    snprintf(buf, cap,
             "lpvit %s (%s), jpeg %s, cpu '%s', isa %s, %d threads%s, dense kernel %s, blocking %s, openblas core %s (%s), "
             "load %s",
             LPVIT_VERSION, LPVIT_GIT_COMMIT, lpv_image_jpeg_decoder(), c->brand[0] ? c->brand : c->vendor,
             lpv_isa_name(lpv_isa_get()), lpv_threads_get(), ranks, lpv_dense_kernel_name(lpv_dense_kernel_get()),
             lpv_blocking_name(lpv_blocking_get()), lpv_blas_corename(), lpv_blas_core_source(), la);
}

/* Depth-first search for a non-finite number; writes its key path into where. */
static int find_nonfinite(const cJSON *j, char *where, size_t cap) {
    for (const cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsNumber(c) && !isfinite(c->valuedouble)) {
            snprintf(where, cap, "%s", c->string ? c->string : "[array item]");
            return 1;
        }
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && find_nonfinite(c, where, cap)) return 1;
    }
    return 0;
}

lpv_status lpv_json_print(const cJSON *root, const char *dest, char **out, lpv_err *err) {
    *out = NULL;
    char where[128];
    if (find_nonfinite(root, where, sizeof where))
        return lpv_fail(err, LPV_E_DATA, "report value '%s' is not a finite number; refusing to write '%s'", where,
                        dest);
    char *txt = cJSON_Print(root);
    size_t n = txt ? strlen(txt) : 0;
    char *t2 = txt ? realloc(txt, n + 2) : NULL;
    if (!t2) {
        free(txt);
        return lpv_fail(err, LPV_E_OOM, "out of memory printing JSON for '%s'", dest);
    }
    t2[n] = '\n', t2[n + 1] = 0;
    *out = t2;
    return LPV_OK;
}

lpv_status lpv_json_write(const cJSON *root, const char *path, lpv_err *err) {
    char *txt;
    LPV_TRY(lpv_json_print(root, path, &txt, err));
    lpv_status st = lpv_write_file_atomic(path, txt, strlen(txt), err);
    free(txt);
    return st;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double lpv_median(double *v, int n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
