/*
 * dataset.h — class lists (synsets) and the lists of images lpvit evaluates:
 * an ImageFolder tree, a flat folder plus a labels file, or explicit paths.
 *
 * Synsets: one class per line, "n01440764 tench, Tinca tinca" or just the
 * wnid; class index = line number (0-based), the sorted-synset order of
 * timm/torchvision. models/synset_words.txt is the default list.
 *
 * ImageFolder: DIR/<wnid>/<file>.{jpg,jpeg,png} (extensions in any case).
 * Class folders and files are taken in strcmp order, so item order is
 * deterministic; a file's label is its folder's line in the synset list (a
 * folder not in the list is an error; fewer than all classes is fine).
 * Only one level is read: files inside a class folder's subfolders, hidden
 * entries (".*") and files of other types are ignored.
 *
 * Flat: DIR/<file> images plus a labels file of "<file name> <label>" lines,
 * label a class index or a wnid (ILSVRC2012_val_labels.txt format). Every
 * image in DIR needs a line; lines for absent files are ignored.
 *
 * Ownership: a dataset owns all its strings and items in one arena, released
 * by lpv_dataset_free; items point into it. Synsets likewise.
 *
 *     lpv_synsets syn; lpv_dataset ds; lpv_err err;
 *     if (lpv_synsets_load(&syn, lpv_synsets_default_path(), &err)) die(err.msg);
 *     if (lpv_dataset_imagefolder(&ds, "val", &syn, &err)) die(err.msg);
 *     lpv_dataset_limit(&ds, 1000);               // first 1000 in sorted order
 *     for (int i = 0; i < ds.n; i++) use(ds.items[i].path, ds.items[i].label);
 *     lpv_dataset_free(&ds); lpv_synsets_free(&syn);
 */
#ifndef LPVIT_DATASET_H
#define LPVIT_DATASET_H

#include <stdint.h>

#include "lpvit/arena.h"
#include "lpvit/error.h"

typedef struct {
    int n;             /* classes */
    const char **wnid; /* (n) e.g. "n01440764" */
    const char **name; /* (n) e.g. "tench, Tinca tinca"; "" when the line has only the wnid */
    int *by_wnid;      /* (n) class indices sorted by wnid, for lookups */
    const char *path;  /* the file it was read from */
    lpv_arena arena;
} lpv_synsets;

/* models/synset_words.txt of this source tree. */
const char *lpv_synsets_default_path(void);
lpv_status lpv_synsets_load(lpv_synsets *s, const char *path, lpv_err *err);
/* Class index of a wnid, -1 when absent. */
int lpv_synsets_find(const lpv_synsets *s, const char *wnid);
void lpv_synsets_free(lpv_synsets *s);

typedef struct {
    const char *path; /* file to open */
    const char *name; /* path relative to the dataset folder ("n01440764/x.JPEG"), or as given */
    int label;        /* class index; -1 when unknown */
} lpv_item;

typedef struct {
    int n;            /* items */
    lpv_item *items;  /* (n) */
    int n_classes;    /* distinct labels >= 0 among the items */
    const char *root; /* the dataset folder; "" for explicit paths */
    lpv_arena arena;
} lpv_dataset;

/* 1 when the file name ends in .jpg, .jpeg or .png (any case). */
int lpv_is_image_name(const char *name);

lpv_status lpv_dataset_imagefolder(lpv_dataset *ds, const char *dir, const lpv_synsets *syn,
                                   lpv_err *err);
/* syn may be NULL when every label in the file is numeric. */
lpv_status lpv_dataset_flat(lpv_dataset *ds, const char *dir, const char *labels_file,
                            const lpv_synsets *syn, lpv_err *err);
/* Every image of dir and its sub-folders (any names, up to 8 levels), label -1: the images of a folder, then
 * those of each sub-folder in name order. For what needs no labels (calibration with a label-free loss). */
lpv_status lpv_dataset_unlabeled(lpv_dataset *ds, const char *dir, lpv_err *err);
/* Explicit files (e.g. `lpvit infer a.jpg b.png`), in the given order, label -1.
 * Each must exist; they are not decoded here. */
lpv_status lpv_dataset_paths(lpv_dataset *ds, const char *const *paths, int n, lpv_err *err);
void lpv_dataset_free(lpv_dataset *ds);
/* LPV_E_DATA naming the first item whose label is not a class of a `classes`-way model, and the file the
 * labels came from (source: the labels or synsets file), so a folder of other classes fails with a line
 * instead of indexing past the logits. */
lpv_status lpv_dataset_check_labels(const lpv_dataset *ds, int classes, const char *source, lpv_err *err);

/* view <- ds with an item list of its own, sharing ds's strings: narrow it with limit / spread / sample
 * without touching ds. ds must outlive the view; free it with lpv_dataset_view_free, never
 * lpv_dataset_free. An empty ds gives an empty view. */
lpv_status lpv_dataset_view(lpv_dataset *view, const lpv_dataset *ds, lpv_err *err);
void lpv_dataset_view_free(lpv_dataset *view);

/* This process's share of ds when several MPI ranks split it (dist.h: contiguous, in rank order): a view (as
 * lpv_dataset_view) of items [*first, *first + view->n); the whole list with one rank. May be empty. */
lpv_status lpv_dataset_share(lpv_dataset *view, const lpv_dataset *ds, int *first, lpv_err *err);

/* Keeps the first n items (n >= ds->n keeps all). */
void lpv_dataset_limit(lpv_dataset *ds, int n);
/* Keeps n items evenly spread over the list (item ⌊i·N/n⌋), in order: a class-sorted
 * list stays balanced, where the first n would be the first classes only. */
void lpv_dataset_spread(lpv_dataset *ds, int n);
/* Keeps n items chosen by a seeded shuffle (lpv_rng), in their original
 * order; the same (dataset, n, seed) always gives the same items. */
lpv_status lpv_dataset_sample(lpv_dataset *ds, int n, uint64_t seed, lpv_err *err);

/* SHA-256 of "name<TAB>label<LF>" over the dataset's items: identifies the list and its order. */
void lpv_dataset_hash(const lpv_dataset *ds, char out[65]);
/* The same with each file's size and modification time: changes when an image is replaced in place, so a
 * cache keyed by it never serves statistics of other pixels. A file that cannot be stat'ed counts as size -1. */
void lpv_dataset_files_hash(const lpv_dataset *ds, char out[65]);

#endif
