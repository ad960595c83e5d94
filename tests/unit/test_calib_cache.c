/*
 * test_calib_cache.c — the cache folder as `lpvit cache` sees it: a scan lists
 * every file of the cache's naming (oldest first) with its key read from the
 * gzipped header alone, lists truncated, corrupt and non-gzip files as
 * unreadable with the reason, and ignores every other name (other files,
 * temp files, a folder). The clean selection takes all, those older than a
 * time (utimensat), or the stale ones (another lpvit commit in the key, a
 * name that is not the key's hash, an unparsable header); removal never
 * touches a name outside the scheme. The temp cleanup counts in a dry run
 * and removes a dead writer's temp for real.
 */
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lpvit/calib.h"
#include "lpvit/fileio.h"
#include "lpvit/report.h"
#include "test.h"

static char dir[] = "/tmp/lpvit_cache_XXXXXX";

/* dir/calib-<sha(key)>.lpvc (or dir/name when given), a cache file with no tensors: the header is all a
 * scan reads. Returns the file name in name_out. */
static void save(const char *key, const char *name, char *name_out) {
    static lpv_calib_stats s; /* zero: no layers */
    snprintf(s.key, sizeof s.key, "%s", key);
    s.samples = 12, s.mean_loss = 2.5;
    char sha[65], path[256];
    lpv_sha256_hex(key, strlen(key), sha);
    if (name) snprintf(name_out, 96, "%s", name);
    else snprintf(name_out, 96, "calib-%s.lpvc", sha);
    snprintf(path, sizeof path, "%s/%s", dir, name_out);
    lpv_err err;
    CHECK_OK(lpv_calib_save(&s, path, &err), &err);
}

static void put(const char *name, const void *data, size_t n) {
    char path[256];
    lpv_err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK_OK(lpv_write_file_atomic(path, data, n, &err), &err);
}

static int exists(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return lpv_file_exists(path) || lpv_is_dir(path);
}

static const lpv_calib_entry *find(const lpv_calib_entry *v, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0) return &v[i];
    return NULL;
}

static int count_selected(const lpv_calib_entry *v, int n, const lpv_calib_select *sel) {
    int c = 0;
    for (int i = 0; i < n; i++) c += lpv_calib_cache_selected(&v[i], sel, time(NULL));
    return c;
}

int main(void) {
    lpv_err err;
    CHECK(mkdtemp(dir) != NULL);
    lpv_calib_opts o = {LPV_LOSS_SELF_CE, 1, 16, 16, 5, 0, NULL, NULL, 0};
    lpv_preproc pp = lpv_preproc_default();
    char key[1024], other[1024];
    lpv_calib_key(key, sizeof key, "aa11bb22cc33", "dd44ee55ff66", &o, &pp);
    /* the same key made by another lpvit commit */
    const char *v0 = strstr(key, "\"lpvit\": \""), *v1 = v0 ? strchr(v0 + 10, '"') : NULL;
    CHECK(v0 && v1);
    snprintf(other, sizeof other, "%.*s\"lpvit\": \"0.0.1 0123abc%s", (int)(v0 - key), key, v1);

    enum { GOOD, OTHER, MISNAMED, TRUNC, CORRUPT, PLAIN, N };
    char names[N][96];
    save(key, NULL, names[GOOD]);
    save(other, NULL, names[OTHER]);
    char misnamed[96];
    snprintf(misnamed, sizeof misnamed, "calib-%064d.lpvc", 0);
    save(key, misnamed, names[MISNAMED]);
    char *raw, gpath[256];
    size_t n;
    snprintf(gpath, sizeof gpath, "%s/%s", dir, names[GOOD]);
    CHECK_OK(lpv_read_file(gpath, &raw, &n, 1 << 20, &err), &err);
    CHECK(n > 40);
    snprintf(names[TRUNC], 96, "calib-%064d.lpvc", 1);
    put(names[TRUNC], raw, 20); /* inside the header */
    for (size_t i = 12; i < 40 && i < n; i++) raw[i] ^= 0x5a; /* the deflate data, the gzip header intact */
    snprintf(names[CORRUPT], 96, "calib-%064d.lpvc", 2);
    put(names[CORRUPT], raw, n);
    snprintf(names[PLAIN], 96, "calib-%064d.lpvc", 3);
    put(names[PLAIN], "plain text, not gzip, long enough to hold a length", 50);
    free(raw);
    /* names outside the scheme, never listed or removed: other files, short or upper-case hashes, a temp of a
       live writer, a folder */
    char upper[96], tmp_live[128], folder[96];
    snprintf(upper, sizeof upper, "calib-%061dABC.lpvc", 0);
    const char *keep[] = {"notes.txt", "calib-abc.lpvc", upper, NULL, NULL};
    snprintf(tmp_live, sizeof tmp_live, "%s.tmp.%ld", names[GOOD], (long)getpid());
    snprintf(folder, sizeof folder, "calib-%064d.lpvc", 4);
    keep[3] = tmp_live;
    for (int i = 0; i < 4; i++) put(keep[i], "x", 1);
    char fpath[256];
    snprintf(fpath, sizeof fpath, "%s/%s", dir, folder);
    CHECK(lpv_mkdir_p(fpath));
    keep[4] = folder;
    /* OTHER three days old: the oldest */
    char opath[256];
    snprintf(opath, sizeof opath, "%s/%s", dir, names[OTHER]);
    struct timespec old[2] = {{time(NULL) - 3 * 86400, 0}, {time(NULL) - 3 * 86400, 0}};
    CHECK(utimensat(AT_FDCWD, opath, old, 0) == 0);

    /* scan */
    lpv_calib_entry *v;
    int nv;
    CHECK_OK(lpv_calib_cache_scan(dir, &v, &nv, &err), &err);
    CHECKF(nv == N, "%d entries", nv);
    CHECK(nv > 0 && strcmp(v[0].name, names[OTHER]) == 0);
    const lpv_calib_entry *g = find(v, nv, names[GOOD]);
    char here[128];
    /* the decoder is part of the build: stb and libjpeg builds of one commit decode other pixels */
    snprintf(here, sizeof here, "%s %s %s", lpv_version(), lpv_commit(), lpv_image_jpeg_decoder());
    CHECK(g && g->status == LPV_OK && !g->stale && g->samples == 12 && g->mean_loss == 2.5 && strcmp(g->key, key) == 0);
    CHECK(g && strcmp(g->model_sha, "aa11bb22cc33") == 0 && strcmp(g->images_sha, "dd44ee55ff66") == 0 &&
          strcmp(g->loss, "self-ce") == 0 && strcmp(g->lpvit, here) == 0 && g->bytes == (int64_t)n);
    const lpv_calib_entry *e = find(v, nv, names[OTHER]);
    CHECK(e && e->status == LPV_OK && e->stale && strcmp(e->lpvit, "0.0.1 0123abc") == 0);
    e = find(v, nv, names[MISNAMED]);
    CHECK(e && e->status == LPV_OK && e->stale);
    e = find(v, nv, names[TRUNC]);
    CHECKF(e && e->status == LPV_E_FORMAT && e->stale && strstr(e->problem, names[TRUNC]), "%s", e ? e->problem : "");
    e = find(v, nv, names[CORRUPT]);
    CHECKF(e && e->status == LPV_E_FORMAT && e->stale, "%s", e ? e->problem : "");
    e = find(v, nv, names[PLAIN]);
    CHECKF(e && e->status == LPV_E_FORMAT && strstr(e->problem, "not gzip"), "%s", e ? e->problem : "");
    for (int i = 0; i < 5; i++) CHECKF(!find(v, nv, keep[i]), "'%s' listed", keep[i]);

    /* selection */
    lpv_calib_select all = {1, -1, 0}, stale = {0, -1, 1}, older = {0, 2 * 86400.0, 0};
    CHECK(count_selected(v, nv, &all) == N);
    CHECK(count_selected(v, nv, &stale) == N - 1 && !lpv_calib_cache_selected(g, &stale, time(NULL)));
    CHECK(count_selected(v, nv, &older) == 1 && lpv_calib_cache_selected(&v[0], &older, time(NULL)));

    /* removal: the stale ones, then everything; the other names stay */
    for (int i = 0; i < nv; i++)
        if (lpv_calib_cache_selected(&v[i], &stale, time(NULL))) CHECK_OK(lpv_calib_cache_remove(dir, &v[i], &err), &err);
    CHECK_OK(lpv_calib_cache_remove(dir, &v[0], &err), &err); /* already gone: not an error */
    free(v);
    CHECK_OK(lpv_calib_cache_scan(dir, &v, &nv, &err), &err);
    CHECK(nv == 1 && strcmp(v[0].name, names[GOOD]) == 0);
    lpv_calib_entry fake = v[0];
    snprintf(fake.name, sizeof fake.name, "notes.txt");
    CHECK(lpv_calib_cache_remove(dir, &fake, &err) == LPV_E_ARG && exists("notes.txt"));
    for (int i = 0; i < nv; i++) CHECK_OK(lpv_calib_cache_remove(dir, &v[i], &err), &err);
    free(v);
    CHECK_OK(lpv_calib_cache_scan(dir, &v, &nv, &err), &err);
    CHECK(nv == 0 && v == NULL);
    for (int i = 0; i < 5; i++) CHECKF(exists(keep[i]), "'%s' removed", keep[i]);

    /* temps: a dead writer's goes (counted first in a dry run), a live writer's stays */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    CHECK(dead > 0 && waitpid(dead, NULL, 0) == dead);
    char tmp_dead[128];
    snprintf(tmp_dead, sizeof tmp_dead, "%s.tmp.%ld", names[GOOD], (long)dead);
    put(tmp_dead, "abc", 3);
    int64_t bytes = 0;
    CHECK(lpv_calib_cache_clean_temps(dir, 1, &bytes) == 1 && bytes == 3 && exists(tmp_dead));
    CHECK(lpv_calib_cache_clean_temps(dir, 0, &bytes) == 1 && bytes == 3 && !exists(tmp_dead) && exists(tmp_live));

    /* a folder that is not there cannot be listed */
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none", dir);
    CHECK(lpv_calib_cache_scan(missing, &v, &nv, &err) == LPV_E_IO && strstr(err.msg, missing));
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_calib_cache");
}
