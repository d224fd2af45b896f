/* mpi_node_sum - checks examples/mpi_node_sum.h, the shared-memory window sum that
   mnist_mlp_mpi uses on one host, under mpirun with any number of ranks:
   - integer-valued floats (exact in any order): every element equals the sum;
   - random floats: every rank holds the same bits, within 1e-6 relative of a double
     sum of all ranks' inputs (each rank regenerates them all);
   for lengths around the 16-float chunk cuts, below and above the rank count, with
   the window growing and then reused for shorter arrays.
   Prints one line per failure and "mpi_node_sum: N ranks, N checks, N failed";
   exits 1 on a failure, 2 when the ranks do not share a host. */
#include "../examples/mpi_node_sum.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float value(int rank, size_t i, int exact)
{
    unsigned long h = (unsigned long)(i * 2654435761u) ^ (unsigned long)(rank * 40503u + 17u);
    h = (h ^ (h >> 13)) * 1103515245u;
    h ^= h >> 16;
    return exact ? (float)((long)(h % 2001) - 1000) : ((float)(h % 100000) / 50000.0f - 1.0f) * 1e3f;
}

int main(int argc, char **argv)
{
    static const size_t lens[] = { 1, 2, 15, 16, 17, 31, 33, 100, 4095, 4097, 100352, 7, 50000 };
    node_sum ns;
    int rank, size, checks = 0, failed = 0, L, exact, all;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (!node_sum_init(&ns, MPI_COMM_WORLD)) {
        if (rank == 0) fprintf(stderr, "mpi_node_sum: the ranks are not all on one host\n");
        MPI_Finalize();
        return 2;
    }
    for (L = 0; L < (int)(sizeof lens / sizeof lens[0]); L++)
        for (exact = 1; exact >= 0; exact--) {
            size_t n = lens[L], i;
            float *buf = (float *)malloc(n * sizeof(float)), *first = (float *)malloc(n * sizeof(float));
            int bad = 0, same = 1, r, rc;
            for (i = 0; i < n; i++) buf[i] = value(rank, i, exact);
            rc = node_sum_run(&ns, buf, n);
            if (rc != MPI_SUCCESS) bad = 1;
            for (i = 0; i < n && !bad; i++) {
                double want = 0.0;
                for (r = 0; r < size; r++) want += value(r, i, exact);
                if (exact ? (double)buf[i] != want : fabs((double)buf[i] - want) > 1e-6 * (fabs(want) + 1e3)) {
                    fprintf(stderr, "mpi_node_sum: rank %d, %zu floats (%s): [%zu] = %.9g, want %.9g\n", rank, n,
                            exact ? "integers" : "random", i, (double)buf[i], want);
                    bad = 1;
                }
            }
            memcpy(first, buf, n * sizeof(float));   /* rank 0's bits on every rank */
            MPI_Bcast(first, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
            if (memcmp(first, buf, n * sizeof(float)) != 0) {
                fprintf(stderr, "mpi_node_sum: rank %d, %zu floats: not the bits rank 0 holds\n", rank, n);
                same = 0;
            }
            MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, &same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
            checks += 2;
            failed += bad + !same;
            free(buf);
            free(first);
        }
    node_sum_free(&ns);
    all = failed;
    if (rank == 0) printf("mpi_node_sum: %d ranks, %d checks, %d failed\n", size, checks, all);
    MPI_Finalize();
    return all ? 1 : 0;
}
