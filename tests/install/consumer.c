/*
 * consumer.c — a program outside the tree using an installed lpvit (tests/install/install.sh):
 * load a model, preprocess one image the way `lpvit infer` does (DeiT's eval transform),
 * run the forward pass, print "<argmax> <its logit>".
 *     consumer MODEL.safetensors IMAGE
 */
#include <stdio.h>
#include <stdlib.h>

#include <lpvit/forward.h>
#include <lpvit/image.h>
#include <lpvit/model.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: consumer MODEL IMAGE\n"); return 2; }
    lpv_err err;
    lpv_model *m;
    if (lpv_model_load(&m, argv[1], NULL, &err)) { fprintf(stderr, "consumer: %s\n", err.msg); return 1; }
    const lpv_config *c = &m->cfg;
    lpv_preproc pp = lpv_preproc_default();
    pp.img_size = c->img;
    float *x = malloc(sizeof(float) * c->chans * c->img * c->img), *logits = malloc(sizeof(float) * c->classes);
    lpv_image im;
    lpv_workspace ws;
    lpv_status st = x && logits ? LPV_OK : lpv_fail(&err, LPV_E_OOM, "out of memory");
    if (!st && !(st = lpv_image_load(argv[2], &im, &err))) {
        st = lpv_preprocess(&im, &pp, x, NULL, &err);
        lpv_image_free(&im);
    }
    if (!st && !(st = lpv_workspace_init_for(&ws, m, 1, &err))) {
        st = lpv_forward(m, &ws, x, 1, logits, &err);
        lpv_workspace_free(&ws);
    }
    int top = 0;
    for (int j = 1; !st && j < c->classes; j++) if (logits[j] > logits[top]) top = j;
    if (st) fprintf(stderr, "consumer: %s\n", err.msg);
    else printf("%d %.6f\n", top, logits[top]);
    free(x);
    free(logits);
    lpv_model_free(m);
    return st ? 1 : 0;
}
