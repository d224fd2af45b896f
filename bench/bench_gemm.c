/* bench_gemm.c - dl_sgemm per ISA against OpenBLAS cblas_sgemm, interleaved per
   shape: squares 64..2048 and the training shapes of a 784-128-10 MLP at batch
   128 and 32, one thread; 2048^3 on two threads. The scalar reference only up
   to 512^3, where it still finishes in well under a second. */
#define _GNU_SOURCE /* cblas.h of OpenBLAS names cpu_set_t */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "dlcore.h"
#include "bench/bench.h"

typedef struct gemm_ctx {
    int ta, tb, m, n, k, lda, ldb, ldc;
    float *a, *b, *c;
} gemm_ctx;

/* A small LCG: the same inputs for every implementation and every run. */
static void fill_uniform(float *x, size_t n, unsigned seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

static int gemm_alloc(bench_state *s)
{
    const long *g = s->c->args;
    gemm_ctx *x = (gemm_ctx *)calloc(1, sizeof *x);
    if (!x) return snprintf(s->msg, sizeof s->msg, "out of memory"), -1;
    x->ta = (int)g[0]; x->tb = (int)g[1];
    x->m = (int)g[2]; x->n = (int)g[3]; x->k = (int)g[4];
    /* Row-major storage: op(A) is m x k, so A itself is k x m when transposed. */
    x->lda = x->ta ? x->m : x->k;
    x->ldb = x->tb ? x->k : x->n;
    x->ldc = x->n;
    x->a = (float *)malloc(sizeof(float) * (size_t)x->m * x->k);
    x->b = (float *)malloc(sizeof(float) * (size_t)x->k * x->n);
    x->c = (float *)calloc((size_t)x->m * x->n, sizeof(float));
    s->ctx = x;
    if (!x->a || !x->b || !x->c) return snprintf(s->msg, sizeof s->msg, "out of memory"), -1;
    fill_uniform(x->a, (size_t)x->m * x->k, 1u);
    fill_uniform(x->b, (size_t)x->k * x->n, 2u);
    return 0;
}

static float at_a(const gemm_ctx *x, int i, int p)
{
    return x->ta ? x->a[(size_t)p * x->lda + i] : x->a[(size_t)i * x->lda + p];
}

static float at_b(const gemm_ctx *x, int p, int j)
{
    return x->tb ? x->b[(size_t)j * x->ldb + p] : x->b[(size_t)p * x->ldb + j];
}

/* A benchmark of a wrong result is worthless: spot-check a few entries of C
   against a double-precision dot product, within the fp32 bound K*eps*sum|ab|. */
static int gemm_check(bench_state *s)
{
    const gemm_ctx *x = (const gemm_ctx *)s->ctx;
    unsigned seed = 7u;
    int t, p;
    for (t = 0; t < 32; t++) {
        int i, j;
        double ref = 0.0, mag = 0.0, got;
        seed = seed * 1664525u + 1013904223u; i = (int)((seed >> 8) % (unsigned)x->m);
        seed = seed * 1664525u + 1013904223u; j = (int)((seed >> 8) % (unsigned)x->n);
        for (p = 0; p < x->k; p++) {
            double v = (double)at_a(x, i, p) * at_b(x, p, j);
            ref += v;
            mag += fabs(v);
        }
        got = x->c[(size_t)i * x->ldc + j];
        if (!(fabs(got - ref) <= 2.0 * x->k * FLT_EPSILON * mag + 1e-6)) {
            snprintf(s->msg, sizeof s->msg, "wrong result: C[%d][%d] = %g, expected %g", i, j,
                     got, ref);
            return -1;
        }
    }
    return 0;
}

static int gemm_teardown(bench_state *s)
{
    gemm_ctx *x = (gemm_ctx *)s->ctx;
    int rc = 0;
    if (!x) return 0;
    if (x->a && x->b && x->c) rc = gemm_check(s);
    free(x->a); free(x->b); free(x->c); free(x);
    s->ctx = 0;
    return rc;
}

static const char *dlcore_unavailable(const bench_case *c)
{
    static char why[256];
    if (dl_set_isa(c->param) == DL_OK) return 0;
    snprintf(why, sizeof why, "dl_set_isa(\"%s\") failed: %s", c->param, dl_last_error());
    return why;
}

static int dlcore_setup(bench_state *s)
{
    if (dl_set_isa(s->c->param) != DL_OK || dl_set_threads(s->c->threads) != DL_OK)
        return snprintf(s->msg, sizeof s->msg, "%s", dl_last_error()), -1;
    return gemm_alloc(s);
}

static void dlcore_run(bench_state *s)
{
    gemm_ctx *x = (gemm_ctx *)s->ctx;
    dl_sgemm(x->ta, x->tb, x->m, x->n, x->k, 1.0f, x->a, x->lda, x->b, x->ldb, 0.0f, x->c,
             x->ldc);
}

static int openblas_setup(bench_state *s)
{
    openblas_set_num_threads(s->c->threads);
    return gemm_alloc(s);
}

static void openblas_run(bench_state *s)
{
    gemm_ctx *x = (gemm_ctx *)s->ctx;
    cblas_sgemm(CblasRowMajor, x->ta ? CblasTrans : CblasNoTrans,
                x->tb ? CblasTrans : CblasNoTrans, x->m, x->n, x->k, 1.0f, x->a, x->lda, x->b,
                x->ldb, 0.0f, x->c, x->ldc);
}

/* One row per (implementation, shape); tA/tB are the letters N or T. */
enum { GEMM_N = 0, GEMM_T = 1 };
/* The set leads the group, so that a filter like "sgemm/mlp/" selects it. */
#define GEMM_GROUP(set, tA, tB, m, n, k, th) set "/" #tA #tB "/" #m "x" #n "x" #k "/t" #th
#define GEMM_ARGS(tA, tB, m, n, k) { GEMM_##tA, GEMM_##tB, m, n, k }
#define OPENBLAS(tA, tB, m, n, k, th, set)                                                 \
    { GEMM_GROUP(set, tA, tB, m, n, k, th), "openblas", set, 0, th, 0, openblas_setup,         \
      openblas_run, gemm_teardown, 2.0 * m * n * k, 0, GEMM_ARGS(tA, tB, m, n, k) }
#define DLCORE(isa, tA, tB, m, n, k, th, set)                                              \
    { GEMM_GROUP(set, tA, tB, m, n, k, th), "dlcore-" isa, set, isa, th, dlcore_unavailable,   \
      dlcore_setup, dlcore_run, gemm_teardown, 2.0 * m * n * k, 0,                        \
      GEMM_ARGS(tA, tB, m, n, k) }
/* A shape against the peer, the SIMD ISAs, and (small shapes) the scalar reference. */
#define SHAPE_SIMD(tA, tB, m, n, k, set)                                                   \
    OPENBLAS(tA, tB, m, n, k, 1, set), DLCORE("avx512", tA, tB, m, n, k, 1, set),         \
    DLCORE("avx2", tA, tB, m, n, k, 1, set)
#define SHAPE_ALL(tA, tB, m, n, k, set)                                                    \
    SHAPE_SIMD(tA, tB, m, n, k, set), DLCORE("scalar", tA, tB, m, n, k, 1, set)

static const bench_case gemm_cases[] = {
    SHAPE_ALL(N, N, 64, 64, 64, "square"),
    SHAPE_ALL(N, N, 128, 128, 128, "square"),
    SHAPE_ALL(N, N, 256, 256, 256, "square"),
    SHAPE_ALL(N, N, 512, 512, 512, "square"),
    SHAPE_SIMD(N, N, 1024, 1024, 1024, "square"),
    SHAPE_SIMD(N, N, 2048, 2048, 2048, "square"),
    /* 784-128-10 MLP, batch 128: forward layers 1 and 2, dW1 = X^T dH, dX = dH W1^T */
    SHAPE_ALL(N, N, 128, 128, 784, "mlp"),
    SHAPE_ALL(N, N, 128, 10, 128, "mlp"),
    SHAPE_ALL(T, N, 784, 128, 128, "mlp"),
    SHAPE_ALL(N, T, 128, 784, 128, "mlp"),
    /* batch 32 */
    SHAPE_ALL(N, N, 32, 128, 784, "mlp"),
    SHAPE_ALL(T, N, 784, 128, 32, "mlp"),
    /* both cores */
    OPENBLAS(N, N, 2048, 2048, 2048, 2, "threads"),
    DLCORE("avx512", N, N, 2048, 2048, 2048, 2, "threads"),
    DLCORE("avx2", N, N, 2048, 2048, 2048, 2, "threads"),
};

/* The peer is OpenBLAS at its best on this CPU:
   - The kernel set is OpenBLAS's own choice for the CPU. An OPENBLAS_CORETYPE inherited
     from the environment is dropped (and named in the report): one machine here came
     with OPENBLAS_CORETYPE=Haswell preset, which on a Zen 5 (512-bit FMA units) ran
     OpenBLAS's AVX2 kernels at 109 GFLOP/s where its own pick, Cooperlake (AVX-512),
     runs ~210. BENCH_OPENBLAS_CORETYPE=keep keeps the inherited one.
   - An idle OpenBLAS thread spins for 2^28 cycles (~0.1 s) before it sleeps. With the
     cases interleaved, that spinning took a core from whatever ran next: dlcore on two
     threads measured 312 GFLOP/s after OpenBLAS and 414 alone. OPENBLAS_THREAD_TIMEOUT=4
     (its minimum) puts the threads to sleep at once; OpenBLAS's own 2-thread 2048^3 did
     not change (394 vs 388 GFLOP/s): a wake-up costs microseconds against a 40 ms call.
     A timeout already set is kept.
   OpenBLAS reads both when it is loaded, so the harness re-executes itself after this. */
int bench_peer_env(void)
{
    const char *keep = getenv("BENCH_OPENBLAS_CORETYPE");
    const char *core = getenv("OPENBLAS_CORETYPE");
    int changed = 0;
    if (core && !(keep && strcmp(keep, "keep") == 0)) {
        setenv("BENCH_OPENBLAS_DROPPED", core, 1);
        unsetenv("OPENBLAS_CORETYPE");
        changed = 1;
    }
    /* oneDNN (bench_int8.c) runs on OpenMP, which reads this once, when loaded: its
       cases are single-threaded like the others pinned to core 0. */
    if (!getenv("OMP_NUM_THREADS")) {
        setenv("OMP_NUM_THREADS", "1", 1);
        changed = 1;
    }
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
        changed = 1;
    }
    return changed;
}

static const char *openblas_info(void)
{
    static char line[512];
    const char *dropped = getenv("BENCH_OPENBLAS_DROPPED"), *forced = getenv("OPENBLAS_CORETYPE");
    int n = snprintf(line, sizeof line, "peer: %s; kernels: %s (%s)", openblas_get_config(),
                     openblas_get_corename(), forced ? "OPENBLAS_CORETYPE" : "OpenBLAS's pick");
    if (dropped && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n,
                 "; the inherited OPENBLAS_CORETYPE=%s was dropped"
                 " (BENCH_OPENBLAS_CORETYPE=keep keeps it)", dropped);
    return line;
}

const bench_suite bench_suite_gemm = {
    "sgemm", "openblas", 0, gemm_cases, (int)(sizeof gemm_cases / sizeof gemm_cases[0]),
    openblas_info
};
