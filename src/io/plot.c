/*
 * plot.c — SVG charts (plot.h). The chart is laid out in pixels once
 * (margins, plot area, legend column), data coordinates are mapped linearly
 * into the area, and each element is printed straight to the stream.
 */
#include <math.h>
#include <string.h>

#include "lpvit/fileio.h"
#include "lpvit/plot.h"

/* Colour-blind-safe categorical palette (Okabe-Ito, without yellow on white). */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#56B4E9", "#E69F00", "#000000", "#999999"};
enum { N_PALETTE = sizeof palette / sizeof palette[0] };

typedef struct {
    double x0, x1, y0, y1;    /* data limits */
    double left, top, w, h;   /* plot area, pixels */
    double xstep, ystep;      /* tick steps (xstep 1 for categories) */
} frame;

lpv_plot lpv_plot_init(const char *title, const char *xlabel, const char *ylabel) {
    lpv_plot p;
    memset(&p, 0, sizeof p);
    p.title = title, p.xlabel = xlabel, p.ylabel = ylabel;
    p.xmin = p.xmax = p.ymin = p.ymax = NAN;
    return p;
}

double lpv_plot_tick_step(double lo, double hi, int target) {
    double span = hi - lo;
    if (!(span > 0)) return 1;
    double raw = span / (target > 0 ? target : 1), mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

/* Data limits of one axis: the given ones, else the data's padded outwards to whole ticks. */
static void axis_limits(double given_lo, double given_hi, double dlo, double dhi, double *lo, double *hi,
                        double *step) {
    if (dlo == dhi) dlo -= fabs(dlo) * 0.05 + 0.5, dhi += fabs(dhi) * 0.05 + 0.5;
    double pad = 0.04 * (dhi - dlo);
    double s = lpv_plot_tick_step(dlo - pad, dhi + pad, 6);
    *lo = isnan(given_lo) ? floor((dlo - pad) / s) * s : given_lo;
    *hi = isnan(given_hi) ? ceil((dhi + pad) / s) * s : given_hi;
    *step = lpv_plot_tick_step(*lo, *hi, 6);
}

static double px(const frame *f, double x) { return f->left + (x - f->x0) / (f->x1 - f->x0) * f->w; }
static double py(const frame *f, double y) { return f->top + f->h - (y - f->y0) / (f->y1 - f->y0) * f->h; }

/* Text with &, <, >, " escaped. */
static void put_text(FILE *fp, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", fp); break;
        case '<': fputs("&lt;", fp); break;
        case '>': fputs("&gt;", fp); break;
        case '"': fputs("&quot;", fp); break;
        default: fputc(*s, fp);
        }
    }
}

/* A tick value with as many decimals as the step needs (no 0.30000000000000004). */
static void put_num(FILE *fp, double v, double step) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) < step * 1e-9) v = 0;
    fprintf(fp, "%.*f", dec, v);
}

static lpv_status check(const lpv_plot *p, const lpv_series *s, int ns, lpv_err *err) {
    if (ns < 1) return lpv_fail(err, LPV_E_ARG, "plot '%s': no series", p->title ? p->title : "");
    for (int k = 0; k < ns; k++) {
        if (s[k].n < 1) return lpv_fail(err, LPV_E_ARG, "plot '%s': series '%s' is empty", p->title, s[k].name);
        for (int i = 0; i < s[k].n; i++)
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i]))
                return lpv_fail(err, LPV_E_ARG, "plot '%s': series '%s' point %d is not finite (%g, %g)", p->title,
                                s[k].name ? s[k].name : "", i, s[k].x[i], s[k].y[i]);
    }
    return LPV_OK;
}

static int has_legend(const lpv_series *s, int ns) {
    for (int k = 0; k < ns; k++)
        if (s[k].name) return 1;
    return 0;
}

static frame layout(const lpv_plot *p, const lpv_series *s, int ns, int W, int H) {
    frame f;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            xlo = fmin(xlo, s[k].x[i]), xhi = fmax(xhi, s[k].x[i]);
            ylo = fmin(ylo, s[k].y[i]), yhi = fmax(yhi, s[k].y[i]);
        }
    axis_limits(p->ymin, p->ymax, ylo, yhi, &f.y0, &f.y1, &f.ystep);
    if (p->n_xcats > 0) f.x0 = -0.5, f.x1 = p->n_xcats - 0.5, f.xstep = 1;
    else axis_limits(p->xmin, p->xmax, xlo, xhi, &f.x0, &f.x1, &f.xstep);
    double bottom = p->n_xcats > 0 ? 130 : 56, right = has_legend(s, ns) ? 190 : 24;
    f.left = 72, f.top = 44, f.w = W - f.left - right, f.h = H - f.top - bottom;
    return f;
}

static void draw_axes(FILE *fp, const lpv_plot *p, const frame *f) {
    fprintf(fp, "<g font-size=\"12\" fill=\"#333\">\n");
    for (double v = ceil(f->y0 / f->ystep - 1e-9) * f->ystep; v <= f->y1 + f->ystep * 1e-9; v += f->ystep) {
        double y = py(f, v);
        fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>\n", f->left, y,
                f->left + f->w, y);
        fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">", f->left - 6, y + 4);
        put_num(fp, v, f->ystep);
        fputs("</text>\n", fp);
    }
    if (p->n_xcats > 0) {
        int every = 1 + (int)(p->n_xcats * 14 / f->w); /* rotated labels need ~14 px each */
        for (int i = 0; i < p->n_xcats; i += every) {
            double x = px(f, i);
            fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" transform=\"rotate(-60 %.2f %.2f)\">", x + 4,
                    f->top + f->h + 14, x + 4, f->top + f->h + 14);
            put_text(fp, p->xcats[i]);
            fputs("</text>\n", fp);
        }
    } else {
        for (double v = ceil(f->x0 / f->xstep - 1e-9) * f->xstep; v <= f->x1 + f->xstep * 1e-9; v += f->xstep) {
            double x = px(f, v);
            fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>\n", x, f->top, x,
                    f->top + f->h);
            fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", x, f->top + f->h + 18);
            put_num(fp, v, f->xstep);
            fputs("</text>\n", fp);
        }
    }
    fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#333\"/>\n", f->left,
            f->top, f->w, f->h);
    fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\">", f->left + f->w / 2,
            f->top + f->h + (p->n_xcats > 0 ? 124 : 44));
    put_text(fp, p->xlabel);
    fprintf(fp, "</text>\n<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\" "
                "transform=\"rotate(-90 %.2f %.2f)\">", 18.0, f->top + f->h / 2, 18.0, f->top + f->h / 2);
    put_text(fp, p->ylabel);
    fputs("</text>\n</g>\n", fp);
}

static const char *color_of(const lpv_series *s, int k) {
    int c = s->color >= 0 ? s->color : k;
    return palette[c % N_PALETTE];
}

static void draw_series(FILE *fp, const frame *f, const lpv_series *s, int k) {
    const char *col = color_of(s, k);
    fprintf(fp, "<g class=\"series\" data-name=\"");
    put_text(fp, s->name);
    fputs("\">\n", fp);
    if (s->line && s->n > 1) {
        fprintf(fp, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int i = 0; i < s->n; i++) fprintf(fp, "%s%.2f,%.2f", i ? " " : "", px(f, s->x[i]), py(f, s->y[i]));
        fputs("\"/>\n", fp);
    }
    for (int i = 0; i < s->n; i++) {
        double x = px(f, s->x[i]), y = py(f, s->y[i]);
        if (s->markers) {
            fprintf(fp, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"4.5\" ", x, y);
            if (s->hollow) fprintf(fp, "fill=\"white\" stroke=\"%s\" stroke-width=\"2\">", col);
            else fprintf(fp, "fill=\"%s\">", col);
            fputs("<title>", fp);
            put_text(fp, s->name);
            fprintf(fp, ": %.4g, %.4g", s->x[i], s->y[i]);
            if (s->labels && s->labels[i]) fputs(" (", fp), put_text(fp, s->labels[i]), fputc(')', fp);
            fputs("</title></circle>\n", fp);
        }
        if (s->labels && s->labels[i]) {
            fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" fill=\"%s\">", x + 7, y - 7, col);
            put_text(fp, s->labels[i]);
            fputs("</text>\n", fp);
        }
    }
    fputs("</g>\n", fp);
}

static void draw_legend(FILE *fp, const frame *f, const lpv_series *s, int ns) {
    double x = f->left + f->w + 16, y = f->top + 8;
    fprintf(fp, "<g class=\"legend\" font-size=\"12\">\n");
    for (int k = 0; k < ns; k++) {
        if (!s[k].name) continue;
        const char *col = color_of(&s[k], k);
        if (s[k].line) fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                               x, y, x + 22, y, col);
        if (s[k].markers)
            fprintf(fp, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"4.5\" fill=\"%s\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                    x + 11, y, s[k].hollow ? "white" : col, col);
        fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\">", x + 30, y + 4);
        put_text(fp, s[k].name);
        fputs("</text>\n", fp);
        y += 20;
    }
    fputs("</g>\n", fp);
}

lpv_status lpv_plot_svg_write(FILE *fp, const lpv_plot *p, const lpv_series *s, int ns, lpv_err *err) {
    LPV_TRY(check(p, s, ns, err));
    int W = p->width > 0 ? p->width : 760, H = p->height > 0 ? p->height : 480;
    frame f = layout(p, s, ns, W, H);
    fprintf(fp, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
                "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H, W, H);
    fprintf(fp, "<text x=\"%.2f\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", W / 2.0);
    put_text(fp, p->title);
    fputs("</text>\n", fp);
    draw_axes(fp, p, &f);
    for (int k = 0; k < ns; k++) draw_series(fp, &f, &s[k], k);
    if (has_legend(s, ns)) draw_legend(fp, &f, s, ns);
    fputs("</svg>\n", fp);
    return ferror(fp) ? lpv_fail(err, LPV_E_IO, "plot '%s': write error", p->title) : LPV_OK;
}

lpv_status lpv_plot_svg_save(const char *path, const lpv_plot *p, const lpv_series *s, int ns, lpv_err *err) {
    LPV_TRY(check(p, s, ns, err));
    lpv_atomic_file af;
    LPV_TRY(lpv_atomic_open(&af, path, err));
    lpv_status st = lpv_plot_svg_write(af.fp, p, s, ns, err);
    if (st) {
        lpv_atomic_abort(&af);
        return st;
    }
    return lpv_atomic_commit(&af, err);
}
