/*
 * test_plot.c — the SVG charts: 1-2-5 tick steps, data mapped to the right
 * pixels, text escaped, well-formed XML (a small tag-balance parser), every
 * marker present, categorical axes, and bad input refused with a message.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpvit/plot.h"
#include "test.h"

/* 1 when every element is closed in order and attributes are quoted (enough XML for our writer's output). */
static int well_formed(const char *s, char *why, size_t cap) {
    char stack[64][64];
    int depth = 0;
    for (const char *p = s; *p; p++) {
        if (*p != '<') continue;
        if (p[1] == '?') { p = strstr(p, "?>"); if (!p) return snprintf(why, cap, "unclosed <?"), 0; continue; }
        int closing = p[1] == '/';
        const char *n = p + 1 + closing;
        size_t len = strcspn(n, " \t\n/>");
        if (len == 0 || len >= 64) return snprintf(why, cap, "bad tag name"), 0;
        const char *q = n + len;
        int quote = 0;
        for (; *q && (quote || *q != '>'); q++)
            if (*q == '"') quote = !quote;
        if (!*q) return snprintf(why, cap, "unterminated <%.*s", (int)len, n), 0;
        int self = q[-1] == '/';
        if (closing) {
            if (depth == 0 || strncmp(stack[depth - 1], n, len) != 0 || stack[depth - 1][len])
                return snprintf(why, cap, "</%.*s> closes <%s>", (int)len, n, depth ? stack[depth - 1] : "nothing"), 0;
            depth--;
        } else if (!self) {
            if (depth == 64) return snprintf(why, cap, "too deep"), 0;
            memcpy(stack[depth], n, len), stack[depth][len] = 0, depth++;
        }
        p = q;
    }
    if (depth) return snprintf(why, cap, "<%s> never closed", stack[depth - 1]), 0;
    return 1;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

static char *render(const lpv_plot *p, const lpv_series *s, int ns, lpv_status *st, lpv_err *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    *st = lpv_plot_svg_write(fp, p, s, ns, err);
    fclose(fp);
    return buf;
}

static void test_ticks(void) {
    CHECK(fabs(lpv_plot_tick_step(0, 1, 6) - 0.2) < 1e-12);
    CHECK(fabs(lpv_plot_tick_step(0, 100, 6) - 20) < 1e-9);
    CHECK(fabs(lpv_plot_tick_step(1, 3.5, 6) - 0.5) < 1e-12);
    CHECK(fabs(lpv_plot_tick_step(50, 85, 6) - 5) < 1e-12);
    CHECK(lpv_plot_tick_step(2, 2, 6) == 1);
}

static void test_mapping_and_text(void) {
    const double x[] = {0, 5, 10}, y[] = {0, 2.5, 10};
    const char *labels[] = {"a<b&c", NULL, "\"q\""};
    lpv_series s[2] = {{"pruned <0.9>", 3, x, y, labels, 1, 1, 0, -1}, {"dense", 1, x + 1, y + 1, NULL, 0, 1, 1, -1}};
    lpv_plot p = lpv_plot_init("top-1 & speed", "speedup", "top-1 (%)");
    p.xmin = 0, p.xmax = 10, p.ymin = 0, p.ymax = 10;
    lpv_status st;
    lpv_err err;
    char *svg = render(&p, s, 2, &st, &err);
    CHECK_OK(st, &err);
    char why[128] = "";
    CHECKF(well_formed(svg, why, sizeof why), "svg not well formed: %s", why);
    CHECK(strncmp(svg, "<?xml", 5) == 0 && strstr(svg, "</svg>\n") != NULL);
    /* plot area: left 72, top 44, width 760 - 72 - 190 (legend), height 480 - 44 - 56 */
    CHECKF(strstr(svg, "cx=\"72.00\" cy=\"424.00\"") != NULL, "(0, 0) not at the lower left corner");
    CHECKF(strstr(svg, "cx=\"570.00\" cy=\"44.00\"") != NULL, "(10, 10) not at the upper right corner");
    CHECKF(strstr(svg, "cx=\"321.00\" cy=\"329.00\"") != NULL, "(5, 2.5) misplaced");
    CHECK(count(svg, "<circle") == 3 + 1 + 2); /* markers and the two legend swatches */
    CHECK(strstr(svg, "a&lt;b&amp;c") && strstr(svg, "&quot;q&quot;") && strstr(svg, "top-1 &amp; speed"));
    CHECK(strstr(svg, "pruned &lt;0.9&gt;") != NULL && strstr(svg, "a<b") == NULL);
    CHECK(count(svg, "<polyline") == 1);
    CHECK(strstr(svg, "nan") == NULL && strstr(svg, "inf") == NULL);
    /* tick labels with the step's decimals, no float noise */
    CHECK(strstr(svg, ">0.30000") == NULL && strstr(svg, ">2<") != NULL);
    free(svg);
}

static void test_categories(void) {
    enum { N = 48 };
    const char *cats[N];
    char names[N][32];
    double x[N], y[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "blocks.%d.fc%d", i / 4, i % 4);
        cats[i] = names[i], x[i] = i, y[i] = 0.3 + 0.01 * i;
    }
    lpv_series s = {"0.7", N, x, y, NULL, 1, 1, 0, -1};
    lpv_plot p = lpv_plot_init("density", "layer", "density");
    p.xcats = cats, p.n_xcats = N, p.ymin = 0, p.ymax = 1;
    lpv_status st;
    lpv_err err;
    char *svg = render(&p, &s, 1, &st, &err);
    CHECK_OK(st, &err);
    char why[128] = "";
    CHECKF(well_formed(svg, why, sizeof why), "%s", why);
    int shown = count(svg, "rotate(-60");
    CHECKF(shown >= 10 && shown <= N, "%d of %d category labels shown", shown, N);
    CHECK(strstr(svg, ">blocks.0.fc0<") != NULL);
    free(svg);
}

static void test_refusals(void) {
    const double x[] = {0, 1}, y[] = {1, NAN};
    lpv_series s = {"bad", 2, x, y, NULL, 1, 1, 0, -1};
    lpv_plot p = lpv_plot_init("t", "x", "y");
    lpv_status st;
    lpv_err err;
    char *svg = render(&p, &s, 1, &st, &err);
    CHECK(st == LPV_E_ARG && strstr(err.msg, "not finite") && strstr(err.msg, "'bad'"));
    free(svg);
    s.n = 0;
    svg = render(&p, &s, 1, &st, &err);
    CHECK(st == LPV_E_ARG && strstr(err.msg, "empty"));
    free(svg);
    CHECK(lpv_plot_svg_save("/nonexistent-dir/x.svg", &p, &s, 1, &err) != LPV_OK);
}

int main(void) {
    test_ticks();
    test_mapping_and_text();
    test_categories();
    test_refusals();
    return test_finish("test_plot");
}
