/*
 * test_codebook.c — per-layer shared codebooks (codebook.h):
 *   - the fast 1-D k-means (sorted values, prefix sums) gives the textbook O(n K) loop's levels, on Gaussian,
 *     heavy-tailed and few-valued data, and its levels are strictly increasing and no more than the distinct
 *     values; bad arguments are refused;
 *   - the nearest level and the encoder agree with a linear scan (ties go to the lower level);
 *   - a quantized model (dense, and pruned BSR) puts every block linear on at most K values, saves uint8 codes
 *     plus levels, and loads back with bit-identical weights and logits; its --dense-masked export is FP32;
 *   - weights changed after the fit are saved in FP32, not as wrong codes;
 *   - every broken codebook tensor (missing, empty, too long, not F32, NaN, not increasing, a code past the
 *     levels, a codebook beside an FP32 weight) is refused with a message naming the tensor, and random byte
 *     mutations of codebook files load (and run) or are refused with a message.
 */
#include <math.h>
#include <unistd.h>

#include "lpvit/codebook.h"
#include "lpvit/forward.h"
#include "lpvit/linear.h"
#include "lpvit/model.h"
#include "lpvit/safetensors.h"
#include "test.h"
#include "test_util.h"

static char dir[] = "/tmp/lpvit_codebook_XXXXXX";

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform())); }

static void test_kmeans(void) {
    enum { N = 6000 };
    static float x[N];
    const int Ks[] = {1, 2, 3, 16, 64, 256};
    for (int kind = 0; kind < 3; kind++) {
        for (int i = 0; i < N; i++)
            x[i] = kind == 0 ? 0.02f * gauss() : kind == 1 ? 0.02f * gauss() / (float)(0.05 + uniform()) : (float)(i % 5) - 2;
        for (size_t t = 0; t < sizeof Ks / sizeof *Ks; t++) {
            float a[LPV_CODEBOOK_MAX], b[LPV_CODEBOOK_MAX];
            int ka = 0, kb = 0;
            lpv_err err;
            CHECK_OK(lpv_kmeans1d(x, N, Ks[t], 100, a, &ka, &err), &err);
            CHECK_OK(lpv_kmeans1d_ref(x, N, Ks[t], 100, b, &kb, &err), &err);
            CHECKF(ka == kb, "data %d K %d: %d levels vs the reference's %d", kind, Ks[t], ka, kb);
            CHECKF(ka >= 1 && ka <= Ks[t] && (kind != 2 || ka == (Ks[t] < 5 ? Ks[t] : 5)), "data %d K %d: %d levels",
                   kind, Ks[t], ka);
            double worst = 0, scale = 0;
            for (int j = 0; j < ka && j < kb; j++) {
                worst = fmax(worst, fabs((double)a[j] - b[j]));
                scale = fmax(scale, fabs((double)b[j]));
                if (j) CHECKF(a[j] > a[j - 1], "data %d K %d: levels %d, %d not increasing", kind, Ks[t], j - 1, j);
            }
            CHECKF(worst <= 1e-6 * scale, "data %d K %d: levels differ from the reference by %g (scale %g)", kind, Ks[t],
                   worst, scale);
            if (kind == 2 && Ks[t] >= 5)
                for (int j = 0; j < 5; j++) CHECK(a[j] == (float)(j - 2));
        }
    }
    /* more levels fit better: the mean squared error falls with K */
    double prev = INFINITY;
    for (size_t t = 0; t < sizeof Ks / sizeof *Ks; t++) {
        float lv[LPV_CODEBOOK_MAX];
        int k;
        lpv_err err;
        for (int i = 0; i < N; i++) x[i] = 0.02f * gauss();
        CHECK_OK(lpv_kmeans1d(x, N, Ks[t], 100, lv, &k, &err), &err);
        double se = 0;
        for (int i = 0; i < N; i++) {
            double d = x[i] - lv[lpv_codebook_nearest(lv, k, x[i])];
            se += d * d;
        }
        CHECKF(se / N < prev || Ks[t] == 1, "K %d: error %g not below %g", Ks[t], se / N, prev);
        prev = se / N;
    }
    float lv[4];
    int k;
    lpv_err err;
    CHECK(lpv_kmeans1d(x, N, 0, 10, lv, &k, &err) == LPV_E_ARG && strstr(err.msg, "0 levels"));
    CHECK(lpv_kmeans1d(x, N, 257, 10, lv, &k, &err) == LPV_E_ARG);
    CHECK(lpv_kmeans1d(x, 0, 4, 10, lv, &k, &err) == LPV_E_ARG && strstr(err.msg, "no value"));
    x[17] = NAN;
    CHECK(lpv_kmeans1d(x, N, 4, 10, lv, &k, &err) == LPV_E_ARG && strstr(err.msg, "value 17 is not finite"));
}

/* Weighted k-means: equal to its textbook reference; integer weights equal to repeating the values; weights that
 * favour one region put more levels there; all-zero weights give the plain fit; bad weights refused. */
static void test_kmeans_weighted(void) {
    enum { N = 3000 };
    static float x[N], w[N], xr[4 * N];
    for (int i = 0; i < N; i++) x[i] = 0.02f * gauss(), w[i] = (float)(uniform() * 3);
    const int Ks[] = {1, 3, 16, 64};
    lpv_err err;
    for (size_t t = 0; t < sizeof Ks / sizeof *Ks; t++) {
        float a[LPV_CODEBOOK_MAX], b[LPV_CODEBOOK_MAX];
        int ka = 0, kb = 0;
        CHECK_OK(lpv_kmeans1d_w(x, w, N, Ks[t], 100, a, &ka, &err), &err);
        CHECK_OK(lpv_kmeans1d_w_ref(x, w, N, Ks[t], 100, b, &kb, &err), &err);
        double worst = 0;
        for (int j = 0; j < ka && j < kb; j++) worst = fmax(worst, fabs((double)a[j] - b[j]));
        CHECKF(ka == kb && worst <= 1e-7, "K %d: %d vs %d levels, %g apart", Ks[t], ka, kb, worst);
    }
    /* weights 1..4 == each value repeated that many times */
    int n = 0;
    for (int i = 0; i < N; i++) {
        w[i] = (float)(1 + i % 4);
        for (int r = 0; r < 1 + i % 4; r++) xr[n++] = x[i];
    }
    float a[16], b[16];
    int ka, kb;
    CHECK_OK(lpv_kmeans1d_w(x, w, N, 16, 100, a, &ka, &err), &err);
    CHECK_OK(lpv_kmeans1d(xr, n, 16, 100, b, &kb, &err), &err);
    double worst = 0;
    for (int j = 0; j < 16 && ka == kb; j++) worst = fmax(worst, fabs((double)a[j] - b[j]));
    CHECKF(ka == kb && worst <= 1e-7, "integer weights vs repeats: %d vs %d levels, %g apart", ka, kb, worst);
    /* positive values weigh 100x: more of the 16 levels above 0 than the plain fit puts there */
    for (int i = 0; i < N; i++) w[i] = x[i] > 0 ? 100.0f : 1.0f;
    CHECK_OK(lpv_kmeans1d_w(x, w, N, 16, 100, a, &ka, &err), &err);
    CHECK_OK(lpv_kmeans1d(x, N, 16, 100, b, &kb, &err), &err);
    int pa = 0, pb = 0;
    for (int j = 0; j < ka; j++) pa += a[j] > 0;
    for (int j = 0; j < kb; j++) pb += b[j] > 0;
    CHECKF(pa > pb, "weighted fit: %d positive levels, plain %d", pa, pb);
    for (int i = 0; i < N; i++) w[i] = 0.0f;
    CHECK_OK(lpv_kmeans1d_w(x, w, N, 16, 100, a, &ka, &err), &err);
    CHECK(ka == kb && memcmp(a, b, sizeof(float) * ka) == 0);
    w[5] = -1.0f;
    CHECK(lpv_kmeans1d_w(x, w, N, 4, 10, a, &ka, &err) == LPV_E_ARG && strstr(err.msg, "weight 5"));
    w[5] = NAN;
    CHECK(lpv_kmeans1d_w(x, w, N, 4, 10, a, &ka, &err) == LPV_E_ARG);
}

static void test_nearest(void) {
    const float lv[5] = {-1.0f, -0.25f, 0.0f, 0.5f, 2.0f};
    for (int i = 0; i < 2000; i++) {
        float v = (float)(uniform() * 5 - 2.5);
        if (i % 7 == 0) v = 0.5f * (lv[i % 4] + lv[i % 4 + 1]); /* on a midpoint: the lower level */
        int best = 0;
        for (int j = 1; j < 5; j++)
            if (fabs((double)v - lv[j]) < fabs((double)v - lv[best])) best = j;
        CHECKF(lpv_codebook_nearest(lv, 5, v) == best, "%g: level %d, scan says %d", (double)v,
               lpv_codebook_nearest(lv, 5, v), best);
    }
    const float x[4] = {0.5f, -1.0f, 0.4f, 2.0f};
    uint8_t c[4];
    CHECK(lpv_codebook_encode(lv, 5, x, 4, c) == 1 && c[0] == 3 && c[1] == 0 && c[2] == 3 && c[3] == 4);
}

/* pack4 / unpack4: round trips for odd and even rows, in place, and the padding nibble checked */
static void test_pack4(void) {
    uint8_t c[3 * 7], p[3 * 4], u[3 * 7], q[3 * 7];
    for (int last = 1; last <= 7; last++) {
        for (int i = 0; i < 3 * last; i++) c[i] = (uint8_t)((i * 7 + last) % 16);
        lpv_codebook_pack4(c, 3, last, p);
        CHECK(lpv_codebook_unpack4(p, 3, last, u) == 0 && memcmp(c, u, (size_t)(3 * last)) == 0);
        memcpy(q, c, sizeof q);
        lpv_codebook_pack4(q, 3, last, q); /* in place */
        CHECK(memcmp(q, p, (size_t)(3 * ((last + 1) / 2))) == 0);
        CHECK(p[0] == (uint8_t)(c[0] | (last > 1 ? c[1] << 4 : 0))); /* low nibble first */
        if (last & 1) {
            p[2 * ((last + 1) / 2) - 1] |= 0x10; /* row 1's padding nibble */
            CHECK(lpv_codebook_unpack4(p, 3, last, u) == -1);
        }
    }
}

/* dst = src without the metadata entry `key` (every tensor as it is). */
static void drop_meta(const char *src, const char *dst, const char *key) {
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_open(&f, src, &err), &err);
    lpv_st_writer w;
    lpv_st_writer_init(&w);
    for (int i = 0; i < f.n; i++)
        CHECK_OK(lpv_st_writer_add(&w, f.t[i].name, f.t[i].dtype, f.t[i].ndim, f.t[i].shape, f.t[i].data, &err), &err);
    for (int i = 0; i < f.n_meta; i++)
        if (strcmp(f.meta[i].key, key) != 0) CHECK_OK(lpv_st_writer_meta(&w, f.meta[i].key, f.meta[i].value, &err), &err);
    CHECK_OK(lpv_st_write(&w, dst, &err), &err);
    lpv_st_writer_free(&w);
    lpv_st_close(&f);
}

static void logits(lpv_model *m, float *out) {
    float x[2 * 3 * 32 * 32];
    for (int i = 0; i < 2 * 3 * 32 * 32; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    test_logits(m, x, 2, out);
}

static lpv_model *load(const char *path) {
    lpv_model *m = NULL;
    lpv_err err;
    lpv_model_opts o = {2, 0, 0};
    CHECK_OK(lpv_model_load(&m, path, &o, &err), &err);
    return m;
}

/* The layer's weights (dense, or its BSR values) into a malloc'd array; *n their count. */
static float *weights_of(const lpv_linear *L, int64_t *n) {
    *n = L->bsr ? (int64_t)L->bsr->nnzb * L->bsr->R * L->bsr->C : (int64_t)L->out * L->in;
    float *w = malloc(sizeof(float) * (size_t)*n);
    memcpy(w, L->bsr ? L->bsr->values : L->w, sizeof(float) * (size_t)*n);
    return w;
}

static int distinct(const float *w, int64_t n) {
    float seen[300];
    int k = 0;
    for (int64_t i = 0; i < n; i++) {
        int j = 0;
        while (j < k && seen[j] != w[i]) j++;
        if (j == k) {
            if (k == 300) return k + 1;
            seen[k++] = w[i];
        }
    }
    return k;
}

/* How many of L's weights are not its row's scale times one of its levels (the row of a BSR value from the
 * block row that holds it). */
static int64_t off_levels(const lpv_linear *L) {
    const lpv_bsr *b = L->bsr;
    int64_t off = 0;
    int nbr = b ? b->nbr : L->out, R = b ? b->R : 1, C = b ? b->C : L->in;
    for (int i = 0; i < nbr; i++)
        for (int32_t j = b ? b->row_ptr[i] : i; j < (b ? b->row_ptr[i + 1] : i + 1); j++)
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) {
                    float v = (b ? b->values : L->w)[(int64_t)j * R * C + (int64_t)r * C + c];
                    float sc = L->codebook_scale ? L->codebook_scale[i * R + r] : 1.0f;
                    int q = lpv_codebook_nearest(L->codebook, L->codebook_k, v / sc);
                    off += sc * L->codebook[q] != v;
                }
    return off;
}

static void roundtrip(const char *path, int pruned, int K) {
    lpv_model *m = test_random_model(64, 2, 2, 128, 32, 10, 0, 5);
    lpv_err err;
    lpv_layer_ref refs[LPV_MAX_LAYERS];
    int n = lpv_model_layers(m, refs, LPV_MAX_LAYERS);
    if (pruned) test_sparsify_pattern(m, 16, 5);
    CHECK_OK(lpv_model_quantize_codebook(m, K, &err), &err);
    CHECK(lpv_model_has_codebook(m));
    int ncb = 0;
    for (int i = 0; i < n; i++) {
        int64_t nw;
        float *w = weights_of(refs[i].lin, &nw);
        int d = distinct(w, nw);
        if (refs[i].lin->codebook) {
            ncb++;
            /* rows share the levels, each with its own scale: every weight is scale[row] * level */
            CHECKF(refs[i].lin->codebook_k <= K && refs[i].lin->codebook_scale && off_levels(refs[i].lin) == 0,
                   "%s: %lld weights off scale * level for K = %d", refs[i].name, (long long)off_levels(refs[i].lin), K);
        } else {
            CHECKF(d > K, "%s (not a block linear) was quantized", refs[i].name);
        }
        free(w);
    }
    CHECK(ncb == 4 * m->cfg.depth);
    CHECK_OK(lpv_model_save(m, path, NULL, &err), &err);
    lpv_st_file f;
    CHECK_OK(lpv_st_open(&f, path, &err), &err);
    const char *wn = pruned ? "blocks.1.mlp.fc2.weight.bsr_values" : "blocks.1.mlp.fc2.weight";
    const lpv_st_tensor *t = lpv_st_find(&f, wn), *cb = lpv_st_find(&f, "blocks.1.mlp.fc2.weight_codebook");
    CHECKF(t && t->dtype == LPV_DT_U8, "'%s' is not U8 codes", wn);
    CHECK(cb && cb->dtype == LPV_DT_F32 && cb->ndim == 1 && cb->shape[0] <= K);
    /* up to 16 levels: two codes per byte along the last axis (fc2 is (64, 128); BSR blocks 16 x 16) */
    int64_t last = pruned ? 16 : 128, got = t ? t->shape[t->ndim - 1] : -1;
    CHECKF(got == (cb->shape[0] <= 16 ? last / 2 : last), "'%s' last axis %lld for %lld levels", wn, (long long)got,
           (long long)cb->shape[0]);
    CHECK(lpv_st_meta(&f, LPV_CODES_META) && strcmp(lpv_st_meta(&f, LPV_CODES_META), "4bit") == 0);
    const lpv_st_tensor *cs = lpv_st_find(&f, "blocks.1.mlp.fc2.weight_codebook_scale");
    CHECK(cs && cs->dtype == LPV_DT_F32 && cs->ndim == 1 && cs->shape[0] == 64);
    CHECK(lpv_st_find(&f, "head.weight")->dtype == LPV_DT_F32 && lpv_st_meta(&f, "lpvit.quant"));
    lpv_st_close(&f);
    lpv_model *m2 = load(path);
    if (m2) {
        lpv_layer_ref r2[LPV_MAX_LAYERS];
        lpv_model_layers(m2, r2, LPV_MAX_LAYERS);
        for (int i = 0; i < n; i++) {
            int64_t na, nb;
            float *a = weights_of(refs[i].lin, &na), *b = weights_of(r2[i].lin, &nb);
            CHECKF(na == nb && memcmp(a, b, sizeof(float) * (size_t)na) == 0, "%s: weights differ after the reload",
                   refs[i].name);
            free(a), free(b);
        }
        float l1[20], l2[20];
        logits(m, l1), logits(m2, l2);
        CHECKF(memcmp(l1, l2, sizeof l1) == 0, "reloaded codebook model (pruned %d, K %d) gives other logits", pruned, K);
        /* saved again from the loaded model: the same codes */
        char again[300];
        snprintf(again, sizeof again, "%s.again.safetensors", path);
        CHECK_OK(lpv_model_save(m2, again, NULL, &err), &err);
        CHECK_OK(lpv_st_open(&f, again, &err), &err);
        CHECK(lpv_st_find(&f, wn)->dtype == LPV_DT_U8);
        lpv_st_close(&f);
        unlink(again);
        /* one weight moved off its levels (a later refit): that layer is written in FP32, exactly */
        lpv_linear *L = &m2->blocks[0].qkv;
        float *v = L->bsr ? L->bsr->values : L->w;
        v[3] += 1e-3f;
        CHECK_OK(lpv_model_save(m2, again, NULL, &err), &err);
        lpv_model *m3 = load(again);
        if (m3) {
            lpv_linear *L3 = &m3->blocks[0].qkv;
            CHECK(!L3->codebook && (L3->bsr ? L3->bsr->values : L3->w)[3] == v[3]);
            CHECK(m3->blocks[0].fc1.codebook != NULL);
            lpv_model_free(m3);
        }
        unlink(again);
        /* the dense-masked export is FP32 everywhere */
        lpv_save_opts so = {1, 0, {NULL}, {NULL}, 0};
        CHECK_OK(lpv_model_save(m, again, &so, &err), &err);
        CHECK_OK(lpv_st_open(&f, again, &err), &err);
        CHECK(lpv_st_find(&f, "blocks.1.mlp.fc2.weight")->dtype == LPV_DT_F32 &&
              !lpv_st_find(&f, "blocks.1.mlp.fc2.weight_codebook"));
        lpv_st_close(&f);
        unlink(again);
        lpv_model_free(m2);
    }
    lpv_model_free(m);
}

static void bad_files(const char *good, const char *goodp, const char *fp32, const char *bad) {
    const char *CB = "blocks.0.mlp.fc1.weight_codebook";
    lpv_st_file f;
    lpv_err err;
    CHECK_OK(lpv_st_open(&f, good, &err), &err);
    const lpv_st_tensor *t = lpv_st_find(&f, CB);
    int K = t ? (int)t->shape[0] : 0;
    static float lv[300];
    if (t) CHECK_OK(lpv_st_read_f32(&f, t, lv, &err), &err);
    lpv_st_close(&f);
    CHECK(K >= 4);
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 0, NULL, NULL, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.0.mlp.fc1.weight' is uint8 codes but 'blocks.0.mlp.fc1.weight_codebook' is missing",
                 "no codebook");
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){0}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "tensor 'blocks.0.mlp.fc1.weight_codebook' has shape [0], expected [K]", "empty codebook");
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){257}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "has shape [257], expected [K] with 1 <= K <= 256", "257 levels");
    test_st_rewrite(good, bad, CB, LPV_DT_I32, 1, (int64_t[]){K}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.0.mlp.fc1.weight_codebook' has dtype I32, expected F32", "int levels");
    float keep = lv[1];
    lv[1] = NAN;
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){K}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "blocks.0.mlp.fc1.weight_codebook", "NaN level"); /* the reader or the loader names it */
    lv[1] = lv[0];
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){K}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "levels 0 and 1 are not increasing", "repeated level");
    lv[1] = keep;
    /* fewer levels than the codes use: a code past the end */
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){2}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "but the codebook has 2 levels", "code past the levels");
    test_st_rewrite(goodp, bad, "blocks.1.attn.qkv.weight_codebook", LPV_DT_F32, 1, (int64_t[]){1}, lv, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.1.attn.qkv.weight.bsr_values' code", "bsr code past the levels");
    /* 4-bit codes in a file that does not say so: read as one code per byte, the shape cannot match */
    drop_meta(good, bad, LPV_CODES_META);
    test_expect_load_error(bad, "tensor 'blocks.0.attn.qkv.weight' has shape [192, 32], expected [192, 64]", "no 4bit mark");
    drop_meta(goodp, bad, LPV_CODES_META);
    test_expect_load_error(bad, "blocks.", "no 4bit mark, bsr");
    /* more than 16 levels beside 4-bit codes: the codes are taken as bytes, the shape cannot match */
    static float many[40];
    for (int j = 0; j < 40; j++) many[j] = -1.0f + j * 0.05f;
    test_st_rewrite(good, bad, CB, LPV_DT_F32, 1, (int64_t[]){40}, many, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "tensor 'blocks.0.mlp.fc1.weight' has shape [128, 32], expected [128, 64]", "17+ levels");
    /* a codebook beside FP32 weights */
    test_st_rewrite(fp32, bad, NULL, 0, 0, NULL, NULL, "blocks.0.attn.proj.weight_codebook", LPV_DT_F32, K, lv);
    test_expect_load_error(bad, "has a codebook ('blocks.0.attn.proj.weight_codebook') but its weight is not uint8 codes",
                 "stray codebook");
    /* the per-row scales: wrong length, not F32, zero, negative, NaN, infinite */
    const char *CS = "blocks.0.mlp.fc1.weight_codebook_scale";
    static float sc[128];
    for (int r = 0; r < 128; r++) sc[r] = 0.5f;
    test_st_rewrite(good, bad, CS, LPV_DT_F32, 1, (int64_t[]){127}, sc, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.0.mlp.fc1.weight_codebook_scale' has shape [127], expected [128]", "short scales");
    test_st_rewrite(good, bad, CS, LPV_DT_I32, 1, (int64_t[]){128}, sc, NULL, 0, 0, NULL);
    test_expect_load_error(bad, "'blocks.0.mlp.fc1.weight_codebook_scale' has dtype I32, expected F32", "int scales");
    const float badv[4] = {0.0f, -1.0f, NAN, INFINITY};
    for (int k = 0; k < 4; k++) {
        sc[7] = badv[k];
        test_st_rewrite(good, bad, CS, LPV_DT_F32, 1, (int64_t[]){128}, sc, NULL, 0, 0, NULL);
        test_expect_load_error(bad, "blocks.0.mlp.fc1.weight_codebook_scale", "bad scale");
    }
    /* a file of the first format (levels only, no scales) still loads: the weights are the levels */
    test_st_rewrite(good, bad, CS, LPV_DT_F32, 0, NULL, NULL, NULL, 0, 0, NULL);
    lpv_model *m = load(bad);
    if (m) {
        const lpv_linear *L = &m->blocks[0].fc1;
        CHECK(!L->codebook_scale && L->codebook && off_levels(L) == 0 && m->blocks[0].qkv.codebook_scale);
        lpv_model_free(m);
    }
}

int main(void) {
    test_kmeans();
    test_kmeans_weighted();
    test_nearest();
    test_pack4();
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char good[300], goodp[300], fp32[300], bad[300];
    snprintf(good, sizeof good, "%s/cb.safetensors", dir);
    snprintf(goodp, sizeof goodp, "%s/cbp.safetensors", dir);
    snprintf(fp32, sizeof fp32, "%s/fp32.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    roundtrip(good, 0, 16);
    roundtrip(goodp, 1, 16);
    roundtrip(bad, 0, 256);
    roundtrip(bad, 1, 3);
    lpv_model *m = test_random_model(64, 2, 2, 128, 32, 10, 0, 5);
    lpv_err err;
    CHECK_OK(lpv_model_save(m, fp32, NULL, &err), &err);
    lpv_model_free(m);
    bad_files(good, goodp, fp32, bad);
    test_model_mutations(good, bad, 3, 200);
    test_model_mutations(goodp, bad, 4, 200);
    unlink(good), unlink(goodp), unlink(fp32), unlink(bad);
    rmdir(dir);
    return test_finish("test_codebook");
}
