/*
 * test_fileio.c — the atomic writes of fileio.h and the safetensors model
 * writer on their failure paths: a write that fails (a full disk, a missing
 * or unusable directory, a rename that cannot happen) returns an error and
 * leaves no partial target and no "<path>.tmp.<pid>" behind, and a target
 * that existed keeps its exact bytes. Also the success paths (exact content,
 * no temp left, old target replaced) and lpv_same_file. Run by ctest twice: as is (the unnamed
 * O_TMPFILE writes where /tmp has them) and with LPVIT_NO_O_TMPFILE=1 (the named "<path>.tmp.<pid>").
 * test_tmpfiles covers the difference between the two and the signal cleanup.
 *
 * The tests run as root, so directory permissions would not stop a write: a
 * full disk is RLIMIT_FSIZE (with SIGXFSZ ignored, writes past the limit fail
 * with EFBIG), an unusable directory is a path under a regular file (ENOTDIR),
 * under a missing directory (ENOENT), or under /proc.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

static char dir[64];

static void pathj(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_raw(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot create '%s'", path);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* Any "*.tmp.*" entry in dir (a temp file left behind). */
static int temp_left(void) {
    DIR *d = opendir(dir);
    int found = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) {
            fprintf(stderr, "  temp file left: %s/%s\n", dir, e->d_name);
            found = 1;
        }
    closedir(d);
    return found;
}

static void tmp_name(char *out, size_t cap, const char *target) { snprintf(out, cap, "%s.tmp.%ld", target, (long)getpid()); }

/* ---- a full disk: RLIMIT_FSIZE ---- */

static struct rlimit fsize_saved;

static void fsize_limit(rlim_t bytes) {
    CHECK(getrlimit(RLIMIT_FSIZE, &fsize_saved) == 0);
    struct rlimit lim = fsize_saved;
    lim.rlim_cur = bytes;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
}

static void fsize_restore(void) { CHECK(setrlimit(RLIMIT_FSIZE, &fsize_saved) == 0); }

/* The limit really makes writes fail with EFBIG here (else the tests below would prove nothing). */
static void test_fsize_works(void) {
    char p[128];
    pathj(p, sizeof p, "probe");
    fsize_limit(1000);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) {
        char buf[4000];
        memset(buf, 'x', sizeof buf);
        size_t w = fwrite(buf, 1, sizeof buf, f);
        int e = errno, fl = fflush(f);
        CHECKF(w < sizeof buf || fl != 0, "RLIMIT_FSIZE did not stop a 4000-byte write (wrote %zu)", w);
        CHECKF(e == EFBIG || errno == EFBIG, "expected EFBIG, errno %d / %d", e, errno);
        fclose(f);
    }
    fsize_restore();
    unlink(p);
}

static const char OLD[] = "old contents: must survive a failed write\n";

static void test_success(void) {
    char p[128], t[256];
    pathj(p, sizeof p, "ok.bin");
    tmp_name(t, sizeof t, p);
    lpv_err err;
    /* new file, binary content with NULs */
    unsigned char data[10000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 131 + 7);
    CHECK_OK(lpv_write_file_atomic(p, data, sizeof data, &err), &err);
    CHECK(test_file_is(p, data, sizeof data));
    CHECK(!test_exists(t) && !temp_left());
    /* replaces an existing file, shorter: no tail of the old one survives */
    CHECK_OK(lpv_write_file_atomic(p, "short", 5, &err), &err);
    CHECK(test_file_is(p, "short", 5));
    /* an empty write makes an empty file */
    CHECK_OK(lpv_write_file_atomic(p, NULL, 0, &err), &err);
    CHECK(test_file_is(p, "", 0));
    char names[512];
    CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "dir holds: %s", names);

    /* open / write / commit: the target keeps its old bytes until the commit */
    write_raw(p, OLD, sizeof OLD - 1);
    lpv_atomic_file af;
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    CHECK(af.fp != NULL && strcmp(af.path, p) == 0 && strcmp(af.tmp, t) == 0);
    if (af.fp) {
        CHECK(fputs("new contents\n", af.fp) >= 0);
        CHECK(fflush(af.fp) == 0);
        CHECK(af.unnamed ? !test_exists(t) && !temp_left() : test_exists(t)); /* O_TMPFILE: no name until the commit */
        CHECK(test_file_is(p, OLD, sizeof OLD - 1));
        CHECK_OK(lpv_atomic_commit(&af, &err), &err);
    }
    CHECK(test_file_is(p, "new contents\n", 13));
    CHECK(!test_exists(t) && !temp_left());

    /* open / write / abort: the old target stays, the temp goes */
    write_raw(p, OLD, sizeof OLD - 1);
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (af.fp) fputs("never committed", af.fp);
    lpv_atomic_abort(&af);
    CHECK(test_file_is(p, OLD, sizeof OLD - 1));
    CHECK(!test_exists(t) && !temp_left());
    /* abort of a new target: nothing at all */
    char q[128];
    pathj(q, sizeof q, "aborted.bin");
    CHECK_OK(lpv_atomic_open(&af, q, &err), &err);
    lpv_atomic_abort(&af);
    CHECK(!test_exists(q) && !temp_left());
    unlink(p);
}

/* One failing write of n bytes to p: an error with a message, no temp file, and the target untouched:
 * keep_old 1: p holds OLD before and after; 0: p did not exist and still does not; 2: p is a directory. */
static void expect_failed_write(const char *what, const char *p, size_t n, int keep_old, lpv_status want) {
    char *data = malloc(n + 1);
    memset(data, 'n', n);
    lpv_err err;
    err.msg[0] = 0;
    lpv_status st = lpv_write_file_atomic(p, data, n, &err);
    CHECKF(st == want, "%s: status %d (want %d): %s", what, (int)st, (int)want, err.msg);
    CHECKF(err.msg[0] != 0, "%s: no message", what);
    if (keep_old == 1) CHECKF(test_file_is(p, OLD, sizeof OLD - 1), "%s: the existing target changed", what);
    else if (keep_old == 2) CHECKF(lpv_is_dir(p), "%s: the directory is gone", what);
    else CHECKF(!test_exists(p), "%s: a partial target was left", what);
    CHECKF(!temp_left(), "%s: a temp file was left", what);
    printf("  %-40s -> %d: %s\n", what, (int)st, err.msg);
    free(data);
}

static void test_full_disk(void) {
    char p[128], t[256];
    pathj(p, sizeof p, "full.bin");
    tmp_name(t, sizeof t, p);
    write_raw(p, OLD, sizeof OLD - 1);
    fsize_limit(4096);
    /* larger than stdio's buffer: fwrite itself fails */
    expect_failed_write("full disk, large write (fwrite fails)", p, 1 << 20, 1, LPV_E_IO);
    /* just past the limit, fits stdio's buffer: the flush in commit fails */
    expect_failed_write("full disk, buffered write (flush fails)", p, 4097 + 100, 1, LPV_E_IO);
    /* no existing target: none appears */
    char q[128];
    pathj(q, sizeof q, "full_new.bin");
    expect_failed_write("full disk, new target", q, 1 << 16, 0, LPV_E_IO);

    /* by hand: open, write past the limit, commit fails; the temp is removed by commit */
    lpv_atomic_file af;
    lpv_err err;
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (af.fp) {
        for (int i = 0; i < 100; i++) fputs("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", af.fp);
        CHECK(lpv_atomic_commit(&af, &err) == LPV_E_IO);
        CHECK(!test_exists(t) && !temp_left());
        CHECK(test_file_is(p, OLD, sizeof OLD - 1));
    }
    /* a write under the limit still succeeds with the limit in place */
    CHECK_OK(lpv_write_file_atomic(q, "fits", 4, &err), &err);
    CHECK(test_file_is(q, "fits", 4));
    fsize_restore();
    unlink(p), unlink(q);
}

static void test_bad_dirs(void) {
    char f[128], p[192];
    pathj(f, sizeof f, "plain_file");
    write_raw(f, OLD, sizeof OLD - 1);
    /* under a regular file: ENOTDIR */
    snprintf(p, sizeof p, "%s/out.bin", f);
    expect_failed_write("directory is a regular file", p, 100, 0, LPV_E_IO);
    CHECK(test_file_is(f, OLD, sizeof OLD - 1));
    /* under a missing directory: ENOENT */
    pathj(p, sizeof p, "no_such_dir/out.bin");
    expect_failed_write("missing directory", p, 100, 0, LPV_E_IO);
    /* /proc refuses new files, even to root */
    char pt[256];
    tmp_name(pt, sizeof pt, "/proc/lpvit_test_fileio.bin");
    expect_failed_write("under /proc", "/proc/lpvit_test_fileio.bin", 100, 0, LPV_E_IO);
    CHECK(!test_exists(pt));
    /* a directory as the target, and a path too long for the buffer: refused up front */
    expect_failed_write("target is a directory", dir, 100, 2, LPV_E_ARG);
    char longp[1200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    memcpy(longp, dir, strlen(dir));
    longp[strlen(dir)] = '/';
    expect_failed_write("path too long", longp, 100, 0, LPV_E_ARG);
    unlink(f);

    /* rename fails (the target became a non-empty directory after open): error, no temp */
    char d[128], inner[192], t[256];
    pathj(d, sizeof d, "became_dir");
    tmp_name(t, sizeof t, d);
    lpv_atomic_file af;
    lpv_err err;
    CHECK_OK(lpv_atomic_open(&af, d, &err), &err);
    if (af.fp) {
        fputs("data", af.fp);
        CHECK(mkdir(d, 0755) == 0);
        snprintf(inner, sizeof inner, "%s/keep", d);
        write_raw(inner, OLD, sizeof OLD - 1);
        CHECK(lpv_atomic_commit(&af, &err) == LPV_E_IO);
        printf("  %-40s -> %s\n", "rename over a non-empty directory", err.msg);
        CHECK(!test_exists(t) && !temp_left());
        CHECK(test_file_is(inner, OLD, sizeof OLD - 1));
    }
    unlink(inner);
    rmdir(d);
}

static void test_same_file(void) {
    char a[128], b[128], l[128], s[128], dotted[160];
    pathj(a, sizeof a, "a.bin");
    pathj(b, sizeof b, "b.bin");
    pathj(l, sizeof l, "a_hardlink.bin");
    pathj(s, sizeof s, "a_symlink.bin");
    snprintf(dotted, sizeof dotted, "%s/./a.bin", dir);
    write_raw(a, "same", 4);
    write_raw(b, "same", 4); /* same bytes, another file */
    CHECK(link(a, l) == 0);
    CHECK(symlink(a, s) == 0);
    CHECK(lpv_same_file(a, a) == 1);
    CHECK(lpv_same_file(a, dotted) == 1);
    CHECK(lpv_same_file(a, l) == 1);
    CHECK(lpv_same_file(s, a) == 1);
    CHECK(lpv_same_file(a, b) == 0);
    char missing[128];
    pathj(missing, sizeof missing, "missing.bin");
    CHECK(lpv_same_file(a, missing) == 0 && lpv_same_file(missing, missing) == 0);
    unlink(a), unlink(b), unlink(l), unlink(s);
}

/* ---- the safetensors model writer ---- */

static void test_model_save(void) {
    lpv_config c = {0};
    c.dim = 32, c.depth = 1, c.heads = 2, c.mlp = 64, c.patch = 16, c.img = 32, c.chans = 3, c.classes = 10;
    c.n_prefix = 1, c.n_outputs = 1, c.ln_eps = 1e-6f;
    c.n_tokens = c.n_prefix + (c.img / c.patch) * (c.img / c.patch);
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 3, &err), &err);
    if (!m) return;
    char p[128], t[256], q[128];
    pathj(p, sizeof p, "model.safetensors");
    pathj(q, sizeof q, "model_new.safetensors");
    tmp_name(t, sizeof t, p);

    /* success: a file that loads back with the same weights, no temp */
    CHECK_OK(lpv_model_save(m, p, NULL, &err), &err);
    CHECK(!temp_left());
    char *saved = NULL;
    size_t saved_n = 0;
    CHECK_OK(lpv_read_file(p, &saved, &saved_n, (size_t)1 << 30, &err), &err);
    CHECKF(saved_n > 16384, "the tiny model is %zu bytes: too small for the 16 KiB limit below", saved_n);
    lpv_model *back = NULL;
    CHECK_OK(lpv_model_load(&back, p, NULL, &err), &err);
    if (back) {
        CHECK(back->cfg.dim == 32 && back->cfg.depth == 1 && back->cfg.n_tokens == 5 && back->cfg.classes == 10);
        CHECK(memcmp(back->blocks[0].fc1.w, m->blocks[0].fc1.w, sizeof(float) * 64 * 32) == 0);
        CHECK(memcmp(back->pos, m->pos, sizeof(float) * 5 * 32) == 0);
        /* the loaded model refuses to overwrite its own file, by name or through a hard link */
        char hl[128];
        pathj(hl, sizeof hl, "model_link.safetensors");
        CHECK(link(p, hl) == 0);
        CHECK(lpv_model_save(back, p, NULL, &err) == LPV_E_ARG);
        CHECK(lpv_model_save(back, hl, NULL, &err) == LPV_E_ARG);
        CHECK(saved && test_file_is(p, saved, saved_n) && !temp_left());
        unlink(hl);
        lpv_model_free(back);
    }

    /* a full disk: a status, the old file byte for byte, no temp; no new file */
    lpv_model *m2 = NULL;
    CHECK_OK(lpv_model_random(&m2, &c, 4, &err), &err); /* other weights: a partial write would differ */
    fsize_limit(16384);
    err.msg[0] = 0;
    lpv_status st = m2 ? lpv_model_save(m2, p, NULL, &err) : LPV_E_IO;
    CHECKF(st == LPV_E_IO, "model save on a full disk: status %d (%s)", (int)st, err.msg);
    printf("  %-40s -> %d: %s\n", "lpv_model_save on a full disk", (int)st, err.msg);
    CHECK(!test_exists(t) && !temp_left());
    CHECK(saved && test_file_is(p, saved, saved_n));
    st = m2 ? lpv_model_save(m2, q, NULL, &err) : LPV_E_IO;
    CHECK(st == LPV_E_IO && !test_exists(q) && !temp_left());
    fsize_restore();
    /* into a missing directory */
    char bad[160];
    pathj(bad, sizeof bad, "no_such_dir/m.safetensors");
    CHECK(m2 && lpv_model_save(m2, bad, NULL, &err) == LPV_E_IO);
    CHECK(!temp_left());
    /* and the limit lifted, the same save succeeds */
    CHECK(m2 && lpv_model_save(m2, p, NULL, &err) == LPV_OK);
    CHECK(!temp_left() && saved && !test_file_is(p, saved, saved_n));
    free(saved);
    lpv_model_free(m2);
    lpv_model_free(m);
    unlink(p), unlink(q);
}

int main(void) {
    signal(SIGXFSZ, SIG_IGN); /* writes past RLIMIT_FSIZE fail with EFBIG instead of killing us */
    snprintf(dir, sizeof dir, "/tmp/lpvit_fileio_XXXXXX");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_fsize_works();
    test_success();
    test_full_disk();
    test_bad_dirs();
    test_same_file();
    test_model_save();
    char names[1024];
    int left = test_dir_entries(dir, names, sizeof names);
    CHECKF(left == 0, "%d entries left in %s: %s", left, dir, names);
    if (left != 0) { /* listed above; do not leave them in /tmp */
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    } else {
        CHECK(rmdir(dir) == 0);
    }
    return test_finish("test_fileio");
}
