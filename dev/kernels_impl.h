/* Scalar reference SGEMM: the loop order keeps the innermost loop unit-stride
   over C and B rows for the common NN case. */
static void dl__sgemm_ref(int ta, int tb, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc)
{
    int i, j, p;
    for (i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (beta == 0.0f) for (j = 0; j < n; j++) ci[j] = 0.0f;
        else if (beta != 1.0f) for (j = 0; j < n; j++) ci[j] *= beta;
        for (p = 0; p < k; p++) {
            float aip = alpha * (ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
            if (!tb) {
                const float *bp = b + (size_t)p * ldb;
                for (j = 0; j < n; j++) ci[j] += aip * bp[j];
            } else {
                for (j = 0; j < n; j++) ci[j] += aip * b[(size_t)j * ldb + p];
            }
        }
    }
}

DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    dl__sgemm_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
