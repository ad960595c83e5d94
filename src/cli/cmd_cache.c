/*
 * cmd_cache.c — `lpvit cache list|clean`: what the calibration statistics
 * cache of `lpvit prune` holds, and removing it. The library reads the
 * folder (lpv_calib_cache_scan: headers only, names of the cache's scheme
 * only); this file prints and chooses.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/calib.h"
#include "lpvit/fileio.h"

#define CACHE_OVERVIEW                                                                                       \
    "What lpvit prune caches, as gzipped safetensors: calibration statistics (calib-*.lpvc, one file per model, " \
    "image set and settings) and the checkpoints of pruning steps (step-*.lpvc, so an interrupted or repeated " \
    "run resumes after its last finished step), in --cache-dir, else $XDG_CACHE_HOME/lpvit, else ~/.cache/lpvit."

static void human_bytes(int64_t b, char *buf, size_t cap) {
    if (b < 1000) snprintf(buf, cap, "%lld B", (long long)b);
    else if (b < 1000000) snprintf(buf, cap, "%.1f kB", (double)b / 1e3);
    else if (b < 1000000000) snprintf(buf, cap, "%.1f MB", (double)b / 1e6);
    else snprintf(buf, cap, "%.2f GB", (double)b / 1e9);
}

/* ISO 8601, UTC: "2024-05-01T12:00:00Z". */
static void iso_time(int64_t t, char *buf, size_t cap) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(buf, cap, "?");
}

/* The cache folder, and whether it is there: a folder that does not exist holds nothing (exit 0). */
static int cache_folder(const char *given, char *dir, size_t cap) {
    cli_cache_dir(dir, cap, given);
    return !(access(dir, F_OK) != 0 && errno == ENOENT);
}

static const char *entry_state(const lpv_calib_entry *e) {
    return e->status ? "unreadable" : e->stale ? "stale" : "ok";
}

static cJSON *entry_json(const lpv_calib_entry *e) {
    char t[32];
    iso_time(e->mtime, t, sizeof t);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", e->name);
    cJSON_AddNumberToObject(o, "bytes", (double)e->bytes);
    cJSON_AddStringToObject(o, "modified", t);
    cJSON_AddStringToObject(o, "state", entry_state(e));
    if (e->status) {
        cJSON_AddStringToObject(o, "problem", e->problem);
        return o;
    }
    cJSON_AddNumberToObject(o, "samples", (double)e->samples);
    if (isfinite(e->mean_loss)) cJSON_AddNumberToObject(o, "mean_loss", e->mean_loss);
    cJSON *k = cJSON_Parse(e->key); /* the key as the object it is, else as its text */
    cJSON_AddItemToObject(o, "key", k ? k : cJSON_CreateString(e->key));
    return o;
}

/* One row: when, size, samples, the key in short (hash prefixes, loss, lpvit), state, file. */
static void print_entry(const lpv_calib_entry *e, int lw) {
    char t[32], sz[32];
    iso_time(e->mtime, t, sizeof t);
    human_bytes(e->bytes, sz, sizeof sz);
    if (e->status) {
        printf("%-20s  %9s  %7s  %-8s  %-8s  %-8s  %-*s  %-10s  %s\n", t, sz, "-", "-", "-", "-", lw, "-", "unreadable",
               e->problem); /* the problem names the file */
        return;
    }
    printf("%-20s  %9s  %7lld  %-8.8s  %-8.8s  %-8s  %-*s  %-10s  %s\n", t, sz, (long long)e->samples,
           e->model_sha[0] ? e->model_sha : "-", e->images_sha[0] ? e->images_sha : "-", e->loss[0] ? e->loss : "-",
           lw, e->lpvit[0] ? e->lpvit : "-", entry_state(e), e->name);
}

static int cache_list(int argc, char **argv) {
    const char *given = NULL, *json = NULL;
    const cli_opt opts[] = {
        {"--cache-dir", OPT_IN, &given, "DIR", "the cache folder (default $XDG_CACHE_HOME/lpvit or ~/.cache/lpvit)", 0, 0, NULL},
        {"--json", OPT_OUT, &json, "FILE", "write the listing as JSON ('-' for stdout) instead of the table", 0, 0, NULL},
        {0},
    };
    const cli_spec spec = {"lpvit cache list [--cache-dir DIR] [--json FILE]",
                           CACHE_OVERVIEW " Lists one row per cache file: when it was written, its size, the images "
                           "it averages, its key in short (model and image-list hash prefixes, loss, the lpvit that "
                           "made it) and its state: ok, stale (this lpvit can never use it: lpvit cache clean --stale) "
                           "or unreadable (with the reason). Reads only each file's header.",
                           opts, 0, 0, 0};
    char *pos[1], dir[1024];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    int there = cache_folder(given, dir, sizeof dir);
    lpv_calib_entry *v = NULL;
    int n = 0;
    lpv_err err;
    lpv_status st = there ? lpv_calib_cache_scan(dir, &v, &n, &err) : LPV_OK;
    if (st) return cli_fail(&err, st);
    int64_t total = 0;
    int stale = 0, unreadable = 0;
    for (int i = 0; i < n; i++) total += v[i].bytes, stale += v[i].stale && !v[i].status, unreadable += !!v[i].status;
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "cache_dir", dir);
        cJSON_AddBoolToObject(root, "exists", there);
        cJSON *files = cJSON_AddArrayToObject(root, "files");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(files, entry_json(&v[i]));
        cJSON_AddNumberToObject(root, "total_bytes", (double)total);
        st = cli_json_out(root, json, &err);
        cJSON_Delete(root);
    } else if (!there) {
        printf("no cache folder '%s': nothing cached\n", dir);
    } else {
        char sz[32];
        human_bytes(total, sz, sizeof sz);
        printf("cache folder '%s'\n", dir);
        int lw = 5; /* the lpvit column: version, commit and JPEG decoder, as wide as the widest */
        for (int i = 0; i < n; i++) lw = (int)strlen(v[i].lpvit) > lw ? (int)strlen(v[i].lpvit) : lw;
        if (n)
            printf("%-20s  %9s  %7s  %-8s  %-8s  %-8s  %-*s  %-10s  %s\n", "modified (UTC)", "size", "samples", "model",
                   "images", "loss", lw, "lpvit", "state", "file");
        for (int i = 0; i < n; i++) print_entry(&v[i], lw);
        printf("total: %d file%s, %s", n, n == 1 ? "" : "s", sz);
        if (stale || unreadable) printf(" (%d stale, %d unreadable: lpvit cache clean --stale removes them)", stale, unreadable);
        printf("\n");
    }
    free(v);
    return st ? cli_fail(&err, st) : 0;
}

static int cache_clean(int argc, char **argv) {
    const char *given = NULL;
    double days = -1;
    int all = 0, stale = 0, dry_run = 0, older_seen = 0;
    const cli_opt opts[] = {
        {"--cache-dir", OPT_STR, &given, "DIR", "the cache folder (default $XDG_CACHE_HOME/lpvit or ~/.cache/lpvit)", 0, 0, NULL},
        {"--all", OPT_FLAG, &all, NULL, "remove every cache file", 0, 0, NULL},
        {"--older-than", OPT_DOUBLE, &days, "DAYS", "remove the files not modified for DAYS days (fractions allowed)", 0, 1e6, &older_seen},
        {"--stale", OPT_FLAG, &stale, NULL, "remove the files this lpvit can never use: made by another lpvit version or commit, or unreadable", 0, 0, NULL},
        {"--dry-run", OPT_FLAG, &dry_run, NULL, "only say what would be removed", 0, 0, NULL},
        {0},
    };
    const cli_spec spec = {"lpvit cache clean (--all | --older-than DAYS | --stale) [--cache-dir DIR] [--dry-run]",
                           CACHE_OVERVIEW " Removes the cache files one selection names (exactly one of --all, "
                           "--older-than, --stale), and the temp files that killed runs left. Only files named "
                           "calib-<sha256>.lpvc, step-<sha256>.lpvc (and their temps) are ever removed; anything else in the folder stays.",
                           opts, 0, 0, 0};
    char *pos[1], dir[1024];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    if (all + stale + older_seen != 1) return cli_usage_error("choose exactly one of --all, --older-than DAYS, --stale");
    if (!cache_folder(given, dir, sizeof dir)) {
        printf("no cache folder '%s': nothing to clean\n", dir);
        return 0;
    }
    lpv_calib_entry *v;
    int n;
    lpv_err err;
    lpv_status st = lpv_calib_cache_scan(dir, &v, &n, &err);
    if (st) return cli_fail(&err, st);
    lpv_calib_select sel = {all, older_seen ? days * 86400.0 : -1, stale};
    int64_t now = (int64_t)time(NULL), freed = 0;
    int count = 0;
    const char *verb = dry_run ? "would remove" : "removed";
    for (int i = 0; i < n && !st; i++) {
        if (!lpv_calib_cache_selected(&v[i], &sel, now)) continue;
        if (!dry_run && (st = lpv_calib_cache_remove(dir, &v[i], &err)) != LPV_OK) break;
        char sz[32];
        human_bytes(v[i].bytes, sz, sizeof sz);
        printf("%s %s (%s, %s)\n", verb, v[i].name, sz, entry_state(&v[i]));
        count++, freed += v[i].bytes;
    }
    free(v);
    int64_t tbytes = 0;
    int temps = st ? 0 : lpv_calib_cache_clean_temps(dir, dry_run, &tbytes);
    if (temps) printf("%s %d temp file%s of dead runs\n", verb, temps, temps == 1 ? "" : "s");
    char sz[32];
    human_bytes(freed + tbytes, sz, sizeof sz);
    printf("%s %d cache file%s, %s %s\n", verb, count, count == 1 ? "" : "s", sz, dry_run ? "would be freed" : "freed");
    return st ? cli_fail(&err, st) : 0;
}

int cmd_cache(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "list") == 0) return cache_list(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "clean") == 0) return cache_clean(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: lpvit cache list [--cache-dir DIR] [--json FILE]\n"
               "       lpvit cache clean (--all | --older-than DAYS | --stale) [--cache-dir DIR] [--dry-run]\n\n"
               "%s\n\n"
               "  list    one row per cache file (time, size, samples, key, state) and the total\n"
               "  clean   remove the files one selection names, and the temp files of killed runs\n\n"
               "lpvit cache list --help and lpvit cache clean --help give their options.\n",
               CACHE_OVERVIEW);
        return 0;
    }
    if (argc < 2) return cli_usage_error("cache needs a command: list or clean");
    return cli_usage_error("unknown cache command '%s' (list or clean)", argv[1]);
}
