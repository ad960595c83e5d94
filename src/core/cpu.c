/* cpu.c — cpuid, ISA dispatch setting, thread count, OpenBLAS core (see include/lpvit/cpu.h). */
#include "lpvit/cpu.h"

#include <cblas.h>
#include <cpuid.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

char *openblas_get_corename(void);
char *openblas_get_config(void);
void openblas_set_num_threads(int);

static lpv_cpu_info g_cpu;
static int g_cpu_done;
static int g_isa = -1;
static int g_threads;

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (unsigned long long)edx << 32 | eax;
}

const lpv_cpu_info *lpv_cpu(void) {
    if (g_cpu_done) return &g_cpu;
    unsigned a, b, c, d;
    memset(&g_cpu, 0, sizeof g_cpu);
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(g_cpu.vendor, &b, 4);
        memcpy(g_cpu.vendor + 4, &d, 4);
        memcpy(g_cpu.vendor + 8, &c, 4);
    }
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        unsigned fam = (a >> 8) & 15, mod = (a >> 4) & 15;
        if (fam == 15) fam += (a >> 20) & 255;
        if (fam >= 6) mod |= ((a >> 16) & 15) << 4;
        g_cpu.family = (int)fam;
        g_cpu.model = (int)mod;
        g_cpu.fma = (c >> 12) & 1;
        g_cpu.f16c = (c >> 29) & 1;
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        if (osxsave && avx) {
            unsigned long long xcr0 = xgetbv0();
            g_cpu.os_avx = (xcr0 & 6) == 6;
            g_cpu.os_avx512 = (xcr0 & 0xe6) == 0xe6;
            g_cpu.os_amx = (xcr0 & 0x60000) == 0x60000; /* XTILECFG, XTILEDATA */
        }
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        g_cpu.avx2 = (b >> 5) & 1;
        g_cpu.avx512f = (b >> 16) & 1;
        g_cpu.avx512dq = (b >> 17) & 1;
        g_cpu.avx512bw = (b >> 30) & 1;
        g_cpu.avx512vl = (b >> 31) & 1;
        g_cpu.avx512_vnni = (c >> 11) & 1;
        g_cpu.amx_bf16 = (d >> 22) & 1;
        g_cpu.amx_tile = (d >> 24) & 1;
        g_cpu.amx_int8 = (d >> 25) & 1;
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        g_cpu.avx_vnni = (a >> 4) & 1;
        g_cpu.avx512_bf16 = (a >> 5) & 1;
    }
    unsigned ext = __get_cpuid_max(0x80000000, NULL);
    if (ext >= 0x80000004) {
        unsigned *p = (unsigned *)g_cpu.brand;
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002 + i, &p[4 * i], &p[4 * i + 1], &p[4 * i + 2], &p[4 * i + 3]);
        g_cpu.brand[63] = 0;
        /* trim */
        char *s = g_cpu.brand;
        while (*s == ' ') s++;
        memmove(g_cpu.brand, s, strlen(s) + 1);
        for (size_t n = strlen(g_cpu.brand); n && g_cpu.brand[n - 1] == ' '; n--) g_cpu.brand[n - 1] = 0;
    }
    g_cpu_done = 1;
    return &g_cpu;
}

int lpv_isa_supported(lpv_isa isa) {
    const lpv_cpu_info *c = lpv_cpu();
    int avx2 = c->os_avx && c->avx2 && c->fma;
    int avx512 = avx2 && c->os_avx512 && c->avx512f && c->avx512bw && c->avx512vl && c->avx512dq;
    switch (isa) {
    case LPV_ISA_REF: return 1;
    case LPV_ISA_AVX2: return avx2;
    case LPV_ISA_AVXVNNI: return avx2 && c->avx_vnni;
    case LPV_ISA_AVX512: return avx512;
    case LPV_ISA_AVX512BF16: return avx512 && c->avx512_bf16;
    default: return 0;
    }
}

lpv_isa lpv_isa_best(void) {
    for (int i = LPV_ISA_COUNT - 1; i > LPV_ISA_REF; i--)
        if (lpv_isa_supported((lpv_isa)i)) return (lpv_isa)i;
    return LPV_ISA_REF;
}

lpv_isa lpv_isa_get(void) {
    if (g_isa < 0) g_isa = (int)lpv_isa_best();
    return (lpv_isa)g_isa;
}

lpv_status lpv_isa_set(lpv_isa isa, lpv_err *err) {
    if (!lpv_isa_supported(isa))
        return lpv_fail(err, LPV_E_UNSUPPORTED, "isa '%s' is not supported by this cpu (best: '%s')", lpv_isa_name(isa),
                        lpv_isa_name(lpv_isa_best()));
    g_isa = (int)isa;
    return LPV_OK;
}

static const char *const ISA_NAMES[] = {LPV_ISA_LIST(LPV_ENUM_NAME)};

const char *lpv_isa_name(lpv_isa isa) { return lpv_enum_name(ISA_NAMES, LPV_ISA_COUNT, (int)isa); }

lpv_status lpv_isa_parse(const char *s, lpv_isa *out, lpv_err *err) {
    if (strcmp(s, "auto") == 0) {
        *out = lpv_isa_best();
        return LPV_OK;
    }
    int v;
    if (lpv_enum_parse(ISA_NAMES, LPV_ISA_COUNT, "isa", s, &v, NULL) != LPV_OK)
        return lpv_fail_param(err, LPV_E_ARG, "isa", "expected auto, ref, avx2, avxvnni, avx512 or avx512bf16, got '%s'", s);
    *out = (lpv_isa)v;
    return LPV_OK;
}

static const char *const BLOCKING_NAMES[] = {LPV_BLOCKING_LIST(LPV_ENUM_NAME)};

const char *lpv_blocking_name(lpv_blocking b) { return lpv_enum_name(BLOCKING_NAMES, LPV_BLOCKING_COUNT, (int)b); }

/* LPVIT_BLOCKING's profile into *v; LPV_OK with *v = -1 when it is unset or empty (err may be NULL). */
static lpv_status blocking_env(int *v, lpv_err *err) {
    const char *env = getenv("LPVIT_BLOCKING");
    *v = -1;
    return env && *env ? lpv_enum_parse(BLOCKING_NAMES, LPV_BLOCKING_COUNT, "LPVIT_BLOCKING", env, v, err) : LPV_OK;
}

lpv_blocking lpv_blocking_get(void) {
    static int chosen = -1;
    if (chosen >= 0) return (lpv_blocking)chosen;
    int v;
    if (blocking_env(&v, NULL) != LPV_OK || v < 0)
        v = strcmp(lpv_cpu()->vendor, "GenuineIntel") == 0                                   ? LPV_BLOCKING_INTEL
            : strcmp(lpv_cpu()->vendor, "AuthenticAMD") == 0 && lpv_cpu()->family >= 26 ? LPV_BLOCKING_ZEN5
                                                                                          : LPV_BLOCKING_ZEN;
    return (lpv_blocking)(chosen = v);
}

lpv_status lpv_blocking_check_env(lpv_err *err) {
    int v;
    return blocking_env(&v, err);
}

int lpv_threads_get(void) {
    if (g_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        lpv_threads_set(n > 0 ? (int)n : 1);
    }
    return g_threads;
}

int lpv_threads_max(void) {
    const char *cfg = openblas_get_config(), *p = cfg ? strstr(cfg, "MAX_THREADS=") : NULL;
    long m = p ? strtol(p + strlen("MAX_THREADS="), NULL, 10) : 0;
    if (m <= 0) return 128;
    return m > 512 ? 1024 : (int)(2 * m);
}

void lpv_threads_set(int n) {
    int max = lpv_threads_max();
    g_threads = n < 1 ? 1 : n > max ? max : n;
    omp_set_num_threads(g_threads);
    openblas_set_num_threads(1);
}

/* ---- OpenBLAS core ---- */

static const char *AVX512_CORES[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};

static int core_is_avx512(const char *name) {
    for (int i = 0; AVX512_CORES[i]; i++)
        if (name && strcmp(name, AVX512_CORES[i]) == 0) return 1;
    return 0;
}

const char *lpv_blas_core_wanted(lpv_isa best, int avx512_bf16, const char *core) {
    if (lpv_isa_fp32(best) != LPV_ISA_AVX512 || core_is_avx512(core)) return NULL;
    return avx512_bf16 ? "Cooperlake" : "SkylakeX";
}

void lpv_blas_reexec(int argc, char **argv) {
    (void)argc;
    if (getenv("OPENBLAS_CORETYPE") || getenv("LPVIT_NO_REEXEC")) return;
    const char *want = lpv_blas_core_wanted(lpv_isa_best(), lpv_cpu()->avx512_bf16, openblas_get_corename());
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("LPVIT_CORE_SOURCE", "lpvit", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the core we have */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("LPVIT_CORE_SOURCE");
}

const char *lpv_blas_corename(void) { return openblas_get_corename(); }
const char *lpv_blas_config(void) { return openblas_get_config(); }

const char *lpv_blas_core_source(void) {
    const char *s = getenv("LPVIT_CORE_SOURCE");
    if (s && strcmp(s, "lpvit") == 0) return "lpvit";
    return getenv("OPENBLAS_CORETYPE") ? "env" : "auto";
}

double lpv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static lpv_dense_kernel g_dense_kernel = LPV_DENSE_BLOCKED;
void lpv_dense_kernel_set(lpv_dense_kernel k) { g_dense_kernel = k; }
lpv_dense_kernel lpv_dense_kernel_get(void) { return g_dense_kernel; }
const char *lpv_dense_kernel_name(lpv_dense_kernel k) { return k == LPV_DENSE_BLAS ? "openblas" : "blocked"; }

/* OpenBLAS cores whose sgemm is AVX2 + FMA code (its AVX-512 ones are SkylakeX, Cooperlake, SapphireRapids) */
static int blas_core_avx2(const char *name) {
    return name && (strcasecmp(name, "Haswell") == 0 || strcasecmp(name, "Zen") == 0);
}

lpv_dense_kernel lpv_dense_kernel_auto(void) {
    return lpv_isa_fp32(lpv_isa_get()) == LPV_ISA_AVX2 && blas_core_avx2(lpv_blas_corename()) ? LPV_DENSE_BLAS
                                                                                              : LPV_DENSE_BLOCKED;
}

int lpv_team_size(void) { return omp_in_parallel() ? 1 : lpv_threads_get(); }

void lpv_cpu_features(char *buf, size_t cap) {
    const lpv_cpu_info *c = lpv_cpu();
    struct {
        int on;
        const char *name;
    } f[] = {{c->avx2, "avx2"},           {c->fma, "fma"},           {c->avx512f, "avx512f"},
             {c->avx512bw, "avx512bw"},   {c->avx512vl, "avx512vl"}, {c->avx512_vnni, "avx512_vnni"}, {c->avx_vnni, "avx_vnni"},
             {c->avx512_bf16, "avx512_bf16"}, {c->amx_tile, "amx_tile"}, {c->amx_bf16, "amx_bf16"},
             {c->amx_int8, "amx_int8"}};
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof f / sizeof *f && n < cap; i++)
        if (f[i].on) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? " " : "", f[i].name);
}
