/*
 * main.c — the lpvit command line: a table of subcommands, like git's
 * builtins. Each command parses its own options and calls the library.
 *
 * Before anything else runs, OpenBLAS's core is checked: Debian's 0.3.21
 * picks AVX2 kernels on CPUs it does not know even when they have AVX-512,
 * and the choice is made when the library loads, so lpvit re-executes
 * itself once with OPENBLAS_CORETYPE set (lpv_blas_reexec).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/cpu.h"
#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/report.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    int mpi; /* splits its images over the ranks of an mpirun job (dist.h) */
} command;

static const command COMMANDS[] = {
    {"prune", cmd_prune, "post-training block pruning to a FLOPs target (writes a BSR model + report)", 1},
    {"sweep", cmd_sweep, "prune to several FLOPs targets, evaluate and time each: Pareto table and SVG plots", 0},
    {"eval", cmd_eval, "top-1/top-5 accuracy on an ImageNet folder", 1},
    {"bench", cmd_bench, "dense vs block-sparse speed, per layer and end to end, in one run", 0},
    {"quantize", cmd_quantize, "write a model's block linears in int8 (W8A8) or on a shared codebook", 1},
    {"export", cmd_export, "write a pruned model as dense-with-zeros (timm-loadable) or BSR safetensors", 0},
    {"import", cmd_import, "pack fine-tuned dense weights back into a pruned file's BSR structure", 0},
    {"infer", cmd_infer, "logits for a tensor file, or top-5 classes for images", 0},
    {"inspect", cmd_inspect, "list the tensors, metadata and architecture of a safetensors file", 0},
    {"cache", cmd_cache, "list or clean prune's calibration statistics cache", 0},
    {"create-model", cmd_create_model, "write a model with random weights (tests, demos, benchmarks)", 0},
};

static void usage(FILE *fp) {
    fprintf(fp, "usage: lpvit <command> [options]   (lpvit <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(fp, "  %-14s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(fp, "\nexit status: 0 success, 1 failure, 2 usage error\n");
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
    lpv_blas_reexec(argc, argv);
    lpv_install_cleanup_handlers(); /* SIGINT/SIGTERM/SIGHUP remove the temp files of writes in flight */
    cli_output_init();
    lpv_err err;
    if (lpv_dist_init(&argc, &argv, &err) != LPV_OK) { /* under mpirun / srun: join the job */
        fprintf(stderr, "lpvit: %s\n", err.msg);
        return 1;
    }
    cli_dist_begin();
    return cli_dist_end(run(argc, argv));
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    lpv_err berr;
    if (lpv_blocking_check_env(&berr) != LPV_OK) {
        fprintf(stderr, "lpvit: %s\n", berr.msg);
        return 2;
    }
    if (strcmp(cmd, "help") == 0 && argc >= 3) { /* lpvit help eval = lpvit eval --help */
        for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
            if (strcmp(argv[2], COMMANDS[i].name) == 0) {
                char *args[] = {argv[2], "--help", NULL};
                return COMMANDS[i].fn(2, args);
            }
        fprintf(stderr, "lpvit: unknown command '%s' (see lpvit --help)\n", argv[2]);
        return 2;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        char env[512], feat[256];
        lpv_environment_line(env, sizeof env);
        lpv_cpu_features(feat, sizeof feat);
        printf("%s\ncpu features: %s\nmpi: %s%s\n", env, feat, lpv_dist_library(),
               lpv_dist_built() ? " (mpirun -n R lpvit prune|eval|quantize splits the images over R processes)" : "");
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++) {
        if (strcmp(cmd, COMMANDS[i].name) != 0) continue;
        /* every rank would do the whole job and write the same files */
        if (lpv_dist_size() > 1 && !COMMANDS[i].mpi) {
            fprintf(stderr, "lpvit: %s does not run under mpirun (%d ranks): only prune, eval and quantize split their work\n",
                    cmd, lpv_dist_size());
            return 2;
        }
        return COMMANDS[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "lpvit: unknown command '%s' (see lpvit --help)\n", cmd);
    return 2;
}
