/*
 * bench.h — honest timing of the engine: dense vs block-sparse, per layer and
 * end to end, measured in one run with the same threads, interleaved, as
 * medians of repeated trials after warm-up.
 *
 * Callers own the models; the functions allocate their own scratch (once per
 * call, never inside the timed region) and free it before returning.
 */
#ifndef LPVIT_BENCH_H
#define LPVIT_BENCH_H

#include <stdint.h>

#include "lpvit/cpu.h"
#include "lpvit/error.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"

typedef struct {
    double median_ms, min_ms, max_ms;
    int reps;
    double peak_gflops; /* the clock probe's median over the timed rounds (lpv_bench_set_clock_probe), else NAN */
    double product_ms;  /* int8 layers of lpv_bench_linear_pair: the median of the product alone, without the
                           quantization of its input (median_ms has both); else NAN (0 in a zeroed struct) */
} lpv_timing;

/* The clock probe: with isa set (not LPV_ISA_REF), every timed round of lpv_bench_linear_pair and
 * lpv_bench_forward_pair/_vs_fp32 is followed by a ~1 ms register-only FMA trial on `threads` threads (the
 * lpv_bench_peak loop), and lpv_timing.peak_gflops is the median of those trials: the peak of the clock the
 * round ran at. A VM's clock can move by a third with its host's load within a run; a share of this peak
 * stays comparable where a share of a peak measured once does not. LPV_ISA_REF (the default) turns it off. */
void lpv_bench_set_clock_probe(lpv_isa isa, int threads);

/* Summarizes n trial times (seconds); the array is sorted in place. */
lpv_timing lpv_timing_of(double *sec, int n);

/* Precision of a timed run: FP32, or the layers' BF16 packs / int8 weights where they have them. */
enum { LPV_BENCH_FP32 = 0, LPV_BENCH_BF16 = 1, LPV_BENCH_INT8 = 2 };

/* Prepares a loaded model for the inference kernels, as eval, bench, infer and sweep run it (call it after the
 * last change to the weights): its dense layers in the blocked layout when that is the dense kernel
 * (lpv_dense_kernel_get), and its block linears as BF16 packs (LPV_BENCH_BF16) or int8 weights quantized per row
 * (LPV_BENCH_INT8; the inputs per token at run time). */
lpv_status lpv_model_pack_for(lpv_model *m, int lowp, lpv_err *err);

/* With LPV_BENCH_INT8, how the forward pass feeds an int8 layer whose inputs are quantized per token (OR them
 * into lowp): RANGE_IN, the op that wrote X recorded its per-token range (LayerNorm before qkv and fc1, fc1's
 * GELU before an int8 fc2), so the quantizer skips its min/max pass; RANGE_OUT, the product records its own
 * output's range for the next layer (fc1 before an int8 fc2, lpv_bsr_matmul_q8_range). Without them the
 * quantizer finds the range itself and the product records nothing (proj's input, and the allocator's cost
 * tables, which time shapes, not layers). */
enum { LPV_BENCH_Q8_RANGE_IN = 4, LPV_BENCH_Q8_RANGE_OUT = 8 };

/* Times `a` and `b` (either may be NULL) interleaved: Y = epi(L X + b) on T token columns. lowp (LPV_BENCH_*,
 * int8 with the flags above): a layer with a BF16 pack / int8 weights runs in that precision, the conversion or
 * quantization of X inside the timing (median_ms); an int8 layer's product is also timed alone (product_ms), as
 * the forward pass's profile counts it (its quantization there is an op of its own, the same work at any
 * density). */
lpv_status lpv_bench_linear_pair(const lpv_linear *a, const lpv_linear *b, int T, int epi, int lowp, int warmup,
                                 int reps, uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_err *err);

/* Forward passes of B random images through `a` and `b` (either may be NULL), interleaved; lowp: the
 * workspace runs the layers' BF16 packs or int8 weights (lpv_workspace_use_bf16 / _int8). Per-op profiles
 * (summed over the timed reps) go to pa / pb when non-NULL. */
lpv_status lpv_bench_forward_pair(const lpv_model *a, const lpv_model *b, int B, int lowp, int warmup, int reps,
                                  uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_profile *pa, lpv_profile *pb,
                                  lpv_err *err);

/* The same with `dense` always in FP32 (its own workspace) and b in lowp: a low-precision model's speedup over
 * the FP32 model it came from. */
lpv_status lpv_bench_forward_vs_fp32(const lpv_model *dense, const lpv_model *b, int B, int lowp, int warmup,
                                     int reps, uint64_t seed, lpv_timing *ta, lpv_timing *tb, lpv_err *err);

/* This machine's arithmetic peak for one ISA's kernels: register-only FMA loops (FP32 FMAs; vdpbf16ps for
 * avx512bf16) run on `threads` threads at once; each thread's best of 20 short trials (more, up to 200, while
 * one thread's best trails another's by 10 %), summed. gflops is the whole team's rate, per_thread its mean. LPV_ISA_REF has no vector peak: gflops is NAN. */
typedef struct {
    lpv_isa isa;
    int threads;
    double gflops, per_thread;
} lpv_peak;

lpv_status lpv_bench_peak(lpv_isa isa, int threads, lpv_peak *out, lpv_err *err);
/* The same for the int8 kernel the ISA set now runs (lpv_q8_kernel_for; gflops counts int8 operations, a
 * multiply-add being 2): VNNI, vpdpbusd loops (isa says avx512); AVX-VNNI, vpdpbusd on ymm (isa says avxvnni);
 * AVX2, vpmaddubsw + vpmaddwd + vpaddd as its kernel issues them per 32 products (isa says avx2); the
 * reference: gflops NAN. */
lpv_status lpv_bench_peak_int8(int threads, lpv_peak *out, lpv_err *err);

/* vdpbf16ps's FLOP rate over the FP32 FMA rate on one core, measured in ~10 ms (register-only loops): ~2 where
 * BF16 pays (Zen 4: 2.0), ~0.5 on Intel Xeons without AMX (measured 0.49: vdpbf16ps issues every other cycle,
 * so the BF16 kernels run at half the FP32 kernels' rate). NAN when the CPU has no AVX512-BF16. */
double lpv_bench_bf16_vs_fp32(void);

/* Prunes each linear layer selected by `which` to density d with a uniformly random block mask
 * (exactly round(d * blocks) kept, at least one). which: bit 0 block linears, bit 1 patch embed, bit 2 heads. */
enum { LPV_SEL_BLOCKS = 1, LPV_SEL_PATCH = 2, LPV_SEL_HEADS = 4 };
lpv_status lpv_prune_random(lpv_model *m, double d, int R, int C, int which, uint64_t seed, lpv_err *err);

#endif
