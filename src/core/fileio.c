/* fileio.c — atomic writes, whole-file reads, SHA-256 (see include/lpvit/fileio.h). */
#include "lpvit/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* where lpv_models_dir looks for models/ (CMakeLists.txt sets both) */
#ifndef LPVIT_MODELS_DIR
#define LPVIT_MODELS_DIR "models"
#endif
#ifndef LPVIT_INSTALL_MODELS_DIR
#define LPVIT_INSTALL_MODELS_DIR "../share/lpvit"
#endif

/* ---- the registry of live temp files ----
 * A fixed table, so that the signal handler needs no malloc and no lock. A slot is FREE, BUSY (a
 * thread is writing its path, or the handler is unlinking it) or LIVE (the path is complete). Every
 * change of owner is a compare-and-swap: register takes FREE -> BUSY, writes the path, publishes
 * LIVE; unregister takes LIVE -> FREE; the handler takes LIVE -> BUSY before it reads the path, so a
 * slot is never rewritten while the handler reads it, and a half-written path is never read. */

#define TMP_SLOTS 64
#define TMP_PATH 1280
enum { SLOT_FREE, SLOT_BUSY, SLOT_LIVE };
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs lock-free atomic ints");
static atomic_int tmp_state[TMP_SLOTS];
static char tmp_paths[TMP_SLOTS][TMP_PATH];

int lpv_tmp_register(const char *path) {
    size_t n = strlen(path);
    if (n >= TMP_PATH) return -1;
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expect = SLOT_FREE;
        if (atomic_compare_exchange_strong(&tmp_state[i], &expect, SLOT_BUSY)) {
            memcpy(tmp_paths[i], path, n + 1);
            atomic_store(&tmp_state[i], SLOT_LIVE); /* seq_cst: the path is visible before LIVE is */
            return i;
        }
    }
    return -1;
}

void lpv_tmp_unregister(int handle) {
    if (handle < 0 || handle >= TMP_SLOTS) return;
    int expect = SLOT_LIVE;
    /* fails only while the handler owns the slot, and then the process is about to die */
    atomic_compare_exchange_strong(&tmp_state[handle], &expect, SLOT_FREE);
}

int lpv_tmp_registered(void) {
    int n = 0;
    for (int i = 0; i < TMP_SLOTS; i++) n += atomic_load(&tmp_state[i]) == SLOT_LIVE;
    return n;
}

/* Only async-signal-safe calls: atomics, unlink, sigaction, raise. The signal is blocked while its
 * handler runs, so the raise leaves it pending; when the handler returns it is delivered with the
 * default action, and the process dies of it: the parent sees "killed by SIGINT" (a shell's 130),
 * not an exit code that only looks like it, which is what lets a shell script that ran us stop too. */
static void cleanup_handler(int sig) {
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expect = SLOT_LIVE;
        if (atomic_compare_exchange_strong(&tmp_state[i], &expect, SLOT_BUSY)) unlink(tmp_paths[i]);
    }
    struct sigaction dfl;
    dfl.sa_handler = SIG_DFL;
    dfl.sa_flags = 0;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

void lpv_install_cleanup_handlers(void) {
    static atomic_int installed;
    if (atomic_exchange(&installed, 1)) return;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cleanup_handler;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&sa.sa_mask, sigs[i]); /* one handler at a time */
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue; /* nohup & co. keep it ignored */
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- atomic writes ---- */

/* O_TMPFILE unless $LPVIT_NO_O_TMPFILE is set to something other than "" or "0". */
static int want_tmpfile(void) {
    const char *e = getenv("LPVIT_NO_O_TMPFILE");
    return !(e && e[0] && strcmp(e, "0") != 0);
}

/* An unnamed file in path's directory, as a stdio stream; NULL where the filesystem or the kernel
 * has no O_TMPFILE, or /proc (which the link at commit goes through) is not there. */
static FILE *open_unnamed(const char *path) {
#ifdef O_TMPFILE
    char dir[1024];
    lpv_path_folder(path, dir, sizeof dir);
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666); /* 0666 & ~umask, as fopen creates */
    if (fd < 0) return NULL;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    struct stat st;
    FILE *fp = stat(proc, &st) == 0 ? fdopen(fd, "wb") : NULL;
    if (!fp) close(fd);
    return fp;
#else
    (void)path;
    return NULL;
#endif
}

lpv_status lpv_atomic_open(lpv_atomic_file *af, const char *path, lpv_err *err) {
    memset(af, 0, sizeof *af);
    af->slot = -1;
    if (strlen(path) >= sizeof af->path)
        return lpv_fail(err, LPV_E_ARG, "output path '%.64s...' is too long", path);
    if (lpv_is_dir(path)) return lpv_fail(err, LPV_E_ARG, "output '%s' is a directory", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid());
    if (want_tmpfile() && (af->fp = open_unnamed(path)) != NULL) {
        af->unnamed = 1;
        return LPV_OK;
    }
    /* the named fallback: registered before it exists, so a signal never finds it unregistered */
    af->slot = lpv_tmp_register(af->tmp);
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) {
        int e = errno;
        lpv_tmp_unregister(af->slot);
        af->slot = -1;
        return lpv_fail(err, LPV_E_IO, "cannot create '%s': %s", af->tmp, strerror(e));
    }
    return LPV_OK;
}

lpv_status lpv_atomic_commit(lpv_atomic_file *af, lpv_err *err) {
    int bad = ferror(af->fp), saved = bad ? errno : 0, named = !af->unnamed;
    const char *what = "write";
    if (fflush(af->fp) != 0) bad = 1, saved = errno;
    if (!bad && fsync(fileno(af->fp)) != 0) bad = 1, saved = errno;
    if (!bad && af->unnamed) {
        /* give the unnamed file its temp name, registered for the instant until the rename */
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(af->fp));
        af->slot = lpv_tmp_register(af->tmp);
        unlink(af->tmp); /* only a process with our pid made it: a dead one's leftover */
        if (linkat(AT_FDCWD, proc, AT_FDCWD, af->tmp, AT_SYMLINK_FOLLOW) == 0) named = 1;
        else bad = 1, saved = errno, what = "link";
    }
    if (fclose(af->fp) != 0 && !bad) bad = 1, saved = errno;
    af->fp = NULL;
    lpv_status st = LPV_OK;
    if (bad) {
        if (named) unlink(af->tmp);
        st = lpv_fail(err, LPV_E_IO, "cannot %s '%s': %s", what, af->path, strerror(saved ? saved : EIO));
    } else if (rename(af->tmp, af->path) != 0) {
        saved = errno;
        unlink(af->tmp);
        st = lpv_fail(err, LPV_E_IO, "cannot rename '%s' to '%s': %s", af->tmp, af->path, strerror(saved));
    }
    lpv_tmp_unregister(af->slot); /* after the rename or unlink: the name is gone either way */
    af->slot = -1;
    return st;
}

void lpv_atomic_abort(lpv_atomic_file *af) {
    if (af->fp) fclose(af->fp); /* an unnamed file vanishes here */
    af->fp = NULL;
    if (!af->unnamed && af->tmp[0]) unlink(af->tmp);
    lpv_tmp_unregister(af->slot);
    af->slot = -1;
}

lpv_status lpv_write_file_atomic(const char *path, const void *data, size_t n, lpv_err *err) {
    lpv_atomic_file af;
    LPV_TRY(lpv_atomic_open(&af, path, err));
    if (n && fwrite(data, 1, n, af.fp) != n) {
        int e = errno; /* before abort's fclose and unlink can change it */
        lpv_atomic_abort(&af);
        return lpv_fail(err, LPV_E_IO, "cannot write '%s': %s", path, strerror(e));
    }
    return lpv_atomic_commit(&af, err);
}

lpv_status lpv_open_regular(const char *path, int *fd, size_t *size, lpv_err *err) {
    *fd = -1;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return lpv_fail(err, LPV_E_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(f);
        return lpv_fail(err, LPV_E_IO, "'%s' is not a regular file", path);
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    if (size) *size = (size_t)st.st_size;
    return LPV_OK;
}

lpv_status lpv_read_file(const char *path, char **out, size_t *n, size_t max_bytes, lpv_err *err) {
    *out = NULL;
    int fd;
    size_t size;
    LPV_TRY(lpv_open_regular(path, &fd, &size, err));
    if (size > max_bytes) {
        close(fd);
        return lpv_fail(err, LPV_E_FORMAT, "'%s' is %zu bytes, more than the %zu allowed", path, size, max_bytes);
    }
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        return lpv_fail(err, LPV_E_IO, "short read on '%s'", path);
    }
    buf[size] = 0;
    *out = buf;
    if (n) *n = size;
    return LPV_OK;
}

int lpv_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int lpv_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void lpv_path_folder(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == path) snprintf(buf, cap, "/");
    else snprintf(buf, cap, "%.*s", (int)(slash - path), path);
}

int lpv_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---- SHA-256 ---- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(lpv_sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

void lpv_sha256_init(lpv_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->nbuf = 0;
}

void lpv_sha256_update(lpv_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->len += n;
    while (n) {
        if (s->nbuf == 0 && n >= 64) {
            sha256_block(s, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t k = 64 - s->nbuf < n ? 64 - s->nbuf : n;
        memcpy(s->buf + s->nbuf, p, k);
        s->nbuf += k;
        p += k;
        n -= k;
        if (s->nbuf == 64) {
            sha256_block(s, s->buf);
            s->nbuf = 0;
        }
    }
}

void lpv_sha256_final(lpv_sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80;
    lpv_sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->nbuf != 56) lpv_sha256_update(s, &zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    lpv_sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void lpv_sha256_final_hex(lpv_sha256 *s, char out[65]) {
    static const char hx[] = "0123456789abcdef";
    uint8_t d[32];
    lpv_sha256_final(s, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = 0;
}

void lpv_sha256_hex(const void *data, size_t n, char out[65]) {
    lpv_sha256 s;
    lpv_sha256_init(&s);
    lpv_sha256_update(&s, data, n);
    lpv_sha256_final_hex(&s, out);
}

lpv_status lpv_sha256_file(const char *path, char out[65], lpv_err *err) {
    int fd;
    LPV_TRY(lpv_open_regular(path, &fd, NULL, err));
    lpv_sha256 s;
    lpv_sha256_init(&s);
    static __thread uint8_t buf[1 << 16];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) != 0) {
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) break;
        lpv_sha256_update(&s, buf, (size_t)got);
    }
    close(fd);
    if (got < 0) return lpv_fail(err, LPV_E_IO, "cannot read '%s'", path);
    lpv_sha256_final_hex(&s, out);
    return LPV_OK;
}

const char *lpv_models_dir(void) {
    static char dir[PATH_MAX];
    if (dir[0]) return dir;
    /* relative to the executable: build/lpvit -> ../models (a build tree), bin/lpvit -> ../share/lpvit
       (cmake --install); else the source tree's */
    static const char *const rel[] = {"../models", LPVIT_INSTALL_MODELS_DIR};
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = NULL;
    if (n > 0) {
        exe[n] = 0;
        if ((slash = strrchr(exe, '/'))) *slash = 0; /* exe is now its folder */
    }
    for (size_t i = 0; slash && i < sizeof rel / sizeof rel[0]; i++) {
        char cand[PATH_MAX + 64];
        int len = snprintf(cand, sizeof cand, "%s/%s", exe, rel[i]);
        if (len < 0 || (size_t)len >= sizeof dir) continue;
        snprintf(cand + len, sizeof cand - (size_t)len, "/registry.json");
        if (!lpv_file_exists(cand)) continue;
        cand[len] = 0;
        memcpy(dir, cand, (size_t)len + 1);
        return dir;
    }
    snprintf(dir, sizeof dir, "%s", LPVIT_MODELS_DIR);
    return dir;
}

int lpv_mkdir_p(const char *dir) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", dir) >= sizeof tmp) return 0;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    return mkdir(tmp, 0755) == 0 || lpv_is_dir(tmp);
}
