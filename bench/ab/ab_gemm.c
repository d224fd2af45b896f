/* ab_gemm.c - two versions of dlcore.h and OpenBLAS on one GEMM shape, in one
   process, interleaved (old, new, OpenBLAS, old, new, ...), one thread. For
   measuring a kernel change on a shared, noisy machine: the three see the same
   noise within a round, so the per-round ratio new/old means more than either
   time. Prints GFLOP/s medians and the per-round ratios (median, range).

     make bench-ab [BENCH_AB_OLD=old.h] [BENCH_AB_NEW=dlcore.h] [BENCH_AB_SHAPE='NN 2048 2048 2048'] [BENCH_AB_ROUNDS=7]
     build/bench/ab_gemm TT M N K [ROUNDS]       TT: NN, NT, TN or TT (op(A), op(B))

   BENCH_AB_OLD defaults to the committed dlcore.h (git show HEAD:dlcore.h). */
#define _GNU_SOURCE /* cblas.h of OpenBLAS names cpu_set_t */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>

typedef void (*ab_gemm_fn)(int, int, int, int, int, const float *, int, const float *, int, float *, int);
void ab_gemm_old(int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                 float *c, int ldc);
void ab_gemm_new(int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                 float *c, int ldc);

static void ab_gemm_openblas(int ta, int tb, int m, int n, int k, const float *a, int lda,
                             const float *b, int ldb, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* v sorted in place; returns the median */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define AB_MAX_ROUNDS 99

int main(int argc, char **argv)
{
    static const char *const names[3] = { "old", "new", "openblas" };
    const ab_gemm_fn fns[3] = { ab_gemm_old, ab_gemm_new, ab_gemm_openblas };
    static double t[3][AB_MAX_ROUNDS], r_new_old[AB_MAX_ROUNDS], r_new_ob[AB_MAX_ROUNDS];
    int ta, tb, m, n, k, lda, ldb, rounds, reps, r, v, i;
    double flop, mid;
    float *a, *b, *c;
    size_t na, nb, nc;
    if (argc < 5 || strlen(argv[1]) != 2 || strspn(argv[1], "NT") != 2) {
        fprintf(stderr, "usage: %s NN|NT|TN|TT M N K [ROUNDS]\n", argv[0]);
        return 2;
    }
    ta = argv[1][0] == 'T';
    tb = argv[1][1] == 'T';
    m = atoi(argv[2]); n = atoi(argv[3]); k = atoi(argv[4]);
    rounds = argc > 5 ? atoi(argv[5]) : 7;
    if (m < 1 || n < 1 || k < 1 || m > 16384 || n > 16384 || k > 16384 || rounds < 1 || rounds > AB_MAX_ROUNDS) {
        fprintf(stderr, "%s: M, N, K must be 1..16384 and ROUNDS 1..%d\n", argv[0], AB_MAX_ROUNDS);
        return 2;
    }
    lda = ta ? m : k;
    ldb = tb ? k : n;
    na = (size_t)m * (size_t)k; nb = (size_t)k * (size_t)n; nc = (size_t)m * (size_t)n;
    a = (float *)malloc(na * sizeof *a);
    b = (float *)malloc(nb * sizeof *b);
    c = (float *)calloc(nc, sizeof *c);
    if (!a || !b || !c) { fprintf(stderr, "%s: out of memory\n", argv[0]); return 1; }
    for (i = 0; (size_t)i < na; i++) a[i] = (float)(i % 97) / 97.0f - 0.5f;
    for (i = 0; (size_t)i < nb; i++) b[i] = (float)(i % 89) / 89.0f - 0.5f;
    openblas_set_num_threads(1);
    flop = 2.0 * m * n * (double)k;
    reps = (int)(3e8 / flop) + 1; /* ~1-2 ms or more per timing at ~200 GFLOP/s */
    for (v = 0; v < 3; v++) fns[v](ta, tb, m, n, k, a, lda, b, ldb, c, n); /* warm up */
    for (r = 0; r < rounds; r++) {
        for (v = 0; v < 3; v++) {
            double t0 = now();
            for (i = 0; i < reps; i++) fns[v](ta, tb, m, n, k, a, lda, b, ldb, c, n);
            t[v][r] = (now() - t0) / reps;
        }
        r_new_old[r] = t[0][r] / t[1][r];
        r_new_ob[r] = t[2][r] / t[1][r];
    }
    printf("%s %dx%dx%d, 1 thread, %d rounds of %d calls each; OpenBLAS kernels: %s\n", argv[1], m,
           n, k, rounds, reps, openblas_get_corename());
    for (v = 0; v < 3; v++)
        printf("  %-9s %7.1f GFLOP/s (median)\n", names[v], flop / median(t[v], rounds) * 1e-9);
    /* a ratio above 1: new is that much faster. median() sorts, so it runs before the
       extremes are read. */
    mid = median(r_new_old, rounds);
    printf("  speed new / old      per round: median %.3fx, range %.3f-%.3fx\n", mid, r_new_old[0],
           r_new_old[rounds - 1]);
    mid = median(r_new_ob, rounds);
    printf("  speed new / openblas per round: median %.3fx, range %.3f-%.3fx\n", mid, r_new_ob[0],
           r_new_ob[rounds - 1]);
    free(a); free(b); free(c);
    return 0;
}
