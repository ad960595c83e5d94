/*
 * test_dataset.c — synset lists, the three ways to list a dataset, subsets,
 * and the prefetching loader.
 *
 * Builds a small ImageFolder tree and a flat folder of tiny image files
 * (PNG data written with stb_image_write) in a temp dir and checks: labels come from
 * the synset list, folders and files are in strcmp order, extensions match
 * in any case, other files/hidden files/sub-folders are ignored, clear
 * errors for missing/empty/unknown folders and labels, deterministic
 * limit/sample, the loader's output equals lpv_preprocess called directly,
 * bad images are skipped and reported (strict mode fails), early close.
 * With ../shared: imagenet-val-1000 labels agree with ILSVRC2012_val_labels.txt.
 */
#include <ftw.h>
#include <stdint.h>
#include <unistd.h>

#include "lpvit/dataset.h"
#include "lpvit/fileio.h"
#include "lpvit/image.h"
#include "lpvit/loader.h"
#include "test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

static char tmp[256];

static void mkpath(char *buf, size_t cap, const char *rel) { snprintf(buf, cap, "%s/%s", tmp, rel); }

static void mkdir_rel(const char *rel) {
    char p[512];
    mkpath(p, sizeof p, rel);
    CHECKF(mkdir(p, 0755) == 0, "mkdir %s", p);
}

static void write_text(const char *rel, const char *text) {
    char p[512];
    mkpath(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A w x h image whose pixels depend on `seed`. Always PNG data: stb_image
 * decodes by content, not by name, and stb_image_write's JPEG encoder trips
 * UBSan (a signed shift), so the .jpg names here hold PNGs. Real JPEG
 * decoding is covered by test_image. */
static void write_image(const char *rel, int w, int h, int seed) {
    char p[512];
    mkpath(p, sizeof p, rel);
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(i * 7 + seed * 31 + (i / 3) % 5 * 40);
    CHECKF(stbi_write_png(p, w, h, 3, px, w * 3), "writing %s", p);
    free(px);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void expect_err(lpv_status st, lpv_status want, const lpv_err *err, const char *needle) {
    CHECKF(st == want, "status %d, expected %d (%s)", st, want, err->msg);
    CHECKF(strstr(err->msg, needle) != NULL, "message '%s' lacks '%s'", err->msg, needle);
}

/* ---- synsets ---- */

static void test_synsets(lpv_synsets *syn) {
    lpv_err err;
    /* a UTF-8 BOM, CRLF, extra spaces, a bare wnid, a trailing blank line */
    write_text("syn.txt", "\xEF\xBB\xBFn01440764 tench, Tinca tinca\r\nn01443537  goldfish \nn01484850\n\n");
    char p[512];
    mkpath(p, sizeof p, "syn.txt");
    CHECK_OK(lpv_synsets_load(syn, p, &err), &err);
    CHECK(syn->n == 3);
    if (syn->n == 3) {
        CHECK(strcmp(syn->wnid[0], "n01440764") == 0 && strcmp(syn->name[0], "tench, Tinca tinca") == 0);
        CHECK(strcmp(syn->name[1], "goldfish") == 0 && strcmp(syn->name[2], "") == 0);
    }
    CHECK(lpv_synsets_find(syn, "n01484850") == 2 && lpv_synsets_find(syn, "n01440764") == 0);
    CHECK(lpv_synsets_find(syn, "n00000000") == -1);

    lpv_synsets bad;
    write_text("dup.txt", "n1 a\nn2 b\nn1 c\n");
    mkpath(p, sizeof p, "dup.txt");
    expect_err(lpv_synsets_load(&bad, p, &err), LPV_E_DATA, &err, "'n1' appears twice");
    CHECK(strstr(err.msg, "lines 1 and 3") != NULL);
    write_text("gap.txt", "n1 a\n\nn2 b\n");
    mkpath(p, sizeof p, "gap.txt");
    expect_err(lpv_synsets_load(&bad, p, &err), LPV_E_DATA, &err, "line 2");
    write_text("empty.txt", "\n");
    mkpath(p, sizeof p, "empty.txt");
    expect_err(lpv_synsets_load(&bad, p, &err), LPV_E_DATA, &err, "is empty");
    expect_err(lpv_synsets_load(&bad, "/nonexistent/syn.txt", &err), LPV_E_IO, &err, "'/nonexistent/syn.txt'");

    /* the shipped default list: the 1000 ILSVRC2012 classes in index order */
    lpv_synsets def;
    CHECK_OK(lpv_synsets_load(&def, lpv_synsets_default_path(), &err), &err);
    CHECK(def.n == 1000);
    if (def.n == 1000) {
        CHECK(strcmp(def.wnid[0], "n01440764") == 0 && strncmp(def.name[0], "tench", 5) == 0);
        CHECK(strcmp(def.wnid[999], "n15075141") == 0);
    }
    lpv_synsets_free(&def);
}

/* ---- ImageFolder ---- */

static void build_tree(void) {
    mkdir_rel("val");
    mkdir_rel("val/n01443537");
    mkdir_rel("val/n01440764");
    mkdir_rel("val/n01440764/sub");
    write_image("val/n01443537/b.png", 9, 7, 1);
    write_image("val/n01443537/a.PNG", 5, 11, 2);
    write_image("val/n01443537/c.JpEg", 16, 12, 3);
    write_image("val/n01440764/x.jpg", 13, 13, 4);
    write_image("val/n01440764/sub/y.png", 4, 4, 5); /* one level only: ignored */
    write_image("val/n01440764/.hidden.png", 4, 4, 6);
    write_text("val/n01440764/notes.txt", "not an image\n");
    write_text("val/n01440764/broken.png", "\x89PNG\r\n\x1a\n but not really");
    write_text("val/README", "top-level files are ignored\n");
}

static void test_imagefolder(const lpv_synsets *syn) {
    lpv_dataset ds;
    lpv_err err;
    char p[512];
    mkpath(p, sizeof p, "val/"); /* a trailing slash is fine */
    CHECK_OK(lpv_dataset_imagefolder(&ds, p, syn, &err), &err);
    static const char *names[] = {"n01440764/broken.png", "n01440764/x.jpg", "n01443537/a.PNG",
                                  "n01443537/b.png", "n01443537/c.JpEg"};
    static const int labels[] = {0, 0, 1, 1, 1};
    CHECKF(ds.n == 5, "%d items", ds.n);
    for (int i = 0; i < ds.n && i < 5; i++) {
        CHECKF(strcmp(ds.items[i].name, names[i]) == 0, "item %d is '%s'", i, ds.items[i].name);
        CHECK(ds.items[i].label == labels[i]);
        char want[1024];
        snprintf(want, sizeof want, "%s/val/%s", tmp, names[i]);
        CHECKF(strcmp(ds.items[i].path, want) == 0, "path '%s'", ds.items[i].path);
    }
    CHECK(ds.n_classes == 2);
    lpv_dataset_free(&ds);

    /* errors */
    mkdir_rel("unknown");
    mkdir_rel("unknown/n01440764");
    mkdir_rel("unknown/n99999999");
    write_image("unknown/n01440764/a.png", 3, 3, 0);
    mkpath(p, sizeof p, "unknown");
    expect_err(lpv_dataset_imagefolder(&ds, p, syn, &err), LPV_E_DATA, &err, "folder 'n99999999'");
    expect_err(lpv_dataset_imagefolder(&ds, "/nonexistent/val", syn, &err), LPV_E_IO, &err, "'/nonexistent/val'");
    expect_err(lpv_dataset_imagefolder(&ds, p, NULL, &err), LPV_E_ARG, &err, "needs a synset list");
    mkdir_rel("emptydir");
    mkpath(p, sizeof p, "emptydir");
    expect_err(lpv_dataset_imagefolder(&ds, p, syn, &err), LPV_E_DATA, &err, "no class folders");
    mkdir_rel("noimages");
    mkdir_rel("noimages/n01440764");
    write_text("noimages/n01440764/a.txt", "x");
    mkpath(p, sizeof p, "noimages");
    expect_err(lpv_dataset_imagefolder(&ds, p, syn, &err), LPV_E_DATA, &err, "no .jpg/.jpeg/.png images");
    CHECK(lpv_is_image_name("a.JPG") && lpv_is_image_name("b.jpeg") && lpv_is_image_name("x.y.Png"));
    CHECK(!lpv_is_image_name("a.gif") && !lpv_is_image_name("jpg") && !lpv_is_image_name(".png") &&
          !lpv_is_image_name("a.jpg.txt"));
}

/* ---- flat folder + labels ---- */

static void test_flat(const lpv_synsets *syn) {
    mkdir_rel("flat");
    char rel[64], p[512], lp[512];
    for (int i = 0; i < 12; i++) {
        snprintf(rel, sizeof rel, "flat/f%02d.png", i);
        write_image(rel, 6, 5, i);
    }
    write_text("flat/notes.txt", "ignored");
    /* labels: index or wnid; extra lines for absent files are ignored */
    char text[2048] = "";
    for (int i = 11; i >= 0; i--) {
        char line[64];
        if (i == 4) snprintf(line, sizeof line, "f%02d.png n01484850\n", i);
        else snprintf(line, sizeof line, "f%02d.png %d\n", i, i % 3);
        strcat(text, line);
    }
    strcat(text, "absent.JPEG 1\n\n");
    write_text("labels.txt", text);
    mkpath(p, sizeof p, "flat");
    mkpath(lp, sizeof lp, "labels.txt");
    lpv_dataset ds;
    lpv_err err;
    CHECK_OK(lpv_dataset_flat(&ds, p, lp, syn, &err), &err);
    CHECK(ds.n == 12);
    for (int i = 0; i < ds.n; i++) {
        snprintf(rel, sizeof rel, "f%02d.png", i);
        CHECK(strcmp(ds.items[i].name, rel) == 0);
        CHECK(ds.items[i].label == (i == 4 ? 2 : i % 3));
    }
    CHECK(ds.n_classes == 3);

    /* limit and sample are deterministic and keep the sorted order */
    lpv_dataset_limit(&ds, 20);
    CHECK(ds.n == 12);
    lpv_dataset a, b;
    CHECK_OK(lpv_dataset_flat(&a, p, lp, syn, &err), &err);
    CHECK_OK(lpv_dataset_flat(&b, p, lp, syn, &err), &err);
    CHECK_OK(lpv_dataset_sample(&a, 5, 7, &err), &err);
    CHECK_OK(lpv_dataset_sample(&b, 5, 7, &err), &err);
    CHECK(a.n == 5 && b.n == 5);
    int same = 1, sorted = 1;
    for (int i = 0; i < 5; i++) {
        same &= a.items[i].path == b.items[i].path ? 1 : strcmp(a.items[i].path, b.items[i].path) == 0;
        if (i) sorted &= strcmp(a.items[i - 1].name, a.items[i].name) < 0;
    }
    CHECK(same && sorted);
    printf("sample(5, seed 7):");
    for (int i = 0; i < a.n; i++) printf(" %s", a.items[i].name);
    printf("\n");
    lpv_dataset_free(&b);
    CHECK_OK(lpv_dataset_flat(&b, p, lp, syn, &err), &err);
    CHECK_OK(lpv_dataset_sample(&b, 5, 8, &err), &err);
    int differs = 0;
    for (int i = 0; i < 5; i++) differs |= strcmp(a.items[i].name, b.items[i].name) != 0;
    CHECK(differs); /* another seed, another subset (true for seeds 7 and 8) */
    lpv_dataset_limit(&b, 2);
    CHECK(b.n == 2);
    /* spread keeps items 0, 3, 6, 9 of 12 (f00, f03, f06, f09), not the first four */
    lpv_dataset_free(&b);
    CHECK_OK(lpv_dataset_flat(&b, p, lp, syn, &err), &err);
    lpv_dataset_spread(&b, 4);
    CHECK(b.n == 4);
    for (int i = 0; i < b.n; i++) {
        char want[16];
        snprintf(want, sizeof want, "f%02d.png", 3 * i);
        CHECKF(strcmp(b.items[i].name, want) == 0, "spread item %d: %s, expected %s", i, b.items[i].name, want);
    }
    lpv_dataset_spread(&b, 10); /* more than it has: unchanged */
    CHECK(b.n == 4);
    lpv_dataset_free(&a);
    lpv_dataset_free(&b);
    lpv_dataset_free(&ds);

    /* errors */
    write_text("missing.txt", "f00.png 1\nf01.png 1\n");
    mkpath(lp, sizeof lp, "missing.txt");
    expect_err(lpv_dataset_flat(&ds, p, lp, syn, &err), LPV_E_DATA, &err, "image 'f02.png'");
    write_text("dup.txt", "f00.png 1\nf00.png 2\n");
    mkpath(lp, sizeof lp, "dup.txt");
    expect_err(lpv_dataset_flat(&ds, p, lp, syn, &err), LPV_E_DATA, &err, "listed twice");
    write_text("range.txt", "f00.png 3\n");
    mkpath(lp, sizeof lp, "range.txt");
    expect_err(lpv_dataset_flat(&ds, p, lp, syn, &err), LPV_E_DATA, &err, "class 3 is out of range");
    write_text("junk.txt", "f00.png 1 extra\n");
    mkpath(lp, sizeof lp, "junk.txt");
    expect_err(lpv_dataset_flat(&ds, p, lp, syn, &err), LPV_E_FORMAT, &err, "line 1");
    write_text("wnid.txt", "f00.png n01440764\n");
    mkpath(lp, sizeof lp, "wnid.txt");
    expect_err(lpv_dataset_flat(&ds, p, lp, NULL, &err), LPV_E_DATA, &err, "'n01440764' is not a class index");
}

/* ---- explicit paths ---- */

static void test_paths(void) {
    char a[512], b[512];
    mkpath(a, sizeof a, "val/n01443537/b.png");
    mkpath(b, sizeof b, "val/n01440764/x.jpg");
    const char *paths[] = {a, b};
    lpv_dataset ds;
    lpv_err err;
    CHECK_OK(lpv_dataset_paths(&ds, paths, 2, &err), &err);
    CHECK(ds.n == 2 && strcmp(ds.items[0].path, a) == 0 && strcmp(ds.items[1].path, b) == 0);
    CHECK(ds.items[0].label == -1 && ds.n_classes == 0);
    lpv_dataset_free(&ds);
    const char *bad[] = {a, "/nonexistent/z.png"};
    expect_err(lpv_dataset_paths(&ds, bad, 2, &err), LPV_E_IO, &err, "'/nonexistent/z.png'");
}

/* ---- loader ---- */

/* Every image of the batch equals lpv_preprocess of its file. */
static void check_batch(const lpv_dataset *ds, const lpv_preproc *pp, const lpv_batch *b) {
    size_t per = (size_t)3 * pp->img_size * pp->img_size;
    float *want = malloc(per * sizeof(float));
    for (int i = 0; i < b->n; i++) {
        const lpv_item *it = &ds->items[b->index[i]];
        lpv_image im;
        lpv_err err;
        CHECK_OK(lpv_image_load(it->path, &im, &err), &err);
        CHECK_OK(lpv_preprocess(&im, pp, want, NULL, &err), &err);
        lpv_image_free(&im);
        CHECKF(memcmp(want, b->x + i * per, per * sizeof(float)) == 0, "image '%s' differs", it->path);
        CHECK(b->labels[i] == it->label);
    }
    free(want);
}

static void test_loader(const lpv_synsets *syn) {
    char p[512];
    mkpath(p, sizeof p, "val");
    lpv_dataset ds;
    lpv_err err;
    CHECK_OK(lpv_dataset_imagefolder(&ds, p, syn, &err), &err);
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = 16; /* small: the tiny images are upscaled */
    for (int threads = 1; threads <= 3; threads += 2) {
        lpv_loader *L;
        lpv_loader_opts o = {2, threads, 0, NULL};
        CHECK_OK(lpv_loader_open(&L, &ds, &pp, &o, &err), &err);
        if (!L) continue;
        lpv_batch b;
        static const int want_n[] = {1, 2, 1}, want_first[] = {0, 2, 4}, want_count[] = {2, 2, 1};
        int k = 0;
        while (lpv_loader_next(L, &b, &err) == LPV_OK && b.count > 0) {
            CHECKF(k < 3 && b.n == want_n[k] && b.first == want_first[k] && b.count == want_count[k],
                   "batch %d: n %d first %d count %d", k, b.n, b.first, b.count);
            check_batch(&ds, &pp, &b);
            if (k == 0) { /* broken.png is reported, not returned */
                CHECK(b.n_failed == 1 && b.failed[0].index == 0 && b.index[0] == 1);
                CHECK(b.n_failed == 1 && strstr(b.failed[0].path, "broken.png") &&
                      strstr(b.failed[0].reason, "cannot decode image") && strstr(b.failed[0].reason, "broken.png"));
            } else {
                CHECK(b.n_failed == 0);
            }
            k++;
        }
        CHECK(k == 3 && b.count == 0);
        CHECK(lpv_loader_next(L, &b, &err) == LPV_OK && b.count == 0); /* stays at the end */
        lpv_loader_close(L);
    }

    /* strict: the failure is an error naming the file */
    lpv_loader *L;
    lpv_loader_opts strict = {4, 1, 1, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &strict, &err), &err);
    lpv_batch b;
    expect_err(lpv_loader_next(L, &b, &err), LPV_E_DATA, &err, "broken.png");
    lpv_loader_close(L);

    /* early close: right after open, and with a batch held and another in flight */
    lpv_loader_opts one = {1, 2, 0, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &one, &err), &err);
    lpv_loader_close(L);
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &one, &err), &err);
    CHECK_OK(lpv_loader_next(L, &b, &err), &err);
    lpv_loader_close(L);
    lpv_loader_close(NULL);

    /* bad options */
    lpv_loader_opts zero = {0, 1, 0, NULL};
    expect_err(lpv_loader_open(&L, &ds, &pp, &zero, &err), LPV_E_ARG, &err, "batch size 0");
    lpv_dataset_free(&ds);

    /* a file that disappears after listing is reported as unreadable */
    char gone[512];
    mkpath(gone, sizeof gone, "gone.png");
    write_image("gone.png", 4, 4, 9);
    const char *paths[] = {gone};
    CHECK_OK(lpv_dataset_paths(&ds, paths, 1, &err), &err);
    unlink(gone);
    lpv_loader_opts o = {8, 1, 0, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &o, &err), &err);
    CHECK_OK(lpv_loader_next(L, &b, &err), &err);
    CHECK(b.count == 1 && b.n == 0 && b.n_failed == 1 && strstr(b.failed[0].reason, "cannot open"));
    lpv_loader_close(L);
    lpv_dataset_free(&ds);
}

/* ---- golden: the real validation subset ---- */

static void test_imagenet(const char *shared) {
    char p[1024], lp[1024];
    test_path(p, sizeof p, shared, "data/imagenet-val-1000");
    test_path(lp, sizeof lp, shared, "data/ILSVRC2012_val_labels.txt");
    if (!lpv_is_dir(p)) {
        printf("SKIP part: %s not found\n", p);
        return;
    }
    lpv_synsets syn;
    lpv_dataset ds;
    lpv_err err;
    CHECK_OK(lpv_synsets_load(&syn, lpv_synsets_default_path(), &err), &err);
    CHECK_OK(lpv_dataset_imagefolder(&ds, p, &syn, &err), &err);
    printf("imagenet-val-1000: %d images, %d classes\n", ds.n, ds.n_classes);
    CHECK(ds.n == 1000 && ds.n_classes == 626);
    /* the folder labels agree with the official ground truth of every file */
    char *buf = NULL;
    size_t n = 0;
    CHECK_OK(lpv_read_file(lp, &buf, &n, 1 << 24, &err), &err);
    int agree = 0;
    for (int i = 0; buf && i < ds.n; i++) {
        const char *base = strrchr(ds.items[i].name, '/') + 1;
        const char *hit = strstr(buf, base);
        if (hit && atoi(hit + strlen(base)) == ds.items[i].label) agree++;
    }
    CHECKF(agree == ds.n, "%d of %d labels agree with %s", agree, ds.n, lp);

    /* the same files as a flat folder + the official labels file */
    mkdir_rel("flatval");
    for (int i = 0; i < ds.n; i += 97) {
        char link[1024];
        snprintf(link, sizeof link, "%s/flatval/%s", tmp, strrchr(ds.items[i].name, '/') + 1);
        CHECK(symlink(ds.items[i].path, link) == 0);
    }
    char fp[512];
    mkpath(fp, sizeof fp, "flatval");
    lpv_dataset flat;
    CHECK_OK(lpv_dataset_flat(&flat, fp, lp, &syn, &err), &err);
    CHECK(flat.n == (ds.n + 96) / 97);
    for (int i = 0; i < flat.n; i++) {
        int found = 0;
        for (int j = 0; j < ds.n; j += 97)
            if (strcmp(strrchr(ds.items[j].name, '/') + 1, flat.items[i].name) == 0)
                found = ds.items[j].label == flat.items[i].label;
        CHECKF(found, "flat label of '%s'", flat.items[i].name);
    }
    lpv_dataset_free(&flat);

    /* a few real batches through the loader, 2 threads */
    lpv_dataset_limit(&ds, 24);
    lpv_preproc pp = lpv_preproc_default();
    lpv_loader *L;
    lpv_loader_opts o = {8, 2, 1, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &o, &err), &err);
    lpv_batch b;
    int total = 0;
    while (L && lpv_loader_next(L, &b, &err) == LPV_OK && b.count > 0) {
        check_batch(&ds, &pp, &b);
        total += b.n;
    }
    CHECK(total == 24);
    lpv_loader_close(L);
    free(buf);
    lpv_dataset_free(&ds);
    lpv_synsets_free(&syn);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s/test_dataset_XXXXXX", LPVIT_BINARY_DIR);
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "cannot create a temp dir under %s\n", LPVIT_BINARY_DIR);
        return 1;
    }
    lpv_synsets syn;
    test_synsets(&syn);
    build_tree();
    test_imagefolder(&syn);
    test_flat(&syn);
    test_paths();
    test_loader(&syn);
    lpv_synsets_free(&syn);
    const char *shared = test_shared_dir();
    if (shared) test_imagenet(shared);
    nftw(tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish("test_dataset");
}
