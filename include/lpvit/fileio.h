/*
 * fileio.h — small file helpers: atomic writes, whole-file reads, SHA-256,
 * and the registry of live temp files that a signal handler removes.
 *
 * Atomic write: lpv_atomic_open opens an unnamed file (O_TMPFILE) in the
 * target's directory; lpv_atomic_commit flushes and fsyncs it, links it as
 * "<path>.tmp.<pid>" and renames that over the target; lpv_atomic_abort
 * closes it. Until the commit the file has no name, so nothing is left behind
 * whatever ends the process, SIGKILL and power loss included. Where the
 * filesystem has no O_TMPFILE (or /proc is not mounted, which the link needs)
 * the file is created as "<path>.tmp.<pid>" from the start, as before; that
 * name is registered (below) while it exists. $LPVIT_NO_O_TMPFILE=1 forces
 * this named fallback (tests). The file mode is the same either way: 0666
 * less the umask, what fopen gives. A crash never leaves a half-written
 * target, and a target equal to an input file is refused by the callers that
 * know it. lpv_read_file returns a malloc'd, NUL-terminated buffer the caller
 * frees.
 *
 * Temp registry: every named temp file lives in a fixed table of paths (no
 * malloc, lock-free atomics) from just before it is created until just after
 * it is renamed or removed. lpv_install_cleanup_handlers() installs handlers
 * for SIGINT, SIGTERM and SIGHUP that unlink every registered path (unlink(2)
 * only: async-signal-safe), restore the default action and re-raise the
 * signal, so the process still dies of that signal and its parent sees the
 * usual status (128+sig in a shell). The library never installs handlers by
 * itself: a program that embeds it owns its signal dispositions and calls
 * lpv_install_cleanup_handlers() once, early (the lpvit CLI does, in main).
 * A signal that was ignored at that moment (nohup, a background job of a
 * non-interactive shell) stays ignored.
 */
#ifndef LPVIT_FILEIO_H
#define LPVIT_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lpvit/error.h"

typedef struct {
    FILE *fp;
    char path[1024];
    char tmp[1100]; /* "<path>.tmp.<pid>": the name the file has from open (named) or only during commit */
    int unnamed;    /* 1: fp is an O_TMPFILE with no name yet */
    int slot;       /* lpv_tmp_register handle of tmp while it is registered, else -1 */
} lpv_atomic_file;

lpv_status lpv_atomic_open(lpv_atomic_file *af, const char *path, lpv_err *err);
lpv_status lpv_atomic_commit(lpv_atomic_file *af, lpv_err *err);
void lpv_atomic_abort(lpv_atomic_file *af);
/* Writes a whole buffer atomically. */
lpv_status lpv_write_file_atomic(const char *path, const void *data, size_t n, lpv_err *err);

/* Registers path (copied) as a live temp file for the signal handlers to remove; returns a handle
 * for lpv_tmp_unregister, or -1 when the table is full or the path does not fit (the file then
 * only lacks the cleanup on a signal). Safe from any thread. Register before creating the file and
 * unregister after renaming or removing it, so that no instant has an unregistered file (a
 * registered name that is already gone costs the handler one failed unlink). */
int lpv_tmp_register(const char *path);
void lpv_tmp_unregister(int handle);
/* How many paths are registered now (tests). */
int lpv_tmp_registered(void);
/* SIGINT, SIGTERM, SIGHUP: unlink the registered temp files, then die of the same signal. For
 * programs, not the library (see above); later calls do nothing. */
void lpv_install_cleanup_handlers(void);

lpv_status lpv_read_file(const char *path, char **out, size_t *n, size_t max_bytes, lpv_err *err);
/* Opens an existing file for reading (O_CLOEXEC) and checks that it is a regular file before anything reads
 * it. It opens without blocking, so a FIFO with no writer is refused instead of hanging open(2); the fd is
 * blocking again when returned. *size gets the file's size (NULL: not wanted). Every reader opens through it. */
lpv_status lpv_open_regular(const char *path, int *fd, size_t *size, lpv_err *err);
int lpv_file_exists(const char *path);
int lpv_is_dir(const char *path);
/* Creates dir and its missing parents (mode 0755); 1 when dir is a directory afterwards. */
int lpv_mkdir_p(const char *dir);
/* The folder part of a path into buf: "a/b" for "a/b/c", "." for "c", "/" for "/c". */
void lpv_path_folder(const char *path, char *buf, size_t cap);
/* 1 when a and b name the same existing file (same device and inode). */
int lpv_same_file(const char *a, const char *b);

/* The project's models/ folder (registry.json, synset_words.txt, downloaded weights): next to the
 * executable (build/lpvit -> ../models, an installed bin/lpvit -> ../share/lpvit) when there, else
 * the source tree's. $LPVIT_MODELS overrides only where weights are found (registry.h). */
const char *lpv_models_dir(void);

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} lpv_sha256;

void lpv_sha256_init(lpv_sha256 *s);
void lpv_sha256_update(lpv_sha256 *s, const void *data, size_t n);
void lpv_sha256_final(lpv_sha256 *s, uint8_t out[32]);
/* lpv_sha256_final as a hex string (65-byte out). */
void lpv_sha256_final_hex(lpv_sha256 *s, char out[65]);
/* Hex digest of a buffer / a file (65-byte out). */
void lpv_sha256_hex(const void *data, size_t n, char out[65]);
lpv_status lpv_sha256_file(const char *path, char out[65], lpv_err *err);

#endif
