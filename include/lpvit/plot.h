/*
 * plot.h — small line and scatter charts as standalone SVG 1.1 files, for
 * reports a user opens in a browser (lpvit sweep: top-1 against measured
 * speedup, density per layer). Linear axes with 1-2-5 ticks, a grid, one
 * colour per series, optional point labels and a legend; every point has a
 * <title> so a browser shows its values on hover.
 *
 * The x axis is numeric, or categorical when the plot names categories
 * (x values are then indices into them; long lists label every k-th).
 *
 * Memory: nothing is kept; the caller owns all arrays. The file is written
 * atomically (fileio.h).
 */
#ifndef LPVIT_PLOT_H
#define LPVIT_PLOT_H

#include <stdio.h>

#include "lpvit/error.h"

typedef struct {
    const char *name;      /* legend entry; NULL: not in the legend */
    int n;
    const double *x, *y;   /* (n) finite */
    const char **labels;   /* optional (n): text beside each point (NULL entries skipped) */
    int line;              /* join the points in order */
    int markers;           /* a circle per point */
    int hollow;            /* markers drawn as rings */
    int color;             /* palette index; -1: the series' own index */
} lpv_series;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int width, height;         /* pixels; 0: 760 x 480 */
    double xmin, xmax, ymin, ymax; /* NAN: from the data, padded to ticks */
    const char **xcats;        /* optional (n_xcats): categorical x axis */
    int n_xcats;
} lpv_plot;

/* A plot with no limits set (all NAN) and the default size. */
lpv_plot lpv_plot_init(const char *title, const char *xlabel, const char *ylabel);

/* Writes the SVG to fp. LPV_E_ARG when a value is not finite or a series is empty. */
lpv_status lpv_plot_svg_write(FILE *fp, const lpv_plot *p, const lpv_series *s, int ns, lpv_err *err);
/* The same to a file, atomically. */
lpv_status lpv_plot_svg_save(const char *path, const lpv_plot *p, const lpv_series *s, int ns, lpv_err *err);

/* The tick step a 1-2-5 axis over [lo, hi] uses for about `target` ticks. */
double lpv_plot_tick_step(double lo, double hi, int target);

#endif
