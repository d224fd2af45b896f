/* ab_side.c - one side of bench/ab/ab_gemm.c: a whole copy of dlcore, private to
   this object (DLCORE_STATIC), behind one exported function. Compiled twice, with
   AB_HEADER naming the header and AB_FN the function. */
#define DLCORE_STATIC
#define DLCORE_IMPLEMENTATION
#include AB_HEADER

void AB_FN(int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
           float *c, int ldc);

void AB_FN(int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
           float *c, int ldc)
{
    static int ready;
    /* Two copies of dlcore would each keep a thread pool, and one's waiting workers
       could take the core from the other's: both run single-threaded. */
    if (!ready) { ready = 1; dl_set_threads(1); }
    dl_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}
