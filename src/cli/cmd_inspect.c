/* cmd_inspect.c — `lpvit inspect FILE`: tensors, metadata and (for models) the architecture. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "lpvit/bsr.h"
#include "lpvit/linear.h"
#include "lpvit/log.h"
#include "lpvit/codebook.h"
#include "lpvit/model.h"
#include "lpvit/report.h"
#include "lpvit/safetensors.h"

/* Natural order: "blocks.2" before "blocks.10", as a person reads them. */
static int natcmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la])) la++;
            while (isdigit((unsigned char)b[lb])) lb++;
            if (la != lb) return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c) return c;
            a += la, b += lb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++, b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

static const lpv_st_file *g_sort_file; /* qsort has no context argument */

static int by_natural_name(const void *x, const void *y) {
    return natcmp(g_sort_file->t[*(const int *)x].name, g_sort_file->t[*(const int *)y].name);
}

/* A metadata value whole: JSON objects (lpvit's settings) indented, other values as they are. */
static void print_meta(const char *key, const char *value) {
    cJSON *j = value[0] == '{' ? cJSON_Parse(value) : NULL;
    char *txt = j ? cJSON_Print(j) : NULL;
    printf("metadata %s = %s\n", key, txt ? txt : value);
    free(txt);
    cJSON_Delete(j);
}

/* The block-sparse layers: shape, block, blocks kept, density; one line each. */
static void print_density_table(lpv_model *m) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    printf("%-22s %-10s %-6s %13s %8s\n", "layer", "shape", "block", "blocks kept", "density");
    for (int i = 0; i < n; i++) {
        const lpv_linear *L = refs[i].lin;
        char shape[32], blk[16], kept[32];
        snprintf(shape, sizeof shape, "%dx%d", L->out, L->in);
        if (L->bsr) {
            snprintf(blk, sizeof blk, "%dx%d", L->bsr->R, L->bsr->C);
            snprintf(kept, sizeof kept, "%lld/%lld", (long long)L->bsr->nnzb, (long long)L->bsr->nbr * L->bsr->nbc);
        } else {
            snprintf(blk, sizeof blk, "dense");
            snprintf(kept, sizeof kept, "all");
        }
        printf("%-22s %-10s %-6s %13s %8.3f\n", refs[i].name, shape, blk, kept, lpv_linear_density(L));
    }
}

int cmd_inspect(int argc, char **argv) {
    const char *json = NULL;
    int quiet = 0;
    const cli_opt opts[] = {
        {"--json", OPT_OUT, &json, "FILE", "write the listing as JSON ('-' for stdout)", 0, 0, NULL},
        CLI_OPT_QUIET(&quiet),
        {0},
    };
    const cli_spec spec = {"lpvit inspect FILE.safetensors [--json FILE]",
                           "Validates a safetensors file and lists its tensors and metadata; for a DeiT/ViT checkpoint "
                           "(timm or Hugging Face names) also the architecture lpvit reads from it.",
                           opts, 1, 1, 1};
    char *pos[1];
    int npos, rc = cli_parse(argc, argv, &spec, pos, &npos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    cli_quiet(quiet);
    lpv_err err;
    lpv_st_file f;
    lpv_status st = lpv_st_open(&f, pos[0], &err);
    if (st) return cli_fail(&err, st);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "file", pos[0]);
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    uint64_t bytes = 0;
    int *order = malloc(sizeof(int) * (size_t)(f.n ? f.n : 1));
    if (!order) {
        lpv_st_close(&f);
        cJSON_Delete(root);
        return cli_fail(&(lpv_err){"out of memory", ""}, LPV_E_OOM);
    }
    for (int i = 0; i < f.n; i++) order[i] = i;
    g_sort_file = &f;
    qsort(order, (size_t)f.n, sizeof *order, by_natural_name);
    for (int k = 0; k < f.n; k++) {
        const lpv_st_tensor *t = &f.t[order[k]];
        char sb[160];
        lpv_shape_str(sb, sizeof sb, t->ndim, t->shape);
        if (!json) printf("%-60s %-5s %s\n", t->name, lpv_dtype_name(t->dtype), sb);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "dtype", lpv_dtype_name(t->dtype));
        cJSON_AddRawToObject(o, "shape", sb);
        cJSON_AddItemToArray(ts, o);
        bytes += t->end - t->begin;
    }
    free(order);
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    for (int i = 0; i < f.n_meta; i++) {
        cJSON_AddStringToObject(meta, f.meta[i].key, f.meta[i].value);
        if (!json) print_meta(f.meta[i].key, f.meta[i].value);
    }
    if (!json) printf("%d tensors, %llu bytes of data, header %llu bytes\n", f.n, (unsigned long long)bytes,
                      (unsigned long long)f.header_len);
    const char *codes = lpv_st_meta(&f, LPV_CODES_META);
    int packed4 = codes && strcmp(codes, "4bit") == 0; /* codebooks of <= 16 levels stored as 4-bit codes */
    lpv_st_close(&f);
    lpv_model *m = NULL;
    lpv_model_opts mo = {0, 0, 1};
    if (lpv_model_load(&m, pos[0], &mo, &err) == LPV_OK) {
        const lpv_config *c = &m->cfg;
        cJSON *a = cJSON_AddObjectToObject(root, "architecture");
        cJSON_AddStringToObject(a, "arch", m->arch);
        cJSON_AddStringToObject(a, "names", lpv_names_str(c->names));
        cJSON_AddNumberToObject(a, "dim", c->dim);
        cJSON_AddNumberToObject(a, "depth", c->depth);
        cJSON_AddNumberToObject(a, "heads", c->heads);
        cJSON_AddNumberToObject(a, "mlp", c->mlp);
        cJSON_AddNumberToObject(a, "tokens", c->n_tokens);
        cJSON_AddNumberToObject(a, "classes", c->classes);
        cJSON_AddBoolToObject(a, "distilled", c->n_outputs == 2);
        cJSON_AddNumberToObject(a, "params", (double)lpv_model_params(m));
        if (!json)
            printf("architecture: %s (%s names), width %d, depth %d, %d heads, mlp %d, %d tokens, %d classes%s, %.2fM "
                   "params\n",
                   m->arch, lpv_names_str(c->names), c->dim, c->depth, c->heads, c->mlp, c->n_tokens, c->classes,
                   c->n_outputs == 2 ? ", distilled" : "", (double)lpv_model_params(m) / 1e6);
        cJSON_AddItemToObject(a, "sparsity", cli_sparsity_json(m));
        char sp[256];
        cli_sparsity_line(m, sp, sizeof sp);
        if (!json && sp[0]) {
            printf("pruned: %s\n", sp);
            print_density_table(m);
        }
        /* what runs in int8: the layers with int8 weights, and how their inputs are quantized */
        lpv_layer_ref refs[LPV_MAX_LAYERS];
        int nl = lpv_model_layers(m, refs, LPV_MAX_LAYERS), n8, per_tensor;
        lpv_model_int8_counts(m, &n8, &per_tensor);
        cJSON_AddStringToObject(a, "precision", n8 ? "int8" : "fp32");
        if (n8) {
            cJSON *q = cJSON_AddObjectToObject(a, "int8");
            cJSON_AddNumberToObject(q, "layers", n8);
            cJSON_AddNumberToObject(q, "inputs_per_tensor", per_tensor);
            cJSON_AddNumberToObject(q, "inputs_per_token", n8 - per_tensor);
            if (!json)
                printf("int8: %d of %d linears (weights per output row; inputs: %d per token at run time, %d with a "
                       "calibrated per-tensor scale); the rest FP32\n",
                       n8, nl, n8 - per_tensor, per_tensor);
        }
        /* the layers stored as codes of a shared codebook (decoded to FP32 when loaded) */
        int ncb = 0, kmin = 0, kmax = 0, n4 = 0;
        for (int i = 0; i < nl; i++) {
            int k = refs[i].lin->codebook ? refs[i].lin->codebook_k : 0;
            if (!k) continue;
            kmin = ncb ? (k < kmin ? k : kmin) : k, kmax = k > kmax ? k : kmax, ncb++;
            n4 += packed4 && k <= LPV_CODEBOOK_PACK4_MAX;
        }
        if (ncb) {
            cJSON *q = cJSON_AddObjectToObject(a, "codebook");
            cJSON_AddNumberToObject(q, "layers", ncb);
            cJSON_AddNumberToObject(q, "levels_min", kmin);
            cJSON_AddNumberToObject(q, "levels_max", kmax);
            cJSON_AddNumberToObject(q, "layers_4bit", n4);
            if (!json)
                printf("codebook: %d of %d linears as codes of %d-%d levels shared per layer (%d of them 4-bit, the rest "
                       "a byte per weight; run in FP32)\n",
                       ncb, nl, kmin, kmax, n4);
        }
        lpv_model_free(m);
    } else if (!json && !quiet) {
        printf("not loadable as a DeiT/ViT model: %s\n", err.msg);
    }
    if (json && (st = cli_json_out(root, json, &err)) != LPV_OK) {
        cJSON_Delete(root);
        return cli_fail(&err, st);
    }
    cJSON_Delete(root);
    return 0;
}
