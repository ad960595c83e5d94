/* ioguard.c — outputs checked against inputs before any work (see include/lpvit/ioguard.h). */
#include "lpvit/ioguard.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lpvit/fileio.h"

void lpv_ioguard_init(lpv_ioguard *g) { memset(g, 0, sizeof *g); }

static void free_entries(lpv_io_entry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].real);
    free(e);
}

void lpv_ioguard_free(lpv_ioguard *g) {
    free_entries(g->in, g->nin);
    free_entries(g->out, g->nout);
    memset(g, 0, sizeof *g);
}

/* realpath of an existing path; for a missing one, realpath(folder) + "/" + name (NULL when neither). */
static char *resolve(const char *path, int exists) {
    if (exists) return realpath(path, NULL);
    char dir[PATH_MAX];
    lpv_path_folder(path, dir, sizeof dir);
    char *rd = realpath(dir, NULL);
    if (!rd) return NULL;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t n = strlen(rd) + strlen(name) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s%s%s", rd, strcmp(rd, "/") == 0 ? "" : "/", name);
    free(rd);
    return r;
}

/* Records path (stat'ed once); an input that does not exist is not recorded (existing_only). */
static void add(lpv_ioguard *g, lpv_io_entry **arr, int *n, int *cap, const char *label, const char *path,
                int existing_only) {
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (existing_only && !exists) return;
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 8;
        lpv_io_entry *na = realloc(*arr, sizeof *na * (size_t)nc);
        if (!na) {
            g->oom = 1;
            return;
        }
        *arr = na, *cap = nc;
    }
    lpv_io_entry *e = &(*arr)[(*n)++];
    memset(e, 0, sizeof *e);
    e->label = label, e->path = path;
    if (exists) {
        e->exists = 1, e->dev = st.st_dev, e->ino = st.st_ino, e->mode = st.st_mode;
        e->is_dir = S_ISDIR(st.st_mode), e->is_reg = S_ISREG(st.st_mode);
    }
    e->real = resolve(path, e->exists);
}

void lpv_ioguard_input(lpv_ioguard *g, const char *label, const char *path) {
    if (path && path[0]) add(g, &g->in, &g->nin, &g->cap_in, label, path, 1);
}

void lpv_ioguard_output(lpv_ioguard *g, const char *label, const char *path) {
    if (!path || !path[0] || strcmp(path, "-") == 0) return;
    add(g, &g->out, &g->nout, &g->cap_out, label, path, 0);
}

static const char *kind(mode_t m) {
    if (S_ISDIR(m)) return "a folder";
    if (S_ISFIFO(m)) return "a fifo";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

int lpv_path_inside(const char *r, const char *d) {
    size_t n = strlen(d);
    if (strcmp(d, "/") == 0) return 1;
    return strncmp(r, d, n) == 0 && r[n] == '/';
}

static lpv_status check_folder(const lpv_io_entry *o, lpv_err *err) {
    char dir[PATH_MAX];
    lpv_path_folder(o->path, dir, sizeof dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return lpv_fail(err, LPV_E_IO, "%s '%s': folder '%s' does not exist", o->label, o->path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return lpv_fail(err, LPV_E_IO, "%s '%s': cannot write in folder '%s': %s", o->label, o->path, dir,
                        strerror(errno));
    return LPV_OK;
}

static lpv_status check_output(const lpv_ioguard *g, int k, lpv_err *err) {
    const lpv_io_entry *o = &g->out[k];
    if (o->exists && !o->is_reg)
        return lpv_fail(err, LPV_E_ARG, "%s '%s' is %s: lpvit only replaces regular files (leave the option out, or give '-' where it means stdout)", o->label, o->path,
                        kind(o->mode));
    LPV_TRY(check_folder(o, err));
    for (int i = 0; i < g->nin; i++) {
        const lpv_io_entry *in = &g->in[i];
        int same = o->exists && in->dev == o->dev && in->ino == o->ino;
        int within = o->exists && in->is_dir && o->real && in->real && lpv_path_inside(o->real, in->real);
        if (same || within)
            return lpv_fail(err, LPV_E_ARG, "%s '%s' is %s %s '%s': lpvit never overwrites an input",
                            o->label, o->path, same ? "the input" : "inside the input", in->label, in->path);
    }
    for (int j = 0; j < k; j++) {
        const lpv_io_entry *p = &g->out[j];
        int same = (o->exists && p->exists && o->dev == p->dev && o->ino == p->ino) ||
                   (o->real && p->real && strcmp(o->real, p->real) == 0);
        if (same)
            return lpv_fail(err, LPV_E_ARG, "%s '%s' is also %s '%s': give each output its own file", o->label,
                            o->path, p->label, p->path);
    }
    return LPV_OK;
}

lpv_status lpv_ioguard_check(const lpv_ioguard *g, lpv_err *err) {
    if (g->oom) return lpv_fail(err, LPV_E_OOM, "out of memory checking the output paths");
    for (int k = 0; k < g->nout; k++) LPV_TRY(check_output(g, k, err));
    return LPV_OK;
}
