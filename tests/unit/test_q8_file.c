/*
 * test_q8_file.c — int8 models in files: a quantized model (dense, and pruned BSR) saves and loads back
 * with the same int8 weights, scales and input settings and the same logits, per token and per tensor;
 * its --dense-masked export is its dequantized FP32 weights; and every broken quantization tensor (missing
 * or mis-shaped scales, a scale of 0 / NaN / Inf / negative, a zero point out of range, half an input pair,
 * scales beside an FP32 weight) is refused with a message naming the tensor.
 */
#include <unistd.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/linear.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

static char dir[] = "/tmp/lpvit_q8file_XXXXXX";

static lpv_config tiny_cfg(void) {
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 64, c.depth = 2, c.heads = 2, c.mlp = 128, c.patch = 16, c.img = 32, c.chans = 3, c.classes = 10;
    c.n_prefix = 1, c.n_outputs = 1;
    return c;
}

/* unfused: fc2's quantizer finds its input's range itself instead of taking fc1's record of it */
static void logits_as(const lpv_model *m, float *out, int unfused) {
    lpv_err err;
    float x[2 * 3 * 32 * 32];
    for (int i = 0; i < 2 * 3 * 32 * 32; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    lpv_workspace ws;
    CHECK_OK(lpv_workspace_init_for(&ws, m, 2, &err), &err);
    ws.q8_unfused = unfused;
    CHECK_OK(lpv_forward(m, &ws, x, 2, out, &err), &err);
    lpv_workspace_free(&ws);
}

static void logits(const lpv_model *m, float *out) { logits_as(m, out, 0); }

static lpv_model *load(const char *path) {
    lpv_model *m = NULL;
    lpv_err err;
    lpv_model_opts o = {2, 0, 0};
    CHECK_OK(lpv_model_load(&m, path, &o, &err), &err);
    return m;
}

/* Same int8 weights, scales and input settings in every linear of a and b. */
static void same_int8(lpv_model *a, lpv_model *b) {
    lpv_layer_ref ra[LPV_MAX_LAYERS], rb[LPV_MAX_LAYERS];
    int n = lpv_model_layers(a, ra, LPV_MAX_LAYERS);
    CHECK(lpv_model_layers(b, rb, LPV_MAX_LAYERS) == n);
    int n8 = 0;
    for (int i = 0; i < n; i++) {
        const lpv_linear *x = ra[i].lin, *y = rb[i].lin;
        CHECKF(lpv_linear_has_int8(x) == lpv_linear_has_int8(y), "%s: int8 %d vs %d", ra[i].name,
               lpv_linear_has_int8(x), lpv_linear_has_int8(y));
        if (!lpv_linear_has_int8(x) || !lpv_linear_has_int8(y)) continue;
        n8++;
        const lpv_bsr *p = lpv_linear_int8_weights(x), *q = lpv_linear_int8_weights(y);
        float *dp = malloc(sizeof(float) * p->rows * p->cols), *dq = malloc(sizeof(float) * p->rows * p->cols);
        lpv_bsr_to_dense(p, dp), lpv_bsr_to_dense(q, dq);
        CHECKF(memcmp(dp, dq, sizeof(float) * p->rows * p->cols) == 0, "%s: dequantized weights differ", ra[i].name);
        CHECKF(memcmp(p->qscale, q->qscale, sizeof(float) * p->rows) == 0, "%s: scales differ", ra[i].name);
        CHECK(x->qx.per_token == y->qx.per_token && x->qx.scale == y->qx.scale && x->qx.zp == y->qx.zp);
        CHECK(!!x->bsr == !!y->bsr);
        free(dp), free(dq);
    }
    CHECK(n8 == 4 * a->cfg.depth);
}

static void roundtrip(const char *path, int pruned, int per_tensor) {
    lpv_config c = tiny_cfg();
    lpv_model *m;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 11, &err), &err);
    if (pruned) test_sparsify_pattern(m, 16, 7); /* every block linear 16 x 16 blocks, a third dropped */
    CHECK_OK(lpv_model_quantize_int8(m, 32, 32, &err), &err);
    if (per_tensor) m->blocks[1].fc2.qx = (lpv_qact){0, 0.02f, 9};
    CHECK(lpv_model_has_int8(m));
    CHECK_OK(lpv_model_save(m, path, NULL, &err), &err);
    lpv_model *m2 = load(path);
    if (!m2) {
        lpv_model_free(m);
        return;
    }
    same_int8(m, m2);
    float l1[20], l2[20];
    logits(m, l1), logits(m2, l2);
    CHECKF(memcmp(l1, l2, sizeof l1) == 0, "reloaded int8 model (pruned %d, per_tensor %d) gives other logits", pruned,
           per_tensor);
    logits_as(m, l2, 1);
    CHECKF(memcmp(l1, l2, sizeof l1) == 0, "fc1's recorded range changes the logits (pruned %d, per_tensor %d)", pruned,
           per_tensor);
    /* the dense-masked export is the dequantized model in FP32: an FP32 run of the original's dequantized weights */
    char dm[300];
    snprintf(dm, sizeof dm, "%s.dm.safetensors", path);
    lpv_save_opts so = {1, 0, {NULL}, {NULL}, 0};
    CHECK_OK(lpv_model_save(m, dm, &so, &err), &err);
    lpv_model *m3 = load(dm);
    if (m3) {
        CHECK(!lpv_model_has_int8(m3));
        lpv_layer_ref r1[LPV_MAX_LAYERS], r3[LPV_MAX_LAYERS];
        int n = lpv_model_layers(m, r1, LPV_MAX_LAYERS);
        lpv_model_layers(m3, r3, LPV_MAX_LAYERS);
        for (int i = 0; i < n; i++) {
            const lpv_linear *a = r1[i].lin;
            if (!lpv_linear_has_int8(a)) continue;
            const lpv_bsr *b = lpv_linear_int8_weights(a);
            float *d = malloc(sizeof(float) * b->rows * b->cols);
            lpv_bsr_to_dense(b, d);
            CHECKF(memcmp(d, r3[i].lin->w, sizeof(float) * b->rows * b->cols) == 0, "%s: export is not the dequantized weight",
                   r1[i].name);
            free(d);
        }
        lpv_model_free(m3);
    }
    lpv_model_free(m);
    lpv_model_free(m2);
}

static void bad_files(const char *good, const char *goodp, const char *fp32, const char *bad) {
    static float s128[128], one = 1.0f;
    static int32_t zp_bad = 256, zp = 3;
    for (int i = 0; i < 128; i++) s128[i] = 0.01f;
    const char *W = "blocks.0.mlp.fc1.weight_scale";
    test_st_rewrite(good, bad, W, LPV_DT_F32, 0, NULL, NULL, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.0.mlp.fc1.weight_scale' is missing", "no weight scale");
    test_st_rewrite(good, bad, W, LPV_DT_F32, 1, (int64_t[]){127}, s128, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "tensor 'blocks.0.mlp.fc1.weight_scale' has shape [127], expected [128]", "short scale");
    const float specials[4] = {0.0f, NAN, INFINITY, -1.0f};
    for (int k = 0; k < 4; k++) {
        s128[5] = specials[k];
        test_st_rewrite(good, bad, W, LPV_DT_F32, 1, (int64_t[]){128}, s128, NULL, 0, 0, NULL);
        /* NaN and infinity are refused by the reader (any float tensor), 0 and -1 by the int8 loader */
        test_expect_load_error(bad, isfinite(specials[k]) ? "weight scale of row 5" : "'blocks.0.mlp.fc1.weight_scale' has a non-finite value",
                     "bad scale value");
        s128[5] = 0.01f;
    }
    /* the pruned file: scales of a BSR int8 weight */
    test_st_rewrite(goodp, bad, "blocks.1.attn.qkv.weight_scale", LPV_DT_F32, 0, NULL, NULL, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.1.attn.qkv.weight_scale' is missing", "no bsr weight scale");
    /* inputs: half a pair, a bad zero point, a bad scale */
    test_st_rewrite(good, bad, NULL, 0, 0, NULL, NULL, "blocks.0.attn.proj.input_scale", LPV_DT_F32, 1, &one);
    test_expect_load_error(bad, "needs both 'blocks.0.attn.proj.input_scale' and 'blocks.0.attn.proj.input_zero_point'", "half pair");
    test_st_rewrite(good, bad, "blocks.1.mlp.fc2.input_zero_point", LPV_DT_I32, 1, (int64_t[]){1}, &zp_bad, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.1.mlp.fc2.input_zero_point' is 256, expected 0..255", "zero point");
    const float nan = NAN;
    test_st_rewrite(good, bad, "blocks.1.mlp.fc2.input_scale", LPV_DT_F32, 1, (int64_t[]){1}, &nan, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.1.mlp.fc2.input_scale' has a non-finite value (nan)", "input scale");
    const float neg = -0.5f;
    test_st_rewrite(good, bad, "blocks.1.mlp.fc2.input_scale", LPV_DT_F32, 1, (int64_t[]){1}, &neg, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.1.mlp.fc2.input_scale' is -0.5, expected finite and > 0", "negative input scale");
    /* scales beside an FP32 weight */
    test_st_rewrite(fp32, bad, NULL, 0, 0, NULL, NULL, "blocks.0.attn.qkv.input_zero_point", LPV_DT_I32, 1, &zp);
    test_expect_load_error(bad, "has quantization scales ('blocks.0.attn.qkv.input_zero_point') but its weight is not int8",
                 "stray scale");
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    char good[256], goodp[256], fp32[256], bad[256];
    snprintf(good, sizeof good, "%s/q8.safetensors", dir);
    snprintf(goodp, sizeof goodp, "%s/q8p.safetensors", dir);
    snprintf(fp32, sizeof fp32, "%s/fp32.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    lpv_threads_set(2);
    roundtrip(goodp, 1, 0);
    roundtrip(goodp, 1, 1);
    roundtrip(good, 0, 0);
    roundtrip(good, 0, 1); /* leaves good with a per-tensor fc2 input in block 1 */
    lpv_config c = tiny_cfg();
    lpv_model *m;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 11, &err), &err);
    CHECK_OK(lpv_model_save(m, fp32, NULL, &err), &err);
    lpv_model_free(m);
    bad_files(good, goodp, fp32, bad);
    test_model_mutations(good, bad, 1, 200);
    test_model_mutations(goodp, bad, 2, 200);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_q8_file");
}
