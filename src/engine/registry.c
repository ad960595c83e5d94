/* registry.c — model presets and --model resolution (see include/lpvit/registry.h). */
#include "lpvit/registry.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lpvit/fileio.h"

static cJSON *load_registry(lpv_err *err) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/registry.json", lpv_models_dir());
    char *txt;
    size_t n;
    if (lpv_read_file(path, &txt, &n, 4u << 20, err) != LPV_OK) return NULL;
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    const cJSON *p = root ? cJSON_GetObjectItemCaseSensitive(root, "presets") : NULL;
    if (!cJSON_IsObject(p)) {
        cJSON_Delete(root);
        lpv_fail(err, LPV_E_FORMAT, "'%s' is not a valid model registry", path);
        return NULL;
    }
    return root;
}

static void copy_str(char *dst, size_t cap, const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static double num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static void parse_preset(const cJSON *e, lpv_preset *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", e->string);
    copy_str(p->timm_name, sizeof p->timm_name, e, "timm_name");
    copy_str(p->tag, sizeof p->tag, e, "pretrained_tag");
    copy_str(p->file, sizeof p->file, e, "file");
    copy_str(p->url, sizeof p->url, e, "url");
    copy_str(p->hf_repo, sizeof p->hf_repo, e, "hf_repo");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(e, "arch");
    p->dim = (int)num(a, "dim", 0), p->depth = (int)num(a, "depth", 0), p->heads = (int)num(a, "heads", 0);
    p->mlp = (int)num(a, "mlp", 0), p->patch = (int)num(a, "patch", 16), p->img = (int)num(a, "img", 224);
    p->classes = (int)num(a, "classes", 1000);
    p->distilled = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "distilled"));
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(e, "preprocess");
    p->crop_pct = num(pp, "crop_pct", 0.9);
    const cJSON *interp = cJSON_GetObjectItemCaseSensitive(pp, "interpolation");
    p->interp = cJSON_IsString(interp) && strcmp(interp->valuestring, "bilinear") == 0 ? LPV_INTERP_BILINEAR
                                                                                       : LPV_INTERP_BICUBIC;
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(pp, "mean"), *std = cJSON_GetObjectItemCaseSensitive(pp, "std");
    for (int i = 0; i < 3; i++) {
        const cJSON *m = cJSON_GetArrayItem(mean, i), *s = cJSON_GetArrayItem(std, i);
        p->mean[i] = cJSON_IsNumber(m) ? (float)m->valuedouble : 0.5f;
        p->std[i] = cJSON_IsNumber(s) ? (float)s->valuedouble : 0.5f;
    }
    p->params = (int64_t)num(e, "params", 0);
    p->data_bytes = (int64_t)num(e, "data_bytes", 0);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(e, "reference");
    p->ref_top1 = num(ref, "top1", NAN);
    p->ref_top5 = num(ref, "top5", NAN);
}

static int preset_matches(const cJSON *e, const char *name) {
    if (strcmp(e->string, name) == 0) return 1;
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(e, "aliases");
    const cJSON *a;
    cJSON_ArrayForEach(a, al) if (cJSON_IsString(a) && strcmp(a->valuestring, name) == 0) return 1;
    return 0;
}

void lpv_registry_keys(char *buf, size_t cap) {
    buf[0] = 0;
    lpv_err err;
    cJSON *root = load_registry(&err);
    if (!root) return;
    size_t k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "presets")) {
        int n = snprintf(buf + k, cap - k, "%s%s", k ? ", " : "", e->string);
        if (n < 0 || (size_t)n >= cap - k) break;
        k += (size_t)n;
    }
    cJSON_Delete(root);
}

lpv_status lpv_registry_find(const char *name, lpv_preset *out, lpv_err *err) {
    cJSON *root = load_registry(err);
    if (!root) return LPV_E_IO;
    const cJSON *e;
    int found = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "presets")) {
        if (preset_matches(e, name)) {
            parse_preset(e, out);
            found = 1;
            break;
        }
    }
    cJSON_Delete(root);
    if (found) return LPV_OK;
    char keys[512];
    lpv_registry_keys(keys, sizeof keys);
    return lpv_fail(err, LPV_E_ARG, "unknown model '%s' (not a file, folder or preset; presets: %s)", name, keys);
}

int lpv_registry_match_file(const char *path, lpv_preset *out) {
    lpv_err err;
    cJSON *root = load_registry(&err);
    if (!root) return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const cJSON *e;
    int found = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "presets")) {
        const cJSON *tn = cJSON_GetObjectItemCaseSensitive(e, "timm_name");
        if (!cJSON_IsString(tn)) continue;
        size_t n = strlen(tn->valuestring);
        if (strncmp(base, tn->valuestring, n) == 0 && (base[n] == '.' || base[n] == 0)) {
            parse_preset(e, out);
            found = 1;
            break;
        }
    }
    cJSON_Delete(root);
    return found;
}

/* timm's hub spellings of a model name: "hf-hub:timm/NAME.TAG" and "timm/NAME.TAG" are NAME.TAG. */
static const char *hub_name(const char *model) {
    if (strncmp(model, "hf-hub:", 7) == 0) model += 7;
    if (strncmp(model, "timm/", 5) == 0) model += 5;
    return model;
}

/* The Hugging Face cache's copy of repo "org/name" ($HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub): models--org--name/snapshots/<the revision refs/main names>/file. With file "",
 * the snapshot folder itself (with a trailing '/'). Writes the path even when nothing is there, for the
 * error message. */
static void hf_snapshot(char *out, size_t cap, const char *repo, const char *file) {
    char hub[PATH_MAX], dir[PATH_MAX + 300], rev[128] = "main";
    const char *c = getenv("HF_HUB_CACHE"), *h = getenv("HF_HOME"), *home = getenv("HOME");
    if (c && c[0]) snprintf(hub, sizeof hub, "%s", c);
    else if (h && h[0]) snprintf(hub, sizeof hub, "%s/hub", h);
    else snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", home ? home : "");
    snprintf(dir, sizeof dir, "%s/models--", hub);
    size_t k = strlen(dir);
    for (const char *p = repo; *p && k + 2 < sizeof dir; p++) { /* "/" becomes "--" */
        if (*p == '/') dir[k++] = '-', dir[k++] = '-';
        else dir[k++] = *p;
    }
    dir[k] = 0;
    char ref[PATH_MAX + 320];
    snprintf(ref, sizeof ref, "%s/refs/main", dir);
    char *txt = NULL;
    size_t n = 0;
    lpv_err e;
    if (lpv_read_file(ref, &txt, &n, 127, &e) == LPV_OK) {
        while (n > 0 && (txt[n - 1] == '\n' || txt[n - 1] == ' ')) txt[--n] = 0;
        if (n > 0 && !strchr(txt, '/')) snprintf(rev, sizeof rev, "%s", txt);
        free(txt);
    }
    snprintf(out, cap, "%s/snapshots/%s/%s", dir, rev, file);
}

lpv_status lpv_resolve_model(const char *model, const char *weights, lpv_model_ref *out, lpv_err *err) {
    memset(out, 0, sizeof *out);
    if (!model || !model[0]) return lpv_fail_param(err, LPV_E_ARG, "model", "none given");
    if (access(model, F_OK) == 0 && !lpv_file_exists(model) && !lpv_is_dir(model))
        return lpv_fail(err, LPV_E_IO, "'%s' is not a regular file", model); /* a FIFO, a device */
    if (lpv_file_exists(model) || lpv_is_dir(model)) {
        if (weights) return lpv_fail_param(err, LPV_E_ARG, "weights", "goes with a preset name as the model, not the path '%s'", model);
        snprintf(out->path, sizeof out->path, "%s", model);
        out->has_preset = lpv_registry_match_file(model, &out->preset);
        return LPV_OK;
    }
    const char *name = hub_name(model); /* "hf-hub:timm/deit_tiny_patch16_224.fb_in1k" -> "deit_tiny_..." */
    if (strchr(name, '/') || strstr(name, ".safetensors"))
        return lpv_fail(err, LPV_E_IO, "model file '%s' does not exist", model);
    LPV_TRY(lpv_registry_find(name, &out->preset, err));
    out->has_preset = 1;
    if (weights) {
        if (!lpv_file_exists(weights) && !lpv_is_dir(weights))
            return lpv_fail_param(err, LPV_E_IO, "weights", "'%s' %s", weights,
                                  access(weights, F_OK) == 0 ? "is not a regular file" : "does not exist");
        snprintf(out->path, sizeof out->path, "%s", weights);
        return LPV_OK;
    }
    /* where users keep weights: $LPVIT_MODELS, models/, then the Hugging Face cache (timm's file, or the
     * transformers folder of the preset's hf_repo) */
    char tried[4][PATH_MAX + 160], repo[256];
    int nt = 0;
    const char *env = getenv("LPVIT_MODELS");
    if (env && env[0]) snprintf(tried[nt++], sizeof tried[0], "%s/%s", env, out->preset.file);
    snprintf(tried[nt++], sizeof tried[0], "%s/%s", lpv_models_dir(), out->preset.file);
    snprintf(repo, sizeof repo, "timm/%s%s%s", out->preset.timm_name, out->preset.tag[0] ? "." : "", out->preset.tag);
    hf_snapshot(tried[nt++], sizeof tried[0], repo, "model.safetensors");
    if (out->preset.hf_repo[0]) hf_snapshot(tried[nt++], sizeof tried[0], out->preset.hf_repo, "");
    for (int i = 0; i < nt; i++) {
        int ok = i >= 2 && tried[i][strlen(tried[i]) - 1] == '/' ? lpv_is_dir(tried[i]) : lpv_file_exists(tried[i]);
        if (!ok) continue;
        size_t len = strlen(tried[i]);
        if (len >= sizeof out->path) return lpv_fail(err, LPV_E_IO, "weights path '%s' is too long", tried[i]);
        memcpy(out->path, tried[i], len + 1);
        return LPV_OK;
    }
    char where[4 * (PATH_MAX + 170)];
    size_t k = 0;
    for (int i = 0; i < nt && k < sizeof where; i++)
        k += (size_t)snprintf(where + k, sizeof where - k, "%s'%s'", i ? ", " : "", tried[i]);
    return lpv_fail_hint(err, LPV_E_IO, "weights", "weights for '%s' not found (looked in %s): run scripts/download-model.sh %s",
                         model, where, out->preset.key);
}

lpv_status lpv_preset_check(const lpv_preset *p, const lpv_config *c, const char *path, lpv_err *err) {
    int dist = c->n_outputs == 2;
    if (p->dim != c->dim || p->depth != c->depth || p->heads != c->heads || p->mlp != c->mlp ||
        p->classes != c->classes || p->distilled != dist || p->patch != c->patch || p->img != c->img)
        return lpv_fail(err, LPV_E_SHAPE,
                        "'%s' does not match preset '%s': file has width %d, depth %d, %d heads, mlp %d, %d classes%s; "
                        "preset expects %d, %d, %d, %d, %d%s",
                        path, p->key, c->dim, c->depth, c->heads, c->mlp, c->classes, dist ? ", distilled" : "", p->dim,
                        p->depth, p->heads, p->mlp, p->classes, p->distilled ? ", distilled" : "");
    return LPV_OK;
}

void lpv_preset_preproc(const lpv_preset *p, lpv_preproc *pp) {
    pp->crop_pct = p->crop_pct;
    pp->interp = p->interp;
    memcpy(pp->mean, p->mean, sizeof pp->mean);
    memcpy(pp->std, p->std, sizeof pp->std);
}

void lpv_preset_config(const lpv_preset *p, lpv_config *c) {
    memset(c, 0, sizeof *c);
    c->dim = p->dim, c->depth = p->depth, c->heads = p->heads, c->mlp = p->mlp, c->patch = p->patch;
    c->img = p->img, c->chans = 3, c->classes = p->classes;
    c->n_prefix = p->distilled ? 2 : 1, c->n_outputs = p->distilled ? 2 : 1;
    int g = p->patch > 0 ? p->img / p->patch : 0;
    c->n_tokens = c->n_prefix + g * g;
    c->ln_eps = 1e-6f;
    c->names = LPV_NAMES_TIMM;
}
