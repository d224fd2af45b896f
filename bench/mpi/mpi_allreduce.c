/* mpi_allreduce [COUNT] [ITERS] - the cost of summing COUNT floats (default 101770:
   the MNIST MLP's gradients) over the ranks with MPI_Allreduce, of the bucket
   dl_graph_step sums per step (1420 floats: the MLP's small gradients, the loss and
   hits), of the gradients with MPI_Iallreduce and
   MPI_Wait at once, and with mnist_mlp_mpi's shared-memory window sum
   (examples/mpi_node_sum.h, where all ranks are on one host, checked against
   MPI_Allreduce's result), and the floor under any of them: copying COUNT floats
   that another rank has just written: median and best microseconds per call, taken
   as the slowest rank's time of each call after a barrier (so waiting for a late
   rank is not counted). Rank 0 prints one line per size. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "../../examples/mpi_node_sum.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* nonblocking: 0 MPI_Allreduce, 1 MPI_Iallreduce + MPI_Wait, 2 node_sum_run,
   3 node_sum_scatter + node_sum_gather (the sharded update's two halves, without the
   update between them) */
static void run(int count, int iters, int rank, int size, const char *what, int nonblocking, node_sum *ns)
{
    float *buf = (float *)calloc((size_t)count, sizeof(float));
    double *t = (double *)malloc((size_t)iters * sizeof(double));
    int i;
    for (i = 0; i < 20; i++) MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (i = 0; i < iters; i++) {
        double t0, dt;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        if (nonblocking == 2) {
            node_sum_run(ns, buf, (size_t)count);
        } else if (nonblocking == 3) {
            node_sum_scatter(ns, buf, (size_t)count);
            node_sum_gather(ns, buf, (size_t)count);
        } else if (nonblocking) {
            MPI_Request req;
            MPI_Iallreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
            MPI_Wait(&req, MPI_STATUS_IGNORE);
        } else {
            MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        dt = MPI_Wtime() - t0;
        MPI_Allreduce(&dt, &t[i], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(t, (size_t)iters, sizeof(double), cmp);
    if (rank == 0)
        printf("%s %s: %d floats (%d bytes) over %d ranks: median %.1f us, best %.1f us, %.2f GB/s at the median\n",
               nonblocking == 3 ? "window scatter+gather" : nonblocking == 2 ? "window sum" : nonblocking ? "iallreduce+wait" : "allreduce", what, count, count * 4, size, 1e6 * t[iters / 2], 1e6 * t[0], 4e-9 * count / t[iters / 2]);
    free(buf);
    free(t);
}

/* The floor under any sum on this host: every rank must read bytes another rank has
   just written, and each of those cache lines then moves between the cores. Each
   rank writes its window slot; after a barrier it copies the next rank's slot out
   (timed: the slowest rank's copy); a barrier again before the slots are rewritten. */
static void cross_read(node_sum *ns, int count, int iters, int rank, int size)
{
    float *out = (float *)malloc((size_t)count * sizeof(float)), *mine, *theirs;
    double *t = (double *)malloc((size_t)iters * sizeof(double));
    int i, j;
    if (!out || !t || node_sum_reserve(ns, (size_t)count) != MPI_SUCCESS) MPI_Abort(MPI_COMM_WORLD, 1);
    mine = ns->slot[ns->rank];
    theirs = ns->slot[(ns->rank + 1) % ns->size];
    for (i = 0; i < iters; i++) {
        double t0, dt;
        for (j = 0; j < count; j++) mine[j] = (float)(i + j);
        node_sum_fence(ns);
        t0 = MPI_Wtime();
        memcpy(out, theirs, (size_t)count * sizeof(float));
        dt = MPI_Wtime() - t0;
        node_sum_fence(ns);
        MPI_Allreduce(&dt, &t[i], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(t, (size_t)iters, sizeof(double), cmp);
    if (rank == 0)
        printf("cross-core read gradients: %d floats (%d bytes) another rank just wrote, over %d ranks: median %.1f us, best %.1f us, %.2f GB/s at the median\n",
               count, count * 4, size, 1e6 * t[iters / 2], 1e6 * t[0], 4e-9 * count / t[iters / 2]);
    free(out);
    free(t);
}

/* The window sum of distinct values equals MPI_Allreduce's within float rounding
   (the order of the sums may differ past 2 ranks) and is the same on every rank. */
static int node_sum_agrees(node_sum *ns, int count, int rank)
{
    float *a = (float *)malloc((size_t)count * sizeof(float)), *b = (float *)malloc((size_t)count * sizeof(float));
    int i, ok = 1, all = 0;
    for (i = 0; i < count; i++) a[i] = b[i] = (float)((i * 7 + rank * 13) % 101) * 0.37f - 11.0f;
    if (node_sum_run(ns, a, (size_t)count) != MPI_SUCCESS) ok = 0;
    MPI_Allreduce(MPI_IN_PLACE, b, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (i = 0; ok && i < count; i++) ok = fabsf(a[i] - b[i]) <= 1e-5f * (fabsf(b[i]) + 1.0f);
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    free(a);
    free(b);
    return all;
}

int main(int argc, char **argv)
{
    int rank, size, count, iters;
    node_sum ns;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    count = argc > 1 ? atoi(argv[1]) : 101770;
    iters = argc > 2 ? atoi(argv[2]) : 200;
    if (count < 1 || iters < 1) {
        if (rank == 0) fprintf(stderr, "usage: mpi_allreduce [COUNT >= 1] [ITERS >= 1]\n");
        MPI_Finalize();
        return 2;
    }
    run(count, iters, rank, size, "gradients", 0, NULL);
    run(1420, iters, rank, size, "bucket", 0, NULL);   /* the MLP's small gradients, loss and hits */
    run(count, iters, rank, size, "gradients", 1, NULL);
    if (node_sum_init(&ns, MPI_COMM_WORLD)) {
        if (!node_sum_agrees(&ns, count, rank)) {
            if (rank == 0) fprintf(stderr, "mpi_allreduce: the window sum differs from MPI_Allreduce's\n");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        run(count, iters, rank, size, "gradients", 2, &ns);
        run(count, iters, rank, size, "gradients", 3, &ns);
        if (size > 1) cross_read(&ns, count, iters, rank, size);
        node_sum_free(&ns);
    } else if (rank == 0) printf("window sum: the ranks span hosts, not measured\n");
    MPI_Finalize();
    return 0;
}
