/*
 * cpu.h — CPU features, the ISA the kernels dispatch on, the thread count
 * shared by every parallel op, and OpenBLAS core selection.
 *
 * One process-wide setting each (set once by the CLI before work starts):
 *   lpv_isa_get()      kernel ISA; defaults to the best the CPU and OS support,
 *                      lpv_isa_set() forces one (--isa).
 *   lpv_dense_kernel_get()  lpvit's blocked kernel or OpenBLAS for dense layers
 *                      (lpv_dense_kernel_auto: the faster on this ISA and OpenBLAS core).
 *   lpv_threads_get()  threads used by lpvit's OpenMP regions; OpenBLAS itself
 *                      is kept at 1 thread and called per thread, so the
 *                      machine is never oversubscribed.
 * lpv_blas_reexec() must run first in main(): Debian's OpenBLAS 0.3.21 picks
 * its AVX2 "Haswell" kernels on Zen 5 although the CPU has AVX-512; the core
 * is chosen when the library loads, so lpvit re-executes itself once with
 * OPENBLAS_CORETYPE set when that happens and the user did not set it.
 */
#ifndef LPVIT_CPU_H
#define LPVIT_CPU_H

#include <stddef.h>

#include "lpvit/error.h"
#include "lpvit/names.h"

/* Ordered levels: each runs every kernel of the levels below it that the CPU has. avx512bf16 adds the BF16 dot
 * product (vdpbf16ps) to avx512; its FP32 kernels are avx512's (lpv_isa_fp32). avxvnni is avx2 plus the VEX
 * int8 dot product (vpdpbusd on ymm: Intel client cores from Alder Lake on; Zen 5): its FP32 kernels are avx2's and
 * only int8 products differ. It is not implied by the levels above it (Zen 4 and Skylake-X have avx512 without
 * it), so a level is runnable when lpv_isa_supported says so, not merely when it is <= lpv_isa_best(). */
#define LPV_ISA_LIST(X)                                                                                      \
    X(LPV_ISA_REF, "ref") X(LPV_ISA_AVX2, "avx2") X(LPV_ISA_AVXVNNI, "avxvnni") X(LPV_ISA_AVX512, "avx512") \
    X(LPV_ISA_AVX512BF16, "avx512bf16")
typedef enum { LPV_ISA_LIST(LPV_ENUM_VALUE) LPV_ISA_COUNT } lpv_isa;

/* The FP32 kernel family an ISA level runs (avx512bf16 -> avx512, avxvnni -> avx2). */
static inline lpv_isa lpv_isa_fp32(lpv_isa isa) {
    return isa > LPV_ISA_AVX512 ? LPV_ISA_AVX512 : isa == LPV_ISA_AVXVNNI ? LPV_ISA_AVX2 : isa;
}

typedef struct {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16, avx512_vnni, avx_vnni;
    int amx_tile, amx_bf16, amx_int8; /* found; no lpvit kernel uses AMX yet */
    int os_avx, os_avx512; /* XCR0 says the OS saves the registers */
    int os_amx;            /* XCR0 says the OS saves the tile state (Linux still wants ARCH_REQ_XCOMP_PERM) */
    int family, model;
    char vendor[16];
    char brand[64];
} lpv_cpu_info;

const lpv_cpu_info *lpv_cpu(void);
/* The best ISA this CPU + OS can run. */
lpv_isa lpv_isa_best(void);
/* 1 when this CPU + OS can run the level's kernels. */
int lpv_isa_supported(lpv_isa isa);
lpv_isa lpv_isa_get(void);
/* Fails when the CPU cannot run the requested ISA. */
lpv_status lpv_isa_set(lpv_isa isa, lpv_err *err);
lpv_status lpv_isa_parse(const char *s, lpv_isa *out, lpv_err *err);
const char *lpv_isa_name(lpv_isa isa);

/* The cache blocking the BSR kernels plan with (bsr.c holds one table of knobs per profile, each measured on
 * its CPUs, docs/benchmarks.md#cache-blocking-per-cpu): "zen" (AMD Zen 4: 32 KB L1d, 1 MB L2, the first
 * tuning; also every non-Intel CPU but Zen 5), "intel" (Xeon: 48 KB L1d, 2 MB L2, a mesh L3 that is slow to
 * stream from) and "zen5" (AMD family 26 on: zen's caches with full-width AVX-512, whose tiles prefetch the
 * next group's weights instead of the next tile's X). Chosen from the vendor and family;
 * LPVIT_BLOCKING=zen|intel|zen5 in the environment overrides it (benchmarks A/B them; the library ignores an
 * unknown value, lpv_blocking_check_env reports it). Read once, before the first product. */
#define LPV_BLOCKING_LIST(X) X(LPV_BLOCKING_ZEN, "zen") X(LPV_BLOCKING_INTEL, "intel") X(LPV_BLOCKING_ZEN5, "zen5")
typedef enum { LPV_BLOCKING_LIST(LPV_ENUM_VALUE) LPV_BLOCKING_COUNT } lpv_blocking;
lpv_blocking lpv_blocking_get(void);
const char *lpv_blocking_name(lpv_blocking b);
/* Fails naming LPVIT_BLOCKING when it is set to something else than a profile name (the CLI exits 2). */
lpv_status lpv_blocking_check_env(lpv_err *err);

/* Which kernel a dense model's linears run in the inference commands: lpvit's own blocked kernel
 * (lpv_model_pack_dense, model.h; the library's default) or OpenBLAS. Process-wide, like the ISA.
 * lpv_dense_kernel_auto() is the faster one as measured (docs/benchmarks.md): OpenBLAS when the kernels
 * run AVX2 and OpenBLAS runs one of its AVX2 cores (Haswell, Zen: their sgemm beat lpvit's AVX2 kernel on
 * every DeiT shape), else blocked (ahead of OpenBLAS on AVX-512; and the only choice that keeps to a
 * lower --isa than OpenBLAS's core). Call it after the ISA is set. */
typedef enum { LPV_DENSE_BLOCKED = 0, LPV_DENSE_BLAS = 1 } lpv_dense_kernel;
void lpv_dense_kernel_set(lpv_dense_kernel k);
lpv_dense_kernel lpv_dense_kernel_get(void);
lpv_dense_kernel lpv_dense_kernel_auto(void);
const char *lpv_dense_kernel_name(lpv_dense_kernel k);

/* Thread count for all lpvit parallel work (>= 1); default: online CPUs. */
int lpv_threads_get(void);
/* n is clamped to 1..lpv_threads_max(). */
void lpv_threads_set(int n);
/* The most threads lpvit runs: each may call OpenBLAS at the same time, and OpenBLAS keeps buffers for
 * 2 x its built MAX_THREADS callers (more corrupt its heap: 0.3.21 built for 64 crashed at 1024), so
 * 2 x MAX_THREADS read from openblas_get_config(), at most 1024; 128 when the config does not say. */
int lpv_threads_max(void);
/* Threads for a new parallel region: 1 inside one already (nested regions are not used), else lpv_threads_get(). */
int lpv_team_size(void);

/* Call first thing in main(); may execv() the program. Returns normally otherwise. */
void lpv_blas_reexec(int argc, char **argv);
/* The OPENBLAS_CORETYPE lpv_blas_reexec sets for a CPU whose best ISA is `best` (with or without AVX512-BF16)
 * when OpenBLAS picked `core`: SkylakeX / Cooperlake on every AVX-512 level (avx512bf16 too) when `core` is not an
 * AVX-512 core, else NULL (keep it). */
const char *lpv_blas_core_wanted(lpv_isa best, int avx512_bf16, const char *core);
const char *lpv_blas_corename(void);
/* "OpenBLAS 0.3.21 ..." config string. */
const char *lpv_blas_config(void);
/* Where the core came from: "auto", "env" (user set it) or "lpvit" (re-exec). */
const char *lpv_blas_core_source(void);

/* "avx2 fma avx512f ... avx512_bf16 amx_tile" : the features lpvit's dispatch looks at, as found. */
void lpv_cpu_features(char *buf, size_t cap);

/* Monotonic seconds. */
double lpv_now(void);

#endif
