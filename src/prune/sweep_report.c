/*
 * sweep_report.c — what lpv_sweep leaves behind (sweep.h): the Pareto table
 * and per-layer densities in markdown, the JSON, and two SVG plots.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/plot.h"
#include "lpvit/report.h"
#include "lpvit/sweep.h"

static const char *point_name(const lpv_sweep_point *p, char *buf, size_t cap) {
    if (p->target < 1) snprintf(buf, cap, "%g", p->target);
    else snprintf(buf, cap, "dense%s%s", p->precision == LPV_PREC_FP32 ? "" : " ", 
                  p->precision == LPV_PREC_FP32 ? "" : lpv_precision_name(p->precision));
    return buf;
}

void lpv_sweep_markdown(FILE *fp, const lpv_model *src, const lpv_sweep_result *r) {
    char env[512];
    lpv_environment_line(env, sizeof env);
    const lpv_sweep_point *d = &r->points[0];
    fprintf(fp, "# Sweep: %s\n\n%s; %ld validation images; times: forward pass of %d image%s, median of the "
            "timed passes, interleaved with the dense FP32 model\n\n",
            src->arch, env, d->images, r->bench_batch, r->bench_batch == 1 ? "" : "s");
    fprintf(fp, "| point | precision | FLOPs kept (prunable) | FLOPs kept (model) | weights kept | top-1 | top-5 | "
                "top-1 change | ms (min-max) | speedup | statistics | prune s | eval s | Pareto |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < r->n_points; i++) {
        const lpv_sweep_point *p = &r->points[i];
        char name[32], stats[32];
        if (p->target < 1 && p->steps_resumed)
            snprintf(stats, sizeof stats, "%d/%d cached, %d resumed", p->stat_cached, p->stat_steps, p->steps_resumed);
        else if (p->target < 1) snprintf(stats, sizeof stats, "%d/%d cached", p->stat_cached, p->stat_steps);
        else snprintf(stats, sizeof stats, "-");
        fprintf(fp, "| %s | %s | %.3f | %.3f | %.3f | %.2f | %.2f | %+.2f | %.2f (%.2f-%.2f) | %.2fx | %s | %.1f | %.1f | %s |\n",
                point_name(p, name, sizeof name), lpv_precision_name(p->precision), p->flops_kept,
                p->model_flops_kept, p->weights_kept, p->top1, p->top5, p->top1 - d->top1, p->time.median_ms,
                p->time.min_ms, p->time.max_ms, p->speedup, stats, p->seconds_prune, p->seconds_eval,
                p->pareto ? "yes" : "");
    }
    if (!r->n_layers) return;
    fprintf(fp, "\n## Density per layer\n\n| layer |");
    for (int i = 0; i < r->n_points; i++)
        if (r->points[i].density) fprintf(fp, " %g |", r->points[i].target);
    fprintf(fp, "\n|---|");
    for (int i = 0; i < r->n_points; i++)
        if (r->points[i].density) fprintf(fp, "---|");
    fputc('\n', fp);
    for (int l = 0; l < r->n_layers; l++) {
        fprintf(fp, "| %s |", r->layer_names[l]);
        for (int i = 0; i < r->n_points; i++)
            if (r->points[i].density) fprintf(fp, " %.3f |", r->points[i].density[l]);
        fputc('\n', fp);
    }
    fprintf(fp, "\nTotal wall time %.1f s, %d threads.\n", r->seconds_total, r->threads);
}

static cJSON *timing_json(const lpv_timing *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "median_ms", t->median_ms);
    cJSON_AddNumberToObject(o, "min_ms", t->min_ms);
    cJSON_AddNumberToObject(o, "max_ms", t->max_ms);
    cJSON_AddNumberToObject(o, "reps", t->reps);
    return o;
}

static cJSON *point_json(const lpv_sweep_result *r, const lpv_sweep_point *p) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "kind", p->kind);
    cJSON_AddStringToObject(j, "precision", lpv_precision_name(p->precision));
    cJSON_AddStringToObject(j, "attention", p->attention);
    cJSON_AddNumberToObject(j, "target_flops", p->target);
    cJSON_AddNumberToObject(j, "flops_kept", p->flops_kept);
    cJSON_AddNumberToObject(j, "model_flops_kept", p->model_flops_kept);
    cJSON_AddNumberToObject(j, "weights_kept", p->weights_kept);
    cJSON_AddNumberToObject(j, "top1", round(p->top1 * 1000) / 1000);
    cJSON_AddNumberToObject(j, "top5", round(p->top5 * 1000) / 1000);
    cJSON_AddNumberToObject(j, "top1_change", round((p->top1 - r->points[0].top1) * 1000) / 1000);
    cJSON_AddNumberToObject(j, "images", (double)p->images);
    cJSON_AddNumberToObject(j, "skipped", (double)p->skipped);
    cJSON_AddItemToObject(j, "time", timing_json(&p->time));
    cJSON_AddItemToObject(j, "dense_time", timing_json(&p->dense_time));
    cJSON_AddNumberToObject(j, "speedup", p->speedup);
    if (!isnan(p->others_cpu)) cJSON_AddNumberToObject(j, "other_processes_cpus", p->others_cpu);
    cJSON_AddBoolToObject(j, "pareto", p->pareto);
    if (p->target < 1) {
        cJSON *st = cJSON_AddObjectToObject(j, "statistics");
        cJSON_AddNumberToObject(st, "steps", p->stat_steps);
        cJSON_AddNumberToObject(st, "from_cache", p->stat_cached);
        cJSON_AddNumberToObject(st, "steps_resumed", p->steps_resumed);
    }
    cJSON *w = cJSON_AddObjectToObject(j, "wall_s");
    cJSON_AddNumberToObject(w, "prune", p->seconds_prune);
    cJSON_AddNumberToObject(w, "eval", p->seconds_eval);
    cJSON_AddNumberToObject(w, "bench", p->seconds_bench);
    if (p->model_file[0]) cJSON_AddStringToObject(j, "model_file", p->model_file);
    if (p->density) cJSON_AddItemToObject(j, "density", cJSON_CreateDoubleArray(p->density, r->n_layers));
    if (p->prune_report) cJSON_AddItemToObject(j, "prune", cJSON_Duplicate(p->prune_report, 1));
    return j;
}

cJSON *lpv_sweep_json(const lpv_model *src, const lpv_sweep_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", src->arch);
    cJSON_AddStringToObject(j, "model_path", src->path);
    for (int i = 0; i < r->n_points; i++) { /* the source's hash, as the first prune computed it */
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(r->points[i].prune_report, "model_sha256");
        if (cJSON_IsString(h)) {
            cJSON_AddStringToObject(j, "model_sha256", h->valuestring);
            break;
        }
    }
    cJSON *v = cJSON_AddObjectToObject(j, "validation");
    cJSON_AddStringToObject(v, "dir", r->val_dir);
    cJSON_AddNumberToObject(v, "items", r->val_items);
    cJSON_AddStringToObject(v, "list_sha256", r->val_sha256);
    cJSON *names = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < r->n_layers; l++) cJSON_AddItemToArray(names, cJSON_CreateString(r->layer_names[l]));
    cJSON_AddNumberToObject(j, "bench_batch", r->bench_batch);
    cJSON *pts = cJSON_AddArrayToObject(j, "points");
    for (int i = 0; i < r->n_points; i++) cJSON_AddItemToArray(pts, point_json(r, &r->points[i]));
    cJSON_AddNumberToObject(j, "wall_s", r->seconds_total);
    lpv_report_environment(j);
    return j;
}

/* Pareto plot: every pruned point (labelled with its target, joined in target order), the dense points, and
 * the front drawn through the Pareto-optimal ones by speedup. */
static lpv_status pareto_plot(const lpv_model *src, const lpv_sweep_result *r, const char *path, lpv_err *err) {
    int n = r->n_points;
    double *buf = malloc(sizeof(double) * (size_t)n * 6);
    const char **labels = calloc((size_t)n, sizeof *labels);
    char (*names)[32] = calloc((size_t)n, sizeof *names);
    if (!buf || !labels || !names) {
        free(buf), free(labels), free(names);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    double *px = buf, *py = buf + n, *dx = buf + 2 * n, *dy = buf + 3 * n, *fx = buf + 4 * n, *fy = buf + 5 * n;
    int np = 0, nd = 0, nf = 0;
    const char *dlabels[2] = {NULL, NULL};
    char dnames[2][32];
    for (int i = 0; i < n; i++) {
        const lpv_sweep_point *p = &r->points[i];
        if (p->target < 1) {
            px[np] = p->speedup, py[np] = p->top1;
            labels[np++] = point_name(p, names[i], sizeof names[i]);
        } else if (nd < 2) {
            dx[nd] = p->speedup, dy[nd] = p->top1;
            dlabels[nd] = point_name(p, dnames[nd], sizeof dnames[nd]);
            nd++;
        }
    }
    /* the front, by increasing speedup */
    for (int k = 0; k < n; k++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (r->points[i].pareto && (nf == 0 || r->points[i].speedup > fx[nf - 1]) &&
                (best < 0 || r->points[i].speedup < r->points[best].speedup))
                best = i;
        if (best < 0) break;
        fx[nf] = r->points[best].speedup, fy[nf] = r->points[best].top1, nf++;
    }
    char title[160], xl[96];
    snprintf(title, sizeof title, "%s: top-1 against measured speedup", src->arch);
    snprintf(xl, sizeof xl, "speedup over the dense FP32 model (batch %d, %d threads)", r->bench_batch, r->threads);
    lpv_series s[3] = {
        {"Pareto front", nf, fx, fy, NULL, 1, 0, 0, 7},
        {"dense", nd, dx, dy, dlabels, 0, 1, 1, 1},
        {"pruned (FLOPs target)", np, px, py, labels, 1, 1, 0, 0},
    };
    lpv_plot p = lpv_plot_init(title, xl, "top-1 (%)");
    int first = nf > 0 ? 0 : 1, count = 3 - first - (np == 0);
    lpv_status st = lpv_plot_svg_save(path, &p, s + first, count, err);
    free(buf), free(labels), free(names);
    return st;
}

static lpv_status density_plot(const lpv_model *src, const lpv_sweep_result *r, const char *path, lpv_err *err) {
    if (r->n_layers == 0) return lpv_fail(err, LPV_E_ARG, "sweep: no pruned point to plot");
    double *x = malloc(sizeof(double) * (size_t)r->n_layers);
    const char **cats = malloc(sizeof(char *) * (size_t)r->n_layers);
    lpv_series s[LPV_SWEEP_MAX_TARGETS];
    char names[LPV_SWEEP_MAX_TARGETS][48];
    int ns = 0;
    if (!x || !cats) {
        free(x), free(cats);
        return lpv_fail(err, LPV_E_OOM, "out of memory");
    }
    for (int l = 0; l < r->n_layers; l++) x[l] = l, cats[l] = r->layer_names[l];
    for (int i = 0; i < r->n_points && ns < LPV_SWEEP_MAX_TARGETS; i++) {
        const lpv_sweep_point *p = &r->points[i];
        if (!p->density) continue;
        snprintf(names[ns], sizeof names[ns], "FLOPs %g (top-1 %.1f)", p->target, p->top1);
        s[ns] = (lpv_series){names[ns], r->n_layers, x, p->density, NULL, 1, 1, 0, ns};
        ns++;
    }
    char title[160];
    snprintf(title, sizeof title, "%s: weights kept per layer", src->arch);
    lpv_plot p = lpv_plot_init(title, "layer", "density (kept weights / all)");
    p.xcats = cats, p.n_xcats = r->n_layers, p.ymin = 0, p.ymax = 1;
    lpv_status st = lpv_plot_svg_save(path, &p, s, ns, err);
    free(x), free(cats);
    return st;
}

lpv_status lpv_sweep_plots(const lpv_model *src, const lpv_sweep_result *r, const char *pareto_svg,
                           const char *density_svg, lpv_err *err) {
    if (pareto_svg) LPV_TRY(pareto_plot(src, r, pareto_svg, err));
    return density_svg ? density_plot(src, r, density_svg, err) : LPV_OK;
}
