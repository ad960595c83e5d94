/* test_ioguard.c — the output-path guard: outputs never alias inputs, other outputs or special files. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpvit/fileio.h"
#include "lpvit/ioguard.h"
#include "test.h"

static char dir[256];

static const char *p(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void touch(const char *path) {
    FILE *f = fopen(path, "w");
    if (f) fputs("x", f), fclose(f);
}

/* Runs the guard on one input and one or two outputs; returns the status, err filled. */
static lpv_status guard(const char *in, const char *out, const char *out2, lpv_err *err) {
    lpv_ioguard g;
    lpv_ioguard_init(&g);
    lpv_ioguard_input(&g, "--model", in);
    lpv_ioguard_output(&g, "--out", out);
    lpv_ioguard_output(&g, "--report", out2);
    lpv_status st = lpv_ioguard_check(&g, err);
    lpv_ioguard_free(&g);
    return st;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/lpvit_ioguard.%ld", (long)getpid());
    CHECK(mkdir(dir, 0755) == 0);
    touch(p("m.safetensors"));
    lpv_err err;

    char f[64];
    lpv_path_folder("a/b/c", f, sizeof f);
    CHECK(strcmp(f, "a/b") == 0);
    lpv_path_folder("c", f, sizeof f);
    CHECK(strcmp(f, ".") == 0);
    lpv_path_folder("/c", f, sizeof f);
    CHECK(strcmp(f, "/") == 0);

    /* a fresh output, and "-" (stdout), are fine */
    CHECK(guard(p("m.safetensors"), p("new.safetensors"), "-", &err) == LPV_OK);
    /* an output equal to the input: by path, through a symlink, through a hard link, through "./" */
    CHECK(guard(p("m.safetensors"), p("m.safetensors"), NULL, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "--out") && strstr(err.msg, "the input --model") && strstr(err.msg, "never overwrites"),
           "%s", err.msg);
    CHECK(symlink(p("m.safetensors"), p("sym")) == 0);
    CHECK(guard(p("m.safetensors"), p("sym"), NULL, &err) == LPV_E_ARG);
    CHECK(link(p("m.safetensors"), p("hard")) == 0);
    CHECK(guard(p("m.safetensors"), p("hard"), NULL, &err) == LPV_E_ARG);
    char dotted[600];
    snprintf(dotted, sizeof dotted, "%s/./m.safetensors", dir);
    CHECK(guard(p("m.safetensors"), dotted, NULL, &err) == LPV_E_ARG);
    /* the second output equal to the first, existing or not */
    CHECK(guard(p("m.safetensors"), p("o.json"), p("o.json"), &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "--report") && strstr(err.msg, "is also --out"), "%s", err.msg);
    CHECK(guard(p("m.safetensors"), p("o.json"), dotted + 0, &err) == LPV_E_ARG); /* dotted = the input */
    /* an existing file inside an input folder (a dataset image); a new file there is fine */
    CHECK(mkdir(p("data"), 0755) == 0 && mkdir(p("data/n01"), 0755) == 0);
    touch(p("data/n01/a.JPEG"));
    CHECK(guard(p("data"), p("data/n01/a.JPEG"), NULL, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "inside the input --model"), "%s", err.msg);
    CHECK(guard(p("data"), p("data/report.json"), NULL, &err) == LPV_OK);
    /* a prefix that is not a parent folder: "data2/x" is not inside "data" */
    CHECK(mkdir(p("data2"), 0755) == 0);
    touch(p("data2/x"));
    CHECK(guard(p("data"), p("data2/x"), NULL, &err) == LPV_OK);
    /* special files: a FIFO, a folder, a character device */
    CHECK(mkfifo(p("fifo"), 0600) == 0);
    CHECK(guard(NULL, p("fifo"), NULL, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "is a fifo"), "%s", err.msg);
    CHECK(guard(NULL, p("data"), NULL, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "is a folder"), "%s", err.msg);
    CHECK(guard(NULL, "/dev/null", NULL, &err) == LPV_E_ARG);
    CHECKF(strstr(err.msg, "character device"), "%s", err.msg);
    /* a missing folder, and an unwritable one (root writes anywhere: skipped then) */
    CHECK(guard(NULL, p("nowhere/x.json"), NULL, &err) == LPV_E_IO);
    CHECKF(strstr(err.msg, "folder") && strstr(err.msg, "does not exist"), "%s", err.msg);
    CHECK(mkdir(p("ro"), 0555) == 0);
    if (geteuid() != 0) {
        CHECK(guard(NULL, p("ro/x.json"), NULL, &err) == LPV_E_IO);
        CHECKF(strstr(err.msg, "cannot write in folder"), "%s", err.msg);
    } else {
        printf("skip: unwritable folder (running as root)\n");
    }
    /* a missing input is ignored: its reader reports it */
    CHECK(guard(p("absent.safetensors"), p("new.safetensors"), NULL, &err) == LPV_OK);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_ioguard");
}
