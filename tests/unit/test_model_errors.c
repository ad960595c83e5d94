/*
 * test_model_errors.c — the loader names the missing, mis-shaped, wrongly
 * typed or unexpected tensor (and the expected shape) instead of crashing,
 * random models save and load back bit-exactly, and the layer table lists
 * every linear layer with its token count.
 */
#include <unistd.h>

#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

static char dir[] = "/tmp/lpvit_model_XXXXXX";

static lpv_config tiny_cfg(int distilled) {
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 32, c.depth = 2, c.heads = 2, c.mlp = 64, c.patch = 16, c.img = 32, c.chans = 3, c.classes = 10;
    c.n_prefix = distilled ? 2 : 1, c.n_outputs = distilled ? 2 : 1;
    return c;
}

/* Copies src to dst, dropping `drop`, replacing `reshape` by a tensor of `shape`, adding `extra`. */
static void rewrite(const char *src, const char *dst, const char *drop, const char *reshape, int ndim,
                    const int64_t *shape, lpv_dtype dtype, const char *extra) {
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_open(&f, src, &err), &err);
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    static float big[1 << 16];
    for (int i = 0; i < f.n; i++) {
        const lpv_st_tensor *t = &f.t[i];
        if (drop && strcmp(t->name, drop) == 0) continue;
        if (reshape && strcmp(t->name, reshape) == 0)
            CHECK_OK(lpv_st_writer_add(&w, t->name, dtype, ndim, shape, big, &err), &err);
        else CHECK_OK(lpv_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), &err);
    }
    if (extra) CHECK_OK(lpv_st_writer_add(&w, extra, LPV_DT_F32, 1, (int64_t[]){4}, big, &err), &err);
    CHECK_OK(lpv_st_write(&w, dst, &err), &err);
    lpv_st_writer_free(&w);
    lpv_st_close(&f);
}

static void test_roundtrip(const char *good, int distilled) {
    lpv_config c = tiny_cfg(distilled);
    lpv_model *m, *m2 = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 7, &err), &err);
    CHECK_OK(lpv_model_save(m, good, NULL, &err), &err);
    lpv_model_opts o = {2, 0, 0};
    CHECK_OK(lpv_model_load(&m2, good, &o, &err), &err);
    if (!m2) return;
    CHECK(m2->cfg.n_tokens == (distilled ? 6 : 5) && m2->cfg.img == 32 && m2->cfg.heads == 2);
    CHECK(m2->cfg.n_outputs == (distilled ? 2 : 1));
    float x[2 * 3 * 32 * 32], l1[20], l2[20];
    for (int i = 0; i < 2 * 3 * 32 * 32; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    lpv_workspace ws;
    CHECK(lpv_workspace_init(&ws, &c, 2, &err) == LPV_E_ARG); /* c lacks n_tokens */
    CHECK_OK(lpv_workspace_init(&ws, &m->cfg, 2, &err), &err);
    CHECK_OK(lpv_forward(m, &ws, x, 2, l1, &err), &err);
    CHECK_OK(lpv_forward(m2, &ws, x, 2, l2, &err), &err);
    CHECK(memcmp(l1, l2, sizeof l1) == 0);
    float mx = 0;
    for (int i = 0; i < 20; i++) mx = fabsf(l1[i]) > mx ? fabsf(l1[i]) : mx;
    CHECK(mx > 0 && isfinite(mx));
    /* a batch larger than the workspace is refused */
    CHECK(lpv_forward(m, &ws, x, 3, l1, &err) == LPV_E_ARG);
    lpv_workspace_free(&ws);
    /* refuses to overwrite its own input */
    CHECK(lpv_model_save(m2, good, NULL, &err) == LPV_E_ARG);
    lpv_layer_ref refs[16];
    int n = lpv_model_layers(m2, refs, 16);
    CHECK(n == 1 + 4 * 2 + (distilled ? 2 : 1));
    CHECK(strcmp(refs[0].name, "patch_embed.proj") == 0 && refs[0].tokens == 4);
    CHECK(strcmp(refs[1].name, "blocks.0.attn.qkv") == 0 && refs[1].tokens == m2->cfg.n_tokens);
    CHECK(refs[1].lin->out == 96 && refs[1].lin->in == 32);
    CHECK(strcmp(refs[8].name, "blocks.1.mlp.fc2") == 0 && refs[8].lin->in == 64);
    CHECK(strcmp(refs[9].name, "head") == 0 && refs[9].tokens == 1);
    CHECK(lpv_model_layer(m2, "blocks.1.attn.proj") == &m2->blocks[1].proj);
    CHECK(lpv_model_layer(m2, "blocks.9.attn.proj") == NULL);
    lpv_model_free(m);
    lpv_model_free(m2);
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    char good[256], bad[256], goodd[256];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(goodd, sizeof goodd, "%s/good_dist.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    lpv_threads_set(2);
    test_roundtrip(good, 0);
    test_roundtrip(goodd, 1);

    rewrite(good, bad, "blocks.1.mlp.fc2.bias", NULL, 0, NULL, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "missing tensor 'blocks.1.mlp.fc2.bias' (expected shape [32])", "missing");
    rewrite(good, bad, NULL, "blocks.1.mlp.fc1.weight", 2, (int64_t[]){65, 32}, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "tensor 'blocks.1.mlp.fc1.weight' has shape [65, 32], expected [64, 32]", "misshaped");
    rewrite(good, bad, NULL, "blocks.0.attn.proj.weight", 2, (int64_t[]){32, 32}, LPV_DT_I32, NULL);
    test_expect_load_error(bad, "dtype I32", "int weight");
    rewrite(good, bad, NULL, NULL, 0, NULL, LPV_DT_F32, "blocks.0.attn.extra");
    test_expect_load_error(bad, "unexpected tensor 'blocks.0.attn.extra'", "extra");
    rewrite(good, bad, "cls_token", NULL, 0, NULL, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "not a DeiT/ViT checkpoint", "no cls");
    rewrite(good, bad, NULL, "pos_embed", 3, (int64_t[]){1, 7, 32}, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "not a square grid", "pos grid");
    rewrite(goodd, bad, "head_dist.weight", NULL, 0, NULL, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "missing tensor 'head_dist.weight' (expected shape [10, 32])", "half a distillation head");
    rewrite(good, bad, "head.weight", NULL, 0, NULL, LPV_DT_F32, NULL);
    test_expect_load_error(bad, "missing tensor 'head.weight'", "no head");
    /* width 32 has no default head count: without config.json or --heads it must say so */
    lpv_model *m = NULL;
    lpv_err err;
    /* heads come from the file's lpvit.arch metadata; without it, width 32 needs --heads */
    CHECK_OK(lpv_model_load(&m, good, NULL, &err), &err);
    CHECK(m && m->cfg.heads == 2);
    if (m) lpv_model_free(m);
    rewrite(good, bad, NULL, NULL, 0, NULL, LPV_DT_F32, NULL); /* the rewrite drops metadata */
    /* the library names the option that fixes it, never a CLI flag (the CLI adds "(see --heads)") */
    CHECK(lpv_model_load(&m, bad, NULL, &err) == LPV_E_ARG && strstr(err.msg, "cannot tell the number of attention heads") &&
          strcmp(err.param, "heads") == 0 && !strstr(err.msg, "--"));
    lpv_model_opts o = {5, 0, 0};
    CHECK(lpv_model_load(&m, good, &o, &err) == LPV_E_ARG && strstr(err.msg, "not divisible by 5 heads"));
    /* extra tensors are accepted with allow_extra */
    rewrite(good, bad, NULL, NULL, 0, NULL, LPV_DT_F32, "something.else");
    lpv_model_opts ox = {2, 0, 1};
    CHECK_OK(lpv_model_load(&m, bad, &ox, &err), &err);
    if (m) lpv_model_free(m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_model_errors");
}
