/*
 * dist.c — ranks and collectives (dist.h). With LPVIT_HAVE_MPI the
 * collectives are MPI's; without it, or without a launcher, one rank and
 * identities.
 */
#include "lpvit/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LPVIT_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_agreed = 0;
#ifdef LPVIT_HAVE_MPI
static int g_mpi = 0; /* MPI_Init was called */
#endif

/* The rank count a launcher announced in the environment (Open MPI, MPICH / Hydra and Slurm's PMI, PMIx),
   0 when none did. */
static int launcher_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 1 : 0; /* srun --mpi=pmix sets the rank; MPI_Comm_size says the rest */
}

int lpv_dist_rank(void) { return g_rank; }
int lpv_dist_size(void) { return g_size; }
int lpv_dist_agreed(void) { return g_agreed; }

int lpv_dist_built(void) {
#ifdef LPVIT_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

const char *lpv_dist_library(void) {
#ifdef LPVIT_HAVE_MPI
    static char name[96];
    if (!name[0]) {
#if defined(OMPI_MAJOR_VERSION)
        snprintf(name, sizeof name, "open mpi %d.%d.%d", OMPI_MAJOR_VERSION, OMPI_MINOR_VERSION, OMPI_RELEASE_VERSION);
#elif defined(MPICH_VERSION)
        snprintf(name, sizeof name, "mpich %s", MPICH_VERSION);
#else
        snprintf(name, sizeof name, "mpi %d.%d", MPI_VERSION, MPI_SUBVERSION);
#endif
    }
    return name;
#else
    return "none";
#endif
}

lpv_status lpv_dist_init(int *argc, char ***argv, lpv_err *err) {
    int n = launcher_size();
#ifdef LPVIT_HAVE_MPI
    if (n == 0) return LPV_OK;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return lpv_fail(err, LPV_E_IO, "mpi: MPI_Init failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_mpi = 1;
    return LPV_OK;
#else
    (void)argc, (void)argv;
    if (n > 1)
        return lpv_fail(err, LPV_E_UNSUPPORTED,
                        "started as one of %d mpi ranks, but this lpvit was built without mpi (each rank would "
                        "redo the whole job): rebuild with -DLPVIT_MPI=ON (Debian: libopenmpi-dev)", n);
    return LPV_OK;
#endif
}

void lpv_dist_finalize(void) {
#ifdef LPVIT_HAVE_MPI
    if (g_mpi) MPI_Finalize();
    g_mpi = 0;
#endif
}

void lpv_dist_abort(int code) {
#ifdef LPVIT_HAVE_MPI
    if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void lpv_dist_share(int64_t n, int rank, int size, int64_t *begin, int64_t *end) {
    int64_t q = n / size, r = n % size;
    *begin = rank * q + (rank < r ? rank : r);
    *end = *begin + q + (rank < r);
}

#ifdef LPVIT_HAVE_MPI
/* MPI counts are ints: long buffers go in pieces of 2^26 elements. */
#define PIECE ((int64_t)1 << 26)

static lpv_status mpi_failed(int rc, const char *what, lpv_err *err) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    return lpv_fail(err, LPV_E_IO, "mpi: %s failed on rank %d (%s)", what, g_rank, s);
}

/* Reduce to rank 0, then broadcast: every rank ends with rank 0's bits (an allreduce may add in another order
   on each rank, and the ranks must stay identical). */
static lpv_status reduce_bcast(void *x, int64_t n, MPI_Datatype t, size_t esz, MPI_Op op, lpv_err *err) {
    for (int64_t off = 0; off < n; off += PIECE) {
        int k = (int)(n - off < PIECE ? n - off : PIECE);
        char *p = (char *)x + (size_t)off * esz;
        int rc = MPI_Reduce(g_rank == 0 ? MPI_IN_PLACE : p, g_rank == 0 ? p : NULL, k, t, op, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, "MPI_Reduce", err);
        if ((rc = MPI_Bcast(p, k, t, 0, MPI_COMM_WORLD)) != MPI_SUCCESS) return mpi_failed(rc, "MPI_Bcast", err);
    }
    return LPV_OK;
}
#endif

lpv_status lpv_dist_agree(lpv_status st, lpv_err *err) {
    /* a failure agreed deeper down and passed up to here already names its rank */
    int known = g_agreed && st != LPV_OK;
    g_agreed = 0;
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) {
        int mine = st != LPV_OK ? g_rank : g_size, first = g_size;
        int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, "MPI_Allreduce", err);
        if (first == g_size) return LPV_OK;
        struct {
            int st, known;
            char msg[sizeof err->msg], param[sizeof err->param];
        } m;
        memset(&m, 0, sizeof m);
        if (g_rank == first) {
            m.st = (int)st, m.known = known;
            snprintf(m.msg, sizeof m.msg, "%s", err->msg);
            snprintf(m.param, sizeof m.param, "%s", err->param);
        }
        if ((rc = MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD)) != MPI_SUCCESS)
            return mpi_failed(rc, "MPI_Bcast", err);
        g_agreed = 1;
        snprintf(err->param, sizeof err->param, "%s", m.param);
        if (m.known) return lpv_fail(err, (lpv_status)m.st, "%s", m.msg);
        return lpv_fail(err, (lpv_status)m.st, "rank %d: %s", first, m.msg);
    }
#endif
    (void)known;
    g_agreed = st != LPV_OK;
    return st;
}

lpv_status lpv_dist_sum_f32(float *x, int64_t n, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) return reduce_bcast(x, n, MPI_FLOAT, sizeof *x, MPI_SUM, err);
#endif
    (void)x, (void)n, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_sum_f64(double *x, int64_t n, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) return reduce_bcast(x, n, MPI_DOUBLE, sizeof *x, MPI_SUM, err);
#endif
    (void)x, (void)n, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_sum_i64(int64_t *x, int64_t n, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) return reduce_bcast(x, n, MPI_INT64_T, sizeof *x, MPI_SUM, err);
#endif
    (void)x, (void)n, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_max_i32(int *x, int64_t n, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) return reduce_bcast(x, n, MPI_INT, sizeof *x, MPI_MAX, err);
#endif
    (void)x, (void)n, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_max_f32(float *x, int64_t n, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) return reduce_bcast(x, n, MPI_FLOAT, sizeof *x, MPI_MAX, err);
#endif
    (void)x, (void)n, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_bcast(void *buf, size_t bytes, int root, lpv_err *err) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1)
        for (size_t off = 0; off < bytes; off += (size_t)PIECE) {
            int k = (int)(bytes - off < (size_t)PIECE ? bytes - off : (size_t)PIECE);
            int rc = MPI_Bcast((char *)buf + off, k, MPI_BYTE, root, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) return mpi_failed(rc, "MPI_Bcast", err);
        }
#endif
    (void)buf, (void)bytes, (void)root, (void)err;
    return LPV_OK;
}

lpv_status lpv_dist_gather_text(const char *mine, char **all, lpv_err *err) {
    size_t n = strlen(mine);
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) {
        if (n > (size_t)INT_MAX / 2) return lpv_fail(err, LPV_E_ARG, "mpi: %zu bytes of text to gather", n);
        int len = (int)n, *lens = malloc(sizeof(int) * (size_t)g_size), *offs = malloc(sizeof(int) * (size_t)g_size);
        int rc = lens && offs ? MPI_Allgather(&len, 1, MPI_INT, lens, 1, MPI_INT, MPI_COMM_WORLD) : MPI_ERR_NO_MEM;
        int64_t total = 0;
        for (int r = 0; rc == MPI_SUCCESS && r < g_size; r++) offs[r] = (int)total, total += lens[r];
        char *buf = rc == MPI_SUCCESS && total < INT_MAX ? malloc((size_t)total + 1) : NULL;
        if (rc == MPI_SUCCESS && buf)
            rc = MPI_Allgatherv(mine, len, MPI_CHAR, buf, lens, offs, MPI_CHAR, MPI_COMM_WORLD);
        free(lens), free(offs);
        if (rc != MPI_SUCCESS || !buf) {
            free(buf);
            return rc != MPI_SUCCESS ? mpi_failed(rc, "MPI_Allgatherv", err) : lpv_fail(err, LPV_E_OOM, "out of memory");
        }
        buf[total] = 0;
        *all = buf;
        return LPV_OK;
    }
#endif
    if (!(*all = malloc(n + 1))) return lpv_fail(err, LPV_E_OOM, "out of memory");
    memcpy(*all, mine, n + 1);
    return LPV_OK;
}

double lpv_dist_max_f64(double v) {
#ifdef LPVIT_HAVE_MPI
    if (g_size > 1) {
        double m = v;
        if (MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD) == MPI_SUCCESS) return m;
    }
#endif
    return v;
}
