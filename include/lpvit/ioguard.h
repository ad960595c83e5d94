/*
 * ioguard.h — one check, before any work, that a command's outputs can be
 * written and never replace one of its inputs, another of its outputs, or a
 * file that is not a regular file.
 *
 * A command registers every input (files and folders it will read) and every
 * output (files it will write), then calls lpv_ioguard_check once. An output
 * is refused (LPV_E_ARG) when
 *   - it is the same file as an input (same device and inode: hard links and
 *     symlinks included) or an existing file inside an input folder (an image
 *     of the calibration set, the weights of a Hugging Face folder);
 *   - it is the same path as another output (after resolving the folder);
 *   - it exists and is not a regular file (FIFO, device, socket, folder): the
 *     final rename would replace it;
 * and fails with LPV_E_IO when its folder does not exist or is not writable,
 * so a long run never fails at its last step. "-" (stdout) is not a file.
 *
 * Each entry carries the caller's label ("--report") so the message names it.
 * Inputs that do not exist are ignored here: their reader reports them.
 * Memory: the guard owns a malloc'd entry array; lpv_ioguard_free releases it.
 */
#ifndef LPVIT_IOGUARD_H
#define LPVIT_IOGUARD_H

#include <sys/types.h>

#include "lpvit/error.h"

typedef struct {
    const char *label; /* "--out": what the message calls it (caller-owned) */
    const char *path;  /* as given (caller-owned) */
    char *real;        /* resolved: realpath, or realpath(folder)/name when it does not exist yet; NULL if neither */
    dev_t dev;
    ino_t ino;
    int exists, is_dir, is_reg;
    mode_t mode;
} lpv_io_entry;

typedef struct {
    lpv_io_entry *in, *out;
    int nin, nout, cap_in, cap_out;
    int oom;
} lpv_ioguard;

void lpv_ioguard_init(lpv_ioguard *g);
void lpv_ioguard_free(lpv_ioguard *g);
/* Records an input file or folder (path NULL or missing: ignored). */
void lpv_ioguard_input(lpv_ioguard *g, const char *label, const char *path);
/* Records an output file (NULL or "-": ignored). */
void lpv_ioguard_output(lpv_ioguard *g, const char *label, const char *path);
/* 1 when the resolved path r lies inside the resolved folder d (not when it is d). */
int lpv_path_inside(const char *r, const char *d);

/* Checks every output against the rules above; the first fault fills err. */
lpv_status lpv_ioguard_check(const lpv_ioguard *g, lpv_err *err);

#endif
