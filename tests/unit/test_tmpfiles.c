/*
 * test_tmpfiles.c — temp files that cannot be orphaned (fileio.h):
 *   - the registry: handles, the count, a full table and a path too long give -1 (no crash);
 *   - the unnamed O_TMPFILE write: nothing in the directory until the commit, the target appears
 *     only then, abort leaves nothing, a stale "<path>.tmp.<pid>" does not stop the commit, and the
 *     file mode is the one fopen gives (0666 less the umask);
 *   - the named fallback ($LPVIT_NO_O_TMPFILE=1): the temp exists and is registered while open,
 *     unregistered after commit and abort, same mode;
 *   - the signal handlers, in child processes: SIGINT, SIGTERM and SIGHUP during a write remove
 *     the registered temp, the child dies of that very signal (a shell's 128+sig), an existing
 *     target keeps its bytes; a signal ignored before the install stays ignored; SIGKILL during an
 *     unnamed write leaves nothing at all.
 * Where the test directory's filesystem has no O_TMPFILE, the unnamed checks say so and are skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "test.h"
#include "test_util.h"

static char dir[64];

static void pathj(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_raw(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(s, f);
    CHECK(fclose(f) == 0);
}

/* The permission bits fopen gives a new file under the current umask. */
static mode_t fopen_mode(void) {
    char p[128];
    pathj(p, sizeof p, "mode_probe");
    write_raw(p, "");
    struct stat st;
    mode_t m = stat(p, &st) == 0 ? st.st_mode & 07777 : 0;
    unlink(p);
    return m;
}

static mode_t mode_of(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

static void test_registry(void) {
    CHECK(lpv_tmp_registered() == 0);
    int a = lpv_tmp_register("/nonexistent/a"), b = lpv_tmp_register("/nonexistent/b");
    CHECK(a >= 0 && b >= 0 && a != b);
    CHECK(lpv_tmp_registered() == 2);
    lpv_tmp_unregister(a);
    CHECK(lpv_tmp_registered() == 1);
    lpv_tmp_unregister(a); /* twice: no effect on the others */
    CHECK(lpv_tmp_registered() == 1);
    lpv_tmp_unregister(-1);
    lpv_tmp_unregister(1 << 20);
    lpv_tmp_unregister(b);
    CHECK(lpv_tmp_registered() == 0);
    /* a path longer than a slot: -1, nothing registered */
    char longp[4000];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    CHECK(lpv_tmp_register(longp) == -1 && lpv_tmp_registered() == 0);
    /* a full table: -1, and the slots come back after unregistering */
    int h[200], n = 0;
    while (n < 200 && (h[n] = lpv_tmp_register("/nonexistent/x")) >= 0) n++;
    CHECKF(n >= 16 && n < 200, "%d slots", n);
    CHECK(lpv_tmp_registered() == n);
    for (int i = 0; i < n; i++) lpv_tmp_unregister(h[i]);
    CHECK(lpv_tmp_registered() == 0);
    CHECK(lpv_tmp_register("/nonexistent/y") >= 0);
    for (int i = 0; i < 200; i++) lpv_tmp_unregister(i);
    CHECK(lpv_tmp_registered() == 0);
}

/* Returns 1 when the directory has O_TMPFILE (the unnamed checks ran). */
static int test_unnamed(mode_t want_mode) {
    char p[128], t[256], names[512];
    pathj(p, sizeof p, "unnamed.bin");
    snprintf(t, sizeof t, "%s.tmp.%ld", p, (long)getpid());
    lpv_atomic_file af;
    lpv_err err;
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (!af.fp) return 0;
    if (!af.unnamed) {
        printf("  no O_TMPFILE in %s: the unnamed checks are skipped\n", dir);
        lpv_atomic_abort(&af);
        return 0;
    }
    CHECK(af.slot == -1 && lpv_tmp_registered() == 0); /* nothing named, nothing to register */
    CHECK(strcmp(af.tmp, t) == 0);
    fputs("unnamed contents\n", af.fp);
    CHECK(fflush(af.fp) == 0);
    CHECKF(test_dir_entries(dir, names, sizeof names) == 0, "the directory holds '%s' before the commit", names);
    write_raw(t, "stale temp of a dead process with our pid");
    CHECK_OK(lpv_atomic_commit(&af, &err), &err);
    CHECK(test_file_is_str(p, "unnamed contents\n"));
    CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "after the commit: %s", names);
    CHECKF(mode_of(p) == want_mode, "mode %o, fopen gives %o", (unsigned)mode_of(p), (unsigned)want_mode);
    CHECK(lpv_tmp_registered() == 0);

    /* replacing: the old bytes stay until the commit; abort leaves them and nothing else */
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (af.fp) {
        fputs("never committed", af.fp);
        fflush(af.fp);
        CHECK(test_file_is_str(p, "unnamed contents\n"));
        lpv_atomic_abort(&af);
    }
    CHECK(test_file_is_str(p, "unnamed contents\n"));
    CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "after the abort: %s", names);
    unlink(p);
    /* a relative path (the directory is ".") */
    char cwd[512];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(dir) == 0);
    CHECK_OK(lpv_write_file_atomic("rel.bin", "rel", 3, &err), &err);
    CHECK(chdir(cwd) == 0);
    pathj(p, sizeof p, "rel.bin");
    CHECK(test_file_is_str(p, "rel"));
    CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "after a relative write: %s", names);
    unlink(p);
    return 1;
}

static void test_named(mode_t want_mode) {
    setenv("LPVIT_NO_O_TMPFILE", "1", 1);
    char p[128], t[256], names[512];
    pathj(p, sizeof p, "named.bin");
    snprintf(t, sizeof t, "%s.tmp.%ld", p, (long)getpid());
    lpv_atomic_file af;
    lpv_err err;
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (af.fp) {
        CHECK(!af.unnamed && af.slot >= 0 && test_exists(t) && !test_exists(p));
        CHECK(lpv_tmp_registered() == 1);
        fputs("named contents\n", af.fp);
        CHECK_OK(lpv_atomic_commit(&af, &err), &err);
    }
    CHECK(test_file_is_str(p, "named contents\n") && !test_exists(t));
    CHECK(lpv_tmp_registered() == 0 && af.slot == -1);
    CHECKF(mode_of(p) == want_mode, "mode %o, fopen gives %o", (unsigned)mode_of(p), (unsigned)want_mode);
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    if (af.fp) {
        CHECK(lpv_tmp_registered() == 1 && test_exists(t));
        lpv_atomic_abort(&af);
    }
    CHECK(lpv_tmp_registered() == 0 && !test_exists(t) && test_file_is_str(p, "named contents\n"));
    /* a failed open registers nothing */
    char bad[160];
    pathj(bad, sizeof bad, "no_such_dir/x.bin");
    CHECK(lpv_atomic_open(&af, bad, &err) == LPV_E_IO && lpv_tmp_registered() == 0);
    CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "left: %s", names);
    unlink(p);
    /* "0" and "" mean O_TMPFILE as usual */
    setenv("LPVIT_NO_O_TMPFILE", "0", 1);
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    int unnamed0 = af.unnamed;
    lpv_atomic_abort(&af);
    unsetenv("LPVIT_NO_O_TMPFILE");
    CHECK_OK(lpv_atomic_open(&af, p, &err), &err);
    CHECK(af.unnamed == unnamed0);
    lpv_atomic_abort(&af);
    CHECK(!test_exists(p) && !test_exists(t));
}

/* A child that installs the handlers, opens an atomic write of target (named when named, with
 * `extra` registered by hand too), writes, tells the parent through the pipe, and waits to be
 * killed. Returns the child's wait status. */
static int child_killed_mid_write(int sig, int named, const char *target, const char *extra) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        if (named) setenv("LPVIT_NO_O_TMPFILE", "1", 1);
        lpv_install_cleanup_handlers();
        lpv_atomic_file af;
        lpv_err err;
        if (lpv_atomic_open(&af, target, &err) != LPV_OK) _exit(3);
        static char block[1 << 16];
        memset(block, 'k', sizeof block);
        for (int i = 0; i < 16; i++) fwrite(block, 1, sizeof block, af.fp);
        fflush(af.fp);
        if (extra) {
            lpv_tmp_register(extra);
            FILE *f = fopen(extra, "wb");
            if (f) fclose(f);
        }
        if (write(fds[1], "r", 1) != 1) _exit(4);
        for (;;) pause();
    }
    close(fds[1]);
    char c = 0;
    CHECK(read(fds[0], &c, 1) == 1 && c == 'r');
    close(fds[0]);
    CHECK(kill(pid, sig) == 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

static void test_signals(int have_tmpfile) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    char p[128], extra[128], names[512];
    pathj(p, sizeof p, "sig_target.bin");
    pathj(extra, sizeof extra, "sig_extra.raw");
    for (int named = 0; named <= 1; named++) {
        if (!named && !have_tmpfile) continue;
        for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
            int sig = sigs[i];
            write_raw(p, "old target");
            int status = child_killed_mid_write(sig, named, p, extra);
            CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == sig, "%s write, signal %d: status 0x%x",
                   named ? "named" : "unnamed", sig, (unsigned)status);
            CHECK(test_file_is_str(p, "old target"));
            CHECKF(test_dir_entries(dir, names, sizeof names) == 1, "%s write, signal %d left: %s", named ? "named" : "unnamed", sig,
                   names);
            unlink(p);
        }
    }
    /* SIGKILL cannot be caught: only the unnamed write leaves nothing */
    if (have_tmpfile) {
        int status = child_killed_mid_write(SIGKILL, 0, p, NULL);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CHECKF(test_dir_entries(dir, names, sizeof names) == 0, "SIGKILL left: %s", names);
    }
    /* a signal ignored before the install stays ignored (nohup) */
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGHUP, SIG_IGN);
        lpv_install_cleanup_handlers();
        raise(SIGHUP);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "an ignored SIGHUP: status 0x%x", (unsigned)status);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/lpvit_tmpfiles_XXXXXX");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    unsetenv("LPVIT_NO_O_TMPFILE");
    mode_t m = fopen_mode();
    test_registry();
    int have = test_unnamed(m);
    test_named(m);
    umask(077); /* the mode follows the umask in both ways of writing */
    m = fopen_mode();
    CHECK(m == 0600);
    if (have) test_unnamed(m);
    test_named(m);
    umask(022);
    test_signals(have);
    char names[1024];
    int left = test_dir_entries(dir, names, sizeof names);
    CHECKF(left == 0, "%d entries left in %s: %s", left, dir, names);
    if (left != 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    } else {
        CHECK(rmdir(dir) == 0);
    }
    return test_finish("test_tmpfiles");
}
