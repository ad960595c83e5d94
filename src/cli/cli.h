/*
 * cli.h — what the subcommands share: declarative option parsing (git's
 * parse-options in miniature), runtime setup (--threads, --isa), opening a
 * model from --model/--weights with its preprocessing, and a progress bar.
 *
 * Conventions: results go to stdout, logs and progress to stderr; a usage
 * error prints one lowercase line and exits 2; any other failure prints one
 * "lpvit: ..." line and exits 1; --help prints to stdout and exits 0.
 * The CLI is the only code that prints: it renders the library's log lines
 * and progress (log.h) and turns the parameter an error names into its flag.
 */
#ifndef LPVIT_CLI_H
#define LPVIT_CLI_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "lpvit/dataset.h"
#include "lpvit/error.h"
#include "lpvit/image.h"
#include "lpvit/model.h"
#include "lpvit/registry.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_HELP = 3 };
enum { EXIT_USAGE = 2 };

/* OPT_IN, OPT_OUT and OPT_MODEL are strings that name files: an input file or folder, an output file, a
 * --model (a file, a folder or a preset whose weights are looked up). cli_parse checks the outputs against
 * the inputs before any work (ioguard.h). */
typedef enum { OPT_END = 0, OPT_STR, OPT_INT, OPT_DOUBLE, OPT_FLAG, OPT_FLOAT3, OPT_IN, OPT_OUT, OPT_MODEL } cli_opt_type;

typedef struct {
    const char *name;    /* "--batch" */
    cli_opt_type type;
    void *dst;           /* char ** / int * / double * / int * (flag) / float[3] */
    const char *metavar; /* "N" */
    const char *help;
    double min, max;     /* for OPT_INT / OPT_DOUBLE when min < max */
    int *seen;           /* optional: set to 1 when given */
} cli_opt;

typedef struct {
    const char *usage;       /* "lpvit eval --model M --imagenet-dir DIR [options]" */
    const char *description; /* a paragraph */
    const cli_opt *opts;
    int min_pos, max_pos;    /* positional arguments accepted */
    int pos_in;              /* 1: the positional arguments are input files */
} cli_spec;

/* Parses argv[1..]; positional arguments go to pos (npos). Then checks the output options against the input
 * ones (lpv_ioguard_check), printing one line when they clash. Returns CLI_OK, CLI_HELP (--help printed),
 * CLI_USAGE or CLI_FAIL (an output folder that cannot be written): callers return 0 for CLI_HELP, else rc. */
int cli_parse(int argc, char **argv, const cli_spec *spec, char **pos, int *npos);
/* The check cli_parse runs, again with more outputs: files a command derives from its flags (an output
 * folder's contents), all called extra_label in messages. Returns CLI_OK or the exit code after one line. */
int cli_guard_paths(const cli_spec *spec, char **pos, int npos, const char *extra_label, const char *const *extra,
                    int n_extra);
/* Prints "lpvit: <msg>" on stderr and returns 1 (or 2 for LPV_E_ARG). A parameter the error names
 * (err->param, "min_density") is said as its flag ("--min-density: ..." or "... (see --min-density)"). */
int cli_fail(const lpv_err *err, lpv_status st);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Warns when OPENBLAS_CORETYPE, set by the user, keeps OpenBLAS on a non-AVX-512 core although the CPU has
 * AVX-512 (lpvit then does not re-execute itself): `what` runs its OpenBLAS products at about half speed. */
void cli_warn_blas_core(const char *what);

/* The calibration statistics cache (prune, cache): given (--cache-dir) when not NULL, else $XDG_CACHE_HOME/lpvit,
 * else ~/.cache/lpvit. */
void cli_cache_dir(char *buf, size_t cap, const char *given);

/* --threads / --isa: applies them (threads 0 = all online CPUs). */
lpv_status cli_runtime(int threads, const char *isa, lpv_err *err);
/* What the inference commands (eval, infer, bench) set up before they load a model: cli_runtime, then
 * --dense-kernel blocked|openblas (NULL keeps the default), then --precision fp32|bf16|int8 (NULL: fp32) into
 * *bf16 as a CLI_* code (0 = fp32); bf16 needs ISA avx512bf16, or ref (the reference kernel). */
enum { CLI_FP32 = 0, CLI_BF16 = 1, CLI_INT8 = 2 };
lpv_status cli_engine(int threads, const char *isa, const char *dense_kernel, const char *precision, int *bf16,
                      lpv_err *err);
/* Packs a loaded model for the inference kernels (call it after the last change to the weights): its dense
 * layers for the blocked kernel when that is the choice, and its block linears in BF16 or int8 (bf16: a CLI_*
 * code; int8 quantizes the weights per row and the inputs per token unless the file has scales). */
lpv_status cli_pack(lpv_model *m, int bf16, lpv_err *err);
/* --attention MODE (NULL: auto) and --int8-attention (int8: the same as --attention int8) as an lpv_attention
 * (model.h): checked once, before any work; a bad or contradictory value is LPV_E_ARG. */
lpv_status cli_attention_mode(const char *mode, int int8, lpv_attention *out, lpv_err *err);
/* Sets m's attention (NULL m: nothing), warning where LPV_ATTN_INT8 cannot run on this ISA and head size.
 * What runs is resolved per workspace (forward.h, lpv_attention_int8_for; lpv_model_attention_name names it). */
void cli_attention(lpv_model *m, lpv_attention a);

typedef struct {
    lpv_model *model;
    lpv_model_ref ref;
    lpv_preproc pp;
    char pp_source[128]; /* where the preprocessing came from */
} cli_model;

typedef struct {
    const char *model, *weights;
    int heads;
    int allow_extra;
    /* preprocessing overrides (unset: NAN / NULL) */
    double crop_pct;
    const char *interp;
    float mean[3], std[3];
    int mean_set, std_set;
    int quiet;
    int needs_pp; /* the command reads images or records the preprocessing (eval, infer on images, prune, quantize):
                   * a model whose preprocessing is not known then needs --mean and --std */
} cli_model_args;

void cli_model_args_init(cli_model_args *a);
/* Resolves, loads and checks the model, then settles its preprocessing. Logs one line to stderr. */
lpv_status cli_open_model(const cli_model_args *a, cli_model *out, lpv_err *err);
void cli_close_model(cli_model *cm);
/* "resize 248 bicubic, crop 224 (crop_pct 0.9), mean ..., std ..." */
void cli_preproc_str(const lpv_preproc *pp, char *buf, size_t cap);

/* What pruning left of m (lpv_model_sparsity) for reports: {"linears", "pruned_linears", "weights_kept",
 * "flops_kept" (ratios), "gflops_dense", "gflops"} per image; and as one line for tables ("" when dense). */
cJSON *cli_sparsity_json(lpv_model *m);
void cli_sparsity_line(lpv_model *m, char *buf, size_t cap);

/* A labelled image set (eval, sweep): an ImageFolder in the synsets' class order, or with labels a flat folder
 * and its "file label" lines; the first `limit` items when limit > 0; every label checked against classes. */
lpv_status cli_open_labelled(const char *dir, const char *labels, const char *synsets, int limit, int classes,
                             lpv_dataset *ds, lpv_err *err);

/* "32x32", "16x32" or "32" (square); each side one of 8, 16, 32, 64. */
lpv_status cli_parse_block(const char *s, int *R, int *C, lpv_err *err);

/* ---- output ---- */
/* Installs the renderers of the library's log lines and progress on stderr (main does it once): a
 * redrawn bar with an ETA when stderr is a terminal, a line per quarter otherwise. */
void cli_output_init(void);
/* --quiet: no log lines or progress from here on (errors still print). */
void cli_quiet(int quiet);
/* "codebook:K" -> K (1..256), else -1 (prune --quant, quantize --codebook take K itself). */
int cli_codebook_levels(const char *s);
/* "qkv,fc1" -> the bits 1 << lpv_layer_kind of those block linears (qkv, proj, fc1, fc2); 0 when empty or a
 * name is unknown (quantize --act-layers, prune --quant-act-layers). */
unsigned cli_block_kinds(const char *s);
/* Under an MPI launcher (dist.h), after lpv_dist_init: a rank other than 0 prints nothing on stdout, only its
 * warnings on stderr (prefixed "rank N"), and its errors only when the failure was its alone. */
void cli_dist_begin(void);
/* The process's exit: a failure the other ranks have not agreed ends the whole job (they may be waiting in a
 * collective); otherwise leaves the job normally. Returns rc. */
int cli_dist_end(int rc);
/* JSON to a file (atomically) or, for "-", to stdout. */
lpv_status cli_json_out(const cJSON *root, const char *path, lpv_err *err);

/* Standard option rows shared by several commands. */
#define CLI_OPT_THREADS(dst) {"--threads", OPT_INT, dst, "N", "threads for all compute, at most 2 x OpenBLAS's MAX_THREADS (128 with Debian's) (default: all CPUs)", 0, 4096, NULL}
#define CLI_OPT_ISA(dst) {"--isa", OPT_STR, dst, "ISA", "kernel ISA: auto, avx512bf16, avx512, avxvnni, avx2, ref (default auto: the best the CPU has)", 0, 0, NULL}
#define CLI_OPT_DENSE_KERNEL(dst) {"--dense-kernel", OPT_STR, dst, "K", "dense layers: auto (openblas on AVX2 when OpenBLAS runs an AVX2 core, else blocked), blocked (lpvit's kernel) or openblas (default auto)", 0, 0, NULL}
#define CLI_OPT_PRECISION(dst) {"--precision", OPT_STR, dst, "P", "fp32; bf16: the block linears in BF16 (FP32 sums; needs AVX512-BF16); int8: the block linears in int8 (weights per row, inputs per token) and attention's products too where a kernel runs them (--attention); patch embedding, heads, softmax, LayerNorm, GELU stay FP32 (default fp32)", 0, 0, NULL}
#define CLI_OPT_ALLOW_EXTRA(dst) {"--allow-extra", OPT_FLAG, dst, NULL, "load a file that has tensors the architecture does not use (ignored)", 0, 0, NULL}
#define CLI_OPT_HEADS(dst) {"--heads", OPT_INT, dst, "H", "attention heads when the file does not say (default: the file's)", 1, 1024, NULL}
/* The preprocessing flags of every command that reads images (ma: a cli_model_args); timm's spellings
 * (--interpolation, --mean 0.5 0.5 0.5) are accepted too (cli_parse). */
#define CLI_OPTS_PREPROC(ma) \
    {"--crop-pct", OPT_DOUBLE, &(ma).crop_pct, "F", "resize to floor(size / F) before the center crop (default: the model's)", 0.05, 4, NULL}, \
    {"--interp", OPT_STR, &(ma).interp, "I", "resize filter, bicubic or bilinear, PIL-exact (default: the model's)", 0, 0, NULL}, \
    {"--mean", OPT_FLOAT3, (ma).mean, "a,b,c", "normalization mean (default: the model's)", 0, 0, &(ma).mean_set}, \
    {"--std", OPT_FLOAT3, (ma).std, "a,b,c", "normalization std (default: the model's)", 0, 0, &(ma).std_set}
#define CLI_OPT_ATTENTION(dst) {"--attention", OPT_STR, dst, "A", "attention's two products: auto (int8 when the block linears run in int8 and the ISA has an int8 attention kernel: AVX-512 VNNI with a head size that is a multiple of 8, or AVX-VNNI with a multiple of 4; BF16 with BF16 linears; else FP32), fp32, or int8 (bench and sweep: with --precision int8 only) (q, k per token, v per feature row, the softmax's probabilities in steps of 1/255; warns and stays FP32 where no int8 kernel runs) (default auto)", 0, 0, NULL}
#define CLI_OPT_INT8_ATTENTION(dst) {"--int8-attention", OPT_FLAG, dst, NULL, "the same as --attention int8", 0, 0, NULL}
#define CLI_OPT_QUIET(dst) {"--quiet", OPT_FLAG, dst, NULL, "no progress or log lines on stderr", 0, 0, NULL}

#endif
