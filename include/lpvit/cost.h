/*
 * cost.h — what pruning a layer to a block density buys: FLOPs, measured
 * time, and an energy proxy.
 *
 * FLOPs: multiply-adds of the kept weights, tokens x kept weights per image.
 * Time: a table measured on this machine (lpvit bench --calibrate) of the BSR
 * kernel's time per layer shape at a grid of densities, plus the dense
 * OpenBLAS time; queried by linear interpolation, made monotone in density.
 * A table is measured in one precision (FP32, BF16 or int8 kernels): the one
 * the pruned model will run at, so the allocator weighs the kernels that run.
 * Energy (a proxy, per image): E = e_mac · MACs + e_dram · weight bytes
 * (values + block indices, streamed from DRAM: DeiT weights do not stay in
 * cache) + e_cache · activation bytes (X read, Y written once, from cache).
 * Default constants are Horowitz's 45 nm figures (ISSCC 2014): FP32 multiply
 * 3.7 pJ + add 0.9 pJ = 4.6 pJ per MAC, DRAM 640 pJ per 32-bit word = 160
 * pJ/byte, 8 KiB SRAM 5 pJ per 32-bit word = 1.25 pJ/byte. Only ratios
 * matter to the allocator; the flags of `lpvit prune` override them.
 *
 * The time table owns its curves (malloc); lpv_time_table_free releases them.
 */
#ifndef LPVIT_COST_H
#define LPVIT_COST_H

#include "lpvit/error.h"
#include "lpvit/names.h"

#define LPV_OBJECTIVE_LIST(X) \
    X(LPV_OBJ_FLOPS, "flops") X(LPV_OBJ_SPEED, "speed") X(LPV_OBJ_POWER, "power") X(LPV_OBJ_SPEED_POWER, "speed+power")
typedef enum { LPV_OBJECTIVE_LIST(LPV_ENUM_VALUE) LPV_OBJ_COUNT } lpv_objective;

const char *lpv_objective_name(lpv_objective o);
lpv_status lpv_objective_parse(const char *s, lpv_objective *out, lpv_err *err);

/* The precision a pruned model will run at, and so the kernels its time table times: fp32, bf16 (the block
 * linears' BF16 packs, needs ISA avx512bf16) or int8 (int8 weights, inputs quantized per token). */
#define LPV_PRECISION_LIST(X) X(LPV_PREC_FP32, "fp32") X(LPV_PREC_BF16, "bf16") X(LPV_PREC_INT8, "int8")
typedef enum { LPV_PRECISION_LIST(LPV_ENUM_VALUE) LPV_PREC_COUNT } lpv_precision;

const char *lpv_precision_name(lpv_precision p);
lpv_status lpv_precision_parse(const char *s, lpv_precision *out, lpv_err *err);

typedef struct {
    double mac_pj, dram_byte_pj, cache_byte_pj;
} lpv_energy;

lpv_energy lpv_energy_default(void);
/* Energy (pJ per image) of a layer (out, in) over `tokens` columns at block density d. */
double lpv_layer_energy_pj(const lpv_energy *e, int out, int in, int tokens, int R, int C, double d);

#define LPV_TT_MAX 32

typedef struct {
    int out, in, tokens, R, C;     /* layer shape, tokens per call (batch x T), block */
    int n;                         /* grid points */
    double density[LPV_TT_MAX];    /* ascending, last = 1 */
    double ms[LPV_TT_MAX];         /* BSR kernel median ms at each density */
    double dense_ms;               /* dense median ms: OpenBLAS FP32, or (bf16, int8) that kernel with every block */
} lpv_time_curve;

typedef struct {
    int n;
    lpv_time_curve *curves;
    char cpu[128], isa[16], blas_core[64], commit[32];
    lpv_precision precision;       /* the kernels timed; bf16 / int8 include the input's conversion / quantization */
    int threads, batch, reps;
} lpv_time_table;

typedef struct {
    int out, in, tokens;
} lpv_layer_shape;

/* Times the BSR kernel (random masks, exact kept counts) and dense OpenBLAS for each distinct shape in `prec`:
 * bf16 / int8 time the BF16 / int8 BSR kernel with its input's conversion / quantization, and that kernel with
 * every block as the dense time (what lpvit runs for a dense layer in that precision). bf16 needs ISA
 * avx512bf16, or ref (the reference kernel, for tests); otherwise LPV_E_UNSUPPORTED. */
lpv_status lpv_time_table_measure(lpv_time_table *t, const lpv_layer_shape *shapes, int n, int R, int C,
                                  const double *densities, int nd, int batch, int reps, unsigned long long seed,
                                  lpv_precision prec, lpv_err *err);
lpv_status lpv_time_table_save(const lpv_time_table *t, const char *path, lpv_err *err);
/* Validates everything it reads (shapes > 0, densities ascending in (0, 1], times finite > 0, precision fp32,
 * bf16 or int8); a table without "precision" (older files) is fp32. */
lpv_status lpv_time_table_load(lpv_time_table *t, const char *path, lpv_err *err);
void lpv_time_table_free(lpv_time_table *t);
const lpv_time_curve *lpv_time_table_find(const lpv_time_table *t, int out, int in, int tokens, int R, int C);
/* Interpolated BSR time (ms) at density d in [0, 1]; 0 at d = 0. Monotone non-decreasing in d. */
double lpv_time_curve_at(const lpv_time_curve *c, double d);

#endif
