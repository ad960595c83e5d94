/*
 * registry.h — model presets (models/registry.json): timm names and aliases,
 * architecture, eval preprocessing, official file name/URL/size, published
 * accuracy. Resolves what a user passes to --model: a path to a
 * .safetensors file or a Hugging Face folder, or a preset name whose file is
 * looked up in $LPVIT_MODELS and then in the registry's folder.
 * Presets are returned by value; nothing to free.
 */
#ifndef LPVIT_REGISTRY_H
#define LPVIT_REGISTRY_H

#include <stdint.h>

#include "lpvit/error.h"
#include "lpvit/image.h"
#include "lpvit/model.h"

typedef struct {
    char key[32];         /* "deit_b" */
    char timm_name[96];   /* "deit_base_patch16_224" */
    char tag[64];         /* "fb_in1k" */
    char file[128];       /* expected file name in the models folder */
    char url[256];
    char hf_repo[96];
    int dim, depth, heads, mlp, patch, img, classes, distilled;
    double crop_pct;
    lpv_interp interp;
    float mean[3], std[3];
    int64_t params, data_bytes;
    double ref_top1, ref_top5; /* NAN when unknown */
} lpv_preset;

/* Finds a preset by key, alias or timm name. LPV_E_ARG (listing the known keys) if none matches. */
lpv_status lpv_registry_find(const char *name, lpv_preset *out, lpv_err *err);
/* Preset whose timm name prefixes a file's base name (e.g. vit_tiny_patch16_224.safetensors); 0 if none. */
int lpv_registry_match_file(const char *path, lpv_preset *out);
/* Lists preset keys into buf ("deit_t, deit_s, ..."). */
void lpv_registry_keys(char *buf, size_t cap);

typedef struct {
    char path[1024];    /* weights to load */
    int has_preset;
    lpv_preset preset;
} lpv_model_ref;

/* --model M [--weights W]: a file/folder, or a preset (file from W, $LPVIT_MODELS or models/). */
lpv_status lpv_resolve_model(const char *model, const char *weights, lpv_model_ref *out, lpv_err *err);
/* pp's crop_pct, interpolation, mean and std <- the preset's (img_size is left as it is). */
void lpv_preset_preproc(const lpv_preset *p, lpv_preproc *pp);
/* The architecture of a preset as a config (for random weights). */
void lpv_preset_config(const lpv_preset *p, lpv_config *c);
/* Checks a loaded model against its preset's architecture. */
lpv_status lpv_preset_check(const lpv_preset *p, const lpv_config *c, const char *path, lpv_err *err);

#endif
