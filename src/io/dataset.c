/* dataset.c — synset lists and image lists (see include/lpvit/dataset.h). */
#include "lpvit/dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "lpvit/dist.h"
#include "lpvit/fileio.h"
#include "lpvit/rng.h"

#define MAX_LIST_FILE ((size_t)64 << 20) /* synset and labels files */
#define MAX_PATH 4096

#ifndef LPVIT_MODELS_DIR
#define LPVIT_MODELS_DIR "models"
#endif

/* ------------------------------------------------------------------------- */
/* synsets */

const char *lpv_synsets_default_path(void) {
    static char path[4200];
    if (!path[0]) snprintf(path, sizeof path, "%s/synset_words.txt", lpv_models_dir());
    return path;
}

typedef struct {
    const char *wnid;
    int index;
} wnid_ref;

static int cmp_wnid_ref(const void *a, const void *b) {
    return strcmp(((const wnid_ref *)a)->wnid, ((const wnid_ref *)b)->wnid);
}

/* Orders s->by_wnid by wnid (qsort has no context pointer, hence the pairs). */
static lpv_status sort_wnids(lpv_synsets *s, unsigned n, lpv_err *err) {
    wnid_ref *r = malloc((size_t)n * sizeof *r);
    if (!r) return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", s->path);
    for (unsigned i = 0; i < n; i++) r[i] = (wnid_ref){s->wnid[i], (int)i};
    qsort(r, n, sizeof *r, cmp_wnid_ref);
    for (unsigned i = 0; i < n; i++) s->by_wnid[i] = r[i].index;
    free(r);
    return LPV_OK;
}

/* Splits buf into lines in place ('\n', optional '\r', a UTF-8 BOM
 * skipped); returns the count, -1 when out of memory. */
static int split_lines(char *buf, size_t n, char ***lines_out) {
    if (n >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) buf += 3, n -= 3;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += buf[i] == '\n';
    if (n && buf[n - 1] != '\n') count++;
    if (count >= INT_MAX) return -1;
    char **lines = malloc((count + 1) * sizeof *lines);
    if (!lines) return -1;
    int k = 0;
    char *p = buf, *end = buf + n;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        if (e > p && e[-1] == '\r') e--;
        *e = 0;
        lines[k++] = p;
        p = nl ? nl + 1 : end;
    }
    *lines_out = lines;
    return k;
}

static char *skip_space(char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* Cuts the first whitespace-separated token off *p; returns it ("" at the end). */
static char *next_token(char **p) {
    char *s = skip_space(*p), *e = s;
    while (*e && *e != ' ' && *e != '\t') e++;
    if (*e) *e++ = 0;
    *p = e;
    return s;
}

/* Fills s from the lines of the file; lines are modified in place. A blank
 * line inside the list is an error rather than skipped: skipping it would
 * shift every later class index by one. */
static lpv_status synsets_parse(lpv_synsets *s, char **lines, int nl, lpv_err *err) {
    while (nl > 0 && *skip_space(lines[nl - 1]) == 0) nl--; /* trailing blank lines */
    if (nl <= 0) return lpv_fail(err, LPV_E_DATA, "synset list '%s' is empty", s->path);
    s->wnid = lpv_arena_alloc(&s->arena, (size_t)nl * sizeof(char *));
    s->name = lpv_arena_alloc(&s->arena, (size_t)nl * sizeof(char *));
    s->by_wnid = lpv_arena_alloc(&s->arena, (size_t)nl * sizeof(int));
    if (!s->wnid || !s->name || !s->by_wnid)
        return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", s->path);
    for (int i = 0; i < nl; i++) {
        char *p = lines[i], *w = next_token(&p);
        if (!*w)
            return lpv_fail(err, LPV_E_DATA, "line %d of synset list '%s' is empty, expected a wnid",
                            i + 1, s->path);
        char *name = skip_space(p), *e = name + strlen(name);
        while (e > name && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
        s->wnid[i] = lpv_arena_strdup(&s->arena, w);
        s->name[i] = lpv_arena_strdup(&s->arena, name);
        if (!s->wnid[i] || !s->name[i]) return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", s->path);
    }
    s->n = nl;
    LPV_TRY(sort_wnids(s, (unsigned)nl, err));
    for (int i = 1; i < nl; i++) {
        int a = s->by_wnid[i - 1], b = s->by_wnid[i];
        if (strcmp(s->wnid[a], s->wnid[b]) == 0)
            return lpv_fail(err, LPV_E_DATA, "synset '%s' appears twice in '%s' (lines %d and %d)",
                            s->wnid[a], s->path, (a < b ? a : b) + 1, (a < b ? b : a) + 1);
    }
    return LPV_OK;
}

lpv_status lpv_synsets_load(lpv_synsets *s, const char *path, lpv_err *err) {
    memset(s, 0, sizeof *s);
    lpv_arena_init(&s->arena, 1 << 16);
    char *buf = NULL, **lines = NULL;
    size_t n = 0;
    lpv_status st = lpv_read_file(path, &buf, &n, MAX_LIST_FILE, err);
    if (st == LPV_OK && !(s->path = lpv_arena_strdup(&s->arena, path)))
        st = lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    int nl = st == LPV_OK ? split_lines(buf, n, &lines) : 0;
    if (st == LPV_OK && nl < 0) st = lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    if (st == LPV_OK) st = synsets_parse(s, lines, nl, err);
    free(lines);
    free(buf);
    if (st != LPV_OK) lpv_synsets_free(s);
    return st;
}

int lpv_synsets_find(const lpv_synsets *s, const char *wnid) {
    int lo = 0, hi = s->n; /* binary search over by_wnid */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(s->wnid[s->by_wnid[mid]], wnid);
        if (c == 0) return s->by_wnid[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

void lpv_synsets_free(lpv_synsets *s) {
    lpv_arena_free(&s->arena);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------- */
/* directory listing */

/* timm's rule: os.path.splitext(name)[1].lower() in ('.png', '.jpg', '.jpeg');
 * like splitext, a leading dot alone (".png") is not an extension. */
int lpv_is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    return strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 || strcasecmp(dot, ".png") == 0;
}

/* A growable list of malloc'd names: directory entries live only while a
 * dataset is being built, so they stay out of the dataset's arena. */
typedef struct {
    char **v;
    int n, cap;
} strlist;

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int strlist_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return 0;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return 0;
    l->n++;
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

enum { LIST_DIRS, LIST_IMAGES };

/* Sorted names of the sub-folders or image files of dir. Hidden entries are
 * skipped (a ".ipynb_checkpoints" folder must not become a class); readdir
 * order is file-system dependent, hence the strcmp sort. */
static lpv_status list_dir(const char *dir, int what, strlist *out, lpv_err *err) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return lpv_fail(err, LPV_E_IO, "cannot open folder '%s': %s", dir, strerror(errno));
    lpv_status st = LPV_OK;
    struct dirent *e;
    char path[MAX_PATH];
    while (st == LPV_OK && (errno = 0, e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (what == LIST_IMAGES && !lpv_is_image_name(e->d_name)) continue;
        /* d_type says what it is on most file systems; symlinks and "unknown" need stat */
        int is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            struct stat sb;
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
            is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
        }
        /* an image name that is not a folder is listed even when it cannot be read (a dangling link, a
         * FIFO): the loader then skips it with its reason and counts it, instead of losing it silently */
        if (what == LIST_DIRS ? !is_dir : is_dir) continue;
        if (!strlist_push(out, e->d_name)) st = lpv_fail(err, LPV_E_OOM, "out of memory listing '%s'", dir);
    }
    if (st == LPV_OK && errno) st = lpv_fail(err, LPV_E_IO, "cannot read folder '%s': %s", dir, strerror(errno));
    closedir(d);
    if (st != LPV_OK) strlist_free(out);
    else if (out->n) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return st;
}

/* ------------------------------------------------------------------------- */
/* dataset building: items collect in a malloc'd list, then move to the arena */

typedef struct {
    lpv_item *v;
    int n, cap;
} itemlist;

static void ds_init(lpv_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    lpv_arena_init(&ds->arena, 1 << 20);
    ds->root = "";
}

/* Adds root/rel (rel alone when root is empty); name points into the path. */
static lpv_status add_item(lpv_dataset *ds, itemlist *l, const char *root, const char *rel, int label,
                           lpv_err *err) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 1024;
        lpv_item *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return lpv_fail(err, LPV_E_OOM, "out of memory listing images");
        l->v = v, l->cap = cap;
    }
    size_t rl = strlen(root), nl = strlen(rel), sep = rl > 0;
    char *p = lpv_arena_alloc(&ds->arena, rl + sep + nl + 1);
    if (!p) return lpv_fail(err, LPV_E_OOM, "out of memory listing images");
    memcpy(p, root, rl);
    if (sep) p[rl] = '/';
    memcpy(p + rl + sep, rel, nl + 1);
    l->v[l->n++] = (lpv_item){p, p + rl + sep, label};
    return LPV_OK;
}

/* Distinct labels among the items, for reports ("1000 images, 626 classes"). */
static void count_classes(lpv_dataset *ds) {
    int maxl = -1;
    for (int i = 0; i < ds->n; i++)
        if (ds->items[i].label > maxl) maxl = ds->items[i].label;
    ds->n_classes = 0;
    if (maxl < 0) return;
    unsigned char *seen = calloc((size_t)maxl + 1, 1);
    if (!seen) return;
    for (int i = 0; i < ds->n; i++)
        if (ds->items[i].label >= 0 && !seen[ds->items[i].label]++) ds->n_classes++;
    free(seen);
}

/* Moves the list into the arena and finishes ds; frees the list. */
static lpv_status ds_finish(lpv_dataset *ds, itemlist *l, lpv_err *err) {
    lpv_status st = LPV_OK;
    ds->items = lpv_arena_alloc(&ds->arena, (size_t)(l->n ? l->n : 1) * sizeof(lpv_item));
    if (!ds->items) st = lpv_fail(err, LPV_E_OOM, "out of memory listing images");
    else if (l->n) memcpy(ds->items, l->v, (size_t)l->n * sizeof(lpv_item));
    ds->n = st == LPV_OK ? l->n : 0;
    free(l->v);
    memset(l, 0, sizeof *l);
    if (st == LPV_OK) count_classes(ds);
    return st;
}

/* "dir" without trailing slashes (but "/" stays), copied into the arena. */
static const char *clean_root(lpv_dataset *ds, const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    char *r = lpv_arena_alloc(&ds->arena, n + 1);
    if (!r) return NULL;
    memcpy(r, dir, n);
    r[n] = 0;
    return r;
}

/* Images of one class folder root/wnid, appended with their label. */
static lpv_status add_class(lpv_dataset *ds, itemlist *l, const char *wnid, int label, lpv_err *err) {
    char dir[MAX_PATH], rel[MAX_PATH];
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", ds->root, wnid) >= sizeof dir)
        return lpv_fail(err, LPV_E_DATA, "path '%s/%s' is too long", ds->root, wnid);
    strlist files;
    LPV_TRY(list_dir(dir, LIST_IMAGES, &files, err));
    lpv_status st = LPV_OK;
    for (int i = 0; st == LPV_OK && i < files.n; i++) {
        if ((size_t)snprintf(rel, sizeof rel, "%s/%s", wnid, files.v[i]) >= sizeof rel)
            st = lpv_fail(err, LPV_E_DATA, "path '%s/%s' is too long", dir, files.v[i]);
        else st = add_item(ds, l, ds->root, rel, label, err);
    }
    strlist_free(&files);
    return st;
}

/* Labels come from the synset list, never from the folder's rank among the
 * folders present: a subset of classes keeps the model's class indices. */
lpv_status lpv_dataset_imagefolder(lpv_dataset *ds, const char *dir, const lpv_synsets *syn,
                                   lpv_err *err) {
    ds_init(ds);
    if (!syn || syn->n == 0)
        return lpv_fail(err, LPV_E_ARG, "ImageFolder '%s' needs a synset list to map folders to classes", dir);
    if (!(ds->root = clean_root(ds, dir))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    strlist classes;
    itemlist l = {0};
    lpv_status st = list_dir(ds->root, LIST_DIRS, &classes, err);
    if (st == LPV_OK && classes.n == 0)
        st = lpv_fail(err, LPV_E_DATA,
                      "no class folders in '%s', expected <wnid>/ sub-folders "
                      "(a flat folder of images needs a labels file)", dir);
    for (int i = 0; st == LPV_OK && i < classes.n; i++) {
        int label = lpv_synsets_find(syn, classes.v[i]);
        if (label < 0)
            st = lpv_fail(err, LPV_E_DATA, "folder '%s' in '%s' is not a class of synset list '%s'",
                          classes.v[i], ds->root, syn->path ? syn->path : "?");
        else st = add_class(ds, &l, classes.v[i], label, err);
    }
    if (st == LPV_OK && l.n == 0)
        st = lpv_fail(err, LPV_E_DATA, "no .jpg/.jpeg/.png images in the %d class folders of '%s'",
                      classes.n, ds->root);
    strlist_free(&classes);
    if (st == LPV_OK) st = ds_finish(ds, &l, err);
    free(l.v);
    if (st != LPV_OK) lpv_dataset_free(ds);
    return st;
}

/* ------------------------------------------------------------------------- */
/* any folder of images, unlabeled */

#define MAX_DEPTH 8

/* Appends the images of root/rel (rel "" for root itself), then those of its sub-folders in name order. */
static lpv_status add_tree(lpv_dataset *ds, itemlist *l, const char *rel, int depth, lpv_err *err) {
    char dir[MAX_PATH], sub[MAX_PATH];
    if ((size_t)snprintf(dir, sizeof dir, "%s%s%s", ds->root, rel[0] ? "/" : "", rel) >= sizeof dir)
        return lpv_fail(err, LPV_E_DATA, "path '%s/%s' is too long", ds->root, rel);
    strlist files, dirs;
    LPV_TRY(list_dir(dir, LIST_IMAGES, &files, err));
    lpv_status st = LPV_OK;
    for (int i = 0; st == LPV_OK && i < files.n; i++) {
        if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", files.v[i]) >= sizeof sub)
            st = lpv_fail(err, LPV_E_DATA, "path '%s/%s' is too long", dir, files.v[i]);
        else st = add_item(ds, l, ds->root, sub, -1, err);
    }
    strlist_free(&files);
    if (st != LPV_OK || depth >= MAX_DEPTH) return st; /* deeper folders (or a symlink loop) are not read */
    LPV_TRY(list_dir(dir, LIST_DIRS, &dirs, err));
    for (int i = 0; st == LPV_OK && i < dirs.n; i++) {
        if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", dirs.v[i]) >= sizeof sub)
            st = lpv_fail(err, LPV_E_DATA, "path '%s/%s' is too long", dir, dirs.v[i]);
        else st = add_tree(ds, l, sub, depth + 1, err);
    }
    strlist_free(&dirs);
    return st;
}

lpv_status lpv_dataset_unlabeled(lpv_dataset *ds, const char *dir, lpv_err *err) {
    ds_init(ds);
    if (!(ds->root = clean_root(ds, dir))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    itemlist l = {0};
    lpv_status st = add_tree(ds, &l, "", 0, err);
    if (st == LPV_OK && l.n == 0)
        st = lpv_fail(err, LPV_E_DATA, "no .jpg/.jpeg/.png images in '%s' or its sub-folders", ds->root);
    if (st == LPV_OK) st = ds_finish(ds, &l, err);
    free(l.v);
    if (st != LPV_OK) lpv_dataset_free(ds);
    return st;
}

/* ------------------------------------------------------------------------- */
/* flat folder + labels file */

typedef struct {
    const char *file;
    int label, line;
} label_entry;

static int cmp_label(const void *a, const void *b) {
    return strcmp(((const label_entry *)a)->file, ((const label_entry *)b)->file);
}

/* A label token: a class index, or a wnid when synsets are given. */
static lpv_status parse_label(const char *tok, const lpv_synsets *syn, const char *path, int line,
                              int *out, lpv_err *err) {
    char *end = NULL;
    errno = 0;
    long v = isdigit((unsigned char)tok[0]) ? strtol(tok, &end, 10) : -1;
    if (end && *end == 0 && errno == 0) {
        if (v > 1000000 || (syn && v >= syn->n))
            return lpv_fail(err, LPV_E_DATA, "line %d of labels file '%s': class %ld is out of range, expected 0..%d",
                            line, path, v, syn ? syn->n - 1 : 1000000);
        *out = (int)v;
        return LPV_OK;
    }
    int k = syn ? lpv_synsets_find(syn, tok) : -1;
    if (k < 0)
        return lpv_fail(err, LPV_E_DATA, "line %d of labels file '%s': '%s' is not a class index%s", line,
                        path, tok, syn ? " or a known wnid" : "");
    *out = k;
    return LPV_OK;
}

/* Parses "<file> <label>" lines into a sorted table; lines are kept in buf. */
static lpv_status read_labels(char *buf, size_t n, const char *path, const lpv_synsets *syn,
                              label_entry **out, int *nout, lpv_err *err) {
    char **lines = NULL;
    int nl = split_lines(buf, n, &lines), k = 0;
    if (nl < 0) return lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    label_entry *t = malloc(((size_t)nl + 1) * sizeof *t);
    lpv_status st = t ? LPV_OK : lpv_fail(err, LPV_E_OOM, "out of memory reading '%s'", path);
    for (int i = 0; st == LPV_OK && i < nl; i++) {
        char *p = lines[i], *file = next_token(&p), *lab = next_token(&p);
        if (!*file) continue; /* blank line */
        if (!*lab || *skip_space(p))
            st = lpv_fail(err, LPV_E_FORMAT, "line %d of labels file '%s' is '%s', expected '<file> <label>'",
                          i + 1, path, lines[i]);
        else {
            t[k] = (label_entry){file, 0, i + 1};
            st = parse_label(lab, syn, path, i + 1, &t[k].label, err);
            k++;
        }
    }
    free(lines);
    if (st == LPV_OK && k > 1) {
        qsort(t, (size_t)k, sizeof *t, cmp_label);
        for (int i = 1; st == LPV_OK && i < k; i++)
            if (strcmp(t[i - 1].file, t[i].file) == 0)
                st = lpv_fail(err, LPV_E_DATA, "file '%s' is listed twice in labels file '%s' (lines %d and %d)",
                              t[i].file, path, t[i - 1].line < t[i].line ? t[i - 1].line : t[i].line,
                              t[i - 1].line < t[i].line ? t[i].line : t[i - 1].line);
    }
    if (st != LPV_OK) {
        free(t);
        return st;
    }
    *out = t;
    *nout = k;
    return LPV_OK;
}

/* The folder decides which images exist; the labels file only has to cover
 * them (the official 50,000-line file serves any subset of the val images). */
lpv_status lpv_dataset_flat(lpv_dataset *ds, const char *dir, const char *labels_file,
                            const lpv_synsets *syn, lpv_err *err) {
    ds_init(ds);
    if (!(ds->root = clean_root(ds, dir))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    char *buf = NULL;
    size_t n = 0;
    label_entry *t = NULL;
    int nt = 0;
    strlist files = {0};
    itemlist l = {0};
    lpv_status st = lpv_read_file(labels_file, &buf, &n, MAX_LIST_FILE, err);
    if (st == LPV_OK) st = read_labels(buf, n, labels_file, syn, &t, &nt, err);
    if (st == LPV_OK) st = list_dir(ds->root, LIST_IMAGES, &files, err);
    if (st == LPV_OK && files.n == 0)
        st = lpv_fail(err, LPV_E_DATA, "no .jpg/.jpeg/.png images in '%s'", dir);
    for (int i = 0; st == LPV_OK && i < files.n; i++) {
        label_entry key = {files.v[i], 0, 0};
        const label_entry *e = nt ? bsearch(&key, t, (size_t)nt, sizeof *t, cmp_label) : NULL;
        if (!e)
            st = lpv_fail(err, LPV_E_DATA, "image '%s' in '%s' has no line in labels file '%s'",
                          files.v[i], ds->root, labels_file);
        else st = add_item(ds, &l, ds->root, files.v[i], e->label, err);
    }
    strlist_free(&files);
    free(t);
    free(buf);
    if (st == LPV_OK) st = ds_finish(ds, &l, err);
    free(l.v);
    if (st != LPV_OK) lpv_dataset_free(ds);
    return st;
}

lpv_status lpv_dataset_check_labels(const lpv_dataset *ds, int classes, const char *source, lpv_err *err) {
    for (int i = 0; i < ds->n; i++) {
        int y = ds->items[i].label;
        if (y < 0) return lpv_fail(err, LPV_E_DATA, "'%s' has no label", ds->items[i].name);
        if (y >= classes)
            return lpv_fail(err, LPV_E_DATA, "'%s' is class %d in '%s', but the model has %d classes", ds->items[i].name,
                            y, source, classes);
    }
    return LPV_OK;
}

/* ------------------------------------------------------------------------- */
/* explicit paths, subsets */

/* Files named on the command line are checked now, so a typo fails before
 * any model is loaded; decoding problems are left to the loader. */
lpv_status lpv_dataset_paths(lpv_dataset *ds, const char *const *paths, int n, lpv_err *err) {
    ds_init(ds);
    itemlist l = {0};
    lpv_status st = n > 0 ? LPV_OK : lpv_fail(err, LPV_E_ARG, "no image files given");
    for (int i = 0; st == LPV_OK && i < n; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) != 0)
            st = lpv_fail(err, LPV_E_IO, "cannot open '%s': %s", paths[i], strerror(errno));
        else if (!S_ISREG(sb.st_mode))
            st = lpv_fail(err, LPV_E_IO, "'%s' is not a regular file", paths[i]);
        else st = add_item(ds, &l, "", paths[i], -1, err);
    }
    if (st == LPV_OK) st = ds_finish(ds, &l, err);
    free(l.v);
    if (st != LPV_OK) lpv_dataset_free(ds);
    return st;
}

void lpv_dataset_free(lpv_dataset *ds) {
    lpv_arena_free(&ds->arena);
    memset(ds, 0, sizeof *ds);
    ds->root = "";
}

lpv_status lpv_dataset_view(lpv_dataset *view, const lpv_dataset *ds, lpv_err *err) {
    memset(view, 0, sizeof *view);
    view->n = ds->n, view->n_classes = ds->n_classes, view->root = ds->root ? ds->root : "";
    if (ds->n <= 0) return LPV_OK;
    view->items = malloc(sizeof *view->items * (size_t)ds->n);
    if (!view->items) return lpv_fail(err, LPV_E_OOM, "out of memory copying a list of %d images", ds->n);
    memcpy(view->items, ds->items, sizeof *view->items * (size_t)ds->n);
    return LPV_OK;
}

void lpv_dataset_view_free(lpv_dataset *view) {
    free(view->items);
    memset(view, 0, sizeof *view);
}

lpv_status lpv_dataset_share(lpv_dataset *view, const lpv_dataset *ds, int *first, lpv_err *err) {
    int64_t b, e;
    lpv_dist_share(ds->n, lpv_dist_rank(), lpv_dist_size(), &b, &e);
    LPV_TRY(lpv_dataset_view(view, ds, err));
    if (b > 0) memmove(view->items, view->items + b, sizeof *view->items * (size_t)(e - b));
    view->n = (int)(e - b);
    count_classes(view);
    *first = (int)b;
    return LPV_OK;
}

void lpv_dataset_limit(lpv_dataset *ds, int n) {
    if (n >= 0 && n < ds->n) {
        ds->n = n;
        count_classes(ds);
    }
}

void lpv_dataset_spread(lpv_dataset *ds, int n) {
    if (n < 0 || n >= ds->n) return;
    for (int i = 0; i < n; i++) ds->items[i] = ds->items[(int64_t)i * ds->n / n]; /* source index >= i */
    ds->n = n;
    count_classes(ds);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

lpv_status lpv_dataset_sample(lpv_dataset *ds, int n, uint64_t seed, lpv_err *err) {
    if (n < 0) return lpv_fail(err, LPV_E_ARG, "sample size %d is negative", n);
    if (n >= ds->n) return LPV_OK;
    int *idx = malloc((size_t)ds->n * sizeof *idx);
    if (!idx) return lpv_fail(err, LPV_E_OOM, "out of memory sampling %d of %d images", n, ds->n);
    for (int i = 0; i < ds->n; i++) idx[i] = i;
    /* the first n steps of a Fisher-Yates shuffle pick n distinct items uniformly */
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int j = i + (int)lpv_rng_below(&r, (uint64_t)(ds->n - i));
        int tmp = idx[i];
        idx[i] = idx[j], idx[j] = tmp;
    }
    qsort(idx, (size_t)n, sizeof *idx, cmp_int);
    /* idx is increasing, so idx[i] >= i: compacting in place never overwrites an unread item */
    for (int i = 0; i < n; i++) ds->items[i] = ds->items[idx[i]];
    ds->n = n;
    free(idx);
    count_classes(ds);
    return LPV_OK;
}

void lpv_dataset_hash(const lpv_dataset *ds, char out[65]) {
    lpv_sha256 s;
    lpv_sha256_init(&s);
    for (int i = 0; i < ds->n; i++) {
        char line[64];
        lpv_sha256_update(&s, ds->items[i].name, strlen(ds->items[i].name));
        int n = snprintf(line, sizeof line, "\t%d\n", ds->items[i].label);
        lpv_sha256_update(&s, line, (size_t)n);
    }
    lpv_sha256_final_hex(&s, out);
}

void lpv_dataset_files_hash(const lpv_dataset *ds, char out[65]) {
    lpv_sha256 s;
    lpv_sha256_init(&s);
    for (int i = 0; i < ds->n; i++) {
        struct stat sb;
        long long size = -1, sec = 0, nsec = 0;
        if (stat(ds->items[i].path, &sb) == 0) size = (long long)sb.st_size, sec = sb.st_mtim.tv_sec, nsec = sb.st_mtim.tv_nsec;
        char line[128];
        lpv_sha256_update(&s, ds->items[i].name, strlen(ds->items[i].name));
        int n = snprintf(line, sizeof line, "\t%d\t%lld\t%lld.%09lld\n", ds->items[i].label, size, sec, nsec);
        lpv_sha256_update(&s, line, (size_t)n);
    }
    lpv_sha256_final_hex(&s, out);
}
