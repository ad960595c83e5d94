/*
 * test_calib.c — calibration statistics equal their definitions computed one
 * image at a time (mean gradient, Fisher diagonal, per-block second moments
 * mean_n (g_n,b · w_b)²) on a random model and the committed mini ImageFolder,
 * with an uneven last batch; the zlib cache round-trips exactly, and a cache
 * made for other inputs, truncated or corrupted is refused. A save removes the
 * stale temp files of the cache's naming (a dead writer's pid, or older than a
 * day) and keeps a live writer's and other names.
 */
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lpvit/calib.h"
#include "lpvit/cpu.h"
#include "lpvit/fileio.h"
#include "lpvit/loader.h"
#include "lpvit/report.h"
#include "test.h"

/* Every input the statistics depend on is in the cache key: changing any one of them gives another key. */
static void test_key_inputs(const lpv_dataset *ds, const lpv_calib_opts *o0, const lpv_preproc *pp0, const char *tmp) {
    char base[1024], other[1024], imgs[65];
    lpv_dataset_files_hash(ds, imgs);
    lpv_calib_key(base, sizeof base, "modelsha", imgs, o0, pp0);
    CHECK(strstr(base, lpv_commit()) && strstr(base, lpv_version())); /* the code version */
#define MISSES(what, ...)                                                    \
    do {                                                                     \
        lpv_calib_opts o = *o0;                                              \
        lpv_preproc pp = *pp0;                                               \
        char sha[65];                                                        \
        snprintf(sha, sizeof sha, "%s", imgs);                               \
        const char *model = "modelsha";                                      \
        __VA_ARGS__;                                                         \
        lpv_calib_key(other, sizeof other, model, sha, &o, &pp);             \
        CHECKF(strcmp(base, other) != 0, "%s does not change the key", what); \
    } while (0)
    MISSES("the model", model = "othersha");
    MISSES("the loss", o.loss = LPV_LOSS_KL);
    MISSES("the Fisher flag", o.fisher = !o.fisher);
    MISSES("the mean gradient's flag", o.no_mean = !o.no_mean);
    MISSES("the block shape", o.block_R = 32);
    MISSES("the batch", o.batch += 1);
    MISSES("the seed", o.seed += 1);
    MISSES("the crop", pp.crop_pct = 0.95);
    MISSES("the mean", pp.mean[1] += 0.01f);
    /* the images: their order, how many, and their content (a file replaced under the same name) */
    lpv_dataset v;
    lpv_err err;
    CHECK_OK(lpv_dataset_view(&v, ds, &err), &err);
    lpv_item t = v.items[0];
    v.items[0] = v.items[1], v.items[1] = t;
    MISSES("the images' order", lpv_dataset_files_hash(&v, sha));
    v.items[1] = v.items[0], v.items[0] = t;
    lpv_dataset_limit(&v, v.n - 1);
    MISSES("the number of images", lpv_dataset_files_hash(&v, sha));
    lpv_dataset_view_free(&v);
    char copy[256], cmd[768];
    snprintf(copy, sizeof copy, "%s/mini", tmp);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", ds->root, copy);
    CHECK(system(cmd) == 0);
    lpv_synsets syn;
    lpv_dataset d2;
    CHECK_OK(lpv_synsets_load(&syn, lpv_synsets_default_path(), &err), &err);
    CHECK_OK(lpv_dataset_imagefolder(&d2, copy, &syn, &err), &err);
    char h1[65], h2[65];
    lpv_dataset_files_hash(&d2, h1);
    FILE *fp = fopen(d2.items[0].path, "ab"); /* one more byte: another file */
    if (fp) fputc(0, fp), fclose(fp);
    lpv_dataset_files_hash(&d2, h2);
    CHECK(strcmp(h1, h2) != 0);
    lpv_dataset_free(&d2);
    lpv_synsets_free(&syn);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", copy);
    CHECK(system(cmd) == 0);
#undef MISSES
}

int main(void) {
    lpv_threads_set(2);
    lpv_err err;
    lpv_config c;
    memset(&c, 0, sizeof c);
    c.dim = 32, c.depth = 2, c.heads = 2, c.mlp = 64, c.patch = 16, c.img = 32, c.chans = 3, c.classes = 1000;
    c.n_prefix = 1, c.n_outputs = 1;
    lpv_model *m;
    CHECK_OK(lpv_model_random(&m, &c, 9, &err), &err);
    lpv_synsets syn;
    CHECK_OK(lpv_synsets_load(&syn, LPVIT_SOURCE_DIR "/models/synset_words.txt", &err), &err);
    lpv_dataset ds;
    CHECK_OK(lpv_dataset_imagefolder(&ds, LPVIT_SOURCE_DIR "/tests/data/imagenet-mini", &syn, &err), &err);
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = 32;
    int R = 16, C = 16;
    lpv_calib_opts o = {LPV_LOSS_SELF_CE, 1, R, C, 5, 0, NULL, NULL, 0};
    lpv_calib_stats s;
    CHECK_OK(lpv_calib_collect(m, &ds, &pp, &o, &s, &err), &err);
    CHECK(s.samples == ds.n && s.n == 1 + 4 * 2 + 1);

    /* reference: one image at a time */
    lpv_loader *L;
    lpv_loader_opts lo = {ds.n, 1, 1, NULL};
    CHECK_OK(lpv_loader_open(&L, &ds, &pp, &lo, &err), &err);
    lpv_batch b;
    CHECK_OK(lpv_loader_next(L, &b, &err), &err);
    lpv_train_ws ws;
    CHECK_OK(lpv_train_ws_init(&ws, &m->cfg, 1, &err), &err);
    lpv_grads g;
    CHECK_OK(lpv_grads_init(&g, &m->cfg, 0, &err), &err);
    double *gm[16] = {0}, *fm[16] = {0}, *bm[16] = {0};
    for (int i = 0; i < s.n; i++) {
        int64_t nw = (int64_t)s.refs[i].lin->out * s.refs[i].lin->in;
        int64_t nb = (int64_t)((s.refs[i].lin->out + R - 1) / R) * ((s.refs[i].lin->in + C - 1) / C);
        gm[i] = calloc((size_t)nw, sizeof(double)), fm[i] = calloc((size_t)nw, sizeof(double));
        bm[i] = calloc((size_t)nb, sizeof(double));
    }
    int64_t per = 3 * 32 * 32;
    for (int n = 0; n < b.n; n++) {
        lpv_grads_zero(&g);
        lpv_loss loss = {LPV_LOSS_SELF_CE, NULL, NULL};
        CHECK_OK(lpv_forward_backward(m, &ws, b.x + n * per, 1, &loss, NULL, NULL, &g, &err), &err);
        for (int i = 0; i < s.n; i++) {
            const lpv_linear *W = s.refs[i].lin;
            lpv_linear_grad *lg = lpv_grads_linear(&g, s.refs[i].kind, s.refs[i].block);
            int nbc = (W->in + C - 1) / C;
            for (int64_t q = 0; q < (int64_t)W->out * W->in; q++) {
                gm[i][q] += lg->w[q] / b.n;
                fm[i][q] += (double)lg->w[q] * lg->w[q] / b.n;
            }
            for (int br = 0; br * R < W->out; br++)
                for (int bc = 0; bc * C < W->in; bc++) {
                    double dot = 0;
                    for (int r = br * R; r < (br + 1) * R && r < W->out; r++)
                        for (int cc = bc * C; cc < (bc + 1) * C && cc < W->in; cc++)
                            dot += (double)lg->w[(int64_t)r * W->in + cc] * W->w[(int64_t)r * W->in + cc];
                    bm[i][br * nbc + bc] += dot * dot / b.n;
                }
        }
    }
    for (int i = 0; i < s.n; i++) {
        const lpv_linear *W = s.refs[i].lin;
        int64_t nw = (int64_t)W->out * W->in, nb = (int64_t)((W->out + R - 1) / R) * ((W->in + C - 1) / C);
        double eg = 0, mg = 0, ef = 0, mf = 0, eb = 0, mb = 0;
        for (int64_t q = 0; q < nw; q++) {
            eg = fmax(eg, fabs(s.g[i][q] - gm[i][q])), mg = fmax(mg, fabs(gm[i][q]));
            ef = fmax(ef, fabs(s.f[i][q] - fm[i][q])), mf = fmax(mf, fabs(fm[i][q]));
        }
        for (int64_t q = 0; q < nb; q++) eb = fmax(eb, fabs(s.bf[i][q] - bm[i][q])), mb = fmax(mb, fabs(bm[i][q]));
        CHECKF(eg <= 1e-4 * mg && ef <= 1e-4 * mf && eb <= 1e-4 * mb, "%s: g %g/%g f %g/%g b %g/%g", s.refs[i].name, eg,
               mg, ef, mf, eb, mb);
        CHECK(mg > 0 && mf > 0 && mb > 0);
        free(gm[i]), free(fm[i]), free(bm[i]);
    }
    lpv_grads_free(&g);
    lpv_train_ws_free(&ws);
    lpv_loader_close(L);

    /* without the mean gradient: no g, and the moments bit for bit the same (they never read it) */
    lpv_calib_opts on = o;
    on.no_mean = 1;
    lpv_calib_stats sn;
    CHECK_OK(lpv_calib_collect(m, &ds, &pp, &on, &sn, &err), &err);
    CHECK(sn.samples == s.samples && sn.mean_loss == s.mean_loss);
    for (int i = 0; i < s.n; i++) {
        const lpv_linear *W = s.refs[i].lin;
        int64_t nw = (int64_t)W->out * W->in, nb = (int64_t)((W->out + R - 1) / R) * ((W->in + C - 1) / C);
        CHECKF(sn.g[i] == NULL && memcmp(sn.f[i], s.f[i], sizeof(float) * (size_t)nw) == 0 &&
                   memcmp(sn.bf[i], s.bf[i], sizeof(float) * (size_t)nb) == 0,
               "%s: no_mean changed the moments", s.refs[i].name);
    }

    /* cache round trip */
    char dir[] = "/tmp/lpvit_calib_XXXXXX", path[128], bad[160];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/c.lpvc", dir);
    char key[1024], list[65];
    lpv_dataset_files_hash(&ds, list);
    lpv_calib_key(key, sizeof key, "modelsha", list, &o, &pp);
    snprintf(s.key, sizeof s.key, "%s", key);
    /* stale temps of the cache's naming: a dead pid's (a reaped child's), an old one of a live pid */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    CHECK(dead > 0 && waitpid(dead, NULL, 0) == dead);
    char stale[4][160], keep[3][160];
    snprintf(stale[0], 160, "%s/calib-ab12.lpvc.tmp.%ld", dir, (long)dead);
    snprintf(stale[1], 160, "%s/calib-ab12.lpvc.raw.%ld", dir, (long)dead);
    snprintf(stale[2], 160, "%s/calib-cd34.lpvc.raw.%ld", dir, (long)getpid()); /* made old below */
    snprintf(stale[3], 160, "%s/calib-cd34.lpvc.tmp.1", dir);                    /* pid 1 lives, old */
    snprintf(keep[0], 160, "%s/calib-ef56.lpvc.tmp.%ld", dir, (long)getpid());  /* a live writer's */
    snprintf(keep[1], 160, "%s/notes.tmp.%ld", dir, (long)dead);                 /* not the cache's */
    snprintf(keep[2], 160, "%s/calib-ef56.lpvc.tmp.%ldx", dir, (long)dead);      /* not a pid */
    for (int i = 0; i < 4; i++) CHECK_OK(lpv_write_file_atomic(stale[i], "x", 1, &err), &err);
    for (int i = 0; i < 3; i++) CHECK_OK(lpv_write_file_atomic(keep[i], "x", 1, &err), &err);
    struct timespec two_days[2] = {{time(NULL) - 2 * 86400, 0}, {time(NULL) - 2 * 86400, 0}};
    CHECK(utimensat(AT_FDCWD, stale[2], two_days, 0) == 0 && utimensat(AT_FDCWD, stale[3], two_days, 0) == 0);
    CHECK_OK(lpv_calib_save(&s, path, &err), &err);
    for (int i = 0; i < 4; i++) CHECKF(!lpv_file_exists(stale[i]), "stale '%s' kept", stale[i]);
    for (int i = 0; i < 3; i++) CHECKF(lpv_file_exists(keep[i]), "'%s' removed", keep[i]);
    lpv_calib_stats t;
    CHECK_OK(lpv_calib_load(&t, m, path, key, &o, &err), &err);
    CHECK(t.samples == s.samples && t.from_cache);
    for (int i = 0; i < s.n; i++) {
        int64_t nw = (int64_t)s.refs[i].lin->out * s.refs[i].lin->in;
        CHECK(memcmp(t.g[i], s.g[i], sizeof(float) * (size_t)nw) == 0 && memcmp(t.f[i], s.f[i], sizeof(float) * (size_t)nw) == 0);
    }
    lpv_calib_free(&t);
    /* statistics without g round-trip too, under their own key */
    char keyn[1024], pathn[160];
    snprintf(pathn, sizeof pathn, "%s/n.lpvc", dir);
    lpv_calib_key(keyn, sizeof keyn, "modelsha", list, &on, &pp);
    snprintf(sn.key, sizeof sn.key, "%s", keyn);
    CHECK_OK(lpv_calib_save(&sn, pathn, &err), &err);
    CHECK(lpv_calib_load(&t, m, pathn, key, &o, &err) == LPV_E_FORMAT); /* the mean's key does not take it */
    CHECK_OK(lpv_calib_load(&t, m, pathn, keyn, &on, &err), &err);
    for (int i = 0; i < s.n; i++) {
        int64_t nw = (int64_t)s.refs[i].lin->out * s.refs[i].lin->in;
        CHECK(t.g[i] == NULL && memcmp(t.f[i], sn.f[i], sizeof(float) * (size_t)nw) == 0);
    }
    lpv_calib_free(&t);
    lpv_calib_free(&sn);
    /* another key (other model hash) is refused */
    char key2[1024];
    lpv_calib_key(key2, sizeof key2, "othersha", list, &o, &pp);
    CHECK(lpv_calib_load(&t, m, path, key2, &o, &err) == LPV_E_FORMAT && strstr(err.msg, "other inputs"));
    test_key_inputs(&ds, &o, &pp, dir);
    /* truncated and corrupted gzip streams are refused */
    char *raw;
    size_t n;
    CHECK_OK(lpv_read_file(path, &raw, &n, 1u << 30, &err), &err);
    snprintf(bad, sizeof bad, "%s/bad.lpvc", dir);
    CHECK_OK(lpv_write_file_atomic(bad, raw, n / 2, &err), &err);
    CHECK(lpv_calib_load(&t, m, bad, key, &o, &err) != LPV_OK);
    raw[n / 2] ^= 0x5a, raw[n / 2 + 1] ^= 0xa5;
    CHECK_OK(lpv_write_file_atomic(bad, raw, n, &err), &err);
    CHECK(lpv_calib_load(&t, m, bad, key, &o, &err) != LPV_OK);
    CHECK_OK(lpv_write_file_atomic(bad, "plain text", 10, &err), &err);
    CHECK(lpv_calib_load(&t, m, bad, key, &o, &err) != LPV_OK);
    free(raw);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    lpv_calib_free(&s);
    lpv_dataset_free(&ds);
    lpv_synsets_free(&syn);
    lpv_model_free(m);
    return test_finish("test_calib");
}
