/*
 * test_grad_bench.c — speed and memory of lpv_forward_backward (grad.h).
 *
 * By default a quick smoke run (DeiT-Tiny width, depth 2, batch 2) that
 * checks every timed call succeeded and the loss is finite. With LPVIT_BENCH
 * set it measures, on random weights and images, per image:
 *   inference            lpv_forward on the dense model as loaded (OpenBLAS
 *                        GEMMs: not packed with lpv_model_pack_dense, so not
 *                        the blocked kernel `lpvit infer` uses by default;
 *                        the same GEMMs as the training pass, for scale)
 *   training forward     lpv_forward_backward with g == NULL: the forward pass
 *   + loss, no backward  that saves every activation backward needs, and the
 *                        loss (and its ∂L/∂logits); no backward pass runs
 *   forward + backward   lpv_forward_backward with gradients, without and with
 *                        the per-sample squared accumulators (LPV_GRADS_SQ)
 * and the memory of the gradient buffers (gradients; with LPV_GRADS_SQ also
 * the squares, printed apart) and of the training workspace:
 *     LPVIT_BENCH=t   DeiT-Tiny (depth 12), batch 8
 *     LPVIT_BENCH=s   DeiT-S (384 wide, 6 heads, depth 12), batch 8
 *     LPVIT_BENCH=tb  DeiT-Tiny and DeiT-B (768 wide, 12 heads, depth 12)
 * Threads: LPVIT_THREADS (default 2). Run the binary directly for the
 * numbers: OPENBLAS_CORETYPE=SkylakeX LPVIT_BENCH=tb build/tests/test_grad_bench
 * (tests do not re-exec for the OpenBLAS core as the CLI does).
 */
#include "lpvit/cpu.h"
#include "lpvit/forward.h"
#include "lpvit/grad.h"
#include "lpvit/model.h"
#include "test.h"

static void bench(const char *name, int dim, int heads, int depth, int B, int iters) {
    lpv_config c = {0};
    c.dim = dim, c.heads = heads, c.depth = depth, c.mlp = 4 * dim, c.patch = 16, c.img = 224, c.chans = 3;
    c.classes = 1000, c.n_prefix = 1, c.n_outputs = 1, c.ln_eps = 1e-6f;
    lpv_model *m = NULL;
    lpv_err err;
    CHECK_OK(lpv_model_random(&m, &c, 1, &err), &err);
    if (!m) return;
    size_t n = (size_t)B * 3 * 224 * 224;
    float *img = malloc(sizeof(float) * n), *logits = malloc(sizeof(float) * (size_t)B * 1000);
    for (size_t i = 0; i < n; i++) img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    int *labels = malloc(sizeof(int) * (size_t)B);
    for (int i = 0; i < B; i++) labels[i] = (i * 131) % 1000;
    lpv_loss ls = {.kind = LPV_LOSS_CE, .labels = labels};

    /* every timed call's status is checked: a call that fails early would time nothing */
    lpv_workspace fw;
    CHECK_OK(lpv_workspace_init(&fw, &m->cfg, B, &err), &err);
    CHECK_OK(lpv_forward(m, &fw, img, B, logits, &err), &err);
    int bad = 0;
    double t0 = lpv_now();
    for (int i = 0; i < iters; i++) bad |= lpv_forward(m, &fw, img, B, logits, &err) != LPV_OK;
    double t_inf = (lpv_now() - t0) / iters / B;
    CHECKF(!bad, "%s: lpv_forward failed in the timed loop: %s", name, err.msg);
    lpv_workspace_free(&fw);

    lpv_train_ws ws;
    CHECK_OK(lpv_train_ws_init(&ws, &m->cfg, B, &err), &err);
    float loss = NAN;
    CHECK_OK(lpv_forward_backward(m, &ws, img, B, &ls, &loss, NULL, NULL, &err), &err);
    bad = 0;
    t0 = lpv_now();
    for (int i = 0; i < iters; i++) bad |= lpv_forward_backward(m, &ws, img, B, &ls, &loss, NULL, NULL, &err) != LPV_OK;
    double t_fwd = (lpv_now() - t0) / iters / B;
    CHECKF(!bad && isfinite(loss), "%s: forward + loss failed in the timed loop: %s", name, err.msg);
    printf("%s depth %d batch %d, %d threads, OpenBLAS core %s\n", name, depth, B, lpv_threads_get(),
           lpv_blas_corename());
    printf("  inference (lpv_forward, OpenBLAS, unpacked)        %8.2f ms/image\n", 1e3 * t_inf);
    printf("  training forward + loss, no backward (g == NULL)   %8.2f ms/image\n", 1e3 * t_fwd);
    for (int sq = 0; sq <= 1; sq++) {
        lpv_grads g;
        CHECK_OK(lpv_grads_init(&g, &m->cfg, sq ? LPV_GRADS_SQ : 0, &err), &err);
        loss = NAN;
        CHECK_OK(lpv_forward_backward(m, &ws, img, B, &ls, &loss, NULL, &g, &err), &err);
        bad = 0;
        t0 = lpv_now();
        for (int i = 0; i < iters; i++) bad |= lpv_forward_backward(m, &ws, img, B, &ls, &loss, NULL, &g, &err) != LPV_OK;
        double t = (lpv_now() - t0) / iters / B;
        CHECKF(!bad, "%s: forward + backward failed in the timed loop: %s", name, err.msg);
        CHECK(isfinite(loss) && g.batches == iters + 1 && g.samples == (int64_t)B * (iters + 1));
        CHECK(sq ? g.n_sq > 0 : g.n_sq == 0);
        double mib = 1.0 / (1 << 20), grads_mib = (double)g.n_all * sizeof(float) * mib;
        double sq_mib = (double)g.n_sq * sizeof(float) * mib;
        printf("  forward + backward%-34s %8.2f ms/image  (2000 images: %.1f min)\n",
               sq ? " + per-sample squares" : "", 1e3 * t, 2000 * t / 60);
        if (sq)
            printf("    gradient buffers: gradients %.1f MiB + squares %.1f MiB (arena %.1f MiB reserved)\n",
                   grads_mib, sq_mib, (double)g.arena.total * mib);
        else
            printf("    gradient buffers: gradients %.1f MiB (arena %.1f MiB reserved)\n", grads_mib,
                   (double)g.arena.total * mib);
        lpv_grads_free(&g);
    }
    printf("  training workspace (saved activations + scratch)   %8.0f MiB (batch %d)\n", (double)ws.bytes / (1 << 20),
           B);
    lpv_train_ws_free(&ws);
    free(img), free(logits), free(labels);
    lpv_model_free(m);
}

int main(void) {
    const char *which = getenv("LPVIT_BENCH");
    const char *th = getenv("LPVIT_THREADS");
    lpv_threads_set(th ? atoi(th) : 2);
    if (!which || !*which) {
        bench("smoke: DeiT-Tiny width", 192, 3, 2, 2, 1);
    } else {
        if (strchr(which, 't')) bench("DeiT-Tiny", 192, 3, 12, 8, 5);
        if (strchr(which, 's')) bench("DeiT-S", 384, 6, 12, 8, 3);
        if (strchr(which, 'b')) bench("DeiT-B", 768, 12, 12, 8, 2);
    }
    return test_finish("test_grad_bench");
}
