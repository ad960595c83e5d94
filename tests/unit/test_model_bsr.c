/*
 * test_model_bsr.c — pruned models: a model with BSR layers computes the same
 * logits as its dense-masked twin, survives a save/load round trip in the BSR
 * file format (<name>.bsr_values / .bsr_col_indices / .bsr_row_ptr) and as a
 * dense-masked export and as BF16, and corrupt BSR tensors are rejected with
 * messages naming the tensor.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "lpvit/bsr.h"
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/model.h"
#include "lpvit/rng.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

/* DeiT-like, 64 wide, 2 blocks, 32 x 32 images, 40 classes */
static lpv_model *tiny(uint64_t seed, int distilled) { return test_random_model(64, 2, 2, 128, 32, 40, distilled, seed); }

static char dir[] = "/tmp/lpvit_bsrm_XXXXXX";

/* Prunes every linear layer at ~50% with random R x C masks (head included: 40 rows -> partial block rows). */
static void prune_random(lpv_model *m, int R, int C, uint64_t seed) {
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    lpv_rng r;
    lpv_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        lpv_linear *L = refs[i].lin;
        int nbr = (L->out + R - 1) / R, nbc = (L->in + C - 1) / C;
        uint8_t *mask = malloc((size_t)nbr * nbc);
        for (int k = 0; k < nbr * nbc; k++) mask[k] = lpv_rng_uniform(&r) < 0.5;
        if (i == 1) memset(mask, 0, (size_t)nbc); /* one empty block row */
        lpv_err err;
        CHECK_OK(lpv_model_sparsify(m, L, R, C, mask, refs[i].name, &err), &err);
        free(mask);
    }
}

/* lpv_model_sparsity: a dense model keeps everything and its MACs are lpv_model_macs'; a pruned one keeps its
 * layers' block fractions, weighted by shape (weights) and by shape x tokens (MACs). */
static void test_sparsity(void) {
    lpv_model *m = tiny(4, 1);
    lpv_sparsity s;
    lpv_model_sparsity(m, &s);
    lpv_macs mc = lpv_model_macs(&m->cfg);
    CHECK(s.pruned == 0 && s.layers == 1 + 4 * 2 + 2);
    CHECK(s.weights_kept == s.weights_dense && s.linear_macs_kept == s.linear_macs_dense);
    CHECKF(fabs(s.linear_macs_dense - mc.linear_macs) < 1e-6 * mc.linear_macs, "%g vs %g", s.linear_macs_dense,
           mc.linear_macs);
    CHECK(fabs(s.model_macs_dense - (mc.linear_macs + mc.attention_macs)) < 1e-6 * s.model_macs_dense);
    prune_random(m, 16, 16, 12);
    lpv_model_sparsity(m, &s);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    double w = 0, macs = 0;
    for (int i = 0; i < n; i++) {
        double sz = (double)refs[i].lin->out * refs[i].lin->in * lpv_linear_density(refs[i].lin);
        w += sz, macs += sz * refs[i].tokens;
    }
    CHECK(s.pruned == n);
    CHECK(fabs(s.weights_kept - w) < 1e-6 * w && fabs(s.linear_macs_kept - macs) < 1e-6 * macs);
    CHECK(fabs(s.weights_kept / s.weights_dense - lpv_model_linear_density(m)) < 1e-12);
    CHECK(s.model_macs_kept - s.linear_macs_kept == s.model_macs_dense - s.linear_macs_dense); /* attention stays */
    lpv_model_free(m);
}

static void test_roundtrip(int R, int C, int distilled) {
    lpv_model *m = tiny(3, distilled);
    prune_random(m, R, C, 11);
    double d = lpv_model_linear_density(m);
    CHECKF(d > 0.35 && d < 0.65, "density %g", d);
    int B = 3, S = 32;
    float *x = malloc(sizeof(float) * (size_t)B * 3 * S * S), l_bsr[3 * 40], l_file[3 * 40], l_dense[3 * 40],
          l_export[3 * 40];
    lpv_rng r;
    lpv_rng_seed(&r, 5);
    for (int i = 0; i < B * 3 * S * S; i++) x[i] = (float)lpv_rng_normal(&r);
    test_logits(m, x, B, l_bsr);

    char p_bsr[128], p_dense[128];
    snprintf(p_bsr, sizeof p_bsr, "%s/pruned.safetensors", dir);
    snprintf(p_dense, sizeof p_dense, "%s/masked.safetensors", dir);
    lpv_err err;
    lpv_save_opts so = {0, 1, {"lpvit"}, {"{\"format\": \"lpvit-bsr-v1\"}"}, 0};
    CHECK_OK(lpv_model_save(m, p_bsr, &so, &err), &err);
    lpv_save_opts sd = {1, 0, {0}, {0}, 0};
    CHECK_OK(lpv_model_save(m, p_dense, &sd, &err), &err);

    lpv_model *mf = NULL, *md = NULL;
    CHECK_OK(lpv_model_load(&mf, p_bsr, NULL, &err), &err);
    CHECK_OK(lpv_model_load(&md, p_dense, NULL, &err), &err);
    if (!mf || !md) return;
    CHECK(mf->lpvit_meta && strstr(mf->lpvit_meta, "lpvit-bsr-v1"));
    CHECK(mf->blocks[1].fc2.bsr && !mf->blocks[1].fc2.w && md->blocks[1].fc2.w && !md->blocks[1].fc2.bsr);
    CHECK(fabs(lpv_model_linear_density(mf) - d) < 1e-12);
    test_logits(mf, x, B, l_file);
    test_logits(md, x, B, l_dense);
    CHECK(memcmp(l_file, l_bsr, sizeof l_bsr) == 0);
    test_diff df = test_compare(l_dense, l_bsr, (size_t)B * 40, 1e-3);
    CHECKF(df.max_rel < 1e-4, "R%d C%d: dense-masked vs bsr rel err %g", R, C, df.max_rel);
    /* densify in memory gives the dense-masked weights */
    CHECK_OK(lpv_model_densify(mf, &err), &err);
    test_logits(mf, x, B, l_export);
    CHECK(memcmp(l_export, l_dense, sizeof l_dense) == 0);
    lpv_model_free(m), lpv_model_free(mf), lpv_model_free(md);
    free(x);
}

/* Every float the model holds, in save order of its layers' parts we can reach: tokens, biases, norms and each
 * linear's dense or BSR values. For comparing two models tensor by tensor. */
static void floats_of(const lpv_model *m, const float **p, size_t *n, int *k) {
    const lpv_config *c = &m->cfg;
    *k = 0;
#define PUT(ptr, len) (p[*k] = (ptr), n[*k] = (size_t)(len), (*k)++)
    PUT(m->cls, c->dim), PUT(m->pos, (size_t)c->n_tokens * c->dim), PUT(m->norm_w, c->dim), PUT(m->norm_b, c->dim);
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int nl = lpv_model_layers((lpv_model *)m, refs, LPV_MAX_LAYERS);
    for (int i = 0; i < nl; i++) {
        const lpv_linear *L = refs[i].lin;
        if (L->bsr) PUT(L->bsr->values, (size_t)L->bsr->nnzb * L->bsr->R * L->bsr->C);
        else PUT(L->w, (size_t)L->out * L->in);
        PUT(L->b, L->out);
    }
    for (int l = 0; l < c->depth; l++) PUT(m->blocks[l].ln1_w, c->dim), PUT(m->blocks[l].ln2_b, c->dim);
#undef PUT
}

/* export --dtype bf16: every float tensor written as BF16 (nearest, ties to even), pruned layers still BSR; the
 * file loads back to exactly the rounded values, is about half the size, and its logits stay near the FP32
 * model's. A model with int8 layers is refused unless dense_masked decodes them. */
static void test_bf16_save(void) {
    lpv_model *m = tiny(6, 1);
    prune_random(m, 16, 16, 3);
    char p32[128], p16[128], pq[128];
    snprintf(p32, sizeof p32, "%s/f32.safetensors", dir);
    snprintf(p16, sizeof p16, "%s/bf16.safetensors", dir);
    snprintf(pq, sizeof pq, "%s/q8bf16.safetensors", dir);
    lpv_err err;
    lpv_save_opts s32 = {0, 0, {0}, {0}, 0}, s16 = {0, 0, {0}, {0}, 1};
    CHECK_OK(lpv_model_save(m, p32, &s32, &err), &err);
    CHECK_OK(lpv_model_save(m, p16, &s16, &err), &err);
    lpv_st_file f;
    CHECK_OK(lpv_st_open(&f, p16, &err), &err);
    int nf = 0, nbf = 0;
    for (int i = 0; i < f.n; i++) nf += f.t[i].dtype == LPV_DT_F32, nbf += f.t[i].dtype == LPV_DT_BF16;
    CHECKF(nf == 0 && nbf > 20, "%d F32, %d BF16 tensors", nf, nbf);
    CHECK(lpv_st_find(&f, "blocks.1.mlp.fc2.weight.bsr_values") && lpv_st_find(&f, "blocks.1.mlp.fc2.weight.bsr_values")->dtype == LPV_DT_BF16);
    lpv_st_close(&f);
    struct stat a32, a16;
    CHECK(stat(p32, &a32) == 0 && stat(p16, &a16) == 0);
    long z32 = (long)a32.st_size, z16 = (long)a16.st_size;
    CHECKF(z16 < 0.56 * z32 && z16 > 0.44 * z32, "bf16 file %ld bytes vs f32 %ld", z16, z32);

    lpv_model *mb = NULL;
    CHECK_OK(lpv_model_load(&mb, p16, NULL, &err), &err);
    if (!mb) return;
    const float *pa[256], *pb[256];
    size_t na[256], nb[256];
    int ka, kb;
    floats_of(m, pa, na, &ka);
    floats_of(mb, pb, nb, &kb);
    CHECK(ka == kb);
    size_t bad = 0, total = 0;
    for (int t = 0; t < ka && t < kb; t++) {
        CHECK(na[t] == nb[t]);
        for (size_t i = 0; i < na[t] && i < nb[t]; i++, total++)
            bad += lpv_bf16_to_f32(lpv_bf16_from_f32(pa[t][i])) != pb[t][i];
    }
    CHECKF(bad == 0 && total > 10000, "%zu of %zu values not the BF16 rounding of the FP32 model's", bad, total);
    CHECK(fabs(lpv_model_linear_density(mb) - lpv_model_linear_density(m)) < 1e-12);
    int B = 2, S = 32;
    float x[2 * 3 * 32 * 32], l32[2 * 40], l16[2 * 40];
    lpv_rng r;
    lpv_rng_seed(&r, 8);
    for (int i = 0; i < B * 3 * S * S; i++) x[i] = (float)lpv_rng_normal(&r);
    test_logits(m, x, B, l32);
    test_logits(mb, x, B, l16);
    test_diff df = test_compare(l16, l32, (size_t)B * 40, 1e-3);
    double top = 0;
    for (int i = 0; i < B * 40; i++) top = fmax(top, fabs(l32[i]));
    /* BF16 keeps 8 bits of mantissa: every weight within 2^-9 relative, the logits within a few of those */
    CHECKF(df.max_abs < 0.02 * top && df.max_abs > 0, "bf16 file logits vs fp32: max abs %g of max |logit| %g", df.max_abs,
           top);

    /* int8 layers: refused as they are, written decoded with dense_masked */
    CHECK_OK(lpv_model_quantize_int8(m, 16, 16, &err), &err);
    lpv_save_opts sq = {0, 0, {0}, {0}, 1}, sqd = {1, 0, {0}, {0}, 1};
    CHECK(lpv_model_save(m, pq, &sq, &err) == LPV_E_ARG && strstr(err.msg, "int8"));
    CHECK(access(pq, F_OK) != 0);
    CHECK_OK(lpv_model_save(m, pq, &sqd, &err), &err);
    lpv_model_free(m), lpv_model_free(mb);
}

static void test_corrupt_files(void) {
    lpv_model *m = tiny(4, 0);
    lpv_linear *L = &m->blocks[0].fc1; /* (128, 64) at 32x32: 4 x 2 blocks */
    uint8_t mask[8] = {1, 0, 1, 1, 0, 0, 1, 0};
    lpv_err err;
    CHECK_OK(lpv_model_sparsify(m, L, 32, 32, mask, "blocks.0.mlp.fc1.weight", &err), &err);
    char good[128], bad[128];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    CHECK_OK(lpv_model_save(m, good, NULL, &err), &err);
    const char *rp = "blocks.0.mlp.fc1.weight.bsr_row_ptr", *cp = "blocks.0.mlp.fc1.weight.bsr_col_indices";
    int32_t rows_bad[5] = {0, 1, 3, 2, 4}; /* not monotone */
    test_st_rewrite(good, bad, rp, LPV_DT_I32, 1, (int64_t[]){5}, rows_bad, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "row_ptr not monotone");
    int32_t rows_short[4] = {0, 1, 3, 4};
    test_st_rewrite(good, bad, rp, LPV_DT_I32, 1, (int64_t[]){4}, rows_short, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "row_ptr short");
    int32_t cols_oob[4] = {0, 0, 5, 0}; /* block column 5 of 2 */
    test_st_rewrite(good, bad, cp, LPV_DT_I32, 1, (int64_t[]){4}, cols_oob, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "column out of range");
    int32_t cols_dup[4] = {0, 0, 0, 0}; /* row 1 has blocks 0, 1 -> make it 0, 0 */
    test_st_rewrite(good, bad, cp, LPV_DT_I32, 1, (int64_t[]){4}, cols_dup, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "unsorted columns");
    static float vals[4 * 32 * 32];
    test_st_rewrite(good, bad, "blocks.0.mlp.fc1.weight.bsr_values", LPV_DT_F32, 3, (int64_t[]){4, 24, 32}, vals, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "block rows 24");
    test_st_rewrite(good, bad, "blocks.0.mlp.fc1.weight.bsr_values", LPV_DT_F32, 3, (int64_t[]){3, 32, 32}, vals, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight", "values count");
    test_st_rewrite(good, bad, cp, LPV_DT_F32, 0, NULL, NULL, NULL, 0, 0, NULL); /* dropped */
    test_expect_load_error(bad, "needs all of", "missing col indices");
    int64_t cols64[4] = {0, 0, 1, 0};
    test_st_rewrite(good, bad, cp, LPV_DT_F32, 1, (int64_t[]){4}, cols64, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "expected I32", "float indices");
    lpv_model_free(m);
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    lpv_threads_set(2);
    test_sparsity();
    test_bf16_save();
    test_roundtrip(16, 16, 0);
    test_roundtrip(32, 16, 1);
    test_roundtrip(8, 64, 0);
    test_corrupt_files();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_model_bsr");
}
