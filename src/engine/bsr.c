/*
 * bsr.c — BSR builders and validation, the kernel layout, the reference
 * kernel, the thread split / blocking plan and ISA dispatch (see
 * include/lpvit/bsr.h; the vector kernels are in bsr_avx2.c / bsr_avx512.c).
 *
 * Kernel layout `packed`: for block row i (blocks [rp, rp + nb), rp =
 * row_ptr[i]) the region [rp·R·C, (rp + nb)·R·C) holds, for each 8-row group
 * s of the block row, its nb blocks' 8×C slices transposed to [C][8]:
 *     packed[rp·R·C + s·nb·8·C + j·8·C + k·8 + r] = values[rp + j][8s + r][k]
 * so one group streams its weights contiguously, 8 weights (one per output
 * row) per input column k: the 8 broadcasts of one k-step are one 32-byte line.
 *
 * Plan: the 8-row groups are split over threads by a prefix of their work
 * (kept blocks·C + alpha), i.e. balanced by nnz at 8-row granularity; when
 * there are fewer than 2 groups per thread, token vectors are split instead.
 * Within a thread, two walk orders (lpv__bsr_plan.x_in_l1):
 *  - AVX-512 tiles (8 rows, X reused 8 times a load): token panels × K chunks
 *    × groups × register tiles, the panel's X in L2 and a group's weights of
 *    one chunk in L1 (plan_blocking);
 *  - AVX2 tiles (2 rows: 16 ymm registers hold less) would need twice the L2
 *    bandwidth per FLOP that way, so: K chunks × row blocks × narrow panels ×
 *    groups, X of one chunk × panel copied to a contiguous per-thread buffer
 *    that stays in L1 for every group of the row block, whose weights of the
 *    chunk stay in L2 (plan_blocking_l1; measured on Zen 4, `--isa avx2`,
 *    DeiT-B shapes: ~75 -> ~90 GFLOP/s a core). The int8 AVX2 and AVX-VNNI
 *    kernels walk the same way on a copy of the panel's quads (pack_panel_q8).
 */
#include "lpvit/bsr.h"
#include "lpvit/safetensors.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#include <xmmintrin.h>

#include "engine/kernels/bsr_internal.h"
#include "engine/kernels/vmath.h"

/* The knobs per blocking profile (lpv_blocking, cpu.h), chosen once before main() (tests then change
 * lpv__bsr_tune freely). Measured with interleaved A/B runs of the DeiT-B shapes, 2 threads
 * (docs/benchmarks.md#cache-blocking-per-cpu):
 *  - zen (AMD Zen 4, 1 MB L2): the first tuning; there, a group whose kept weights fit 16 KB runs over all
 *    tokens with X streaming from L3 (3-6 % faster at d <= 0.3).
 *  - intel (Xeon, 2 MB L2): streaming X from the mesh L3 costs 25-30 % at d = 0.5 (K = 768), so only
 *    groups under 4 KB (d <~ 0.15 at K = 768) do it; a group's chunk of weights stays at 384 kept columns
 *    (12 KB: in L1 beside the X stream) and the panel takes half the larger L2. On the DeiT-B forward pass,
 *    batch 8, 50 % of 32x32 blocks kept: 96 -> 71 ms per image, the dense model unchanged (within noise),
 *    DeiT-S and ViT-Tiny 4-6 % faster sparse; BF16 and int8 VNNI unchanged. */
/* What both tables share: the thread split's group cost and the x_in_l1 walk's knobs (AVX2 FP32 and int8).
 * Those are zen's on Intel too: on this Xeon with --isa avx2, 1 MB row blocks, 2-vector panels or a 16 KB L1
 * budget for X were 4-14 % slower (A/B as above); an AVX2-only Intel core is unmeasured. */
#define SHARED_KNOBS                                                                                            \
    .alpha = 6, .l1_x_bytes = 24 << 10, .l2_w_bytes = 384 << 10, .l1_panel_vec = 3, .q8_l1_x_bytes = 24 << 10, \
    .q8_panel_vec = 3
static const lpv__bsr_tuning TUNING[LPV_BLOCKING_COUNT] = {
    [LPV_BLOCKING_ZEN] = {.l2_bytes = 512 << 10, .l1_w_bytes = 16 << 10, .kept_cols = 1024, .avx2_rows = 2,
                          .avx512_pf = LPV_PF_NEXT_X, SHARED_KNOBS},
    [LPV_BLOCKING_INTEL] = {.l2_bytes = 1024 << 10, .l1_w_bytes = 4 << 10, .kept_cols = 384, .avx2_rows = 4,
                            .avx512_pf = LPV_PF_NEXT_X, SHARED_KNOBS},
    [LPV_BLOCKING_ZEN5] = {.l2_bytes = 512 << 10, .l1_w_bytes = 16 << 10, .kept_cols = 1024, .avx2_rows = 2,
                           .avx512_pf = LPV_PF_NEXT_W, SHARED_KNOBS},
};
#undef SHARED_KNOBS

lpv__bsr_tuning lpv__bsr_tune;

const lpv__bsr_tuning *lpv__bsr_tuning_of(lpv_blocking b) { return &TUNING[b]; }

__attribute__((constructor)) static void tune_for_cpu(void) { lpv__bsr_tune = TUNING[lpv_blocking_get()]; }

static int block_dim_ok(int v) { return v == 8 || v == 16 || v == 32 || v == 64; }

static const char *nm(const char *name) { return name && *name ? name : "weight"; }

/* Checks what both builders need; fills the derived counts. */
static lpv_status check_shape(lpv_bsr *b, int rows, int cols, int R, int C, const char *name, lpv_err *err) {
    memset(b, 0, sizeof *b); /* a failed build leaves an empty lpv_bsr that lpv_bsr_free accepts */
    if (!block_dim_ok(R) || !block_dim_ok(C))
        return lpv_fail(err, LPV_E_UNSUPPORTED, "bsr '%s': block %dx%d not supported, expected R and C in {8, 16, 32, 64}",
                        nm(name), R, C);
    if (rows < 1 || cols < 1)
        return lpv_fail(err, LPV_E_SHAPE, "bsr '%s': dense shape [%d, %d], expected both dimensions >= 1", nm(name), rows,
                        cols);
    b->rows = rows;
    b->cols = cols;
    b->R = R;
    b->C = C;
    b->nbr = lpv_ceil_div(rows, R);
    b->nbc = lpv_ceil_div(cols, C);
    b->ngran = (cols + LPV_BSR_KGRAN - 1) / LPV_BSR_KGRAN;
    b->ngroups = (rows + 7) / 8;
    if ((int64_t)b->nbr * b->nbc > INT32_MAX)
        return lpv_fail(err, LPV_E_SHAPE, "bsr '%s': %d x %d blocks exceed the int32 block index", nm(name), b->nbr,
                        b->nbc);
    return LPV_OK;
}

/* Allocates every array (values, packed, indices, tables) for b->nnzb blocks. */
static lpv_status alloc_arrays(lpv_bsr *b, lpv_arena *arena, const char *name, lpv_err *err) {
    int64_t nval = b->nnzb * b->R * b->C;
    size_t bytes = (size_t)nval * sizeof(float) * 2 + (size_t)(b->nbr + 1 + b->nnzb) * sizeof(int32_t) +
                   (size_t)b->nbr * (size_t)(b->ngran + 1) * sizeof(int32_t) +
                   (size_t)(b->ngroups + 1) * sizeof(int64_t) + 6 * 64;
    if (!arena) {
        lpv_arena_init(&b->own, bytes);
        b->owns_arena = 1;
        arena = &b->own;
    }
    b->row_ptr = lpv_arena_alloc(arena, (size_t)(b->nbr + 1) * sizeof(int32_t));
    b->col_idx = lpv_arena_alloc(arena, (size_t)b->nnzb * sizeof(int32_t));
    b->values = lpv_arena_alloc(arena, (size_t)nval * sizeof(float));
    b->packed = lpv_arena_alloc(arena, (size_t)nval * sizeof(float));
    b->gran_ptr = lpv_arena_alloc(arena, (size_t)b->nbr * (size_t)(b->ngran + 1) * sizeof(int32_t));
    b->group_cost = lpv_arena_alloc(arena, (size_t)(b->ngroups + 1) * sizeof(int64_t));
    if (!b->row_ptr || !b->col_idx || !b->values || !b->packed || !b->gran_ptr || !b->group_cost) {
        if (b->owns_arena) lpv_arena_free(&b->own);
        memset(b, 0, sizeof *b);
        return lpv_fail(err, LPV_E_OOM, "bsr '%s': cannot allocate %zu bytes", nm(name), bytes);
    }
    return LPV_OK;
}

/* Zeroes the parts of partial edge blocks that lie outside the dense matrix. */
static void zero_edges(lpv_bsr *b) {
    int R = b->R, C = b->C;
    int rlast = b->rows - (b->nbr - 1) * R, clast = b->cols - (b->nbc - 1) * C;
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++) {
            int nr = i == b->nbr - 1 ? rlast : R, nc = b->col_idx[j] == b->nbc - 1 ? clast : C;
            if (nr == R && nc == C) continue;
            float *v = b->values + (int64_t)j * R * C;
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++)
                    if (r >= nr || c >= nc) v[r * C + c] = 0.0f;
        }
}

/* packed from values (see the top of this file). */
static void pack_values(lpv_bsr *b) {
    int R = b->R, C = b->C, gpb = R / 8;
    for (int i = 0; i < b->nbr; i++) {
        int32_t rp = b->row_ptr[i], nb = b->row_ptr[i + 1] - rp;
        for (int s = 0; s < gpb; s++)
            for (int32_t j = 0; j < nb; j++) {
                const float *src = b->values + (int64_t)(rp + j) * R * C + (int64_t)s * 8 * C;
                float *dst = b->packed + (int64_t)rp * R * C + ((int64_t)s * nb + j) * 8 * C;
                for (int k = 0; k < C; k++)
                    for (int r = 0; r < 8; r++) dst[k * 8 + r] = src[r * C + k];
            }
    }
}

static void fill_bf16(lpv_bsr *b);

void lpv__bsr_repack(lpv_bsr *b) {
    pack_values(b);
    if (b->packed_bf16) fill_bf16(b);
}

/* Builds packed, gran_ptr and group_cost from row_ptr / col_idx / values. */
static void build_tables(lpv_bsr *b) {
    int R = b->R, C = b->C, gpb = R / 8;
    pack_values(b);
    for (int i = 0; i < b->nbr; i++) {
        int32_t rp = b->row_ptr[i], nb = b->row_ptr[i + 1] - rp;
        int32_t *gp = b->gran_ptr + (int64_t)i * (b->ngran + 1);
        int32_t j = rp;
        for (int g = 0; g <= b->ngran; g++) {
            int64_t c0 = (int64_t)g * LPV_BSR_KGRAN;
            while (j < rp + nb && (int64_t)b->col_idx[j] * C < c0) j++;
            gp[g] = g == b->ngran ? rp + nb : j;
        }
    }
    b->group_cost[0] = 0;
    for (int g = 0; g < b->ngroups; g++) {
        int i = g / gpb;
        int64_t nb = b->row_ptr[i + 1] - b->row_ptr[i];
        b->group_cost[g + 1] = b->group_cost[g] + nb * C + lpv__bsr_tune.alpha;
    }
}

lpv_status lpv_bsr_from_dense(lpv_bsr *b, const float *W, int rows, int cols, int R, int C, const uint8_t *mask,
                              lpv_arena *arena, const char *name, lpv_err *err) {
    LPV_TRY(check_shape(b, rows, cols, R, C, name, err));
    int64_t nnzb = 0;
    for (int64_t i = 0; i < (int64_t)b->nbr * b->nbc; i++) nnzb += !mask || mask[i];
    b->nnzb = nnzb;
    LPV_TRY(alloc_arrays(b, arena, name, err));
    int32_t k = 0;
    b->row_ptr[0] = 0;
    for (int i = 0; i < b->nbr; i++) {
        for (int j = 0; j < b->nbc; j++) {
            if (mask && !mask[(int64_t)i * b->nbc + j]) continue;
            b->col_idx[k] = j;
            float *v = b->values + (int64_t)k * R * C;
            for (int r = 0; r < R && i * R + r < rows; r++)
                for (int c = 0; c < C && j * C + c < cols; c++) v[r * C + c] = W[(int64_t)(i * R + r) * cols + j * C + c];
            k++;
        }
        b->row_ptr[i + 1] = k;
    }
    build_tables(b);
    return LPV_OK;
}

lpv_status lpv_bsr_from_arrays(lpv_bsr *b, int rows, int cols, int R, int C, const float *values, int64_t n_values,
                               const int32_t *col_idx, int64_t n_col, const int32_t *row_ptr, int64_t n_row_ptr,
                               lpv_arena *arena, const char *name, lpv_err *err) {
    LPV_TRY(check_shape(b, rows, cols, R, C, name, err));
    const char *n = nm(name);
    int nbr = b->nbr, nbc = b->nbc;
    if (n_row_ptr != (int64_t)nbr + 1)
        return lpv_fail(err, LPV_E_SHAPE,
                        "bsr '%s': row_ptr has %lld entries, expected nbr + 1 = %d (%d rows in blocks of %d)", n,
                        (long long)n_row_ptr, nbr + 1, rows, R);
    if (n_col < 0 || n_col > (int64_t)nbr * nbc)
        return lpv_fail(err, LPV_E_SHAPE, "bsr '%s': col_idx has %lld entries, expected at most nbr x nbc = %lld", n,
                        (long long)n_col, (long long)nbr * nbc);
    if (!row_ptr || (n_col > 0 && (!col_idx || !values)))
        return lpv_fail(err, LPV_E_ARG, "bsr '%s': missing array (row_ptr, col_idx or values is NULL)", n);
    if (row_ptr[0] != 0) return lpv_fail(err, LPV_E_FORMAT, "bsr '%s': row_ptr[0] is %d, expected 0", n, row_ptr[0]);
    for (int i = 0; i < nbr; i++) {
        if (row_ptr[i + 1] < row_ptr[i])
            return lpv_fail(err, LPV_E_FORMAT, "bsr '%s': row_ptr decreases at block row %d: %d after %d, expected non-decreasing",
                            n, i, row_ptr[i + 1], row_ptr[i]);
        if (row_ptr[i + 1] - row_ptr[i] > nbc)
            return lpv_fail(err, LPV_E_FORMAT, "bsr '%s': block row %d has %d blocks, expected at most nbc = %d", n, i,
                            row_ptr[i + 1] - row_ptr[i], nbc);
    }
    if ((int64_t)row_ptr[nbr] != n_col)
        return lpv_fail(err, LPV_E_FORMAT, "bsr '%s': row_ptr[%d] is %d, expected nnzb = %lld (the col_idx count)", n, nbr,
                        row_ptr[nbr], (long long)n_col);
    int64_t want = n_col * R * C;
    if (n_values != want)
        return lpv_fail(err, LPV_E_SHAPE, "bsr '%s': values has %lld floats, expected nnzb x R x C = %lld x %d x %d = %lld",
                        n, (long long)n_values, (long long)n_col, R, C, (long long)want);
    for (int i = 0; i < nbr; i++)
        for (int32_t j = row_ptr[i]; j < row_ptr[i + 1]; j++) {
            if (col_idx[j] < 0 || col_idx[j] >= nbc)
                return lpv_fail(err, LPV_E_FORMAT, "bsr '%s': col_idx[%d] (block row %d) is %d, expected in [0, %d)", n, j, i,
                                col_idx[j], nbc);
            if (j > row_ptr[i] && col_idx[j] <= col_idx[j - 1])
                return lpv_fail(err, LPV_E_FORMAT,
                                "bsr '%s': col_idx not strictly increasing in block row %d: %d after %d at index %d", n, i,
                                col_idx[j], col_idx[j - 1], j);
        }
    b->nnzb = n_col;
    LPV_TRY(alloc_arrays(b, arena, name, err));
    memcpy(b->row_ptr, row_ptr, (size_t)(nbr + 1) * sizeof(int32_t));
    if (n_col) {
        memcpy(b->col_idx, col_idx, (size_t)n_col * sizeof(int32_t));
        memcpy(b->values, values, (size_t)want * sizeof(float));
    }
    zero_edges(b);
    build_tables(b);
    return LPV_OK;
}

void lpv_bsr_to_dense(const lpv_bsr *b, float *W) {
    int R = b->R, C = b->C;
    memset(W, 0, (size_t)b->rows * (size_t)b->cols * sizeof(float));
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++) {
            const float *v = b->values + (int64_t)j * R * C;
            int c0 = b->col_idx[j] * C;
            for (int r = 0; r < R && i * R + r < b->rows; r++)
                for (int c = 0; c < C && c0 + c < b->cols; c++) W[(int64_t)(i * R + r) * b->cols + c0 + c] = v[r * C + c];
        }
}

void lpv_bsr_set_dense_values(lpv_bsr *b, const float *W) {
    int R = b->R, C = b->C;
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++) {
            float *v = b->values + (int64_t)j * R * C;
            int c0 = b->col_idx[j] * C;
            for (int r = 0; r < R && i * R + r < b->rows; r++)
                for (int c = 0; c < C && c0 + c < b->cols; c++) v[r * C + c] = W[(int64_t)(i * R + r) * b->cols + c0 + c];
        }
    lpv__bsr_repack(b);
}

void lpv_bsr_mask(const lpv_bsr *b, uint8_t *mask) {
    memset(mask, 0, (size_t)b->nbr * (size_t)b->nbc);
    for (int i = 0; i < b->nbr; i++)
        for (int32_t j = b->row_ptr[i]; j < b->row_ptr[i + 1]; j++) mask[(int64_t)i * b->nbc + b->col_idx[j]] = 1;
}

double lpv_bsr_density(const lpv_bsr *b) {
    int64_t n = (int64_t)b->nbr * b->nbc;
    return n ? (double)b->nnzb / (double)n : 0.0;
}

void lpv_bsr_free(lpv_bsr *b) {
    if (b->owns_arena) lpv_arena_free(&b->own);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------------------
 * Plan: thread split and blocking. */

/* First group g in [0, ngroups] with group_cost[g] >= target. */
static int group_at_cost(const lpv_bsr *W, int64_t target) {
    int lo = 0, hi = W->ngroups;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (W->group_cost[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Panel width and K chunk for `nvec` token vectors (see lpv__bsr_plan). */
/* eb: bytes per element of X and of the weights (4 FP32 and BF16, whose budgets were tuned on FP32; 1 for the
 * int8 VNNI kernel, whose quads make X and weights 4x smaller and each k-step 4x shorter) */
static void plan_blocking(const lpv_bsr *W, int nvec, int eb, lpv__bsr_plan *p) {
    const lpv__bsr_tuning *t = &lpv__bsr_tune;
    int64_t xbytes = (int64_t)W->cols * nvec * 16 * eb;
    p->panel_vec = nvec;
    p->chunk_gran = W->ngran;
    p->x_in_l1 = 0;
    p->rowblock = W->ngroups;
    if (xbytes <= t->l2_bytes || nvec <= 0) return;
    double d = lpv_bsr_density(W);
    if (d <= 0) return;
    /* Sparse enough that a group's weights stay in L1 for its whole token
     * range: run each group over all tokens. X then streams from L3, but the
     * next-tile prefetch is timely, and no weight is re-read per panel
     * (measured 3-6 % faster than panels at d <= 0.3, K >= 768, T = 1576). */
    if (eb == 4 && (double)W->cols * d * 8 * sizeof(float) <= (double)t->l1_w_bytes) return;
    /* K chunk: about kept_cols kept columns per group, so reloading the
     * accumulators once per chunk stays cheap; then the widest panel whose
     * X (chunk × panel) fits the budget, at least one 3-vector tile. */
    int m = (int)((double)t->kept_cols * (4 / eb) / (d * LPV_BSR_KGRAN) + 0.5);
    if (m < 1) m = 1;
    if (m > W->ngran) m = W->ngran;
    int64_t chunk_cols = (int64_t)m * LPV_BSR_KGRAN;
    if (chunk_cols > W->cols) chunk_cols = W->cols;
    int pv = (int)(t->l2_bytes / (chunk_cols * 16 * eb));
    pv = pv / 3 * 3;
    if (pv < 3) pv = 3;
    if (pv > nvec) pv = nvec;
    /* spread the vectors evenly over the panels (no 1-vector leftovers) */
    int npanel = (nvec + pv - 1) / pv;
    pv = (nvec + npanel - 1) / npanel;
    p->panel_vec = pv;
    p->chunk_gran = m;
}

/* The x_in_l1 walk copies X (chunk × panel) into this per-thread buffer, rows contiguous: every k-step of a
 * tile then reads the next few cache lines instead of jumping a whole row of X. */
#define XPACK_BYTES (64 << 10)
static _Thread_local _Alignas(64) float xpack[XPACK_BYTES / sizeof(float)];

/* The x_in_l1 plan: panels of l1_panel_vec vectors, the K chunk whose X over one panel fits l1_x_bytes, and
 * row blocks whose kept weights of one chunk fit l2_w_bytes. eb: bytes of an input element in the packed panel
 * and in the packed weights (FP32: 4; int8 AVX2 and AVX-VNNI: 1, quads). */
static void plan_blocking_l1(const lpv_bsr *W, int ngroups, int nvec, int eb, lpv__bsr_plan *p) {
    const lpv__bsr_tuning *t = &lpv__bsr_tune;
    const int vg = 16 * eb * LPV_BSR_KGRAN; /* bytes of one vector × granule of X */
    const int q8 = eb < (int)sizeof(float);
    const int64_t l1_x = q8 ? t->q8_l1_x_bytes : t->l1_x_bytes;
    int pv = q8 ? t->q8_panel_vec : t->l1_panel_vec;
    if (pv > nvec) pv = nvec;
    if (pv > XPACK_BYTES / vg) pv = XPACK_BYTES / vg; /* one granule fits */
    /* a sparser chunk gives each group fewer k-steps per call for the same X: widen it, up to 2x, although
     * the panel then spills from L1 (measured --isa avx2, T = 1576: d = 0.5 best at 1.5x, d <= 0.3 at 2x) */
    double d = lpv_bsr_density(W), widen = d > 0 ? 0.75 / d : 2;
    widen = widen < 1 ? 1 : widen > 2 ? 2 : widen;
    int64_t budget = (int64_t)((double)l1_x * widen);
    if (budget > XPACK_BYTES) budget = XPACK_BYTES;
    int m = (int)lround((double)budget / ((double)pv * vg));
    if ((int64_t)m * pv * vg > XPACK_BYTES) m--;
    if (m < 1) m = 1;
    if (m > W->ngran) m = W->ngran;
    double kept = (double)m * LPV_BSR_KGRAN * d * 8 * eb; /* bytes a group */
    int rb = kept > 0 ? (int)((double)t->l2_w_bytes / kept) : ngroups;
    if (rb < 1) rb = 1;
    if (rb > ngroups) rb = ngroups;
    p->x_in_l1 = 1;
    p->panel_vec = pv > 0 ? pv : 1;
    p->chunk_gran = m;
    p->rowblock = rb;
}

/* x_in_l1: 0, or the packed panel's bytes per element (plan_blocking_l1's eb); eb: plan_blocking's */
static void make_plan(const lpv_bsr *W, int ldx, int ldy, int T, int tid, int nt, int x_in_l1, int eb,
                      lpv__bsr_plan *p) {
    int T16 = lpv_round16(T);
    if (T16 <= ldx && T16 <= ldy) {
        p->nvec_full = T16 / 16;
        p->tail = 0;
    } else {
        p->nvec_full = T / 16;
        p->tail = T % 16;
    }
    int nv = p->nvec_full + (p->tail > 0);
    if (nt <= 1) {
        p->g0 = 0;
        p->g1 = W->ngroups;
        p->v0 = 0;
        p->v1 = nv;
    } else if (W->ngroups >= 2 * nt || nv < 2) {
        int64_t total = W->group_cost[W->ngroups];
        p->g0 = tid == 0 ? 0 : group_at_cost(W, (total * tid + nt / 2) / nt);
        p->g1 = tid == nt - 1 ? W->ngroups : group_at_cost(W, (total * (tid + 1) + nt / 2) / nt);
        p->v0 = 0;
        p->v1 = nv;
    } else {
        p->g0 = 0;
        p->g1 = W->ngroups;
        p->v0 = (int)((int64_t)nv * tid / nt);
        p->v1 = (int)((int64_t)nv * (tid + 1) / nt);
    }
    if (x_in_l1) plan_blocking_l1(W, p->g1 - p->g0, p->v1 - p->v0, x_in_l1, p);
    else plan_blocking(W, p->v1 - p->v0, eb, p);
}

/* ---------------------------------------------------------------------------
 * Reference kernel: plain loops over the canonical `values`, same split. With X2 (BF16 pairs) instead of X,
 * the BF16 reference: BF16-rounded weights times the pairs' values, summed in FP32 in k order. */

/* The activations of one product: FP32 X, BF16 pairs X2, or int8 quads X4 with their per-token scales
 * (exactly one of X, X2, X4). */
typedef struct {
    const float *X;
    const uint32_t *X2;
    const uint32_t *X4;
    const float *xa, *xc;
    float *range;      /* int8 GELU products recording their output's range: (nthreads, 2, ldy) scratch, per thread
                        * its running min then max per column; NULL: not asked */
} operand;

static float gelu_ref(float v) { return (float)(0.5 * (double)v * erfc(-(double)v * 0.70710678118654752440)); }

static void part_ref(const lpv_bsr *W, const float *bias, const float *X, const uint32_t *X2, int ldx, float *Y,
                     int ldy, int T, int epi, const lpv__bsr_plan *p) {
    int R = W->R, C = W->C;
    int t0 = p->v0 * 16, t1 = p->v1 * 16 < T ? p->v1 * 16 : T;
    int r1 = p->g1 * 8 < W->rows ? p->g1 * 8 : W->rows;
    for (int r = p->g0 * 8; r < r1; r++) {
        int i = r / R;
        float *y = Y + (int64_t)r * ldy;
        float bv = (epi & LPV_EPI_BIAS) && bias ? bias[r] : 0.0f;
        for (int t = t0; t < t1; t++) y[t] = ((epi & LPV_EPI_ACC) ? y[t] : 0.0f) + bv;
        for (int32_t j = W->row_ptr[i]; j < W->row_ptr[i + 1]; j++) {
            const float *v = W->values + (int64_t)j * R * C + (int64_t)(r - i * R) * C;
            int c0 = W->col_idx[j] * C;
            for (int c = 0, k = c0; c < C && k < W->cols; c++, k++) {
                if (X2) {
                    const uint32_t *x = X2 + (int64_t)(k / 2) * ldx;
                    float w = lpv_bf16_to_f32(lpv_bf16_from_f32(v[c]));
                    int shift = k % 2 ? 16 : 0;
                    for (int t = t0; t < t1; t++) y[t] += w * lpv_bf16_to_f32((uint16_t)(x[t] >> shift));
                } else {
                    const float *x = X + (int64_t)k * ldx;
                    for (int t = t0; t < t1; t++) y[t] += v[c] * x[t];
                }
            }
        }
        if (epi & LPV_EPI_GELU)
            for (int t = t0; t < t1; t++) y[t] = gelu_ref(y[t]);
    }
}

/* ---------------------------------------------------------------------------
 * The driver every SIMD kernel shares: it walks the plan and hands each 8-row
 * group's blocks of one K chunk over one token panel to the ISA's kernel. */

typedef struct {
    const lpv_bsr *W;
    const float *bias;
    float *Y;
    int acc_mode, gelu;
    lpv_q8_kernel q8; /* int8: which pack the kernel reads (LPV_Q8_REF: not int8) */
    lpv__bsr_group a;
    float b8[8];
    lpv__bsr_group_fn run;
} simd_walk;

/* Sets the token columns of panel [pv0, pv1) (the partial vector last, when the panel holds it). */
static void walk_panel(simd_walk *w, const lpv__bsr_plan *p, int pv0, int pv1) {
    int has_tail = p->tail > 0 && pv1 > p->nvec_full; /* then vector pv1 - 1 is the partial one */
    w->a.v0 = pv0, w->a.v1 = has_tail ? pv1 - 1 : pv1, w->a.tail = has_tail ? p->tail : 0;
}

/* Rows [r0, r1) of the panel's columns of a matrix of 4-byte elements (floats or int8 quads; row stride ldx)
 * into xpack, rows contiguous at stride ld; columns past a partial vector's tail are zeroed, never read. */
static void copy_panel(const void *M, int64_t ldx, int r0, int r1, int t0, int n, int ld) {
    LPV_ASSERT((int64_t)(r1 - r0) * ld * 4 <= XPACK_BYTES);
    for (int r = r0; r < r1; r++) {
        char *dst = (char *)xpack + (int64_t)(r - r0) * ld * 4;
        const char *src = (const char *)M + ((int64_t)r * ldx + t0) * 4;
        for (int c = ld; c < 2 * ld; c += 16) /* the next panel's part of the row: in L2 when it is packed */
            _mm_prefetch(src + (int64_t)c * 4, _MM_HINT_T1);
        memcpy(dst, src, 4 * (size_t)n);
        if (n < ld) memset(dst + (int64_t)n * 4, 0, 4 * (size_t)(ld - n));
    }
}

/* Copies X rows [k0, k1) of the panel's columns into xpack (ld: the panel's width) and points the group at it. */
static void pack_panel(simd_walk *w, const float *X, int64_t ldx, int k0, int k1) {
    lpv__bsr_group *a = &w->a;
    int t0 = 16 * a->v0, n = 16 * (a->v1 - a->v0) + a->tail, ld = 16 * (a->v1 - a->v0) + (a->tail ? 16 : 0);
    copy_panel(X, ldx, k0, k1, t0, n, ld);
    a->X = xpack, a->ldx = ld, a->k0 = k0, a->xt0 = t0;
}

/* The int8 form of pack_panel (AVX2, AVX-VNNI): quad rows [k0 / 4, ceil(k1 / 4)) of the panel's columns of X4. */
static void pack_panel_q8(simd_walk *w, const uint32_t *X4, int64_t ldx, int k0, int k1) {
    lpv__bsr_group *a = &w->a;
    int t0 = 16 * a->v0, n = 16 * (a->v1 - a->v0) + a->tail, ld = 16 * (a->v1 - a->v0) + (a->tail ? 16 : 0);
    LPV_ASSERT(k0 % 4 == 0);
    copy_panel(X4, ldx, k0 / 4, (k1 + 3) / 4, t0, n, ld);
    a->Xp = (const uint32_t *)xpack, a->ldx = ld, a->k0 = k0, a->xt0 = t0;
}

/* Group g's blocks of granules [gl, gh): [*bs, *be) in col_idx; returns where their packed weights start
 * (in floats). */
static int64_t group_chunk(const lpv_bsr *W, int g, int gl, int gh, int32_t *bs, int32_t *be) {
    const int R = W->R, C = W->C, gpb = R / 8;
    int i = g / gpb, s = g % gpb;
    int32_t rp = W->row_ptr[i], nbt = W->row_ptr[i + 1] - rp;
    const int32_t *gp = W->gran_ptr + (int64_t)i * (W->ngran + 1);
    *bs = gp[gl], *be = gp[gh];
    return (int64_t)rp * R * C + ((int64_t)s * nbt + (*bs - rp)) * 8 * C;
}

/* Group g's blocks of granules [gl, gh) over the current panel; `next` (-1: none) is the group the walk runs
 * after it, on the same granules, whose weights the kernel may prefetch. */
static void walk_group(simd_walk *w, int g, int next, int gl, int gh) {
    static const float zeros[8];
    const lpv_bsr *W = w->W;
    int first = gl == 0, last = gh == W->ngran;
    int32_t bs, be;
    int64_t off = group_chunk(W, g, gl, gh, &bs, &be);
    if (!first && bs == be && !(last && w->gelu)) return;
    lpv__bsr_group *a = &w->a;
    int32_t nbs, nbe;
    a->wnext = next >= 0 ? group_chunk(W, next, gl, gh, &nbs, &nbe) - off : 0;
    a->nrows = W->rows - 8 * g < 8 ? W->rows - 8 * g : 8;
    a->wp = W->packed + off;
    a->wp2 = W->packed_bf16 ? W->packed_bf16 + off / 2 : NULL;
    a->wq = w->q8 ? W->packed_q8 + off / 4 : NULL;
    if (w->q8) a->ws8 = W->qscale + 8 * g, a->wsum8 = first ? W->qsum + 8 * g : zeros;
    a->ci = W->col_idx + bs;
    a->nb = be - bs;
    a->init_y = !first || w->acc_mode;
    a->b8 = zeros;
    if (first && w->bias) {
        for (int r = 0; r < 8; r++) w->b8[r] = r < a->nrows ? w->bias[8 * g + r] : 0.0f;
        a->b8 = w->b8;
    }
    a->Y = w->Y + (int64_t)8 * g * a->ldy;
    a->gelu = last && w->gelu;
    w->run(a);
}

/* Asks for the first kilobyte of group g's weights of granules [gl, gh): the kernel's own prefetch runs a
 * kilobyte ahead of its loads, so without this every group would start on L2 misses. */
static void prefetch_w(const simd_walk *w, int g, int gl, int gh) {
    int32_t bs, be;
    int64_t off = group_chunk(w->W, g, gl, gh, &bs, &be);
    int eb = w->q8 ? 1 : (int)sizeof(float); /* packed_q8: a byte a weight */
    const char *p = w->q8 ? (const char *)(w->W->packed_q8 + off / 4) : (const char *)(w->W->packed + off);
    int64_t n = (int64_t)(be - bs) * 8 * w->W->C * eb;
    for (int64_t c = 0; c < n && c < 1024; c += 64) _mm_prefetch(p + c, _MM_HINT_T0);
}

/* The driver every SIMD kernel shares; each 8-row group's blocks of one K chunk over one token panel run by
 * the ISA's micro-kernel, in the plan's order (lpv__bsr_plan.x_in_l1). */
static void part_simd(const lpv_bsr *W, const float *bias, const operand *o, int ldx, float *Y, int ldy, int epi,
                      const lpv__bsr_plan *p, lpv__bsr_group_fn run, lpv_q8_kernel q8, float *cmin, float *cmax) {
    const float *X = o->X;
    simd_walk w = {.W = W, .bias = bias, .Y = Y, .run = run};
    w.acc_mode = (epi & LPV_EPI_ACC) != 0, w.gelu = (epi & LPV_EPI_GELU) != 0;
    w.q8 = o->X4 ? q8 : LPV_Q8_REF;
    w.a.X4 = o->X4, w.a.xa = o->xa, w.a.xc = o->xc, w.a.cmin = cmin, w.a.cmax = cmax;
    w.a.X = X, w.a.X2 = o->X2, w.a.ldx = ldx, w.a.ldy = ldy, w.a.C = W->C, w.a.K = W->cols;
    const int ngran = W->ngran, cg = p->chunk_gran, pvw = p->panel_vec;
    if (p->x_in_l1) {
        /* panels of at most pvw vectors, their sizes differing by one at most: no 1-vector panel (its 2 x 2
         * tile would be FMA-latency bound), e.g. 13 vectors as 2, 3, 2, 3, 3 */
        const int nv = p->v1 - p->v0, np = (nv + pvw - 1) / pvw;
        for (int gl = 0; gl < ngran; gl += cg) {
            int gh = gl + cg < ngran ? gl + cg : ngran;
            int k1 = gh * LPV_BSR_KGRAN < W->cols ? gh * LPV_BSR_KGRAN : W->cols;
            for (int rb = p->g0; rb < p->g1; rb += p->rowblock) {
                int re = rb + p->rowblock < p->g1 ? rb + p->rowblock : p->g1;
                for (int q = 0; q < np; q++) {
                    walk_panel(&w, p, p->v0 + nv * q / np, p->v0 + nv * (q + 1) / np);
                    if (w.q8) pack_panel_q8(&w, o->X4, ldx, gl * LPV_BSR_KGRAN, k1);
                    else pack_panel(&w, X, ldx, gl * LPV_BSR_KGRAN, k1);
                    for (int g = rb; g < re; g++) {
                        if (g + 1 < re) prefetch_w(&w, g + 1, gl, gh);
                        walk_group(&w, g, -1, gl, gh);
                    }
                }
            }
        }
        return;
    }
    for (int pv0 = p->v0; pv0 < p->v1; pv0 += pvw) {
        walk_panel(&w, p, pv0, pv0 + pvw < p->v1 ? pv0 + pvw : p->v1);
        for (int gl = 0; gl < ngran; gl += cg) {
            int gh = gl + cg < ngran ? gl + cg : ngran;
            for (int g = p->g0; g < p->g1; g++) walk_group(&w, g, g + 1 < p->g1 ? g + 1 : -1, gl, gh);
        }
    }
}

/* The int8 reference: int64 sums of q · u over the row's blocks (never overflowing), then the epilogue of
 * bsr.h in the order the kernels use. */
static void part_ref_q8(const lpv_bsr *W, const float *bias, const operand *o, int ldx, float *Y, int ldy, int T,
                        int epi, const lpv__bsr_plan *p, float *cmin, float *cmax) {
    int R = W->R, C = W->C;
    int t0 = p->v0 * 16, t1 = p->v1 * 16 < T ? p->v1 * 16 : T;
    int r1 = p->g1 * 8 < W->rows ? p->g1 * 8 : W->rows;
    for (int r = p->g0 * 8; r < r1; r++) {
        int i = r / R;
        float *y = Y + (int64_t)r * ldy;
        float bv = bias ? bias[r] : 0.0f, ws = W->qscale[r], wsum = W->qsum[r];
        for (int t = t0; t < t1; t++) {
            int64_t acc = 0;
            for (int32_t j = W->row_ptr[i]; j < W->row_ptr[i + 1]; j++) {
                const int8_t *q = W->qvalues + (int64_t)j * R * C + (int64_t)(r - i * R) * C;
                int c0 = W->col_idx[j] * C;
                for (int c = 0, k = c0; c < C && k < W->cols; c++, k++)
                    acc += (int64_t)q[c] * (int64_t)((o->X4[(int64_t)(k / 4) * ldx + t] >> (8 * (k % 4))) & 0xff);
            }
            float v = ((float)acc * o->xa[t] - o->xc[t] * wsum) * ws + bv;
            y[t] = (epi & LPV_EPI_ACC) ? y[t] + v : v;
        }
        if (epi & LPV_EPI_GELU)
            for (int t = t0; t < t1; t++) y[t] = gelu_ref(y[t]);
        if (cmin)
            for (int t = t0; t < t1; t++) {
                cmin[t] = y[t] < cmin[t] ? y[t] : cmin[t]; /* a NaN never replaces the running value */
                cmax[t] = y[t] > cmax[t] ? y[t] : cmax[t];
            }
    }
}

/* ---------------------------------------------------------------------------
 * Dispatch. */

/* One thread's share of the product. */
static void part(const lpv_bsr *W, const float *bias, const operand *o, int ldx, float *Y, int ldy, int T, int epi,
                 lpv_isa isa, int tid, int nthreads) {
    LPV_ASSERT(T >= 1 && ldx >= T && ldy >= T && !((epi & LPV_EPI_GELU) && (epi & LPV_EPI_ACC)));
    LPV_ASSERT(nthreads >= 1 && tid >= 0 && tid < nthreads);
    if (!(epi & LPV_EPI_BIAS)) bias = NULL;
    lpv_isa fp32 = lpv_isa_fp32(isa);
    lpv__bsr_plan p;
    /* x_in_l1 walks: the FP32 AVX2 kernel (float panels), the int8 AVX2 and AVX-VNNI ones (quad panels) */
    lpv_q8_kernel k8 = o->X4 ? lpv_q8_kernel_for(isa) : LPV_Q8_REF;
    int x_in_l1 = o->X && fp32 == LPV_ISA_AVX2 ? (int)sizeof(float) : k8 == LPV_Q8_AVX2 || k8 == LPV_Q8_AVXVNNI ? 1 : 0;
    make_plan(W, ldx, ldy, T, tid, nthreads, x_in_l1, o->X4 ? 1 : 4, &p);
    if (p.g0 >= p.g1 || p.v0 >= p.v1) return;
    if (o->X4) {
        float *cmin = o->range ? o->range + (int64_t)2 * tid * ldy : NULL, *cmax = cmin ? cmin + ldy : NULL;
        lpv__bsr_group_fn fn = k8 == LPV_Q8_VNNI      ? lpv__bsr_group_q8_vnni
                               : k8 == LPV_Q8_AVXVNNI ? lpv__bsr_group_q8_avxvnni
                                                      : lpv__bsr_group_q8_avx2;
        if (k8 == LPV_Q8_REF) part_ref_q8(W, bias, o, ldx, Y, ldy, T, epi, &p, cmin, cmax);
        else part_simd(W, bias, o, ldx, Y, ldy, epi, &p, fn, k8, cmin, cmax);
    } else if (o->X2 && isa >= LPV_ISA_AVX512BF16)
        part_simd(W, bias, o, ldx, Y, ldy, epi, &p, lpv__bsr_group_avx512bf16, LPV_Q8_REF, NULL, NULL);
    else if (o->X && fp32 == LPV_ISA_AVX512)
        part_simd(W, bias, o, ldx, Y, ldy, epi, &p, lpv__bsr_group_avx512, LPV_Q8_REF, NULL, NULL);
    else if (o->X && fp32 == LPV_ISA_AVX2)
        part_simd(W, bias, o, ldx, Y, ldy, epi, &p, lpv__bsr_group_avx2, LPV_Q8_REF, NULL, NULL);
    else part_ref(W, bias, o->X, o->X2, ldx, Y, ldy, T, epi, &p);
}

/* The whole product on nthreads (1 inside a parallel region). */
static void run(const lpv_bsr *W, const float *bias, const operand *o, int ldx, float *Y, int ldy, int T, int epi,
                lpv_isa isa, int nthreads) {
    LPV_ASSERT(isa <= lpv_isa_best());
    if (nthreads <= 1 || omp_in_parallel()) nthreads = 1;
    if (o->range) /* each thread's running range starts at [0, 0] (the quantizer's always holds 0) */
        memset(o->range, 0, sizeof(float) * 2 * (size_t)ldy * (size_t)nthreads);
    if (nthreads == 1) {
        part(W, bias, o, ldx, Y, ldy, T, epi, isa, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    part(W, bias, o, ldx, Y, ldy, T, epi, isa, omp_get_thread_num(), omp_get_num_threads());
    for (int t = 1; t < nthreads && o->range; t++) /* into thread 0's */
        for (int c = 0; c < ldy; c++) {
            const float *r = o->range + (int64_t)2 * t * ldy;
            o->range[c] = r[c] < o->range[c] ? r[c] : o->range[c];
            o->range[ldy + c] = r[ldy + c] > o->range[ldy + c] ? r[ldy + c] : o->range[ldy + c];
        }
}

void lpv_bsr_matmul_q8_isa(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                           int ldx, float *Y, int ldy, int T, int epi, lpv_isa isa, int nthreads) {
    LPV_ASSERT(W->packed_q8 && X4 && xa && xc);
    operand o = {.X4 = X4, .xa = xa, .xc = xc};
    run(W, bias, &o, ldx, Y, ldy, T, epi, isa, nthreads);
}

void lpv_bsr_matmul_q8_range_isa(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa,
                                 const float *xc, int ldx, float *Y, int ldy, int T, int epi, float *range, lpv_isa isa,
                                 int nthreads) {
    LPV_ASSERT(W->packed_q8 && X4 && xa && xc && range && (epi & LPV_EPI_GELU));
    operand o = {.X4 = X4, .xa = xa, .xc = xc, .range = range};
    run(W, bias, &o, ldx, Y, ldy, T, epi, isa, nthreads);
}

void lpv_bsr_matmul_q8_range(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                             int ldx, float *Y, int ldy, int T, int epi, float *range) {
    lpv_bsr_matmul_q8_range_isa(W, bias, X4, xa, xc, ldx, Y, ldy, T, epi, range, lpv_isa_get(), lpv_threads_get());
}

void lpv_bsr_matmul_q8(const lpv_bsr *W, const float *bias, const uint32_t *X4, const float *xa, const float *xc,
                       int ldx, float *Y, int ldy, int T, int epi) {
    lpv_bsr_matmul_q8_isa(W, bias, X4, xa, xc, ldx, Y, ldy, T, epi, lpv_isa_get(), lpv_threads_get());
}

void lpv_bsr_matmul_part(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T,
                         int epi, lpv_isa isa, int tid, int nthreads) {
    operand o = {.X = X};
    part(W, bias, &o, ldx, Y, ldy, T, epi, isa, tid, nthreads);
}

void lpv_bsr_matmul_isa(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T, int epi,
                        lpv_isa isa, int nthreads) {
    operand o = {.X = X};
    run(W, bias, &o, ldx, Y, ldy, T, epi, isa, nthreads);
}

void lpv_bsr_matmul(const lpv_bsr *W, const float *bias, const float *X, int ldx, float *Y, int ldy, int T, int epi) {
    lpv_bsr_matmul_isa(W, bias, X, ldx, Y, ldy, T, epi, lpv_isa_get(), lpv_threads_get());
}

/* ---------------------------------------------------------------------------
 * BF16: rounding, packing, the reference and the dispatch (the kernel is in bsr_avx512.c). */

static uint32_t bf16_pair(float lo, float hi) {
    return (uint32_t)lpv_bf16_from_f32(lo) | (uint32_t)lpv_bf16_from_f32(hi) << 16;
}

lpv_status lpv_bsr_pack_bf16(lpv_bsr *b, lpv_arena *arena, lpv_err *err) {
    if (b->packed_bf16) return LPV_OK;
    if (!arena) {
        LPV_ASSERT(b->owns_arena);
        arena = &b->own;
    }
    int64_t nval = b->nnzb * b->R * b->C;
    b->packed_bf16 = lpv_arena_alloc(arena, (size_t)(nval / 2) * sizeof(uint32_t) + 64);
    if (!b->packed_bf16) return lpv_fail(err, LPV_E_OOM, "bsr: cannot allocate %lld bf16 weights", (long long)nval);
    fill_bf16(b);
    return LPV_OK;
}

/* packed_bf16 from packed: each 8-row slice [C][8] becomes [C/2][8] pairs (w[2q], w[2q + 1]). */
static void fill_bf16(lpv_bsr *b) {
    int64_t nval = b->nnzb * b->R * b->C;
    for (int64_t s = 0; s < nval / (8 * b->C); s++) {
        const float *src = b->packed + s * 8 * b->C;
        uint32_t *dst = b->packed_bf16 + s * 4 * b->C;
        for (int q = 0; q < b->C / 2; q++)
            for (int r = 0; r < 8; r++) dst[q * 8 + r] = bf16_pair(src[(2 * q) * 8 + r], src[(2 * q + 1) * 8 + r]);
    }
}

/* Columns a kernel may read: round16(T) when the stride allows, else T (layout.h). */
static int readable_cols(int T, int ld) { return lpv_round16(T) <= ld ? lpv_round16(T) : T; }

void lpv_bf16_pack_x(uint32_t *X2, const float *X, int ld, int K, int T) {
    int n = readable_cols(T, ld), np = (K + 1) / 2;
    if (lpv_isa_get() >= LPV_ISA_AVX512BF16) {
#pragma omp parallel for num_threads(lpv_team_size()) schedule(static)
        for (int p = 0; p < np; p++)
            lpv__bf16_pack_x_avx512(X2 + (int64_t)p * ld, X + (int64_t)(2 * p) * ld, ld, 2 * p + 1 < K ? 2 : 1, n);
        return;
    }
    for (int p = 0; p < np; p++)
        for (int t = 0; t < n; t++)
            X2[(int64_t)p * ld + t] =
                bf16_pair(X[(int64_t)(2 * p) * ld + t], 2 * p + 1 < K ? X[(int64_t)(2 * p + 1) * ld + t] : 0.0f);
}

void lpv_bsr_matmul_bf16_isa(const lpv_bsr *W, const float *bias, const uint32_t *X2, int ldx, float *Y, int ldy, int T,
                             int epi, lpv_isa isa, int nthreads) {
    LPV_ASSERT(W->packed_bf16 && (isa == LPV_ISA_REF || isa >= LPV_ISA_AVX512BF16));
    operand o = {.X2 = X2};
    run(W, bias, &o, ldx, Y, ldy, T, epi, isa, nthreads);
}

void lpv_bsr_matmul_bf16(const lpv_bsr *W, const float *bias, const uint32_t *X2, int ldx, float *Y, int ldy, int T,
                         int epi) {
    lpv_isa isa = lpv_isa_get() >= LPV_ISA_AVX512BF16 ? lpv_isa_get() : LPV_ISA_REF;
    lpv_bsr_matmul_bf16_isa(W, bias, X2, ldx, Y, ldy, T, epi, isa, lpv_threads_get());
}

void lpv_vgelu_isa(float *x, int64_t n, lpv_isa isa) {
    LPV_ASSERT(isa <= lpv_isa_best());
    switch (lpv_isa_fp32(isa)) {
    case LPV_ISA_AVX512: lpv__vgelu_avx512(x, n); break;
    case LPV_ISA_AVX2: lpv__vgelu_avx2(x, n); break;
    default:
        for (int64_t i = 0; i < n; i++) x[i] = lpv__gelu_s(x[i]);
    }
}

void lpv_vgelu(float *x, int64_t n) { lpv_vgelu_isa(x, n, lpv_isa_get()); }

void lpv_verf_isa(float *y, const float *x, int64_t n, lpv_isa isa) {
    LPV_ASSERT(isa <= lpv_isa_best());
    switch (lpv_isa_fp32(isa)) {
    case LPV_ISA_AVX512: lpv__verf_avx512(y, x, n); break;
    case LPV_ISA_AVX2: lpv__verf_avx2(y, x, n); break;
    default:
        for (int64_t i = 0; i < n; i++) y[i] = lpv__erf_s(x[i]);
    }
}
