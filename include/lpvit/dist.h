/*
 * dist.h — one job over several processes: the rank of this process among the
 * R that an MPI launcher (mpirun, Slurm's srun) started, its share of a list,
 * and the few collectives the library needs to make the R processes compute
 * what one process computes on the whole list.
 *
 * The contract every distributed phase follows:
 *   - every rank holds the same model and the same sorted image list; each
 *     works on its share (lpv_dist_share: contiguous, deterministic);
 *   - every additive statistic is summed over ranks (lpv_dist_sum_*), reduced
 *     to rank 0 then broadcast, so all ranks hold the same bits;
 *   - before a collective, the ranks agree on how the phase went
 *     (lpv_dist_agree): one rank's failure becomes every rank's, with the
 *     failing rank's message ("rank 1: ..."), and no rank waits forever;
 *   - decisions (masks, refit weights) are taken on rank 0 and broadcast
 *     (lpv_dist_bcast), so the ranks cannot drift apart even on different CPUs;
 *   - rank 0 alone writes files and prints results.
 *
 * Built with MPI (LPVIT_MPI) and started by a launcher, lpv_dist_init calls
 * MPI_Init; otherwise (the plain build, or the MPI build run directly) there
 * is one rank, every collective is the identity and nothing touches MPI.
 *
 * Memory: nothing is allocated that outlives a call; buffers are the caller's.
 */
#ifndef LPVIT_DIST_H
#define LPVIT_DIST_H

#include <stdint.h>
#include <stddef.h>

#include "lpvit/error.h"

/* Joins the launcher's job when there is one (reads the launcher's environment first, so a plain run never
 * initializes MPI). Call once, first thing in main. LPV_E_UNSUPPORTED: started by a launcher with more than
 * one rank, but this build has no MPI (every rank would redo the whole job). */
lpv_status lpv_dist_init(int *argc, char ***argv, lpv_err *err);
/* Leaves the job (MPI_Finalize). A process that fails without its failure having been agreed (lpv_dist_agreed)
 * calls lpv_dist_abort instead, so the ranks waiting for it in a collective end too. */
void lpv_dist_finalize(void);
/* Ends every rank of the job with exit code `code` (MPI_Abort); exit(code) with one rank. */
void lpv_dist_abort(int code);

int lpv_dist_rank(void);   /* 0 .. size-1 */
int lpv_dist_size(void);   /* 1 without a launcher */
int lpv_dist_built(void);  /* 1 when this build has MPI */
/* "open mpi 4.1.4" or "none" (reports record it). */
const char *lpv_dist_library(void);

/* This rank's share of n items: [*begin, *end). Contiguous shares in rank order, sizes differing by at most
 * one, the larger ones first; a share may be empty when n < size. */
void lpv_dist_share(int64_t n, int rank, int size, int64_t *begin, int64_t *end);

/* Collective: every rank passes its own status; all get LPV_OK when every rank succeeded, else the status of
 * the lowest failing rank and its message prefixed with "rank N: " (with one rank: st, err untouched). */
lpv_status lpv_dist_agree(lpv_status st, lpv_err *err);
/* 1 when the last failure this process met was agreed by all ranks (the job can end normally). */
int lpv_dist_agreed(void);

/* Collective, in place: element-wise sums over all ranks, identical on every rank (reduced on rank 0, then
 * broadcast). Buffers of any length (sent in pieces). */
lpv_status lpv_dist_sum_f32(float *x, int64_t n, lpv_err *err);
lpv_status lpv_dist_sum_f64(double *x, int64_t n, lpv_err *err);
lpv_status lpv_dist_sum_i64(int64_t *x, int64_t n, lpv_err *err);
/* Collective, in place: element-wise maximum (gathers per-rank slots: each rank fills its own, INT_MIN
 * elsewhere). */
lpv_status lpv_dist_max_i32(int *x, int64_t n, lpv_err *err);
/* Collective, in place: element-wise maximum of every rank's x (NaN-free input). */
lpv_status lpv_dist_max_f32(float *x, int64_t n, lpv_err *err);
/* Collective: rank `root`'s bytes into every rank's buf. */
lpv_status lpv_dist_bcast(void *buf, size_t bytes, int root, lpv_err *err);
/* Collective: every rank's text (NUL-terminated) joined in rank order into *all (malloc'd, the caller frees it),
 * on every rank; with one rank a copy of mine. */
lpv_status lpv_dist_gather_text(const char *mine, char **all, lpv_err *err);
/* Collective: the largest value over ranks (timings: the slowest rank's wall time). */
double lpv_dist_max_f64(double v);

#endif
