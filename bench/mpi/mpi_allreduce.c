/* mpi_allreduce [COUNT] [ITERS] - the cost of summing COUNT floats (default 101770:
   the MNIST MLP's gradients) over the ranks with MPI_Allreduce, of the 2-double
   reduction dl_fit makes per step, and of the gradients with MPI_Iallreduce and
   MPI_Wait at once: median and best microseconds per call, taken
   as the slowest rank's time of each call after a barrier (so waiting for a late
   rank is not counted). Rank 0 prints one line per size. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run(int count, int iters, int rank, int size, const char *what, int nonblocking)
{
    float *buf = (float *)calloc((size_t)count, sizeof(float));
    double *t = (double *)malloc((size_t)iters * sizeof(double));
    int i;
    for (i = 0; i < 20; i++) MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (i = 0; i < iters; i++) {
        double t0, dt;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        if (nonblocking) {
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
               nonblocking ? "iallreduce+wait" : "allreduce", what, count, count * 4, size, 1e6 * t[iters / 2], 1e6 * t[0], 4e-9 * count / t[iters / 2]);
    free(buf);
    free(t);
}

int main(int argc, char **argv)
{
    int rank, size, count, iters;
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
    run(count, iters, rank, size, "gradients", 0);
    run(4, iters, rank, size, "loss and hits", 0);
    run(count, iters, rank, size, "gradients", 1);
    MPI_Finalize();
    return 0;
}
