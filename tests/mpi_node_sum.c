/* mpi_node_sum - checks examples/mpi_node_sum.h, the shared-memory window sum that
   mnist_mlp_mpi uses on one host, under mpirun with any number of ranks:
   - integer-valued floats (exact in any order): every element equals the sum;
   - random floats: every rank holds the same bits, within 1e-6 relative of a double
     sum of all ranks' inputs (each rank regenerates them all);
   for lengths around the 16-float chunk cuts, below and above the rank count, with
   the window growing and then reused for shorter arrays;
   - the sharded update's halves: two node_sum_scatter calls in a row (two
     parameters' gradients) leave in each rank's chunk (dlcore's dl_comm_shard) the
     bits node_sum_run gives there, and two node_sum_gather calls then give every
     rank every rank's chunk.
   Prints one line per failure and "mpi_node_sum: N ranks, N checks, N failed";
   exits 1 on a failure, 2 when the ranks do not share a host. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
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
    /* scatter, scatter, gather, gather: the order dl_graph_step calls them in */
    for (L = 0; L + 1 < (int)(sizeof lens / sizeof lens[0]); L++) {
        size_t n[2], i;
        float *buf[2], *whole[2], *mine[2];
        int bad = 0, q, r;
        n[0] = lens[L]; n[1] = lens[L + 1];
        for (q = 0; q < 2; q++) {
            buf[q] = (float *)malloc(n[q] * sizeof(float));
            whole[q] = (float *)malloc(n[q] * sizeof(float));
            mine[q] = (float *)malloc(n[q] * sizeof(float));
            for (i = 0; i < n[q]; i++) buf[q][i] = whole[q][i] = value(rank, i + (size_t)q * 7, 0);
            if (node_sum_run(&ns, whole[q], n[q]) != MPI_SUCCESS) bad = 1;   /* the reference bits */
        }
        for (q = 0; q < 2; q++) if (node_sum_scatter(&ns, buf[q], n[q]) != MPI_SUCCESS) bad = 1;
        for (q = 0; q < 2; q++) {
            size_t lo, hi;
            dl_comm_shard(n[q], rank, size, &lo, &hi);
            if (lo != node_sum_cut(&ns, n[q], rank) || hi != node_sum_cut(&ns, n[q], rank + 1)) {
                fprintf(stderr, "mpi_node_sum: %zu floats, rank %d: chunk [%zu, %zu), dl_comm_shard [%zu, %zu)\n", n[q], rank,
                        node_sum_cut(&ns, n[q], rank), node_sum_cut(&ns, n[q], rank + 1), lo, hi);
                bad = 1;
            }
            if (memcmp(buf[q] + lo, whole[q] + lo, (hi - lo) * sizeof(float)) != 0) {
                fprintf(stderr, "mpi_node_sum: scatter of %zu floats, rank %d: its chunk is not node_sum_run's\n", n[q], rank);
                bad = 1;
            }
            /* what each rank then shares: its chunk, marked with its rank */
            for (i = 0; i < n[q]; i++) mine[q][i] = i >= lo && i < hi ? buf[q][i] + (float)rank * 1e4f : -1.0f;
        }
        for (q = 0; q < 2; q++) if (node_sum_gather(&ns, mine[q], n[q]) != MPI_SUCCESS) bad = 1;
        for (q = 0; q < 2; q++)
            for (r = 0; r < size; r++) {
                size_t lo, hi;
                dl_comm_shard(n[q], r, size, &lo, &hi);
                for (i = lo; i < hi && !bad; i++)
                    if (mine[q][i] != whole[q][i] + (float)r * 1e4f) {
                        fprintf(stderr, "mpi_node_sum: gather of %zu floats, rank %d: [%zu] = %.9g, want rank %d's %.9g\n",
                                n[q], rank, i, (double)mine[q][i], r, (double)(whole[q][i] + (float)r * 1e4f));
                        bad = 1;
                    }
            }
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        checks++;
        failed += bad;
        for (q = 0; q < 2; q++) { free(buf[q]); free(whole[q]); free(mine[q]); }
    }
    node_sum_free(&ns);
    all = failed;
    if (rank == 0) printf("mpi_node_sum: %d ranks, %d checks, %d failed\n", size, checks, all);
    MPI_Finalize();
    return all ? 1 : 0;
}
