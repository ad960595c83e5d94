/*
 * fileio.h — small file helpers: atomic writes, whole-file reads, SHA-256.
 *
 * Atomic write: lpv_atomic_open creates "<path>.tmp.<pid>" beside the target;
 * lpv_atomic_commit flushes, fsyncs and renames it over the target;
 * lpv_atomic_abort removes it. A crash never leaves a half-written target,
 * and a target equal to an input file is refused by the callers that know it.
 * lpv_read_file returns a malloc'd, NUL-terminated buffer the caller frees.
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
    char tmp[1100];
} lpv_atomic_file;

lpv_status lpv_atomic_open(lpv_atomic_file *af, const char *path, lpv_err *err);
lpv_status lpv_atomic_commit(lpv_atomic_file *af, lpv_err *err);
void lpv_atomic_abort(lpv_atomic_file *af);
/* Writes a whole buffer atomically. */
lpv_status lpv_write_file_atomic(const char *path, const void *data, size_t n, lpv_err *err);

lpv_status lpv_read_file(const char *path, char **out, size_t *n, size_t max_bytes, lpv_err *err);
/* Opens an existing file for reading (O_CLOEXEC) and checks that it is a regular file before anything reads
 * it. It opens without blocking, so a FIFO with no writer is refused instead of hanging open(2); the fd is
 * blocking again when returned. *size gets the file's size (NULL: not wanted). Every reader opens through it. */
lpv_status lpv_open_regular(const char *path, int *fd, size_t *size, lpv_err *err);
int lpv_file_exists(const char *path);
int lpv_is_dir(const char *path);
/* Creates dir and its missing parents (mode 0755); 1 when dir is a directory afterwards. */
int lpv_mkdir_p(const char *dir);
/* 1 when a and b name the same existing file (same device and inode). */
int lpv_same_file(const char *a, const char *b);

/* The project's models/ folder (registry.json, synset_words.txt, downloaded weights): next to the
 * executable (build/lpvit -> ../models) when there, else the source tree's. $LPVIT_MODELS overrides
 * only where weights are found (registry.h). */
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
